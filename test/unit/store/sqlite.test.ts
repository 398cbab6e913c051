// The SQLite backend: the shared conformance suite, plus what only SQLite has.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { queueFile, SqliteStore, sqliteMigrationStatus } from '../../../src/store/sqlite/index.ts';
import { migrations } from '../../../src/store/sqlite/schema.ts';
import { storeConformance } from './conformance.ts';
import { clusterStoreConformance } from './cluster-conformance.ts';

const dir = () => mkdtempSync(path.join(os.tmpdir(), 'pc-store-'));

const sqliteHarness = {
  async fresh() {
    const d = dir();
    return { store: new SqliteStore(d), reopen: async () => new SqliteStore(d) };
  },
};
storeConformance('sqlite', sqliteHarness);
clusterStoreConformance('sqlite', sqliteHarness);

test('sqlite: migrations are versioned by user_version and reported without writing', async () => {
  const d = dir();
  const none = sqliteMigrationStatus(d);
  assert.equal(none.migrations.length, migrations.length);
  assert.ok(none.migrations.every((m) => !m.applied));
  assert.equal(existsSync(queueFile(d)), false, 'the status creates no queue');
  const s = new SqliteStore(d);
  const all = await s.migrationStatus();
  assert.ok(all.migrations.every((m) => m.applied));
  assert.deepEqual(all.unknown, []);
  assert.equal(all.location, queueFile(d));
  await s.close();
});

test('TLS-RPT: session counts add up per day, domain, policy and failure; reports sent and received are kept', async () => {
  const s = new SqliteStore(mkdtempSync(path.join(os.tmpdir(), 'pc-store-tlsrpt-')));
  const ok = { day: '2026-03-04', policyDomain: 'dest.test', policy: { type: 'no-policy-found' as const }, count: 1 };
  const bad = {
    ...ok,
    resultType: 'starttls-not-supported' as const,
    sendingIp: '127.0.0.1',
    mxHost: 'mx.dest.test',
    mxIp: '127.0.0.9',
    reason: 'r',
  };
  await Promise.all([
    s.countTlsSessions([ok]),
    s.countTlsSessions([ok, bad]),
    s.countTlsSessions([{ ...ok, day: '2026-03-05' }]),
  ]);
  await s.countTlsSessions([
    { ...ok, count: 3 },
    { ...bad, mxIp: '127.0.0.10' },
  ]);
  const rows = await s.tlsSessions('2026-03-04');
  assert.deepEqual(
    rows.map((r) => [r.resultType ?? 'ok', r.mxIp ?? '', r.count]),
    [
      ['ok', '', 5],
      ['starttls-not-supported', '127.0.0.10', 1],
      ['starttls-not-supported', '127.0.0.9', 1],
    ],
  );
  assert.deepEqual(rows[2], { ...bad, count: 1 });
  assert.equal((await s.tlsSessions('2026-03-05'))[0].count, 1);
  const sent = {
    day: '2026-03-04',
    policyDomain: 'dest.test',
    reportId: 'r1',
    at: 5,
    destinations: [{ uri: 'mailto:a@b.test', ok: true, detail: 'queued as X' }],
  };
  await s.tlsReportSent(sent);
  await s.tlsReportSent({ ...sent, reportId: 'r2' });
  assert.deepEqual(
    await s.tlsReportsSent('2026-03-04'),
    [{ ...sent, reportId: 'r2' }],
    'one per day and domain: the last one',
  );
  await s.addReceivedTlsReport({ receivedAt: 1, queueId: 'Q1', mailFrom: 'a@b.test', content: '{}', problem: 'bad' });
  await s.addReceivedTlsReport({
    receivedAt: 2,
    queueId: 'Q2',
    mailFrom: '',
    organization: 'O',
    reportId: 'x',
    content: '{"a":1}',
  });
  assert.deepEqual(await s.receivedTlsReports(10), [
    { receivedAt: 2, queueId: 'Q2', mailFrom: '', organization: 'O', reportId: 'x', content: '{"a":1}' },
    { receivedAt: 1, queueId: 'Q1', mailFrom: 'a@b.test', content: '{}', problem: 'bad' },
  ]);
  await s.close();
});
