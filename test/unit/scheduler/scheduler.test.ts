// The scheduler's rules with a fake store and fake agents: retry backoff, expiry (5.4.7), who gets a
// DSN (NOTIFY, null sender), the delay warning once, and what is recorded per recipient.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildConfig, type Config } from '../../../src/config/load.ts';
import type { Outcome } from '../../../src/delivery/classify.ts';
import type { MaildirDelivery } from '../../../src/delivery/maildir.ts';
import type { RemoteDelivery, RemoteJob, RemoteResult } from '../../../src/delivery/remote.ts';
import { setLogDestination } from '../../../src/events.ts';
import type { GeneratedMessage, Ingest } from '../../../src/ingest/ingest.ts';
import { InboundPolicy } from '../../../src/policy/inbound.ts';
import type { OutboundPolicy } from '../../../src/policy/outbound.ts';
import { Scheduler, retryDelay } from '../../../src/scheduler/scheduler.ts';
import type { QueueMessage, RecipientOutcome, Store } from '../../../src/store/types.ts';

const events: Record<string, unknown>[] = [];
before(() =>
  setLogDestination({
    write: (s: string) => {
      events.push(JSON.parse(s) as Record<string, unknown>);
    },
  }),
);

const HOUR = 3_600_000;
const data = Buffer.from('Subject: hello\r\n\r\nbody\r\n');
const deferred: Outcome = {
  status: 'deferred',
  reply: {
    code: 451,
    enhanced: '4.4.1',
    message: 'No answer from host',
    reason: 'connection to mx.fabrikam.test refused',
  },
};
const failed: Outcome = {
  status: 'failed',
  reply: {
    code: 550,
    enhanced: '5.1.1',
    message: 'User unknown',
    reason: 'mx.fabrikam.test said: 550 5.1.1 User unknown (in reply to RCPT TO)',
  },
};
const delivered: Outcome = { status: 'delivered', reply: { code: 250, enhanced: '2.0.0', message: 'queued' } };

interface Rcpt {
  address: string;
  org?: string;
  notify?: string;
  route?: 'local' | 'remote';
}
const message = (o: {
  from?: string;
  rcpts: Rcpt[];
  age?: number;
  attempts?: number;
  delayWarned?: boolean;
}): QueueMessage => ({
  id: 'Q1',
  org: 'contoso',
  state: 'active',
  receivedAt: Date.now() - (o.age ?? 0),
  mailFrom: o.from ?? 'alice@contoso.test',
  size: data.length,
  sha256: '',
  envelope: { smtputf8: false },
  inbound: { sessionId: 's', clientIp: '127.0.0.1', clientPort: 1, helo: 'h', protocol: 'ESMTP', receivedBy: 'gw' },
  attempts: o.attempts ?? 0,
  nextAttemptAt: 0,
  delayWarned: o.delayWarned ?? false,
  leaseGen: 1,
  recipients: o.rcpts.map((r, idx) => ({
    idx,
    address: r.address,
    org: r.org ?? 'contoso',
    route: r.route ?? 'remote',
    status: 'pending',
    attempts: 0,
    ...(r.notify ? { notify: r.notify } : {}),
  })),
});

