// Owns: the concurrency window of each destination (next hop: a domain's MX set, or a connector's
// smart hosts), after the window of Postfix's queue manager: how many deliveries to it may run at
// once, each on one connection (pooled or new). A window starts at
// delivery.initialConnectionsPerDestination; it grows by one after a window's worth of successful
// deliveries made while it was short of the demand (a message waited longer than `waitMs` for a
// slot: the connections were not about to be free), at most one step every `growMs` (a burst
// does not open it before the receiver had a chance to push back, nor does a busy CPU that makes
// messages wait as well); under sustained demand (more than `sustained` windows' worth of
// messages went through the waiting line without it running empty) without that pause, one step
// per window's worth of successes, as Postfix grows (a burst of a few windows never does), until a
// failure; and shrinks by one at once on a connection failure or a throttling reply (421, 4.7.x)
// and by one more after each further window's worth of them. A destination is down
// (delivery.destinationDownSeconds, trouble.ts) only after a window's worth (at least the initial
// window's) of deliveries failed with every host at connection level and no host answered a
// transaction between (Slot.failedCohort), not at one refusal among deliveries that succeed. A
// message that finds the window full waits for a slot (handed over with the connection its holder
// put back in the pool) instead of opening another connection. A destination idle for `idleMs`
// starts again from the initial window. With `workers: N`, each worker's windows are its share of
// the limits (the gateway wires that in).
// Every change is reported (delivery.window).
// Promises: a delivery to a destination starts only while fewer than its window run (the window
// never below 1, never above delivery.maxConnectionsPerDestination, also after a reload lowers it;
// deliveries under way when it shrinks finish); a waiting message
// gets a slot or, after `maxWaitMs`, an answer that it is busy: it never waits forever; each
// destination has its own line, so waiting for one never holds up another; idle destinations are
// forgotten, so memory stays bounded.
import type { SmtpReply } from '../errors.ts';
import type { HostResult } from './trouble.ts';

/** What one attempt tells the window: the destination took mail, or pushed back. */
export type Feedback = 'success' | 'throttled';

/**
 * A change of a destination's window, and why (`idle`: back to the initial size after a quiet spell;
 * `limit`: a reload lowered delivery.maxConnectionsPerDestination below it).
 */
export interface WindowChange {
  destination: string;
  window: number;
  previous: number;
  reason: 'success' | 'throttled' | 'idle' | 'limit';
}

/**
 * The arithmetic of one window (Postfix's qmgr feedback with hysteresis 1): every success adds
 * 1/size and the window grows by one when that reaches 1; every failure takes 1/size off, and the
 * window shrinks at the start of each such cycle (at once on the first failure), so overload is
 * corrected quickly and growth is gradual. A change in either direction restarts the other's cycle.
 */
export class Window {
  private success = 0;
  private failure = 0;

  constructor(public size: number) {}

  /** A successful delivery; true when the window grew (never above `max`). */
  succeeded(max: number): boolean {
    if (this.size >= max) return false;
    this.success += 1 / this.size;
    // A little slack for rounding (n times 1/n may fall short of 1).
    if (this.success < 1 - 1e-9) return false;
    this.size++;
    this.success = 0;
    this.failure = 0;
    return true;
  }

  /** A connection failure or a throttling reply; true when the window shrank (never below 1). */
  throttled(): boolean {
    this.failure -= 1 / this.size;
    if (this.failure >= -1e-9) return false;
    this.failure += 1;
    this.success = 0;
    if (this.size <= 1) return false;
    this.size--;
    return true;
  }

  /** Hold the window to `max` (a reload may lower it); true when it shrank. */
  limit(max: number): boolean {
    if (this.size <= max) return false;
    this.size = Math.max(1, max);
    return true;
  }

  /** Start again from `size` (after a quiet spell). */
  reset(size: number): void {
    this.size = size;
    this.success = 0;
    this.failure = 0;
  }
}

/** Replies of a peer that pushes back (RFC 5321 §3.8 421; RFC 3463 X.7.x rate limits, greylisting). */
const OWN_TLS_CODES = new Set(['4.7.4', '4.7.5']); // our own "TLS not available/failed" (classify.ts)
const CONNECTION_LOST = new Set(['4.4.1', '4.4.2']); // no answer, timeout, closed by the peer

function throttles(r: SmtpReply): boolean {
  return (
    r.code === 421 ||
    (r.code >= 400 && r.code < 500 && /^4\.7\.\d+$/.test(r.enhanced) && !OWN_TLS_CODES.has(r.enhanced))
  );
}

