// Property-based fuzzing (fast-check, fixed seed) of every parser Portcullis has: addresses and
// ESMTP parameters, the DATA decoder, the command reader, configuration loading, DNS answers
// (random and mutated packets from a fake DNS server on loopback) and certificate name matching
// (with Node's own X509Certificate.checkHost — OpenSSL's X509_check_host — as an oracle).
// Each property counts its iterations; a failure is a finding, reported with its counterexample.
import { X509Certificate } from 'node:crypto';
import dgram from 'node:dgram';
import { mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as dnsPacket from 'dns-packet';
import type { Packet, RecordType } from 'dns-packet';
import fc from 'fast-check';
import YAML from 'yaml';
import { buildConfig, loadConfig } from '../../src/config/load.ts';
import { AdminError } from '../../src/errors.ts';
import { DnsResolver } from '../../src/dns/resolver.ts';
import { reverseName } from '../../src/dns/typed.ts';
import { DnsError } from '../../src/dns/types.ts';
import { CommandReader, type Line } from '../../src/inbound/command-reader.ts';
import { DataDecoder } from '../../src/inbound/data-decoder.ts';
import { envelopeCommands } from '../../src/delivery/smtp-client.ts';
import { isXtext, parseMailbox, parsePathArg, validNotify, validOrcpt } from '../../src/inbound/address.ts';
import { issueCertificate } from '../../src/tls/certgen.ts';
import { certificateNames, nameMatches, namesSatisfy } from '../../src/tls/names.ts';
import type { ProofContext, ProofSection } from '../types.ts';

export const PROPERTY_SEED = 20_251_105;

interface Outcome {
  parser: string;
  property: string;
  runs: number;
  finding: string | null;
  ms: number;
}

const fmt = (x: unknown): string => {
  const s = JSON.stringify(x, (_k, v) =>
    Buffer.isBuffer(v)
      ? `<buf ${v.toString('latin1')}>`
      : v instanceof Uint8Array
        ? `<bytes ${Buffer.from(v).toString('hex')}>`
        : v,
  );
  return s && s.length > 400 ? `${s.slice(0, 400)}…` : String(s);
};

async function check<T extends unknown[]>(
  parser: string,
  property: string,
  numRuns: number,
  prop: fc.IProperty<T> | fc.IAsyncProperty<T>,
  out: Outcome[],
  log: (l: string) => void,
): Promise<void> {
  const t0 = Date.now();
  const d = await fc.check(prop as fc.IAsyncProperty<T>, { numRuns, seed: PROPERTY_SEED, endOnFailure: false });
  const finding = d.failed
    ? `counterexample ${fmt(d.counterexample)}: ${String((d.errorInstance as Error)?.message ?? d.errorInstance).slice(0, 300)}`
    : null;
  out.push({ parser, property, runs: d.numRuns, finding, ms: Date.now() - t0 });
  log(`${parser}: ${property}: ${d.numRuns} runs${finding ? ` FINDING ${finding}` : ''} (${Date.now() - t0} ms)`);
}

function must(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Error(what);
}

// ---------------------------------------------------------------------------------------------
// Addresses

const ATEXT = "abcxyzABCXYZ0189!#$%&'*+/=?^_`{|}~-";
const atom = (utf8: boolean) =>
  fc.string({
    unit: fc.constantFrom(...ATEXT, ...(utf8 ? ['ö', 'é', 'ß', 'İ', 'Σ', 'K', 'ſ', '日', '😀'] : [])),
    minLength: 1,
    maxLength: 12,
  });
const dotAtom = (utf8: boolean) => fc.array(atom(utf8), { minLength: 1, maxLength: 4 }).map((a) => a.join('.'));
const quotedLocal = fc
  .string({
    unit: fc.constantFrom(
      'a',
      'Z',
      ' ',
      '\t',
      '.',
      '@',
      '"',
      '\\',
      ',',
      '<',
      '>',
      ':',
      '(',
      ')',
      '[',
      ']',
      '=',
      ';',
      ' NOTIFY=NEVER',
      '> ORCPT=rfc822;x',
    ),
    maxLength: 20,
  })
  .map((s) => `"${s.replace(/(["\\])/g, '\\$1')}"`);
const labelChars = (utf8: boolean) => [...'abcXYZ019', ...(utf8 ? ['ö', 'Ö', 'İ', 'K', 'ß', 'Σ'] : [])];
const label = (utf8: boolean) =>
  fc
    .oneof(
      fc.string({ unit: fc.constantFrom(...labelChars(utf8)), minLength: 1, maxLength: 63 }),
      // Long labels of one character: close to the 63-octet limit, and to what case-mapping does to it.
      fc.tuple(fc.constantFrom(...labelChars(utf8)), fc.integer({ min: 30, max: 63 })).map(([c, k]) => c.repeat(k)),
    )
    .chain((s) => fc.constantFrom(s, s.length > 2 ? `${s[0]}-${s.slice(2)}` : s));
const domain = (utf8: boolean) =>
  fc.oneof(
    { weight: 8, arbitrary: fc.array(label(utf8), { minLength: 1, maxLength: 5 }).map((l) => l.join('.')) },
    {
      weight: 1,
      arbitrary: fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((a) => `[${a.join('.')}]`),
    },
    { weight: 1, arbitrary: fc.constantFrom('[IPv6:::1]', '[IPv6:2001:db8::1]', '[IPv6:::ffff:127.0.0.1]') },
  );
const mailboxArb = (utf8: boolean) =>
  fc.tuple(fc.oneof(dotAtom(utf8), quotedLocal), domain(utf8)).map(([l, d]) => `${l}@${d}`);
const pathGarbage = fc
  .array(
    fc.constantFrom(
      '<',
      '>',
      '"',
      '\\',
      '@',
      '.',
      ':',
      ',',
      ' ',
      '\t',
      'a',
      'Z',
      '0',
      '[',
      ']',
      'IPv6:',
      '=',
      'ö',
      '\u0000',
      '\r',
      'SIZE=1',
      'SMTPUTF8',
      'NOTIFY=NEVER',
      'postmaster',
      '@a.test,@b.test:',
      'x'.repeat(70),
      'd'.repeat(64) + '.',
    ),
    { maxLength: 40 },
  )
  .map((a) => a.join(''));

/** What a peer that offers everything advertises: the client then sends every parameter it can. */
const CLIENT_EXT = new Map([
  ['SIZE', '0'],
  ['8BITMIME', ''],
  ['SMTPUTF8', ''],
  ['DSN', ''],
  ['PIPELINING', ''],
]);

function checkParsed(arg: string, o: { allowNull: boolean; utf8Allowed: boolean }): void {
  const r = parsePathArg(arg, o);
  if (!r.ok) {
    must(
      r.reply.code >= 500 && r.reply.code < 600 && /^5\.\d\.\d+$/.test(r.reply.enhanced),
      `bad verdict ${fmt(r.reply)}`,
    );
    return;
  }
  const mb = r.mailbox;
  must(!/[A-Z]/.test(mb.domain), 'domain not lower-cased');
  must(Buffer.byteLength(mb.local) <= 64, 'local part over 64 octets');
  must(mb.address === '' ? o.allowNull && mb.local === '' : mb.address.length > 0, 'null path where not allowed');
  for (const [k] of r.params) must(/^[A-Z0-9][A-Z0-9-]*$/.test(k), `bad parameter key ${k}`);
}

async function addressProperties(n: number, out: Outcome[], log: (l: string) => void): Promise<void> {
  const P = 'address (src/inbound/address.ts)';
  const opts = fc.record({ allowNull: fc.boolean(), utf8Allowed: fc.boolean() });
  await check(
    P,
    'parsePathArg never throws; verdicts are 5xx with an enhanced code; results are normalised',
    n * 4,
    fc.property(
      fc.oneof(
        fc.string({ unit: 'binary', maxLength: 80 }),
        pathGarbage,
        mailboxArb(true).map((m) => `<${m}>`),
        fc.tuple(pathGarbage, mailboxArb(false)).map(([g, m]) => `<${m}>${g}`),
      ),
      opts,
      (arg, o) => {
        checkParsed(arg, o);
      },
    ),
    out,
    log,
  );
  await check(
    P,
    'parseMailbox / validNotify / validOrcpt / isXtext never throw',
    n * 2,
    fc.property(fc.string({ unit: 'binary', maxLength: 300 }), fc.boolean(), (s, u) => {
      parseMailbox(s, u);
      validNotify(s);
      validOrcpt(s);
      isXtext(s);
    }),
    out,
    log,
  );
  await check(
    P,
    'round trip: a parsed address re-parses to the same normalised mailbox',
    n * 4,
    fc.property(
      fc.boolean().chain((u) => fc.tuple(fc.constant(u), mailboxArb(u))),
      ([utf8, m]) => {
        const o = { allowNull: false, utf8Allowed: utf8 };
        const a = parsePathArg(`<${m}>`, o);
        if (!a.ok) return; // over a length limit, or not valid after all: the verdict is the answer
        const b = parsePathArg(`<${a.mailbox.address}>`, o);
        if (!b.ok) {
          must(false, `normalised ${JSON.stringify(a.mailbox.address)} is refused: ${b.reply.message}`);
          return;
        }
        must(
          b.mailbox.address === a.mailbox.address &&
            b.mailbox.local === a.mailbox.local &&
            b.mailbox.domain === a.mailbox.domain,
          `re-parse changed ${fmt(a.mailbox)} into ${fmt(b.mailbox)}`,
        );
      },
    ),
    out,
    log,
  );
  await check(
    P,
    'downstream: the RCPT TO line the SMTP client sends for a parsed recipient parses back to the same mailbox, with no parameter of its own',
    n * 4,
    fc.property(
      fc.boolean().chain((u) => fc.tuple(fc.constant(u), mailboxArb(u))),
      ([utf8, m]) => {
        const o = { allowNull: false, utf8Allowed: utf8 };
        const a = parsePathArg(`<${m}>`, o);
        if (!a.ok) return;
        const { rcpts } = envelopeCommands(
          { from: '', rcpts: [{ address: a.mailbox.address }], eightBit: false, smtputf8: utf8 },
          CLIENT_EXT,
          1,
        );
        must(rcpts[0].startsWith('RCPT TO:'), `not a RCPT line: ${JSON.stringify(rcpts[0])}`);
        const b = parsePathArg(rcpts[0].slice('RCPT TO:'.length), o);
        if (!b.ok) {
          must(false, `${JSON.stringify(rcpts[0])} is refused: ${b.reply.message}`);
          return;
        }
        must(
          b.mailbox.address === a.mailbox.address &&
            b.mailbox.local === a.mailbox.local &&
            b.mailbox.domain === a.mailbox.domain &&
            b.params.size === 0,
          `${JSON.stringify(rcpts[0])} parses as ${fmt(b.mailbox)} with ${b.params.size} parameter(s), not ${fmt(a.mailbox)}`,
        );
      },
    ),
    out,
    log,
  );
  await check(
    P,
    'well-formed ASCII addresses within the RFC 5321 limits are accepted',
    n * 2,
    fc.property(
      fc.tuple(
        dotAtom(false),
        fc.array(
          label(false).map((l) => l.slice(0, 20)),
          { minLength: 1, maxLength: 4 },
        ),
      ),
      ([l, d]) => {
        if (l.length > 64) return;
        const r = parsePathArg(`<${l}@${d.join('.')}>`, { allowNull: false, utf8Allowed: false });
        must(r.ok, `refused: ${r.ok ? '' : r.reply.message}`);
      },
    ),
    out,
    log,
  );
}

// ---------------------------------------------------------------------------------------------
// DATA decoder

function decode(input: Buffer, sizes: number[], max: number, maxHeader: number) {
  const d = new DataDecoder(max, maxHeader);
  let off = 0;
  let end = -1;
  let i = 0;
  while (off < input.length && end < 0) {
    const k = Math.max(1, sizes[i++ % sizes.length]);
    const e = d.feed(input.subarray(off, off + k));
    if (e >= 0) end = off + e;
    off += k;
  }
  const r = d.result();
  return { ...r, text: Buffer.concat(r.chunks).toString('latin1'), end };
}

/** The documented end of data: the first "." CRLF at the start, or after a real CRLF. */
function referenceEnd(b: Buffer): number {
  for (let k = 0; k + 3 <= b.length; k++) {
    if (
      b[k] === 0x2e &&
      b[k + 1] === 13 &&
      b[k + 2] === 10 &&
      (k === 0 || (k >= 2 && b[k - 2] === 13 && b[k - 1] === 10))
    )
      return k + 3;
  }
  return -1;
}

const dataAlphabet = fc.constantFrom(
  'a',
  'Z',
  ' ',
  '.',
  '\r',
  '\n',
  '\r\n',
  '\r\n.',
  '.\r\n',
  '\r\n.\r\n',
  '..',
  '\x00',
  '\xff',
  '\xe9',
  '\t',
  'Subject: x',
  ':',
);
const fragSizes = fc.array(fc.oneof(fc.constantFrom(1, 3, 17), fc.integer({ min: 1, max: 64 })), {
  minLength: 1,
  maxLength: 6,
});

async function decoderProperties(n: number, out: Outcome[], log: (l: string) => void): Promise<void> {
  const P = 'DATA decoder (src/inbound/data-decoder.ts)';
  await check(
    P,
    'fragmentation-independent (1, 3, 17 and random write sizes) incl. size and header limits',
    n * 4,
    fc.property(
      fc.array(dataAlphabet, { maxLength: 80 }),
      fragSizes,
      fc.integer({ min: 8, max: 200 }),
      fc.integer({ min: 4, max: 100 }),
      (parts, sizes, max, maxH) => {
        const input = Buffer.from(parts.join('') + '\r\n.\r\nTAIL', 'latin1');
        const whole = decode(input, [input.length], max, maxH);
        const frag = decode(input, sizes, max, maxH);
        for (const k of [
          'end',
          'size',
          'headerSize',
          'sizeExceeded',
          'headerExceeded',
          'bare',
          'nul',
          'eightBit',
          'longestLine',
        ] as const) {
          must(frag[k] === whole[k], `${k} differs: whole ${fmt(whole[k])} fragmented ${fmt(frag[k])}`);
        }
        // The stored text is the message unless the size limit was passed (then it is refused, and
        // only the bound matters: how much was kept before the limit may depend on the chunking).
        if (!whole.sizeExceeded)
          must(frag.text === whole.text, `text differs: whole ${fmt(whole.text)} fragmented ${fmt(frag.text)}`);
      },
    ),
    out,
    log,
  );
  await check(
    P,
    'ends exactly at the documented terminator; no bare CR or LF in the output; memory within maxSize',
    n * 4,
    fc.property(fc.array(dataAlphabet, { maxLength: 80 }), fc.integer({ min: 8, max: 400 }), (parts, max) => {
      const input = Buffer.from(parts.join('') + '\r\n.\r\n', 'latin1');
      const r = decode(input, [input.length], max, 1 << 16);
      must(r.end === referenceEnd(input), `end ${r.end}, documented ${referenceEnd(input)}`);
      must(!/[\r\n]/.test(r.text.replace(/\r\n/g, '')), 'bare CR or LF in the output');
      must(r.chunks.reduce((k, c) => k + c.length, 0) <= max, 'stored more than maxSize');
      must(r.sizeExceeded === r.size > max, 'sizeExceeded inconsistent');
    }),
    out,
    log,
  );
  await check(
    P,
    'CRLF-only input: output is the lines with dot-stuffing removed',
    n * 2,
    fc.property(
      fc.array(fc.string({ unit: fc.constantFrom('a', '.', ' ', 'é', '\x00'), maxLength: 8 }), { maxLength: 20 }),
      (lines) => {
        const body = lines.filter((l) => l !== '.');
        const input = Buffer.from(
          body.map((l) => (l.startsWith('.') ? `.${l}` : l) + '\r\n').join('') + '.\r\n',
          'latin1',
        );
        const r = decode(input, [input.length], 1 << 20, 1 << 20);
        must(r.end === input.length, 'did not end at the terminator');
        must(r.text === body.map((l) => `${l}\r\n`).join(''), `output ${fmt(r.text)}`);
        must(!r.bare, 'bare flagged on CRLF-only input');
      },
    ),
    out,
    log,
  );
}

/** BDAT chunks (RFC 3030): the decoder's chunked mode, fed `sizes` at a time, then finished. */
function decodeChunked(input: Buffer, sizes: number[], max: number) {
  const d = new DataDecoder(max, 1 << 16, false);
  let ended = false;
  for (let off = 0, i = 0; off < input.length; i++) {
    const k = Math.max(1, sizes[i % sizes.length]);
    if (d.feed(input.subarray(off, off + k)) >= 0) ended = true;
    off += k;
  }
  d.finish();
  const r = d.result();
  return { ...r, text: Buffer.concat(r.chunks).toString('latin1'), ended };
}

async function chunkedProperties(n: number, out: Outcome[], log: (l: string) => void): Promise<void> {
  const P = 'DATA decoder, chunked mode for BDAT (src/inbound/data-decoder.ts)';
  await check(
    P,
    'whatever the chunk sizes: nothing ends the data, dots are content, every line ending is CRLF, the last line ended',
    n * 4,
    fc.property(fc.array(dataAlphabet, { maxLength: 80 }), fragSizes, (parts, sizes) => {
      const text = parts.join('');
      const r = decodeChunked(Buffer.from(text, 'latin1'), sizes, 1 << 20);
      must(!r.ended, 'a chunk ended the data');
      // The reference: lines split at CRLF, bare CR or bare LF, each ended with CRLF; nothing else changes.
      const lines = text.split(/\r\n|\r|\n/);
      if (lines[lines.length - 1] === '') lines.pop();
      const expected = lines.map((l) => `${l}\r\n`).join('');
      must(r.text === expected, `output ${fmt(r.text)}, expected ${fmt(expected)}`);
      must(r.bare === /\r(?!\n)|(?<!\r)\n/.test(text), `bare ${r.bare} for ${fmt(text)}`);
      must(r.size === expected.length, `size ${r.size}, output ${expected.length}`);
      must(r.nul === text.includes('\0'), `nul ${r.nul}`);
      must(r.eightBit === /[\x80-\xff]/.test(text), `eightBit ${r.eightBit}`);
      const longest = Math.max(0, ...lines.map((l) => l.length));
      must(r.longestLine === longest, `longestLine ${r.longestLine}, expected ${longest}`);
    }),
    out,
    log,
  );
}

// ---------------------------------------------------------------------------------------------
// Command reader

type RefLine = { kind: 'line'; text: string; bare: boolean; nul: boolean } | { kind: 'tooLong'; head: string };

/** The documented splitting: lines end at CRLF, LF or a bare CR; over maxLine is reported once. */
function referenceLines(b: Buffer, maxLine: number): RefLine[] {
  const out: RefLine[] = [];
  let pos = 0;
  for (;;) {
    let end = -1;
    let skip = 0;
    let bare = false;
    for (let i = pos; i < b.length; i++) {
      if (b[i] === 10) {
        end = i;
        skip = 1;
        bare = true;
        break;
      }
      if (b[i] === 13) {
        if (i + 1 >= b.length) break;
        end = i;
        skip = b[i + 1] === 10 ? 2 : 1;
        bare = skip === 1;
        break;
      }
    }
    if (end < 0) {
      // Unfinished and already over the limit.
      if (b.length - pos > maxLine + 1)
        out.push({ kind: 'tooLong', head: b.subarray(pos, pos + 5).toString('latin1') });
      return out;
    }
    const raw = b.subarray(pos, end);
    out.push(
      raw.length > maxLine
        ? { kind: 'tooLong', head: raw.subarray(0, 5).toString('latin1') }
        : { kind: 'line', text: raw.toString('utf8'), bare, nul: raw.includes(0) },
    );
    pos = end + skip;
  }
}

function readAll(input: Buffer, sizes: number[], maxLine: number): { lines: Line[]; maxPending: number } {
  const r = new CommandReader(maxLine);
  const lines: Line[] = [];
  let maxPending = 0;
  let i = 0;
  for (let off = 0; off < input.length;) {
    const k = Math.max(1, sizes[i++ % sizes.length]);
    r.push(input.subarray(off, off + k));
    off += k;
    for (let l = r.next(); l; l = r.next()) lines.push(l);
    maxPending = Math.max(maxPending, r.pending);
  }
  return { lines, maxPending };
}

async function readerProperties(n: number, out: Outcome[], log: (l: string) => void): Promise<void> {
  const P = 'command reader (src/inbound/command-reader.ts)';
  const alphabet = fc.constantFrom('a', 'B', ' ', '\r', '\n', '\r\n', '\x00', 'é', '\r\r', 'NOOP', 'x'.repeat(13));
  await check(
    P,
    'lines match the documented splitting, whatever the write sizes; memory bounded by maxLine',
    n * 4,
    fc.property(
      fc.array(alphabet, { maxLength: 60 }),
      fragSizes,
      fc.integer({ min: 4, max: 40 }),
      (parts, sizes, maxLine) => {
        const input = Buffer.from(parts.join(''), 'utf8');
        const ref = referenceLines(input, maxLine);
        for (const sz of [[input.length || 1], [1], [3], [17], sizes]) {
          const got = readAll(input, sz, maxLine);
          must(
            JSON.stringify(got.lines) === JSON.stringify(ref),
            `sizes ${fmt(sz)}: ${fmt(got.lines)} vs documented ${fmt(ref)}`,
          );
          // After draining, at most one unfinished line of maxLine + 1 octets (+ the chunk being read) stays buffered.
          must(got.maxPending <= maxLine + 1 + Math.max(...sz), `pending ${got.maxPending} with maxLine ${maxLine}`);
        }
      },
    ),
    out,
    log,
  );
  await check(
    P,
    'production limit (2048): long lines around the boundary',
    Math.max(50, n / 2),
    fc.property(
      fc.integer({ min: 2040, max: 2060 }),
      fc.constantFrom('\r\n', '\n', '\r', ''),
      fc.constantFrom(1, 3, 17, 4096),
      fc.integer({ min: 0, max: 3000 }),
      (len, eol, frag, extra) => {
        const input = Buffer.concat([
          Buffer.alloc(len, 0x61),
          Buffer.from(eol),
          Buffer.from('NOOP\r\n'),
          Buffer.alloc(extra, 0x62),
        ]);
        const got = readAll(input, [frag], 2048);
        must(JSON.stringify(got.lines) === JSON.stringify(referenceLines(input, 2048)), `${fmt(got.lines)}`);
      },
    ),
    out,
    log,
  );
}

// ---------------------------------------------------------------------------------------------
// Configuration

const VALID_CONFIG = {
  hostname: 'mx1.contoso.test',
  dataDir: './data',
  log: { level: 'info' },
  smtp: { listen: ['127.0.0.1:2525'], maxMessageSize: 1_000_000, timeouts: { command: 60 } },
  tls: { certificates: [{ cert: 'c.pem', key: 'k.pem' }], minVersion: 'TLSv1.2', trust: { caFiles: ['ca.pem'] } },
  dns: { servers: ['127.0.0.1:5353'] },
  delivery: { port: 25, connectionReuse: { idleSeconds: 5 } },
  queue: { retrySchedule: [60, 300] },
  organizations: [
    {
      name: 'contoso',
      acceptedDomains: [{ domain: 'contoso.test' }, { domain: 'relay.contoso.test', type: 'internalRelay' }],
      inboundConnectors: [
        {
          name: 'partner',
          connectorType: 'partner',
          senderDomains: ['fabrikam.test'],
          requireTls: true,
          tlsSenderCertificateName: '*.fabrikam.test',
        },
      ],
      outboundConnectors: [
        {
          name: 'onprem',
          connectorType: 'onPremises',
          allAcceptedDomains: true,
          useMXRecord: false,
          smartHosts: ['127.0.0.1:2526'],
        },
      ],
    },
  ],
};

type Json = unknown;
const PATHS: string[][] = [];
(function walk(o: Json, p: string[]) {
  PATHS.push(p);
  if (o && typeof o === 'object') for (const [k, v] of Object.entries(o)) walk(v, [...p, k]);
})(VALID_CONFIG, []);

function mutateConfig(base: Json, edits: { path: number; op: number; value: Json; key: string }[]): Json {
  const root = structuredClone(base) as Record<string, Json>;
  for (const e of edits) {
    const p = PATHS[e.path % PATHS.length];
    let parent: Record<string, Json> | null = null;
    let cur: Json = { '': root };
    let key = '';
    for (const k of ['', ...p]) {
      if (!cur || typeof cur !== 'object') break;
      parent = cur as Record<string, Json>;
      key = k;
      cur = parent[k];
    }
    if (!parent) continue;
    try {
      switch (e.op % 4) {
        case 0:
          parent[key] = e.value;
          break; // replace with anything
        case 1:
          delete parent[key];
          break; // drop the key
        case 2:
          if (cur && typeof cur === 'object') (cur as Record<string, Json>)[e.key] = e.value;
          break; // add a key
        case 3:
          parent[key] = Array.isArray(cur) ? [...cur, ...cur] : [cur];
          break; // duplicate / wrap
      }
    } catch {
      /* an earlier edit put a typed array or frozen value here: skip this edit */
    }
  }
  return root[''] ?? root;
}

function onlyAdminError(f: () => unknown): void {
  try {
    f();
  } catch (e) {
    if (!(e instanceof AdminError))
      throw new Error(`threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message ?? e}`);
  }
}

async function configProperties(n: number, out: Outcome[], log: (l: string) => void, workDir: string): Promise<void> {
  const P = 'configuration (src/config/load.ts)';
  must(
    buildConfig(VALID_CONFIG, '/etc/portcullis', 'x.yaml').organizations.length === 1,
    'the base configuration is valid',
  );
  const keyArb = fc.constantFrom(
    '__proto__',
    'constructor',
    'prototype',
    'smtp',
    'name',
    'x',
    '',
    'organizations',
    'listen',
    'toString',
  );
  const edit = fc.record({
    path: fc.nat(),
    op: fc.nat(),
    value: fc.anything({
      maxDepth: 3,
      withNullPrototype: true,
      withBigInt: true,
      withDate: true,
      withMap: true,
      withSet: true,
      withTypedArray: true,
      withSparseArray: true,
      withBoxedValues: true,
    }),
    key: keyArb,
  });
  await check(
    P,
    'buildConfig on mutated and random objects: a Config or an AdminError, nothing else',
    n * 3,
    fc.property(
      fc.oneof(
        {
          weight: 4,
          arbitrary: fc.array(edit, { minLength: 1, maxLength: 5 }).map((e) => mutateConfig(VALID_CONFIG, e)),
        },
        { weight: 1, arbitrary: fc.anything({ maxDepth: 4 }) },
      ),
      (input) => {
        onlyAdminError(() => buildConfig(input, '/etc/portcullis', 'x.yaml'));
      },
    ),
    out,
    log,
  );
  const dir = path.join(workDir, 'config');
  mkdirSync(dir, { recursive: true });
  let k = 0;
  const yamlText = fc.oneof(
    {
      weight: 3,
      arbitrary: fc
        .tuple(
          fc.array(edit, { maxLength: 3 }),
          fc.array(
            fc.tuple(
              fc.nat(),
              fc.constantFrom(
                ':',
                '-',
                ' ',
                '\n',
                '&a',
                '*a',
                '!!binary',
                '{',
                '[',
                '"',
                "'",
                '|',
                '>',
                '#',
                '\t',
                '<<: *a',
                '? ',
                '%YAML 1.1\n',
                '---\n',
                '\u0000',
                '\ufeff',
                'e',
              ),
            ),
            { maxLength: 6 },
          ),
        )
        .map(([e, cuts]) => {
          let t: string;
          try {
            t = YAML.stringify(mutateConfig(VALID_CONFIG, e));
          } catch {
            t = YAML.stringify(VALID_CONFIG);
          } // exotic values YAML cannot write
          for (const [at, s] of cuts) {
            const i = at % (t.length + 1);
            t = t.slice(0, i) + s + t.slice(i);
          }
          return t;
        }),
    },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 200 }) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        'a: &a [*a]',
        'x: &x\n  y: *x\n',
        '[',
        '{a: 1, a: 2}',
        'organizations: !!set {a}',
        '- 1\n- 2',
        '',
        '~',
        '"\\u0000"',
        'smtp: {maxMessageSize: .inf}',
        'smtp: {maxMessageSize: 1e400}',
      ),
    },
  );
  // The yaml library reports oddities (ambiguous aliases…) as process warnings: keep them off the console.
  const emitWarning = process.emitWarning;
  process.emitWarning = () => {};
  try {
    await check(
      P,
      'loadConfig on mutated YAML files: a Config or an AdminError, nothing else',
      n * 2,
      fc.property(yamlText, (text) => {
        const f = path.join(dir, `c${k++ % 8}.yaml`);
        writeFileSync(f, text);
        onlyAdminError(() => loadConfig(f));
      }),
      out,
      log,
    );
  } finally {
    process.emitWarning = emitWarning;
  }
}

