// Owns: the MTA-STS part of `portcullis tls check DOMAIN`: the `_mta-sts` TXT record, the policy
// fetched now (never from the cache) and parsed, and for each MX host probed whether it satisfies
// the policy as a sender enforcing it would judge (RFC 8461 §4: the host matches an `mx` pattern,
// offers TLS 1.2+ with a certificate that chains to tls.trust and is valid for the host name).
// Promise: never throws for DNS or HTTP trouble; every failure is in the result with its RFC 8460
// result type.
import { DnsError, type Resolver } from '../dns/types.ts';
import { namesSatisfy } from '../tls/names.ts';
import type { TrustStore } from '../tls/trust.ts';
import { fetchStsPolicy, policyUrl, type StsFetchFailure } from './fetch.ts';
import { matchingPattern, parseStsRecord, type StsPolicy } from './policy.ts';

export interface StsCheck {
  domain: string;
  /** The `_mta-sts` record: its id, or why there is none. */
  record: { id: string } | { error: string };
  url: string;
  /** The policy as fetched now, or why it could not be (absent when there is no record). */
  policy?: StsPolicy;
  fetchError?: { failure: StsFetchFailure; error: string };
}

/** What a probe saw of one host (delivery/probe.ts HostReport, reduced). */
export interface ProbedTls {
  connected: boolean;
  tls?: { version: string; chainValid: boolean; chainError?: string; names?: string[] };
}

export interface StsHostVerdict {
  /** The policy's pattern the host matches, or null. */
  pattern: string | null;
  /** Would a sender enforcing the policy deliver to this host? */
  satisfies: boolean;
  why: string;
}

export async function checkSts(domain: string, resolver: Resolver, trust: TrustStore): Promise<StsCheck> {
  const out: StsCheck = { domain, record: { error: '' }, url: policyUrl(domain) };
  try {
    const r = parseStsRecord((await resolver.txt(`_mta-sts.${domain}`)).records);
    out.record = r.ok ? r.value : { error: r.error };
  } catch (e) {
    if (!(e instanceof DnsError)) throw e;
    out.record = { error: e.temporary ? `TXT lookup failed: ${e.message}` : `no TXT record at _mta-sts.${domain}` };
  }
  if (!('id' in out.record)) return out;
  const f = await fetchStsPolicy(domain, { resolver, trust });
  if (f.ok) out.policy = f.policy;
  else out.fetchError = { failure: f.failure, error: f.error };
  return out;
}

export function stsHostVerdict(c: StsCheck, host: string, seen: ProbedTls): StsHostVerdict | undefined {
  if (!c.policy || c.policy.mode === 'none') return undefined;
  const pattern = matchingPattern(c.policy, host) ?? null;
  if (!pattern)
    return {
      pattern,
      satisfies: false,
      why: `matches no mx pattern (${c.policy.mx.join(', ')}): senders enforcing the policy never use it`,
    };
  const t = seen.tls;
  if (!t)
    return {
      pattern,
      satisfies: false,
      why: seen.connected ? 'no TLS session (starttls-not-supported)' : 'not reachable',
    };
  if (t.version !== 'TLSv1.2' && t.version !== 'TLSv1.3')
    return { pattern, satisfies: false, why: `${t.version} is older than TLS 1.2` };
  if (!t.chainValid)
    return { pattern, satisfies: false, why: `certificate not valid: ${t.chainError ?? 'chain does not verify'}` };
  if (!namesSatisfy(t.names ?? [], host))
    return { pattern, satisfies: false, why: `certificate not valid for ${host} (certificate-host-mismatch)` };
  return { pattern, satisfies: true, why: `matches ${pattern}; TLS 1.2+ and a valid certificate for ${host}` };
}

/** Text lines for `tls check`, with the verdict of each probed host. */
export function formatStsCheck(
  c: StsCheck,
  hosts: readonly { host: string; ip?: string; verdict?: StsHostVerdict }[],
): string[] {
  const L = [`MTA-STS (RFC 8461) for ${c.domain}:`];
  if (!('id' in c.record)) {
    L.push(`  TXT _mta-sts.${c.domain}: ${c.record.error}: no MTA-STS policy`);
    return L;
  }
  L.push(`  TXT _mta-sts.${c.domain}: id ${c.record.id}`);
  if (!c.policy) {
    L.push(`  policy ${c.url}: NOT usable (${c.fetchError!.failure}): ${c.fetchError!.error}`);
    return L;
  }
  L.push(
    `  policy ${c.url}: mode ${c.policy.mode}, max_age ${c.policy.maxAge}, mx ${c.policy.mx.join(', ') || '(none)'}`,
  );
  if (c.policy.mode === 'none') return L;
  for (const h of hosts)
    if (h.verdict)
      L.push(
        `  ${h.host}${h.ip ? ` [${h.ip}]` : ''}: ` +
          (h.verdict.satisfies
            ? 'satisfies the policy'
            : `does NOT satisfy the policy${c.policy.mode === 'testing' ? ' (testing: delivered anyway)' : ''}`) +
          ': ' +
          `${h.verdict.why}`,
      );
  return L;
}
