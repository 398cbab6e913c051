// The canonical address form: one formatter, one parser, and the SMTP path built from it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  foldCase,
  formatMailbox,
  parseAddress,
  parseMailbox,
  policyDomain,
  smtpPath,
  type Mailbox,
} from '../../src/mailbox.ts';

const parsed = (inner: string, utf8 = false): Mailbox => {
  const r = parseMailbox(inner, utf8);
  if (!r.ok) throw new Error(`refused ${inner}: ${r.reply.message}`);
  return r.mailbox;
};
const refused = (inner: string, utf8 = false): string => {
  const r = parseMailbox(inner, utf8);
  if (r.ok) throw new Error(`accepted ${inner} as ${r.mailbox.address}`);
  return r.reply.message;
};

test('canonical form: dot-atoms as they are, everything else quoted with only " and \\ escaped', () => {
  assert.equal(formatMailbox('alice', 'Contoso.TEST'), 'alice@contoso.test');
  assert.equal(formatMailbox('a.b+tag', 'contoso.test'), 'a.b+tag@contoso.test');
  assert.equal(formatMailbox('a b', 'contoso.test'), '"a b"@contoso.test');
  assert.equal(formatMailbox('a>', 'contoso.test'), '"a>"@contoso.test');
  assert.equal(
    formatMailbox('x> NOTIFY=NEVER ORCPT=rfc822;y', 'corp.contoso.test'),
    '"x> NOTIFY=NEVER ORCPT=rfc822;y"@corp.contoso.test',
  );
  assert.equal(formatMailbox('"carol"', 'contoso.test'), '"\\"carol\\""@contoso.test');
  assert.equal(formatMailbox('a\\b', 'contoso.test'), '"a\\\\b"@contoso.test');
  assert.equal(formatMailbox('', 'contoso.test'), '""@contoso.test');
  assert.equal(formatMailbox('a..b', 'contoso.test'), '"a..b"@contoso.test');
  assert.equal(formatMailbox('.a', 'contoso.test'), '".a"@contoso.test');
  assert.equal(formatMailbox('jöran', 'Bücher.TEST'), 'jöran@bücher.test');
});

test('parsing gives the canonical form: needless quotes and escapes go, needed ones stay', () => {
  assert.equal(parsed('"simple"@contoso.test').address, 'simple@contoso.test');
  assert.equal(parsed('"s\\imple"@contoso.test').address, 'simple@contoso.test');
  assert.equal(parsed('"\\"carol\\""@contoso.test').local, '"carol"');
  assert.equal(parsed('"\\"carol\\""@contoso.test').address, '"\\"carol\\""@contoso.test');
  assert.equal(parsed('@a.test,@b.test:"a b"@C.test').address, '"a b"@c.test');
});

test('quoted strings hold printable ASCII only (RFC 5321 qtextSMTP), UTF-8 with SMTPUTF8', () => {
  assert.match(refused('"a\tb"@c.test'), /control character/);
  assert.match(refused('"a\x7fb"@c.test'), /control character/);
  assert.match(refused('"a\x1b[2Jb"@c.test'), /control character/);
  assert.match(refused('"a\\\x01"@c.test'), /bad escape/);
  assert.match(refused('"a\u009bb"@c.test', true), /control character/);
  assert.match(refused('a\u009bb@c.test', true), /bad local part/);
  assert.match(refused('"abc@c.test'), /unterminated/);
  assert.match(refused('"abc\\'), /unterminated/);
  assert.equal(parsed('"jö ran"@c.test', true).address, '"jö ran"@c.test');
});

test('a stored address is taken back only in canonical form', () => {
  const ab = parseAddress('"a b"@c.test', false);
  assert.equal(ab.ok && ab.mailbox.local, 'a b');
  const empty = parseAddress('', false);
  assert.equal(empty.ok && empty.mailbox.address, '');
  for (const bad of [
    '"simple"@c.test',
    'a@C.test',
    '@r.test:a@c.test',
    'x> NOTIFY=NEVER ORCPT=rfc822;y@corp.contoso.test',
    'a b@c.test',
    '"carol"@c.test x',
  ]) {
    assert.ok(!parseAddress(bad, true).ok, bad);
  }
});

