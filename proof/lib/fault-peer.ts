// A receiving SMTP peer for the fault proof: its own loopback address, STARTTLS with a good and
// (optionally) a bad certificate, and a fault mode that can be switched at any moment:
//   refuse    the listener is closed (connections are refused) and open connections are cut;
//   dropData  the socket is destroyed after part of the message data arrived (most transactions);
//   tempfail  4xx to RCPT or after the data (about half of the transactions);
//   stall     no greeting for new connections, no reply to DATA on open ones (until the client's timeout);
//   slow      the reply to the end of data comes only after `slowMs` (longer than the gateway's queue
//             lease, shorter than its end-of-data timeout): the delivery outlives its lease;
//   tlsAbort  220 to STARTTLS, then garbage and a close instead of a handshake;
//   badCert   the STARTTLS handshake presents the bad certificate (wrong name or self-signed).
// A message is recorded only when the peer answers 250 to its data, with the X-Proof-Id the driver
// put first in the message, the sha256 of the message from that header on (what the driver sent),
// the queue id from the gateway's Received: header, and whether the session had TLS with the good
// certificate. A forced-TLS peer counts as a leak every MAIL FROM it sees on a session that is not
// TLS with the good certificate (the gateway must never send there). Loopback only.
import { createHash, randomInt } from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';

export type PeerFault = 'none' | 'refuse' | 'dropData' | 'tempfail' | 'stall' | 'slow' | 'tlsAbort' | 'badCert';

export interface PeerCopy {
  peer: string;
  proofId: string | null;
  sha256: string;
  queueId: string | null;
  rcpts: string[];
  at: number;
  /** Connection number at this peer, and when the peer accepted that connection (ms epoch). */
  conn: number;
  connAt: number;
  /** The client's EHLO/HELO name (which gateway node delivered it, when nodes have their own hostnames). */
  client: string;
  tls: boolean;
  goodCert: boolean;
  size: number;
}

export interface FaultPeerOptions {
  name: string;
  host: string;
  port: number;
  /** STARTTLS offered with `good`; `bad` is presented while the fault is badCert. */
  tls?: { good: tls.SecureContextOptions; bad?: tls.SecureContextOptions };
  /** Only a TLS session with the good certificate may carry a transaction (forced-TLS destination). */
  forced?: boolean;
  /** Fixed reply for RCPT (e.g. 550 for addresses that must bounce); undefined = normal. */
  rcptReply?: (address: string) => string | undefined;
  /** Delay of the reply to the end of data in the slow fault (ms range). */
  slowMs?: [number, number];
  onMessage: (c: PeerCopy) => void;
}

const END = Buffer.from('\r\n.\r\n');
const PROOF_HDR = Buffer.from('X-Proof-Id: ');
const DOT_CRLF = Buffer.from('.\r\n');

export class FaultPeer {
  fault: PeerFault = 'none';
  readonly stats = {
    connections: 0,
    messages: 0,
    tlsSessions: 0,
    dropped: 0,
    tempfails: 0,
    stalls: 0,
    slowReplies: 0,
    tlsAborts: 0,
    badCertHandshakes: 0,
  };
  /** MAIL FROM seen by a forced peer on a session without TLS with the good certificate. */
  leaks: string[] = [];
  /** Fault changes (ms epoch) and connection cuts, for explaining what happened. */
  readonly history: { at: number; fault: PeerFault }[] = [];
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  private readonly good: tls.SecureContext | null;
  private readonly bad: tls.SecureContext | null;

  constructor(private readonly o: FaultPeerOptions) {
    if (!/^127\.\d+\.\d+\.\d+$/.test(o.host)) throw new Error(`refusing non-loopback address ${o.host}`);
    this.good = o.tls ? tls.createSecureContext({ ...o.tls.good, minVersion: 'TLSv1.2' }) : null;
    this.bad = o.tls?.bad ? tls.createSecureContext({ ...o.tls.bad, minVersion: 'TLSv1.2' }) : null;
  }

  get name(): string {
    return this.o.name;
  }
  get host(): string {
    return this.o.host;
  }
  get forced(): boolean {
    return !!this.o.forced;
  }
  get hasBadCert(): boolean {
    return !!this.bad;
  }
  get hasTls(): boolean {
    return !!this.good;
  }

