// Owns: the connection to a PostgreSQL server: the pool (bigint as number, bounded connect and
// query times, read-only sessions for reading commands), the start-up checks of the server's
// durability settings, and the versioned migrations under an advisory lock (nodes that start
// together apply each migration once).
// Promise: an error that leaves here names the server by its URL without the password; a pool
// whose idle connection breaks logs it (store.connectionError) and reconnects on the next use,
// it never takes the process down.
import pg from 'pg';
import { AdminError } from '../../errors.ts';
import { emit } from '../../events.ts';
import { redactUrl } from '../../util/secret-url.ts';
import type { MigrationStatus } from '../migrations.ts';
import { migrations } from './schema.ts';

/** pg_advisory_xact_lock key for migrations: "portcullis schema" (any fixed 64-bit number). */
const MIGRATION_LOCK = 0x706f7274637573n.toString();

/** The text of a driver or socket error (an AggregateError of several addresses has none of its own). */
export function errorText(e: unknown): string {
  const err = e as (Error & { errors?: Error[] }) | null | undefined;
  if (err?.message) return err.message;
  if (Array.isArray(err?.errors) && err.errors.length) return err.errors.map((x) => x.message).join('; ');
  return String(e);
}

/** A PostgreSQL failure, with the server named safely; `code` is the SQLSTATE or the Node error code. */
export class PostgresError extends Error {
  readonly code: string;
  constructor(location: string, e: unknown) {
    const err = e as (Error & { code?: string; errors?: (Error & { code?: string })[] }) | null | undefined;
    super(`PostgreSQL store ${location}: ${errorText(e)}`);
    this.name = 'PostgresError';
    this.code = typeof err?.code === 'string' ? err.code : (err?.errors?.[0]?.code ?? 'PG_ERROR');
  }
}

/** bigint (ids, times in ms, counts) as a JS number: every value we store is below 2^53. */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === 20
      ? (v: string) => Number(v)
      : pg.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
};

export interface PoolOptions {
  poolSize: number;
  readonly: boolean;
  /** How long a new connection may take (default 10 s): the longest a write waits while the server is unreachable. */
  connectTimeoutMs?: number;
}

export function createPool(url: string, o: PoolOptions): pg.Pool {
  const location = redactUrl(url);
  const pool = new pg.Pool({
    connectionString: url,
    max: o.poolSize,
    types,
    application_name: 'portcullis',
    connectionTimeoutMillis: o.connectTimeoutMs ?? 10_000,
    query_timeout: 120_000,
    keepAlive: true,
    // Statements sent before earlier ones are answered (one round trip for a group commit's
    // single-statement writes: index.ts runTx); each keeps its own Sync, so an error fails only
    // its statement (and, inside a transaction, what follows it in that transaction).
    pipeline: true,
    idleTimeoutMillis: 30_000,
    ...(o.readonly ? { options: '-c default_transaction_read_only=on' } : {}),
  });
  pool.on('error', (e) => emit({ event: 'store.connectionError', location, error: e.message }));
  return pool;
}

/** A pooled connection with an 'error' listener while it is checked out (a broken socket between queries). */
export async function checkout(
  pool: pg.Pool,
  location: string,
): Promise<{ client: pg.PoolClient; release: (broken?: boolean) => void }> {
  let client: pg.PoolClient;
  try {
    client = await pool.connect();
  } catch (e) {
    throw new PostgresError(location, e);
  }
  const onError = (e: Error) => emit({ event: 'store.connectionError', location, error: e.message });
  client.on('error', onError);
  return {
    client,
    release: (broken = false) => {
      client.off('error', onError);
      client.release(broken);
    },
  };
}

/** The first connection: an AdminError naming the server and the fix when it cannot be made. */
export async function connectOrExplain(
  pool: pg.Pool,
  location: string,
): Promise<{ client: pg.PoolClient; release: (broken?: boolean) => void }> {
  try {
    await (await pool.connect()).release();
  } catch (e) {
    throw new AdminError(
      `cannot connect to the PostgreSQL store ${location}: ${errorText(e)}`,
      'check that the server runs and accepts connections from this host (pg_hba.conf), and the user, password ' +
        'and database in store.url (or PORTCULLIS_STORE_URL)',
      1,
    );
  }
  return checkout(pool, location);
}

