// The latency histograms of /metrics (admin/metrics.ts) fed by the events of the real fetchers: an
// MTA-STS policy fetched from a real HTTPS server on 127.0.8.21:443, and one whose host has no
// address, each counted once under its outcome with its duration.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { GatewayMetrics } from '../../../src/admin/metrics.ts';
import { fetchStsPolicy } from '../../../src/mtasts/fetch.ts';
import type { Store } from '../../../src/store/types.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { FakeResolver } from '../../helpers/fake-resolver.ts';
import { tempDir } from '../../helpers/gateway.ts';
import { makePki } from '../../helpers/pki.ts';
import { startStsServer, type StsServer } from '../../helpers/sts-server.ts';

const IP = '127.0.8.21';
const POLICY = 'version: STSv1\r\nmode: enforce\r\nmx: mx1.fabrikam.test\r\nmax_age: 86400\r\n';
let dir: string;
let server: StsServer;
let trust: TrustStore;

before(async () => {
  dir = tempDir('pc-metrics-');
  const pki = await makePki(dir, 'Sts');
  trust = new TrustStore(false, [pki.rootFile]);
  server = await startStsServer(IP, await pki.issue('mta-sts.fabrikam.test'), POLICY);
});
after(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Samples of a scrape: `name{labels}` → value. */
async function scrape(m: GatewayMetrics): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const line of (await m.text()).split('\n')) {
    const x = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (x) out.set(x[1], Number(x[2]));
  }
  return out;
}

test('MTA-STS policy fetches are timed in a histogram, by outcome', async () => {
  const store = { depth: async () => ({}) } as unknown as Store;
  const metrics = new GatewayMetrics(() => store);
  metrics.start();
  try {
    const dns = new FakeResolver({ 'mta-sts.fabrikam.test': { A: [IP] }, 'mta-sts.noaddr.test': { TXT: ['x'] } });
    assert.equal((await fetchStsPolicy('fabrikam.test', { resolver: dns, trust })).ok, true);
    assert.equal((await fetchStsPolicy('noaddr.test', { resolver: dns, trust })).ok, false);
    const s = await scrape(metrics);
    const ok = 'portcullis_mtasts_fetch_duration_seconds_count{outcome="ok"}';
    const failed = 'portcullis_mtasts_fetch_duration_seconds_count{outcome="sts-policy-fetch-error"}';
    assert.equal(s.get(ok), 1);
    assert.equal(s.get(failed), 1);
    assert.ok((s.get('portcullis_mtasts_fetch_duration_seconds_sum{outcome="ok"}') ?? 0) > 0, 'a duration');
    assert.equal(s.get('portcullis_mtasts_fetch_duration_seconds_bucket{le="+Inf",outcome="ok"}'), 1);
  } finally {
    metrics.stop();
  }
});
