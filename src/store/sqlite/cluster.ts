// Owns: the SQLite statements of what the processes sharing one queue share besides it: the
// memories table (delivery/memory.ts, once-only claims), the nodes' drain flag and the control
// requests for a node. SqliteStore calls these: reads directly, writes inside its group commit.
// Promise: a claim is taken by one caller only (the upsert's condition is checked under SQLite's
// single writer); an entry that ran out is never returned.
import type Database from 'better-sqlite3';
import type { ControlKind, ControlRequest, NodeDirectives, SharedEntry } from '../types.ts';
import { toControl, type Row } from '../rows.ts';

/** Answered control requests are forgotten after a week. */
const REQUESTS_KEPT_MS = 7 * 86_400_000;

export class SqliteClusterTables {
  private readonly st;

  constructor(db: Database.Database) {
    this.st = {
      get: db.prepare('SELECT value, expires_at FROM memories WHERE kind = ? AND key = ? AND expires_at > ?'),
      put: db.prepare(
        `INSERT INTO memories (kind, key, value, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT (kind, key) DO UPDATE ` +
          `SET value = excluded.value, expires_at = excluded.expires_at`,
      ),
      del: db.prepare('DELETE FROM memories WHERE kind = ? AND key = ?'),
      claim: db.prepare(
        `INSERT INTO memories (kind, key, value, expires_at) VALUES (@kind, @key, @value, @until) ON CONFLICT ` +
          `(kind, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at WHERE ` +
          `memories.expires_at <= @now`,
      ),
      expire: db.prepare('DELETE FROM memories WHERE expires_at <= ?'),
      kinds: db.prepare('SELECT kind FROM memories GROUP BY kind HAVING count(*) > ?').pluck(),
      trim: db.prepare(
        `DELETE FROM memories WHERE kind = @kind AND key IN (SELECT key FROM memories WHERE kind = @kind ORDER BY ` +
          `expires_at DESC LIMIT -1 OFFSET @max)`,
      ),
      drain: db.prepare('UPDATE nodes SET draining = ? WHERE id = ?'),
      draining: db.prepare('SELECT draining FROM nodes WHERE id = ?').pluck(),
      request: db.prepare(
        'INSERT INTO node_requests (node, kind, requested_at, requested_by) VALUES (?, ?, ?, ?) RETURNING id',
      ),
      forget: db.prepare('DELETE FROM node_requests WHERE answered_at < ?'),
      open: db.prepare('SELECT * FROM node_requests WHERE node = ? AND answered_at IS NULL ORDER BY id'),
      answer: db.prepare('UPDATE node_requests SET answered_at = ?, ok = ?, message = ? WHERE id = ?'),
      byId: db.prepare('SELECT * FROM node_requests WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id'),
    };
  }

  get(kind: string, key: string, now: number): SharedEntry | null {
    const r = this.st.get.get(kind, key, now) as { value: string; expires_at: number } | undefined;
    return r ? { value: JSON.parse(r.value) as unknown, until: r.expires_at } : null;
  }

  set(kind: string, key: string, value: unknown, until: number, now: number): void {
    if (until <= now) this.st.del.run(kind, key);
    else this.st.put.run(kind, key, JSON.stringify(value), until);
  }

  delete(kind: string, key: string): void {
    this.st.del.run(kind, key);
  }

  claim(kind: string, key: string, value: unknown, until: number, now: number): boolean {
    return this.st.claim.run({ kind, key, value: JSON.stringify(value), until, now }).changes > 0;
  }

  expire(now: number, max: number): number {
    let n = this.st.expire.run(now).changes;
    for (const kind of this.st.kinds.all(max) as string[]) n += this.st.trim.run({ kind, max }).changes;
    return n;
  }

  setDraining(node: string, on: boolean): boolean {
    return this.st.drain.run(on ? 1 : 0, node).changes > 0;
  }

  request(node: string, kind: ControlKind, by: string, now: number): number {
    this.st.forget.run(now - REQUESTS_KEPT_MS);
    return (this.st.request.get(node, kind, now, by) as { id: number }).id;
  }

  directives(node: string): NodeDirectives {
    return {
      draining: !!this.st.draining.get(node),
      requests: (this.st.open.all(node) as Row[]).map(toControl),
    };
  }

  answer(id: number, ok: boolean, message: string, now: number): void {
    this.st.answer.run(now, ok ? 1 : 0, message, id);
  }

  requests(ids: readonly number[]): ControlRequest[] {
    return (this.st.byId.all(JSON.stringify(ids)) as Row[]).map(toControl);
  }
}