/**
 * Refuse a server that does not sync commits to disk (fsync = off: a crash can corrupt the whole
 * database); for synchronous_commit = off warn, and return true: our writes then set it on for
 * their own transactions (a commit is durable before we answer 250).
 */
export async function checkDurability(client: pg.PoolClient, location: string): Promise<{ forceSyncCommit: boolean }> {
  const fsync = (await client.query<{ fsync: string }>('SHOW fsync')).rows[0].fsync;
  if (fsync !== 'on') {
    throw new AdminError(
      `the PostgreSQL server of the store ${location} runs with fsync = ${fsync}: a crash of that server can lose ` +
        `or corrupt accepted mail`,
      'set fsync = on in its postgresql.conf (or `ALTER SYSTEM SET fsync = on; SELECT pg_reload_conf();`), then ' +
        'start Portcullis again',
      1,
    );
  }
  const sync = (await client.query<{ synchronous_commit: string }>('SHOW synchronous_commit')).rows[0]
    .synchronous_commit;
  if (sync === 'off') {
    emit({
      event: 'store.warning',
      location,
      setting: 'synchronous_commit',
      value: sync,
      message:
        'synchronous_commit is off for this database: Portcullis turns it on for its own write transactions (mail ' +
        'is answered 250 only after the commit is on disk); other applications on this server may lose their last ' +
        'commits in a crash. Set synchronous_commit = on (postgresql.conf, ALTER DATABASE or ALTER ROLE) to ' +
        'silence this warning.',
    });
    return { forceSyncCommit: true };
  }
  return { forceSyncCommit: false };
}

type Applied = Map<number, string>;

async function applied(client: pg.PoolClient): Promise<Applied | null> {
  const t = (await client.query<{ t: string | null }>(`SELECT to_regclass('schema_migrations')::text AS t`)).rows[0].t;
  if (!t) return null;
  const rows = (
    await client.query<{ version: number; applied_at: Date }>(
      'SELECT version, applied_at FROM schema_migrations ORDER BY version',
    )
  ).rows;
  return new Map(rows.map((r) => [r.version, r.applied_at.toISOString()]));
}

export async function migrationStatus(client: pg.PoolClient, location: string): Promise<MigrationStatus> {
  const done = (await applied(client)) ?? new Map<number, string>();
  return {
    store: 'postgres',
    location,
    unknown: [...done.keys()].filter((v) => v > migrations.length),
    migrations: migrations.map((m, i) => ({
      version: i + 1,
      name: m.name,
      applied: done.has(i + 1),
      ...(done.has(i + 1) ? { appliedAt: done.get(i + 1) } : {}),
    })),
  };
}

/** A schema written by a newer Portcullis: refuse rather than misread it. */
export function assertKnownSchema(s: MigrationStatus): void {
  if (s.unknown.length) {
    throw new AdminError(
      `the PostgreSQL store ${s.location} has schema version ${Math.max(...s.unknown)}, newer than this ` +
        `Portcullis knows (${migrations.length}): a newer version has upgraded it`,
      'upgrade Portcullis on this node to the version the other nodes run',
      1,
    );
  }
}

/**
 * Apply the pending migrations in one transaction under the migration lock; returns the versions
 * applied. An up-to-date schema is left alone without any DDL, so a role that may only read and
 * write the tables can start a node once the schema is in place.
 */
export async function migrate(client: pg.PoolClient, location: string): Promise<number[]> {
  try {
    const now = await migrationStatus(client, location);
    assertKnownSchema(now);
    if (now.migrations.every((m) => m.applied)) return [];
  } catch (e) {
    if (e instanceof AdminError) throw e;
    throw new PostgresError(location, e);
  }
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    const status = await migrationStatus(client, location); // again, under the lock: another node may have applied them
    assertKnownSchema(status);
    const todo = status.migrations.filter((m) => !m.applied);
    for (const m of todo) {
      await client.query(migrations[m.version - 1].sql);
      await client.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
    }
    await client.query('COMMIT');
    return todo.map((m) => m.version);
  } catch (e) {
    await client.query('ROLLBACK').catch(() => undefined);
    if (e instanceof AdminError) throw e;
    throw new PostgresError(location, e);
  }
}
