// A scripted SMTP peer for outbound tests: its own loopback address, optional STARTTLS (with the
// TLS versions/ciphers given), scripted replies per phase, response injection, broken handshakes.
// Deliberately independent of the gateway's own server code.
import net from 'node:net';
import tls from 'node:tls';

export interface PeerMessage {
  from: string;
  to: string[];
  data: string;
  tls: { version: string; cipher: string } | null;
  conn: number;
}

export interface PeerOptions {
  host: string;
  port: number;
  name?: string;
  /** Offer STARTTLS with this certificate. */
  tls?: { cert: string; key: string; minVersion?: tls.SecureVersion; maxVersion?: tls.SecureVersion; ciphers?: string };
  /** Answer STARTTLS with this reply instead of 220 (e.g. "454 4.7.0 TLS not available"). */
  starttlsReply?: string;
  /** After the 220 to STARTTLS, send these bytes (response injection) before the handshake. */
  injectAfterStarttls?: string;
  /** After the 220 to STARTTLS, send garbage and close (a broken TLS stack). */
  breakHandshake?: boolean;
  /** Advertise STARTTLS but do not really have it: reply 502 (stripping). */
  extensions?: string[];
  /** Reply for RCPT (n = attempt number of this peer for this address, from 1); undefined = 250. */
  rcpt?: (address: string, n: number) => string | undefined;
  mail?: (from: string) => string | undefined;
  data?: (msg: PeerMessage) => string | undefined;
  greeting?: string;
  /** Reply to EHLO once TLS is up (e.g. "421 4.7.0 closing"), then close: SMTP fails after STARTTLS. */
  ehloAfterTls?: string;
}

export interface Peer {
  host: string;
  port: number;
  messages: PeerMessage[];
  connections: number;
  tlsSessions: number;
  transcript: string[];
  close(): Promise<void>;
}

export async function startPeer(o: PeerOptions): Promise<Peer> {
  const peer: Peer = {
    host: o.host,
    port: o.port,
    messages: [],
    connections: 0,
    tlsSessions: 0,
    transcript: [],
    close: async () => {},
  };
  const rcptCount = new Map<string, number>();
  const name = o.name ?? `peer.${o.host}`;
  const srv = net.createServer((raw) => {
    const conn = ++peer.connections;
    let sock: net.Socket = raw;
    let buf = '';
    let inData = false;
    let data = '';
    let from = '';
    let to: string[] = [];
    let tlsInfo: PeerMessage['tls'] = null;
    const say = (s: string) => {
      peer.transcript.push(`S: ${s}`);
      sock.write(s + '\r\n');
    };
    const onData = (d: Buffer) => {
      buf += d.toString('latin1');
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          const endAtStart = data === '' && buf.startsWith('.\r\n');
          if (end < 0 && !endAtStart) return;
          const body = endAtStart ? '' : buf.slice(0, end + 2);
          buf = endAtStart ? buf.slice(3) : buf.slice(end + 5);
          inData = false;
          const msg: PeerMessage = { from, to, data: body.replace(/^\.\./gm, '.'), tls: tlsInfo, conn };
          const r = o.data?.(msg);
          if (!r || r.startsWith('2')) peer.messages.push(msg);
          say(r ?? '250 2.0.0 Ok: queued');
          from = '';
          to = [];
          continue;
        }
        const nl = buf.indexOf('\r\n');
        if (nl < 0) return;
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        peer.transcript.push(`C: ${line}`);
        const verb = line.split(' ')[0].toUpperCase();
        if (verb === 'EHLO' && tlsInfo && o.ehloAfterTls) {
          say(o.ehloAfterTls);
          sock.end();
          return;
        }
        if (verb === 'EHLO') {
          const ext = o.extensions ?? [
            'PIPELINING',
            'SIZE 10240000',
            '8BITMIME',
            'SMTPUTF8',
            'ENHANCEDSTATUSCODES',
            'DSN',
            ...(o.tls && !tlsInfo ? ['STARTTLS'] : []),
          ];
          sock.write(
            [`250-${name}`, ...ext.map((e, i) => `250${i === ext.length - 1 ? ' ' : '-'}${e}`)].join('\r\n') + '\r\n',
          );
        } else if (verb === 'HELO') say(`250 ${name}`);
        else if (verb === 'STARTTLS') {
          if (o.starttlsReply || !o.tls) {
            say(o.starttlsReply ?? '502 5.5.1 Not implemented');
            continue;
          }
          say(
            '220 2.0.0 Ready to start TLS' +
              (o.injectAfterStarttls ? `\r\n${o.injectAfterStarttls.replace(/\r\n$/, '')}` : ''),
          );
          buf = '';
          if (o.breakHandshake) {
            raw.write('this is not TLS\r\n');
            raw.end();
            return;
          }
          raw.removeListener('data', onData);
          const t = new tls.TLSSocket(raw, {
            isServer: true,
            secureContext: tls.createSecureContext({
              cert: o.tls.cert,
              key: o.tls.key,
              minVersion: o.tls.minVersion ?? 'TLSv1.2',
              ...(o.tls.maxVersion ? { maxVersion: o.tls.maxVersion } : {}),
              ...(o.tls.ciphers ? { ciphers: o.tls.ciphers } : {}),
            }),
          });
          t.on('error', () => raw.destroy());
          t.once('secure', () => {
            peer.tlsSessions++;
            tlsInfo = { version: t.getProtocol() ?? '', cipher: t.getCipher().standardName };
            sock = t;
            from = '';
            to = [];
            t.on('data', onData);
          });
          return;
        } else if (verb === 'MAIL') {
          from = /<([^>]*)>/.exec(line)?.[1] ?? '';
          say(o.mail?.(from) ?? '250 2.1.0 Ok');
        } else if (verb === 'RCPT') {
          const a = /<([^>]*)>/.exec(line)?.[1] ?? '';
          const n = (rcptCount.get(a) ?? 0) + 1;
          rcptCount.set(a, n);
          const r = o.rcpt?.(a, n) ?? '250 2.1.5 Ok';
          if (r.startsWith('2')) to.push(a);
          say(r);
        } else if (verb === 'DATA') {
          if (!to.length) {
            say('554 5.5.1 Error: no valid recipients');
            continue;
          }
          inData = true;
          data = '';
          say('354 End data with <CR><LF>.<CR><LF>');
        } else if (verb === 'RSET') {
          from = '';
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
    raw.on('error', () => {});
    peer.transcript.push(`S: ${o.greeting ?? `220 ${name} ESMTP`}`);
    raw.write(`${o.greeting ?? `220 ${name} ESMTP`}\r\n`);
  });
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(o.port, o.host, () => resolve());
  });
  peer.close = () =>
    new Promise((r) => {
      srv.close(() => r());
      for (const s of sockets) s.destroy();
    });
  const sockets = new Set<net.Socket>();
  srv.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  return peer;
}