/**
 * The feedback of one attempt on a host: `throttled` for a connection that failed or was lost and
 * for a 421 or 4.7.x reply at any step; `success` when the host took the message for a recipient;
 * nothing for the rest (a TLS policy failure, a recipient refused for good says nothing about load).
 */
export function feedbackOf(r: HostResult): Feedback | undefined {
  const outcomes = r.kind === 'done' ? [...r.outcomes.values()] : [r.outcome];
  if (outcomes.some((o) => o.status === 'deferred' && throttles(o.reply))) return 'throttled';
  if (r.kind === 'hostFailed' && r.level === 'connection' && CONNECTION_LOST.has(r.outcome.reply.enhanced))
    return 'throttled';
  return r.kind === 'done' && outcomes.some((o) => o.status === 'delivered') ? 'success' : undefined;
}

export interface WindowTiming {
  /** A slot not free within this long: the window is short of the demand (growth may follow). */
  waitMs: number;
  /** After a change of the window, successes count towards growing it again only after this long. */
  growMs: number;
  /** The longest a message waits for a slot before it is told the destination is busy. */
  maxWaitMs: number;
  /** A destination without deliveries for this long starts again from the initial window. */
  idleMs: number;
  /**
   * Sustained demand: once more than this many windows' worth of messages got their slot from the
   * waiting line since it was last empty, successes grow the window without the growMs pause.
   * Counted in messages, not time, so that a slow machine does not look like demand.
   */
  sustained: number;
}

export const WINDOW_TIMING: WindowTiming = {
  waitMs: 1000,
  growMs: 10_000,
  maxWaitMs: 60_000,
  idleMs: 60_000,
  sustained: 8,
};

/** A slot of a destination's window: report what the attempts showed, then release it (once). */
export interface Slot {
  kind: 'slot';
  /** The slot came from the waiting line: what was true when the message asked may have changed. */
  waited: boolean;
  feedback(f: Feedback | undefined): void;
  /**
   * A host of the destination answered a transaction (took mail, or refused or deferred it for
   * reasons of its own): the destination is reachable, its failed pseudo-cohort starts again.
   */
  reached(): void;
  /**
   * The delivery failed at connection level with every host. True when that completes a failed
   * pseudo-cohort (Postfix's destination_concurrency_failed_cohort_limit, 1): each such failure
   * counts 1/window, a success starts again from 0, and the destination is down at 1. The cohort
   * is never smaller than the gateway's initial window (not a worker's share of it): a window
   * that throttling replies shrank to 1 is not down at the next 421 after a delivery that
   * succeeded (five failures in a row with the initial window of 5; one when it is 1). A
   * transaction answered (`reached`) starts the count again.
   */
  failedCohort(): boolean;
  release(): void;
}

/** No slot came free within maxWaitMs. */
export interface Busy {
  kind: 'busy';
  window: number;
  waitedMs: number;
}

interface Waiter {
  since: number;
  grant: () => void;
}

/** One destination: its window, the deliveries running, and the messages waiting, in order. */
class Gate {
  readonly window: Window;
  busy = 0;
  readonly waiters: Waiter[] = [];
  /** Since the window last changed, a message waited longer than waitMs: successes count. */
  short = false;
  /** Messages that got their slot from the waiting line since it was last empty (sustained demand). */
  streak = 0;
  lastActive: number;
  /** When the window last changed (or was made). */
  changed: number;
  /** Deliveries that failed with every host since the last success, each 1/window (Slot.failedCohort). */
  failedCohorts = 0;

  constructor(initial: number, now: number) {
    this.window = new Window(initial);
    this.lastActive = now;
    this.changed = now;
  }

  idle(now: number, idleMs: number): boolean {
    return this.busy === 0 && !this.waiters.length && now - this.lastActive >= idleMs;
  }
}

/** The windows of every destination of this process. */
export class Windows {
  private readonly gates = new Map<string, Gate>();
  private swept: number;

  constructor(
    /**
     * The window's limits in this process; `cohort`: the smallest failed pseudo-cohort, the
     * gateway's whole initial window (a worker's limits are its share; the initial by default).
     */
    private readonly limits: () => { initial: number; max: number; cohort?: number },
    private readonly onChange: (c: WindowChange) => void,
    private readonly timing: WindowTiming = WINDOW_TIMING,
    private readonly now: () => number = Date.now,
  ) {
    this.swept = now();
  }

  /** The current window of a destination (the initial one when it has none). */
  size(destination: string): number {
    return this.gates.get(destination)?.window.size ?? this.initial();
  }

