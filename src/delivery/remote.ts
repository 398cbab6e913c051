// Owns: delivering one message's recipients for one next hop over SMTP: resolving MX (dns/mx.ts;
// never to this gateway itself, RFC 5321 §5.1) or smart hosts, trying hosts in order, applying the TLS requirement,
// reusing pooled connections,
// and returning one classified outcome per recipient plus the facts of every attempt (the trace).
// What a failure means (next host, every recipient, the verdict, what is remembered) is decided by
// trouble.ts. The TLS requirement of each host is the hop's composed with the demands of the demand
// providers (DANE, MTA-STS) by policy/outbound.ts composeHost; a provider that refuses a host (a
// TLSA lookup that failed, an MTA-STS enforce policy that does not name it) makes it skipped,
// never contacted; a requirement a provider only observes (MTA-STS testing) is recorded, not
// enforced. Sends each peer what it can take (mime-downgrade.ts: 7 bit without 8BITMIME, no line
// over 998 octets) and records any conversion with the attempt.
// Promises: a required TLS level never falls back (no plaintext, no legacy TLS, no weaker check),
// whichever source demanded it, and every demand that applies to a host is checked;
// opportunistic TLS works its way down — TLS 1.2+, then (after a protocol-version or cipher
// failure, delivery.opportunisticLegacyTls) legacy TLS 1.0/1.1, then plaintext — remembers per
// address what worked for delivery.tlsFallbackSeconds, and records every step with its TLS failure
// kind; hosts that failed recently are tried last; a destination that is down is not hammered,
// and no destination gets more deliveries at once than its concurrency window (window.ts), which
// the outcome of every attempt feeds (successes, lost connections, 421 and 4.7.x replies); an
// address that is not a valid RFC 5321 path fails permanently (553) and is never sent. A message
// with REQUIRETLS (RFC 8689) goes only to a next hop whose certificate a source authenticates
// and only to a host that offers REQUIRETLS after STARTTLS, with the parameter passed on; else
// it is never sent (5.7.30). Every TLS negotiation with an MX host is reported to
// `onTlsSession` (TLS-RPT, RFC 8460), success or failure with its result type, and so is every
// host a provider refuses before any connection (one failed session each).
import net from 'node:net';
import type { Config } from '../config/load.ts';
import { INITIAL_CONNECTIONS_PER_DESTINATION } from '../config/schema.ts';
import { Replies } from '../errors.ts';
import { emit } from '../events.ts';
import { beforeSelf, mailHosts } from '../dns/mx.ts';
import { DnsError, type Resolver } from '../dns/types.ts';
import {
  composeHost,
  plainRequirement,
  type DemandProvider,
  type HostContext,
  type HostRequirement,
  type NextHop,
  type TlsRequirement,
} from '../policy/outbound.ts';
import { levelRank, type TlsLevel } from '../tls/levels.ts';
import { smtpPath } from '../mailbox.ts';
import type { EnvelopeParams, QueueRecipient } from '../store/types.ts';
import {
  describeTlsFailure,
  rfc8460ResultType,
  type Rfc8460Policy,
  type Rfc8460ResultType,
  type TlsFailureKind,
} from '../tls/failures.ts';
import { namesSatisfy } from '../tls/names.ts';
import type { TrustStore } from '../tls/trust.ts';
import type { RevocationChecker } from '../tls/revocation.ts';
import { classifyFailure, type FailureFacts, type Outcome } from './classify.ts';
import { OutboundContent } from './mime-downgrade.ts';
import { judgeTls } from './tls-check.ts';
import { Windows, feedbackOf, type Slot, type WindowTiming } from './window.ts';
import type { ConnectionPool } from './pool.ts';
import { DeliveryError, SmtpConnection, type PeerTls, type TransactionResult } from './smtp-client.ts';
import {
  Tally,
  Trouble,
  forAll,
  hostFailure,
  inProcessMemories,
  nextTlsStep,
  transactionOutcome,
  type AttemptFacts,
  type DeliveryMemories,
  type HostFailed,
  type HostResult,
  type RemoteResult,
  type TlsMode,
} from './trouble.ts';

export type { AttemptFacts, RemoteResult } from './trouble.ts';

export interface RemoteJob {
  queueId: string;
  mailFrom: string;
  envelope: EnvelopeParams;
  recipients: QueueRecipient[];
  hop: NextHop;
  data: Buffer;
}

interface Target {
  name: string;
  port: number;
}

