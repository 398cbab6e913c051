// The "Hybrid on-premises" walkthrough of docs/connectors.md with a real Postfix (Debian package)
// as Contoso's on-premises server mail.corp.contoso.test. Loopback only; Postfix does no DNS
// (helper settings), Portcullis asks only the test DNS server.
//   (a) Postfix relays internet mail through Portcullis, proving itself with its client
//       certificate; Portcullis matches inbound connector "From on-premises" by certificate, marks
//       the message internal and delivers it to outside.test (a scripted peer).
//   (b) The same Postfix without its client certificate (reconfigured and reloaded) is refused:
//       550 5.7.1 Relay access denied, and Postfix bounces the message to its sender.
//   (c) Internet mail for corp.contoso.test (internalRelay) is accepted by Portcullis and delivered
//       to Postfix under outbound connector "To on-premises" (domainValidation).
//   (d) When Postfix presents a certificate for another name, Portcullis defers with 4.7.5 and
//       sends Postfix nothing; once the right certificate is back the retry delivers it.
// Needs root (the throwaway Postfix instance); run with `npm run test:interop`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { makePki } from '../helpers/pki.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';
import { startPostfix, type PostfixInstance, type PostfixOptions } from '../helpers/postfix.ts';
import { SmtpClient } from '../helpers/smtp.ts';

const PF_HOST = '127.0.0.19'; // mail.corp.contoso.test (Postfix)
const PF_NAME = 'mail.corp.contoso.test';
const OUTSIDE = '127.0.0.23'; // mx.outside.test (scripted peer)
const INTERNET = '127.0.0.24'; // an internet client sending to corp.contoso.test
const WORKSTATION = '127.0.0.25'; // a corporate client submitting to Postfix
const GW_NAME = 'mx1.contoso.test';

interface Pair {
  chain: string;
  key: string;
}

let base: string;
let rootFile: string;
let corpCert: Pair;
let otherCert: Pair;
let dns: DnsServer | undefined;
let outside: Peer | undefined;
let gw: GatewayHandle | undefined;
let pf: PostfixInstance | undefined;
let pfPort: number;

/** Postfix as mail.corp.contoso.test: smtpd certificate `server`, client certificate for mail.corp.contoso.test. */
function postfixOptions(server: Pair): PostfixOptions {
  return {
    base: path.join(base, 'postfix'),
    host: PF_HOST,
    port: pfPort,
    hostname: PF_NAME,
    cert: server.chain,
    key: server.key,
    caFile: rootFile,
    mailboxDomain: 'corp.contoso.test',
    users: ['alice', 'bob'],
    // Everything that is not corp.contoso.test goes to the gateway (numeric next hop, no DNS).
    relayhost: `[127.0.0.1]:${gw!.port}`,
    extra: [
      // Towards the gateway: TLS mandatory, chain to the test root and the name mx1.contoso.test.
      'smtp_tls_security_level = secure',
      `smtp_tls_secure_cert_match = ${GW_NAME}`,
      // The client certificate that identifies this server to the gateway.
      `smtp_tls_cert_file = ${corpCert.chain}`,
      `smtp_tls_key_file = ${corpCert.key}`,
      // Connect from the server's own address (the gateway has no IP rule for it).
      `smtp_bind_address = ${PF_HOST}`,
      // From the gateway: ask for its client certificate and verify it (logged as "Trusted").
      'smtpd_tls_ask_ccert = yes',
      `smtpd_tls_CAfile = ${rootFile}`,
    ],
  };
}

