// The failure policy of remote delivery (src/delivery/trouble.ts) and its memories, as pure rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Outcome } from '../../../src/delivery/classify.ts';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InMemory } from '../../../src/delivery/memory.ts';
import { SqliteStore } from '../../../src/store/sqlite/index.ts';
import {
  Tally,
  Trouble,
  finalOutcome,
  hostFailure,
  inProcessMemories,
  nextTlsStep,
  storeMemories,
  transactionOutcome,
  type AttemptFacts,
} from '../../../src/delivery/trouble.ts';

const facts: AttemptFacts = {
  host: 'mx.fabrikam.test',
  ip: '127.0.0.2',
  port: 25,
  tlsRequired: { level: 'opportunistic', source: 'default' },
  tlsAchieved: 'none',
};
const reply = (code: number, text = 'x', enhanced?: string) => ({
  code,
  text,
  lines: [text],
  ...(enhanced ? { enhanced } : {}),
});
const settings = { destinationDownSeconds: 60, tlsFallbackSeconds: 3600, opportunisticLegacyTls: true };

test('host failures: connection level for everything before a usable session, transaction level otherwise', () => {
  for (const kind of [
    'connect',
    'timeout',
    'closed',
    'protocol',
    'greeting',
    'ehlo',
    'starttls',
    'tls',
    'tlsPolicy',
  ] as const) {
    assert.equal(hostFailure({ kind, detail: 'd' }, facts).level, 'connection', kind);
  }
  for (const kind of ['mail'] as const)
    assert.equal(hostFailure({ kind, detail: 'd', reply: reply(451) }, facts).level, 'transaction', kind);
  const h = hostFailure(
    { kind: 'tlsPolicy', detail: 'certificate not valid', tlsFailure: 'certificate-expired' },
    facts,
  );
  assert.deepEqual(
    [h.attempt.error, h.attempt.tlsFailure, h.outcome.reply.enhanced],
    ['certificate not valid', 'certificate-expired', '4.7.5'],
  );
});

test('the verdict: DNS alone can fail permanently; a 5xx before any transaction is deferred as 4xx (RFC 5321 §3.1, §5.1)', () => {
  const failed = (code: number, enhanced: string): Outcome => ({
    status: 'failed',
    reply: { code, enhanced, message: 'm' },
  });
  assert.deepEqual(finalOutcome(failed(550, '5.1.2'), true), failed(550, '5.1.2'));
  assert.deepEqual(finalOutcome(failed(554, '5.7.1'), false), {
    status: 'deferred',
    reply: { code: 451, enhanced: '4.7.1', message: 'm' },
  });
  const deferred: Outcome = { status: 'deferred', reply: { code: 421, enhanced: '4.4.2', message: 'm' } };
  assert.deepEqual(finalOutcome(deferred, false), deferred);
  assert.deepEqual(finalOutcome(deferred, true), deferred);
});

test("Tally: a permanent failure that is not the connection's stops; destination down only when every host with addresses failed at connection level", () => {
  const conn = hostFailure({ kind: 'connect', detail: 'refused' }, facts);
  const t = new Tally();
  assert.equal(t.verdict(), undefined, 'nothing tried');
  t.dnsFailed({ status: 'failed', reply: { code: 550, enhanced: '5.1.2', message: 'no host' } }, facts);
  assert.deepEqual(t.verdict()?.outcome.reply.code, 550, 'DNS only: permanent stays permanent');
  assert.equal(t.verdict()?.destinationDown, false, 'DNS failures never mark the destination down');
  t.addressesFound();
  assert.equal(t.hostFailed(conn), 'next');
  assert.equal(t.verdict()?.destinationDown, true);
  const deferredMail = transactionOutcome(
    [{ idx: 0 }],
    { mail: reply(451, 'busy', '4.3.2'), rcpts: [] },
    'mx [ip]',
    facts,
  );
  assert.equal(deferredMail.kind, 'hostFailed');
  if (deferredMail.kind === 'hostFailed') assert.equal(t.hostFailed(deferredMail), 'next');
  assert.equal(t.verdict()?.destinationDown, false, 'a host answered: the destination is up');
  assert.equal(
    new Tally().hostFailed(hostFailure({ kind: 'mail', detail: 'refused', reply: reply(553, 'bad', '5.1.7') }, facts)),
    'stop',
  );
});

