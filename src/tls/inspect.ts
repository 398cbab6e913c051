// Owns: describing a certificate the way a partner needs it to configure forced TLS with us, and
// the one set of certificate-quality checks (key strength, signature hash, control characters in
// names, validity) used by `cert info`, `config check` and `tls check --cert`.
// Failure: throws AdminError only for a file that cannot be read or holds no usable certificate.
import type { X509Certificate } from 'node:crypto';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate as AsnCertificate } from '@peculiar/asn1-x509';
import { x509 } from './x509.ts';
import { endpointUrls } from './revocation.ts';
import { certificateNames, dnLine } from './names.ts';
import { issuedBy, readPemFile, verifyChain, type TrustStore } from './trust.ts';

/** A problem found in a certificate: 'fail' makes peers refuse it, 'warn' deserves attention. */
export interface Finding {
  level: 'fail' | 'warn';
  text: string;
  /** Which certificate of the chain, when not the leaf ("intermediate CN=…", "root CN=…"). */
  certificate?: string;
}

/** What is shown of every certificate: names, key, signature, dates and endpoints. */
export interface CertificateFacts {
  subject: string;
  issuer: string;
  serialNumber: string;
  fingerprintSha256: string;
  keyType: string;
  keyStrength: string;
  signatureAlgorithm: string;
  validFrom: string;
  validTo: string;
  crlUrls: string[];
  ocspUrls: string[];
  caIssuerUrls: string[];
}

export interface ChainCertificate extends CertificateFacts {
  role: 'leaf' | 'intermediate' | 'root';
}

export interface CertificateInfo extends CertificateFacts {
  file: string;
  commonName?: string;
  organization?: string;
  organizationalUnit?: string;
  /** Every subjectAltName entry (DNS names as they are, IP addresses as "IP:…"). */
  sanNames: string[];
  /** The DNS names it identifies to a peer checking names (tls/names.ts: SAN DNS names, else the CN). */
  names: string[];
  root?: string;
  chainValid: boolean;
  chainError?: string;
  chain: string[];
  daysLeft: number;
  /** Every certificate of the chain as built (leaf, intermediates, the trusted root when found). */
  certificates: ChainCertificate[];
  findings: Finding[];
  /** The findings as text (what `cert info` prints). */
  warnings: string[];
}

const field = (dn: string, key: string): string | undefined =>
  dn
    .split('\n')
    .filter((l) => l.startsWith(`${key}=`))
    .map((l) => l.slice(key.length + 1))
    .join(', ') || undefined;

