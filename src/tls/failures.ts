// Owns: the one vocabulary of TLS failures (delivery, trace, logs, DSNs, probes): a closed set of
// kinds, each with the label administrators see, the plain words senders read in a DSN, and the
// RFC 8460 (TLS-RPT) result type it reports as. Kinds are decided from structured data only — the
// OpenSSL/errno code of a failed handshake, the chain verification result, name matching and the
// revocation status — never by matching error text. The raw detail stays with the caller.
// Promise: every function here is total; an unknown handshake error code is "handshake-failed".

export const TLS_FAILURE_KINDS = [
  'starttls-not-offered',
  'starttls-refused',
  'protocol-version',
  'no-shared-cipher',
  'handshake-failed',
  'handshake-timeout',
  'connection-lost-during-handshake',
  'certificate-expired',
  'certificate-not-yet-valid',
  'certificate-not-trusted',
  'certificate-host-mismatch',
  'certificate-revoked',
  'revocation-unknown',
  // DANE (RFC 7672): the TLSA records could not be obtained, or none of them matches the server.
  'tlsa-lookup-failed',
  'tlsa-bogus',
  'tlsa-mismatch',
  'sts-mx-mismatch',
  'sts-policy-fetch-error',
  'sts-policy-invalid',
  'sts-webpki-invalid',
] as const;
export type TlsFailureKind = (typeof TLS_FAILURE_KINDS)[number];

/** What a chain verification can find wrong (tls/trust.ts). */
export type ChainFailureKind = Extract<
  TlsFailureKind,
  'certificate-expired' | 'certificate-not-yet-valid' | 'certificate-not-trusted'
>;

/** RFC 8460 §4.3 result types. */
export type Rfc8460ResultType =
  | 'starttls-not-supported'
  | 'certificate-host-mismatch'
  | 'certificate-expired'
  | 'certificate-not-trusted'
  | 'validation-failure'
  | 'tlsa-invalid'
  | 'dnssec-invalid'
  | 'dane-required'
  | 'sts-policy-fetch-error'
  | 'sts-policy-invalid'
  | 'sts-webpki-invalid';

/** RFC 8460 §4.4 policy types; `no-policy-found` when neither DANE nor MTA-STS applied. */
export type Rfc8460PolicyType = 'tlsa' | 'sts' | 'no-policy-found';

/** The policy a session was held to, as a TLS-RPT report names it (RFC 8460 §4.4 "policy"). */
export interface Rfc8460Policy {
  type: Rfc8460PolicyType;
  /** The policy as published: the TLSA records, or the lines of the MTA-STS policy. */
  strings?: string[];
  /** MTA-STS: the policy's mx patterns. */
  mxHost?: string[];
}

interface Entry {
  /** For administrators (trace, logs, probes): what went wrong, in a few words. */
  label: string;
  /** For senders (DSN), completing "The receiving mail server (host) …". */
  plain: string;
  rfc8460: Rfc8460ResultType;
}

