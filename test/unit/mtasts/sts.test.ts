// The MTA-STS policy of a domain as delivery uses it (RFC 8461 §3.3, §5): TXT, fetch, cache (max_age,
// refetch on a new id or before expiry), fetch failures falling back to the cache, and the demand
// on each MX host. DNS is the in-process fake resolver; the HTTPS fetch is scripted here (its own
// tests use a real HTTPS server: fetch.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MtaSts, stsDemand, type StsCache } from '../../../src/mtasts/sts.ts';
import type { FetchResult } from '../../../src/mtasts/fetch.ts';
import { parseStsPolicy } from '../../../src/mtasts/policy.ts';
import type { StsPolicyEntry } from '../../../src/store/types.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { FakeResolver } from '../../helpers/fake-resolver.ts';

const ENFORCE =
  'version: STSv1\r\nmode: enforce\r\nmx: mx1.fabrikam.test\r\nmx: *.mx.fabrikam.test\r\nmax_age: 86400\r\n';
const TESTING = ENFORCE.replace('enforce', 'testing');
/** What a TLS-RPT report names for a policy text (RFC 8460 §4.4), written out from the text itself. */
const stsReportOf = (text: string) => {
  const lines = text.split('\r\n').filter(Boolean);
  return { type: 'sts', strings: lines, mxHost: lines.filter((l) => l.startsWith('mx: ')).map((l) => l.slice(4)) };
};

class MemCache implements StsCache {
  readonly entries = new Map<string, StsPolicyEntry>();
  async stsPolicy(d: string) {
    return this.entries.get(d) ?? null;
  }
  async saveStsPolicy(e: StsPolicyEntry) {
    this.entries.set(e.domain, { ...e });
  }
}

function rig(txt: string[] | undefined, serve: () => FetchResult | string) {
  const dns = new FakeResolver(txt ? { '_mta-sts.fabrikam.test': { TXT: txt } } : {});
  const cache = new MemCache();
  let clock = 1_000_000_000_000;
  const fetched: string[] = [];
  const sts = new MtaSts({
    resolver: () => dns,
    trust: () => new TrustStore(false, []),
    cache,
    now: () => clock,
    fetcher: async (d) => {
      fetched.push(d);
      const r = serve();
      if (typeof r !== 'string') return r;
      const p = parseStsPolicy(r);
      return p.ok
        ? { ok: true, policy: p.value, text: r, url: 'u', ip: '127.0.0.1' }
        : { ok: false, failure: 'sts-policy-invalid', error: p.error, url: 'u' };
    },
  });
  return {
    dns,
    cache,
    sts,
    fetched,
    advance: (s: number) => {
      clock += s * 1000;
    },
  };
}

const failed: FetchResult = { ok: false, failure: 'sts-policy-fetch-error', error: 'connection refused', url: 'u' };

test('no _mta-sts TXT: no policy and no fetch', async () => {
  const r = rig(undefined, () => ENFORCE);
  const l = await r.sts.lookup('fabrikam.test');
  assert.equal(l.kind, 'none');
  assert.match((l as { reason: string }).reason, /no TXT record at _mta-sts\.fabrikam\.test/);
  assert.deepEqual(r.fetched, []);
});

test('TXT and policy: fetched once, cached for max_age, refetched when the id changes', async () => {
  const r = rig(['v=STSv1; id=one'], () => ENFORCE);
  const l = await r.sts.lookup('fabrikam.test');
  assert.equal(l.kind, 'policy');
  assert.equal(l.kind === 'policy' && l.from, 'fetched');
  assert.equal(r.cache.entries.get('fabrikam.test')?.id, 'one');
  assert.equal(
    r.cache.entries.get('fabrikam.test')!.expiresAt - r.cache.entries.get('fabrikam.test')!.fetchedAt,
    86_400_000,
  );
  r.advance(3600);
  const again = await r.sts.lookup('fabrikam.test');
  assert.equal(again.kind === 'policy' && again.from, 'cache');
  assert.equal(r.fetched.length, 1, 'same id, young policy: no refetch');
  r.dns.set('_mta-sts.fabrikam.test', { TXT: ['v=STSv1; id=two'] });
  assert.equal(
    (await r.sts.lookup('fabrikam.test')).kind === 'policy' && r.fetched.length,
    1,
    'within a minute the last answer serves',
  );
  r.advance(61);
  const changed = await r.sts.lookup('fabrikam.test');
  assert.equal(changed.kind === 'policy' && changed.from, 'fetched');
  assert.equal(r.fetched.length, 2);
  assert.equal(r.cache.entries.get('fabrikam.test')?.id, 'two');
});

