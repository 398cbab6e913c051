import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { breakLines, encodeBase64, encodeQuotedPrintable, type BreakMode } from '../../../src/delivery/mime-encode.ts';
import { decodeQp, hasBareCrLf, lineLengths } from '../../helpers/mime.ts';

const qp = (s: string) => encodeQuotedPrintable(Buffer.from(s, 'latin1')).toString('latin1');

test('quoted-printable: literal text, escapes, hard breaks, encoded trailing whitespace', () => {
  assert.equal(qp('plain text'), 'plain text');
  assert.equal(qp('a=b\xe9\r\nline two'), 'a=3Db=E9\r\nline two');
  assert.equal(qp('trailing space \r\ntab\t\r\nend '), 'trailing space=20\r\ntab=09\r\nend=20');
  assert.equal(qp('inner  space'), 'inner  space');
  assert.equal(qp('bare\rCR and bare\nLF'), 'bare=0DCR and bare=0ALF');
  assert.equal(qp('ends with CRLF\r\n'), 'ends with CRLF\r\n');
});

test('quoted-printable: 76-octet lines with soft breaks that never split an escape', () => {
  const out = qp('x'.repeat(200));
  assert.deepEqual(lineLengths(out), [76, 76, 50]);
  assert.match(out, /^x{75}=\r\nx{75}=\r\nx{50}$/);
  const e = qp('\xe9'.repeat(40));
  assert.ok(
    e.split('\r\n').every((l) => /^(=E9)+=?$/.test(l)),
    e,
  );
  assert.equal(qp('x'.repeat(76)), 'x'.repeat(76), 'a line of exactly 76 needs no soft break');
});

test('quoted-printable: no encoded line starts with "--" (it could be read as a boundary)', () => {
  assert.equal(qp('--boundary\r\n-- \r\n-x'), '=2D-boundary\r\n=2D-=20\r\n-x');
  const soft = qp(`${'a'.repeat(75)}--b`);
  assert.equal(soft, `${'a'.repeat(75)}=\r\n=2D-b`);
});

const octets = fc
  .array(
    fc.constantFrom(
      'a',
      'Z',
      ' ',
      '\t',
      '=',
      '-',
      '--',
      '.',
      '\r\n',
      '\r',
      '\n',
      '\xe9',
      '\xff',
      '\x00',
      'x'.repeat(90),
      'From ',
    ),
    { maxLength: 80 },
  )
  .map((a) => Buffer.from(a.join(''), 'latin1'));

test('property: quoted-printable decodes to the input; lines <= 76; CRLF only; 7-bit printable', () => {
  fc.assert(
    fc.property(octets, (input) => {
      const out = encodeQuotedPrintable(input);
      assert.deepEqual(decodeQp(out), input);
      assert.ok(lineLengths(out).every((n) => n <= 76));
      assert.equal(hasBareCrLf(out), false);
      assert.doesNotMatch(out.toString('latin1').replace(/\r\n/g, ''), /[^\t\x20-\x7e]/);
      assert.ok(
        out
          .toString('latin1')
          .split('\r\n')
          .every((l) => !l.startsWith('--')),
      );
    }),
    { numRuns: 3000, seed: 6152 },
  );
});

test('property: base64 lines are 76 octets and decode to the input', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 400 }), (a) => {
      const out = encodeBase64(Buffer.from(a)).toString('latin1');
      assert.ok(lineLengths(out).every((n) => n <= 76));
      assert.deepEqual(Buffer.from(out.replace(/\r\n/g, ''), 'base64'), Buffer.from(a));
    }),
    { numRuns: 500, seed: 2045 },
  );
});

