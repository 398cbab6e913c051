// TLS policy of the real gateway over STARTTLS on loopback: protocol floor (no TLS 1.0/1.1),
// forward secrecy + AEAD only for TLS 1.2, TLS 1.3 by default, session resumption, SNI, and
// what openssl s_client sees. Every refusal is paired with a permissive control server that
// accepts the very same client settings, so a refusal proves the gateway's policy and not a
// client that cannot speak the protocol at all.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { cleanup, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { makePki } from '../helpers/pki.ts';
import { SmtpClient } from '../helpers/smtp.ts';

const run = promisify(execFile);

let gw: GatewayHandle;
let control: ControlSmtp;
/** Fingerprints of the gateway's two certificates: RSA (default) and ECDSA (SNI mx.fabrikam.test). */
let rsaFp: string;
let ecFp: string;

// ---------------------------------------------------------------------------------------------
// A permissive STARTTLS control server: TLS 1.0 and up, every cipher at security level 0.

interface ControlSmtp {
  port: number;
  close(): Promise<void>;
}

function startControlSmtp(cert: string, key: string): Promise<ControlSmtp> {
  const ctx = tls.createSecureContext({
    cert,
    key,
    minVersion: 'TLSv1',
    maxVersion: 'TLSv1.3',
    ciphers: 'ALL:COMPLEMENTOFALL:@SECLEVEL=0',
    dhparam: 'auto',
  });
  const socks = new Set<net.Socket>();
  const srv = net.createServer((raw) => {
    socks.add(raw);
    raw.on('close', () => socks.delete(raw));
    raw.on('error', () => {});
    const dialogue = (out: net.Socket, onStarttls?: () => void) => {
      let buf = '';
      const onData = (d: Buffer) => {
        buf += d.toString('latin1');
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl).replace(/\r$/, '');
          buf = buf.slice(nl + 1);
          const verb = line.split(' ')[0].toUpperCase();
          if (verb === 'EHLO') out.write(`250-control.test\r\n${onStarttls ? '250-STARTTLS\r\n' : ''}250 8BITMIME\r\n`);
          else if (verb === 'STARTTLS' && onStarttls) {
            out.off('data', onData);
            out.write('220 2.0.0 go ahead\r\n');
            onStarttls();
            return;
          } else if (verb === 'QUIT') {
            out.end('221 2.0.0 bye\r\n');
            return;
          } else out.write('250 2.0.0 ok\r\n');
        }
      };
      out.on('data', onData);
    };
    raw.write('220 control.test ESMTP\r\n');
    dialogue(raw, () => {
      const t = new tls.TLSSocket(raw, { isServer: true, secureContext: ctx });
      t.on('error', () => raw.destroy());
      dialogue(t);
    });
  });
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () =>
      resolve({
        port: (srv.address() as net.AddressInfo).port,
        close: () =>
          new Promise<void>((r) => {
            for (const s of socks) s.destroy();
            srv.close(() => r());
          }),
      }),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// Client side: greeting, EHLO, STARTTLS, handshake with the given options (bounded in time).