/** One TLS negotiation with an MX host (RFC 8460 §4.3: a session, successful or failed). */
export interface TlsSessionReport {
  /** The recipient domain whose policy applied. */
  policyDomain: string;
  policy: Rfc8460Policy;
  /** Failure result type; absent for a successful session. */
  resultType?: Rfc8460ResultType;
  sendingIp?: string;
  mxHost: string;
  mxIp: string;
  /** Failure only: what went wrong, from the failure vocabulary (failure-reason-code). */
  reason?: string;
}

/** A host's addresses, with the DNSSEC status and names of their lookup (none for an IP literal). */
interface Addresses {
  ips: string[];
  lookup?: { secure: boolean; names: readonly string[] };
}

/** Seams for tests and for sharing what delivery remembers (see trouble.ts). */
export interface RemoteOptions {
  memories?: DeliveryMemories;
  /** Told of every TLS negotiation with an MX host (TLS-RPT counters). Must not throw. */
  onTlsSession?: (s: TlsSessionReport) => void;
  /** Randomness for the order of MX hosts of equal preference (default Math.random). */
  random?: () => number;
  /** Per-host demand providers (DANE, MTA-STS, ...), asked for every host in this order. */
  providers?: () => readonly DemandProvider[];
  /** How long messages wait for a slot of a destination's concurrency window (window.ts). */
  windowTiming?: WindowTiming;
  /**
   * This process's share of a per-destination connection limit (the initial window and
   * delivery.maxConnectionsPerDestination hold for the whole gateway; a worker of `workers: N`
   * gets its part). All of it by default.
   */
  share?: (total: number) => number;
}

/** The names this gateway is known by in mail transactions: `hostname` and `delivery.heloName`. */
function ownNames(cfg: Config): Set<string> {
  return new Set(
    [cfg.hostname, cfg.delivery.heloName]
      .filter((n): n is string => !!n)
      .map((n) => n.toLowerCase().replace(/\.$/, '')),
  );
}

function loopsBack(domain: string, self: { name: string; priority: number }): string {
  return (
    `mail for ${domain} loops back to myself: this gateway (${self.name.toLowerCase().replace(/\.$/, '')}) is ` +
    `listed as its mail server (MX, preference ${self.priority}) ` +
    "and no server is preferred to it, so there is nowhere to send the message. The domain's MX records are " +
    "wrong, or the domain should be one of this gateway's accepted domains."
  );
}

/** How the hosts of a next hop were found (HostContext.via). */
type Via = HostContext['via'];

/** A host's requirement, and what the providers only observe (testing modes). */
type Plan = { requirement: HostRequirement; observe: TlsRequirement[] };

/**
 * The TLS level a connection actually achieved (for the trace); names match per RFC 6125 §6.4;
 * `proof` from a demand's own check (DANE).
 */
function achieved(tls: PeerTls | null, req: TlsRequirement, hostname: string, proof?: string): TlsLevel {
  if (!tls) return 'none';
  if (tls.legacy) return 'opportunistic'; // encrypted, but below the TLS 1.2 floor of every required level
  if (proof && req.level === 'dane') return 'dane';
  if (!tls.chainValid) return 'encryptionOnly';
  const names = tls.names ?? [];
  if (req.tlsDomain ? namesSatisfy(names, req.tlsDomain) : namesSatisfy(names, hostname)) return 'domainValidation';
  return 'certificateValidation';
}

/** The facts of a host requirement for the trace: the strictest demand, and the others when there are more. */
function requirementFacts(req: HostRequirement): Pick<AttemptFacts, 'tlsRequired' | 'tlsDemands' | 'tlsNotes'> {
  const others = req.demands.slice(1).map(plainRequirement);
  const notes = [...req.waived.map((w) => `not applied: ${w}`), ...req.notes];
  return {
    tlsRequired: plainRequirement(req),
    ...(others.length ? { tlsDemands: others } : {}),
    ...(notes.length ? { tlsNotes: notes } : {}),
  };
}

const stripChain = (t: PeerTls | null | undefined): Omit<PeerTls, 'chain' | 'presented'> | undefined => {
  if (!t) return undefined;
  const { chain: _chain, presented: _presented, ...rest } = t;
  return rest;
};

