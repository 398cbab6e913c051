// Owns: the failure policy of remote delivery, in one place (as Postfix's smtp_trouble.c). From
// the structured facts of each step it decides what a failure is:
// - a host failure at connection level (no usable session with this host: connect, timeout,
//   closed, protocol, greeting, EHLO, STARTTLS, TLS, TLS policy) or at transaction level (the
//   host answered and deferred the transaction, 4xx to MAIL FROM): try the next host;
// - a message failure (5xx to MAIL FROM, a permanent refusal that is not the connection's, too
//   big, 8-bit or SMTPUTF8 the peer cannot take): every recipient, no further host;
// - a recipient failure (the reply to its RCPT TO, or to the end of DATA);
// - the verdict when every host failed, 5xx rewritten to 4xx when no transaction started, except
//   when every host failed for REQUIRETLS (RFC 8689 §4.2.1: 5.7.30, returned to the sender);
// and what delivery remembers between attempts (DeliveryMemories): destinations that are down,
// hosts that failed recently, and the opportunistic TLS step-down per address.
// Retrying is the scheduler's (queue.retrySchedule; RFC 5321 §4.5.4.1); 5xx replies to MAIL are
// never remembered (§4.5.4.1: they MUST NOT be cached).
// Promises: decisions come from failure kinds and reply codes, never from text; a failure is
// never 'delivered'; nothing remembered outlives its `until`, and every memory is bounded.
import { classifyFailure, classifyRefusal, classifyReply, type FailureFacts, type Outcome } from './classify.ts';
import { InMemory, StoreMemory, type ExpiringMemory } from './memory.ts';
import type { Store } from '../store/types.ts';
import type { PeerTls, TransactionResult } from './smtp-client.ts';
import type { TlsRequirement } from '../policy/outbound.ts';
import type { TlsLevel } from '../tls/levels.ts';
import { legacyTlsMayHelp, type TlsFailureKind } from '../tls/failures.ts';

export interface AttemptFacts {
  host: string;
  ip?: string;
  port: number;
  connector?: string;
  /** The strictest demand on this host (policy/outbound.ts), which names its source. */
  tlsRequired: TlsRequirement;
  /** The other demands that applied to this host and were checked too (when there were more). */
  tlsDemands?: TlsRequirement[];
  /**
   * Demands made but not applied (replaced, relaxed), and why sources demanded nothing (e.g. DANE: MX records not
   * secure).
   */
  tlsNotes?: string[];
  tlsAchieved: TlsLevel;
  /** What proved the session to a demand with its own check (DANE: the TLSA record that matched). */
  tlsProof?: string;
  tls?: Omit<PeerTls, 'chain' | 'presented'>;
  /** The peer offered DSN (so success notices are its job: we report "relayed" otherwise). */
  peerDsn?: boolean;
  /** Revocation check result at certificateValidation and above. */
  revocation?: string;
  reused?: boolean;
  fallback?: string;
  /** What was done to the content for this peer (8-bit converted, long lines broken). */
  conversion?: string;
  /**
   * What went wrong with TLS (tls/failures.ts): at a required level, why the attempt failed; under
   * opportunistic TLS, why it stepped down to legacy TLS or plaintext.
   */
  tlsFailure?: TlsFailureKind;
  /** Opportunistic only: the session used legacy TLS (TLS 1.0/1.1 or an older suite). */
  tlsLegacy?: boolean;
  error?: string;
}

export interface RemoteResult {
  outcomes: Map<number, Outcome>;
  /** Facts of the attempt that produced the outcomes (the last one tried). */
  attempt: AttemptFacts;
}

/** How far a failed host got: no usable session, or a session whose transaction it deferred. */
export type HostFailureLevel = 'connection' | 'transaction';

/** `requireTls`: the host cannot take a REQUIRETLS message (RFC 8689), whatever a retry brings. */
export type HostFailed = {
  kind: 'hostFailed';
  outcome: Outcome;
  attempt: AttemptFacts;
  level: HostFailureLevel;
  requireTls?: boolean;
};

/** What one host address gave: outcomes for the recipients, or a failure of this host. */
export type HostResult = { kind: 'done'; outcomes: Map<number, Outcome>; attempt: AttemptFacts } | HostFailed;