interface Handshake {
  ok: boolean;
  error?: string;
  protocol?: string | null;
  cipher?: string;
  fingerprint?: string;
  reused?: boolean;
  client: SmtpClient;
  sock?: tls.TLSSocket;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_r, reject) => {
      t = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

async function starttls(port: number, opts: tls.ConnectionOptions, keepOpen = false): Promise<Handshake> {
  const client = await SmtpClient.connect(port, '127.0.0.1');
  try {
    await client.hello();
    await client.expect('STARTTLS', 220);
    let sock: tls.TLSSocket;
    try {
      sock = await withTimeout(client.upgrade(opts), 10_000, 'TLS handshake');
    } catch (e) {
      return { ok: false, error: (e as Error).message, client };
    }
    const peer = sock.getPeerX509Certificate();
    return {
      ok: true,
      protocol: sock.getProtocol(),
      cipher: sock.getCipher().name,
      fingerprint: peer?.fingerprint256,
      reused: sock.isSessionReused(),
      client,
      sock,
    };
  } finally {
    if (!keepOpen) client.close();
  }
}

/** Parsed gateway log lines after the first `before` lines. */
function eventsSince(before: number): Record<string, unknown>[] {
  return gw.logs.slice(before).flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

/** Wait (bounded) for `count` gateway log lines after `before` that match; returns those found. */
async function waitForEvents(
  before: number,
  pred: (e: Record<string, unknown>) => boolean,
  count = 1,
  timeoutMs = 5000,
): Promise<Record<string, unknown>[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const hits = eventsSince(before).filter(pred);
    if (hits.length >= count || Date.now() > until) return hits;
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function tlsFailuresSince(before: number): Promise<string[]> {
  return (await waitForEvents(before, (e) => e.event === 'session.tlsFailed')).map((e) => String(e.error));
}

const LEGACY = { ciphers: 'DEFAULT@SECLEVEL=0' } as const;
const STATIC_RSA = 'AES256-GCM-SHA384:AES128-GCM-SHA256:AES256-SHA256:AES128-SHA';

let tlsConfig: Record<string, unknown>;

before(async () => {
  const dir = tempDir();
  const pki = await makePki(dir);
  const rsa = await pki.issue('mx1.contoso.test');
  const ec = await pki.issue('mx.fabrikam.test', { key: 'ec256', subject: 'CN=mx.fabrikam.test, O=Fabrikam' });
  rsaFp = new X509Certificate(rsa.issued.certPem).fingerprint256;
  ecFp = new X509Certificate(ec.issued.certPem).fingerprint256;
  assert.equal(new X509Certificate(rsa.issued.certPem).publicKey.asymmetricKeyType, 'rsa');
  tlsConfig = {
    certificates: [
      { cert: rsa.cert, key: rsa.key },
      { cert: ec.cert, key: ec.key },
    ],
    trust: { system: false, caFiles: [pki.rootFile] },
  };
  gw = await startGateway({ dir, config: { tls: tlsConfig } });
  control = await startControlSmtp(readFileSync(rsa.cert, 'utf8'), readFileSync(rsa.key, 'utf8'));
});

after(async () => {
  await control?.close();
  await cleanup(gw);
});

test('a STARTTLS handshake that times out is closed without a cleartext reply written into it', async () => {
  gw.writeConfig({ tls: tlsConfig, smtp: { timeouts: { tlsHandshake: 1 } } });
  assert.equal((await gw.cli(['config', 'reload'])).code, 0);
  try {
    const s = net.connect(gw.port, gw.host);
    let got = '';
    s.on('data', (d) => (got += d.toString('latin1')));
    const closed = new Promise<void>((r) => s.on('close', () => r()));
    const seen = async (re: RegExp) => {
      for (let i = 0; i < 250 && !re.test(got); i++) await new Promise((r) => setTimeout(r, 20));
      assert.match(got, re);
    };
    await seen(/^220 /);
    s.write('EHLO client.test\r\n');
    await seen(/250 [^\r]*\r\n$/);
    s.write('STARTTLS\r\n');
    await seen(/220 2\.0\.0[^\r]*\r\n$/);
    const before = got.length;
    await closed; // no ClientHello: the handshake times out after 1 s
    assert.equal(got.slice(before), '', 'nothing after the reply to STARTTLS');
  } finally {
    gw.writeConfig({ tls: tlsConfig });
    assert.equal((await gw.cli(['config', 'reload'])).code, 0);
  }
});

for (const version of ['TLSv1', 'TLSv1.1'] as const) {
  test(`${version} after STARTTLS is refused (the same client succeeds against a permissive server)`, async () => {
    const opts: tls.ConnectionOptions = { ...LEGACY, minVersion: version, maxVersion: version };
    const ctl = await starttls(control.port, opts);
    assert.ok(ctl.ok, `control server must accept ${version}: ${ctl.error}`);
    assert.equal(ctl.protocol, version);

    const before = gw.logs.length;
    const h = await starttls(gw.port, opts);
    assert.equal(h.ok, false, `gateway negotiated ${h.protocol} ${h.cipher}`);
    assert.match(h.error ?? '', /protocol version|unsupported protocol|wrong version/i);
    const failures = await tlsFailuresSince(before);
    assert.equal(failures.length, 1, 'the gateway logs the failed handshake');
    assert.match(failures[0], /unsupported protocol|version/i);
  });
}

test('TLS 1.2 with only static-RSA (non forward secret) suites is refused, though the certificate is RSA', async () => {
  const opts: tls.ConnectionOptions = { ciphers: STATIC_RSA, maxVersion: 'TLSv1.2' };
  const ctl = await starttls(control.port, opts);
  assert.ok(ctl.ok, `control server must accept static RSA: ${ctl.error}`);
  assert.equal(ctl.protocol, 'TLSv1.2');
  assert.ok(STATIC_RSA.split(':').includes(ctl.cipher ?? ''), `control negotiated ${ctl.cipher}`);
  assert.equal(ctl.fingerprint, rsaFp, 'control uses the same RSA certificate as the gateway');

  const before = gw.logs.length;
  const h = await starttls(gw.port, opts);
  assert.equal(h.ok, false, `gateway negotiated ${h.protocol} ${h.cipher}`);
  assert.match(h.error ?? '', /handshake failure|no shared cipher/i);
  assert.equal((await tlsFailuresSince(before)).length, 1);

  // The same client, adding one forward-secret AEAD suite, is accepted: the refusal is the policy.
  const fs = await starttls(gw.port, { ciphers: `${STATIC_RSA}:ECDHE-RSA-AES128-GCM-SHA256`, maxVersion: 'TLSv1.2' });
  assert.ok(fs.ok, fs.error);
  assert.equal(fs.cipher, 'ECDHE-RSA-AES128-GCM-SHA256');
  assert.equal(fs.fingerprint, rsaFp);
});

interface Suite {
  name: string;
  kx: string;
  enc: string;
  mac: string;
}

async function tls12Suites(): Promise<Suite[]> {
  const { stdout } = await run('openssl', ['ciphers', '-v', 'ALL:COMPLEMENTOFALL:@SECLEVEL=0'], { timeout: 10_000 });
  const suites = stdout
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [name, proto, kx, , enc, mac] = l.trim().split(/\s+/);
      return { name, proto, kx: kx.replace(/^Kx=/, ''), enc: enc.replace(/^Enc=/, ''), mac: mac.replace(/^Mac=/, '') };
    })
    .filter((s) => s.proto !== 'TLSv1.3');
  // Node's own list too (lower case, TLS 1.3 names start with tls_): nothing it knows is skipped.
  const known = new Set(suites.map((s) => s.name));
  for (const n of tls
    .getCiphers()
    .map((c) => c.toUpperCase())
    .filter((c) => !c.startsWith('TLS_'))) {
    if (!known.has(n)) suites.push({ name: n, proto: '?', kx: '?', enc: '?', mac: '?' });
  }
  return suites;
}

const forwardSecretAead = (s: Suite) =>
  /^ECDHE-/.test(s.name) &&
  /-GCM-|CHACHA20-POLY1305/.test(s.name) &&
  (s.kx === 'ECDH' || s.kx === '?') &&
  (s.mac === 'AEAD' || s.mac === '?');

async function probe(
  port: number,
  suites: Suite[],
  servername?: string,
): Promise<{ accepted: (Suite & { fingerprint?: string })[]; refused: number }> {
  const accepted: (Suite & { fingerprint?: string })[] = [];
  let refused = 0;
  for (const s of suites) {
    const h = await starttls(port, {
      ciphers: `${s.name}:@SECLEVEL=0`,
      minVersion: 'TLSv1',
      maxVersion: 'TLSv1.2',
      ...(servername ? { servername } : {}),
    });
    if (h.ok) {
      assert.equal(h.cipher, s.name, 'the negotiated suite is the only one offered');
      assert.equal(h.protocol, 'TLSv1.2');
      accepted.push({ ...s, fingerprint: h.fingerprint });
    } else refused++;
  }
  return { accepted, refused };
}

test('TLS 1.2: every suite the gateway accepts is ECDHE + AEAD, for the RSA and the ECDSA certificate', async () => {
  const suites = await tls12Suites();
  assert.ok(suites.length > 100, `expected the full openssl suite list, got ${suites.length}`);

  // The prober can detect a lax policy: the permissive server accepts suites outside it.
  const ctl = await probe(control.port, suites);
  assert.ok(
    ctl.accepted.some((s) => !/^ECDHE-/.test(s.name)),
    'control accepts non-ECDHE suites',
  );
  assert.ok(
    ctl.accepted.some((s) => !/-GCM-|CHACHA20-POLY1305/.test(s.name)),
    'control accepts non-AEAD suites',
  );

  const rsa = await probe(gw.port, suites);
  const rsaNames = rsa.accepted.map((s) => s.name);
  assert.ok(rsaNames.length >= 1, 'at least one TLS 1.2 suite is accepted with the RSA certificate');
  assert.deepEqual(
    rsa.accepted.filter((s) => !forwardSecretAead(s)).map((s) => s.name),
    [],
    `accepted: ${rsaNames.join(' ')}`,
  );
  assert.ok(
    rsaNames.every((n) => n.startsWith('ECDHE-RSA-')),
    `RSA certificate: ${rsaNames.join(' ')}`,
  );

  assert.ok(rsa.accepted.every((s) => s.fingerprint === rsaFp));

  // ECDSA certificate (chosen by SNI). Node adds the SNI context's certificate next to the default
  // one, so RSA-authenticated suites may still complete with the default RSA certificate; what
  // matters here is that nothing outside the policy is accepted, and ECDSA suites get the ECDSA one.
  const ec = await probe(gw.port, suites, 'mx.fabrikam.test');
  const ecNames = ec.accepted.map((s) => s.name);
  assert.deepEqual(
    ec.accepted.filter((s) => !forwardSecretAead(s)).map((s) => s.name),
    [],
    `accepted: ${ecNames.join(' ')}`,
  );
  const ecdsa = ec.accepted.filter((s) => s.name.startsWith('ECDHE-ECDSA-'));
  assert.ok(
    ecdsa.length >= 1,
    `at least one ECDHE-ECDSA suite is accepted with the ECDSA certificate: ${ecNames.join(' ')}`,
  );
  assert.ok(
    ecdsa.every((s) => s.fingerprint === ecFp),
    'ECDSA suites are served with the ECDSA certificate',
  );
});

test('TLS 1.3 is negotiated by default with a modern client', async () => {
  const h = await starttls(gw.port, {}, true);
  try {
    assert.ok(h.ok, h.error);
    assert.equal(h.protocol, 'TLSv1.3');
    assert.match(h.cipher ?? '', /^TLS_(AES_256_GCM_SHA384|AES_128_GCM_SHA256|CHACHA20_POLY1305_SHA256)$/);
    assert.equal(h.fingerprint, rsaFp);
    // The session works after the handshake: STARTTLS is no longer offered.
    const ehlo = await h.client.expect('EHLO client.test', 250);
    assert.doesNotMatch(ehlo.text, /STARTTLS/);
    await h.client.expect('QUIT', 221);
  } finally {
    h.client.close();
  }
});

/** Full session whose TLS session state (ticket) is captured; returns it. */
async function sessionToResume(
  opts: tls.ConnectionOptions,
  ehlo: string,
): Promise<{ session: Buffer; first: Handshake }> {
  const h = await starttls(gw.port, opts, true);
  try {
    assert.ok(h.ok, h.error);
    assert.equal(h.reused, false);
    const sock = h.sock!;
    // TLS 1.2: the session exists once the handshake is done; TLS 1.3: tickets follow the handshake.
    const got = new Promise<Buffer>((resolve) => {
      if (sock.getProtocol() === 'TLSv1.2') {
        const s = sock.getSession();
        if (s) resolve(s);
      }
      sock.once('session', resolve);
    });
    await h.client.expect(`EHLO ${ehlo}`, 250);
    const session = await withTimeout(got, 5000, 'session ticket');
    await h.client.expect('QUIT', 221);
    return { session, first: h };
  } finally {
    h.client.close();
  }
}

for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
  test(`${version} session resumption: a second connection presenting the session is resumed`, async () => {
    const opts: tls.ConnectionOptions = { minVersion: version, maxVersion: version };
    const before = gw.logs.length;
    // Distinct EHLO names find these two sessions in the gateway log.
    const names = [`first.resume-${version}.test`, `second.resume-${version}.test`];
    const { session, first } = await sessionToResume(opts, names[0]);
    assert.equal(first.protocol, version);
    const second = await starttls(gw.port, { ...opts, session }, true);
    try {
      assert.ok(
        second.ok,
        `resumption handshake failed: ${second.error}; gateway: ${gw.logs.slice(before).join('\n')}`,
      );
      assert.equal(second.protocol, version);
      assert.equal(second.reused, true, 'isSessionReused()');
      await second.client.expect(`EHLO ${names[1]}`, 250);
      await second.client.expect('QUIT', 221);
    } finally {
      second.client.close();
    }
    // The gateway records the resumption in the session facts.
    // The gateway records the resumption in the session facts (first session: full handshake).
    const ends = await waitForEvents(before, (e) => e.event === 'session.end' && names.includes(String(e.helo)), 2);
    const facts = ends
      .map((e) => {
        const t = e.tls as { version: string; resumed: boolean };
        return `${e.helo} ${e.ip} ${t.version} resumed=${t.resumed}`;
      })
      .sort();
    assert.deepEqual(facts, [
      `${names[0]} 127.0.0.1 ${version} resumed=false`,
      `${names[1]} 127.0.0.1 ${version} resumed=true`,
    ]);
  });
}

