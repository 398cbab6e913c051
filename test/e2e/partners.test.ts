// Certificate-authenticated partners (issue 4): two real Portcullis instances, Contoso
// (127.0.0.10) and Fabrikam (127.0.0.11), on the same port, each with a certificate from a shared
// test CA that the other trusts, each with a partner inbound connector (requireTls,
// tlsSenderCertificateName, restrictDomainsToCertificate) and a domainValidation outbound
// connector for the other. Mail flows both ways over verified TLS and each side records the
// inbound connector; a stranger claiming a partner's domain is refused (530 over plaintext, 550
// without the partner's certificate); relay to an outside domain is denied to everyone except an
// onPremises server that proves itself with its certificate. A partner certificate that names its
// host in the subject CN only (no subjectAltName) identifies the partner (RFC 6125 CN fallback).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { issueCertificate } from '../../src/tls/certgen.ts';
import { cleanup, freePort, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { makePki } from '../helpers/pki.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';
import { SmtpClient, type Reply } from '../helpers/smtp.ts';

const CONTOSO = '127.0.0.10';
const FABRIKAM = '127.0.0.11';
const STRANGER = '127.0.0.12';
const OUTSIDE = '127.0.0.13';
const CORP = '127.0.0.14';

let pkiDir: string;
let port: number;
let dns: DnsServer;
let contoso: GatewayHandle;
let fabrikam: GatewayHandle;
let outside: Peer;
/** PEM cert+key of client identities. */
const id: Record<
  'fabrikam' | 'fabrikamCnOnly' | 'stranger' | 'corp' | 'corpSelf' | 'fabrikamSelf',
  { cert: string; key: string }
> = {} as never;

const read = (f: string) => readFileSync(f, 'utf8');

function orgConfig(
  self: { name: string; domain: string; ip: string; host: string; cert: { cert: string; key: string } },
  other: { name: string; domain: string; display: string },
  rootFile: string,
  extraInbound: object[] = [],
) {
  return {
    hostname: self.host,
    smtp: { listen: [`${self.ip}:${port}`] },
    tls: { certificates: [self.cert], trust: { system: false, caFiles: [rootFile] } },
    dns: { servers: [dns.server] },
    delivery: {
      port,
      sourceAddresses: [self.ip],
      destinationDownSeconds: 0,
      timeouts: { connect: 3, greeting: 10, command: 10 },
    },
    queue: { retrySchedule: [1], messageExpiration: 60, delayWarning: 0 },
    organizations: [
      {
        name: self.name,
        acceptedDomains: [{ domain: self.domain }],
        inboundConnectors: [
          {
            name: `From ${other.display}`,
            connectorType: 'partner',
            senderDomains: [other.domain, `*.${other.domain}`],
            requireTls: true,
            tlsSenderCertificateName: `*.${other.domain}`,
            restrictDomainsToCertificate: true,
          },
          { name: 'Local submission', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] },
          ...extraInbound,
        ],
        outboundConnectors: [
          {
            name: `To ${other.display}`,
            connectorType: 'partner',
            recipientDomains: [other.domain, `*.${other.domain}`],
            tlsSettings: 'domainValidation',
            tlsDomain: `*.${other.domain}`,
          },
        ],
      },
    ],
  };
}

before(async () => {
  pkiDir = tempDir('pc-partners-');
  port = await freePort(CONTOSO);
  const pki = await makePki(pkiDir, 'Partner');
  const pair = (c: { cert: string; key: string }) => ({ cert: read(c.cert), key: read(c.key) });
  const contosoCert = await pki.issue('mx1.contoso.test');
  const fabrikamCert = await pki.issue('mx1.fabrikam.test');
  id.fabrikam = pair(fabrikamCert);
  id.fabrikamCnOnly = pair(await pki.issue('mx2.fabrikam.test', { dnsNames: [] }));
  id.stranger = pair(await pki.issue('mx.stranger.test'));
  id.corp = pair(await pki.issue('mail.corp.contoso.test'));
  const self = async (name: string) => {
    const s = await issueCertificate({ subject: `CN=${name}`, dnsNames: [name] });
    return { cert: s.certPem, key: s.keyPem };
  };
  id.corpSelf = await self('mail.corp.contoso.test');
  id.fabrikamSelf = await self('mx9.fabrikam.test');
  const outsideCert = pair(await pki.issue('mx.outside.test'));

  dns = await startDnsServer({
    'contoso.test': { MX: [{ exchange: 'mx1.contoso.test', priority: 10 }] },
    'mx1.contoso.test': { A: [CONTOSO] },
    'fabrikam.test': { MX: [{ exchange: 'mx1.fabrikam.test', priority: 10 }] },
    'mx1.fabrikam.test': { A: [FABRIKAM] },
    'outside.test': { MX: [{ exchange: 'mx.outside.test', priority: 10 }] },
    'mx.outside.test': { A: [OUTSIDE] },
  });
  outside = await startPeer({ host: OUTSIDE, port, name: 'mx.outside.test', tls: outsideCert });

  const cdir = tempDir('pc-contoso-');
  const fdir = tempDir('pc-fabrikam-');
  contoso = await startGateway({
    dir: cdir,
    host: CONTOSO,
    config: orgConfig(
      {
        name: 'contoso',
        domain: 'contoso.test',
        ip: CONTOSO,
        host: 'mx1.contoso.test',
        cert: { cert: contosoCert.cert, key: contosoCert.key },
      },
      { name: 'fabrikam', domain: 'fabrikam.test', display: 'Fabrikam' },
      pki.rootFile,
      [
        {
          name: 'From on-premises',
          connectorType: 'onPremises',
          tlsSenderCertificateName: 'mail.corp.contoso.test',
          treatMessagesAsInternal: true,
        },
      ],
    ),
  });
  fabrikam = await startGateway({
    dir: fdir,
    host: FABRIKAM,
    config: orgConfig(
      {
        name: 'fabrikam',
        domain: 'fabrikam.test',
        ip: FABRIKAM,
        host: 'mx1.fabrikam.test',
        cert: { cert: fabrikamCert.cert, key: fabrikamCert.key },
      },
      { name: 'contoso', domain: 'contoso.test', display: 'Contoso' },
      pki.rootFile,
    ),
  });
});

