// CPU time of the DATA decoder per message (not a test): the benchmark harness's message shape (a
// header section of seven fields and --size octets of base64 text in 76-octet lines, CRLF), fed in
// one piece as a socket read usually brings it, through DATA mode (dot-stuffing, terminator) and
// the chunked mode of BDAT. Three rounds of --messages each; the first warms the JIT up.
//
//   node --import tsx bench/data-decoder.ts [--messages 200000] [--size 5120]
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { DataDecoder } from '../src/inbound/data-decoder.ts';
import { intArg } from './lib/args.ts';

const { values: a } = parseArgs({
  options: { messages: { type: 'string', default: '200000' }, size: { type: 'string', default: '5120' } },
  strict: true,
});
const N = intArg('messages', a.messages, 1, 10_000_000);
const SIZE = intArg('size', a.size, 1, 10_000_000);

const text = randomBytes(Math.ceil(SIZE * 0.75) + 64).toString('base64');
const lines: string[] = [];
for (let i = 0, n = 0; n < SIZE; i += 76) {
  const l = text.slice(i % (text.length - 76), (i % (text.length - 76)) + 76);
  lines.push(l);
  n += l.length + 2;
}
const header =
  'From: Bench <bench@src.test>\r\nTo: <1.0@dest.test>\r\nSubject: bench 1\r\n' +
  'Date: Thu, 03 Dec 2026 09:00:00 GMT\r\nMessage-ID: <bench.1@src.test>\r\nMIME-Version: 1.0\r\n' +
  'Content-Type: text/plain; charset=us-ascii\r\n\r\n';
const content = header + lines.join('\r\n') + '\r\n';
const data = Buffer.from(`${content}.\r\n`);
const chunk = Buffer.from(content);

for (const [mode, buf, dots] of [
  ['DATA', data, true],
  ['BDAT', chunk, false],
] as const) {
  for (let round = 1; round <= 3; round++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) {
      const d = new DataDecoder(1 << 24, 1 << 16, dots);
      d.feed(buf);
      if (!dots) d.finish();
    }
    const us = Number(process.hrtime.bigint() - t0) / 1e3 / N;
    console.log(`${mode} ${buf.length} octets, round ${round}: ${us.toFixed(2)} µs per message`);
  }
}
