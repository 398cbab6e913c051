// Fetching a policy over HTTPS (RFC 8461 §3.3) from a real HTTPS server on 127.0.8.x:443, found
// through the (fake) resolver: WebPKI validation against the trust store (untrusted, expired and
// wrong-name certificates are sts-webpki-invalid), no redirects, the 64 KB cap, HTTP status and
// media type, timeouts, and the next address when one refuses the connection.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { fetchStsPolicy, MAX_POLICY_BYTES } from '../../../src/mtasts/fetch.ts';
import { issueCertificate } from '../../../src/tls/certgen.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { FakeResolver } from '../../helpers/fake-resolver.ts';
import { tempDir } from '../../helpers/gateway.ts';
import { makePki, type Pki } from '../../helpers/pki.ts';
import { startStsServer, type StsServer } from '../../helpers/sts-server.ts';

const POLICY = 'version: STSv1\r\nmode: enforce\r\nmx: mx1.fabrikam.test\r\nmax_age: 86400\r\n';
const IP = { good: '127.0.8.1', expired: '127.0.8.2', wrong: '127.0.8.3', self: '127.0.8.4', dead: '127.0.8.5' };
let dir: string;
let pki: Pki;
let trust: TrustStore;
const servers: Record<string, StsServer> = {};
const dns = new FakeResolver({
  'mta-sts.fabrikam.test': { A: [IP.good] },
  'mta-sts.expired.test': { A: [IP.expired] },
  'mta-sts.wrong.test': { A: [IP.wrong] },
  'mta-sts.self.test': { A: [IP.self] },
  'mta-sts.twoaddr.test': { A: [IP.dead, IP.good] },
  'mta-sts.noaddr.test': { TXT: ['x'] },
});
const fetch = (d: string, extra = {}) => fetchStsPolicy(d, { resolver: dns, trust, ...extra });

before(async () => {
  dir = tempDir('pc-sts-fetch-');
  pki = await makePki(dir, 'Sts');
  trust = new TrustStore(false, [pki.rootFile]);
  const good = await pki.issue('mta-sts.fabrikam.test', {
    dnsNames: ['mta-sts.fabrikam.test', 'mta-sts.twoaddr.test'],
  });
  const expired = await pki.issue('mta-sts.expired.test', {
    notBefore: new Date(Date.now() - 20 * 86_400_000),
    notAfter: new Date(Date.now() - 86_400_000),
  });
  const wrong = await pki.issue('www.wrong.test');
  const selfIssued = await issueCertificate({
    subject: 'CN=mta-sts.self.test',
    dnsNames: ['mta-sts.self.test'],
    key: 'ec256',
  });
  const { writeFileSync } = await import('node:fs');
  writeFileSync(`${dir}/self.pem`, selfIssued.certPem);
  writeFileSync(`${dir}/self.key`, selfIssued.keyPem);
  servers.good = await startStsServer(IP.good, good, POLICY);
  servers.expired = await startStsServer(IP.expired, expired, POLICY);
  servers.wrong = await startStsServer(IP.wrong, wrong, POLICY);
  servers.self = await startStsServer(IP.self, { cert: `${dir}/self.pem`, key: `${dir}/self.key` }, POLICY);
});

