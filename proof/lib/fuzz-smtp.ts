// The seeded SMTP session fuzzer of proof/fuzz.ts: sessions are generated from a grammar of
// valid commands, mutated, written to a real gateway over loopback in fragments of 1, 3, 17
// bytes or whole, and checked against an independent model of the server's reply contract:
//  - every complete command line gets exactly one reply (the lines of message data none, the
//    final dot one; after a 421 or 221 nothing more);
//  - the server closes only after 221 or 421 (or 554 to a client that spoke before the greeting,
//    or a TLS handshake we spoiled by pipelining bytes after STARTTLS);
//  - a follow-up RSET on a session still open gets 250.
// The model is written from RFC 5321 and the documented contract, not from the server's code: a
// line ends at CRLF, bare LF or bare CR; a line longer than 2048 octets gets one 500 and is
// skipped to its end; DATA ends at the first CRLF "." CRLF whose CRLF is real (or "." CRLF at the
// start of the data); BDAT <size> [LAST] (RFC 3030) is followed by exactly size octets of chunk
// (no replies to them: they are never commands) and then gets one reply, and a BDAT line the
// server cannot use (no readable size, a NUL, overlong) gets 521 and the session ends. (The fuzz
// gateway runs with bareLineEndings: normalize, so a BDAT line with a bare ending is used.)
import net from 'node:net';
import tls from 'node:tls';
import { Rng } from './fuzz-rng.ts';

export const MAX_LINE = 2048;
const CR = 13,
  LF = 10;

// ---------------------------------------------------------------------------------------------
// Generation

export interface Step {
  bytes: Buffer;
  wait: boolean;
  /** Message data as generated: a careful client sends it only after 354. */
  body?: boolean;
}
export interface SessionPlan {
  seed: number;
  steps: Step[];
  /** Write size: 1, 3 or 17 bytes per write, or 0 for each step whole. */
  frag: number;
  /** Write the first step before the greeting arrives. */
  pregreet: boolean;
  mutations: string[];
  /** Follow-up: QUIT (else we close the socket ourselves). */
  quit: boolean;
  bytes: number;
}

export interface FuzzLimits {
  maxMessageSize: number;
  maxHeaderSize: number;
  maxRecipients: number;
}

const b = (s: string): Buffer => Buffer.from(s, 'utf8');
const line = (s: string): Buffer => b(`${s}\r\n`);

const SENDERS = [
  'alice@fabrikam.test',
  '',
  'postmaster',
  'Bob.Smith@Fabrikam.TEST',
  '"john doe"@fabrikam.test',
  '@relay.test,@b.test:carol@fabrikam.test',
  'jöran@fabrikam.test',
  'x@[127.0.0.1]',
  'x@[IPv6:::1]',
  'a..b@fabrikam.test',
  'nodomain',
];
const MAIL_PARAMS = [
  'SIZE=1000',
  'SIZE=99999999',
  'SIZE=',
  'SIZE=abc',
  'BODY=8BITMIME',
  'BODY=7BIT',
  'BODY=BINARYMIME',
  'SMTPUTF8',
  'SMTPUTF8=yes',
  'RET=FULL',
  'RET=HDRS',
  'RET=NONE',
  'ENVID=abc+2Bdef',
  'ENVID=bad=x',
  'AUTH=<>',
  'XFOO',
  'size=2000',
];
const RCPT_PARAMS = [
  'NOTIFY=SUCCESS,FAILURE',
  'NOTIFY=NEVER',
  'NOTIFY=DELAY',
  'NOTIFY=NEVER,SUCCESS',
  'ORCPT=rfc822;user@contoso.test',
  'ORCPT=utf-8;jöran@contoso.test',
  'ORCPT=bad',
  'XBAR=1',
  'notify=failure',
];
const MISC = [
  'RSET',
  'NOOP',
  'NOOP hello',
  'VRFY user0',
  'VRFY',
  'EXPN list',
  'HELP',
  'HELP MAIL',
  'STARTTLS',
  'STARTTLS now',
  'BDAT 10 LAST',
  'BDAT 120000 LAST',
  'AUTH PLAIN AGFsaWNlAHNlY3JldA==',
  'ETRN contoso.test',
  'XYZZY',
  '',
  ' ',
  'QUIT',
  'MAIL',
  'RCPT',
  'DATA x',
  'EHLO',
  'HELO a b',
];
const HTTP = ['GET / HTTP/1.1', 'POST /x HTTP/1.0', 'CONNECT 127.0.0.1:25 HTTP/1.1'];
const TOKENS = [
  'EHLO',
  'HELO',
  'MAIL',
  'RCPT',
  'DATA',
  'RSET',
  'NOOP',
  'VRFY',
  'QUIT',
  'STARTTLS',
  'BDAT',
  'FROM:',
  'TO:',
  'FROM:<>',
  'TO:<postmaster>',
  '<>',
  '<postmaster>',
  '<user1@contoso.test>',
  'SIZE=',
  'SMTPUTF8',
  'NOTIFY=NEVER',
  'ORCPT=rfc822;',
  'BODY=8BITMIME',
  '.',
  '..',
  ':',
  '<',
  '>',
  '"',
  '@',
  '\t',
  '',
  'ſTARTTLS',
  'data',
  'starttls',
  'quit',
  '\u00e9',
  '\uffff',
];
const SMUGGLE = [
  '\n.\n',
  '\n.\r\n',
  '\r.\r',
  '\r.\r\n',
  '\r\n.\r',
  '\r\n.\n',
  '\n.\r',
  '\r\n.\r\r\n',
  '\r\r.\r\r',
  '\r\n.\r\n',
];

