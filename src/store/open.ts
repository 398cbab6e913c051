// Owns: choosing the store backend from configuration (SQLite in dataDir for now), and how every
// caller opens it: the server creates the queue; the CLI only opens one that exists.
// Promise: opening with `readonly` or `existing` creates no file or folder; a missing queue is an
// AdminError (exit 1) saying so.
import { statSync } from 'node:fs';
import { AdminError } from '../errors.ts';
import type { Store } from './types.ts';
import { queueFile, SqliteStore, type SqliteOpenOptions } from './sqlite/index.ts';

export function openStore(dataDir: string, opts: SqliteOpenOptions = {}): Store {
  if (opts.readonly || opts.existing) {
    try {
      statSync(queueFile(dataDir));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; // not allowed to look: say that, not "no queue"
      throw new AdminError(`no queue at ${queueFile(dataDir)}: no server has run with this dataDir yet`,
        'pass the -c FILE the server runs with (its dataDir holds the queue), or start the server once with `portcullis serve`', 1);
    }
  }
  return new SqliteStore(dataDir, opts);
}
