// Owns: choosing the store backend from configuration (`store`: SQLite in dataDir, or
// PostgreSQL), how every caller opens it (the server creates the queue and applies migrations;
// the CLI only opens one that exists), and the store operations the CLI runs (migration status,
// migrate, copy into PostgreSQL, naming a store): the CLI reaches the store through here only.
// The PostgreSQL driver is loaded only when a PostgreSQL store is used.
// Promise: opening with `readonly` or `existing` creates no file, folder or table; a missing queue
// is an AdminError (exit 1) saying so. Nothing here prints a store URL with its password.
import { statSync } from 'node:fs';
import { AdminError } from '../errors.ts';
import type { StoreConfig } from '../config/store.ts';
import { redactUrl } from '../util/secret-url.ts';
import type { Store } from './types.ts';
import type { MigrationStatus } from './migrations.ts';
import { copySqliteToPostgres, type CopyCounts } from './copy.ts';
import { queueFile, SqliteStore, sqliteMigrationStatus } from './sqlite/index.ts';
import type { PostgresStore } from './postgres/index.ts';

export { sourceDataDir, type CopyCounts } from './copy.ts';
export type { MigrationStatus } from './migrations.ts';
export { queueFile } from './sqlite/index.ts';

const postgres = async (): Promise<typeof PostgresStore> => (await import('./postgres/index.ts')).PostgresStore;

export interface StoreTarget {
  dataDir: string;
  store: StoreConfig;
}

export interface OpenOptions {
  /** Reads only: the queue must exist and be up to date, writes are refused. */
  readonly?: boolean;
  /** Open an existing queue only: never create the folder, the file or the tables. */
  existing?: boolean;
  /** The serving process (`serve`, a worker): on SQLite, WAL checkpoints in a thread of their own. */
  server?: boolean;
}

function assertSqliteQueue(dataDir: string): void {
  try {
    statSync(queueFile(dataDir));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; // not allowed to look: say that, not "no queue"
    throw new AdminError(
      `no queue at ${queueFile(dataDir)}: no server has run with this dataDir yet`,
      'pass the -c FILE the server runs with (its dataDir holds the queue), or start the server once with ' +
        '`portcullis serve`',
      1,
    );
  }
}

export async function openStore(c: StoreTarget, opts: OpenOptions = {}): Promise<Store> {
  if (c.store.type === 'postgres') return (await postgres()).open(c.store.url, { ...opts, poolSize: c.store.poolSize });
  if (opts.readonly || opts.existing) assertSqliteQueue(c.dataDir);
  return new SqliteStore(c.dataDir, { ...opts, checkpointThread: opts.server });
}

/** Applied and pending migrations of the configured store; changes nothing. */
export async function storeMigrationStatus(c: StoreTarget): Promise<MigrationStatus> {
  if (c.store.type === 'postgres') return (await postgres()).inspect(c.store.url);
  return sqliteMigrationStatus(c.dataDir);
}

/**
 * Apply pending migrations now (`portcullis store migrate`); the server does the same at start.
 * The SQLite queue must exist already (the server creates it, as its service user).
 */
export async function migrateStore(c: StoreTarget): Promise<MigrationStatus> {
  const store = await openStore(c, c.store.type === 'sqlite' ? { existing: true } : {});
  try {
    return await (store as SqliteStore | PostgresStore).migrationStatus();
  } finally {
    await store.close();
  }
}

/** "sqlite DATADIR/queue.sqlite" or "postgres postgresql://user:***@host/db (url from …)". */
export function describeStore(c: StoreTarget): string {
  if (c.store.type === 'sqlite') return `sqlite ${queueFile(c.dataDir)}`;
  return `postgres ${redactUrl(c.store.url)} (url from ${c.store.urlFrom})`;
}

/** `portcullis store copy`: the SQLite queue in `dataDir` into the PostgreSQL store at `url` (see copy.ts). */
export async function copyIntoPostgres(dataDir: string, url: string, batchSize: number): Promise<CopyCounts> {
  const target = await (await postgres()).open(url, { poolSize: 2 });
  try {
    return await copySqliteToPostgres(dataDir, target, { batchSize });
  } finally {
    await target.close();
  }
}