// ---------------------------------------------------------------------------------------------
// DNS answers

type Spec = {
  kind: 'valid' | 'mutated' | 'random' | 'drop' | 'wrongId' | 'tcpOnly';
  rcode: number;
  tc: boolean;
  ad: boolean;
  records: Rec[];
  flips: [number, number][];
  cut: number;
  junk: number[];
};
type Rec = { type: string; name: string; ttl: number; data: unknown; toQname: boolean };

const recArb: fc.Arbitrary<Rec> = fc
  .record({
    type: fc.constantFrom('A', 'AAAA', 'MX', 'TXT', 'TLSA', 'CNAME', 'PTR', 'NS'),
    name: fc.constantFrom('other.test', 'x.fuzz.test', '', 'a.b.c.d.e.f.test'),
    toQname: fc.boolean(),
    ttl: fc.oneof(fc.constantFrom(0, 1, 300, 86_400, 2 ** 31 - 1, 2 ** 32 - 1), fc.nat()),
    data: fc.oneof(fc.ipV4(), fc.ipV6(), fc.domain(), fc.constant('')),
  })
  .map((r) => {
    // Shape the data for the type (dns-packet encodes per type).
    const host =
      typeof r.data === 'string' && /^[a-z0-9.-]*$/i.test(r.data) && !r.data.includes(':') ? r.data : 'h.fuzz.test';
    switch (r.type) {
      case 'A':
        return { ...r, data: typeof r.data === 'string' && net.isIPv4(r.data) ? r.data : '127.0.0.9' };
      case 'AAAA':
        return { ...r, data: typeof r.data === 'string' && net.isIPv6(r.data) ? r.data : '::1' };
      case 'MX':
        return { ...r, data: { preference: r.ttl % 65_536, exchange: host } };
      case 'TXT':
        return { ...r, data: [String(r.data).slice(0, 200), 'v=x'] };
      case 'TLSA':
        return {
          ...r,
          data: { usage: r.ttl % 256, selector: 1, matchingType: 1, certificate: Buffer.from(String(r.data)) },
        };
      default:
        return { ...r, data: host };
    }
  });
