// Owns: queue states, leases, retry backoff and expiry. Claims due messages from the store,
// hands each recipient to its delivery agent by route, and records the outcomes.
// Promise: a message leaves the queue only when every recipient is delivered or failed; a
// crash at any point leaves it leased, and the lease expires (or is released at start-up).
import type { Config } from '../config/load.ts';
import { emit } from '../events.ts';
import type { Outcome } from '../delivery/classify.ts';
import type { MaildirDelivery } from '../delivery/maildir.ts';
import type { QueueMessage, RecipientOutcome, Store } from '../store/types.ts';
import { sessionId } from '../util/ids.ts';

export interface Agents {
  local: MaildirDelivery;
}

/** Seconds to wait before attempt number `attempts + 1`. */
export function retryDelay(schedule: readonly number[], attempts: number): number {
  return schedule[Math.min(Math.max(attempts - 1, 0), schedule.length - 1)];
}

export class Scheduler {
  readonly owner = `node-${sessionId()}`;
  private inflight = 0;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private again = false;
  private stopped = false;
  private idle: (() => void)[] = [];

  constructor(private readonly store: Store, private readonly agents: Agents, private readonly config: () => Config) {}

  start(): void {
    this.kick();
  }

  /** Something became due (new message, retry request): look now. */
  kick(): void {
    if (this.stopped) return;
    if (this.running) { this.again = true; return; }
    clearTimeout(this.timer);
    this.timer = undefined;
    this.running = true;
    void this.cycle().finally(() => {
      this.running = false;
      if (this.again) { this.again = false; this.kick(); }
    });
  }

  private async cycle(): Promise<void> {
    const q = this.config().queue;
    try {
      const room = q.concurrency - this.inflight;
      if (room > 0) {
        const batch = await this.store.claim(this.owner, room, q.leaseSeconds * 1000);
        for (const m of batch) {
          this.inflight++;
          void this.process(m).finally(() => {
            this.inflight--;
            this.kick();
            if (this.inflight === 0) for (const f of this.idle.splice(0)) f();
          });
        }
        if (batch.length === room) { this.again = true; return; }
      }
      if (this.inflight >= q.concurrency) return; // a finishing delivery kicks again
      const due = await this.store.nextDue();
      // Poll at least every few seconds: other processes (CLI, other nodes) change the queue too.
      const wait = due === null ? 5000 : Math.min(Math.max(due - Date.now(), 10), 5000);
      if (!this.stopped) { this.timer = setTimeout(() => this.kick(), wait); this.timer.unref(); }
    } catch (e) {
      emit({ event: 'internal.error', where: 'scheduler', error: String((e as Error)?.stack ?? e) });
      if (!this.stopped) { this.timer = setTimeout(() => this.kick(), 1000); this.timer.unref(); }
    }
  }

  private async process(m: QueueMessage): Promise<void> {
    const q = this.config().queue;
    const data = await this.store.data(m.id);
    const expired = Date.now() - m.receivedAt > q.messageExpiration * 1000;
    const outcomes: RecipientOutcome[] = [];
    for (const r of m.recipients) {
      let o: Outcome;
      if (!data) o = { status: 'deferred', reply: { code: 451, enhanced: '4.3.0', message: 'Message data missing from the queue store' } };
      else if (r.route === 'local') o = await this.agents.local.deliver(r.address, m.mailFrom, data);
      else o = { status: 'deferred', reply: { code: 451, enhanced: '4.4.0', message: 'No route for remote delivery in this version' } };
      if (o.status === 'deferred' && expired) {
        o = { status: 'failed', reply: { code: 550, enhanced: '5.4.7', message: `Delivery time expired; last error: ${o.reply.message}` } };
      }
      emit({ event: 'delivery.result', queueId: m.id, rcpt: r.address, status: o.status, agent: r.route === 'local' ? 'maildir' : 'none', code: o.reply.code, enhanced: o.reply.enhanced, reason: o.reply.reason ?? o.reply.message });
      outcomes.push({ idx: r.idx, status: o.status, reply: o.reply, agent: r.route === 'local' ? 'maildir' : 'none' });
    }
    const next = Date.now() + retryDelay(q.retrySchedule, m.attempts + 1) * 1000;
    await this.store.complete(m.id, this.owner, outcomes, next);
  }

  /** Stop claiming; wait for deliveries in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.inflight > 0) await new Promise<void>((r) => this.idle.push(r));
  }
}
