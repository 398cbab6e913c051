// Connection admission (issue 8, items 7 and 11) against the real process:
//  - a session's place in maxConnections / maxConnectionsPerIP is free as soon as it ends (221 or
//    421), not when the peer finally closes its socket; counts never drop twice; sockets of ended
//    sessions that the peer keeps open are bounded;
//  - smtp.reservedConnections: clients an inbound connector identifies (by address, or by a client
//    certificate already proven from that address) get in when the general pool is full.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { cleanup, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { makePki } from '../helpers/pki.ts';
import { SmtpClient, type Reply } from '../helpers/smtp.ts';

const PARTNER_IP = '127.0.0.5'; // in a partner connector's senderIPAddresses
const CERT_IP = '127.0.0.6'; // a partner identified by its client certificate
const STRANGER = '127.0.0.7';
const QUEUED = /^250 2\.0\.0 OK queued as [0-9A-Z]+$/;
const TOO_MANY = '421 4.7.0 Too many connections, try again later';

let pkiDir: string;
let fabrikam: { cert: string; key: string };
let stranger: { cert: string; key: string };
let gwQ: GatewayHandle; // maxConnections 3, maxConnectionsPerIP 2, no connectors
let gwR: GatewayHandle; // maxConnections 6, reservedConnections 2, connectors by IP and by certificate