test('SNI selects the certificate; no SNI or an unknown name gets the first one', async () => {
  const fab = await starttls(gw.port, { servername: 'mx.fabrikam.test' });
  assert.ok(fab.ok, fab.error);
  assert.equal(fab.fingerprint, ecFp, 'mx.fabrikam.test gets the second certificate');

  const con = await starttls(gw.port, { servername: 'mx1.contoso.test' });
  assert.ok(con.ok, con.error);
  assert.equal(con.fingerprint, rsaFp);

  const none = await starttls(gw.port, {});
  assert.ok(none.ok, none.error);
  assert.equal(none.fingerprint, rsaFp, 'no SNI gets the first certificate');

  const unknown = await starttls(gw.port, { servername: 'unknown.example.test' });
  assert.ok(unknown.ok, unknown.error);
  assert.equal(unknown.fingerprint, rsaFp, 'an unknown name gets the first certificate');
  assert.notEqual(rsaFp, ecFp);
});

/** openssl s_client -starttls smtp; stdin closed, so it leaves right after the handshake. */
function sClient(port: number, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(
      'openssl',
      ['s_client', '-starttls', 'smtp', '-connect', `127.0.0.1:${port}`, '-brief', '-noservername', ...args],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    p.stderr.on('data', (d) => {
      out += d;
    });
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
}

test('openssl s_client -starttls smtp: -tls1_2 succeeds, -tls1_1 fails (and works against a permissive server)', async () => {
  const ok = await sClient(gw.port, ['-tls1_2']);
  assert.equal(ok.code, 0, ok.out);
  assert.match(ok.out, /CONNECTION ESTABLISHED/);
  assert.match(ok.out, /Protocol version: TLSv1\.2/);
  assert.match(ok.out, /Ciphersuite: ECDHE-RSA-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)/);

  const legacy = ['-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0'];
  const ctl = await sClient(control.port, legacy);
  assert.equal(ctl.code, 0, `control: ${ctl.out}`);
  assert.match(ctl.out, /Protocol version: TLSv1\.1/);

  const bad = await sClient(gw.port, legacy);
  assert.notEqual(bad.code, 0, bad.out);
  assert.doesNotMatch(bad.out, /CONNECTION ESTABLISHED/);
  assert.match(bad.out, /protocol version|unsupported protocol|wrong version/i);
});
