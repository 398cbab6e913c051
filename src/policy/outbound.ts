// Owns: the outbound decision per recipient domain: which connector applies, where the next hop
// is (MX or smart hosts), and the TLS requirement on the one ordered scale of tls/levels.ts,
// composed from its sources in one place: per next hop (the default, the connector) and per host
// (the demand providers: DANE, MTA-STS, REQUIRETLS, each one more DemandProvider), and what the
// message itself asks (RFC 8689: REQUIRETLS, `TLS-Required: No`). Decides only; no I/O of its own
// (providers look things up; this file only composes what they answer).
// Promise: sources can only raise the level (never lower it); every demand that applies is kept
// and checked, so the result never falls back past what any source demands; the result names
// each source with what it demanded. The only relaxation is `TLS-Required: No`, and it drops only
// demands the destination published (DANE, MTA-STS), never a connector's; with REQUIRETLS it is ignored.
// What the message demands of each host (REQUIRETLS: a server some source authenticates; the
// relaxation) is decided here too, in composeHost; delivery only enforces the verdict.
import type { X509Certificate } from 'node:crypto';
import type { Config, OutboundConnector } from '../config/load.ts';
import { policyDomain } from '../mailbox.ts';
import type { InboundFacts } from '../store/types.ts';
import type { Rfc8460Policy, TlsFailureKind } from '../tls/failures.ts';
import { levelRank, type TlsLevel } from '../tls/levels.ts';
import { parseSmartHost } from '../util/net.ts';

export interface TlsRequirement {
  level: TlsLevel;
  /**
   * Who demanded the level and on what grounds, e.g. "default", `connector "<name>"`,
   * "DANE (TLSA 3 1 1 at _25._tcp.mx.example.com, DNSSEC secure)".
   */
  source: string;
  /** Certificate name pattern (RFC 6125) required at domainValidation. */
  tlsDomain?: string;
  /**
   * The destination published it (DNS: DANE, MTA-STS), as opposed to our administrator (a
   * connector) or the message: `TLS-Required: No` may relax it (RFC 8689 §5), never a connector.
   */
  published?: boolean;
  /** The published policy behind this demand, for TLS-RPT (absent: `no-policy-found`). */
  report?: Rfc8460Policy;
}

/** What the message asks of its transport (store EnvelopeParams: requireTls, tlsRequiredNo). */
export interface MessageTls {
  requireTls?: boolean;
  tlsRequiredNo?: boolean;
}

/** What a demand's own check sees of an established TLS session. */
export interface SessionForCheck {
  /** The chain the server presented, leaf first. */
  presented: readonly X509Certificate[];
}

/** Why a session does not meet a demand's own check. */
export interface DemandFailure {
  kind: TlsFailureKind;
  text: string;
}

/**
 * A demand for one host. `verify` is the source's own proof of the session (DANE: a TLSA record
 * matches), which takes the place of the WebPKI checks of `level`; without it the level's checks
 * (tls-check.ts) apply, with `tlsDomain` at domainValidation.
 */
export interface HostDemand extends TlsRequirement {
  verify?: (s: SessionForCheck) => { ok: true; detail: string } | { ok: false; failure: DemandFailure };
  /**
   * Sources (DemandProvider names) whose demands for this host this one replaces (RFC 8461 §2: DANE before MTA-STS).
   */
  replaces?: readonly string[];
}

/** What a demand provider is told about one host of a next hop. */
export interface HostContext {
  hop: NextHop;
  /** The host name delivery connects to (an MX host, the domain itself, or a smart host). */
  host: string;
  /** Port delivery connects to. */
  port: number;
  /**
   * How the host was found: from the MX RRset, as the implicit MX (no MX records: the domain
   * itself), or as a configured smart host; `secure` is the DNSSEC status of that answer
   * (the MX RRset, or the authenticated denial of MX records).
   */
  via: { kind: 'mx' | 'implicit' | 'smarthost'; secure: boolean };
  /** The host's address lookup: DNSSEC status and the names followed (the last holds the addresses). */
  addresses?: { secure: boolean; names: readonly string[] };
  /** The message being delivered (REQUIRETLS and `TLS-Required:` are read from here). */
  message: { queueId: string };
}

/** A provider's answer for one host. */
export type ProviderAnswer =
  /**
   * Nothing to demand; `note` says why, for the trace (e.g. "DANE: MX RRset not DNSSEC-secure").
   * `observe`: a requirement only watched (MTA-STS testing): delivery records whether the session met it.
   */
  | { kind: 'none'; note?: string; observe?: TlsRequirement }
  /** `note`: for the trace (e.g. "MTA-STS: policy fetch failed …; using the cached policy"). */
  | { kind: 'demand'; demand: HostDemand; note?: string }
  /**
   * Do not use this host now (a temporary failure: the next host is tried, and the message is
   * deferred when none is left), e.g. a TLSA lookup that failed. `demand` is what the source
   * was going to demand (for the trace), `tlsFailure` why.
   */
  | { kind: 'refuse'; demand: TlsRequirement; tlsFailure: TlsFailureKind; detail: string };

