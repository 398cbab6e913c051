// Inbound certificate authentication checks revocation and EKU (issue 8, items 1 and 14): a
// partner connector (tlsSenderCertificateName + restrictDomainsToCertificate) and an onPremises
// connector relaying by certificate, against client certificates that are good, revoked in their
// CRL only, revoked at their OCSP responder only (a real `openssl ocsp`), whose endpoints are
// down (softFail: accepted and recorded unknown; hardFail after a reload: refused), and
// serverAuth-only. CRL and OCSP hosts are found through the test DNS server, as outbound.
// Replies, the log line and `portcullis trace` name the cause.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { cleanup, freePort, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { makePkiWith } from '../helpers/pki.ts';
import { startCrlServer, startOcspResponder, type CrlServer, type OcspResponder } from '../helpers/revocation.ts';
import { SmtpClient, type Reply } from '../helpers/smtp.ts';
import { until } from '../helpers/wait.ts';

const GW = '127.0.0.60';
const CLIENT = '127.0.0.61';

type Id =
  | 'fabGood'
  | 'fabRevCrl'
  | 'fabRevOcsp'
  | 'fabDead'
  | 'fabServerOnly'
  | 'corpGood'
  | 'corpRevCrl'
  | 'corpRevOcsp'
  | 'corpDead';
const NAMES: Record<Id, string> = {
  fabGood: 'mx1.fabrikam.test',
  fabRevCrl: 'mx-revcrl.fabrikam.test',
  fabRevOcsp: 'mx-revocsp.fabrikam.test',
  fabDead: 'mx-dead.fabrikam.test',
  fabServerOnly: 'mx-server.fabrikam.test',
  corpGood: 'mail.corp.contoso.test',
  corpRevCrl: 'mail-revcrl.corp.contoso.test',
  corpRevOcsp: 'mail-revocsp.corp.contoso.test',
  corpDead: 'mail-dead.corp.contoso.test',
};

let dir: string;
let gw: GatewayHandle;
let dns: DnsServer;
let crl: CrlServer;
let ocsp: OcspResponder;
let config: Record<string, unknown>;
const id = {} as Record<Id, { cert: string; key: string; fp: string }>;

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const OCSP = 'OCSP http://ocsp\\.pki\\.test:\\d+';
const CRL = 'CRL http://crl\\.pki\\.test:\\d+/int\\.crl';
const presented = (who: Id) => `presented CN=${esc(NAMES[who])}, O=Inbound Org \\(SHA-256 ${esc(id[who].fp)}\\)`;
const PARTNER_REFUSAL =
  "Sender domain fabrikam.test may only be used by its partner's certificate-authenticated servers";
const PARTNER =
  'partner connector "From Fabrikam" \\(organization contoso\\) requires a client certificate matching \\*\\.fabrikam\\.test for fabrikam\\.test; ';
const ONPREM =
  'recipient domain outside\\.test is not an accepted domain and this client is not allowed to relay; its client certificate does not identify onPremises connector "From on-premises" \\(organization contoso\\): ';

before(async () => {
  dir = tempDir('pc-inrev-');
  crl = await startCrlServer();
  const crlUrl = (name: string) => crl.url(name).replace('//127.0.0.1:', '//crl.pki.test:');
  const ocspPort = await freePort();
  const deadPort = await freePort();
  const rev = { crlUrls: [crlUrl('int.crl')], ocspUrls: [`http://ocsp.pki.test:${ocspPort}`] };
  const dead = {
    crlUrls: [`http://dead.pki.test:${deadPort}/int.crl`],
    ocspUrls: [`http://dead.pki.test:${deadPort}`],
  };
  const pki = await makePkiWith(dir, 'Inbound', { crlUrls: [crlUrl('root.crl')] });
  const opts: Record<Id, object> = {
    fabGood: rev,
    fabRevCrl: { crlUrls: rev.crlUrls },
    fabRevOcsp: { ocspUrls: rev.ocspUrls },
    fabDead: dead,
    fabServerOnly: { ...rev, clientAuth: false },
    corpGood: rev,
    corpRevCrl: { crlUrls: rev.crlUrls },
    corpRevOcsp: { ocspUrls: rev.ocspUrls },
    corpDead: dead,
  };
  const x = {} as Record<Id, X509Certificate>;
  for (const k of Object.keys(NAMES) as Id[]) {
    const c = await pki.issue(NAMES[k], opts[k]);
    x[k] = new X509Certificate(c.issued.certPem);
    id[k] = { cert: readFileSync(c.cert, 'utf8'), key: readFileSync(c.key, 'utf8'), fp: x[k].fingerprint256 };
  }
  await crl.publish('int.crl', pki.intermediate, [x.fabRevCrl, x.corpRevCrl]);
  await crl.publish('root.crl', pki.root, []);
  ocsp = await startOcspResponder(
    dir,
    pki.intermediate,
    [x.fabGood, x.fabServerOnly, x.corpGood],
    [x.fabRevOcsp, x.corpRevOcsp],
    ocspPort,
  );
  dns = await startDnsServer({
    'crl.pki.test': { A: ['127.0.0.1'] },
    'ocsp.pki.test': { A: ['127.0.0.1'] },
    'dead.pki.test': { A: ['127.0.0.1'] },
  });
  const server = await pki.issue('mx1.contoso.test');
  config = {
    tls: {
      certificates: [{ cert: server.cert, key: server.key }],
      trust: { system: false, caFiles: [pki.rootFile] },
      revocation: 'softFail',
    },
    dns: { servers: [dns.server] },
    queue: { retrySchedule: [60], messageExpiration: 600 },
    organizations: [
      {
        name: 'contoso',
        acceptedDomains: [{ domain: 'contoso.test' }],
        inboundConnectors: [
          {
            name: 'From Fabrikam',
            connectorType: 'partner',
            senderDomains: ['fabrikam.test'],
            requireTls: true,
            tlsSenderCertificateName: '*.fabrikam.test',
            restrictDomainsToCertificate: true,
          },
          {
            name: 'From on-premises',
            connectorType: 'onPremises',
            tlsSenderCertificateName: '*.corp.contoso.test',
            treatMessagesAsInternal: true,
          },
        ],
      },
    ],
  };
  gw = await startGateway({ dir, host: GW, config });
});

