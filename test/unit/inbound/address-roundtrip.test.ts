// Regression tests for findings of the parser fuzzing (proof/fuzz.ts, property "round trip: a
// parsed address re-parses to the same normalised mailbox"): the normalised form of an address
// the parser accepted must itself be accepted, unchanged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parsePathArg } from '../../../src/inbound/address.ts';

function roundTrip(arg: string, utf8Allowed = false) {
  const o = { allowNull: false, utf8Allowed };
  const a = parsePathArg(arg, o);
  if (!a.ok) throw new Error(`refused ${arg}: ${a.reply.message}`);
  const b = parsePathArg(`<${a.mailbox.address}>`, o);
  if (!b.ok) throw new Error(`normalised ${a.mailbox.address} refused: ${b.reply.message}`);
  assert.equal(b.mailbox.address, a.mailbox.address);
  return a.mailbox;
}

test('IPv6 address literals: the tag is case-insensitive, so the lower-cased form parses again', () => {
  assert.equal(roundTrip('<""@[IPv6:::1]>').domain, '[ipv6:::1]');
  assert.equal(roundTrip('<a@[ipv6:2001:DB8::1]>').domain, '[ipv6:2001:db8::1]');
  assert.equal(roundTrip('<a@[IPV6:::1]>').address, 'a@[ipv6:::1]');
});

test('only ASCII letters of the domain are lower-cased: Unicode case mapping would change the name', () => {
  // "İ" lower-cases to two code units: the form kept is the one given (ASCII letters lower-cased).
  const label = 'İ'.repeat(10);
  assert.equal(roundTrip(`<a@${label}.TEST>`, true).domain, `${label}.test`);
  // 33 of them have no A-label form within the 63-octet label limit: no valid IDN, refused.
  assert.equal(parsePathArg(`<a@${'İ'.repeat(33)}.test>`, { allowNull: false, utf8Allowed: true }).ok, false);
  // KELVIN SIGN lower-cases to the ASCII "k": a UTF-8 domain must not turn into an ASCII one.
  assert.equal(roundTrip('<a@\u212Aontoso.Test>', true).domain, '\u212Aontoso.test');
  assert.equal(roundTrip('<Alice@Contoso.TEST>').address, 'Alice@contoso.test');
});