after(async () => {
  await cleanup(contoso);
  await cleanup(fabrikam);
  await outside?.close();
  await dns?.close();
  rmSync(pkiDir, { recursive: true, force: true });
});

/** A client session to `gw` from `from`; with `tls`, STARTTLS (and the client certificate, if any). */
async function session(gwIp: string, from: string, tls?: { cert?: string; key?: string } | true): Promise<SmtpClient> {
  const c = await SmtpClient.connect(port, gwIp, from);
  await c.hello('client.test');
  if (tls) {
    await c.starttls({
      servername: gwIp === CONTOSO ? 'mx1.contoso.test' : 'mx1.fabrikam.test',
      ...(tls === true ? {} : tls),
    });
    await c.expect('EHLO client.test', 250);
  }
  return c;
}

async function submit(gwIp: string, from: string, to: string, subject: string): Promise<string> {
  const c = await session(gwIp, '127.0.0.1');
  try {
    const r = await c.send(
      from,
      [to],
      `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@partners.test>\r\n\r\nbody of ${subject}\r\n`,
    );
    assert.equal(r.code, 250, r.text);
    return /queued as (\w+)/.exec(r.text)![1];
  } finally {
    c.close();
  }
}

async function until<T>(
  what: string,
  f: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 15_000,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const mailbox = (gw: GatewayHandle, domain: string, local: string) => {
  const d = path.join(gw.dataDir, 'mailboxes', domain, local, 'new');
  try {
    return readdirSync(d).map((f) => readFileSync(path.join(d, f), 'utf8'));
  } catch {
    return [];
  }
};

interface Traced {
  id: string;
  org: string;
  mailFrom: string;
  inbound: {
    clientIp: string;
    protocol: string;
    connector?: { name: string; organization: string; by: string };
    internal?: boolean;
    tls?: {
      version: string;
      peerCert?: { subject: string; verified: boolean; revocation?: { status: string; summary: string } };
    };
  };
  trace: {
    kind: string;
    data: {
      status: string;
      connector?: string;
      host?: string;
      ip?: string;
      tlsRequired?: { level: string; source: string; tlsDomain?: string };
      tlsAchieved?: string;
      tls?: { version: string };
    };
  }[];
}

async function traceBy(gw: GatewayHandle, args: string[]): Promise<Traced> {
  const r = await gw.cli(['trace', ...args, '--json']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const [m] = JSON.parse(r.stdout) as Traced[];
  assert.ok(m, `no message for ${args.join(' ')}`);
  return m;
}

async function partnerFlow(o: {
  from: GatewayHandle;
  fromIp: string;
  to: GatewayHandle;
  toIp: string;
  sender: string;
  rcpt: string;
  subject: string;
  outConnector: string;
  inConnector: string;
  toOrg: string;
  toDomain: string;
  clientSubject: RegExp;
}) {
  const qid = await submit(o.fromIp, o.sender, o.rcpt, o.subject);
  const local = o.rcpt.split('@')[0];
  const msg = await until(`${o.rcpt} in the ${o.toOrg} mailbox`, () =>
    mailbox(o.to, o.toDomain, local).find((m) => m.includes(`Subject: ${o.subject}`)),
  );
  // At the receiving side: TLS with a verified client certificate, written in Received:.
  const received = /^Received: [\s\S]*?(?=\r\n\S)/m.exec(msg.slice(msg.indexOf('Received:')))![0];
  assert.match(received, new RegExp(`from \\S+ \\(\\[${o.fromIp.replace(/\./g, '\\.')}\\]\\)`));
  assert.match(received, /\(using TLSv1\.3 with cipher /);
  // The test CA names no CRL or OCSP endpoint: under the default softFail the certificate counts,
  // and its status is recorded as unknown.
  assert.match(
    received,
    new RegExp(
      `\\(client certificate ${o.clientSubject.source} issued by CN=Partner Issuing CA, O=Partner Trust, verified OK, revocation status unknown\\)`,
    ),
  );
  assert.match(received, / with ESMTPS id /);
  const inbound = await traceBy(o.to, ['--message-id', `${o.subject}@partners.test`]);
  assert.deepEqual(inbound.inbound.connector, { name: o.inConnector, organization: o.toOrg, by: 'certificate' });
  assert.equal(inbound.inbound.clientIp, o.fromIp);
  assert.equal(inbound.inbound.tls?.peerCert?.verified, true);
  assert.match(
    inbound.inbound.tls?.peerCert?.revocation?.summary ?? '',
    /^revocation status of CN=\S+, O=Partner Org unknown \(no CRL or OCSP endpoints\)$/,
  );
  const shown = await o.to.cli(['queue', 'show', inbound.id, '--json']);
  assert.equal(shown.code, 0, shown.stderr);
  assert.equal((JSON.parse(shown.stdout) as Traced).inbound.connector?.name, o.inConnector);
  // At the sending side: the outbound connector, domainValidation required and achieved.
  const out = await until('the delivery attempt at the sender', async () => {
    const t = await traceBy(o.from, ['--queue-id', qid]);
    return t.trace.find((e) => e.kind === 'delivery' && e.data.status === 'delivered') ? t : undefined;
  });
  const a = out.trace.filter((e) => e.kind === 'delivery').at(-1)!.data;
  assert.equal(a.connector, o.outConnector);
  assert.equal(a.ip, o.toIp);
  assert.equal(a.tlsRequired?.level, 'domainValidation');
  assert.equal(a.tlsAchieved, 'domainValidation');
  assert.equal(a.tls?.version, 'TLSv1.3');
}

test('Fabrikam → Contoso: delivered over TLS with a verified client certificate, inbound connector "From Fabrikam" recorded', async () => {
  await partnerFlow({
    from: fabrikam,
    fromIp: FABRIKAM,
    to: contoso,
    toIp: CONTOSO,
    sender: 'bob@fabrikam.test',
    rcpt: 'alice@contoso.test',
    subject: 'fab-to-con',
    outConnector: 'To Contoso',
    inConnector: 'From Fabrikam',
    toOrg: 'contoso',
    toDomain: 'contoso.test',
    clientSubject: /CN=mx1\.fabrikam\.test, O=Partner Org/,
  });
});

test('Contoso → Fabrikam: the mirror image, inbound connector "From Contoso" recorded at Fabrikam', async () => {
  await partnerFlow({
    from: contoso,
    fromIp: CONTOSO,
    to: fabrikam,
    toIp: FABRIKAM,
    sender: 'carol@contoso.test',
    rcpt: 'dave@fabrikam.test',
    subject: 'con-to-fab',
    outConnector: 'To Fabrikam',
    inConnector: 'From Contoso',
    toOrg: 'fabrikam',
    toDomain: 'fabrikam.test',
    clientSubject: /CN=mx1\.contoso\.test, O=Partner Org/,
  });
});

test('a Fabrikam server whose certificate names it in the subject CN only is identified as the partner', async () => {
  const c = await session(CONTOSO, FABRIKAM, id.fabrikamCnOnly);
  const r = await c.send(
    'bob@fabrikam.test',
    ['alice@contoso.test'],
    'Subject: cn-only\r\nMessage-ID: <cn-only@partners.test>\r\n\r\nfrom a CN-only certificate\r\n',
  );
  c.close();
  assert.equal(r.code, 250, r.text);
  const t = await traceBy(contoso, ['--message-id', 'cn-only@partners.test']);
  assert.deepEqual(t.inbound.connector, { name: 'From Fabrikam', organization: 'contoso', by: 'certificate' });
  assert.equal(t.inbound.tls?.peerCert?.subject, 'CN=mx2.fabrikam.test, O=Partner Org');
  assert.equal(t.inbound.tls?.peerCert?.verified, true);
});

const mailFrom = async (c: SmtpClient, sender: string): Promise<Reply> => {
  try {
    return await c.cmd(`MAIL FROM:<${sender}>`);
  } finally {
    c.close();
  }
};

test("a stranger claiming fabrikam.test is refused: 530 5.7.0 in plaintext, 550 5.7.1 without Fabrikam's certificate", async () => {
  const plain = await mailFrom(await session(CONTOSO, STRANGER), 'x@fabrikam.test');
  assert.equal(plain.text, '530 5.7.0 Must issue a STARTTLS command first');
  const sub = await mailFrom(await session(CONTOSO, STRANGER), 'x@mail.fabrikam.test');
  assert.equal(sub.code, 530, `subdomains of the partner domain too: ${sub.text}`);
  const refusals: [string, Reply][] = [
    ['TLS, no certificate', await mailFrom(await session(CONTOSO, STRANGER, true), 'x@fabrikam.test')],
    [
      'TLS, a certificate for another name from the same CA',
      await mailFrom(await session(CONTOSO, STRANGER, id.stranger), 'x@fabrikam.test'),
    ],
    [
      'TLS, a self-signed certificate with a Fabrikam name',
      await mailFrom(await session(CONTOSO, STRANGER, id.fabrikamSelf), 'x@fabrikam.test'),
    ],
  ];
  for (const [what, r] of refusals) {
    assert.equal(r.code, 550, `${what}: ${r.text}`);
    assert.match(
      r.text,
      /^550 5\.7\.1 Sender domain fabrikam\.test may only be used by its partner's certificate-authenticated servers$/,
      what,
    );
  }
  // Controls: the same stranger with its own domain is an ordinary sender; Fabrikam's certificate passes.
  for (const tls of [undefined, true, id.stranger] as const) {
    const c = await session(CONTOSO, STRANGER, tls);
    await c.expect('MAIL FROM:<x@elsewhere.test>', 250);
    await c.expect('RCPT TO:<alice@contoso.test>', 250);
    c.close();
  }
  const ok = await session(CONTOSO, FABRIKAM, id.fabrikam);
  await ok.expect('MAIL FROM:<x@fabrikam.test>', 250);
  ok.close();
  const logged = await contoso.waitForLog(
    (e) =>
      e.event === 'message.rejected' &&
      /partner connector "From Fabrikam"/.test(String(e.reason)) &&
      /mx\.stranger\.test/.test(String(e.reason)),
  );
  assert.equal(logged.enhanced, '5.7.1');
  const q = await contoso.cli(['queue', 'list', '--all', '--json']);
  assert.equal(q.code, 0, q.stderr);
  assert.ok(
    !(JSON.parse(q.stdout) as { mailFrom: string }[]).some((m) => m.mailFrom === 'x@fabrikam.test'),
    'nothing from the stranger was queued',
  );
});

test('relay to an outside domain is denied (550 5.7.1) to everyone but the onPremises server proving itself with its certificate', async () => {
  const relayTry = async (from: string, tls: { cert: string; key: string } | true | undefined, sender: string) => {
    const c = await session(CONTOSO, from, tls);
    try {
      await c.expect(`MAIL FROM:<${sender}>`, 250);
      return await c.cmd('RCPT TO:<eve@outside.test>');
    } finally {
      c.close();
    }
  };
  const denied: [string, Reply][] = [
    ['a stranger in plaintext', await relayTry(STRANGER, undefined, 'carol@contoso.test')],
    ['a stranger over TLS', await relayTry(STRANGER, true, 'carol@contoso.test')],
    ['the partner Fabrikam, certificate-authenticated', await relayTry(FABRIKAM, id.fabrikam, 'bob@fabrikam.test')],
    ['the partner Fabrikam with a Contoso sender', await relayTry(FABRIKAM, id.fabrikam, 'carol@contoso.test')],
    ['the on-premises host without its certificate', await relayTry(CORP, true, 'carol@contoso.test')],
    ['the on-premises host in plaintext', await relayTry(CORP, undefined, 'carol@contoso.test')],
    ['a self-signed certificate with the on-premises name', await relayTry(CORP, id.corpSelf, 'carol@contoso.test')],
  ];
  for (const [who, r] of denied) assert.match(r.text, /^550 5\.7\.1 Relay access denied$/, `${who}: ${r.text}`);

  const c = await session(CONTOSO, CORP, id.corp);
  const r = await c.send(
    'carol@contoso.test',
    ['eve@outside.test'],
    'Subject: hybrid relay\r\nMessage-ID: <hybrid@partners.test>\r\n\r\nfrom on-premises\r\n',
  );
  c.close();
  assert.equal(r.code, 250, r.text);
  await until('delivery to the outside host', () => outside.messages.find((m) => m.to.includes('eve@outside.test')));
  assert.equal(outside.messages.length, 1, 'only the authenticated on-premises server got mail out');
  const t = await traceBy(contoso, ['--message-id', 'hybrid@partners.test']);
  assert.deepEqual(t.inbound.connector, { name: 'From on-premises', organization: 'contoso', by: 'certificate' });
  assert.equal(t.inbound.internal, true);
  assert.equal(t.inbound.tls?.peerCert?.verified, true);
});
