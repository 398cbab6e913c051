// The SQLite queue's checkpointer thread (store/sqlite/checkpointer.ts): a serving store turns the
// writer's automatic checkpoint off and a thread of its own copies the WAL back (checkpoints are
// counted; the WAL stops growing once the thread has caught up); a thread that dies hands the
// checkpoints back to the writer; closing leaves no WAL behind. Without the option, nothing changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { queueFile, SqliteStore } from '../../../src/store/sqlite/index.ts';
import { Checkpointer } from '../../../src/store/sqlite/checkpointer.ts';
import { msg } from './conformance.ts';

const until = async (what: string, ok: () => boolean, ms = 10_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

test('sqlite checkpointer: the serving store checkpoints in a thread, the writer does not', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-ckpt-'));
  const store = new SqliteStore(dir, { checkpointThread: true });
  const internals = store as unknown as { db: Database.Database; checkpointer: Checkpointer };
  try {
    assert.equal(internals.db.pragma('wal_autocheckpoint', { simple: true }), 0, 'the writer leaves it to the thread');
    for (let i = 0; i < 200; i++) await store.enqueue(msg(`CK${i}`));
    await until('the thread checkpointed', () => internals.checkpointer.checkpoints > 0);
    const wal = `${queueFile(dir)}-wal`;
    const size = statSync(wal).size;
    await store.enqueue(msg('CKlast'));
    assert.ok(statSync(wal).size <= size + 64 * 1024, 'checkpointed WAL is reused, not grown');
  } finally {
    await store.close();
  }
  assert.equal(existsSync(`${queueFile(dir)}-wal`), false, 'closing checkpoints the rest and removes the WAL');
  const plain = new SqliteStore(dir);
  try {
    const db = (plain as unknown as { db: Database.Database }).db;
    assert.equal(db.pragma('wal_autocheckpoint', { simple: true }), 1000, 'without the thread: SQLite default');
  } finally {
    await plain.close();
  }
  rmSync(dir, { recursive: true, force: true });
});

test('sqlite checkpointer: a thread that dies hands the checkpoints back to the writer', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-ckpt-'));
  const store = new SqliteStore(dir, { checkpointThread: true });
  const internals = store as unknown as {
    db: Database.Database;
    checkpointer: { worker?: { terminate(): Promise<number> } };
  };
  try {
    await internals.checkpointer.worker!.terminate();
    await until(
      'the writer checkpoints again',
      () => internals.db.pragma('wal_autocheckpoint', { simple: true }) === 1000,
    );
    await store.enqueue(msg('after'));
    assert.equal((await store.get('after'))?.state, 'incoming');
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