/** One source of per-host demands (DANE, MTA-STS, REQUIRETLS). */
export interface DemandProvider {
  /** Its name in sources and `replaces` ("DANE", "MTA-STS", "REQUIRETLS"). */
  readonly name: string;
  forHost(ctx: HostContext): Promise<ProviderAnswer>;
}

/** The requirement for one host: the strictest demand, and every demand that is checked. */
export interface HostRequirement extends TlsRequirement {
  /** Every demand that applies, the strictest (the one named above) first; each is checked. */
  demands: readonly HostDemand[];
  /** Demands that were made but do not apply, and why (replaced, relaxed by TLS-Required: No). */
  waived: readonly string[];
  /** Providers' notes (why a source demanded nothing). */
  notes: readonly string[];
  /**
   * The message has REQUIRETLS (RFC 8689) and no demand on this host authenticates the server:
   * why. The message must not go to this host (delivery: 5.7.30 when no host is left).
   */
  requireTlsProblem?: string;
}

/** The requirement as recorded (trace, events): no functions. */
export const plainRequirement = (r: TlsRequirement): TlsRequirement => ({
  level: r.level,
  source: r.source,
  ...(r.tlsDomain ? { tlsDomain: r.tlsDomain } : {}),
  ...(r.published ? { published: true } : {}),
});

/** Raise `cur` to `next` when next is stricter; never lower. */
export function raise(cur: TlsRequirement, next: TlsRequirement): TlsRequirement {
  return levelRank(next.level) > levelRank(cur.level) ? next : cur;
}

/** RFC 8689 §5: `TLS-Required: No` relaxes what the destination published, unless REQUIRETLS. */
const relaxesPublished = (m: MessageTls): boolean => m.tlsRequiredNo === true && m.requireTls !== true;

/** What applies when no source demands more. */
const DEFAULT_TLS: TlsRequirement = { level: 'opportunistic', source: 'default' };

/** The requirement an outbound connector demands (its tlsSettings and tlsDomain). */
export function connectorDemand(c: OutboundConnector): TlsRequirement {
  return { level: c.tlsSettings, source: `connector "${c.name}"`, ...(c.tlsDomain ? { tlsDomain: c.tlsDomain } : {}) };
}

/**
 * The requirement for a destination: the strictest of the demands, in the order the sources are
 * consulted (the first of equally strict demands is the one named). New sources (DANE, MTA-STS,
 * REQUIRETLS) add their demand to the list given here.
 */
export function strictest(demands: readonly TlsRequirement[], message: MessageTls = {}): TlsRequirement {
  const waived = relaxesPublished(message);
  return demands.filter((d) => !(waived && d.published)).reduce(raise, DEFAULT_TLS);
}

/** RFC 8689 §5.7.30: the code and text a message with REQUIRETLS fails with. */
export const REQUIRETLS_REPLY = { code: 550, enhanced: '5.7.30', message: 'REQUIRETLS support required' } as const;

/**
 * RFC 8689 §4.2.1: may a message with REQUIRETLS go to a next hop under `req`? Only when a
 * source authenticates the server (its certificate validated: a connector at
 * certificateValidation or domainValidation, DANE, MTA-STS enforce); then the peer must also
 * offer REQUIRETLS (checked by delivery after EHLO). Returns why not, or undefined.
 */
export function requireTlsProblem(req: TlsRequirement): string | undefined {
  if (levelRank(req.level) >= levelRank('certificateValidation')) return undefined;
  return (
    `TLS required by REQUIRETLS (RFC 8689): the next hop is not authenticated by DANE, MTA-STS or a ` +
    `connector at certificateValidation or domainValidation (${req.level} by ${req.source})`
  );
}

/**
 * Compose the hop's requirement with the demands of the host's providers (named by provider) and
 * of the message: a demand that another replaces is dropped (the connector's never is); for a
 * message with `TLS-Required: No` (RFC 8689 §5) published demands are recorded but not enforced.
 * The strictest remaining demand names the result; every remaining demand above opportunistic is
 * checked. A message with REQUIRETLS demands that the result authenticate the server
 * (requireTlsProblem says why it does not).
 */
