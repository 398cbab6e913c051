// Identifiers (src/util/ids.ts): queue ids sort by time and do not repeat; session ids do not
// repeat; both take their randomness from a pool refilled from the CSPRNG, across refills.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { queueId, sessionId } from '../../../src/util/ids.ts';

test('queue ids: 50,000 in a row are distinct and sort in the order they were made', () => {
  const ids = Array.from({ length: 50_000 }, () => queueId());
  assert.equal(new Set(ids).size, ids.length);
  assert.deepEqual([...ids].sort(), ids);
  assert.ok(ids.every((id) => /^[0-9BCDFGHJKLMNPQRSTVWXYZ]{17}$/.test(id)));
});

test('queue ids of one millisecond differ in their random part (not only in the sequence)', () => {
  const now = Date.now() + 60_000;
  const tails = Array.from({ length: 2_000 }, () => queueId(now).slice(12));
  assert.ok(new Set(tails).size > 1_990, `only ${new Set(tails).size} distinct random parts in 2,000`);
});

test('session ids: 50,000 distinct, 8 base64url characters each', () => {
  const ids = Array.from({ length: 50_000 }, () => sessionId());
  assert.equal(new Set(ids).size, ids.length);
  assert.ok(ids.every((id) => /^[A-Za-z0-9_-]{8}$/.test(id)));
});
