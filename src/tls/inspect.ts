// Owns: describing a certificate the way a partner needs it to configure forced TLS with us.
import { readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { x509 } from './x509.ts';
import { splitPem, verifyChain, type TrustStore } from './trust.ts';

export interface CertificateInfo {
  file: string;
  subject: string;
  commonName?: string;
  organization?: string;
  organizationalUnit?: string;
  sanNames: string[];
  issuer: string;
  root?: string;
  chainValid: boolean;
  chainError?: string;
  chain: string[];
  keyType: string;
  keyStrength: string;
  signatureAlgorithm: string;
  validFrom: string;
  validTo: string;
  daysLeft: number;
  fingerprintSha256: string;
  serialNumber: string;
  crlUrls: string[];
  ocspUrls: string[];
  warnings: string[];
}

const field = (dn: string, key: string): string | undefined =>
  dn.split('\n').filter((l) => l.startsWith(`${key}=`)).map((l) => l.slice(key.length + 1)).join(', ') || undefined;
const oneLine = (dn: string) => dn.split('\n').join(', ');

function keyDescription(c: X509Certificate): { type: string; strength: string } {
  const k = c.publicKey;
  const d = k.asymmetricKeyDetails ?? {};
  switch (k.asymmetricKeyType) {
    case 'rsa': case 'rsa-pss': return { type: k.asymmetricKeyType.toUpperCase(), strength: `${d.modulusLength} bits` };
    case 'ec': {
      const bits: Record<string, number> = { prime256v1: 256, secp384r1: 384, secp521r1: 521 };
      return { type: 'EC', strength: `${d.namedCurve} (${bits[d.namedCurve ?? ''] ?? '?'} bits)` };
    }
    default: return { type: String(k.asymmetricKeyType), strength: k.asymmetricKeyType === 'ed25519' ? '256 bits' : 'unknown' };
  }
}

function signatureName(a: { name: string; hash?: { name: string } | string }): string {
  const hash = typeof a.hash === 'string' ? a.hash : a.hash?.name;
  const base = a.name === 'RSASSA-PKCS1-v1_5' ? 'RSA' : a.name;
  return hash ? `${base} with ${hash}` : base;
}

export function inspectCertificateFile(file: string, trust: TrustStore, now = Date.now()): CertificateInfo {
  const pems = splitPem(readFileSync(file, 'utf8'));
  if (!pems.length) throw new Error(`${file} contains no PEM certificate`);
  const certs = pems.map((p) => new X509Certificate(p));
  const leaf = certs[0];
  const parsed = new x509.X509Certificate(pems[0]);
  const crl = parsed.getExtension(x509.CRLDistributionPointsExtension);
  const crlUrls = (crl?.distributionPoints ?? []).flatMap((dp) => dp.distributionPoint?.fullName ?? [])
    .map((n) => n.uniformResourceIdentifier).filter((u): u is string => !!u);
  const aia = parsed.getExtension(x509.AuthorityInfoAccessExtension);
  const ocspUrls = (aia?.ocsp ?? []).map((g) => String(g.value));
  const chain = verifyChain(leaf, certs.slice(1), trust, now);
  const key = keyDescription(leaf);
  const daysLeft = Math.floor((Date.parse(leaf.validTo) - now) / 86_400_000);
  const warnings: string[] = [];
  if (daysLeft < 0) warnings.push(`EXPIRED on ${leaf.validTo}: renew it now; partners with certificateValidation refuse it`);
  else if (daysLeft <= 30) warnings.push(`expires in ${daysLeft} days (${leaf.validTo}): renew and rotate it before then`);
  if (!chain.ok) warnings.push(`chain does not validate: ${chain.error}; partners using certificateValidation will refuse it`);
  if (leaf.subject === leaf.issuer) warnings.push('self-signed: partners can only use encryptionOnly with it, or must pin it');
  const sanNames = (leaf.subjectAltName ?? '').split(', ').filter(Boolean).map((s) => s.replace(/^DNS:/, '').replace(/^IP Address:/, 'IP:'));
  return {
    file,
    subject: oneLine(leaf.subject),
    ...(field(leaf.subject, 'CN') ? { commonName: field(leaf.subject, 'CN') } : {}),
    ...(field(leaf.subject, 'O') ? { organization: field(leaf.subject, 'O') } : {}),
    ...(field(leaf.subject, 'OU') ? { organizationalUnit: field(leaf.subject, 'OU') } : {}),
    sanNames,
    issuer: oneLine(leaf.issuer),
    ...(chain.root ? { root: oneLine(chain.root.subject) } : {}),
    chainValid: chain.ok,
    ...(chain.error ? { chainError: chain.error } : {}),
    chain: chain.chain.map((c) => oneLine(c.subject)),
    keyType: key.type,
    keyStrength: key.strength,
    signatureAlgorithm: signatureName(parsed.signatureAlgorithm as { name: string; hash?: { name: string } }),
    validFrom: new Date(leaf.validFrom).toISOString(),
    validTo: new Date(leaf.validTo).toISOString(),
    daysLeft,
    fingerprintSha256: leaf.fingerprint256,
    serialNumber: leaf.serialNumber,
    crlUrls,
    ocspUrls,
    warnings,
  };
}
