// The report counters: events in (as the gateway emits them), sums out, per organisation and for the
// whole gateway, in hour and day slots; the classification of outbound security and TLS failures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Event } from '../../../src/events.ts';
import { ReportAggregator } from '../../../src/reports/aggregate.ts';
import { DAY, HOUR, requirementType, securityType } from '../../../src/reports/kinds.ts';
import {
  inboundPeers,
  inboundReport,
  outboundReport,
  plaintextDomains,
  tlsFailures,
} from '../../../src/reports/query.ts';
import { SqliteStore } from '../../../src/store/sqlite/index.ts';

const T0 = Date.UTC(2026, 10, 1);
const tls13 = { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', bits: 256 };
const tls12 = { version: 'TLSv1.2', cipher: 'ECDHE-RSA-AES128-GCM-SHA256', bits: 128 };

function session(sid: string, ip: string, tls: typeof tls13 | undefined, orgs: string[]): Event[] {
  return [
    ...orgs.map((org, i): Event => ({
      event: 'message.accepted',
      sid,
      queueId: `${sid}-${i}`,
      from: 'a@b',
      rcpts: 1,
      size: 10,
      org,
      ...(tls ? { tls } : {}),
    })),
    {
      event: 'session.end',
      sid,
      ip,
      helo: `${ip}.helo`,
      ...(tls ? { tls } : {}),
      messages: orgs.length,
      commands: 5,
      errors: 0,
      durationMs: 5,
      close: 'quit',
    },
  ];
}

const delivery = (
  org: string,
  rcpt: string,
  status: 'delivered' | 'deferred' | 'failed',
  extra: Partial<Extract<Event, { event: 'delivery.result' }>> = {},
): Event => ({
  event: 'delivery.result',
  queueId: 'Q',
  rcpt,
  status,
  agent: 'smtp',
  reason: 'x',
  org,
  tlsRequired: 'opportunistic',
  tlsSource: 'default',
  ...extra,
});

test('outbound security types and requirement types come from the TLS requirement and what the attempt achieved', () => {
  assert.equal(
    securityType({ tlsRequired: 'certificateValidation', tlsSource: 'connector "To Fabrikam"', tlsVersion: 'TLSv1.3' }),
    'connector-forced',
  );
  assert.equal(
    securityType({ tlsRequired: 'opportunistic', tlsSource: 'default', tlsVersion: 'TLSv1.3' }),
    'opportunistic-tls',
  );
  assert.equal(
    securityType({ tlsRequired: 'opportunistic', tlsSource: 'default', tlsVersion: 'TLSv1', tlsLegacy: true }),
    'legacy-tls',
  );
  assert.equal(securityType({ tlsRequired: 'opportunistic', tlsSource: 'default' }), 'plaintext');
  assert.equal(
    securityType({
      tlsRequired: 'domainValidation',
      tlsSource: 'DANE (TLSA records of mx.example)',
      tlsVersion: 'TLSv1.3',
    }),
    'dane',
  );
  assert.equal(
    securityType({ tlsRequired: 'domainValidation', tlsSource: 'MTA-STS policy of example', tlsVersion: 'TLSv1.3' }),
    'mta-sts',
  );
  assert.equal(requirementType('encryptionOnly', 'connector "X"'), 'connector-forced');
  assert.equal(
    requirementType('opportunistic', 'connector "X"'),
    'opportunistic',
    'an opportunistic connector requires nothing',
  );
  assert.equal(requirementType(undefined, undefined), 'opportunistic');
});

test('reports sum the counters of the events, per organisation and for the gateway, hourly and daily', async () => {
  const store = new SqliteStore(mkdtempSync(path.join(os.tmpdir(), 'pc-reports-')));
  const agg = new ReportAggregator(store);
  const at = (t: number, events: Event[]) => {
    for (const e of events) agg.record(e, t);
  };
  // Hour 0: two TLS 1.3 sessions (contoso; contoso + fabrikam), one plaintext session (fabrikam), one plaintext without mail.
  at(T0 + 60_000, session('s1', '127.0.0.10', tls13, ['contoso']));
  at(T0 + 120_000, session('s2', '127.0.0.11', tls13, ['contoso', 'fabrikam']));
  at(T0 + 180_000, session('s3', '127.0.0.12', undefined, ['fabrikam']));
  at(T0 + 240_000, session('s4', '127.0.0.13', undefined, []));
  // Hour 2: a TLS 1.2 session for contoso.
  at(T0 + 2 * HOUR + 1, session('s5', '127.0.0.14', tls12, ['contoso']));
  // Outbound, day 0 and day 1.
  at(T0 + 10, [
    delivery('contoso', 'a@fabrikam.test', 'delivered', {
      tlsRequired: 'certificateValidation',
      tlsSource: 'connector "To Fabrikam"',
      tlsVersion: 'TLSv1.3',
      tlsCipher: tls13.cipher,
      tlsAchieved: 'domainValidation',
    }),
    delivery('contoso', 'b@plain.test', 'delivered', { tlsAchieved: 'none' }),
    delivery('contoso', 'c@plain.test', 'delivered', { tlsAchieved: 'none' }),
    delivery('contoso', 'd@mixed.test', 'delivered', { tlsAchieved: 'none' }),
    delivery('contoso', 'e@old.test', 'delivered', {
      tlsVersion: 'TLSv1',
      tlsLegacy: true,
      tlsFailure: 'protocol-version',
      tlsAchieved: 'opportunistic',
    }),
    delivery('contoso', 'f@strict.test', 'deferred', {
      tlsRequired: 'certificateValidation',
      tlsSource: 'connector "Strict"',
      tlsFailure: 'certificate-not-trusted',
      tlsAchieved: 'encryptionOnly',
    }),
    delivery('contoso', 'g@gone.test', 'deferred', { tlsFailure: 'starttls-not-offered' }), // opportunistic: the failure only stepped down
    {
      event: 'delivery.result',
      queueId: 'Q',
      rcpt: 'local@contoso.test',
      status: 'delivered',
      agent: 'maildir',
      reason: 'ok',
      org: 'contoso',
    },
  ]);
  at(T0 + DAY + 10, [
    delivery('contoso', 'd@mixed.test', 'delivered', {
      tlsVersion: 'TLSv1.3',
      tlsCipher: tls13.cipher,
      tlsAchieved: 'certificateValidation',
    }),
    delivery('fabrikam', 'h@strict.test', 'failed', {
      tlsRequired: 'encryptionOnly',
      tlsSource: 'connector "Strict"',
      tlsFailure: 'certificate-not-trusted',
    }),
    delivery('fabrikam', 'i@strict.test', 'failed', {
      tlsRequired: 'encryptionOnly',
      tlsSource: 'connector "Strict"',
      tlsFailure: 'certificate-not-trusted',
    }),
  ]);
  await agg.flush();

  const day = { from: T0, until: T0 + DAY, granularity: 'hour' as const };
  const gw = await inboundReport(store, { org: '*', ...day });
  assert.equal(gw.sessions.total, 5, 'every session once, whatever it carried');
  assert.equal(gw.sessions.plaintext, 2);
  assert.equal(gw.sessions.plaintextShare, 0.4);
  assert.deepEqual(gw.sessions.byVersion, [
    { tlsVersion: 'none', count: 2 },
    { tlsVersion: 'TLSv1.2', count: 1 },
    { tlsVersion: 'TLSv1.3', count: 2 },
  ]);
  assert.equal(gw.messages.total, 5);
  assert.equal(gw.sessions.series.t.length, 24);
  assert.deepEqual(gw.sessions.series.values['TLSv1.3'].slice(0, 3), [2, 0, 0]);
  assert.deepEqual(gw.sessions.series.values['TLSv1.2'].slice(0, 3), [0, 0, 1]);
  const contoso = await inboundReport(store, { org: 'contoso', ...day });
  assert.equal(contoso.sessions.total, 3, 'sessions that carried contoso mail');
  assert.deepEqual(contoso.messages.byVersionAndCipher, [
    { tlsVersion: 'TLSv1.2', cipher: tls12.cipher, count: 1 },
    { tlsVersion: 'TLSv1.3', cipher: tls13.cipher, count: 2 },
  ]);
  const fabrikam = await inboundReport(store, { org: 'fabrikam', ...day });
  assert.equal(fabrikam.messages.plaintextShare, 0.5);

  const peers = await inboundPeers(store, { org: '*', ...day }, { limit: 10, offset: 0 });
  assert.equal(peers.oldestTls, 'TLSv1.2');
  assert.deepEqual(
    peers.peers.map((p) => [p.ip, p.tlsVersion]),
    [
      ['127.0.0.12', 'none'],
      ['127.0.0.13', 'none'],
      ['127.0.0.14', 'TLSv1.2'],
    ],
  );
  assert.deepEqual(
    (await inboundPeers(store, { org: 'fabrikam', ...day }, { limit: 10, offset: 0 })).peers.map((p) => p.ip),
    ['127.0.0.12', '127.0.0.11'],
    'for fabrikam its plaintext client and, as its oldest TLS, the TLS 1.3 one',
  );
  assert.deepEqual(
    (await inboundPeers(store, { org: '*', ...day }, { limit: 1, offset: 1 })).peers.map((p) => p.ip),
    ['127.0.0.13'],
    'paged',
  );

  const two = { from: T0, until: T0 + 2 * DAY, granularity: 'day' as const };
  const out = await outboundReport(store, { org: 'contoso', ...two });
  assert.deepEqual(
    Object.fromEntries(out.delivered.bySecurity.map((x) => [x.security, x.count])),
    { dane: 0, 'mta-sts': 0, 'connector-forced': 1, 'opportunistic-tls': 1, 'legacy-tls': 1, plaintext: 3 },
    'the maildir delivery is not transit',
  );
  assert.deepEqual(out.delivered.series.values.plaintext, [3, 0]);
  assert.deepEqual(out.delivered.series.values['opportunistic-tls'], [0, 1]);
  assert.equal(out.undelivered.deferred, 2);
  assert.equal(out.undelivered.tlsDeferred, 1, 'only the required level that failed counts as a TLS deferral');
  const all = await outboundReport(store, { org: '*', ...two });
  assert.equal(all.undelivered.tlsFailed, 2);

  const failures = await tlsFailures(store, { org: '*', ...two }, { limit: 10, offset: 0 });
  assert.deepEqual(failures.rows, [
    {
      domain: 'strict.test',
      requirement: 'connector-forced',
      tlsFailure: 'certificate-not-trusted',
      label: 'the server certificate does not chain to a trusted root',
      resultType: 'certificate-not-trusted',
      deferred: 1,
      failed: 2,
    },
  ]);
  assert.equal(
    (await tlsFailures(store, { org: 'fabrikam', ...two }, { limit: 10, offset: 0 })).rows[0].deferred,
    0,
    "fabrikam's own failures only",
  );

  const plain = await plaintextDomains(store, { org: 'contoso', ...two }, { limit: 10, offset: 0 });
  assert.deepEqual(
    plain.domains,
    [{ domain: 'plain.test', messages: 2 }],
    'mixed.test also took TLS; old.test took legacy TLS',
  );
  assert.deepEqual(
    (
      await plaintextDomains(
        store,
        { org: 'contoso', from: T0, until: T0 + DAY, granularity: 'day' },
        { limit: 10, offset: 0 },
      )
    ).domains.map((d) => d.domain),
    ['plain.test', 'mixed.test'],
    'on day 0 alone mixed.test took only plaintext',
  );
  await store.close();
});

test("one transaction stored as two organisations' copies: one message for the gateway, one for each organisation", async () => {
  const store = new SqliteStore(mkdtempSync(path.join(os.tmpdir(), 'pc-reports-')));
  const agg = new ReportAggregator(store);
  const [a, b, end] = session('s1', '127.0.0.10', tls13, ['contoso', 'fabrikam']);
  for (const [i, e] of [a, b].entries()) agg.record({ ...e, copy: i + 1, copies: 2 } as Event, T0 + 60_000);
  agg.record(end, T0 + 60_000);
  await agg.flush();
  const day = { from: T0, until: T0 + DAY, granularity: 'hour' as const };
  assert.equal((await inboundReport(store, { org: '*', ...day })).messages.total, 1);
  assert.equal((await inboundReport(store, { org: 'contoso', ...day })).messages.total, 1);
  assert.equal((await inboundReport(store, { org: 'fabrikam', ...day })).messages.total, 1);
  await store.close();
});
