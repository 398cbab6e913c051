// DANE TLSA matching (RFC 7672, RFC 6698, RFC 7671) with generated PKIs.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { issueCertificate } from '../../../src/tls/certgen.ts';
import {
  daneMatch,
  describeTlsa,
  formatTlsa,
  tlsaData,
  tlsaRecord,
  usableTlsa,
  type DaneResult,
  type Tlsa,
} from '../../../src/tls/dane.ts';
import { tempDir } from '../../helpers/gateway.ts';
import { makePki, type Pki } from '../../helpers/pki.ts';

const DAY = 86_400_000;
let dir: string;
let pki: Pki;
let other: Pki;
let root: X509Certificate;
let int: X509Certificate;
let otherInt: X509Certificate;
let leaf: X509Certificate;
let stranger: X509Certificate;
let expired: X509Certificate;
let wildcard: X509Certificate;
let domainCert: X509Certificate;
let oldInt: X509Certificate;
let underOld: X509Certificate;
const x = (pem: string) => new X509Certificate(pem);
const NAMES = ['mx.fabrikam.test', 'fabrikam.test'];

before(async () => {
  dir = tempDir();
  pki = await makePki(dir, 'Dane');
  other = await makePki(dir, 'Other');
  root = x(pki.root.certPem);
  int = x(pki.intermediate.certPem);
  otherInt = x(other.intermediate.certPem);
  leaf = x((await pki.issue('mx.fabrikam.test')).issued.certPem);
  stranger = x((await pki.issue('mx.stranger.test')).issued.certPem);
  expired = x(
    (
      await pki.issue('old.fabrikam.test', {
        dnsNames: ['mx.fabrikam.test'],
        notBefore: new Date(Date.now() - 400 * DAY),
        notAfter: new Date(Date.now() - DAY),
      })
    ).issued.certPem,
  );
  wildcard = x((await pki.issue('wild.fabrikam.test', { dnsNames: ['*.fabrikam.test'] })).issued.certPem);
  domainCert = x((await pki.issue('fabrikam.test')).issued.certPem);
  // An issuing CA past its dates, and a current leaf it issued.
  const old = await issueCertificate(
    {
      subject: 'CN=Old Issuing CA, O=Dane Trust',
      ca: true,
      key: 'ec256',
      notBefore: new Date(Date.now() - 400 * DAY),
      notAfter: new Date(Date.now() - DAY),
    },
    pki.root,
  );
  oldInt = x(old.certPem);
  underOld = x(
    (
      await issueCertificate(
        { subject: 'CN=mx.fabrikam.test, O=Dane Org', dnsNames: ['mx.fabrikam.test'], key: 'ec256' },
        old,
      )
    ).certPem,
  );
});

const ok = (r: DaneResult, matched: string, usage: 'DANE-EE' | 'DANE-TA') => {
  assert.equal(r.status, 'authenticated', r.detail);
  if (r.status === 'authenticated') assert.deepEqual([r.matched, r.usage], [matched, usage]);
};
const failed = (r: DaneResult, failure: string) => {
  assert.equal(r.status, 'failed', r.detail);
  if (r.status === 'failed') assert.equal(r.failure, failure, r.detail);
};

test('DANE-EE matches the leaf certificate or its key, with SHA-256, SHA-512 or in full', () => {
  for (const [s, m] of [
    [1, 1],
    [0, 1],
    [1, 2],
    [0, 2],
    [0, 0],
    [1, 0],
  ]) {
    const r = daneMatch({ records: [tlsaRecord(leaf, 3, s, m)], chain: [leaf, int], names: NAMES });
    ok(r, `TLSA 3 ${s} ${m}`, 'DANE-EE');
    if (r.status === 'authenticated') assert.equal(r.certificate, leaf);
  }
});

test('DANE-EE ignores names and dates: an expired leaf for another name still matches 3 1 1', () => {
  ok(
    daneMatch({ records: [tlsaRecord(expired, 3, 1, 1)], chain: [expired], names: ['elsewhere.test'] }),
    'TLSA 3 1 1',
    'DANE-EE',
  );
  ok(
    daneMatch({ records: [tlsaRecord(stranger, 3, 0, 1)], chain: [stranger, int], names: NAMES }),
    'TLSA 3 0 1',
    'DANE-EE',
  );
});

