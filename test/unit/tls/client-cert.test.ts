// Judging a client certificate (issue 8): EKU, trust per connector, and which certificates get a
// revocation check at all (never one that could not count: its URLs are its presenter's choice).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { DnsResolver } from '../../../src/dns/resolver.ts';
import { issueCertificate } from '../../../src/tls/certgen.ts';
import {
  clientAuthProblem,
  judgeClientChain,
  normalizeFingerprint,
  withRevocation,
  type ClientAnchor,
} from '../../../src/tls/client-cert.ts';
import { RevocationChecker } from '../../../src/tls/revocation.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { x509 } from '../../../src/tls/x509.ts';
import { tempDir } from '../../helpers/gateway.ts';
import { makePki, type Pki } from '../../helpers/pki.ts';
import { startCrlServer, type CrlServer } from '../../helpers/revocation.ts';

let pki: Pki;
let partner: Pki;
let crl: CrlServer;
const chainOf = (pem: string) =>
  (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => new X509Certificate(p));
const issue = async (p: Pki, name: string, o: object = {}) =>
  chainOf((await p.issue(name, o)).issued.certPem + p.intermediate.certPem);
let trust: TrustStore;

/** A leaf with exactly the given EKU extension (none when `usages` is undefined). */
async function withEku(usages: string[] | undefined): Promise<X509Certificate> {
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const c = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=eku.fabrikam.test',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as { name: string },
    extensions: usages ? [new x509.ExtendedKeyUsageExtension(usages)] : [],
  });
  return new X509Certificate(c.toString('pem'));
}

before(async () => {
  const dir = tempDir();
  pki = await makePki(dir, 'Public');
  partner = await makePki(dir, 'Private');
  trust = new TrustStore(false, [pki.rootFile]);
  crl = await startCrlServer();
});
after(async () => {
  await crl?.close();
});

const anchor = (o: Partial<ClientAnchor> = {}): ClientAnchor => ({
  id: 'contoso/From Fabrikam',
  pattern: '*.fabrikam.test',
  trust: null,
  pins: new Set(),
  ...o,
});

test('EKU: no extension, clientAuth or anyExtendedKeyUsage may authenticate a client; serverAuth-only or emailProtection may not', async () => {
  assert.equal(clientAuthProblem(await withEku(undefined)), undefined);
  assert.equal(
    clientAuthProblem(await withEku([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth])),
    undefined,
  );
  assert.equal(clientAuthProblem(await withEku(['2.5.29.37.0'])), undefined);
  assert.equal(
    clientAuthProblem(await withEku([x509.ExtendedKeyUsage.serverAuth])),
    'its extended key usage is limited to serverAuth and does not include clientAuth',
  );
  assert.equal(
    clientAuthProblem(await withEku([x509.ExtendedKeyUsage.emailProtection, '1.2.3.4'])),
    'its extended key usage is limited to emailProtection, 1.2.3.4 and does not include clientAuth',
  );
});

test('a revocation check is asked for only when the certificate could identify a connector', async () => {
  const good = await issue(pki, 'mx1.fabrikam.test');
  const j = judgeClientChain(good, trust, [anchor()], 'softFail')!;
  assert.deepEqual(
    j.check?.map((c) => c.fingerprint256),
    [...good, new X509Certificate(pki.root.certPem)].map((c) => c.fingerprint256),
    'leaf to root',
  );
  assert.equal(j.cert.verified, true);
  assert.deepEqual(j.cert.names, ['mx1.fabrikam.test']);
  const none = [
    ['another name', judgeClientChain(await issue(pki, 'mx.stranger.test'), trust, [anchor()], 'softFail')],
    ['an untrusted chain', judgeClientChain(await issue(partner, 'mx2.fabrikam.test'), trust, [anchor()], 'softFail')],
    [
      'serverAuth only',
      judgeClientChain(await issue(pki, 'mx3.fabrikam.test', { clientAuth: false }), trust, [anchor()], 'softFail'),
    ],
    ['no connector uses certificates', judgeClientChain(good, trust, [], 'softFail')],
    ['tls.revocation off', judgeClientChain(good, trust, [anchor()], 'off')],
  ] as const;
  for (const [what, r] of none) assert.equal(r?.check, undefined, what);
  assert.equal(judgeClientChain([], trust, [anchor()], 'softFail'), undefined, 'no certificate, no judgement');
});

test('trust through a connector: its trustedCAs or its pin (checked along the path that trusts it)', async () => {
  const priv = await issue(partner, 'mx1.fabrikam.test');
  const own = judgeClientChain(
    priv,
    trust,
    [anchor({ trust: new TrustStore(false, [partner.rootFile]) })],
    'hardFail',
  )!;
  assert.equal(own.cert.verified, false);
  assert.deepEqual(own.cert.trustedBy, ['contoso/From Fabrikam']);
  assert.equal(own.check?.length, 3, "leaf, intermediate and the connector's root");
  const self = await issueCertificate({ subject: 'CN=mx9.fabrikam.test', dnsNames: ['mx9.fabrikam.test'] });
  const selfChain = chainOf(self.certPem);
  const pinned = judgeClientChain(
    selfChain,
    trust,
    [anchor({ pins: new Set([normalizeFingerprint(selfChain[0].fingerprint256)]) })],
    'hardFail',
  )!;
  assert.deepEqual(pinned.cert.trustedBy, ['contoso/From Fabrikam']);
  const r = await withRevocation(pinned.cert, pinned.check!, {} as RevocationChecker);
  assert.equal(r.revocation?.status, 'good');
  assert.match(r.revocation!.summary, /^not checked: CN=mx9\.fabrikam\.test is itself the trust anchor/);
});

test("withRevocation records the checker's status and summary; a failing checker gives unknown", async () => {
  const leaf = (await pki.issue('mx5.fabrikam.test', { crlUrls: [crl.url('int.crl')] })).issued;
  await crl.publish('int.crl', pki.intermediate, [new X509Certificate(leaf.certPem)]);
  const chain = chainOf(leaf.certPem + pki.intermediate.certPem);
  const j = judgeClientChain(chain, trust, [anchor()], 'softFail')!;
  const checker = new RevocationChecker(() => new DnsResolver(['127.0.0.1:1'], { timeoutMs: 200, attempts: 1 }), 2000);
  const r = await withRevocation(j.cert, j.check!, checker);
  assert.equal(r.revocation?.status, 'revoked');
  assert.match(
    r.revocation!.summary,
    /^certificate CN=mx5\.fabrikam\.test, O=Public Org is REVOKED since \S+ \(CRL http:\/\/127\.0\.0\.1:\d+\/int\.crl: revoked\)/,
  );
  const broken = { check: () => Promise.reject(new Error('boom')) } as unknown as RevocationChecker;
  const u = await withRevocation(j.cert, j.check!, broken);
  assert.deepEqual(u.revocation, {
    status: 'unknown',
    summary: 'revocation status of CN=mx5.fabrikam.test, O=Public Org unknown (boom)',
  });
});