before(async () => {
  base = mkdtempSync(path.join(os.tmpdir(), 'pc-hybrid-'));
  chmodSync(base, 0o755); // the postfix user reads the certificates below it
  const certs = path.join(base, 'certs');
  mkdirSync(certs, { mode: 0o755 });
  const pki = await makePki(certs, 'Hybrid');
  rootFile = pki.rootFile;
  // certgen's default EKU is serverAuth + clientAuth: the same certificate serves smtpd and smtp.
  corpCert = await pki.issue(PF_NAME);
  otherCert = await pki.issue('mail.other.test');
  const gwCert = await pki.issue(GW_NAME);
  const outsideCert = await pki.issue('mx.outside.test');
  for (const f of readdirSync(certs)) chmodSync(path.join(certs, f), 0o644);

  pfPort = await freePort(PF_HOST);
  const outPort = await freePort(OUTSIDE);
  dns = await startDnsServer({
    'outside.test': { MX: [{ exchange: 'mx.outside.test', priority: 10 }] },
    'mx.outside.test': { A: [OUTSIDE] },
    [PF_NAME]: { A: [PF_HOST] },
  });
  outside = await startPeer({
    host: OUTSIDE,
    port: outPort,
    name: 'mx.outside.test',
    tls: { cert: readFileSync(outsideCert.chain, 'utf8'), key: readFileSync(outsideCert.key, 'utf8') },
  });
  const gwDir = path.join(base, 'gateway');
  mkdirSync(gwDir);
  gw = await startGateway({
    dir: gwDir,
    config: {
      hostname: GW_NAME,
      dns: { servers: [dns.server] },
      delivery: {
        port: outPort,
        destinationDownSeconds: 0,
        connectionReuse: { idleSeconds: 1 },
        timeouts: { connect: 5, greeting: 10, command: 10, dataInit: 10, dataBlock: 10, dataEnd: 20 },
      },
      tls: {
        certificates: [{ cert: gwCert.chain, key: gwCert.key }],
        trust: { system: false, caFiles: [pki.rootFile] },
      },
      queue: { retrySchedule: [2] },
      organizations: [
        {
          name: 'contoso',
          acceptedDomains: [
            { domain: 'contoso.test', type: 'authoritative' },
            { domain: 'corp.contoso.test', type: 'internalRelay' },
          ],
          inboundConnectors: [
            // No senderIPAddresses: only the certificate identifies the on-premises server.
            {
              name: 'From on-premises',
              connectorType: 'onPremises',
              tlsSenderCertificateName: PF_NAME,
              treatMessagesAsInternal: true,
            },
          ],
          outboundConnectors: [
            {
              name: 'To on-premises',
              connectorType: 'onPremises',
              recipientDomains: ['corp.contoso.test'],
              useMXRecord: false,
              smartHosts: [`${PF_NAME}:${pfPort}`],
              tlsSettings: 'domainValidation',
              tlsDomain: PF_NAME,
            },
          ],
        },
      ],
    },
  });
  pf = await startPostfix(postfixOptions(corpCert));
});

after(async () => {
  await gw?.stop();
  await pf?.stop();
  await outside?.close();
  await dns?.close();
  if (base && !process.env.KEEP_INTEROP) rmSync(base, { recursive: true, force: true });
});

const tail = (n = 30) => (pf?.log() ?? '').split('\n').slice(-n).join('\n');

