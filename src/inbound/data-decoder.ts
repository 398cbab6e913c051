// Owns: decoding the DATA phase byte stream (RFC 5321 §4.1.1.4, §4.5.2).
// Promises (the anti-smuggling contract):
//  - Only the exact octets CR LF "." CR LF end the data, where that first CR LF is a real CRLF
//    (or the start of data). A "." line ended or preceded by a bare CR or bare LF is content.
//  - Every bare CR and bare LF is written out as CRLF, so stored data has CRLF line endings only;
//    `bare` reports whether any were seen (for bareLineEndings: reject).
//  - Dot-stuffing is removed (a leading "." on a line is dropped).
//  - Memory is bounded: beyond maxSize nothing more is kept (sizeExceeded is set), and what is kept
//    costs about its size: runs shorter than SMALL octets (the pieces around bare line endings and
//    stuffing dots, one-octet BDAT chunks) are copied together into blocks (up to BLOCK octets), where a
//    slice each would cost a Buffer object and pin the whole read it came from; so are longer runs
//    that are less than a quarter of their read (BDAT chunks of a few hundred octets among
//    pipelined commands: kept as slices, each held a 64 KiB read, 256 times the message size).
//  - `longestLine` is the longest decoded line in octets, CRLF excluded (measured in the same
//    pass, so delivery knows about lines over 998 octets without scanning the message again).
// Chunked mode (BDAT, RFC 3030; `dots` false): the same decoding of line endings and the same
// measures, but a "." is content wherever it stands and nothing in the bytes ends the data: the
// chunk sizes do. finish() then ends the last line (a bare CR becomes CRLF; a last line without
// an ending gets a CRLF, as a message's lines all end in one).

import { isAscii } from 'node:buffer';

const CR = 13,
  LF = 10,
  DOT = 46;
const CRLF = Buffer.from('\r\n');
const DOTBUF = Buffer.from('.');
/** Runs shorter than this are copied into a block instead of kept as slices of the input. */
const SMALL = 256;
const BLOCK = 16 * 1024;

const enum St {
  Normal,
  Cr,
  Dot,
  DotCr,
}

export interface DecodedData {
  chunks: Buffer[];
  size: number;
  headerSize: number;
  sizeExceeded: boolean;
  headerExceeded: boolean;
  bare: boolean;
  nul: boolean;
  eightBit: boolean;
  longestLine: number;
}

export class DataDecoder {
  private st = St.Normal;
  private lineStart = true;
  private afterRealCrlf = true;
  private lineLen = 0;
  private inHeader = true;
  /** The block small runs are copied into: octets start..used not yet in out.chunks. */
  private block: Buffer | null = null;
  private blockStart = 0;
  private blockUsed = 0;
  private readonly out: DecodedData = {
    chunks: [],
    size: 0,
    headerSize: 0,
    sizeExceeded: false,
    headerExceeded: false,
    bare: false,
    nul: false,
    eightBit: false,
    longestLine: 0,
  };

  constructor(
    private readonly maxSize: number,
    private readonly maxHeaderSize: number,
    /** DATA (true): dot-stuffing and the CRLF "." CRLF terminator; BDAT chunks (false): neither. */
    private readonly dots = true,
  ) {}

  private emit(b: Buffer): void {
    if (b.length === 0) return;
    if (this.inHeader) {
      this.out.headerSize += b.length;
      if (this.out.headerSize > this.maxHeaderSize) this.out.headerExceeded = true;
    }
    this.out.size += b.length;
    if (this.out.size > this.maxSize) {
      this.out.sizeExceeded = true;
      return;
    }
    if (this.out.sizeExceeded) return;
    if (b.length >= SMALL && b.length * 4 >= b.buffer.byteLength) {
      this.seal();
      this.out.chunks.push(b);
      return;
    }
    if (!this.block || this.blockUsed + b.length > this.block.length) {
      this.seal();
      // 1 KiB first (most messages copy a few short runs, if any), doubling up to BLOCK.
      this.block = Buffer.allocUnsafe(this.block ? Math.min(BLOCK, this.block.length * 2) : 1024);
      this.blockStart = this.blockUsed = 0;
    }
    b.copy(this.block, this.blockUsed);
    this.blockUsed += b.length;
  }

  /** Put the block's copied octets not yet in out.chunks there (keeping the order of the data). */
  private seal(): void {
    if (!this.block || this.blockUsed === this.blockStart) return;
    this.out.chunks.push(this.block.subarray(this.blockStart, this.blockUsed));
    this.blockStart = this.blockUsed;
  }

