// Owns: the transfer encodings used to convert outbound content, quoted-printable (RFC 2045
// §6.7) and base64 (§6.8), and breaking the over-long lines of content that keeps its encoding.
// Promises: encoders output CRLF line endings only and lines of at most 76 octets, and decode to
// exactly the input octets (a CRLF in the input is a quoted-printable hard line break; a CR or
// LF alone is encoded). breakLines leaves no line over the limit and inserts only CRLF.

const HEX = Buffer.from('0123456789ABCDEF');
const CR = 13,
  LF = 10,
  SP = 32,
  HT = 9,
  EQ = 61,
  DASH = 45;

/** RFC 2045 §6.7 (5): encoded lines are at most 76 characters. */
export const QP_LINE = 76;

/**
 * Quoted-printable. Besides the rules of RFC 2045 §6.7: whitespace before a line break is
 * encoded, and a line that would start with "--" starts with "=2D" instead, so no encoded line
 * can ever be read as a multipart boundary delimiter.
 */
export function encodeQuotedPrintable(src: Buffer): Buffer {
  const n = src.length;
  const out = Buffer.allocUnsafe(Math.ceil(n * 3.2) + 16);
  let o = 0;
  let col = 0;
  for (let i = 0; i < n; i++) {
    const c = src[i];
    if (c === CR && src[i + 1] === LF) {
      out[o++] = CR;
      out[o++] = LF;
      col = 0;
      i++;
      continue;
    }
    const lineEnds = i + 1 === n || (src[i + 1] === CR && src[i + 2] === LF);
    let literal = c === SP || c === HT ? !lineEnds : c > 32 && c < 127 && c !== EQ;
    if (col + (literal ? 1 : 3) > (lineEnds ? QP_LINE : QP_LINE - 1)) {
      out[o++] = EQ;
      out[o++] = CR;
      out[o++] = LF;
      col = 0;
    }
    if (col === 0 && c === DASH && src[i + 1] === DASH) literal = false;
    if (literal) {
      out[o++] = c;
      col++;
      continue;
    }
    out[o++] = EQ;
    out[o++] = HEX[c >> 4];
    out[o++] = HEX[c & 15];
    col += 3;
  }
  return out.subarray(0, o);
}

/** Base64 in lines of 76 characters joined by CRLF (no line break after the last). */
export function encodeBase64(src: Buffer): Buffer {
  const b = Buffer.from(src.toString('base64'), 'latin1');
  if (b.length <= QP_LINE) return b;
  const out = Buffer.allocUnsafe(b.length + Math.ceil(b.length / QP_LINE) * 2);
  let o = 0;
  for (let i = 0; i < b.length; i += QP_LINE) {
    if (i) {
      out[o++] = CR;
      out[o++] = LF;
    }
    o += b.copy(out, o, i, Math.min(i + QP_LINE, b.length));
  }
  return out.subarray(0, o);
}

/**
 * How to break a line that is too long, by what the content is:
 *  - soft:  quoted-printable; a soft line break "=" CRLF, never inside an "=XX" escape (lossless)
 *  - crlf:  base64; CRLF alone (decoders ignore line breaks: lossless)
 *  - fold:  a header field; CRLF before a space or tab already there (lossless unfolding,
 *           RFC 5322 §2.2.3), else CRLF and a space as below
 *  - space: anything else; CRLF and a space, as Postfix's smtp_line_length_limit does: the
 *           continuation cannot be read as a header field, a boundary or the end of data
 */
export type BreakMode = 'soft' | 'crlf' | 'fold' | 'space';

const isWsp = (c: number) => c === SP || c === HT;

/**
 * Where to end the output line that holds buf[start, …) after `lead` inserted octets, and what
 * to insert there. The next line never starts with "--" (it could be read as a boundary
 * delimiter); a soft break never splits an "=XX" escape.
 */
function cut(
  buf: Buffer,
  start: number,
  lead: number,
  lineEnd: number,
  mode: BreakMode,
  limit: number,
): { at: number; insert: Buffer } {
  const room = limit - lead;
  if (mode === 'fold') {
    for (let k = start + room; k > start + 1; k--)
      if (k < lineEnd && isWsp(buf[k]) && !isWsp(buf[k - 1])) return { at: k, insert: CRLF };
  } else if (mode !== 'space') {
    const soft = mode === 'soft';
    for (let at = start + room - (soft ? 1 : 0); at > start; at--) {
      if (soft && (buf[at - 1] === EQ || (at - 2 >= start && buf[at - 2] === EQ))) continue;
      if (buf[at] === DASH && buf[at + 1] === DASH) continue;
      return { at, insert: soft ? SOFT : CRLF };
    }
  }
  return { at: start + room, insert: CRLF_SP };
}

const CRLF = Buffer.from('\r\n');
const SOFT = Buffer.from('=\r\n');
const CRLF_SP = Buffer.from('\r\n ');

/** Break every line of buf longer than `limit` octets (CRLF excluded); counts the lines broken. */
export function breakLines(buf: Buffer, mode: BreakMode, limit = 998): { data: Buffer; broken: number } {
  const out: Buffer[] = [];
  let copied = 0;
  let broken = 0;
  for (let pos = 0; pos < buf.length;) {
    let nl = buf.indexOf(LF, pos);
    if (nl < 0) nl = buf.length;
    const lineEnd = nl < buf.length && nl > pos && buf[nl - 1] === CR ? nl - 1 : nl;
    if (lineEnd - pos > limit) {
      broken++;
      let start = pos;
      let lead = 0;
      while (lineEnd - start + lead > limit) {
        const c = cut(buf, start, lead, lineEnd, mode, limit);
        out.push(buf.subarray(copied, c.at), c.insert);
        copied = start = c.at;
        lead = c.insert === CRLF_SP ? 1 : 0;
      }
    }
    pos = nl + 1;
  }
  if (!broken) return { data: buf, broken: 0 };
  out.push(buf.subarray(copied));
  return { data: Buffer.concat(out), broken };
}