const specArb: fc.Arbitrary<Spec> = fc.record({
  kind: fc.constantFrom('valid', 'valid', 'valid', 'mutated', 'mutated', 'random', 'drop', 'wrongId', 'tcpOnly'),
  rcode: fc.constantFrom(0, 0, 0, 0, 1, 2, 3, 4, 5, 9, 15),
  tc: fc.boolean(),
  ad: fc.boolean(),
  records: fc.array(recArb, { maxLength: 6 }),
  flips: fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 6 }),
  cut: fc.nat(),
  junk: fc.array(fc.nat(255), { maxLength: 60 }),
});

interface FakeDns {
  port: number;
  plan: Spec[];
  queries: number;
  close(): Promise<void>;
}

function responseFor(query: Buffer, spec: Spec, tcp: boolean): Buffer | null {
  let q: Packet;
  try {
    q = dnsPacket.decode(query);
  } catch {
    return null;
  }
  const qq = q.questions?.[0];
  if (!qq) return null;
  const id = spec.kind === 'wrongId' ? ((q.id ?? 0) + 1) % 65_536 : (q.id ?? 0);
  if (spec.kind === 'drop' || (spec.kind === 'tcpOnly' && !tcp)) return null;
  if (spec.kind === 'random') {
    const b = Buffer.from([id >> 8, id & 255, ...spec.junk]);
    return b;
  }
  let enc: Buffer;
  try {
    enc = dnsPacket.encode({
      type: 'response',
      id,
      flags:
        (spec.tc && !tcp ? dnsPacket.TRUNCATED_RESPONSE : 0) |
        (spec.ad ? dnsPacket.AUTHENTIC_DATA : 0) |
        dnsPacket.RECURSION_AVAILABLE |
        spec.rcode,
      questions: [qq],
      answers: spec.records.map((r) => ({
        type: r.type,
        name: r.toQname ? qq.name : r.name,
        ttl: r.ttl,
        class: 'IN',
        data: r.data,
      })) as Packet['answers'],
    } as Packet);
  } catch {
    enc = Buffer.from([id >> 8, id & 255, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]);
  }
  if (spec.kind === 'mutated') {
    enc = Buffer.from(enc);
    for (const [at, v] of spec.flips) enc[2 + (at % Math.max(1, enc.length - 2))] = v; // keep the id
    if (spec.cut % 3 === 0) enc = enc.subarray(0, Math.max(2, spec.cut % (enc.length + 1)));
    if (spec.cut % 5 === 0) enc = Buffer.concat([enc, Buffer.from(spec.junk)]);
  }
  return enc;
}