/** Recipients whose address (or the sender's) cannot be sent as a valid path, with their outcome. */
function unsendable(job: RemoteJob): Map<number, Outcome> {
  const out = new Map<number, Outcome>();
  const utf8 = job.envelope.smtputf8;
  const from = smtpPath(job.mailFrom, 'sender', utf8);
  for (const r of job.recipients) {
    const to = smtpPath(r.address, 'recipient', utf8);
    if (!from.ok)
      out.set(
        r.idx,
        classifyFailure({ kind: 'badSender', detail: `sender <${job.mailFrom}> cannot be sent: ${from.problem}` }),
      );
    else if (!to.ok)
      out.set(
        r.idx,
        classifyFailure({ kind: 'badRecipient', detail: `recipient <${r.address}> cannot be sent: ${to.problem}` }),
      );
  }
  return out;
}

type Found<T> = { kind: 'found'; value: T } | { kind: 'failed'; facts: FailureFacts };
/** A pooled connection that turned out dead: tryHost tries once more on a fresh one. */
type Stale = { kind: 'stale'; failure: HostFailed };
type Opened = { kind: 'open'; conn: SmtpConnection; mode: TlsMode } | HostFailed;

export class RemoteDelivery {
  private readonly windows: Windows;
  private readonly trouble: Trouble;
  private readonly random: () => number;
  private readonly onTlsSession: (s: TlsSessionReport) => void;
  private readonly providers: () => readonly DemandProvider[];

  constructor(
    private readonly resolver: () => Resolver,
    private readonly pool: ConnectionPool,
    private readonly trust: () => TrustStore,
    private readonly config: () => Config,
    private readonly revocation: RevocationChecker,
    private readonly identity?: () => { cert: string; key: string },
    options: RemoteOptions = {},
  ) {
    this.trouble = new Trouble(options.memories ?? inProcessMemories(), () => this.config().delivery);
    this.random = options.random ?? Math.random;
    this.onTlsSession = options.onTlsSession ?? (() => {});
    this.providers = options.providers ?? (() => []);
    const share = options.share ?? ((total: number) => total);
    this.windows = new Windows(
      () => {
        const d = this.config().delivery;
        const initial = d.initialConnectionsPerDestination ?? INITIAL_CONNECTIONS_PER_DESTINATION;
        const max = d.maxConnectionsPerDestination;
        return { initial: share(initial), max: share(max), cohort: Math.max(1, Math.min(initial, max)) };
      },
      // `max`: this process's (a worker's share).
      (c) => emit({ event: 'delivery.window', ...c, max: share(this.config().delivery.maxConnectionsPerDestination) }),
      options.windowTiming,
    );
  }

  /** Report a TLS session with an MX host (not smart hosts; not our own TLS reports, RFC 8460 §5.3). */
  private session(
    job: RemoteJob,
    req: { demands: readonly TlsRequirement[] },
    t: Target,
    ip: string,
    localIp: string | undefined,
    failure?: TlsFailureKind,
  ): void {
    if (job.hop.kind !== 'mx' || job.envelope.tlsReport) return;
    // The published policy that applied to this host (DANE, MTA-STS), else none was found.
    const policy = req.demands.find((d) => d.report)?.report ??
      job.hop.tls.report ?? { type: 'no-policy-found' as const };
    this.onTlsSession({
      policyDomain: job.hop.domain,
      policy,
      mxHost: t.name,
      mxIp: ip,
      ...(localIp ? { sendingIp: localIp } : {}),
      ...(failure ? { resultType: rfc8460ResultType(failure), reason: describeTlsFailure(failure) } : {}),
    });
  }

  async deliver(job: RemoteJob): Promise<RemoteResult> {
    // Addresses that are not valid RFC 5321 paths fail here, alone, with the reason; never sent.
    const bad = unsendable(job);
    if (!bad.size) return this.deliverValid(job);
    const rest = job.recipients.filter((r) => !bad.has(r.idx));
    const result: RemoteResult = rest.length
      ? await this.deliverValid({ ...job, recipients: rest })
      : {
          outcomes: new Map(),
          attempt: {
            host: job.hop.domain,
            port: this.config().delivery.port,
            tlsRequired: job.hop.tls,
            tlsAchieved: 'none',
            error: [...bad.values()][0].reply.reason!,
          },
        };
    for (const [idx, o] of bad) result.outcomes.set(idx, o);
    return result;
  }