test('smtpPath: a valid RFC 5321 path or the reason, never a broken path', () => {
  assert.deepEqual(smtpPath('"a>"@c.test', 'recipient', false), { ok: true, path: '<"a>"@c.test>' });
  assert.deepEqual(smtpPath('', 'sender', false), { ok: true, path: '<>' });
  assert.deepEqual(smtpPath('postmaster', 'recipient', false), { ok: true, path: '<postmaster>' });
  assert.ok(!smtpPath('postmaster', 'sender', false).ok);
  assert.ok(!smtpPath('', 'recipient', false).ok);
  assert.ok(!smtpPath('jöran@c.test', 'recipient', false).ok, 'UTF-8 needs SMTPUTF8');
  assert.deepEqual(smtpPath('jöran@c.test', 'recipient', true), { ok: true, path: '<jöran@c.test>' });
  // What earlier versions queued for "x> NOTIFY=NEVER ..."@corp.contoso.test: refused, not sent.
  assert.match(
    String(
      (smtpPath('x> NOTIFY=NEVER ORCPT=rfc822;y@corp.contoso.test', 'recipient', false) as { problem: string }).problem,
    ),
    /local part/,
  );
});

test('case folding never turns a non-ASCII character into an ASCII one', () => {
  assert.equal(foldCase('Alice'), 'alice');
  assert.equal(foldCase('ÉMILE'), 'émile');
  assert.equal(foldCase('\u212Aate'), '\u212Aate', 'KELVIN SIGN stays itself (its lower case is "k")');
});

// Local parts: any printable ASCII, with the characters that broke paths before ("x> NOTIFY=…"),
// and UTF-8 under SMTPUTF8.
const PRINTABLE = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i));
const localPart = (utf8: boolean) =>
  fc
    .oneof(
      fc.string({
        unit: fc.constantFrom(...PRINTABLE, ...(utf8 ? ['ö', 'ß', '日', '😀', 'İ', '\u212A'] : [])),
        maxLength: 30,
      }),
      fc.constantFrom(
        'x> NOTIFY=NEVER ORCPT=rfc822;y',
        'a b',
        'a>',
        '"carol"',
        'a@b',
        '\\',
        '"',
        '',
        '.',
        'a..b',
        ' SIZE=1 ',
        '<x@y.test>',
      ),
      fc
        .array(fc.string({ unit: fc.constantFrom(..."abcXYZ09!#$%&'*+/=?^_`{|}~-"), minLength: 1, maxLength: 8 }), {
          minLength: 1,
          maxLength: 4,
        })
        .map((a) => a.join('.')),
    )
    .filter((l) => Buffer.byteLength(l) <= 64);
const domainArb = fc.oneof(
  fc
    .array(fc.stringMatching(/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,10}[A-Za-z0-9])?$/), { minLength: 1, maxLength: 4 })
    .map((l) => l.join('.')),
  fc.constantFrom('[127.0.0.1]', '[IPv6:::1]', 'CONTOSO.test'),
);

test('property: for any valid mailbox, format -> parse gives the same mailbox', () => {
  fc.assert(
    fc.property(
      fc.boolean().chain((u) => fc.tuple(fc.constant(u), localPart(u), domainArb)),
      ([utf8, local, domain]) => {
        const address = formatMailbox(local, domain);
        if (Buffer.byteLength(address) > 254) return; // over the path limit: refused, rightly
        const r = parseMailbox(address, utf8);
        assert.ok(r.ok, `${address} refused: ${r.ok ? '' : r.reply.message}`);
        const back = r.mailbox;
        assert.equal(back.local, local);
        assert.equal(
          back.domain,
          domain.replace(/[A-Z]/g, (c) => c.toLowerCase()),
        );
        assert.equal(back.address, address);
        assert.ok(parseAddress(address, utf8).ok);
      },
    ),
    { numRuns: 3000, seed: 5321 },
  );
});

test('a UTF-8 domain must have an A-label form that is a host name (no dot or IP address in disguise)', () => {
  for (const d of ['fabrikam.test。', 'fabrikam.test．', 'fabrikam.test｡', '１２７．０．０．１', '0ｘ7f.1', 'a。。b']) {
    const r = parseMailbox(`ceo@${d}`, true);
    assert.ok(!r.ok, `${d} must be refused`);
    assert.match(r.reply.message + (r.reply.reason ?? ''), /not a (host name|valid internationalized)/, d);
  }
  const ok = parseMailbox('ceo@BÜCHER.test', true);
  assert.ok(ok.ok);
  assert.equal(policyDomain(ok.mailbox.domain), 'xn--bcher-kva.test');
  assert.equal(policyDomain('Fabrikam.TEST'), 'fabrikam.test');
});