async function startFakeDns(): Promise<FakeDns> {
  const state: FakeDns = { port: 0, plan: [], queries: 0, close: async () => {} };
  const next = () => state.plan[state.queries++ % Math.max(1, state.plan.length)];
  const udp = dgram.createSocket('udp4');
  udp.on('message', (msg, rinfo) => {
    const spec = next();
    const r = spec ? responseFor(msg, spec, false) : null;
    if (r) udp.send(r, rinfo.port, rinfo.address);
  });
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
  state.port = udp.address().port;
  const socks = new Set<net.Socket>();
  const tcp = net.createServer((s) => {
    socks.add(s);
    s.on('close', () => socks.delete(s));
    s.on('error', () => {});
    let buf = Buffer.alloc(0);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      const spec = next();
      const r = spec ? responseFor(buf.subarray(2, 2 + buf.readUInt16BE(0)), spec, true) : null;
      if (!r) {
        s.destroy();
        return;
      }
      const len = Buffer.alloc(2);
      len.writeUInt16BE(spec.cut % 7 === 0 ? (r.length + 5) % 65_536 : r.length); // sometimes a lying length
      s.end(Buffer.concat([len, r]));
    });
  });
  await new Promise<void>((r, j) => {
    tcp.once('error', j);
    tcp.listen(state.port, '127.0.0.1', () => r());
  });
  state.close = () =>
    new Promise<void>((r) => {
      for (const s of socks) s.destroy();
      udp.close();
      tcp.close(() => r());
    });
  return state;
}

