// The audit log and calls without a valid token: recorded (with the caller's address), but at most
// ANONYMOUS_AUDIT a minute, so that anyone reaching the port cannot fill the store; a summary
// entry says how many were not, and from where.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { buildApp } from '../../../src/admin/http/app.ts';
import { ANONYMOUS_AUDIT, AnonymousAudit } from '../../../src/admin/http/audit-limit.ts';
import type { AdminDeps } from '../../../src/admin/http/deps.ts';
import type { AuditEntry, Store } from '../../../src/store/types.ts';

test('calls without a valid token: at most ANONYMOUS_AUDIT entries a minute, then a summary of the rest', async () => {
  mock.timers.enable({ apis: ['Date', 'setTimeout'], now: 1_000_000 });
  const entries: AuditEntry[] = [];
  const store = {
    tokenByHash: async () => null,
    appendAudit: async (e: AuditEntry) => {
      entries.push(e);
      return entries.length;
    },
  } as unknown as Store;
  const app = await buildApp({ store: () => store, uiDir: null } as unknown as AdminDeps);
  try {
    const post = (remoteAddress: string) =>
      app.inject({ method: 'POST', url: '/api/v1/queue/ABC/retry', remoteAddress });
    for (let i = 0; i < ANONYMOUS_AUDIT.max; i++) assert.equal((await post('127.0.0.9')).statusCode, 401);
    assert.equal(entries.length, ANONYMOUS_AUDIT.max);
    assert.deepEqual(
      [entries[0].actor, entries[0].action, entries[0].status],
      ['(no valid token)', 'queue.retry', 401],
    );
    assert.match(entries[0].detail!, /^from 127\.0\.0\.9: a valid bearer token is needed/);
    // Over the limit: counted, with the addresses they came from, none written yet.
    for (let i = 0; i < 15; i++) assert.equal((await post(`127.0.1.${i}`)).statusCode, 401);
    assert.equal(entries.length, ANONYMOUS_AUDIT.max, 'bounded');
    mock.timers.tick(ANONYMOUS_AUDIT.windowMs);
    await new Promise((r) => setImmediate(r));
    assert.equal(entries.length, ANONYMOUS_AUDIT.max + 1, 'the summary, one window later');
    const summary = entries.at(-1)!;
    assert.deepEqual([summary.action, summary.result, summary.status], ['admin.unauthenticated', 'refused', 401]);
    assert.match(
      summary.detail!,
      /^15 more calls without a valid token not recorded one by one, from 127\.0\.1\.0, 127\.0\.1\.1, .*127\.0\.1\.9 and others$/,
    );
    // A new window: entries again; a count left when the server closes is written then.
    assert.equal((await post('127.0.0.9')).statusCode, 401);
    assert.equal(entries.length, ANONYMOUS_AUDIT.max + 2);
    for (let i = 0; i < ANONYMOUS_AUDIT.max; i++) await post('127.0.0.9');
    await app.close();
    assert.match(
      entries.at(-1)!.detail!,
      /^1 more call without a valid token not recorded one by one, from 127\.0\.0\.9$/,
    );
  } finally {
    await app.close();
    mock.timers.reset();
  }
});

test('after the close, a call still being answered writes its own entry: no summary is to come, no timer', async () => {
  const written: AuditEntry[] = [];
  const a = new AnonymousAudit(async (e) => written.push(e));
  for (let i = 0; i < ANONYMOUS_AUDIT.max; i++) assert.equal(a.admit('127.0.0.9'), true);
  assert.equal(a.admit('127.0.0.9'), false, 'over the limit: counted');
  await a.close();
  assert.equal(written.length, 1, 'the summary');
  assert.equal(a.admit('127.0.0.7'), true, 'closed: its own entry');
  assert.equal(a.admit('127.0.0.7'), true);
});