after(async () => {
  for (const s of Object.values(servers)) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

test('a valid certificate for mta-sts.<domain>: the policy, fetched from the path of the RFC with the Host header', async () => {
  servers.good.answer = POLICY;
  const r = await fetch('fabrikam.test');
  assert.equal(r.ok, true, JSON.stringify(r));
  if (!r.ok) return;
  assert.deepEqual(r.policy, { mode: 'enforce', mx: ['mx1.fabrikam.test'], maxAge: 86400 });
  assert.equal(r.url, 'https://mta-sts.fabrikam.test/.well-known/mta-sts.txt');
  assert.deepEqual(servers.good.requests.at(-1), { path: '/.well-known/mta-sts.txt', host: 'mta-sts.fabrikam.test' });
});

test('certificates that are not WebPKI-valid for mta-sts.<domain>: sts-webpki-invalid, nothing requested', async () => {
  for (const [domain, server, why] of [
    ['expired.test', 'expired', /certificate of mta-sts\.expired\.test not valid: .*CERT_HAS_EXPIRED/],
    ['wrong.test', 'wrong', /certificate of mta-sts\.wrong\.test not valid: .*ERR_TLS_CERT_ALTNAME_INVALID/],
    ['self.test', 'self', /certificate of mta-sts\.self\.test not valid: .*SELF_SIGNED/],
  ] as const) {
    const r = await fetch(domain);
    assert.equal(r.ok, false, domain);
    if (r.ok) continue;
    assert.equal(r.failure, 'sts-webpki-invalid', `${domain}: ${r.error}`);
    assert.match(r.error, why);
    assert.equal(servers[server].requests.length, 0, `${domain}: no HTTP request over an unverified connection`);
  }
  // The same server is fine once its CA is trusted... and the system roots alone do not do it.
  const r = await fetchStsPolicy('fabrikam.test', { resolver: dns, trust: new TrustStore(true, []) });
  assert.equal(!r.ok && r.failure, 'sts-webpki-invalid');
});

test('redirects are refused (§3.3), whatever the target', async () => {
  servers.good.answer = { status: 301, location: 'https://mta-sts.fabrikam.test/elsewhere.txt' };
  const r = await fetch('fabrikam.test');
  assert.equal(!r.ok && r.failure, 'sts-policy-fetch-error');
  assert.match(
    !r.ok ? r.error : '',
    /redirect refused: HTTP 301 to https:\/\/mta-sts\.fabrikam\.test\/elsewhere\.txt \(RFC 8461 §3\.3: redirects are not followed\)/,
  );
  assert.equal(servers.good.requests.filter((q) => q.path !== '/.well-known/mta-sts.txt').length, 0);
});

test('HTTP status, media type, size cap and syntax', async () => {
  const cases: [Parameters<typeof startStsServer>[2], string, RegExp][] = [
    [{ status: 404, body: 'no' }, 'sts-policy-fetch-error', /HTTP 404/],
    [{ type: 'text/html', body: POLICY }, 'sts-policy-invalid', /media type "text\/html" is not text\/plain/],
    [{ body: Buffer.alloc(MAX_POLICY_BYTES + 1, 'a') }, 'sts-policy-fetch-error', /larger than 65536/],
    [
      { body: 'version: STSv1\nmode: enforce\nmax_age: 5\n' },
      'sts-policy-invalid',
      /policy not valid: mode enforce needs at least one mx/,
    ],
  ];
  for (const [answer, failure, why] of cases) {
    servers.good.answer = answer;
    const r = await fetch('fabrikam.test');
    assert.equal(!r.ok && r.failure, failure, JSON.stringify(r));
    assert.match(!r.ok ? r.error : '', why);
  }
  servers.good.answer = { type: 'text/plain; charset=utf-8', body: POLICY };
  assert.equal((await fetch('fabrikam.test')).ok, true);
});

test('a server that never answers: the fetch gives up in time', async () => {
  servers.good.answer = { hang: true };
  const t0 = Date.now();
  const r = await fetch('fabrikam.test', { totalTimeoutMs: 800 });
  assert.equal(!r.ok && r.failure, 'sts-policy-fetch-error');
  assert.match(!r.ok ? r.error : '', /no complete answer within 1 s/);
  assert.ok(Date.now() - t0 < 3000);
  servers.good.answer = POLICY;
});

test('addresses: the next one after a refused connection; no address is a fetch error', async () => {
  servers.good.answer = POLICY;
  const r = await fetch('twoaddr.test');
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.ok && r.ip, IP.good);
  const none = await fetch('noaddr.test');
  assert.equal(!none.ok && none.failure, 'sts-policy-fetch-error');
  assert.match(!none.ok ? none.error : '', /address lookup for mta-sts\.noaddr\.test failed/);
  const nx = await fetch('nowhere.test');
  assert.match(
    !nx.ok ? nx.error : '',
    /address lookup for mta-sts\.nowhere\.test failed: DNS A mta-sts\.nowhere\.test: nxdomain/,
  );
});