/** Runs one message through a scheduler whose agents answer `outcomes` (by address). */
async function run(
  m: QueueMessage,
  outcomes: Record<string, Outcome>,
  o: { queue?: Record<string, unknown>; peerDsn?: boolean; fenced?: boolean } = {},
) {
  const config: Config = buildConfig(
    {
      hostname: 'gw.contoso.test',
      organizations: [
        { name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] },
        {
          name: 'tailspin',
          acceptedDomains: [{ domain: 'corp.tailspin.test', type: 'internalRelay' }],
          outboundConnectors: [
            {
              name: 'To on-premises',
              connectorType: 'onPremises',
              allAcceptedDomains: true,
              useMXRecord: false,
              smartHosts: ['127.0.0.30'],
            },
          ],
        },
      ],
      queue: { retrySchedule: [60, 300, 900], messageExpiration: 2 * 24 * 3600, delayWarning: 4 * 3600, ...o.queue },
    },
    mkdtempSync(path.join(os.tmpdir(), 'pc-sched-')),
    null,
  );
  const completed: {
    id: string;
    owner: string;
    outcomes: RecipientOutcome[];
    next: number;
    opts?: { delayWarned?: boolean; gen?: number };
  }[] = [];
  const dsns: { to: string; data: string; regarding?: string; route?: string; org?: string }[] = [];
  const renewed: string[] = [];
  const hops: string[] = [];
  const store = {
    complete: async (
      id: string,
      owner: string,
      outcomes: RecipientOutcome[],
      next: number,
      opts?: { delayWarned?: boolean; gen?: number },
    ) => {
      completed.push({ id, owner, outcomes, next, ...(opts ? { opts } : {}) });
      return o.fenced ? ('fenced' as const) : ('done' as const);
    },
    claim: async () => [],
    claimWithData: async () => [],
    nextDue: async () => null,
    data: async () => data,
    purgeDone: async () => 0,
    // A renewal is refused once another node has taken the lease over (as the completion is, fenced).
    renew: async (owner: string, leases: { id: string; gen: number }[]) => {
      renewed.push(...leases.map((l) => `${owner} ${l.id} ${l.gen}`));
      return o.fenced ? [] : leases.map((l) => l.id);
    },
  } as unknown as Store;
  const remote = {
    deliver: async (j: RemoteJob): Promise<RemoteResult> => ({
      outcomes: new Map(j.recipients.map((r) => [r.idx, outcomes[r.address]])),
      attempt: {
        host: 'mx.fabrikam.test',
        ip: '127.0.0.2',
        port: 25,
        tlsRequired: j.hop.tls,
        tlsAchieved: 'none',
        peerDsn: o.peerDsn ?? true,
      },
    }),
  } as unknown as RemoteDelivery;
  const local = { deliver: async (address: string) => outcomes[address] } as unknown as MaildirDelivery;
  const ingest = {
    generated: async (g: GeneratedMessage) => {
      dsns.push({
        to: g.to.address,
        data: g.data.toString(),
        ...(g.regarding ? { regarding: g.regarding } : {}),
        route: g.to.route,
        ...(g.to.org ? { org: g.to.org } : {}),
      });
      return `DSN${dsns.length}`;
    },
  } as unknown as Ingest;
  const outbound = {
    nextHop: (org: string, domain: string, _m: unknown, from?: { name: string; organization: string }) => ({
      key: `mx:${domain}|${hops.push(`${org} ${domain}${from ? ` from ${from.organization}/${from.name}` : ''}`)}`,
      kind: 'mx',
      domain,
      smartHosts: [],
      tls: { level: 'opportunistic', source: 'default' },
    }),
  } as unknown as OutboundPolicy;
  const inbound = new InboundPolicy(config);
  const s = new Scheduler(
    store,
    { local, remote },
    ingest,
    () => ({ config, inbound, outbound }),
    'mx1:/var/lib/portcullis',
  );
  const t0 = Date.now();
  const lease = s.reserve();
  assert.ok(lease);
  s.take(m, data);
  await s.stop();
  return { completed, dsns, t0, renewed, hops };
}

test('retryDelay: the schedule by attempt number, the last value repeating', () => {
  const s = [60, 300, 900];
  assert.deepEqual(
    [0, 1, 2, 3, 4, 10].map((n) => retryDelay(s, n)),
    [60, 60, 300, 900, 900, 900],
  );
});