const CONNECTION_LEVEL: ReadonlySet<FailureFacts['kind']> = new Set([
  'connect',
  'timeout',
  'closed',
  'protocol',
  'greeting',
  'ehlo',
  'starttls',
  'tls',
  'tlsPolicy',
  'requireTls',
]);

/** A failure of one host, classified, with its facts for the trace. */
export function hostFailure(f: FailureFacts, facts: AttemptFacts): HostFailed {
  return {
    kind: 'hostFailed',
    outcome: classifyFailure(f),
    level: CONNECTION_LEVEL.has(f.kind) ? 'connection' : 'transaction',
    ...(f.kind === 'requireTls' ? { requireTls: true } : {}),
    attempt: { ...facts, error: f.detail, ...(f.tlsFailure ? { tlsFailure: f.tlsFailure } : {}) },
  };
}

/** The same outcome for every recipient of the delivery (a message failure, or a verdict). */
export function forAll(recipients: readonly { idx: number }[], o: Outcome): Map<number, Outcome> {
  return new Map(recipients.map((r) => [r.idx, o]));
}

const said = (where: string, r: { code: number; enhanced?: string; text: string }, what: string) =>
  `${where} said: ${r.code} ${r.enhanced ?? ''} ${r.text} (in reply to ${what})`.replace(/ {2}/g, ' ');

/**
 * The outcome of a transaction that was sent (RFC 5321 §4.3.2, §4.2.5; codes by class, §4.2.1,
 * enhanced codes RFC 3463 via classify.ts): a refused MAIL FROM is a
 * message failure (5xx) or a transaction-level host failure (4xx: another host may take it); else
 * each recipient gets the reply to its RCPT TO when that refused it, the reply to the end of DATA
 * (or to BDAT LAST, RFC 3030) when it was accepted, and a temporary failure when DATA got no reply.
 */
export function transactionOutcome(
  recipients: readonly { idx: number }[],
  result: TransactionResult,
  where: string,
  facts: AttemptFacts,
): HostResult {
  if (result.mail.code !== 250) {
    const o = classifyRefusal(result.mail, said(where, result.mail, 'MAIL FROM'));
    if (o.status === 'deferred')
      return { kind: 'hostFailed', outcome: o, attempt: { ...facts, error: o.reply.reason! }, level: 'transaction' };
    return { kind: 'done', outcomes: forAll(recipients, o), attempt: facts };
  }
  const outcomes = new Map<number, Outcome>();
  recipients.forEach((r, i) => {
    const rr = result.rcpts[i];
    if (rr.code !== 250 && rr.code !== 251) outcomes.set(r.idx, classifyRefusal(rr, said(where, rr, 'RCPT TO')));
    else if (result.data)
      outcomes.set(
        r.idx,
        classifyReply(result.data, said(where, result.data, result.chunked ? 'BDAT LAST' : 'end of DATA')),
      );
    else
      outcomes.set(r.idx, {
        status: 'deferred',
        reply: {
          code: 451,
          enhanced: '4.4.2',
          message: 'Transaction not completed',
          reason: `${where}: no reply to DATA`,
        },
      });
  });
  return { kind: 'done', outcomes, attempt: facts };
}

/**
 * One delivery's failures, host by host, and the verdict when no host took the message.
 * A permanent failure that is not the connection's ends the delivery (a message failure);
 * connection-level failures move on to the next host.
 */
export class Tally {
  private last: { outcome: Outcome; attempt: AttemptFacts } | undefined;
  private dnsOnly = true;
  private allConnectionLevel = true;
  private allRequireTls = true;

  /** An MX host's addresses could not be found. */
  dnsFailed(outcome: Outcome, attempt: AttemptFacts): void {
    this.last = { outcome, attempt };
    this.allRequireTls = false;
  }

  /**
   * A host was not contacted because a source could not say what it demands of it (a TLSA lookup
   * failed): like a DNS failure, it alone never marks the destination down.
   */
  hostSkipped(outcome: Outcome, attempt: AttemptFacts): void {
    this.last = { outcome, attempt };
    this.allRequireTls = false;
  }

  /** A host had addresses to try: the failures are no longer DNS-only. */
  addressesFound(): void {
    this.dnsOnly = false;
  }

