// DANE matching checked against an independent implementation: OpenSSL's own DANE verifier
// (`openssl s_client -dane_tlsa_domain … -dane_tlsa_rrdata …`) talking to `openssl s_server`
// over loopback with the same chains. Each case must get the same verdict from both.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { issueCertificate, type Issued } from '../../../src/tls/certgen.ts';
import { daneMatch, formatTlsa, tlsaRecord, type Tlsa } from '../../../src/tls/dane.ts';
import { tempDir } from '../../helpers/gateway.ts';

const HOST = '127.0.53.20';
const NAME = 'mx.fabrikam.test';
const DAY = 86_400_000;
let dir: string;
const pem = (i: Issued) => i.certPem;
const cert = (i: Issued) => new X509Certificate(i.certPem);

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, HOST, () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** OpenSSL's verdict: does s_client's DANE verification accept the chain s_server presents? */
async function openssl(label: string, leaf: Issued, intermediates: Issued[], records: Tlsa[]): Promise<boolean> {
  const base = path.join(dir, label);
  writeFileSync(`${base}.crt`, pem(leaf));
  writeFileSync(`${base}.key`, leaf.keyPem);
  writeFileSync(`${base}.chain`, intermediates.map(pem).join('') || pem(leaf));
  const port = await freePort();
  const server = spawn(
    'openssl',
    [
      's_server',
      '-accept',
      `${HOST}:${port}`,
      '-cert',
      `${base}.crt`,
      '-key',
      `${base}.key`,
      ...(intermediates.length ? ['-cert_chain', `${base}.chain`] : []),
      '-naccept',
      '1',
    ],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  try {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('s_server did not start')), 10_000);
      server.stdout.on('data', (d: Buffer) => {
        if (d.toString().includes('ACCEPT')) {
          clearTimeout(t);
          resolve();
        }
      });
      server.once('exit', (c) => {
        clearTimeout(t);
        reject(new Error(`s_server exited ${c}`));
      });
    });
    // -dane_ee_no_namechecks: DANE-EE(3) ignores names, as RFC 7672 §3.1.1 requires for SMTP.
    const args = [
      's_client',
      '-connect',
      `${HOST}:${port}`,
      '-dane_tlsa_domain',
      NAME,
      '-dane_ee_no_namechecks',
      '-verify_return_error',
      '-brief',
      ...records.flatMap((r) => ['-dane_tlsa_rrdata', formatTlsa(r)]),
    ];
    return await new Promise<boolean>((resolve) => {
      const c = execFile('openssl', args, { timeout: 10_000 }, (err, _out, errText) =>
        resolve(!err && /Verification: OK/.test(String(errText))),
      );
      c.stdin?.end();
    });
  } finally {
    server.kill('SIGKILL');
  }
}

let root: Issued;
let int: Issued;
let otherInt: Issued;
let oldInt: Issued;
let leaf: Issued;
let stranger: Issued;
let expiredLeaf: Issued;
let underOld: Issued;

before(async () => {
  dir = tempDir();
  const past = { notBefore: new Date(Date.now() - 400 * DAY), notAfter: new Date(Date.now() - DAY) };
  root = await issueCertificate({ subject: 'CN=Oracle Root CA', ca: true, key: 'ec256' });
  int = await issueCertificate({ subject: 'CN=Oracle Issuing CA', ca: true, key: 'ec256' }, root);
  otherInt = await issueCertificate(
    { subject: 'CN=Other Issuing CA', ca: true, key: 'ec256' },
    await issueCertificate({ subject: 'CN=Other Root', ca: true, key: 'ec256' }),
  );
  oldInt = await issueCertificate({ subject: 'CN=Old Issuing CA', ca: true, key: 'ec256', ...past }, root);
  const server = (name: string, issuer: Issued, extra = {}) =>
    issueCertificate({ subject: `CN=${name}`, dnsNames: [name], key: 'ec256', ...extra }, issuer);
  leaf = await server(NAME, int);
  stranger = await server('mx.stranger.test', int);
  expiredLeaf = await server(NAME, int, past);
  underOld = await server(NAME, oldInt);
});

test("our DANE verdicts agree with OpenSSL's", async () => {
  const cases: [string, Issued, Issued[], Tlsa[]][] = [
    ['ee-match', leaf, [int], [tlsaRecord(cert(leaf), 3, 1, 1)]],
    ['ee-cert-sha512', leaf, [int], [tlsaRecord(cert(leaf), 3, 0, 2)]],
    ['ee-mismatch', leaf, [int], [tlsaRecord(cert(stranger), 3, 1, 1)]],
    ['ee-expired-leaf', expiredLeaf, [int], [tlsaRecord(cert(expiredLeaf), 3, 1, 1)]],
    ['ee-other-name', stranger, [int], [tlsaRecord(cert(stranger), 3, 1, 1)]],
    ['ta-intermediate', leaf, [int], [tlsaRecord(cert(int), 2, 1, 1)]],
    ['ta-root-presented', leaf, [int, root], [tlsaRecord(cert(root), 2, 0, 1)]],
    ['ta-root-in-dns', leaf, [int], [tlsaRecord(cert(root), 2, 0, 0)]],
    ['ta-root-digest-not-presented', leaf, [int], [tlsaRecord(cert(root), 2, 1, 1)]],
    ['ta-name-mismatch', stranger, [int], [tlsaRecord(cert(int), 2, 1, 1)]],
    ['ta-expired-leaf', expiredLeaf, [int], [tlsaRecord(cert(int), 2, 1, 1)]],
    ['ta-expired-anchor', underOld, [oldInt], [tlsaRecord(cert(oldInt), 2, 1, 1)]],
    ['ta-expired-intermediate', underOld, [oldInt, root], [tlsaRecord(cert(root), 2, 1, 1)]],
    ['ta-not-the-issuer', leaf, [otherInt], [tlsaRecord(cert(otherInt), 2, 1, 1)]],
    ['ta-leaf-as-anchor', leaf, [int], [tlsaRecord(cert(leaf), 2, 1, 1)]],
    ['mixed', stranger, [int], [tlsaRecord(cert(leaf), 3, 1, 1), tlsaRecord(cert(int), 2, 1, 1)]],
  ];
  const disagreements: string[] = [];
  const verdicts: string[] = [];
  const queue = [...cases];
  // Four OpenSSL pairs at a time.
  await Promise.all(
    [1, 2, 3, 4].map(async () => {
      for (let c = queue.shift(); c; c = queue.shift()) {
        const [label, l, ints, records] = c;
        const ours = daneMatch({ records, chain: [l, ...ints].map(cert), names: [NAME] });
        const theirs = await openssl(label, l, ints, records);
        verdicts.push(`${label}:${theirs}`);
        if ((ours.status === 'authenticated') !== theirs)
          disagreements.push(`${label}: ours ${ours.status} (${ours.detail}), OpenSSL ${theirs ? 'OK' : 'failed'}`);
      }
    }),
  );
  assert.deepEqual(disagreements, []);
  // Both outcomes occur (the oracle is not stuck on one answer).
  assert.ok(
    verdicts.some((v) => v.endsWith(':true')) && verdicts.some((v) => v.endsWith(':false')),
    verdicts.join(' '),
  );
});
