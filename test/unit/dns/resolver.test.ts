import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { DnsResolver, negativeTtl } from '../../../src/dns/resolver.ts';
import { reverseName } from '../../../src/dns/typed.ts';
import { DnsError } from '../../../src/dns/types.ts';
import { startDnsServer, type DnsServer } from '../../helpers/dns-server.ts';

let dns: DnsServer;
before(async () => {
  dns = await startDnsServer({
    'fabrikam.test': {
      MX: [
        { exchange: 'mx2.fabrikam.test', priority: 20 },
        { exchange: 'mx1.fabrikam.test', priority: 10 },
      ],
    },
    'mx1.fabrikam.test': { A: ['127.0.0.2'], AAAA: ['::1'] },
    'alias.fabrikam.test': { CNAME: 'mx1.fabrikam.test' },
    'nullmx.test': { MX: [{ exchange: '', priority: 0 }] },
    'dotamong.test': {
      MX: [
        { exchange: '.', priority: 0 },
        { exchange: 'mx1.fabrikam.test', priority: 10 },
      ],
    },
    'dotpref.test': { MX: [{ exchange: '.', priority: 5 }] },
    'broken.test': { fail: 'SERVFAIL' },
    'silent.test': { fail: 'drop' },
    'txt.test': { TXT: ['v=STSv1; id=1'] },
    '2.0.0.127.in-addr.arpa': { PTR: ['mx1.fabrikam.test'] },
    // Answered in two parts (the server adds one hop per answer): the first without AD.
    'hop1.chain.test': { CNAME: 'hop2.chain.test', authenticated: false },
    'hop2.chain.test': { CNAME: 'end.chain.test', authenticated: true },
    'end.chain.test': { A: ['127.0.0.3'], authenticated: true },
    'signed.test': { A: ['127.0.0.4'], authenticated: true },
    'tobroken.chain.test': { CNAME: 'broken.test' },
    // Zone apexes for negative caching (RFC 2308 §5): the SOA's TTL and its MINIMUM field.
    'shortttl.test': { SOA: { ttl: 1, minimum: 3600 } },
    'shortmin.test': { SOA: { ttl: 3600, minimum: 1 } },
    'host.shortmin.test': { A: ['127.0.0.5'] },
  });
});
after(() => dns.close());

test('MX, A/AAAA, CNAME chains, TXT, PTR through the configured server only', async () => {
  const r = new DnsResolver([dns.server]);
  const mx = await r.mx('fabrikam.test');
  assert.deepEqual(mx.records.map((m) => m.exchange).sort(), ['mx1.fabrikam.test', 'mx2.fabrikam.test']);
  assert.deepEqual((await r.addresses('mx1.fabrikam.test')).records.sort(), ['127.0.0.2', '::1']);
  assert.deepEqual(
    (await r.lookup('alias.fabrikam.test', 'A')).records.map((a) => a.data),
    ['127.0.0.2'],
  );
  assert.deepEqual((await r.txt('txt.test')).records, ['v=STSv1; id=1']);
  assert.deepEqual((await r.ptr('127.0.0.2')).records, ['mx1.fabrikam.test']);
  assert.ok(dns.queries.length >= 5);
});

test('null MX, NXDOMAIN, SERVFAIL and timeouts are typed', async () => {
  const r = new DnsResolver([dns.server], { timeoutMs: 200, attempts: 1 });
  assert.equal((await r.mx('nullmx.test')).nullMx, true);
  // RFC 7505 §3: a null MX is one record, preference 0, exchange "."; any other "." is ignored.
  const among = await r.mx('dotamong.test');
  assert.equal(among.nullMx, false);
  assert.deepEqual(among.records, [{ exchange: 'mx1.fabrikam.test', priority: 10 }]);
  const pref = await r.mx('dotpref.test');
  assert.equal(pref.nullMx, false);
  assert.deepEqual(pref.records, []);
  await assert.rejects(r.mx('nowhere.test'), (e: DnsError) => e.kind === 'nxdomain' && !e.temporary);
  await assert.rejects(r.mx('mx1.fabrikam.test'), (e: DnsError) => e.kind === 'nodata');
  await assert.rejects(r.mx('broken.test'), (e: DnsError) => e.kind === 'servfail' && e.temporary);
  await assert.rejects(r.mx('silent.test'), (e: DnsError) => e.kind === 'timeout' && e.temporary);
});

