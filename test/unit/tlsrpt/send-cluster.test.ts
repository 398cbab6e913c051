// TLS-RPT for a whole cluster: two nodes (two store instances on the same data, SQLite and a
// throwaway PostgreSQL) run the daily pass at the same moment; each domain's report goes out once
// (RFC 8460 §4: one report per policy domain and day from the sending organisation). Only the
// queueing of the report mail is a stand-in (Ingest.generated): the store and the DNS answers are
// those the sender really reads.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildConfig } from '../../../src/config/load.ts';
import type { Ingest } from '../../../src/ingest/ingest.ts';
import { PostgresStore } from '../../../src/store/postgres/index.ts';
import { SqliteStore } from '../../../src/store/sqlite/index.ts';
import type { Store } from '../../../src/store/types.ts';
import { TlsReportSender } from '../../../src/tlsrpt/send.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { FakeResolver } from '../../helpers/fake-resolver.ts';
import { postgresMissing, startPostgres, type PgInstance } from '../../helpers/postgres.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-tlsrpt-cluster-'));
const config = buildConfig(
  {
    hostname: 'gw.contoso.test',
    tlsRpt: { enabled: true },
    organizations: [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }],
  },
  dir,
  null,
);
const DAY = '2026-03-01';
const DOMAINS = ['a.fabrikam.test', 'b.fabrikam.test', 'c.fabrikam.test'];

let pg: PgInstance | undefined;
before(async () => {
  if (!postgresMissing) pg = await startPostgres();
});
after(async () => {
  await pg?.destroy();
});

async function twoNodesSendOnce(a: Store, b: Store): Promise<void> {
  await a.countTlsSessions(
    DOMAINS.map((d) => ({ day: DAY, policyDomain: d, policy: { type: 'no-policy-found' as const }, count: 3 })),
  );
  const resolver = new FakeResolver(
    Object.fromEntries(DOMAINS.map((d) => [`_smtp._tls.${d}`, { TXT: [`v=TLSRPTv1; rua=mailto:tlsrpt@${d}`] }])),
  );
  // The lookups take a while, so both passes are in flight together.
  for (const d of DOMAINS) resolver.delay(`_smtp._tls.${d}`, 30);
  const queued: string[] = [];
  const sender = (store: Store, node: string) =>
    new TlsReportSender({
      store,
      resolver: () => resolver,
      config: () => config,
      trust: () => new TrustStore(false, []),
      ingest: {
        generated: async (g: { to: { address: string } }) => {
          queued.push(`${node} ${g.to.address}`);
          return `Q${queued.length}`;
        },
      } as unknown as Ingest,
      destination: (address: string) => ({ address, route: 'remote' }),
    });
  const [ra, rb] = await Promise.all([
    sender(a, 'node-a').sendDay(DAY, { unsentOnly: true }),
    sender(b, 'node-b').sendDay(DAY, { unsentOnly: true }),
  ]);
  assert.equal(queued.length, DOMAINS.length, `one report per domain for the cluster: ${queued.join(', ')}`);
  assert.deepEqual(queued.map((q) => q.split(' ')[1]).sort(), DOMAINS.map((d) => `tlsrpt@${d}`).sort());
  assert.equal(ra.filter((r) => r.sent).length + rb.filter((r) => r.sent).length, DOMAINS.length);
  assert.deepEqual(
    (await b.tlsReportsSent(DAY)).map((r) => r.policyDomain),
    DOMAINS,
    'each recorded as sent once',
  );
  // A later pass (the next hour) finds them sent.
  const again = await sender(b, 'node-b').sendDay(DAY, { unsentOnly: true });
  assert.deepEqual(
    again.map((r) => r.skipped),
    DOMAINS.map(() => 'already sent'),
  );
  assert.equal(queued.length, DOMAINS.length);
}

test('sqlite: two processes run the daily TLS-RPT pass at once: one report per domain and day', async () => {
  const d = mkdtempSync(path.join(os.tmpdir(), 'pc-tlsrpt-q-'));
  const [a, b] = [new SqliteStore(d), new SqliteStore(d)];
  try {
    await twoNodesSendOnce(a, b);
  } finally {
    await a.close();
    await b.close();
  }
});

test(
  'postgres: two nodes run the daily TLS-RPT pass at once: one report per domain and day',
  { skip: postgresMissing },
  async () => {
    const url = await pg!.createDatabase();
    const a = await PostgresStore.open(url);
    const b = await PostgresStore.open(url);
    try {
      await twoNodesSendOnce(a, b);
    } finally {
      await a.close();
      await b.close();
    }
  },
);
