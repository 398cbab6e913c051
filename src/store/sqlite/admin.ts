// Owns: the SQLite statements of the admin centre's tables (admin_tokens, audit_log,
// report_counts). SqliteStore calls these: reads directly, writes inside its group commit.
// Promise: column names in report queries come from a fixed list, never from the caller's text.
import type Database from 'better-sqlite3';
import type {
  AdminToken,
  AuditEntry,
  AuditFilter,
  NewAdminToken,
  ReportCount,
  ReportDim,
  ReportQuery,
  ReportSum,
} from '../types.ts';
import { REPORT_DIMS, toAudit, toReportSum, toToken, type Row } from '../rows.ts';

export class SqliteAdminTables {
  private readonly st;

  constructor(private readonly db: Database.Database) {
    this.st = {
      insToken: db.prepare(
        `INSERT INTO admin_tokens (id, name, org, hash, created_at, created_by) VALUES (@id, @name, @org, @hash, ` +
          `@createdAt, @createdBy)`,
      ),
      tokenByHash: db.prepare('SELECT * FROM admin_tokens WHERE hash = ? AND revoked_at IS NULL'),
      tokens: db.prepare('SELECT * FROM admin_tokens ORDER BY created_at, id'),
      revoke: db.prepare(
        `UPDATE admin_tokens SET revoked_at = @now WHERE revoked_at IS NULL AND (id = @key OR name = @key) RETURNING *`,
      ),
      insAudit:
        db.prepare(`INSERT INTO audit_log (ts, actor, token_id, org, action, target, target_org, result, status, detail)
        VALUES (@ts, @actor, @tokenId, @org, @action, @target, @targetOrg, @result, @status, @detail)`),
      addCount:
        db.prepare(`INSERT INTO report_counts (kind, org, bucket, d1, d2, d3, d4, n) VALUES (@kind, @org, @bucket,
          @d1, @d2, @d3, @d4, @n)
        ON CONFLICT (kind, org, bucket, d1, d2, d3, d4) DO UPDATE SET n = n + excluded.n`),
      purgeCounts: db.prepare('DELETE FROM report_counts WHERE bucket < ?'),
    };
  }

  createToken(t: NewAdminToken): void {
    this.st.insToken.run({ ...t, org: t.org ?? null });
  }

  tokenByHash(hash: string): AdminToken | null {
    const r = this.st.tokenByHash.get(hash) as Row | undefined;
    return r ? toToken(r) : null;
  }

  tokens(): AdminToken[] {
    return (this.st.tokens.all() as Row[]).map(toToken);
  }

  /** Names are unique among active tokens, so at most one row matches a name; ids are unique. */
  revokeToken(key: string, now: number): AdminToken | null {
    const rows = this.st.revoke.all({ key, now }) as Row[];
    return rows.length ? toToken(rows[0]) : null;
  }

  appendAudit(e: AuditEntry): number {
    return Number(
      this.st.insAudit.run({
        ts: e.ts,
        actor: e.actor,
        tokenId: e.tokenId ?? null,
        org: e.org,
        action: e.action,
        target: e.target ?? null,
        targetOrg: e.targetOrg ?? null,
        result: e.result,
        status: e.status ?? null,
        detail: e.detail ?? null,
      }).lastInsertRowid,
    );
  }

  auditLog(f: AuditFilter): (AuditEntry & { id: number })[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.org !== undefined) {
      where.push('(org = ? OR target_org = ?)');
      args.push(f.org, f.org);
    }
    if (f.since !== undefined) {
      where.push('ts >= ?');
      args.push(f.since);
    }
    if (f.until !== undefined) {
      where.push('ts <= ?');
      args.push(f.until);
    }
    if (f.action !== undefined) {
      where.push('action = ?');
      args.push(f.action);
    }
    const sql =
      `SELECT * FROM audit_log ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC ` +
      `LIMIT ? OFFSET ?`;
    return (this.db.prepare(sql).all(...args, f.limit ?? 100, f.offset ?? 0) as Row[]).map(toAudit);
  }

  addReportCounts(rows: readonly ReportCount[]): void {
    for (const r of rows)
      this.st.addCount.run({
        kind: r.kind,
        org: r.org,
        bucket: r.bucket,
        d1: r.d1 ?? '',
        d2: r.d2 ?? '',
        d3: r.d3 ?? '',
        d4: r.d4 ?? '',
        n: r.n,
      });
  }

  sumReportCounts(q: ReportQuery): ReportSum[] {
    const by = REPORT_DIMS.filter((d) => q.by.includes(d));
    const width = Math.trunc(q.bucketMs ?? 0);
    const col = (d: ReportDim) => (d === 'bucket' && width > 0 ? `(bucket / ${width}) * ${width}` : d);
    const cols = by.map((d) => `${col(d)} AS ${d}`);
    if (q.d1In && !q.d1In.length) return [];
    // d1 IN (…) in chunks below SQLite's variable limit; sums never span chunks when d1 is grouped.
    const chunks = q.d1In
      ? Array.from({ length: Math.ceil(q.d1In.length / 5000) }, (_, i) => q.d1In!.slice(i * 5000, (i + 1) * 5000))
      : [null];
    if (chunks.length > 1 && !by.includes('d1'))
      throw new Error('sumReportCounts: more than 5000 d1 values need d1 in `by`');
    const rows = chunks.flatMap((chunk) => {
      const sql = `SELECT ${[...cols, 'sum(n) AS n'].join(', ')} FROM report_counts
        ${chunk ? 'INDEXED BY report_counts_d1 ' : ''}WHERE kind = ? AND org =
          ?${chunk ? ` AND d1 IN (${chunk.map(() => '?').join(', ')})` : ''} AND bucket >= ? AND bucket <
            ?${by.length ? ` GROUP BY ${by.map((d) => col(d)).join(', ')}` : ''}`;
      return this.db.prepare(sql).all(q.kind, q.org, ...(chunk ?? []), q.from, q.until) as Row[];
    });
    return rows.filter((r) => r.n !== null).map((r) => toReportSum(r, by));
  }

  purgeReportCounts(before: number): number {
    return this.st.purgeCounts.run(before).changes;
  }
}
