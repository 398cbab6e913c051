// Owns: keeping the report counters as mail flows. Fed by the typed events (events.ts onEvent):
// inbound sessions and messages by TLS, clients per TLS version, outbound deliveries by how they
// were secured, deferrals and bounces by the requirement and TLS failure behind them. Counts are
// kept per organisation and for the whole gateway ('*'), summed in memory and added to the store
// every few seconds (and at stop) in one write; reports read only these counters (query.ts),
// never the trace. Counters older than REPORT_RETENTION_DAYS are forgotten hourly.
// Failure: a failed write is logged and its counts kept for the next one (bounded: beyond
// MAX_PENDING keys the oldest are dropped, and said so); a crash loses at most the counts of the
// last flush interval — the trace still has every message.
import { emit, onEvent, type Event } from '../events.ts';
import type { ReportCount, Store } from '../store/types.ts';
import { errorMessage } from '../util/errors.ts';
import { bucketOf, DAY, HOUR, KINDS, requirementType, securityType } from './kinds.ts';

export const REPORT_RETENTION_DAYS = 400;
const MAX_PENDING = 200_000;
const MAX_SESSIONS = 100_000;

type Kind = (typeof KINDS)[keyof typeof KINDS];

export interface AggregatorOptions {
  flushMs?: number;
  retentionDays?: number;
}

export class ReportAggregator {
  private pending = new Map<string, ReportCount>();
  /** Organisations of the messages each open session has carried (sid → orgs). */
  private readonly sessionOrgs = new Map<string, Set<string>>();
  private flushing: Promise<void> = Promise.resolve();
  private timers: NodeJS.Timeout[] = [];
  private unsubscribe: (() => void) | undefined;
  private readonly flushMs: number;
  private readonly retentionDays: number;

  constructor(
    private readonly store: Store,
    opts: AggregatorOptions = {},
  ) {
    this.flushMs = opts.flushMs ?? 2000;
    this.retentionDays = opts.retentionDays ?? REPORT_RETENTION_DAYS;
  }

  /** Subscribe to the events; flush on a timer; purge old counters hourly (and now). */
  start(): void {
    this.unsubscribe = onEvent((e) => this.record(e));
    this.timers.push(
      setInterval(() => {
        void this.flush();
      }, this.flushMs).unref(),
    );
    const purge = () =>
      this.store
        .purgeReportCounts(Date.now() - this.retentionDays * DAY)
        .catch((e: unknown) =>
          emit({ event: 'internal.error', where: 'report counters purge', error: errorMessage(e) }),
        );
    void purge();
    this.timers.push(
      setInterval(() => {
        void purge();
      }, HOUR).unref(),
    );
  }

  async stop(): Promise<void> {
    this.unsubscribe?.();
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    await this.flush();
  }

  /** Count one event at time `at`. */
  record(e: Event, at = Date.now()): void {
    switch (e.event) {
      case 'message.accepted': {
        // A transaction stored as several organisations' copies is one message for the gateway.
        const dims = [e.tls?.version ?? 'none', e.tls?.cipher ?? ''];
        this.count(KINDS.inMessages, at, (e.copy ?? 1) === 1, [e.org], dims);
        let orgs = this.sessionOrgs.get(e.sid);
        if (!orgs) {
          if (this.sessionOrgs.size >= MAX_SESSIONS) this.sessionOrgs.delete(this.sessionOrgs.keys().next().value!);
          this.sessionOrgs.set(e.sid, (orgs = new Set()));
        }
        orgs.add(e.org);
        return;
      }
      case 'session.end': {
        const orgs = this.sessionOrgs.get(e.sid) ?? [];
        this.sessionOrgs.delete(e.sid);
        const version = e.tls?.version ?? 'none';
        this.add(KINDS.inSessions, at, orgs, version, e.tls?.cipher ?? '');
        this.add(KINDS.inPeers, at, orgs, version, e.ip, e.helo ?? '');
        return;
      }
      case 'delivery.result': {
        if (e.agent !== 'smtp') return; // local mailboxes, DSNs and bounces are not transit
        const orgs = e.org ? [e.org] : [];
        const domain = e.rcpt.slice(e.rcpt.lastIndexOf('@') + 1).toLowerCase();
        if (e.status === 'delivered') {
          const security = securityType(e);
          this.add(KINDS.outDelivered, at, orgs, security, e.tlsVersion ?? 'none', e.tlsCipher ?? '');
          this.add(KINDS.outDomains, at, orgs, domain, security);
          if (security === 'plaintext') this.add(KINDS.outPlainDomains, at, orgs, domain);
          return;
        }
        const requirement = requirementType(e.tlsRequired, e.tlsSource);
        // Under opportunistic TLS a TLS failure only steps down; it defers nothing.
        const cause = requirement !== 'opportunistic' && e.tlsFailure ? e.tlsFailure : '';
        this.add(KINDS.outUndelivered, at, orgs, e.status, requirement, cause);
        if (cause) this.add(KINDS.outTlsFailures, at, orgs, domain, requirement, cause, e.status);
        return;
      }
      default:
    }
  }

  /**
   * Count one at `at` for each of `orgs` (distinct names) and for the whole gateway. The key is the
   * kind and bucket (no spaces in either), the dimensions as JSON (self-delimiting, whatever they
   * hold), then the organisation: built with one JSON.stringify per event, not one per counter.
   */
  private add(k: Kind, at: number, orgs: Iterable<string>, ...dims: string[]): void {
    this.count(k, at, true, orgs, dims);
  }

  /** `add`, and for the whole gateway only when `whole`. */
  private count(k: Kind, at: number, whole: boolean, orgs: Iterable<string>, dims: string[]): void {
    const bucket = bucketOf(at, k.span);
    const prefix = `${k.kind} ${bucket} ${JSON.stringify(dims)}`;
    if (whole) this.bump(k, bucket, prefix, '*', dims);
    for (const org of orgs) if (org !== '*') this.bump(k, bucket, prefix, org, dims);
  }

  private bump(k: Kind, bucket: number, prefix: string, org: string, dims: string[]): void {
    const key = prefix + org;
    const hit = this.pending.get(key);
    if (hit) {
      hit.n++;
      return;
    }
    if (this.pending.size >= MAX_PENDING) this.drop();
    const [d1, d2, d3, d4] = dims;
    this.pending.set(key, {
      kind: k.kind,
      org,
      bucket,
      n: 1,
      ...(d1 ? { d1 } : {}),
      ...(d2 ? { d2 } : {}),
      ...(d3 ? { d3 } : {}),
      ...(d4 ? { d4 } : {}),
    });
  }

  private drop(): void {
    const n = Math.ceil(MAX_PENDING / 10);
    const keys = [...this.pending.keys()].slice(0, n);
    for (const k of keys) this.pending.delete(k);
    emit({
      event: 'internal.error',
      where: 'report counters',
      error: `${n} counter keys dropped: the store did not take them in time`,
    });
  }

  /** Write what was counted since the last flush; resolves when it is in the store. */
  flush(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      if (!this.pending.size) return;
      const batch = this.pending;
      this.pending = new Map();
      try {
        await this.store.addReportCounts([...batch.values()]);
      } catch (e) {
        emit({ event: 'internal.error', where: 'report counters', error: errorMessage(e) });
        for (const [key, r] of batch) {
          const hit = this.pending.get(key);
          if (hit) hit.n += r.n;
          else if (this.pending.size < MAX_PENDING) this.pending.set(key, r);
        }
      }
    });
    return this.flushing;
  }
}
