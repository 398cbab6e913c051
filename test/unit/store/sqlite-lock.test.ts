// The SQLite store's group commit when another process holds the write lock (the workers of
// `workers: N` share one queue file): the commit waits without blocking the event loop (timers and
// sessions keep running), the writes arriving meanwhile join it, and everything commits once the
// lock is free. The other process is a second connection holding BEGIN IMMEDIATE.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { queueFile, SqliteStore } from '../../../src/store/sqlite/index.ts';
import { msg } from './conformance.ts';

/** A store, and another connection to its queue (another worker), removed after `f`. */
async function withOther(
  opts: ConstructorParameters<typeof SqliteStore>[1],
  f: (store: SqliteStore, other: Database.Database) => Promise<void>,
): Promise<void> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-sqlite-lock-'));
  const store = new SqliteStore(dir, opts);
  const other = new Database(queueFile(dir));
  try {
    await f(store, other);
  } finally {
    other.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('sqlite group commit: a write lock held elsewhere is waited for on timers, not on the event loop', async () => {
  await withOther({}, async (store, other) => {
    other.prepare('BEGIN IMMEDIATE').run(); // another worker is committing
    let settled = 0;
    const first = store.enqueue(msg('LOCK1')).then(() => settled++);
    // The event loop keeps turning while the lock is held: timers fire, and later writes queue up.
    // The first commit of the process included: it must not sleep in SQLite's busy handler.
    const started = Date.now();
    const ticks: number[] = [];
    for (let i = 0; i < 5; i++) {
      await new Promise((r) => setTimeout(r, 20));
      ticks.push(i);
    }
    assert.equal(ticks.length, 5, 'timers ran while the write lock was held elsewhere');
    assert.ok(Date.now() - started < 2000, `five 20 ms timers took ${Date.now() - started} ms: the loop was blocked`);
    const second = store.enqueue(msg('LOCK2')).then(() => settled++);
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(settled, 0, 'no write settles before its commit');
    other.prepare('COMMIT').run();
    await Promise.all([first, second]);
    assert.equal(settled, 2);
    assert.equal((await store.get('LOCK1'))?.state, 'incoming');
    assert.equal((await store.get('LOCK2'))?.state, 'incoming');
  });
});

test('sqlite group commit: a write fails after waiting the lock budget itself, not when the batch it joined has', async () => {
  await withOther({ lockWaitMs: 400 }, async (store, other) => {
    other.prepare('BEGIN IMMEDIATE').run();
    const early = store.enqueue(msg('BUDGET1')).then(
      () => 'committed',
      (e: { code?: string; message: string }) => `${e.code}: ${e.message}`,
    );
    await new Promise((r) => setTimeout(r, 300));
    const late = store.enqueue(msg('BUDGET2')).then(
      () => 'committed',
      (e: { code?: string }) => e.code,
    );
    assert.equal(await early, 'SQLITE_BUSY: database is locked (waited 0.4 s for the write lock)');
    other.prepare('COMMIT').run();
    assert.equal(await late, 'committed', 'it had waited a fraction of its budget when the first failed');
    assert.equal(await store.get('BUDGET1'), null, 'never committed');
    assert.equal((await store.get('BUDGET2'))?.state, 'incoming');
  });
});

test('sqlite group commit: a lease runs from the commit, not from before a wait for the lock', async () => {
  await withOther({}, async (store, other) => {
    other.prepare('BEGIN IMMEDIATE').run();
    const handed = store.enqueue({ ...msg('LEASE1'), receivedAt: Date.now() }, { owner: 'w1', ms: 200 });
    await new Promise((r) => setTimeout(r, 400)); // longer than the lease
    other.prepare('COMMIT').run();
    await handed;
    const until = other.prepare("SELECT lease_until FROM messages WHERE id = 'LEASE1'").pluck().get() as number;
    assert.ok(until > Date.now(), `the lease is still running after the commit (${until - Date.now()} ms left)`);
    const taken = await store.claim('w2', 10, 60_000);
    assert.deepEqual(
      taken.map((m) => m.id),
      [],
      'another worker cannot take the message just handed to w1',
    );
  });
});
