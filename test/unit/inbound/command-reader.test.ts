import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CommandReader } from '../../../src/inbound/command-reader.ts';

function lines(input: string, max = 64, step = 1000) {
  const r = new CommandReader(max);
  const out: unknown[] = [];
  for (let i = 0; i < input.length; i += step) {
    r.push(Buffer.from(input.slice(i, i + step), 'latin1'));
    for (let l = r.next(); l; l = r.next()) out.push(l.kind === 'line' ? [l.text, l.bare, l.nul] : 'tooLong');
  }
  return out;
}

test('CRLF, bare LF and bare CR end lines; bare endings are flagged', () => {
  for (const step of [1, 2, 1000]) {
    assert.deepEqual(lines('EHLO a\r\nNOOP\nRSET\rQUIT\r\n', 64, step), [
      ['EHLO a', false, false],
      ['NOOP', true, false],
      ['RSET', true, false],
      ['QUIT', false, false],
    ]);
  }
});

test('a CR at the end of a chunk waits for the next byte', () => {
  const r = new CommandReader(64);
  r.push(Buffer.from('NOOP\r'));
  assert.equal(r.next(), null);
  r.push(Buffer.from('\n'));
  assert.deepEqual(r.next(), { kind: 'line', text: 'NOOP', bare: false, nul: false });
});

test('overlong line is reported once and skipped; the next line is read', () => {
  for (const step of [1, 7, 1000]) {
    assert.deepEqual(lines(`${'A'.repeat(200)}\r\nNOOP\r\n`, 64, step), ['tooLong', ['NOOP', false, false]]);
  }
});

test('NUL is flagged', () => {
  assert.deepEqual(lines('NO\x00OP\r\n'), [['NO\x00OP', false, true]]);
});

test('take() returns unread bytes (pipelined after STARTTLS or DATA)', () => {
  const r = new CommandReader(64);
  r.push(Buffer.from('STARTTLS\r\nRSET\r\n'));
  assert.equal((r.next() as { text: string }).text, 'STARTTLS');
  assert.equal(r.take().toString(), 'RSET\r\n');
  assert.equal(r.next(), null);
});

test('a partial line waiting for its end is copied out of a much larger read', () => {
  const read = Buffer.from(`NOOP\r\n${'y'.repeat(60_000)}`);
  const r = new CommandReader(512);
  r.push(read.subarray(0, 10)); // "NOOP" CRLF "yyyy", out of a 60 KB read
  assert.deepEqual(r.next(), { kind: 'line', text: 'NOOP', bare: false, nul: false });
  assert.equal(r.next(), null);
  const kept = (r as unknown as { buf: Buffer }).buf;
  assert.equal(kept.toString(), 'yyyy');
  assert.notEqual(kept.buffer, read.buffer, 'the 4 octets no longer hold the 60 KB read');
  r.push(Buffer.from('\r\n'));
  assert.deepEqual(r.next(), { kind: 'line', text: 'yyyy', bare: false, nul: false });
});
