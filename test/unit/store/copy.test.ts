// store copy (src/store/copy.ts): a SQLite queue into a throwaway PostgreSQL: everything arrives
// once (messages, data of queued ones, recipients, trace events in order), a copy interrupted
// half-way completes when run again, and a queue whose write lock another process holds is refused.
// The admin centre's tokens, audit log and report counters come along, once; so do TLS-RPT's
// session counters, reports sent and received, and the MTA-STS policy cache.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { copySqliteToPostgres } from '../../../src/store/copy.ts';
import { PostgresStore } from '../../../src/store/postgres/index.ts';
import { queueFile, SqliteStore } from '../../../src/store/sqlite/index.ts';
import type { Store } from '../../../src/store/types.ts';
import { postgresMissing, startPostgres, type PgInstance } from '../../helpers/postgres.ts';
import { msg } from './conformance.ts';

const skip = postgresMissing;
let pg: PgInstance | undefined;
before(async () => {
  if (!skip) pg = await startPostgres();
});
after(async () => {
  await pg?.destroy();
});

const ok = (idx: number) => ({
  idx,
  status: 'delivered' as const,
  reply: { code: 250, enhanced: '2.0.0', message: 'ok' },
  agent: 'maildir',
});
const later = (idx: number) => ({
  idx,
  status: 'deferred' as const,
  reply: { code: 451, enhanced: '4.3.0', message: 'later' },
  agent: 'smtp',
  detail: { host: 'h' },
});

/** A stopped single-node queue: 10 messages, the even ones delivered, the odd ones deferred once; one deleted. */
async function sourceQueue(): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-copy-'));
  const s = new SqliteStore(dir);
  for (let i = 0; i < 10; i++)
    await s.enqueue({ ...msg(`Q${String(i).padStart(2, '0')}`), receivedAt: Date.now() - 10_000 + i });
  for (const m of await s.claim('A', 10, 60_000)) {
    const n = Number(m.id.slice(1));
    await s.complete(m.id, 'A', n % 2 ? [ok(0), later(1)] : [ok(0), ok(1)], Date.now() + 3_600_000, {
      delayWarned: n === 3,
    });
  }
  await s.deleteQueued('Q09', 'alice');
  await s.close();
  return dir;
}

/** Every message with its recipients, trace and data, as the store interface shows them. */
async function snapshot(s: Store): Promise<unknown[]> {
  const all = await s.list({ states: ['incoming', 'active', 'deferred', 'held', 'done'] });
  return Promise.all(
    all.map(async (m) => ({ m, trace: await s.trace(m.id), data: (await s.data(m.id))?.toString('base64') ?? null })),
  );
}

test('store copy: everything arrives once and reads the same through the store interface', { skip }, async () => {
  const dir = await sourceQueue();
  const target = await PostgresStore.open(await pg!.createDatabase());
  try {
    const counts = await copySqliteToPostgres(dir, target, { batchSize: 4 });
    assert.deepEqual(
      { ...counts, differ: counts.differ.length },
      {
        source: 10,
        messages: 10,
        bodies: 4,
        recipients: 20,
        events: 21,
        present: 0,
        differ: 0,
        tokens: 0,
        auditEntries: 0,
        reportCounts: 0,
        tlsSessions: 0,
        tlsReportsSent: 0,
        tlsReportsReceived: 0,
        stsPolicies: 0,
      },
    );
    const src = new SqliteStore(dir, { readonly: true });
    assert.deepEqual(await snapshot(target), await snapshot(src));
    await src.close();
    const again = await copySqliteToPostgres(dir, target, { batchSize: 4 });
    assert.deepEqual(
      { ...again, differ: again.differ.length },
      {
        source: 10,
        messages: 0,
        bodies: 0,
        recipients: 0,
        events: 0,
        present: 10,
        differ: 0,
        tokens: 0,
        auditEntries: 0,
        reportCounts: 0,
        tlsSessions: 0,
        tlsReportsSent: 0,
        tlsReportsReceived: 0,
        stsPolicies: 0,
      },
    );
    // The queue on PostgreSQL works on as usual: the deferred ones are claimable when due.
    assert.deepEqual((await target.claim('B', 10, 60_000, Date.now() + 3_700_000)).map((m) => m.id).sort(), [
      'Q01',
      'Q03',
      'Q05',
      'Q07',
    ]);
  } finally {
    await target.close();
  }
});

