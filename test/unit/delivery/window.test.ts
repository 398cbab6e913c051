// The concurrency window of a destination: the feedback arithmetic (grow after a window's worth of
// successes, shrink at once on the first failure and after each further window's worth), its bounds,
// which attempts count as what, and the gate: slots, waiting in order, the wait bound, growth only
// under pressure (and under sustained demand, counted in messages), the idle reset, and destinations
// kept apart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Window,
  Windows,
  WINDOW_TIMING,
  feedbackOf,
  type Slot,
  type WindowChange,
} from '../../../src/delivery/window.ts';
import type { AttemptFacts, HostResult } from '../../../src/delivery/trouble.ts';
import type { Outcome } from '../../../src/delivery/classify.ts';

test('window: +1 after a window of successes, never above max', () => {
  const w = new Window(5);
  for (let i = 0; i < 4; i++) assert.equal(w.succeeded(20), false, `success ${i + 1} of 5`);
  assert.equal(w.succeeded(20), true);
  assert.equal(w.size, 6);
  for (let i = 0; i < 5; i++) assert.equal(w.succeeded(20), false);
  assert.equal(w.succeeded(20), true, 'six successes at six');
  assert.equal(w.size, 7);
  const top = new Window(3);
  for (let i = 0; i < 20; i++) top.succeeded(4);
  assert.equal(top.size, 4, 'held at max');
});

test('window: the first failure shrinks at once, the next only after a window of them; never below 1', () => {
  const w = new Window(5);
  assert.equal(w.throttled(), true);
  assert.equal(w.size, 4);
  for (let i = 0; i < 3; i++) assert.equal(w.throttled(), false, `failure ${i + 2}`);
  assert.equal(w.throttled(), true, 'a window (4) of failures later');
  assert.equal(w.size, 3);
  for (let i = 0; i < 50; i++) w.throttled();
  assert.equal(w.size, 1);
  assert.equal(w.throttled(), false, 'nothing below 1');
  assert.equal(w.size, 1);
});

test('window: a change restarts the other direction; limit and reset', () => {
  const w = new Window(4);
  for (let i = 0; i < 3; i++) w.succeeded(10); // 3/4 of the way to 5
  assert.equal(w.throttled(), true);
  assert.equal(w.size, 3);
  for (let i = 0; i < 2; i++) assert.equal(w.succeeded(10), false, 'successes before the failure no longer count');
  assert.equal(w.succeeded(10), true);
  assert.equal(w.size, 4);
  assert.equal(w.limit(2), true);
  assert.equal(w.size, 2);
  assert.equal(w.limit(2), false);
  w.reset(5);
  assert.equal(w.size, 5);
  assert.equal(w.throttled(), true, 'reset: the next failure starts a new cycle');
});

const facts: AttemptFacts = {
  host: 'mx.example.test',
  port: 25,
  tlsRequired: { level: 'opportunistic', source: 'default' },
  tlsAchieved: 'none',
};
const out = (status: Outcome['status'], code: number, enhanced: string): Outcome => ({
  status,
  reply: { code, enhanced, message: 'x' },
});
const done = (...o: Outcome[]): HostResult => ({
  kind: 'done',
  outcomes: new Map(o.map((x, i) => [i, x])),
  attempt: facts,
});
const failed = (o: Outcome, level: 'connection' | 'transaction' = 'connection'): HostResult => ({
  kind: 'hostFailed',
  outcome: o,
  attempt: facts,
  level,
});

test('feedback: delivered is success; 421, 4.7.x and lost connections throttle; the rest says nothing', () => {
  assert.equal(feedbackOf(done(out('delivered', 250, '2.0.0'))), 'success');
  assert.equal(feedbackOf(done(out('delivered', 250, '2.0.0'), out('failed', 550, '5.1.1'))), 'success');
  assert.equal(feedbackOf(done(out('delivered', 250, '2.0.0'), out('deferred', 450, '4.7.1'))), 'throttled');
  assert.equal(feedbackOf(failed(out('deferred', 421, '4.3.2'))), 'throttled', '421 greeting');
  assert.equal(feedbackOf(failed(out('deferred', 451, '4.7.0'), 'transaction')), 'throttled', '4.7.0 to MAIL');
  assert.equal(feedbackOf(failed(out('deferred', 451, '4.4.1'))), 'throttled', 'no answer');
  assert.equal(feedbackOf(failed(out('deferred', 451, '4.4.2'))), 'throttled', 'closed, timeout');
  assert.equal(feedbackOf(failed(out('deferred', 451, '4.7.5'))), undefined, 'our TLS policy failure');
  assert.equal(feedbackOf(failed(out('deferred', 451, '4.7.4'))), undefined, 'STARTTLS not offered');
  assert.equal(feedbackOf(done(out('failed', 550, '5.1.1'))), undefined, 'unknown user');
  assert.equal(feedbackOf(done(out('deferred', 452, '4.2.2'))), undefined, 'mailbox full');
  assert.equal(feedbackOf(failed(out('failed', 554, '5.7.1'), 'transaction')), undefined, 'permanent refusal');
});

