// Owns: DANE TLSA matching for SMTP (RFC 7672, RFC 6698 §2.1, RFC 7671, names per RFC 7218) as a
// pure mechanism: given a TLSA RRset and the certificate chain a server presented, did the server
// authenticate? And the one function that computes TLSA data for a certificate, for matching and
// for publishing (`3 1 1` of a server's key, `2 1 1` of its issuing CA).
// No I/O: the caller looks the records up through dns/ (only a *secure* RRset counts, RFC 7672
// §2.2) and passes the reference names. Promise: never throws on any record or chain; every
// outcome is a DaneResult that says why.
import { createHash, createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import { rfc8460ResultType, type Rfc8460ResultType, type TlsFailureKind } from './failures.ts';
import { certificateNames, dnLine, nameMatches } from './names.ts';
import { issuedBy, validityProblem } from './trust.ts';

/** A TLSA record (structurally the same as dns/'s TlsaRecord). */
export interface Tlsa {
  usage: number;
  selector: number;
  matchingType: number;
  data: Buffer;
}

/** RFC 7218 names; only DANE-TA(2) and DANE-EE(3) are usable for SMTP (RFC 7672 §3.1.3). */
export const USAGE = { PKIX_TA: 0, PKIX_EE: 1, DANE_TA: 2, DANE_EE: 3 } as const;
export const SELECTOR = { CERT: 0, SPKI: 1 } as const;
export const MATCHING = { FULL: 0, SHA2_256: 1, SHA2_512: 2 } as const;

const DIGEST_LENGTH: Record<number, number> = { [MATCHING.SHA2_256]: 32, [MATCHING.SHA2_512]: 64 };
const MAX_DEPTH = 10;

/** Why a usable RRset did not authenticate the server (RFC 8460-style wording). */
export type DaneFailure =
  | 'certificate does not match any TLSA record'
  | 'chain does not reach the DANE-TA trust anchor'
  | 'certificate expired'
  | 'name mismatch';

/** Each failure's kind in the one TLS failure vocabulary (tls/failures.ts), which maps it to RFC 8460. */
const KIND: Record<DaneFailure, TlsFailureKind> = {
  'certificate does not match any TLSA record': 'tlsa-mismatch',
  'chain does not reach the DANE-TA trust anchor': 'certificate-not-trusted',
  'certificate expired': 'certificate-expired',
  'name mismatch': 'certificate-host-mismatch',
};
/** Which failure says most: reported when several records fail differently. */
const DEPTH: Record<DaneFailure, number> = {
  'certificate does not match any TLSA record': 0,
  'chain does not reach the DANE-TA trust anchor': 1,
  'certificate expired': 2,
  'name mismatch': 3,
};

export type DaneResult =
  /**
   * A usable record matched: the server is authenticated. `matched` is "TLSA 3 1 1";
   * `certificate` the one that matched it (the leaf for DANE-EE, the trust anchor for DANE-TA;
   * none when the anchor is a bare key from DNS); `name` the reference name the leaf carries
   * (DANE-TA only).
   */
  | {
      status: 'authenticated';
      usable: true;
      record: Tlsa;
      matched: string;
      usage: 'DANE-EE' | 'DANE-TA';
      certificate?: X509Certificate;
      name?: string;
      detail: string;
    }
  /** Usable records exist and none authenticated the server: do not send (defer). */
  | {
      status: 'failed';
      usable: true;
      failure: DaneFailure;
      kind: TlsFailureKind;
      rpt: Rfc8460ResultType;
      detail: string;
    }
  /**
   * A non-empty RRset with no usable record (PKIX-TA/EE, unknown values, wrong digest lengths):
   * TLS is mandatory but the certificate is not checked (RFC 7672 §2.2).
   */
  | { status: 'unusable'; usable: false; detail: string };

export interface DaneInput {
  /** The TLSA RRset (secure) for the host. */
  records: readonly Tlsa[];
  /** The chain the server presented, leaf first. */
  chain: readonly X509Certificate[];
  /**
   * Reference identifiers for DANE-TA(2) name checks (RFC 7672 §3.2.2/§3.2.3): the TLSA base
   * domain (the MX host name after secure CNAME expansion, dns/ Lookup.names' last), the MX
   * host name as published and the next-hop domain. DANE-EE(3) ignores names.
   */
  names: readonly string[];
  /** Time for validity checks (DANE-TA only), ms since the epoch; default now. */
  at?: number;
}

/** "TLSA 3 1 1". */
export function describeTlsa(r: Tlsa): string {
  return `TLSA ${r.usage} ${r.selector} ${r.matchingType}`;
}

/** Presentation format, as published in a zone: "3 1 1 <hex>". */
export function formatTlsa(r: Tlsa): string {
  return `${r.usage} ${r.selector} ${r.matchingType} ${r.data.toString('hex')}`;
}

/** Usable for SMTP: DANE-TA/DANE-EE, a known selector and matching type, data of the right size. */
export function usableTlsa(r: Tlsa): boolean {
  if (r.usage !== USAGE.DANE_TA && r.usage !== USAGE.DANE_EE) return false;
  if (r.selector !== SELECTOR.CERT && r.selector !== SELECTOR.SPKI) return false;
  if (r.matchingType === MATCHING.FULL) return r.data.length > 0;
  return DIGEST_LENGTH[r.matchingType] === r.data.length;
}

/**
 * The TLSA association data of a certificate: the whole certificate (selector 0) or its
 * SubjectPublicKeyInfo (selector 1), in full (matching type 0) or as SHA-256 (1) / SHA-512 (2).
 */
export function tlsaData(cert: X509Certificate, selector: number, matchingType: number): Buffer {
  let known = DATA.get(cert);
  if (!known) DATA.set(cert, (known = new Map()));
  const key = `${selector} ${matchingType}`;
  let data = known.get(key);
  if (!data) known.set(key, (data = computeTlsaData(cert, selector, matchingType)));
  return data;
}

/**
 * tlsaData per certificate object (an X509Certificate does not change): a pooled connection's
 * chain is matched for every message it carries, and exporting the key costs far more than the
 * match (about 0.6 ms per message on the benchmark machine).
 */
const DATA = new WeakMap<X509Certificate, Map<string, Buffer>>();

function computeTlsaData(cert: X509Certificate, selector: number, matchingType: number): Buffer {
  const selected = selector === SELECTOR.CERT ? cert.raw : cert.publicKey.export({ type: 'spki', format: 'der' });
  if (matchingType === MATCHING.SHA2_256) return createHash('sha256').update(selected).digest();
  if (matchingType === MATCHING.SHA2_512) return createHash('sha512').update(selected).digest();
  if (matchingType === MATCHING.FULL) return Buffer.from(selected);
  throw new RangeError(`unknown TLSA matching type ${matchingType}`);
}

/** A record for `cert`, e.g. tlsaRecord(leaf, 3, 1, 1) or tlsaRecord(issuingCa, 2, 1, 1). */
export function tlsaRecord(cert: X509Certificate, usage: number, selector: number, matchingType: number): Tlsa {
  return { usage, selector, matchingType, data: tlsaData(cert, selector, matchingType) };
}

function matches(r: Tlsa, cert: X509Certificate): boolean {
  try {
    return tlsaData(cert, r.selector, r.matchingType).equals(r.data);
  } catch {
    return false;
  }
}

const subjectOf = (c: X509Certificate) => dnLine(c.subject);
const describeCert = (c: X509Certificate) => `${subjectOf(c)} (SHA-256 ${c.fingerprint256})`;

/** A trust anchor: a presented certificate, or one given in full (certificate or key) in DNS. */
interface Anchor {
  cert?: X509Certificate;
  key: KeyObject;
  from: string;
}

/** Anchors a DANE-TA record names: presented issuers it matches, else its own full data. */
function anchorsFor(r: Tlsa, chain: readonly X509Certificate[]): Anchor[] {
  const presented = chain
    .slice(1)
    .filter((c) => matches(r, c))
    .map((c) => ({ cert: c, key: c.publicKey, from: `presented ${describeCert(c)}` }));
  if (presented.length || r.matchingType !== MATCHING.FULL) return presented;
  // RFC 7671 §5.2.2: a TA published in full need not be sent by the server.
  try {
    if (r.selector === SELECTOR.CERT) {
      const c = new X509Certificate(r.data);
      return [{ cert: c, key: c.publicKey, from: `${subjectOf(c)} from DNS` }];
    }
    return [{ key: createPublicKey({ key: r.data, format: 'der', type: 'spki' }), from: 'a public key from DNS' }];
  } catch {
    return [];
  }
}

const anchorIssued = (c: X509Certificate, a: Anchor): boolean => {
  if (a.cert) return issuedBy(c, a.cert);
  try {
    return c.verify(a.key);
  } catch {
    return false;
  }
};

/**
 * Walk from the leaf up the presented certificates to the anchor: each step signed by the next,
 * every certificate below the anchor within its dates. The anchor's own dates do not count (a
 * trust anchor is an input to path validation, RFC 5280 §6.1). Returns what failed, if anything.
 */
function chainToAnchor(
  chain: readonly X509Certificate[],
  anchor: Anchor,
  at: number,
): { failure: DaneFailure; detail: string } | undefined {
  let cur = chain[0];
  const used = new Set<X509Certificate>([cur]);
  for (let depth = 0; depth < MAX_DEPTH; depth++) {
    if (anchor.cert && cur !== chain[0] && cur.raw.equals(anchor.cert.raw)) return undefined;
    const late = validityProblem(cur, at);
    if (late) return { failure: 'certificate expired', detail: late.error };
    if (anchorIssued(cur, anchor)) return undefined;
    const next = chain.find((c) => !used.has(c) && c.ca && issuedBy(cur, c));
    if (!next)
      return {
        failure: 'chain does not reach the DANE-TA trust anchor',
        detail: `${subjectOf(cur)} is not issued by ${anchor.from} nor by any presented certificate`,
      };
    used.add(next);
    cur = next;
  }
  return { failure: 'chain does not reach the DANE-TA trust anchor', detail: 'certificate chain too long' };
}

/** Decide whether the presented chain satisfies the TLSA RRset (RFC 7672 §3). */
export function daneMatch(input: DaneInput): DaneResult {
  const usable = input.records.filter(usableTlsa);
  if (!usable.length) {
    return {
      status: 'unusable',
      usable: false,
      detail:
        `no usable TLSA record (${input.records.map(describeTlsa).join(', ') || 'empty RRset'}): TLS is ` +
        `required, the certificate is not authenticated`,
    };
  }
  const leaf = input.chain.at(0);
  if (!leaf) return fail('certificate does not match any TLSA record', 'the server presented no certificate');
  for (const r of usable.filter((x) => x.usage === USAGE.DANE_EE)) {
    // DANE-EE(3): the leaf's certificate or key is the whole proof; names and dates are ignored.
    if (matches(r, leaf))
      return {
        status: 'authenticated',
        usable: true,
        record: r,
        matched: describeTlsa(r),
        usage: 'DANE-EE',
        certificate: leaf,
        detail: `${describeTlsa(r)} matches ${describeCert(leaf)}`,
      };
  }
  const at = input.at ?? Date.now();
  let worst: { failure: DaneFailure; detail: string } | undefined;
  const note = (f: { failure: DaneFailure; detail: string }) => {
    if (!worst || DEPTH[f.failure] > DEPTH[worst.failure]) worst = f;
  };
  for (const r of usable.filter((x) => x.usage === USAGE.DANE_TA)) {
    for (const anchor of anchorsFor(r, input.chain)) {
      const broken = chainToAnchor(input.chain, anchor, at);
      if (broken) {
        note({ ...broken, detail: `${describeTlsa(r)}: ${broken.detail}` });
        continue;
      }
      const names = certificateNames(leaf);
      const name = input.names.find((ref) => names.some((n) => nameMatches(n, ref)));
      if (!name) {
        note({
          failure: 'name mismatch',
          detail:
            `${describeTlsa(r)}: ${describeCert(leaf)} carries ${names.join(', ') || 'no DNS name'}, ` +
            `expected ${input.names.join(' or ') || '(no reference name given)'}`,
        });
        continue;
      }
      return {
        status: 'authenticated',
        usable: true,
        record: r,
        matched: describeTlsa(r),
        usage: 'DANE-TA',
        ...(anchor.cert ? { certificate: anchor.cert } : {}),
        name,
        detail: `${describeTlsa(r)} trust anchor ${anchor.from} issues ${describeCert(leaf)} for ${name}`,
      };
    }
  }
  if (worst) return fail(worst.failure, worst.detail);
  return fail(
    'certificate does not match any TLSA record',
    `presented ${input.chain.map(describeCert).join(' <- ')}; records ${usable.map(formatTlsa).join('; ')}`,
  );
}

function fail(failure: DaneFailure, detail: string): DaneResult {
  return {
    status: 'failed',
    usable: true,
    failure,
    kind: KIND[failure],
    rpt: rfc8460ResultType(KIND[failure]),
    detail,
  };
}
