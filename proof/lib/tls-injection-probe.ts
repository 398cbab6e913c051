// STARTTLS command injection probe (CVE-2011-0411 class) against an SMTP server: a raw client
// pipelines plaintext commands behind STARTTLS in the same TCP segment, completes the handshake,
// and checks that the server answers nothing it read in plaintext inside the TLS session (the
// first reply inside TLS must be the reply to our own EHLO). testssl.sh 3.0.x (Debian bookworm)
// has no such check (it arrived in 3.2 as --starttls-injection), so the proof runs this one.
import net from 'node:net';
import tls from 'node:tls';

export interface InjectionResult {
  vulnerable: boolean;
  /** What was seen, for the report. */
  detail: string;
}

/** Read whole SMTP replies from a stream (multi-line aware), with bounded waits. */
class Replies {
  private buf = '';
  private cur: string[] = [];
  readonly replies: string[][] = [];
  private waiter: (() => void) | undefined;
  received = 0;
  feed(d: Buffer): void {
    this.received += d.length;
    this.buf += d.toString('latin1');
    for (;;) {
      const nl = this.buf.indexOf('\n');
      if (nl < 0) break;
      const line = this.buf.slice(0, nl).replace(/\r$/, '');
      this.buf = this.buf.slice(nl + 1);
      this.cur.push(line);
      if (line[3] !== '-') {
        this.replies.push(this.cur);
        this.cur = [];
      }
    }
    this.waiter?.();
  }
  async next(ms: number, what: string): Promise<string[]> {
    const end = Date.now() + ms;
    while (!this.replies.length) {
      const left = end - Date.now();
      if (left <= 0) throw new Error(`no reply to ${what} within ${ms} ms`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiter = () => {
          clearTimeout(t);
          r();
        };
      });
      this.waiter = undefined;
    }
    return this.replies.shift()!;
  }
}

export async function starttlsInjectionProbe(
  host: string,
  port: number,
  injected = 'NOOP\r\nNOOP\r\nRSET\r\n',
  timeoutMs = 10_000,
): Promise<InjectionResult> {
  const sock = net.connect({ host, port });
  sock.on('error', () => {});
  const plain = new Replies();
  try {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('connect timeout')), timeoutMs);
      sock.once('connect', () => {
        clearTimeout(t);
        resolve();
      });
      sock.once('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
    });
    const onPlain = (d: Buffer) => plain.feed(d);
    sock.on('data', onPlain);
    const greet = await plain.next(timeoutMs, 'greeting');
    if (!greet[0].startsWith('220')) return { vulnerable: false, detail: `inconclusive: greeting ${greet[0]}` };
    sock.write('EHLO probe.proof.test\r\n');
    const ehlo = await plain.next(timeoutMs, 'EHLO');
    if (!ehlo.some((l) => /^250[ -]STARTTLS\b/i.test(l)))
      return { vulnerable: false, detail: 'inconclusive: STARTTLS not offered' };
    // The attack: commands in the same segment as STARTTLS.
    sock.write(`STARTTLS\r\n${injected}`);
    const ready = await plain.next(timeoutMs, 'STARTTLS');
    if (!ready[0].startsWith('220'))
      return { vulnerable: false, detail: `STARTTLS with pipelined commands refused: ${ready.join(' / ')}` };
    // Give a plaintext answer to the injected commands a moment to show up (another bug class).
    await new Promise((r) => setTimeout(r, 200));
    const plainAfter = plain.replies.length;
    sock.removeListener('data', onPlain);
    const inner = new Replies();
    const t = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({ socket: sock, rejectUnauthorized: false, servername: 'mx1.contoso.test' });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error('TLS handshake timeout'));
      }, timeoutMs);
      s.once('secureConnect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    t.on('data', (d: Buffer) => inner.feed(d));
    t.on('error', () => {});
    // Anything the server says inside TLS before we speak answers the injected plaintext.
    await new Promise((r) => setTimeout(r, 1000));
    const unsolicited = inner.replies.length + (inner.received > 0 && !inner.replies.length ? 1 : 0);
    t.write('EHLO probe.proof.test\r\n');
    const first = await inner.next(timeoutMs, 'EHLO inside TLS');
    const isEhlo = first[0].startsWith('250') && first.length > 1;
    t.write('QUIT\r\n');
    t.end();
    const vulnerable = unsolicited > 0 || !isEhlo || plainAfter > 0;
    const detail = vulnerable
      ? `VULNERABLE: ${unsolicited} unsolicited repl${unsolicited === 1 ? 'y' : 'ies'} inside TLS, ${plainAfter} plaintext repl${plainAfter === 1 ? 'y' : 'ies'} after 220; first reply to EHLO inside TLS: ${first.join(' / ')}`
      : `not vulnerable: ${JSON.stringify(injected)} pipelined behind STARTTLS was discarded; no reply inside TLS before our EHLO, which got the EHLO reply (${first.length} lines)`;
    return { vulnerable, detail };
  } finally {
    sock.destroy();
  }
}
