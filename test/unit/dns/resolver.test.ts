import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { DnsError, Resolver, reverseName } from '../../../src/dns/resolver.ts';
import { startDnsServer, type DnsServer } from '../../helpers/dns-server.ts';

let dns: DnsServer;
before(async () => {
  dns = await startDnsServer({
    'fabrikam.test': { MX: [{ exchange: 'mx2.fabrikam.test', priority: 20 }, { exchange: 'mx1.fabrikam.test', priority: 10 }] },
    'mx1.fabrikam.test': { A: ['127.0.0.2'], AAAA: ['::1'] },
    'alias.fabrikam.test': { CNAME: 'mx1.fabrikam.test' },
    'nullmx.test': { MX: [{ exchange: '', priority: 0 }] },
    'broken.test': { fail: 'SERVFAIL' },
    'silent.test': { fail: 'drop' },
    'txt.test': { TXT: ['v=STSv1; id=1'] },
    '2.0.0.127.in-addr.arpa': { PTR: ['mx1.fabrikam.test'] },
  });
});
after(() => dns.close());

test('MX, A/AAAA, CNAME chains, TXT, PTR through the configured server only', async () => {
  const r = new Resolver([dns.server]);
  const mx = await r.mx('fabrikam.test');
  assert.deepEqual(mx.records.map((m) => m.exchange).sort(), ['mx1.fabrikam.test', 'mx2.fabrikam.test']);
  assert.deepEqual((await r.addresses('mx1.fabrikam.test')).records.sort(), ['127.0.0.2', '::1']);
  assert.deepEqual((await r.lookup('alias.fabrikam.test', 'A')).records.map((a) => a.data), ['127.0.0.2']);
  assert.deepEqual((await r.txt('txt.test')).records, ['v=STSv1; id=1']);
  assert.deepEqual((await r.ptr('127.0.0.2')).records, ['mx1.fabrikam.test']);
  assert.ok(dns.queries.length >= 5);
});

test('null MX, NXDOMAIN, SERVFAIL and timeouts are typed', async () => {
  const r = new Resolver([dns.server], { timeoutMs: 200, attempts: 1 });
  assert.equal((await r.mx('nullmx.test')).nullMx, true);
  await assert.rejects(r.mx('nowhere.test'), (e: DnsError) => e.kind === 'nxdomain' && !e.temporary);
  await assert.rejects(r.mx('mx1.fabrikam.test'), (e: DnsError) => e.kind === 'nodata');
  await assert.rejects(r.mx('broken.test'), (e: DnsError) => e.kind === 'servfail' && e.temporary);
  await assert.rejects(r.mx('silent.test'), (e: DnsError) => e.kind === 'timeout' && e.temporary);
});

test('answers are cached per TTL; the AD bit is reported', async () => {
  const r = new Resolver([dns.server]);
  const before = dns.queries.length;
  await r.mx('fabrikam.test');
  await r.mx('fabrikam.test');
  assert.equal(dns.queries.length, before + 1);
  assert.equal((await r.mx('fabrikam.test')).authenticated, false);
  dns.authenticated = true;
  r.clearCache();
  assert.equal((await r.mx('fabrikam.test')).authenticated, true);
  dns.authenticated = false;
});

test('reverse names', () => {
  assert.equal(reverseName('127.0.0.2'), '2.0.0.127.in-addr.arpa');
  assert.equal(reverseName('2001:db8::1'), '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa');
});
