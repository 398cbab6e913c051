import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DataDecoder } from '../../../src/inbound/data-decoder.ts';

function decode(input: string | Buffer, sizes: number[] = [1 << 20], max = 1 << 20, maxHeader = 1 << 16) {
  const b = Buffer.isBuffer(input) ? input : Buffer.from(input, 'latin1');
  const d = new DataDecoder(max, maxHeader);
  let off = 0;
  let end = -1;
  let i = 0;
  while (off < b.length && end < 0) {
    const n = Math.max(1, sizes[i++ % sizes.length]);
    const e = d.feed(b.subarray(off, off + n));
    if (e >= 0) end = off + e;
    off += n;
  }
  const r = d.result();
  return {
    ...r,
    text: Buffer.concat(r.chunks).toString('latin1'),
    end,
    rest: end >= 0 ? b.subarray(end).toString('latin1') : '',
  };
}

test('CRLF.CRLF ends data; bytes after it are left for the next command', () => {
  const r = decode('Subject: a\r\n\r\nbody\r\n.\r\nQUIT\r\n');
  assert.equal(r.text, 'Subject: a\r\n\r\nbody\r\n');
  assert.equal(r.rest, 'QUIT\r\n');
  assert.equal(r.bare, false);
  assert.equal(r.headerSize, 12);
});

test('empty message', () => {
  const r = decode('.\r\n');
  assert.equal(r.end, 3);
  assert.equal(r.text, '');
});

test('dot-stuffing is removed', () => {
  assert.equal(decode('a\r\n..b\r\n...\r\n.\r\n').text, 'a\r\n.b\r\n..\r\n');
});

const smuggling = [
  '\n.\n',
  '\n.\r\n',
  '\r.\r',
  '\r.\r\n',
  '\r\n.\r',
  '\r\n.\n',
  '\n.\r',
  '.\n',
  '\r\n.\r\r\n',
  '\n\n.\n\n',
  '\r\r.\r\r',
];

for (const v of smuggling) {
  test(`smuggling variant ${JSON.stringify(v)} does not end data and is normalised`, () => {
    const input = `Subject: s\r\n\r\nx${v}MAIL FROM:<e@x>\r\n.\r\n`;
    const r = decode(input);
    assert.equal(r.end, input.length, 'only the final CRLF.CRLF ends the data');
    assert.equal(r.bare, true);
    assert.doesNotMatch(r.text.replace(/\r\n/g, ''), /[\r\n]/, 'no bare CR or LF in the output');
    assert.match(r.text, /MAIL FROM:<e@x>\r\n$/);
  });
}

test('NUL is flagged, 8-bit is flagged', () => {
  assert.equal(decode('a\x00b\r\n.\r\n').nul, true);
  assert.equal(decode('a\xe9b\r\n.\r\n').eightBit, true);
  assert.equal(decode('ab\r\n.\r\n').eightBit, false);
});

test('longestLine: the longest decoded line, CRLF and stuffing dots excluded', () => {
  assert.equal(decode(`a\r\n${'x'.repeat(1200)}\r\nb\r\n.\r\n`).longestLine, 1200);
  assert.equal(decode(`..${'y'.repeat(999)}\r\n.\r\n`).longestLine, 1000);
  assert.equal(decode('short\r\n.\r\n').longestLine, 5);
  assert.equal(decode('.\r\n').longestLine, 0);
});

test('size limit keeps reading to the terminator but stores nothing more', () => {
  const body = 'x'.repeat(5000) + '\r\n';
  const r = decode(`${body}${body}.\r\nNOOP\r\n`, [1000], 6000);
  assert.equal(r.sizeExceeded, true);
  assert.equal(r.rest, 'NOOP\r\n');
  assert.ok(r.chunks.reduce((n, c) => n + c.length, 0) <= 6000);
});

test('header size limit', () => {
  const r = decode(`X-Big: ${'y'.repeat(3000)}\r\n\r\nbody\r\n.\r\n`, [1 << 20], 1 << 20, 2048);
  assert.equal(r.headerExceeded, true);
  assert.equal(decode(`X: y\r\n\r\n${'b'.repeat(5000)}\r\n.\r\n`, [1 << 20], 1 << 20, 2048).headerExceeded, false);
});

test('property: the result does not depend on how the stream is fragmented', () => {
  const alphabet = fc.constantFrom('a', '.', '\r', '\n', '\r\n', '\r\n.', '.\r\n', 'Z', '\x00', '\xff');
  fc.assert(
    fc.property(
      fc.array(alphabet, { maxLength: 60 }),
      fc.array(fc.integer({ min: 1, max: 17 }), { minLength: 1, maxLength: 8 }),
      (parts, sizes) => {
        const input = parts.join('') + '\r\n.\r\nTAIL';
        const whole = decode(input);
        const frag = decode(input, sizes);
        assert.equal(frag.text, whole.text);
        assert.equal(frag.end, whole.end);
        assert.equal(frag.bare, whole.bare);
        assert.equal(frag.nul, whole.nul);
        assert.equal(frag.longestLine, whole.longestLine);
        assert.equal(frag.headerSize, whole.headerSize);
        assert.equal(frag.eightBit, whole.eightBit);
        assert.equal(whole.longestLine, Math.max(0, ...whole.text.split('\r\n').map((l) => l.length)));
        // Invariants: terminator found; output has only CRLF line endings.
        assert.ok(whole.end > 0);
        assert.doesNotMatch(whole.text.replace(/\r\n/g, ''), /[\r\n]/);
      },
    ),
    { numRuns: 2000, seed: 42 },
  );
});

