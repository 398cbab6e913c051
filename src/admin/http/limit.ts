// Owns: the admin centre's in-memory rate limits (per node): at most `max` uses of a key within
// `windowMs`. A use is reserved before the work starts (so two requests at once cannot both slip
// through) and given back when nothing was used up.
// Promise: memory is bounded by the keys in use (old uses are dropped as windows pass).
export class RateLimit {
  private readonly uses = new Map<string, number[]>();

  constructor(
    readonly max: number,
    readonly windowMs: number,
  ) {}

  /** Reserve a use of `key`: 0 when granted, else the milliseconds until one is free. */
  take(key: string, now = Date.now()): number {
    const live = (this.uses.get(key) ?? []).filter((t) => t > now - this.windowMs);
    if (live.length >= this.max) {
      this.uses.set(key, live);
      return live[0] + this.windowMs - now;
    }
    live.push(now);
    this.uses.set(key, live);
    return 0;
  }

  /** Give back the use reserved at `at` (the work used nothing up). */
  release(key: string, at: number): void {
    const live = this.uses.get(key) ?? [];
    const i = live.lastIndexOf(at);
    if (i >= 0) live.splice(i, 1);
    if (!live.length) this.uses.delete(key);
  }
}

/** Several limits a use must pass together (a connector's, its organisation's, the node's). */
export class Limits<K extends string> {
  private readonly limits: [K, RateLimit][];

  constructor(limits: Record<K, { max: number; windowMs: number }>) {
    this.limits = (Object.entries(limits) as [K, { max: number; windowMs: number }][]).map(([name, l]) => [
      name,
      new RateLimit(l.max, l.windowMs),
    ]);
  }

  /**
   * Reserve a use under every limit (`keys`: the key of each), or under none: null when granted,
   * else the first limit reached and the milliseconds until it frees a use.
   */
  take(keys: Record<K, string>, at: number): { limit: K; waitMs: number } | null {
    for (let i = 0; i < this.limits.length; i++) {
      const [name, l] = this.limits[i];
      const waitMs = l.take(keys[name], at);
      if (!waitMs) continue;
      for (const [n, taken] of this.limits.slice(0, i)) taken.release(keys[n], at);
      return { limit: name, waitMs };
    }
    return null;
  }

  /** Give back the use reserved at `at` under every limit. */
  release(keys: Record<K, string>, at: number): void {
    for (const [name, l] of this.limits) l.release(keys[name], at);
  }
}