const VOCABULARY: Record<TlsFailureKind, Entry> = {
  'starttls-not-offered': {
    label: 'the server did not offer STARTTLS',
    plain: 'did not offer an encrypted connection (TLS)',
    rfc8460: 'starttls-not-supported',
  },
  'starttls-refused': {
    label: 'the server refused STARTTLS',
    plain: 'refused to set up an encrypted connection (TLS)',
    rfc8460: 'starttls-not-supported',
  },
  'protocol-version': {
    label: 'the server only supports TLS versions older than TLS 1.2',
    plain: 'only supports an outdated version of the encryption protocol (TLS older than 1.2)',
    rfc8460: 'validation-failure',
  },
  'no-shared-cipher': {
    label: 'the server accepts none of our cipher suites',
    plain: 'only supports outdated encryption methods (TLS cipher suites)',
    rfc8460: 'validation-failure',
  },
  'handshake-failed': {
    label: 'the TLS handshake failed',
    plain: 'could not set up an encrypted connection (the TLS handshake failed)',
    rfc8460: 'validation-failure',
  },
  'handshake-timeout': {
    label: 'the TLS handshake did not complete in time',
    plain: 'did not finish setting up an encrypted connection (TLS) in time',
    rfc8460: 'validation-failure',
  },
  'connection-lost-during-handshake': {
    label: 'the connection was lost during the TLS handshake',
    plain: 'closed the connection while an encrypted connection (TLS) was being set up',
    rfc8460: 'validation-failure',
  },
  'certificate-expired': {
    label: 'the server certificate has expired',
    plain: 'did not prove its identity: its certificate has expired',
    rfc8460: 'certificate-expired',
  },
  'certificate-not-yet-valid': {
    label: 'the server certificate is not valid yet',
    plain: 'did not prove its identity: its certificate is not valid yet',
    rfc8460: 'validation-failure',
  },
  'certificate-not-trusted': {
    label: 'the server certificate does not chain to a trusted root',
    plain: 'did not prove its identity: its certificate is not issued by a certificate authority trusted here',
    rfc8460: 'certificate-not-trusted',
  },
  'certificate-host-mismatch': {
    label: 'the server certificate does not carry the required name',
    plain: 'did not prove its identity: its certificate was issued for a different name',
    rfc8460: 'certificate-host-mismatch',
  },
  'certificate-revoked': {
    label: 'the server certificate is revoked',
    plain: 'did not prove its identity: its certificate has been revoked by its issuer',
    rfc8460: 'validation-failure',
  },
  'revocation-unknown': {
    label: 'the revocation status of the server certificate could not be confirmed',
    plain: 'did not prove its identity: whether its certificate has been revoked could not be confirmed',
    rfc8460: 'validation-failure',
  },
  // RFC 8460 §4.3.2.1: "dnssec-invalid ... returned with SERVFAIL for the requested TLSA record".
  'tlsa-lookup-failed': {
    label: 'the TLSA records of the server could not be looked up',
    plain:
      'could not be checked: the DNS records that say which certificate it must present (DANE TLSA) could not ' +
      'be looked up',
    rfc8460: 'dnssec-invalid',
  },
  'tlsa-bogus': {
    label: 'the TLSA records of the server failed DNSSEC validation (bogus)',
    plain:
      'could not be checked: the DNS records that say which certificate it must present (DANE TLSA) failed their ' +
      'DNSSEC signature check',
    rfc8460: 'dnssec-invalid',
  },
  // RFC 8460 §4.3.2.1: "tlsa-invalid ... None of the records in the RRset were found to be valid"
  // (the DANE-specific type; validation-failure is for "a reason not matching a category above").
  'tlsa-mismatch': {
    label: 'the server certificate matches none of its TLSA records',
    plain: 'did not prove its identity: its certificate is not the one its domain publishes in DNS (DANE TLSA)',
    rfc8460: 'tlsa-invalid',
  },
  // MTA-STS (RFC 8461): a host the policy does not name, and the policy's own retrieval (the
  // latter never stop delivery by themselves: without a cached policy the domain has none, §3.3).
  'sts-mx-mismatch': {
    label: 'the MX host is not one the MTA-STS policy names',
    plain: "is not one of the mail servers that the recipient domain's MTA-STS policy lists",
    rfc8460: 'validation-failure',
  },
  'sts-policy-fetch-error': {
    label: 'the MTA-STS policy could not be fetched',
    plain: "could not be checked: the recipient domain's MTA-STS policy could not be fetched",
    rfc8460: 'sts-policy-fetch-error',
  },
  'sts-policy-invalid': {
    label: 'the MTA-STS policy is not valid',
    plain: "could not be checked: the recipient domain's MTA-STS policy is not valid",
    rfc8460: 'sts-policy-invalid',
  },
  'sts-webpki-invalid': {
    label: 'the certificate of the MTA-STS policy host is not valid',
    plain:
      "could not be checked: the recipient domain's MTA-STS policy server presented a certificate that is not valid",
    rfc8460: 'sts-webpki-invalid',
  },
};

export const tlsFailureLabel = (k: TlsFailureKind): string => VOCABULARY[k].label;
export const tlsFailurePlain = (k: TlsFailureKind): string => VOCABULARY[k].plain;
export const rfc8460ResultType = (k: TlsFailureKind): Rfc8460ResultType => VOCABULARY[k].rfc8460;
export const isTlsFailureKind = (s: unknown): s is TlsFailureKind =>
  typeof s === 'string' && (TLS_FAILURE_KINDS as readonly string[]).includes(s);

/** "label (kind)", plus "; detail: …" when there is raw detail for administrators. */
export function describeTlsFailure(k: TlsFailureKind, detail?: string): string {
  return `${VOCABULARY[k].label} (${k})${detail ? `; detail: ${detail}` : ''}`;
}

/**
 * Handshake error codes (Node's OpenSSL `ERR_SSL_*` names and errno codes) by what they mean.
 * A server that speaks only older TLS answers our ClientHello with a protocol_version alert; one
 * with no suite, group or signature algorithm in common answers handshake_failure. Data that is
 * not TLS at all (a broken server, a man in the middle) gives WRONG_VERSION_NUMBER from the record
 * layer, which is not a version question: it stays "handshake-failed".
 */
const HANDSHAKE_CODES: Readonly<Record<string, TlsFailureKind>> = {
  ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION: 'protocol-version',
  ERR_SSL_UNSUPPORTED_PROTOCOL: 'protocol-version',
  ERR_SSL_NO_PROTOCOLS_AVAILABLE: 'protocol-version',
  ERR_SSL_VERSION_TOO_LOW: 'protocol-version',
  ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE: 'no-shared-cipher',
  ERR_SSL_TLSV1_ALERT_INSUFFICIENT_SECURITY: 'no-shared-cipher',
  ERR_SSL_NO_SHARED_CIPHER: 'no-shared-cipher',
  ERR_SSL_NO_CIPHERS_AVAILABLE: 'no-shared-cipher',
  ERR_SSL_WRONG_CIPHER_RETURNED: 'no-shared-cipher',
  ECONNRESET: 'connection-lost-during-handshake',
  EPIPE: 'connection-lost-during-handshake',
  ECONNABORTED: 'connection-lost-during-handshake',
  ERR_SSL_UNEXPECTED_EOF_WHILE_READING: 'connection-lost-during-handshake',
  ETIMEDOUT: 'handshake-timeout',
};

export function handshakeFailureKind(code: string | undefined): TlsFailureKind {
  return code && Object.hasOwn(HANDSHAKE_CODES, code) ? HANDSHAKE_CODES[code] : 'handshake-failed';
}

/** Failures that a retry with legacy TLS (1.0/1.1, older suites) can get past; opportunistic only. */
export const legacyTlsMayHelp = (k: TlsFailureKind): boolean => k === 'protocol-version' || k === 'no-shared-cipher';
