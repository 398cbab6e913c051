// Owns: the names of a certificate: the DNS names it identifies per RFC 6125 (SAN DNS names
// first, the subject CN only when there are no SAN DNS names), matching them against reference
// names (one wildcard, as the whole left-most label only), and a distinguished name (subject,
// issuer) as one line. Inbound client certificates and outbound servers are judged alike.
import type { X509Certificate } from 'node:crypto';

/** The DNS names in a certificate's subjectAltName (lower case), without the CN fallback. */
export function sanDnsNames(c: X509Certificate): string[] {
  return (c.subjectAltName ?? '')
    .split(', ')
    .filter((n) => n.startsWith('DNS:'))
    .map((n) => n.slice(4).toLowerCase());
}

/** DNS names a certificate identifies (SAN DNS, or CN when no SAN DNS names exist; RFC 6125 §6.4.4). */
export function certificateNames(c: X509Certificate): string[] {
  const san = sanDnsNames(c);
  if (san.length) return san;
  const cn = c.subject
    .split('\n')
    .find((l) => l.startsWith('CN='))
    ?.slice(3);
  return cn ? [cn.toLowerCase()] : [];
}

/** A distinguished name as Node prints it (one attribute a line) on one line: "CN=x, O=y". */
export const dnLine = (dn: string): string => dn.split('\n').join(', ');

/** Does the presented name `presented` (may be "*.x") cover the reference identity `reference`? */
export function nameMatches(presented: string, reference: string): boolean {
  const p = presented.toLowerCase().replace(/\.$/, '');
  const r = reference.toLowerCase().replace(/\.$/, '');
  if (p === r) return true;
  if (!p.startsWith('*.') || p.indexOf('*', 1) >= 0) return false;
  const base = p.slice(2);
  if (!base.includes('.')) return false; // "*.com" style wildcards are never honoured
  const dot = r.indexOf('.');
  return dot > 0 && r.slice(dot + 1) === base;
}

/**
 * Does a certificate with `names` satisfy a required pattern such as a connector's tlsDomain or
 * tlsSenderCertificateName? "*.fabrikam.test" accepts any single-label host of fabrikam.test
 * (mx1.fabrikam.test) and the wildcard certificate itself; "mx1.fabrikam.test" accepts that name
 * or a wildcard certificate covering it.
 */
export function namesSatisfy(names: readonly string[], required: string): boolean {
  const req = required.toLowerCase();
  if (req.startsWith('*.')) {
    const base = req.slice(2);
    return names.some((n) => n === req || (!n.startsWith('*') && nameMatches(`*.${base}`, n)));
  }
  return names.some((n) => nameMatches(n, req));
}
