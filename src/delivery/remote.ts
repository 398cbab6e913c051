// Owns: delivering one message's recipients for one next hop over SMTP: resolving MX or smart
// hosts, trying hosts in order, applying the TLS requirement, reusing pooled connections, and
// returning one classified outcome per recipient plus the facts of every attempt (the trace).
// Sends each peer what it can take (mime-downgrade.ts: 7 bit without 8BITMIME, no line over
// 998 octets) and records any conversion with the attempt.
// Promises: a required TLS level never falls back (no plaintext, no legacy TLS, no weaker check);
// opportunistic TLS works its way down — TLS 1.2+, then (after a protocol-version or cipher
// failure, delivery.opportunisticLegacyTls) legacy TLS 1.0/1.1, then plaintext — remembers per
// address what worked for delivery.tlsFallbackSeconds, and records every step with its TLS failure
// kind; hosts that failed recently are tried last; a destination that is down is not hammered; an
// address that is not a valid RFC 5321 path fails permanently (553) and is never sent.
import net from 'node:net';
import type { Config } from '../config/load.ts';
import { DnsError, type Resolver } from '../dns/resolver.ts';
import type { NextHop, TlsLevel, TlsRequirement } from '../policy/outbound.ts';
import { levelRank } from '../policy/outbound.ts';
import { smtpPath } from '../mailbox.ts';
import type { EnvelopeParams, QueueRecipient } from '../store/types.ts';
import { describeTlsFailure, legacyTlsMayHelp, type TlsFailureKind } from '../tls/failures.ts';
import { namesSatisfy } from '../tls/names.ts';
import type { TrustStore } from '../tls/trust.ts';
import type { RevocationChecker } from '../tls/revocation.ts';
import { classifyFailure, classifyReply, type FailureFacts, type Outcome } from './classify.ts';
import { OutboundContent } from './mime-downgrade.ts';
import { judgeTls } from './tls-check.ts';
import type { ConnectionPool } from './pool.ts';
import { DeliveryError, SmtpConnection, type PeerTls, type TransactionResult } from './smtp-client.ts';

export interface RemoteJob {
  queueId: string;
  mailFrom: string;
  envelope: EnvelopeParams;
  recipients: QueueRecipient[];
  hop: NextHop;
  data: Buffer;
}

export interface AttemptFacts {
  host: string;
  ip?: string;
  port: number;
  connector?: string;
  tlsRequired: TlsRequirement;
  tlsAchieved: TlsLevel;
  tls?: Omit<PeerTls, 'chain'>;
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

/** How opportunistic TLS is tried with an address, after a handshake with it failed. */
type TlsMode = 'modern' | 'legacy' | 'plaintext';
interface TlsFallback { mode: Exclude<TlsMode, 'modern'>; until: number; cause: TlsFailureKind }
const MAX_FALLBACKS = 10_000;

export interface RemoteResult {
  outcomes: Map<number, Outcome>;
  /** Facts of the attempt that produced the outcomes (the last one tried). */
  attempt: AttemptFacts;
}

interface Target { name: string; port: number; ips?: string[] }

const CONNECTION_LEVEL = new Set(['connect', 'timeout', 'closed', 'protocol', 'greeting', 'ehlo', 'starttls', 'tls', 'tlsPolicy']);

class Semaphore {
  private used = 0;
  private waiters: (() => void)[] = [];
  constructor(private readonly max: () => number) {}
  async acquire(): Promise<void> {
    if (this.used < this.max()) { this.used++; return; }
    await new Promise<void>((r) => this.waiters.push(r));
  }
  release(): void {
    const w = this.waiters.shift();
    if (w) w(); else this.used--;
  }
}

function shuffleEqual<T extends { priority: number }>(list: T[]): T[] {
  const out = [...list].sort((a, b) => a.priority - b.priority);
  for (let i = 0; i < out.length;) {
    let j = i;
    while (j < out.length && out[j].priority === out[i].priority) j++;
    for (let k = j - 1; k > i; k--) { const r = i + Math.floor(Math.random() * (k - i + 1)); [out[k], out[r]] = [out[r], out[k]]; }
    i = j;
  }
  return out;
}

/** The TLS level a connection actually achieved (for the trace). */
function achieved(tls: PeerTls | null, req: TlsRequirement, hostname: string): TlsLevel {
  if (!tls) return 'none';
  if (tls.legacy) return 'opportunistic'; // encrypted, but below the TLS 1.2 floor of every required level
  if (!tls.chainValid) return 'encryptionOnly';
  const names = tls.names ?? [];
  if (req.tlsDomain ? namesSatisfy(names, req.tlsDomain) : namesSatisfy(names, hostname)) return 'domainValidation';
  return 'certificateValidation';
}

const stripChain = (t: PeerTls | null): Omit<PeerTls, 'chain'> | undefined => {
  if (!t) return undefined;
  const { chain: _chain, ...rest } = t;
  return rest;
};

/** Recipients whose address (or the sender's) cannot be sent as a valid path, with their outcome. */
function unsendable(job: RemoteJob): Map<number, Outcome> {
  const out = new Map<number, Outcome>();
  const utf8 = job.envelope.smtputf8;
  const from = smtpPath(job.mailFrom, 'sender', utf8);
  for (const r of job.recipients) {
    const to = smtpPath(r.address, 'recipient', utf8);
    if ('problem' in from) out.set(r.idx, classifyFailure({ kind: 'badSender', detail: `sender <${job.mailFrom}> cannot be sent: ${from.problem}` }));
    else if ('problem' in to) out.set(r.idx, classifyFailure({ kind: 'badRecipient', detail: `recipient <${r.address}> cannot be sent: ${to.problem}` }));
  }
  return out;
}

export class RemoteDelivery {
  private readonly tlsFallback = new Map<string, TlsFallback>();
  private readonly hostFailed = new Map<string, number>();
  private readonly destDown = new Map<string, { until: number; outcome: Outcome; attempt: AttemptFacts }>();
  private readonly limits = new Map<string, Semaphore>();

