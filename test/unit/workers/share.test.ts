// The workers' shares of a per-gateway limit (workers/protocol.ts shareOf): they sum to the limit
// whenever it is at least the number of workers, differ by at most one, and are never 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { shareOf } from '../../../src/workers/protocol.ts';

const shares = (total: number, of: number) => Array.from({ length: of }, (_, i) => shareOf(total, i + 1, of));

test('shares of the initial window and of the maximum: 5 and 20 among 2, 3 and 4 workers', () => {
  assert.deepEqual(shares(5, 1), [5]);
  assert.deepEqual(shares(5, 2), [3, 2]);
  assert.deepEqual(shares(20, 2), [10, 10]);
  assert.deepEqual(shares(5, 3), [2, 2, 1]);
  assert.deepEqual(shares(20, 3), [7, 7, 6]);
  assert.deepEqual(shares(5, 4), [2, 1, 1, 1]);
});

test('the shares sum to the limit, differ by at most one; below one each, every worker still gets 1', () => {
  for (let of = 1; of <= 64; of++)
    for (let total = 1; total <= 200; total++) {
      const s = shares(total, of);
      assert.ok(Math.min(...s) >= 1);
      assert.ok(Math.max(...s) - Math.min(...s) <= 1);
      assert.equal(
        s.reduce((a, b) => a + b, 0),
        Math.max(total, of),
        `${total} among ${of}`,
      );
    }
});
