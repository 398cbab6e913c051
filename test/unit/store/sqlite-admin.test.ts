// The admin centre's store cases (admin-conformance.ts) against SQLite.
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SqliteStore } from '../../../src/store/sqlite/index.ts';
import { adminStoreConformance } from './admin-conformance.ts';

adminStoreConformance('sqlite', {
  async fresh() {
    const d = mkdtempSync(path.join(os.tmpdir(), 'pc-store-admin-'));
    return { store: new SqliteStore(d), reopen: async () => new SqliteStore(d) };
  },
});
