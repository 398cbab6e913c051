// Owns: one outbound SMTP connection (RFC 5321 client side, PIPELINING, CHUNKING, SIZE, 8BITMIME,
// SMTPUTF8, DSN, STARTTLS). It reports what happened as structured data; it decides nothing about policy.
// Promises: replies are matched to commands in order; bytes a server sends after its STARTTLS
// reply and before the handshake are discarded (response injection); EHLO is reissued after TLS;
// every wait has a timeout (RFC 5321 §4.5.3.2); failures are DeliveryError with a kind, never text,
// carrying the TLS facts learned when the session failed after STARTTLS; a reply to DATA that is
// neither 354 nor a refusal is a protocol error, never a reply to the message (a 3xx to BDAT
// likewise); BDAT (RFC 3030) only to a server offering CHUNKING and PIPELINING, for messages up to
// CHUNKED_MAX, with RSET after a transaction it failed; TLS failures also carry
// their kind of the TLS failure vocabulary (tls/failures.ts). MAIL FROM / RCPT TO carry only valid
// RFC 5321 paths (../mailbox.ts smtpPath), else nothing is sent. Legacy TLS (1.0/1.1) is offered
// only when asked for and only under starttls 'try' (opportunistic). REQUIRETLS (RFC 8689) goes
// on MAIL FROM only when the envelope asks for it and the server offers it.
import net from 'node:net';
import tls from 'node:tls';
import type { X509Certificate } from 'node:crypto';
import { smtpPath } from '../mailbox.ts';
import {
  describeTlsFailure,
  handshakeFailureKind,
  type ChainFailureKind,
  type TlsFailureKind,
} from '../tls/failures.ts';
import { certificateNames, dnLine } from '../tls/names.ts';
import { ECDH_CURVES, cipherBits, clientTlsProfile, isModernSession } from '../tls/policy-constants.ts';
import { peerChain, verifyChain, type TrustStore } from '../tls/trust.ts';
import { endsWithCrlf } from '../util/lines.ts';

export interface Reply {
  code: number;
  enhanced?: string;
  lines: string[];
  text: string;
}

export type FailureKind =
  | 'connect'
  | 'timeout'
  | 'closed'
  | 'protocol' // transport
  | 'greeting'
  | 'ehlo'
  | 'starttls'
  | 'tls' // session set-up
  | 'mail'; // transaction (a path that cannot be sent)

export class DeliveryError extends Error {
  /** The TLS session established before the failure (STARTTLS succeeded, then SMTP failed). */
  tls?: PeerTls;
  /** Our address on the connection, when it was connected (TLS-RPT sending-mta-ip). */
  localAddress?: string;
  constructor(
    readonly kind: FailureKind,
    message: string,
    readonly reply?: Reply,
    readonly errno?: string,
    readonly tlsFailure?: TlsFailureKind,
  ) {
    super(message);
    this.name = 'DeliveryError';
  }
}

export interface PeerTls {
  version: string;
  cipher: string;
  bits: number;
  resumed: boolean;
  subject?: string;
  issuer?: string;
  fingerprint256?: string;
  /** DNS names the certificate identifies (tls/names.ts: SAN DNS names, else the subject CN). */
  names?: string[];
  chainValid: boolean;
  chainError?: string;
  chainFailure?: ChainFailureKind;
  /** The session is below what the modern profile offers (TLS 1.0/1.1, or a legacy suite). */
  legacy?: boolean;
  /** The verified chain up to the trusted root when chainValid, else what the peer presented; leaf first. */
  chain?: X509Certificate[];
  /** The certificates the peer presented, leaf first, as sent (DANE matches these). */
  presented?: X509Certificate[];
}

export interface Timeouts {
  connect: number;
  greeting: number;
  command: number;
  dataInit: number;
  dataBlock: number;
  dataEnd: number;
}