test('outcomes are recorded per recipient with the attempt facts; the next attempt follows the schedule', async () => {
  const m = message({ rcpts: [{ address: 'b@fabrikam.test' }, { address: 'c@fabrikam.test' }], attempts: 1 });
  const { completed, dsns, t0 } = await run(m, { 'b@fabrikam.test': deferred, 'c@fabrikam.test': delivered });
  assert.equal(completed.length, 1);
  const [c] = completed;
  assert.deepEqual(
    c.outcomes.map((x) => [x.idx, x.status, x.agent]),
    [
      [0, 'deferred', 'smtp'],
      [1, 'delivered', 'smtp'],
    ],
  );
  assert.equal(c.outcomes[0].detail?.host, 'mx.fabrikam.test');
  assert.equal(c.outcomes[0].reply.enhanced, '4.4.1');
  const wait = c.next - t0;
  assert.ok(wait >= 300_000 && wait < 310_000, `second retry after 300 s (${wait} ms)`);
  assert.deepEqual(dsns, [], 'no DSN for a deferral before the delay warning, nor for a plain delivery');
});

test("each recipient is routed by its own organisation's connectors, with the inbound connector it came through", async () => {
  const m = message({
    rcpts: [{ address: 'b@fabrikam.test' }, { address: 'c@corp.tailspin.test', org: 'tailspin' }],
  });
  m.inbound.connector = { name: 'Contoso servers', organization: 'contoso', by: 'ip' };
  const { hops } = await run(m, { 'b@fabrikam.test': delivered, 'c@corp.tailspin.test': delivered });
  assert.deepEqual(hops, [
    'contoso fabrikam.test from contoso/Contoso servers',
    'tailspin corp.tailspin.test from contoso/Contoso servers',
  ]);
});

test('expiry: a deferral after queue.messageExpiration becomes 5.4.7 and is bounced with the last reason', async () => {
  const m = message({ rcpts: [{ address: 'b@fabrikam.test' }], age: 49 * HOUR, delayWarned: true });
  const { completed, dsns } = await run(m, { 'b@fabrikam.test': deferred });
  const o = completed[0].outcomes[0];
  assert.deepEqual([o.status, o.reply.code, o.reply.enhanced], ['failed', 550, '5.4.7']);
  assert.equal(o.reply.message, 'Delivery time expired: No answer from host');
  assert.equal(o.reply.reason, 'connection to mx.fabrikam.test refused');
  assert.equal(dsns.length, 1);
  assert.equal(dsns[0].to, 'alice@contoso.test');
  assert.equal(dsns[0].regarding, 'Q1');
  assert.match(dsns[0].data, /Status: 5\.4\.7/);
  assert.match(
    dsns[0].data,
    /Delivery was retried until the message expired\. The last attempt failed: connection to mx\.fabrikam\.test refused/,
  );
});

test('failures: a DSN to the sender unless NOTIFY says otherwise; never to the null sender', async () => {
  const m = message({
    rcpts: [
      { address: 'b@fabrikam.test' },
      { address: 'c@fabrikam.test', notify: 'NEVER' },
      { address: 'd@fabrikam.test', notify: 'SUCCESS' },
    ],
  });
  const all = { 'b@fabrikam.test': failed, 'c@fabrikam.test': failed, 'd@fabrikam.test': failed };
  const { dsns } = await run(m, all);
  assert.equal(dsns.length, 1, 'one DSN for the recipients that want one');
  assert.match(dsns[0].data, /Final-Recipient: rfc822; b@fabrikam\.test/);
  assert.doesNotMatch(dsns[0].data, /c@fabrikam\.test|d@fabrikam\.test/);
  events.length = 0;
  const bounce = await run(message({ from: '', rcpts: [{ address: 'b@fabrikam.test' }] }), all);
  assert.deepEqual(bounce.dsns, [], 'a bounce never bounces');
  assert.ok(
    events.some((e) => e.event === 'delivery.result' && e.agent === 'bounce' && /null sender/.test(String(e.reason))),
  );
  assert.equal(bounce.completed[0].outcomes[0].status, 'failed', 'the failure is still recorded');
});