/** A gate with a clock of its own; waits are real timers, short ones. */
function gate(
  o: {
    initial?: number;
    max?: number;
    cohort?: number;
    waitMs?: number;
    growMs?: number;
    maxWaitMs?: number;
    idleMs?: number;
  } = {},
) {
  const changes: WindowChange[] = [];
  let now = 1_000_000;
  const limits = { initial: o.initial ?? 2, max: o.max ?? 4, ...(o.cohort ? { cohort: o.cohort } : {}) };
  const w = new Windows(
    () => limits,
    (c) => changes.push(c),
    {
      waitMs: o.waitMs ?? 0,
      growMs: o.growMs ?? 0,
      maxWaitMs: o.maxWaitMs ?? 2000,
      idleMs: o.idleMs ?? 60_000,
      sustained: WINDOW_TIMING.sustained,
    },
    () => now,
  );
  return { w, changes, limits, advance: (ms: number) => (now += ms) };
}

const slot = (s: Slot | { kind: 'busy' }): Slot => {
  assert.equal(s.kind, 'slot');
  return s as Slot;
};

test('gate: at most the window at once; the next waits and gets the slot handed back, in order', async () => {
  const { w } = gate({ initial: 2, waitMs: 60_000 });
  const a = slot(await w.acquire('mx:a.test'));
  const b = slot(await w.acquire('mx:a.test'));
  const order: string[] = [];
  const c = w.acquire('mx:a.test').then((s) => (order.push('c'), slot(s)));
  const d = w.acquire('mx:a.test').then((s) => (order.push('d'), slot(s)));
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(order, [], 'both wait while two deliveries run');
  const other = await w.acquire('mx:b.test');
  assert.equal(other.kind, 'slot', 'another destination never waits behind this one');
  a.release();
  a.release(); // twice is once
  const sc = await c;
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(order, ['c'], 'one slot freed, one waiter admitted');
  b.release();
  const sd = await d;
  assert.deepEqual(order, ['c', 'd']);
  sc.release();
  sd.release();
});

test('gate: a message waits at most maxWaitMs, then hears the destination is busy', async () => {
  const { w } = gate({ initial: 1, maxWaitMs: 50 });
  const a = slot(await w.acquire('mx:a.test'));
  const t0 = Date.now();
  const busy = await w.acquire('mx:a.test');
  assert.equal(busy.kind, 'busy');
  assert.ok(Date.now() - t0 < 1000);
  a.release();
  slot(await w.acquire('mx:a.test')).release();
});

test('gate: successes grow the window only while messages wait longer than waitMs', async () => {
  const { w, changes } = gate({ initial: 2, max: 3, waitMs: 10_000 });
  for (let i = 0; i < 10; i++) {
    const s = slot(await w.acquire('mx:a.test'));
    s.feedback('success');
    s.release();
  }
  assert.equal(w.size('mx:a.test'), 2, 'nobody waited: the initial window is enough');
  assert.deepEqual(changes, []);

  const p = gate({ initial: 2, max: 3, waitMs: 0 });
  const held = [slot(await p.w.acquire('mx:a.test')), slot(await p.w.acquire('mx:a.test'))];
  const waiting = p.w.acquire('mx:a.test');
  held[0].feedback('success');
  held[1].feedback('success');
  assert.equal(p.w.size('mx:a.test'), 3, 'a window (2) of successes while a message waits');
  assert.deepEqual(p.changes, [{ destination: 'mx:a.test', window: 3, previous: 2, reason: 'success' }]);
  const third = slot(await waiting);
  for (const s of [...held, third]) s.release();
});

