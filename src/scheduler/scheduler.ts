// Owns: queue states, leases, retry backoff, expiry, delay warnings and bounces, and runs trace
// retention (retention.ts) while it runs. While the node drains (`cluster drain`) it claims
// nothing and takes no direct handoff; what it delivers finishes. Claims due
// messages from the store, hands recipients to their delivery agent (local Maildir, remote SMTP
// grouped by next hop so one transaction carries many recipients, or the TLS-RPT report inbox
// for tlsRpt.receive addresses), records the outcomes. An administrator's "bounce now"
// (store.requestBounce) fails the open recipients instead of delivering them, with a DSN as for
// any failure.
// Promises: a message leaves the queue only when every recipient is delivered or failed; a crash
// at any point leaves it leased, and the lease expires (or is released at start-up). Leases are
// renewed while their delivery runs; an outcome is recorded only under the lease it was
// delivered under (fencing generation), else it is logged (queue.fenced) and dropped. A failed
// recipient produces a DSN to the sender unless the sender is null or NOTIFY says otherwise, so
// bounces can never loop. The DSN is queued before the failure is recorded (never lost; after a
// crash in between it may be sent twice), and only while the node holds the message's lease
// (renewed just before: a node whose lease was taken over sends none, so a cluster sends one per
// event). The DSN of a REQUIRETLS message carries only the original's header and is itself sent
// with REQUIRETLS (RFC 8689 §5).
import type { Config } from '../config/load.ts';
import { Replies } from '../errors.ts';
import { emit } from '../events.ts';
import type { Outcome } from '../delivery/classify.ts';
import type { MaildirDelivery } from '../delivery/maildir.ts';
import type { AttemptFacts, RemoteDelivery } from '../delivery/remote.ts';
import { buildDsn, wantsNotice, type DsnRecipient } from '../ingest/dsn.ts';
import type { Ingest } from '../ingest/ingest.ts';
import type { InboundPolicy } from '../policy/inbound.ts';
import type { OutboundPolicy } from '../policy/outbound.ts';
import { atLeast, type TlsLevel } from '../tls/levels.ts';
import { rfc8460ResultType, tlsFailurePlain } from '../tls/failures.ts';
import type { QueueMessage, QueueRecipient, RecipientOutcome, Store } from '../store/types.ts';
import { sessionId } from '../util/ids.ts';
import { TraceRetention } from './retention.ts';
import { errorDetail } from '../util/errors.ts';

export interface Agents {
  local: MaildirDelivery;
  remote: RemoteDelivery;
  /** TLS-RPT reports sent to us (tlsRpt.receive): stored, not delivered to a mailbox. */
  reports?: { accepts(address: string): boolean; take(m: QueueMessage, data: Buffer): Promise<Outcome> };
}

export interface SchedulerDeps {
  config: Config;
  inbound: InboundPolicy;
  outbound: OutboundPolicy;
}

/** Seconds to wait before attempt number `attempts + 1`. */
export function retryDelay(schedule: readonly number[], attempts: number): number {
  return schedule[Math.min(Math.max(attempts - 1, 0), schedule.length - 1)];
}

interface Result {
  rcpt: QueueRecipient;
  outcome: Outcome;
  agent: string;
  attempt?: AttemptFacts;
  note?: Record<string, unknown>;
  expired?: boolean;
}

/** What a required TLS level asks for, in plain words. */
const REQUIRED: Partial<Record<TlsLevel, string>> = {
  encryptionOnly: 'an encrypted connection (TLS 1.2 or newer)',
  certificateValidation:
    'an encrypted connection (TLS 1.2 or newer) to a server with a valid certificate from a trusted authority',
  domainValidation: 'an encrypted connection (TLS 1.2 or newer) to a server whose valid certificate proves its name',
  dane:
    'an encrypted connection (TLS 1.2 or newer) to a server whose certificate matches the DNSSEC-signed TLSA ' +
    'records of its domain (DANE)',
};

