import { test } from 'node:test';
import assert from 'node:assert/strict';
import { nameMatches, namesSatisfy } from '../../src/tls/names.ts';

test('RFC 6125 wildcard rules', () => {
  assert.ok(nameMatches('mx1.fabrikam.test', 'MX1.fabrikam.test.'));
  assert.ok(nameMatches('*.fabrikam.test', 'mx1.fabrikam.test'));
  assert.ok(!nameMatches('*.fabrikam.test', 'fabrikam.test'));
  assert.ok(!nameMatches('*.fabrikam.test', 'a.mx1.fabrikam.test'), 'one label only');
  assert.ok(!nameMatches('*.test', 'fabrikam.test'), 'no wildcard over a bare TLD');
  assert.ok(!nameMatches('m*.fabrikam.test', 'mx1.fabrikam.test'), 'partial-label wildcards are not honoured');
  assert.ok(!nameMatches('*.*.fabrikam.test', 'a.b.fabrikam.test'));
});

test('required patterns (tlsDomain)', () => {
  assert.ok(namesSatisfy(['mx1.fabrikam.test'], '*.fabrikam.test'));
  assert.ok(namesSatisfy(['*.fabrikam.test'], '*.fabrikam.test'));
  assert.ok(!namesSatisfy(['mx.other.test'], '*.fabrikam.test'));
  assert.ok(!namesSatisfy(['fabrikam.test.evil.test'], '*.fabrikam.test'));
  assert.ok(namesSatisfy(['*.fabrikam.test'], 'mx1.fabrikam.test'));
  assert.ok(!namesSatisfy(['mx2.fabrikam.test'], 'mx1.fabrikam.test'));
});
