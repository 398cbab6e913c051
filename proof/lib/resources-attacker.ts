// Attack load for proof/resources.ts, run as a child process so that its sockets and timers never
// share an event loop with the well-behaved client whose latency is being measured.
//   node --import tsx proof/lib/resources-attacker.ts '<json AttackSpec>'
// Loopback only; stops by itself after durationMs (and hard-exits shortly after); prints one JSON
// line of AttackStats on stdout.
import net from 'node:net';

export type AttackKind = 'slowloris' | 'flood' | 'recipients' | 'huge' | 'pipeline';

export interface AttackSpec {
  kind: AttackKind;
  port: number;
  host: string;
  /** Source addresses (127.0.0.x) and how many concurrent clients each runs. */
  sources: { ip: string; clients: number }[];
  durationMs: number;
  /** recipients: RCPT commands per transaction (every other one); the gateway's maxRecipients. */
  rcptsPerTxn?: number;
  maxRecipients?: number;
  /** recipients: at most this many transactions end with DATA (the rest RSET); huge: at most this many messages just under the limit. */
  maxMessages?: number;
  /** huge: the gateway's maxMessageSize. */
  maxMessageSize?: number;
  /** pipeline: octets of pipelined commands each client tries to write per connection. */
  pipelineBytes?: number;
}

export interface AttackStats {
  connections: number;
  connectErrors: number;
  greeted: number;
  /** 421 4.7.0 as the greeting: admission refused (global or per-IP limit). */
  refused421: number;
  /** 421 4.4.2: the session's deadline cut the client off. */
  timeout421: number;
  /** 421 4.7.0 "too many errors" (maxErrors) in a session. */
  errors421: number;
  /** 452 4.5.3 to RCPT: over maxRecipients. */
  rcpt452: number;
  rcpt250: number;
  /** 552 (size) at MAIL (declared SIZE) or after the data. */
  size552: number;
  accepted250: number;
  otherCodes: Record<string, number>;
  bytesSent: number;
  transactions: number;
  /** pipeline: octets the gateway took from the never-reading clients (accepted by TCP), and connections it closed. */
  pipelinedAccepted: number;
  closedByServer: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A minimal reply reader over a socket. */
class Peer {
  readonly sock: net.Socket;
  private buf = '';
  private replies: { code: number; text: string }[] = [];
  private waiter: ((r: { code: number; text: string } | null) => void) | null = null;
  closed = false;

  constructor(
    host: string,
    port: number,
    ip: string,
    private readonly st: AttackStats,
  ) {
    this.sock = net.connect({ host, port, localAddress: ip });
    this.sock.setNoDelay(true);
    this.sock.on('data', (d: Buffer) => this.onData(d));
    this.sock.on('error', () => {});
    this.sock.on('close', () => {
      this.closed = true;
      const w = this.waiter;
      this.waiter = null;
      w?.(null);
    });
  }

  connected(): Promise<boolean> {
    return new Promise((resolve) => {
      this.sock.once('connect', () => resolve(true));
      this.sock.once('close', () => resolve(false));
    });
  }

  private onData(d: Buffer): void {
    this.buf += d.toString('latin1');
    for (let nl = this.buf.indexOf('\r\n'); nl >= 0; nl = this.buf.indexOf('\r\n')) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 2);
      if (line[3] === '-') continue;
      const r = { code: Number(line.slice(0, 3)), text: line };
      if (r.code === 421 && line.includes('4.4.2')) this.st.timeout421++;
      if (r.code === 421 && line.includes('too many errors')) this.st.errors421++;
      const w = this.waiter;
      if (w) {
        this.waiter = null;
        w(r);
      } else this.replies.push(r);
    }
  }

  read(timeoutMs = 30_000): Promise<{ code: number; text: string } | null> {
    const r = this.replies.shift();
    if (r) return Promise.resolve(r);
    if (this.closed) return Promise.resolve(null);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiter = null;
        resolve(null);
      }, timeoutMs);
      this.waiter = (x) => {
        clearTimeout(t);
        resolve(x);
      };
    });
  }

  /** Write; when the socket is full wait for it to drain, the close, or `deadline` (ms since the epoch). */
  async write(data: string | Buffer, deadline = Infinity): Promise<void> {
    if (this.closed) return;
    this.st.bytesSent += data.length;
    if (!this.sock.write(data)) {
      await new Promise<void>((r) => {
        const t = deadline < Infinity ? setTimeout(() => done(), Math.max(0, deadline - Date.now())) : undefined;
        const done = () => {
          clearTimeout(t);
          this.sock.off('drain', done);
          this.sock.off('close', done);
          r();
        };
        this.sock.on('drain', done);
        this.sock.on('close', done);
      });
    }
  }

  close(): void {
    this.sock.destroy();
  }
}

