// Owns: what the report counters count (the kinds, their dimensions and time buckets) and the
// vocabulary of the transit-security reports: how an outbound message was secured, and which
// requirement a TLS failure broke. One definition for the aggregator (aggregate.ts), the report
// queries (query.ts), the API schemas and the web UI's legends.
// Promise: every function here is total; an unknown value is classified, never dropped.
import { isTlsFailureKind, rfc8460ResultType } from '../tls/failures.ts';
import { REQUIRED_TLS_LEVELS } from '../tls/levels.ts';

export const HOUR = 3_600_000;
export const DAY = 86_400_000;

/**
 * How a delivered outbound message was secured: by a policy that required TLS (DANE, MTA-STS —
 * issue 10 adds them —, or the connector's tlsSettings), else what opportunistic TLS achieved.
 */
export const SECURITY_TYPES = [
  'dane',
  'mta-sts',
  'connector-forced',
  'opportunistic-tls',
  'legacy-tls',
  'plaintext',
] as const;
export type SecurityType = (typeof SECURITY_TYPES)[number];

/** What demanded TLS of an attempt: a required level's source, or nothing ('opportunistic'). */
export const REQUIREMENT_TYPES = ['dane', 'mta-sts', 'connector-forced', 'opportunistic'] as const;
export type RequirementType = (typeof REQUIREMENT_TYPES)[number];

/** The counter kinds: name in the store, bucket width, and what d1..d4 hold. */
export const KINDS = {
  /** Inbound SMTP sessions by the TLS they used ('none': plaintext). */
  inSessions: { kind: 'in.sessions', span: HOUR, dims: ['tlsVersion', 'cipher'] },
  /** Inbound messages accepted, by the TLS of their session. */
  inMessages: { kind: 'in.messages', span: HOUR, dims: ['tlsVersion', 'cipher'] },
  /** Inbound sessions per client (address and HELO name) and TLS version; whole days (many clients). */
  inPeers: { kind: 'in.peers', span: DAY, dims: ['tlsVersion', 'ip', 'helo'] },
  /** Outbound SMTP deliveries (per recipient) by how they were secured. */
  outDelivered: { kind: 'out.delivered', span: HOUR, dims: ['security', 'tlsVersion', 'cipher'] },
  /**
   * Outbound attempts deferred or failed, by the requirement and the TLS failure that broke it ('' when TLS was not the
   * cause).
   */
  outUndelivered: { kind: 'out.undelivered', span: HOUR, dims: ['status', 'requirement', 'tlsFailure'] },
  /** Outbound deliveries per recipient domain and security type; whole days (many domains). */
  outDomains: { kind: 'out.domains', span: DAY, dims: ['domain', 'security'] },
  /**
   * Outbound deliveries in plaintext per recipient domain; whole days: the candidates of the plaintext-only domains.
   */
  outPlainDomains: { kind: 'out.plainDomains', span: DAY, dims: ['domain'] },
  /** Deferrals and bounces because a required TLS level failed, per recipient domain; whole days. */
  outTlsFailures: { kind: 'out.tlsFailures', span: DAY, dims: ['domain', 'requirement', 'tlsFailure', 'status'] },
} as const;

/**
 * The requirement behind an attempt, from the level and the source label of its TlsRequirement
 * (policy/outbound.ts: "default" or `connector "NAME"`; DANE and MTA-STS bring their own labels).
 */
export function requirementType(level: string | undefined, source: string | undefined): RequirementType {
  if (!level || !(REQUIRED_TLS_LEVELS as readonly string[]).includes(level)) return 'opportunistic';
  const s = (source ?? '').toLowerCase();
  if (s.startsWith('dane')) return 'dane';
  if (s.startsWith('mta-sts')) return 'mta-sts';
  return 'connector-forced'; // today the only other source of a required level
}

/** How a delivered attempt was secured. */
export function securityType(a: {
  tlsRequired?: string;
  tlsSource?: string;
  tlsVersion?: string;
  tlsLegacy?: boolean;
}): SecurityType {
  const r = requirementType(a.tlsRequired, a.tlsSource);
  if (r !== 'opportunistic') return r;
  if (!a.tlsVersion) return 'plaintext';
  return a.tlsLegacy ? 'legacy-tls' : 'opportunistic-tls';
}

/** The RFC 8460 result type of a TLS failure kind ('' for none or an unknown kind). */
export function resultType(kind: string): string {
  return isTlsFailureKind(kind) ? rfc8460ResultType(kind) : '';
}

/** The start of the bucket `t` falls in. */
export const bucketOf = (t: number, span: number): number => Math.floor(t / span) * span;