/** Plain words for the sender: what happened and how the connection was protected. */
function explain(r: Result, expired: boolean): string {
  const o = r.outcome.reply;
  let details = o.reason ?? `${o.code} ${o.enhanced} ${o.message}`;
  if (!/said:/.test(details)) details = `${details} (${o.code} ${o.enhanced} ${o.message})`;
  const a = r.attempt;
  let plain = '';
  // A required TLS level that was not met: say why, from the TLS failure kind, before the
  // technical detail. (Not from the enhanced code: 4.7.5 covers an outdated protocol as well as
  // an unproven identity, and a peer's own 5.7.x reply is no TLS failure of ours.)
  const required = a && atLeast(a.tlsRequired.level, 'encryptionOnly') ? REQUIRED[a.tlsRequired.level] : undefined;
  if (o.enhanced === '5.7.30') {
    plain =
      'Your message was sent with REQUIRETLS (RFC 8689): it may only travel over encrypted connections to servers ' +
      'whose identity is verified and which promise the same. The receiving side could not give that, so the ' +
      'message was never sent to it. ';
  } else if (a?.tlsFailure && required) {
    // A connector is the organisation's own rule; other sources (MTA-STS) are the recipient domain's.
    const who = /^(connector |default$)/.test(a.tlsRequired.source)
      ? 'Your organisation requires'
      : "The recipient domain's security policy requires";
    plain =
      `The receiving mail server${a.host ? ` (${a.host})` : ''} ${tlsFailurePlain(a.tlsFailure)}. ${who} ` +
      `${required} for this destination, so the message was never sent to it. `;
  } else if (a) {
    const legacy =
      a.tlsLegacy && a.tlsFailure
        ? `; an outdated form of encryption, because the server ${tlsFailurePlain(a.tlsFailure)}`
        : '';
    if (a.tls)
      details += ` The connection to ${a.host} was encrypted with ${a.tls.version} (${a.tls.cipher}${legacy}).`;
    else if (a.ip && !a.error)
      details += ` The connection to ${a.host} was not encrypted${a.fallback ? ` (${a.fallback})` : ''}.`;
  }
  const kind = a?.tlsFailure
    ? ` (TLS failure ${a.tlsFailure}, RFC 8460 result type ${rfc8460ResultType(a.tlsFailure)})`
    : '';
  const s = `${plain}${plain ? `Technical details${kind}: ` : ''}${details}`;
  return expired
    ? `Delivery was retried until the message expired. ${plain ? '' : 'The last attempt failed: '}${s}`
    : s;
}

export class Scheduler {
  private inflight = 0;
  /**
   * Messages this process is delivering now, with the fencing generation of our lease. Leases are
   * renewed while deliveries run (renewLeases); should one expire all the same (the store was
   * unreachable), our own claim may take the message again: that claim's generation is adopted,
   * and no second, concurrent delivery is started.
   */
  private readonly active = new Map<string, number>();
  /** Per message in delivery: whether this node still held its lease before a notice was queued. */
  private readonly held = new Map<string, Promise<boolean>>();
  private reserved = 0;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private again = false;
  private stopped = false;
  /** `cluster drain`: no new queue work (claims, direct handoff); deliveries in flight finish. */
  private draining = false;
  private cycling: Promise<void> = Promise.resolve();
  private idle: (() => void)[] = [];
  private readonly retention: TraceRetention;

  /** `owner`: the node id, owner of this process's leases. */
  constructor(
    private readonly store: Store,
    private readonly agents: Agents,
    private readonly ingest: Ingest,
    private readonly deps: () => SchedulerDeps,
    readonly owner = `node-${sessionId()}`,
  ) {
    this.retention = new TraceRetention(store, () => this.deps().config.trace.retentionDays);
  }

  start(): void {
    this.kick();
    this.retention.start();
  }

  /** Direct handoff (ingest): a lease when there is room to deliver a new message right away. */
  reserve(): { owner: string; ms: number } | undefined {
    const q = this.deps().config.queue;
    if (this.stopped || this.draining || this.inflight + this.reserved >= q.concurrency) return undefined;
    this.reserved++;
    return { owner: this.owner, ms: q.leaseSeconds * 1000 };
  }

  /** Direct handoff: the message was committed leased to us; deliver it with its data in memory. */
  take(m: QueueMessage, data: Buffer): void {
    this.reserved--;
    this.run(m, data);
  }

  /** A reservation whose commit failed is given back. */
  unreserve(): void {
    this.reserved--;
  }

  private run(m: QueueMessage, data?: Buffer): void {
    this.inflight++;
    this.active.set(m.id, m.leaseGen);
    void this.process(m, data)
      .catch((e) => {
        emit({ event: 'internal.error', where: `scheduler.process ${m.id}`, error: errorDetail(e) });
      })
      .finally(() => {
        this.inflight--;
        this.active.delete(m.id);
        this.held.delete(m.id);
        this.kick();
        if (this.inflight === 0) for (const f of this.idle.splice(0)) f();
      });
  }