test('store copy: a copy interrupted half-way completes when run again, nothing twice', { skip }, async () => {
  const dir = await sourceQueue();
  const url = await pg!.createDatabase();
  let target = await PostgresStore.open(url);
  let batches = 0;
  await assert.rejects(
    copySqliteToPostgres(dir, target, {
      batchSize: 3,
      onBatch: () => {
        if (++batches === 2) throw new Error('killed');
      },
    }),
    /killed/,
  );
  await target.close();
  target = await PostgresStore.open(url);
  try {
    assert.equal((await target.search({ limit: 100 })).length, 6, 'two batches were committed');
    const rest = await copySqliteToPostgres(dir, target, { batchSize: 3 });
    assert.equal(rest.messages, 4);
    assert.equal(rest.present, 6);
    const src = new SqliteStore(dir, { readonly: true });
    assert.deepEqual(await snapshot(target), await snapshot(src));
    await src.close();
  } finally {
    await target.close();
  }
});

test(
  'store copy: refuses a queue whose write lock another process holds; reports messages changed after a first copy',
  { skip },
  async () => {
    const dir = await sourceQueue();
    const target = await PostgresStore.open(await pg!.createDatabase());
    try {
      const holder = new Database(queueFile(dir));
      holder.exec('BEGIN IMMEDIATE');
      await assert.rejects(
        copySqliteToPostgres(dir, target),
        /queue\.sqlite is in use: another process holds its write lock[\s\S]*fix: stop the server that uses this dataDir/,
      );
      holder.exec('ROLLBACK');
      holder.close();
      await copySqliteToPostgres(dir, target);
      const s = new SqliteStore(dir);
      await s.retryNow('Q01');
      await s.close();
      const again = await copySqliteToPostgres(dir, target);
      assert.deepEqual(
        again.differ,
        ['Q01'],
        'changed in SQLite after the copy: PostgreSQL keeps its copy, and says so',
      );
    } finally {
      await target.close();
    }
  },
);

test(
  'store copy: admin API tokens, the audit log and report counters arrive once; new audit entries follow the copied ones',
  { skip },
  async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-copy-admin-'));
    const s = new SqliteStore(dir);
    await s.createToken({ id: 'T1', name: 'ops', org: null, hash: 'h1', createdAt: 1000, createdBy: 'root' });
    await s.createToken({
      id: 'T2',
      name: 'contoso-admin',
      org: 'contoso',
      hash: 'h2',
      createdAt: 2000,
      createdBy: 'alice',
    });
    await s.revokeToken('T1', 3000);
    for (let i = 0; i < 5; i++)
      await s.appendAudit({
        ts: 100 + i,
        actor: 'ops',
        org: null,
        action: 'queue.retry',
        target: `Q${i}`,
        targetOrg: 'contoso',
        result: 'ok',
        status: 200,
      });
    const t0 = Date.UTC(2026, 0, 10);
    await s.addReportCounts(
      Array.from({ length: 7 }, (_, i) => ({
        kind: 'k',
        org: '*',
        bucket: t0 + i * 3_600_000,
        d1: 'TLSv1.3',
        n: i + 1,
      })),
    );
    await s.close();
    const target = await PostgresStore.open(await pg!.createDatabase());
    try {
      const counts = await copySqliteToPostgres(dir, target, { batchSize: 3 });
      assert.deepEqual([counts.tokens, counts.auditEntries, counts.reportCounts], [2, 5, 7]);
      const src = new SqliteStore(dir, { readonly: true });
      assert.deepEqual(await target.tokens(), await src.tokens());
      assert.deepEqual(await target.auditLog({}), await src.auditLog({}));
      await src.close();
      assert.deepEqual(await target.tokenByHash('h2'), {
        id: 'T2',
        name: 'contoso-admin',
        org: 'contoso',
        createdAt: 2000,
        createdBy: 'alice',
      });
      assert.deepEqual(
        await target.sumReportCounts({ kind: 'k', org: '*', from: t0, until: t0 + 86_400_000, by: [] }),
        [{ n: 28 }],
      );
      const again = await copySqliteToPostgres(dir, target, { batchSize: 3 });
      assert.deepEqual([again.tokens, again.auditEntries, again.reportCounts], [0, 0, 0], 'nothing twice');
      assert.deepEqual(
        await target.sumReportCounts({ kind: 'k', org: '*', from: t0, until: t0 + 86_400_000, by: [] }),
        [{ n: 28 }],
      );
      const next = await target.appendAudit({
        ts: 200,
        actor: 'ops',
        org: null,
        action: 'config.reload',
        result: 'ok',
      });
      assert.equal(next, 6, 'the audit log continues after the copied entries');
    } finally {
      await target.close();
    }
  },
);

