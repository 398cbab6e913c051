// DANE interop with Debian's Postfix, both ways, on loopback with the NSD+Unbound rig as the only
// DNS (Postfix sees it through a private resolv.conf, test/helpers/postfix.ts dnssecResolver):
// - Postfix as a DANE-validating client (smtp_tls_security_level = dane) sends to Portcullis,
//   whose zone publishes exactly the TLSA records `portcullis dane tlsa` printed: Postfix logs a
//   verified TLS connection; with a wrong record it defers and sends nothing.
// - Portcullis delivers to a Postfix whose TLSA 3 1 1 names its key: the trace says DANE.
// Port 25 on their own loopback addresses (TLSA owners are _25._tcp.<host>). Needs root, postfix,
// nsd, unbound, ldnsutils, util-linux unshare; run with `npm run test:interop`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { tlsaRecord } from '../../src/tls/dane.ts';
import { startDnssecRig, type DnssecRig, type Rrs } from '../helpers/dnssec.ts';
import { startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { makePki } from '../helpers/pki.ts';
import { startPostfix, type PostfixInstance } from '../helpers/postfix.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { until } from '../helpers/wait.ts';

const GW_HOST = '127.0.56.1';
const PF_HOST = '127.0.56.2';
const PF_NAME = 'mx.interop.test';

let base: string;
let rig: DnssecRig;
let gw: GatewayHandle;
let pf: PostfixInstance;
let records: Record<string, Rrs>;

before(async () => {
  base = mkdtempSync(path.join(os.tmpdir(), 'pc-dane-interop-'));
  chmodSync(base, 0o755);
  const certs = path.join(base, 'certs');
  mkdirSync(certs, { mode: 0o755 });
  const pki = await makePki(certs, 'Interop');
  const pfCert = await pki.issue(PF_NAME);
  const gwCert = await pki.issue('mx1.contoso.test');
  for (const f of readdirSync(certs)) chmodSync(path.join(certs, f), 0o644);

  records = {
    'contoso.test': { MX: [{ exchange: 'mx1.contoso.test', priority: 10 }] },
    'mx1.contoso.test': { A: [GW_HOST] },
    // The same gateway under another MX name, whose TLSA record matches nothing.
    'wrong.contoso.test': { MX: [{ exchange: 'mx-wrong.contoso.test', priority: 10 }] },
    'mx-wrong.contoso.test': { A: [GW_HOST] },
    '_25._tcp.mx-wrong.contoso.test': { TLSA: [{ usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(32, 7) }] },
    'interop.test': { MX: [{ exchange: PF_NAME, priority: 10 }] },
    [PF_NAME]: { A: [PF_HOST] },
    [`_25._tcp.${PF_NAME}`]: { TLSA: [tlsaRecord(new X509Certificate(readFileSync(pfCert.cert)), 3, 1, 1)] },
  };
  rig = await startDnssecRig({
    base: path.join(base, 'dns'),
    authorityHost: '127.0.56.53',
    resolverHost: '127.0.56.54',
    resolverPort: 53,
    zones: { 'contoso.test': 'secure', 'interop.test': 'secure' },
    records,
  });
  const gwDir = path.join(base, 'gateway');
  mkdirSync(gwDir);
  gw = await startGateway({
    dir: gwDir,
    host: GW_HOST,
    port: 25,
    config: {
      dns: { servers: [rig.server] },
      delivery: { port: 25, timeouts: { connect: 5, greeting: 10, command: 10, dataBlock: 10, dataEnd: 20 } },
      tls: { certificates: [{ cert: gwCert.chain, key: gwCert.key }], trust: { system: false, caFiles: [] } },
      queue: { retrySchedule: [2] },
      organizations: [
        {
          name: 'contoso',
          acceptedDomains: [{ domain: 'contoso.test' }, { domain: 'wrong.contoso.test' }],
          inboundConnectors: [{ name: 'Local', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] }],
        },
      ],
    },
  });
  // The records to publish for the gateway, as its own command prints them.
  const tlsa = await gw.cli(['dane', 'tlsa', '--json']);
  assert.equal(tlsa.code, 0, tlsa.stderr);
  const [c] = JSON.parse(tlsa.stdout) as {
    records: { owner: string; usage: number; selector: number; matchingType: number; data: string }[];
  }[];
  const published = c.records
    .filter((r) => r.owner === '_25._tcp.mx1.contoso.test')
    .map((r) => ({
      usage: r.usage,
      selector: r.selector,
      matchingType: r.matchingType,
      data: Buffer.from(r.data, 'hex'),
    }));
  assert.deepEqual(
    published.map((r) => `${r.usage} ${r.selector} ${r.matchingType}`),
    ['3 1 1', '2 1 1'],
  );
  await rig.update({ records: { ...records, '_25._tcp.mx1.contoso.test': { TLSA: published } } });

  pf = await startPostfix({
    base: path.join(base, 'postfix'),
    host: PF_HOST,
    port: 25,
    hostname: PF_NAME,
    cert: pfCert.chain,
    key: pfCert.key,
    mailboxDomain: 'interop.test',
    users: ['bob'],
    dnssecResolver: '127.0.56.54',
    extra: [
      'smtp_tls_security_level = dane',
      'smtp_tls_loglevel = 1',
      'smtp_address_preference = ipv4',
      'maximal_backoff_time = 5s',
      'minimal_backoff_time = 2s',
      'queue_run_delay = 2s',
      'smtp_connection_cache_on_demand = no',
    ],
  });
});