  /** A host address failed: move on to the next, or stop (a message failure for every recipient). */
  hostFailed(h: HostFailed): 'next' | 'stop' {
    this.last = { outcome: h.outcome, attempt: h.attempt };
    // A host ruled out for a REQUIRETLS message says nothing of the destination for other mail.
    if (h.level !== 'connection' || h.requireTls) this.allConnectionLevel = false;
    if (!h.requireTls) this.allRequireTls = false;
    return h.outcome.status === 'failed' && h.level !== 'connection' ? 'stop' : 'next';
  }

  /**
   * The verdict after every host failed (undefined when no host was even found). `destinationDown`:
   * every host that had an address failed at connection level, so the destination is down.
   */
  verdict(): { outcome: Outcome; attempt: AttemptFacts; destinationDown: boolean } | undefined {
    if (!this.last) return undefined;
    // Every host that was reached lacks REQUIRETLS: the message is returned (5.7.30), not retried.
    if (this.allRequireTls && !this.dnsOnly)
      return { outcome: this.last.outcome, attempt: this.last.attempt, destinationDown: false };
    return {
      outcome: finalOutcome(this.last.outcome, this.dnsOnly),
      attempt: this.last.attempt,
      destinationDown: !this.dnsOnly && this.allConnectionLevel,
    };
  }
}

/**
 * The outcome when every host failed, from the last failure. Only the DNS can make it permanent
 * (the domain or its hosts do not exist, RFC 5321 §5.1). A host that refused us before any
 * transaction (554 greeting, RFC 5321 §3.1; 5xx to EHLO and HELO) says nothing permanent about
 * the message: defer, with 5xx rewritten to 451 and X.Y.Z to 4.Y.Z so code and status agree
 * (as Postfix does with smtp_skip_5xx_greeting). A 5xx to the transaction itself is a message
 * failure and never gets here (Tally.hostFailed stops).
 */
export function finalOutcome(last: Outcome, dnsOnly: boolean): Outcome {
  if (dnsOnly && last.status === 'failed') return last;
  const o: Outcome = { ...last, status: 'deferred' };
  if (o.reply.code >= 500) o.reply = { ...o.reply, code: 451, enhanced: `4${o.reply.enhanced.slice(1)}` };
  return o;
}

/** How opportunistic TLS is tried with an address. */
export type TlsMode = 'modern' | 'legacy' | 'plaintext';
/** A step down remembered for an address after a failed handshake, and why. */
export interface TlsFallback {
  mode: Exclude<TlsMode, 'modern'>;
  cause: TlsFailureKind;
}

/**
 * The step after a failed opportunistic handshake (RFC 7435: some encryption beats none): legacy
 * TLS only after a failure it can help (protocol version, cipher suites) and only from the modern
 * profile when allowed; plaintext otherwise.
 */
export function nextTlsStep(mode: TlsMode, cause: TlsFailureKind, legacyAllowed: boolean): Exclude<TlsMode, 'modern'> {
  return mode === 'modern' && legacyAllowed && legacyTlsMayHelp(cause) ? 'legacy' : 'plaintext';
}

/** The destination that was found down, as remembered (RFC 5321 §4.5.4.1: a list of hosts it cannot reach). */
export interface DownDestination {
  outcome: Outcome;
  attempt: AttemptFacts;
}

/** What delivery remembers between attempts; shared by every delivery of a process (or more). */
export interface DeliveryMemories {
  /** Next hops (hop key) whose every host failed at connection level: deferred at once meanwhile. */
  destinationDown: ExpiringMemory<DownDestination>;
  /** Host names that failed recently: tried after the others meanwhile. */
  hostFailed: ExpiringMemory<true>;
  /** Opportunistic TLS: the step down that worked with an address (IP). */
  tlsFallback: ExpiringMemory<TlsFallback>;
}

export function inProcessMemories(max?: number): DeliveryMemories {
  return { destinationDown: new InMemory(max), hostFailed: new InMemory(max), tlsFallback: new InMemory(max) };
}

/**
 * The memories in the store, shared by every node and worker process that uses it: what one
 * finds down, the others defer at once, within `freshMs` (each process reads through a cache:
 * delivery/memory.ts). (The sweep of one kind sweeps them all: it is one table.)
 */