test('answers are cached per TTL; the AD bit is reported', async () => {
  const r = new DnsResolver([dns.server]);
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

test('a CNAME chain is secure only when every answer on the way was; the names are exposed', async () => {
  const r = new DnsResolver([dns.server]);
  const chain = await r.lookup('hop1.chain.test', 'A');
  assert.deepEqual(
    chain.records.map((a) => a.data),
    ['127.0.0.3'],
  );
  assert.deepEqual(chain.names, ['hop1.chain.test', 'hop2.chain.test', 'end.chain.test']);
  assert.equal(chain.status, 'insecure');
  const tail = await r.lookup('hop2.chain.test', 'A');
  assert.deepEqual([tail.status, tail.names], ['secure', ['hop2.chain.test', 'end.chain.test']]);
  assert.equal((await r.lookup('end.chain.test', 'A')).status, 'secure');
});

test('a failure down a CNAME chain is reported for the name asked, with the chain', async () => {
  const r = new DnsResolver([dns.server], { timeoutMs: 200, attempts: 1 });
  await assert.rejects(r.lookup('tobroken.chain.test', 'A'), (e: DnsError) => {
    assert.deepEqual(
      [e.kind, e.qname, e.names],
      ['servfail', 'tobroken.chain.test', ['tobroken.chain.test', 'broken.test']],
    );
    assert.match(e.message, /^DNS A tobroken\.chain\.test: servfail \(at broken\.test: 127\.0\.0\.1:\d+\)$/);
    return true;
  });
});

test('dns.dnssec false: an AD bit is never trusted', async () => {
  assert.equal((await new DnsResolver([dns.server]).lookup('signed.test', 'A')).status, 'secure');
  const off = await new DnsResolver([dns.server], { dnssec: false }).lookup('signed.test', 'A');
  assert.deepEqual([off.status, off.authenticated], ['insecure', false]);
});

test('reverse names', () => {
  assert.equal(reverseName('127.0.0.2'), '2.0.0.127.in-addr.arpa');
  assert.equal(reverseName('2001:db8::1'), '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa');
});

const asked = (name: string, type: string) => dns.queries.filter((q) => q.name === name && q.type === type).length;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('negative answers are cached for min(SOA TTL, SOA MINIMUM) from the authority section (RFC 2308 §5)', async () => {
  const r = new DnsResolver([dns.server], { timeoutMs: 500, attempts: 1 });
  // NXDOMAIN under a zone whose SOA has TTL 1 (MINIMUM 3600), NODATA in a zone with MINIMUM 1 (TTL 3600).
  await assert.rejects(r.mx('gone.shortttl.test'), (e: DnsError) => e.kind === 'nxdomain');
  await assert.rejects(r.mx('host.shortmin.test'), (e: DnsError) => e.kind === 'nodata');
  await assert.rejects(r.mx('gone.shortttl.test'), (e: DnsError) => e.kind === 'nxdomain');
  await assert.rejects(r.mx('host.shortmin.test'), (e: DnsError) => e.kind === 'nodata');
  assert.equal(asked('gone.shortttl.test', 'MX'), 1, 'cached within its negative TTL');
  assert.equal(asked('host.shortmin.test', 'MX'), 1, 'cached within its negative TTL');
  await sleep(1100);
  await assert.rejects(r.mx('gone.shortttl.test'), (e: DnsError) => e.kind === 'nxdomain');
  await assert.rejects(r.mx('host.shortmin.test'), (e: DnsError) => e.kind === 'nodata');
  assert.equal(asked('gone.shortttl.test', 'MX'), 2, 'the SOA TTL (1 s) bounds the negative TTL, not a fixed one');
  assert.equal(asked('host.shortmin.test', 'MX'), 2, 'the SOA MINIMUM (1 s) bounds the negative TTL, not a fixed one');
});

test('a negative answer without an SOA is not cached (RFC 2308 §5 "SHOULD NOT be cached")', async () => {
  const r = new DnsResolver([dns.server], { timeoutMs: 500, attempts: 1 });
  await assert.rejects(r.mx('nosoa.test'), (e: DnsError) => e.kind === 'nxdomain');
  await assert.rejects(r.mx('nosoa.test'), (e: DnsError) => e.kind === 'nxdomain');
  await assert.rejects(r.mx('mx1.fabrikam.test'), (e: DnsError) => e.kind === 'nodata');
  const before = asked('mx1.fabrikam.test', 'MX');
  await assert.rejects(r.mx('mx1.fabrikam.test'), (e: DnsError) => e.kind === 'nodata');
  assert.equal(asked('nosoa.test', 'MX'), 2);
  assert.equal(asked('mx1.fabrikam.test', 'MX'), before + 1);
});

test('the negative TTL: the smaller of the SOA TTL and MINIMUM, at most 3 hours, none without an SOA', () => {
  const soa = (ttl: number, minimum: number) => ({ type: 'SOA', name: 'contoso.test', ttl, data: { minimum } });
  assert.equal(negativeTtl([soa(300, 60)]), 60);
  assert.equal(negativeTtl([soa(30, 900)]), 30);
  assert.equal(
    negativeTtl([soa(86_400, 86_400)]),
    10_800,
    'capped: RFC 2308 §5 finds one to three hours sensible, over a day problematic',
  );
  assert.equal(negativeTtl([]), 0);
  assert.equal(negativeTtl([{ type: 'NS', name: 'contoso.test', ttl: 300, data: 'ns.contoso.test' }]), 0);
});
