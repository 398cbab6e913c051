// Owns: the one ordered scale of outbound TLS requirement levels, weakest first, and what a
// connector may set (tlsSettings). Every other list, rank and check of levels derives from it:
// the configuration schema, the outbound policy, delivery, the trace and the CLI.
// A new level (DANE, MTA-STS) is added here, at its place in the order; a new source of
// requirements is a new demand composed by policy/outbound.ts, not a new scale.

/**
 * Weakest first. Up to domainValidation each level includes everything the levels before it
 * demand. `dane` (RFC 7672) authenticates the server through TLSA records from a DNSSEC-signed
 * zone instead of the WebPKI: it requires TLS 1.2+ and a certificate a usable TLSA record
 * matches. It ranks highest (it binds the key to the host name through DNSSEC, and it needs a
 * full handshake like the WebPKI levels), but it does not include their WebPKI checks: when a
 * connector's WebPKI level and DANE both apply, policy/outbound.ts keeps both demands and each
 * is checked.
 */
export const TLS_LEVELS = [
  'none',
  'opportunistic',
  'encryptionOnly',
  'certificateValidation',
  'domainValidation',
  'dane',
] as const;
export type TlsLevel = (typeof TLS_LEVELS)[number];

/**
 * The levels an outbound connector may demand (tlsSettings): all but `none` and `dane` (DANE is the destination's to
 * demand).
 */
export const CONNECTOR_TLS_LEVELS = TLS_LEVELS.filter(
  (l): l is Exclude<TlsLevel, 'none' | 'dane'> => l !== 'none' && l !== 'dane',
);

export const levelRank = (l: TlsLevel): number => TLS_LEVELS.indexOf(l);

/** Does `level` demand at least what `floor` demands? */
export const atLeast = (level: TlsLevel, floor: TlsLevel): boolean => levelRank(level) >= levelRank(floor);

/** Levels that require TLS (delivery never falls back to plaintext or legacy TLS under them). */
export const REQUIRED_TLS_LEVELS = TLS_LEVELS.filter((l) => atLeast(l, 'encryptionOnly'));
