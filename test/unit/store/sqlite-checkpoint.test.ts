// The SQLite queue's checkpointer thread (store/sqlite/checkpointer.ts): a serving store raises the
// writer's automatic checkpoint to the restart limit and a thread of its own copies the WAL back
// (checkpoints are counted; the WAL stops growing once the thread has caught up); under steady load
// the WAL starts over at its limit; a thread that dies hands the checkpoints back to the writer;
// closing leaves no WAL behind. Without the option, nothing changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { queueFile, SqliteStore } from '../../../src/store/sqlite/index.ts';
import { Checkpointer, RESTART_FRAMES } from '../../../src/store/sqlite/checkpointer.ts';
import { msg } from './conformance.ts';

const until = async (what: string, ok: () => boolean, ms = 10_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

test('sqlite checkpointer: the serving store checkpoints in a thread, the writer only at the restart limit', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-ckpt-'));
  const store = new SqliteStore(dir, { checkpointThread: true });
  const internals = store as unknown as { db: Database.Database; checkpointer: Checkpointer };
  try {
    assert.equal(
      internals.db.pragma('wal_autocheckpoint', { simple: true }),
      RESTART_FRAMES,
      'the writer leaves all but the restart to the thread',
    );
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

test('sqlite checkpointer: under steady load the WAL starts over at its limit instead of growing without end', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-ckpt-'));
  // 500 pages (2 MB) instead of 10,000, so that a few seconds of writes cross it many times.
  const store = new SqliteStore(dir, { checkpointThread: true, walRestartFrames: 500 });
  const wal = `${queueFile(dir)}-wal`;
  let most = 0;
  let n = 0;
  const end = Date.now() + 2500;
  const lane = async (k: number) => {
    // Commits back to back from 20 lanes: one always lands while the thread copies.
    while (Date.now() < end && n < 20_000) {
      await store.enqueue({ ...msg(`CL${k}-${n++}`), data: Buffer.alloc(5000, 'x') });
      most = Math.max(most, statSync(wal).size);
    }
  };
  try {
    await Promise.all(Array.from({ length: 20 }, (_, k) => lane(k)));
    const pages = Math.round(most / 4120);
    // Without the writer's own restart the WAL held about 3 pages per message written (grew to 1.2 GB in 12 s).
    assert.ok(n * 3 > 4 * 500, `enough writes to cross the limit several times (${n} messages)`);
    assert.ok(pages < 4 * 500, `the WAL stayed near its limit: at most ${pages} pages for ${n} messages`);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