before(async () => {
  pkiDir = tempDir('pc-admission-');
  const pki = await makePki(pkiDir, 'Admission');
  const server = await pki.issue('mx1.contoso.test');
  const pem = (c: { cert: string; key: string }) => ({
    cert: readFileSync(c.cert, 'utf8'),
    key: readFileSync(c.key, 'utf8'),
  });
  fabrikam = pem(await pki.issue('mx1.fabrikam.test'));
  stranger = pem(await pki.issue('mx.stranger.test'));
  [gwQ, gwR] = await Promise.all([
    startGateway({ config: { smtp: { maxConnections: 3, maxConnectionsPerIP: 2 } } }),
    startGateway({
      config: {
        smtp: { maxConnections: 6, reservedConnections: 2, maxConnectionsPerIP: 50 },
        tls: {
          certificates: [{ cert: server.cert, key: server.key }],
          trust: { system: false, caFiles: [pki.rootFile] },
        },
        organizations: [
          {
            name: 'contoso',
            acceptedDomains: [{ domain: 'contoso.test' }],
            inboundConnectors: [
              { name: 'Partner by address', connectorType: 'partner', senderIPAddresses: [`${PARTNER_IP}/32`] },
              {
                name: 'From Fabrikam',
                connectorType: 'partner',
                senderDomains: ['fabrikam.test'],
                tlsSenderCertificateName: 'mx1.fabrikam.test',
              },
            ],
          },
        ],
      },
    }),
  ]);
});
after(async () => {
  await Promise.all([cleanup(gwQ), cleanup(gwR)]);
  rmSync(pkiDir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A raw client that, like a peer that reconnects at once and cleans up later, does not close its
 * side when the server closes (allowHalfOpen): the server's socket lingers until we destroy it.
 */
class Lingerer {
  readonly sock: net.Socket;
  text = '';
  private constructor(sock: net.Socket) {
    this.sock = sock;
    sock.on('data', (d: Buffer) => {
      this.text += d.toString('latin1');
    });
    sock.on('error', () => {});
  }
  static async open(port: number, localAddress: string): Promise<Lingerer> {
    const s = net.connect({ port, host: '127.0.0.1', localAddress, allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      s.once('connect', () => resolve());
      s.once('error', reject);
    });
    return new Lingerer(s);
  }
  /** Whether `s` was received within `ms`. */
  async waitFor(s: string, ms = 5000): Promise<boolean> {
    const end = Date.now() + ms;
    while (!this.text.includes(s) && Date.now() < end) await sleep(5);
    return this.text.includes(s);
  }
  /** The first reply line starting at offset `from`, waiting up to `ms`. */
  async line(from: number, ms = 5000): Promise<string> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const nl = this.text.indexOf('\r\n', from);
      if (nl >= 0) return this.text.slice(from, nl);
      await sleep(5);
    }
    return `(nothing after ${JSON.stringify(this.text)})`;
  }
}

async function greeting(gw: GatewayHandle, ip: string): Promise<{ c: SmtpClient; g: Reply | null }> {
  const c = await SmtpClient.connect(gw.port, '127.0.0.1', ip);
  return { c, g: await c.read(5000) };
}

async function admitted(gw: GatewayHandle, ip: string): Promise<SmtpClient> {
  const { c, g } = await greeting(gw, ip);
  assert.equal(g?.code, 220, `a session from ${ip} is admitted: ${g?.text}`);
  return c;
}

async function refused(gw: GatewayHandle, ip: string, text = TOO_MANY): Promise<void> {
  const { c, g } = await greeting(gw, ip);
  assert.equal(g?.text, text, `a session from ${ip} is refused`);
  c.close();
}

async function tls(c: SmtpClient, id?: { cert: string; key: string }): Promise<void> {
  await c.expect('EHLO client.test', 250);
  await c.starttls({ servername: 'mx1.contoso.test', ...(id ?? {}) });
}

describe('a session counts until it ends (maxConnectionsPerIP 2, maxConnections 3)', () => {
  test('100 QUIT-and-reconnect cycles from one address, each peer keeping its old connection open: no 421', async () => {
    const open: Lingerer[] = [];
    try {
      for (let i = 0; i < 100; i++) {
        const l = await Lingerer.open(gwQ.port, '127.0.0.1');
        open.push(l);
        const g = await l.line(0);
        assert.match(g, /^220 /, `cycle ${i}: ${g}`);
        l.sock.write('EHLO client.test\r\n');
        assert.ok(await l.waitFor('\r\n250 '), `cycle ${i}: EHLO answered`);
        l.sock.write('QUIT\r\n');
        assert.ok(await l.waitFor('\r\n221 2.0.0 '), `cycle ${i}: QUIT answered`);
        while (open.length > 2) open.shift()!.sock.destroy(); // two older sessions' sockets stay open
      }
    } finally {
      for (const l of open) l.sock.destroy();
    }
    const refusedEv = gwQ.events().filter((e) => e.event === 'session.rejected');
    assert.equal(refusedEv.length, 0, `no 421 at admission: ${JSON.stringify(refusedEv.slice(0, 3))}`);
  });

  test('the limits still hold afterwards (no count dropped twice): 2 per address, 3 in all', async () => {
    // Sessions that ended both ways: QUIT (then the peer closes), and the peer closing without QUIT.
    for (let i = 0; i < 5; i++) {
      const c = await admitted(gwQ, '127.0.0.1');
      if (i % 2) {
        await c.expect('QUIT', 221);
        await c.closedPromise;
      } else {
        c.close();
      }
    }
    await sleep(300);
    const a1 = await admitted(gwQ, '127.0.0.1');
    const a2 = await admitted(gwQ, '127.0.0.1');
    await refused(gwQ, '127.0.0.1', '421 4.7.0 Too many connections from your address, try again later');
    const b1 = await admitted(gwQ, '127.0.0.2');
    await refused(gwQ, '127.0.0.3');
    for (const c of [a1, a2, b1]) c.close();
  });

  test('sockets of ended sessions that the peer keeps open are bounded by maxConnections (oldest closed first)', async () => {
    await sleep(300);
    const all: Lingerer[] = [];
    try {
      for (let i = 0; i < 8; i++) {
        const l = await Lingerer.open(gwQ.port, `127.0.0.${20 + i}`);
        all.push(l);
        assert.match(await l.line(0), /^220 /, `connection ${i}`);
        l.sock.write('QUIT\r\n');
        assert.ok(await l.waitFor('\r\n221 2.0.0 '), `connection ${i}: QUIT answered`);
      }
      await sleep(300);
      // The server logs session.end when a session's socket closes (well within the 10 s linger here).
      const ended = new Set(
        gwQ
          .events()
          .filter((e) => e.event === 'session.end')
          .map((e) => e.ip),
      );
      const closed = all.map((_, i) => ended.has(`127.0.0.${20 + i}`));
      assert.deepEqual(
        closed,
        [true, true, true, true, true, false, false, false],
        'the 5 oldest lingering sockets were closed by the server, the newest 3 linger',
      );
    } finally {
      for (const l of all) l.sock.destroy();
    }
  });
});

describe('reserved capacity (maxConnections 6, reservedConnections 2)', () => {
  test('general pool full: unidentified clients get 421; a client whose address a connector names gets in, up to maxConnections', async () => {
    const held: SmtpClient[] = [];
    try {
      for (let i = 0; i < 4; i++) held.push(await admitted(gwR, '127.0.0.1'));
      await refused(gwR, '127.0.0.1');
      await refused(gwR, STRANGER);
      const p1 = await admitted(gwR, PARTNER_IP);
      held.push(p1);
      await p1.expect('EHLO partner.test', 250);
      assert.match(
        (await p1.send('a@partner.test', ['reserved@contoso.test'], 'Subject: through the reserve\r\n\r\nhi\r\n')).text,
        QUEUED,
      );
      held.push(await admitted(gwR, PARTNER_IP));
      await refused(gwR, PARTNER_IP); // 6 in all
    } finally {
      for (const c of held) c.close();
    }
    await sleep(300);
  });

  test('a client that proves a connector certificate moves to the reserve; from its address it then gets in when the general pool is full, if it proves it again', async () => {
    const held: SmtpClient[] = [];
    try {
      // Identified by certificate while the general pool has room: its general place is freed.
      const first = await admitted(gwR, CERT_IP);
      held.push(first);
      await tls(first, fabrikam);
      await first.expect('EHLO mx1.fabrikam.test', 250);
      for (let i = 0; i < 4; i++) held.push(await admitted(gwR, '127.0.0.1'));
      await refused(gwR, '127.0.0.1');
      await refused(gwR, STRANGER);
      // General pool full: the address that proved the certificate gets a provisional place ...
      const again = await admitted(gwR, CERT_IP);
      held.push(again);
      await tls(again, fabrikam);
      await again.expect('EHLO mx1.fabrikam.test', 250);
      assert.match(
        (await again.send('b@fabrikam.test', ['cert-reserved@contoso.test'], 'Subject: proven\r\n\r\nhi\r\n')).text,
        QUEUED,
      );
      // ... (6 in all now)
      await refused(gwR, CERT_IP);
    } finally {
      for (const c of held) c.close();
    }
    await sleep(300);
  });

  test('a provisional session that presents another certificate, or none within the probation, gets 421 4.7.0', async () => {
    const held: SmtpClient[] = [];
    try {
      // CERT_IP proved its certificate in the previous test.
      for (let i = 0; i < 4; i++) held.push(await admitted(gwR, '127.0.0.1'));
      await refused(gwR, STRANGER);
      const wrong = await admitted(gwR, CERT_IP);
      held.push(wrong);
      await tls(wrong, stranger);
      const r = await wrong.read(5000);
      assert.equal(r?.text, TOO_MANY, 'refused right after a handshake with a certificate no connector names');
      await wrong.closedPromise;
      const idle = await admitted(gwR, CERT_IP);
      held.push(idle);
      const t0 = Date.now();
      const r2 = await idle.read(15_000);
      assert.equal(r2?.text, TOO_MANY, 'refused when the probation ends without a certificate');
      const waited = Date.now() - t0;
      assert.ok(waited > 8000 && waited < 14_000, `after the 10 s probation (${waited} ms)`);
      assert.ok(gwR.events().some((e) => e.event === 'session.end' && e.close === 'admission withdrawn'));
    } finally {
      for (const c of held) c.close();
    }
  });
});
