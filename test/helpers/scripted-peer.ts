// A scripted SMTP server for unit tests of the client side (in the spirit of mox's smtpclient
// tests): per connection, a list of the lines the client must send and the replies to give. Any
// other line fails the script (the peer answers "500 unexpected" and closes), and `done` rejects
// saying what came instead. Listens on a loopback address of its own; every wait is bounded.
import net from 'node:net';
import tls from 'node:tls';

export type Step =
  /** Send raw text (e.g. the greeting "220 ..."); a line without CRLF gets one. */
  | { send: string }
  /**
   * Expect these lines (a string: exactly; a RegExp: matching), then send the replies. With several
   * lines, nothing is answered before all of them arrived (a client that does not pipeline stalls).
   */
  | { expect: string | RegExp | (string | RegExp)[]; reply?: string | string[] }
  /**
   * Expect message data up to CRLF.CRLF (raw, still dot-stuffed; checked when given), then reply
   * (without `reply`, the next steps answer: e.g. a wait, then a send).
   * `pace`: read slowly, stopping `pace` ms after each chunk the socket delivers (at most 64 KiB),
   * so that a large message backs up in the kernel buffers and the client can only write as fast
   * as it is read.
   */
  | { data: string | ((raw: string) => boolean) | true; reply?: string; pace?: number }
  /**
   * Expect `BDAT <size> LAST` (RFC 3030) and its `size` octets of message data, taken as they are
   * (checked when given), then send the replies (those to the pipelined MAIL and RCPT first).
   */
  | { bdat: string | true; reply?: string | string[] }
  /**
   * After the 220 to STARTTLS: the TLS handshake. (To inject a response, put it in the same reply
   * as the 220, "220 go\r\n250 injected": an attacker's bytes arrive with it.)
   */
  | { tls: { cert: string; key: string } }
  /** Wait (a bounded time) before the next step, e.g. to let a client time out. */
  | { wait: number }
  /** Close the connection (the client sees "closed by the peer"). */
  | { close: true };

export interface ScriptedPeer {
  host: string;
  port: number;
  /** Resolves when every connection's script ran to its end; rejects on the first deviation. */
  done: Promise<void>;
  /** What both sides said ("C: …", "S: …"), across connections. */
  transcript: string[];
  connections: number;
  close(): Promise<void>;
}

const WAIT_MAX_MS = 10_000;

/** One script per expected connection, in order; an extra connection fails the script. */
export async function scriptedPeer(scripts: Step[][], host = '127.0.0.1', port = 0): Promise<ScriptedPeer> {
  const sockets = new Set<net.Socket>();
  let finished = 0;
  let settle!: { resolve: () => void; reject: (e: Error) => void };
  const done = new Promise<void>((resolve, reject) => {
    settle = { resolve, reject };
  });
  done.catch(() => {}); // observed by the test when it awaits it
  const peer: ScriptedPeer = { host, port, done, transcript: [], connections: 0, close: async () => {} };

  const srv = net.createServer((raw) => {
    const script = scripts[peer.connections++];
    if (!script) {
      settle.reject(new Error(`unexpected connection #${peer.connections}`));
      raw.destroy();
      return;
    }
    void run(raw, script, peer.transcript).then(
      () => {
        if (++finished === scripts.length) settle.resolve();
      },
      (e: Error) => settle.reject(e),
    );
  });
  srv.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, host, () => resolve());
  });
  peer.port = (srv.address() as net.AddressInfo).port;
  peer.close = () =>
    new Promise((r) => {
      for (const s of sockets) s.destroy();
      srv.close(() => r());
    });
  return peer;
}

