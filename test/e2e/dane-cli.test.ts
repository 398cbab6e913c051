// `portcullis dane tlsa` and `portcullis dane check DOMAIN` against the NSD+Unbound rig: the
// records printed are the ones a certificate and its staged successor (tls.certificates[].next,
// or --next FILE) need; the check reads the published TLSA records through dns.servers and says
// whether the current and the staged certificates match, naming the record to publish when the
// staged one does not. Needs root and nsd, unbound, ldnsutils.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { tlsaRecord } from '../../src/tls/dane.ts';
import { startDnssecRig, type DnssecRig, type Rrs } from '../helpers/dnssec.ts';
import { runCli, tempDir } from '../helpers/gateway.ts';
import { makePki, type Pki } from '../helpers/pki.ts';

let dir: string;
let rig: DnssecRig;
let pki: Pki;
let configFile: string;
let cur: { chain: string; key: string; x: X509Certificate };
let next: { chain: string; key: string; x: X509Certificate };
let ca: X509Certificate;
const hex = (c: X509Certificate, usage: number) => tlsaRecord(c, usage, 1, 1).data.toString('hex');

const zone = (tlsa: Rrs['TLSA']): Record<string, Rrs> => ({
  'contoso.test': { MX: [{ exchange: 'mx1.contoso.test', priority: 10 }] },
  'mx1.contoso.test': { A: ['127.0.0.1'] },
  '_25._tcp.mx1.contoso.test': { TLSA: tlsa },
});

before(async () => {
  dir = tempDir('pc-dane-cli-');
  pki = await makePki(dir, 'Contoso');
  const issue = async (name: string, file: string) => {
    const c = await pki.issue(name, { key: 'ec256' });
    const chain = path.join(dir, file);
    writeFileSync(chain, readFileSync(c.chain));
    return { chain, key: c.key, x: new X509Certificate(c.issued.certPem) };
  };
  cur = await issue('mx1.contoso.test', 'current.pem');
  next = await issue('mx1.contoso.test', 'next.pem');
  ca = new X509Certificate(pki.intermediate.certPem);
  rig = await startDnssecRig({
    base: path.join(dir, 'dns'),
    zones: { 'contoso.test': 'secure' },
    records: zone([tlsaRecord(cur.x, 3, 1, 1)]),
  });
  configFile = path.join(dir, 'portcullis.yaml');
  writeFileSync(
    configFile,
    YAML.stringify({
      hostname: 'mx1.contoso.test',
      dataDir: path.join(dir, 'data'),
      runAs: 'root',
      dns: { servers: [rig.server] },
      tls: { certificates: [{ cert: cur.chain, key: cur.key, next: { cert: next.chain, key: next.key } }] },
      organizations: [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }],
    }),
  );
});

after(async () => {
  await rig?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const cli = (...args: string[]) => runCli([...args, '-c', configFile]);

test('dane tlsa prints 3 1 1 for the current and the staged key and 2 1 1 for the issuing CA, at _25._tcp.<mx host>', async () => {
  const r = await cli('dane', 'tlsa', '--json');
  assert.equal(r.code, 0, r.stderr);
  const [c] = JSON.parse(r.stdout) as {
    hosts: string[];
    records: { owner: string; usage: number; selector: number; matchingType: number; data: string; role: string }[];
  }[];
  assert.deepEqual(c.hosts, ['mx1.contoso.test']);
  assert.deepEqual(
    c.records.map((x) => [x.owner, `${x.usage} ${x.selector} ${x.matchingType}`, x.data, x.role]),
    [
      ['_25._tcp.mx1.contoso.test', '3 1 1', hex(cur.x, 3), 'current'],
      ['_25._tcp.mx1.contoso.test', '3 1 1', hex(next.x, 3), 'next'],
      ['_25._tcp.mx1.contoso.test', '2 1 1', hex(ca, 2), 'issuer'],
    ],
  );
  const text = await cli('dane', 'tlsa');
  assert.match(
    text.stdout,
    new RegExp(
      `^  _25\\._tcp\\.mx1\\.contoso\\.test\\. IN TLSA 3 1 1 ${hex(cur.x, 3)}  ; current key: CN=mx1\\.contoso\\.test`,
      'm',
    ),
  );
  assert.match(text.stdout, new RegExp(`IN TLSA 3 1 1 ${hex(next.x, 3)}  ; staged next key`));
  assert.match(text.stdout, new RegExp(`IN TLSA 2 1 1 ${hex(ca, 2)}  ; issuing CA: CN=Contoso Issuing CA`));
  // The same certificate through --next instead of the configuration.
  const flag = await cli('dane', 'tlsa', '--next', next.chain, '--json');
  assert.equal(JSON.parse(flag.stdout)[0].records[1].data, hex(next.x, 3));
});

test('dane check: the current certificate matches, the staged one does not (the record to publish is named), exit 1; then both match, exit 0', async () => {
  const r = await cli('dane', 'check', 'contoso.test');
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /^contoso\.test: MX mx1\.contoso\.test, DNSSEC secure$/m);
  assert.match(r.stdout, /mx1\.contoso\.test: TLSA at _25\._tcp\.mx1\.contoso\.test \(DNSSEC secure\)/);
  assert.match(r.stdout, /current certificate .*current\.pem: MATCHES \(TLSA 3 1 1 matches CN=mx1\.contoso\.test/);
  assert.match(r.stdout, /staged certificate .*next\.pem: does NOT match/);
  assert.match(
    r.stdout,
    new RegExp(
      `problem: the staged certificate \\(.*next\\.pem\\) matches none of the records: publish _25\\._tcp\\.mx1\\.contoso\\.test\\. IN TLSA 3 1 1 ${hex(next.x, 3)} before the rotation`,
    ),
  );
  assert.match(r.stdout, /NOT OK/);

  await rig.update({ records: zone([tlsaRecord(cur.x, 3, 1, 1), tlsaRecord(next.x, 3, 1, 1)]) });
  const ok = await cli('dane', 'check', 'contoso.test', '--json');
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  const j = JSON.parse(ok.stdout) as {
    ok: boolean;
    hosts: { dnssec: string; current: { matches: boolean }; next: { matches: boolean }; problems: string[] }[];
  };
  assert.equal(j.ok, true);
  assert.deepEqual(
    [j.hosts[0].dnssec, j.hosts[0].current.matches, j.hosts[0].next.matches, j.hosts[0].problems],
    ['secure', true, true, []],
  );

  // A 2 1 1 of the issuing CA covers both (DANE-TA with the name check).
  await rig.update({ records: zone([tlsaRecord(ca, 2, 1, 1)]) });
  const ta = await cli('dane', 'check', 'contoso.test');
  assert.equal(ta.code, 0, ta.stdout);
  assert.match(ta.stdout, /current certificate .*: MATCHES \(TLSA 2 1 1 trust anchor/);
});

test('dane check: a domain whose TLSA lookup fails says that DANE senders defer, exit 1', async () => {
  await rig.update({
    records: zone([tlsaRecord(cur.x, 3, 1, 1)]),
    forged: { '_25._tcp.mx1.contoso.test': { TLSA: [tlsaRecord(next.x, 3, 1, 1)] } },
  });
  const r = await cli('dane', 'check', 'contoso.test');
  assert.equal(r.code, 1, r.stdout);
  assert.match(r.stdout, /\(DNSSEC bogus\): none/);
  assert.match(
    r.stdout,
    /problem: the TLSA lookup at _25\._tcp\.mx1\.contoso\.test failed \(DNS TLSA _25\._tcp\.mx1\.contoso\.test: bogus .*\): DANE senders defer mail to this host/,
  );
});
