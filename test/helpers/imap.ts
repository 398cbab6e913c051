// A minimal IMAP client for tests: tagged commands, untagged lines and literals kept as exact bytes
// (FETCH BODY[] returns the message octets as the server sent them).
import net from 'node:net';

export interface ImapResponse {
  /** Every line (untagged and the tagged status), literals cut out. */
  lines: string[];
  /** Literal octets in order of arrival. */
  literals: Buffer[];
  /** The tagged status line, e.g. "a2 OK Select completed". */
  status: string;
}

export class ImapClient {
  private buf = Buffer.alloc(0);
  private n = 0;
  private cur: { tag: string; res: ImapResponse; literalLeft: number; resolve: (r: ImapResponse) => void } | null =
    null;

  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.pump();
    });
    sock.on('error', () => {});
  }

  static connect(port: number, host: string): Promise<ImapClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, host, () => resolve(new ImapClient(s)));
      s.once('error', reject);
    });
  }

  private pump(): void {
    const c = this.cur;
    while (c) {
      if (c.literalLeft > 0) {
        if (this.buf.length < c.literalLeft) return;
        c.res.literals.push(Buffer.from(this.buf.subarray(0, c.literalLeft)));
        this.buf = this.buf.subarray(c.literalLeft);
        c.literalLeft = 0;
        continue;
      }
      const nl = this.buf.indexOf('\r\n');
      if (nl < 0) return;
      const line = this.buf.subarray(0, nl).toString('latin1');
      this.buf = this.buf.subarray(nl + 2);
      c.res.lines.push(line);
      const lit = /\{(\d+)\}$/.exec(line);
      if (lit) {
        c.literalLeft = Number(lit[1]);
        continue;
      }
      if (line.startsWith(`${c.tag} `)) {
        c.res.status = line;
        this.cur = null;
        c.resolve(c.res);
        return;
      }
    }
  }

  /** Send one command; resolves with everything up to its tagged status (bounded in time). */
  command(cmd: string, timeoutMs = 10_000): Promise<ImapResponse> {
    if (this.cur) throw new Error('one command at a time');
    const tag = `a${++this.n}`;
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () =>
          reject(
            new Error(
              `IMAP ${cmd}: no tagged reply within ${timeoutMs} ms; got ${JSON.stringify(this.cur?.res.lines.slice(-5))}`,
            ),
          ),
        timeoutMs,
      );
      this.cur = {
        tag,
        res: { lines: [], literals: [], status: '' },
        literalLeft: 0,
        resolve: (r) => {
          clearTimeout(t);
          resolve(r);
        },
      };
      this.sock.write(`${tag} ${cmd}\r\n`);
      this.pump();
    });
  }

  /** The command must answer OK. */
  async ok(cmd: string): Promise<ImapResponse> {
    const r = await this.command(cmd);
    if (!/^a\d+ OK/.test(r.status)) throw new Error(`IMAP ${cmd}: ${r.status}\n${r.lines.join('\n')}`);
    return r;
  }

  close(): void {
    this.sock.destroy();
  }
}