async function until<T>(what: string, f: () => T | undefined | false, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end)
      throw new Error(
        `timed out after ${ms} ms waiting for ${what}\n--- postfix log (tail) ---\n${tail()}\n--- gateway log (tail) ---\n${gw?.logs.slice(-10).join('\n')}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** One message into Postfix's own smtpd (as a workstation on the corporate network would); Postfix's queue id. */
async function submitToPostfix(from: string, to: string, marker: string): Promise<string> {
  const c = await SmtpClient.connect(pfPort, PF_HOST, WORKSTATION);
  try {
    await c.hello('workstation.corp.contoso.test');
    const r = await c.send(
      from,
      [to],
      `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${marker}\r\nMessage-ID: <${marker}@corp.contoso.test>\r\n\r\n${marker}\r\n`,
    );
    assert.equal(r.code, 250, r.text);
    return /queued as ([0-9A-Za-z]+)/.exec(r.text)![1];
  } finally {
    c.write('QUIT\r\n');
    c.close();
  }
}

/** One message into Portcullis from an internet client (no certificate); Portcullis's queue id. */
async function submitFromInternet(from: string, to: string, marker: string): Promise<string> {
  const c = await SmtpClient.connect(gw!.port, '127.0.0.1', INTERNET);
  try {
    await c.hello('mx.outside.test');
    await c.starttls({ servername: GW_NAME });
    await c.expect('EHLO mx.outside.test', 250);
    const r = await c.send(
      from,
      [to],
      `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${marker}\r\nMessage-ID: <${marker}@outside.test>\r\n\r\n${marker}\r\n`,
    );
    assert.equal(r.code, 250, r.text);
    return /queued as (\w+)/.exec(r.text)![1];
  } finally {
    c.write('QUIT\r\n');
    c.close();
  }
}

/** Postfix's final log line for one recipient of `pfId` (sent, bounced or deferred). */
function postfixResult(pfId: string, rcpt: string): Promise<RegExpExecArray> {
  const re = new RegExp(
    `postfix/smtp\\[(\\d+)\\]: ${pfId}: to=<${esc(rcpt)}>, relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${gw!.port}, .*dsn=(\\S+), status=(sent|bounced|deferred) \\((.*)\\)$`,
    'm',
  );
  return until(`Postfix's result for ${pfId}`, () => re.exec(pf!.log()) ?? undefined, 30_000);
}

/** The TLS line Postfix's smtp process `pid` logged for its connection to the gateway. */
function smtpTlsLine(pid: string): RegExpExecArray | null {
  return new RegExp(
    `^.*postfix/smtp\\[${pid}\\]: (\\w+) TLS connection established to 127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${gw!.port}: (TLSv1\\.[23]) with cipher (\\S+).*$`,
    'm',
  ).exec(pf!.log());
}

interface Traced {
  id: string;
  state: string;
  inbound: {
    clientIp: string;
    protocol: string;
    internal?: boolean;
    connector?: { name: string; organization: string; by: string };
    tls?: { version: string; peerCert?: { subject: string; issuer: string; verified: boolean } };
  };
  trace: { kind: string; data: Record<string, unknown> }[];
}