  /** A line ended (its CRLF not emitted here). */
  private line(real: boolean): void {
    if (this.inHeader && this.lineLen === 0) this.inHeader = false; // the empty line ends the header block
    if (this.lineLen > this.out.longestLine) this.out.longestLine = this.lineLen;
    this.lineStart = true;
    this.afterRealCrlf = real;
    this.lineLen = 0;
    if (!real) this.out.bare = true;
  }

  /** A line ended whose CRLF is not in the input as such (a bare CR or LF, or split between chunks). */
  private eol(real: boolean): void {
    this.line(real);
    this.emit(CRLF);
  }

  /**
   * Feed bytes. Returns the offset just past the terminating "." CRLF when the data ended in
   * this chunk, or -1 when more is needed. Bytes after the returned offset belong to the next
   * command (pipelining). Verbatim runs, real CRLFs included, are kept as slices of `buf`: a
   * message without dot-stuffing or bare line endings comes out in as many chunks as it came in.
   */
  feed(buf: Buffer): number {
    let run = 0; // start of the pending verbatim run in buf
    const n = buf.length;
    // The next CR and LF at or after i (n: none), found by native searches and kept until passed.
    let cr = -1;
    let lf = -1;
    let k: number;
    for (let i = 0; i < n; i++) {
      const c = buf[i];
      switch (this.st) {
        case St.Normal:
          if (c === CR && i + 1 < n && buf[i + 1] === LF) {
            // A real CRLF, kept in the run; the empty line's is not part of the header section.
            if (this.inHeader && this.lineLen === 0) {
              this.emit(buf.subarray(run, i));
              run = i;
            }
            this.line(true);
            i++;
          } else if (c === CR) {
            this.emit(buf.subarray(run, i));
            this.st = St.Cr;
            run = i + 1;
          } else if (c === LF) {
            this.emit(buf.subarray(run, i));
            this.eol(false);
            run = i + 1;
          } else if (c === DOT && this.lineStart && this.dots) {
            this.emit(buf.subarray(run, i));
            this.st = St.Dot;
            this.lineStart = false;
            run = i + 1;
          } else {
            // Text: on to the line's end at once (NUL and 8-bit octets are looked for in measure()).
            if (cr < i) cr = (k = buf.indexOf(CR, i)) < 0 ? n : k;
            if (lf < i) lf = (k = buf.indexOf(LF, i)) < 0 ? n : k;
            const j = cr < lf ? cr : lf;
            this.lineStart = false;
            this.lineLen += j - i;
            i = j - 1;
          }
          break;
        case St.Cr:
          this.st = St.Normal;
          if (c === LF) {
            this.eol(true);
            run = i + 1;
          } else {
            this.eol(false);
            run = i;
            i--;
          }
          break;
        case St.Dot:
          if (c === CR) {
            this.st = St.DotCr;
            run = i + 1;
          } else if (c === LF) {
            // ".\n": a bare LF; content line "."
            this.st = St.Normal;
            this.emit(DOTBUF);
            this.lineLen = 1;
            this.eol(false);
            run = i + 1;
          } else {
            // Dot-stuffed line: the leading dot is dropped; reprocess c as ordinary text.
            this.st = St.Normal;
            run = i;
            i--;
          }
          break;
        case St.DotCr:
          this.st = St.Normal;
          if (c === LF && this.afterRealCrlf) {
            this.measure(buf, i + 1);
            return i + 1; // CR LF . CR LF: end of data
          }
          this.emit(DOTBUF);
          this.lineLen = 1;
          if (c === LF) {
            this.eol(true);
            run = i + 1;
            this.out.bare = true;
          } else {
            this.eol(false);
            run = i;
            i--;
          }
          break;
      }
    }
    if (this.st === St.Normal) this.emit(buf.subarray(run, n));
    this.measure(buf, n);
    return -1;
  }

  /**
   * NUL and 8-bit octets among the first `end` octets of buf: all of them data (the stuffing dots
   * and line endings it drops or rewrites are neither).
   */
  private measure(buf: Buffer, end: number): void {
    const b = end === buf.length ? buf : buf.subarray(0, end);
    if (!this.out.nul && b.indexOf(0) >= 0) this.out.nul = true;
    if (!this.out.eightBit && !isAscii(b)) this.out.eightBit = true;
  }

  /** Chunked mode: the data is complete (BDAT LAST); end its last line. */
  finish(): void {
    if (this.st === St.Cr) {
      this.st = St.Normal;
      this.eol(false);
    } else if (this.lineLen > 0) this.eol(true);
  }

  /** Octets of data so far (without putting copied runs into the result, as result() does). */
  get size(): number {
    return this.out.size;
  }

  result(): DecodedData {
    this.seal();
    return this.out;
  }
}