test("a DSN goes where its recipient belongs: a mailbox here, another hosted organisation's connectors, or out", async () => {
  const all = { 'b@fabrikam.test': failed };
  const dsnFor = async (from: string) =>
    (await run(message({ from, rcpts: [{ address: 'b@fabrikam.test' }] }), all)).dsns;
  assert.deepEqual(
    (await dsnFor('alice@contoso.test')).map((d) => [d.to, d.route, d.org]),
    [['alice@contoso.test', 'local', 'contoso']],
  );
  assert.deepEqual(
    (await dsnFor('bob@corp.tailspin.test')).map((d) => [d.to, d.route, d.org]),
    [['bob@corp.tailspin.test', 'remote', 'tailspin']],
    "routed by tailspin's connectors, not by those of contoso (whose message bounced)",
  );
  assert.deepEqual(
    (await dsnFor('someone@internet.test')).map((d) => [d.to, d.route, d.org]),
    [['someone@internet.test', 'remote', undefined]],
  );
});

test('a node whose lease was taken over sends no DSN (the new owner sends it): one notice per event', async () => {
  const m = message({ rcpts: [{ address: 'b@fabrikam.test' }, { address: 'c@fabrikam.test' }] });
  const all = { 'b@fabrikam.test': failed, 'c@fabrikam.test': failed };
  const held = await run(m, all);
  assert.equal(held.dsns.length, 1);
  assert.deepEqual(held.renewed, [`mx1:/var/lib/portcullis ${m.id} ${m.leaseGen}`], 'checked once, at its generation');
  events.length = 0;
  const lost = await run(m, all, { fenced: true });
  assert.deepEqual(lost.dsns, []);
  assert.ok(events.some((e) => e.event === 'queue.leaseLost' && e.queueId === m.id));
  events.length = 0;
  assert.equal(lost.completed.length, 1, 'the completion is still offered (and refused by the store: fenced)');
  const quiet = await run(message({ rcpts: [{ address: 'b@fabrikam.test' }] }), { 'b@fabrikam.test': delivered });
  assert.deepEqual(quiet.renewed, [], 'no notice, no extra write');
});

test('success notices where NOTIFY asks: delivered here, or relayed to a peer without DSN (RFC 3461 §5.2.2)', async () => {
  const m = message({
    rcpts: [
      { address: 'b@fabrikam.test', notify: 'SUCCESS' },
      { address: 'u@contoso.test', notify: 'SUCCESS,FAILURE', route: 'local' },
    ],
  });
  const ok = { 'b@fabrikam.test': delivered, 'u@contoso.test': delivered };
  const withDsn = await run(m, ok, { peerDsn: true });
  assert.equal(withDsn.dsns.length, 1);
  assert.match(withDsn.dsns[0].data, /Final-Recipient: rfc822; u@contoso\.test\r\nAction: delivered/);
  assert.doesNotMatch(withDsn.dsns[0].data, /b@fabrikam\.test/, 'a peer with DSN sends its own notice');
  const without = await run(m, ok, { peerDsn: false });
  assert.match(without.dsns[0].data, /Final-Recipient: rfc822; b@fabrikam\.test\r\nAction: relayed/);
});

test('the delay warning is sent once, after queue.delayWarning, to recipients whose NOTIFY allows it', async () => {
  const rcpts = [{ address: 'b@fabrikam.test' }, { address: 'c@fabrikam.test', notify: 'FAILURE' }];
  const late = await run(message({ rcpts, age: 5 * HOUR }), {
    'b@fabrikam.test': deferred,
    'c@fabrikam.test': deferred,
  });
  assert.equal(late.dsns.length, 1);
  assert.match(late.dsns[0].data, /Action: delayed/);
  assert.match(late.dsns[0].data, /Will-Retry-Until: /);
  assert.doesNotMatch(late.dsns[0].data, /c@fabrikam\.test/);
  assert.equal(late.completed[0].opts?.delayWarned, true, 'recorded, so it is not sent again');
  const again = await run(message({ rcpts, age: 6 * HOUR, delayWarned: true }), {
    'b@fabrikam.test': deferred,
    'c@fabrikam.test': deferred,
  });
  assert.deepEqual(again.dsns, []);
  const early = await run(message({ rcpts, age: 3 * HOUR }), {
    'b@fabrikam.test': deferred,
    'c@fabrikam.test': deferred,
  });
  assert.deepEqual(early.dsns, []);
  assert.equal(early.completed[0].opts?.delayWarned, false);
});

