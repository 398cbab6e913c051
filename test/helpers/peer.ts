// A scripted SMTP peer for outbound tests: its own loopback address, optional STARTTLS (with the
// TLS versions/ciphers given), scripted replies per phase, response injection, broken handshakes,
// a greeting per connection (421 to some), slow answers to the end of DATA; counts the connections
// and the transactions open at once.
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
  /**
   * Greeting of connection number n (from 1), instead of `greeting`; undefined = the usual 220.
   * Any other code than 220 closes the connection after it (a receiver turning a sender away).
   */
  greetingFor?: (n: number) => string | undefined;
  /** Wait this long before answering the end of DATA (a receiver that takes its time). */
  dataDelayMs?: number;
  /** Reply to EHLO once TLS is up (e.g. "421 4.7.0 closing"), then close: SMTP fails after STARTTLS. */
  ehloAfterTls?: string;
}

export interface Peer {
  host: string;
  port: number;
  messages: PeerMessage[];
  connections: number;
  /** Connections open now, and the most open at once. */
  open: number;
  maxOpen: number;
  /** Transactions (MAIL accepted until the reply to the end of DATA) running now, and the most at once. */
  transactions: number;
  maxTransactions: number;
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
    open: 0,
    maxOpen: 0,
    transactions: 0,
    maxTransactions: 0,
    tlsSessions: 0,
    transcript: [],
    close: async () => {},
  };
  const rcptCount = new Map<string, number>();
  const name = o.name ?? `peer.${o.host}`;
  const srv = net.createServer((raw) => {
    const conn = ++peer.connections;
    peer.maxOpen = Math.max(peer.maxOpen, ++peer.open);
    let inTx = false;
    const txEnd = () => {
      if (inTx) peer.transactions--;
      inTx = false;
    };
    raw.once('close', () => {
      peer.open--;
      txEnd();
    });
    /** Commands that arrive while the reply to the end of DATA is held wait their turn. */
    let held = false;
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
      if (held) return;
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
          from = '';
          to = [];
          if (o.dataDelayMs) {
            held = true;
            setTimeout(() => {
              held = false;
              txEnd();
              say(r ?? '250 2.0.0 Ok: queued');
              onData(Buffer.alloc(0));
            }, o.dataDelayMs);
            return;
          }
          txEnd();
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
          const r = o.mail?.(from) ?? '250 2.1.0 Ok';
          if (r.startsWith('2') && !inTx) {
            inTx = true;
            peer.maxTransactions = Math.max(peer.maxTransactions, ++peer.transactions);
          }
          say(r);
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
          txEnd();
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
    raw.on('error', () => {});
    const greeting = o.greetingFor?.(conn) ?? o.greeting ?? `220 ${name} ESMTP`;
    peer.transcript.push(`S: ${greeting}`);
    if (o.greetingFor && !greeting.startsWith('220')) {
      raw.end(`${greeting}\r\n`);
      return;
    }
    raw.on('data', onData);
    raw.write(`${greeting}\r\n`);
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