test('breakLines: each mode', () => {
  const b = (s: string, mode: BreakMode, limit: number) => breakLines(Buffer.from(s, 'latin1'), mode, limit);
  assert.equal(b('short\r\nlines', 'space', 10).data.toString(), 'short\r\nlines');
  assert.equal(b('short', 'space', 10).broken, 0);
  assert.equal(b('abcdefghijklmnop\r\nok', 'space', 6).data.toString(), 'abcdef\r\n ghijk\r\n lmnop\r\nok');
  assert.equal(b('abcdefghijklmnop', 'crlf', 6).data.toString(), 'abcdef\r\nghijkl\r\nmnop');
  assert.equal(b('Subj: aaa bbb ccc ddd', 'fold', 10).data.toString(), 'Subj: aaa\r\n bbb ccc\r\n ddd');
  assert.equal(
    b('Subj: aaaaaaaaaaaa', 'fold', 10).data.toString(),
    'Subj:\r\n aaaaaaaaa\r\n aaa',
    'no whitespace left: CRLF and a space',
  );
  assert.equal(b('abcdefgh=3Dijk', 'soft', 10).data.toString(), 'abcdefgh=\r\n=3Dijk', 'an escape is not split');
  assert.equal(b('abcdefg=3Dijk', 'soft', 10).data.toString(), 'abcdefg=\r\n=3Dijk');
  assert.equal(b('abcdef--xyz--q', 'crlf', 8).data.toString(), 'abcdef--\r\nxyz--q');
  assert.equal(
    b('abcdefg--xyz', 'crlf', 7).data.toString(),
    'abcdef\r\ng--xyz',
    'a continuation never starts with "--"',
  );
  assert.equal(b('abcdefg--xyz', 'soft', 8).data.toString(), 'abcdef=\r\ng--xyz');
  assert.equal(
    b('----------------', 'crlf', 8).data.toString(),
    '--------\r\n -------\r\n-',
    'all dashes: a space starts the continuation',
  );
  assert.equal(b('a'.repeat(25), 'space', 10).broken, 1);
});

const texts = fc
  .array(fc.constantFrom('a', 'b', ' ', '\t', '=', '=3D', '-', '--', '\r\n', 'xxxxxxxxxxxxxxxxxxx'), { maxLength: 40 })
  .map((a) => a.join(''));

test('property: breakLines leaves no line over the limit and only inserts what its mode allows', () => {
  fc.assert(
    fc.property(
      texts,
      fc.integer({ min: 8, max: 30 }),
      fc.constantFrom<BreakMode>('soft', 'crlf', 'fold', 'space'),
      (s, limit, mode) => {
        const { data, broken } = breakLines(Buffer.from(s, 'latin1'), mode, limit);
        const out = data.toString('latin1');
        assert.ok(
          lineLengths(out).every((n) => n <= limit),
          `${mode} ${limit}: ${JSON.stringify(out)}`,
        );
        assert.equal(broken, lineLengths(s).filter((n) => n > limit).length);
        assert.equal(hasBareCrLf(out), hasBareCrLf(s));
        // What was inserted: the mode's break, or CRLF and a space (the fallback of every mode).
        const strip =
          mode === 'soft' ? (x: string) => x.replace(/=\r\n|\r\n /g, '') : (x: string) => x.replace(/\r\n| /g, '');
        assert.equal(strip(out), strip(s));
        // A line starting with "--" is the start of such a line of the input, never a continuation.
        const dashed = s.split('\r\n').filter((l) => l.startsWith('--'));
        for (const l of out.split('\r\n').filter((x) => x.startsWith('--')))
          assert.ok(
            dashed.some((d) => d.startsWith(l.replace(/=$/, ''))),
            JSON.stringify(out),
          );
      },
    ),
    { numRuns: 3000, seed: 5321 },
  );
});

test('property: soft breaks keep quoted-printable lossless', () => {
  const noDashes = fc
    .array(fc.constantFrom('a', ' ', '\t', '=', '.', '\r\n', '\r', '\xe9', 'x'.repeat(90)), { maxLength: 80 })
    .map((a) => Buffer.from(a.join(''), 'latin1'));
  fc.assert(
    fc.property(noDashes, fc.integer({ min: 8, max: 40 }), (input, limit) => {
      // A valid encoding with its soft breaks removed: long quoted-printable lines, as some senders write.
      const long = encodeQuotedPrintable(input).toString('latin1').replace(/=\r\n/g, '');
      const out = breakLines(Buffer.from(long, 'latin1'), 'soft', limit).data;
      assert.ok(lineLengths(out).every((n) => n <= limit));
      assert.deepEqual(decodeQp(out), input);
    }),
    { numRuns: 2000, seed: 76 },
  );
});
