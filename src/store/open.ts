// Owns: choosing the store backend from configuration (SQLite in dataDir for now).
import type { Store } from './types.ts';
import { SqliteStore } from './sqlite/index.ts';

export function openStore(dataDir: string): Store {
  return new SqliteStore(dataDir);
}
