// OCSP responses and CRLs signed with every kind of key a CA uses: RSA-PSS (an RSA-PSS key, and
// an RSA key signing with PSS padding), Ed25519, Ed448 and ECDSA P-384. CAs, delegated responder
// certificates and CRLs are made with openssl; real `openssl ocsp` responders sign the answers.
// Each answer is believed ('good' / 'revoked'); with one bit of its signature changed, or from a
// responder the issuer did not delegate, it is not.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { X509Certificate } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier, CertificateList } from '@peculiar/asn1-x509';
import { BasicOCSPResponse, OCSPResponse } from '@peculiar/asn1-ocsp';
import { DnsResolver } from '../../../src/dns/resolver.ts';
import { crlSignedBy, ocspRequest, readOcspResponse, RevocationChecker } from '../../../src/tls/revocation.ts';
import { signatureMethod } from '../../../src/tls/signature.ts';
import { freePort, tempDir } from '../../helpers/gateway.ts';
import {
  opensslCa,
  opensslCrl,
  opensslIssue,
  startCrlServer,
  startOcspResponder,
  type CrlServer,
  type OcspResponder,
  type OpensslCert,
  type OpensslKey,
} from '../../helpers/revocation.ts';

interface Variant {
  id: string;
  key: OpensslKey;
  signing: OpensslCert['signing'];
  /** The signature algorithm OID the answers must carry. */
  oid: string;
}

const VARIANTS: Variant[] = [
  { id: 'rsa-pss-key', key: 'rsa-pss', signing: {}, oid: '1.2.840.113549.1.1.10' },
  {
    id: 'rsa-key-pss-padding',
    key: 'rsa',
    signing: { sigopt: ['rsa_padding_mode:pss', 'rsa_pss_saltlen:digest'] },
    oid: '1.2.840.113549.1.1.10',
  },
  { id: 'ed25519', key: 'ed25519', signing: {}, oid: '1.3.101.112' },
  { id: 'ed448', key: 'ed448', signing: {}, oid: '1.3.101.113' },
  { id: 'ecdsa-p384', key: 'p384', signing: { md: 'sha384' }, oid: '1.2.840.10045.4.3.3' },
];

interface Setup {
  ca: OpensslCert;
  good: OpensslCert;
  revoked: OpensslCert;
  direct: string;
  delegated: string;
  crlUrl: string;
}

let dir: string;
let crl: CrlServer;
const responders: OcspResponder[] = [];
const setups = new Map<string, Setup>();
let rogue: { leaf: OpensslCert; ca: OpensslCert };

const checker = () =>
  new RevocationChecker(() => new DnsResolver(['127.0.0.1:1'], { timeoutMs: 200, attempts: 1 }), 3000);

/** The raw answer of an OCSP responder for `leaf` (POST, as the checker sends it). */
function fetchOcsp(url: string, leaf: X509Certificate, issuer: X509Certificate): Promise<Buffer> {
  const body = ocspRequest(leaf, issuer);
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: 'POST', headers: { 'content-type': 'application/ocsp-request', 'content-length': body.length } },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (d: Buffer) => parts.push(d));
        res.on('end', () => resolve(Buffer.concat(parts)));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** The OCSP response encoded again, its signature with one bit flipped when `flip`. */
function reencodedOcsp(der: Buffer, flip: boolean): Buffer {
  const resp = AsnConvert.parse(der, OCSPResponse);
  const basic = AsnConvert.parse(resp.responseBytes!.response.buffer, BasicOCSPResponse);
  const sig = new Uint8Array(basic.signature.slice(0));
  if (flip) sig[sig.length - 1] ^= 1;
  const again = new BasicOCSPResponse({
    tbsResponseData: basic.tbsResponseData,
    signatureAlgorithm: basic.signatureAlgorithm,
    signature: sig.buffer,
    ...(basic.certs ? { certs: basic.certs } : {}),
  });
  resp.responseBytes!.response = new OctetString(AsnConvert.serialize(again));
  return Buffer.from(AsnConvert.serialize(resp));
}

/** The CRL encoded again, its signature with one bit flipped when `flip`. */
function reencodedCrl(der: Buffer, flip: boolean): Buffer {
  const list = AsnConvert.parse(der, CertificateList);
  const sig = new Uint8Array(list.signature.slice(0));
  if (flip) sig[sig.length - 1] ^= 1;
  return Buffer.from(
    AsnConvert.serialize(
      new CertificateList({
        tbsCertList: list.tbsCertList,
        signatureAlgorithm: list.signatureAlgorithm,
        signature: sig.buffer,
      }),
    ),
  );
}