after(async () => {
  await cleanup(gw);
  await dns?.close();
  await ocsp?.close();
  await crl?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A session over TLS presenting the certificate of `who` (leaf + intermediate). */
async function session(who: Id): Promise<SmtpClient> {
  const c = await SmtpClient.connect(gw.port, GW, CLIENT);
  await c.hello('client.test');
  await c.starttls({ servername: 'mx1.contoso.test', cert: id[who].cert, key: id[who].key });
  await c.expect('EHLO client.test', 250);
  return c;
}

async function mailFrom(who: Id, sender: string): Promise<Reply> {
  const c = await session(who);
  try {
    return await c.cmd(`MAIL FROM:<${sender}>`);
  } finally {
    c.close();
  }
}

async function relay(who: Id): Promise<Reply> {
  const c = await session(who);
  try {
    await c.expect('MAIL FROM:<carol@contoso.test>', 250);
    return await c.cmd('RCPT TO:<eve@outside.test>');
  } finally {
    c.close();
  }
}

async function deliver(who: Id, sender: string, subject: string): Promise<string> {
  const c = await session(who);
  try {
    const r = await c.send(
      sender,
      ['alice@contoso.test'],
      `From: <${sender}>\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@inrev.test>\r\n\r\nbody\r\n`,
    );
    assert.equal(r.code, 250, `${who}: ${r.text}`);
    return /queued as (\w+)/.exec(r.text)![1];
  } finally {
    c.close();
  }
}

/** The message.rejected log line whose reason mentions `who`'s certificate name. */
const rejected = (who: Id, kind: 'MAIL' | 'RCPT') =>
  gw.waitForLog(
    (e) =>
      e.event === 'message.rejected' &&
      String(e.reason).startsWith(kind) &&
      String(e.reason).includes(`presented CN=${NAMES[who]},`),
  );

interface Traced {
  inbound: {
    connector?: { name: string; by: string };
    internal?: boolean;
    tls?: { peerCert?: { subject: string; verified: boolean; revocation?: { status: string; summary: string } } };
  };
}
async function traced(subject: string): Promise<{ json: Traced; text: string }> {
  const j = await gw.cli(['trace', '--message-id', `${subject}@inrev.test`, '--json']);
  assert.equal(j.code, 0, j.stderr);
  const t = await gw.cli(['trace', '--message-id', `${subject}@inrev.test`]);
  return { json: (JSON.parse(j.stdout) as Traced[])[0], text: t.stdout };
}

function received(subject: string): string {
  const d = path.join(gw.dataDir, 'mailboxes/contoso.test/alice/new');
  const msg = readdirSync(d)
    .map((f) => readFileSync(path.join(d, f), 'utf8'))
    .find((m) => m.includes(`Subject: ${subject}`));
  assert.ok(msg, `${subject} in the mailbox`);
  return /^Received: [\s\S]*?(?=\r\n\S)/m.exec(msg)![0];
}

test('a good certificate identifies the partner and the on-premises server; "not revoked" (OCSP good) is in the trace', async () => {
  await deliver('fabGood', 'bob@fabrikam.test', 'fab-good');
  const { json, text } = await traced('fab-good');
  assert.deepEqual(json.inbound.connector, { name: 'From Fabrikam', organization: 'contoso', by: 'certificate' });
  assert.equal(json.inbound.tls?.peerCert?.revocation?.status, 'good');
  const summary = new RegExp(`^not revoked \\(${OCSP}: good; CRL http://crl\\.pki\\.test:\\d+/root\\.crl: good\\)$`);
  assert.match(json.inbound.tls!.peerCert!.revocation!.summary, summary);
  assert.match(
    text,
    /client certificate CN=mx1\.fabrikam\.test, O=Inbound Org, issuer CN=Inbound Issuing CA, O=Inbound Trust, verified OK\n/,
  );
  assert.match(text, new RegExp(`\\n {2}client certificate revocation: not revoked \\(${OCSP}: good; `));
  await until('delivery to the mailbox', () => {
    try {
      return received('fab-good');
    } catch {
      return false;
    }
  });
  assert.match(
    received('fab-good'),
    /\(client certificate CN=mx1\.fabrikam\.test, O=Inbound Org issued by CN=Inbound Issuing CA, O=Inbound Trust, verified OK\)/,
  );
  assert.equal((await relay('corpGood')).code, 250, 'the on-premises server relays');
});

for (const [who, how, endpoint] of [
  ['fabRevCrl', 'CRL', CRL],
  ['fabRevOcsp', 'OCSP (openssl ocsp)', OCSP],
] as const) {
  test(`a partner certificate revoked in its ${how} does not satisfy tlsSenderCertificateName: 550 5.7.1, log and session facts say REVOKED`, async (t) => {
    const r = await mailFrom(who, 'bob@fabrikam.test');
    assert.equal(r.text, `550 5.7.1 ${PARTNER_REFUSAL}`);
    const e = await rejected(who, 'MAIL');
    assert.equal(e.enhanced, '5.7.1');
    t.diagnostic(`log: ${String(e.reason)}`);
    assert.match(
      String(e.reason),
      new RegExp(
        `^MAIL <bob@fabrikam\\.test>: ${PARTNER}${presented(who)}: certificate CN=${esc(NAMES[who])}, O=Inbound Org is REVOKED since \\S+ \\(${endpoint}: revoked\\)$`,
      ),
    );
    const end = await gw.waitForLog((l) => l.event === 'session.end' && l.sid === e.sid);
    const peer = (end.tls as { peerCert: { verified: boolean; revocation: { status: string; summary: string } } })
      .peerCert;
    assert.equal(peer.verified, true, 'the chain itself verifies');
    assert.equal(peer.revocation.status, 'revoked');
  });
}

test('a revoked partner certificate used with another sender domain identifies nothing; trace and Received: say REVOKED', async () => {
  await deliver('fabRevCrl', 'someone@elsewhere.test', 'fab-revoked-other');
  const { json, text } = await traced('fab-revoked-other');
  assert.equal(json.inbound.connector, undefined, 'no connector matched by the revoked certificate');
  assert.equal(json.inbound.tls?.peerCert?.revocation?.status, 'revoked');
  assert.match(
    text,
    /client certificate CN=mx-revcrl\.fabrikam\.test, O=Inbound Org, issuer CN=Inbound Issuing CA, O=Inbound Trust, REVOKED\n/,
  );
  assert.match(
    text,
    new RegExp(
      `client certificate revocation: certificate CN=mx-revcrl\\.fabrikam\\.test, O=Inbound Org is REVOKED since \\S+ \\(${CRL}: revoked\\)`,
    ),
  );
  await until('delivery to the mailbox', () => {
    try {
      return received('fab-revoked-other');
    } catch {
      return false;
    }
  });
  const h = received('fab-revoked-other');
  assert.match(
    h,
    /\(client certificate CN=mx-revcrl\.fabrikam\.test, O=Inbound Org issued by CN=Inbound Issuing CA, O=Inbound Trust, REVOKED\)/,
  );
  assert.doesNotMatch(h, /verified OK/);
});

for (const [who, how, endpoint] of [
  ['corpRevCrl', 'CRL', CRL],
  ['corpRevOcsp', 'OCSP (openssl ocsp)', OCSP],
] as const) {
  test(`an on-premises certificate revoked in its ${how} gets no relay: 550 5.7.1 Relay access denied, the log says REVOKED`, async (t) => {
    const r = await relay(who);
    assert.equal(r.text, '550 5.7.1 Relay access denied');
    const e = await rejected(who, 'RCPT');
    t.diagnostic(`log: ${String(e.reason)}`);
    assert.match(
      String(e.reason),
      new RegExp(
        `^RCPT <eve@outside\\.test>: ${ONPREM}${presented(who)}: certificate CN=${esc(NAMES[who])}, O=Inbound Org is REVOKED since \\S+ \\(${endpoint}: revoked\\)$`,
      ),
    );
  });
}

test('a serverAuth-only certificate does not identify the partner (EKU); nothing is fetched for it', async (t) => {
  const r = await mailFrom('fabServerOnly', 'bob@fabrikam.test');
  assert.equal(r.text, `550 5.7.1 ${PARTNER_REFUSAL}`);
  const e = await rejected('fabServerOnly', 'MAIL');
  t.diagnostic(`log: ${String(e.reason)}`);
  assert.match(
    String(e.reason),
    new RegExp(
      `${presented('fabServerOnly')}: its extended key usage is limited to serverAuth and does not include clientAuth$`,
    ),
  );
  const end = await gw.waitForLog((l) => l.event === 'session.end' && l.sid === e.sid);
  const peer = (end.tls as { peerCert: Record<string, unknown> }).peerCert;
  assert.equal(peer.ekuError, 'its extended key usage is limited to serverAuth and does not include clientAuth');
  assert.equal(peer.revocation, undefined);
});

test('softFail, responders down: the certificate still counts, recorded as unknown in the trace and Received:', async (t) => {
  await deliver('fabDead', 'bob@fabrikam.test', 'fab-dead-soft');
  const { json, text } = await traced('fab-dead-soft');
  assert.deepEqual(json.inbound.connector, { name: 'From Fabrikam', organization: 'contoso', by: 'certificate' });
  assert.equal(json.inbound.tls?.peerCert?.revocation?.status, 'unknown');
  const unknown =
    'revocation status of CN=mx-dead\\.fabrikam\\.test, O=Inbound Org unknown \\(OCSP http://dead\\.pki\\.test:\\d+: unreachable \\(ECONNREFUSED [^)]*\\); CRL http://dead\\.pki\\.test:\\d+/int\\.crl: unreachable \\(ECONNREFUSED [^)]*\\)\\)';
  assert.match(json.inbound.tls!.peerCert!.revocation!.summary, new RegExp(`^${unknown}$`));
  assert.match(text, /, verified OK, revocation status unknown\n/);
  t.diagnostic(
    `portcullis trace:\n${text
      .split('\n')
      .filter((l) => /client certificate/.test(l))
      .join('\n')}`,
  );
  assert.match(text, new RegExp(`client certificate revocation: ${unknown}`));
  await until('delivery to the mailbox', () => {
    try {
      return received('fab-dead-soft');
    } catch {
      return false;
    }
  });
  assert.match(
    received('fab-dead-soft'),
    /\(client certificate CN=mx-dead\.fabrikam\.test, O=Inbound Org issued by CN=Inbound Issuing CA, O=Inbound Trust, verified OK, revocation status unknown\)/,
  );
  assert.equal((await relay('corpDead')).code, 250, 'softFail: the on-premises server relays');
});

test('hardFail (after a reload), responders down: partner refused and relay denied, saying why; confirmed good still counts', async (t) => {
  gw.writeConfig({ ...config, tls: { ...(config.tls as object), revocation: 'hardFail' } });
  const r = await gw.cli(['config', 'reload']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const unknown = (who: Id) =>
    `tls\\.revocation hardFail: revocation status of CN=${esc(NAMES[who])}, O=Inbound Org unknown \\(OCSP http://dead\\.pki\\.test:\\d+: unreachable \\(ECONNREFUSED `;
  assert.equal((await mailFrom('fabDead', 'bob@fabrikam.test')).text, `550 5.7.1 ${PARTNER_REFUSAL}`);
  const hard = String((await rejected('fabDead', 'MAIL')).reason);
  t.diagnostic(`log: ${hard}`);
  assert.match(
    hard,
    new RegExp(`^MAIL <bob@fabrikam\\.test>: ${PARTNER}${presented('fabDead')}: ${unknown('fabDead')}`),
  );
  assert.equal((await relay('corpDead')).text, '550 5.7.1 Relay access denied');
  assert.match(
    String((await rejected('corpDead', 'RCPT')).reason),
    new RegExp(`^RCPT <eve@outside\\.test>: ${ONPREM}${presented('corpDead')}: ${unknown('corpDead')}`),
  );
  assert.equal(
    (await mailFrom('fabGood', 'bob@fabrikam.test')).code,
    250,
    'hardFail: a confirmed good partner certificate counts',
  );
  assert.equal((await relay('corpGood')).code, 250, 'hardFail: a confirmed good on-premises certificate relays');
  assert.equal((await mailFrom('fabRevOcsp', 'bob@fabrikam.test')).code, 550, 'revoked is refused under hardFail too');
});
