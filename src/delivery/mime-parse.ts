// Owns: reading the MIME structure of stored message data: header blocks (RFC 5322 §2.2),
// Content-Type and Content-Transfer-Encoding (RFC 2045 §5, §6), multipart bodies split at their
// boundary delimiters (RFC 2046 §5.1.1). Everything is offsets into the buffer, so whatever is
// not changed can be copied byte for byte.
// Promises: never throws on malformed input: it reads it as a lenient reader (and Postfix) would
// (a line that is neither a header field nor a continuation ends the header block; a boundary
// delimiter is a line starting with "--" and the boundary; a missing close delimiter ends the
// last part at the end of the body). Work is linear in the bytes looked at; no copies.

export interface Field {
  /** The field name as written. */
  name: string;
  /** Offsets of the whole field, continuation lines included, up to and including its last CRLF. */
  start: number;
  end: number;
  /** Offset just past the colon. */
  valueStart: number;
}

export interface HeaderBlock {
  fields: Field[];
  /** End of the last field: where the empty line (if any) starts. */
  fieldsEnd: number;
  /** Where the body starts: after the empty line, or at the first line that is not a field. */
  bodyStart: number;
}

const SP = 32,
  HT = 9,
  CR = 13,
  LF = 10,
  COLON = 58;

/** Parse the header block at buf[start, end). */
export function parseHeaders(buf: Buffer, start: number, end: number): HeaderBlock {
  const fields: Field[] = [];
  let pos = start;
  while (pos < end) {
    let nl = buf.indexOf(LF, pos);
    if (nl < 0 || nl >= end) nl = end;
    const next = nl < end ? nl + 1 : end;
    const lineEnd = nl < end && nl > pos && buf[nl - 1] === CR ? nl - 1 : nl;
    if (lineEnd === pos && nl < end) return { fields, fieldsEnd: pos, bodyStart: next }; // the empty line
    const c = buf[pos];
    if ((c === SP || c === HT) && fields.length) {
      fields[fields.length - 1].end = next;
      pos = next;
      continue;
    }
    let i = pos;
    while (i < lineEnd && buf[i] > SP && buf[i] < 127 && buf[i] !== COLON) i++;
    let j = i;
    while (j < lineEnd && (buf[j] === SP || buf[j] === HT)) j++;
    if (i === pos || j >= lineEnd || buf[j] !== COLON) return { fields, fieldsEnd: pos, bodyStart: pos };
    fields.push({ name: buf.toString('latin1', pos, i), start: pos, end: next, valueStart: j + 1 });
    pos = next;
  }
  return { fields, fieldsEnd: end, bodyStart: end };
}

/** The unfolded value of the first field called `name` (case-insensitive), or undefined. */
export function fieldValue(buf: Buffer, h: HeaderBlock, name: string): string | undefined {
  const f = h.fields.find((x) => x.name.toLowerCase() === name);
  return f
    ? buf
        .toString('latin1', f.valueStart, f.end)
        .replace(/\r?\n(?=[ \t])/g, '')
        .trim()
    : undefined;
}

export interface ContentType {
  type: string;
  subtype: string;
  /** Parameter names lower-cased; values unquoted. */
  params: Map<string, string>;
}

const TSPECIALS = '()<>@,;:\\"/[]?=';

class Lexer {
  i = 0;
  constructor(private readonly s: string) {}
  get done(): boolean {
    return this.i >= this.s.length;
  }
  peek(): string {
    return this.s[this.i] ?? '';
  }
  /** Skip whitespace and (nested) comments. */
  cfws(): void {
    while (this.i < this.s.length) {
      const c = this.s[this.i];
      if (c === ' ' || c === '\t' || c === '\r' || c === '\n') {
        this.i++;
        continue;
      }
      if (c !== '(') return;
      let depth = 0;
      for (; this.i < this.s.length; this.i++) {
        const d = this.s[this.i];
        if (d === '\\') this.i++;
        else if (d === '(') depth++;
        else if (d === ')' && --depth === 0) {
          this.i++;
          break;
        }
      }
    }
  }
  token(): string {
    const from = this.i;
    while (this.i < this.s.length) {
      const c = this.s.charCodeAt(this.i);
      if (c <= 32 || c >= 127 || TSPECIALS.includes(this.s[this.i])) break;
      this.i++;
    }
    return this.s.slice(from, this.i);
  }
  quoted(): string {
    let out = '';
    for (this.i++; this.i < this.s.length; this.i++) {
      const c = this.s[this.i];
      if (c === '"') {
        this.i++;
        return out;
      }
      if (c === '\\' && this.i + 1 < this.s.length) this.i++;
      out += this.s[this.i];
    }
    return out;
  }
}

