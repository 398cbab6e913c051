// DANE as a demand provider (delivery/dane.ts, RFC 7672 §2.2) against the fake resolver: when a
// TLSA lookup is made at all, which base domain, what a secure/insecure/failed answer demands.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { DaneProvider } from '../../../src/delivery/dane.ts';
import type { HostContext, NextHop } from '../../../src/policy/outbound.ts';
import { tlsaRecord } from '../../../src/tls/dane.ts';
import { FakeResolver } from '../../helpers/fake-resolver.ts';
import { tempDir } from '../../helpers/gateway.ts';
import { makePki } from '../../helpers/pki.ts';

let leaf: X509Certificate;
let other: X509Certificate;
let int: X509Certificate;
before(async () => {
  const pki = await makePki(tempDir(), 'Unit');
  leaf = new X509Certificate((await pki.issue('mx.dane.test')).issued.certPem);
  other = new X509Certificate((await pki.issue('mx.other.test')).issued.certPem);
  int = new X509Certificate(pki.intermediate.certPem);
});

const hop: NextHop = {
  key: 'mx:dane.test',
  kind: 'mx',
  domain: 'dane.test',
  smartHosts: [],
  tls: { level: 'opportunistic', source: 'default' },
};
const ctx = (o: Partial<HostContext> = {}): HostContext => ({
  hop,
  host: 'mx.dane.test',
  port: 25,
  via: { kind: 'mx', secure: true },
  addresses: { secure: true, names: ['mx.dane.test'] },
  message: { queueId: 'q' },
  ...o,
});