  private async deliverValid(job: RemoteJob): Promise<RemoteResult> {
    const hop = job.hop;
    const down = await this.trouble.down(hop.key);
    if (down) return { outcomes: forAll(job.recipients, down.outcome), attempt: down.attempt };
    // The destination's concurrency window (window.ts): a slot, or word that none came free.
    const slot = await this.windows.acquire(hop.key);
    if (slot.kind === 'busy') {
      const name = hop.kind === 'smarthost' ? `the smart hosts of connector ${hop.connector?.name}` : hop.domain;
      const reply = Replies.destinationBusy(name, slot.window, Math.round(slot.waitedMs / 1000));
      return {
        outcomes: forAll(job.recipients, { status: 'deferred', reply }),
        attempt: {
          host: hop.domain,
          port: this.config().delivery.port,
          tlsRequired: hop.tls,
          tlsAchieved: 'none',
          error: reply.reason!,
        },
      };
    }
    try {
      // Marked down while this message waited for its slot: not one more connection to it.
      const downNow = slot.waited && (await this.trouble.down(hop.key));
      if (downNow) return { outcomes: forAll(job.recipients, downNow.outcome), attempt: downNow.attempt };
      return await this.attempt(job, slot);
    } finally {
      slot.release();
    }
  }

  /** The hosts of the next hop: its smart hosts, or its mail hosts (dns/mx.ts, RFC 5321 §5.1). */
  private async targets(hop: NextHop): Promise<Found<{ hosts: Target[]; via: Via }>> {
    const port = this.config().delivery.port;
    if (hop.kind === 'smarthost')
      return {
        kind: 'found',
        value: {
          hosts: hop.smartHosts.map((h) => ({ name: h.host, port: h.port ?? port })),
          via: { kind: 'smarthost', secure: false },
        },
      };
    const mx = await mailHosts(this.resolver(), hop.domain, this.random);
    switch (mx.kind) {
      // RFC 7505 §3: a null MX says the domain accepts no mail (556 5.1.10, classify.ts).
      case 'nullMx':
        return {
          kind: 'failed',
          facts: { kind: 'nullMx', detail: `${hop.domain} publishes a null MX record (RFC 7505): it accepts no mail` },
        };
      case 'error':
        return {
          kind: 'failed',
          facts: {
            kind: 'dns',
            dnsKind: mx.error.kind,
            detail: `MX lookup for ${hop.domain} failed: ${mx.error.message}`,
          },
        };
      default: {
        // RFC 5321 §5.1: never to ourselves, nor to hosts we are preferred to (they send to us).
        const left = beforeSelf(mx.hosts, ownNames(this.config()));
        if (left.self && !left.hosts.length)
          return { kind: 'failed', facts: { kind: 'loopsBack', detail: loopsBack(hop.domain, left.self) } };
        // `secure`: the DNSSEC status of the MX answer (DANE needs it, RFC 7672 §2.2.1).
        return {
          kind: 'found',
          value: { hosts: left.hosts.map((h) => ({ name: h.name, port })), via: { kind: mx.kind, secure: mx.secure } },
        };
      }
    }
  }

  private async addresses(t: Target): Promise<Found<Addresses>> {
    if (net.isIP(t.name)) return { kind: 'found', value: { ips: [t.name] } };
    try {
      const r = await this.resolver().addresses(t.name);
      return { kind: 'found', value: { ips: r.records, lookup: { secure: r.status === 'secure', names: r.names } } };
    } catch (e) {
      if (e instanceof DnsError)
        return {
          kind: 'failed',
          facts: { kind: 'dns', dnsKind: e.kind, detail: `address lookup for ${t.name} failed: ${e.message}` },
        };
      throw e;
    }
  }

