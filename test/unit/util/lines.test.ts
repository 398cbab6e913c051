import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { hasLongLine, longestLine } from '../../../src/util/lines.ts';

test('longest line: CRLF excluded, last line without CRLF counted, ranges respected', () => {
  assert.equal(longestLine(Buffer.from('')), 0);
  assert.equal(longestLine(Buffer.from('ab\r\nabcd\r\nx')), 4);
  assert.equal(longestLine(Buffer.from('ab\r\nabcdef')), 6);
  assert.equal(longestLine(Buffer.from('abcdef\r\nab'), 4), 2);
  assert.equal(hasLongLine(Buffer.from(`a\r\n${'x'.repeat(999)}\r\n`)), true);
  assert.equal(hasLongLine(Buffer.from(`a\r\n${'x'.repeat(998)}\r\n`)), false);
});

test('property: longestLine and hasLongLine agree with a naive split', () => {
  const parts = fc.array(fc.constantFrom('a', 'bb', '\r\n', 'x'.repeat(7)), { maxLength: 40 });
  fc.assert(
    fc.property(parts, fc.nat(12), fc.nat(12), fc.integer({ min: 1, max: 20 }), (p, a, b, limit) => {
      const s = p.join('');
      const buf = Buffer.from(s);
      const start = Math.min(a, s.length);
      const end = Math.max(start, s.length - b);
      const naive = Math.max(
        0,
        ...s
          .slice(start, end)
          .split(/\r?\n/)
          .map((l) => l.length),
      );
      // A range may cut a CRLF: a CR at its end is content, an LF at its start ends an empty line.
      assert.equal(longestLine(buf, start, end), naive);
      assert.equal(hasLongLine(buf, start, end, limit), naive > limit);
    }),
    { numRuns: 2000, seed: 5 },
  );
});
