// Owns: the shape of what remote delivery remembers between attempts (an expiring, bounded
// key/value memory) and its two implementations: in-process (tests, tools without a store) and
// in the store (StoreMemory), shared by every node and worker process using that store.
// Promises: `get` never returns an entry whose `until` has passed; an in-process memory never
// holds more than `max` entries (the oldest written is forgotten first), a store memory never more
// than `max` per kind after each sweep (`expire`). A store memory's values travel as JSON. A store
// memory reads through a small cache of this process: what it read (an entry, or that there is
// none) serves again for `freshMs` (1 s), what it wrote serves at once; so another node's or
// worker's write shows here within `freshMs`, and a delivery's reads (every one of them, mostly
// "nothing known") cost no round trip to the store while a destination is busy. A store memory is
// best effort: a store that fails (busy, unreachable) makes a read find nothing (every memory here
// fails safe: no destination down, no host failed, no TLS step down) and a write count for this
// process only; the delivery goes on, and the failure is logged (delivery.memory.failed, at most
// once per kind every 10 s), so a delivery the peer took is never lost to a memory's write.
import { emit } from '../events.ts';
import type { Store } from '../store/types.ts';
import { errorMessage } from '../util/errors.ts';

/** A remembered value and the time (ms epoch) it stops counting. */
export interface Remembered<V> {
  value: V;
  until: number;
}

export interface ExpiringMemory<V> {
  /** The entry for `key` while it lasts (its `until` is after `now`), else undefined. */
  get(key: string, now?: number): Promise<Remembered<V> | undefined>;
  /** Remember `value` for `key` until `until`; an `until` already past forgets the key. */
  set(key: string, value: V, until: number): Promise<void>;
  delete(key: string): Promise<void>;
  /** Forget every entry that has run out; returns how many were forgotten. */
  expire(now?: number): Promise<number>;
}

const DEFAULT_MAX = 10_000;

/** One process's memory: a Map in insertion order, bounded by `max`. */
export class InMemory<V> implements ExpiringMemory<V> {
  private readonly entries = new Map<string, Remembered<V>>();

  constructor(private readonly max = DEFAULT_MAX) {}

  get size(): number {
    return this.entries.size;
  }

  async get(key: string, now = Date.now()): Promise<Remembered<V> | undefined> {
    const e = this.entries.get(key);
    if (!e) return undefined;
    if (e.until > now) return e;
    this.entries.delete(key);
    return undefined;
  }

  async set(key: string, value: V, until: number): Promise<void> {
    this.entries.delete(key);
    if (until <= Date.now()) return;
    if (this.entries.size >= this.max) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { value, until });
  }

  async delete(key: string): Promise<void> {
    this.entries.delete(key);
  }

  async expire(now = Date.now()): Promise<number> {
    let n = 0;
    for (const [k, e] of this.entries)
      if (e.until <= now) {
        this.entries.delete(k);
        n++;
      }
    return n;
  }
}

/** How long what a store memory read serves again before it asks the store (other nodes' writes). */
export const STORE_MEMORY_FRESH_MS = 1000;
/** A failing store is logged at most this often per kind of memory. */
const WARN_EVERY_MS = 10_000;

/** One kind of memory in the store's memories table, shared by every node of the store. */
export class StoreMemory<V> implements ExpiringMemory<V> {
  /** What this process last read or wrote per key (undefined: nothing there), and when. */
  private readonly seen = new Map<string, { entry: Remembered<V> | undefined; at: number }>();
  private warned = -Infinity;
  private unreported = 0;

  constructor(
    private readonly store: () => Pick<Store, 'memoryGet' | 'memorySet' | 'memoryDelete' | 'memoryExpire'>,
    private readonly kind: string,
    private readonly max = DEFAULT_MAX,
    private readonly freshMs = STORE_MEMORY_FRESH_MS,
    private readonly clock: () => number = Date.now,
  ) {}

  /** What the cache knows of `key` while it is fresh: `null` when it knows nothing. */
  private cached(key: string): { entry: Remembered<V> | undefined } | null {
    const c = this.seen.get(key);
    if (!c) return null;
    if (this.clock() - c.at < this.freshMs) return c;
    this.seen.delete(key);
    return null;
  }

  private remember(key: string, entry: Remembered<V> | undefined): void {
    this.seen.delete(key);
    if (this.seen.size >= this.max) this.seen.delete(this.seen.keys().next().value!);
    this.seen.set(key, { entry, at: this.clock() });
  }

  /** The store failed: logged (rate-limited), never thrown at the delivery. */
  private failed(operation: 'get' | 'set' | 'delete' | 'expire', key: string, e: unknown): void {
    const now = this.clock();
    if (now - this.warned < WARN_EVERY_MS) {
      this.unreported++;
      return;
    }
    const suppressed = this.unreported;
    this.warned = now;
    this.unreported = 0;
    emit({ event: 'delivery.memory.failed', kind: this.kind, operation, key, error: errorMessage(e), suppressed });
  }

  async get(key: string, now = Date.now()): Promise<Remembered<V> | undefined> {
    const c = this.cached(key);
    if (c) return c.entry && c.entry.until > now ? c.entry : undefined;
    let e;
    try {
      e = await this.store().memoryGet(this.kind, key, now);
    } catch (err) {
      this.failed('get', key, err);
      return undefined; // not cached: the next read asks the store again
    }
    const entry = e ? { value: e.value as V, until: e.until } : undefined;
    this.remember(key, entry);
    return entry;
  }

  async set(key: string, value: V, until: number): Promise<void> {
    try {
      await this.store().memorySet(this.kind, key, value, until);
    } catch (err) {
      this.failed('set', key, err);
    }
    this.remember(key, until > Date.now() ? { value, until } : undefined);
  }

  /** Forgets `key`; a write only when it is there (a success forgets its host's failure: mostly none). */
  async delete(key: string): Promise<void> {
    if (!(await this.get(key))) return;
    try {
      await this.store().memoryDelete(this.kind, key);
    } catch (err) {
      this.failed('delete', key, err);
    }
    this.remember(key, undefined);
  }

  /** Every kind is swept at once (one statement); the count is the store's (0 when it failed). */
  async expire(now = Date.now()): Promise<number> {
    for (const [k, c] of this.seen) if (now - c.at >= this.freshMs) this.seen.delete(k);
    try {
      return await this.store().memoryExpire(now, this.max);
    } catch (err) {
      this.failed('expire', '*', err);
      return 0;
    }
  }
}