/** Control characters shown as \xNN, so that a name cannot act on the terminal that displays it. */
export function visible(s: string): string {
  return s.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function keyDescription(c: X509Certificate): { type: string; strength: string; bits?: number; curve?: string } {
  const k = c.publicKey;
  const d = k.asymmetricKeyDetails ?? {};
  switch (k.asymmetricKeyType) {
    case 'rsa':
    case 'rsa-pss':
      return {
        type: k.asymmetricKeyType.toUpperCase(),
        strength: `${d.modulusLength} bits`,
        ...(d.modulusLength ? { bits: d.modulusLength } : {}),
      };
    case 'ec': {
      const bits: Record<string, number> = { prime256v1: 256, secp384r1: 384, secp521r1: 521 };
      return {
        type: 'EC',
        strength: `${d.namedCurve} (${bits[d.namedCurve ?? ''] ?? '?'} bits)`,
        curve: d.namedCurve ?? '?',
      };
    }
    default:
      return {
        type: String(k.asymmetricKeyType),
        strength: k.asymmetricKeyType === 'ed25519' ? '256 bits' : 'unknown',
      };
  }
}

const WEAK_HASH: Record<string, string> = {
  '1.2.840.113549.1.1.5': 'SHA-1',
  '1.2.840.10045.4.1': 'SHA-1',
  '1.2.840.10040.4.3': 'SHA-1',
  '1.3.14.3.2.29': 'SHA-1',
  '1.2.840.113549.1.1.4': 'MD5',
  '1.2.840.113549.1.1.2': 'MD2',
};
const signatureOid = (c: X509Certificate) => AsnConvert.parse(c.raw, AsnCertificate).signatureAlgorithm.algorithm;

function signatureName(c: X509Certificate): string {
  try {
    const a = new x509.X509Certificate(c.raw).signatureAlgorithm as { name: string; hash?: { name: string } | string };
    const hash = typeof a.hash === 'string' ? a.hash : a.hash?.name;
    const base = a.name === 'RSASSA-PKCS1-v1_5' ? 'RSA' : a.name;
    return hash ? `${base} with ${hash}` : base;
  } catch {
    const oid = signatureOid(c);
    return WEAK_HASH[oid] ? `${WEAK_HASH[oid]} (${oid})` : `unknown (${oid})`;
  }
}

/** Every subject attribute value and subjectAltName, as encoded (before any escaping). */
function rawNames(c: X509Certificate): string[] {
  const p = new x509.X509Certificate(c.raw);
  const subject = p.subjectName.toJSON().flatMap((rdn) => Object.values(rdn).flat());
  const san =
    p
      .getExtension(x509.SubjectAlternativeNameExtension)
      ?.names.toJSON()
      .map((n) => String(n.value)) ?? [];
  return [...subject, ...san];
}

/**
 * The one set of certificate-quality checks: key type and strength, signature hash (not for
 * self-signed certificates: nobody verifies those signatures), names with control characters,
 * and validity at `now` and within 30 days.
 */
export function certificateFindings(c: X509Certificate, now = Date.now()): Finding[] {
  const out: Finding[] = [];
  const key = keyDescription(c);
  if (key.bits !== undefined && key.bits < 2048)
    out.push({
      level: 'fail',
      text:
        `${key.type} key of ${key.bits} bits is too weak: TLS clients refuse keys below 2048 bits; issue a ` +
        `new certificate with a 2048-bit (or larger) RSA key or an EC P-256 key`,
    });
  if (key.curve && !['prime256v1', 'secp384r1', 'secp521r1'].includes(key.curve))
    out.push({ level: 'warn', text: `EC curve ${key.curve} is not supported by most TLS clients; use P-256 or P-384` });
  if (c.publicKey.asymmetricKeyType === 'dsa')
    out.push({
      level: 'fail',
      text: 'DSA key: TLS clients no longer accept DSA certificates; issue a new certificate with an RSA or EC key',
    });
  const weak = WEAK_HASH[signatureOid(c)];
  if (weak && !issuedBy(c, c)) {
    out.push(
      weak === 'SHA-1'
        ? {
            level: 'warn',
            text:
              'signed with SHA-1: SHA-1 signatures can be forged and many TLS clients refuse them; ask the ' +
              'issuer for a SHA-256 signed certificate',
          }
        : {
            level: 'fail',
            text:
              `signed with ${weak}: such signatures are forgeable and refused by TLS clients; ask the issuer ` +
              `for a SHA-256 signed certificate`,
          },
    );
  }
  const odd = rawNames(c).filter((n) => /[\x00-\x1f\x7f-\x9f]/.test(n));
  if (odd.length)
    out.push({
      level: 'warn',
      text:
        `name(s) with control characters (shown escaped): ${odd.map((n) => `"${visible(n)}"`).join(', ')}; a ` +
        `legitimate CA does not issue such names: ask the issuer to correct them`,
    });
  const left = daysLeft(c, now);
  const validTo = new Date(c.validTo).toISOString();
  if (Date.parse(c.validFrom) > now)
    out.push({
      level: 'fail',
      text: `not valid yet (from ${new Date(c.validFrom).toISOString()}): peers refuse it until then`,
    });
  if (left < 0)
    out.push({
      level: 'fail',
      text: `EXPIRED on ${validTo}: renew it now; partners with certificateValidation refuse it`,
    });
  else if (left <= 30)
    out.push({ level: 'warn', text: `expires in ${left} days (${validTo}): renew and rotate it before then` });
  return out;
}

const daysLeft = (c: X509Certificate, now: number) => Math.floor((Date.parse(c.validTo) - now) / 86_400_000);

function describe(c: X509Certificate): CertificateFacts {
  const key = keyDescription(c);
  const urls = endpointUrls(c);
  return {
    subject: dnLine(c.subject),
    issuer: dnLine(c.issuer),
    serialNumber: c.serialNumber,
    fingerprintSha256: c.fingerprint256,
    keyType: key.type,
    keyStrength: key.strength,
    signatureAlgorithm: signatureName(c),
    validFrom: new Date(c.validFrom).toISOString(),
    validTo: new Date(c.validTo).toISOString(),
    crlUrls: urls.crl,
    ocspUrls: urls.ocsp,
    caIssuerUrls: urls.caIssuers,
  };
}

/** Certificates of PEM files (the first file's first certificate is the leaf). */
export function readCertificates(files: string[]): X509Certificate[] {
  return files.flatMap((f) => readPemFile(f, 'give a PEM file with the certificate first, then its intermediates'));
}

/** Quality findings of every certificate in a PEM file (config check), as text. */
export function certificateFileWarnings(file: string, now = Date.now()): string[] {
  return readCertificates([file]).flatMap((c, i) =>
    certificateFindings(c, now).map((f) => `${i ? `${dnLine(c.subject)}: ` : ''}${f.text}`),
  );
}

/**
 * Describe the certificate in `file` (leaf first, then its intermediates), with more
 * intermediates from `chainFile`, checked against `trust` at `now`.
 */
export function inspectCertificateFile(
  file: string,
  trust: TrustStore,
  opts: { now?: number; chainFile?: string } = {},
): CertificateInfo {
  const now = opts.now ?? Date.now();
  const certs = readCertificates([file, ...(opts.chainFile ? [opts.chainFile] : [])]);
  const leaf = certs[0];
  const chain = verifyChain(leaf, certs.slice(1), trust, now);
  const roles = chain.chain.map((c, i): ChainCertificate['role'] =>
    i === 0 ? 'leaf' : chain.root && c === chain.root ? 'root' : 'intermediate',
  );
  const findings: Finding[] = chain.chain.flatMap((c, i) =>
    certificateFindings(c, now).map((f) => (i ? { ...f, certificate: `${roles[i]} ${dnLine(c.subject)}` } : f)),
  );
  if (!chain.ok)
    findings.push({
      level: 'fail',
      text: `chain does not validate: ${chain.error}; partners using certificateValidation will refuse it`,
    });
  if (leaf.subject === leaf.issuer)
    findings.push({ level: 'warn', text: 'self-signed: partners can only use encryptionOnly with it, or must pin it' });
  for (const extra of certs
    .slice(1)
    .filter(
      (c) =>
        !chain.chain.some((x) => x.fingerprint256 === c.fingerprint256) && !chain.chain.some((x) => issuedBy(x, c)),
    )) {
    findings.push({
      level: 'warn',
      text: `${dnLine(extra.subject)} is in the file but not part of this certificate's chain: remove it`,
    });
  }
  return {
    file,
    ...describe(leaf),
    ...(field(leaf.subject, 'CN') ? { commonName: field(leaf.subject, 'CN') } : {}),
    ...(field(leaf.subject, 'O') ? { organization: field(leaf.subject, 'O') } : {}),
    ...(field(leaf.subject, 'OU') ? { organizationalUnit: field(leaf.subject, 'OU') } : {}),
    sanNames: (leaf.subjectAltName ?? '')
      .split(', ')
      .filter(Boolean)
      .map((s) => s.replace(/^DNS:/, '').replace(/^IP Address:/, 'IP:')),
    names: certificateNames(leaf),
    ...(chain.root ? { root: dnLine(chain.root.subject) } : {}),
    chainValid: chain.ok,
    ...(chain.error ? { chainError: chain.error } : {}),
    chain: chain.chain.map((c) => dnLine(c.subject)),
    daysLeft: daysLeft(leaf, now),
    certificates: chain.chain.map((c, i) => ({ role: roles[i], ...describe(c) })),
    findings,
    warnings: findings.map((f) => `${f.certificate ? `${f.certificate}: ` : ''}${f.text}`),
  };
}