function recipient(r: Rng): string {
  return r.weighted([
    [`user${r.int(0, 30)}@contoso.test`, 10],
    ['postmaster@contoso.test', 1],
    ['postmaster', 1],
    ['Someone@Contoso.Test', 1],
    ['someone@elsewhere.test', 2],
    ['user%other.test@contoso.test', 1],
    ['"we ird"@contoso.test', 1],
    ['"../../etc"@contoso.test', 1],
    ['jöran@contoso.test', 1],
    ['"a\\"b"@contoso.test', 1],
    ['', 1],
    ['user@[127.0.0.1]', 1],
  ] as const);
}

function params(r: Rng, from: readonly string[]): string {
  let s = '';
  for (
    let i = r.weighted([
      [0, 6],
      [1, 3],
      [2, 2],
      [4, 1],
    ] as const);
    i > 0;
    i--
  )
    s += ` ${r.pick(from)}`;
  return s;
}

function ehlo(r: Rng): Buffer {
  return line(
    r.weighted([
      ['EHLO client.test', 8],
      ['HELO client.test', 2],
      ['EHLO [127.0.0.1]', 1],
      ['EHLO [IPv6:::1]', 1],
      ['ehlo x', 1],
    ] as const),
  );
}

function bodyLine(r: Rng): string {
  return r.weighted([
    [`Line ${r.int(0, 1e6)} of text`, 20],
    ['', 3],
    ['.', 2],
    ['.leading dot', 2],
    ['..', 1],
    ['x'.repeat(r.int(900, 3000)), 1],
    ['caf\u00e9 8-bit \u00ff', 1],
    ['nul\u0000byte', 1],
    [`smuggle${r.pick(SMUGGLE)}MAIL FROM:<evil@x.test>`, 1],
    ['\t tab', 1],
  ] as const);
}

/** A message: headers, blank line, body lines, dot-stuffed, then the terminator. */
function message(r: Rng, lim: FuzzLimits): Buffer {
  const lines = [
    `From: <alice@fabrikam.test>`,
    `To: <user${r.int(0, 30)}@contoso.test>`,
    `Subject: fuzz ${r.int(0, 1e9)}`,
    `Message-ID: <${r.int(0, 1e9)}@fabrikam.test>`,
  ];
  if (r.chance(0.05)) lines.push(`X-Big: ${'h'.repeat(lim.maxHeaderSize + r.int(-64, 64))}`);
  if (r.chance(0.05)) lines.push('Subject: caf\u00e9');
  lines.push('');
  const n = r.weighted([
    [0, 1],
    [r.int(1, 5), 6],
    [r.int(5, 60), 3],
  ] as const);
  for (let i = 0; i < n; i++) lines.push(bodyLine(r));
  let text = lines.map((l) => (l.startsWith('.') ? `.${l}` : l)).join('\r\n') + '\r\n';
  if (r.chance(0.05)) {
    // Around and over the size limit.
    const target = lim.maxMessageSize + r.int(-200, 2000);
    const fill = 'y'.repeat(76) + '\r\n';
    text += fill.repeat(Math.max(0, Math.ceil((target - text.length) / fill.length)));
  }
  return b(text + '.\r\n');
}

/** The pieces of a session in order: command lines (with their CRLF) and message blobs (also added to `bodies`). */
function grammarSession(r: Rng, lim: FuzzLimits, bodies: Set<Buffer>): Buffer[] {
  const out: Buffer[] = [];
  if (r.chance(0.9)) out.push(ehlo(r));
  const units = r.int(1, 6);
  for (let u = 0; u < units; u++) {
    const kind = r.weighted([
      ['txn', 12],
      ['misc', 5],
      ['tls', 2],
      ['ehlo', 1],
      ['http', 0.1],
    ] as const);
    if (kind === 'txn') {
      // Mostly a well-formed transaction core (so the session gets deep), sometimes anything.
      const clean = r.chance(0.6);
      const from = clean ? r.pick(['alice@fabrikam.test', '', 'Bob.Smith@Fabrikam.TEST']) : r.pick(SENDERS);
      out.push(
        line(
          `MAIL FROM:<${from}>${clean ? r.pick(['', ' BODY=8BITMIME', ' SIZE=1000', ' RET=HDRS ENVID=x1']) : params(r, MAIL_PARAMS)}`,
        ),
      );
      const rcpts = r.weighted([
        [0, 1],
        [r.int(1, 3), 8],
        [r.int(4, 8), 2],
        [lim.maxRecipients + r.int(0, 5), 1],
      ] as const);
      for (let i = 0; i < rcpts; i++) {
        out.push(
          line(
            clean && r.chance(0.8)
              ? `RCPT TO:<user${r.int(0, 30)}@contoso.test>`
              : `RCPT TO:<${recipient(r)}>${params(r, RCPT_PARAMS)}`,
          ),
        );
      }
      if (r.chance(0.2)) {
        // The same content in BDAT chunks (RFC 3030): the dots and the end-of-data inside are content.
        const m = message(r, lim);
        const cuts = [
          0,
          ...Array.from({ length: r.int(0, 3) }, () => r.int(0, m.length)).sort((a, b) => a - b),
          m.length,
        ];
        for (let k = 1; k < cuts.length; k++) {
          const piece = m.subarray(cuts[k - 1], cuts[k]);
          // The line and its chunk as pieces of their own, so that mutations reach the line's ending.
          out.push(line(`BDAT ${piece.length}${k === cuts.length - 1 ? ' LAST' : ''}`), piece);
        }
      } else if (r.chance(0.9)) {
        out.push(line('DATA'));
        const m = message(r, lim);
        bodies.add(m);
        out.push(m);
      } else out.push(line('RSET'));
    } else if (kind === 'misc') {
      for (let i = r.int(1, 4); i > 0; i--) out.push(line(r.pick(MISC)));
    } else if (kind === 'tls') {
      out.push(line('STARTTLS'));
      out.push(ehlo(r));
    } else if (kind === 'ehlo') out.push(ehlo(r));
    else out.push(line(r.pick(HTTP)));
  }
  if (r.chance(0.4)) out.push(line('QUIT'));
  return out;
}