/** Parse a Content-Type value (RFC 2045 §5.1); undefined when type/subtype is unreadable. */
export function parseContentType(value: string): ContentType | undefined {
  const lx = new Lexer(value);
  lx.cfws();
  const type = lx.token().toLowerCase();
  lx.cfws();
  if (!type || lx.peek() !== '/') return undefined;
  lx.i++;
  lx.cfws();
  const subtype = lx.token().toLowerCase();
  if (!subtype) return undefined;
  const params = new Map<string, string>();
  for (let n = 0; n < 100; n++) {
    lx.cfws();
    if (lx.peek() !== ';') break;
    lx.i++;
    lx.cfws();
    const attr = lx.token().toLowerCase();
    lx.cfws();
    if (!attr || lx.peek() !== '=') continue;
    lx.i++;
    lx.cfws();
    const v = lx.peek() === '"' ? lx.quoted() : lx.token();
    if (!params.has(attr)) params.set(attr, v);
  }
  return { type, subtype, params };
}

/** The Content-Transfer-Encoding mechanism, lower-cased, comments removed (RFC 2045 §6.1). */
export function parseTransferEncoding(value: string): string {
  const lx = new Lexer(value);
  lx.cfws();
  return lx.token().toLowerCase();
}

export interface Range {
  start: number;
  end: number;
}

export interface Multipart {
  /** Before the first delimiter (its CRLF belongs to the delimiter); empty when the body starts with one. */
  preamble: Range;
  /** Each body part, without the CRLF that precedes the next delimiter. */
  parts: Range[];
  /** After the close delimiter line; null when there is none. */
  epilogue: Range | null;
}

/** Split buf[start, end) at the delimiter lines of `boundary`. */
export function splitMultipart(buf: Buffer, start: number, end: number, boundary: string): Multipart {
  const dash = Buffer.from(`--${boundary}`, 'latin1');
  const needle = Buffer.from(`\n--${boundary}`, 'latin1');
  const view = buf.subarray(0, end);
  /** Start of the first delimiter line at or after the line that starts at `from`; -1 if none. */
  const delimiterAt = (from: number): number => {
    if (
      from === start &&
      end - from >= dash.length &&
      buf.compare(dash, 0, dash.length, from, from + dash.length) === 0
    )
      return from;
    const i = view.indexOf(needle, Math.max(from - 1, start));
    return i < 0 ? -1 : i + 1;
  };
  /** Where the content before the delimiter line at `ls` ends (the CRLF belongs to the delimiter). */
  const before = (ls: number): number =>
    ls === start ? start : ls - 2 >= start && buf[ls - 2] === CR ? ls - 2 : ls - 1;
  let ls = delimiterAt(start);
  if (ls < 0) return { preamble: { start, end }, parts: [], epilogue: null };
  const preamble = { start, end: before(ls) };
  const parts: Range[] = [];
  for (;;) {
    const after = ls + dash.length;
    let nl = buf.indexOf(LF, after);
    if (nl >= end) nl = -1;
    if (end - after >= 2 && buf[after] === 45 && buf[after + 1] === 45) {
      return { preamble, parts, epilogue: nl < 0 ? null : { start: nl + 1, end } };
    }
    const partStart = nl < 0 ? end : nl + 1;
    const next = nl < 0 ? -1 : delimiterAt(partStart);
    if (next < 0) {
      parts.push({ start: partStart, end });
      return { preamble, parts, epilogue: null };
    }
    parts.push({ start: partStart, end: Math.max(partStart, before(next)) });
    ls = next;
  }
}