test('a leaf that matches no record fails, and says so with what was presented', () => {
  const r = daneMatch({
    records: [tlsaRecord(stranger, 3, 1, 1), tlsaRecord(otherInt, 2, 1, 1)],
    chain: [leaf, int],
    names: NAMES,
  });
  failed(r, 'certificate does not match any TLSA record');
  if (r.status === 'failed') {
    assert.equal(r.rpt, 'tlsa-invalid');
    assert.match(r.detail, /presented CN=mx\.fabrikam\.test, O=Dane Org \(SHA-256 [0-9A-F:]+\) <- CN=Dane Issuing CA/);
    assert.match(r.detail, /records 3 1 1 [0-9a-f]{64}; 2 1 1 [0-9a-f]{64}/);
  }
  failed(
    daneMatch({ records: [tlsaRecord(leaf, 3, 1, 1)], chain: [], names: NAMES }),
    'certificate does not match any TLSA record',
  );
});

test('DANE-TA: a presented intermediate or root is the trust anchor; the leaf must chain to it and carry a reference name', () => {
  const viaInt = daneMatch({ records: [tlsaRecord(int, 2, 1, 1)], chain: [leaf, int], names: NAMES });
  ok(viaInt, 'TLSA 2 1 1', 'DANE-TA');
  if (viaInt.status === 'authenticated') {
    assert.equal(viaInt.certificate, int);
    assert.equal(viaInt.name, 'mx.fabrikam.test');
  }
  ok(
    daneMatch({ records: [tlsaRecord(root, 2, 0, 1)], chain: [leaf, int, root], names: NAMES }),
    'TLSA 2 0 1',
    'DANE-TA',
  );
  ok(
    daneMatch({ records: [tlsaRecord(root, 2, 1, 2)], chain: [leaf, int, root], names: NAMES }),
    'TLSA 2 1 2',
    'DANE-TA',
  );
  // The next-hop domain is a reference name too; a wildcard covers one label (RFC 6125).
  const byDomain = daneMatch({ records: [tlsaRecord(int, 2, 1, 1)], chain: [domainCert, int], names: NAMES });
  ok(byDomain, 'TLSA 2 1 1', 'DANE-TA');
  if (byDomain.status === 'authenticated') assert.equal(byDomain.name, 'fabrikam.test');
  ok(
    daneMatch({ records: [tlsaRecord(int, 2, 1, 1)], chain: [wildcard, int], names: ['mx2.fabrikam.test'] }),
    'TLSA 2 1 1',
    'DANE-TA',
  );
  failed(
    daneMatch({ records: [tlsaRecord(int, 2, 1, 1)], chain: [wildcard, int], names: ['a.mx2.fabrikam.test'] }),
    'name mismatch',
  );
});

test('DANE-TA published in full in DNS works when the server does not send it (RFC 7671 §5.2.2)', () => {
  ok(daneMatch({ records: [tlsaRecord(root, 2, 0, 0)], chain: [leaf, int], names: NAMES }), 'TLSA 2 0 0', 'DANE-TA');
  const key = daneMatch({ records: [tlsaRecord(int, 2, 1, 0)], chain: [leaf], names: NAMES });
  ok(key, 'TLSA 2 1 0', 'DANE-TA');
  if (key.status === 'authenticated') assert.equal(key.certificate, undefined, 'a bare key has no certificate');
  // A digest of an anchor that is not presented cannot be used.
  failed(
    daneMatch({ records: [tlsaRecord(root, 2, 1, 1)], chain: [leaf, int], names: NAMES }),
    'certificate does not match any TLSA record',
  );
  // The leaf itself is not a trust anchor for DANE-TA.
  failed(
    daneMatch({ records: [tlsaRecord(leaf, 2, 1, 1)], chain: [leaf, int], names: NAMES }),
    'certificate does not match any TLSA record',
  );
});

test('DANE-TA: a name mismatch fails with the names on both sides', () => {
  const r = daneMatch({ records: [tlsaRecord(int, 2, 1, 1)], chain: [stranger, int], names: NAMES });
  failed(r, 'name mismatch');
  if (r.status === 'failed') {
    assert.equal(r.rpt, 'certificate-host-mismatch');
    assert.match(
      r.detail,
      /^TLSA 2 1 1: CN=mx\.stranger\.test, O=Dane Org \(SHA-256 [0-9A-F:]+\) carries mx\.stranger\.test, expected mx\.fabrikam\.test or fabrikam\.test$/,
    );
  }
});