function insertAt(buf: Buffer, at: number, ins: Buffer): Buffer {
  return Buffer.concat([buf.subarray(0, at), ins, buf.subarray(at)]);
}

/** Apply one random mutation to the pieces; returns its name. */
function mutate(r: Rng, p: Buffer[]): string {
  const idx = () => r.int(0, Math.max(0, p.length - 1));
  if (!p.length) {
    p.push(line('NOOP'));
    return 'seed-empty';
  }
  const op = r.weighted([
    ['token-swap', 4],
    ['token-replace', 4],
    ['line-swap', 2],
    ['repeat', 3],
    ['delete', 2],
    ['random-bytes', 3],
    ['flip-bytes', 3],
    ['long-line', 3],
    ['nul', 2],
    ['bare-ending', 3],
    ['bare-inside', 2],
    ['starttls', 3],
    ['starttls-pipelined', 3],
    ['smuggle', 2],
    ['case', 1],
    ['truncate', 1],
    ['empty-lines', 1],
    ['binary-line', 1],
    ['merge', 1],
  ] as const);
  const i = idx();
  switch (op) {
    case 'token-swap':
    case 'token-replace': {
      const text = p[i].toString('utf8');
      const m = /(\r\n|\r|\n)$/.exec(text);
      const end = m ? m[0] : '';
      const toks = text.slice(0, text.length - end.length).split(' ');
      if (op === 'token-swap' && toks.length > 1) {
        const a = r.int(0, toks.length - 1),
          c = r.int(0, toks.length - 1);
        [toks[a], toks[c]] = [toks[c], toks[a]];
      } else toks[r.int(0, toks.length - 1)] = r.pick(TOKENS);
      p[i] = b(toks.join(' ') + end);
      break;
    }
    case 'line-swap': {
      const j = idx();
      [p[i], p[j]] = [p[j], p[i]];
      break;
    }
    case 'repeat': {
      const n = r.weighted([
        [2, 4],
        [r.int(3, 10), 3],
        [r.int(20, 60), 1],
      ] as const);
      p.splice(i, 0, ...Array<Buffer>(n - 1).fill(p[i]));
      break;
    }
    case 'delete':
      p.splice(i, 1);
      break;
    case 'random-bytes':
      p[i] = insertAt(p[i], r.int(0, p[i].length), r.bytes(r.int(1, 16)));
      break;
    case 'flip-bytes': {
      const c = Buffer.from(p[i]);
      for (let k = r.int(1, 4); k > 0 && c.length; k--) c[r.int(0, c.length - 1)] = r.int(0, 255);
      p[i] = c;
      break;
    }
    case 'long-line': {
      const len = r.weighted([
        [MAX_LINE - 2 + r.int(0, 4), 4],
        [r.int(MAX_LINE - 50, MAX_LINE + 50), 2],
        [r.int(2100, 9000), 1],
        [r.int(100, 1500), 1],
      ] as const);
      const pre = r.pick([
        'NOOP ',
        'MAIL FROM:<a@fabrikam.test> ENVID=',
        'RCPT TO:<user1@contoso.test> ORCPT=rfc822;',
        'EHLO ',
        'XLONG ',
        'RCPT TO:<',
        'BDAT 1',
      ]);
      const fill = r.pick(['a', 'x', '+41', ' ']);
      let s = pre + fill.repeat(Math.ceil(Math.max(0, len - pre.length) / fill.length));
      s = s.slice(0, len);
      p.splice(i, 0, b(s + r.pick(['\r\n', '\r\n', '\n', '\r'])));
      break;
    }
    case 'nul':
      p[i] = insertAt(p[i], r.int(0, p[i].length), Buffer.from([0]));
      break;
    case 'bare-ending': {
      const t = p[i];
      if (t.length >= 2 && t[t.length - 2] === CR && t[t.length - 1] === LF)
        p[i] = Buffer.concat([t.subarray(0, t.length - 2), b(r.pick(['\n', '\r', '\r\r\n', '\n\r']))]);
      else p[i] = Buffer.concat([t, b('\n')]);
      break;
    }
    case 'bare-inside':
      p[i] = insertAt(p[i], r.int(0, p[i].length), b(r.pick(['\r', '\n', '\r\r', '\n\n', '\r\n'])));
      break;
    case 'starttls':
      p.splice(i, 0, line(r.pick(['STARTTLS', 'STARTTLS', 'starttls', 'STARTTLS ', 'STARTTLS x'])));
      break;
    case 'starttls-pipelined':
      // STARTTLS and more commands in the same write: the server must discard what followed.
      p.splice(
        i,
        0,
        Buffer.concat([
          line('STARTTLS'),
          line(r.pick(['MAIL FROM:<evil@x.test>', 'NOOP', 'EHLO injected.test', 'RSET'])),
          ...(r.chance(0.5) ? [line('RCPT TO:<user1@contoso.test>')] : []),
        ]),
      );
      break;
    case 'smuggle':
      p[i] = insertAt(
        p[i],
        r.int(0, p[i].length),
        b(r.pick(SMUGGLE) + r.pick(['MAIL FROM:<evil@x.test>\r\n', 'RSET\r\n', '', 'DATA\r\n'])),
      );
      break;
    case 'case':
      p[i] = b(p[i].toString('latin1').toLowerCase());
      break;
    case 'truncate':
      p[i] = p[i].subarray(0, r.int(0, p[i].length));
      p.length = i + 1;
      break;
    case 'empty-lines':
      p.splice(i, 0, ...Array<Buffer>(r.int(1, 5)).fill(b('\r\n')));
      break;
    case 'binary-line':
      p.splice(i, 0, Buffer.concat([r.bytes(r.int(1, 300)), b('\r\n')]));
      break;
    case 'merge':
      if (i + 1 < p.length) p.splice(i, 2, Buffer.concat([p[i], p[i + 1]]));
      break;
  }
  return op;
}

