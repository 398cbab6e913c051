// Test oracles for MIME content, written independently of src/: a strict quoted-printable
// decoder (RFC 2045 §6.7), line-length and 8-bit checks, and a header/body splitter.

/** Decode quoted-printable; throws on anything the encoder must never produce. */
export function decodeQp(text: Buffer | string): Buffer {
  const s = Buffer.isBuffer(text) ? text.toString('latin1') : text;
  const out: number[] = [];
  const lines = s.split('\r\n');
  lines.forEach((line, li) => {
    if (/[\r\n]/.test(line)) throw new Error(`bare CR or LF in quoted-printable line ${li}`);
    if (/[ \t]$/.test(line))
      throw new Error(`trailing whitespace in quoted-printable line ${li}: ${JSON.stringify(line)}`);
    let soft = false;
    for (let i = 0; i < line.length; i++) {
      const c = line.charCodeAt(i);
      if (c === 0x3d) {
        if (i === line.length - 1) {
          soft = true;
          break;
        }
        const hex = line.slice(i + 1, i + 3);
        if (!/^[0-9A-F]{2}$/.test(hex)) throw new Error(`bad escape "=${hex}" in line ${li}`);
        out.push(parseInt(hex, 16));
        i += 2;
      } else if (c > 126 || (c < 32 && c !== 9)) {
        throw new Error(`literal octet ${c} in quoted-printable line ${li}`);
      } else out.push(c);
    }
    if (!soft && li < lines.length - 1) out.push(13, 10);
  });
  return Buffer.from(out);
}

/** Lengths of the lines of CRLF text, CRLF excluded. */
export function lineLengths(data: Buffer | string): number[] {
  const s = Buffer.isBuffer(data) ? data.toString('latin1') : data;
  return s.split('\r\n').map((l) => l.length);
}

export const has8bit = (data: Buffer | string): boolean =>
  /[\x80-\xff]/.test(Buffer.isBuffer(data) ? data.toString('latin1') : data);

/** Whether the text has a CR or LF that is not part of a CRLF pair. */
export const hasBareCrLf = (data: Buffer | string): boolean =>
  /[\r\n]/.test((Buffer.isBuffer(data) ? data.toString('latin1') : data).replace(/\r\n/g, ''));

/** Split a message (latin1 string) at the first empty line. */
export function splitMessage(s: string): { head: string; body: string } {
  const i = s.indexOf('\r\n\r\n');
  return i < 0 ? { head: s, body: '' } : { head: s.slice(0, i + 2), body: s.slice(i + 4) };
}
