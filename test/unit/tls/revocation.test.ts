import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { DnsResolver } from '../../../src/dns/resolver.ts';
import { RevocationChecker } from '../../../src/tls/revocation.ts';
import { issueCertificate } from '../../../src/tls/certgen.ts';
import { makePki, makePkiWith, type Pki } from '../../helpers/pki.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { tempDir, freePort } from '../../helpers/gateway.ts';
import { startCrlServer, startOcspResponder, type CrlServer, type OcspResponder } from '../../helpers/revocation.ts';

let pki: Pki;
let crl: CrlServer;
let ocsp: OcspResponder;
let dir: string;
let good: X509Certificate;
let revoked: X509Certificate;
let crlOnlyGood: X509Certificate;
let crlOnlyRevoked: X509Certificate;
let dead: X509Certificate;
const chain = (c: X509Certificate) => [
  c,
  new X509Certificate(pki.intermediate.certPem),
  new X509Certificate(pki.root.certPem),
];
const checker = () =>
  new RevocationChecker(() => new DnsResolver(['127.0.0.1:1'], { timeoutMs: 200, attempts: 1 }), 2000);

before(async () => {
  dir = tempDir();
  pki = await makePki(dir, 'Rev');
  crl = await startCrlServer();
  const ocspPort = await freePort();
  const urls = { crlUrls: [crl.url('int.crl')], ocspUrls: [`http://127.0.0.1:${ocspPort}`] };
  const mk = async (name: string, o: object) => new X509Certificate((await pki.issue(name, o)).issued.certPem);
  good = await mk('good.rev.test', urls);
  revoked = await mk('revoked.rev.test', urls);
  crlOnlyGood = await mk('crl-good.rev.test', { crlUrls: urls.crlUrls });
  crlOnlyRevoked = await mk('crl-revoked.rev.test', { crlUrls: urls.crlUrls });
  const closed = await freePort();
  dead = await mk('dead.rev.test', {
    crlUrls: [`http://127.0.0.1:${closed}/x.crl`],
    ocspUrls: [`http://127.0.0.1:${closed}`],
  });
  await crl.publish('int.crl', pki.intermediate, [revoked, crlOnlyRevoked]);
  await crl.publish('root.crl', pki.root, []);
  ocsp = await startOcspResponder(dir, pki.intermediate, [good], [revoked], ocspPort);
});
after(async () => {
  await ocsp?.close();
  await crl?.close();
});

test('OCSP (real openssl responder): good and revoked', async () => {
  const c = checker();
  const g = await c.checkOne(good, new X509Certificate(pki.intermediate.certPem));
  assert.equal(g.status, 'good', JSON.stringify(g));
  assert.equal(g.endpoints[0].kind, 'ocsp');
  const r = await c.check(chain(revoked));
  assert.equal(r.status, 'revoked');
  assert.match(r.summary, /REVOKED/);
});

test('CRL: good and revoked; the CRL is cached until nextUpdate', async () => {
  const c = checker();
  assert.equal((await c.checkOne(crlOnlyGood, new X509Certificate(pki.intermediate.certPem))).status, 'good');
  const before = crl.requests;
  const r = await c.checkOne(crlOnlyRevoked, new X509Certificate(pki.intermediate.certPem));
  assert.equal(r.status, 'revoked');
  assert.ok(r.revokedAt);
  assert.equal(crl.requests, before, 'second lookup served from cache');
});

