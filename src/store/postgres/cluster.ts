// Owns: the PostgreSQL statements of what the nodes share besides the queue: the memories table
// (delivery/memory.ts, once-only claims), the nodes' drain flag and the control requests for a
// node. PostgresStore calls these: writes inside its group commit (on the transaction's
// connection), reads on the pool.
// Promise: a claim is taken by one node only (INSERT … ON CONFLICT DO UPDATE … WHERE: a concurrent
// claim waits for the first one's commit and then sees its live entry); an entry that ran out is
// never returned.
import type pg from 'pg';
import { toControl, type Row } from '../rows.ts';
import type { ControlKind, ControlRequest, NodeDirectives, SharedEntry } from '../types.ts';
import type { Read } from './admin.ts';

/** Answered control requests are forgotten after a week. */
const REQUESTS_KEPT_MS = 7 * 86_400_000;

export async function memoryGet(read: Read, kind: string, key: string, now: number): Promise<SharedEntry | null> {
  const rows = await read('SELECT value, expires_at FROM memories WHERE kind = $1 AND key = $2 AND expires_at > $3', [
    kind,
    key,
    now,
  ]);
  return rows.length
    ? { value: JSON.parse(rows[0].value as string) as unknown, until: Number(rows[0].expires_at) }
    : null;
}

export async function memorySet(
  c: pg.PoolClient,
  kind: string,
  key: string,
  value: unknown,
  until: number,
  now: number,
): Promise<void> {
  if (until <= now) await c.query('DELETE FROM memories WHERE kind = $1 AND key = $2', [kind, key]);
  else
    await c.query(
      `INSERT INTO memories (kind, key, value, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT (kind, key) DO ` +
        `UPDATE SET value = excluded.value, expires_at = excluded.expires_at`,
      [kind, key, JSON.stringify(value), until],
    );
}

export async function memoryClaim(
  c: pg.PoolClient,
  kind: string,
  key: string,
  value: unknown,
  until: number,
  now: number,
): Promise<boolean> {
  const r = await c.query(
    `INSERT INTO memories (kind, key, value, expires_at) VALUES ($1, $2, $3, $4) ON CONFLICT (kind, key) DO UPDATE ` +
      `SET value = excluded.value, expires_at = excluded.expires_at WHERE memories.expires_at <= $5`,
    [kind, key, JSON.stringify(value), until, now],
  );
  return (r.rowCount ?? 0) > 0;
}

export async function memoryExpire(c: pg.PoolClient, now: number, max: number): Promise<number> {
  let n = (await c.query('DELETE FROM memories WHERE expires_at <= $1', [now])).rowCount ?? 0;
  const kinds = await c.query<{ kind: string }>('SELECT kind FROM memories GROUP BY kind HAVING count(*) > $1', [max]);
  for (const { kind } of kinds.rows)
    n +=
      (
        await c.query(
          `DELETE FROM memories WHERE kind = $1 AND key IN (SELECT key FROM memories WHERE kind = $1 ORDER BY ` +
            `expires_at DESC OFFSET $2)`,
          [kind, max],
        )
      ).rowCount ?? 0;
  return n;
}

export async function setDraining(c: pg.PoolClient, node: string, on: boolean): Promise<boolean> {
  return ((await c.query('UPDATE nodes SET draining = $1 WHERE id = $2', [on, node])).rowCount ?? 0) > 0;
}

export async function requestControl(
  c: pg.PoolClient,
  node: string,
  kind: ControlKind,
  by: string,
  now: number,
): Promise<number> {
  await c.query('DELETE FROM node_requests WHERE answered_at < $1', [now - REQUESTS_KEPT_MS]);
  const r = await c.query<{ id: number }>(
    'INSERT INTO node_requests (node, kind, requested_at, requested_by) VALUES ($1, $2, $3, $4) RETURNING id',
    [node, kind, now, by],
  );
  return Number(r.rows[0].id);
}

export async function nodeDirectives(read: Read, node: string): Promise<NodeDirectives> {
  const [flag, open] = await Promise.all([
    read('SELECT draining FROM nodes WHERE id = $1', [node]),
    read('SELECT * FROM node_requests WHERE node = $1 AND answered_at IS NULL ORDER BY id', [node]),
  ]);
  return { draining: !!flag[0]?.draining, requests: open.map(toControl) };
}

export async function answerControl(
  c: pg.PoolClient,
  id: number,
  ok: boolean,
  message: string,
  now: number,
): Promise<void> {
  await c.query('UPDATE node_requests SET answered_at = $1, ok = $2, message = $3 WHERE id = $4', [
    now,
    ok,
    message,
    id,
  ]);
}

export async function controlRequests(read: Read, ids: readonly number[]): Promise<ControlRequest[]> {
  return (await read('SELECT * FROM node_requests WHERE id = ANY($1) ORDER BY id', [ids])).map((r: Row) =>
    toControl(r),
  );
}
