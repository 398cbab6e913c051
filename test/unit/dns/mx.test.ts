// The one MX target lookup (RFC 5321 §5.1, RFC 7505), used by delivery and by `tls check`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { beforeSelf, byPreference, mailHosts } from '../../../src/dns/mx.ts';
import { targetsFor } from '../../../src/delivery/probe.ts';
import { DnsError } from '../../../src/dns/types.ts';
import { FakeResolver } from '../../helpers/fake-resolver.ts';

const zone = () =>
  new FakeResolver({
    'fabrikam.test': {
      MX: [
        { exchange: 'mx2.fabrikam.test', priority: 20 },
        { exchange: 'mx1.fabrikam.test', priority: 10 },
      ],
    },
    'mx1.fabrikam.test': { A: ['127.0.0.2'] },
    'noMx.test': { A: ['127.0.0.3'] },
    'nullmx.test': { MX: [{ exchange: '', priority: 0 }] },
    // A "." exchange that is not a null MX (RFC 7505 §3: exactly one record, preference 0).
    'dotamong.test': {
      MX: [
        { exchange: '', priority: 0 },
        { exchange: 'mx1.fabrikam.test', priority: 10 },
      ],
    },
    'dotpref.test': { MX: [{ exchange: '', priority: 10 }] },
    'signed.test': { A: ['127.0.0.4'], secure: true },
  });

test('MX records by preference', async () => {
  const r = await mailHosts(zone(), 'fabrikam.test');
  assert.deepEqual(r, {
    kind: 'mx',
    hosts: [
      { name: 'mx1.fabrikam.test', priority: 10 },
      { name: 'mx2.fabrikam.test', priority: 20 },
    ],
    secure: false,
  });
  const signed = new FakeResolver({ 'dane.test': { MX: [{ exchange: 'mx.dane.test', priority: 10 }], secure: true } });
  assert.deepEqual(
    await mailHosts(signed, 'dane.test'),
    { kind: 'mx', hosts: [{ name: 'mx.dane.test', priority: 10 }], secure: true },
    'a DNSSEC-secure MX RRset says so (DANE needs it)',
  );
});

test('nodata: no MX records, the implicit MX is the domain itself at preference 0 (RFC 5321 §5.1)', async () => {
  const dns = zone();
  assert.deepEqual(await mailHosts(dns, 'nomx.test'), {
    kind: 'implicit',
    hosts: [{ name: 'nomx.test', priority: 0 }],
    secure: false,
  });
  assert.deepEqual(
    await mailHosts(dns, 'signed.test'),
    { kind: 'implicit', hosts: [{ name: 'signed.test', priority: 0 }], secure: true },
    'an authenticated denial of MX records',
  );
});

test('nxdomain: the domain does not exist, an error and no address lookup (RFC 5321 §5.1 "MUST be reported as an error")', async () => {
  const dns = zone();
  const r = await mailHosts(dns, 'nowhere.test');
  assert.equal(r.kind, 'error');
  assert.ok(r.kind === 'error' && r.error instanceof DnsError && r.error.kind === 'nxdomain' && !r.error.temporary);
  assert.deepEqual(dns.queries, ['nowhere.test MX'], 'nothing asked after the NXDOMAIN');
});

test('null MX (RFC 7505): no hosts at all', async () => {
  assert.deepEqual(await mailHosts(zone(), 'nullmx.test'), { kind: 'nullMx' });
});

test('a "." exchange that is not a null MX is ignored, never a host with an empty name (RFC 7505 §3)', async () => {
  const dns = zone();
  assert.deepEqual(
    await mailHosts(dns, 'dotamong.test'),
    { kind: 'mx', hosts: [{ name: 'mx1.fabrikam.test', priority: 10 }], secure: false },
    '"." among other MX records',
  );
  assert.deepEqual(
    await mailHosts(dns, 'dotpref.test'),
    { kind: 'mx', hosts: [], secure: false },
    '"." at preference 10 is not a null MX, and names no host',
  );
  const mx = await dns.mx('dotamong.test');
  assert.equal(mx.nullMx, false);
  assert.deepEqual(mx.records, [{ exchange: 'mx1.fabrikam.test', priority: 10 }]);
  assert.equal((await dns.mx('dotpref.test')).nullMx, false);
  assert.deepEqual(await targetsFor(dns, 'dotamong.test', 25), [
    { host: 'mx1.fabrikam.test', port: 25, mx: { domain: 'dotamong.test', kind: 'mx', secure: false } },
  ]);
});