test('transaction outcomes: 5xx MAIL is a message failure; RCPT replies per recipient; DATA reply for the accepted; never "delivered" by accident', () => {
  const all = transactionOutcome(
    [{ idx: 3 }, { idx: 4 }],
    { mail: reply(550, 'no', '5.7.1'), rcpts: [] },
    'mx [ip]',
    facts,
  );
  assert.equal(all.kind, 'done');
  if (all.kind === 'done')
    assert.deepEqual(
      [...all.outcomes.values()].map((o) => o.reply.enhanced),
      ['5.7.1', '5.7.1'],
    );
  const odd = transactionOutcome([{ idx: 0 }], { mail: reply(220, 'hm'), rcpts: [] }, 'mx [ip]', facts);
  assert.ok(
    odd.kind === 'hostFailed' && odd.outcome.status === 'deferred' && odd.outcome.reply.enhanced === '4.5.0',
    'a 2xx other than 250 to MAIL is no success',
  );
  const r = transactionOutcome(
    [{ idx: 0 }, { idx: 1 }, { idx: 2 }],
    {
      mail: reply(250),
      rcpts: [reply(250), reply(550, 'unknown', '5.1.1'), reply(252, 'cannot verify')],
      data: reply(250, 'queued', '2.0.0'),
    },
    'mx [ip]',
    facts,
  );
  assert.ok(r.kind === 'done');
  if (r.kind !== 'done') return;
  assert.deepEqual(
    [...r.outcomes].map(([i, o]) => [i, o.status, o.reply.enhanced]),
    [
      [0, 'delivered', '2.0.0'],
      [1, 'failed', '5.1.1'],
      [2, 'deferred', '4.5.0'],
    ],
  );
  assert.match(r.outcomes.get(1)!.reply.reason!, /^mx \[ip\] said: 550 5\.1\.1 unknown \(in reply to RCPT TO\)$/);
  assert.match(r.outcomes.get(0)!.reply.reason!, /\(in reply to end of DATA\)$/);
  const chunked = transactionOutcome(
    [{ idx: 0 }],
    { mail: reply(250), rcpts: [reply(250)], data: reply(552, 'too big', '5.3.4'), chunked: true },
    'mx [ip]',
    facts,
  );
  assert.ok(chunked.kind === 'done');
  assert.match(
    chunked.outcomes.get(0)!.reply.reason!,
    /^mx \[ip\] said: 552 5\.3\.4 too big \(in reply to BDAT LAST\)$/,
  );
  const noData = transactionOutcome([{ idx: 0 }], { mail: reply(250), rcpts: [reply(250)] }, 'mx [ip]', facts);
  assert.ok(noData.kind === 'done' && noData.outcomes.get(0)?.reply.enhanced === '4.4.2');
});

test('TLS step down: legacy only after a failure it can help and only from modern TLS; plaintext otherwise', () => {
  assert.equal(nextTlsStep('modern', 'protocol-version', true), 'legacy');
  assert.equal(nextTlsStep('modern', 'no-shared-cipher', true), 'legacy');
  assert.equal(nextTlsStep('modern', 'protocol-version', false), 'plaintext');
  assert.equal(nextTlsStep('modern', 'handshake-failed', true), 'plaintext');
  assert.equal(nextTlsStep('legacy', 'protocol-version', true), 'plaintext');
});