function count(st: AttackStats, code: number | undefined): void {
  const k = String(code ?? 'closed');
  st.otherCodes[k] = (st.otherCodes[k] ?? 0) + 1;
}

/** Connect and read the greeting; null when refused (421 counted) or failed. */
async function open(spec: AttackSpec, ip: string, st: AttackStats): Promise<Peer | null> {
  const p = new Peer(spec.host, spec.port, ip, st);
  st.connections++;
  if (!(await p.connected())) {
    st.connectErrors++;
    return null;
  }
  const g = await p.read(15_000);
  if (g?.code === 421 && g.text.includes('4.7.0')) {
    st.refused421++;
    p.close();
    return null;
  }
  if (g?.code !== 220) {
    count(st, g?.code);
    p.close();
    return null;
  }
  st.greeted++;
  return p;
}

async function slowloris(spec: AttackSpec, ip: string, st: AttackStats, until: number): Promise<void> {
  // One byte a second of a command line that never ends; reconnect when cut off or refused.
  const drip = Buffer.from(`EHLO ${'slow'.repeat(500)}`);
  while (Date.now() < until) {
    const p = await open(spec, ip, st);
    if (!p) {
      await sleep(1000);
      continue;
    }
    for (let i = 0; Date.now() < until && !p.closed; i++) {
      await p.write(drip.subarray(i % drip.length, (i % drip.length) + 1));
      await sleep(1000);
    }
    p.close();
  }
}

async function flood(spec: AttackSpec, ip: string, st: AttackStats, until: number): Promise<void> {
  // Connect, EHLO, hold the slot a little, QUIT; again and again. Refused: retry in 20-100 ms.
  while (Date.now() < until) {
    const p = await open(spec, ip, st);
    if (!p) {
      await sleep(20 + Math.random() * 80);
      continue;
    }
    await p.write('EHLO flood.test\r\n');
    count(st, (await p.read())?.code);
    await sleep(Math.random() * 500);
    await p.write('QUIT\r\n');
    await p.read(5000);
    p.close();
  }
}

let messagesLeft = 0;
async function recipients(spec: AttackSpec, ip: string, st: AttackStats, until: number, id: number): Promise<void> {
  // Odd transactions: all `rcptsPerTxn` RCPTs pipelined (past the limit every 452 is an error, so
  // the session meets maxErrors); even ones: maxRecipients + 10 and, while allowed, DATA.
  const many = spec.rcptsPerTxn ?? 3000;
  const few = (spec.maxRecipients ?? 1000) + 10;
  let txnNo = 0;
  for (let round = 0; Date.now() < until; round++) {
    const p = await open(spec, ip, st);
    if (!p) {
      await sleep(200);
      continue;
    }
    await p.write('EHLO rcpts.test\r\n');
    await p.read();
    for (let txn = 0; txn < 3 && Date.now() < until && !p.closed; txn++) {
      await p.write('MAIL FROM:<many@fabrikam.test>\r\n');
      if ((await p.read())?.code !== 250) break;
      // All RCPTs pipelined in one burst, as a PIPELINING client would.
      const n = txnNo++ % 2 ? many : few;
      const rc: string[] = [];
      for (let i = 0; i < n; i++) rc.push(`RCPT TO:<r${id}x${i}@contoso.test>\r\n`);
      await p.write(rc.join(''));
      for (let i = 0; i < n; i++) {
        const r = await p.read();
        if (!r) break;
        if (r.code === 250) st.rcpt250++;
        else if (r.code === 452 && r.text.includes('4.5.3')) st.rcpt452++;
        else count(st, r.code);
      }
      st.transactions++;
      if (p.closed) break;
      if (n === few && messagesLeft > 0) {
        messagesLeft--;
        await p.write('DATA\r\n');
        if ((await p.read())?.code === 354) {
          await p.write('Subject: many recipients\r\n\r\nhello\r\n.\r\n');
          const r = await p.read(60_000);
          if (r?.code === 250) st.accepted250++;
          else count(st, r?.code);
        }
      } else {
        await p.write('RSET\r\n');
        await p.read();
      }
    }
    await p.write('QUIT\r\n');
    await p.read(5000);
    p.close();
  }
}