  private initial(): number {
    const { initial, max } = this.limits();
    return Math.max(1, Math.min(initial, max));
  }

  private gate(destination: string): Gate {
    const now = this.now();
    const initial = this.initial();
    let g = this.gates.get(destination);
    if (!g) {
      g = new Gate(initial, now);
      this.gates.set(destination, g);
    } else if (g.idle(now, this.timing.idleMs)) this.reset(destination, g, initial);
    g.lastActive = now; // in use: never swept while a message holds or awaits a slot
    this.clamp(destination, g);
    this.sweep(now, initial);
    return g;
  }

  /** Hold the window to the current max (a reload may have lowered it), said so when it shrinks. */
  private clamp(destination: string, g: Gate): void {
    const previous = g.window.size;
    if (g.window.limit(this.limits().max))
      this.onChange({ destination, window: g.window.size, previous, reason: 'limit' });
  }

  /** Back to the initial window after a quiet spell (reported when that is a change). */
  private reset(destination: string, g: Gate, initial: number): void {
    g.short = false;
    g.streak = 0;
    g.failedCohorts = 0;
    if (g.window.size === initial) return;
    const previous = g.window.size;
    g.window.reset(initial);
    g.changed = this.now();
    this.onChange({ destination, window: initial, previous, reason: 'idle' });
  }

  /** Forget destinations idle for idleMs: they start from the initial window (said so) when they come back. */
  private sweep(now: number, initial: number): void {
    if (now - this.swept < this.timing.idleMs) return;
    this.swept = now;
    for (const [k, g] of this.gates)
      if (g.idle(now, this.timing.idleMs)) {
        this.reset(k, g, initial);
        this.gates.delete(k);
      }
  }

  /** A slot of the destination's window: at once when the window has room, else the first to come free. */
  async acquire(destination: string): Promise<Slot | Busy> {
    const g = this.gate(destination);
    if (g.busy < g.window.size && !g.waiters.length) {
      g.busy++;
      g.streak = 0; // room without waiting: the window meets the demand
      return this.slot(destination, g, false);
    }
    const since = this.now();
    const granted = await new Promise<boolean>((resolve) => {
      const w: Waiter = {
        since,
        grant: () => {
          clearTimeout(timer);
          resolve(true);
        },
      };
      const timer = setTimeout(() => {
        const i = g.waiters.indexOf(w);
        if (i >= 0) g.waiters.splice(i, 1);
        resolve(false);
      }, this.timing.maxWaitMs);
      g.waiters.push(w);
    });
    const waitedMs = this.now() - since;
    if (waitedMs >= this.timing.waitMs) g.short = true;
    if (!granted) return { kind: 'busy', window: g.window.size, waitedMs };
    return this.slot(destination, g, true);
  }

  /** Hand free slots to the messages waiting, first come first served, within the current max. */
  private admit(destination: string, g: Gate): void {
    this.clamp(destination, g);
    while (g.busy < g.window.size && g.waiters.length) {
      g.busy++;
      g.streak++;
      g.waiters.shift()!.grant();
    }
  }

  private slot(destination: string, g: Gate, waited: boolean): Slot {
    let released = false;
    return {
      kind: 'slot',
      waited,
      feedback: (f) => {
        if (!f) return;
        const now = this.now();
        const previous = g.window.size;
        if (g.waiters.length && now - g.waiters[0].since >= this.timing.waitMs) g.short = true;
        const sustained = g.streak > this.timing.sustained * g.window.size;
        const grows = sustained || (g.short && now - g.changed >= this.timing.growMs);
        const changed = f === 'throttled' ? g.window.throttled() : grows && g.window.succeeded(this.limits().max);
        if (!changed) return;
        g.short = false;
        // Growth without the pause lasts until a failure: after one, demand has to prove itself again.
        if (f === 'throttled') g.streak = 0;
        g.changed = now;
        this.onChange({ destination, window: g.window.size, previous, reason: f });
        this.admit(destination, g);
      },
      reached: () => {
        g.failedCohorts = 0;
      },
      failedCohort: () => {
        g.failedCohorts += 1 / Math.max(g.window.size, this.limits().cohort ?? this.initial());
        if (g.failedCohorts < 1 - 1e-9) return false;
        g.failedCohorts = 0;
        return true;
      },
      release: () => {
        if (released) return;
        released = true;
        g.busy--;
        g.lastActive = this.now();
        this.admit(destination, g);
      },
    };
  }
}