  /** Drain (stop claiming new work; the deliveries in flight finish and their leases are renewed), or undo. */
  setDraining(on: boolean): void {
    if (on === this.draining) return;
    this.draining = on;
    if (!on) this.kick();
  }

  /** Something became due (new message, retry request): look now. */
  kick(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    this.running = true;
    this.cycling = this.cycle().finally(() => {
      this.running = false;
      if (this.again) {
        this.again = false;
        this.kick();
      }
    });
  }

  private async cycle(): Promise<void> {
    const q = this.deps().config.queue;
    try {
      const room = this.draining ? 0 : q.concurrency - this.inflight - this.reserved;
      if (room > 0) {
        // With the data: the deliveries start at once, without one read per message.
        const batch = await this.store.claimWithData(this.owner, room, q.leaseSeconds * 1000);
        for (const { message: m, data } of batch)
          if (this.active.has(m.id)) this.active.set(m.id, m.leaseGen);
          else this.run(m, data ?? undefined);
        if (batch.length === room) {
          this.again = true;
          return;
        }
      }
      if (this.inflight >= q.concurrency) return; // a finishing delivery kicks again
      const due = await this.store.nextDue();
      // Poll at least every few seconds: other processes (CLI, other nodes) change the queue too.
      const wait = due === null ? 5000 : Math.min(Math.max(due - Date.now(), 10), 5000);
      if (!this.stopped) {
        this.timer = setTimeout(() => this.kick(), wait);
        this.timer.unref();
      }
    } catch (e) {
      emit({ event: 'internal.error', where: 'scheduler', error: errorDetail(e) });
      if (!this.stopped) {
        this.timer = setTimeout(() => this.kick(), 1000);
        this.timer.unref();
      }
    }
  }

  private async deliverAll(m: QueueMessage, data: Buffer): Promise<Result[]> {
    const { outbound } = this.deps();
    const results: Result[] = [];
    const groups = new Map<string, { hop: ReturnType<OutboundPolicy['nextHop']>; rcpts: QueueRecipient[] }>();
    const work: Promise<void>[] = [];
    for (const r of m.recipients) {
      const reports = this.agents.reports;
      if (reports?.accepts(r.address)) {
        work.push(
          reports.take(m, data).then((outcome) => {
            results.push({ rcpt: r, outcome, agent: 'tlsrpt' });
          }),
        );
        continue;
      }
      if (r.route === 'local') {
        // Mail between organisations hosted here never leaves the gateway; the trace says so.
        const note =
          r.org !== m.org
            ? { internal: `delivered internally from organization ${m.org} to organization ${r.org}` }
            : undefined;
        work.push(
          this.agents.local.deliver(r.address, m.mailFrom, data).then((outcome) => {
            results.push({ rcpt: r, outcome, agent: 'maildir', ...(note ? { note } : {}) });
          }),
        );
        continue;
      }
      // Each recipient by its own organisation's connectors: a message may carry recipients of
      // organisations other than the one it is attributed to (an onPremises sender's).
      const domain = r.address.slice(r.address.lastIndexOf('@') + 1);
      const hop = outbound.nextHop(r.org, domain, m.envelope, m.inbound.connector);
      const g = groups.get(hop.key) ?? { hop, rcpts: [] };
      g.rcpts.push(r);
      groups.set(hop.key, g);
    }
    for (const g of groups.values()) {
      work.push(
        this.agents.remote
          .deliver({ queueId: m.id, mailFrom: m.mailFrom, envelope: m.envelope, recipients: g.rcpts, hop: g.hop, data })
          .then((res) => {
            for (const r of g.rcpts)
              results.push({ rcpt: r, outcome: res.outcomes.get(r.idx)!, agent: 'smtp', attempt: res.attempt });
          }),
      );
    }
    await Promise.all(work);
    return results;
  }

