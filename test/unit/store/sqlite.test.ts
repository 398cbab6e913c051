// The SQLite backend: the shared conformance suite, plus what only SQLite has.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { queueFile, SqliteStore, sqliteMigrationStatus } from '../../../src/store/sqlite/index.ts';
import { migrations } from '../../../src/store/sqlite/schema.ts';
import { storeConformance } from './conformance.ts';

const dir = () => mkdtempSync(path.join(os.tmpdir(), 'pc-store-'));

storeConformance('sqlite', {
  async fresh() {
    const d = dir();
    return { store: new SqliteStore(d), reopen: async () => new SqliteStore(d) };
  },
});

test('sqlite: migrations are versioned by user_version and reported without writing', async () => {
  const d = dir();
  const none = sqliteMigrationStatus(d);
  assert.equal(none.migrations.length, migrations.length);
  assert.ok(none.migrations.every((m) => !m.applied));
  assert.equal(existsSync(queueFile(d)), false, 'the status creates no queue');
  const s = new SqliteStore(d);
  const all = await s.migrationStatus();
  assert.ok(all.migrations.every((m) => m.applied));
  assert.deepEqual(all.unknown, []);
  assert.equal(all.location, queueFile(d));
  await s.close();
});
