// Owns: the one answer to "which hosts receive mail for this domain" (RFC 5321 §5.1, RFC 7505 §3),
// for delivery and for the administrators' probes alike: MX hosts by preference, the implicit MX,
// the null MX, and which DNS answers end the search.
// Promises: never throws for a DNS answer or failure: the result says which case it is, with the
// DnsError for a failure. Hosts of equal preference are shuffled only when asked (delivery).
import { DnsError, type Resolver } from './types.ts';

export interface MailHost { name: string; priority: number }

export type MailHosts =
  /** MX records, lowest preference first. */
  | { kind: 'mx'; hosts: MailHost[] }
  /** No MX records: the domain itself, as if it had an MX of preference 0 pointing to itself. */
  | { kind: 'implicit'; hosts: [MailHost] }
  /** A null MX (RFC 7505 §3): the domain accepts no mail. */
  | { kind: 'nullMx' }
  /**
   * The domain does not exist (nxdomain, permanent) or the lookup could not find out (servfail,
   * bogus, timeout, refused, malformed: temporary; `error.temporary` tells which).
   */
  | { kind: 'error'; error: DnsError };

/**
 * The mail hosts of `domain` (RFC 5321 §5.1). Decisions:
 * - No MX records (NODATA: the name exists) → the implicit MX: the domain itself, preference 0.
 * - NXDOMAIN → an error, and no address lookup: §5.1 says "If a non-existent domain error is
 *   returned, this situation MUST be reported as an error"; a name that does not exist has no
 *   A/AAAA records either. Postfix reaches the same verdict one lookup later (its MX "not found"
 *   covers NXDOMAIN too; the A lookup then fails "Host or domain name not found", 5.4.4, a bounce).
 * - SERVFAIL, a DNSSEC-bogus answer, a timeout: temporary errors, never read as "no MX" (§5.1:
 *   "If a temporary error is returned, the message MUST be queued and retried later"). A bogus
 *   MX RRset is exactly what an attacker forging "no MX, use the A record" would produce.
 * - A null MX (a single MX with the root as exchange, RFC 7505 §3) → no mail for this domain.
 * `shuffle` randomises hosts of equal preference (§5.1: "the sender-SMTP MUST randomize them"). A
 * CNAME at the domain is followed by the resolver (§5.1: "processed as if it were the initial name").
 */
export async function mailHosts(resolver: Resolver, domain: string, shuffle?: () => number): Promise<MailHosts> {
  try {
    const mx = await resolver.mx(domain);
    if (mx.nullMx) return { kind: 'nullMx' };
    const hosts = byPreference(mx.records.map((m) => ({ name: m.exchange, priority: m.priority })), shuffle);
    return { kind: 'mx', hosts };
  } catch (e) {
    if (!(e instanceof DnsError)) throw e;
    if (e.kind === 'nodata') return { kind: 'implicit', hosts: [{ name: domain, priority: 0 }] };
    return { kind: 'error', error: e };
  }
}

/** Sorted by preference, lowest first (RFC 5321 §5.1); with `random`, equal ones shuffled (Fisher-Yates). */
export function byPreference<T extends { priority: number }>(list: readonly T[], random?: () => number): T[] {
  const out = [...list].sort((a, b) => a.priority - b.priority);
  if (!random) return out;
  for (let i = 0; i < out.length;) {
    let j = i;
    while (j < out.length && out[j].priority === out[i].priority) j++;
    for (let k = j - 1; k > i; k--) { const r = i + Math.floor(random() * (k - i + 1)); [out[k], out[r]] = [out[r], out[k]]; }
    i = j;
  }
  return out;
}