export function planSession(seed: number, lim: FuzzLimits): SessionPlan {
  const r = new Rng(seed);
  const bodies = new Set<Buffer>();
  const pieces = grammarSession(r, lim, bodies);
  const mutations: string[] = [];
  for (
    let n = r.weighted([
      [0, 3],
      [1, 4],
      [2, 3],
      [3, 2],
      [5, 1],
      [8, 1],
    ] as const);
    n > 0;
    n--
  )
    mutations.push(mutate(r, pieces));
  // Group the pieces into writes: one command at a time (lockstep), everything at once (a
  // pipelining burst), or random groups.
  const grouping = r.weighted([
    ['lockstep', 4],
    ['burst', 2],
    ['mixed', 4],
  ] as const);
  const steps: Step[] = [];
  if (grouping === 'lockstep')
    for (const p of pieces)
      steps.push({ bytes: p, wait: true, ...(bodies.has(p) && r.chance(0.8) ? { body: true } : {}) });
  else if (grouping === 'burst') steps.push({ bytes: Buffer.concat(pieces), wait: true });
  else {
    for (let k = 0; k < pieces.length;) {
      const n = r.int(1, 8);
      steps.push({ bytes: Buffer.concat(pieces.slice(k, k + n)), wait: r.chance(0.7) });
      k += n;
    }
  }
  const total = steps.reduce((n, s) => n + s.bytes.length, 0);
  let frag = r.weighted([
    [1, 2],
    [3, 2],
    [17, 2],
    [0, 4],
  ] as const);
  if (frag === 1 && total > 12_000) frag = 3;
  if (frag === 3 && total > 40_000) frag = 17;
  if (frag === 17 && total > 200_000) frag = 0;
  return { seed, steps, frag, pregreet: r.chance(0.03), mutations, quit: r.chance(0.7), bytes: total };
}

// ---------------------------------------------------------------------------------------------
// The model of the server's reply contract

interface Pending {
  kind: 'greeting' | 'line' | 'dataEnd';
  verb: string;
  text: string;
  start?: number;
  /** A BDAT line the server cannot use: the reply must be 521, and the session ends. */
  unusableBdat?: boolean;
  /**
   * A BDAT whose chunk would bring the message over 1.5 times maxMessageSize: 'must' when its own
   * size does (552 at once, unread, and the session ends), 'may' when the chunks before it in the
   * transaction could (the model cannot tell which of them the server kept).
   */
  farTooLarge?: 'must' | 'may';
}
export interface ModelReply {
  code: number;
  lines: string[];
}

class GrowBuf {
  buf = Buffer.alloc(4096);
  len = 0;
  append(c: Buffer): void {
    if (this.len + c.length > this.buf.length) {
      const n = Buffer.alloc(Math.max(this.buf.length * 2, this.len + c.length));
      this.buf.copy(n, 0, 0, this.len);
      this.buf = n;
    }
    c.copy(this.buf, this.len);
    this.len += c.length;
  }
}

export class ReplyModel {
  private s = new GrowBuf();
  private pos = 0;
  private scan = 0;
  private discarding = false;
  private dataStart = 0;
  phase: 'greeting' | 'command' | 'data' | 'chunk' | 'tls' | 'closing' = 'greeting';
  /** In phase chunk: the BDAT line waiting for its chunk (its reply comes once the chunk is in), and the chunk's size. */
  private chunkOf: Pending | null = null;
  private chunkSize = 0;
  /** The BDAT sizes since the transaction began (RSET or a LAST chunk resets it). */
  private chunked = 0;
  constructor(private readonly maxMessageSize = Infinity) {}
  awaiting: Pending | null = { kind: 'greeting', verb: '', text: '(greeting)' };
  /** Bytes written after a STARTTLS that got 220 (discarded by, or fed into the TLS handshake of, the server). */
  injected = 0;
  lines = 0;
  dataEnds = 0;
  replies = 0;
  readonly codes = new Map<string, number>();
  readonly violations: string[] = [];
  lastReply: ModelReply | null = null;
  lastFor: Pending | null = null;
  /** Reply to the most recent line whose text was exactly "RSET". */
  private rsetReply: ModelReply | null = null;
  takeRset(): ModelReply | null {
    const r = this.rsetReply;
    this.rsetReply = null;
    return r;
  }

  /** Bytes written to the current stream (plaintext, or TLS after an upgrade). */
  sent(c: Buffer): void {
    if (this.phase === 'tls' || this.phase === 'closing') {
      if (this.phase === 'tls') this.injected += c.length;
      return;
    }
    this.s.append(c);
    this.advance();
  }

  /** After a successful TLS handshake: a fresh stream, no greeting (RFC 3207). */
  restartAfterTls(): void {
    this.s = new GrowBuf();
    this.pos = 0;
    this.scan = 0;
    this.discarding = false;
    this.phase = 'command';
    this.awaiting = null;
  }

