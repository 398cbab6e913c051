import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { heloProblem, parsePathArg, validNotify, validOrcpt } from '../../../src/inbound/address.ts';

const ok = (arg: string, o = { allowNull: false, utf8Allowed: false }) => {
  const r = parsePathArg(arg, o);
  if (!r.ok) throw new Error(`expected success for ${arg}: ${r.reply.message}`);
  return r;
};
const bad = (arg: string, o = { allowNull: false, utf8Allowed: false }) => {
  const r = parsePathArg(arg, o);
  if (r.ok) throw new Error(`expected an error for ${arg}`);
  return r.reply;
};

test('plain, quoted, literal and null paths', () => {
  assert.equal(ok('<Alice@Contoso.TEST>').mailbox.address, 'Alice@contoso.test');
  assert.equal(ok('<"john doe"@contoso.test>').mailbox.address, '"john doe"@contoso.test');
  assert.equal(ok('<"simple"@contoso.test>').mailbox.address, 'simple@contoso.test');
  assert.equal(ok('<a@[127.0.0.1]>').mailbox.domain, '[127.0.0.1]');
  assert.equal(ok('<>', { allowNull: true, utf8Allowed: false }).mailbox.address, '');
  assert.equal(ok(' <a@b.test>').mailbox.address, 'a@b.test', 'a space after the colon is tolerated');
  assert.equal(ok('<postmaster>').mailbox.bare, true);
});

test('source routes are stripped (so @ours:user@other targets other)', () => {
  const r = ok('<@contoso.test,@relay.test:user@other.test>');
  assert.equal(r.mailbox.domain, 'other.test');
});

test('routing characters are kept visible for policy', () => {
  assert.equal(ok('<user%other.test@contoso.test>').mailbox.local, 'user%other.test');
  assert.equal(ok('<other.test!user@contoso.test>').mailbox.local, 'other.test!user');
  const q = ok('<"user@other.test"@contoso.test>').mailbox;
  assert.equal(q.local, 'user@other.test');
  assert.equal(q.domain, 'contoso.test');
});

test('parameters', () => {
  const r = ok('<a@b.test> SIZE=100 BODY=8BITMIME', { allowNull: true, utf8Allowed: false });
  assert.equal(r.params.get('SIZE'), '100');
  assert.equal(r.params.get('BODY'), '8BITMIME');
  assert.equal(bad('<a@b.test> SIZE=1 SIZE=2').code, 501);
});

test('syntax errors get 501/553 with enhanced codes', () => {
  assert.equal(bad('a@b.test').enhanced, '5.5.4');
  assert.equal(bad('<a@b.test').enhanced, '5.5.4');
  assert.equal(bad('<a>').enhanced, '5.1.3');
  assert.equal(bad('<a..b@c.test>').enhanced, '5.1.3');
  assert.equal(bad('<a@-bad-.test>').enhanced, '5.1.3');
  assert.equal(bad(`<${'x'.repeat(65)}@c.test>`).enhanced, '5.1.3');
  assert.equal(bad('<>').enhanced, '5.1.3');
  assert.equal(bad('<jöran@c.test>').code, 553);
  assert.equal(ok('<jöran@c.test>', { allowNull: false, utf8Allowed: true }).mailbox.local, 'jöran');
  assert.equal(ok('<jöran@c.test> SMTPUTF8', { allowNull: false, utf8Allowed: false }).mailbox.local, 'jöran');
});

test('DSN parameter syntax', () => {
  assert.ok(validNotify('SUCCESS,FAILURE'));
  assert.ok(validNotify('never'));
  assert.ok(!validNotify('NEVER,SUCCESS'));
  assert.ok(!validNotify('SUCCESS,SUCCESS'));
  assert.ok(validOrcpt('rfc822;a@b.test'));
  assert.ok(validOrcpt('rfc822;a+2Bb@b.test'));
  assert.ok(!validOrcpt('rfc822'));
  assert.ok(!validOrcpt('rfc822;a=b'));
});

test('property: the parser never throws and always returns a verdict', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 300 }), fc.boolean(), fc.boolean(), (s, allowNull, utf8Allowed) => {
      const r = parsePathArg(s, { allowNull, utf8Allowed });
      if (!r.ok) assert.ok(r.reply.code >= 500 && /^5\.\d\.\d+$/.test(r.reply.enhanced));
      else assert.ok(typeof r.mailbox.address === 'string');
    }),
    { numRuns: 5000, seed: 7 },
  );
});

test('<postmaster> without a domain is a recipient only (RFC 5321 §4.1.1.3), never a sender', () => {
  assert.match(bad('<postmaster>', { allowNull: true, utf8Allowed: false }).message, /only valid as a recipient/);
  assert.equal(ok('<Postmaster>').mailbox.address, 'postmaster');
});

test('quoted local parts keep their quotes in the normalised address', () => {
  assert.equal(
    ok('<"x> NOTIFY=NEVER ORCPT=rfc822;y"@corp.contoso.test>').mailbox.address,
    '"x> NOTIFY=NEVER ORCPT=rfc822;y"@corp.contoso.test',
  );
  const r = ok('<"x> NOTIFY=NEVER ORCPT=rfc822;y"@corp.contoso.test>');
  assert.equal(r.params.size, 0, 'text inside the quotes is not parameters');
  assert.equal(ok('<"a>"@c.test>').mailbox.local, 'a>');
});

test('HELO/EHLO argument: a domain (underscores, one label, a trailing dot allowed) or an address literal', () => {
  for (const good of [
    'client.test',
    'mx1.contoso.test',
    'WIN_SERVER01',
    'my_host.corp.test',
    'localhost',
    'host.example.',
    '192.0.2.1',
    '[127.0.0.1]',
    '[IPv6:2001:db8::1]',
    '[ipv6:::1]',
    '  padded.test  ',
    'a'.repeat(63) + '.test',
  ]) {
    assert.equal(heloProblem(good), null, good);
  }
  for (const evil of [
    '',
    ' ',
    'evil\x1b]0;owned\x07\x1b[2J.test',
    'a b',
    'a\tb',
    'bücher.test',
    'a..b',
    '.a',
    '-a.test',
    'a-.test',
    'a/b',
    'a;b',
    '[300.1.1.1]',
    '[127.0.0.1',
    '[foo:bar]',
    'a'.repeat(64) + '.test',
    'x'.repeat(256),
    'a\u0000b',
    '"quoted"',
    '<x@y>',
  ]) {
    assert.notEqual(heloProblem(evil), null, JSON.stringify(evil));
  }
});