/** Reads lines and data from a socket that may be upgraded to TLS mid-way. */
class Reader {
  // One growing buffer (doubled when full), searched only where it was not searched yet: message
  // data of many MB costs linear time, so the client in the same process is not starved.
  private data = Buffer.alloc(64 * 1024);
  private len = 0;
  private waiting: (() => void) | undefined;
  private ended = false;
  sock: net.Socket;
  /** ms to stop reading after each chunk (0: read at full speed). */
  pace = 0;
  constructor(sock: net.Socket) {
    this.sock = sock;
    this.attach(sock);
  }
  private readonly onData = (d: Buffer) => {
    if (this.len + d.length > this.data.length) {
      const bigger = Buffer.alloc(Math.max(this.data.length * 2, this.len + d.length));
      this.data.copy(bigger, 0, 0, this.len);
      this.data = bigger;
    }
    d.copy(this.data, this.len);
    this.len += d.length;
    this.waiting?.();
    if (this.pace) {
      const s = this.sock;
      s.pause();
      setTimeout(() => s.resume(), Math.min(this.pace, WAIT_MAX_MS)).unref();
    }
  };
  private readonly onEnd = () => {
    this.ended = true;
    this.waiting?.();
  };
  attach(s: net.Socket): void {
    this.sock = s;
    s.on('data', this.onData);
    s.on('end', this.onEnd);
    s.on('close', this.onEnd);
    s.on('error', this.onEnd);
  }
  detach(): void {
    this.sock.removeListener('data', this.onData);
    this.sock.removeListener('end', this.onEnd);
    this.sock.removeListener('close', this.onEnd);
  }
  /** Drop what was read so far (bytes the client sent before the TLS handshake). */
  discard(): void {
    this.len = 0;
  }
  /** Exactly n octets, as they are (bounded like `until`). */
  async take(n: number): Promise<string> {
    let deadline = Date.now() + WAIT_MAX_MS;
    let had = this.len;
    while (this.len < n) {
      if (this.len > had) deadline = Date.now() + WAIT_MAX_MS;
      had = this.len;
      if (this.ended) throw new Error(`the client closed the connection with ${this.len} of ${n} octets sent`);
      if (Date.now() > deadline) throw new Error('timed out waiting for the client');
      await new Promise<void>((r) => {
        this.waiting = r;
        setTimeout(r, 100).unref();
      });
      this.waiting = undefined;
    }
    const out = this.data.toString('latin1', 0, n);
    this.data.copy(this.data, 0, n, this.len);
    this.len -= n;
    return out;
  }
  async until(end: string): Promise<string> {
    // Bounded: WAIT_MAX_MS without a new byte from the client ends the wait (a large message read
    // slowly may take longer in all, but never stalls).
    let deadline = Date.now() + WAIT_MAX_MS;
    const e = Buffer.from(end, 'latin1');
    let from = 0;
    for (;;) {
      if (this.len > from + e.length - 1) deadline = Date.now() + WAIT_MAX_MS;
      const i = this.data.subarray(0, this.len).indexOf(e, from);
      if (i >= 0) {
        const out = this.data.toString('latin1', 0, i);
        this.data.copy(this.data, 0, i + e.length, this.len);
        this.len -= i + e.length;
        return out;
      }
      from = Math.max(0, this.len - e.length + 1);
      if (this.ended)
        throw new Error(
          `the client closed the connection while the script expected more${this.len ? ` (had ${JSON.stringify(this.data.toString('latin1', 0, Math.min(this.len, 80)))})` : ''}`,
        );
      if (Date.now() > deadline) throw new Error('timed out waiting for the client');
      await new Promise<void>((r) => {
        this.waiting = r;
        setTimeout(r, 100).unref();
      });
      this.waiting = undefined;
    }
  }
}

const matches = (want: string | RegExp, line: string) => (typeof want === 'string' ? want === line : want.test(line));

async function run(raw: net.Socket, script: Step[], transcript: string[]): Promise<void> {
  const r = new Reader(raw);
  const say = (s: string) => {
    for (const l of s.replace(/\r\n$/, '').split('\r\n')) transcript.push(`S: ${l}`);
    r.sock.write(s.endsWith('\r\n') ? s : `${s}\r\n`);
  };
  try {
    for (const step of script) {
      if ('send' in step) say(step.send);
      else if ('wait' in step) await new Promise((res) => setTimeout(res, Math.min(step.wait, WAIT_MAX_MS)));
      else if ('close' in step) {
        r.sock.end();
        return;
      } else if ('expect' in step) {
        const wants = Array.isArray(step.expect) ? step.expect : [step.expect];
        for (const want of wants) {
          const line = await r.until('\r\n');
          transcript.push(`C: ${line}`);
          if (!matches(want, line)) {
            say('500 5.5.1 unexpected command');
            r.sock.end();
            throw new Error(`expected ${String(want)}, the client sent ${JSON.stringify(line)}`);
          }
        }
        for (const reply of [step.reply ?? []].flat()) say(reply);
      } else if ('bdat' in step) {
        const line = await r.until('\r\n');
        transcript.push(`C: ${line}`);
        const m = /^BDAT (\d+) LAST$/.exec(line);
        if (!m) {
          say('500 5.5.1 unexpected command');
          r.sock.end();
          throw new Error(`expected BDAT <size> LAST, the client sent ${JSON.stringify(line)}`);
        }
        const chunk = await r.take(Number(m[1]));
        transcript.push(`C: <${chunk.length} octets of data>`);
        if (step.bdat !== true && step.bdat !== chunk)
          throw new Error(`unexpected message data ${JSON.stringify(chunk.slice(0, 200))}`);
        for (const reply of [step.reply ?? []].flat()) say(reply);
      } else if ('data' in step) {
        r.pace = step.pace ?? 0;
        const body = await r.until('\r\n.\r\n');
        r.pace = 0;
        transcript.push(`C: <${body.length} octets of data>`);
        const ok = step.data === true || (typeof step.data === 'string' ? step.data === body : step.data(body));
        if (!ok) throw new Error(`unexpected message data ${JSON.stringify(body.slice(0, 200))}`);
        if (step.reply !== undefined) say(step.reply);
      } else {
        r.discard();
        r.detach();
        const t = new tls.TLSSocket(r.sock, {
          isServer: true,
          secureContext: tls.createSecureContext({ cert: step.tls.cert, key: step.tls.key }),
        });
        await new Promise<void>((res, rej) => {
          t.once('secure', () => res());
          t.once('error', rej);
        });
        r.attach(t);
      }
    }
    // The script is complete; anything the client still sends (QUIT) is answered politely.
    void r.until('\r\n').then(
      (l) => {
        transcript.push(`C: ${l}`);
        if (/^QUIT$/i.test(l)) say('221 2.0.0 Bye');
        r.sock.end();
      },
      () => {},
    );
  } catch (e) {
    r.sock.destroy();
    throw e;
  }
}