  private async process(m: QueueMessage, inMemory?: Buffer): Promise<void> {
    const { config } = this.deps();
    const q = config.queue;
    const data = inMemory ?? (await this.store.data(m.id));
    const now = Date.now();
    const expired = now - m.receivedAt > q.messageExpiration * 1000;
    const results: Result[] =
      m.bounceRequestedBy !== undefined
        ? // "Bounce now" (store.requestBounce): the open recipients fail at once and the DSN says so.
          m.recipients.map((rcpt) => ({
            rcpt,
            agent: 'admin',
            outcome: { status: 'failed' as const, reply: Replies.returnedByAdministrator() },
          }))
        : data
          ? await this.deliverAll(m, data)
          : m.recipients.map((rcpt) => ({
              rcpt,
              agent: 'none',
              outcome: {
                status: 'deferred' as const,
                reply: { code: 451, enhanced: '4.3.0', message: 'Message data missing from the queue store' },
              },
            }));
    for (const r of results) {
      if (r.outcome.status === 'deferred' && expired) {
        r.outcome = {
          status: 'failed',
          reply: {
            code: 550,
            enhanced: '5.4.7',
            message: `Delivery time expired: ${r.outcome.reply.message}`,
            reason: r.outcome.reply.reason ?? r.outcome.reply.message,
          },
        };
        r.expired = true;
      }
      const a = r.attempt;
      emit({
        event: 'delivery.result',
        queueId: m.id,
        rcpt: r.rcpt.address,
        status: r.outcome.status,
        agent: r.agent,
        code: r.outcome.reply.code,
        enhanced: r.outcome.reply.enhanced,
        reason: r.outcome.reply.reason ?? r.outcome.reply.message,
        org: m.org,
        ...(a?.tlsFailure ? { tlsFailure: a.tlsFailure, tlsResultType: rfc8460ResultType(a.tlsFailure) } : {}),
        ...(a ? { tlsRequired: a.tlsRequired.level, tlsSource: a.tlsRequired.source, tlsAchieved: a.tlsAchieved } : {}),
        ...(a?.tls ? { tlsVersion: a.tls.version, tlsCipher: a.tls.cipher } : {}),
        ...(a?.tlsLegacy ? { tlsLegacy: true } : {}),
      });
    }
    if (data) await this.notify(m, data, results);
    const deferred = results.filter((r) => r.outcome.status === 'deferred');
    const warn =
      deferred.length > 0 && !m.delayWarned && q.delayWarning > 0 && now - m.receivedAt >= q.delayWarning * 1000;
    if (warn && data) await this.delayWarning(m, data, deferred);
    const outcomes: RecipientOutcome[] = results.map((r) => ({
      idx: r.rcpt.idx,
      status: r.outcome.status,
      reply: r.outcome.reply,
      agent: r.agent,
      ...(r.attempt || r.note ? { detail: { ...r.attempt, ...r.note } as Record<string, unknown> } : {}),
    }));
    const next = Date.now() + retryDelay(q.retrySchedule, m.attempts + 1) * 1000;
    const gen = this.active.get(m.id) ?? m.leaseGen;
    if ((await this.store.complete(m.id, this.owner, outcomes, next, { delayWarned: warn, gen })) === 'fenced') {
      emit({ event: 'queue.fenced', queueId: m.id, node: this.owner, gen });
    }
  }

  /**
   * Renew the leases of the deliveries in flight (the node's heartbeat calls it); a lease that
   * another node has taken over is logged (its delivery's outcome will be refused).
   */
  async renewLeases(): Promise<void> {
    const held = [...this.active].map(([id, gen]) => ({ id, gen }));
    if (!held.length) return;
    const renewed = new Set(await this.store.renew(this.owner, held, this.deps().config.queue.leaseSeconds * 1000));
    for (const l of held)
      if (!renewed.has(l.id) && this.active.get(l.id) === l.gen)
        emit({ event: 'queue.leaseLost', queueId: l.id, node: this.owner, gen: l.gen });
  }

  /** Bounce failed recipients to the sender (RFC 3464), unless null sender or NOTIFY declines;
   * report success where NOTIFY asks for it: delivered here, or relayed to a peer without DSN. */
  private async notify(m: QueueMessage, data: Buffer, results: Result[]): Promise<void> {
    const succeeded = results.filter(
      (r) =>
        r.outcome.status === 'delivered' &&
        wantsNotice(r.rcpt.notify, 'success') &&
        (r.agent === 'maildir' || r.attempt?.peerDsn === false),
    );
    if (succeeded.length && m.mailFrom) {
      await this.sendDsn(
        m,
        data,
        succeeded.map((r) => ({
          ...this.dsnRecipient(r, 'failed', false),
          action: r.agent === 'maildir' ? ('delivered' as const) : ('relayed' as const),
          explanation:
            r.agent === 'maildir'
              ? `delivered to the mailbox (${r.outcome.reply.message})`
              : `relayed to ${r.attempt?.host}, which does not offer delivery notifications; no further notice ` +
                `will follow`,
        })),
      );
    }
    const failed = results.filter((r) => r.outcome.status === 'failed' && wantsNotice(r.rcpt.notify, 'failed'));
    if (!failed.length) return;
    if (!m.mailFrom) {
      emit({
        event: 'delivery.result',
        queueId: m.id,
        rcpt: failed.map((r) => r.rcpt.address).join(','),
        status: 'failed',
        agent: 'bounce',
        reason: 'no DSN: the message has a null sender (it may itself be a bounce)',
      });
      return;
    }
    await this.sendDsn(
      m,
      data,
      failed.map((r) => this.dsnRecipient(r, 'failed', r.expired === true)),
    );
  }