test('unreachable endpoints give unknown with every failure named', async () => {
  const r = await checker().check(chain(dead));
  assert.equal(r.status, 'unknown');
  assert.equal(r.certificates[0].endpoints.length, 2);
  assert.ok(r.certificates[0].endpoints.every((e) => !e.ok && /ECONNREFUSED/.test(e.error ?? '')));
  assert.match(r.summary, /OCSP http:\/\/127\.0\.0\.1:\d+: unreachable \(ECONNREFUSED/);
});

test('a CRL signed by the wrong key is not believed', async () => {
  const impostor = await issueCertificate({ subject: 'CN=Impostor', ca: true, key: 'ec256' });
  await crl.publish('forged.crl', pki.intermediate, [], { signer: impostor });
  const victim = new X509Certificate(
    (await pki.issue('forged.rev.test', { crlUrls: [crl.url('forged.crl')] })).issued.certPem,
  );
  const r = await checker().checkOne(victim, new X509Certificate(pki.intermediate.certPem));
  assert.equal(r.status, 'unknown');
  assert.match(r.endpoints[0].error ?? '', /signature does not verify/);
});

test('all=true reports every endpoint (for tls check)', async () => {
  const r = await checker().checkOne(good, new X509Certificate(pki.intermediate.certPem), true);
  assert.deepEqual(
    r.endpoints.map((e) => [e.kind, e.ok, e.status]),
    [
      ['ocsp', true, 'good'],
      ['crl', true, 'good'],
    ],
  );
});

test(
  'an endpoint that trickles its answer is abandoned at the time limit (unknown), not waited for',
  { timeout: 10_000 },
  async () => {
    // One byte every 100 ms keeps the connection busy, so only a limit on the whole exchange stops it.
    const timers = new Set<NodeJS.Timeout>();
    const slow = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/pkix-crl' });
      const t = setInterval(() => res.write('x'), 100);
      timers.add(t);
      res.on('close', () => {
        clearInterval(t);
        timers.delete(t);
      });
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', () => r()));
    try {
      const url = `http://127.0.0.1:${(slow.address() as AddressInfo).port}/slow.crl`;
      const victim = new X509Certificate((await pki.issue('slow.rev.test', { crlUrls: [url] })).issued.certPem);
      const started = Date.now();
      const r = await new RevocationChecker(
        () => new DnsResolver(['127.0.0.1:1'], { timeoutMs: 200, attempts: 1 }),
        500,
      ).checkOne(victim, new X509Certificate(pki.intermediate.certPem));
      const took = Date.now() - started;
      assert.equal(r.status, 'unknown');
      assert.match(r.endpoints[0].error ?? '', /no complete answer within 500 ms/);
      assert.ok(took < 2500, `gave up after ${took} ms`);
    } finally {
      for (const t of timers) clearInterval(t);
      slow.closeAllConnections();
      await new Promise<void>((r) => slow.close(() => r()));
    }
  },
);

test('answers served from the cache are marked, with the time they were fetched', async () => {
  const c = checker();
  const inter = new X509Certificate(pki.intermediate.certPem);
  const t0 = Date.now();
  const first = await c.checkOne(good, inter, true);
  assert.deepEqual(
    first.endpoints.map((e) => [e.kind, e.ok, e.cached]),
    [
      ['ocsp', true, undefined],
      ['crl', true, undefined],
    ],
  );
  const again = await c.checkOne(good, inter, true);
  assert.deepEqual(
    again.endpoints.map((e) => [e.kind, e.ok, e.status, e.cached]),
    [
      ['ocsp', true, 'good', true],
      ['crl', true, 'good', true],
    ],
  );
  for (const e of again.endpoints) {
    const at = Date.parse(e.fetchedAt ?? '');
    assert.ok(at >= t0 - 1000 && at <= Date.now(), `fetchedAt ${e.fetchedAt}`);
  }
  const other = await c.checkOne(crlOnlyGood, inter, true);
  assert.equal(other.endpoints[0].cached, true, 'the CRL is shared by every certificate it covers');
});

test('an endpoint that answers unusably is reachable; one that does not answer is not', async () => {
  const inter = new X509Certificate(pki.intermediate.certPem);
  const missing = new X509Certificate(
    (await pki.issue('missing.rev.test', { crlUrls: [crl.url('nothing-here.crl')] })).issued.certPem,
  );
  const [m, d] = await Promise.all([checker().checkOne(missing, inter), checker().checkOne(dead, inter)]);
  assert.deepEqual([m.endpoints[0].ok, m.endpoints[0].reachable, m.endpoints[0].error], [false, true, 'HTTP 404']);
  assert.ok(d.endpoints.every((e) => !e.ok && !e.reachable));
});

test("survey: an incomplete chain gets its issuer from the CA-issuer URL, and the intermediate's CRL is checked too", async () => {
  const p = await makePkiWith(dir, 'Survey', { crlUrls: [crl.url('survey-root.crl')] });
  await crl.publish('survey-int.crl', p.intermediate, []);
  await crl.publish('survey-root.crl', p.root, []);
  crl.put('survey-int.cer', Buffer.from(p.intermediate.cert.rawData));
  const leaf = new X509Certificate(
    (
      await p.issue('aia.survey.test', {
        crlUrls: [crl.url('survey-int.crl')],
        caIssuerUrls: [crl.url('survey-int.cer')],
      })
    ).issued.certPem,
  );
  const bare = new X509Certificate(
    (await p.issue('bare.survey.test', { crlUrls: [crl.url('survey-int.crl')] })).issued.certPem,
  );
  const trust = new TrustStore(false, [p.rootFile]);

  const r = await checker().survey([leaf], trust);
  assert.equal(r.status, 'good', r.summary);
  assert.deepEqual(
    r.certificates.map((c) => c.subject),
    ['CN=aia.survey.test, O=Survey Org', 'CN=Survey Issuing CA, O=Survey Trust'],
  );
  const [l, i] = r.certificates;
  assert.equal(l.issuer, 'CN=Survey Issuing CA, O=Survey Trust');
  assert.equal(l.issuerUrl, crl.url('survey-int.cer'));
  assert.deepEqual(
    l.endpoints.map((e) => [e.kind, e.ok, e.status ?? e.served]),
    [
      ['crl', true, 'good'],
      ['caIssuers', true, 'CN=Survey Issuing CA, O=Survey Trust'],
    ],
  );
  assert.equal(l.endpoints[1].servedIsIssuer, true);
  assert.deepEqual(
    i.endpoints.map((e) => [e.kind, e.url, e.ok, e.status]),
    [['crl', crl.url('survey-root.crl'), true, 'good']],
  );

  const b = await checker().survey([bare], trust);
  assert.equal(b.status, 'unknown');
  assert.equal(b.certificates.length, 1);
  assert.equal(b.certificates[0].issuer, undefined);
  const [e] = b.certificates[0].endpoints;
  assert.deepEqual([e.ok, e.reachable], [false, true]);
  assert.match(e.error ?? '', /without the issuer certificate .* its answer cannot be checked/);

  const v = await checker().check(
    [leaf, new X509Certificate(p.intermediate.certPem), new X509Certificate(p.root.certPem)],
    true,
  );
  assert.deepEqual(
    v.certificates[0].endpoints.map((x) => x.kind),
    ['crl', 'caIssuers'],
    'reports list the CA-issuer URLs of a verified chain too',
  );
  assert.match(
    v.summary,
    /^not revoked \(CRL \S+: good; CRL \S+: good\)$/,
    'the revocation summary names CRL/OCSP endpoints only',
  );
});
