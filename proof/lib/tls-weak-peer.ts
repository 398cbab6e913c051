// A deliberately weak TLS peer for the outbound half of the TLS grading proof: a real
// `openssl s_server` restricted to old protocol versions or weak suites, behind a tiny SMTP front
// (s_server does not speak SMTP). The front does the plaintext part itself (greeting, EHLO with
// STARTTLS, a sink that would accept MAIL/RCPT/DATA if a client sent them in plaintext) and, after
// its 220 to STARTTLS, relays the raw TCP stream to s_server, which then does the TLS handshake.
// Everything listens on loopback only; every wait is bounded.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';

export interface WeakPeerStats {
  connections: number;
  /** STARTTLS commands answered with 220 (each then relayed to s_server). */
  starttls: number;
  /** MAIL/RCPT/DATA lines received in plaintext (a leak when non-zero). */
  plainTransaction: string[];
  /** Message bytes received in plaintext after a DATA (a leak when non-zero). */
  plainBodyBytes: number;
  /** Bytes the client sent after STARTTLS (TLS records relayed to s_server). */
  relayedBytes: number;
}

export interface WeakPeer {
  ip: string;
  port: number;
  stats: WeakPeerStats;
  /** TLS sessions s_server completed (it prints "CIPHER is ..." for each established session). */
  sessions(): number;
  /** s_server's stdout and stderr so far. */
  output(): string;
  close(): Promise<void>;
}

function waitFor(what: string, ms: number, test: () => boolean): Promise<void> {
  const end = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = () => {
      if (test()) return resolve();
      if (Date.now() > end) return reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
      setTimeout(tick, 25);
    };
    tick();
  });
}

