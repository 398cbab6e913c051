// Owns: preparing a message's content for one peer: 8-bit MIME content converted to 7 bit for a
// peer without 8BITMIME (RFC 6152 §3, as Postfix does), and no line over 998 octets ever sent
// (RFC 5321 §4.5.3.1.6). It works on a copy for each delivery; the stored message never changes.
// Promises:
//  - The common case costs nothing: when the envelope says the message is 7-bit (or the peer
//    takes 8-bit) and its longest line (recorded at ingest) fits, the stored bytes are sent as
//    they are, without a look at them. Only messages stored before the longest line was recorded
//    are scanned (once per delivery).
//  - Whatever needs no change is copied byte for byte: a header block, a part, a whole subtree.
//  - 8-bit leaf parts (Content-Transfer-Encoding 7bit, 8bit or none) become quoted-printable,
//    binary ones base64; multipart and message/rfc822 entities are converted part by part and
//    their 8bit/binary label becomes 7bit. Both encodings decode to exactly the original octets.
//  - Lines over 998 octets: a 7bit/8bit part is re-encoded as quoted-printable; a header field is
//    folded at whitespace; an encoded part gets soft breaks (quoted-printable) or plain line
//    breaks (base64); anything else is broken with CRLF and a space, as Postfix does.
//  - What cannot be converted is refused with the reason, naming the place (8-bit octets in a
//    header field, in a multipart preamble or epilogue, in a message/* part other than
//    message/rfc822, in an already encoded part, or nested beyond MAX_DEPTH): delivery bounces
//    it with 5.6.3. Nothing is refused when the peer takes 8-bit: long lines are always fixed.
//  - The output has CRLF line endings only (given stored data, which has nothing else).
import { isAscii } from 'node:buffer';
import type { EnvelopeParams } from '../store/types.ts';
import { endsWithCrlf, hasLongLine, MAX_LINE } from '../util/lines.ts';
import { breakLines, encodeBase64, encodeQuotedPrintable, type BreakMode } from './mime-encode.ts';
import {
  fieldValue,
  parseContentType,
  parseHeaders,
  parseTransferEncoding,
  splitMultipart,
  type Range,
} from './mime-parse.ts';

/** Deeper MIME nesting is not converted (Postfix's mime_nesting_limit is 100; real mail uses < 10). */
export const MAX_DEPTH = 32;
/** More entities than this in one message are not converted one by one. */
export const MAX_ENTITIES = 10_000;

class Unconvertible extends Error {}

interface Counts {
  qp8: number;
  qpLong: number;
  base64: number;
  folded: number;
  broken: number;
  topLeaf: boolean;
}

interface Ctx {
  buf: Buffer;
  to7bit: boolean;
  entities: number;
  n: Counts;
}

interface Place {
  depth: number;
  /** IMAP-style part number ("" for the message itself, "2.1" …). */
  path: string;
  /** How the place is named in a refusal. */
  where: string;
  defaultType: 'text/plain' | 'message/rfc822';
}

const IDENTITY = new Set(['7bit', '8bit', 'binary']);

/** Whether `out` is exactly the bytes of buf[r] (nothing was changed). */
function untouched(c: Ctx, out: Buffer[], r: Range): boolean {
  return (
    out.length === 1 &&
    out[0].buffer === c.buf.buffer &&
    out[0].byteOffset === c.buf.byteOffset + r.start &&
    out[0].length === r.end - r.start
  );
}

function needsWork(c: Ctx, r: Range): boolean {
  if (r.end <= r.start) return false;
  return (c.to7bit && !isAscii(c.buf.subarray(r.start, r.end))) || hasLongLine(c.buf, r.start, r.end);
}

/** Content that cannot be re-encoded: refuse 8-bit octets, break long lines. */
function opaque(c: Ctx, r: Range, mode: BreakMode, what: string): Buffer[] {
  const b = c.buf.subarray(r.start, r.end);
  if (c.to7bit && !isAscii(b)) throw new Unconvertible(what);
  const { data, broken } = breakLines(b, mode);
  c.n.broken += broken;
  return [data];
}

