// Administrators' TLS and queue tools against loopback peers with a generated PKI, a CRL/CA-issuer
// HTTP server and a real `openssl ocsp` responder, all found through the test DNS server:
// - `queue list` / `queue show` say, for a message deferred by a forced connector, which
//   connector, which host [ip] and why, readably;
// - `tls check` keeps the TLS facts when SMTP fails after STARTTLS, marks revocation answers
//   served from its cache, and lists CA-issuer URLs and the intermediates' CRLs;
// - `tls check --cert` checks a certificate file before it is served: chain, names, key, signature,
//   and every endpoint reachable from this node (or not, with the error);
// - `tls trust list`; `config check` and `cert info` warnings about weak keys, SHA-1 and
//   control characters in names.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import YAML from 'yaml';
import { asRoot, cleanup, freePort, runCli, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { makePki, makePkiWith, type Pki } from '../helpers/pki.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';
import { startCrlServer, startOcspResponder, type CrlServer, type OcspResponder } from '../helpers/revocation.ts';
import { SmtpClient } from '../helpers/smtp.ts';

const run = promisify(execFile);
const IP = { a: '127.0.0.61', b: '127.0.0.62', ehlo: '127.0.0.63', plain: '127.0.0.64' } as const;

let dir: string;
let gw: GatewayHandle;
let dns: DnsServer;
let crl: CrlServer;
let ocsp: OcspResponder;
let pki: Pki;
let partner: Pki;
let port: number;
let deadPort: number;
let baseConfig: Record<string, unknown>;
let rev: { crlUrls: string[]; ocspUrls: string[]; caIssuerUrls: string[] };
/** The certificate of a rotation: the CA (and its OCSP responder) know it, no server presents it yet. */
let fresh: Awaited<ReturnType<Pki['issue']>>;
const peers: Peer[] = [];
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const INT = 'CN=Check Issuing CA, O=Check Trust';

before(async () => {
  dir = tempDir('pc-tlscheck-');
  port = await freePort();
  deadPort = await freePort();
  crl = await startCrlServer();
  const named = (u: string) => u.replace('//127.0.0.1:', '//crl.pki.test:');
  const ocspPort = await freePort();
  rev = {
    crlUrls: [named(crl.url('int.crl'))],
    ocspUrls: [`http://ocsp.pki.test:${ocspPort}`],
    caIssuerUrls: [named(crl.url('int.cer'))],
  };
  pki = await makePkiWith(dir, 'Check', { crlUrls: [named(crl.url('root.crl'))] });
  partner = await makePki(dir, 'Partner');
  const x = (c: { issued: { certPem: string } }) => new X509Certificate(c.issued.certPem);
  const a = await pki.issue('mx-a.fabrikam.test', rev);
  const b = await pki.issue('mx-b.fabrikam.test', rev);
  const ehlo = await pki.issue('mx-ehlo.fabrikam.test', rev);
  fresh = await pki.issue('new.fabrikam.test', rev);
  await crl.publish('int.crl', pki.intermediate, []);
  await crl.publish('root.crl', pki.root, []);
  crl.put('int.cer', Buffer.from(pki.intermediate.cert.rawData));
  ocsp = await startOcspResponder(dir, pki.intermediate, [a, b, ehlo, fresh].map(x), [], ocspPort);
  dns = await startDnsServer({
    'crl.pki.test': { A: ['127.0.0.1'] },
    'ocsp.pki.test': { A: ['127.0.0.1'] },
    'dead.pki.test': { A: ['127.0.0.1'] },
    'mx-a.fabrikam.test': { A: [IP.a] },
    'mx-b.fabrikam.test': { A: [IP.b] },
    'mx-ehlo.fabrikam.test': { A: [IP.ehlo] },
    'mx-plain.fabrikam.test': { A: [IP.plain] },
    'two.fabrikam.test': {
      MX: [
        { exchange: 'mx-a.fabrikam.test', priority: 10 },
        { exchange: 'mx-b.fabrikam.test', priority: 20 },
      ],
    },
    'plain.fabrikam.test': { MX: [{ exchange: 'mx-plain.fabrikam.test', priority: 10 }] },
  });
  const tlsOf = (c: { chain: string; key: string }) => ({
    cert: readFileSync(c.chain, 'utf8'),
    key: readFileSync(c.key, 'utf8'),
  });
  peers.push(
    await startPeer({ host: IP.a, port, name: 'mx-a.fabrikam.test', tls: tlsOf(a) }),
    await startPeer({ host: IP.b, port, name: 'mx-b.fabrikam.test', tls: tlsOf(b) }),
    await startPeer({
      host: IP.ehlo,
      port,
      name: 'mx-ehlo.fabrikam.test',
      tls: tlsOf(ehlo),
      ehloAfterTls: '421 4.7.0 mx-ehlo.fabrikam.test closing: no service after STARTTLS',
    }),
    await startPeer({ host: IP.plain, port, name: 'mx-plain.fabrikam.test' }),
  );
  const pin = new X509Certificate(partner.root.certPem).fingerprint256;
  baseConfig = {
    dns: { servers: [dns.server] },
    delivery: { port, timeouts: { connect: 3, greeting: 10, command: 10 }, destinationDownSeconds: 0 },
    tls: { trust: { system: false, caFiles: [pki.rootFile] } },
    queue: { retrySchedule: [3600], delayWarning: 0 },
    organizations: [
      {
        name: 'contoso',
        acceptedDomains: [{ domain: 'contoso.test' }],
        inboundConnectors: [
          { name: 'Local submission', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] },
          {
            name: 'From Partner',
            connectorType: 'partner',
            senderDomains: ['partner.test'],
            trustedCAs: [partner.rootFile],
            pinnedCertificates: [pin],
          },
        ],
        outboundConnectors: [
          {
            name: 'To Fabrikam',
            recipientDomains: ['*.fabrikam.test'],
            tlsSettings: 'domainValidation',
            tlsDomain: '*.fabrikam.test',
          },
        ],
      },
    ],
  };
  gw = await startGateway({ dir, config: baseConfig });
});

