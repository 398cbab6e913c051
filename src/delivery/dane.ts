// Owns: DANE for outbound SMTP (RFC 7672 §2.2) as a demand provider (policy/outbound.ts): for one
// host of a next hop, which TLSA records apply and what they demand. The TLSA matching itself is
// tls/dane.ts's; the lookups go through the configured resolver (dns/).
// Decisions, in RFC 7672 order:
// - only MX hosts reached through a DNSSEC-secure MX RRset (or the implicit MX, when the denial
//   of MX records is secure) and whose address records are secure get a TLSA lookup; smart hosts
//   never (a connector decides their TLS);
// - the TLSA base domain is the host name after a secure CNAME expansion of its address records,
//   then the name as published (§2.2.2); the owner is `_<port>._tcp.<base>`;
// - a secure RRset with a usable record (DANE-TA, DANE-EE): the `dane` level, checked by
//   tls/dane.ts daneMatch; a secure RRset with only unusable records: encryptionOnly (§2.2);
// - a secure denial, or an insecure answer or denial: no demand (MTA-STS or opportunistic);
// - a lookup that failed (SERVFAIL, bogus, timeout, ...): refuse the host (never "no TLSA").
// Promise: never throws for a DNS answer or failure; every refusal names its TLS failure kind.
import { DnsError, type Resolver, type TlsaRecord } from '../dns/types.ts';
import type { DemandProvider, HostContext, HostDemand, ProviderAnswer } from '../policy/outbound.ts';
import { daneMatch, describeTlsa, formatTlsa, usableTlsa } from '../tls/dane.ts';
import type { Rfc8460Policy } from '../tls/failures.ts';

const unique = (xs: readonly string[]) => [...new Set(xs)];

/** "3 1 1, 2 1 1": each kind of record once, in a stable order (DNS gives RRsets in any order). */
const recordList = (rs: readonly TlsaRecord[]) =>
  unique(
    [...rs]
      .sort((a, b) => b.usage - a.usage || a.selector - b.selector || a.matchingType - b.matchingType)
      .map((r) => describeTlsa(r).slice(5)),
  ).join(', ');

export class DaneProvider implements DemandProvider {
  readonly name = 'DANE';

  constructor(private readonly resolver: () => Resolver) {}

  async forHost(ctx: HostContext): Promise<ProviderAnswer> {
    if (ctx.via.kind === 'smarthost') return { kind: 'none' };
    if (!ctx.via.secure)
      return {
        kind: 'none',
        note:
          `DANE: the ${ctx.via.kind === 'mx' ? 'MX records' : 'MX denial'} of ${ctx.hop.domain} are not ` +
          `DNSSEC-secure`,
      };
    if (!ctx.addresses?.secure)
      return { kind: 'none', note: `DANE: the address records of ${ctx.host} are not DNSSEC-secure` };
    const names = ctx.addresses.names;
    const bases = unique([names[names.length - 1] ?? ctx.host, ctx.host]);
    for (const base of bases) {
      const owner = `_${ctx.port}._tcp.${base}`;
      try {
        const r = await this.resolver().tlsa(owner);
        if (r.status !== 'secure')
          return { kind: 'none', note: `DANE: the TLSA records at ${owner} are not DNSSEC-secure` };
        return { kind: 'demand', demand: demandFor(r.records, owner, unique([base, ctx.host, ctx.hop.domain])) };
      } catch (e) {
        if (!(e instanceof DnsError)) throw e;
        if (!e.temporary) {
          if (e.secure) continue; // this base publishes none: the next one, else no DANE
          return { kind: 'none', note: `DANE: the absence of TLSA records at ${owner} is not DNSSEC-secure` };
        }
        const bogus = e.kind === 'bogus';
        return {
          kind: 'refuse',
          tlsFailure: bogus ? 'tlsa-bogus' : 'tlsa-lookup-failed',
          demand: {
            level: 'dane',
            source:
              `DANE (MX records of ${ctx.hop.domain} and addresses of ${ctx.host} DNSSEC secure; TLSA ` +
              `lookup at ${owner} failed)`,
            published: true,
            report: { type: 'tlsa' },
          },
          detail:
            `the TLSA lookup failed${bogus ? ' DNSSEC validation (bogus)' : ''}: ${e.message}; not sent to ` +
            `a host whose TLSA records cannot be known (RFC 7672 §2.2)`,
        };
      }
    }
    return {
      kind: 'none',
      note:
        `DANE: no TLSA records at ${bases.map((b) => `_${ctx.port}._tcp.${b}`).join(' or ')} ` +
        `(DNSSEC-authenticated denial)`,
    };
  }
}

/** The policy a TLS-RPT report names for these records (RFC 8460 §4.4: type tlsa, the records as strings). */
const tlsaPolicy = (records: readonly TlsaRecord[]): Rfc8460Policy => ({
  type: 'tlsa',
  strings: records.map(formatTlsa),
});

/** The demand of a secure TLSA RRset at `owner`; `names` are the DANE-TA reference names. */
export function demandFor(records: readonly TlsaRecord[], owner: string, names: readonly string[]): HostDemand {
  if (!records.some(usableTlsa)) {
    // RFC 7672 §2.2: TLS is mandatory, but the certificate is not checked.
    return {
      level: 'encryptionOnly',
      source:
        `DANE (TLSA ${recordList(records)} at ${owner}, DNSSEC secure, no usable record: encryption without ` +
        `authentication)`,
      published: true,
      report: tlsaPolicy(records),
    };
  }
  const usable = records.filter(usableTlsa);
  // Usable TLSA records win over MTA-STS for this host (RFC 8461 §2).
  return {
    level: 'dane',
    source: `DANE (TLSA ${recordList(usable)} at ${owner}, DNSSEC secure)`,
    published: true,
    replaces: ['MTA-STS'],
    report: tlsaPolicy(records),
    verify: (s) => {
      const m = daneMatch({ records, chain: s.presented, names });
      if (m.status === 'authenticated') return { ok: true, detail: `DANE ${m.usage}: ${m.detail}` };
      if (m.status === 'failed') return { ok: false, failure: { kind: m.kind, text: `${m.failure} (${m.detail})` } };
      return { ok: true, detail: m.detail };
    },
  };
}