after(async () => {
  await pf?.stop();
  await gw?.stop();
  await rig?.stop();
  if (base) rmSync(base, { recursive: true, force: true });
});

async function submit(port: number, host: string, from: string, to: string, subject: string): Promise<void> {
  const c = await SmtpClient.connect(port, host);
  try {
    await c.hello();
    const r = await c.send(
      from,
      [to],
      `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@interop.test>\r\n\r\nbody of ${subject}\r\n`,
    );
    assert.equal(r.code, 250, r.text);
  } finally {
    c.close();
  }
}

const inbox = (local: string) => {
  const d = path.join(gw.dataDir, 'mailboxes/contoso.test', local, 'new');
  try {
    return readdirSync(d).map((f) => readFileSync(path.join(d, f), 'utf8'));
  } catch {
    return [];
  }
};

test('Postfix (smtp_tls_security_level = dane) delivers to Portcullis with the TLSA records `portcullis dane tlsa` printed, and logs a verified TLS connection', async () => {
  await submit(25, PF_HOST, 'bob@interop.test', 'alice@contoso.test', 'postfix-dane');
  const m = await until(
    'the message in the gateway mailbox',
    () => inbox('alice').find((x) => x.includes('Subject: postfix-dane')),
    60_000,
  );
  assert.match(m, /with ESMTPS/);
  const log = pf.log();
  assert.match(
    log,
    /Verified TLS connection established to mx1\.contoso\.test\[127\.0\.56\.1\]:25: TLSv1\.3/,
    log
      .split('\n')
      .filter((l) => /TLS|dane|status=/i.test(l))
      .join('\n'),
  );
  assert.match(log, /to=<alice@contoso\.test>, relay=mx1\.contoso\.test\[127\.0\.56\.1\]:25, .*status=sent/);
});

test('with a TLSA record that matches nothing, Postfix defers and Portcullis receives no transaction', async () => {
  const sessionsWithMail = () =>
    gw.events().filter((e) => e.event === 'session.end' && e.ip === PF_HOST && e.messages !== 0).length;
  const mailSessions = sessionsWithMail();
  const before = gw.events().filter((e) => e.event === 'message.accepted').length;
  await submit(25, PF_HOST, 'bob@interop.test', 'carol@wrong.contoso.test', 'postfix-dane-mismatch');
  await until(
    'Postfix defers for the DANE mismatch',
    () => /to=<carol@wrong\.contoso\.test>.*status=deferred/.test(pf.log()),
    60_000,
  ).catch((e: Error) => {
    throw new Error(`${e.message}\n${pf.log().split('\n').slice(-25).join('\n')}`);
  });
  const line = pf
    .log()
    .split('\n')
    .find((l) => /to=<carol@wrong\.contoso\.test>.*status=deferred/.test(l))!;
  assert.match(line, /(Server certificate not verified|TLS is required, but|untrusted issuer|not trusted)/i, line);
  assert.equal(
    gw.events().filter((e) => e.event === 'message.accepted').length,
    before,
    'the gateway accepted nothing',
  );
  assert.equal(sessionsWithMail(), mailSessions, 'no session from Postfix carried a message');
});

test('Portcullis delivers to a Postfix whose TLSA 3 1 1 names its key: DANE-authenticated, in the trace', async () => {
  await submit(25, GW_HOST, 'dan@contoso.test', 'bob@interop.test', 'portcullis-dane');
  const m = await until(
    'the message in the Postfix mailbox',
    () => pf.mailbox('bob').find((x) => x.includes('Subject: portcullis-dane')),
    60_000,
  );
  assert.match(m, /\(using TLSv1\.3/);
  const e = gw.events().find((x) => x.event === 'delivery.result' && x.rcpt === 'bob@interop.test')!;
  assert.equal(e.status, 'delivered');
  assert.equal(e.tlsAchieved, 'dane');
  assert.equal(e.tlsSource, `DANE (TLSA 3 1 1 at _25._tcp.${PF_NAME}, DNSSEC secure)`);
});
