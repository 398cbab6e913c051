// Owns: choosing the store backend from configuration (`store`: SQLite in dataDir, or
// PostgreSQL), and how every caller opens it: the server creates the queue (and applies
// migrations); the CLI only opens one that exists.
// Promise: opening with `readonly` or `existing` creates no file, folder or table; a missing queue
// is an AdminError (exit 1) saying so. Nothing here prints a store URL with its password.
import { statSync } from 'node:fs';
import { AdminError } from '../errors.ts';
import type { StoreConfig } from '../config/store.ts';
import type { Store } from './types.ts';
import type { MigrationStatus } from './migrations.ts';
import { queueFile, SqliteStore, sqliteMigrationStatus } from './sqlite/index.ts';
import { PostgresStore } from './postgres/index.ts';

export interface StoreTarget { dataDir: string; store: StoreConfig }

export interface OpenOptions {
  /** Reads only: the queue must exist and be up to date, writes are refused. */
  readonly?: boolean;
  /** Open an existing queue only: never create the folder, the file or the tables. */
  existing?: boolean;
}

function assertSqliteQueue(dataDir: string): void {
  try {
    statSync(queueFile(dataDir));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; // not allowed to look: say that, not "no queue"
    throw new AdminError(`no queue at ${queueFile(dataDir)}: no server has run with this dataDir yet`,
      'pass the -c FILE the server runs with (its dataDir holds the queue), or start the server once with `portcullis serve`', 1);
  }
}

export async function openStore(c: StoreTarget, opts: OpenOptions = {}): Promise<Store> {
  if (c.store.type === 'postgres') return PostgresStore.open(c.store.url, { ...opts, poolSize: c.store.poolSize });
  if (opts.readonly || opts.existing) assertSqliteQueue(c.dataDir);
  return new SqliteStore(c.dataDir, opts);
}

/** Applied and pending migrations of the configured store; changes nothing. */
export async function storeMigrationStatus(c: StoreTarget): Promise<MigrationStatus> {
  if (c.store.type === 'postgres') return PostgresStore.inspect(c.store.url);
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