  constructor(
    private readonly resolver: () => Resolver,
    private readonly pool: ConnectionPool,
    private readonly trust: () => TrustStore,
    private readonly config: () => Config,
    private readonly revocation: RevocationChecker,
    private readonly identity?: () => { cert: string; key: string },
  ) {}

  async deliver(job: RemoteJob): Promise<RemoteResult> {
    // Addresses that are not valid RFC 5321 paths fail here, alone, with the reason; never sent.
    const bad = unsendable(job);
    if (!bad.size) return this.deliverValid(job);
    const rest = job.recipients.filter((r) => !bad.has(r.idx));
    const result: RemoteResult = rest.length
      ? await this.deliverValid({ ...job, recipients: rest })
      : { outcomes: new Map(), attempt: { host: job.hop.domain, port: this.config().delivery.port, tlsRequired: job.hop.tls, tlsAchieved: 'none', error: [...bad.values()][0].reply.reason! } };
    for (const [idx, o] of bad) result.outcomes.set(idx, o);
    return result;
  }

  private async deliverValid(job: RemoteJob): Promise<RemoteResult> {
    const hop = job.hop;
    const down = this.destDown.get(hop.key);
    if (down && down.until > Date.now()) {
      const o: Outcome = { status: 'deferred', reply: { ...down.outcome.reply, reason: `${down.outcome.reply.reason ?? down.outcome.reply.message} (destination marked unreachable until ${new Date(down.until).toISOString()})` } };
      return { outcomes: new Map(job.recipients.map((r) => [r.idx, o])), attempt: down.attempt };
    }
    let sem = this.limits.get(hop.key);
    if (!sem) { sem = new Semaphore(() => this.config().delivery.maxConnectionsPerDestination); this.limits.set(hop.key, sem); }
    await sem.acquire();
    try {
      return await this.attempt(job);
    } finally {
      sem.release();
    }
  }

  private all(job: RemoteJob, o: Outcome): Map<number, Outcome> {
    return new Map(job.recipients.map((r) => [r.idx, o]));
  }

  private async targets(hop: NextHop): Promise<Target[] | FailureFacts> {
    const port = this.config().delivery.port;
    if (hop.kind === 'smarthost') return hop.smartHosts.map((h) => ({ name: h.host, port: h.port ?? port }));
    try {
      const mx = await this.resolver().mx(hop.domain);
      if (mx.nullMx) return { kind: 'nullMx', detail: `${hop.domain} publishes a null MX record (RFC 7505): it accepts no mail` };
      return shuffleEqual(mx.records).map((m) => ({ name: m.exchange, port }));
    } catch (e) {
      if (e instanceof DnsError && e.kind === 'nodata') return [{ name: hop.domain, port }]; // no MX: implicit MX (RFC 5321 §5.1)
      if (e instanceof DnsError) return { kind: 'dns', dnsKind: e.kind, detail: `MX lookup for ${hop.domain} failed: ${e.message}` };
      throw e;
    }
  }

