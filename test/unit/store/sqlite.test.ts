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

test('remove deletes message, recipients and data', async () => {
  const s = new SqliteStore(dir());
  await s.enqueue(msg('D1'));
  assert.ok(await s.remove('D1'));
  assert.equal(await s.get('D1'), null);
  assert.equal(await s.remove('D1'), false);
  await s.close();
});
