// Forced TLS outbound (issue 4): outbound connectors at encryptionOnly, certificateValidation and
// domainValidation against loopback peers presenting a good, an expired, a revoked (CRL / OCSP),
// a wrong-name and a self-signed certificate, and against STARTTLS-stripping peers (not
// advertised, 454, 502). A forced connector never sends the message in plaintext or after a
// weaker check: the peer sees no MAIL/RCPT/DATA, the message is deferred with a 4.7.4 / 4.7.5
// reason naming the facts, the trace records the connector and the TLS level required vs
// achieved, and at expiry the sender gets a DSN saying why. Revocation is checked against a CRL
// served over HTTP and a real `openssl ocsp` responder, both found through the test DNS server;
// an unreachable endpoint passes under softFail and defers under hardFail (after a reload).
// `connector validate` and `tls check` report the same failures by name. A certificate whose only
// name is its subject CN proves that name (RFC 6125: the CN counts when there are no SAN DNS names).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { issueCertificate } from '../../src/tls/certgen.ts';
import { cleanup, freePort, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { startDnsServer, type DnsServer, type Zone } from '../helpers/dns-server.ts';
import { makePkiWith, type Pki } from '../helpers/pki.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';
import { startCrlServer, startOcspResponder, type CrlServer, type OcspResponder } from '../helpers/revocation.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { until } from '../helpers/wait.ts';

/** Seconds until a deferred message expires (and bounces). */
const EXPIRATION = 10;

const IP = {
  good: '127.0.0.21',
  expired: '127.0.0.22',
  revcrl: '127.0.0.23',
  revocsp: '127.0.0.24',
  wrong: '127.0.0.25',
  self: '127.0.0.26',
  nostarttls: '127.0.0.27',
  s454: '127.0.0.28',
  s502: '127.0.0.29',
  deadrev: '127.0.0.30',
  selfok: '127.0.0.31',
  wrongok: '127.0.0.32',
  broken: '127.0.0.33',
  brokenmix: '127.0.0.34',
} as const;
type PeerName = keyof typeof IP;
const host = (p: PeerName) => (p === 'good' ? 'mx1.fabrikam.test' : `mx-${p}.fabrikam.test`);
/** A peer whose certificate names mx.dest.test in its subject CN only (no subjectAltName). */
const CN_ONLY = '127.0.0.35';
/** Peers that only ever meet forced connectors they cannot satisfy: they must never see a transaction. */
const NEVER: PeerName[] = ['expired', 'revcrl', 'revocsp', 'wrong', 'self', 'nostarttls', 's454', 's502', 'broken'];

let dir: string;
let gw: GatewayHandle;
let dns: DnsServer;
let crl: CrlServer;
let ocsp: OcspResponder;
let pki: Pki;
let port: number;
let baseConfig: Record<string, unknown>;
const peers = {} as Record<PeerName, Peer>;
let cnOnly: Peer;

interface Case {
  id: string;
  rcpt: string;
  peer: PeerName;
  connector: string;
  level: 'encryptionOnly' | 'certificateValidation' | 'domainValidation';
  enhanced: '4.7.4' | '4.7.5';
  reason: RegExp;
  achieved: string;
  /** The TLS failure kind (src/tls/failures.ts) in the trace and the log; alternatives with "|". */
  kind: string;
  /** Plain words the expiry DSN must contain. */
  dsn: RegExp;
}

const FAB = 'TLS required by connector "To Fabrikam"';
const CV = 'TLS required by connector "To Certval"';
const ENC = 'TLS required by connector "To Enc"';
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const at = (p: PeerName) => esc(`host ${host(p)} [${IP[p]}]`);
const FP = '\\(SHA-256 [0-9A-F]{2}(?::[0-9A-F]{2}){31}\\)';
/** The DSN's plain words: the server, what it did, what the organisation requires. */
const REQUIRES: Record<Case['level'], string> = {
  encryptionOnly: 'an encrypted connection (TLS 1.2 or newer)',
  certificateValidation:
    'an encrypted connection (TLS 1.2 or newer) to a server with a valid certificate from a trusted authority',
  domainValidation: 'an encrypted connection (TLS 1.2 or newer) to a server whose valid certificate proves its name',
};
const KIND_WORDS: Record<string, string> = {
  'starttls-not-offered': 'did not offer an encrypted connection (TLS)',
  'starttls-refused': 'refused to set up an encrypted connection (TLS)',
  'handshake-failed': 'could not set up an encrypted connection (the TLS handshake failed)',
  'connection-lost-during-handshake': 'closed the connection while an encrypted connection (TLS) was being set up',
  'certificate-expired': 'did not prove its identity: its certificate has expired',
  'certificate-not-trusted':
    'did not prove its identity: its certificate is not issued by a certificate authority trusted here',
  'certificate-host-mismatch': 'did not prove its identity: its certificate was issued for a different name',
  'certificate-revoked': 'did not prove its identity: its certificate has been revoked by its issuer',
};
const plain = (p: PeerName, kind: string, level: Case['level']) =>
  new RegExp(
    `${esc(`The receiving mail server (${host(p)}) `)}(${kind
      .split('|')
      .map((k) => esc(KIND_WORDS[k]))
      .join(
        '|',
      )})${esc(`. Your organisation requires ${REQUIRES[level]} for this destination, so the message was never sent to it.`)}`,
  );
/** The "broken" peer sends non-TLS bytes and closes after its 220: whether those bytes arrive with the 220 (and are dropped as injection) or after it decides the kind. */
const BROKEN = 'handshake-failed|connection-lost-during-handshake';

const CASES: Case[] = [
  // domainValidation, tlsDomain *.fabrikam.test
  {
    id: 'dv-nostarttls',
    rcpt: 'u@nostarttls.fabrikam.test',
    peer: 'nostarttls',
    connector: 'To Fabrikam',
    level: 'domainValidation',
    enhanced: '4.7.4',
    achieved: 'none',
    kind: 'starttls-not-offered',
    reason: new RegExp(`^${esc(FAB)}: ${esc(`${host('nostarttls')} [${IP.nostarttls}]`)} did not offer STARTTLS$`),
    dsn: plain('nostarttls', 'starttls-not-offered', 'domainValidation'),
  },
  {
    id: 'dv-454',
    rcpt: 'u@s454.fabrikam.test',
    peer: 's454',
    connector: 'To Fabrikam',
    level: 'domainValidation',
    enhanced: '4.7.4',
    achieved: 'none',
    kind: 'starttls-refused',
    reason: new RegExp(`^${esc(FAB)}: ${esc(`${host('s454')} [${IP.s454}]`)} refused STARTTLS: 454 `),
    dsn: plain('s454', 'starttls-refused', 'domainValidation'),
  },
  {
    id: 'dv-502',
    rcpt: 'u@s502.fabrikam.test',
    peer: 's502',
    connector: 'To Fabrikam',
    level: 'domainValidation',
    enhanced: '4.7.4',
    achieved: 'none',
    kind: 'starttls-refused',
    reason: new RegExp(`^${esc(FAB)}: ${esc(`${host('s502')} [${IP.s502}]`)} refused STARTTLS: 502 `),
    dsn: plain('s502', 'starttls-refused', 'domainValidation'),
  },
  {
    id: 'dv-expired',
    rcpt: 'u@expired.fabrikam.test',
    peer: 'expired',
    connector: 'To Fabrikam',
    level: 'domainValidation',
    enhanced: '4.7.5',
    achieved: 'encryptionOnly',
    kind: 'certificate-expired',
    reason: new RegExp(
      `^${esc(FAB)}: certificate not valid \\(certificate CN=mx-expired\\.fabrikam\\.test, O=Forced Org expired on [^)]+\\), presented CN=mx-expired\\.fabrikam\\.test, O=Forced Org ${FP}, ${at('expired')}$`,
    ),
    dsn: plain('expired', 'certificate-expired', 'domainValidation'),
  },
  {
    id: 'dv-self',
    rcpt: 'u@self.fabrikam.test',
    peer: 'self',
    connector: 'To Fabrikam',
    level: 'domainValidation',
    enhanced: '4.7.5',
    achieved: 'encryptionOnly',
    kind: 'certificate-not-trusted',
    reason: new RegExp(
      `^${esc(FAB)}: certificate not valid \\(self-signed certificate not in the trust store\\), presented CN=mx-self\\.fabrikam\\.test, O=Nobody ${FP}, ${at('self')}$`,
    ),
    dsn: plain('self', 'certificate-not-trusted', 'domainValidation'),
  },
  {
    id: 'dv-revcrl',
    rcpt: 'u@revcrl.fabrikam.test',
    peer: 'revcrl',
    connector: 'To Fabrikam',
    level: 'domainValidation',
    enhanced: '4.7.5',
    achieved: 'encryptionOnly',
    kind: 'certificate-revoked',
    reason: new RegExp(
      `^${esc(FAB)}: certificate CN=mx-revcrl\\.fabrikam\\.test, O=Forced Org is REVOKED since \\S+ \\(CRL http://crl\\.pki\\.test:\\d+/int\\.crl: revoked\\), ${at('revcrl')}$`,
    ),
    dsn: plain('revcrl', 'certificate-revoked', 'domainValidation'),
  },
  {
    id: 'dv-revocsp',
    rcpt: 'u@revocsp.fabrikam.test',
    peer: 'revocsp',
    connector: 'To Fabrikam',
    level: 'domainValidation',
    enhanced: '4.7.5',
    achieved: 'encryptionOnly',
    kind: 'certificate-revoked',
    reason: new RegExp(
      `^${esc(FAB)}: certificate CN=mx-revocsp\\.fabrikam\\.test, O=Forced Org is REVOKED since \\S+ \\(OCSP http://ocsp\\.pki\\.test:\\d+: revoked\\), ${at('revocsp')}$`,
    ),
    dsn: plain('revocsp', 'certificate-revoked', 'domainValidation'),
  },
  {
    id: 'dv-wrong',
    rcpt: 'u@wrong.fabrikam.test',
    peer: 'wrong',
    connector: 'To Fabrikam',
    level: 'domainValidation',
    enhanced: '4.7.5',
    achieved: 'certificateValidation',
    kind: 'certificate-host-mismatch',
    reason: new RegExp(
      `^${esc(FAB)}: certificate name mismatch, expected \\*\\.fabrikam\\.test, presented CN=mx\\.other\\.test, O=Forced Org \\(names mx\\.other\\.test\\) ${FP}, ${at('wrong')}$`,
    ),
    dsn: plain('wrong', 'certificate-host-mismatch', 'domainValidation'),
  },
  {
    id: 'dv-broken',
    rcpt: 'u@broken.fabrikam.test',
    peer: 'broken',
    connector: 'To Fabrikam',
    level: 'domainValidation',
    enhanced: '4.7.5',
    achieved: 'none',
    kind: BROKEN,
    reason: new RegExp(`^${esc(FAB)}: TLS handshake with ${esc(`${host('broken')} [${IP.broken}]`)} failed: `),
    dsn: plain('broken', BROKEN, 'domainValidation'),
  },
  // certificateValidation: no name check, but chain, validity and revocation are never relaxed
  {
    id: 'cv-self',
    rcpt: 'u@self.certval.test',
    peer: 'self',
    connector: 'To Certval',
    level: 'certificateValidation',
    enhanced: '4.7.5',
    achieved: 'encryptionOnly',
    kind: 'certificate-not-trusted',
    reason: new RegExp(`^${esc(CV)}: certificate not valid \\(self-signed certificate not in the trust store\\)`),
    dsn: plain('self', 'certificate-not-trusted', 'certificateValidation'),
  },
  {
    id: 'cv-expired',
    rcpt: 'u@expired.certval.test',
    peer: 'expired',
    connector: 'To Certval',
    level: 'certificateValidation',
    enhanced: '4.7.5',
    achieved: 'encryptionOnly',
    kind: 'certificate-expired',
    reason: new RegExp(
      `^${esc(CV)}: certificate not valid \\(certificate CN=mx-expired\\.fabrikam\\.test, O=Forced Org expired on `,
    ),
    dsn: plain('expired', 'certificate-expired', 'certificateValidation'),
  },
  {
    id: 'cv-revcrl',
    rcpt: 'u@revcrl.certval.test',
    peer: 'revcrl',
    connector: 'To Certval',
    level: 'certificateValidation',
    enhanced: '4.7.5',
    achieved: 'encryptionOnly',
    kind: 'certificate-revoked',
    reason: new RegExp(`^${esc(CV)}: certificate CN=mx-revcrl\\.fabrikam\\.test, O=Forced Org is REVOKED`),
    dsn: plain('revcrl', 'certificate-revoked', 'certificateValidation'),
  },
  {
    id: 'cv-502',
    rcpt: 'u@s502.certval.test',
    peer: 's502',
    connector: 'To Certval',
    level: 'certificateValidation',
    enhanced: '4.7.4',
    achieved: 'none',
    kind: 'starttls-refused',
    reason: new RegExp(`^${esc(CV)}: .* refused STARTTLS: 502 `),
    dsn: plain('s502', 'starttls-refused', 'certificateValidation'),
  },
  // encryptionOnly: any certificate, but never plaintext
  {
    id: 'enc-nostarttls',
    rcpt: 'u@nostarttls.enc.test',
    peer: 'nostarttls',
    connector: 'To Enc',
    level: 'encryptionOnly',
    enhanced: '4.7.4',
    achieved: 'none',
    kind: 'starttls-not-offered',
    reason: new RegExp(`^${esc(ENC)}: .* did not offer STARTTLS$`),
    dsn: plain('nostarttls', 'starttls-not-offered', 'encryptionOnly'),
  },
  {
    id: 'enc-broken',
    rcpt: 'u@broken.enc.test',
    peer: 'broken',
    connector: 'To Enc',
    level: 'encryptionOnly',
    enhanced: '4.7.5',
    achieved: 'none',
    kind: BROKEN,
    reason: new RegExp(`^${esc(ENC)}: TLS handshake with .* failed: `),
    dsn: plain('broken', BROKEN, 'encryptionOnly'),
  },
  {
    id: 'enc-454',
    rcpt: 'u@s454.enc.test',
    peer: 's454',
    connector: 'To Enc',
    level: 'encryptionOnly',
    enhanced: '4.7.4',
    achieved: 'none',
    kind: 'starttls-refused',
    reason: new RegExp(`^${esc(ENC)}: .* refused STARTTLS: 454 `),
    dsn: plain('s454', 'starttls-refused', 'encryptionOnly'),
  },
];

const queueIds = new Map<string, string>();

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
  rcpt: number;
  status: string;
  agent: string;
  host?: string;
  ip?: string;
  connector?: string;
  tlsRequired?: { level: string; source: string; tlsDomain?: string };
  tlsAchieved?: string;
  tls?: { version: string; cipher: string; subject?: string; chainValid: boolean };
  revocation?: string;
  error?: string;
  tlsFailure?: string;
  reply: { code: number; enhanced: string; message: string; reason?: string };
}

