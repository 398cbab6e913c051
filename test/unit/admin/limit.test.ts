// The admin centre's rate limits: a use passes every limit or reserves nothing; one
// organisation's test messages do not use up another's.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Limits } from '../../../src/admin/http/limit.ts';
import { TEST_SENDS } from '../../../src/admin/http/routes/connectors.ts';

const HOUR = 3_600_000;
const keys = (org: string, connector: string) => ({
  perConnector: `${org}/${connector}`,
  perOrganization: org,
  perNode: 'node',
});

test("test sends: an organisation that used its hour's budget leaves the others theirs", () => {
  const b = new Limits(TEST_SENDS);
  const t0 = 1_000_000;
  for (let i = 0; i < TEST_SENDS.perOrganization.max; i++) assert.equal(b.take(keys('a', `c${i}`), t0 + i), null);
  const refused = b.take(keys('a', 'another'), t0 + 100);
  assert.deepEqual(refused, { limit: 'perOrganization', waitMs: HOUR - 100 });
  assert.equal(b.take(keys('b', 'c0'), t0 + 100), null, "organisation b's budget is its own");
  // The refused attempt reserved nothing: its connector is free once the organisation's hour has passed.
  assert.equal(b.take(keys('a', 'another'), t0 + HOUR), null);
});

test('test sends: one per connector per minute; the node as a whole has a ceiling above any one organisation', () => {
  const b = new Limits(TEST_SENDS);
  assert.ok(TEST_SENDS.perNode.max >= 5 * TEST_SENDS.perOrganization.max);
  assert.equal(b.take(keys('a', 'x'), 0), null);
  assert.deepEqual(b.take(keys('a', 'x'), 30_000), { limit: 'perConnector', waitMs: 30_000 });
  let used = 1;
  for (let org = 0; used < TEST_SENDS.perNode.max; org++)
    for (let i = 0; i < TEST_SENDS.perOrganization.max && used < TEST_SENDS.perNode.max; i++, used++)
      assert.equal(b.take(keys(`o${org}`, `c${i}`), 1000), null);
  assert.deepEqual(b.take(keys('fresh', 'c'), 2000), { limit: 'perNode', waitMs: HOUR - 2000 });
  // A use given back (nothing was sent) frees every limit it held.
  b.release(keys('o0', 'c0'), 1000);
  assert.equal(b.take(keys('fresh', 'c'), 2000), null);
});
