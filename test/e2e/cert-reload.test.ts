// Certificate rotation on the real gateway: hot reload when the files change (sessions in flight
// keep their certificate and finish), SIGHUP, `portcullis config reload` refusing a broken
// certificate (previous one stays in service), and `portcullis cert info` describing a certificate.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type tls from 'node:tls';
import { promisify } from 'node:util';
import { cleanup, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { makePki, type Pki } from '../helpers/pki.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import type { Issued } from '../../src/tls/certgen.ts';

const run = promisify(execFile);
const DAY = 86_400_000;

let gw: GatewayHandle;
let pki: Pki;
let dir: string;
/** Fingerprint of the certificate the gateway should be serving now. */
let serving: string | undefined;

interface Files {
  cert: string;
  key: string;
}

const fp = (i: Issued) => new X509Certificate(i.certPem).fingerprint256;

async function newLeaf(label: string): Promise<Issued> {
  return (await pki.issue('mx1.contoso.test', { subject: `CN=mx1.contoso.test, O=Contoso ${label}` })).issued;
}

/** Certificate (with its intermediate) and key as the gateway reads them. */
function pemFiles(i: Issued, keyPem = i.keyPem): { cert: string; key: string } {
  return { cert: i.certPem + pki.intermediate.certPem, key: keyPem };
}

function writeLive(folder: string, i: Issued, keyPem?: string): Files {
  mkdirSync(folder, { recursive: true });
  const f = { cert: path.join(folder, 'cert.pem'), key: path.join(folder, 'key.pem') };
  const pem = pemFiles(i, keyPem);
  writeFileSync(f.key, pem.key);
  writeFileSync(f.cert, pem.cert);
  return f;
}

function tlsConfig(files: Files[]): Record<string, unknown> {
  return { tls: { certificates: files, trust: { system: false, caFiles: [pki.rootFile] } } };
}

/** Parsed gateway log lines after the first `from` lines. */
function eventsSince(from: number): Record<string, unknown>[] {
  return gw.logs.slice(from).flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

/** Wait (bounded) for a gateway log line after `from` that matches. */
async function waitForEvent(
  from: number,
  pred: (e: Record<string, unknown>) => boolean,
  timeoutMs = 10_000,
): Promise<Record<string, unknown>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const hit = eventsSince(from).find(pred);
    if (hit) return hit;
    if (Date.now() > until)
      throw new Error(`timed out waiting for a log line; since then:\n${gw.logs.slice(from).join('\n')}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A new STARTTLS connection: the fingerprint of the certificate presented; optionally keep it open. */
async function connectTls(
  opts: tls.ConnectionOptions = {},
): Promise<{ fingerprint?: string; client: SmtpClient; sock: tls.TLSSocket }> {
  const client = await SmtpClient.connect(gw.port, '127.0.0.1');
  await client.hello();
  const sock = await client.starttls({ servername: 'mx1.contoso.test', ...opts });
  // A resumed TLS 1.3 session carries no certificate.
  return { fingerprint: sock.getPeerX509Certificate()?.fingerprint256, client, sock };
}

async function presented(): Promise<string | undefined> {
  const c = await connectTls();
  const reused = c.sock.isSessionReused();
  c.client.close();
  assert.equal(reused, false);
  assert.ok(c.fingerprint, 'the server presented a certificate');
  return c.fingerprint;
}

before(async () => {
  dir = tempDir();
  pki = await makePki(dir);
  const a = await newLeaf('A');
  const live = writeLive(path.join(dir, 'live'), a);
  gw = await startGateway({ dir, config: tlsConfig([live]) });
  serving = fp(a);
  assert.equal(await presented(), serving);
});

after(() => cleanup(gw));

test('file change: new connections get the new certificate, a session in flight finishes with the old one', async () => {
  const liveDir = path.join(dir, 'live');
  const b = await newLeaf('B');
  const aFp = serving;
  assert.notEqual(fp(b), aFp);

  // A TLS session for resumption, and one left open in the middle of a transaction.
  const t = await connectTls({ minVersion: 'TLSv1.3' });
  const ticket = new Promise<Buffer>((resolve) => t.sock.once('session', resolve));
  await t.client.expect('EHLO ticket.test', 250);
  const session = await Promise.race([
    ticket,
    new Promise<never>((_r, rej) => setTimeout(() => rej(new Error('no session ticket')), 5000)),
  ]);
  await t.client.expect('QUIT', 221);
  t.client.close();

  const old = await connectTls();
  assert.equal(old.fingerprint, aFp, 'the session in flight was set up with certificate A');
  await old.client.expect('EHLO inflight.test', 250);
  await old.client.expect('MAIL FROM:<sender@fabrikam.test>', 250);

  // Replace both files by rename (key first, then certificate), as deployment tools do.
  const from = gw.logs.length;
  const pem = pemFiles(b);
  writeFileSync(path.join(liveDir, '.key.pem.new'), pem.key);
  writeFileSync(path.join(liveDir, '.cert.pem.new'), pem.cert);
  renameSync(path.join(liveDir, '.key.pem.new'), path.join(liveDir, 'key.pem'));
  renameSync(path.join(liveDir, '.cert.pem.new'), path.join(liveDir, 'cert.pem'));
  const loaded = await waitForEvent(from, (e) => e.event === 'tls.certificates.loaded' && e.source === 'file change');
  assert.deepEqual(loaded.names, ['DNS:mx1.contoso.test']);

  assert.equal(await presented(), fp(b), 'a new connection gets certificate B');
  serving = fp(b);

  // The session in flight (handshake done with certificate A) completes its message.
  await old.client.expect('RCPT TO:<alice@contoso.test>', 250);
  await old.client.expect('DATA', 354);
  old.client.write('Subject: across a rotation\r\n\r\nhello\r\n.\r\n');
  const done = await old.client.read();
  assert.equal(done?.code, 250, done?.text);
  await old.client.expect('QUIT', 221);
  old.client.close();

  // Resumption survives the rotation (ticket keys are kept across reloads).
  const resumed = await connectTls({ session, minVersion: 'TLSv1.3' });
  try {
    assert.equal(resumed.sock.isSessionReused(), true);
    await resumed.client.expect('EHLO resumed.test', 250);
  } finally {
    resumed.client.close();
  }
});

test('SIGHUP re-reads the configuration and switches certificates; the watch follows the new files', async () => {
  const c = await newLeaf('C');
  const live2 = writeLive(path.join(dir, 'live2'), c);
  gw.writeConfig(tlsConfig([live2]));
  const from = gw.logs.length;
  gw.proc.kill('SIGHUP');
  await waitForEvent(from, (e) => e.event === 'tls.certificates.loaded' && e.source === 'SIGHUP');
  await waitForEvent(from, (e) => e.event === 'config.reloaded' && e.source === 'SIGHUP');
  assert.equal(await presented(), fp(c), 'SIGHUP switched to certificate C');
  serving = fp(c);

  // Rewritten in place (key, then certificate) in the newly configured folder: picked up too.
  const d = await newLeaf('D');
  const from2 = gw.logs.length;
  writeLive(path.join(dir, 'live2'), d);
  await waitForEvent(from2, (e) => e.event === 'tls.certificates.loaded' && e.source === 'file change');
  assert.equal(await presented(), fp(d));
  serving = fp(d);
});

test('config reload with a key that does not match the certificate is refused; the previous certificate stays', async () => {
  const e = await newLeaf('E');
  const other = await newLeaf('other');
  const broken = writeLive(path.join(dir, 'broken'), e, other.keyPem);
  gw.writeConfig(tlsConfig([broken]));
  const from = gw.logs.length;
  const r = await gw.cli(['config', 'reload']);
  assert.notEqual(r.code, 0, `exit code; stdout: ${r.stdout}`);
  assert.match(r.stderr, /refused/i);
  assert.match(
    r.stderr,
    /private key does not belong to the certificate/,
    `the message names the problem: ${r.stderr}`,
  );
  assert.ok(r.stderr.includes(broken.cert), 'the message names the file');

  const rejected = await waitForEvent(from, (x) => x.event === 'tls.certificates.rejected');
  assert.match(String(rejected.error), /private key does not belong to the certificate/);
  const cfg = await waitForEvent(from, (x) => x.event === 'config.rejected');
  assert.equal(cfg.source, 'control socket');
  assert.ok(!eventsSince(from).some((x) => x.event === 'config.reloaded' || x.event === 'tls.certificates.loaded'));

  assert.equal(await presented(), serving, 'new connections still get the previous certificate');
  assert.notEqual(serving, fp(e));
});

test('a broken certificate written over the watched files is rejected; the previous certificate stays', async () => {
  // The running configuration still names live2 (the refused config never took effect).
  const f = await newLeaf('F');
  const other = await newLeaf('other2');
  const from = gw.logs.length;
  writeLive(path.join(dir, 'live2'), f, other.keyPem);
  const rejected = await waitForEvent(from, (x) => x.event === 'tls.certificates.rejected');
  assert.match(String(rejected.error), /private key does not belong to the certificate/);
  assert.equal(await presented(), serving);
  assert.notEqual(serving, fp(f));

  // Fixing the key file recovers without any signal.
  const from2 = gw.logs.length;
  writeFileSync(path.join(dir, 'live2', 'key.pem'), f.keyPem);
  await waitForEvent(from2, (x) => x.event === 'tls.certificates.loaded' && x.source === 'file change');
  assert.equal(await presented(), fp(f));
  serving = fp(f);
});

interface Info {
  file: string;
  subject: string;
  commonName?: string;
  organization?: string;
  organizationalUnit?: string;
  sanNames: string[];
  issuer: string;
  root?: string;
  chainValid: boolean;
  chainError?: string;
  chain: string[];
  keyType: string;
  keyStrength: string;
  signatureAlgorithm: string;
  validFrom: string;
  validTo: string;
  daysLeft: number;
  fingerprintSha256: string;
  serialNumber: string;
  crlUrls: string[];
  ocspUrls: string[];
  warnings: string[];
}

test('cert info describes the certificates (JSON and text), warns before expiry', async () => {
  const now = Math.floor(Date.now() / 1000) * 1000;
  const notBefore = new Date(now - 2 * DAY);
  const notAfter = new Date(now + 200 * DAY + 3_600_000);
  const info = await pki.issue('info.contoso.test', {
    subject: 'CN=mx1.contoso.test, O=Contoso Ltd, OU=Mail Gateway',
    dnsNames: ['mx1.contoso.test', 'mail.contoso.test'],
    ipAddresses: ['127.0.0.1'],
    crlUrls: ['http://crl.contoso.test/issuing.crl'],
    ocspUrls: ['http://ocsp.contoso.test/'],
    notBefore,
    notAfter,
  });
  const soon = await pki.issue('soon.contoso.test', { notAfter: new Date(now + 10 * DAY + 3_600_000) });
  gw.writeConfig(
    tlsConfig([
      { cert: info.cert, key: info.key },
      { cert: soon.cert, key: soon.key },
    ]),
  );

  const r = await gw.cli(['cert', 'info', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const infos = JSON.parse(r.stdout) as Info[];
  assert.equal(infos.length, 2);
  const [i, s] = infos;

  // Independent facts, from node and from openssl.
  const leaf = new X509Certificate(info.issued.certPem);
  const ossl = (
    await run('openssl', ['x509', '-in', info.cert, '-noout', '-fingerprint', '-sha256', '-serial', '-text'], {
      timeout: 10_000,
    })
  ).stdout;
  const osslFp = /sha256 Fingerprint=([0-9A-F:]+)/i.exec(ossl)?.[1];
  const osslSerial = /serial=([0-9A-F]+)/.exec(ossl)?.[1];

  assert.equal(i.file, info.cert);
  assert.equal(i.subject, 'CN=mx1.contoso.test, O=Contoso Ltd, OU=Mail Gateway');
  assert.equal(i.commonName, 'mx1.contoso.test');
  assert.equal(i.organization, 'Contoso Ltd');
  assert.equal(i.organizationalUnit, 'Mail Gateway');
  assert.deepEqual(i.sanNames, ['mx1.contoso.test', 'mail.contoso.test', 'IP:127.0.0.1']);
  assert.equal(i.issuer, 'CN=Test Issuing CA, O=Test Trust');
  assert.equal(i.root, 'CN=Test Root CA, O=Test Trust');
  assert.equal(i.chainValid, true, i.chainError);
  assert.deepEqual(i.chain, [
    'CN=mx1.contoso.test, O=Contoso Ltd, OU=Mail Gateway',
    'CN=Test Issuing CA, O=Test Trust',
    'CN=Test Root CA, O=Test Trust',
  ]);
  assert.equal(i.keyType, 'RSA');
  assert.equal(i.keyStrength, '2048 bits');
  assert.match(ossl, /Signature Algorithm: ecdsa-with-SHA256/, 'the intermediate (EC P-256) signs with ECDSA SHA-256');
  assert.equal(i.signatureAlgorithm, 'ECDSA with SHA-256');
  assert.equal(i.validFrom, notBefore.toISOString());
  assert.equal(i.validTo, notAfter.toISOString());
  assert.equal(i.daysLeft, 200);
  assert.equal(i.fingerprintSha256, leaf.fingerprint256);
  assert.equal(i.fingerprintSha256, osslFp);
  assert.equal(i.serialNumber, osslSerial);
  assert.deepEqual(i.crlUrls, ['http://crl.contoso.test/issuing.crl']);
  assert.deepEqual(i.ocspUrls, ['http://ocsp.contoso.test/']);
  assert.deepEqual(i.warnings, []);

  assert.equal(s.file, soon.cert);
  assert.equal(s.daysLeft, 10);
  assert.equal(s.chainValid, true, s.chainError);
  assert.deepEqual(s.crlUrls, []);
  assert.deepEqual(s.ocspUrls, []);
  assert.equal(s.warnings.length, 1, s.warnings.join('; '));
  assert.match(s.warnings[0], /^expires in 10 days \(/);

  // Text output: the same facts, one block per certificate.
  const t = await gw.cli(['cert', 'info']);
  assert.equal(t.code, 0, t.stderr);
  const blocks = t.stdout.split(/^(?=certificate )/m).filter(Boolean);
  assert.equal(blocks.length, 2, t.stdout);
  const [ti, ts] = blocks;
  const esc = (x: string) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const line = (label: string, value: string) => new RegExp(`^ {0,2}${esc(label)} +${esc(value)}$`, 'm');
  assert.match(ti, line('certificate', info.cert));
  assert.match(ti, line('subject', 'CN=mx1.contoso.test, O=Contoso Ltd, OU=Mail Gateway'));
  assert.match(ti, line('names (SAN)', 'mx1.contoso.test, mail.contoso.test, IP:127.0.0.1'));
  assert.match(ti, line('organization', 'Contoso Ltd'));
  assert.match(ti, line('issuer', 'CN=Test Issuing CA, O=Test Trust'));
  assert.match(ti, line('root CA', 'CN=Test Root CA, O=Test Trust'));
  assert.match(ti, line('key', 'RSA 2048 bits'));
  assert.match(ti, line('signature', 'ECDSA with SHA-256'));
  assert.match(ti, line('valid', `${notBefore.toISOString()} to ${notAfter.toISOString()} (200 days left)`));
  assert.match(ti, line('SHA-256', leaf.fingerprint256));
  assert.match(ti, line('CRL', 'http://crl.contoso.test/issuing.crl'));
  assert.match(ti, line('OCSP', 'http://ocsp.contoso.test/'));
  assert.doesNotMatch(ti, /WARNING/);
  assert.match(ts, /^ {2}WARNING +expires in 10 days \(/m);

  // Without the root in the trust store: no root, and a warning that the chain does not validate.
  gw.writeConfig({
    tls: { certificates: [{ cert: info.cert, key: info.key }], trust: { system: false, caFiles: [] } },
  });
  const u = await gw.cli(['cert', 'info', '--json']);
  assert.equal(u.code, 0, u.stderr);
  const [ui] = JSON.parse(u.stdout) as Info[];
  assert.equal(ui.root, undefined);
  assert.equal(ui.chainValid, false);
  assert.ok(
    ui.warnings.some((w) => /chain does not validate/.test(w)),
    ui.warnings.join('; '),
  );
});