test('gate: throttling shrinks the window for the next messages; release does not overfill it', async () => {
  const { w, changes } = gate({ initial: 3, max: 5 });
  const s = [0, 1, 2].map(async () => slot(await w.acquire('mx:a.test')));
  const held = await Promise.all(s);
  held[0].feedback('throttled');
  assert.equal(w.size('mx:a.test'), 2);
  assert.deepEqual(changes, [{ destination: 'mx:a.test', window: 2, previous: 3, reason: 'throttled' }]);
  let admitted = false;
  const next = w.acquire('mx:a.test').then((x) => ((admitted = true), slot(x)));
  held[0].release();
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(admitted, false, 'two still run: the window of 2 is full');
  held[1].release();
  const n = await next;
  n.release();
  held[2].release();
});

test('failed cohorts: a window of failures in a row marks the destination down; a host reached starts again', async () => {
  const { w } = gate({ initial: 2, max: 4 });
  const once = async (f: 'success' | 'failed') => {
    const s = slot(await w.acquire('mx:a.test'));
    if (f === 'success') s.reached();
    const down = f === 'failed' && s.failedCohort();
    s.release();
    return down;
  };
  assert.equal(await once('failed'), false, '1/2');
  assert.equal(await once('failed'), true, '2/2: a whole cohort');
  assert.equal(await once('failed'), false, 'counted again from 0');
  assert.equal(await once('success'), false);
  assert.equal(await once('failed'), false, 'the success started the count again');
  assert.equal(await once('failed'), true);
  // A delivery that a host took in part and greylisted in part: throttling feedback, yet reached.
  const s = slot(await w.acquire('mx:a.test'));
  s.feedback('throttled');
  s.reached();
  s.release();
  assert.equal(await once('failed'), false, 'a throttling host that answered is not a failure towards down');
});

test('gate: a reload that lowers max holds for the messages already waiting', async () => {
  const { w, changes, limits } = gate({ initial: 4, max: 4, waitMs: 60_000 });
  const held = await Promise.all([0, 1, 2, 3].map(async () => slot(await w.acquire('mx:a.test'))));
  let running = 4;
  let most = 0;
  const waiting = Array.from({ length: 6 }, async () => {
    const s = slot(await w.acquire('mx:a.test'));
    most = Math.max(most, ++running);
    await new Promise((r) => setImmediate(r));
    running--;
    s.release();
  });
  limits.max = 1;
  for (const h of held) {
    running--;
    h.release();
  }
  await Promise.all(waiting);
  assert.equal(most, 1, 'one at a time once the four running finished');
  assert.deepEqual(
    changes.map((c) => [c.previous, c.window, c.reason]),
    [[4, 1, 'limit']],
  );
});

test("failed cohorts: a worker's share of the window counts against the gateway's whole initial window", async () => {
  // Worker 2 of 2: its share of the initial 5 is 2, shrunk to 1 by a throttling reply.
  const { w } = gate({ initial: 2, max: 10, cohort: 5 });
  const results: boolean[] = [];
  for (let i = 0; i < 5; i++) {
    const s = slot(await w.acquire('mx:a.test'));
    s.feedback('throttled');
    results.push(s.failedCohort());
    s.release();
  }
  assert.equal(w.size('mx:a.test'), 1);
  assert.deepEqual(results, [false, false, false, false, true], 'five failures in a row, as one process');
});

test('gate: idle for idleMs, the window starts again from the initial value; a lowered max holds', async () => {
  const { w, changes, advance, limits } = gate({ initial: 4, max: 6, idleMs: 5000 });
  const s = slot(await w.acquire('mx:a.test'));
  s.feedback('throttled');
  s.release();
  assert.equal(w.size('mx:a.test'), 3);
  advance(1000);
  slot(await w.acquire('mx:a.test')).release();
  assert.equal(w.size('mx:a.test'), 3, 'not idle long enough');
  advance(5000);
  slot(await w.acquire('mx:a.test')).release();
  assert.equal(w.size('mx:a.test'), 4);
  assert.equal(changes.at(-1)?.reason, 'idle');
  limits.max = 2;
  slot(await w.acquire('mx:a.test')).release();
  assert.equal(w.size('mx:a.test'), 2, 'a reload that lowers maxConnectionsPerDestination');
  limits.initial = 9;
  assert.equal(w.size('mx:new.test'), 2, 'the initial window never exceeds max');
});