/**
 * RFC 5321 §4.5.3.2 (seconds): initial 220 5 min (§4.5.3.2.1), MAIL/RCPT 5 min (§4.5.3.2.2-3),
 * DATA initiation 2 min (§4.5.3.2.4: `dataInit`, the wait for the 354), data block 3 min
 * (§4.5.3.2.5: `dataBlock`, per write of message data: no progress for that long is a timeout),
 * DATA termination 10 min (§4.5.3.2.6: `dataEnd`, from when the final dot was sent). `connect` is
 * not in the RFC.
 */
export const RFC_TIMEOUTS: Timeouts = {
  connect: 30,
  greeting: 300,
  command: 300,
  dataInit: 120,
  dataBlock: 180,
  dataEnd: 600,
};

/** Message data goes out in writes of about this size, each within `dataBlock` (§4.5.3.2.5). */
const DATA_WRITE = 64 * 1024;
/**
 * The largest message sent with BDAT in the same flight as MAIL and RCPT (sendChunked): a larger
 * one goes after DATA's 354, so that recipients the server refuses cost no upload.
 */
export const CHUNKED_MAX = 1024 * 1024;

export interface ConnectOptions {
  ip: string;
  port: number;
  /** The host name we connect to (SNI, logs); may equal ip. */
  hostname: string;
  heloName: string;
  localAddress?: string;
  /** 'try': use STARTTLS when offered; 'require': fail without it; 'never': plaintext. */
  starttls: 'try' | 'require' | 'never';
  /** With starttls 'try' only: also offer TLS 1.0/1.1 and legacy suites (the last try before plaintext). */
  legacyTls?: boolean;
  trust: TrustStore;
  /** Our certificate and key, presented when the server asks for a client certificate. */
  clientCert?: { cert: string; key: string };
  /** TLS session to resume (from an earlier connection to the same host). */
  session?: Buffer;
  onSession?: (s: Buffer) => void;
  timeouts?: Partial<Timeouts>;
}

export interface Envelope {
  from: string;
  rcpts: { address: string; notify?: string; orcpt?: string }[];
  ret?: string;
  envid?: string;
  eightBit: boolean;
  smtputf8: boolean;
  requireTls?: boolean;
}

export interface TransactionResult {
  mail: Reply;
  rcpts: Reply[];
  /** Final reply to the data, when DATA (or BDAT) was sent. */
  data?: Reply;
  /** The data went as one `BDAT … LAST` chunk (RFC 3030), not after DATA. */
  chunked?: boolean;
}

const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})\s/;
const MAX_REPLY_LINE = 4096;
const MAX_REPLY_LINES = 200;

export class SmtpConnection {
  private sock: net.Socket;
  private buf = '';
  private pending: { resolve: (r: Reply) => void; reject: (e: DeliveryError) => void; timer?: NodeJS.Timeout }[] = [];
  private lines: string[] = [];
  private dead: DeliveryError | null = null;
  /** STARTTLS sent: stop parsing after its reply; later bytes are held (and dropped on upgrade). */
  private holdAfterReply = false;
  private holding = false;
  readonly extensions = new Map<string, string>();
  tls: PeerTls | null = null;
  /** Whether STARTTLS was advertised (before TLS). */
  starttlsOffered = false;
  /** Why TLS was not used (opportunistic mode): STARTTLS not offered or refused. */
  tlsSkipped?: { kind: TlsFailureKind; detail: string };
  messages = 0;
  private readonly t: Timeouts;
  private readonly onData = (d: Buffer) => this.receive(d.toString('latin1'));

  private constructor(
    sock: net.Socket,
    private readonly opts: ConnectOptions,
  ) {
    this.sock = sock;
    this.localAddress = (sock.localAddress ?? '').replace(/^::ffff:/, '');
    this.t = { ...RFC_TIMEOUTS, ...opts.timeouts };
    this.attach(sock);
  }

  get host(): string {
    return this.opts.hostname;
  }
  get ip(): string {
    return this.opts.ip;
  }
  get usable(): boolean {
    return !this.dead && !this.sock.destroyed;
  }
  /** Our address on this connection (read at connect: a closed socket has none). */
  readonly localAddress: string;

