// Owns: the PostgreSQL statements of the admin centre's tables (admin_tokens, audit_log,
// report_counts) and of "bounce now". PostgresStore calls these: writes inside its group commit
// (on the transaction's connection), reads on the pool.
// Promise: column names in report queries come from a fixed list, never from the caller's text;
// d1In is one array parameter, so any number of values is one statement.
import type pg from 'pg';
import { REPORT_DIMS, toAudit, toReportSum, toToken, type Row } from '../rows.ts';
import type {
  AdminToken,
  AuditEntry,
  AuditFilter,
  BounceResult,
  NewAdminToken,
  ReportCount,
  ReportDim,
  ReportQuery,
  ReportSum,
} from '../types.ts';

/** A read on the pool. */
export type Read = (text: string, values?: unknown[]) => Promise<Row[]>;

export async function createToken(c: pg.PoolClient, t: NewAdminToken): Promise<void> {
  await c.query(
    'INSERT INTO admin_tokens (id, name, org, hash, created_at, created_by) VALUES ($1, $2, $3, $4, $5, $6)',
    [t.id, t.name, t.org ?? null, t.hash, t.createdAt, t.createdBy],
  );
}

export async function tokenByHash(read: Read, hash: string): Promise<AdminToken | null> {
  const rows = await read('SELECT * FROM admin_tokens WHERE hash = $1 AND revoked_at IS NULL', [hash]);
  return rows.length ? toToken(rows[0]) : null;
}

export async function tokens(read: Read): Promise<AdminToken[]> {
  return (await read('SELECT * FROM admin_tokens ORDER BY created_at, id')).map(toToken);
}

/** Names are unique among active tokens, so at most one row matches a name; ids are unique. */
export async function revokeToken(c: pg.PoolClient, key: string, now: number): Promise<AdminToken | null> {
  const { rows } = await c.query<Row>(
    'UPDATE admin_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND (id = $2 OR name = $2) RETURNING *',
    [now, key],
  );
  return rows.length ? toToken(rows[0]) : null;
}

export async function appendAudit(c: pg.PoolClient, e: AuditEntry): Promise<number> {
  const { rows } = await c.query<{ id: number }>(
    `INSERT INTO audit_log (ts, actor, token_id, org, action, target, target_org, result, status, detail)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id`,
    [
      e.ts,
      e.actor,
      e.tokenId ?? null,
      e.org,
      e.action,
      e.target ?? null,
      e.targetOrg ?? null,
      e.result,
      e.status ?? null,
      e.detail ?? null,
    ],
  );
  return Number(rows[0].id);
}

export async function auditLog(read: Read, f: AuditFilter): Promise<(AuditEntry & { id: number })[]> {
  const where: string[] = [];
  const args: unknown[] = [];
  const arg = (v: unknown) => {
    args.push(v);
    return `$${args.length}`;
  };
  if (f.org !== undefined) {
    const o = arg(f.org);
    where.push(`(org = ${o} OR target_org = ${o})`);
  }
  if (f.since !== undefined) where.push(`ts >= ${arg(f.since)}`);
  if (f.until !== undefined) where.push(`ts <= ${arg(f.until)}`);
  if (f.action !== undefined) where.push(`action = ${arg(f.action)}`);
  const sql =
    `SELECT * FROM audit_log ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC ` +
    `LIMIT ${arg(f.limit ?? 100)} OFFSET ${arg(f.offset ?? 0)}`;
  return (await read(sql, args)).map(toAudit);
}

/**
 * All rows in one statement; rows with the same key within `rows` are summed first (ON CONFLICT may touch a row once).
 */
export async function addReportCounts(c: pg.PoolClient, rows: readonly ReportCount[]): Promise<void> {
  const merged = new Map<string, ReportCount & { d1: string; d2: string; d3: string; d4: string }>();
  for (const r of rows) {
    const k = { ...r, d1: r.d1 ?? '', d2: r.d2 ?? '', d3: r.d3 ?? '', d4: r.d4 ?? '' };
    const key = JSON.stringify([k.kind, k.org, k.bucket, k.d1, k.d2, k.d3, k.d4]);
    const had = merged.get(key);
    if (had) had.n += r.n;
    else merged.set(key, k);
  }
  if (!merged.size) return;
  const all = [...merged.values()];
  await c.query(
    `INSERT INTO report_counts (kind, org, bucket, d1, d2, d3, d4, n)
      SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::bigint[])
    ON CONFLICT (kind, org, bucket, d1, d2, d3, d4) DO UPDATE SET n = report_counts.n + excluded.n`,
    [
      all.map((r) => r.kind),
      all.map((r) => r.org),
      all.map((r) => r.bucket),
      all.map((r) => r.d1),
      all.map((r) => r.d2),
      all.map((r) => r.d3),
      all.map((r) => r.d4),
      all.map((r) => r.n),
    ],
  );
}

export async function sumReportCounts(read: Read, q: ReportQuery): Promise<ReportSum[]> {
  if (q.d1In && !q.d1In.length) return [];
  const by = REPORT_DIMS.filter((d) => q.by.includes(d));
  const width = Math.trunc(q.bucketMs ?? 0);
  const col = (d: ReportDim) => (d === 'bucket' && width > 0 ? `(bucket / ${width}) * ${width}` : d);
  const args: unknown[] = [q.kind, q.org, q.from, q.until];
  if (q.d1In) args.push([...q.d1In]);
  const sql = `SELECT ${[...by.map((d) => `${col(d)} AS ${d}`), 'sum(n) AS n'].join(', ')} FROM report_counts
    WHERE kind = $1 AND org = $2${q.d1In ? ' AND d1 = ANY($5::text[])' : ''} AND bucket >= $3 AND bucket <
      $4${by.length ? ` GROUP BY ${by.map(col).join(', ')}` : ''}`;
  return (await read(sql, args)).filter((r) => r.n !== null).map((r) => toReportSum(r, by));
}

export async function purgeReportCounts(c: pg.PoolClient, before: number): Promise<number> {
  return (await c.query('DELETE FROM report_counts WHERE bucket < $1', [before])).rowCount ?? 0;
}

/** "Bounce now" (Store.requestBounce): due at once with who asked, and a trace event; the lease, if any, is dropped. */
export async function requestBounce(c: pg.PoolClient, id: string, by: string, now: number): Promise<BounceResult> {
  const msg = (await c.query<Row>('SELECT state, lease_until FROM messages WHERE id = $1 FOR UPDATE', [id])).rows[0] as
    Row | undefined;
  if (!msg) return { requested: false, why: 'unknown' };
  if (msg.state === 'done') return { requested: false, why: 'finished' };
  if (msg.state === 'active' && (msg.lease_until as number) >= now) return { requested: false, why: 'inDelivery' };
  const { rows } = await c.query<{ n: number }>(
    `WITH m AS (UPDATE messages SET bounce_by = $2, state = 'deferred', next_attempt_at = $3, updated_at = $3,
        lease_owner = NULL, lease_until = NULL WHERE id = $1),
      e AS (INSERT INTO events (msg_id, ts, kind, data) VALUES ($1, $3, 'bounceRequested', $4))
    SELECT count(*) AS n FROM recipients WHERE msg_id = $1 AND status IN ('pending', 'deferred')`,
    [id, by, now, JSON.stringify({ by, state: msg.state })],
  );
  return { requested: true, recipients: Number(rows[0].n) };
}
