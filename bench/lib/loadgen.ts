// A lean SMTP load generator for the receive benchmark: persistent STARTTLS sessions that send
// messages back to back, optionally pipelined (MAIL, RCPT… and DATA in one write, RFC 2920).
// Built directly on net/tls (no per-byte bookkeeping) so that it costs little CPU on the machine
// it shares with the gateway. Loopback addresses only.
import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';

export interface Reply {
  code: number;
  text: string;
}

export const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;

export function assertLoopback(host: string): void {
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)) throw new Error(`refusing non-loopback address ${host}`);
}

/** One SMTP connection: reply parser with a FIFO of waiters. */
export class LoadSession {
  private sock: net.Socket;
  private buf = '';
  private lines: string[] = [];
  private readonly queue: Reply[] = [];
  private readonly waiters: { resolve: (r: Reply) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }[] = [];
  private dead: Error | null = null;
  pipelining = false;

  private constructor(
    sock: net.Socket,
    private readonly timeoutMs: number,
  ) {
    this.sock = sock;
    this.attach(sock);
  }

  static connect(host: string, port: number, timeoutMs = 30_000): Promise<LoadSession> {
    assertLoopback(host);
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port, noDelay: true });
      const t = setTimeout(() => {
        s.destroy();
        reject(new Error('connect timeout'));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(t);
        s.off('error', reject);
        resolve(new LoadSession(s, timeoutMs));
      });
      s.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
    });
  }

  private attach(sock: net.Socket): void {
    sock.on('data', this.onData);
    sock.on('error', (e) => this.fail(e));
    sock.on('close', () => this.fail(new Error('connection closed')));
  }

  private readonly onData = (d: Buffer): void => {
    this.buf += d.toString('latin1');
    let nl: number;
    while ((nl = this.buf.indexOf('\r\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 2);
      this.lines.push(line);
      if (line.length < 4 || line[3] !== '-') {
        const r: Reply = { code: Number(line.slice(0, 3)), text: this.lines.join('\n') };
        this.lines = [];
        const w = this.waiters.shift();
        if (w) {
          clearTimeout(w.timer);
          w.resolve(r);
        } else this.queue.push(r);
      }
    }
  };

  private fail(e: Error): void {
    if (this.dead) return;
    this.dead = e;
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(e);
    }
  }

  read(): Promise<Reply> {
    const r = this.queue.shift();
    if (r) return Promise.resolve(r);
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.findIndex((w) => w.timer === timer);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no reply within ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.waiters.push({ resolve, reject, timer });
    });
  }

  write(data: string | Buffer): void {
    this.sock.write(data);
  }

  async expect(line: string, code: number): Promise<Reply> {
    this.write(`${line}\r\n`);
    const r = await this.read();
    if (r.code !== code) throw new Error(`${line}: expected ${code}, got ${r.text}`);
    return r;
  }

  /** Greeting, EHLO, STARTTLS (certificate verified against `ca`), EHLO. */
  async handshake(ehlo: string, servername: string, ca: string | Buffer): Promise<void> {
    const g = await this.read();
    if (g.code !== 220) throw new Error(`greeting: ${g.text}`);
    await this.expect(`EHLO ${ehlo}`, 250);
    await this.expect('STARTTLS', 220);
    const raw = this.sock;
    raw.removeListener('data', this.onData);
    this.buf = '';
    const t = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket: raw, servername, ca, rejectUnauthorized: true });
      s.once('secureConnect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });
    this.sock = t;
    this.attach(t);
    const e = await this.expect(`EHLO ${ehlo}`, 250);
    this.pipelining = /^250[- ]PIPELINING$/m.test(e.text);
  }

  /**
   * One transaction. `message` must be the dot-stuffed data including the final ".\r\n".
   * Returns the final reply (250 … queued as ID on success).
   */
  async transaction(from: string, rcpts: readonly string[], message: Buffer, pipelined: boolean): Promise<Reply> {
    if (pipelined) {
      let cmds = `MAIL FROM:<${from}>\r\n`;
      for (const r of rcpts) cmds += `RCPT TO:<${r}>\r\n`;
      this.write(cmds + 'DATA\r\n');
      const replies = await Promise.all(Array.from({ length: rcpts.length + 2 }, () => this.read()));
      const bad = replies.slice(0, -1).find((r) => r.code !== 250);
      const data = replies[replies.length - 1];
      if (bad || data.code !== 354) {
        if (data.code === 354) {
          this.write('.\r\n');
          await this.read();
        } // abort the data phase cleanly
        return bad ?? data;
      }
    } else {
      const steps: [string, number][] = [
        [`MAIL FROM:<${from}>`, 250],
        ...rcpts.map((r): [string, number] => [`RCPT TO:<${r}>`, 250]),
        ['DATA', 354],
      ];
      for (const [line, want] of steps) {
        this.write(`${line}\r\n`);
        const r = await this.read();
        if (r.code !== want) return r;
      }
    }
    this.write(message);
    return this.read();
  }

  quit(): void {
    try {
      this.sock.end('QUIT\r\n');
    } catch {
      /* already gone */
    }
    setTimeout(() => this.sock.destroy(), 1000).unref();
  }

  destroy(): void {
    this.sock.destroy();
  }
}

