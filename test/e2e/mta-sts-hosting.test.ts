// MTA-STS hosting (mtaSts.hosting): the real gateway serves the policy of each accepted domain on
// 127.0.8.41:443, with the certificate of tls.certificates that covers mta-sts.<domain> (SNI), and
// `portcullis mta-sts records` prints the records to publish, with the id derived from the policy.
// Our own MTA-STS client (src/mtasts/fetch.ts) fetches and validates what is served; a reload
// changes the policy and its id without a restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, X509Certificate } from 'node:crypto';
import https from 'node:https';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import tls from 'node:tls';
import YAML from 'yaml';
import { fetchStsPolicy } from '../../src/mtasts/fetch.ts';
import { TrustStore } from '../../src/tls/trust.ts';
import { FakeResolver } from '../helpers/fake-resolver.ts';
import { cleanup, runCli, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { makePki, type Pki } from '../helpers/pki.ts';

const IP = '127.0.8.41';
let dir: string;
let gw: GatewayHandle;
let pki: Pki;
let config: Record<string, unknown>;
const dns = new FakeResolver({
  'mta-sts.contoso.test': { A: [IP] },
  'mta-sts.northwind.test': { A: [IP] },
  'mta-sts.nocert.test': { A: [IP] },
});
let trust: TrustStore;

before(async () => {
  dir = tempDir('pc-mtasts-host-');
  pki = await makePki(dir, 'Host');
  trust = new TrustStore(false, [pki.rootFile]);
  const mx = await pki.issue('mx1.contoso.test');
  const sts = await pki.issue('mta-sts.contoso.test', { dnsNames: ['mta-sts.contoso.test', 'mta-sts.northwind.test'] });
  config = {
    tls: {
      certificates: [
        { cert: mx.cert, key: mx.key },
        { cert: sts.cert, key: sts.key },
      ],
      trust: { system: false, caFiles: [pki.rootFile] },
    },
    mtaSts: {
      hosting: {
        listen: [`${IP}:443`],
        mode: 'enforce',
        mx: ['mx1.contoso.test', '*.mx.contoso.test'],
        maxAgeSeconds: 86400,
      },
    },
    organizations: [
      {
        name: 'contoso',
        acceptedDomains: [{ domain: 'contoso.test' }, { domain: 'northwind.test' }, { domain: 'nocert.test' }],
      },
    ],
  };
  gw = await startGateway({ dir, config });
});

after(async () => {
  await cleanup(gw);
  rmSync(dir, { recursive: true, force: true });
});

const POLICY = 'version: STSv1\r\nmode: enforce\r\nmx: mx1.contoso.test\r\nmx: *.mx.contoso.test\r\nmax_age: 86400\r\n';

function get(
  host: string,
  path = '/.well-known/mta-sts.txt',
  method = 'GET',
): Promise<{ status: number; type: string; body: string; cert: X509Certificate }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: IP,
        port: 443,
        servername: host,
        path,
        method,
        headers: { host },
        ca: readFileSync(pki.rootFile),
        agent: false,
        checkServerIdentity: () => undefined,
      },
      (res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () =>
          resolve({
            status: res.statusCode!,
            type: String(res.headers['content-type']),
            body,
            cert: new X509Certificate((res.socket as tls.TLSSocket).getPeerCertificate().raw),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

test('the policy of each accepted domain, fetched and validated by an MTA-STS client', async () => {
  for (const d of ['contoso.test', 'northwind.test']) {
    const r = await fetchStsPolicy(d, { resolver: dns, trust });
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.ok && r.text, POLICY);
    assert.deepEqual(r.ok && r.policy, {
      mode: 'enforce',
      mx: ['mx1.contoso.test', '*.mx.contoso.test'],
      maxAge: 86400,
    });
  }
});

test('the certificate is chosen by SNI: the one covering mta-sts.<domain>, else the first', async () => {
  const a = await get('mta-sts.contoso.test');
  assert.equal(a.status, 200);
  assert.match(a.type, /^text\/plain/);
  assert.ok(a.cert.checkHost('mta-sts.contoso.test'), a.cert.subject);
  const b = await get('mta-sts.nocert.test');
  assert.equal(b.status, 200, 'served, but with the default certificate');
  assert.ok(b.cert.checkHost('mx1.contoso.test'));
  const r = await fetchStsPolicy('nocert.test', { resolver: dns, trust });
  assert.equal(!r.ok && r.failure, 'sts-webpki-invalid', 'and a client refuses it');
});

test('anything else: 404 for other hosts and paths, 405 for other methods', async () => {
  assert.equal((await get('mta-sts.other.test')).status, 404);
  assert.equal((await get('www.contoso.test')).status, 404);
  assert.equal((await get('mta-sts.contoso.test', '/')).status, 404);
  assert.equal((await get('mta-sts.contoso.test', '/.well-known/mta-sts.txt', 'POST')).status, 405);
  const head = await get('mta-sts.contoso.test', '/.well-known/mta-sts.txt', 'HEAD');
  assert.equal(head.status, 200);
  assert.equal(head.body, '');
});

test('`mta-sts records`: the TXT records with the id derived from the policy, and which names lack a certificate', async () => {
  const id = createHash('sha256').update(POLICY).digest('hex').slice(0, 20);
  const r = await gw.cli(['mta-sts', 'records']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`_mta-sts\\.contoso\\.test\\.\\s+IN TXT "v=STSv1; id=${id}"`));
  assert.match(r.stdout, /_smtp\._tls\.contoso\.test\.\s+IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@contoso\.test"/);
  assert.match(r.stdout, /tls\.certificates\[1\] \(.*\) covers mta-sts\.northwind\.test/);
  assert.match(r.stdout, /WARNING no certificate in tls\.certificates covers mta-sts\.nocert\.test/);
  assert.match(r.stdout, /mode enforce: every MX host/);
  const j = await gw.cli([
    'mta-sts',
    'records',
    '--json',
    '--rua',
    'mailto:reports@contoso.test',
    'https://tlsrpt.contoso.test/v1',
  ]);
  assert.equal(j.code, 0, j.stderr);
  const out = JSON.parse(j.stdout) as {
    id: string;
    policy: string;
    domains: { domain: string; stsTxt: string; tlsRptTxt: string; certificate: { index: number } | null }[];
  };
  assert.equal(out.id, id);
  assert.equal(out.policy, POLICY);
  assert.deepEqual(
    out.domains.map((d) => [d.domain, d.certificate?.index ?? null]),
    [
      ['contoso.test', 1],
      ['northwind.test', 1],
      ['nocert.test', null],
    ],
  );
  assert.equal(out.domains[0].tlsRptTxt, 'v=TLSRPTv1; rua=mailto:reports@contoso.test,https://tlsrpt.contoso.test/v1');
  const bad = await gw.cli(['mta-sts', 'records', '--rua', 'ftp://x']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--rua "ftp:\/\/x" is not a mailto: or https: URI/);
});

test('a reload changes the policy and its id; without hosting the command says what to configure', async () => {
  const before = JSON.parse((await gw.cli(['mta-sts', 'records', '--json'])).stdout) as { id: string };
  gw.writeConfig({
    ...config,
    mtaSts: { hosting: { ...(config.mtaSts as { hosting: object }).hosting, mode: 'testing' } },
  });
  const rl = await gw.cli(['config', 'reload']);
  assert.equal(rl.code, 0, rl.stderr + rl.stdout);
  const r = await fetchStsPolicy('contoso.test', { resolver: dns, trust });
  assert.equal(r.ok && r.policy.mode, 'testing');
  const after = JSON.parse((await gw.cli(['mta-sts', 'records', '--json'])).stdout) as { id: string; policy: string };
  assert.notEqual(after.id, before.id);
  assert.equal(
    after.id,
    createHash('sha256')
      .update(r.ok ? r.text : '')
      .digest('hex')
      .slice(0, 20),
  );
  writeFileSync(
    `${dir}/none.yaml`,
    YAML.stringify({ hostname: 'mx1.contoso.test', dataDir: `${dir}/none`, organizations: config.organizations }),
  );
  const none = await runCli(['mta-sts', 'records', '-c', `${dir}/none.yaml`]);
  assert.equal(none.code, 2);
  assert.match(
    none.stderr,
    /mtaSts\.hosting is not configured: this server serves no MTA-STS policy\n\s+fix: set mtaSts\.hosting/,
  );
});