  private async attempt(job: RemoteJob, slot: Slot): Promise<RemoteResult> {
    const hop = job.hop;
    const base: AttemptFacts = {
      host: hop.domain,
      port: this.config().delivery.port,
      tlsRequired: hop.tls,
      tlsAchieved: 'none',
      ...(hop.connector ? { connector: hop.connector.name } : {}),
    };
    const targets = await this.targets(hop);
    if (targets.kind === 'failed')
      return {
        outcomes: forAll(job.recipients, classifyFailure(targets.facts)),
        attempt: { ...base, error: targets.facts.detail },
      };

    const tally = new Tally();
    const content = new OutboundContent(job.data, job.envelope);
    // Hosts that failed recently go last ("try the next MX first" on a retry; RFC 5321 §4.5.4.1:
    // keep a list of hosts that cannot be reached). Every address of a host in turn (§5.1).
    for (const t of await this.trouble.order(targets.value.hosts)) {
      const ips = await this.addresses(t);
      if (ips.kind === 'failed') {
        tally.dnsFailed(classifyFailure(ips.facts), { ...base, host: t.name, port: t.port, error: ips.facts.detail });
        continue;
      }
      if (!ips.value.ips.length) continue;
      const plan = await this.hostRequirement(job, t, targets.value.via, ips.value);
      if (plan.kind === 'refused') {
        // A source rules this host out (a TLSA lookup that failed, an MTA-STS enforce policy that
        // does not name it): it is not contacted at all; the next host is tried, and the message waits when none is
        // left.
        tally.hostSkipped(plan.failure.outcome, plan.failure.attempt);
        continue;
      }
      tally.addressesFound();
      for (const ip of ips.value.ips) {
        const r = await this.tryHost(job, content, t, ip, plan);
        slot.feedback(feedbackOf(r));
        // The host answered a transaction: the destination is reachable.
        if (r.kind === 'done' || r.level === 'transaction') slot.reached();
        if (r.kind === 'done') {
          await this.trouble.hostSucceeded(t.name);
          return { outcomes: r.outcomes, attempt: r.attempt };
        }
        // A host without REQUIRETLS is not a failing host for other messages.
        if (!r.requireTls) await this.trouble.hostFailed(t.name);
        if (tally.hostFailed(r) === 'stop') return { outcomes: forAll(job.recipients, r.outcome), attempt: r.attempt };
      }
    }
    const v = tally.verdict();
    if (!v)
      return {
        outcomes: forAll(
          job.recipients,
          classifyFailure({ kind: 'noHost', detail: `no address found for the mail servers of ${hop.domain}` }),
        ),
        attempt: base,
      };
    // Every host failed at connection level, and as often in a row as the window is wide (at least
    // the initial window) without a delivery between (slot.failedCohort): remember it as down a while
    // (RFC 5321 §4.5.4.1: delay retrying a destination after a failed attempt). One refusal among
    // deliveries that succeed (a receiver throttling us) shrinks the window, no more.
    if (v.destinationDown && slot.failedCohort())
      await this.trouble.markDown(hop.key, { outcome: v.outcome, attempt: v.attempt });
    return { outcomes: forAll(job.recipients, v.outcome), attempt: v.attempt };
  }

  /**
   * The TLS requirement of one host: the hop's, composed with what each demand provider demands
   * of the host (policy/outbound.ts composeHost), or the refusal of a provider.
   */
  private async hostRequirement(
    job: RemoteJob,
    t: Target,
    via: Via,
    a: Addresses,
  ): Promise<({ kind: 'ok' } & Plan) | { kind: 'refused'; failure: HostFailed }> {
    const ctx: HostContext = {
      hop: job.hop,
      host: t.name,
      port: t.port,
      via,
      ...(a.lookup ? { addresses: a.lookup } : {}),
      message: { queueId: job.queueId },
    };
    const answers = [];
    const observe: TlsRequirement[] = [];
    for (const p of this.providers()) {
      const answer = await p.forHost(ctx);
      if (answer.kind === 'refuse') {
        // TLS-RPT (RFC 8460 §4.3): a session that failed under the source's policy before any
        // connection (a TLSA lookup that failed, a host outside an enforced MTA-STS policy).
        this.session(job, { demands: [answer.demand] }, t, a.ips[0], undefined, answer.tlsFailure);
        const facts: AttemptFacts = {
          host: t.name,
          port: t.port,
          tlsRequired: plainRequirement(answer.demand),
          tlsAchieved: 'none',
          ...(job.hop.connector ? { connector: job.hop.connector.name } : {}),
        };
        return {
          kind: 'refused',
          failure: hostFailure(
            {
              kind: 'tlsPolicy',
              tlsFailure: answer.tlsFailure,
              detail: `TLS required by ${answer.demand.source}: ${answer.detail}, host ${t.name}`,
            },
            facts,
          ),
        };
      }
      if (answer.kind === 'none' && answer.observe) observe.push(answer.observe);
      answers.push({ provider: p.name, answer });
    }
    // What the message demands (REQUIRETLS, `TLS-Required: No`, RFC 8689) is composed there too.
    return { kind: 'ok', requirement: composeHost(job.hop.tls, answers, job.envelope), observe };
  }