async function dnsProperties(n: number, out: Outcome[], log: (l: string) => void): Promise<void> {
  const P = 'DNS answers (src/dns/resolver.ts)';
  const fake = await startFakeDns();
  const TIMEOUT = 40;
  let q = 0;
  try {
    await check(
      P,
      'random and mutated answers from a loopback server: a result or a DnsError, within the timeout budget',
      n,
      fc.asyncProperty(
        fc.array(specArb, { minLength: 1, maxLength: 4 }),
        fc.constantFrom('mx', 'addresses', 'txt', 'tlsa', 'ptr', 'A', 'CNAME', 'AAAA'),
        fc.constantFrom(1, 2),
        async (plan, call, attempts) => {
          fake.plan = plan;
          fake.queries = 0;
          const r = new DnsResolver([`127.0.0.1:${fake.port}`], { timeoutMs: TIMEOUT, attempts });
          const name = `q${q++}.fuzz.test`;
          const t0 = Date.now();
          // Worst case: every hop of a CNAME chain (9) times attempts, each UDP then TCP, each a timeout.
          const bound = 9 * attempts * 2 * TIMEOUT + 3000;
          let timer: NodeJS.Timeout | undefined;
          const hang = new Promise<'hang'>((res) => {
            timer = setTimeout(() => res('hang'), bound + 2000);
          });
          const work = (async () => {
            switch (call) {
              case 'mx': {
                const m = await r.mx(name);
                for (const x of m.records)
                  must(typeof x.exchange === 'string' && typeof x.priority === 'number', `mx ${fmt(x)}`);
                break;
              }
              case 'addresses': {
                const a = await r.addresses(name);
                for (const x of a.records) must(typeof x === 'string', 'address');
                break;
              }
              case 'txt': {
                const t = await r.txt(name);
                for (const x of t.records) must(typeof x === 'string', 'txt');
                break;
              }
              case 'tlsa':
                await r.tlsa(name);
                break;
              case 'ptr':
                await r.ptr('127.0.0.2');
                break;
              default:
                await r.lookup(name, call as RecordType);
            }
            return 'ok' as const;
          })().catch((e: unknown) => e);
          const res = await Promise.race([work, hang]);
          clearTimeout(timer);
          must(res !== 'hang', `no outcome within ${bound + 2000} ms`);
          if (res !== 'ok')
            must(
              res instanceof DnsError,
              `threw ${(res as Error)?.constructor?.name}: ${(res as Error)?.message ?? res}`,
            );
          must(Date.now() - t0 <= bound, `took ${Date.now() - t0} ms (bound ${bound})`);
        },
      ),
      out,
      log,
    );
  } finally {
    await fake.close();
  }
  await check(
    P,
    'decoded random packets through the answer interpretation: a Lookup or a DnsError',
    n * 4,
    fc.property(
      fc.uint8Array({ minLength: 12, maxLength: 300 }),
      fc.constantFrom('MX', 'A', 'TXT', 'TLSA'),
      (bytes, type) => {
        let p: Packet;
        try {
          p = dnsPacket.decode(Buffer.from(bytes));
        } catch {
          return;
        } // the resolver drops undecodable packets
        const r = new DnsResolver(['127.0.0.1:9']);
        const inner = r as unknown as { interpret(p: Packet, s: unknown, n: string, t: string): unknown };
        try {
          inner.interpret(p, r.upstreams[0], 'x.test', type);
        } catch (e) {
          must(e instanceof DnsError, `threw ${(e as Error)?.message}`);
        }
      },
    ),
    out,
    log,
  );
  await check(
    P,
    'reverseName never throws on IP addresses',
    n,
    fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), (ip) => {
      must(/\.(in-addr|ip6)\.arpa$/.test(reverseName(ip)), 'reverse name');
    }),
    out,
    log,
  );
}