  private async delayWarning(m: QueueMessage, data: Buffer, deferred: Result[]): Promise<void> {
    const want = deferred.filter((r) => wantsNotice(r.rcpt.notify, 'delayed'));
    if (!want.length || !m.mailFrom) return;
    const until = m.receivedAt + this.deps().config.queue.messageExpiration * 1000;
    await this.sendDsn(
      m,
      data,
      want.map((r) => this.dsnRecipient(r, 'delayed', false)),
      until,
    );
  }

  private dsnRecipient(r: Result, action: 'failed' | 'delayed', expired: boolean): DsnRecipient {
    return {
      address: r.rcpt.address,
      action,
      reply: r.outcome.reply,
      explanation: explain(r, expired),
      lastAttempt: Date.now(),
      ...(r.rcpt.orcpt ? { orcpt: r.rcpt.orcpt } : {}),
      ...(r.attempt?.ip ? { remoteMta: r.attempt.host } : {}),
    };
  }

  /**
   * One notice per event for the whole cluster: before the first notice of a delivery, the lease
   * is renewed, which also proves it is still ours. Lost (another node took the message over and
   * sends its own notices): none from here. Renewed: no other node can take the message before
   * the completion that follows (it is written within the lease just extended).
   */
  private stillHeld(m: QueueMessage): Promise<boolean> {
    let p = this.held.get(m.id);
    if (!p) {
      const gen = this.active.get(m.id) ?? m.leaseGen;
      p = this.store.renew(this.owner, [{ id: m.id, gen }], this.deps().config.queue.leaseSeconds * 1000).then((r) => {
        if (r.length) return true;
        emit({ event: 'queue.leaseLost', queueId: m.id, node: this.owner, gen });
        return false;
      });
      this.held.set(m.id, p);
    }
    return p;
  }

  private async sendDsn(m: QueueMessage, data: Buffer, rcpts: DsnRecipient[], willRetryUntil?: number): Promise<void> {
    if (!(await this.stillHeld(m))) return;
    const { config, inbound } = this.deps();
    const dsn = buildDsn({
      reportingMta: config.hostname,
      queueId: m.id,
      originalFrom: m.mailFrom,
      envelope: m.envelope,
      arrival: m.receivedAt,
      recipients: rcpts,
      original: data,
      ...(willRetryUntil ? { willRetryUntil } : {}),
    });
    // RFC 8689 §5: the DSN of a REQUIRETLS message is sent with REQUIRETLS (and headers only, buildDsn).
    const id = await this.ingest.generated({
      org: m.org,
      // A sender of another organisation hosted here is routed by its own organisation's connectors.
      to: inbound.destination(m.mailFrom),
      data: dsn.data,
      messageId: dsn.messageId,
      host: config.hostname,
      regarding: m.id,
      ...(m.envelope.requireTls ? { envelope: { requireTls: true } } : {}),
    });
    const a = rcpts[0].action;
    emit({
      event: 'delivery.result',
      queueId: m.id,
      rcpt: rcpts.map((r) => r.address).join(','),
      status: a === 'delayed' ? 'deferred' : a === 'failed' ? 'failed' : 'delivered',
      agent: 'dsn',
      reason:
        `${a === 'delayed' ? 'delay warning' : a === 'failed' ? 'DSN' : 'success notice'} queued as ${id} ` +
        `to <${m.mailFrom}>`,
    });
  }

  /** Stop claiming; wait for the queue scan and the deliveries in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.cycling;
    await this.retention.stop();
    if (this.inflight > 0) await new Promise<void>((r) => this.idle.push(r));
  }
}