  private attach(s: net.Socket): void {
    s.setNoDelay(true);
    s.on('data', this.onData);
    s.on('error', (e: NodeJS.ErrnoException) =>
      this.fail(
        new DeliveryError(
          'closed',
          `connection to ${this.opts.hostname} [${this.opts.ip}] failed: ${e.code ?? e.message}`,
          undefined,
          e.code,
        ),
      ),
    );
    s.on('close', () =>
      this.fail(
        new DeliveryError('closed', `connection to ${this.opts.hostname} [${this.opts.ip}] closed by the peer`),
      ),
    );
  }

  private fail(e: DeliveryError): void {
    if (!this.dead) this.dead = e;
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(this.dead);
    }
  }

  private receive(s: string): void {
    this.buf += s;
    if (this.holding) {
      if (this.buf.length > MAX_REPLY_LINE) this.protocolError('data after the STARTTLS reply');
      return;
    }
    for (;;) {
      const nl = this.buf.indexOf('\n');
      if (nl < 0) {
        if (this.buf.length > MAX_REPLY_LINE) this.protocolError('reply line too long');
        return;
      }
      const line = this.buf.slice(0, nl).replace(/\r$/, '');
      this.buf = this.buf.slice(nl + 1);
      // RFC 5321 §4.2.1: the code, then '-' on every line but the last (SP, or nothing); one code.
      if (!/^[2-5]\d\d([ -]|$)/.test(line)) {
        this.protocolError(`unexpected reply line ${JSON.stringify(line.slice(0, 80))}`);
        return;
      }
      this.lines.push(line);
      if (this.lines.length > MAX_REPLY_LINES) {
        this.protocolError('reply has too many lines');
        return;
      }
      if (line[3] === '-') continue;
      const lines = this.lines;
      this.lines = [];
      const code = Number(line.slice(0, 3));
      if (lines.some((l) => Number(l.slice(0, 3)) !== code)) {
        this.protocolError('reply lines with different codes');
        return;
      }
      const texts = lines.map((l) => l.slice(4));
      // An RFC 3463 code (ENHANCEDSTATUSCODES, RFC 2034) starts the text; its class must match.
      const m = ENHANCED.exec(texts[0] + ' ');
      const enhanced = m && m[1] === String(code)[0] ? `${m[1]}.${m[2]}.${m[3]}` : undefined;
      const reply: Reply = {
        code,
        lines: texts,
        text: texts
          .map((t) => (enhanced ? t.replace(ENHANCED, '') : t))
          .join(' ')
          .trim(),
        ...(enhanced ? { enhanced } : {}),
      };
      const p = this.pending.shift();
      if (!p) {
        this.protocolError(`unsolicited reply ${code}`);
        return;
      }
      clearTimeout(p.timer);
      if (this.holdAfterReply) {
        this.holdAfterReply = false;
        this.holding = true;
        p.resolve(reply);
        return;
      }
      p.resolve(reply);
    }
  }

  private protocolError(what: string): void {
    this.fail(new DeliveryError('protocol', `protocol error from ${this.opts.hostname} [${this.opts.ip}]: ${what}`));
    this.sock.destroy();
  }

  /** Expect one reply within `seconds`. */
  private expectReply(seconds: number, what: string): Promise<Reply> {
    const r = this.replyLater(what);
    r.arm(seconds);
    return r.reply;
  }

  /**
   * Expect one reply, its timeout started later by `arm` (DATA termination runs from the final
   * dot, RFC 5321 §4.5.3.2.6, but the reply is expected in order before the data goes out).
   */
  private replyLater(what: string): { reply: Promise<Reply>; arm: (seconds: number) => void } {
    if (this.dead) return { reply: Promise.reject(this.dead), arm: () => {} };
    const entry: (typeof this.pending)[number] = { resolve: () => {}, reject: () => {} };
    const reply = new Promise<Reply>((resolve, reject) => {
      entry.resolve = resolve;
      entry.reject = reject;
    });
    this.pending.push(entry);
    const arm = (seconds: number) => {
      if (this.dead || !this.pending.includes(entry)) return;
      entry.timer = setTimeout(() => {
        this.fail(
          new DeliveryError(
            'timeout',
            `timeout after ${seconds}s waiting for the reply to ${what} from ${this.opts.hostname} [${this.opts.ip}]`,
          ),
        );
        this.sock.destroy();
      }, seconds * 1000);
      entry.timer.unref();
    };
    return { reply, arm };
  }

  /**
   * The message data, in writes of about DATA_WRITE octets, each taken by the peer (handed to the
   * kernel) within `dataBlock` seconds (RFC 5321 §4.5.3.2.5): a slow link that keeps making
   * progress never times out, a peer that stops reading does. Resolves once the last octet (the
   * final dot) was sent.
   */
  private async writeData(parts: Buffer[]): Promise<void> {
    let batch: Buffer[] = [];
    let size = 0;
    for (let i = 0; i < parts.length; i++) {
      batch.push(parts[i]);
      size += parts[i].length;
      if (size < DATA_WRITE && i < parts.length - 1) continue;
      const block = Buffer.concat(batch);
      batch = [];
      size = 0;
      for (let off = 0; off < block.length; off += DATA_WRITE)
        await this.writeWithin(block.subarray(off, off + DATA_WRITE), this.t.dataBlock);
    }
  }

  private writeWithin(b: Buffer, seconds: number): Promise<void> {
    if (this.dead) return Promise.reject(this.dead);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.fail(
          new DeliveryError(
            'timeout',
            `timeout: no progress for ${seconds}s sending the message data to ${this.opts.hostname} [${this.opts.ip}]`,
          ),
        );
        this.sock.destroy();
        reject(this.dead!);
      }, seconds * 1000);
      timer.unref();
      this.sock.write(b, (err) => {
        clearTimeout(timer);
        if (err) {
          this.fail(
            new DeliveryError(
              'closed',
              `connection to ${this.opts.hostname} [${this.opts.ip}] lost while sending the message data: ` +
                `${err.message}`,
            ),
          );
          reject(this.dead!);
        } else resolve();
      });
    });
  }

  private write(s: string | Buffer | Buffer[]): void {
    if (Array.isArray(s)) {
      this.sock.cork();
      for (const b of s) this.sock.write(b);
      this.sock.uncork();
    } else this.sock.write(s);
  }

  private async command(line: string, seconds = this.t.command): Promise<Reply> {
    const p = this.expectReply(seconds, line.split(' ')[0]);
    this.write(line + '\r\n');
    return p;
  }

  static async open(opts: ConnectOptions): Promise<SmtpConnection> {
    const t = { ...RFC_TIMEOUTS, ...opts.timeouts };
    const sock = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({
        host: opts.ip,
        port: opts.port,
        ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
      });
      const timer = setTimeout(() => {
        s.destroy();
        reject(
          new DeliveryError(
            'connect',
            `connection to ${opts.hostname} [${opts.ip}]:${opts.port} timed out after ${t.connect}s`,
            undefined,
            'ETIMEDOUT',
          ),
        );
      }, t.connect * 1000);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(
          new DeliveryError(
            'connect',
            `connection to ${opts.hostname} [${opts.ip}]:${opts.port} failed: ${e.code ?? e.message}`,
            undefined,
            e.code,
          ),
        );
      });
    });
    const c = new SmtpConnection(sock, opts);
    try {
      await c.handshake();
      return c;
    } catch (e) {
      if (e instanceof DeliveryError && c.tls) e.tls ??= c.tls;
      if (e instanceof DeliveryError) e.localAddress ??= c.localAddress;
      c.close();
      throw e;
    }
  }

  private async handshake(): Promise<void> {
    const g = await this.expectReply(this.t.greeting, 'greeting'); // 220, or 554 refusal (RFC 5321 §3.1)
    if (g.code !== 220)
      throw new DeliveryError(
        'greeting',
        `${this.opts.hostname} [${this.opts.ip}] greeted with ${g.code} ${g.text}`,
        g,
      );
    await this.ehlo();
    this.starttlsOffered = this.extensions.has('STARTTLS');
    if (this.opts.starttls === 'never') return;
    if (!this.starttlsOffered) {
      if (this.opts.starttls === 'require')
        throw new DeliveryError(
          'starttls',
          `${this.opts.hostname} [${this.opts.ip}] did not offer STARTTLS`,
          undefined,
          undefined,
          'starttls-not-offered',
        );
      this.tlsSkipped = { kind: 'starttls-not-offered', detail: 'STARTTLS not offered' };
      return;
    }
    // RFC 3207 §4: STARTTLS, then the handshake after its 220.
    this.holdAfterReply = true;
    const r = await this.command('STARTTLS', this.t.command);
    if (r.code !== 220) {
      // Still plaintext: anything after this reply is an ordinary (unsolicited) reply again.
      this.holding = false;
      this.receive('');
      if (this.opts.starttls === 'require')
        throw new DeliveryError(
          'starttls',
          `${this.opts.hostname} [${this.opts.ip}] refused STARTTLS: ${r.code} ${r.text}`,
          r,
          undefined,
          'starttls-refused',
        );
      this.tlsSkipped = { kind: 'starttls-refused', detail: `STARTTLS refused: ${r.code} ${r.text}` };
      return;
    }
    await this.upgrade();
    // RFC 3207 §4.2: what the server said before TLS is forgotten; EHLO again for its extensions.
    await this.ehlo();
  }

  private async ehlo(): Promise<void> {
    this.extensions.clear();
    const r = await this.command(`EHLO ${this.opts.heloName}`);
    if (r.code === 250) {
      for (const l of r.lines.slice(1)) {
        const [k, ...rest] = l.trim().split(/\s+/);
        if (k) this.extensions.set(k.toUpperCase(), rest.join(' '));
      }
      return;
    }
    // RFC 5321 §3.2/§4.1.4: a server without EHLO answers 500/502 (or 504): fall back to HELO.
    // 554 means no service at all (§3.1): no second try.
    if (r.code >= 500 && r.code !== 554) {
      const h = await this.command(`HELO ${this.opts.heloName}`);
      if (h.code === 250) return;
      throw new DeliveryError('ehlo', `${this.opts.hostname} [${this.opts.ip}] refused HELO: ${h.code} ${h.text}`, h);
    }
    throw new DeliveryError('ehlo', `${this.opts.hostname} [${this.opts.ip}] refused EHLO: ${r.code} ${r.text}`, r);
  }

  private upgrade(): Promise<void> {
    const raw = this.sock;
    raw.removeListener('data', this.onData);
    // Response injection: whatever the server sent after its 220 and before the handshake is dropped.
    this.buf = '';
    this.lines = [];
    this.holding = false;
    const servername = net.isIP(this.opts.hostname) ? undefined : this.opts.hostname;
    // Legacy TLS never under a required level, whatever the caller asked for.
    const legacy = this.opts.legacyTls === true && this.opts.starttls === 'try';
    const failed = (k: TlsFailureKind, detail: string, errno?: string) =>
      new DeliveryError(
        'tls',
        `TLS handshake with ${this.opts.hostname} [${this.opts.ip}] failed: ${describeTlsFailure(k, detail)}`,
        undefined,
        errno,
        k,
      );
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        s.destroy();
        reject(failed('handshake-timeout', `no handshake within ${this.t.command}s`));
      }, this.t.command * 1000);
      const s = tls.connect({
        socket: raw,
        ...(servername ? { servername } : {}),
        ...clientTlsProfile(legacy),
        ecdhCurve: ECDH_CURVES,
        rejectUnauthorized: false,
        // A legacy session is neither resumed nor saved: it must not be offered to a modern handshake.
        ...(this.opts.session && !legacy ? { session: this.opts.session } : {}),
        ...(this.opts.clientCert ? { cert: this.opts.clientCert.cert, key: this.opts.clientCert.key } : {}),
      });
      if (!legacy) s.on('session', (sess: Buffer) => this.opts.onSession?.(sess));
      s.once('secureConnect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        this.sock = s;
        this.attach(s);
        this.tls = this.describe(s);
        resolve();
      });
      s.once('error', (e: Error & { code?: string }) => {
        clearTimeout(timer);
        reject(
          failed(handshakeFailureKind(e.code), `${e.code ?? ''} ${e.message}`.replace(/\s+/g, ' ').trim(), e.code),
        );
      });
    });
  }

  private describe(s: tls.TLSSocket): PeerTls {
    const c = s.getCipher();
    const name = c.standardName || c.name;
    const version = s.getProtocol() ?? 'unknown';
    const out: PeerTls = {
      version,
      cipher: name,
      bits: cipherBits(name),
      resumed: s.isSessionReused(),
      chainValid: false,
    };
    if (!isModernSession(version, c.name)) out.legacy = true;
    const chain = peerChain(s);
    const leaf = chain.at(0);
    if (!leaf) {
      out.chainError = 'no certificate presented';
      out.chainFailure = 'certificate-not-trusted';
      return out;
    }
    out.presented = chain;
    const v = verifyChain(leaf, chain.slice(1), this.opts.trust);
    Object.assign(out, {
      subject: dnLine(leaf.subject),
      issuer: dnLine(leaf.issuer),
      fingerprint256: leaf.fingerprint256,
      names: certificateNames(leaf),
      chainValid: v.ok,
      chain: v.ok ? v.chain : chain,
      ...(v.error ? { chainError: v.error } : {}),
      ...(v.failure ? { chainFailure: v.failure } : {}),
    });
    return out;
  }

  /**
   * One transaction (RFC 5321 §3.3: MAIL, RCPT..., DATA). With PIPELINING, MAIL, every RCPT and
   * DATA go out in one write (RFC 2920 §3.1: DATA ends the group).
   * One copy for all recipients at the same host (RFC 5321 §4.5.4.1).
   * Throws DeliveryError for MAIL refusal or transport failures; per-recipient replies are returned.
   */
  async send(env: Envelope, data: Buffer): Promise<TransactionResult> {
    const ext = this.extensions;
    const { mail, rcpts: rcptLines } = envelopeCommands(env, ext, data.length);
    const pipelining = ext.has('PIPELINING');
    if (pipelining && ext.has('CHUNKING') && data.length <= CHUNKED_MAX)
      return this.sendChunked(env, data, mail, rcptLines);
    let mailR: Reply;
    const rcptR: Reply[] = [];
    let dataR: Reply;
    if (pipelining) {
      const waits = [
        this.expectReply(this.t.command, 'MAIL'),
        ...rcptLines.map(() => this.expectReply(this.t.command, 'RCPT')),
        this.expectReply(this.t.dataInit, 'DATA'),
      ];
      this.write([mail, ...rcptLines, 'DATA'].join('\r\n') + '\r\n');
      const replies = await Promise.all(waits);
      mailR = replies[0];
      rcptR.push(...replies.slice(1, -1));
      dataR = replies.at(-1)!;
    } else {
      mailR = await this.command(mail);
      if (mailR.code !== 250) return { mail: mailR, rcpts: env.rcpts.map(() => mailR) };
      for (const l of rcptLines) rcptR.push(await this.command(l));
      // No recipient accepted: no DATA (RFC 5321 §3.3).
      if (!rcptR.some((r) => r.code === 250 || r.code === 251)) {
        await this.rset();
        return { mail: mailR, rcpts: rcptR };
      }
      dataR = await this.command('DATA', this.t.dataInit);
    }
    const accepted = rcptR.some((r) => r.code === 250 || r.code === 251);
    if (accepted && mailR.code === 250 && dataR.code !== 354 && dataR.code < 400) {
      // DATA answered with neither 354 nor a refusal (RFC 5321 §4.3.2): nothing was sent, and this
      // must not read as a reply to the message.
      this.protocolError(`${dataR.code} in reply to DATA`);
      throw this.dead!;
    }
    // Message data only after a 354 (RFC 5321 §3.3).
    if (mailR.code !== 250 || !accepted || dataR.code !== 354) {
      if (dataR.code === 354) {
        // A server that said 354 without accepted recipients: end the empty transaction (RFC 2920
        // §3.1 has the client send a lone dot then).
        const end = this.expectReply(this.t.dataEnd, 'end of data');
        this.write('.\r\n');
        await end;
      }
      await this.rset();
      return {
        mail: mailR,
        rcpts: mailR.code !== 250 ? env.rcpts.map(() => mailR) : rcptR,
        ...(dataR.code !== 354 && accepted ? { data: dataR } : {}),
      };
    }
    // The reply to the final dot decides the message (RFC 5321 §4.2.5); its wait (§4.5.3.2.6)
    // starts once the final dot was sent.
    const end = this.replyLater('end of data');
    end.reply.catch(() => {}); // a failure while writing rejects it too: reported by writeData
    await this.writeData(dotStuff(data));
    end.arm(this.t.dataEnd);
    const final = await end.reply;
    this.messages++;
    return { mail: mailR, rcpts: rcptR, data: final };
  }

  /**
   * One transaction with CHUNKING (RFC 3030) on a server that also offers PIPELINING: MAIL, every
   * RCPT and `BDAT <size> LAST` go out in one flight with the message right after them (RFC 3030
   * §4.2 lets BDAT be pipelined), and every reply comes back in one round trip, where DATA takes two
   * (the 354, then the reply to the final dot). The message goes as stored: no dot-stuffing, no
   * terminator, a final CRLF added when missing (as DATA adds one). The reply to BDAT LAST decides
   * the message like the reply to the final dot. A server that refused MAIL or every recipient
   * discards the chunk and fails the BDAT (RFC 3030 §2); so does one whose BDAT failed: RSET then,
   * so that nothing of the transaction is left on a connection that may be reused.
   */
  private async sendChunked(
    env: Envelope,
    data: Buffer,
    mail: string,
    rcptLines: string[],
  ): Promise<TransactionResult> {
    const crlf = endsWithCrlf(data);
    const size = data.length + (crlf ? 0 : 2);
    const commands = [
      this.expectReply(this.t.command, 'MAIL'),
      ...rcptLines.map(() => this.expectReply(this.t.command, 'RCPT')),
    ];
    // The reply to the chunk decides the message; its wait (RFC 5321 §4.5.3.2.6) starts once the
    // last octet was sent.
    const end = this.replyLater('BDAT');
    const replies = Promise.all(commands);
    replies.catch(() => {}); // a failure while writing rejects them too: reported by writeData
    end.reply.catch(() => {});
    const head = Buffer.from([mail, ...rcptLines, `BDAT ${size} LAST`].join('\r\n') + '\r\n');
    await this.writeData(crlf ? [head, data] : [head, data, CRLF]);
    end.arm(this.t.dataEnd);
    const [mailR, ...rcptR] = await replies;
    const final = await end.reply;
    if (final.code >= 300 && final.code < 400) {
      // BDAT has no intermediate reply (RFC 3030 §2): a 3xx is no verdict on the message.
      this.protocolError(`${final.code} in reply to BDAT`);
      throw this.dead!;
    }
    const accepted = rcptR.some((r) => r.code === 250 || r.code === 251);
    if (mailR.code !== 250 || !accepted) {
      await this.rset();
      return { mail: mailR, rcpts: mailR.code !== 250 ? env.rcpts.map(() => mailR) : rcptR };
    }
    if (final.code >= 400) await this.rset();
    this.messages++;
    return { mail: mailR, rcpts: rcptR, data: final, chunked: true };
  }

  async rset(): Promise<void> {
    try {
      await this.command('RSET');
    } catch {
      /* a dead connection is simply not reused */
    }
  }

  /** Polite close (QUIT, then end: RFC 5321 §4.1.1.10); never throws. */
  async quit(): Promise<void> {
    if (this.usable) {
      try {
        await this.command('QUIT', 5);
      } catch {
        /* closing anyway */
      }
    }
    this.close();
  }

  close(): void {
    this.dead ??= new DeliveryError('closed', 'connection closed');
    this.sock.destroy();
  }
}