test('an unchanged policy is refetched before it expires (half its max_age)', async () => {
  const r = rig(['v=STSv1; id=one'], () => ENFORCE);
  await r.sts.lookup('fabrikam.test');
  r.advance(43_199);
  await r.sts.lookup('fabrikam.test');
  assert.equal(r.fetched.length, 1);
  r.advance(61);
  const l = await r.sts.lookup('fabrikam.test');
  assert.equal(r.fetched.length, 2);
  assert.equal(l.kind === 'policy' && l.from, 'fetched');
});

test('fetch failure with a cached unexpired policy: the cache, with the reason; expired cache: no policy', async () => {
  let serve: () => FetchResult | string = () => ENFORCE;
  const r = rig(['v=STSv1; id=one'], () => serve());
  await r.sts.lookup('fabrikam.test');
  serve = () => failed;
  r.dns.set('_mta-sts.fabrikam.test', { TXT: ['v=STSv1; id=two'] });
  r.advance(61);
  const l = await r.sts.lookup('fabrikam.test');
  assert.equal(l.kind, 'policy');
  if (l.kind !== 'policy') return;
  assert.equal(l.from, 'cache');
  assert.equal(l.id, 'one');
  assert.equal(l.failure, 'sts-policy-fetch-error');
  assert.match(
    l.note!,
    /policy fetch failed \(sts-policy-fetch-error: connection refused\); using the cached policy \(id one\) until it expires/,
  );
  r.advance(86_401);
  const gone = await r.sts.lookup('fabrikam.test');
  assert.equal(gone.kind, 'none');
  assert.equal(gone.kind === 'none' && gone.failure, 'sts-policy-fetch-error');
});

test('TXT gone or failing: the cached policy stays in force until it expires (§3.3)', async () => {
  const r = rig(['v=STSv1; id=one'], () => ENFORCE);
  await r.sts.lookup('fabrikam.test');
  r.dns.fail('_mta-sts.fabrikam.test', 'servfail');
  r.advance(61);
  assert.equal((await r.sts.lookup('fabrikam.test')).kind, 'policy');
  r.dns.fail('_mta-sts.fabrikam.test', 'nxdomain');
  r.advance(61);
  assert.equal((await r.sts.lookup('fabrikam.test')).kind, 'policy');
  assert.equal(r.dns.asked('_mta-sts.fabrikam.test', 'TXT'), 3, 'the TXT record was asked each time');
  assert.equal(r.fetched.length, 1);
});

test('fetch failure without a cache: no policy (delivery goes on, §3.3), with the result type', async () => {
  const r = rig(['v=STSv1; id=one'], () => failed);
  const l = await r.sts.lookup('fabrikam.test');
  assert.deepEqual(l, {
    kind: 'none',
    domain: 'fabrikam.test',
    reason: 'policy fetch failed: connection refused',
    failure: 'sts-policy-fetch-error',
  });
  const bad = rig(['v=STSv1; id=one'], () => 'version: STSv1\nmode: enforce\nmax_age: 1\n');
  const b = await bad.sts.lookup('fabrikam.test');
  assert.equal(b.kind === 'none' && b.failure, 'sts-policy-invalid');
});

test('a failed fetch is not repeated for every MX host: the answer serves for a minute', async () => {
  const r = rig(['v=STSv1; id=one'], () => failed);
  for (let i = 0; i < 3; i++) assert.equal((await r.sts.lookup('fabrikam.test')).kind, 'none');
  assert.equal(r.fetched.length, 1);
  r.advance(61);
  await r.sts.lookup('fabrikam.test');
  assert.equal(r.fetched.length, 2);
});

test('concurrent lookups of one domain share one fetch', async () => {
  const r = rig(['v=STSv1; id=one'], () => ENFORCE);
  const all = await Promise.all([1, 2, 3, 4].map(() => r.sts.lookup('fabrikam.test')));
  assert.ok(all.every((l) => l.kind === 'policy'));
  assert.equal(r.fetched.length, 1);
});