  private async addresses(t: Target): Promise<string[] | FailureFacts> {
    if (net.isIP(t.name)) return [t.name];
    try {
      return (await this.resolver().addresses(t.name)).records;
    } catch (e) {
      if (e instanceof DnsError) return { kind: 'dns', dnsKind: e.kind === 'nxdomain' || e.kind === 'nodata' ? 'nodata' : e.kind, detail: `address lookup for ${t.name} failed: ${e.message}` };
      throw e;
    }
  }

  private async attempt(job: RemoteJob): Promise<RemoteResult> {
    const hop = job.hop;
    const cfg = this.config();
    const base: AttemptFacts = { host: hop.domain, port: cfg.delivery.port, tlsRequired: hop.tls, tlsAchieved: 'none', ...(hop.connector ? { connector: hop.connector.name } : {}) };
    const targets = await this.targets(hop);
    if (!Array.isArray(targets)) return { outcomes: this.all(job, classifyFailure(targets)), attempt: { ...base, error: targets.detail } };

    // Hosts that failed recently go last ("try the next MX first" on a retry).
    const now = Date.now();
    const ordered = [...targets].sort((a, b) => Number((this.hostFailed.get(a.name) ?? 0) > now) - Number((this.hostFailed.get(b.name) ?? 0) > now));
    let last: { outcome: Outcome; attempt: AttemptFacts } | undefined;
    let dnsOnly = true;
    let allConnectionLevel = true;
    const content = new OutboundContent(job.data, job.envelope);
    for (const t of ordered) {
      const ips = await this.addresses(t);
      if (!Array.isArray(ips)) {
        last = { outcome: classifyFailure(ips), attempt: { ...base, host: t.name, port: t.port, error: ips.detail } };
        continue;
      }
      if (!ips.length) continue;
      dnsOnly = false;
      for (const ip of ips) {
        const r = await this.tryHost(job, content, t, ip);
        if ('outcomes' in r) { this.hostFailed.delete(t.name); return r; }
        last = r;
        this.hostFailed.set(t.name, Date.now() + cfg.delivery.destinationDownSeconds * 1000);
        if (!r.connectionLevel) allConnectionLevel = false;
        if (r.outcome.status === 'failed' && !r.connectionLevel) return { outcomes: this.all(job, r.outcome), attempt: r.attempt };
      }
    }
    if (!last) {
      return { outcomes: this.all(job, classifyFailure({ kind: 'noHost', detail: `no address found for the mail servers of ${hop.domain}` })), attempt: base };
    }
    // Every host failed at connection level: remember the destination as down for a while.
    if (!dnsOnly && allConnectionLevel && cfg.delivery.destinationDownSeconds > 0) {
      this.destDown.set(hop.key, { until: Date.now() + cfg.delivery.destinationDownSeconds * 1000, outcome: last.outcome, attempt: last.attempt });
    }
    const outcome = last.outcome.status === 'failed' && dnsOnly ? last.outcome : { ...last.outcome, status: last.outcome.status === 'delivered' ? 'delivered' as const : 'deferred' as const };
    if (outcome.status === 'deferred' && outcome.reply.code >= 500) outcome.reply = { ...outcome.reply, code: 451, enhanced: `4${outcome.reply.enhanced.slice(1)}` };
    return { outcomes: this.all(job, outcome), attempt: last.attempt };
  }

