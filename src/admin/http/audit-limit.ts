// Owns: how many audit entries calls without a valid token may write (ANONYMOUS_AUDIT per node),
// and the one summary entry of those that were not written one by one.
// Promise: whoever reaches the port cannot grow the audit log without bound; every such call is
// either written or counted, and the count (with the callers' addresses, up to ADDRESSES of them)
// is written one window after the first uncounted call, or when the admin server closes.
import { emit } from '../../events.ts';
import type { AuditEntry } from '../../store/types.ts';
import { errorMessage } from '../../util/errors.ts';
import { RateLimit } from './limit.ts';

/** Audit entries of calls without a valid token: at most this many a minute per node. */
export const ANONYMOUS_AUDIT = { max: 30, windowMs: 60_000 };
const ADDRESSES = 10;

export class AnonymousAudit {
  private readonly limit = new RateLimit(ANONYMOUS_AUDIT.max, ANONYMOUS_AUDIT.windowMs);
  private count = 0;
  private readonly from = new Set<string>();
  private others = false;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly write: (e: AuditEntry) => Promise<unknown>) {}

  /** Whether this call's own entry may be written; if not, it is counted for the summary. */
  admit(ip: string): boolean {
    // Closed: no summary is to come; a call still being answered writes its own entry.
    if (this.closed || !this.limit.take('anonymous')) return true;
    this.count++;
    if (this.from.size < ADDRESSES) this.from.add(ip);
    else if (!this.from.has(ip)) this.others = true;
    this.timer ??= setTimeout(() => void this.flush(), ANONYMOUS_AUDIT.windowMs).unref();
    return false;
  }

  /** The admin server closes: the summary of what was counted, and no more counting. */
  close(): Promise<void> {
    this.closed = true;
    return this.flush();
  }

  /** Write the summary of the calls counted since the last one (nothing when there were none). */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.count) return;
    const detail =
      `${this.count} more call${this.count === 1 ? '' : 's'} without a valid token not recorded one by one, ` +
      `from ${[...this.from].join(', ')}${this.others ? ' and others' : ''}`;
    this.count = 0;
    this.from.clear();
    this.others = false;
    try {
      await this.write({
        ts: Date.now(),
        actor: '(no valid token)',
        org: null,
        action: 'admin.unauthenticated',
        result: 'refused',
        status: 401,
        detail,
      });
    } catch (e) {
      emit({ event: 'internal.error', where: 'admin.audit', error: errorMessage(e) });
    }
  }
}
