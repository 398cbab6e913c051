// A raw SMTP test client: exact bytes out, whole replies in (multi-line aware), STARTTLS upgrade.
import net from 'node:net';
import tls from 'node:tls';

export interface Reply {
  code: number;
  lines: string[];
  text: string;
}

export class SmtpClient {
  sock: net.Socket;
  private buf = '';
  private replies: Reply[] = [];
  private waiting: ((r: Reply | null) => void)[] = [];
  closed = false;
  readonly closedPromise: Promise<void>;
  /** Every byte received, as text (for assertions about unexpected replies). */
  received = '';

  private constructor(sock: net.Socket) {
    this.sock = sock;
    this.closedPromise = new Promise((resolve) => {
      this.attach(sock, resolve);
    });
  }

  private attach(sock: net.Socket, onClose?: () => void): void {
    sock.on('data', (d: Buffer) => this.onData(d.toString('latin1')));
    sock.on('error', () => {});
    if (onClose)
      sock.on('close', () => {
        this.closed = true;
        for (const w of this.waiting.splice(0)) w(null);
        onClose();
      });
  }

  static connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<SmtpClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host, ...(localAddress ? { localAddress } : {}) });
      s.once('connect', () => resolve(new SmtpClient(s)));
      s.once('error', reject);
    });
  }

  private onData(s: string): void {
    this.received += s;
    this.buf += s;
    let cur: string[] = [];
    for (;;) {
      const nl = this.buf.indexOf('\r\n');
      if (nl < 0) break;
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 2);
      cur.push(line);
      if (line.length < 4 || line[3] !== '-') {
        const r: Reply = { code: Number(line.slice(0, 3)), lines: cur, text: cur.join('\n') };
        cur = [];
        const w = this.waiting.shift();
        if (w) w(r);
        else this.replies.push(r);
      }
    }
    if (cur.length) this.buf = cur.map((l) => l + '\r\n').join('') + this.buf;
  }

  /** Next reply; rejects on timeout; resolves null when the connection closed. */
  read(timeoutMs = 10_000): Promise<Reply | null> {
    const r = this.replies.shift();
    if (r) return Promise.resolve(r);
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () =>
          reject(
            new Error(`no reply within ${timeoutMs} ms; received so far: ${JSON.stringify(this.received.slice(-300))}`),
          ),
        timeoutMs,
      );
      this.waiting.push((x) => {
        clearTimeout(t);
        resolve(x);
      });
    });
  }

  /** Replies already received and not yet read. */
  get unread(): number {
    return this.replies.length;
  }

  write(data: string | Buffer): void {
    this.sock.write(data);
  }

  async cmd(line: string, timeoutMs?: number): Promise<Reply> {
    this.write(line + '\r\n');
    const r = await this.read(timeoutMs);
    if (!r) throw new Error(`connection closed after ${JSON.stringify(line)}`);
    return r;
  }

  async expect(line: string, code: number): Promise<Reply> {
    const r = await this.cmd(line);
    if (r.code !== code) throw new Error(`${line}: expected ${code}, got ${r.text}`);
    return r;
  }

  /** STARTTLS and handshake; returns the TLS socket. */
  async starttls(opts: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
    await this.expect('STARTTLS', 220);
    return this.upgrade(opts);
  }

  upgrade(opts: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
    const raw = this.sock;
    raw.removeAllListeners('data');
    return new Promise((resolve, reject) => {
      const t = tls.connect({ socket: raw, rejectUnauthorized: false, ...opts });
      t.once('secureConnect', () => {
        this.sock = t;
        this.attach(t);
        resolve(t);
      });
      t.once('error', reject);
    });
  }

  close(): void {
    this.sock.destroy();
  }

  /** Greeting + EHLO; returns the EHLO reply. */
  async hello(name = 'client.test'): Promise<Reply> {
    const g = await this.read();
    if (!g || g.code !== 220) throw new Error(`bad greeting ${g?.text}`);
    return this.expect(`EHLO ${name}`, 250);
  }

  /** One complete transaction; returns the final reply to the data. */
  async send(from: string, to: string[], body: string): Promise<Reply> {
    await this.expect(`MAIL FROM:<${from}>`, 250);
    for (const r of to) await this.expect(`RCPT TO:<${r}>`, 250);
    await this.expect('DATA', 354);
    this.write(body.replace(/(^|\r\n)\./g, '$1..') + (body.endsWith('\r\n') ? '' : '\r\n') + '.\r\n');
    const r = await this.read();
    if (!r) throw new Error('closed after DATA');
    return r;
  }
}

/** Helper: a full STARTTLS session sending one message. */
export async function sendOverTls(
  port: number,
  from: string,
  to: string[],
  body: string,
  host = '127.0.0.1',
): Promise<Reply> {
  const c = await SmtpClient.connect(port, host);
  try {
    await c.hello();
    await c.starttls({ servername: 'mx1.contoso.test' });
    await c.expect('EHLO client.test', 250);
    return await c.send(from, to, body);
  } finally {
    c.write('QUIT\r\n');
    c.close();
  }
}