test('demands: enforce requires domainValidation for the MX name; unmatched MX skipped; testing demands nothing', async () => {
  const r = rig(['v=STSv1; id=one'], () => ENFORCE);
  const l = await r.sts.lookup('fabrikam.test');
  // The demand carries the policy as TLS-RPT names it (RFC 8460 §4.4: policy-type sts, the policy's lines, mx-host).
  const report = {
    type: 'sts',
    strings: ['version: STSv1', 'mode: enforce', 'mx: mx1.fabrikam.test', 'mx: *.mx.fabrikam.test', 'max_age: 86400'],
    mxHost: ['mx1.fabrikam.test', '*.mx.fabrikam.test'],
  };
  assert.deepEqual(stsDemand(l, 'MX1.fabrikam.test'), {
    kind: 'require',
    requirement: {
      level: 'domainValidation',
      tlsDomain: 'mx1.fabrikam.test',
      source: 'MTA-STS (policy of fabrikam.test, id one, mode enforce, mx mx1.fabrikam.test)',
      report,
    },
  });
  assert.equal(stsDemand(l, 'a.mx.fabrikam.test').kind, 'require');
  const skip = stsDemand(l, 'mx.evil.test');
  assert.equal(skip.kind, 'skip');
  assert.match(
    (skip as { reason: string }).reason,
    /MX host mx\.evil\.test matches no mx pattern of the MTA-STS policy of fabrikam\.test \(id one, mode enforce: mx1\.fabrikam\.test, \*\.mx\.fabrikam\.test\)/,
  );
  const t = rig(['v=STSv1; id=one'], () => TESTING);
  const tl = await t.sts.lookup('fabrikam.test');
  const d = stsDemand(tl, 'mx1.fabrikam.test');
  assert.equal(d.kind, 'none');
  assert.equal(d.kind === 'none' && d.testing?.level, 'domainValidation');
  assert.deepEqual(stsDemand({ kind: 'none', domain: 'x', reason: 'r' }, 'mx1.fabrikam.test'), { kind: 'none' });
});

test('mode none: cached, and no policy', async () => {
  const r = rig(['v=STSv1; id=one'], () => 'version: STSv1\nmode: none\nmax_age: 600\n');
  const l = await r.sts.lookup('fabrikam.test');
  assert.equal(l.kind, 'none');
  assert.match((l as { reason: string }).reason, /mode none/);
  assert.equal(r.cache.entries.get('fabrikam.test')?.id, 'one');
});

test('the delivery provider: enforce demands (published), refuses hosts outside the policy, observes in testing; smart hosts and disabled: nothing', async () => {
  const { mtaStsProvider } = await import('../../../src/mtasts/sts.ts');
  const hop = {
    key: 'mx:fabrikam.test',
    kind: 'mx' as const,
    domain: 'fabrikam.test',
    smartHosts: [],
    tls: { level: 'opportunistic' as const, source: 'default' },
  };
  const ctx = (host: string, kind: 'mx' | 'smarthost' = 'mx') => ({
    hop,
    host,
    port: 25,
    via: { kind, secure: false },
    message: { queueId: 'q' },
  });
  let on = true;
  const r = rig(['v=STSv1; id=one'], () => ENFORCE);
  const p = mtaStsProvider(r.sts, () => on);
  assert.equal(p.name, 'MTA-STS');
  const a = await p.forHost(ctx('mx1.fabrikam.test'));
  assert.deepEqual(a, {
    kind: 'demand',
    demand: {
      level: 'domainValidation',
      source: 'MTA-STS (policy of fabrikam.test, id one, mode enforce, mx mx1.fabrikam.test)',
      tlsDomain: 'mx1.fabrikam.test',
      published: true,
      report: stsReportOf(ENFORCE),
    },
  });
  const refused = await p.forHost(ctx('mx.evil.test'));
  assert.equal(refused.kind, 'refuse');
  assert.equal(refused.kind === 'refuse' && refused.tlsFailure, 'sts-mx-mismatch');
  assert.deepEqual(await p.forHost(ctx('mx.evil.test', 'smarthost')), { kind: 'none' });
  on = false;
  assert.deepEqual(await p.forHost(ctx('mx.evil.test')), { kind: 'none' });
  const t = rig(['v=STSv1; id=one'], () => TESTING);
  const obs = await mtaStsProvider(t.sts, () => true).forHost(ctx('mx1.fabrikam.test'));
  assert.equal(obs.kind === 'none' && obs.observe?.level, 'domainValidation');
  const miss = await mtaStsProvider(t.sts, () => true).forHost(ctx('mx.evil.test'));
  assert.match(
    miss.kind === 'none' ? (miss.note ?? '') : '',
    /MX host mx\.evil\.test matches no mx pattern \(mx1\.fabrikam\.test, \*\.mx\.fabrikam\.test\); delivered anyway \(testing mode\)/,
  );
});