test('Trouble: the TLS start per requirement and memory; legacy only while allowed', async () => {
  let s = { ...settings };
  const t = new Trouble(inProcessMemories(), () => s);
  const opp = { level: 'opportunistic' as const, source: 'default' };
  assert.deepEqual(await t.tlsStart({ level: 'none', source: 'x' }, '1.2.3.4', false), { mode: 'plaintext' });
  await t.stepDown('1.2.3.4', { mode: 'legacy', cause: 'protocol-version' });
  assert.equal(
    (await t.tlsStart({ level: 'encryptionOnly', source: 'x' }, '1.2.3.4', true)).mode,
    'modern',
    'a required level never steps down',
  );
  const start = await t.tlsStart(opp, '1.2.3.4', false);
  assert.equal(start.mode, 'legacy');
  assert.equal(start.remembered?.value.cause, 'protocol-version');
  assert.equal((await t.tlsStart(opp, '5.6.7.8', false)).mode, 'modern', 'per address');
  s = { ...settings, opportunisticLegacyTls: false };
  assert.equal((await t.tlsStart(opp, '1.2.3.4', false)).mode, 'modern');
  s = { ...settings };
  await t.modernAgain('1.2.3.4');
  assert.equal((await t.tlsStart(opp, '1.2.3.4', false)).mode, 'modern');
});

test('Trouble: destination down is served while fresh and says until when; hosts that failed go last, in order', async () => {
  const t = new Trouble(inProcessMemories(), () => settings);
  const outcome: Outcome = {
    status: 'deferred',
    reply: { code: 451, enhanced: '4.4.1', message: 'No answer from host', reason: 'connection refused' },
  };
  assert.equal(await t.down('mx:fabrikam.test'), undefined);
  await t.markDown('mx:fabrikam.test', { outcome, attempt: facts });
  const d = await t.down('mx:fabrikam.test');
  assert.equal(d?.outcome.status, 'deferred');
  assert.match(d?.outcome.reply.reason ?? '', /^connection refused \(destination marked unreachable until .*Z\)$/);
  const off = new Trouble(inProcessMemories(), () => ({ ...settings, destinationDownSeconds: 0 }));
  await off.markDown('mx:fabrikam.test', { outcome, attempt: facts });
  assert.equal(await off.down('mx:fabrikam.test'), undefined, 'destinationDownSeconds 0: never');
  const hosts = [{ name: 'a' }, { name: 'b' }, { name: 'c' }, { name: 'd' }];
  await t.hostFailed('a');
  await t.hostFailed('c');
  assert.deepEqual(
    (await t.order(hosts)).map((h) => h.name),
    ['b', 'd', 'a', 'c'],
  );
  await t.hostSucceeded('a');
  assert.deepEqual(
    (await t.order(hosts)).map((h) => h.name),
    ['a', 'b', 'd', 'c'],
  );
});

test('Trouble over the store: what one process finds (down, failed host, TLS step down), another sharing the queue uses', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-trouble-'));
  const [sa, sb] = [new SqliteStore(dir), new SqliteStore(dir)];
  // Each process reads through a cache: another's write shows once its own read is freshMs old.
  const freshMs = 50;
  const later = () => new Promise((r) => setTimeout(r, freshMs + 10));
  try {
    const a = new Trouble(
      storeMemories(() => sa, undefined, freshMs),
      () => settings,
    );
    const b = new Trouble(
      storeMemories(() => sb, undefined, freshMs),
      () => settings,
    );
    const outcome: Outcome = {
      status: 'deferred',
      reply: { code: 421, enhanced: '4.4.2', message: 'Connection dropped', reason: 'closed before the greeting' },
    };
    assert.equal(await b.down('mx:fabrikam.test'), undefined);
    await a.markDown('mx:fabrikam.test', { outcome, attempt: facts });
    assert.equal(await b.down('mx:fabrikam.test'), undefined, 'within freshMs of its own read');
    await later();
    const d = await b.down('mx:fabrikam.test');
    assert.equal(d?.attempt.host, 'mx.fabrikam.test');
    assert.match(
      d?.outcome.reply.reason ?? '',
      /^closed before the greeting \(destination marked unreachable until .*Z\)$/,
    );
    await a.hostFailed('a');
    assert.deepEqual(
      (await b.order([{ name: 'a' }, { name: 'b' }])).map((h) => h.name),
      ['b', 'a'],
    );
    await b.hostSucceeded('a');
    await later();
    assert.deepEqual(
      (await a.order([{ name: 'a' }, { name: 'b' }])).map((h) => h.name),
      ['a', 'b'],
    );
    await a.stepDown('127.0.0.2', { mode: 'plaintext', cause: 'protocol-version' });
    const start = await b.tlsStart({ level: 'opportunistic', source: 'default' }, '127.0.0.2', false);
    assert.deepEqual(
      [start.mode, start.remembered?.value],
      ['plaintext', { mode: 'plaintext', cause: 'protocol-version' }],
    );
  } finally {
    await sa.close();
    await sb.close();
  }
});

