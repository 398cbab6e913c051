import { test } from 'node:test';
import assert from 'node:assert/strict';
import { terminalSafe } from '../../../src/cli/terminal.ts';

test('control characters become visible escapes; the output keeps its own lines', () => {
  assert.equal(terminalSafe('helo evil\x1b]0;owned\x07\x1b[2J.test'), 'helo evil\\x1b]0;owned\\x07\\x1b[2J.test');
  assert.equal(terminalSafe('a\r\tb\x00\x7f\u009b31m'), 'a\\x0d\\x09b\\x00\\x7f\\x9b31m');
  assert.equal(terminalSafe('line 1\nline 2'), 'line 1\nline 2');
  assert.equal(
    terminalSafe('abc\u202edcba\u2066\u2028'),
    'abc\\u202edcba\\u2066\\u2028',
    'bidi overrides cannot reorder what is shown',
  );
  assert.equal(
    terminalSafe('jöran@bücher.test "a b"@x.test 日本'),
    'jöran@bücher.test "a b"@x.test 日本',
    'printable text is unchanged',
  );
  for (let c = 0; c < 0xa0; c++) {
    if (c === 10 || (c >= 0x20 && c < 0x7f)) continue;
    assert.doesNotMatch(
      terminalSafe(`x${String.fromCharCode(c)}y`),
      /[\x00-\x09\x0b-\x1f\x7f-\x9f]/,
      `U+${c.toString(16)}`,
    );
  }
});
