import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SqliteStore } from '../../../src/store/sqlite/index.ts';
import type { NewMessage } from '../../../src/store/types.ts';

const dir = () => mkdtempSync(path.join(os.tmpdir(), 'pc-store-'));
const msg = (id: string, rcpts = 2): NewMessage => ({
  id, org: 'contoso', receivedAt: Date.now(), mailFrom: 's@x.test', messageId: `<${id}@x>`,
  envelope: { smtputf8: false }, inbound: { sessionId: 's', clientIp: '127.0.0.1', clientPort: 1, helo: 'h', protocol: 'ESMTPS', receivedBy: 'mx' },
  data: Buffer.from(`Subject: ${id}\r\n\r\nbody\r\n`),
  recipients: Array.from({ length: rcpts }, (_, i) => ({ address: `r${i}@contoso.test`, org: 'contoso', route: 'local' as const })),
});
const ok = (idx: number) => ({ idx, status: 'delivered' as const, reply: { code: 250, enhanced: '2.0.0', message: 'ok' }, agent: 'maildir' });
const later = (idx: number) => ({ idx, status: 'deferred' as const, reply: { code: 451, enhanced: '4.3.0', message: 'later' }, agent: 'maildir' });

test('concurrent enqueues commit together and survive reopening', async () => {
  const d = dir();
  const s = new SqliteStore(d);
  await Promise.all(Array.from({ length: 50 }, (_, i) => s.enqueue(msg(`M${i}`))));
  await s.close();
  const s2 = new SqliteStore(d);
  assert.equal((await s2.list()).length, 50);
  const m = await s2.get('M7');
  assert.equal(m?.recipients.length, 2);
  assert.equal((await s2.data('M7'))?.toString(), 'Subject: M7\r\n\r\nbody\r\n');
  assert.equal(m?.messageId, '<M7@x>');
  await s2.close();
});

