// /metrics (Prometheus, bearer-protected) and the transit-security reports after real traffic, on
// either store (admin-metrics.test.ts: SQLite; admin-metrics-postgres.test.ts: PostgreSQL): the
// counters move by exactly what was sent, and the reports (built from the store's counters as mail
// flows) count the same sessions and messages.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startAdminGateway, type AdminGateway } from './admin.ts';
import { cleanup } from './gateway.ts';
import { sendOverTls, SmtpClient } from './smtp.ts';
import { startPostgres, type PgInstance } from './postgres.ts';

export function adminMetricsSuite(store: 'sqlite' | 'postgres'): void {
  let pg: PgInstance | undefined;
  let storeConfig: Record<string, unknown> = {};
  let gw: AdminGateway;
  let token: string;
  before(async () => {
    if (store === 'postgres') {
      pg = await startPostgres();
      // One node: its dataDir's mailboxes are all there is, so they count as shared.
      storeConfig = {
        store: { type: 'postgres', url: await pg.createDatabase('metrics'), poolSize: 4 },
        delivery: { maildirShared: true },
      };
    }
    gw = await startAdminGateway({
      ...storeConfig,
      organizations: [
        { name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] },
        { name: 'fabrikam', acceptedDomains: [{ domain: 'fabrikam.test' }] },
      ],
    });
    token = await gw.token('prometheus');
  });
  after(async () => {
    await cleanup(gw);
    await pg?.destroy();
  });

  /** Every sample of a scrape: `name{labels}` → value. */
  async function scrape(): Promise<Map<string, number>> {
    const r = await gw.api('GET', '/metrics', { token });
    assert.equal(r.status, 200, r.text);
    assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    const out = new Map<string, number>();
    for (const line of r.text.split('\n')) {
      const m = /^([a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(line);
      if (m) out.set(m[1], Number(m[2]));
    }
    return out;
  }
  const delta = (a: Map<string, number>, b: Map<string, number>, key: string) => (b.get(key) ?? 0) - (a.get(key) ?? 0);

  test('/metrics needs a token', async () => {
    assert.equal((await gw.api('GET', '/metrics')).status, 401);
    assert.equal((await gw.api('GET', '/metrics', { token: 'pcat_' + 'x'.repeat(43) })).status, 401);
  });

  test('the counters move by exactly what was sent; the reports count the same', async () => {
    const before = await scrape();
    const from = new Date(Date.now() - 60_000).toISOString();
    // 3 messages to contoso and 2 to fabrikam over TLS (5 sessions), 1 plaintext session with 1 message
    // and 1 refused recipient.
    for (let i = 0; i < 3; i++)
      await sendOverTls(gw.port, 'a@partner.test', [`user${i}@contoso.test`], `Subject: m${i}\r\n\r\nhi\r\n`);
    for (let i = 0; i < 2; i++)
      await sendOverTls(gw.port, 'a@partner.test', [`user${i}@fabrikam.test`], `Subject: f${i}\r\n\r\nhi\r\n`);
    const c = await SmtpClient.connect(gw.port);
    await c.hello();
    await c.expect('MAIL FROM:<plain@partner.test>', 250);
    await c.expect('RCPT TO:<nobody@elsewhere.test>', 550);
    await c.expect('RCPT TO:<plain@contoso.test>', 250);
    await c.expect('DATA', 354);
    await c.expect('Subject: plain\r\n\r\nhi\r\n.', 250);
    await c.expect('QUIT', 221);
    c.close();
    await gw.waitForLog(
      () => gw.events().filter((e) => e.event === 'delivery.result' && e.status === 'delivered').length >= 6,
    );
    await gw.waitForLog(() => gw.events().filter((e) => e.event === 'session.end').length >= 6);

    const after = await scrape();
    assert.equal(delta(before, after, 'portcullis_messages_accepted_total{org="contoso"}'), 4);
    assert.equal(delta(before, after, 'portcullis_messages_accepted_total{org="fabrikam"}'), 2);
    const rejected = [...after.keys()].filter((k) => k.startsWith('portcullis_messages_rejected_total{'));
    assert.equal(
      rejected.reduce((n, k) => n + delta(before, after, k), 0),
      1,
      rejected.join(', '),
    );
    assert.equal(delta(before, after, 'portcullis_sessions_total{tls_version="TLSv1.3"}'), 5);
    assert.equal(delta(before, after, 'portcullis_sessions_total{tls_version="none"}'), 1);
    assert.equal(
      delta(before, after, 'portcullis_deliveries_total{outcome="delivered",agent="maildir",tls_level="local"}'),
      6,
    );
    assert.equal(after.get('portcullis_queue_messages{state="deferred"}'), 0);
    assert.ok(
      after.has('portcullis_dns_query_duration_seconds_count') ||
        [...after.keys()].some((k) => k.startsWith('process_')),
      'process metrics are there',
    );

    // The report counters are written every 2 s; wait for them, bounded.
    const until = Date.now() + 15_000;
    let report:
      | {
          messages: { total: number; plaintext: number; byVersion: { tlsVersion: string; count: number }[] };
          sessions: { total: number; plaintextShare: number };
        }
      | undefined;
    while (Date.now() < until) {
      report = (await gw.api('GET', `/api/v1/reports/inbound?from=${encodeURIComponent(from)}`, { token })).json;
      if (report!.messages.total >= 6) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.equal(report!.messages.total, 6);
    assert.equal(report!.messages.plaintext, 1);
    assert.deepEqual(report!.messages.byVersion, [
      { tlsVersion: 'none', count: 1 },
      { tlsVersion: 'TLSv1.3', count: 5 },
    ]);
    assert.equal(report!.sessions.total, 6);
    assert.equal(report!.sessions.plaintextShare, 1 / 6);
    const fab = (
      await gw.api('GET', `/api/v1/reports/inbound?org=fabrikam&from=${encodeURIComponent(from)}`, { token })
    ).json;
    assert.equal(fab.messages.total, 2, 'per organisation');
    const peers = (await gw.api('GET', `/api/v1/reports/inbound/peers?from=${encodeURIComponent(from)}`, { token }))
      .json;
    assert.deepEqual(
      peers.peers.map((p: { ip: string; tlsVersion: string; sessions: number }) => [p.ip, p.tlsVersion, p.sessions]),
      [
        ['127.0.0.1', 'none', 1],
        ['127.0.0.1', 'TLSv1.3', 5],
      ],
    );
  });
}
