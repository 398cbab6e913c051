// A small seeded PRNG (mulberry32) for the proof's fuzzers: the same seed gives the same inputs,
// so a failing session can be replayed from the seed printed in the report.

export class Rng {
  private s: number;
  constructor(readonly seed: number) {
    this.s = seed >>> 0 || 0x9e3779b9;
  }

  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Integer in [lo, hi] (both inclusive). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(a: readonly T[]): T {
    return a[Math.floor(this.next() * a.length)];
  }

  /** Pick by weight: [[value, weight], ...]. */
  weighted<T>(a: readonly (readonly [T, number])[]): T {
    const total = a.reduce((n, [, w]) => n + w, 0);
    let x = this.next() * total;
    for (const [v, w] of a) {
      x -= w;
      if (x < 0) return v;
    }
    return a[a.length - 1][0];
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = Math.floor(this.next() * 256);
    return b;
  }
}

/** A well-mixed per-session seed from the run's master seed and the session index. */
export function deriveSeed(master: number, index: number): number {
  let h = (Math.imul(master >>> 0, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}
