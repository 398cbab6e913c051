// The audit log and calls without a valid token: recorded (with the caller's address), but at most
// ANONYMOUS_AUDIT a minute, so that anyone reaching the port cannot fill the store; the next entry
// written says how many were not.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { ANONYMOUS_AUDIT, buildApp } from '../../../src/admin/http/app.ts';
import type { AdminDeps } from '../../../src/admin/http/deps.ts';
import type { AuditEntry, Store } from '../../../src/store/types.ts';

test('calls without a valid token: at most ANONYMOUS_AUDIT entries a minute, then one that counts the rest', async () => {
  mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
  const entries: AuditEntry[] = [];
  const store = {
    tokenByHash: async () => null,
    appendAudit: async (e: AuditEntry) => {
      entries.push(e);
    },
  } as unknown as Store;
  const app = await buildApp({ store: () => store, uiDir: null } as unknown as AdminDeps);
  try {
    const post = () => app.inject({ method: 'POST', url: '/api/v1/queue/ABC/retry', remoteAddress: '127.0.0.9' });
    const extra = 15;
    for (let i = 0; i < ANONYMOUS_AUDIT.max + extra; i++) assert.equal((await post()).statusCode, 401);
    assert.equal(entries.length, ANONYMOUS_AUDIT.max, 'bounded');
    assert.deepEqual(
      [entries[0].actor, entries[0].action, entries[0].status],
      ['(no valid token)', 'queue.retry', 401],
    );
    assert.match(entries[0].detail!, /^from 127\.0\.0\.9: a valid bearer token is needed/);
    mock.timers.tick(ANONYMOUS_AUDIT.windowMs);
    assert.equal((await post()).statusCode, 401);
    assert.equal(entries.length, ANONYMOUS_AUDIT.max + 1);
    assert.match(entries.at(-1)!.detail!, new RegExp(`\\(and ${extra} more calls without a valid token not recorded`));
  } finally {
    await app.close();
    mock.timers.reset();
  }
});
