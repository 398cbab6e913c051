// Owns: the MTA-STS policy of a recipient domain as delivery uses it (RFC 8461 §3.3, §5): the
// `_mta-sts` TXT lookup through the Resolver, the policy fetch (fetch.ts), the cache (the store's
// sts_policies: used until max_age runs out, refetched when the TXT id changes and before it
// expires), and what a policy demands of one MX host (§4, §5): under `enforce` a host that matches
// a `mx` pattern must offer TLS 1.2+ with a WebPKI-valid certificate for its own name, a host
// that matches none is not used; `testing` and `none` demand nothing (testing failures are noted).
// Promise: never throws for DNS, HTTP or cache trouble: a policy that cannot be found or fetched
// (and none cached) means "no policy" with the reason and its RFC 8460 result type, so delivery
// goes on as if the domain had none (§3.3, §5: "MUST continue with delivery"); a cached,
// unexpired policy is never dropped because a lookup or fetch failed.
import { DnsError, type Resolver } from '../dns/types.ts';
import type { DemandProvider, TlsRequirement } from '../policy/outbound.ts';
import type { StsPolicyEntry } from '../store/types.ts';
import type { TrustStore } from '../tls/trust.ts';
import type { Rfc8460Policy } from '../tls/failures.ts';
import { fetchStsPolicy, type FetchOptions, type FetchResult, type StsFetchFailure } from './fetch.ts';
import { matchingPattern, parseStsPolicy, parseStsRecord, type StsPolicy } from './policy.ts';

/** Where policies are cached (the store implements it). */
export interface StsCache {
  stsPolicy(domain: string): Promise<StsPolicyEntry | null>;
  saveStsPolicy(entry: StsPolicyEntry): Promise<void>;
}

export type StsLookup =
  /** The domain publishes no usable policy (or `none`): nothing is demanded. */
  | { kind: 'none'; domain: string; reason: string; failure?: StsFetchFailure }
  | {
      kind: 'policy';
      domain: string;
      id: string;
      policy: StsPolicy;
      expiresAt: number;
      /** 'fetched' now, or from the 'cache' (unchanged id, or the fetch failed: see `note`). */
      from: 'fetched' | 'cache';
      /** Why the cache was used although a fetch was due, with the failure's result type. */
      note?: string;
      failure?: StsFetchFailure;
    };

/** What a policy demands of one MX host. */
export type StsHostDemand =
  /** No demand (no policy, testing or none): `testing` says what would be checked. */
  | { kind: 'none'; testing?: TlsRequirement }
  | { kind: 'require'; requirement: TlsRequirement }
  /** `enforce` and the host matches no `mx` pattern: do not deliver to it (§4.1). */
  | { kind: 'skip'; reason: string };

export interface MtaStsOptions {
  resolver: () => Resolver;
  trust: () => TrustStore;
  /** null: nothing cached (the `tls check` probe fetches every time). */
  cache: StsCache | null;
  fetch?: Partial<Pick<FetchOptions, 'connectTimeoutMs' | 'totalTimeoutMs' | 'localAddress'>>;
  now?: () => number;
  /** Seam for unit tests: replaces the HTTPS fetch. */
  fetcher?: (domain: string) => Promise<FetchResult>;
}

/** Refetch an unchanged policy when this much of its max_age has passed, at most a day after the fetch. */
const REFRESH_SHARE = 0.5;
const REFRESH_MAX_MS = 86_400_000;
/** How long one answer serves further lookups of the same domain, and how many domains are remembered. */
const MEMO_MS = 60_000;
const MEMO_MAX = 10_000;

export class MtaSts {
  private readonly inflight = new Map<string, Promise<StsLookup>>();
  private readonly memo = new Map<string, { at: number; result: StsLookup }>();
  private readonly now: () => number;
  constructor(private readonly o: MtaStsOptions) {
    this.now = o.now ?? Date.now;
  }

