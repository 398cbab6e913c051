// Opportunistic TLS works its way down the list: TLS 1.2+, then — only after a protocol-version or
// cipher failure, and only with delivery.opportunisticLegacyTls — legacy TLS 1.0/1.1 or older
// suites, then plaintext; what worked is remembered per address. Every step carries its TLS failure
// kind into the trace and the log. A forced level keeps the TLS 1.2 floor (even towards an address
// remembered as legacy-only), defers 4.7.5 with the kind, and at expiry the sender's DSN says the
// server only supports an outdated TLS version — not that it failed to prove its identity.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { cleanup, freePort, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { startDnsServer, type DnsServer, type Zone } from '../helpers/dns-server.ts';
import { makePki } from '../helpers/pki.ts';
import { startPeer, type Peer, type PeerOptions } from '../helpers/peer.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { until } from '../helpers/wait.ts';

/** Seconds until a deferred message expires (and bounces). */
const EXPIRATION = 8;
const IP = {
  tls10: '127.0.4.1',
  tls11: '127.0.4.2',
  cbc12: '127.0.4.3',
  broken: '127.0.4.4',
  off10: '127.0.4.5',
} as const;
type PeerName = keyof typeof IP;
const host = (p: PeerName) => `mx.${p}.test`;

let gw: GatewayHandle;
let dns: DnsServer;
let config: Record<string, unknown>;
const peers = {} as Record<PeerName, Peer>;
let forcedId: string;
let port: number;

async function relay(from: string, to: string, subject: string): Promise<string> {
  const c = await SmtpClient.connect(gw.port);
  try {
    await c.hello();
    const r = await c.send(
      from,
      [to],
      `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@contoso.test>\r\n\r\nbody of ${subject}\r\n`,
    );
    assert.equal(r.code, 250, r.text);
    return /queued as (\w+)/.exec(r.text)![1];
  } finally {
    c.close();
  }
}

interface Attempt {
  status: string;
  host?: string;
  tlsAchieved?: string;
  tlsFailure?: string;
  tlsLegacy?: boolean;
  fallback?: string;
  tls?: { version: string; cipher: string };
  reply: { code: number; enhanced: string; message: string; reason?: string };
}

