// Owns: trace retention. Done messages (delivered, failed, deleted by an administrator) keep
// their envelope, recipients and trace for trace.retentionDays, then are forgotten: a sweep at
// start and every hour, in batches, bounded in count per sweep (what is left goes next time).
// Failure: a failed sweep is logged and tried again at the next interval; it never touches a
// message that is still queued, and never delays delivery (each batch is one short write).
import { emit } from '../events.ts';
import type { Store } from '../store/types.ts';
import { errorDetail } from '../util/errors.ts';

export interface RetentionLimits {
  /** Messages forgotten per write. */
  batch: number;
  /** Batches per sweep; when a sweep ends with more to do, the next one comes sooner. */
  maxBatches: number;
  intervalMs: number;
  /** Delay before the next sweep when the previous one stopped at maxBatches. */
  backlogMs: number;
}

const DAY = 86_400_000;

export class TraceRetention {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;

  constructor(
    private readonly store: Store,
    private readonly retentionDays: () => number,
    private readonly limits: RetentionLimits = {
      batch: 500,
      maxBatches: 100,
      intervalMs: 3_600_000,
      backlogMs: 60_000,
    },
  ) {}

  /** Sweep now (start-up), then every interval. */
  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      const run = this.sweep().then(
        (r) => this.schedule(r.more ? this.limits.backlogMs : this.limits.intervalMs),
        (e: unknown) => {
          emit({ event: 'internal.error', where: 'trace retention', error: errorDetail(e) });
          this.schedule(this.limits.intervalMs);
        },
      );
      this.running = run;
    }, ms);
    this.timer.unref();
  }

  /** Forget done messages that finished more than retentionDays before `now`; at most maxBatches × batch. */
  async sweep(now = Date.now()): Promise<{ removed: number; more: boolean }> {
    const before = now - this.retentionDays() * DAY;
    let removed = 0;
    let more = false;
    for (let i = 0; i < this.limits.maxBatches && !this.stopped; i++) {
      const n = await this.store.purgeDone(before, this.limits.batch);
      removed += n;
      more = n === this.limits.batch;
      if (!more) break;
    }
    if (removed) emit({ event: 'trace.expired', removed, finishedBefore: new Date(before).toISOString(), more });
    return { removed, more };
  }

  /** No new sweep; waits for the one in progress (it stops after its current batch). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running?.catch(() => undefined);
  }
}