  /** One host address: the outcomes, or a failure of this host (trouble.ts says what it means). */
  private async tryHost(
    job: RemoteJob,
    content: OutboundContent,
    t: Target,
    ip: string,
    plan: Plan,
  ): Promise<HostResult> {
    const first = await this.once(job, content, t, ip, plan, true);
    if (first.kind !== 'stale') return first;
    // The pooled connection died while idle: once more, on a fresh connection (never pooled).
    const again = await this.once(job, content, t, ip, plan, false);
    return again.kind === 'stale' ? again.failure : again;
  }

  private async once(
    job: RemoteJob,
    content: OutboundContent,
    t: Target,
    ip: string,
    plan: Plan,
    pooled: boolean,
  ): Promise<HostResult | Stale> {
    const req = plan.requirement;
    const facts: AttemptFacts = {
      host: t.name,
      ip,
      port: t.port,
      ...requirementFacts(req),
      tlsAchieved: 'none',
      ...(job.hop.connector ? { connector: job.hop.connector.name } : {}),
    };
    // Connections are shared only between deliveries that demand the same of the host.
    const key = `${ip}:${t.port}|${req.demands.map((d) => `${d.level}/${d.tlsDomain ?? ''}/${d.source}`).join('|')}`;
    // RFC 8689 §4.2.1: a REQUIRETLS message goes only to a host a source authenticates
    // (composeHost's verdict); else this host is not even contacted (and when no host
    // qualifies, 5.7.30: trouble.ts).
    if (req.requireTlsProblem) return hostFailure({ kind: 'requireTls', detail: req.requireTlsProblem }, facts);
    const opened = await this.open(job, req, t, ip, key, facts, pooled);
    if (opened.kind !== 'open') return opened;
    const refused = await this.checkTls(opened.conn, opened.mode, job, req, t, ip, facts).catch((e: unknown) => {
      void opened.conn.quit(); // never left open when the judging throws
      throw e;
    });
    if (refused) {
      void opened.conn.quit();
      return refused;
    }
    if (job.envelope.requireTls && !opened.conn.extensions.has('REQUIRETLS')) {
      void opened.conn.quit();
      return hostFailure(
        {
          kind: 'requireTls',
          detail: `TLS required by REQUIRETLS (RFC 8689): ${t.name} [${ip}] does not offer REQUIRETLS`,
        },
        facts,
      );
    }
    this.observe(opened.conn, plan.observe, t, facts);
    return this.transact(job, content, t, ip, key, opened.conn, facts);
  }