test('a failing write in a batch fails alone', async () => {
  const s = new SqliteStore(dir());
  await s.enqueue(msg('DUP'));
  const results = await Promise.allSettled([s.enqueue(msg('A1')), s.enqueue(msg('DUP')), s.enqueue(msg('A2'))]);
  assert.deepEqual(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
  assert.equal((await s.list()).length, 3);
  await s.close();
});

test('claim leases; a second claimer gets nothing until the lease expires', async () => {
  const s = new SqliteStore(dir());
  await s.enqueue(msg('L1'));
  const a = await s.claim('A', 10, 60_000);
  assert.equal(a.length, 1);
  assert.equal((await s.claim('B', 10, 60_000)).length, 0);
  const b = await s.claim('B', 10, 60_000, Date.now() + 61_000);
  assert.equal(b.length, 1, 'an expired lease is claimable by another owner');
  await s.close();
});

test('complete: partial delivery defers the rest; all delivered ⇒ done and data purged', async () => {
  const s = new SqliteStore(dir());
  await s.enqueue(msg('C1'));
  await s.claim('A', 10, 60_000);
  const next = Date.now() + 60_000;
  assert.equal(await s.complete('C1', 'A', [ok(0), later(1)], next), 'deferred');
  let m = await s.get('C1');
  assert.equal(m?.state, 'deferred');
  assert.equal(m?.nextAttemptAt, next);
  assert.deepEqual(m?.recipients.map((r) => r.status), ['delivered', 'deferred']);
  assert.equal((await s.claim('A', 10, 60_000)).length, 0, 'not due yet');
  assert.ok(await s.retryNow('C1'));
  const again = await s.claim('A', 10, 60_000);
  assert.deepEqual(again[0].recipients.map((r) => r.idx), [1], 'only unfinished recipients are handed out');
  assert.equal(await s.complete('C1', 'A', [ok(1)], 0), 'done');
  m = await s.get('C1');
  assert.equal(m?.state, 'done');
  assert.equal(await s.data('C1'), null);
  assert.equal((await s.trace('C1')).filter((e) => e.kind === 'delivery').length, 3);
  await s.close();
});

test('releaseLeases returns active messages to the queue (single-node restart)', async () => {
  const s = new SqliteStore(dir());
  await s.enqueue(msg('R1'));
  await s.claim('dead', 10, 3_600_000);
  assert.equal(await s.releaseLeases(), 1);
  assert.equal((await s.claim('A', 10, 60_000)).length, 1);
  await s.close();
});

test('deleteQueued takes a message out of the queue but keeps envelope, recipients and trace', async () => {
  const s = new SqliteStore(dir());
  await s.enqueue(msg('D1'));
  await s.claim('A', 10, 60_000);
  await s.complete('D1', 'A', [ok(0), later(1)], Date.now() + 60_000);
  const r = await s.deleteQueued('D1', 'alice');
  assert.deepEqual(r, { deleted: true, recipients: 1 });
  const m = await s.get('D1');
  assert.equal(m?.state, 'done');
  assert.deepEqual(m?.recipients.map((x) => x.status), ['delivered', 'deleted'], 'only the open recipient is deleted');
  assert.equal(await s.data('D1'), null, 'the message data is gone');
  const trace = await s.trace('D1');
  assert.deepEqual(trace.map((e) => e.kind), ['delivery', 'delivery', 'deleted']);
  assert.deepEqual(trace[2].data, { by: 'alice', rcpts: [1], state: 'deferred' });
  assert.equal((await s.claim('A', 10, 60_000, Date.now() + 3_600_000)).length, 0, 'never claimed again');
  assert.equal((await s.search({ queueId: 'D1' })).length, 1, 'trace still finds it');
  assert.deepEqual(await s.deleteQueued('D1', 'alice'), { deleted: false, why: 'finished' });
  assert.deepEqual(await s.deleteQueued('NOPE', 'alice'), { deleted: false, why: 'unknown' });
  await s.close();
});

test('deleteQueued leaves a message in delivery alone until its lease has expired', async () => {
  const s = new SqliteStore(dir());
  await s.enqueue(msg('L2'));
  await s.claim('A', 10, 60_000);
  assert.deepEqual(await s.deleteQueued('L2', 'bob'), { deleted: false, why: 'inDelivery' });
  assert.equal((await s.get('L2'))?.state, 'active');
  assert.deepEqual(await s.deleteQueued('L2', 'bob', Date.now() + 61_000), { deleted: true, recipients: 2 });
  await s.close();
});

const DAY = 86_400_000;

test('purgeDone forgets only done messages that finished before the cut-off, oldest first, in batches', async () => {
  const s = new SqliteStore(dir());
  const t0 = Date.now();
  // Done at explicit times (deleted by an administrator then), and messages still queued.
  for (const [id, age] of [['OLD3', 33], ['OLD1', 40], ['OLD2', 35], ['NEW', 1]] as const) {
    await s.enqueue({ ...msg(id), receivedAt: t0 - (age + 1) * DAY });
    await s.deleteQueued(id, 'root', t0 - age * DAY);
  }
  await s.enqueue({ ...msg('WAITING'), receivedAt: t0 - 100 * DAY });
  await s.enqueue(msg('DELIVERED'));
  await s.claim('A', 10, 60_000);
  await s.complete('DELIVERED', 'A', [ok(0), ok(1)], 0);
  await s.claim('A', 10, 60_000, t0 + 1);   // WAITING: in delivery, received 100 days ago
  await s.releaseLeases();

  const cut = t0 - 30 * DAY;
  assert.equal(await s.purgeDone(cut, 2), 2);
  assert.equal(await s.get('OLD1'), null, 'oldest first');
  assert.equal(await s.get('OLD2'), null);
  assert.ok(await s.get('OLD3'));
  assert.equal(await s.purgeDone(cut, 2), 1);
  assert.equal(await s.purgeDone(cut, 2), 0);
  for (const id of ['OLD1', 'OLD2', 'OLD3']) {
    assert.deepEqual(await s.trace(id), [], `${id}: events gone`);
    assert.equal((await s.search({ queueId: id })).length, 0);
  }
  assert.equal((await s.search({ recipient: 'r0@contoso.test' })).length, 3, 'recipients of forgotten messages are gone');
  for (const id of ['NEW', 'WAITING', 'DELIVERED']) assert.ok(await s.get(id), `${id} kept`);
  assert.equal((await s.trace('NEW')).length, 1);
  assert.equal((await s.trace('DELIVERED')).length, 2);
  assert.equal((await s.get('WAITING'))?.state, 'deferred', 'a queued message is never forgotten, however old');
  assert.ok(await s.data('WAITING'));
  await s.close();
});

test('TLS-RPT: session counts add up per day, domain, policy and failure; reports sent and received are kept', async () => {
  const s = new SqliteStore(mkdtempSync(path.join(os.tmpdir(), 'pc-store-tlsrpt-')));
  const ok = { day: '2026-03-04', policyDomain: 'dest.test', policy: { type: 'no-policy-found' as const }, count: 1 };
  const bad = { ...ok, resultType: 'starttls-not-supported' as const, sendingIp: '127.0.0.1', mxHost: 'mx.dest.test', mxIp: '127.0.0.9', reason: 'r' };
  await Promise.all([s.countTlsSessions([ok]), s.countTlsSessions([ok, bad]), s.countTlsSessions([{ ...ok, day: '2026-03-05' }])]);
  await s.countTlsSessions([{ ...ok, count: 3 }, { ...bad, mxIp: '127.0.0.10' }]);
  const rows = await s.tlsSessions('2026-03-04');
  assert.deepEqual(rows.map((r) => [r.resultType ?? 'ok', r.mxIp ?? '', r.count]), [['ok', '', 5], ['starttls-not-supported', '127.0.0.10', 1], ['starttls-not-supported', '127.0.0.9', 1]]);
  assert.deepEqual(rows[2], { ...bad, count: 1 });
  assert.equal((await s.tlsSessions('2026-03-05'))[0].count, 1);
  const sent = { day: '2026-03-04', policyDomain: 'dest.test', reportId: 'r1', at: 5, destinations: [{ uri: 'mailto:a@b.test', ok: true, detail: 'queued as X' }] };
  await s.tlsReportSent(sent);
  await s.tlsReportSent({ ...sent, reportId: 'r2' });
  assert.deepEqual(await s.tlsReportsSent('2026-03-04'), [{ ...sent, reportId: 'r2' }], 'one per day and domain: the last one');
  await s.addReceivedTlsReport({ receivedAt: 1, queueId: 'Q1', mailFrom: 'a@b.test', content: '{}', problem: 'bad' });
  await s.addReceivedTlsReport({ receivedAt: 2, queueId: 'Q2', mailFrom: '', organization: 'O', reportId: 'x', content: '{"a":1}' });
  assert.deepEqual(await s.receivedTlsReports(10), [
    { receivedAt: 2, queueId: 'Q2', mailFrom: '', organization: 'O', reportId: 'x', content: '{"a":1}' },
    { receivedAt: 1, queueId: 'Q1', mailFrom: 'a@b.test', content: '{}', problem: 'bad' },
  ]);
  await s.close();
});
