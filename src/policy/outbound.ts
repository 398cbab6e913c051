// Owns: the outbound decision per recipient domain: which connector applies, where the next hop
// is (MX or smart hosts), and the TLS requirement on the one ordered scale of tls/levels.ts,
// composed from its sources (today the default and the connector) in one place. Decides only; no I/O.
// Promise: sources can only raise the level (never lower it); the result names its source.
import type { Config, OutboundConnector } from '../config/load.ts';
import { levelRank, type TlsLevel } from '../tls/levels.ts';
import { parseSmartHost } from '../util/net.ts';

export interface TlsRequirement {
  level: TlsLevel;
  /** Where the level came from: "default" or `connector "<name>"`. */
  source: string;
  /** Certificate name pattern (RFC 6125) required at domainValidation. */
  tlsDomain?: string;
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
export function strictest(demands: readonly TlsRequirement[]): TlsRequirement {
  return demands.reduce(raise, DEFAULT_TLS);
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

  nextHop(org: string, domain: string): NextHop {
    const d = domain.toLowerCase();
    const c = this.connectorFor(org, d);
    const tls = strictest(c ? [connectorDemand(c)] : []);
    if (!c) return { key: `mx:${d}`, kind: 'mx', domain: d, smartHosts: [], tls };
    const connector = { name: c.name, organization: c.organization, type: c.connectorType };
    if (c.smartHosts.length) {
      return { key: `smart:${c.organization}/${c.name}`, kind: 'smarthost', domain: d, smartHosts: c.smartHosts.map((h) => parseSmartHost(h)!), connector, tls };
    }
    return { key: `mx:${d}|${c.organization}/${c.name}`, kind: 'mx', domain: d, smartHosts: [], connector, tls };
  }
}