/** Time from TCP connect start to the 220 greeting, for `count` fresh sequential connections. */
export async function greetingLatencies(host: string, port: number, count: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = nowMs();
    const s = await LoadSession.connect(host, port, 10_000);
    const g = await s.read();
    out.push(nowMs() - t0);
    if (g.code !== 220) throw new Error(`greeting: ${g.text}`);
    s.quit();
  }
  return out;
}

/** Message factory: unique headers per message, shared random base64 body (no dot-stuffing needed). */
export class Messages {
  private readonly body: Buffer;
  private readonly runId = randomBytes(4).toString('hex');

  constructor(
    size: number,
    private readonly from: string,
  ) {
    const rnd = randomBytes(Math.ceil(size * 0.75) + 76).toString('base64');
    const lines: string[] = [];
    for (let n = 0, i = 0; n < size; i += 76) {
      const l = rnd.slice(i, i + 76);
      lines.push(l);
      n += l.length + 2;
    }
    this.body = Buffer.from(lines.join('\r\n') + '\r\n.\r\n');
  }

  make(seq: number, rcpts: readonly string[]): Buffer {
    const hdr =
      `From: Bench <${this.from}>\r\nTo: ${rcpts.map((r) => `<${r}>`).join(', ')}\r\n` +
      `Subject: receive bench ${this.runId} #${seq}\r\nDate: ${new Date().toUTCString()}\r\n` +
      `Message-ID: <${this.runId}.${seq}@bench.fabrikam.test>\r\nMIME-Version: 1.0\r\n` +
      'Content-Type: text/plain; charset=us-ascii\r\n\r\n';
    return Buffer.concat([Buffer.from(hdr, 'latin1'), this.body]);
  }
}

export interface LoadOptions {
  host: string;
  port: number;
  ca: string;
  servername: string;
  count: number;
  concurrency: number;
  pipelined: boolean;
  from: string;
  /** Recipients for message `seq`. */
  rcpts: (seq: number) => string[];
  /** The data for message `seq` (dot-stuffed, ending with ".\r\n"). */
  message: (seq: number, rcpts: readonly string[]) => Buffer;
  /** Abort when this wall-clock time (ms since epoch) has passed. */
  deadline: number;
  /** Failed transactions tolerated before the run is aborted. */
  maxFailures: number;
  /** Called once all sessions are ready, just before the first MAIL (snapshot counters here). */
  onStart?: () => void;
}

export interface LoadResult {
  accepted: number;
  failed: number;
  aborted: boolean;
  /** First MAIL written → last 250 received (ms). */
  windowMs: number;
  /** nowMs() of the first MAIL and of the last 250. */
  firstAt: number;
  lastAt: number;
  latencies: Float64Array;
  sessionsOpened: number;
  errors: Record<string, number>;
  rcptTotal: number;
}

/** Open `concurrency` sessions, then send `count` messages over them as fast as they are accepted. */
export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const sessions = await Promise.all(
    Array.from({ length: Math.min(o.concurrency, o.count) }, async () => {
      const s = await LoadSession.connect(o.host, o.port);
      await s.handshake('client.bench.fabrikam.test', o.servername, o.ca);
      if (o.pipelined && !s.pipelining) throw new Error('server does not offer PIPELINING');
      return s;
    }),
  );
  const lat = new Float64Array(o.count);
  let next = 0;
  let accepted = 0;
  let failed = 0;
  let aborted = false;
  let rcptTotal = 0;
  let first = 0;
  let last = 0;
  const errors: Record<string, number> = {};
  const retry: number[] = [];
  o.onStart?.();
  const worker = async (s: LoadSession) => {
    while (!aborted) {
      const seq = retry.length ? retry.shift()! : next < o.count ? next++ : -1;
      if (seq < 0) break;
      if (Date.now() > o.deadline) {
        aborted = true;
        break;
      }
      const rcpts = o.rcpts(seq);
      const msg = o.message(seq, rcpts);
      const t0 = nowMs();
      if (!first) first = t0;
      let r: Reply;
      try {
        r = await s.transaction(o.from, rcpts, msg, o.pipelined);
      } catch (e) {
        r = { code: 0, text: (e as Error).message };
      }
      if (r.code === 250) {
        const t1 = nowMs();
        lat[accepted++] = t1 - t0;
        rcptTotal += rcpts.length;
        last = t1;
        continue;
      }
      failed++;
      const k = r.text.split('\n')[0].slice(0, 100);
      errors[k] = (errors[k] ?? 0) + 1;
      retry.push(seq);
      if (failed > o.maxFailures) aborted = true;
      if (r.code === 0 || r.code === 421) break; // session is gone
    }
  };
  await Promise.all(sessions.map(worker));
  for (const s of sessions) s.quit();
  return {
    accepted,
    failed,
    aborted: aborted || accepted < o.count,
    windowMs: last - first,
    firstAt: first,
    lastAt: last,
    latencies: lat.subarray(0, accepted),
    sessionsOpened: sessions.length,
    errors,
    rcptTotal,
  };
}