interface BodyResult {
  out: Buffer[];
  changed: boolean;
  cte?: string;
  contentType?: string;
}

function leaf(c: Ctx, r: Range, cte: string, at: Place, typed: boolean): BodyResult {
  const b = c.buf.subarray(r.start, r.end);
  const eight = c.to7bit && !isAscii(b);
  const long = hasLongLine(c.buf, r.start, r.end);
  if (!eight && !long) return { out: [b], changed: false };
  if (at.path === '') c.n.topLeaf = true;
  if (cte === '7bit' || cte === '8bit') {
    if (eight) c.n.qp8++;
    else c.n.qpLong++;
    // RFC 1428: 8-bit text of no declared charset is labelled unknown-8bit, not us-ascii.
    const contentType =
      eight && !typed && at.defaultType === 'text/plain' ? 'text/plain; charset=unknown-8bit' : undefined;
    return {
      out: [encodeQuotedPrintable(b)],
      changed: true,
      cte: 'quoted-printable',
      ...(contentType ? { contentType } : {}),
    };
  }
  if (cte === 'binary') {
    c.n.base64++;
    // At the end of the data, the message still ends with a line break (after the encoded CRLF).
    const crlf = r.end === c.buf.length && endsWithCrlf(b);
    return { out: [encodeBase64(b), ...(crlf ? [Buffer.from('\r\n')] : [])], changed: true, cte: 'base64' };
  }
  const mode: BreakMode = cte === 'quoted-printable' ? 'soft' : cte === 'base64' ? 'crlf' : 'space';
  const what =
    cte === 'quoted-printable' || cte === 'base64'
      ? `8-bit octets in ${at.where}, which is declared ${cte}`
      : `8-bit octets in ${at.where}, which has the unknown transfer encoding "${cte}"`;
  return { out: opaque(c, r, mode, what), changed: true };
}

function multipart(c: Ctx, r: Range, boundary: string, subtype: string, at: Place): BodyResult {
  const mp = splitMultipart(c.buf, r.start, r.end, boundary);
  const out: Buffer[] = [];
  let changed = false;
  const text = (x: Range, what: string) => {
    if (!needsWork(c, x)) {
      out.push(c.buf.subarray(x.start, x.end));
      return;
    }
    out.push(...opaque(c, x, 'space', `8-bit octets in the ${what} of ${at.where}, which cannot be encoded`));
    changed = true;
  };
  text(mp.preamble, 'preamble');
  let last = mp.preamble.end;
  mp.parts.forEach((p, i) => {
    text({ start: last, end: p.start }, 'boundary lines');
    const path = at.path ? `${at.path}.${i + 1}` : `${i + 1}`;
    const part = entity(c, p, {
      depth: at.depth + 1,
      path,
      where: `MIME part ${path}`,
      defaultType: subtype === 'digest' ? 'message/rfc822' : 'text/plain',
    });
    if (!untouched(c, part, p)) changed = true;
    out.push(...part);
    last = p.end;
  });
  text({ start: last, end: mp.epilogue ? mp.epilogue.start : r.end }, 'boundary lines');
  if (mp.epilogue) text(mp.epilogue, 'epilogue');
  return { out, changed };
}