test(
  'store copy: TLS-RPT counters, reports sent and received and cached MTA-STS policies arrive once; received ids go on',
  { skip },
  async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-copy-tlsrpt-'));
    const s = new SqliteStore(dir);
    const day = '2026-11-30';
    const sts = {
      type: 'sts' as const,
      strings: ['version: STSv1', 'mode: enforce', 'mx: mx.b.test'],
      mxHost: ['mx.b.test'],
    };
    await s.countTlsSessions([
      { day, policyDomain: 'a.test', policy: { type: 'no-policy-found' }, count: 5 },
      {
        day,
        policyDomain: 'a.test',
        policy: { type: 'no-policy-found' },
        resultType: 'starttls-not-supported',
        sendingIp: '192.0.2.1',
        mxHost: 'mx.a.test',
        mxIp: '198.51.100.1',
        reason: 'the server did not offer STARTTLS (starttls-not-offered)',
        count: 2,
      },
      { day, policyDomain: 'b.test', policy: sts, count: 3 },
      {
        day,
        policyDomain: 'b.test',
        policy: sts,
        resultType: 'validation-failure',
        mxHost: 'mx.evil.test',
        mxIp: '198.51.100.9',
        reason: 'the MX host is not one the MTA-STS policy names (sts-mx-mismatch)',
        count: 1,
      },
      { day: '2026-12-01', policyDomain: 'c.test', policy: { type: 'tlsa', strings: ['3 1 1 ab'] }, count: 7 },
    ]);
    await s.tlsReportSent({
      day,
      policyDomain: 'a.test',
      reportId: 'r-a',
      at: 1000,
      destinations: [{ uri: 'mailto:tlsrpt@a.test', ok: true, detail: 'queued as Q1' }],
    });
    await s.tlsReportSent({ day, policyDomain: 'b.test', reportId: 'r-b', at: 2000, destinations: [] });
    for (let i = 0; i < 3; i++)
      await s.addReceivedTlsReport({
        receivedAt: 100 + i,
        queueId: `R${i}`,
        mailFrom: 'reports@sender.test',
        ...(i === 2 ? { problem: 'not gzip' } : { organization: 'Sender Inc', reportId: `id-${i}` }),
        content: i === 2 ? 'garbage' : `{"report-id":"id-${i}"}`,
      });
    const policy = (domain: string, id: string) => ({
      domain,
      id,
      text: `version: STSv1\r\nmode: enforce\r\nmx: mx.${domain}\r\nmax_age: 86400\r\n`,
      fetchedAt: 5000,
      expiresAt: 5000 + 86_400_000,
    });
    await s.saveStsPolicy(policy('b.test', 'id1'));
    await s.saveStsPolicy(policy('d.test', 'id2'));
    await s.close();
    const target = await PostgresStore.open(await pg!.createDatabase());
    try {
      // A policy fetched on PostgreSQL's side meanwhile is newer: it stays.
      await target.saveStsPolicy(policy('d.test', 'id3'));
      const counts = await copySqliteToPostgres(dir, target, { batchSize: 2 });
      assert.deepEqual(
        [counts.tlsSessions, counts.tlsReportsSent, counts.tlsReportsReceived, counts.stsPolicies],
        [5, 2, 3, 1],
      );
      const src = new SqliteStore(dir, { readonly: true });
      const sorted = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).sort();
      for (const d of [day, '2026-12-01']) {
        assert.deepEqual(sorted(await target.tlsSessions(d)), sorted(await src.tlsSessions(d)));
        assert.deepEqual(sorted(await target.tlsReportsSent(d)), sorted(await src.tlsReportsSent(d)));
      }
      assert.equal((await target.tlsSessions(day)).length, 4);
      assert.deepEqual(await target.receivedTlsReports(10), await src.receivedTlsReports(10));
      assert.deepEqual(await target.stsPolicy('b.test'), await src.stsPolicy('b.test'));
      assert.equal((await target.stsPolicy('d.test'))?.id, 'id3');
      await src.close();
      const again = await copySqliteToPostgres(dir, target, { batchSize: 2 });
      assert.deepEqual(
        [again.tlsSessions, again.tlsReportsSent, again.tlsReportsReceived, again.stsPolicies],
        [0, 0, 0, 0],
        'nothing twice',
      );
      assert.equal(
        (await target.tlsSessions(day)).reduce((n, r) => n + r.count, 0),
        11,
        'counters are not added up twice',
      );
      await target.addReceivedTlsReport({ receivedAt: 200, queueId: 'R9', mailFrom: 'x@y.test', content: '{}' });
      assert.equal((await target.receivedTlsReports(10)).length, 4, 'a new received report after the copied ones');
    } finally {
      await target.close();
    }
  },
);