test('DANE-TA: dates apply below the anchor (an expired leaf fails 2 1 1), not to the anchor itself', () => {
  const r = daneMatch({ records: [tlsaRecord(int, 2, 1, 1)], chain: [expired, int], names: NAMES });
  failed(r, 'certificate expired');
  if (r.status === 'failed') {
    assert.equal(r.rpt, 'certificate-expired');
    assert.match(r.detail, /CN=old\.fabrikam\.test, O=Dane Org expired on /);
  }
  // The same chain judged at a time when the leaf was valid passes.
  ok(
    daneMatch({ records: [tlsaRecord(int, 2, 1, 1)], chain: [expired, int], names: NAMES, at: Date.now() - 100 * DAY }),
    'TLSA 2 1 1',
    'DANE-TA',
  );
  // An anchor past its own dates still anchors (as OpenSSL's DANE does) ...
  ok(
    daneMatch({ records: [tlsaRecord(oldInt, 2, 1, 1)], chain: [underOld, oldInt], names: NAMES }),
    'TLSA 2 1 1',
    'DANE-TA',
  );
  // ... but an expired intermediate below the anchor breaks the chain.
  const r2 = daneMatch({ records: [tlsaRecord(root, 2, 1, 1)], chain: [underOld, oldInt, root], names: NAMES });
  failed(r2, 'certificate expired');
  assert.match(r2.detail, /CN=Old Issuing CA, O=Dane Trust expired on /);
});

test('DANE-TA: a presented anchor that did not issue the chain is "chain does not reach the DANE-TA trust anchor"', async () => {
  const r = daneMatch({ records: [tlsaRecord(otherInt, 2, 1, 1)], chain: [leaf, otherInt], names: NAMES });
  failed(r, 'chain does not reach the DANE-TA trust anchor');
  if (r.status === 'failed') {
    assert.equal(r.rpt, 'certificate-not-trusted');
    assert.match(
      r.detail,
      /^TLSA 2 1 1: CN=mx\.fabrikam\.test, O=Dane Org is not issued by presented CN=Other Issuing CA/,
    );
  }
  // An intermediate with the right name but another key (a forged issuer) does not link the chain.
  const forgedInt = x(
    (
      await other.issue(
        'forged-int',
        { subject: int.subject.split('\n').join(', '), ca: true, dnsNames: [] },
        other.root,
      )
    ).issued.certPem,
  );
  assert.equal(forgedInt.subject, int.subject);
  failed(
    daneMatch({ records: [tlsaRecord(root, 2, 1, 1)], chain: [leaf, forgedInt, root], names: NAMES }),
    'chain does not reach the DANE-TA trust anchor',
  );
});

test('only usages 2 and 3, selectors 0/1, matching types 0/1/2 with the right length are usable', () => {
  const d = tlsaData(leaf, 1, 1);
  const unusable: Tlsa[] = [
    { usage: 0, selector: 1, matchingType: 1, data: tlsaData(root, 1, 1) }, // PKIX-TA: not for SMTP (RFC 7672 §3.1.3)
    { usage: 1, selector: 1, matchingType: 1, data: d }, // PKIX-EE, matching the leaf: still unusable
    { usage: 4, selector: 1, matchingType: 1, data: d },
    { usage: 3, selector: 2, matchingType: 1, data: d },
    { usage: 3, selector: 1, matchingType: 3, data: d },
    { usage: 3, selector: 1, matchingType: 1, data: d.subarray(0, 31) },
    { usage: 3, selector: 1, matchingType: 2, data: d },
    { usage: 3, selector: 1, matchingType: 0, data: Buffer.alloc(0) },
  ];
  for (const r of unusable) assert.equal(usableTlsa(r), false, formatTlsa(r));
  const r = daneMatch({ records: unusable, chain: [leaf, int], names: NAMES });
  assert.equal(r.status, 'unusable');
  assert.equal(r.usable, false);
  assert.match(
    r.detail,
    /^no usable TLSA record \(TLSA 0 1 1, TLSA 1 1 1, TLSA 4 1 1, TLSA 3 2 1, TLSA 3 1 3, TLSA 3 1 1, TLSA 3 1 2, TLSA 3 1 0\): TLS is required, the certificate is not authenticated$/,
  );
  assert.equal(daneMatch({ records: [], chain: [leaf], names: NAMES }).status, 'unusable');
});