export function storeMemories(store: () => Store, max?: number, freshMs?: number): DeliveryMemories {
  return {
    destinationDown: new StoreMemory(store, 'destinationDown', max, freshMs),
    hostFailed: new StoreMemory(store, 'hostFailed', max, freshMs),
    tlsFallback: new StoreMemory(store, 'tlsFallback', max, freshMs),
  };
}

export interface TroubleSettings {
  destinationDownSeconds: number;
  tlsFallbackSeconds: number;
  opportunisticLegacyTls: boolean;
}

const SWEEP_MS = 60_000;

/** The failure memories, read and written by the rules above. */
export class Trouble {
  private swept = Date.now();

  constructor(
    readonly memories: DeliveryMemories,
    private readonly settings: () => TroubleSettings,
  ) {}

  /** A destination remembered as down: every recipient deferred at once, saying until when. */
  async down(hopKey: string): Promise<DownDestination | undefined> {
    await this.sweep();
    const down = await this.memories.destinationDown.get(hopKey);
    if (!down) return undefined;
    const { outcome, attempt } = down.value;
    const reason =
      `${outcome.reply.reason ?? outcome.reply.message} (destination marked unreachable until ` +
      `${new Date(down.until).toISOString()})`;
    return { outcome: { status: 'deferred', reply: { ...outcome.reply, reason } }, attempt };
  }

  /** Remember the destination as down (delivery.destinationDownSeconds; 0 never). */
  async markDown(hopKey: string, d: DownDestination): Promise<void> {
    const s = this.settings().destinationDownSeconds;
    if (s > 0) await this.memories.destinationDown.set(hopKey, d, Date.now() + s * 1000);
  }

  /** Hosts that failed recently go last, the others keep their order ("try the next MX first"). */
  async order<T extends { name: string }>(targets: readonly T[]): Promise<T[]> {
    const failed = await Promise.all(
      targets.map(async (t) => (await this.memories.hostFailed.get(t.name)) !== undefined),
    );
    return targets
      .map((t, i) => ({ t, f: Number(failed[i]) }))
      .sort((a, b) => a.f - b.f)
      .map((x) => x.t);
  }

  async hostFailed(name: string): Promise<void> {
    await this.memories.hostFailed.set(name, true, Date.now() + this.settings().destinationDownSeconds * 1000);
  }

  async hostSucceeded(name: string): Promise<void> {
    await this.memories.hostFailed.delete(name);
  }

  /**
   * How to start with `ip`: required levels always with modern TLS, 'none' in plaintext;
   * opportunistic with the step remembered for it (legacy only while legacy TLS is allowed).
   */
  async tlsStart(
    req: TlsRequirement,
    ip: string,
    forced: boolean,
  ): Promise<{ mode: TlsMode; remembered?: { value: TlsFallback; until: number } }> {
    if (req.level === 'none') return { mode: 'plaintext' };
    if (forced) return { mode: 'modern' };
    const f = await this.memories.tlsFallback.get(ip);
    if (!f || (f.value.mode === 'legacy' && !this.settings().opportunisticLegacyTls)) return { mode: 'modern' };
    return { mode: f.value.mode, remembered: f };
  }

  /** Remember a step down for `ip` (delivery.tlsFallbackSeconds). */
  async stepDown(ip: string, f: TlsFallback): Promise<void> {
    await this.memories.tlsFallback.set(ip, f, Date.now() + this.settings().tlsFallbackSeconds * 1000);
  }

  async remembered(ip: string): Promise<TlsFallback | undefined> {
    return (await this.memories.tlsFallback.get(ip))?.value;
  }

  /** The address offers modern TLS again: forget its step down. */
  async modernAgain(ip: string): Promise<void> {
    await this.memories.tlsFallback.delete(ip);
  }

  /** At most once a minute, forget what has run out (keeps the memories small between writes). */
  private async sweep(): Promise<void> {
    const now = Date.now();
    if (now - this.swept < SWEEP_MS) return;
    this.swept = now;
    const m = this.memories;
    await Promise.all([m.destinationDown.expire(now), m.hostFailed.expire(now), m.tlsFallback.expire(now)]);
  }
}