test('gate: at most one step of growth every growMs, counted from the last change', async () => {
  const { w, changes, advance } = gate({ initial: 1, max: 5, waitMs: 0, growMs: 10_000 });
  const held = slot(await w.acquire('mx:a.test'));
  const waiting = w.acquire('mx:a.test'); // a message waits: the window is short
  advance(5000);
  held.feedback('success');
  assert.equal(w.size('mx:a.test'), 1, 'too soon after the window was made');
  advance(5000);
  held.feedback('success');
  assert.equal(w.size('mx:a.test'), 2);
  const second = slot(await waiting);
  const third = w.acquire('mx:a.test');
  held.feedback('success');
  held.feedback('success');
  assert.equal(w.size('mx:a.test'), 2, 'successes right after a step do not count');
  advance(10_000);
  held.feedback('success');
  held.feedback('success');
  assert.equal(w.size('mx:a.test'), 3);
  assert.deepEqual(
    changes.map((c) => c.window),
    [2, 3],
  );
  held.release();
  second.release();
  slot(await third).release();
});

/**
 * A scheduler's burst to one destination: `n` messages back to back, `inFlight` of them claimed at
 * once (queue.concurrency), each a success. The clock stands still: only counts can grow the window.
 * Returns the most deliveries that ran at once.
 */
async function burst(w: Windows, n: number, inFlight = 20): Promise<number> {
  let started = 0;
  let busy = 0;
  let most = 0;
  const one = async (): Promise<void> => {
    while (started < n) {
      started++;
      const s = slot(await w.acquire('mx:a.test'));
      most = Math.max(most, ++busy);
      await new Promise((r) => setImmediate(r)); // the others line up meanwhile
      busy--;
      s.feedback('success');
      s.release();
    }
  };
  await Promise.all(Array.from({ length: inFlight }, one));
  return most;
}

test('gate: a burst of 30 stays within the initial window; sustained demand grows it without the pause', async () => {
  const production = { waitMs: WINDOW_TIMING.waitMs, growMs: WINDOW_TIMING.growMs };
  const small = gate({ initial: 5, max: 20, ...production });
  assert.equal(await burst(small.w, 30), 5, 'the issue: 30 messages back to back use at most the initial window');
  assert.equal(small.w.size('mx:a.test'), 5);
  assert.deepEqual(small.changes, []);

  const big = gate({ initial: 5, max: 20, ...production });
  const most = await burst(big.w, 600);
  assert.equal(big.w.size('mx:a.test'), 20, 'a line that never runs empty: one step per window of successes');
  assert.equal(most, 20);
  assert.deepEqual(
    big.changes.map((c) => c.window),
    [6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20],
  );
  assert.ok(big.changes.every((c) => c.reason === 'success'));

  const throttled = gate({ initial: 5, max: 20, ...production });
  await burst(throttled.w, 300);
  const grown = throttled.w.size('mx:a.test');
  const s = slot(await throttled.w.acquire('mx:a.test'));
  s.feedback('throttled');
  s.release();
  assert.equal(throttled.w.size('mx:a.test'), grown - 1, 'pushback still shrinks a grown window at once');

  // After a failure, demand has to be sustained again before the window grows without the pause:
  // a stream whose line never runs empty, one throttling reply in its middle.
  const again = gate({ initial: 5, max: 20, ...production });
  let k = 0;
  const steps: { n: number; change: WindowChange }[] = [];
  const stream = async (): Promise<void> => {
    while (k < 400) {
      const s = slot(await again.w.acquire('mx:a.test'));
      await new Promise((r) => setImmediate(r));
      const n = k++;
      const seen = again.changes.length;
      s.feedback(n === 200 ? 'throttled' : 'success');
      for (const change of again.changes.slice(seen)) steps.push({ n, change });
      s.release();
    }
  };
  await Promise.all(Array.from({ length: 30 }, stream));
  const shrink = steps.findIndex((x) => x.change.reason === 'throttled');
  assert.equal(steps[shrink]?.n, 200, 'the throttling reply shrank it');
  const next = steps[shrink + 1];
  const window = steps[shrink].change.window;
  assert.ok(
    next.n - 200 > 8 * window,
    `no growth before ${8 * window} more through the line (grew at +${next.n - 200})`,
  );
});