test('secure MX, secure addresses, secure usable TLSA: the dane level, verified against the presented chain', async () => {
  const dns = new FakeResolver({ '_25._tcp.mx.dane.test': { TLSA: [tlsaRecord(leaf, 3, 1, 1)], secure: true } });
  const a = await new DaneProvider(() => dns).forHost(ctx());
  assert.equal(a.kind, 'demand');
  if (a.kind !== 'demand') return;
  assert.equal(a.demand.level, 'dane');
  assert.equal(a.demand.source, 'DANE (TLSA 3 1 1 at _25._tcp.mx.dane.test, DNSSEC secure)');
  assert.equal(a.demand.published, true);
  assert.deepEqual(a.demand.replaces, ['MTA-STS']);
  const good = a.demand.verify!({ presented: [leaf, int] });
  assert.ok(good.ok);
  const bad = a.demand.verify!({ presented: [other, int] });
  assert.ok(!bad.ok);
  if (!bad.ok) {
    assert.equal(bad.failure.kind, 'tlsa-mismatch');
    assert.match(bad.failure.text, /^certificate does not match any TLSA record \(presented CN=mx\.other\.test/);
  }
});

test('the TLSA owner uses the delivery port', async () => {
  const dns = new FakeResolver({ '_2525._tcp.mx.dane.test': { TLSA: [tlsaRecord(leaf, 3, 1, 1)], secure: true } });
  const a = await new DaneProvider(() => dns).forHost(ctx({ port: 2525 }));
  assert.equal(a.kind, 'demand');
  assert.equal(dns.asked('_2525._tcp.mx.dane.test', 'TLSA'), 1);
});

test('only unusable records: encryption without authentication (RFC 7672 §2.2); it does not replace MTA-STS', async () => {
  const dns = new FakeResolver({
    '_25._tcp.mx.dane.test': {
      TLSA: [tlsaRecord(leaf, 1, 1, 1), { usage: 3, selector: 1, matchingType: 1, data: Buffer.alloc(5) }],
      secure: true,
    },
  });
  const a = await new DaneProvider(() => dns).forHost(ctx());
  assert.equal(a.kind, 'demand');
  if (a.kind !== 'demand') return;
  assert.equal(a.demand.level, 'encryptionOnly');
  assert.equal(a.demand.verify, undefined);
  assert.equal(a.demand.replaces, undefined);
  assert.match(
    a.demand.source,
    /^DANE \(TLSA 3 1 1, 1 1 1 at _25\._tcp\.mx\.dane\.test, DNSSEC secure, no usable record: encryption without authentication\)$/,
  );
});

test('no TLSA lookup unless the MX RRset and the host addresses are secure; never for smart hosts', async () => {
  const dns = new FakeResolver({ '_25._tcp.mx.dane.test': { TLSA: [tlsaRecord(leaf, 3, 1, 1)], secure: true } });
  const p = new DaneProvider(() => dns);
  const mx = await p.forHost(ctx({ via: { kind: 'mx', secure: false } }));
  assert.deepEqual(mx, { kind: 'none', note: 'DANE: the MX records of dane.test are not DNSSEC-secure' });
  const addr = await p.forHost(ctx({ addresses: { secure: false, names: ['mx.dane.test'] } }));
  assert.deepEqual(addr, { kind: 'none', note: 'DANE: the address records of mx.dane.test are not DNSSEC-secure' });
  assert.deepEqual(await p.forHost(ctx({ via: { kind: 'smarthost', secure: false } })), { kind: 'none' });
  assert.equal(dns.asked('_25._tcp.mx.dane.test'), 0);
});

test('insecure TLSA answers and insecure denials demand nothing; a secure denial means no TLSA', async () => {
  const p = (dns: FakeResolver) => new DaneProvider(() => dns).forHost(ctx());
  const insecure = await p(new FakeResolver({ '_25._tcp.mx.dane.test': { TLSA: [tlsaRecord(leaf, 3, 1, 1)] } }));
  assert.equal(insecure.kind, 'none');
  const none = await p(
    new FakeResolver({ 'mx.dane.test': { A: ['127.0.0.1'], secure: true } }, { secureDenials: true }),
  );
  assert.deepEqual(none, {
    kind: 'none',
    note: 'DANE: no TLSA records at _25._tcp.mx.dane.test (DNSSEC-authenticated denial)',
  });
  const unproven = await p(new FakeResolver({}));
  assert.equal(unproven.kind, 'none');
});

test('a TLSA lookup that fails or is bogus refuses the host, never "no TLSA"', async () => {
  for (const [kind, failure] of [
    ['servfail', 'tlsa-lookup-failed'],
    ['timeout', 'tlsa-lookup-failed'],
    ['bogus', 'tlsa-bogus'],
  ] as const) {
    const dns = new FakeResolver({}).fail('_25._tcp.mx.dane.test', kind);
    const a = await new DaneProvider(() => dns).forHost(ctx());
    assert.equal(a.kind, 'refuse', kind);
    if (a.kind !== 'refuse') continue;
    assert.equal(a.tlsFailure, failure);
    assert.equal(a.demand.level, 'dane');
    assert.match(a.detail, new RegExp(`DNS TLSA _25\\._tcp\\.mx\\.dane\\.test: ${kind}`));
  }
});

test('a host whose addresses come through a secure CNAME: TLSA at the target first, then at the name as published (RFC 7672 §2.2.2)', async () => {
  const first = new FakeResolver({ '_25._tcp.real.hosting.test': { TLSA: [tlsaRecord(int, 2, 1, 1)], secure: true } });
  const a = await new DaneProvider(() => first).forHost(
    ctx({ addresses: { secure: true, names: ['mx.dane.test', 'real.hosting.test'] } }),
  );
  assert.equal(a.kind, 'demand');
  if (a.kind === 'demand') {
    assert.match(a.demand.source, /at _25\._tcp\.real\.hosting\.test,/);
    // DANE-TA: the leaf names mx.dane.test, one of the reference names (the MX host as published).
    assert.ok(a.demand.verify!({ presented: [leaf, int] }).ok);
  }
  const second = new FakeResolver(
    { '_25._tcp.mx.dane.test': { TLSA: [tlsaRecord(leaf, 3, 1, 1)], secure: true } },
    { secureDenials: true },
  );
  const b = await new DaneProvider(() => second).forHost(
    ctx({ addresses: { secure: true, names: ['mx.dane.test', 'real.hosting.test'] } }),
  );
  assert.equal(b.kind, 'demand');
  assert.deepEqual(
    second.queries.filter((q) => q.endsWith('TLSA')),
    ['_25._tcp.real.hosting.test TLSA', '_25._tcp.mx.dane.test TLSA'],
  );
});