test('servfail, bogus and timeouts are temporary errors, never "no MX, use the A record"', async () => {
  for (const kind of ['servfail', 'bogus', 'timeout', 'refused', 'malformed'] as const) {
    const dns = zone().fail(
      'noMx.test',
      kind === 'bogus' ? { kind, ede: [{ code: 6, name: 'DNSSEC Bogus', text: 'signature expired' }] } : kind,
      'MX',
    );
    const r = await mailHosts(dns, 'nomx.test');
    assert.ok(r.kind === 'error' && r.error.kind === kind && r.error.temporary, kind);
    assert.equal(dns.asked('nomx.test', 'A'), 0, `${kind}: no fallback to the address`);
    if (kind === 'bogus') assert.ok(r.kind === 'error' && r.error.ede[0].code === 6);
  }
});

test('equal preferences are shuffled only when asked, lower preferences always first', () => {
  const hosts = [
    { name: 'c', priority: 10 },
    { name: 'a', priority: 5 },
    { name: 'b', priority: 10 },
    { name: 'd', priority: 10 },
  ];
  assert.deepEqual(
    byPreference(hosts).map((h) => h.name),
    ['a', 'c', 'b', 'd'],
    'stable without randomness',
  );
  const seen = new Set<string>();
  let seed = 1;
  const random = () => {
    seed = (seed * 16807) % 2147483647;
    return (seed - 1) / 2147483646;
  };
  for (let i = 0; i < 60; i++) {
    const order = byPreference(hosts, random).map((h) => h.name);
    assert.equal(order[0], 'a');
    assert.deepEqual([...order.slice(1)].sort(), ['b', 'c', 'd']);
    seen.add(order.join(''));
  }
  assert.equal(seen.size, 6, 'every order of the three equal hosts occurs');
});

test('tls check uses the same rules: the implicit MX, none for a null MX, the DNS error for a domain that does not exist', async () => {
  const dns = zone();
  const mx = { domain: 'fabrikam.test', kind: 'mx', secure: false };
  assert.deepEqual(await targetsFor(dns, 'fabrikam.test', 25), [
    { host: 'mx1.fabrikam.test', port: 25, mx },
    { host: 'mx2.fabrikam.test', port: 25, mx },
  ]);
  assert.deepEqual(await targetsFor(dns, 'nomx.test', 25), [
    { host: 'nomx.test', port: 25, mx: { domain: 'nomx.test', kind: 'implicit', secure: false } },
  ]);
  assert.deepEqual(await targetsFor(dns, 'nullmx.test', 25), []);
  await assert.rejects(targetsFor(dns, 'nowhere.test', 25), (e: DnsError) => e.kind === 'nxdomain');
  await assert.rejects(
    targetsFor(zone().fail('fabrikam.test', 'servfail'), 'fabrikam.test', 25),
    (e: DnsError) => e.kind === 'servfail',
  );
  assert.deepEqual(
    await targetsFor(dns, 'mx9.fabrikam.test:2525', 25),
    [{ host: 'mx9.fabrikam.test', port: 2525 }],
    'host:port is taken as is',
  );
});

test('beforeSelf (RFC 5321 §5.1): our record and every one at its preference or after are discarded', () => {
  const hosts = [
    { name: 'a.test', priority: 5 },
    { name: 'b.test', priority: 10 },
    { name: 'GW.contoso.test.', priority: 10 },
    { name: 'c.test', priority: 20 },
  ];
  const self = new Set(['gw.contoso.test']);
  assert.deepEqual(beforeSelf(hosts, self), {
    hosts: [{ name: 'a.test', priority: 5 }],
    self: { name: 'GW.contoso.test.', priority: 10 },
  });
  assert.deepEqual(beforeSelf(hosts.slice(1), self).hosts, [], 'none preferred to us: nothing left');
  assert.deepEqual(beforeSelf(hosts, new Set(['other.test'])), { hosts }, 'not listed: all hosts stay');
  assert.deepEqual(
    beforeSelf([...hosts, { name: 'gw.contoso.test', priority: 1 }], self).hosts,
    [],
    'the best of our records counts',
  );
});