/**
 * The MAIL FROM and RCPT TO command lines for an envelope, with the parameters the server's
 * extensions allow. Throws DeliveryError (553 5.1.7 / 5.1.3, permanent) when an address is not a valid
 * RFC 5321 path: a broken path is never emitted.
 */
export function envelopeCommands(
  env: Envelope,
  ext: ReadonlyMap<string, string>,
  size: number,
): { mail: string; rcpts: string[] } {
  const utf8 = env.smtputf8 && ext.has('SMTPUTF8');
  const paths: string[] = [];
  for (const [i, address] of [env.from, ...env.rcpts.map((r) => r.address)].entries()) {
    const p = smtpPath(address, i === 0 ? 'sender' : 'recipient', utf8);
    if (!p.ok) {
      const text =
        `not sent: the ${i === 0 ? 'sender' : 'recipient'} address is not a valid RFC 5321 path ` + `(${p.problem})`;
      throw new DeliveryError('mail', text, { code: 553, enhanced: i === 0 ? '5.1.7' : '5.1.3', lines: [text], text });
    }
    paths.push(p.path);
  }
  // Parameters only for extensions the server offered (RFC 5321 §3.3): SIZE (RFC 1870 §6),
  // BODY (RFC 6152 §2), SMTPUTF8 (RFC 6531 §3.4), RET/ENVID and NOTIFY/ORCPT (RFC 3461 §4).
  let mail = `MAIL FROM:${paths[0]}`;
  if (ext.has('SIZE')) mail += ` SIZE=${size}`;
  if (env.eightBit && ext.has('8BITMIME')) mail += ' BODY=8BITMIME';
  if (utf8) mail += ' SMTPUTF8';
  if (env.requireTls && ext.has('REQUIRETLS')) mail += ' REQUIRETLS';
  const dsn = ext.has('DSN');
  if (dsn && env.ret) mail += ` RET=${env.ret}`;
  if (dsn && env.envid) mail += ` ENVID=${env.envid}`;
  const rcpts = env.rcpts.map(
    (r, i) =>
      `RCPT TO:${paths[i + 1]}` +
      (dsn && r.notify ? ` NOTIFY=${r.notify}` : '') +
      (dsn && r.orcpt ? ` ORCPT=${r.orcpt}` : ''),
  );
  return { mail, rcpts };
}

const DOT_LINE = Buffer.from('\r\n.');
const END = Buffer.from('.\r\n');
const CRLF = Buffer.from('\r\n');
const CRLF_END = Buffer.from('\r\n.\r\n');

/** Dot-stuff CRLF data (RFC 5321 §4.5.2) and append the terminator, with a CRLF first if missing (§4.1.1.4). */
export function dotStuff(data: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let start = 0;
  if (data[0] === 0x2e) {
    out.push(Buffer.from('.'));
  }
  for (let i = data.indexOf(DOT_LINE); i >= 0; i = data.indexOf(DOT_LINE, i + 3)) {
    out.push(data.subarray(start, i + 3), Buffer.from('.'));
    start = i + 3;
  }
  out.push(data.subarray(start));
  out.push(endsWithCrlf(data) ? END : CRLF_END);
  return out;
}