function body(
  c: Ctx,
  r: Range,
  type: string,
  params: Map<string, string>,
  cte: string,
  typed: boolean,
  at: Place,
): BodyResult {
  const major = type.slice(0, type.indexOf('/'));
  if (!needsWork(c, r)) return { out: [c.buf.subarray(r.start, r.end)], changed: false };
  if (IDENTITY.has(cte) && (major === 'multipart' || major === 'message')) {
    const boundary = params.get('boundary');
    const deep = at.depth >= MAX_DEPTH;
    let res: BodyResult;
    if (major === 'multipart' && boundary && !deep) res = multipart(c, r, boundary, type.slice(10), at);
    else if (type === 'message/rfc822' && !deep) {
      const path = at.path || '1';
      const inner = entity(c, r, {
        depth: at.depth + 1,
        path,
        where: `the message attached as MIME part ${path}`,
        defaultType: 'text/plain',
      });
      res = { out: inner, changed: !untouched(c, inner, r) };
    } else {
      const why = deep
        ? `MIME parts nested deeper than ${MAX_DEPTH} levels in ${at.where}`
        : major === 'multipart'
          ? `8-bit octets in ${at.where}, a ${type} without a boundary`
          : `8-bit octets in ${at.where} of type ${type}, which cannot be re-encoded (RFC 2046 §5.2)`;
      res = { out: opaque(c, r, 'space', why), changed: true };
    }
    // Every 8-bit octet inside was converted (or refused): the entity is 7bit now.
    if (c.to7bit && cte !== '7bit') res.cte = '7bit';
    return res;
  }
  return leaf(c, r, cte, at, typed);
}

/** One entity (header block and body) at buf[r.start, r.end): the bytes to send for it. */
function entity(c: Ctx, r: Range, at: Place): Buffer[] {
  const buf = c.buf;
  if (!needsWork(c, r)) return [buf.subarray(r.start, r.end)];
  if (++c.entities > MAX_ENTITIES) return opaque(c, r, 'space', `more than ${MAX_ENTITIES} MIME parts in the message`);
  const h = parseHeaders(buf, r.start, r.end);
  for (const f of h.fields) {
    if (c.to7bit && !isAscii(buf.subarray(f.start, f.end)))
      throw new Unconvertible(`8-bit octets in the "${f.name}" header of ${at.where}`);
  }
  const ctValue = fieldValue(buf, h, 'content-type');
  const ct = ctValue === undefined ? undefined : parseContentType(ctValue);
  const cteValue = fieldValue(buf, h, 'content-transfer-encoding');
  // Absent (or empty): 7bit, the default of RFC 2045 §6.1.
  const cte = (cteValue === undefined ? '' : parseTransferEncoding(cteValue)) || '7bit';
  const type = ct ? `${ct.type}/${ct.subtype}` : at.defaultType;
  const b = body(c, { start: h.bodyStart, end: r.end }, type, ct?.params ?? new Map(), cte, ctValue !== undefined, at);

  const head: Buffer[] = [];
  let headChanged = false;
  let cteWritten = false;
  for (const f of h.fields) {
    const name = f.name.toLowerCase();
    if (b.cte && name === 'content-transfer-encoding') {
      if (!cteWritten) head.push(Buffer.from(`Content-Transfer-Encoding: ${b.cte}\r\n`));
      cteWritten = true;
      headChanged = true;
      continue;
    }
    const { data, broken } = breakLines(buf.subarray(f.start, f.end), 'fold');
    c.n.folded += broken;
    if (broken) headChanged = true;
    head.push(data);
  }
  const added: string[] = [];
  if (b.cte && at.path === '' && !h.fields.some((f) => f.name.toLowerCase() === 'mime-version'))
    added.push('MIME-Version: 1.0');
  if (b.contentType && ctValue === undefined) added.push(`Content-Type: ${b.contentType}`);
  if (b.cte && !cteWritten) added.push(`Content-Transfer-Encoding: ${b.cte}`);
  if (added.length) {
    // Added fields go after the last one; a block that ended without an empty line gets one.
    const lastEnd = h.fields.length ? h.fields[h.fields.length - 1].end : r.start;
    const needsCrlf = lastEnd > r.start && buf[lastEnd - 1] !== 10;
    head.push(
      Buffer.from(
        (needsCrlf ? '\r\n' : '') +
          added.join('\r\n') +
          '\r\n' +
          (h.bodyStart === h.fieldsEnd && h.bodyStart < r.end ? '\r\n' : ''),
      ),
    );
    headChanged = true;
  }
  if (!headChanged && !b.changed) return [buf.subarray(r.start, r.end)];
  return [...head, buf.subarray(h.fieldsEnd, h.bodyStart), ...b.out];
}