async function attempts(id: string): Promise<Attempt[]> {
  const r = await gw.cli(['trace', '--queue-id', id, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { trace: { kind: string; data: Attempt }[] }[])[0].trace
    .filter((t) => t.kind === 'delivery')
    .map((t) => t.data);
}

const result = (id: string, status?: string) =>
  gw
    .events()
    .find(
      (e) =>
        e.event === 'delivery.result' && e.queueId === id && e.agent === 'smtp' && (!status || e.status === status),
    );
const mailbox = (local: string) => {
  const d = path.join(gw.dataDir, 'mailboxes/contoso.test', local, 'new');
  try {
    return readdirSync(d).map((f) => readFileSync(path.join(d, f), 'utf8'));
  } catch {
    return [];
  }
};

before(async () => {
  port = await freePort();
  gw = await startGateway();
  const pki = await makePki(gw.dir, 'Legacy');
  const cert = await pki.issue('mx.legacy.test', { dnsNames: Object.keys(IP).map((p) => host(p as PeerName)) });
  const tls = { cert: readFileSync(cert.chain, 'utf8'), key: readFileSync(cert.key, 'utf8') };
  const old = (v: 'TLSv1' | 'TLSv1.1') => ({ ...tls, minVersion: v, maxVersion: v, ciphers: 'DEFAULT@SECLEVEL=0' });
  const opts: Record<PeerName, Partial<PeerOptions>> = {
    tls10: { tls: old('TLSv1') },
    tls11: { tls: old('TLSv1.1') },
    // TLS 1.2, but only CBC suites (no AEAD): none of the modern profile's suites.
    cbc12: {
      tls: { ...tls, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES128-SHA:AES128-SHA' },
    },
    broken: { tls, breakHandshake: true },
    off10: { tls: old('TLSv1') },
  };
  const zone: Zone = {};
  for (const p of Object.keys(IP) as PeerName[]) {
    peers[p] = await startPeer({ host: IP[p], port, name: host(p), ...opts[p] });
    zone[host(p)] = { A: [IP[p]] };
    zone[`${p}.test`] = { MX: [{ exchange: host(p), priority: 10 }] };
    zone[`${p}.enc.test`] = { MX: [{ exchange: host(p), priority: 10 }] };
  }
  dns = await startDnsServer(zone);
  config = {
    dns: { servers: [dns.server] },
    // No connection reuse: every message shows the connections it needed.
    delivery: {
      port,
      timeouts: { connect: 3, greeting: 10, command: 10 },
      destinationDownSeconds: 0,
      connectionReuse: { idleSeconds: 0 },
    },
    tls: { trust: { system: false, caFiles: [pki.rootFile] } },
    queue: { retrySchedule: [1], messageExpiration: EXPIRATION, delayWarning: 0 },
    organizations: [
      {
        name: 'contoso',
        acceptedDomains: [{ domain: 'contoso.test' }],
        inboundConnectors: [
          { name: 'Local submission', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] },
        ],
        outboundConnectors: [{ name: 'To Enc', recipientDomains: ['*.enc.test'], tlsSettings: 'encryptionOnly' }],
      },
    ],
  };
  gw.writeConfig(config);
  await gw.stop();
  await gw.restart();
});

after(async () => {
  await cleanup(gw);
  await Promise.all(Object.values(peers).map((p) => p.close()));
  await dns?.close();
});

test('TLS 1.0-only and TLS 1.1-only servers get opportunistic mail over legacy TLS, not plaintext, with the cause in trace and log', async () => {
  const id10 = await relay('a@contoso.test', 'u@tls10.test', 'legacy-tls10');
  const id11 = await relay('a@contoso.test', 'u@tls11.test', 'legacy-tls11');
  await until('both delivered', () => result(id10, 'delivered') && result(id11, 'delivered'));
  for (const [p, id, version] of [
    ['tls10', id10, 'TLSv1'],
    ['tls11', id11, 'TLSv1.1'],
  ] as const) {
    const m = peers[p].messages[0];
    assert.equal(m?.tls?.version, version, `${p}: the message travelled inside a ${version} session`);
    assert.equal(
      m.tls.cipher,
      'TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA',
      `${p}: the strongest suite ${version} has for an RSA key`,
    );
    assert.equal(peers[p].connections, 2, `${p}: one TLS 1.2+ attempt, one legacy attempt`);
    const a = (await attempts(id)).at(-1)!;
    assert.equal(a.tls?.version, version);
    assert.equal(a.tlsLegacy, true);
    assert.equal(a.tlsFailure, 'protocol-version');
    assert.equal(a.tlsAchieved, 'opportunistic', 'legacy TLS meets no required level');
    assert.match(
      a.fallback ?? '',
      new RegExp(
        `^TLS handshake failed \\(TLS handshake with ${host(p).replace(/\./g, '\\.')} \\[${IP[p].replace(/\./g, '\\.')}\\] failed: the server only supports TLS versions older than TLS 1\\.2 \\(protocol-version\\); detail: ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION .*\\); retrying with legacy TLS`,
      ),
    );
    const ev = result(id, 'delivered')!;
    assert.deepEqual(
      [ev.tlsLegacy, ev.tlsVersion, ev.tlsFailure],
      [true, version, 'protocol-version'],
      `${p}: the log line says legacy TLS`,
    );
  }
  const text = await gw.cli(['trace', '--queue-id', id10]);
  assert.match(text.stdout, /TLS: TLSv1 TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA \(256 bits\), legacy TLS/);
  assert.match(
    text.stdout,
    /legacy TLS \(opportunistic\): the server only supports TLS versions older than TLS 1\.2 \(protocol-version\)/,
  );
  assert.match(text.stdout, /TLS policy: required opportunistic \(default\), achieved opportunistic/);
});

test('the step down is remembered per address: the next message goes straight to legacy TLS', async () => {
  const before = peers.tls10.connections;
  const id = await relay('a@contoso.test', 'v@tls10.test', 'legacy-remembered');
  await until('delivered', () => result(id, 'delivered'));
  assert.equal(peers.tls10.connections, before + 1, 'no TLS 1.2+ attempt this time');
  assert.equal(peers.tls10.messages.at(-1)?.tls?.version, 'TLSv1');
  const a = (await attempts(id)).at(-1)!;
  assert.equal(a.tlsLegacy, true);
  assert.equal(a.tlsFailure, 'protocol-version');
  assert.match(
    a.fallback ?? '',
    /^TLS 1\.2\+ handshake with this host failed recently: the server only supports TLS versions older than TLS 1\.2 \(protocol-version\); using legacy TLS until \d{4}-/,
  );
});

test('a TLS 1.2 server with only older suites: legacy suites over TLS 1.2 (no-shared-cipher), forward secret first', async () => {
  const id = await relay('a@contoso.test', 'u@cbc12.test', 'legacy-cbc12');
  await until('delivered', () => result(id, 'delivered'));
  const m = peers.cbc12.messages[0];
  assert.deepEqual(m?.tls, { version: 'TLSv1.2', cipher: 'TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA' });
  const a = (await attempts(id)).at(-1)!;
  assert.deepEqual([a.tlsLegacy, a.tlsFailure, a.tlsAchieved], [true, 'no-shared-cipher', 'opportunistic']);
});

test('a broken handshake is no protocol question: no legacy retry, plaintext at once', async () => {
  const id = await relay('a@contoso.test', 'u@broken.test', 'broken-plain');
  await until('delivered', () => result(id, 'delivered'));
  assert.equal(peers.broken.connections, 2, 'one TLS attempt, then plaintext');
  assert.equal(peers.broken.messages[0]?.tls, null);
  const a = (await attempts(id)).at(-1)!;
  assert.match(a.tlsFailure ?? '', /^(handshake-failed|connection-lost-during-handshake)$/);
  assert.equal(a.tlsLegacy, undefined);
  assert.equal(a.tlsAchieved, 'none');
  assert.match(a.fallback ?? '', /^TLS handshake failed \(.*\); retrying in plaintext$/);
  const text = await gw.cli(['trace', '--queue-id', id]);
  assert.match(
    text.stdout,
    /TLS not used: the (TLS handshake failed \(handshake-failed\)|connection was lost during the TLS handshake \(connection-lost-during-handshake\))/,
  );
});

test('encryptionOnly to the TLS 1.0-only server remembered as legacy: deferred 4.7.5 protocol-version, no TLS session, nothing sent', async () => {
  const sessions = peers.tls10.tlsSessions;
  const messages = peers.tls10.messages.length;
  const rcpts = () => peers.tls10.transcript.filter((l) => /^C: RCPT/i.test(l)).length;
  const rcptsBefore = rcpts();
  forcedId = await relay('forced@contoso.test', 'u@tls10.enc.test', 'forced-tls10');
  await until('first forced attempt', () => result(forcedId));
  const ev = result(forcedId)!;
  assert.deepEqual([ev.status, ev.code, ev.enhanced, ev.tlsFailure], ['deferred', 451, '4.7.5', 'protocol-version']);
  const [a] = await attempts(forcedId);
  assert.equal(a.tlsFailure, 'protocol-version');
  assert.equal(a.tlsLegacy, undefined);
  assert.equal(a.tls, undefined);
  assert.equal(a.tlsAchieved, 'none');
  assert.equal(a.reply.message, 'TLS handshake failed: the server only supports TLS versions older than TLS 1.2');
  assert.match(
    a.reply.reason ?? '',
    /^TLS required by connector "To Enc": TLS handshake with mx\.tls10\.test \[127\.0\.4\.1\] failed: the server only supports TLS versions older than TLS 1\.2 \(protocol-version\); detail: ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION .*tlsv1 alert protocol version/,
  );
  const text = await gw.cli(['trace', '--queue-id', forcedId]);
  assert.match(
    text.stdout,
    /TLS failure: the server only supports TLS versions older than TLS 1\.2 \(protocol-version\)/,
  );
  assert.equal(peers.tls10.tlsSessions, sessions, 'no TLS session below 1.2 under a forced level');
  assert.equal(peers.tls10.messages.length, messages);
  assert.equal(rcpts(), rcptsBefore, 'no transaction for the forced message');
});

test('tls check names the kind: a TLS 1.0-only server fails with protocol-version', async () => {
  const [text, json] = await Promise.all([
    gw.cli(['tls', 'check', `${host('tls10')}:${port}`, '--level', 'encryptionOnly']),
    gw.cli(['tls', 'check', `${host('tls10')}:${port}`, '--level', 'encryptionOnly', '--json']),
  ]);
  assert.notEqual(text.code, 0);
  assert.match(text.stdout, /FAIL/);
  assert.match(
    text.stdout,
    /TLS failure: the server only supports TLS versions older than TLS 1\.2 \(protocol-version\)/,
  );
  assert.match(text.stdout, /detail: ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION/);
  const [rep0] = JSON.parse(json.stdout) as { passes: boolean; tlsFailure?: string }[];
  assert.deepEqual([rep0.passes, rep0.tlsFailure], [false, 'protocol-version']);
});

test('with delivery.opportunisticLegacyTls false, old-TLS servers get plaintext as before (and the remembered legacy step is not used)', async () => {
  gw.writeConfig({ ...config, delivery: { ...(config.delivery as object), opportunisticLegacyTls: false } });
  const r = await gw.cli(['config', 'reload']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  await gw.waitForLog((e) => e.event === 'config.reloaded');
  const off = await relay('a@contoso.test', 'u@off10.test', 'legacy-off');
  const remembered = await relay('a@contoso.test', 'w@tls10.test', 'legacy-off-remembered');
  await until('both delivered', () => result(off, 'delivered') && result(remembered, 'delivered'));
  assert.equal(peers.off10.tlsSessions, 0);
  assert.equal(peers.off10.messages[0]?.tls, null);
  assert.equal(peers.off10.connections, 2, 'one TLS 1.2+ attempt, then plaintext, no legacy attempt');
  const a = (await attempts(off)).at(-1)!;
  assert.deepEqual([a.tlsFailure, a.tlsLegacy, a.tlsAchieved], ['protocol-version', undefined, 'none']);
  assert.match(
    a.fallback ?? '',
    /\(protocol-version\); detail: ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION .*\); retrying in plaintext$/,
  );
  const w = peers.tls10.messages.find((m) => m.to.includes('w@tls10.test'));
  assert.equal(w?.tls, null, 'the address remembered as legacy-only got plaintext once legacy TLS was switched off');
});

test('at expiry the DSN says the server only supports an outdated TLS version, not that it did not prove its identity', async () => {
  const dsn = await until(
    'expiry DSN',
    () => mailbox('forced').find((m) => /Undelivered Mail/.test(m)),
    (EXPIRATION + 20) * 1000,
  );
  assert.match(dsn, /Status: 5\.4\.7/);
  assert.match(
    dsn,
    /The receiving mail server \(mx\.tls10\.test\) only supports an outdated version of the encryption protocol \(TLS older than 1\.2\)\. Your organisation requires an encrypted connection \(TLS 1\.2 or newer\) for this destination, so the message was never sent to it\./,
  );
  assert.doesNotMatch(dsn, /did not prove its identity/);
  assert.match(
    dsn,
    /Diagnostic-Code: smtp; 550 5\.4\.7 Delivery time expired: TLS handshake failed: the server only supports TLS versions older than TLS 1\.2/,
  );
  assert.ok(!peers.tls10.transcript.some((l) => l.includes('u@tls10.enc.test')), 'never sent, across every retry');
});