test('a message without stuffing or bare line endings comes out as slices of its input, one per chunk', () => {
  const msg = 'Subject: a\r\nFrom: b@c\r\n\r\n' + 'line of text\r\n'.repeat(300);
  const r = decode(msg + '.\r\n', [1500]);
  assert.equal(r.text, msg);
  assert.equal(r.headerSize, 'Subject: a\r\nFrom: b@c\r\n'.length);
  // The header section ends in the first chunk: one slice up to the empty line, one after it.
  assert.equal(r.chunks.length, Math.ceil((msg.length + 3) / 1500) + 1);
});

// Chunked mode (BDAT, RFC 3030): no dot-stuffing and no terminator; the same line endings and measures.
function decodeChunked(input: string, sizes: number[], max = 1 << 20) {
  const b = Buffer.from(input, 'latin1');
  const d = new DataDecoder(max, 1 << 16, false);
  let i = 0;
  for (let off = 0; off < b.length;) {
    const n = Math.max(1, sizes[i++ % sizes.length]);
    assert.equal(d.feed(b.subarray(off, off + n)), -1, 'nothing in a chunk ends the data');
    off += n;
  }
  d.finish();
  const r = d.result();
  return { ...r, text: Buffer.concat(r.chunks).toString('latin1') };
}

test('chunked: a "." is content wherever it stands, CRLF "." CRLF included', () => {
  const input = '.Subject: a\r\n\r\n..two\r\n.\r\nMAIL FROM:<x@y.test>\r\n.\r\n';
  for (const sizes of [[1 << 20], [1], [2, 3], [7]]) {
    const r = decodeChunked(input, sizes);
    assert.equal(r.text, input, `sizes ${sizes}`);
    assert.equal(r.bare, false);
  }
});

test('chunked: a CRLF split between chunks stays a CRLF; bare endings become CRLF and are flagged', () => {
  assert.deepEqual(
    [decodeChunked('a\r\nb\r\n', [2]).text, decodeChunked('a\r\nb\r\n', [2]).bare],
    ['a\r\nb\r\n', false],
  );
  const bare = decodeChunked('a\nb\rc\r\n', [1]);
  assert.equal(bare.text, 'a\r\nb\r\nc\r\n');
  assert.equal(bare.bare, true);
});

test('chunked: finish() ends the last line: a bare CR becomes CRLF (flagged), a missing ending is added', () => {
  const cr = decodeChunked('a\r\nb\r', [1 << 20]);
  assert.equal(cr.text, 'a\r\nb\r\n');
  assert.equal(cr.bare, true);
  const open = decodeChunked('Subject: a\r\n\r\nlast line', [4]);
  assert.equal(open.text, 'Subject: a\r\n\r\nlast line\r\n');
  assert.equal(open.bare, false);
  assert.equal(open.longestLine, 10);
  assert.equal(decodeChunked('', [1]).text, '', 'an empty message stays empty');
});

test('what is kept costs about its size: one-octet chunks and short runs are copied into blocks, in order', () => {
  const d = new DataDecoder(1 << 24, 1 << 16, false);
  const text = 'Subject: tiny\r\n\r\n' + 'abc.\r\n'.repeat(20_000);
  const b = Buffer.from(text, 'latin1');
  for (let i = 0; i < b.length; i++) d.feed(b.subarray(i, i + 1)); // each octet a chunk (and a read) of its own
  d.finish();
  const r = d.result();
  assert.equal(Buffer.concat(r.chunks).toString('latin1'), text);
  assert.ok(r.chunks.length < 20, `${r.chunks.length} pieces kept for ${b.length} one-octet chunks`);
  // A DATA message whose lines all end bare: runs between the endings are short, so copied too.
  const bare = decode('x\n'.repeat(4999) + 'x\r\n.\r\n');
  assert.equal(bare.text, 'x\r\n'.repeat(5000));
  assert.ok(bare.chunks.length < 20, `${bare.chunks.length} pieces for 5000 bare-LF lines`);
  // Long runs stay slices of the input (no copy).
  const long = decode(`${'y'.repeat(300)}\r\n.\r\n`);
  assert.equal(long.chunks.length, 1);
});

test('a run that is a small part of its read is copied: a chunk among pipelined commands never pins the read', () => {
  // A client's 64 KiB write: BDAT 300 and its octets, then commands (HELP …) to fill the read.
  const read = Buffer.alloc(64 * 1024, 'H');
  const chunk = read.subarray(20, 320).fill('z');
  const d = new DataDecoder(1 << 24, 1 << 16, false);
  for (let i = 0; i < 50; i++) d.feed(chunk);
  d.finish();
  const r = d.result();
  assert.equal(r.size, 50 * 300 + 2);
  const held = new Set(r.chunks.map((c) => c.buffer));
  assert.ok(!held.has(read.buffer), 'no piece kept is a view of the 64 KiB read');
  const bytes = [...held].reduce((n, ab) => n + ab.byteLength, 0);
  assert.ok(bytes < 4 * r.size, `${bytes} octets held for ${r.size} of message`);
  // A run that is most of its read stays a slice of it (no copy).
  const whole = Buffer.from(`${'w'.repeat(1000)}\r\n`);
  const w = new DataDecoder(1 << 24, 1 << 16, false);
  w.feed(whole);
  w.finish();
  assert.equal(w.result().chunks[0].buffer, whole.buffer);
});