// ---------------------------------------------------------------------------------------------
// Certificate names

const ldh = fc
  .string({ unit: fc.constantFrom(...'abcxyz0129-'), minLength: 1, maxLength: 10 })
  .filter((s) => !s.startsWith('-') && !s.endsWith('-'));
const hostArb = fc.array(ldh, { minLength: 1, maxLength: 4 }).map((l) => l.join('.'));
const caseMix = (s: string, bits: number) =>
  [...s].map((c, i) => ((bits >> (i % 30)) & 1 ? c.toUpperCase() : c)).join('');

async function namesProperties(n: number, out: Outcome[], log: (l: string) => void, certRuns: number): Promise<void> {
  const P = 'certificate names (src/tls/names.ts)';
  await check(
    P,
    'never throw on arbitrary strings',
    n * 2,
    fc.property(
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.string({ maxLength: 40 }),
      fc.array(fc.string({ maxLength: 20 }), { maxLength: 4 }),
      (a, b, names) => {
        nameMatches(a, b);
        nameMatches(b, a);
        namesSatisfy(names, a);
        namesSatisfy(names, `*.${b}`);
      },
    ),
    out,
    log,
  );
  await check(
    P,
    'exact names: reflexive, case- and trailing-dot-insensitive, symmetric',
    n * 2,
    fc.property(hostArb, hostArb, fc.nat(), fc.boolean(), (a, b, bits, dot) => {
      must(nameMatches(a, caseMix(a, bits) + (dot ? '.' : '')), 'not reflexive modulo case/trailing dot');
      must(nameMatches(a, b) === nameMatches(b, a), 'not symmetric');
      must(nameMatches(a, b) === (a.toLowerCase() === b.toLowerCase()), 'exact names match only when equal');
      must(namesSatisfy([a], b) === namesSatisfy([b], a), 'namesSatisfy not symmetric for exact names');
    }),
    out,
    log,
  );
  await check(
    P,
    'wildcards: whole left-most label only, exactly one label, never over a single-label base',
    n * 2,
    fc.property(ldh, hostArb, ldh, fc.constantFrom('f*', '*f', 'f*o', '**'), (l, base, l2, partial) => {
      const multi = base.includes('.');
      must(nameMatches(`*.${base}`, `${l}.${base}`) === multi, `*.${base} vs ${l}.${base}`);
      must(!nameMatches(`*.${base}`, base), 'wildcard matched its base');
      must(!nameMatches(`*.${base}`, `${l2}.${l}.${base}`), 'wildcard matched two labels');
      must(!nameMatches(`${partial}.${base}`, `${l}.${base}`) || `${partial}` === l, 'partial-label wildcard honoured');
      must(!nameMatches(`${l}.*.${base}`, `${l}.${l2}.${base}`), 'non-left-most wildcard honoured');
      must(namesSatisfy([`${l}.${base}`], `*.${base}`) === multi, 'required *.base not satisfied by a host of it');
      must(namesSatisfy([`*.${base}`], `*.${base}`), 'required wildcard not satisfied by the same wildcard');
      must(
        !namesSatisfy([`${l2}.${l}.${base}`], `*.${base}`) || nameMatches(`*.${base}`, `${l2}.${l}.${base}`),
        'deep host satisfied *.base',
      );
    }),
    out,
    log,
  );
  await check(
    P,
    'oracle: certificateNames + nameMatches agree with X509Certificate.checkHost (OpenSSL) on real certificates',
    certRuns,
    fc.asyncProperty(
      fc.array(fc.tuple(fc.boolean(), hostArb), { minLength: 1, maxLength: 4 }),
      ldh,
      async (sans, l) => {
        const dnsNames = sans.map(([w, h]) => (w ? `*.${h}` : h));
        const issued = await issueCertificate({ subject: 'CN=ignored.test', dnsNames, key: 'ec256' });
        const x = new X509Certificate(issued.certPem);
        const names = certificateNames(x);
        must(
          JSON.stringify(names) === JSON.stringify(dnsNames.map((d) => d.toLowerCase())),
          `certificateNames ${fmt(names)} vs SANs ${fmt(dnsNames)}`,
        );
        const refs = [
          ...new Set(sans.flatMap(([, h]) => [h, `${l}.${h}`, `${l}.${l}.${h}`, h.slice(h.indexOf('.') + 1)])),
        ];
        for (const ref of refs) {
          const ours = names.some((nm) => nameMatches(nm, ref));
          const openssl =
            x.checkHost(ref, { partialWildcards: false, multiLabelWildcards: false, singleLabelSubdomains: false }) !==
            undefined;
          must(ours === openssl, `${ref}: ours ${ours}, OpenSSL ${openssl} (SANs ${dnsNames.join(', ')})`);
        }
      },
    ),
    out,
    log,
  );
}