test('a completion carries the node id and the lease generation; one the store refuses (fenced) is logged, not retried', async () => {
  const m = { ...message({ rcpts: [{ address: 'b@fabrikam.test' }] }), id: 'QF', leaseGen: 7 };
  const ok = await run(m, { 'b@fabrikam.test': delivered });
  assert.deepEqual([ok.completed[0].owner, ok.completed[0].opts?.gen], ['mx1:/var/lib/portcullis', 7]);
  assert.ok(!events.some((e) => e.event === 'queue.fenced' && e.queueId === 'QF'));
  const fenced = await run(m, { 'b@fabrikam.test': delivered }, { fenced: true });
  assert.equal(fenced.completed.length, 1);
  assert.deepEqual(
    events.filter((e) => e.event === 'queue.fenced' && e.queueId === 'QF').map((e) => [e.node, e.gen, e.level]),
    [['mx1:/var/lib/portcullis', 7, 40]],
  );
});

test('renewLeases renews the leases of the deliveries in flight at their generation and logs the ones taken over', async () => {
  const config: Config = buildConfig(
    {
      organizations: [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }],
      queue: { leaseSeconds: 30 },
    },
    mkdtempSync(path.join(os.tmpdir(), 'pc-sched-')),
    null,
  );
  const asked: { owner: string; leases: { id: string; gen: number }[]; ms: number }[] = [];
  const claimed = [
    { ...message({ rcpts: [{ address: 'b@fabrikam.test' }] }), id: 'R1', leaseGen: 3 },
    { ...message({ rcpts: [{ address: 'c@fabrikam.test' }] }), id: 'R2', leaseGen: 5 },
  ];
  let claims = 0;
  const store = {
    claimWithData: async () => (claims++ === 0 ? claimed.map((m) => ({ message: m, data })) : []),
    nextDue: async () => null,
    data: async () => data,
    purgeDone: async () => 0,
    complete: async () => 'done' as const,
    renew: async (owner: string, leases: { id: string; gen: number }[], ms: number) => {
      asked.push({ owner, leases, ms });
      return ['R1'];
    },
  } as unknown as Store;
  let release!: () => void;
  const held = new Promise<void>((r) => {
    release = r;
  });
  const remote = {
    deliver: async (j: RemoteJob): Promise<RemoteResult> => {
      await held;
      return {
        outcomes: new Map(j.recipients.map((r) => [r.idx, delivered])),
        attempt: { host: 'mx', ip: '127.0.0.2', port: 25, tlsRequired: j.hop.tls, tlsAchieved: 'none' },
      } as RemoteResult;
    },
  } as unknown as RemoteDelivery;
  const outbound = {
    nextHop: (_org: string, domain: string) => ({
      key: `mx:${domain}`,
      kind: 'mx',
      domain,
      smartHosts: [],
      tls: { level: 'opportunistic', source: 'default' },
    }),
  } as unknown as OutboundPolicy;
  const s = new Scheduler(
    store,
    { local: {} as MaildirDelivery, remote },
    {} as Ingest,
    () => ({ config, inbound: {} as InboundPolicy, outbound }),
    'mx2:/srv/p',
  );
  s.start();
  for (let i = 0; i < 100 && claims === 0; i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 20)); // the claimed messages are in delivery
  await s.renewLeases();
  release();
  await s.stop();
  assert.deepEqual(asked, [
    {
      owner: 'mx2:/srv/p',
      leases: [
        { id: 'R1', gen: 3 },
        { id: 'R2', gen: 5 },
      ],
      ms: 30_000,
    },
  ]);
  assert.deepEqual(
    events.filter((e) => e.event === 'queue.leaseLost').map((e) => [e.queueId, e.node, e.gen]),
    [['R2', 'mx2:/srv/p', 5]],
  );
});