async function trace(queueId: string): Promise<Traced> {
  const r = await gw!.cli(['trace', '--queue-id', queueId, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const [m] = JSON.parse(r.stdout) as Traced[];
  assert.ok(m, `trace --queue-id ${queueId}`);
  return m;
}

test(
  '(a) Postfix relays to the internet through Portcullis, proving itself with its client certificate',
  { timeout: 90_000 },
  async (t) => {
    const marker = `hybrid-out-${randomUUID()}`;
    const pfId = await submitToPostfix('alice@corp.contoso.test', 'someone@outside.test', marker);

    // Postfix's side: sent to the relayhost over verified TLS (chain and name mx1.contoso.test).
    const res = await postfixResult(pfId, 'someone@outside.test');
    assert.equal(res[3], 'sent', `Postfix relayed ${pfId}:\n${res[0]}\n${tail()}`);
    const gwId = /250 2\.0\.0 OK queued as (\w+)/.exec(res[4])?.[1];
    assert.ok(gwId, `Portcullis's queue id in Postfix's log: ${res[0]}`);
    const tlsOut = smtpTlsLine(res[1]);
    assert.ok(tlsOut, `a TLS line from postfix/smtp[${res[1]}]:\n${tail()}`);
    assert.equal(tlsOut[1], 'Verified', "Postfix verified the gateway's chain and name (secure level)");
    // TLS 1.3 logs the client's signature when the client authenticated with its certificate.
    if (tlsOut[2] === 'TLSv1.3')
      assert.match(tlsOut[0], /client-signature \S+/, 'Postfix signed with its client certificate');
    t.diagnostic(`postfix: ${tlsOut[0].replace(/^.*?postfix\//, 'postfix/')}`);
    t.diagnostic(`postfix: ${res[0].replace(/^.*?postfix\//, 'postfix/')}`);

    // Portcullis's side: connector matched by certificate, internal, certificate verified.
    const m = await trace(gwId);
    assert.equal(m.inbound.clientIp, PF_HOST, 'Postfix connected from its own address (smtp_bind_address)');
    assert.deepEqual(m.inbound.connector, { name: 'From on-premises', organization: 'contoso', by: 'certificate' });
    assert.equal(m.inbound.internal, true, 'treatMessagesAsInternal');
    assert.equal(m.inbound.tls?.version, tlsOut[2], 'both sides report the same TLS version');
    assert.equal(m.inbound.tls?.peerCert?.verified, true, JSON.stringify(m.inbound.tls));
    assert.match(m.inbound.tls!.peerCert!.subject, /^CN=mail\.corp\.contoso\.test\b/);
    const shown = await gw!.cli(['trace', '--queue-id', gwId]);
    assert.match(
      shown.stdout,
      /inbound connector: "From on-premises" \(organization contoso, matched by certificate\), internal/,
    );
    t.diagnostic(`portcullis trace: ${/inbound connector: .*/.exec(shown.stdout)![0]}`);

    // The outside peer got it, with Portcullis's Received: header naming the verified client certificate.
    const got = await until(
      'the message at mx.outside.test',
      () => outside!.messages.find((x) => x.data.includes(marker)),
      30_000,
    );
    assert.equal(got.from, 'alice@corp.contoso.test');
    assert.deepEqual(got.to, ['someone@outside.test']);
    assert.ok(got.tls, 'Portcullis used STARTTLS to the outside peer');
    const received = new RegExp(
      `^Received: from ${esc(PF_NAME)} \\(\\[${esc(PF_HOST)}\\]\\)\\r\\n\\t\\(using (TLSv1\\.[23]) with cipher \\S+ \\(\\d+/\\d+ bits\\)\\)\\r\\n` +
        `\\t\\(client certificate CN=mail\\.corp\\.contoso\\.test, O=Hybrid Org issued by CN=Hybrid Issuing CA, O=Hybrid Trust, verified OK, revocation status unknown\\)\\r\\n` +
        `\\tby ${esc(GW_NAME)} \\(Portcullis\\) with ESMTPS id ${gwId}\\r\\n`,
      'm',
    ).exec(got.data);
    assert.ok(received, `Portcullis's Received: header at the outside peer:\n${got.data.slice(0, 1200)}`);
    assert.ok(got.data.indexOf(received[0]) === 0, 'it is the top header');
    assert.match(
      got.data,
      new RegExp(
        `\\r\\nReceived: from workstation\\.corp\\.contoso\\.test \\(unknown \\[${esc(WORKSTATION)}\\]\\)\\r\\n\\tby ${esc(PF_NAME)} \\(Postfix\\) with ESMTP id ${pfId}`,
      ),
      "and Postfix's own Received: header below it",
    );
    t.diagnostic(`outside peer: ${received[0].replace(/\r\n\t/g, ' ').trim()}`);

    const delivered = await gw!.waitForLog((e) => e.event === 'delivery.result' && e.queueId === gwId, 15_000);
    assert.equal(delivered.status, 'delivered', JSON.stringify(delivered));
    assert.match(String(delivered.reason), new RegExp(`^mx\\.outside\\.test \\[${esc(OUTSIDE)}\\] said: 250 `));
  },
);

test(
  '(b) the same Postfix without its client certificate is refused: 550 5.7.1 Relay access denied, bounced to the sender',
  { timeout: 90_000 },
  async (t) => {
    await pf!.configure({ smtp_tls_cert_file: '', smtp_tls_key_file: '' });
    await pf!.reload();
    try {
      assert.equal(await pf!.postconf('smtp_tls_cert_file'), '');
      const marker = `hybrid-nocert-${randomUUID()}`;
      const before = outside!.messages.length;
      const pfId = await submitToPostfix('alice@corp.contoso.test', 'someone@outside.test', marker);

      const res = await postfixResult(pfId, 'someone@outside.test');
      assert.equal(res[3], 'bounced', res[0]);
      assert.equal(res[2], '5.7.1');
      assert.equal(
        res[4],
        `host 127.0.0.1[127.0.0.1] said: 550 5.7.1 Relay access denied (in reply to RCPT TO command)`,
      );
      const tlsOut = smtpTlsLine(res[1]);
      assert.ok(tlsOut, `TLS to the gateway was still used (postfix/smtp[${res[1]}]):\n${tail()}`);
      assert.equal(tlsOut[1], 'Verified');
      if (tlsOut[2] === 'TLSv1.3')
        assert.doesNotMatch(tlsOut[0], /client-signature/, 'no client certificate this time');
      t.diagnostic(`postfix: ${tlsOut[0].replace(/^.*?postfix\//, 'postfix/')}`);
      t.diagnostic(`postfix: ${res[0].replace(/^.*?postfix\//, 'postfix/')}`);

      // Postfix bounced it to the sender, whose mailbox is on Postfix itself.
      const ndr = await until(
        'the non-delivery notification line',
        () =>
          new RegExp(`postfix/bounce\\[\\d+\\]: ${pfId}: sender non-delivery notification: (\\w+)`).exec(pf!.log()) ??
          undefined,
      );
      t.diagnostic(`postfix: ${ndr[0]}`);
      const bounce = await until("the bounce in alice's mailbox", () =>
        pf!.mailbox('alice').find((x) => x.includes(marker)),
      );
      assert.match(bounce, /^From: Mail Delivery System <MAILER-DAEMON@corp\.contoso\.test>$/m);
      assert.match(bounce, /^Subject: Undelivered Mail Returned to Sender$/m);
      assert.match(
        bounce,
        /^Final-Recipient: rfc822; someone@outside\.test\nOriginal-Recipient: rfc822;someone@outside\.test\nAction: failed\nStatus: 5\.7\.1\n/m,
      );
      assert.match(bounce, /^Diagnostic-Code: smtp; 550 5\.7\.1 Relay access denied$/m);

      // Portcullis's side: the session had TLS but no client certificate; nothing was queued or sent.
      const rej = await gw!.waitForLog(
        (e) =>
          e.event === 'message.rejected' &&
          e.code === 550 &&
          String(e.reason).startsWith('RCPT <someone@outside.test>:'),
        15_000,
      );
      assert.equal(rej.enhanced, '5.7.1');
      assert.match(
        String(rej.reason),
        /recipient domain outside\.test is not an accepted domain and this client is not allowed to relay/,
      );
      const end = await gw!.waitForLog((e) => e.event === 'session.end' && e.sid === rej.sid, 15_000);
      const tls = end.tls as { version: string; peerCert?: unknown } | undefined;
      assert.ok(tls, `the refused session was TLS: ${JSON.stringify(end)}`);
      assert.equal(tls.peerCert, undefined, 'and had no client certificate');
      assert.equal(end.ip, PF_HOST, "from the on-premises server's own address");
      assert.equal(end.messages, 0);
      t.diagnostic(`portcullis: ${String(rej.code)} ${String(rej.enhanced)} ${String(rej.reason)}`);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(outside!.messages.length, before, 'nothing reached outside.test');
      assert.ok(!outside!.messages.some((x) => x.data.includes(marker)));
    } finally {
      await pf!.configure({ smtp_tls_cert_file: corpCert.chain, smtp_tls_key_file: corpCert.key });
      await pf!.reload();
    }
  },
);

test(
  '(c) internet mail for corp.contoso.test is accepted and delivered to Postfix under "To on-premises" with domainValidation',
  { timeout: 90_000 },
  async (t) => {
    const marker = `hybrid-in-${randomUUID()}`;
    const id = await submitFromInternet('someone@outside.test', 'bob@corp.contoso.test', marker);
    const r = await gw!.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id, 30_000);
    assert.equal(r.status, 'delivered', `${JSON.stringify(r)}\n--- postfix log (tail) ---\n${tail()}`);
    const pfId = new RegExp(
      `^${esc(PF_NAME)} \\[${esc(PF_HOST)}\\] said: 250 2\\.0\\.0 Ok: (?:\\d+ bytes )?queued as ([0-9A-Za-z]+)`,
    ).exec(String(r.reason))?.[1];
    assert.ok(pfId, `Postfix's queue id in the delivery result: ${String(r.reason)}`);

    // It landed in bob's mailbox on Postfix; Postfix's Received: header names TLS and our verified certificate.
    const msg = await until("the message in bob's mailbox", () => pf!.mailbox('bob').find((x) => x.includes(marker)));
    assert.match(msg, /^Return-Path: <someone@outside\.test>$/m);
    const rcv = new RegExp(
      `^Received: from ${esc(GW_NAME)} \\(unknown \\[127\\.0\\.0\\.1\\]\\)\\n\\t\\(using (TLSv1\\.[23]) with cipher \\S+ \\([^)]*\\)(?:\\n\\t [^\\n]*)*\\)\\n` +
        `\\t\\(Client CN "${esc(GW_NAME)}", Issuer "Hybrid Issuing CA" \\(verified OK\\)\\)\\n\\tby ${esc(PF_NAME)} \\(Postfix\\) with ESMTPS id ${pfId}`,
      'm',
    ).exec(msg);
    assert.ok(rcv, `Postfix's Received: header with TLS and the gateway's client certificate:\n${msg.slice(0, 1000)}`);

    // Postfix's log: the smtpd session that received it was TLS, and the gateway's certificate verified ("Trusted").
    const log = await until("Postfix's delivery line", () => {
      const l = pf!.log();
      return (
        new RegExp(
          `${pfId}: to=<bob@corp\\.contoso\\.test>, relay=virtual, .*status=sent \\(delivered to maildir\\)`,
        ).test(l) && l
      );
    });
    const clientLine = new RegExp(`postfix/smtpd\\[(\\d+)\\]: ${pfId}: client=unknown\\[127\\.0\\.0\\.1\\]`).exec(log);
    assert.ok(clientLine, `${pfId}: client= line`);
    const tlsIn = new RegExp(
      `^.*postfix/smtpd\\[${clientLine[1]}\\]: (\\w+) TLS connection established from unknown\\[127\\.0\\.0\\.1\\]: (TLSv1\\.[23]) with cipher (\\S+).*$`,
      'm',
    ).exec(log);
    assert.ok(tlsIn, `a TLS line from postfix/smtpd[${clientLine[1]}]:\n${tail()}`);
    assert.equal(tlsIn[1], 'Trusted', "Postfix verified the gateway's client certificate chain");
    assert.equal(tlsIn[2], rcv[1]);
    t.diagnostic(`postfix: ${tlsIn[0].replace(/^.*?postfix\//, 'postfix/')}`);

    // Portcullis's trace: accepted with no connector (internet client), delivered under "To on-premises" at domainValidation.
    const m = await trace(id);
    assert.equal(m.inbound.connector, undefined, 'an internet client matches no inbound connector');
    assert.equal(m.inbound.clientIp, INTERNET);
    const attempts = m.trace.filter((e) => e.kind === 'delivery').map((e) => e.data);
    assert.equal(attempts.length, 1, JSON.stringify(attempts));
    const a = attempts[0];
    assert.equal(a.status, 'delivered');
    assert.equal(a.connector, 'To on-premises');
    assert.equal(a.host, PF_NAME);
    assert.equal(a.ip, PF_HOST);
    assert.equal(a.port, pfPort);
    assert.deepEqual(a.tlsRequired, {
      level: 'domainValidation',
      source: 'connector "To on-premises"',
      tlsDomain: PF_NAME,
    });
    assert.equal(a.tlsAchieved, 'domainValidation');
    const tls = a.tls as { version: string; chainValid: boolean; names: string[] };
    assert.equal(tls.version, tlsIn[2]);
    assert.equal(tls.chainValid, true);
    assert.ok(tls.names.includes(PF_NAME), JSON.stringify(tls.names));
    t.diagnostic(
      `trace: connector ${String(a.connector)} host ${String(a.host)} [${String(a.ip)}]:${String(a.port)} ${tls.version} required ${JSON.stringify(a.tlsRequired)} achieved ${String(a.tlsAchieved)}`,
    );
  },
);

test(
  '(d) Postfix presenting a certificate for mail.other.test: deferred with 4.7.5, Postfix receives nothing; delivered once the right certificate is back',
  { timeout: 120_000 },
  async (t) => {
    await pf!.stop();
    pf = await startPostfix(postfixOptions(otherCert));
    const start = pf.log().length;
    const marker = `hybrid-wrongname-${randomUUID()}`;
    const id = await submitFromInternet('someone@outside.test', 'bob@corp.contoso.test', marker);
    const r = await gw!.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id, 30_000);
    assert.equal(r.status, 'deferred', JSON.stringify(r));
    assert.equal(r.enhanced, '4.7.5');
    assert.match(
      String(r.reason),
      new RegExp(
        '^TLS required by connector "To on-premises": certificate name mismatch, expected mail\\.corp\\.contoso\\.test, ' +
          `presented CN=mail\\.other\\.test, O=Hybrid Org \\(names mail\\.other\\.test\\) \\(SHA-256 [0-9A-F:]+\\), host ${esc(PF_NAME)} \\[${esc(PF_HOST)}\\]$`,
      ),
    );
    t.diagnostic(`portcullis: ${String(r.enhanced)} ${String(r.reason)}`);

    // Postfix saw a TLS session from the gateway that ended without a transaction.
    const log = await until("the gateway's session at Postfix to end", () => {
      const l = pf!.log().slice(start);
      // (the helper's readiness probe also connected from 127.0.0.1, without EHLO)
      return /postfix\/smtpd\[\d+\]: disconnect from unknown\[127\.0\.0\.1\] ehlo=/.test(l) && l;
    });
    const sessions = log
      .split('\n')
      .filter((l) =>
        /postfix\/smtpd\[\d+\]: (connect from|disconnect from|\w+ TLS connection established from|\w+: client=)/.test(
          l,
        ),
      );
    for (const l of sessions) t.diagnostic(`postfix: ${l.replace(/^.*?postfix\//, 'postfix/')}`);
    assert.ok(
      sessions.some((l) => /TLS connection established from unknown\[127\.0\.0\.1\]/.test(l)),
      'the handshake happened',
    );
    assert.ok(!sessions.some((l) => /: client=/.test(l)), 'no MAIL transaction: Postfix received nothing');
    for (const l of sessions.filter((x) => /disconnect from/.test(x))) assert.doesNotMatch(l, / (mail|rcpt|data)=/, l);
    assert.ok(!pf.mailbox('bob').some((x) => x.includes(marker)), "nothing in bob's mailbox");

    const m = await trace(id);
    assert.equal(m.state, 'deferred');
    const a = m.trace.filter((e) => e.kind === 'delivery').map((e) => e.data)[0];
    assert.equal(a.connector, 'To on-premises');
    assert.notEqual(a.tlsAchieved, 'domainValidation');
    assert.equal((a.reply as { enhanced: string }).enhanced, '4.7.5');

    // The right certificate back: the retry (every 2 s here) delivers the deferred message.
    await pf.stop();
    pf = await startPostfix(postfixOptions(corpCert));
    const ok = await gw!.waitForLog(
      (e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'delivered',
      30_000,
    );
    t.diagnostic(`portcullis: ${String(ok.reason)}`);
    await until("the message in bob's mailbox after the retry", () =>
      pf!.mailbox('bob').find((x) => x.includes(marker)),
    );
  },
);