async function huge(spec: AttackSpec, ip: string, st: AttackStats, until: number, id: number): Promise<void> {
  const max = spec.maxMessageSize ?? 10 * 1024 * 1024;
  const line = Buffer.from(`${'x'.repeat(998)}\r\n`);
  const block = Buffer.concat(Array<Buffer>(1024).fill(line)); // ~1 MB
  for (let k = id; Date.now() < until; k++) {
    const p = await open(spec, ip, st);
    if (!p) {
      await sleep(200);
      continue;
    }
    await p.write('EHLO huge.test\r\n');
    await p.read();
    // 0: just under the limit (while maxMessages allows: they are stored and delivered), 1: twice
    // the limit without SIZE, 2: SIZE= over the limit.
    let mode = k % 3;
    if (mode === 0) {
      if (messagesLeft > 0) messagesLeft--;
      else mode = 1;
    }
    if (mode === 2) {
      await p.write(`MAIL FROM:<big@fabrikam.test> SIZE=${max * 2}\r\n`);
      const r = await p.read();
      if (r?.code === 552) st.size552++;
      else count(st, r?.code);
    } else {
      await p.write('MAIL FROM:<big@fabrikam.test>\r\n');
      await p.read();
      await p.write(`RCPT TO:<big${id}@contoso.test>\r\n`);
      await p.read();
      await p.write('DATA\r\n');
      if ((await p.read())?.code === 354) {
        const head = Buffer.from(`Subject: huge ${mode}\r\n\r\n`);
        const target = mode === 0 ? max - 4096 : max * 2;
        await p.write(head);
        let sent = head.length;
        while (sent + block.length <= target && !p.closed && Date.now() < until + 30_000) {
          await p.write(block);
          sent += block.length;
        }
        while (sent + line.length <= target && !p.closed) {
          await p.write(line);
          sent += line.length;
        }
        await p.write('.\r\n');
        const r = await p.read(120_000);
        st.transactions++;
        if (r?.code === 250) st.accepted250++;
        else if (r?.code === 552) st.size552++;
        else count(st, r?.code);
      }
    }
    await p.write('QUIT\r\n');
    await p.read(5000);
    p.close();
  }
}

async function pipeline(spec: AttackSpec, ip: string, st: AttackStats, until: number): Promise<void> {
  // EHLO (its reply read), then megabytes of pipelined RSETs (pipelinable, RFC 2920) whose replies
  // are never read; the connection is held until the end. Cut off: reconnect.
  const chunk = Buffer.from('RSET\r\n'.repeat(8192)); // 48 KiB
  const perConn = spec.pipelineBytes ?? 16 * 1024 * 1024;
  while (Date.now() < until) {
    const p = await open(spec, ip, st);
    if (!p) {
      await sleep(200);
      continue;
    }
    await p.write('EHLO pipeline.test\r\n');
    if ((await p.read())?.code !== 250) {
      p.close();
      continue;
    }
    p.sock.pause(); // from here on, nothing is read
    for (let sent = 0; sent < perConn && !p.closed && Date.now() < until; sent += chunk.length)
      await p.write(chunk, until);
    while (!p.closed && Date.now() < until) await sleep(100);
    if (p.closed) st.closedByServer++;
    st.pipelinedAccepted += p.sock.bytesWritten - p.sock.writableLength;
    p.close();
  }
}

export async function runAttack(spec: AttackSpec): Promise<AttackStats> {
  const st: AttackStats = {
    connections: 0,
    connectErrors: 0,
    greeted: 0,
    refused421: 0,
    timeout421: 0,
    errors421: 0,
    rcpt452: 0,
    rcpt250: 0,
    size552: 0,
    accepted250: 0,
    otherCodes: {},
    bytesSent: 0,
    transactions: 0,
    pipelinedAccepted: 0,
    closedByServer: 0,
  };
  const until = Date.now() + spec.durationMs;
  messagesLeft = spec.maxMessages ?? 0;
  const jobs: Promise<void>[] = [];
  let id = 0;
  for (const s of spec.sources) {
    for (let i = 0; i < s.clients; i++) {
      const me = id++;
      const start = sleep((i * 10) % 1000); // ramp up over a second
      jobs.push(
        start
          .then(() => {
            switch (spec.kind) {
              case 'slowloris':
                return slowloris(spec, s.ip, st, until);
              case 'flood':
                return flood(spec, s.ip, st, until);
              case 'recipients':
                return recipients(spec, s.ip, st, until, me);
              case 'huge':
                return huge(spec, s.ip, st, until, me);
              case 'pipeline':
                return pipeline(spec, s.ip, st, until);
            }
          })
          .catch(() => {}),
      );
    }
  }
  await Promise.all(jobs);
  return st;
}

if (process.argv[1]?.endsWith('resources-attacker.ts')) {
  const spec = JSON.parse(process.argv[2]) as AttackSpec;
  // Hard stop: whatever happens, this process ends shortly after its duration.
  setTimeout(() => process.exit(3), spec.durationMs + 150_000).unref();
  const st = await runAttack(spec);
  process.stdout.write(`${JSON.stringify(st)}\n`);
  process.exit(0);
}
