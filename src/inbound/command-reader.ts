// Owns: splitting the command-phase byte stream into lines (RFC 5321 §2.3.8, §4.5.3.1.4).
// Promise: memory is bounded by maxLine; an overlong line is reported once and skipped to its end.
// A partial line left waiting for the rest is copied out of the read it came in when that read is
// much larger (a socket read is up to 64 KiB: an idle session must not keep one for a few octets).
// A line ends at LF (CRLF or bare LF) or at a bare CR; `bare` says whether the ending was bare
// (RFC 5321 §2.3.8 recognises only CRLF: the session refuses or normalises bare endings).
// An overlong line is reported with its first HEAD octets (the session must know a BDAT's).

const CR = 13,
  LF = 10;
const EMPTY = Buffer.alloc(0);
/** Octets of an overlong line reported with it (latin1). */
export const HEAD = 5;

export type Line = { kind: 'line'; text: string; bare: boolean; nul: boolean } | { kind: 'tooLong'; head: string };

export class CommandReader {
  private buf: Buffer = EMPTY;
  private discarding = false;

  constructor(private readonly maxLine: number) {}

  push(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
  }

  get pending(): number {
    return this.buf.length;
  }

  /** Remaining unread bytes (handed to the DATA decoder, or discarded on STARTTLS). */
  take(): Buffer {
    const b = this.buf;
    this.buf = EMPTY;
    return b;
  }

  /** No whole line yet: keep the rest, in a buffer of its own when its read is much larger. */
  private waiting(): null {
    const b = this.buf;
    if (b.length && b.length * 4 < b.buffer.byteLength) this.buf = Buffer.from(b);
    return null;
  }

  next(): Line | null {
    for (;;) {
      const b = this.buf;
      let end = -1;
      let skip = 0;
      let bare = false;
      const limit = Math.min(b.length, this.maxLine + 2);
      for (let i = 0; i < limit; i++) {
        const c = b[i];
        if (c === LF) {
          end = i;
          skip = 1;
          bare = true;
          break;
        }
        if (c === CR) {
          if (i + 1 >= b.length) break; // need the next byte to tell
          if (b[i + 1] === LF) {
            end = i;
            skip = 2;
            break;
          }
          end = i;
          skip = 1;
          bare = true;
          break; // bare CR
        }
      }
      if (end < 0) {
        if (b.length > this.maxLine + 1) {
          // Overlong: drop this line up to its end (LF, CRLF or bare CR, as above), or all we have
          // (but a final CR, which the next byte decides) and keep dropping until it ends.
          let cut = b.length;
          let ended = false;
          for (let i = Math.min(limit, b.length - 1); i < b.length; i++) {
            if (b[i] === LF) {
              cut = i + 1;
              ended = true;
              break;
            }
            if (b[i] === CR) {
              if (i + 1 >= b.length) {
                cut = i;
                break;
              }
              cut = b[i + 1] === LF ? i + 2 : i + 1;
              ended = true;
              break;
            }
          }
          this.buf = b.subarray(cut);
          const first = !this.discarding;
          this.discarding = !ended;
          if (first) return { kind: 'tooLong', head: b.subarray(0, HEAD).toString('latin1') };
          if (!ended) return this.waiting();
          continue;
        }
        return this.waiting();
      }
      const raw = b.subarray(0, end);
      this.buf = b.subarray(end + skip);
      if (this.discarding) {
        this.discarding = false;
        continue;
      }
      if (raw.length > this.maxLine) return { kind: 'tooLong', head: raw.subarray(0, HEAD).toString('latin1') };
      return { kind: 'line', text: raw.toString('utf8'), bare, nul: raw.includes(0) };
    }
  }
}