test('mixed sets: unusable records are ignored, any usable match authenticates, failures report the most telling reason', () => {
  const pkixEe = { usage: 1, selector: 1, matchingType: 1, data: tlsaData(leaf, 1, 1) };
  failed(
    daneMatch({ records: [pkixEe, tlsaRecord(stranger, 3, 1, 1)], chain: [leaf, int], names: NAMES }),
    'certificate does not match any TLSA record',
  );
  ok(
    daneMatch({
      records: [pkixEe, tlsaRecord(stranger, 3, 1, 1), tlsaRecord(int, 2, 1, 1)],
      chain: [leaf, int],
      names: NAMES,
    }),
    'TLSA 2 1 1',
    'DANE-TA',
  );
  ok(
    daneMatch({
      records: [tlsaRecord(int, 2, 1, 1), tlsaRecord(stranger, 3, 1, 1)],
      chain: [stranger, int],
      names: NAMES,
    }),
    'TLSA 3 1 1',
    'DANE-EE',
  );
  // A TA that anchors but names the wrong host says more than a TA the chain does not reach,
  // whichever record comes first.
  const both = [tlsaRecord(otherInt, 2, 1, 1), tlsaRecord(int, 2, 1, 1)];
  for (const records of [both, [...both].reverse()])
    failed(daneMatch({ records, chain: [stranger, int, otherInt], names: NAMES }), 'name mismatch');
  failed(
    daneMatch({ records: [both[0]], chain: [stranger, int, otherInt], names: NAMES }),
    'chain does not reach the DANE-TA trust anchor',
  );
});

test('garbage records never throw', () => {
  const junk: Tlsa[] = [
    { usage: 2, selector: 0, matchingType: 0, data: Buffer.from('not a certificate') },
    { usage: 2, selector: 1, matchingType: 0, data: Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00]) },
    { usage: 3, selector: 0, matchingType: 0, data: Buffer.alloc(5000, 0xff) },
  ];
  failed(daneMatch({ records: junk, chain: [leaf, int], names: NAMES }), 'certificate does not match any TLSA record');
});

test('tlsaData agrees with openssl: 3 1 1 of the key, 2 0 1 of the CA certificate, 3 1 2', () => {
  const pem = path.join(dir, 'dane-leaf.pem');
  writeFileSync(pem, leaf.toString());
  const spki = execFileSync('openssl', ['x509', '-in', pem, '-noout', '-pubkey']);
  const spkiDer = execFileSync('openssl', ['pkey', '-pubin', '-outform', 'DER'], { input: spki });
  const dgst = (alg: string, input: Buffer) => execFileSync('openssl', ['dgst', `-${alg}`, '-binary'], { input });
  assert.equal(tlsaData(leaf, 1, 1).toString('hex'), dgst('sha256', spkiDer).toString('hex'));
  assert.equal(tlsaData(leaf, 1, 2).toString('hex'), dgst('sha512', spkiDer).toString('hex'));
  assert.deepEqual(tlsaData(leaf, 1, 0), spkiDer);
  const caPem = path.join(dir, 'dane-ca.pem');
  writeFileSync(caPem, int.toString());
  const caDer = execFileSync('openssl', ['x509', '-in', caPem, '-outform', 'DER']);
  assert.equal(tlsaData(int, 0, 1).toString('hex'), dgst('sha256', caDer).toString('hex'));
  const r = tlsaRecord(int, 2, 1, 1);
  assert.equal(describeTlsa(r), 'TLSA 2 1 1');
  assert.equal(formatTlsa(r), `2 1 1 ${tlsaData(int, 1, 1).toString('hex')}`);
  assert.throws(() => tlsaData(leaf, 1, 7), /unknown TLSA matching type 7/);
});

test("a certificate's TLSA data is computed once per certificate object: a pooled connection's chain is not exported and hashed again for every message", () => {
  const fresh = x(pki.intermediate.certPem);
  const first = tlsaData(fresh, 1, 1);
  assert.equal(tlsaData(fresh, 1, 1), first, 'the same data, not computed again');
  assert.notEqual(tlsaData(fresh, 0, 1), first, 'per selector and matching type');
  // Another object for the same certificate has the same data (computed for it).
  assert.deepEqual(tlsaData(x(pki.intermediate.certPem), 1, 1), first);
  assert.throws(() => tlsaData(fresh, 1, 9), RangeError);
  assert.throws(() => tlsaData(fresh, 1, 9), RangeError, 'an unknown matching type is never remembered');
});
