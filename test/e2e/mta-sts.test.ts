// MTA-STS outbound (RFC 8461), end to end: the real gateway process, a test DNS server with the
// `_mta-sts` TXT records, policy servers speaking HTTPS on 127.0.8.x:443 with certificates from a
// test CA (trusted through tls.trust.caFiles), and scripted SMTP peers as MX hosts.
// - enforce, matching MX, valid certificate: delivered, the trace names MTA-STS and domainValidation;
// - enforce, an MX host outside the policy: never connected to, the next (matching) MX gets it;
// - enforce, a certificate that does not validate: deferred 4.7.5, no MAIL at the peer;
// - testing: delivered to a host enforce would refuse, the trace says it would not meet the policy;
// - a failed fetch (server down, new id) after a restart: the cached policy still applies;
// - a redirect is not followed: no policy, delivered opportunistically, the redirect target never asked;
// - mtaSts.enabled false: no `_mta-sts` lookup, the cached policy is not applied.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { issueCertificate } from '../../src/tls/certgen.ts';
import { cleanup, freePort, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { startDnsServer, type DnsServer, type Zone } from '../helpers/dns-server.ts';
import { makePki, type Pki } from '../helpers/pki.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { startStsServer, type StsServer } from '../helpers/sts-server.ts';
import { until } from '../helpers/wait.ts';

const DOMAINS = [
  'enforce.test',
  'outside.test',
  'badcert.test',
  'testing.test',
  'cache.test',
  'redirect.test',
] as const;
type D = (typeof DOMAINS)[number];
/** Policy servers (port 443), one address per domain. */
const WEB: Record<D, string> = {
  'enforce.test': '127.0.8.11',
  'outside.test': '127.0.8.12',
  'badcert.test': '127.0.8.13',
  'testing.test': '127.0.8.14',
  'cache.test': '127.0.8.15',
  'redirect.test': '127.0.8.16',
};
/** SMTP peers (MX hosts). */
const MX = {
  enforce: '127.0.8.21',
  evil: '127.0.8.22',
  outside2: '127.0.8.23',
  badcert: '127.0.8.24',
  testing: '127.0.8.25',
  cache: '127.0.8.26',
  evil2: '127.0.8.27',
  redirect: '127.0.8.28',
} as const;
type PeerName = keyof typeof MX;
const policy = (mode: string, ...mx: string[]) =>
  `version: STSv1\r\nmode: ${mode}\r\n${mx.map((m) => `mx: ${m}\r\n`).join('')}max_age: 86400\r\n`;

let dir: string;
let gw: GatewayHandle;
let dns: DnsServer;
let pki: Pki;
let port: number;
let config: Record<string, unknown>;
const web = {} as Record<D, StsServer>;
const peers = {} as Record<PeerName, Peer>;

async function relay(to: string, subject: string): Promise<string> {
  const c = await SmtpClient.connect(gw.port);
  try {
    await c.hello();
    const r = await c.send(
      'alice@contoso.test',
      [to],
      `From: <alice@contoso.test>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@contoso.test>\r\n\r\nbody of ${subject}\r\n`,
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
  ip?: string;
  tlsAchieved?: string;
  tlsFailure?: string;
  error?: string;
  tlsNotes?: string[];
  tlsRequired?: { level: string; source: string; tlsDomain?: string };
  reply: { code: number; enhanced: string; message: string; reason?: string };
}

async function attempts(id: string): Promise<Attempt[]> {
  const r = await gw.cli(['trace', '--queue-id', id, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const [m] = JSON.parse(r.stdout) as { trace: { kind: string; data: Attempt }[] }[];
  return m.trace.filter((t) => t.kind === 'delivery').map((t) => t.data);
}

const result = (id: string) =>
  gw.events().find((e) => e.event === 'delivery.result' && e.queueId === id && e.agent === 'smtp');
const transactions = (p: Peer) => p.transcript.filter((l) => /^C: (MAIL|RCPT|DATA)\b/i.test(l));

before(async () => {
  dir = tempDir('pc-mtasts-');
  port = await freePort();
  pki = await makePki(dir, 'Sts');
  const tlsOf = (c: { chain: string; key: string }) => ({
    cert: readFileSync(c.chain, 'utf8'),
    key: readFileSync(c.key, 'utf8'),
  });
  const zone: Zone = {
    'enforce.test': { MX: [{ exchange: 'mx1.enforce.test', priority: 10 }] },
    'mx1.enforce.test': { A: [MX.enforce] },
    'outside.test': {
      MX: [
        { exchange: 'mx.evil.test', priority: 10 },
        { exchange: 'mx2.outside.test', priority: 20 },
      ],
    },
    'mx.evil.test': { A: [MX.evil] },
    'mx2.outside.test': { A: [MX.outside2] },
    'badcert.test': { MX: [{ exchange: 'mx.badcert.test', priority: 10 }] },
    'mx.badcert.test': { A: [MX.badcert] },
    'testing.test': { MX: [{ exchange: 'mx.testing.test', priority: 10 }] },
    'mx.testing.test': { A: [MX.testing] },
    'cache.test': { MX: [{ exchange: 'mx.cache.test', priority: 10 }] },
    'mx.cache.test': { A: [MX.cache] },
    'mx.evil2.test': { A: [MX.evil2] },
    'redirect.test': { MX: [{ exchange: 'mx.redirect.test', priority: 10 }] },
    'mx.redirect.test': { A: [MX.redirect] },
  };
  const answers: Record<D, Parameters<typeof startStsServer>[2]> = {
    'enforce.test': policy('enforce', 'mx1.enforce.test'),
    'outside.test': policy('enforce', '*.outside.test'),
    'badcert.test': policy('enforce', 'mx.badcert.test'),
    'testing.test': policy('testing', 'mx.testing.test'),
    'cache.test': policy('enforce', 'mx.cache.test'),
    'redirect.test': { status: 302, location: 'https://mta-sts.redirect.test/elsewhere.txt' },
  };
  for (const d of DOMAINS) {
    zone[`_mta-sts.${d}`] = { TXT: ['v=STSv1; id=one;'] };
    zone[`mta-sts.${d}`] = { A: [WEB[d]] };
    web[d] = await startStsServer(WEB[d], await pki.issue(`mta-sts.${d}`), answers[d]);
  }
  dns = await startDnsServer(zone);
  const self = await issueCertificate({
    subject: 'CN=mx.badcert.test',
    dnsNames: ['mx.badcert.test', 'mx.testing.test'],
    key: 'ec256',
  });
  writeFileSync(path.join(dir, 'self.pem'), self.certPem);
  const selfTls = { cert: self.certPem, key: self.keyPem };
  const peer = async (p: PeerName, name: string, t: { cert: string; key: string }) => {
    peers[p] = await startPeer({ host: MX[p], port, name, tls: t });
  };
  await peer('enforce', 'mx1.enforce.test', tlsOf(await pki.issue('mx1.enforce.test')));
  await peer('evil', 'mx.evil.test', tlsOf(await pki.issue('mx.evil.test')));
  await peer('outside2', 'mx2.outside.test', tlsOf(await pki.issue('mx2.outside.test')));
  await peer('badcert', 'mx.badcert.test', selfTls);
  await peer('testing', 'mx.testing.test', selfTls);
  await peer('cache', 'mx.cache.test', tlsOf(await pki.issue('mx.cache.test')));
  await peer('evil2', 'mx.evil2.test', tlsOf(await pki.issue('mx.evil2.test')));
  await peer('redirect', 'mx.redirect.test', selfTls);
  config = {
    dns: { servers: [dns.server] },
    delivery: { port, timeouts: { connect: 3, greeting: 10, command: 10 }, destinationDownSeconds: 0 },
    tls: { trust: { system: false, caFiles: [pki.rootFile] } },
    queue: { retrySchedule: [1], messageExpiration: 600, delayWarning: 0 },
    organizations: [
      {
        name: 'contoso',
        acceptedDomains: [{ domain: 'contoso.test' }],
        inboundConnectors: [
          { name: 'Local submission', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] },
        ],
      },
    ],
  };
  gw = await startGateway({ dir, config });
});

after(async () => {
  await cleanup(gw);
  await Promise.all([...Object.values(peers), ...Object.values(web)].map((p) => p?.close()));
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('enforce, matching MX, valid certificate: delivered over TLS with the name checked, the trace names MTA-STS', async () => {
  const id = await relay('bob@enforce.test', 'enforce');
  await until('delivered', () => peers.enforce.messages.length === 1);
  const [a] = await attempts(id);
  assert.equal(a.status, 'delivered');
  assert.deepEqual(a.tlsRequired, {
    level: 'domainValidation',
    source: 'MTA-STS (policy of enforce.test, id one, mode enforce, mx mx1.enforce.test)',
    tlsDomain: 'mx1.enforce.test',
    published: true,
  });
  assert.equal(a.tlsAchieved, 'domainValidation');
  assert.deepEqual(web['enforce.test'].requests, [{ path: '/.well-known/mta-sts.txt', host: 'mta-sts.enforce.test' }]);
  assert.ok(peers.enforce.messages[0].tls, 'over TLS');
  assert.ok(dns.queries.some((q) => q.name === '_mta-sts.enforce.test' && q.type === 'TXT'));
});

test('enforce, an MX host outside the policy: never connected to; the matching MX gets the message', async () => {
  const id = await relay('bob@outside.test', 'outside');
  await until('delivered', () => peers.outside2.messages.length === 1);
  assert.equal(peers.evil.connections, 0, 'the MX outside the policy is not even connected to');
  const [a] = await attempts(id);
  assert.equal(a.status, 'delivered');
  assert.equal(a.host, 'mx2.outside.test');
  assert.match(
    a.tlsRequired!.source,
    /MTA-STS \(policy of outside\.test, id one, mode enforce, mx \*\.outside\.test\)/,
  );
});

test('enforce, a certificate that does not validate: deferred 4.7.5, the peer sees no MAIL', async () => {
  const id = await relay('bob@badcert.test', 'badcert');
  await until('a deferral', () => result(id));
  const r = result(id)!;
  assert.equal(r.status, 'deferred');
  assert.equal(r.enhanced, '4.7.5');
  assert.equal(r.tlsFailure, 'certificate-not-trusted');
  assert.match(
    String(r.reason),
    /^TLS required by MTA-STS \(policy of badcert\.test, id one, mode enforce, mx mx\.badcert\.test\): certificate not valid \(self-signed certificate not in the trust store\)/,
  );
  assert.ok(peers.badcert.tlsSessions >= 1, 'TLS was set up');
  assert.deepEqual(transactions(peers.badcert), []);
  const [a] = await attempts(id);
  assert.equal(a.tlsAchieved, 'encryptionOnly');
});

test('testing mode: delivered anyway, and the trace says the session would not meet the policy', async () => {
  const id = await relay('bob@testing.test', 'testing');
  await until('delivered', () => peers.testing.messages.length === 1);
  const [a] = await attempts(id);
  assert.equal(a.status, 'delivered');
  assert.equal(a.tlsRequired!.level, 'opportunistic');
  assert.ok(
    a.tlsNotes?.some((n) =>
      /^MTA-STS \(policy of testing\.test, id one, mode testing, mx mx\.testing\.test\): this session would NOT meet the policy \(domainValidation for mx\.testing\.test, achieved encryptionOnly\); delivered anyway \(testing mode\)$/.test(
        n,
      ),
    ),
    JSON.stringify(a.tlsNotes),
  );
  const text = await gw.cli(['trace', '--queue-id', id]);
  assert.match(text.stdout, /policy: MTA-STS \(policy of testing\.test.*would NOT meet the policy/);
});

test('a redirect is not followed: no policy, delivered opportunistically; the redirect target is never asked', async () => {
  const id = await relay('bob@redirect.test', 'redirect');
  await until('delivered', () => peers.redirect.messages.length === 1);
  const [a] = await attempts(id);
  assert.equal(a.tlsRequired!.level, 'opportunistic');
  assert.ok(
    a.tlsNotes?.some((n) =>
      /MTA-STS: policy fetch failed: redirect refused: HTTP 302 to https:\/\/mta-sts\.redirect\.test\/elsewhere\.txt.*\(sts-policy-fetch-error\); delivering as if redirect\.test had no policy/.test(
        n,
      ),
    ),
    JSON.stringify(a.tlsNotes),
  );
  assert.deepEqual(
    web['redirect.test'].requests.map((q) => q.path),
    ['/.well-known/mta-sts.txt'],
  );
});

test('`tls check DOMAIN` shows the MTA-STS record, the policy and whether each MX host satisfies it', async () => {
  const out = await gw.cli(['tls', 'check', 'outside.test']);
  assert.match(
    out.stdout,
    /^MTA-STS \(RFC 8461\) for outside\.test:\n {2}TXT _mta-sts\.outside\.test: id one\n {2}policy https:\/\/mta-sts\.outside\.test\/\.well-known\/mta-sts\.txt: mode enforce, max_age 86400, mx \*\.outside\.test$/m,
  );
  assert.match(
    out.stdout,
    /^ {2}mx\.evil\.test \[127\.0\.8\.22\]: does NOT satisfy the policy: matches no mx pattern \(\*\.outside\.test\): senders enforcing the policy never use it$/m,
  );
  assert.match(
    out.stdout,
    /^ {2}mx2\.outside\.test \[127\.0\.8\.23\]: satisfies the policy: matches \*\.outside\.test; TLS 1\.2\+ and a valid certificate for mx2\.outside\.test$/m,
  );
  const bad = await gw.cli(['tls', 'check', 'badcert.test']);
  assert.match(
    bad.stdout,
    /^ {2}mx\.badcert\.test \[127\.0\.8\.24\]: does NOT satisfy the policy: certificate not valid: self-signed certificate not in the trust store$/m,
  );
  const redirect = await gw.cli(['tls', 'check', 'redirect.test']);
  assert.match(
    redirect.stdout,
    /^ {2}policy https:\/\/mta-sts\.redirect\.test\/\.well-known\/mta-sts\.txt: NOT usable \(sts-policy-fetch-error\): redirect refused: HTTP 302/m,
  );
  const none = await gw.cli(['tls', 'check', 'mx1.enforce.test']);
  assert.match(
    none.stdout,
    /^ {2}TXT _mta-sts\.mx1\.enforce\.test: no TXT record at _mta-sts\.mx1\.enforce\.test: no MTA-STS policy$/m,
  );
  const j = JSON.parse((await gw.cli(['tls', 'check', 'outside.test', '--json'])).stdout) as {
    host: string;
    mtaSts?: { pattern: string | null; satisfies: boolean };
  }[];
  assert.deepEqual(
    j.map((h) => [h.host, h.mtaSts?.pattern, h.mtaSts?.satisfies]),
    [
      ['mx.evil.test', null, false],
      ['mx2.outside.test', '*.outside.test', true],
    ],
  );
  const hostPort = await gw.cli(['tls', 'check', `mx2.outside.test:${port}`]);
  assert.doesNotMatch(hostPort.stdout, /MTA-STS/, 'HOST:PORT is a host, not a mail domain');
});

test('fetch failure with a cached policy (after a restart, new id, policy server down): the cache still applies', async () => {
  const first = await relay('bob@cache.test', 'cache1');
  await until('delivered', () => peers.cache.messages.length === 1);
  assert.equal((await attempts(first))[0].tlsRequired!.level, 'domainValidation');
  // The DNS cache goes with the process; the policy cache stays in the queue database.
  await gw.stop();
  dns.zone['_mta-sts.cache.test'] = { TXT: ['v=STSv1; id=two;'] };
  dns.zone['cache.test'] = {
    MX: [
      { exchange: 'mx.evil2.test', priority: 5 },
      { exchange: 'mx.cache.test', priority: 10 },
    ],
  };
  await web['cache.test'].close();
  await gw.restart();
  const id = await relay('bob@cache.test', 'cache2');
  await until('delivered', () => peers.cache.messages.length === 2);
  assert.equal(peers.evil2.connections, 0, 'the cached policy keeps the new MX outside it out');
  const [a] = await attempts(id);
  assert.equal(a.host, 'mx.cache.test');
  assert.equal(a.tlsRequired!.level, 'domainValidation');
  assert.match(
    a.tlsRequired!.source,
    /MTA-STS \(policy of cache\.test, id one, mode enforce, mx mx\.cache\.test, cached\)/,
  );
  assert.ok(
    a.tlsNotes?.some((n) =>
      /MTA-STS: policy fetch failed \(sts-policy-fetch-error: HTTPS request failed: .*ECONNREFUSED.*\); using the cached policy \(id one\) until it expires/.test(
        n,
      ),
    ),
    JSON.stringify(a.tlsNotes),
  );
});

test('mtaSts.enabled false: no _mta-sts lookups, no policy applied', async () => {
  gw.writeConfig({ ...config, mtaSts: { enabled: false } });
  const r = await gw.cli(['config', 'reload']);
  assert.equal(r.code, 0, r.stderr);
  const before = dns.queries.filter((q) => q.name.startsWith('_mta-sts.')).length;
  const id = await relay('bob@cache.test', 'cache3');
  await until('delivered', () => peers.evil2.messages.length === 1);
  const [a] = await attempts(id);
  assert.equal(a.tlsRequired!.level, 'opportunistic');
  assert.equal(dns.queries.filter((q) => q.name.startsWith('_mta-sts.')).length, before);
});