  /**
   * The policy of `domain`. Concurrent deliveries to one domain share one lookup and fetch, and
   * the answer serves every host of a delivery (and other deliveries) for MEMO_MS: a policy host
   * that does not answer is asked once a minute at most, not once per MX host.
   */
  lookup(domain: string): Promise<StsLookup> {
    const d = domain.toLowerCase().replace(/\.$/, '');
    const hit = this.memo.get(d);
    if (hit && this.now() - hit.at < MEMO_MS) return Promise.resolve(hit.result);
    let p = this.inflight.get(d);
    if (!p) {
      p = this.discover(d)
        .then((result) => {
          if (this.memo.size >= MEMO_MAX) this.memo.delete(this.memo.keys().next().value!);
          this.memo.set(d, { at: this.now(), result });
          return result;
        })
        .finally(() => this.inflight.delete(d));
      this.inflight.set(d, p);
    }
    return p;
  }

  private async cached(domain: string): Promise<{ entry: StsPolicyEntry; policy: StsPolicy } | undefined> {
    let entry: StsPolicyEntry | null = null;
    try {
      entry = (await this.o.cache?.stsPolicy(domain)) ?? null;
    } catch {
      return undefined;
    }
    if (!entry || entry.expiresAt <= this.now()) return undefined;
    const p = parseStsPolicy(entry.text);
    return p.ok ? { entry, policy: p.value } : undefined;
  }

  private async discover(domain: string): Promise<StsLookup> {
    const cached = await this.cached(domain);
    const fromCache = (note?: string, failure?: StsFetchFailure): StsLookup =>
      policyLookup(cached!.entry, cached!.policy, 'cache', note, failure);
    const txtName = `_mta-sts.${domain}`;
    let id: string;
    try {
      const r = parseStsRecord((await this.o.resolver().txt(txtName)).records);
      if (!r.ok) {
        if (cached)
          return fromCache(`TXT ${txtName}: ${r.error}; using the cached policy until it expires (RFC 8461 §3.3)`);
        return { kind: 'none', domain, reason: `TXT ${txtName}: ${r.error}` };
      }
      id = r.value.id;
    } catch (e) {
      if (!(e instanceof DnsError)) throw e;
      if (cached)
        return fromCache(e.temporary ? `TXT lookup failed (${e.message}); using the cached policy` : undefined);
      return {
        kind: 'none',
        domain,
        reason: e.temporary ? `TXT lookup failed: ${e.message}` : `no TXT record at ${txtName}`,
      };
    }
    if (cached && cached.entry.id === id && !this.refreshDue(cached.entry, cached.policy)) return fromCache();
    const f = await (this.o.fetcher
      ? this.o.fetcher(domain)
      : fetchStsPolicy(domain, { resolver: this.o.resolver(), trust: this.o.trust(), ...this.o.fetch }));
    if (!f.ok) {
      if (cached)
        return fromCache(
          `policy fetch failed (${f.failure}: ${f.error}); using the cached policy (id ${cached.entry.id}) ` +
            `until it expires`,
          f.failure,
        );
      return { kind: 'none', domain, reason: `policy fetch failed: ${f.error}`, failure: f.failure };
    }
    const now = this.now();
    const entry: StsPolicyEntry = { domain, id, text: f.text, fetchedAt: now, expiresAt: now + f.policy.maxAge * 1000 };
    try {
      await this.o.cache?.saveStsPolicy(entry);
    } catch {
      /* the policy applies now; caching it is best effort */
    }
    return policyLookup(entry, f.policy, 'fetched');
  }

  private refreshDue(e: StsPolicyEntry, p: StsPolicy): boolean {
    return this.now() - e.fetchedAt >= Math.min(p.maxAge * 1000 * REFRESH_SHARE, REFRESH_MAX_MS);
  }
}

function policyLookup(
  e: StsPolicyEntry,
  policy: StsPolicy,
  from: 'fetched' | 'cache',
  note?: string,
  failure?: StsFetchFailure,
): StsLookup {
  if (policy.mode === 'none')
    return { kind: 'none', domain: e.domain, reason: `the policy (id ${e.id}) has mode none` };
  return {
    kind: 'policy',
    domain: e.domain,
    id: e.id,
    policy,
    expiresAt: e.expiresAt,
    from,
    ...(note ? { note } : {}),
    ...(failure ? { failure } : {}),
  };
}