export function composeHost(
  hop: TlsRequirement,
  answers: readonly { provider: string; answer: ProviderAnswer }[],
  message: MessageTls = {},
): HostRequirement {
  const relax = relaxesPublished(message);
  const notes = answers.flatMap((a) => (a.answer.kind !== 'refuse' && a.answer.note ? [a.answer.note] : []));
  const made = answers.flatMap((a) =>
    a.answer.kind === 'demand' ? [{ provider: a.provider, demand: a.answer.demand }] : [],
  );
  const replaced = new Set(made.flatMap((m) => m.demand.replaces ?? []));
  const waived: string[] = [];
  const kept: HostDemand[] = [hop];
  for (const m of made) {
    if (replaced.has(m.provider))
      waived.push(
        `${m.demand.source}: ${m.demand.level}, replaced by ` +
          `${made.find((x) => x.demand.replaces?.includes(m.provider))!.demand.source}`,
      );
    else if (relax && m.demand.published)
      waived.push(`${m.demand.source}: ${m.demand.level}, relaxed by the message's TLS-Required: No`);
    else kept.push(m.demand);
  }
  const top = strictest(kept);
  const demands = [top, ...kept.filter((d) => d !== top && levelRank(d.level) > levelRank('opportunistic'))];
  const unauthenticated = message.requireTls ? requireTlsProblem(top) : undefined;
  return { ...top, demands, waived, notes, ...(unauthenticated ? { requireTlsProblem: unauthenticated } : {}) };
}

export interface NextHop {
  /** Grouping key: recipients with the same key travel together. */
  key: string;
  kind: 'mx' | 'smarthost';
  /** Domain to look up MX for (kind mx). */
  domain: string;
  smartHosts: { host: string; port?: number }[];
  connector?: { name: string; organization: string; type: string };
  tls: TlsRequirement;
}

/** Does `pattern` ("x", "*.x", "*") cover `domain`? Returns a specificity (higher wins) or -1. */
export function patternMatch(pattern: string, domain: string): number {
  if (pattern === '*') return 0;
  if (pattern.startsWith('*.')) {
    const base = pattern.slice(2);
    return domain === base || domain.endsWith(`.${base}`) ? base.length : -1;
  }
  return pattern === domain ? 10_000 + pattern.length : -1;
}

export class OutboundPolicy {
  constructor(private readonly config: Config) {}

  /**
   * The enabled outbound connector of `org` for `domain`: an exact recipientDomains entry, then an
   * allAcceptedDomains connector for the organisation's own domains, then the most specific
   * wildcard; internalRelay domains and routeAllMessagesViaOnPremises fall back to onPremises.
   * `from` is the inbound connector the message arrived through: mail the organisation's own
   * servers sent (an onPremises inbound connector of `org`) is not routed back to them by
   * routeAllMessagesViaOnPremises (it has been through them; sending it back would loop).
   */
  connectorFor(org: string, domain: string, from?: InboundFacts['connector']): OutboundConnector | undefined {
    const o = this.config.organizations.find((x) => x.name === org);
    const enabled = (o?.outboundConnectors ?? []).filter((c) => c.enabled);
    const accepted = o?.acceptedDomains.find((d) => d.domain === domain);
    const exact = enabled.find((c) => c.recipientDomains.includes(domain));
    if (exact) return exact;
    if (accepted) {
      const all = enabled.find((c) => c.allAcceptedDomains);
      if (all) return all;
    }
    let best: OutboundConnector | undefined;
    let score = -1;
    for (const c of enabled) {
      for (const p of c.recipientDomains) {
        const s = patternMatch(p, domain);
        if (s > score) {
          score = s;
          best = c;
        }
      }
    }
    if (best) return best;
    const onPrem = enabled.filter((c) => c.connectorType === 'onPremises');
    if (accepted?.type === 'internalRelay') return onPrem[0];
    if (!accepted && !this.fromOnPremises(org, from)) return onPrem.find((c) => c.routeAllMessagesViaOnPremises);
    return undefined;
  }

  /** Did the message arrive through an onPremises inbound connector of `org` (the organisation's own servers)? */
  private fromOnPremises(org: string, from: InboundFacts['connector']): boolean {
    if (!from || from.organization !== org || from.by === 'senderDomain') return false;
    const o = this.config.organizations.find((x) => x.name === org);
    return !!o?.inboundConnectors.some((c) => c.name === from.name && c.connectorType === 'onPremises');
  }

  /**
   * Where mail of `org` for `domain` goes next: `org` is the recipient's organisation (each
   * recipient is routed by its own organisation's connectors), `from` the inbound connector the
   * message arrived through.
   */
  nextHop(org: string, domain: string, message: MessageTls = {}, from?: InboundFacts['connector']): NextHop {
    // A UTF-8 domain (SMTPUTF8) by its A-label: the form connectors name it by and DNS knows.
    const d = policyDomain(domain);
    const c = this.connectorFor(org, d, from);
    const tls = strictest(c ? [connectorDemand(c)] : [], message);
    if (!c) return { key: `mx:${d}`, kind: 'mx', domain: d, smartHosts: [], tls };
    const connector = { name: c.name, organization: c.organization, type: c.connectorType };
    if (c.smartHosts.length) {
      return {
        key: `smart:${c.organization}/${c.name}`,
        kind: 'smarthost',
        domain: d,
        smartHosts: c.smartHosts.map((h) => parseSmartHost(h)!),
        connector,
        tls,
      };
    }
    return { key: `mx:${d}|${c.organization}/${c.name}`, kind: 'mx', domain: d, smartHosts: [], connector, tls };
  }
}