// ---------------------------------------------------------------------------------------------

export async function runProperties(ctx: ProofContext): Promise<ProofSection> {
  const n = ctx.size === 'ci' ? 500 : 5000;
  const out: Outcome[] = [];
  const log = (l: string) => ctx.log(l);
  ctx.log(`property fuzzing with fast-check, seed ${PROPERTY_SEED}, base ${n} runs`);
  await addressProperties(n, out, log);
  await decoderProperties(n, out, log);
  await chunkedProperties(n, out, log);
  await readerProperties(n, out, log);
  await configProperties(n, out, log, ctx.workDir);
  await dnsProperties(ctx.size === 'ci' ? 250 : 2500, out, log);
  await namesProperties(n, out, log, ctx.size === 'ci' ? 40 : 300);
  const findings = out.filter((o) => o.finding);
  return {
    title: 'Hostile input: property-based fuzzing of the parsers',
    command: `npm run ${ctx.size === 'ci' ? 'proof:ci' : 'proof'} -- --only fuzz   (fast-check seed ${PROPERTY_SEED})`,
    table: {
      header: ['parser', 'property', 'iterations', 'findings'],
      rows: out.map((o) => [o.parser, o.property, o.runs, o.finding ? `1: ${o.finding.replace(/\|/g, '\\|')}` : 0]),
    },
    notes: [
      `${out.reduce((k, o) => k + o.runs, 0)} iterations over ${out.length} properties with fast-check ${fc.__version} (fixed seed ${PROPERTY_SEED}, so the same inputs every run).`,
      'DNS answers come from a fake DNS server on 127.0.0.1 (UDP and TCP) answering each query with a valid, mutated, truncated, random, wrong-id or missing packet; the resolver must return a result or a typed DnsError within its timeout budget.',
      "The certificate-name oracle issues real certificates with random SAN dNSNames (wildcards included) and compares our RFC 6125 matching with OpenSSL's X509_check_host (Node X509Certificate.checkHost, partial wildcards off).",
    ],
    failures: findings.map((o) => `${o.parser}: ${o.property}: ${o.finding}`),
  };
}