  /**
   * A pooled connection, or a new one. Opportunistic TLS steps down on a failed handshake: at most
   * three connections (TLS 1.2+, legacy TLS, plaintext); a required level gets one.
   */
  private async open(
    job: RemoteJob,
    req: HostRequirement,
    t: Target,
    ip: string,
    key: string,
    facts: AttemptFacts,
    pooled: boolean,
  ): Promise<Opened> {
    const cfg = this.config();
    const forced = levelRank(req.level) >= levelRank('encryptionOnly');
    const reused = pooled ? this.pool.take(key) : undefined;
    if (reused) {
      facts.reused = true;
      return { kind: 'open', conn: reused, mode: 'modern' };
    }
    const start = await this.trouble.tlsStart(req, ip, forced);
    let mode = start.mode;
    if (start.remembered && mode !== 'modern') {
      // A step remembered from an earlier attempt (a step taken now records its own note).
      facts.tlsFailure = start.remembered.value.cause;
      facts.fallback =
        `TLS 1.2+ handshake with this host failed recently: ` +
        `${describeTlsFailure(start.remembered.value.cause)}; ` +
        `${mode === 'legacy' ? 'using legacy TLS' : 'sending in plaintext'} until ` +
        `${new Date(start.remembered.until).toISOString()}`;
    }
    for (let round = 0; round < 3; round++) {
      const starttls = mode === 'plaintext' ? 'never' : forced ? 'require' : 'try';
      try {
        const conn = await SmtpConnection.open({
          ip,
          port: t.port,
          hostname: t.name,
          heloName: cfg.delivery.heloName ?? cfg.hostname,
          trust: this.trust(),
          starttls,
          legacyTls: mode === 'legacy',
          ...this.sourceFor(ip),
          timeouts: cfg.delivery.timeouts,
          ...(this.identity ? { clientCert: this.identity() } : {}),
          // A resumed session carries no certificate to check: certificateValidation and above
          // always do a full handshake (resuming made every later connection fail "no certificate").
          session: levelRank(req.level) >= levelRank('certificateValidation') ? undefined : this.pool.session(t.name),
          onSession: (s) => this.pool.saveSession(t.name, s),
        });
        this.pool.opened();
        return { kind: 'open', conn, mode };
      } catch (e) {
        if (!(e instanceof DeliveryError)) throw e;
        if (e.kind === 'tls' && starttls === 'try') {
          // Opportunistic: the message must not be stuck behind a peer's old or broken TLS.
          const cause = e.tlsFailure ?? 'handshake-failed';
          this.session(job, req, t, ip, e.localAddress, cause);
          const next = nextTlsStep(mode, cause, cfg.delivery.opportunisticLegacyTls);
          await this.trouble.stepDown(ip, { mode: next, cause: facts.tlsFailure ?? cause });
          facts.tlsFailure ??= cause;
          const retry =
            next === 'legacy'
              ? 'retrying with legacy TLS (TLS 1.0/1.1 and older cipher suites)'
              : 'retrying in plaintext';
          facts.fallback =
            mode === 'legacy'
              ? `${facts.fallback ?? 'TLS 1.2+ handshake failed'}; legacy TLS handshake failed too ` +
                `(${e.message}); ${retry}`
              : `TLS handshake failed (${e.message}); ${retry}`;
          mode = next;
          continue;
        }
        // SMTP failed after STARTTLS succeeded: the trace keeps what TLS showed.
        if (e.tls) facts.tls = stripChain(e.tls);
        if ((e.kind === 'starttls' || e.kind === 'tls') && e.tlsFailure)
          this.session(job, req, t, ip, e.localAddress, e.tlsFailure);
        const label =
          e.kind === 'starttls' || e.kind === 'tls' ? `TLS required by ${req.source}: ${e.message}` : e.message;
        return hostFailure(
          {
            kind: e.kind,
            ...(e.reply ? { reply: e.reply } : {}),
            detail: label,
            ...(e.tlsFailure ? { tlsFailure: e.tlsFailure } : {}),
          },
          facts,
        );
      }
    }
    return hostFailure({ kind: 'connect', detail: `could not connect to ${t.name} [${ip}]` }, facts);
  }

  /** Record what TLS the session has and judge it against the requirement: a violation fails the host. */
  private async checkTls(
    conn: SmtpConnection,
    mode: TlsMode,
    job: RemoteJob,
    req: HostRequirement,
    t: Target,
    ip: string,
    facts: AttemptFacts,
  ): Promise<HostFailed | undefined> {
    const cfg = this.config();
    if (mode === 'legacy' && conn.tls && !conn.tls.legacy) {
      // The server offers modern TLS again: forget the step down.
      await this.trouble.modernAgain(ip);
      delete facts.fallback;
      delete facts.tlsFailure;
    }
    facts.tls = stripChain(conn.tls);
    facts.peerDsn = conn.extensions.has('DSN');
    facts.tlsAchieved = achieved(conn.tls, req, t.name);
    if (conn.tls?.legacy) {
      facts.tlsLegacy = true;
      const cause = facts.tlsFailure ?? (await this.trouble.remembered(ip))?.cause;
      if (cause) facts.tlsFailure = cause;
    }
    if (!conn.tls && conn.tlsSkipped) {
      facts.fallback ??= conn.tlsSkipped.detail;
      facts.tlsFailure ??= conn.tlsSkipped.kind;
    }
    // Every demand is judged, the strictest first; the first violation fails the host.
    let violation: HostFailed | undefined;
    let failure: TlsFailureKind | undefined;
    for (const demand of req.demands) {
      const judged = await judgeTls(conn.tls, demand, `host ${t.name} [${ip}]`, this.revocation, cfg.tls.revocation);
      if (judged.revocation) facts.revocation = judged.revocation.summary;
      if (judged.proof) {
        facts.tlsProof = judged.proof;
        facts.tlsAchieved = achieved(conn.tls, req, t.name, judged.proof);
      }
      // certificateValidation includes "not revoked": a revoked certificate (or, under hardFail, one
      // whose status could not be confirmed) proves no identity, whatever its chain and names.
      const rev = judged.revocation?.status;
      if (conn.tls && (rev === 'revoked' || (rev === 'unknown' && cfg.tls.revocation === 'hardFail')))
        facts.tlsAchieved = 'encryptionOnly';
      if (judged.violation) {
        failure = judged.kind ?? conn.tlsSkipped?.kind ?? 'starttls-not-offered';
        violation = hostFailure(
          { kind: 'tlsPolicy', detail: judged.violation, ...(judged.kind ? { tlsFailure: judged.kind } : {}) },
          facts,
        );
        break;
      }
    }
    if (!facts.reused) {
      // TLS-RPT: this connection's negotiation (a reused connection is no new session).
      if (failure) this.session(job, req, t, ip, conn.localAddress, failure);
      else if (conn.tls) this.session(job, req, t, ip, conn.localAddress);
      else if (conn.tlsSkipped) this.session(job, req, t, ip, conn.localAddress, conn.tlsSkipped.kind);
    }
    return violation;
  }