async function loopbackPort(ip = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, ip, () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** Start s_server on 127.0.0.1 (random port) with `sslArgs`, and the SMTP front on ip:port. */
export async function startWeakPeer(o: {
  ip: string;
  port: number;
  name: string;
  cert: string;
  key: string;
  sslArgs: string[];
}): Promise<WeakPeer> {
  const stats: WeakPeerStats = {
    connections: 0,
    starttls: 0,
    plainTransaction: [],
    plainBodyBytes: 0,
    relayedBytes: 0,
  };
  let out = '';
  let proc: ChildProcess | undefined;
  let sport = 0;
  for (let attempt = 0; attempt < 5 && !proc; attempt++) {
    sport = await loopbackPort();
    const p = spawn(
      'openssl',
      ['s_server', '-accept', `127.0.0.1:${sport}`, '-cert', o.cert, '-key', o.key, ...o.sslArgs],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let local = '';
    p.stdout!.on('data', (d: Buffer) => {
      local += d.toString('latin1');
      out += d.toString('latin1');
    });
    p.stderr!.on('data', (d: Buffer) => {
      local += d.toString('latin1');
      out += d.toString('latin1');
    });
    p.on('error', (e) => {
      local += `spawn error: ${e.message}`;
    });
    try {
      await waitFor(
        `openssl s_server ${o.sslArgs.join(' ')} to listen`,
        10_000,
        () => /\bACCEPT\b/.test(local) || p.exitCode !== null || /spawn error/.test(local),
      );
    } catch {
      /* handled below */
    }
    if (/\bACCEPT\b/.test(local) && p.exitCode === null) {
      proc = p;
      break;
    }
    p.kill('SIGKILL');
    if (attempt === 4 || !/in use|bind/i.test(local))
      throw new Error(`openssl s_server ${o.sslArgs.join(' ')} did not start: ${local.slice(-500)}`);
  }
  const sockets = new Set<net.Socket>();
  const front = net.createServer((raw) => {
    stats.connections++;
    sockets.add(raw);
    raw.on('close', () => sockets.delete(raw));
    raw.on('error', () => {});
    let buf = '';
    let inData = false;
    let relaying = false;
    const say = (s: string) => raw.write(s + '\r\n');
    const onData = (d: Buffer) => {
      if (relaying) return;
      buf += d.toString('latin1');
      for (;;) {
        if (inData) {
          const end = buf.indexOf('\r\n.\r\n');
          if (end < 0) {
            stats.plainBodyBytes += buf.length;
            buf = '';
            return;
          }
          stats.plainBodyBytes += end + 2;
          buf = buf.slice(end + 5);
          inData = false;
          say('250 2.0.0 Ok: queued in plaintext');
          continue;
        }
        const nl = buf.indexOf('\n');
        if (nl < 0) {
          if (buf.length > 10_000) raw.destroy();
          return;
        }
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        const verb = line.split(' ')[0].toUpperCase();
        if (verb === 'EHLO') raw.write(`250-${o.name}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 STARTTLS\r\n`);
        else if (verb === 'HELO') say(`250 ${o.name}`);
        else if (verb === 'STARTTLS') {
          stats.starttls++;
          relaying = true;
          raw.removeListener('data', onData);
          say('220 2.0.0 Ready to start TLS');
          const up = net.connect({ host: '127.0.0.1', port: sport });
          sockets.add(up);
          up.on('close', () => {
            sockets.delete(up);
            raw.destroy();
          });
          up.on('error', () => raw.destroy());
          raw.on('close', () => up.destroy());
          if (buf.length) {
            stats.relayedBytes += buf.length;
            up.write(Buffer.from(buf, 'latin1'));
            buf = '';
          }
          raw.on('data', (c: Buffer) => {
            stats.relayedBytes += c.length;
            up.write(c);
          });
          up.on('data', (c: Buffer) => raw.write(c));
          return;
        } else if (verb === 'MAIL' || verb === 'RCPT') {
          stats.plainTransaction.push(line);
          say(verb === 'MAIL' ? '250 2.1.0 Ok' : '250 2.1.5 Ok');
        } else if (verb === 'DATA') {
          stats.plainTransaction.push(line);
          inData = true;
          say('354 End data with <CR><LF>.<CR><LF>');
        } else if (verb === 'RSET' || verb === 'NOOP') say('250 2.0.0 Ok');
        else if (verb === 'QUIT') {
          say('221 2.0.0 Bye');
          raw.end();
          return;
        } else say('502 5.5.2 Error: command not recognized');
      }
    };
    raw.on('data', onData);
    say(`220 ${o.name} ESMTP (SMTP front of openssl s_server)`);
  });
  await new Promise<void>((resolve, reject) => {
    front.once('error', reject);
    front.listen(o.port, o.ip, () => resolve());
  });
  return {
    ip: o.ip,
    port: o.port,
    stats,
    sessions: () => (out.match(/^CIPHER is /gm) ?? []).length,
    output: () => out,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => front.close(() => r()));
      if (proc && proc.exitCode === null) {
        const done = new Promise((r) => proc!.once('exit', r));
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc!.kill('SIGKILL'), 3000);
        await done;
        clearTimeout(t);
      }
    },
  };
}

export interface ClientProbe {
  ok: boolean;
  protocol?: string;
  cipher?: string;
  output: string;
}

/**
 * The positive control: a permissive `openssl s_client -starttls smtp` through the front must
 * complete a handshake, which proves the peer really offers what it is meant to offer.
 */
export function opensslStarttlsProbe(
  ip: string,
  port: number,
  args: string[],
  timeoutMs = 15_000,
): Promise<ClientProbe> {
  return new Promise((resolve) => {
    const p = spawn(
      'openssl',
      ['s_client', '-brief', '-connect', `${ip}:${port}`, '-starttls', 'smtp', '-name', 'probe.proof.test', ...args],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let output = '';
    p.stdout!.on('data', (d: Buffer) => {
      output += d.toString('latin1');
    });
    p.stderr!.on('data', (d: Buffer) => {
      output += d.toString('latin1');
    });
    p.stdin!.end('QUIT\r\n');
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('close', () => {
      clearTimeout(t);
      // -brief: "CONNECTION ESTABLISHED", "Protocol version: TLSv1.1", "Ciphersuite: ECDHE-RSA-AES256-SHA".
      const cipher = /^Ciphersuite: (\S+)/m.exec(output)?.[1];
      const protocol = /^Protocol version: (\S+)/m.exec(output)?.[1];
      const ok = /^CONNECTION ESTABLISHED/m.test(output) && !!cipher;
      resolve({ ok, ...(protocol ? { protocol } : {}), ...(cipher ? { cipher } : {}), output });
    });
  });
}
