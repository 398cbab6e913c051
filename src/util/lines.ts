// Owns: the SMTP line-length limit and measuring lines of message data (one definition, used
// at ingest to record the longest line and at delivery for messages stored without it).
// Promises: pure functions, one pass over the bytes (native LF search), no allocation.

/** The data ends with a line break (CRLF), as message data sent over SMTP must. */
export const endsWithCrlf = (b: Buffer): boolean => b.length >= 2 && b[b.length - 2] === 13 && b[b.length - 1] === 10;

/** RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF. */
export const MAX_LINE = 998;

/** Length in octets of the longest line of data[start, end), line ending (CRLF or LF) excluded. */
export function longestLine(data: Buffer, start = 0, end = data.length): number {
  let max = 0;
  let from = start;
  while (from < end) {
    let nl = data.indexOf(10, from);
    if (nl < 0 || nl >= end) nl = end;
    const len = nl - from - (nl < end && nl > from && data[nl - 1] === 13 ? 1 : 0);
    if (len > max) max = len;
    from = nl + 1;
  }
  return max;
}

/** Whether data[start, end) has a line longer than `limit` octets (stops at the first). */
export function hasLongLine(data: Buffer, start = 0, end = data.length, limit = MAX_LINE): boolean {
  let from = start;
  while (from < end) {
    if (end - from <= limit) return false;
    let nl = data.indexOf(10, from);
    if (nl < 0 || nl >= end) nl = end;
    if (nl - from - (nl < end && nl > from && data[nl - 1] === 13 ? 1 : 0) > limit) return true;
    from = nl + 1;
  }
  return false;
}
