// Owns: the outbound decision per recipient domain: which connector applies, where the next hop
// is (MX or smart hosts), and the TLS requirement on the one ordered scale of tls/levels.ts,
// composed from its sources (today the default and the connector) in one place, and what the
// message itself asks (RFC 8689: REQUIRETLS, `TLS-Required: No`). Decides only; no I/O.
// Promise: sources can only raise the level (never lower it); the result names its source. The
// only relaxation is `TLS-Required: No`, and it drops only demands the destination
// published (DANE, MTA-STS), never a connector's; with REQUIRETLS it is ignored.
import type { Config, OutboundConnector } from '../config/load.ts';
import { levelRank, type TlsLevel } from '../tls/levels.ts';
import type { Rfc8460Policy } from '../tls/failures.ts';
import { parseSmartHost } from '../util/net.ts';

export interface TlsRequirement {
  level: TlsLevel;
  /** Where the level came from: "default" or `connector "<name>"`. */
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

/** Raise `cur` to `next` when next is stricter; never lower. */
export function raise(cur: TlsRequirement, next: TlsRequirement): TlsRequirement {
  return levelRank(next.level) > levelRank(cur.level) ? next : cur;
}

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
  const waived = message.tlsRequiredNo === true && message.requireTls !== true;
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
  return `TLS required by REQUIRETLS (RFC 8689): the next hop is not authenticated by DANE, MTA-STS or a connector at certificateValidation or domainValidation (${req.level} by ${req.source})`;
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
   */
  connectorFor(org: string, domain: string): OutboundConnector | undefined {
    const o = this.config.organizations.find((x) => x.name === org);
    const enabled = (o?.outboundConnectors ?? []).filter((c) => c.enabled);
    const accepted = o?.acceptedDomains.find((d) => d.domain === domain);
    const exact = enabled.find((c) => c.recipientDomains.includes(domain));
    if (exact) return exact;
    if (accepted) {
      const all = enabled.find((c) => c.allAcceptedDomains);
      if (all) return all;
    }
    let best: OutboundConnector | undefined; let score = -1;
    for (const c of enabled) {
      for (const p of c.recipientDomains) {
        const s = patternMatch(p, domain);
        if (s > score) { score = s; best = c; }
      }
    }
    if (best) return best;
    const onPrem = enabled.filter((c) => c.connectorType === 'onPremises');
    if (accepted?.type === 'internalRelay') return onPrem[0];
    if (!accepted) return onPrem.find((c) => c.routeAllMessagesViaOnPremises);
    return undefined;
  }

  nextHop(org: string, domain: string, message: MessageTls = {}): NextHop {
    const d = domain.toLowerCase();
    const c = this.connectorFor(org, d);
    const tls = strictest(c ? [connectorDemand(c)] : [], message);
    if (!c) return { key: `mx:${d}`, kind: 'mx', domain: d, smartHosts: [], tls };
    const connector = { name: c.name, organization: c.organization, type: c.connectorType };
    if (c.smartHosts.length) {
      return { key: `smart:${c.organization}/${c.name}`, kind: 'smarthost', domain: d, smartHosts: c.smartHosts.map((h) => parseSmartHost(h)!), connector, tls };
    }
    return { key: `mx:${d}|${c.organization}/${c.name}`, kind: 'mx', domain: d, smartHosts: [], connector, tls };
  }
}