/**
 * The source text of a policy's demands, e.g. `MTA-STS (policy of fabrikam.test, id 2026a, mode enforce, mx
 * *.fabrikam.test)`.
 */
export function stsSource(l: Extract<StsLookup, { kind: 'policy' }>, pattern?: string): string {
  return (
    `MTA-STS (policy of ${l.domain}, id ${l.id}, mode ` +
    `${l.policy.mode}${pattern ? `, mx ${pattern}` : ''}${l.from === 'cache' && l.note ? ', cached' : ''})`
  );
}

/**
 * What the policy demands of MX host `host` (§4, §5). enforce: a matching host needs TLS 1.2+ and
 * a WebPKI-valid certificate for its own name (domainValidation with the host as the name); a host
 * matching no pattern is skipped. testing: nothing, but `testing` says what enforce would demand.
 */
export function stsDemand(l: StsLookup, host: string): StsHostDemand {
  if (l.kind !== 'policy') return { kind: 'none' };
  const pattern = matchingPattern(l.policy, host);
  const requirement: TlsRequirement = {
    level: 'domainValidation',
    source: stsSource(l, pattern),
    tlsDomain: host.toLowerCase().replace(/\.$/, ''),
    report: stsReport(l.policy),
  };
  if (l.policy.mode === 'testing') return { kind: 'none', testing: requirement };
  if (!pattern)
    return {
      kind: 'skip',
      reason:
        `MX host ${host} matches no mx pattern of the MTA-STS policy of ${l.domain} (id ${l.id}, mode ` +
        `enforce: ${l.policy.mx.join(', ')})`,
    };
  return { kind: 'require', requirement };
}

/** The policy as a TLS-RPT report names it (RFC 8460 §4.4: the policy's lines, and its mx patterns). */
export function stsReport(p: StsPolicy): Rfc8460Policy {
  return {
    type: 'sts',
    strings: ['version: STSv1', `mode: ${p.mode}`, ...p.mx.map((m) => `mx: ${m}`), `max_age: ${p.maxAge}`],
    mxHost: [...p.mx],
  };
}

/**
 * MTA-STS as a per-host demand provider for delivery (policy/outbound.ts): MX delivery only (smart
 * hosts are the administrator's choice, not the domain's MX), and only while `enabled()`. enforce:
 * a matching host gets the policy's demand (published: `TLS-Required: No` may relax it, RFC 8689
 * §5), a host outside the policy is refused (`sts-mx-mismatch`); testing: the demand is observed.
 */
export function mtaStsProvider(sts: MtaSts, enabled: () => boolean): DemandProvider {
  return {
    name: 'MTA-STS',
    async forHost(ctx) {
      if (!enabled() || ctx.via.kind === 'smarthost') return { kind: 'none' };
      const l = await sts.lookup(ctx.hop.domain);
      const d = stsDemand(l, ctx.host);
      if (l.kind === 'none')
        return l.failure
          ? {
              kind: 'none',
              note: `MTA-STS: ${l.reason} (${l.failure}); delivering as if ${l.domain} had no policy (RFC 8461 §3.3)`,
            }
          : { kind: 'none' };
      const note = l.note ? `MTA-STS: ${l.note}` : undefined;
      if (d.kind === 'require')
        return { kind: 'demand', demand: { ...d.requirement, published: true }, ...(note ? { note } : {}) };
      const demand: TlsRequirement = {
        level: 'domainValidation',
        source: stsSource(l),
        tlsDomain: ctx.host,
        published: true,
        report: stsReport(l.policy),
      };
      if (d.kind === 'skip') return { kind: 'refuse', demand, tlsFailure: 'sts-mx-mismatch', detail: d.reason };
      // testing
      if (!matchingPattern(l.policy, ctx.host))
        return {
          kind: 'none',
          note:
            `${stsSource(l)}: MX host ${ctx.host} matches no mx pattern (${l.policy.mx.join(', ')}); ` +
            `delivered anyway (testing mode)`,
        };
      return { kind: 'none', ...(d.testing ? { observe: d.testing } : {}), ...(note ? { note } : {}) };
    },
  };
}
