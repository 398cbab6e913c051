// Admission counting (inbound/admission.ts): pools, per-address limits, idempotent release and the
// bounded memory of addresses that proved a connector certificate. Policy answers are stubbed here
// (the real ones are tested in test/unit/policy/connectors-admission.test.ts and e2e).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Admission,
  MAX_PROVEN,
  PROVEN_TTL_MS,
  reservedConnections,
  type Identification,
  type Slot,
} from '../../../src/inbound/admission.ts';

const limits = { maxConnections: 10, maxConnectionsPerIP: 5, reservedConnections: 2 };
const partner = '192.0.2.1';
const who: Identification = { identifiesClients: true, identifiesAddress: (ip: string): boolean => ip === partner };
const isSlot = (s: Slot | { code: number }): s is Slot => !('code' in s);

function fill(a: Admission, n: number, ipOf: (i: number) => string, w: Identification = who): Slot[] {
  const out: Slot[] = [];
  for (let i = 0; i < n; i++) {
    const s = a.admit(ipOf(i), limits, w);
    assert.ok(isSlot(s), `admission ${i}`);
    out.push(s);
  }
  return out;
}

test('default reserve: 10% of maxConnections, at least 1, always below maxConnections', () => {
  assert.equal(reservedConnections({ maxConnections: 1000, maxConnectionsPerIP: 50 }), 100);
  assert.equal(reservedConnections({ maxConnections: 5, maxConnectionsPerIP: 50 }), 1);
  assert.equal(reservedConnections({ maxConnections: 1, maxConnectionsPerIP: 50 }), 0);
  assert.equal(reservedConnections({ maxConnections: 10, maxConnectionsPerIP: 50, reservedConnections: 0 }), 0);
});

test('unidentified clients fill only maxConnections − reserved; an identified address gets the rest', () => {
  const a = new Admission();
  fill(a, 8, (i) => `198.51.100.${i}`);
  const r = a.admit('198.51.100.99', limits, who);
  assert.ok(!isSlot(r) && r.message === 'Too many connections, try again later');
  const p = fill(a, 2, () => partner);
  assert.ok(p.every((s) => s.reserved && !s.provisional));
  assert.ok(!isSlot(a.admit(partner, limits, who)), 'maxConnections holds for identified clients too');
  assert.equal(a.sessions, 10);
});

test('no connector identifies anyone: nothing is reserved', () => {
  const a = new Admission();
  const nobody = { identifiesClients: false, identifiesAddress: () => false };
  fill(a, 10, (i) => `198.51.100.${i}`, nobody);
  assert.ok(!isSlot(a.admit('198.51.100.99', limits, nobody)));
});

test('release is idempotent: counts never drop twice', () => {
  const a = new Admission();
  const [s] = fill(a, 1, () => '198.51.100.1');
  a.release(s);
  a.release(s);
  assert.equal(a.sessions, 0);
  fill(a, 5, () => '198.51.100.1');
  const sixth = a.admit('198.51.100.1', limits, who);
  assert.ok(!isSlot(sixth) && /from your address/.test(sixth.message), 'the per-address limit still holds');
});

test('a certificate-identified session moves to the reserve and frees its general place; its address is admitted provisionally later', () => {
  const a = new Admission();
  const [first] = fill(a, 1, () => '203.0.113.7');
  a.identified(first);
  assert.ok(first.reserved);
  fill(a, 8, (i) => `198.51.100.${i}`); // the general pool has all 8 places again
  assert.ok(!isSlot(a.admit('198.51.100.50', limits, who)));
  const again = a.admit('203.0.113.7', limits, who);
  assert.ok(isSlot(again) && again.reserved && again.provisional);
  a.identified(again);
  assert.ok(!again.provisional);
  a.release(again);
  a.release(first);
  assert.equal(a.sessions, 8);
});

test('proven addresses expire and are bounded', () => {
  let now = 0;
  const a = new Admission(() => now);
  for (let i = 0; i <= MAX_PROVEN; i++) {
    const s = a.admit(`10.0.${i >> 8}.${i & 255}`, { ...limits, maxConnections: 100_000 }, who);
    assert.ok(isSlot(s));
    a.identified(s);
    a.release(s);
  }
  fill(a, 8, (i) => `198.51.100.${i}`);
  assert.ok(!isSlot(a.admit('10.0.0.0', limits, who)), 'the oldest proven address was forgotten (bound)');
  assert.ok(isSlot(a.admit('10.0.0.1', limits, who)), 'a newer one is remembered');
  now += PROVEN_TTL_MS + 1;
  assert.ok(!isSlot(a.admit('10.0.0.2', limits, who)), 'and forgotten after its time');
});
