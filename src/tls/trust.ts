// Owns: the trust store (system roots + configured CA files), reading PEM certificate files,
// whether one certificate issued another, validity dates, and chain verification.
// Promise: verifyChain and issuedBy never throw on a bad certificate or chain; verifyChain returns
// ok:false with the reason, as text and as a kind of the TLS failure vocabulary (tls/failures.ts).
// Reading a file that is missing or holds no usable certificate is an AdminError naming it.
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { rootCertificates } from 'node:tls';
import { AdminError } from '../errors.ts';
import type { ChainFailureKind } from './failures.ts';
import { dnLine } from './names.ts';
import { errorMessage } from '../util/errors.ts';

export function splitPem(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/**
 * The certificates of a PEM file, in order; an AdminError naming the file (as `label`, e.g.
 * "CA file", when given) and the `fix` when it cannot be read, holds none or one does not parse.
 */
export function readPemFile(file: string, fix: string, label?: string): X509Certificate[] {
  const name = label ? `${label} ${file}` : file;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new AdminError(`cannot read ${name}: ${errorMessage(e)}`, fix);
  }
  const found = splitPem(text);
  if (!found.length) throw new AdminError(`${name} contains no PEM certificate`, fix);
  return found.map((p, i) => {
    try {
      return new X509Certificate(p);
    } catch (e) {
      throw new AdminError(`certificate ${i + 1} in ${name} cannot be parsed: ${errorMessage(e)}`, fix);
    }
  });
}

/** The certificates of a CA file; an AdminError naming the file and the key to fix when it is unusable. */
export const readCaFile = (f: string, key = 'tls.trust.caFiles'): X509Certificate[] =>
  readPemFile(f, `fix ${key}`, 'CA file');

/** Did `issuer` issue `c` (names, key identifiers and signature)? */
export function issuedBy(c: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return c.issuer === issuer.subject && c.checkIssued(issuer) && c.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/** The public roots shipped with Node.js (tls.trust.system). */
export const systemRoots = (): X509Certificate[] => rootCertificates.map((p) => new X509Certificate(p));

export class TrustStore {
  readonly roots: X509Certificate[];
  constructor(system: boolean, caFiles: readonly string[]) {
    this.roots = [...(system ? systemRoots() : []), ...caFiles.flatMap((f) => readCaFile(f))];
  }

  /** A trusted certificate that issued `c` (by name and signature), if any. */
  issuerOf(c: X509Certificate): X509Certificate | undefined {
    return this.roots.find((r) => issuedBy(c, r));
  }

  isTrusted(c: X509Certificate): boolean {
    return this.roots.some((r) => r.fingerprint256 === c.fingerprint256);
  }
}

export interface ChainResult {
  ok: boolean;
  error?: string;
  /** What is wrong, when not ok. */
  failure?: ChainFailureKind;
  /** Leaf first, ending with the trusted root when found. */
  chain: X509Certificate[];
  root?: X509Certificate;
}

/** Why `c` is not valid at `at` (not yet, or no longer), or undefined when it is. */
export function validityProblem(
  c: X509Certificate,
  at: number,
): { error: string; failure: ChainFailureKind } | undefined {
  if (Date.parse(c.validFrom) > at)
    return {
      error: `certificate ${dnLine(c.subject)} is not yet valid (from ${c.validFrom})`,
      failure: 'certificate-not-yet-valid',
    };
  if (Date.parse(c.validTo) < at)
    return { error: `certificate ${dnLine(c.subject)} expired on ${c.validTo}`, failure: 'certificate-expired' };
  return undefined;
}

/** Build and check leaf → intermediates → trusted root. */
export function verifyChain(
  leaf: X509Certificate,
  intermediates: readonly X509Certificate[],
  trust: TrustStore,
  at = Date.now(),
): ChainResult {
  const chain = [leaf];
  let cur = leaf;
  for (let depth = 0; depth < 10; depth++) {
    const err = validityProblem(cur, at);
    if (err) return { ok: false, ...err, chain };
    if (trust.isTrusted(cur)) return { ok: true, chain, root: cur };
    const root = trust.issuerOf(cur);
    if (root) {
      const rerr = validityProblem(root, at);
      chain.push(root);
      return rerr ? { ok: false, ...rerr, chain } : { ok: true, chain, root };
    }
    const next = intermediates.find((i) => i.ca && issuedBy(cur, i));
    if (!next) {
      const self = cur.subject === cur.issuer && cur.verify(cur.publicKey);
      return {
        ok: false,
        chain,
        failure: 'certificate-not-trusted',
        error: self
          ? 'self-signed certificate not in the trust store'
          : `unable to find issuer "${dnLine(cur.issuer)}" in the trust store`,
      };
    }
    chain.push(next);
    cur = next;
  }
  return { ok: false, chain, failure: 'certificate-not-trusted', error: 'certificate chain too long' };
}

/**
 * The certificates a TLS peer presented, leaf first. getPeerCertificate(true) must be called
 * before getPeerX509Certificate(): on Node 20 the other order returns an empty detailed object,
 * which silently drops every intermediate.
 */
export function peerChain(s: import('node:tls').TLSSocket): X509Certificate[] {
  // Node's types call every field present; without a certificate the object is empty, and the
  // issuer of the last certificate Node has is missing.
  type Detailed = import('node:tls').DetailedPeerCertificate;
  const issuerOf = (c: Detailed): Detailed | undefined => c.issuerCertificate as Detailed | undefined;
  let p = s.getPeerCertificate(true);
  if (!(p as Partial<Detailed>).raw) return [];
  const chain = [new X509Certificate(p.raw)];
  const seen = new Set([p.fingerprint256]);
  for (let next = issuerOf(p); next && !seen.has(next.fingerprint256); next = issuerOf(p)) {
    p = next;
    seen.add(p.fingerprint256);
    chain.push(new X509Certificate(p.raw));
  }
  return chain;
}