  /**
   * Requirements only observed (MTA-STS testing): whether this session would have met them, for
   * the trace. Delivery goes on either way.
   */
  private observe(conn: SmtpConnection, observed: readonly TlsRequirement[], t: Target, facts: AttemptFacts): void {
    for (const o of observed) {
      const got = achieved(conn.tls, o, t.name);
      const met = levelRank(got) >= levelRank(o.level);
      (facts.tlsNotes ??= []).push(
        `${o.source}: this session ${met ? 'meets' : 'would NOT meet'} the policy ` +
          `(${o.level}${o.tlsDomain ? ` for ${o.tlsDomain}` : ''}, achieved ${got}); delivered anyway (testing mode)`,
      );
    }
  }

  /** What this peer can take, then the transaction; its replies become outcomes (trouble.ts). */
  private async transact(
    job: RemoteJob,
    content: OutboundContent,
    t: Target,
    ip: string,
    key: string,
    conn: SmtpConnection,
    facts: AttemptFacts,
  ): Promise<HostResult | Stale> {
    const where = `${t.name} [${ip}]`;
    const refuse = (f: FailureFacts): HostResult => {
      this.pool.give(key, conn);
      return { kind: 'done', outcomes: forAll(job.recipients, classifyFailure(f)), attempt: facts };
    };
    // What the peer did not offer: SMTPUTF8 (RFC 6531), 8BITMIME (RFC 6152 §3: convert or
    // refuse), SIZE (RFC 1870 §4: a message over the announced maximum would get 552).
    if (job.envelope.smtputf8 && !conn.extensions.has('SMTPUTF8'))
      return refuse({ kind: 'smtputf8', detail: `${where} does not offer SMTPUTF8` });
    const prepared = content.forPeer(conn.extensions.has('8BITMIME'));
    if (prepared.kind === 'refused')
      return refuse({
        kind: 'eightBit',
        detail: `${where} does not offer 8BITMIME and the message cannot be converted to 7 bit: ${prepared.refused}`,
      });
    if (prepared.conversion) facts.conversion = prepared.conversion;
    const data = prepared.data;
    const size = Number(conn.extensions.get('SIZE') || 0);
    if (size > 0 && data.length > size)
      return refuse({ kind: 'size', detail: `${where} accepts at most ${size} bytes; the message has ${data.length}` });

    let result: TransactionResult;
    try {
      result = await conn.send(
        {
          from: job.mailFrom,
          eightBit: job.envelope.body === '8BITMIME',
          smtputf8: job.envelope.smtputf8,
          ...(job.envelope.requireTls ? { requireTls: true } : {}),
          ...(job.envelope.ret ? { ret: job.envelope.ret } : {}),
          ...(job.envelope.envid ? { envid: job.envelope.envid } : {}),
          rcpts: job.recipients.map((r) => ({
            address: r.address,
            ...(r.notify ? { notify: r.notify } : {}),
            ...(r.orcpt ? { orcpt: r.orcpt } : {}),
          })),
        },
        data,
      );
    } catch (e) {
      conn.close();
      if (!(e instanceof DeliveryError)) throw e;
      const failure = hostFailure({ kind: e.kind, ...(e.reply ? { reply: e.reply } : {}), detail: e.message }, facts);
      return facts.reused && (e.kind === 'closed' || e.kind === 'protocol') ? { kind: 'stale', failure } : failure;
    }
    this.pool.give(key, conn);
    return transactionOutcome(job.recipients, result, where, facts);
  }

  private sourceFor(ip: string): { localAddress?: string } {
    const fam = net.isIP(ip);
    const src = this.config().delivery.sourceAddresses.find((a) => net.isIP(a) === fam);
    return src ? { localAddress: src } : {};
  }

  async close(): Promise<void> {
    await this.pool.closeAll();
  }
}