test('InMemory: entries run out at their time, expire() forgets them, the size is bounded (oldest written first)', async () => {
  const m = new InMemory<number>(3);
  const now = Date.now();
  await m.set('a', 1, now + 10_000);
  await m.set('b', 2, now + 50);
  await m.set('c', 3, now - 1);
  assert.equal(await m.get('c'), undefined, 'an until already past forgets');
  assert.equal((await m.get('b'))?.value, 2);
  assert.equal(await m.get('b', now + 60), undefined);
  await m.set('b', 2, now + 50);
  assert.equal(await m.expire(now + 60), 1);
  assert.equal(m.size, 1);
  for (const k of ['x', 'y', 'z']) await m.set(k, 0, now + 10_000);
  assert.equal(m.size, 3);
  assert.equal(await m.get('a'), undefined, 'the oldest went when the fourth came');
  await m.set('x', 9, now + 10_000);
  await m.set('w', 0, now + 10_000);
  assert.equal((await m.get('x'))?.value, 9, 'a rewritten key counts as new');
  assert.equal(await m.get('y'), undefined);
});

test('Tally: every host reached lacks REQUIRETLS: the 5.7.30 failure stands (RFC 8689); with another kind of failure it is deferred', () => {
  const noReq = hostFailure({ kind: 'requireTls', detail: 'mx does not offer REQUIRETLS' }, facts);
  assert.equal(noReq.level, 'connection');
  assert.equal(noReq.requireTls, true);
  const t = new Tally();
  t.addressesFound();
  assert.equal(t.hostFailed(noReq), 'next', 'another host may offer it');
  assert.equal(t.hostFailed(noReq), 'next');
  assert.deepEqual(
    [t.verdict()?.outcome.status, t.verdict()?.outcome.reply.enhanced, t.verdict()?.destinationDown],
    ['failed', '5.7.30', false],
  );
  const mixed = new Tally();
  mixed.addressesFound();
  mixed.hostFailed(hostFailure({ kind: 'connect', detail: 'refused' }, facts));
  mixed.hostFailed(noReq);
  assert.deepEqual(
    [mixed.verdict()?.outcome.status, mixed.verdict()?.outcome.reply.code],
    ['deferred', 451],
    'a host that may come back: retry',
  );
});

test('Tally: a host ruled out for REQUIRETLS does not make the destination down for other mail', () => {
  // One host refuses connections, the other lacks REQUIRETLS: the destination is reachable.
  const t = new Tally();
  t.addressesFound();
  t.hostFailed(hostFailure({ kind: 'connect', detail: 'refused' }, facts));
  t.hostFailed(hostFailure({ kind: 'requireTls', detail: 'mx does not offer REQUIRETLS' }, facts));
  assert.equal(t.verdict()?.destinationDown, false);
  const dead = new Tally();
  dead.addressesFound();
  dead.hostFailed(hostFailure({ kind: 'connect', detail: 'refused' }, facts));
  dead.hostFailed(hostFailure({ kind: 'timeout', detail: 'no greeting' }, facts));
  assert.equal(dead.verdict()?.destinationDown, true, 'every host failed at connection level');
});
