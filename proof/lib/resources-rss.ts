// Samples a process's resident set size from /proc/PID/status (VmRSS) at a fixed interval.
import { readFileSync } from 'node:fs';

export function readRssKb(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

export class RssSampler {
  private timer: NodeJS.Timeout | undefined;
  /** Peak over the whole life of the sampler, in kB. */
  peakKb = 0;
  /** Peak since the last `mark()`, in kB. */
  windowPeakKb = 0;
  lastKb = 0;
  samples = 0;

  constructor(
    private pid: () => number | undefined,
    private readonly intervalMs = 200,
  ) {}

  start(): this {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.intervalMs);
    this.timer.unref();
    return this;
  }

  sample(): void {
    const pid = this.pid();
    if (!pid) return;
    const kb = readRssKb(pid);
    if (kb === null) return;
    this.samples++;
    this.lastKb = kb;
    if (kb > this.peakKb) this.peakKb = kb;
    if (kb > this.windowPeakKb) this.windowPeakKb = kb;
  }

  /** Start a new window; returns the previous window's peak (kB). */
  mark(): number {
    this.sample();
    const p = this.windowPeakKb;
    this.windowPeakKb = this.lastKb;
    return p;
  }

  stop(): void {
    clearInterval(this.timer);
    this.sample();
  }
}

export const mb = (kb: number): string => (kb / 1024).toFixed(1);