after(async () => {
  await cleanup(gw);
  await Promise.all(peers.map((p) => p.close()));
  await dns?.close();
  await ocsp?.close();
  await crl?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A configuration file (not the running gateway's) whose server certificate is `cert`. */
function configWith(name: string, cert: { cert: string; key: string }): string {
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    YAML.stringify({
      ...asRoot(),
      ...baseConfig,
      hostname: 'mx1.contoso.test',
      dataDir: path.join(dir, `data-${name}`),
      smtp: { listen: ['127.0.0.1:2599'] },
      tls: { ...(baseConfig.tls as object), certificates: [cert] },
    }),
  );
  return file;
}

/** An RSA-1024 leaf signed by the Check intermediate with `hash`, made with openssl. */
async function opensslLeaf(name: string, hash: 'sha1' | 'sha256'): Promise<{ cert: string; key: string }> {
  const f = (x: string) => path.join(dir, `${name}.${x}`);
  writeFileSync(f('ca.pem'), pki.intermediate.certPem);
  writeFileSync(f('ca.key'), pki.intermediate.keyPem);
  writeFileSync(
    f('ext'),
    `subjectAltName=DNS:${name}\ncrlDistributionPoints=URI:${rev.crlUrls[0]}\nauthorityInfoAccess=OCSP;URI:${rev.ocspUrls[0]}\n`,
  );
  await run('openssl', [
    'req',
    '-new',
    '-newkey',
    'rsa:1024',
    '-nodes',
    '-keyout',
    f('key'),
    '-out',
    f('csr'),
    '-subj',
    `/CN=${name}`,
  ]);
  await run('openssl', [
    'x509',
    '-req',
    '-in',
    f('csr'),
    '-CA',
    f('ca.pem'),
    '-CAkey',
    f('ca.key'),
    '-set_serial',
    String(Date.now()),
    `-${hash}`,
    '-days',
    '90',
    '-extfile',
    f('ext'),
    '-out',
    f('leaf'),
  ]);
  writeFileSync(f('pem'), readFileSync(f('leaf'), 'utf8') + pki.intermediate.certPem);
  return { cert: f('pem'), key: f('key') };
}

async function relay(to: string, subject: string): Promise<string> {
  const c = await SmtpClient.connect(gw.port);
  try {
    await c.hello();
    const r = await c.send(
      'sender@contoso.test',
      [to],
      `Subject: ${subject}\r\nMessage-ID: <${subject}@contoso.test>\r\n\r\nbody\r\n`,
    );
    assert.equal(r.code, 250, r.text);
    return /queued as (\w+)/.exec(r.text)![1];
  } finally {
    c.close();
  }
}

test('queue list and queue show say which connector, host and cause keep a message waiting', async () => {
  const id = await relay('u@plain.fabrikam.test', 'plain');
  await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'deferred');
  const where = `connector "To Fabrikam", host mx-plain.fabrikam.test [${IP.plain}]:${port}`;

  const list = await gw.cli(['queue', 'list']);
  assert.equal(list.code, 0, list.stderr);
  assert.match(
    list.stdout,
    new RegExp(`^${id} +deferred .* <sender@contoso\\.test> -> u@plain\\.fabrikam\\.test \\(deferred\\)$`, 'm'),
  );
  assert.match(
    list.stdout,
    new RegExp(
      `^ +u@plain\\.fabrikam\\.test: ${esc(where)}: 451 4\\.7\\.4 TLS required by connector "To Fabrikam": .*STARTTLS`,
      'm',
    ),
  );

  const json = JSON.parse((await gw.cli(['queue', 'list', '--json'])).stdout) as {
    id: string;
    recipients: { lastAttempt?: Record<string, unknown> & { reply: { enhanced: string } } }[];
  }[];
  const last = json.find((m) => m.id === id)!.recipients[0].lastAttempt!;
  assert.deepEqual(
    [last.connector, last.host, last.ip, last.port, last.status, last.reply.enhanced],
    ['To Fabrikam', 'mx-plain.fabrikam.test', IP.plain, port, 'deferred', '4.7.4'],
  );

  const show = await gw.cli(['queue', 'show', id]);
  assert.equal(show.code, 0, show.stderr);
  const history = show.stdout.slice(show.stdout.indexOf('\nhistory:'));
  assert.match(history, /^ {2}\S+Z {2}u@plain\.fabrikam\.test: DEFERRED via smtp$/m);
  assert.match(
    history,
    new RegExp(`^ {6}host mx-plain\\.fabrikam\\.test \\[${esc(IP.plain)}\\]:${port}, connector "To Fabrikam"$`, 'm'),
  );
  assert.match(
    history,
    /^ {6}TLS policy: required domainValidation \(connector "To Fabrikam", tlsDomain \*\.fabrikam\.test\), achieved none$/m,
  );
  assert.match(history, /^ {6}TLS: none \(plaintext\)$/m);
  assert.match(history, /^ {6}result: 451 4\.7\.4 TLS required by connector "To Fabrikam": /m);
  assert.doesNotMatch(show.stdout, /[{}"]\w+"?:/, 'no JSON in the readable output');
  const full = JSON.parse((await gw.cli(['queue', 'show', id, '--json'])).stdout) as {
    trace: { data: { tlsRequired: { level: string } } }[];
  };
  assert.equal(full.trace[0].data.tlsRequired.level, 'domainValidation', '--json keeps the full data');
});

type Endpoint = {
  kind: string;
  url: string;
  ok: boolean;
  reachable: boolean;
  status?: string;
  cached?: boolean;
  fetchedAt?: string;
  served?: string;
  servedIsIssuer?: boolean;
  error?: string;
};
type Rev = {
  status: string;
  certificates: { subject: string; status: string; issuer?: string; issuerUrl?: string; endpoints: Endpoint[] }[];
};
type HostRep = {
  host: string;
  connected: boolean;
  passes: boolean;
  reason?: string;
  tls?: { version: string; subject: string; names: string[]; chainValid: boolean; chain: string[] };
  revocation?: Rev;
};

test('tls check keeps the TLS facts when SMTP fails after STARTTLS', async () => {
  const [j, t] = await Promise.all([
    gw.cli(['tls', 'check', `mx-ehlo.fabrikam.test:${port}`, '--json']),
    gw.cli(['tls', 'check', `mx-ehlo.fabrikam.test:${port}`]),
  ]);
  assert.equal(j.code, 1, j.stderr);
  const [r] = JSON.parse(j.stdout) as HostRep[];
  assert.equal(r.connected, true);
  assert.equal(r.passes, false);
  assert.equal(r.tls?.version, 'TLSv1.3');
  assert.match(r.tls?.subject ?? '', /^CN=mx-ehlo\.fabrikam\.test/);
  assert.deepEqual(r.tls?.names, ['mx-ehlo.fabrikam.test']);
  assert.equal(r.tls?.chainValid, true);
  assert.equal(r.revocation?.status, 'good');
  assert.match(r.reason ?? '', /^SMTP failed after TLS was established: .*refused EHLO: 421 /);
  assert.match(t.stdout, /^ {2}TLS: TLSv1\.3 TLS_\S+ \(\d+ bits\)$/m);
  assert.match(t.stdout, /^ {2}chain: CN=mx-ehlo\.fabrikam\.test.* {2}\(valid\)$/m);
  assert.match(t.stdout, /^ {2}reason: SMTP failed after TLS was established: /m);
});

test("tls check marks revocation answers served from its cache, and lists CA-issuer URLs and the intermediate's CRL", async () => {
  const t0 = Date.now();
  const [j, t] = await Promise.all([
    gw.cli(['tls', 'check', 'two.fabrikam.test', '--json']),
    gw.cli(['tls', 'check', 'two.fabrikam.test']),
  ]);
  assert.equal(j.code, 0, j.stdout + j.stderr);
  const [first, second] = JSON.parse(j.stdout) as HostRep[];
  assert.deepEqual([first.host, second.host], ['mx-a.fabrikam.test', 'mx-b.fabrikam.test']);
  const kinds = (r: HostRep) =>
    r.revocation!.certificates.map((c) => [c.subject, c.endpoints.map((e) => [e.kind, e.ok, e.cached ?? false])]);
  assert.deepEqual(kinds(first), [
    [
      'CN=mx-a.fabrikam.test, O=Check Org',
      [
        ['ocsp', true, false],
        ['crl', true, false],
        ['caIssuers', true, false],
      ],
    ],
    [INT, [['crl', true, false]]],
  ]);
  // The second host's certificate has its own OCSP answer; the CRLs it shares come from the cache.
  assert.deepEqual(kinds(second), [
    [
      'CN=mx-b.fabrikam.test, O=Check Org',
      [
        ['ocsp', true, false],
        ['crl', true, true],
        ['caIssuers', true, false],
      ],
    ],
    [INT, [['crl', true, true]]],
  ]);
  const cached = second.revocation!.certificates[1].endpoints[0];
  assert.ok(Date.parse(cached.fetchedAt ?? '') >= t0 - 1000, cached.fetchedAt);
  const aia = first.revocation!.certificates[0].endpoints[2];
  assert.deepEqual([aia.url, aia.served, aia.servedIsIssuer], [rev.caIssuerUrls[0], INT, true]);

  assert.match(
    t.stdout,
    new RegExp(`^ {4}CRL ${esc(rev.crlUrls[0])}: answered, good \\(from our cache, fetched \\S+Z\\)$`, 'm'),
  );
  assert.match(
    t.stdout,
    new RegExp(`^ {4}CA issuers ${esc(rev.caIssuerUrls[0])}: served ${esc(INT)} \\(the issuer\\)$`, 'm'),
  );
  assert.match(
    t.stdout,
    new RegExp(
      `^ {2}revocation of ${esc(INT)}: good\\n {4}CRL http://crl\\.pki\\.test:\\d+/root\\.crl: answered, good`,
      'm',
    ),
  );
});

type CertRep = {
  passes: boolean;
  nameMatch?: { required: string; ok: boolean };
  problems: { level: string; text: string }[];
  revocation: Rev;
  info: { chainValid: boolean; chainError?: string; keyStrength: string; signatureAlgorithm: string };
};
const check = async (...args: string[]) => {
  const [j, t] = await Promise.all([gw.cli(['tls', 'check', ...args, '--json']), gw.cli(['tls', 'check', ...args])]);
  assert.equal(j.code, t.code);
  return { code: j.code, r: JSON.parse(j.stdout) as CertRep, text: t.stdout, stderr: j.stderr };
};

test('tls check --cert: a good certificate, every endpoint of its chain reachable, passes', async () => {
  const c = fresh;
  const { code, r, text, stderr } = await check('--cert', c.cert, '--name', 'new.fabrikam.test');
  assert.equal(code, 0, text + stderr);
  assert.equal(r.passes, true, JSON.stringify(r.problems));
  assert.deepEqual(r.nameMatch, { required: 'new.fabrikam.test', ok: true });
  assert.equal(r.revocation.status, 'good');
  assert.deepEqual(
    r.revocation.certificates.map((x) => x.endpoints.map((e) => [e.kind, e.reachable, e.ok, e.status ?? e.served])),
    [
      [
        ['ocsp', true, true, 'good'],
        ['crl', true, true, 'good'],
        ['caIssuers', true, true, INT],
      ],
      [['crl', true, true, 'good']],
    ],
  );
  assert.match(
    text,
    /^ {2}chain +CN=new\.fabrikam\.test, O=Check Org {2}-> {2}CN=Check Issuing CA, O=Check Trust {2}-> {2}CN=Check Root CA, O=Check Trust {2}\(valid, root in our trust store\)$/m,
  );
  assert.match(text, /^PASS: /m);

  const other = await check('--cert', c.cert, '--name', 'mx.other.test');
  assert.equal(other.code, 1);
  assert.match(other.text, /FAIL +does not cover the name mx\.other\.test \(it names new\.fabrikam\.test\)/);
});

test('tls check --cert: endpoints this node cannot reach fail, each with its error (the firewall question)', async () => {
  const c = await pki.issue('walled.fabrikam.test', {
    crlUrls: [`http://dead.pki.test:${deadPort}/int.crl`],
    ocspUrls: [`http://dead.pki.test:${deadPort}`],
    caIssuerUrls: ['http://nowhere.pki.test/int.cer'],
  });
  const { code, r, text } = await check('--cert', c.cert);
  assert.equal(code, 1, text);
  assert.equal(r.info.chainValid, true, 'the chain itself is fine');
  const leaf = r.revocation.certificates[0];
  assert.deepEqual(
    leaf.endpoints.map((e) => [e.kind, e.reachable]),
    [
      ['ocsp', false],
      ['crl', false],
      ['caIssuers', false],
    ],
  );
  assert.match(leaf.endpoints[0].error ?? '', /ECONNREFUSED/);
  assert.match(
    text,
    new RegExp(
      `FAIL +OCSP endpoint http://dead\\.pki\\.test:${deadPort} of CN=walled\\.fabrikam\\.test, O=Check Org is not reachable from this node: ECONNREFUSED .*; check the firewall, proxy and DNS \\(dns\\.servers\\) between this node and it`,
    ),
  );
  assert.match(
    text,
    new RegExp(
      `FAIL +CRL endpoint http://dead\\.pki\\.test:${deadPort}/int\\.crl of .* is not reachable from this node: ECONNREFUSED`,
    ),
  );
  assert.match(
    text,
    /FAIL +CA-issuer endpoint http:\/\/nowhere\.pki\.test\/int\.cer of .* is not reachable from this node: /,
  );
  assert.match(text, new RegExp(`^ {4}OCSP http://dead\\.pki\\.test:${deadPort}: UNREACHABLE \\(ECONNREFUSED`, 'm'));
  assert.match(text, /^FAIL: 3 problem\(s\)/m);
});

test('tls check --cert: an RSA-1024 key fails and a SHA-1 signature warns (certificates made with openssl)', async () => {
  const weak = await opensslLeaf('weak.fabrikam.test', 'sha1');
  const { code, r, text } = await check('--cert', weak.cert);
  assert.equal(code, 1, text);
  assert.equal(r.info.keyStrength, '1024 bits');
  assert.equal(r.info.signatureAlgorithm, 'ECDSA with SHA-1');
  assert.deepEqual(
    r.problems.slice(0, 2).map((p) => [p.level, p.text.split(':')[0]]),
    [
      ['fail', 'RSA key of 1024 bits is too weak'],
      ['warn', 'signed with SHA-1'],
    ],
  );
  assert.equal(r.problems.filter((p) => p.level === 'fail').length, 1, JSON.stringify(r.problems));
  assert.match(text, /^ {2}FAIL +RSA key of 1024 bits is too weak: TLS clients refuse keys below 2048 bits/m);
  assert.match(text, /^ {2}WARNING +signed with SHA-1: /m);
});

test('tls check --cert: an incomplete chain fails; --chain completes it; the CA-issuer URL names the missing issuer', async () => {
  const bare = await pki.issue('bare.fabrikam.test', { crlUrls: rev.crlUrls });
  const withAia = await pki.issue('aia.fabrikam.test', rev);
  const leafOnly = (c: { issued: { certPem: string } }, n: string) => {
    const f = path.join(dir, `${n}-leaf-only.pem`);
    writeFileSync(f, c.issued.certPem);
    return f;
  };
  const intFile = path.join(dir, 'check-intermediate.pem');
  writeFileSync(intFile, pki.intermediate.certPem);

  const a = await check('--cert', leafOnly(bare, 'bare'));
  assert.equal(a.code, 1);
  assert.equal(a.r.info.chainValid, false);
  assert.match(
    a.text,
    /FAIL +chain does not validate: unable to find issuer "CN=Check Issuing CA, O=Check Trust" in the trust store/,
  );
  assert.match(
    a.text,
    /revocation of CN=bare\.fabrikam\.test, O=Check Org: unknown \(issuer certificate not found: answers cannot be verified\)/,
  );

  const b = await check('--cert', leafOnly(bare, 'bare'), '--chain', intFile);
  assert.equal(b.code, 0, b.text);
  assert.equal(b.r.info.chainValid, true);

  const c = await check('--cert', leafOnly(withAia, 'aia'));
  assert.equal(c.code, 1);
  assert.equal(c.r.revocation.certificates[0].issuerUrl, rev.caIssuerUrls[0]);
  assert.equal(c.r.revocation.certificates[0].status, 'good', 'checked against the issuer its CA-issuer URL serves');
  assert.match(
    c.text,
    new RegExp(
      `WARNING +OCSP endpoint ${esc(rev.ocspUrls[0])} of CN=aia\\.fabrikam\\.test, O=Check Org answered "unknown": the responder does not know this certificate`,
    ),
  );
  assert.match(
    c.text,
    new RegExp(
      `revocation of CN=aia\\.fabrikam\\.test, O=Check Org: good \\(issuer ${esc(INT)} fetched from its CA-issuer URL\\)`,
    ),
  );
});

test("tls trust list shows the trust store and the connectors' own CAs and pins", async () => {
  const root = new X509Certificate(pki.root.certPem);
  const proot = new X509Certificate(partner.root.certPem);
  const t = await gw.cli(['tls', 'trust', 'list']);
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stdout, /^ {2}system roots: not used \(tls\.trust\.system: false\)$/m);
  assert.match(
    t.stdout,
    new RegExp(
      `^ {2}CA file ${esc(pki.rootFile)}: 1 certificate\\(s\\)\\n {4}CN=Check Root CA, O=Check Trust\\n {6}SHA-256 ${root.fingerprint256}, valid `,
      'm',
    ),
  );
  assert.match(
    t.stdout,
    new RegExp(
      `^inbound connector "From Partner" \\(organization contoso\\), for its client certificates only:\\n {2}CA file ${esc(partner.rootFile)}: 1 certificate\\(s\\)\\n {4}CN=Partner Root CA, O=Partner Trust`,
      'm',
    ),
  );
  assert.match(t.stdout, new RegExp(`^ {2}pinned certificate SHA-256 ${proot.fingerprint256}$`, 'm'));
  const j = JSON.parse((await gw.cli(['tls', 'trust', 'list', '--json'])).stdout) as {
    system: { enabled: boolean };
    caFiles: { file: string; certificates: { fingerprintSha256: string }[] }[];
    connectors: { connector: string }[];
  };
  assert.equal(j.system.enabled, false);
  assert.deepEqual(
    j.caFiles.map((f) => [f.file, f.certificates.map((c) => c.fingerprintSha256)]),
    [[pki.rootFile, [root.fingerprint256]]],
  );
  assert.deepEqual(
    j.connectors.map((c) => c.connector),
    ['From Partner'],
  );
});

test('config check and cert info warn about an RSA-1024 key and names with control characters; a SHA-1 signed certificate is refused with the reason', async () => {
  const weak = configWith('weak', await opensslLeaf('weak256.fabrikam.test', 'sha256'));
  const cc = await runCli(['config', 'check', '-c', weak]);
  assert.equal(cc.code, 0, cc.stderr);
  assert.match(cc.stdout, /^WARNING \S+weak256\.fabrikam\.test\.pem: RSA key of 1024 bits is too weak/m);
  const info = await runCli(['cert', 'info', '-c', weak]);
  assert.match(info.stdout, /^ {2}WARNING +RSA key of 1024 bits is too weak/m);

  const ctl = await pki.issue('ctl.fabrikam.test', {
    subject: 'CN=mx\x1b[31m.fabrikam.test, O=Check Org',
    dnsNames: ['ctl.fabrikam.test', 'e\x07vil.fabrikam.test'],
  });
  const ctlConfig = configWith('ctl', { cert: ctl.cert, key: ctl.key });
  for (const args of [
    ['config', 'check'],
    ['cert', 'info'],
    ['tls', 'check', '--cert', ctl.cert],
  ]) {
    const r = await runCli([...args, '-c', ctlConfig]);
    assert.match(
      r.stdout,
      /WARNING .*name\(s\) with control characters \(shown escaped\): "mx\\x1b\[31m\.fabrikam\.test", "e\\x07vil\.fabrikam\.test"/,
      `${args.join(' ')}: ${r.stderr}`,
    );
    assert.doesNotMatch(r.stdout, /[\x07\x1b]/, `${args.join(' ')}: no raw control character reaches the terminal`);
  }

  const sha1 = configWith('sha1', await opensslLeaf('sha1.fabrikam.test', 'sha1'));
  const refused = await runCli(['config', 'check', '-c', sha1]);
  assert.equal(refused.code, 2, refused.stdout);
  assert.match(
    refused.stderr,
    /certificate \S+sha1\.fabrikam\.test\.pem is unusable: .*ca md too weak \(.*signed with SHA-1: /,
  );
  assert.doesNotMatch(refused.stderr, /\n\s+at /, 'no stack trace');
});