  get idle(): boolean {
    return this.awaiting === null;
  }
  /** The phase now (a call, so that TypeScript does not keep a narrowing across awaits). */
  at(): ReplyModel['phase'] {
    return this.phase;
  }
  /** Bytes the server holds without a complete command (or an unfinished message). */
  get partial(): 'none' | 'line' | 'data' | 'chunk' {
    if (this.phase === 'data') return 'data';
    if (this.phase === 'chunk') return 'chunk';
    if (this.phase === 'command' && (this.pos < this.s.len || this.discarding)) return 'line';
    return 'none';
  }
  /**
   * Whether the unanswered bytes hold a STARTTLS line with more bytes after it. The server then
   * switches to TLS, our later bytes spoil its handshake and it closes; a write of ours that fails
   * on that close makes Node drop the replies still unread in the kernel.
   */
  get starttlsInFlight(): boolean {
    if (!this.awaiting || this.awaiting.start === undefined) return false;
    const t = this.s.buf.subarray(this.awaiting.start, this.s.len).toString('utf8').toUpperCase();
    return /(^|[\r\n])STARTTLS *(\r\n|\r|\n)[\s\S]/.test(t);
  }

  /** In phase chunk: the octets of the chunk not yet sent. */
  get chunkMissing(): number {
    return this.phase === 'chunk' ? this.pos + this.chunkSize - this.s.len : 0;
  }

  get pendingText(): string {
    return this.awaiting ? `${this.awaiting.kind} ${JSON.stringify(this.awaiting.text)}` : '(none)';
  }

  reply(r: ModelReply): void {
    this.replies++;
    const key = `${r.code}${/^\d\.\d{1,3}\.\d{1,3}/.exec(r.lines[0].slice(4))?.[0] ? ' ' + r.lines[0].slice(4).split(' ')[0] : ''}`;
    this.codes.set(key, (this.codes.get(key) ?? 0) + 1);
    this.lastReply = r;
    const a = this.awaiting;
    if (!a) {
      // The one reply not bound to a command: 421 (too many errors, timeout, shutdown) before closing.
      if (r.code === 421 && this.phase !== 'closing') {
        this.phase = 'closing';
        return;
      }
      // A BDAT that may bring the message far over the limit, answered before its chunk was read.
      if (this.phase === 'chunk' && this.chunkOf?.farTooLarge === 'may' && r.code === 552) {
        if (!/; closing$/.test(r.lines[0]))
          this.violations.push(`552 before a chunk was read, not closing: ${r.lines[0]}`);
        this.phase = 'closing';
        return;
      }
      this.violations.push(`reply without a command: ${JSON.stringify(r.lines.join(' | '))} (phase ${this.phase})`);
      return;
    }
    this.awaiting = null;
    this.lastFor = a;
    if (a.kind === 'greeting') {
      if (r.code === 220) this.phase = 'command';
      else if (r.code === 554 || r.code === 421) this.phase = 'closing';
      else this.violations.push(`unexpected greeting ${r.lines.join(' | ')}`);
    } else if (r.code === 421 || (r.code === 221 && a.verb === 'QUIT')) {
      // (421 also before an unusable BDAT line is read: too many errors, a timeout, shutdown.)
      this.phase = 'closing';
    } else if (a.unusableBdat) {
      if (r.code !== 521)
        this.violations.push(`unusable BDAT line ${JSON.stringify(a.text)} got ${r.lines[0]}, not 521`);
      this.phase = 'closing';
    } else if (a.farTooLarge === 'must') {
      if (r.code !== 552 || !/; closing$/.test(r.lines[0]))
        this.violations.push(
          `BDAT far over the size limit ${JSON.stringify(a.text)} got ${r.lines[0]}, not 552 closing`,
        );
      this.phase = 'closing';
    } else if (a.kind === 'dataEnd') {
      this.phase = 'command';
      if (r.code === 354) this.violations.push('354 to the end of message data');
    } else {
      if (a.text === 'RSET') this.rsetReply = r;
      if (r.code === 354) {
        if (a.verb !== 'DATA') this.violations.push(`354 to a non-DATA line ${JSON.stringify(a.text)}`);
        this.phase = 'data';
        this.dataStart = this.pos;
        this.scan = this.pos;
      } else if (r.code === 220) {
        if (a.verb !== 'STARTTLS') this.violations.push(`220 to a non-STARTTLS line ${JSON.stringify(a.text)}`);
        this.phase = 'tls';
        this.injected += this.s.len - this.pos;
        this.pos = this.s.len;
      } else if (r.code === 221) this.violations.push(`221 to a non-QUIT line ${JSON.stringify(a.text)}`);
    }
    if (r.code < 200 || r.code > 599) this.violations.push(`reply code out of range: ${r.lines[0]}`);
    this.advance();
  }

