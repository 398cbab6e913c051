// Owns: moving the SQLite queue's WAL checkpoints off the event loop. SQLite's automatic checkpoint
// runs inside the commit that crosses `wal_autocheckpoint` pages: on the event loop, copying pages
// and fsyncing queue.sqlite while every session of the process waits (the profile's multi-ms
// stalls). The checkpointer turns that off on the writing connection and runs the checkpoints in a
// thread of their own on a timer: its own connection, `wal_checkpoint(PASSIVE)` (never waits for a
// writer or a reader, never blocks one; one that finds another process's checkpoint running is
// skipped). The thread is a few lines of plain JavaScript (THREAD), so it runs the same from the
// built files and under the TypeScript loader of the tests, which worker threads do not inherit.
// A PASSIVE checkpoint copies the frames but never starts the WAL over: SQLite writes from the
// start of the file again only when a write transaction begins while every frame is copied, and
// under steady load a commit always lands while the thread copies, so the WAL grew without end
// (1.2 GB in 12 s of a flat-out store, 234 MB at 400 messages a second). So the writer keeps an
// automatic checkpoint of its own, at RESTART_FRAMES instead of SQLite's 1,000: once the WAL holds
// that many, the commit that crosses it copies what the thread has not copied yet (the frames of
// its last INTERVAL_MS at most), and its next transaction writes from the start of the file. (A
// RESTART checkpoint in the thread never got the write lock from a busy writer.) The writer's
// `journal_size_limit` gives back the space of a WAL that grew larger.
// Promises: the WAL is always checkpointed by someone: when the thread cannot start or dies, the
// writing connection's automatic checkpoint is switched back on at once (and an event says so); a
// checkpoint that fails (a full disk) is tried again on the next tick, reported at most once a
// minute, as is a WAL above four times RESTART_FRAMES (a reader that keeps an old snapshot open
// holds it from starting over). Durability is untouched: a checkpoint only copies committed pages; commits still fsync
// the WAL.
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import { emit } from '../../events.ts';

/** SQLite's default: the writer checkpoints after this many WAL pages (when the thread is not running). */
const AUTO_PAGES = 1000;
/** How often the thread checkpoints. */
const INTERVAL_MS = 100;
/** WAL frames (pages) past which the writer checkpoints the rest and starts the WAL over (40 MB of 4 KiB pages). */
export const RESTART_FRAMES = 10_000;
/** The writer truncates a WAL that grew past this when it starts it over (bytes). */
export const WAL_SIZE_LIMIT = 64 * 1024 * 1024;

/** The thread: checkpoint every intervalMs, report each that copied new frames, stop when told. */
const THREAD = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file, { fileMustExist: true });
db.pragma('busy_timeout = 0');
const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
let last = { log: 0, checkpointed: 0 };
const timer = setInterval(() => {
  try {
    const r = checkpoint.get();
    if (r.log >= 4 * workerData.restartFrames) parentPort.postMessage({ kind: 'large', log: r.log });
    // Only a checkpoint that copied new frames is worth waking the event loop for.
    if (r.checkpointed > 0 && (r.log !== last.log || r.checkpointed !== last.checkpointed))
      parentPort.postMessage({ kind: 'checkpoint', log: r.log, checkpointed: r.checkpointed });
    last = r;
  } catch (e) {
    // Busy: another process checkpoints. Anything else (a full disk) is reported; the next try may work.
    if (e.code !== 'SQLITE_BUSY') parentPort.postMessage({ kind: 'error', code: e.code, message: e.message });
  }
}, workerData.intervalMs);
parentPort.on('message', (m) => {
  if (m.kind !== 'stop') return;
  clearInterval(timer);
  db.close();
  parentPort.close();
});
`;
const driver = createRequire(import.meta.url).resolve('better-sqlite3');

export class Checkpointer {
  private worker: Worker | undefined;
  private stopping = false;
  /** Checkpoints the thread has run (for tests). */
  checkpoints = 0;
  /** When a failed checkpoint was last reported (at most one event a minute). */
  private reported = 0;

  constructor(
    private readonly db: Database.Database,
    private readonly file: string,
    intervalMs = INTERVAL_MS,
    restartFrames = RESTART_FRAMES,
  ) {
    try {
      this.worker = new Worker(THREAD, {
        eval: true,
        workerData: { driver, file, intervalMs, restartFrames },
      });
    } catch (e) {
      this.fallBack(e);
      return;
    }
    this.db.pragma(`wal_autocheckpoint = ${restartFrames}`);
    this.worker.unref();
    this.worker.on('message', (m: { kind: string; message?: string; log?: number }) => {
      if (m.kind === 'checkpoint') this.checkpoints++;
      else if (m.kind === 'large')
        this.report(
          `the write-ahead log holds ${m.log} pages and cannot be started over: a connection keeps an old ` +
            'snapshot open (a long transaction of another process)',
        );
      else if (m.kind === 'error') this.report(m.message ?? 'unknown error');
    });
    this.worker.on('error', (e) => this.fallBack(e));
    this.worker.on('exit', () => {
      if (!this.stopping) this.fallBack(new Error('the checkpoint thread exited'));
    });
  }

  /** A checkpoint problem, reported at most once a minute. */
  private report(reason: string): void {
    if (Date.now() - this.reported < 60_000) return;
    this.reported = Date.now();
    emit({ event: 'store.checkpointer.failed', location: this.file, reason });
  }

  /** The writer checkpoints by itself again (the thread is gone or never started). */
  private fallBack(e: unknown): void {
    if (this.stopping || !this.db.open) return;
    this.worker = undefined;
    this.db.pragma(`wal_autocheckpoint = ${AUTO_PAGES}`);
    emit({
      event: 'store.checkpointer.stopped',
      location: this.file,
      reason: e instanceof Error ? e.message : String(e),
      fallback: 'the queue checkpoints on commit again',
    });
  }

  /** Stop the thread (before the connection closes: closing checkpoints the rest). */
  async stop(): Promise<void> {
    this.stopping = true;
    const w = this.worker;
    this.worker = undefined;
    if (!w) return;
    w.ref(); // keep the process up until the thread has closed its connection
    const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
    w.postMessage({ kind: 'stop' });
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000).unref())]);
    await w.terminate();
  }
}
