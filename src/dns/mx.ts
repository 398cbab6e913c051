// Owns: the one answer to "which hosts receive mail for this domain" (RFC 5321 §5.1, RFC 7505 §3),
// for delivery and for the administrators' probes alike: MX hosts by preference, the implicit MX,
// the null MX, and which DNS answers end the search.
// Promises: never throws for a DNS answer or failure: the result says which case it is, with the
// DnsError for a failure. Hosts of equal preference are shuffled only when asked (delivery).
import { DnsError, type Resolver } from './types.ts';

export interface MailHost {
  name: string;
  priority: number;
}

export type MailHosts =
  /** MX records, lowest preference first; `secure`: the MX RRset is DNSSEC-secure (DANE needs it). */
  | { kind: 'mx'; hosts: MailHost[]; secure: boolean }
  /**
   * No MX records: the domain itself, as if it had an MX of preference 0 pointing to itself;
   * `secure`: the denial of MX records is DNSSEC-authenticated.
   */
  | { kind: 'implicit'; hosts: [MailHost]; secure: boolean }
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
 * - A null MX (a single MX, preference 0, the root as exchange, RFC 7505 §3) → no mail for this
 *   domain. Any other "." exchange is left out by the resolver (typed.ts): never an empty host name.
 * `shuffle` randomises hosts of equal preference (§5.1: "the sender-SMTP MUST randomize them"). A
 * CNAME at the domain is followed by the resolver (§5.1: "processed as if it were the initial name").
 */
export async function mailHosts(resolver: Resolver, domain: string, shuffle?: () => number): Promise<MailHosts> {
  try {
    const mx = await resolver.mx(domain);
    if (mx.nullMx) return { kind: 'nullMx' };
    const hosts = byPreference(
      mx.records.map((m) => ({ name: m.exchange, priority: m.priority })),
      shuffle,
    );
    return { kind: 'mx', hosts, secure: mx.status === 'secure' };
  } catch (e) {
    if (!(e instanceof DnsError)) throw e;
    if (e.kind === 'nodata') return { kind: 'implicit', hosts: [{ name: domain, priority: 0 }], secure: e.secure };
    return { kind: 'error', error: e };
  }
}

/**
 * RFC 5321 §5.1, when this gateway is one of the mail hosts: "The relay host MUST then inspect the
 * list for any of the names or addresses by which it might be known in mail transactions. If a
 * matching record is found, all records at that preference level and higher-numbered ones MUST be
 * discarded from consideration. If there are no records left at that point, it is an error
 * condition, and the message MUST be returned as undeliverable." `self` holds our names (lower
 * case, no trailing dot). Returns the hosts left, and our own record when one matched.
 */
export function beforeSelf(
  hosts: readonly MailHost[],
  self: ReadonlySet<string>,
): { hosts: MailHost[]; self?: MailHost } {
  const own = hosts.filter((h) => self.has(h.name.toLowerCase().replace(/\.$/, '')));
  if (!own.length) return { hosts: [...hosts] };
  const best = own.reduce((a, b) => (b.priority < a.priority ? b : a));
  return { hosts: hosts.filter((h) => h.priority < best.priority), self: best };
}

/** Sorted by preference, lowest first (RFC 5321 §5.1); with `random`, equal ones shuffled (Fisher-Yates). */
export function byPreference<T extends { priority: number }>(list: readonly T[], random?: () => number): T[] {
  const out = [...list].sort((a, b) => a.priority - b.priority);
  if (!random) return out;
  for (let i = 0; i < out.length;) {
    let j = i;
    while (j < out.length && out[j].priority === out[i].priority) j++;
    for (let k = j - 1; k > i; k--) {
      const r = i + Math.floor(random() * (k - i + 1));
      [out[k], out[r]] = [out[r], out[k]];
    }
    i = j;
  }
  return out;
}
