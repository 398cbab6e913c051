// Owns: judging the certificate a TLS client presented, once per session: the names it carries,
// whether its chain verifies against tls.trust or trusts it through a connector's own trustedCAs
// or pinned fingerprints, whether its extended key usage allows client authentication, and its
// revocation status (the outbound RevocationChecker: OCSP, then CRL, signature-checked, cached).
// The judgement is plain data: policy/ decides from it and never does the I/O itself.
// Promise: never throws. Revocation endpoints are contacted only for a certificate that could
// identify a connector (its names match, its chain is trusted for that connector, its EKU allows
// client authentication), never for other certificates, whose URLs their presenter chose.
// Endpoints that do not answer within the checker's time limit make the status unknown.
import type { X509Certificate } from 'node:crypto';
import type { PeerCertFacts } from '../events.ts';
import { certificateNames, dnLine, namesSatisfy } from './names.ts';
import type { RevocationChecker, RevocationMode } from './revocation.ts';
import { issuedBy, verifyChain, type TrustStore } from './trust.ts';
import { x509 } from './x509.ts';
import { errorMessage } from '../util/errors.ts';

/** What one connector accepts as a client certificate (from its configuration). */
export interface ClientAnchor {
  /** Names the connector in judgements (organization/name). */
  id: string;
  /** tlsSenderCertificateName. */
  pattern: string;
  /** The connector's trustedCAs, if it has any. */
  trust: TrustStore | null;
  /** pinnedCertificates, normalised with normalizeFingerprint. */
  pins: ReadonlySet<string>;
}

/** The judgement of a presented client certificate. */
export interface ClientCertificate extends PeerCertFacts {
  /** DNS names it identifies (SAN DNS, else CN; RFC 6125). */
  names: string[];
  /** Anchors that trust it on their own (their trustedCAs verify the chain, or they pin it). */
  trustedBy: string[];
}

export const normalizeFingerprint = (f: string): string => f.replace(/[^0-9a-f]/gi, '').toUpperCase();

const EKU_NAMES: Record<string, string> = Object.fromEntries(
  Object.entries(x509.ExtendedKeyUsage).map(([k, v]) => [v, k]),
);
const CLIENT_AUTH: string = x509.ExtendedKeyUsage.clientAuth;
const ANY_EKU = '2.5.29.37.0';

/**
 * Why `leaf` may not authenticate a TLS client, or undefined when it may: a certificate without
 * an extendedKeyUsage extension may; one with it must list clientAuth or anyExtendedKeyUsage.
 */
export function clientAuthProblem(leaf: X509Certificate): string | undefined {
  // node:crypto's keyUsage is the extendedKeyUsage extension (undefined when absent); parsing the
  // certificate again with @peculiar/x509 would cost milliseconds per session.
  const usages = leaf.keyUsage as string[] | undefined;
  if (!usages || usages.includes(CLIENT_AUTH) || usages.includes(ANY_EKU)) return undefined;
  const listed = usages.map((u) => EKU_NAMES[u] ?? u).join(', ');
  return `its extended key usage ${listed ? `is limited to ${listed}` : 'is empty'} and does not include clientAuth`;
}

/** The path to check for revocation of a certificate trusted only by its pin. */
function pinnedPath(leaf: X509Certificate, presented: readonly X509Certificate[]): X509Certificate[] {
  const issuer = presented.find((c) => issuedBy(leaf, c));
  return issuer ? [leaf, issuer] : [leaf];
}

/**
 * Judge a presented chain (leaf first) without any network I/O. `check` is the verified path
 * (leaf first) whose revocation status must still be established, when one is needed.
 */
export function judgeClientChain(
  chain: readonly X509Certificate[],
  trust: TrustStore,
  anchors: readonly ClientAnchor[],
  mode: RevocationMode,
  at = Date.now(),
): { cert: ClientCertificate; check?: X509Certificate[] } | undefined {
  const leaf = chain.at(0);
  if (!leaf) return undefined;
  const presented = chain.slice(1);
  const global = verifyChain(leaf, presented, trust, at);
  const names = certificateNames(leaf);
  const fingerprint = normalizeFingerprint(leaf.fingerprint256);
  const ekuError = clientAuthProblem(leaf);
  let path = global.ok ? global.chain : undefined;
  const trustedBy: string[] = [];
  for (const a of anchors) {
    const own = a.trust ? verifyChain(leaf, presented, a.trust, at) : undefined;
    if (own?.ok) {
      trustedBy.push(a.id);
      path ??= own.chain;
    } else if (a.pins.has(fingerprint)) trustedBy.push(a.id);
  }
  const cert: ClientCertificate = {
    subject: dnLine(leaf.subject),
    issuer: dnLine(leaf.issuer),
    fingerprint256: leaf.fingerprint256,
    verified: global.ok,
    ...(global.error ? { verifyError: global.error } : {}),
    ...(ekuError ? { ekuError } : {}),
    names,
    trustedBy,
  };
  const candidate =
    !ekuError && anchors.some((a) => namesSatisfy(names, a.pattern) && (global.ok || trustedBy.includes(a.id)));
  if (!candidate || mode === 'off') return { cert };
  return { cert, check: path ?? pinnedPath(leaf, presented) };
}

/**
 * Complete a judgement with the revocation status of `path` (leaf first). Its last certificate is
 * the trust anchor and is not checked, as outbound; a certificate trusted directly (in a trust
 * store, or pinned and presented without its issuer) has nothing to check.
 */
export async function withRevocation(
  cert: ClientCertificate,
  path: readonly X509Certificate[],
  checker: RevocationChecker,
): Promise<ClientCertificate> {
  if (path.length === 1) {
    return {
      ...cert,
      revocation: {
        status: 'good',
        summary:
          `not checked: ${cert.subject} is itself the trust anchor (listed in a trust store, or pinned ` +
          `without its issuer)`,
      },
    };
  }
  try {
    const r = await checker.check(path);
    return { ...cert, revocation: { status: r.status, summary: r.summary } };
  } catch (e) {
    return {
      ...cert,
      revocation: { status: 'unknown', summary: `revocation status of ${cert.subject} unknown (${errorMessage(e)})` },
    };
  }
}

/** The judgement as it goes into the TLS facts (log, trace, Received:). */
export function peerCertFacts(c: ClientCertificate): PeerCertFacts {
  const { names: _n, trustedBy: _t, ...facts } = c;
  return facts;
}