export type Converted = { kind: 'converted'; data: Buffer; notes: string[] } | { kind: 'refused'; refused: string };

const parts = (n: number) => `${n} MIME part${n === 1 ? '' : 's'}`;
const lines = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;

function describe(n: Counts): string[] {
  const notes: string[] = [];
  if (n.qp8)
    notes.push(
      `converted 8-bit ${n.qp8 === 1 && n.topLeaf ? 'body' : `content of ${parts(n.qp8)}`} to quoted-printable ` +
        `for a peer without 8BITMIME`,
    );
  if (n.base64)
    notes.push(
      `converted ${n.base64 === 1 && n.topLeaf ? 'the binary body' : lines(n.base64, 'binary MIME part')} to base64`,
    );
  if (n.qpLong)
    notes.push(
      `re-encoded ${n.qpLong === 1 && n.topLeaf ? 'the body' : parts(n.qpLong)} as quoted-printable to keep lines ` +
        `within ${MAX_LINE} octets`,
    );
  if (n.folded) notes.push(`folded ${lines(n.folded, 'header line')} longer than ${MAX_LINE} octets`);
  if (n.broken) notes.push(`broke ${lines(n.broken, 'line')} longer than ${MAX_LINE} octets`);
  return notes;
}

/**
 * Convert message data for a peer: to 7 bit when `to7bit`, and always to lines of at most 998
 * octets. Returns the data (the input itself when nothing changed) and what was done, or why
 * the message cannot be converted. The input is never modified.
 */
export function convertForPeer(data: Buffer, to7bit: boolean): Converted {
  const c: Ctx = {
    buf: data,
    to7bit,
    entities: 0,
    n: { qp8: 0, qpLong: 0, base64: 0, folded: 0, broken: 0, topLeaf: false },
  };
  let out: Buffer[];
  try {
    out = entity(
      c,
      { start: 0, end: data.length },
      { depth: 0, path: '', where: 'the message', defaultType: 'text/plain' },
    );
  } catch (e) {
    if (e instanceof Unconvertible) return { kind: 'refused', refused: e.message };
    throw e;
  }
  if (untouched(c, out, { start: 0, end: data.length })) return { kind: 'converted', data, notes: [] };
  return { kind: 'converted', data: Buffer.concat(out), notes: describe(c.n) };
}

export type PeerContent = { kind: 'ready'; data: Buffer; conversion?: string } | { kind: 'refused'; refused: string };

/**
 * One message's content for the peers of a delivery: the stored bytes, or a converted copy
 * (made at most once for peers with 8BITMIME and once for peers without).
 */
export class OutboundContent {
  private long: boolean | undefined;
  private readonly made = new Map<boolean, PeerContent>();

  constructor(
    private readonly data: Buffer,
    private readonly envelope: EnvelopeParams,
  ) {}

  forPeer(peerHas8BitMime: boolean): PeerContent {
    const to7bit = this.envelope.body === '8BITMIME' && !peerHas8BitMime;
    if (!to7bit && !this.hasLongLines()) return { kind: 'ready', data: this.data };
    let r = this.made.get(to7bit);
    if (!r) {
      const conv = convertForPeer(this.data, to7bit);
      r =
        conv.kind === 'refused'
          ? conv
          : { kind: 'ready', data: conv.data, ...(conv.notes.length ? { conversion: conv.notes.join('; ') } : {}) };
      this.made.set(to7bit, r);
    }
    return r;
  }

  private hasLongLines(): boolean {
    this.long ??=
      this.envelope.longestLine === undefined ? hasLongLine(this.data) : this.envelope.longestLine > MAX_LINE;
    return this.long;
  }
}