before(async () => {
  dir = tempDir('pc-sigalg-');
  crl = await startCrlServer();
  for (const v of VARIANTS) {
    const [p1, p2] = [await freePort(), await freePort()];
    const direct = `http://127.0.0.1:${p1}`;
    const delegated = `http://127.0.0.1:${p2}`;
    const crlUrl = crl.url(`${v.id}.crl`);
    const ca = opensslCa(dir, `${v.id} CA`, v.key, v.signing);
    const responder = opensslIssue(dir, ca, `ocsp.${v.id}.test`, { key: v.key, ocspSigning: true });
    const urls = { ocspUrls: [direct, delegated], crlUrls: [crlUrl] };
    const good = opensslIssue(dir, ca, `good.${v.id}.test`, urls);
    const revoked = opensslIssue(dir, ca, `revoked.${v.id}.test`, urls);
    crl.put(`${v.id}.crl`, opensslCrl(dir, ca, [revoked.x]));
    const sign = {
      ...(v.signing.md ? { rmd: v.signing.md } : {}),
      ...(v.signing.sigopt ? { rsigopt: v.signing.sigopt } : {}),
    };
    responders.push(await startOcspResponder(dir, ca, [good.x], [revoked.x], p1, '127.0.0.1', sign));
    responders.push(
      await startOcspResponder(dir, ca, [good.x], [revoked.x], p2, '127.0.0.1', { ...sign, signer: responder }),
    );
    setups.set(v.id, { ca, good, revoked, direct, delegated, crlUrl });
  }
  // A responder with an OCSP-signing certificate from another CA: its answers prove nothing.
  const rogueUrl = `http://127.0.0.1:${await freePort()}`;
  const ca = opensslCa(dir, 'Rogue target CA', 'ed25519');
  const other = opensslCa(dir, 'Other CA', 'ed25519');
  const leaf = opensslIssue(dir, ca, 'rogue-target.test', { ocspUrls: [rogueUrl] });
  const signer = opensslIssue(dir, other, 'ocsp.other.test', { key: 'ed25519', ocspSigning: true });
  responders.push(
    await startOcspResponder(dir, ca, [leaf.x], [], Number(new URL(rogueUrl).port), '127.0.0.1', { signer }),
  );
  rogue = { leaf, ca };
});

after(async () => {
  await Promise.all(responders.map((r) => r.close()));
  await crl?.close();
});

for (const v of VARIANTS) {
  test(`${v.id}: OCSP answers (issuer-signed and from a delegated responder) and the CRL are believed: good and revoked`, async () => {
    const s = setups.get(v.id)!;
    const g = await checker().checkOne(s.good.x, s.ca.x, true);
    assert.deepEqual(
      g.endpoints.map((e) => [e.kind, e.url, e.ok, e.status ?? e.error]),
      [
        ['ocsp', s.direct, true, 'good'],
        ['ocsp', s.delegated, true, 'good'],
        ['crl', s.crlUrl, true, 'good'],
      ],
    );
    assert.equal(g.status, 'good');
    const r = await checker().checkOne(s.revoked.x, s.ca.x, true);
    assert.deepEqual(
      r.endpoints.map((e) => [e.kind, e.url, e.ok, e.status ?? e.error]),
      [
        ['ocsp', s.direct, true, 'revoked'],
        ['ocsp', s.delegated, true, 'revoked'],
        ['crl', s.crlUrl, true, 'revoked'],
      ],
    );
    assert.equal(r.status, 'revoked');
    assert.ok(r.revokedAt);
  });

  test(`${v.id}: an OCSP answer or a CRL with one bit of its signature changed is not believed`, async () => {
    const s = setups.get(v.id)!;
    for (const url of [s.direct, s.delegated]) {
      const der = await fetchOcsp(url, s.revoked.x, s.ca.x);
      const basic = AsnConvert.parse(
        AsnConvert.parse(der, OCSPResponse).responseBytes!.response.buffer,
        BasicOCSPResponse,
      );
      assert.equal(basic.signatureAlgorithm.algorithm, v.oid, 'the responder signs with the algorithm under test');
      assert.equal(
        readOcspResponse(reencodedOcsp(der, false), s.revoked.x, s.ca.x).status,
        'revoked',
        'encoded again, the answer still verifies',
      );
      assert.throws(
        () => readOcspResponse(reencodedOcsp(der, true), s.revoked.x, s.ca.x),
        /response signature does not verify/,
      );
    }
    const crlDer = opensslCrl(dir, s.ca, [s.revoked.x]);
    assert.equal(
      AsnConvert.parse(crlDer, CertificateList).signatureAlgorithm.algorithm,
      v.oid,
      'the CRL is signed with the algorithm under test',
    );
    assert.equal(crlSignedBy(reencodedCrl(crlDer, false), s.ca.x), true, 'encoded again, the CRL still verifies');
    assert.equal(crlSignedBy(reencodedCrl(crlDer, true), s.ca.x), false);
    const other = setups.get(VARIANTS.find((x) => x !== v)!.id)!;
    assert.equal(crlSignedBy(crlDer, other.ca.x), false, 'nor is a CRL checked against another CA');
  });
}

test('an OCSP answer signed by a responder certificate another CA issued is not believed', async () => {
  const r = await checker().checkOne(rogue.leaf.x, rogue.ca.x);
  assert.equal(r.status, 'unknown');
  assert.match(
    r.endpoints[0].error ?? '',
    /response signature does not verify against the issuer or a delegated responder/,
  );
});

test('algorithms outside the list are never taken for verified: MD5 with RSA, RSA-PSS without its parameters, DSA', () => {
  for (const algorithm of ['1.2.840.113549.1.1.4', '1.2.840.113549.1.1.10', '2.16.840.1.101.3.4.3.2']) {
    assert.equal(signatureMethod(new AlgorithmIdentifier({ algorithm })), undefined, algorithm);
  }
  assert.deepEqual(signatureMethod(new AlgorithmIdentifier({ algorithm: '1.2.840.113549.1.1.11', parameters: null })), {
    hash: 'sha256',
    keyTypes: ['rsa'],
  });
});