  async listen(): Promise<void> {
    if (this.server) return;
    const srv = net.createServer((s) => this.session(s));
    srv.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(this.o.port, this.o.host, () => {
        srv.off('error', reject);
        resolve();
      });
    });
    this.server = srv;
  }

  private async unlisten(): Promise<void> {
    const srv = this.server;
    this.server = null;
    if (srv) await new Promise<void>((r) => srv.close(() => r()));
  }

  /**
   * Close every open connection (like a restart of the peer's server). Gracefully: a 250 already
   * written still reaches the client (FIN after the data, never a reset that could discard it),
   * nothing more is read or answered, and the socket is destroyed a moment later. A 250 the
   * client never saw would make a duplicate that is the peer's doing, not the gateway's.
   */
  cutAll(): void {
    for (const s of this.sockets) {
      this.cut.add(s);
      (this.top.get(s) ?? s).end();
      setTimeout(() => s.destroy(), 1500).unref();
    }
  }
  private readonly cut = new WeakSet<net.Socket>();
  /** The TLS socket over a raw one, once upgraded. */
  private readonly top = new WeakMap<net.Socket, net.Socket>();

  async setFault(f: PeerFault): Promise<void> {
    const prev = this.fault;
    this.fault = f;
    this.history.push({ at: Date.now(), fault: f });
    if (f === 'refuse') {
      this.cutAll();
      await this.unlisten();
      return;
    }
    if (prev === 'refuse') await this.listen();
    // A new certificate or a broken TLS stack applies to every session from now on.
    if (f === 'badCert' || f === 'tlsAbort' || prev === 'badCert') this.cutAll();
  }

  async close(): Promise<void> {
    this.cutAll();
    await this.unlisten();
  }

  private session(raw: net.Socket): void {
    const conn = ++this.stats.connections;
    const connAt = Date.now();
    this.sockets.add(raw);
    raw.on('close', () => this.sockets.delete(raw));
    raw.on('error', () => {});
    raw.setNoDelay(true);
    // No connection lives forever (stalled ones included): the run is bounded.
    raw.setTimeout(120_000, () => raw.destroy());
    let sock: net.Socket = raw;
    let secure = false;
    let goodCert = false;
    let buf: Buffer = Buffer.alloc(0);
    let inData = false;
    let stalled = false;
    let data: Buffer = Buffer.alloc(0);
    let dropAt = -1;
    let from: string | null = null;
    let to: string[] = [];
    let client = '';
    const say = (s: string) => {
      if (!sock.destroyed) sock.write(s + '\r\n');
    };
    const finishData = (body: Buffer) => {
      inData = false;
      const rcpts = to;
      from = null;
      to = [];
      if (this.fault === 'tempfail' && randomInt(2) === 0) {
        this.stats.tempfails++;
        say('451 4.3.0 Try again later (proof fault: tempfail)');
        return;
      }
      const accept = () => {
        // Recorded only when the 250 can still be written (not after the client or a cut closed the session).
        if (sock.destroyed || this.cut.has(raw)) return;
        this.stats.messages++;
        this.o.onMessage(this.describe(body, rcpts, secure, goodCert, conn, connAt, client));
        say('250 2.0.0 Ok: queued');
      };
      if (this.fault === 'slow') {
        this.stats.slowReplies++;
        const [a, b] = this.o.slowMs ?? [6000, 8000];
        setTimeout(accept, randomInt(a, b + 1));
        return;
      }
      accept();
    };
    const onData = (d: Buffer) => {
      if (stalled || this.cut.has(raw)) return;
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      for (;;) {
        if (stalled || sock.destroyed || this.cut.has(raw)) return;
        if (inData) {
          const seen = data.length;
          data = data.length ? Buffer.concat([data, buf]) : buf;
          buf = Buffer.alloc(0);
          if (dropAt >= 0 && data.length >= dropAt) {
            this.stats.dropped++;
            raw.destroy();
            return;
          }
          if (data.length >= 3 && data.subarray(0, 3).equals(DOT_CRLF)) {
            // empty message
            buf = data.subarray(3);
            data = Buffer.alloc(0);
            dropAt = -1;
            finishData(Buffer.alloc(0));
            continue;
          }
          const i = data.indexOf(END, Math.max(0, seen - 4));
          if (i < 0) return;
          const body = data.subarray(0, i + 2); // keep the CRLF before the dot
          buf = data.subarray(i + 5);
          data = Buffer.alloc(0);
          dropAt = -1;
          finishData(body);
          continue;
        }
        const nl = buf.indexOf('\r\n');
        if (nl < 0) {
          if (buf.length > 4096) raw.destroy();
          return;
        }
        const line = buf.subarray(0, nl).toString('latin1');
        buf = buf.subarray(nl + 2);
        const verb = line.split(' ')[0].toUpperCase();
        if (verb === 'EHLO' || verb === 'HELO') client = line.split(' ')[1] ?? '';
        if (verb === 'EHLO') {
          const ext = [
            'PIPELINING',
            'SIZE 10240000',
            '8BITMIME',
            'ENHANCEDSTATUSCODES',
            ...(this.good && !secure ? ['STARTTLS'] : []),
          ];
          sock.write(
            [`250-${this.o.name}`, ...ext.map((e, i) => `250${i === ext.length - 1 ? ' ' : '-'}${e}`)].join('\r\n') +
              '\r\n',
          );
        } else if (verb === 'HELO') say(`250 ${this.o.name}`);
        else if (verb === 'STARTTLS') {
          if (!this.good || secure) {
            say('502 5.5.1 Not implemented');
            continue;
          }
          if (this.fault === 'tlsAbort') {
            this.stats.tlsAborts++;
            raw.write('220 2.0.0 Ready to start TLS\r\n\x15\x03\x03\x00\x02\x02\x28 this is not a handshake\r\n');
            raw.end();
            setTimeout(() => raw.destroy(), 200).unref();
            return;
          }
          const useBad = this.fault === 'badCert' && !!this.bad;
          raw.write('220 2.0.0 Ready to start TLS\r\n');
          buf = Buffer.alloc(0);
          raw.removeListener('data', onData);
          const t = new tls.TLSSocket(raw, { isServer: true, secureContext: useBad ? this.bad! : this.good });
          t.on('error', () => raw.destroy());
          t.once('secure', () => {
            this.stats.tlsSessions++;
            if (useBad) this.stats.badCertHandshakes++;
            secure = true;
            goodCert = !useBad;
            sock = t;
            from = null;
            to = [];
            this.top.set(raw, t);
            t.on('data', onData);
          });
          return;
        } else if (verb === 'MAIL') {
          from = /<([^>]*)>/.exec(line)?.[1] ?? '';
          if (this.o.forced && !(secure && goodCert))
            this.leaks.push(
              `${this.o.name}: MAIL FROM on a session ${secure ? 'with the bad certificate' : 'without TLS'}`,
            );
          say('250 2.1.0 Ok');
        } else if (verb === 'RCPT') {
          const a = /<([^>]*)>/.exec(line)?.[1] ?? '';
          if (from === null) {
            say('503 5.5.1 MAIL first');
            continue;
          }
          const fixed = this.o.rcptReply?.(a);
          if (fixed) {
            say(fixed);
            continue;
          }
          if (this.fault === 'tempfail' && randomInt(2) === 0) {
            this.stats.tempfails++;
            say('450 4.2.0 Mailbox busy, try again later (proof fault: tempfail)');
            continue;
          }
          to.push(a);
          say('250 2.1.5 Ok');
        } else if (verb === 'DATA') {
          if (!to.length) {
            say('554 5.5.1 Error: no valid recipients');
            continue;
          }
          if (this.fault === 'stall') {
            this.stats.stalls++;
            stalled = true;
            return;
          }
          inData = true;
          data = Buffer.alloc(0);
          dropAt = this.fault === 'dropData' && randomInt(10) < 8 ? randomInt(64, 1500) : -1;
          say('354 End data with <CR><LF>.<CR><LF>');
        } else if (verb === 'RSET') {
          from = null;
          to = [];
          say('250 2.0.0 Ok');
        } else if (verb === 'NOOP') say('250 2.0.0 Ok');
        else if (verb === 'QUIT') {
          say('221 2.0.0 Bye');
          sock.end();
          return;
        } else say('502 5.5.2 Error: command not recognized');
      }
    };
    raw.on('data', onData);
    if (this.fault === 'stall') {
      this.stats.stalls++;
      stalled = true;
      return;
    } // no greeting
    raw.write(`220 ${this.o.name} ESMTP\r\n`);
  }

  private describe(
    body: Buffer,
    rcpts: string[],
    secure: boolean,
    goodCert: boolean,
    conn: number,
    connAt: number,
    client: string,
  ): PeerCopy {
    // Undo dot-stuffing: a line that starts with "." lost one dot on the way (RFC 5321 §4.5.2).
    const text = body.toString('latin1').replace(/(^|\r\n)\./g, '$1');
    const raw = Buffer.from(text, 'latin1');
    const start = raw.subarray(0, PROOF_HDR.length).equals(PROOF_HDR)
      ? 0
      : raw.indexOf(Buffer.concat([Buffer.from('\r\n'), PROOF_HDR]));
    const original = start < 0 ? raw : raw.subarray(start === 0 ? 0 : start + 2);
    const head = start < 0 ? text.slice(0, 2000) : text.slice(0, start + 2 + 200);
    return {
      peer: this.o.name,
      proofId:
        start < 0 ? null : (/^X-Proof-Id: (\S+)\r\n/.exec(original.subarray(0, 200).toString('latin1'))?.[1] ?? null),
      sha256: createHash('sha256').update(original).digest('hex'),
      queueId: /\(Portcullis\) with \S+ id ([0-9A-Z]+)/.exec(head)?.[1] ?? null,
      rcpts,
      at: Date.now(),
      conn,
      connAt,
      client,
      tls: secure,
      goodCert,
      size: body.length,
    };
  }
}
