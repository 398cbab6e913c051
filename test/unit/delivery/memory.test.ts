// The store memory's read-through cache (delivery/memory.ts): what it read serves again for
// freshMs without asking the store, what it wrote serves at once, another writer's change shows
// once the cached read is older than freshMs, expired entries are never returned, and a delete of
// what is known to be absent costs nothing. The store here is a counting in-process map (the
// store's own memory statements are held to the conformance suite on both stores).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { StoreMemory } from '../../../src/delivery/memory.ts';
import { onEvent, type Event } from '../../../src/events.ts';
import type { SharedEntry } from '../../../src/store/types.ts';

function countingStore() {
  const rows = new Map<string, { value: unknown; until: number }>();
  const calls = { get: 0, set: 0, delete: 0 };
  const store = {
    async memoryGet(kind: string, key: string, now = Date.now()): Promise<SharedEntry | null> {
      calls.get++;
      const r = rows.get(`${kind}/${key}`);
      return r && r.until > now ? { value: r.value, until: r.until } : null;
    },
    async memorySet(kind: string, key: string, value: unknown, until: number): Promise<void> {
      calls.set++;
      rows.set(`${kind}/${key}`, { value, until });
    },
    async memoryDelete(kind: string, key: string): Promise<void> {
      calls.delete++;
      rows.delete(`${kind}/${key}`);
    },
    async memoryExpire(): Promise<number> {
      return 0;
    },
  };
  return { store, rows, calls };
}

test('store memory: reads serve again for freshMs, writes at once, other writers show after freshMs', async () => {
  const { store, calls } = countingStore();
  let now = 1_000_000;
  const clock = () => now;
  const here = new StoreMemory<string>(() => store, 'down', 100, 1000, clock);
  const there = new StoreMemory<string>(() => store, 'down', 100, 1000, clock);
  const far = Date.now() + 3_600_000;

  assert.equal(await here.get('hop:a'), undefined);
  assert.equal(await here.get('hop:a'), undefined);
  assert.equal(calls.get, 1, 'nothing known: the second read is the cache');

  await there.set('hop:a', '421 busy', far);
  assert.equal(await here.get('hop:a'), undefined, 'within freshMs the earlier read stands');
  now += 1000;
  assert.deepEqual(await here.get('hop:a'), { value: '421 busy', until: far }, 'after freshMs: the store');
  assert.equal(calls.get, 2);

  await here.set('hop:b', 'refused', far);
  assert.deepEqual(await here.get('hop:b'), { value: 'refused', until: far }, 'own write: no read');
  assert.equal(calls.get, 2);

  await here.delete('hop:c');
  await here.delete('hop:c');
  assert.equal(calls.delete, 0, 'absent: nothing to delete');
  assert.equal(calls.get, 3, 'one read, then the cache');
  await here.delete('hop:b');
  assert.equal(calls.delete, 1);
  assert.equal(await here.get('hop:b'), undefined);
  assert.equal(calls.get, 3);
});

test('store memory: a cached entry past its until is not returned; the cache is bounded', async () => {
  const { store, calls } = countingStore();
  const mem = new StoreMemory<boolean>(() => store, 'host', 3, 60_000);
  const t = Date.now();
  await mem.set('h1', true, t + 50);
  assert.deepEqual(await mem.get('h1', t), { value: true, until: t + 50 });
  assert.equal(await mem.get('h1', t + 50), undefined, 'at its until it no longer counts');
  for (const k of ['a', 'b', 'c', 'd']) await mem.get(k);
  assert.equal(calls.get, 4);
  await mem.get('h1');
  assert.equal(calls.get, 5, 'the oldest key was dropped from a cache of 3');
});

test('store memory: a failing store never fails the delivery; reads find nothing, the failure is logged (rate-limited)', async () => {
  let now = 1_000_000;
  let broken = true;
  const { store, calls } = countingStore();
  const failing = {
    memoryGet: (k: string, key: string, t?: number) =>
      broken ? Promise.reject(new Error('SQLITE_BUSY: database is locked')) : store.memoryGet(k, key, t),
    memorySet: (k: string, key: string, v: unknown, u: number) =>
      broken ? Promise.reject(new Error('SQLITE_BUSY: database is locked')) : store.memorySet(k, key, v, u),
    memoryDelete: () => Promise.reject(new Error('SQLITE_BUSY: database is locked')),
    memoryExpire: () => Promise.reject(new Error('SQLITE_BUSY: database is locked')),
  };
  const seen: Event[] = [];
  const off = onEvent((e) => {
    if (e.event === 'delivery.memory.failed') seen.push(e);
  });
  try {
    const mem = new StoreMemory<boolean>(
      () => failing,
      'hostFailed',
      100,
      1000,
      () => now,
    );
    assert.equal(await mem.get('mx.a.test'), undefined, 'nothing known: fails safe');
    await mem.set('mx.a.test', true, Date.now() + 60_000); // does not throw
    assert.equal((await mem.get('mx.a.test'))?.value, true, 'this process keeps what it wrote');
    now += 5000;
    await mem.delete('mx.a.test');
    assert.equal(await mem.expire(), 0);
    assert.equal(seen.length, 1, 'one line per kind within 10 s');
    assert.deepEqual(
      [
        seen[0].event === 'delivery.memory.failed' && seen[0].operation,
        seen[0].event === 'delivery.memory.failed' && seen[0].error,
      ],
      ['get', 'SQLITE_BUSY: database is locked'],
    );
    now += 10_000;
    broken = false;
    assert.equal(await mem.get('mx.b.test'), undefined);
    assert.equal(calls.get, 1, 'the store answers again');
    await mem.expire();
    const last = seen.at(-1);
    assert.equal(seen.length, 2);
    assert.equal(
      last?.event === 'delivery.memory.failed' && last.suppressed,
      3,
      "the failures in between: the write, the delete's read, the sweep",
    );
  } finally {
    off();
  }
});
