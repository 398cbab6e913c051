// DNSSEC status of answers, against real components: NSD serving signed zones and Unbound
// validating them (test/helpers/dnssec.ts). Needs root and nsd, unbound, ldnsutils.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as dnsPacket from 'dns-packet';
import { DnsResolver, extendedErrors } from '../../../src/dns/resolver.ts';
import { DnsError } from '../../../src/dns/types.ts';
import { classifyFailure } from '../../../src/delivery/classify.ts';
import { startDnssecRig, type DnssecRig } from '../../helpers/dnssec.ts';

const TLSA = { usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(32, 0xab) };
let rig: DnssecRig;
let base: string;

before(async () => {
  base = mkdtempSync(path.join(os.tmpdir(), 'pc-dnssec-'));
  rig = await startDnssecRig({
    base,
    zones: {
      'fabrikam.test': 'secure',
      'contoso.test': 'insecure',
      'expired.test': 'expired',
      'stripped.test': 'stripped',
      'dead.test': 'dead',
      'forged.test': 'secure',
      // Zones inside a secure zone: the TLSA lookup alone fails, or is insecure.
      '_tcp.mx3.fabrikam.test': 'dead',
      '_tcp.mx4.fabrikam.test': 'insecure',
    },
    records: {
      'fabrikam.test': { MX: [{ exchange: 'mx.fabrikam.test', priority: 10 }], TXT: ['v=STSv1; id=20260101'] },
      'mx.fabrikam.test': { A: ['127.0.0.5'] },
      '_25._tcp.mx.fabrikam.test': { TLSA: [TLSA] },
      'mx3.fabrikam.test': { A: ['127.0.0.3'] },
      'mx4.fabrikam.test': { A: ['127.0.0.4'] },
      '_25._tcp.mx4.fabrikam.test': { TLSA: [TLSA] },
      'alias.fabrikam.test': { CNAME: 'mx.fabrikam.test' },
      'out.fabrikam.test': { CNAME: 'mx.contoso.test' },
      'dangling.fabrikam.test': { CNAME: 'nowhere.fabrikam.test' },
      'contoso.test': { MX: [{ exchange: 'mx.contoso.test', priority: 10 }] },
      'mx.contoso.test': { A: ['127.0.0.6'], AAAA: ['::1'] },
      'in.contoso.test': { CNAME: 'mx.fabrikam.test' },
      'mx.expired.test': { A: ['127.0.0.7'] },
      'mx.stripped.test': { A: ['127.0.0.7'] },
      'forged.test': { MX: [{ exchange: 'mx.forged.test', priority: 10 }] },
      'mx.forged.test': { A: ['127.0.0.8'] },
      '_25._tcp.mx.forged.test': { TLSA: [TLSA] },
    },
    forged: {
      'mx.forged.test': { A: ['127.0.0.66'] },
      '_25._tcp.mx.forged.test': { TLSA: [{ ...TLSA, data: Buffer.alloc(32, 0xcd) }] },
    },
  });
});
after(async () => {
  await rig?.stop();
  rmSync(base, { recursive: true, force: true });
});

const resolver = (o: ConstructorParameters<typeof DnsResolver>[1] = {}) =>
  new DnsResolver([rig.server], { timeoutMs: 2000, ...o });
const failure = (p: Promise<unknown>) =>
  p.then(
    () => assert.fail('expected a DnsError'),
    (e: unknown) => {
      assert.ok(e instanceof DnsError, String(e));
      return e;
    },
  );

test('a signed zone with a DS in its parent gives secure answers', async () => {
  const r = resolver();
  const mx = await r.mx('fabrikam.test');
  assert.deepEqual(mx.records, [{ exchange: 'mx.fabrikam.test', priority: 10 }]);
  assert.equal(mx.status, 'secure');
  assert.equal(mx.authenticated, true);
  assert.deepEqual(mx.names, ['fabrikam.test']);
  const tlsa = await r.tlsa('_25._tcp.mx.fabrikam.test');
  assert.equal(tlsa.status, 'secure');
  assert.deepEqual(tlsa.records, [TLSA]);
  assert.equal((await r.txt('fabrikam.test')).status, 'secure');
  // A present, AAAA securely denied: the address set is secure.
  const a = await r.addresses('mx.fabrikam.test');
  assert.deepEqual([a.records, a.status, a.failures], [['127.0.0.5'], 'secure', []]);
});

test('an unsigned zone without a DS gives insecure answers', async () => {
  const r = resolver();
  const mx = await r.mx('contoso.test');
  assert.deepEqual([mx.status, mx.authenticated], ['insecure', false]);
  const a = await r.addresses('mx.contoso.test');
  assert.deepEqual([a.records.sort(), a.status], [['127.0.0.6', '::1'], 'insecure']);
});