  private advance(): void {
    const buf = this.s.buf;
    const len = this.s.len;
    while (!this.awaiting && (this.phase === 'command' || this.phase === 'data' || this.phase === 'chunk')) {
      if (this.phase === 'chunk') {
        // The BDAT's reply comes only once its whole chunk was sent.
        if (len - this.pos < this.chunkSize) return;
        this.pos += this.chunkSize;
        this.scan = this.pos;
        this.phase = 'command';
        this.awaiting = this.chunkOf;
        this.chunkOf = null;
        return;
      }
      if (this.phase === 'data') {
        let end = -1;
        for (let k = Math.max(this.scan, this.dataStart); k + 3 <= len; k++) {
          if (
            buf[k] === 0x2e &&
            buf[k + 1] === CR &&
            buf[k + 2] === LF &&
            (k === this.dataStart || (k - 2 >= this.dataStart && buf[k - 2] === CR && buf[k - 1] === LF))
          ) {
            end = k + 3;
            break;
          }
        }
        if (end < 0) {
          this.scan = Math.max(this.dataStart, len - 3);
          return;
        }
        this.pos = end;
        this.scan = end;
        this.dataEnds++;
        this.awaiting = { kind: 'dataEnd', verb: '', text: '.', start: end };
        return;
      }
      // Command phase: find the end of the line starting at pos.
      let end = -1;
      let skip = 0;
      for (let i = this.scan; i < len; i++) {
        if (buf[i] === LF) {
          end = i;
          skip = 1;
          break;
        }
        if (buf[i] === CR) {
          if (i + 1 >= len) break;
          end = i;
          skip = buf[i + 1] === LF ? 2 : 1;
          break;
        }
      }
      if (end < 0) {
        this.scan = Math.max(this.pos, len - 1);
        // Overlong and unfinished: the server answers once now and skips to the line's end.
        if (!this.discarding && len - this.pos > MAX_LINE + 1) {
          this.discarding = true;
          this.lines++;
          this.awaiting = {
            kind: 'line',
            verb: '',
            text: `(overlong ${len - this.pos}+ octets)`,
            start: this.pos,
            ...(/^BDAT /i.test(buf.subarray(this.pos, this.pos + 5).toString('latin1')) ? { unusableBdat: true } : {}),
          };
        }
        return;
      }
      const start = this.pos;
      this.pos = end + skip;
      this.scan = this.pos;
      if (this.discarding) {
        this.discarding = false;
        continue;
      }
      this.lines++;
      const text = buf.subarray(start, end).toString('utf8');
      const sp = text.indexOf(' ');
      const verb = (sp < 0 ? text : text.slice(0, sp)).toUpperCase();
      const pending: Pending = {
        kind: 'line',
        verb: end - start > MAX_LINE ? '' : verb,
        text: end - start > 200 ? `${text.slice(0, 60)}…(${end - start} octets)` : text,
        start,
      };
      // A BDAT line: usable (not overlong, no NUL, a readable size) and its chunk follows, or 521.
      if (verb === 'BDAT' || (end - start > MAX_LINE && /^BDAT /i.test(text.slice(0, 5)))) {
        const size = sp > 0 ? /^(\d{1,15})( +LAST)? *$/i.exec(text.slice(sp + 1)) : null;
        if (end - start <= MAX_LINE && size && !text.includes('\0')) {
          const n = Number(size[1]);
          this.chunked += n;
          if (n > 1.5 * this.maxMessageSize) {
            pending.farTooLarge = 'must';
            this.awaiting = pending;
            continue;
          }
          if (this.chunked > 1.5 * this.maxMessageSize) pending.farTooLarge = 'may';
          if (size[2]) this.chunked = 0;
          this.phase = 'chunk';
          this.chunkOf = pending;
          this.chunkSize = n;
          continue;
        }
        pending.unusableBdat = true;
      }
      // Only RSET ends a transaction whatever its reply (MAIL, EHLO, STARTTLS may be refused): the
      // count may run over what the server kept, never under, so 'may' is never missed.
      if (verb === 'RSET') this.chunked = 0;
      this.awaiting = pending;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Running a session

export interface SessionResult {
  seed: number;
  violations: string[];
  lines: number;
  dataEnds: number;
  replies: number;
  bytes: number;
  tlsUpgrades: number;
  tlsSpoiled: boolean;
  /** The server closed after a STARTTLS we pipelined into, and our failed write lost its replies: the server's log must say the TLS handshake failed. */
  confirmTlsFailure: boolean;
  closedBy: 'server' | 'client' | 'timeout';
  rsetChecked: boolean;
  codes: Map<string, number>;
  mutations: string[];
}

class Conn {
  sock: net.Socket | tls.TLSSocket;
  readonly raw: net.Socket;
  readonly model: ReplyModel;
  private rbuf = '';
  private cur: string[] = [];
  closed = false;
  ourClose = false;
  /** The first socket error (a failed write after the server closed, typically). */
  error: string | null = null;
  private wakers: (() => void)[] = [];
  readonly onData = (d: Buffer) => this.receive(d);
  written = 0;

  constructor(port: number, host: string, localAddress?: string, maxMessageSize?: number) {
    this.model = new ReplyModel(maxMessageSize);
    this.raw = net.connect({ port, host, ...(localAddress ? { localAddress } : {}) });
    this.raw.setNoDelay(true);
    this.sock = this.raw;
    this.raw.on('data', this.onData);
    this.raw.on('error', (e: NodeJS.ErrnoException) => {
      this.error ??= e.code ?? e.message;
    });
    this.raw.once('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  connected(): Promise<boolean> {
    return new Promise((resolve) => {
      if (this.raw.readyState === 'open') {
        resolve(true);
        return;
      }
      this.raw.once('connect', () => resolve(true));
      this.raw.once('close', () => resolve(false));
    });
  }

  private wake(): void {
    for (const w of this.wakers.splice(0)) w();
  }

  private receive(d: Buffer): void {
    this.rbuf += d.toString('latin1');
    for (let nl = this.rbuf.indexOf('\r\n'); nl >= 0; nl = this.rbuf.indexOf('\r\n')) {
      const l = this.rbuf.slice(0, nl);
      this.rbuf = this.rbuf.slice(nl + 2);
      if (!/^\d{3}[ -]/.test(l) && l.length !== 3)
        this.model.violations.push(`malformed reply line ${JSON.stringify(l.slice(0, 80))}`);
      if (this.cur.length && l.slice(0, 3) !== this.cur[0].slice(0, 3))
        this.model.violations.push(
          `multi-line reply changes code: ${JSON.stringify(this.cur[0])} then ${JSON.stringify(l)}`,
        );
      this.cur.push(l);
      if (l[3] !== '-') {
        const lines = this.cur;
        this.cur = [];
        this.model.reply({
          code: Number(lines[0].slice(0, 3)),
          lines: lines.map((x) => Buffer.from(x, 'latin1').toString('utf8')),
        });
      }
    }
    this.wake();
  }

  /** Wait until `pred` holds or `ms` pass; returns whether it holds. */
  async until(pred: () => boolean, ms: number): Promise<boolean> {
    const end = Date.now() + ms;
    while (!pred()) {
      const left = end - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 250));
        this.wakers.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return true;
  }

  get stopWriting(): boolean {
    return this.closed || this.model.phase === 'tls' || this.model.phase === 'closing';
  }

  /** Write `bytes` in pieces of `frag` (0: whole), yielding between pieces; stops early when the server said 220 to STARTTLS or is closing. */
  async write(bytes: Buffer, frag: number): Promise<void> {
    const n = frag > 0 ? frag : bytes.length || 1;
    for (let off = 0; off < bytes.length; off += n) {
      if (this.stopWriting) return;
      const piece = bytes.subarray(off, off + n);
      this.model.sent(piece);
      this.written += piece.length;
      this.sock.write(piece);
      if (frag > 0) await new Promise<void>((r) => setImmediate(r));
      // Respect backpressure for big writes.
      if (this.sock.writableLength > 1 << 20)
        await this.until(() => this.closed || this.sock.writableLength < 1 << 18, 10_000);
    }
  }

  async upgrade(): Promise<boolean> {
    if (this.rbuf || this.cur.length)
      this.model.violations.push(`plaintext after 220 to STARTTLS: ${JSON.stringify(this.rbuf.slice(0, 80))}`);
    this.raw.removeListener('data', this.onData);
    const t = tls.connect({ socket: this.raw, rejectUnauthorized: false, servername: 'mx1.contoso.test' });
    t.on('error', () => {});
    const ok = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 10_000);
      t.once('secureConnect', () => {
        clearTimeout(timer);
        resolve(true);
      });
      t.once('error', () => {
        clearTimeout(timer);
        resolve(false);
      });
      t.once('close', () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
    if (!ok) {
      t.destroy();
      return false;
    }
    this.sock = t;
    t.on('data', this.onData);
    this.model.restartAfterTls();
    return true;
  }

  close(): void {
    this.ourClose = true;
    this.raw.destroy();
  }
}

export interface RunOptions {
  port: number;
  host: string;
  /** The gateway's smtp.maxMessageSize (a BDAT far over it is answered at once and ends the session). */
  maxMessageSize: number;
  replyTimeoutMs: number;
  sessionTimeoutMs: number;
  localAddress?: string;
}

export async function runSession(plan: SessionPlan, o: RunOptions): Promise<SessionResult> {
  const c = new Conn(o.port, o.host, o.localAddress, o.maxMessageSize);
  const m = c.model;
  const v = m.violations;
  let tlsUpgrades = 0;
  let tlsSpoiled = false;
  let rsetChecked = false;
  let timedOut = false;
  const deadline = Date.now() + o.sessionTimeoutMs;
  const left = () => Math.max(0, deadline - Date.now());

  const settle = async (what: string): Promise<boolean> => {
    const ok = await c.until(() => c.closed || m.idle || m.phase === 'tls', Math.min(o.replyTimeoutMs, left()));
    if (!ok) {
      if (!left()) timedOut = true;
      v.push(`no reply within ${o.replyTimeoutMs} ms (${what}); waiting for ${m.pendingText}`);
    }
    return ok;
  };
  /** After a 220 to STARTTLS: handshake; false ends the session. */
  const maybeTls = async (): Promise<boolean> => {
    if (m.phase !== 'tls' || c.closed) return !c.closed && m.phase !== 'closing';
    if (await c.upgrade()) {
      tlsUpgrades++;
      return true;
    }
    if (m.injected > 0) {
      tlsSpoiled = true;
      return false;
    } // our pipelined bytes reached the handshake: a fair close
    v.push('TLS handshake failed after a clean STARTTLS');
    return false;
  };

  const body = async () => {
    if (!(await c.connected())) {
      v.push('connection refused or reset before connect');
      return;
    }
    let steps = plan.steps;
    if (plan.pregreet && steps.length) {
      // Written the moment the connection exists: the server must refuse with 554 and close.
      c.model.sent(steps[0].bytes);
      c.written += steps[0].bytes.length;
      c.raw.write(steps[0].bytes);
      steps = steps.slice(1);
    }
    if (!(await settle('greeting'))) return;
    for (const st of steps) {
      if (!left()) {
        timedOut = true;
        return;
      }
      if (st.body && m.phase !== 'data') continue; // DATA was refused: a careful client keeps its message
      await c.write(st.bytes, plan.frag);
      // A client that sends STARTTLS waits for its answer before writing more.
      const hasTls = st.bytes.toString('utf8').toUpperCase().includes('STARTTLS');
      if (st.wait || hasTls || m.phase === 'tls')
        if (!(await settle(`after step of ${st.bytes.length} octets`))) return;
      if (!(await maybeTls())) return;
      if (c.closed || m.phase === 'closing') break;
    }
    if (!(await settle('end of plan'))) return;
    if (!(await maybeTls())) return;
    // Follow-up: finish an unfinished message or line, then RSET must still work.
    for (let k = 0; k < 4 && !c.closed && m.phase !== 'closing' && m.partial !== 'none'; k++) {
      // A BDAT chunk is completed with filler octets (one declared larger than 1 MiB is left: we close).
      if (m.partial === 'chunk' && m.chunkMissing > 1 << 20) return;
      const filler =
        m.partial === 'chunk'
          ? Buffer.alloc(m.chunkMissing, 'x')
          : Buffer.from(m.partial === 'data' ? '\r\n.\r\n' : '\r\n');
      await c.write(filler, 0);
      if (!(await settle(`completing ${m.partial}`))) return;
      if (!(await maybeTls())) return;
    }
    if (!c.closed && m.phase === 'command' && m.partial === 'none') {
      m.takeRset();
      await c.write(Buffer.from('RSET\r\n'), 0);
      if (!(await settle('follow-up RSET'))) return;
      const got = m.takeRset();
      if (got) {
        rsetChecked = true;
        if (got.code !== 250) v.push(`follow-up RSET got ${got.lines.join(' | ')}`);
      } else if (!c.closed && m.at() !== 'closing')
        v.push(`follow-up RSET got no reply of its own (last ${m.lastReply?.lines.join(' | ')})`);
      if (!c.closed && m.at() === 'command' && plan.quit) {
        await c.write(Buffer.from('QUIT\r\n'), 0);
        if (!(await settle('QUIT'))) return;
        if (m.at() !== 'closing') v.push(`QUIT did not end the session (last reply ${m.lastReply?.lines.join(' | ')})`);
      }
    }
  };
  const afterBody = async () => {
    if (m.phase === 'closing' && !c.closed && !timedOut) {
      // After 221/421 the server must close.
      if (!(await c.until(() => c.closed, 10_000)))
        v.push(`server did not close within 10 s after ${m.lastReply?.lines[0]}`);
    }
  };

  const runBody = body()
    .then(afterBody)
    .catch((e) => {
      v.push(`fuzzer error: ${(e as Error).stack ?? e}`);
    });
  let hard: NodeJS.Timeout | undefined;
  await Promise.race([
    runBody,
    new Promise<void>((r) => {
      hard = setTimeout(() => {
        timedOut = true;
        r();
      }, o.sessionTimeoutMs + 15_000);
    }),
  ]);
  clearTimeout(hard);
  const serverClosed = c.closed;
  // Replies lost with a close after a STARTTLS we pipelined into: accepted only once the server's
  // own log confirms the handshake failure (the caller checks `confirmTlsFailure`).
  let confirmTlsFailure = false;
  if (serverClosed && !tlsSpoiled && c.error && m.starttlsInFlight && m.phase !== 'closing') {
    tlsSpoiled = true;
    confirmTlsFailure = true;
  }
  // Closed by the server: only after 221/421 (or 554 before the greeting, or a spoiled TLS handshake).
  if (serverClosed && m.phase !== 'closing' && !tlsSpoiled) {
    v.push(
      `server closed the connection without 221/421 (phase ${m.phase}; waiting for ${m.pendingText}; last reply ${m.lastReply?.lines.join(' | ') ?? '(none)'})`,
    );
  }
  c.close();
  if (timedOut) v.push(`session exceeded ${o.sessionTimeoutMs} ms`);
  return {
    seed: plan.seed,
    violations: [...new Set(v)],
    lines: m.lines,
    dataEnds: m.dataEnds,
    replies: m.replies,
    bytes: c.written,
    tlsUpgrades,
    tlsSpoiled,
    confirmTlsFailure,
    closedBy: timedOut ? 'timeout' : serverClosed ? 'server' : 'client',
    rsetChecked,
    codes: m.codes,
    mutations: plan.mutations,
  };
}

/** A well-behaved probe: greeting, EHLO, QUIT. Returns an error text or null. */
export async function probe(port: number, host: string, timeoutMs = 10_000): Promise<string | null> {
  const c = new Conn(port, host);
  const code = () => c.model.lastReply?.code;
  const text = (): string | undefined => c.model.lastReply?.lines[0];
  try {
    if (!(await c.connected())) return 'connection refused';
    if (!(await c.until(() => c.model.idle || c.closed, timeoutMs))) return 'no greeting';
    if (code() !== 220) return `greeting ${text()}`;
    await c.write(Buffer.from('EHLO probe.test\r\n'), 0);
    if (!(await c.until(() => c.model.idle || c.closed, timeoutMs))) return 'no reply to EHLO';
    if (code() !== 250) return `EHLO got ${text()}`;
    await c.write(Buffer.from('QUIT\r\n'), 0);
    if (!(await c.until(() => c.model.idle || c.closed, timeoutMs))) return 'no reply to QUIT';
    if (code() !== 221) return `QUIT got ${text()}`;
    return null;
  } finally {
    c.close();
  }
}

/** Replay one session from its seed and print what was sent and received (debugging aid). */
export function describePlan(plan: SessionPlan): string {
  const show = (x: Buffer) =>
    JSON.stringify(
      x.length > 300
        ? `${x.subarray(0, 150).toString('latin1')}…(${x.length})…${x.subarray(-60).toString('latin1')}`
        : x.toString('latin1'),
    );
  return [
    `seed ${plan.seed} frag ${plan.frag} pregreet ${plan.pregreet} quit ${plan.quit} mutations ${plan.mutations.join(',') || '-'}`,
    ...plan.steps.map((s) => `  ${s.wait ? 'W' : '-'} ${show(s.bytes)}`),
  ].join('\n');
}
