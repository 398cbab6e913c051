// `portcullis tls check DOMAIN` shows the domain's TLS-RPT record (RFC 8460 §3), looked up through
// dns.servers (the loopback test DNS server): where reports go, that none is published, why a
// record is not usable, or that the lookup failed; in text and in --json (on each host). The MX
// host is a loopback peer with STARTTLS.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { asRoot, defaultOrgs, freePort, runCli, tempDir } from '../helpers/gateway.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { makePki } from '../helpers/pki.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';

const HOST = '127.0.0.91';
const MX = '127.0.0.92';

let dir: string;
let dns: DnsServer;
let peer: Peer;
let cfg: string;

before(async () => {
  dir = tempDir('pc-tlsrpt-check-');
  const port = await freePort(MX);
  const pki = await makePki(dir, 'Rpt');
  const c = await pki.issue('mx.rpt.test');
  peer = await startPeer({
    host: MX,
    port,
    name: 'mx.rpt.test',
    tls: { cert: readFileSync(c.chain, 'utf8'), key: readFileSync(c.key, 'utf8') },
  });
  const mx = { MX: [{ exchange: 'mx.rpt.test', priority: 10 }] };
  dns = await startDnsServer(
    {
      'mx.rpt.test': { A: [MX] },
      'good.test': mx,
      '_smtp._tls.good.test': {
        TXT: ['v=TLSRPTv1; rua=mailto:tlsrpt@good.test,https://reports.good.test/v1', 'unrelated text'],
      },
      'none.test': mx,
      'two.test': mx,
      '_smtp._tls.two.test': {
        TXT: ['v=TLSRPTv1; rua=mailto:a@two.test', 'v=TLSRPTv1; rua=mailto:b@two.test'],
      },
      'norua.test': mx,
      '_smtp._tls.norua.test': { TXT: ['v=TLSRPTv1; rua=ftp://reports.norua.test/'] },
      'broken.test': mx,
      '_smtp._tls.broken.test': { fail: 'SERVFAIL' },
    },
    HOST,
  );
  cfg = path.join(dir, 'portcullis.yaml');
  writeFileSync(
    cfg,
    YAML.stringify({
      ...asRoot(),
      hostname: 'gw.contoso.test',
      dataDir: path.join(dir, 'data'),
      organizations: defaultOrgs,
      admin: { enabled: false },
      dns: { servers: [dns.server] },
      delivery: { port, timeouts: { connect: 5, greeting: 10, command: 10 } },
      tls: { trust: { system: false, caFiles: [pki.rootFile] } },
    }),
  );
});

after(async () => {
  await peer?.close();
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

const check = (domain: string, json = false) =>
  runCli(['tls', 'check', domain, '-c', cfg, '--level', 'encryptionOnly', ...(json ? ['--json'] : [])]);

test('a published record: its rua destinations, in text and --json', async () => {
  const [text, json] = await Promise.all([check('good.test'), check('good.test', true)]);
  assert.equal(text.code, 0, text.stdout + text.stderr);
  assert.match(
    text.stdout,
    /^TLS-RPT \(RFC 8460\) for good\.test:\n {2}TXT _smtp\._tls\.good\.test: v=TLSRPTv1; rua=mailto:tlsrpt@good\.test,https:\/\/reports\.good\.test\/v1\n {2}reports go to: mailto:tlsrpt@good\.test, https:\/\/reports\.good\.test\/v1$/m,
  );
  const [h] = JSON.parse(json.stdout) as { host: string; tlsRpt: unknown }[];
  assert.equal(h.host, 'mx.rpt.test');
  assert.deepEqual(h.tlsRpt, {
    domain: 'good.test',
    name: '_smtp._tls.good.test',
    status: 'published',
    record: 'v=TLSRPTv1; rua=mailto:tlsrpt@good.test,https://reports.good.test/v1',
    rua: ['mailto:tlsrpt@good.test', 'https://reports.good.test/v1'],
  });
});

test('none published, two records, no usable rua, a failed lookup: each says so', async () => {
  const [none, two, norua, broken, brokenJson] = await Promise.all([
    check('none.test'),
    check('two.test'),
    check('norua.test'),
    check('broken.test'),
    check('broken.test', true),
  ]);
  assert.match(
    none.stdout,
    /^ {2}TXT _smtp\._tls\.none\.test: none published \(senders send none\.test no TLS reports\)$/m,
  );
  assert.match(
    two.stdout,
    /^ {2}NOT usable: 2 v=TLSRPTv1 records \(RFC 8460 §3: exactly one\); senders send two\.test no TLS reports$/m,
  );
  assert.match(two.stdout, /^ {2}TXT _smtp\._tls\.two\.test: v=TLSRPTv1; rua=mailto:b@two\.test$/m);
  assert.match(norua.stdout, /^ {2}NOT usable: no usable rua \(mailto: or https:\) in the record;/m);
  assert.match(
    broken.stdout,
    /^ {2}TXT _smtp\._tls\.broken\.test: lookup FAILED \(DNS TXT _smtp\._tls\.broken\.test: servfail/m,
  );
  const [b] = JSON.parse(brokenJson.stdout) as { tlsRpt: { status: string } }[];
  assert.equal(b.tlsRpt.status, 'lookup-failed');
  // The MX host itself is fine: TLS-RPT problems do not fail the check.
  for (const r of [none, two, norua, broken]) assert.equal(r.code, 0, r.stdout + r.stderr);
});
