// DANE outbound (RFC 7672), end to end: the real gateway resolves through a validating Unbound
// that serves NSD's signed zones (test/helpers/dnssec.ts), and delivers to loopback peers.
// Secure MX + matching TLSA 3 1 1 (a self-signed certificate: DANE-EE ignores names and dates) or
// 2 1 1 (a CA, with the name check) → delivered, the trace says DANE. A TLSA mismatch, a DANE host
// that does not offer STARTTLS, a forged (bogus) TLSA RRset and a TLSA lookup that SERVFAILs →
// deferred with 4.7.x, and the peer sees no MAIL/RCPT/DATA (the bogus and SERVFAIL hosts are not
// even contacted). An insecure zone → opportunistic. Only unusable records → encrypted, not
// authenticated. At expiry the DSN names the DANE source. TLS-Required: No relaxes DANE;
// dane.enabled false turns it off.
// Needs root and nsd, unbound, ldnsutils.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { issueCertificate } from '../../src/tls/certgen.ts';
import { tlsaRecord } from '../../src/tls/dane.ts';
import { startDnssecRig, type DnssecRig, type Rrs } from '../helpers/dnssec.ts';
import { cleanup, freePort, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { makePki, type Pki } from '../helpers/pki.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { until } from '../helpers/wait.ts';

const EXPIRATION = 12;
const IP = {
  ee: '127.0.55.11',
  ta: '127.0.55.12',
  tawrong: '127.0.55.13',
  mismatch: '127.0.55.14',
  stripped: '127.0.55.15',
  bogus: '127.0.55.16',
  servfail: '127.0.55.17',
  insecure: '127.0.55.18',
  unusable: '127.0.55.19',
} as const;
type Name = keyof typeof IP;
const mx = (n: Name) => (n === 'insecure' ? 'mx.plain.test' : `mx-${n}.dane.test`);
const domain = (n: Name) => (n === 'insecure' ? 'plain.test' : `${n}.dane.test`);
/** Peers that must never see a transaction. */
const NEVER: Name[] = ['tawrong', 'mismatch', 'stripped', 'bogus', 'servfail'];

let dir: string;
let rig: DnssecRig;
let gw: GatewayHandle;
let pki: Pki;
let port: number;
let baseConfig: Record<string, unknown>;
const peers = {} as Record<Name, Peer>;
const ids = new Map<string, string>();

async function relay(from: string, to: string, subject: string): Promise<string> {
  const c = await SmtpClient.connect(gw.port);
  try {
    await c.hello();
    const r = await c.send(
      from,
      [to],
      `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nMessage-ID: <${subject}.${Date.now()}@contoso.test>\r\n\r\nbody of ${subject}\r\n`,
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
  tlsRequired: { level: string; source: string; published?: boolean };
  tlsAchieved: string;
  tlsProof?: string;
  tlsNotes?: string[];
  tlsFailure?: string;
  tls?: { version: string };
  reply: { code: number; enhanced: string; reason?: string };
}
async function attempts(id: string): Promise<Attempt[]> {
  const r = await gw.cli(['trace', '--queue-id', id, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const [m] = JSON.parse(r.stdout) as { trace: { kind: string; data: Attempt }[] }[];
  return m.trace.filter((t) => t.kind === 'delivery').map((t) => t.data);
}
const result = (id: string, status?: string) =>
  gw.events().find((e) => e.event === 'delivery.result' && e.queueId === id && (!status || e.status === status));
const transaction = (p: Peer) => p.transcript.filter((l) => /^C: (MAIL|RCPT|DATA)\b/i.test(l));
const owner = (n: Name) => `_${port}._tcp.${mx(n)}`;
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

before(async () => {
  dir = tempDir('pc-dane-');
  port = await freePort();
  pki = await makePki(dir, 'Dane');
  const self = async (n: string) => {
    // Self-signed, for another name, and expired: DANE-EE must not care.
    const c = await issueCertificate({
      subject: `CN=unrelated-${n}.example, O=Nobody`,
      dnsNames: [`unrelated-${n}.example`],
      notBefore: new Date(Date.now() - 40 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
    });
    return { cert: c.certPem, key: c.keyPem, x: new X509Certificate(c.certPem) };
  };
  const fromPki = async (name: string) => {
    const c = await pki.issue(name);
    return {
      cert: readFileSync(c.chain, 'utf8'),
      key: readFileSync(c.key, 'utf8'),
      x: new X509Certificate(c.issued.certPem),
    };
  };
  const certs = {
    ee: await self('ee'),
    mismatch: await self('mismatch'),
    stripped: await self('stripped'),
    bogus: await self('bogus'),
    servfail: await self('servfail'),
    insecure: await self('insecure'),
    unusable: await self('unusable'),
    ta: await fromPki(mx('ta')),
    tawrong: await fromPki('mx.elsewhere.test'),
  };
  const stranger = await self('stranger');
  port = await freePort();
  const records: Record<string, Rrs> = {};
  for (const n of Object.keys(IP) as Name[]) {
    records[domain(n)] = { MX: [{ exchange: mx(n), priority: 10 }] };
    records[mx(n)] = { A: [IP[n]] };
  }
  const ca = new X509Certificate(pki.intermediate.certPem);
  records[owner('ee')] = { TLSA: [tlsaRecord(certs.ee.x, 3, 1, 1)] };
  records[owner('ta')] = { TLSA: [tlsaRecord(ca, 2, 1, 1)] };
  records[owner('tawrong')] = { TLSA: [tlsaRecord(ca, 2, 1, 1)] };
  records[owner('mismatch')] = { TLSA: [tlsaRecord(stranger.x, 3, 1, 1)] };
  records[owner('stripped')] = { TLSA: [tlsaRecord(certs.stripped.x, 3, 1, 1)] };
  records[owner('bogus')] = { TLSA: [tlsaRecord(certs.bogus.x, 3, 1, 1)] };
  records[owner('insecure')] = { TLSA: [tlsaRecord(stranger.x, 3, 1, 1)] };
  // PKIX-EE (1) is not used for SMTP, and a SHA-256 of the wrong length is unusable (RFC 7672 §3.1.3).
  records[owner('unusable')] = {
    TLSA: [
      tlsaRecord(certs.unusable.x, 1, 1, 1),
      { usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(20, 1) },
    ],
  };
  rig = await startDnssecRig({
    base: path.join(dir, 'dns'),
    zones: { 'dane.test': 'secure', 'plain.test': 'insecure', [`_tcp.${mx('servfail')}`]: 'dead' },
    records,
    // Forged after signing: the old signatures no longer verify (bogus).
    forged: { [owner('bogus')]: { TLSA: [tlsaRecord(stranger.x, 3, 1, 1)] } },
  });
  for (const n of Object.keys(IP) as Name[]) {
    peers[n] = await startPeer({
      host: IP[n],
      port,
      name: mx(n),
      ...(n === 'stripped' ? {} : { tls: { cert: certs[n].cert, key: certs[n].key } }),
    });
  }
  baseConfig = {
    dns: { servers: [rig.server] },
    delivery: {
      port,
      timeouts: { connect: 3, greeting: 10, command: 10 },
      destinationDownSeconds: 0,
      tlsFallbackSeconds: 0,
    },
    tls: { trust: { system: false, caFiles: [] } },
    queue: { retrySchedule: [1], messageExpiration: EXPIRATION, delayWarning: 0 },
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
  gw = await startGateway({ dir, config: baseConfig });
  for (const n of NEVER) ids.set(n, await relay(`${n}@contoso.test`, `u@${domain(n)}`, n));
});

after(async () => {
  await cleanup(gw);
  await Promise.all(Object.values(peers).map((p) => p?.close()));
  await rig?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('secure MX and a matching TLSA 3 1 1: delivered over TLS to a self-signed, expired certificate; the trace says DANE', async () => {
  const id = await relay('sender@contoso.test', `alice@${domain('ee')}`, 'ee');
  await until('DANE-EE delivery', () => result(id, 'delivered') ?? result(id, 'deferred'), 20_000);
  const a = (await attempts(id)).at(-1)!;
  assert.equal(a.status, 'delivered', a.reply.reason);
  assert.deepEqual(a.tlsRequired, {
    level: 'dane',
    source: `DANE (TLSA 3 1 1 at ${owner('ee')}, DNSSEC secure)`,
    published: true,
  });
  assert.equal(a.tlsAchieved, 'dane');
  assert.match(a.tlsProof ?? '', /^DANE DANE-EE: TLSA 3 1 1 matches CN=unrelated-ee\.example, O=Nobody \(SHA-256 /);
  assert.equal(peers.ee.messages[0]?.tls?.version, 'TLSv1.3');
  const text = await gw.cli(['trace', '--queue-id', id]);
  assert.match(
    text.stdout,
    new RegExp(esc(`TLS policy: required dane (DANE (TLSA 3 1 1 at ${owner('ee')}, DNSSEC secure)), achieved dane`)),
  );
  assert.match(text.stdout, /authenticated: DANE DANE-EE: TLSA 3 1 1 matches/);
  const log = result(id, 'delivered')!;
  assert.equal(log.tlsSource, `DANE (TLSA 3 1 1 at ${owner('ee')}, DNSSEC secure)`);
  assert.equal(log.tlsAchieved, 'dane');
});

test('TLSA 2 1 1 of the issuing CA: delivered when the certificate names the MX host, deferred (name mismatch) when not', async () => {
  const id = await relay('sender@contoso.test', `bob@${domain('ta')}`, 'ta');
  await until('DANE-TA delivery', () => result(id, 'delivered') ?? result(id, 'deferred'), 20_000);
  const a = (await attempts(id)).at(-1)!;
  assert.equal(a.status, 'delivered', a.reply.reason);
  assert.equal(a.tlsRequired.source, `DANE (TLSA 2 1 1 at ${owner('ta')}, DNSSEC secure)`);
  assert.match(
    a.tlsProof ?? '',
    /^DANE DANE-TA: TLSA 2 1 1 trust anchor presented CN=Dane Issuing CA, O=Dane Trust .* for mx-ta\.dane\.test$/,
  );
  // The CA is in no trust store: DANE-TA alone authenticated it.
  await until('first attempt to the wrong-name host', () => result(ids.get('tawrong')!), 20_000);
  const w = (await attempts(ids.get('tawrong')!))[0];
  assert.equal(w.status, 'deferred');
  assert.equal(w.reply.enhanced, '4.7.5');
  assert.equal(w.tlsFailure, 'certificate-host-mismatch');
  assert.match(
    w.reply.reason ?? '',
    new RegExp(
      `^${esc(`TLS required by DANE (TLSA 2 1 1 at ${owner('tawrong')}, DNSSEC secure): name mismatch (TLSA 2 1 1: CN=mx.elsewhere.test, O=Dane Org`)} .* carries mx\\.elsewhere\\.test, expected mx-tawrong\\.dane\\.test or tawrong\\.dane\\.test\\), host ${esc(`${mx('tawrong')} [${IP.tawrong}]`)}$`,
    ),
  );
});

test('TLSA mismatch, STARTTLS stripped, bogus TLSA, TLSA SERVFAIL: deferred 4.7.x, and no MAIL/RCPT/DATA ever reaches the peer', async () => {
  await until('a first attempt for each', () => NEVER.every((n) => result(ids.get(n)!)), 20_000);
  const first = async (n: Name) => (await attempts(ids.get(n)!))[0];
  const m = await first('mismatch');
  assert.equal(m.status, 'deferred');
  assert.deepEqual([m.reply.code, m.reply.enhanced, m.tlsFailure], [451, '4.7.5', 'tlsa-mismatch']);
  assert.match(
    m.reply.reason ?? '',
    new RegExp(
      `^${esc(`TLS required by DANE (TLSA 3 1 1 at ${owner('mismatch')}, DNSSEC secure): certificate does not match any TLSA record`)} \\(presented CN=unrelated-mismatch\\.example`,
    ),
  );
  assert.equal(m.tlsAchieved, 'encryptionOnly');
  const s = await first('stripped');
  assert.deepEqual([s.reply.enhanced, s.tlsFailure, s.tlsAchieved], ['4.7.4', 'starttls-not-offered', 'none']);
  assert.match(
    s.reply.reason ?? '',
    new RegExp(
      `^${esc(`TLS required by DANE (TLSA 3 1 1 at ${owner('stripped')}, DNSSEC secure): ${mx('stripped')} [${IP.stripped}] did not offer STARTTLS`)}$`,
    ),
  );
  const b = await first('bogus');
  assert.deepEqual([b.reply.enhanced, b.tlsFailure], ['4.7.5', 'tlsa-bogus']);
  assert.match(
    b.reply.reason ?? '',
    new RegExp(
      `TLSA lookup at ${esc(owner('bogus'))} failed\\): the TLSA lookup failed DNSSEC validation \\(bogus\\): DNS TLSA ${esc(owner('bogus'))}: bogus`,
    ),
  );
  assert.equal(b.ip, undefined, 'no address was tried');
  const f = await first('servfail');
  assert.deepEqual([f.reply.enhanced, f.tlsFailure], ['4.7.5', 'tlsa-lookup-failed']);
  assert.match(f.reply.reason ?? '', new RegExp(`DNS TLSA ${esc(owner('servfail'))}: servfail`));
  // The log names the RFC 8460 result types.
  assert.equal(result(ids.get('mismatch')!)!.tlsResultType, 'tlsa-invalid');
  assert.equal(result(ids.get('bogus')!)!.tlsResultType, 'dnssec-invalid');
  assert.equal(result(ids.get('stripped')!)!.tlsResultType, 'starttls-not-supported');
  for (const n of NEVER) assert.deepEqual(transaction(peers[n]), [], `${n} saw a transaction`);
  assert.ok(peers.mismatch.connections >= 1 && peers.stripped.connections >= 1);
  assert.equal(peers.bogus.connections, 0, 'a host whose TLSA records are bogus is not contacted');
  assert.equal(peers.servfail.connections, 0, 'a host whose TLSA lookup failed is not contacted');
  const text = await gw.cli(['trace', '--queue-id', ids.get('mismatch')!]);
  assert.match(
    text.stdout,
    /TLS failure: the server certificate matches none of its TLSA records \(tlsa-mismatch\), RFC 8460 result type tlsa-invalid/,
  );
});

test('an insecure zone: opportunistic TLS (its TLSA records do not count), with a note why', async () => {
  const id = await relay('sender@contoso.test', `carol@${domain('insecure')}`, 'insecure');
  await until('opportunistic delivery', () => result(id, 'delivered') ?? result(id, 'deferred'), 20_000);
  const a = (await attempts(id)).at(-1)!;
  assert.equal(a.status, 'delivered', a.reply.reason);
  assert.deepEqual(a.tlsRequired, { level: 'opportunistic', source: 'default' });
  assert.equal(a.tlsAchieved, 'encryptionOnly');
  assert.deepEqual(a.tlsNotes, ['DANE: the MX records of plain.test are not DNSSEC-secure']);
});

test('only unusable TLSA records: TLS is required, the certificate is not authenticated', async () => {
  const id = await relay('sender@contoso.test', `dave@${domain('unusable')}`, 'unusable');
  await until('delivery', () => result(id, 'delivered') ?? result(id, 'deferred'), 20_000);
  const a = (await attempts(id)).at(-1)!;
  assert.equal(a.status, 'delivered', a.reply.reason);
  assert.equal(a.tlsRequired.level, 'encryptionOnly');
  assert.equal(
    a.tlsRequired.source,
    `DANE (TLSA 3 1 1, 1 1 1 at ${owner('unusable')}, DNSSEC secure, no usable record: encryption without authentication)`,
  );
  assert.equal(a.tlsAchieved, 'encryptionOnly');
  assert.equal(peers.unusable.messages[0]?.tls?.version, 'TLSv1.3');
});

test('at expiry the DSN says the recipient domain requires DANE and why the server did not meet it', async () => {
  const mailbox = (local: string) => {
    const d = path.join(gw.dataDir, 'mailboxes/contoso.test', local, 'new');
    try {
      return readdirSync(d).map((f) => readFileSync(path.join(d, f), 'utf8'));
    } catch {
      return [];
    }
  };
  const dsn = await until(
    'DSNs',
    () => {
      const all = (['mismatch', 'bogus'] as Name[]).map((n) => mailbox(n).find((x) => /Undelivered Mail/.test(x)));
      return all.every(Boolean) ? (all as string[]) : undefined;
    },
    (EXPIRATION + 20) * 1000,
  );
  assert.match(
    dsn[0],
    /did not prove its identity: its certificate is not the one its domain publishes in DNS \(DANE TLSA\)\. The recipient domain's security policy requires an encrypted connection \(TLS 1\.2 or newer\) to a server whose certificate matches the DNSSEC-signed TLSA records of its domain \(DANE\) for this destination/,
  );
  assert.match(dsn[0], /RFC 8460 result type tlsa-invalid/);
  assert.match(dsn[0].replace(/\r\n\s+/g, ' '), /TLS required by DANE \(TLSA 3 1 1 at/);
  assert.match(
    dsn[1],
    /could not be checked: the DNS records that say which certificate it must present \(DANE TLSA\) failed their DNSSEC signature check/,
  );
  assert.match(dsn[1], /RFC 8460 result type dnssec-invalid/);
  for (const n of NEVER) assert.deepEqual(transaction(peers[n]), [], `${n}: across every retry`);
});

test('tls check DOMAIN shows the DNSSEC status, what DANE demands of each MX host and whether the presented certificate matches', async () => {
  const [ee, mismatch, bogus, insecure] = await Promise.all([
    gw.cli(['tls', 'check', domain('ee'), '--level', 'encryptionOnly']),
    gw.cli(['tls', 'check', domain('mismatch'), '--level', 'encryptionOnly', '--json']),
    gw.cli(['tls', 'check', domain('bogus'), '--level', 'encryptionOnly']),
    gw.cli(['tls', 'check', domain('insecure'), '--level', 'encryptionOnly']),
  ]);
  assert.match(
    ee.stdout,
    /^ {2}DNSSEC: MX records secure, addresses of mx-ee\.dane\.test secure$/m,
    ee.stdout + ee.stderr,
  );
  assert.match(
    ee.stdout,
    new RegExp(`^  DANE: ${esc(`DANE (TLSA 3 1 1 at ${owner('ee')}, DNSSEC secure): requires dane`)}$`, 'm'),
  );
  assert.match(ee.stdout, /^ {2}DANE certificate: MATCHES: DANE DANE-EE: TLSA 3 1 1 matches CN=unrelated-ee\.example/m);
  const [m] = JSON.parse(mismatch.stdout) as { dane: { status: string; matches: boolean; detail: string } }[];
  assert.deepEqual([m.dane.status, m.dane.matches], ['demand', false]);
  assert.match(m.dane.detail, /^certificate does not match any TLSA record .*\(tlsa-mismatch\)$/);
  assert.match(
    bogus.stdout,
    new RegExp(
      `DANE: delivery would NOT contact this host: .*TLSA lookup at ${esc(owner('bogus'))} failed\\): the TLSA lookup failed DNSSEC validation \\(bogus\\)`,
    ),
  );
  assert.match(
    insecure.stdout,
    /DNSSEC: MX records insecure, addresses of mx\.plain\.test insecure\n {2}DANE: DANE: the MX records of plain\.test are not DNSSEC-secure/,
  );
});

test('TLS-Required: No (RFC 8689 §5) relaxes the DANE demand: the mismatching host gets the message, the trace says DANE was not applied', async () => {
  const c = await SmtpClient.connect(gw.port);
  let id: string;
  try {
    await c.hello();
    const r = await c.send(
      'sender@contoso.test',
      [`frank@${domain('mismatch')}`],
      `From: <sender@contoso.test>\r\nTo: <frank@${domain('mismatch')}>\r\nSubject: relaxed\r\nTLS-Required: No\r\nMessage-ID: <relaxed@contoso.test>\r\n\r\nbody\r\n`,
    );
    assert.equal(r.code, 250, r.text);
    id = /queued as (\w+)/.exec(r.text)![1];
  } finally {
    c.close();
  }
  await until('delivery', () => result(id, 'delivered') ?? result(id, 'deferred'), 20_000);
  const a = (await attempts(id)).at(-1)!;
  assert.equal(a.status, 'delivered', a.reply.reason);
  assert.deepEqual(a.tlsRequired, { level: 'opportunistic', source: 'default' });
  assert.deepEqual(a.tlsNotes, [
    `not applied: DANE (TLSA 3 1 1 at ${owner('mismatch')}, DNSSEC secure): dane, relaxed by the message's TLS-Required: No`,
  ]);
  assert.ok(peers.mismatch.messages.some((m) => m.to.includes(`frank@${domain('mismatch')}`) && m.tls));
});

test('dane.enabled false: no TLSA lookups, the mismatching host gets the message opportunistically', async () => {
  gw.writeConfig({ ...baseConfig, dane: { enabled: false } });
  const r = await gw.cli(['config', 'reload']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const id = await relay('sender@contoso.test', `erin@${domain('mismatch')}`, 'dane-off');
  await until('delivery', () => result(id, 'delivered') ?? result(id, 'deferred'), 20_000);
  const a = (await attempts(id)).at(-1)!;
  assert.equal(a.status, 'delivered', a.reply.reason);
  assert.deepEqual(a.tlsRequired, { level: 'opportunistic', source: 'default' });
});