  /** One host address: a result, or a host-level failure to move on from. */
  private async tryHost(job: RemoteJob, content: OutboundContent, t: Target, ip: string): Promise<RemoteResult | { outcome: Outcome; attempt: AttemptFacts; connectionLevel: boolean }> {
    const cfg = this.config();
    const req = job.hop.tls;
    const facts: AttemptFacts = { host: t.name, ip, port: t.port, tlsRequired: req, tlsAchieved: 'none', ...(job.hop.connector ? { connector: job.hop.connector.name } : {}) };
    const key = `${ip}:${t.port}|${req.level}|${req.tlsDomain ?? ''}`;
    const forced = levelRank(req.level) >= levelRank('encryptionOnly');
    const hostFail = (f: FailureFacts) => ({
      outcome: classifyFailure(f), attempt: { ...facts, error: f.detail, ...(f.tlsFailure ? { tlsFailure: f.tlsFailure } : {}) }, connectionLevel: CONNECTION_LEVEL.has(f.kind),
    });

    let conn = this.pool.take(key);
    if (conn) facts.reused = true;
    let mode: TlsMode = 'modern';
    // At most three connections: TLS 1.2+, legacy TLS, plaintext (opportunistic); one when forced.
    for (let round = 0; round < 3 && !conn; round++) {
      mode = this.tlsMode(req, ip, forced);
      const starttls = mode === 'plaintext' ? 'never' : forced ? 'require' : 'try';
      const remembered = this.tlsFallback.get(ip);
      if (mode !== 'modern' && req.level !== 'none' && remembered) {
        // Only for a step remembered from an earlier attempt: a fresh one has already set both.
        facts.tlsFailure ??= remembered.cause;
        facts.fallback ??= `TLS 1.2+ handshake with this host failed recently: ${describeTlsFailure(remembered.cause)}; ${mode === 'legacy' ? 'using legacy TLS' : 'sending in plaintext'} until ${new Date(remembered.until).toISOString()}`;
      }
      try {
        conn = await SmtpConnection.open({
          ip, port: t.port, hostname: t.name, heloName: cfg.delivery.heloName ?? cfg.hostname, trust: this.trust(), starttls, legacyTls: mode === 'legacy',
          ...this.sourceFor(ip), timeouts: cfg.delivery.timeouts, ...(this.identity ? { clientCert: this.identity() } : {}),
          // A resumed session carries no certificate to check: certificateValidation and above
          // always do a full handshake (resuming made every later connection fail "no certificate").
          session: levelRank(req.level) >= levelRank('certificateValidation') ? undefined : this.pool.session(t.name),
          onSession: (s) => this.pool.saveSession(t.name, s),
        });
        this.pool.opened();
      } catch (e) {
        if (!(e instanceof DeliveryError)) throw e;
        if (e.kind === 'tls' && starttls === 'try') {
          // Opportunistic: the message must not be stuck behind a peer's old or broken TLS.
          const cause = e.tlsFailure ?? 'handshake-failed';
          const next = mode === 'modern' && cfg.delivery.opportunisticLegacyTls && legacyTlsMayHelp(cause) ? 'legacy' : 'plaintext';
          this.rememberFallback(ip, { mode: next, until: Date.now() + cfg.delivery.tlsFallbackSeconds * 1000, cause: facts.tlsFailure ?? cause });
          facts.tlsFailure ??= cause;
          const retry = next === 'legacy' ? 'retrying with legacy TLS (TLS 1.0/1.1 and older cipher suites)' : 'retrying in plaintext';
          facts.fallback = mode === 'legacy' ? `${facts.fallback ?? 'TLS 1.2+ handshake failed'}; legacy TLS handshake failed too (${e.message}); ${retry}` : `TLS handshake failed (${e.message}); ${retry}`;
          continue;
        }
        const label = e.kind === 'starttls' || e.kind === 'tls' ? `TLS required by ${req.source}: ${e.message}` : e.message;
        return hostFail({ kind: e.kind, ...(e.reply ? { reply: e.reply } : {}), detail: label, ...(e.tlsFailure ? { tlsFailure: e.tlsFailure } : {}) });
      }
    }
    if (!conn) return hostFail({ kind: 'connect', detail: `could not connect to ${t.name} [${ip}]` });

    if (mode === 'legacy' && conn.tls && !conn.tls.legacy) {
      // The server offers modern TLS again: forget the step down.
      this.tlsFallback.delete(ip);
      delete facts.fallback;
      delete facts.tlsFailure;
    }
    facts.tls = stripChain(conn.tls);
    facts.peerDsn = conn.extensions.has('DSN');
    facts.tlsAchieved = achieved(conn.tls, req, t.name);
    if (conn.tls?.legacy) {
      facts.tlsLegacy = true;
      const cause = facts.tlsFailure ?? this.tlsFallback.get(ip)?.cause;
      if (cause) facts.tlsFailure = cause;
    }
    if (!conn.tls && conn.tlsSkipped) {
      facts.fallback ??= conn.tlsSkipped.detail;
      facts.tlsFailure ??= conn.tlsSkipped.kind;
    }
    const judged = await judgeTls(conn.tls, req, `host ${t.name} [${ip}]`, this.revocation, cfg.tls.revocation);
    if (judged.revocation) facts.revocation = judged.revocation.summary;
    // certificateValidation includes "not revoked": a revoked certificate (or, under hardFail, one
    // whose status could not be confirmed) proves no identity, whatever its chain and names.
    const rev = judged.revocation?.status;
    if (conn.tls && (rev === 'revoked' || (rev === 'unknown' && cfg.tls.revocation === 'hardFail'))) facts.tlsAchieved = 'encryptionOnly';
    const violation = judged.violation;
    if (violation) {
      void conn.quit();
      return hostFail({ kind: 'tlsPolicy', detail: violation, ...(judged.kind ? { tlsFailure: judged.kind } : {}) });
    }

    if (job.envelope.smtputf8 && !conn.extensions.has('SMTPUTF8')) { this.pool.give(key, conn); return { outcomes: this.all(job, classifyFailure({ kind: 'smtputf8', detail: `${t.name} [${ip}] does not offer SMTPUTF8` })), attempt: facts }; }
    const prepared = content.forPeer(conn.extensions.has('8BITMIME'));
    if ('refused' in prepared) { this.pool.give(key, conn); return { outcomes: this.all(job, classifyFailure({ kind: 'eightBit', detail: `${t.name} [${ip}] does not offer 8BITMIME and the message cannot be converted to 7 bit: ${prepared.refused}` })), attempt: facts }; }
    if (prepared.conversion) facts.conversion = prepared.conversion;
    const data = prepared.data;
    const size = Number(conn.extensions.get('SIZE') || 0);
    if (size > 0 && data.length > size) { this.pool.give(key, conn); return { outcomes: this.all(job, classifyFailure({ kind: 'size', detail: `${t.name} [${ip}] accepts at most ${size} bytes; the message has ${data.length}` })), attempt: facts }; }

    let result: TransactionResult;
    try {
      result = await conn.send({
        from: job.mailFrom, eightBit: job.envelope.body === '8BITMIME', smtputf8: job.envelope.smtputf8,
        ...(job.envelope.ret ? { ret: job.envelope.ret } : {}), ...(job.envelope.envid ? { envid: job.envelope.envid } : {}),
        rcpts: job.recipients.map((r) => ({ address: r.address, ...(r.notify ? { notify: r.notify } : {}), ...(r.orcpt ? { orcpt: r.orcpt } : {}) })),
      }, data);
    } catch (e) {
      conn.close();
      if (!(e instanceof DeliveryError)) throw e;
      if (facts.reused && (e.kind === 'closed' || e.kind === 'protocol')) {
        // The pooled connection died while idle: one more try on a fresh connection.
        return this.tryHost(job, content, t, ip);
      }
      return hostFail({ kind: e.kind, ...(e.reply ? { reply: e.reply } : {}), detail: e.message });
    }
    this.pool.give(key, conn);
    const where = `${t.name} [${ip}]`;
    if (result.mail.code !== 250) {
      const o = classifyReply(result.mail, `${where} said: ${result.mail.code} ${result.mail.enhanced ?? ''} ${result.mail.text} (in reply to MAIL FROM)`.replace(/ {2}/g, ' '));
      if (o.status === 'deferred') return { outcome: o, attempt: { ...facts, error: o.reply.reason! }, connectionLevel: false };
      return { outcomes: this.all(job, o), attempt: facts };
    }
    const outcomes = new Map<number, Outcome>();
    job.recipients.forEach((r, i) => {
      const rr = result.rcpts[i];
      if (rr.code !== 250 && rr.code !== 251) {
        outcomes.set(r.idx, classifyReply(rr, `${where} said: ${rr.code} ${rr.enhanced ?? ''} ${rr.text} (in reply to RCPT TO)`.replace(/ {2}/g, ' ')));
      } else if (result.data) {
        const d = result.data;
        outcomes.set(r.idx, classifyReply(d, `${where} said: ${d.code} ${d.enhanced ?? ''} ${d.text} (in reply to end of DATA)`.replace(/ {2}/g, ' ')));
      } else {
        outcomes.set(r.idx, { status: 'deferred', reply: { code: 451, enhanced: '4.4.2', message: 'Transaction not completed', reason: `${where}: no reply to DATA` } });
      }
    });
    return { outcomes, attempt: facts };
  }

  /** How to try TLS with `ip` now: required levels always modern; opportunistic by what worked recently. */
  private tlsMode(req: TlsRequirement, ip: string, forced: boolean): TlsMode {
    if (req.level === 'none') return 'plaintext';
    if (forced) return 'modern';
    const f = this.tlsFallback.get(ip);
    if (!f || f.until <= Date.now()) return 'modern';
    if (f.mode === 'legacy' && !this.config().delivery.opportunisticLegacyTls) return 'modern';
    return f.mode;
  }

  private rememberFallback(ip: string, f: TlsFallback): void {
    this.tlsFallback.delete(ip);
    if (this.tlsFallback.size >= MAX_FALLBACKS) this.tlsFallback.delete(this.tlsFallback.keys().next().value!);
    this.tlsFallback.set(ip, f);
  }

  private sourceFor(ip: string): { localAddress?: string } {
    const fam = net.isIP(ip);
    const src = this.config().delivery.sourceAddresses.find((a) => net.isIP(a) === fam);
    return src ? { localAddress: src } : {};
  }

  async close(): Promise<void> { await this.pool.closeAll(); }
}