async function traceOf(id: string): Promise<{ inbound: Record<string, unknown>; attempts: Attempt[] }> {
  const r = await gw.cli(['trace', '--queue-id', id, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const [m] = JSON.parse(r.stdout) as { inbound: Record<string, unknown>; trace: { kind: string; data: Attempt }[] }[];
  assert.ok(m, `no trace for ${id}`);
  return { inbound: m.inbound, attempts: m.trace.filter((t) => t.kind === 'delivery').map((t) => t.data) };
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
const sawTransaction = (p: Peer) => p.transcript.filter((l) => /^C: (MAIL|RCPT|DATA)\b/i.test(l));

before(async () => {
  dir = tempDir('pc-forced-');
  port = await freePort();
  crl = await startCrlServer();
  const crlUrl = (name: string) => crl.url(name).replace('//127.0.0.1:', '//crl.pki.test:');
  const ocspPort = await freePort();
  const ocspUrl = `http://ocsp.pki.test:${ocspPort}`;
  const deadPort = await freePort();
  const rev = { crlUrls: [crlUrl('int.crl')], ocspUrls: [ocspUrl] };
  pki = await makePkiWith(dir, 'Forced', { crlUrls: [crlUrl('root.crl')] });
  const good = await pki.issue('mx1.fabrikam.test', rev);
  const expired = await pki.issue('mx-expired.fabrikam.test', {
    ...rev,
    notBefore: new Date(Date.now() - 30 * 86_400_000),
    notAfter: new Date(Date.now() - 86_400_000),
  });
  const revcrl = await pki.issue('mx-revcrl.fabrikam.test', { crlUrls: rev.crlUrls });
  const revocsp = await pki.issue('mx-revocsp.fabrikam.test', { ocspUrls: rev.ocspUrls });
  const wrong = await pki.issue('mx.other.test', rev);
  const deadrev = await pki.issue('mx-deadrev.fabrikam.test', {
    crlUrls: [`http://127.0.0.99:${deadPort}/int.crl`],
    ocspUrls: [`http://127.0.0.99:${deadPort}`],
  });
  const cnOnlyCert = await pki.issue('mx.dest.test', { crlUrls: rev.crlUrls, dnsNames: [] });
  const self = await issueCertificate({
    subject: 'CN=mx-self.fabrikam.test, O=Nobody',
    dnsNames: ['mx-self.fabrikam.test'],
  });
  writeFileSync(path.join(dir, 'self.pem'), self.certPem);
  const x = (c: { issued: { certPem: string } }) => new X509Certificate(c.issued.certPem);
  await crl.publish('int.crl', pki.intermediate, [x(revcrl)]);
  await crl.publish('root.crl', pki.root, []);
  ocsp = await startOcspResponder(dir, pki.intermediate, [good, expired, wrong].map(x), [x(revocsp)], ocspPort);

  const zone: Zone = {
    'crl.pki.test': { A: ['127.0.0.1'] },
    'ocsp.pki.test': { A: ['127.0.0.1'] },
    'fabrikam.test': { MX: [{ exchange: 'mx1.fabrikam.test', priority: 10 }] },
  };
  for (const p of Object.keys(IP) as PeerName[]) {
    zone[host(p)] = { A: [IP[p]] };
    for (const d of ['fabrikam.test', 'certval.test', 'enc.test', 'opp.test'])
      zone[`${p}.${d}`] = { MX: [{ exchange: host(p), priority: 10 }] };
  }
  // Two MX hosts: the preferred one cannot prove the name, the second can.
  zone['failover.fabrikam.test'] = {
    MX: [
      { exchange: host('wrong'), priority: 10 },
      { exchange: host('good'), priority: 20 },
    ],
  };
  zone['dest.test'] = { MX: [{ exchange: 'mx.dest.test', priority: 10 }] };
  zone['mx.dest.test'] = { A: [CN_ONLY] };
  dns = await startDnsServer(zone);

  const tlsOf = (c: { chain: string; key: string }) => ({
    cert: readFileSync(c.chain, 'utf8'),
    key: readFileSync(c.key, 'utf8'),
  });
  const selfTls = { cert: self.certPem, key: self.keyPem };
  const peer = async (p: PeerName, o: Partial<Parameters<typeof startPeer>[0]>) => {
    peers[p] = await startPeer({ host: IP[p], port, name: host(p), ...o });
  };
  await peer('good', { tls: tlsOf(good) });
  await peer('expired', { tls: tlsOf(expired) });
  await peer('revcrl', { tls: tlsOf(revcrl) });
  await peer('revocsp', { tls: tlsOf(revocsp) });
  await peer('wrong', { tls: tlsOf(wrong) });
  await peer('self', { tls: selfTls });
  await peer('nostarttls', {});
  await peer('s454', { tls: tlsOf(good), starttlsReply: '454 4.7.0 TLS not available due to local problem' });
  await peer('s502', { tls: tlsOf(good), starttlsReply: '502 5.5.1 Error: command not implemented' });
  await peer('deadrev', { tls: tlsOf(deadrev) });
  await peer('selfok', { tls: selfTls });
  await peer('wrongok', { tls: tlsOf(wrong) });
  await peer('broken', { tls: tlsOf(good), breakHandshake: true });
  await peer('brokenmix', { tls: tlsOf(good), breakHandshake: true });
  cnOnly = await startPeer({ host: CN_ONLY, port, name: 'mx.dest.test', tls: tlsOf(cnOnlyCert) });

  baseConfig = {
    dns: { servers: [dns.server] },
    delivery: { port, timeouts: { connect: 3, greeting: 10, command: 10 }, destinationDownSeconds: 0 },
    tls: { trust: { system: false, caFiles: [pki.rootFile] } },
    queue: { retrySchedule: [1], messageExpiration: EXPIRATION, delayWarning: 0 },
    organizations: [
      {
        name: 'contoso',
        acceptedDomains: [{ domain: 'contoso.test' }],
        inboundConnectors: [
          { name: 'Local submission', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] },
        ],
        outboundConnectors: [
          {
            name: 'To Fabrikam',
            connectorType: 'partner',
            recipientDomains: ['fabrikam.test', '*.fabrikam.test'],
            tlsSettings: 'domainValidation',
            tlsDomain: '*.fabrikam.test',
          },
          { name: 'To Certval', recipientDomains: ['*.certval.test'], tlsSettings: 'certificateValidation' },
          { name: 'To Enc', recipientDomains: ['*.enc.test'], tlsSettings: 'encryptionOnly' },
          {
            name: 'To Dest',
            recipientDomains: ['dest.test'],
            tlsSettings: 'domainValidation',
            tlsDomain: 'mx.dest.test',
          },
        ],
      },
    ],
  };
  gw = await startGateway({ dir, config: baseConfig });
  // Every forced case at once: they retry every second until they expire.
  for (const c of CASES) queueIds.set(c.id, await relay(`${c.id}@contoso.test`, c.rcpt, c.id));
});

after(async () => {
  await cleanup(gw);
  await Promise.all([...Object.values(peers), cnOnly].map((p) => p?.close()));
  await dns?.close();
  await ocsp?.close();
  await crl?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('forced connectors defer with 4.7.4 (no STARTTLS) / 4.7.5 (certificate) and never open a transaction', async () => {
  await until('a first attempt for every forced case', () => CASES.every((c) => result(queueIds.get(c.id)!)), 20_000);
  const traces = await Promise.all(CASES.map((c) => traceOf(queueIds.get(c.id)!)));
  CASES.forEach((c, i) => {
    const first = traces[i].attempts[0];
    assert.ok(first, `${c.id}: no attempt in the trace`);
    assert.equal(first.status, 'deferred', `${c.id}: ${JSON.stringify(first)}`);
    assert.equal(first.agent, 'smtp');
    assert.equal(first.reply.code, 451, c.id);
    assert.equal(first.reply.enhanced, c.enhanced, `${c.id}: ${first.reply.reason}`);
    assert.match(first.reply.reason ?? '', c.reason, c.id);
    assert.equal(first.connector, c.connector, c.id);
    assert.equal(first.host, host(c.peer), c.id);
    assert.equal(first.ip, IP[c.peer], c.id);
    assert.deepEqual(
      first.tlsRequired,
      {
        level: c.level,
        source: `connector "${c.connector}"`,
        ...(c.level === 'domainValidation' ? { tlsDomain: '*.fabrikam.test' } : {}),
      },
      c.id,
    );
    assert.equal(first.tlsAchieved, c.achieved, `${c.id}: required ${c.level}, achieved`);
    const kind = new RegExp(`^(${c.kind})$`);
    assert.match(first.tlsFailure ?? '', kind, `${c.id}: TLS failure kind in the trace`);
    assert.match(String(result(queueIds.get(c.id)!)!.tlsFailure), kind, `${c.id}: TLS failure kind in the log`);
    if (c.achieved !== 'none') assert.ok(first.tls?.version, `${c.id}: the TLS session that was judged is recorded`);
    else assert.equal(first.tls, undefined, `${c.id}: no TLS session`);
  });
  for (const p of NEVER) {
    assert.ok(peers[p].connections >= 1, `${p} was contacted`);
    assert.deepEqual(peers[p].messages, [], `${p} received a message`);
    assert.deepEqual(sawTransaction(peers[p]), [], `${p} saw a transaction`);
  }
  // The human-readable trace says the same.
  const text = await gw.cli(['trace', '--queue-id', queueIds.get('dv-wrong')!]);
  assert.match(text.stdout, /connector "To Fabrikam"/);
  assert.match(
    text.stdout,
    /TLS policy: required domainValidation \(connector "To Fabrikam", tlsDomain \*\.fabrikam\.test\), achieved certificateValidation/,
  );
  assert.match(
    text.stdout,
    /451 4\.7\.5 TLS required by connector "To Fabrikam": certificate name mismatch, expected \*\.fabrikam\.test, presented CN=mx\.other\.test/,
  );
  assert.match(
    text.stdout,
    /TLS failure: the server certificate does not carry the required name \(certificate-host-mismatch\)/,
  );
  // A handshake failure: the label and kind first, the raw OpenSSL detail kept for the admin.
  const broken = await traceOf(queueIds.get('dv-broken')!);
  assert.match(
    broken.attempts[0].reply.reason ?? '',
    /failed: (the TLS handshake failed \(handshake-failed\); detail: ERR_SSL_WRONG_VERSION_NUMBER .*wrong version number|the connection was lost during the TLS handshake \(connection-lost-during-handshake\); detail: ECONNRESET )/,
  );
});

test('a good certificate: delivered over TLS, domainValidation achieved, revocation "not revoked" via OCSP and CRL', async () => {
  const id = await relay('sender@contoso.test', 'alice@fabrikam.test', 'good');
  await until('delivery to the good peer', () => result(id, 'delivered'));
  const m = peers.good.messages.find((x) => x.to.includes('alice@fabrikam.test'));
  assert.ok(m, 'the good peer got the message');
  assert.equal(m.tls?.version, 'TLSv1.3');
  assert.match(m.data, /Subject: good/);
  const a = (await traceOf(id)).attempts.at(-1)!;
  assert.equal(a.status, 'delivered');
  assert.equal(a.connector, 'To Fabrikam');
  assert.deepEqual(a.tlsRequired, {
    level: 'domainValidation',
    source: 'connector "To Fabrikam"',
    tlsDomain: '*.fabrikam.test',
  });
  assert.equal(a.tlsAchieved, 'domainValidation');
  assert.equal(a.tls?.chainValid, true);
  assert.match(a.tls?.subject ?? '', /^CN=mx1\.fabrikam\.test/);
  assert.match(
    a.revocation ?? '',
    /^not revoked \(OCSP http:\/\/ocsp\.pki\.test:\d+: good; CRL http:\/\/crl\.pki\.test:\d+\/root\.crl: good\)$/,
  );
});

test('a certificate naming its host in the subject CN only (no subjectAltName) passes domainValidation for that name', async () => {
  const id = await relay('sender@contoso.test', 'dora@dest.test', 'cn-only');
  await until('delivery to the CN-only peer', () => result(id, 'delivered') || result(id, 'deferred'));
  const a = (await traceOf(id)).attempts.at(-1)!;
  assert.equal(a.status, 'delivered', a.reply.reason);
  assert.deepEqual(a.tlsRequired, {
    level: 'domainValidation',
    source: 'connector "To Dest"',
    tlsDomain: 'mx.dest.test',
  });
  assert.equal(a.tlsAchieved, 'domainValidation');
  assert.deepEqual((a.tls as { names?: string[] } | undefined)?.names, ['mx.dest.test']);
  assert.ok(cnOnly.messages.some((m) => m.to.includes('dora@dest.test') && m.tls?.version === 'TLSv1.3'));
});

test('weaker levels are distinct: encryptionOnly accepts a self-signed certificate, certificateValidation a valid chain with another name', async () => {
  const enc = await relay('sender@contoso.test', 'u@selfok.enc.test', 'enc-self-ok');
  const cv = await relay('sender@contoso.test', 'u@wrongok.certval.test', 'cv-wrong-ok');
  await until('both delivered', () => result(enc, 'delivered') && result(cv, 'delivered'));
  const [e, c] = await Promise.all([traceOf(enc), traceOf(cv)]);
  assert.equal(e.attempts.at(-1)!.tlsAchieved, 'encryptionOnly');
  assert.equal(e.attempts.at(-1)!.connector, 'To Enc');
  assert.equal(c.attempts.at(-1)!.tlsAchieved, 'certificateValidation');
  assert.equal(c.attempts.at(-1)!.connector, 'To Certval');
  assert.equal(peers.selfok.messages[0]?.tls?.version, 'TLSv1.3');
  assert.equal(peers.wrongok.messages[0]?.tls?.version, 'TLSv1.3');
});

test('a forced failure at the preferred MX moves on to the next MX, which gets the message', async () => {
  const id = await relay('sender@contoso.test', 'carol@failover.fabrikam.test', 'failover');
  await until('delivery via the second MX', () => result(id, 'delivered'));
  const a = (await traceOf(id)).attempts.at(-1)!;
  assert.equal(a.host, 'mx1.fabrikam.test');
  assert.equal(a.tlsAchieved, 'domainValidation');
  assert.ok(peers.good.messages.some((m) => m.to.includes('carol@failover.fabrikam.test')));
  assert.deepEqual(sawTransaction(peers.wrong), [], 'nothing was sent to the MX that failed the check');
});

test('a host whose broken TLS made opportunistic delivery fall back to plaintext still gets nothing in plaintext from a forced connector', async () => {
  const opp = await relay('sender@contoso.test', 'u@brokenmix.opp.test', 'brokenmix-opportunistic');
  await until('opportunistic plaintext fallback', () => result(opp, 'delivered'));
  const o = (await traceOf(opp)).attempts.at(-1)!;
  assert.match(String((o as Attempt & { fallback?: string }).fallback), /TLS handshake failed/);
  assert.equal(peers.brokenmix.messages.length, 1);
  assert.equal(peers.brokenmix.messages[0].tls, null);
  const forced = await relay('sender@contoso.test', 'u@brokenmix.fabrikam.test', 'brokenmix-forced');
  await until('forced attempt', () => result(forced));
  const f = (await traceOf(forced)).attempts[0];
  assert.equal(f.status, 'deferred');
  assert.equal(f.reply.enhanced, '4.7.5');
  assert.match(
    f.reply.reason ?? '',
    /^TLS required by connector "To Fabrikam": TLS handshake with mx-brokenmix\.fabrikam\.test \[127\.0\.0\.34\] failed/,
  );
  assert.equal(peers.brokenmix.messages.length, 1, 'the forced message was not sent in plaintext');
  assert.ok(
    !peers.brokenmix.transcript.some((l) => l.includes('u@brokenmix.fabrikam.test')),
    'no RCPT for the forced message',
  );
});

test('an unreachable revocation endpoint passes under softFail (recorded) and defers under hardFail after a reload', async () => {
  const soft = await relay('sender@contoso.test', 'soft@deadrev.fabrikam.test', 'deadrev-soft');
  await until('softFail delivery', () => result(soft, 'delivered'));
  const s = (await traceOf(soft)).attempts.at(-1)!;
  assert.equal(s.tlsAchieved, 'domainValidation');
  assert.match(
    s.revocation ?? '',
    /^revocation status of CN=mx-deadrev\.fabrikam\.test, O=Forced Org unknown \(OCSP http:\/\/127\.0\.0\.99:\d+: unreachable \(ECONNREFUSED[^)]*\); CRL http:\/\/127\.0\.0\.99:\d+\/int\.crl: unreachable \(ECONNREFUSED/,
  );
  assert.equal(peers.deadrev.messages.length, 1);

  gw.writeConfig({ ...baseConfig, tls: { ...(baseConfig.tls as object), revocation: 'hardFail' } });
  const r = await gw.cli(['config', 'reload']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  await gw.waitForLog((e) => e.event === 'config.reloaded');

  const hard = await relay('deadrev-hard@contoso.test', 'hard@deadrev.fabrikam.test', 'deadrev-hard');
  const ok = await relay('sender@contoso.test', 'bob@fabrikam.test', 'good-hard');
  await until('hardFail attempts', () => result(hard) && result(ok));
  const h = (await traceOf(hard)).attempts[0];
  assert.equal(h.status, 'deferred');
  assert.equal(h.reply.enhanced, '4.7.5');
  assert.match(
    h.reply.reason ?? '',
    new RegExp(
      `^${esc(FAB)} with tls\\.revocation hardFail: revocation status of CN=mx-deadrev\\.fabrikam\\.test, O=Forced Org unknown \\(OCSP .*unreachable.*\\), ${at('deadrev')}$`,
    ),
  );
  assert.notEqual(
    h.tlsAchieved,
    'domainValidation',
    'an unconfirmed revocation status does not count as domainValidation under hardFail',
  );
  assert.equal(
    peers.deadrev.messages.length,
    1,
    'nothing more was sent to the host whose revocation status is unknown',
  );
  assert.ok(!sawTransaction(peers.deadrev).some((l) => l.includes('hard@deadrev')), 'no RCPT for the hardFail message');
  // Reachable endpoints that answer "good" pass under hardFail too.
  assert.equal(result(ok)!.status, 'delivered', JSON.stringify(result(ok)));
  assert.ok(peers.good.messages.some((x) => x.to.includes('bob@fabrikam.test')));
});

test('connector validate names each failure, passes for the good host, and --send delivers a test message', async () => {
  const v = (rcpt?: string, ...more: string[]) =>
    gw.cli(['connector', 'validate', 'To Fabrikam', ...(rcpt ? ['--recipient', rcpt] : []), ...more]);
  const [good, wrong, none, s454, revoked, ocspRevoked, expired, self] = await Promise.all([
    v(),
    v('x@wrong.fabrikam.test'),
    v('x@nostarttls.fabrikam.test'),
    v('x@s454.fabrikam.test'),
    v('x@revcrl.fabrikam.test'),
    v('x@revocsp.fabrikam.test'),
    v('x@expired.fabrikam.test'),
    v('x@self.fabrikam.test'),
  ]);
  assert.equal(good.code, 0, good.stdout + good.stderr);
  assert.match(good.stdout, /mx1\.fabrikam\.test \[127\.0\.0\.21\]:\d+ {2}PASS/);
  assert.match(good.stdout, /names: mx1\.fabrikam\.test; match \*\.fabrikam\.test: yes/);
  assert.match(good.stdout, /root in our trust store: yes/);
  assert.match(good.stdout, /OCSP http:\/\/ocsp\.pki\.test:\d+: answered, good/);
  assert.match(good.stdout, /CRL http:\/\/crl\.pki\.test:\d+\/int\.crl: answered, good/);
  assert.match(good.stdout, /PASS: 1 of 1 host/);
  const fails: [typeof good, RegExp][] = [
    [
      wrong,
      /TLS failure: the server certificate does not carry the required name \(certificate-host-mismatch\)\n {2}reason: TLS required by connector "To Fabrikam": certificate name mismatch, expected \*\.fabrikam\.test, presented CN=mx\.other\.test/,
    ],
    [
      none,
      /STARTTLS: NOT offered[\s\S]*TLS: not used \(STARTTLS not offered\)[\s\S]*TLS failure: the server did not offer STARTTLS \(starttls-not-offered\)\n {2}reason: TLS required by connector "To Fabrikam": no TLS session/,
    ],
    [s454, /TLS: not used \(STARTTLS refused: 454 /],
    [
      revoked,
      /reason: TLS required by connector "To Fabrikam": certificate CN=mx-revcrl\.fabrikam\.test, O=Forced Org is REVOKED/,
    ],
    [ocspRevoked, /OCSP http:\/\/ocsp\.pki\.test:\d+: answered, revoked[\s\S]*is REVOKED/],
    [
      expired,
      /chain: .*\(NOT valid: certificate CN=mx-expired\.fabrikam\.test, O=Forced Org expired on [\s\S]*TLS failure: the server certificate has expired \(certificate-expired\)\n {2}reason: .*certificate not valid/,
    ],
    [self, /root in our trust store: no[\s\S]*self-signed certificate not in the trust store/],
  ];
  for (const [r, re] of fails) {
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stdout, re);
    assert.match(r.stdout, /FAIL: 0 of 1 host/);
  }
  const json = await v('x@wrong.fabrikam.test', '--json');
  assert.notEqual(json.code, 0);
  const [rep] = JSON.parse(json.stdout) as { passes: boolean; nameMatch: { required: string; ok: boolean } }[];
  assert.deepEqual([rep.passes, rep.nameMatch], [false, { required: '*.fabrikam.test', ok: false }]);

  const before = peers.good.messages.length;
  const send = await v('postmaster@fabrikam.test', '--send');
  assert.equal(send.code, 0, send.stdout + send.stderr);
  assert.match(send.stdout, /test message: 250 /);
  const m = peers.good.messages.at(-1)!;
  assert.equal(peers.good.messages.length, before + 1);
  assert.deepEqual(m.to, ['postmaster@fabrikam.test']);
  assert.match(m.data, /Subject: Portcullis connector validation/);
  assert.ok(m.tls, 'the test message travelled over TLS');
  for (const p of NEVER) assert.deepEqual(sawTransaction(peers[p]), [], `validate sent nothing to ${p}`);
});

test('tls check reports chain, root in the trust store and every CRL/OCSP endpoint with whether it answered', async () => {
  const [good, dead, self, domain] = await Promise.all([
    gw.cli(['tls', 'check', `mx1.fabrikam.test:${port}`, '--json']),
    gw.cli(['tls', 'check', `mx-deadrev.fabrikam.test:${port}`, '--json']),
    gw.cli(['tls', 'check', `mx-self.fabrikam.test:${port}`, '--json']),
    gw.cli(['tls', 'check', 'fabrikam.test']),
  ]);
  type Rep = {
    host: string;
    ip: string;
    passes: boolean;
    reason?: string;
    tls: { chain: string[]; chainValid: boolean; rootInTrustStore: boolean; version: string };
    revocation?: {
      status: string;
      certificates: {
        subject: string;
        status: string;
        endpoints: { kind: string; url: string; ok: boolean; status?: string; error?: string }[];
      }[];
    };
  };
  const g = (JSON.parse(good.stdout) as Rep[])[0];
  assert.equal(good.code, 0, good.stdout + good.stderr);
  assert.equal(g.ip, IP.good);
  assert.deepEqual(g.tls.chain, [
    'CN=mx1.fabrikam.test, O=Forced Org',
    'CN=Forced Issuing CA, O=Forced Trust',
    'CN=Forced Root CA, O=Forced Trust',
  ]);
  assert.equal(g.tls.rootInTrustStore, true);
  assert.equal(g.revocation?.status, 'good');
  const [leaf, inter] = g.revocation!.certificates;
  assert.deepEqual(
    leaf.endpoints.map((e) => [e.kind, e.ok, e.status]),
    [
      ['ocsp', true, 'good'],
      ['crl', true, 'good'],
    ],
  );
  assert.match(leaf.endpoints[0].url, /^http:\/\/ocsp\.pki\.test:\d+$/);
  assert.match(leaf.endpoints[1].url, /^http:\/\/crl\.pki\.test:\d+\/int\.crl$/);
  assert.equal(inter.subject, 'CN=Forced Issuing CA, O=Forced Trust');
  assert.deepEqual(
    inter.endpoints.map((e) => [e.kind, e.ok, e.status]),
    [['crl', true, 'good']],
  );

  const d = (JSON.parse(dead.stdout) as Rep[])[0];
  assert.equal(d.revocation?.status, 'unknown');
  const endpoints = d.revocation!.certificates[0].endpoints;
  assert.deepEqual(
    endpoints.map((e) => [e.kind, e.ok]),
    [
      ['ocsp', false],
      ['crl', false],
    ],
  );
  assert.ok(
    endpoints.every((e) => /ECONNREFUSED/.test(e.error ?? '')),
    JSON.stringify(endpoints),
  );

  const s = (JSON.parse(self.stdout) as Rep[])[0];
  assert.notEqual(self.code, 0);
  assert.equal(s.tls.chainValid, false);
  assert.equal(s.tls.rootInTrustStore, false);
  assert.match(s.reason ?? '', /self-signed certificate not in the trust store/);

  assert.equal(domain.code, 0, domain.stdout + domain.stderr);
  assert.match(domain.stdout, /^mx1\.fabrikam\.test \[127\.0\.0\.21\]/m, 'a domain is checked through its MX hosts');
});

test('at expiry the sender gets a DSN that says the partner server did not offer / did not prove the required TLS', async () => {
  const dsns = await until(
    'an expiry DSN for every forced case',
    () => {
      const all = CASES.map((c) => mailbox(c.id).find((m) => /Undelivered Mail/.test(m)));
      return all.every(Boolean) ? (all as string[]) : undefined;
    },
    (EXPIRATION + 15) * 1000,
  );
  CASES.forEach((c, i) => {
    const dsn = dsns[i];
    assert.match(
      dsn,
      new RegExp(`Final-Recipient: rfc822; ${esc(c.rcpt)}\\r\\nAction: failed\\r\\nStatus: 5\\.4\\.7`),
      c.id,
    );
    assert.match(dsn, /retried until the message expired/, c.id);
    assert.match(dsn, new RegExp(esc(`TLS required by connector "${c.connector}"`)), c.id);
    assert.match(dsn, c.dsn, c.id);
    if (!c.kind.startsWith('certificate-'))
      assert.doesNotMatch(dsn, /did not prove its identity/, `${c.id}: not a certificate failure`);
    assert.match(dsn, new RegExp(`X-Portcullis-Queue-ID: ${queueIds.get(c.id)}`), c.id);
  });
  const hard = await until(
    'hardFail DSN',
    () => mailbox('deadrev-hard').find((m) => /Undelivered Mail/.test(m)),
    (EXPIRATION + 15) * 1000,
  );
  assert.match(hard, /hardFail/);
  assert.match(
    hard,
    /did not prove its identity: whether its certificate has been revoked could not be confirmed\. Your organisation requires/,
  );
  // Across every retry until expiry, the peers that cannot meet the requirement saw no transaction.
  for (const p of NEVER) {
    assert.deepEqual(peers[p].messages, [], p);
    assert.deepEqual(sawTransaction(peers[p]), [], p);
    assert.ok(peers[p].connections >= 2, `${p}: retried (${peers[p].connections} connections)`);
  }
});