test('forged data in a signed zone is bogus, named by the Extended DNS Error, never "no record"', async () => {
  const r = resolver();
  const e = await failure(r.tlsa('_25._tcp.mx.forged.test'));
  assert.equal(e.kind, 'bogus');
  assert.equal(e.temporary, true);
  assert.equal(e.secure, false);
  assert.equal(e.ede[0]?.code, 6);
  assert.equal(e.ede[0]?.name, 'DNSSEC Bogus');
  assert.match(
    e.message,
    /^DNS TLSA _25\._tcp\.mx\.forged\.test: bogus \(127\.0\.53\.2:\d+: EDE 6 DNSSEC Bogus: validation failure <_25\._tcp\.mx\.forged\.test\. TLSA IN>: signature crypto failed/,
  );
  const a = await failure(r.addresses('mx.forged.test'));
  assert.equal(a.kind, 'bogus');
  // The delivery classifier defers on it (a bogus MX or address is not "domain has no mail server").
  assert.equal(classifyFailure({ kind: 'dns', dnsKind: a.kind, detail: a.message }).status, 'deferred');
});

test('expired signatures and a DS without signatures are bogus with their own reason', async () => {
  const r = resolver();
  const expired = await failure(r.addresses('mx.expired.test'));
  assert.equal(expired.kind, 'bogus');
  assert.equal(expired.ede[0]?.name, 'Signature Expired');
  assert.match(
    expired.message,
    /EDE 7 Signature Expired: validation failure <mx\.expired\.test\. A IN>: signature expired/,
  );
  const stripped = await failure(r.mx('stripped.test'));
  assert.equal(stripped.kind, 'bogus');
  assert.match(stripped.message, /EDE 9 DNSKEY Missing/);
});

test('a zone whose server fails is servfail (no DNSSEC reason), temporary, never "no record"', async () => {
  const e = await failure(resolver({ attempts: 1 }).tlsa('_25._tcp.mx.dead.test'));
  assert.equal(e.kind, 'servfail');
  assert.equal(e.temporary, true);
  assert.deepEqual(
    e.ede.filter((x) => [6, 7, 9, 10].includes(x.code)),
    [],
  );
});

test('a secure host whose TLSA zone fails or is unsigned: servfail, insecure', async () => {
  const r = resolver({ attempts: 1 });
  assert.equal((await r.addresses('mx3.fabrikam.test')).status, 'secure');
  assert.equal((await failure(r.tlsa('_25._tcp.mx3.fabrikam.test'))).kind, 'servfail');
  assert.equal((await r.addresses('mx4.fabrikam.test')).status, 'secure');
  const tlsa = await r.tlsa('_25._tcp.mx4.fabrikam.test');
  assert.deepEqual([tlsa.status, tlsa.records], ['insecure', [TLSA]]);
});

test('negative answers carry their DNSSEC status: secure NODATA and NXDOMAIN, insecure ones', async () => {
  const r = resolver();
  const nodata = await failure(r.tlsa('_25._tcp.fabrikam.test'));
  assert.deepEqual([nodata.kind, nodata.secure, nodata.status], ['nxdomain', true, 'secure']);
  const noTlsa = await failure(r.tlsa('mx.fabrikam.test'));
  assert.deepEqual([noTlsa.kind, noTlsa.secure, noTlsa.temporary], ['nodata', true, false]);
  const nx = await failure(r.mx('nowhere.fabrikam.test'));
  assert.deepEqual([nx.kind, nx.secure], ['nxdomain', true]);
  const insecureNx = await failure(r.tlsa('_25._tcp.mx.contoso.test'));
  assert.deepEqual([insecureNx.kind, insecureNx.secure, insecureNx.status], ['nxdomain', false, 'insecure']);
  const insecureNodata = await failure(r.mx('mx.contoso.test'));
  assert.deepEqual([insecureNodata.kind, insecureNodata.secure], ['nodata', false]);
});

test('CNAME chains: secure only when every link is, with the chain of names exposed', async () => {
  const r = resolver();
  const both = await r.addresses('alias.fabrikam.test');
  assert.deepEqual(
    [both.records, both.status, both.names],
    [['127.0.0.5'], 'secure', ['alias.fabrikam.test', 'mx.fabrikam.test']],
  );
  const out = await r.lookup('out.fabrikam.test', 'A');
  assert.deepEqual([out.status, out.names], ['insecure', ['out.fabrikam.test', 'mx.contoso.test']]);
  const into = await r.lookup('in.contoso.test', 'A');
  assert.deepEqual([into.status, into.names], ['insecure', ['in.contoso.test', 'mx.fabrikam.test']]);
  // A secure chain that ends in a secure denial is a secure denial; the names show where it ended.
  const nodata = await failure(r.lookup('alias.fabrikam.test', 'TLSA'));
  assert.deepEqual(
    [nodata.kind, nodata.secure, nodata.names],
    ['nodata', true, ['alias.fabrikam.test', 'mx.fabrikam.test']],
  );
  const nx = await failure(r.lookup('dangling.fabrikam.test', 'A'));
  assert.deepEqual(
    [nx.kind, nx.secure, nx.names],
    ['nxdomain', true, ['dangling.fabrikam.test', 'nowhere.fabrikam.test']],
  );
  const mixedDenial = await failure(r.lookup('out.fabrikam.test', 'TLSA'));
  assert.deepEqual([mixedDenial.kind, mixedDenial.secure], ['nodata', false]);
});

test('dns.dnssec false: every answer and denial is insecure; bogus data still fails', async () => {
  const r = resolver({ dnssec: false });
  assert.equal(r.dnssec, false);
  assert.equal((await r.mx('fabrikam.test')).status, 'insecure');
  assert.equal((await r.tlsa('_25._tcp.mx.fabrikam.test')).authenticated, false);
  const nodata = await failure(r.tlsa('mx.fabrikam.test'));
  assert.deepEqual([nodata.kind, nodata.secure], ['nodata', false]);
  assert.equal((await failure(r.addresses('mx.forged.test'))).kind, 'bogus');
});

test('the AD bit is trusted from dns.servers, and from /etc/resolv.conf only on loopback', () => {
  assert.deepEqual(
    new DnsResolver(['192.0.2.53', '127.0.0.1:5353']).upstreams.map((u) => u.trustAd),
    [true, true],
  );
  assert.deepEqual(
    new DnsResolver(['127.0.0.1'], { dnssec: false }).upstreams.map((u) => u.trustAd),
    [false],
  );
  const conf = path.join(base, 'resolv.conf');
  writeFileSync(conf, 'nameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver ::1\nnameserver 2001:db8::53\n');
  assert.deepEqual(
    new DnsResolver([], { resolvConf: conf }).upstreams.map((u) => [u.host, u.trustAd]),
    [
      ['127.0.0.53', true],
      ['192.0.2.53', false],
      ['::1', true],
      ['2001:db8::53', false],
    ],
  );
});

test('Unbound only ever talked to the test authority (nothing beyond loopback)', async () => {
  const r = resolver({ attempts: 1 });
  await failure(r.lookup('example.com', 'A'));
  const ups = await rig.upstreams();
  assert.ok(ups.length > 0);
  assert.deepEqual([...new Set(ups)], [rig.authority.replace(':', '@')]);
});

test('update re-signs with the same keys and Unbound sees the new data', async () => {
  await rig.update({
    records: {
      'fabrikam.test': { MX: [{ exchange: 'mx2.fabrikam.test', priority: 5 }] },
      'mx2.fabrikam.test': { A: ['127.0.0.9'] },
      'mx.forged.test': { A: ['127.0.0.8'] },
    },
    forged: {},
  });
  const r = resolver();
  const mx = await r.mx('fabrikam.test');
  assert.deepEqual([mx.records, mx.status], [[{ exchange: 'mx2.fabrikam.test', priority: 5 }], 'secure']);
  assert.deepEqual((await r.addresses('mx.forged.test')).records, ['127.0.0.8'], 'forgery removed');
  assert.equal((await failure(r.addresses('mx.fabrikam.test'))).kind, 'nxdomain', 'old records gone');
});

test('Extended DNS Errors are parsed, named, sanitised and bounded', () => {
  const text = `bad\r\nline\u0007${'x'.repeat(1000)}`;
  const packet = dnsPacket.decode(
    dnsPacket.encode({
      type: 'response',
      id: 1,
      flags: 2,
      questions: [{ type: 'A', name: 'x.test', class: 'IN' }],
      additionals: [
        {
          type: 'OPT',
          name: '.',
          udpPayloadSize: 1232,
          options: [
            { code: 15, data: Buffer.concat([Buffer.from([0, 7]), Buffer.from(text)]) },
            { code: 15, data: Buffer.from([0x01, 0x00]) },
            { code: 15, data: Buffer.from([1]) },
          ],
        } as unknown as dnsPacket.Answer,
      ],
    }),
  );
  const ede = extendedErrors(packet);
  assert.equal(ede.length, 2, 'an option too short for an INFO-CODE is ignored');
  assert.deepEqual([ede[0].code, ede[0].name], [7, 'Signature Expired']);
  assert.ok(ede[0].text.startsWith('bad line x'));
  assert.equal(ede[0].text.length, 300);
  assert.deepEqual(ede[1], { code: 256, name: 'code 256', text: '' });
});
