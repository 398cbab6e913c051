// Admission across worker processes: the supervisor's one count (SharedAdmission) answers every
// worker's WorkerAdmission; limits hold across workers, a dead worker's sessions are released,
// and a worker that cannot reach the supervisor refuses.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SharedAdmission, WorkerAdmission } from '../../../src/workers/admission.ts';
import type { Slot } from '../../../src/inbound/admission.ts';
import type { SmtpReply } from '../../../src/errors.ts';
import type { ToSupervisor } from '../../../src/workers/protocol.ts';

const limits = { maxConnections: 10, maxConnectionsPerIP: 2, reservedConnections: undefined };
const nobody = { identifiesClients: false, identifiesAddress: () => false };

/** Worker n wired to the supervisor's count through a (synchronous) channel. */
function worker(shared: SharedAdmission, n: number): WorkerAdmission {
  const w: WorkerAdmission = new WorkerAdmission((m: ToSupervisor) => {
    const answer = shared.handle(n, m);
    if (answer) queueMicrotask(() => w.onMessage(answer));
    return true;
  });
  return w;
}

const isSlot = (v: Slot | SmtpReply): v is Slot => !('code' in v);

test('the per-address limit counts the sessions of all workers; a dead worker releases its own', async () => {
  const shared = new SharedAdmission();
  const w1 = worker(shared, 1);
  const w2 = worker(shared, 2);
  const a = await w1.admit('192.0.2.1', limits, nobody);
  const b = await w2.admit('192.0.2.1', limits, nobody);
  assert.ok(isSlot(a) && isSlot(b));
  const c = await w2.admit('192.0.2.1', limits, nobody);
  assert.ok(!isSlot(c));
  assert.equal(c.code, 421);
  assert.equal(shared.sessions, 2);
  shared.forget(1); // worker 1 died with its session
  assert.equal(shared.sessions, 1);
  assert.ok(isSlot(await w2.admit('192.0.2.1', limits, nobody)));
  w2.release(b);
  w2.release(b); // idempotent
  assert.equal(shared.sessions, 1);
});

test('a worker whose channel is closed refuses with 421 4.7.0 instead of admitting uncounted', async () => {
  const w = new WorkerAdmission(() => false);
  const v = await w.admit('192.0.2.1', limits, nobody);
  assert.ok(!isSlot(v));
  assert.equal(v.code, 421);
  assert.equal(v.enhanced, '4.7.0');
});

test('a session that proves a certificate moves to the reserve in the shared count', async () => {
  const shared = new SharedAdmission();
  const w = worker(shared, 1);
  const smtp = { maxConnections: 2, maxConnectionsPerIP: 5, reservedConnections: 1 };
  const who = { identifiesClients: true, identifiesAddress: () => false };
  const s = await w.admit('192.0.2.7', smtp, who);
  assert.ok(isSlot(s) && !s.reserved);
  // The general pool (2 - 1 reserved) is full now.
  assert.ok(!isSlot(await w.admit('192.0.2.8', smtp, who)));
  w.identified(s);
  assert.ok(isSlot(await w.admit('192.0.2.8', smtp, who)), 'its place in the general pool is free again');
});
