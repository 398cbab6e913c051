// Owns: the certificates administrators look after, as the CLI (`cert info`, `tls trust list`,
// `tls check --cert`) and the admin API see them: the gateway's own (tls.certificates, or the
// development certificate), and each organisation's trust material (the trustedCAs of its inbound
// connectors); their facts, expiry countdown and rotation readiness. Each is known by the SHA-256
// fingerprint of its certificate.
// Promise: reading a file that cannot be read is an AdminError naming it; a readiness check never
// throws for an unreachable endpoint (the check says so).
import type { X509Certificate } from 'node:crypto';
import { existsSync } from 'node:fs';
import type { Config } from '../../config/load.ts';
import { AdminError } from '../../errors.ts';
import { checkCertificate, type CertCheck } from '../../tls/cert-check.ts';
import { devCertificatePaths } from '../../tls/devcert.ts';
import { certificateFindings, inspectCertificateFile, type CertificateInfo } from '../../tls/inspect.ts';
import type { RevocationChecker } from '../../tls/revocation.ts';
import { dnLine } from '../../tls/names.ts';
import { readCaFile, type TrustStore } from '../../tls/trust.ts';

const DAY = 86_400_000;

/** The gateway's certificate files: tls.certificates, else the development certificate (when it exists). */
export function gatewayCertificateFiles(c: Config): { file: string; source: string; next?: string }[] {
  if (c.tls.certificates.length)
    return c.tls.certificates.map((p, i) => ({
      file: p.cert,
      source: `tls.certificates[${i}]`,
      ...(p.next ? { next: p.next.cert } : {}),
    }));
  const dev = devCertificatePaths(c.dataDir);
  return existsSync(dev.cert)
    ? [{ file: dev.cert, source: 'development certificate (tls.certificates is empty)' }]
    : [];
}

/** A CA certificate as `tls trust list` shows it. */
export function describeCa(c: X509Certificate, now: number) {
  return {
    subject: dnLine(c.subject),
    fingerprintSha256: c.fingerprint256,
    validFrom: new Date(c.validFrom).toISOString(),
    validTo: new Date(c.validTo).toISOString(),
    warnings: certificateFindings(c, now).map((f) => f.text),
  };
}

export interface CertificateEntry {
  /** SHA-256 fingerprint, lowercase hex without colons. */
  id: string;
  /** The gateway's own certificate (every organisation's partners meet it), or one organisation's trust material. */
  scope: 'gateway' | 'organization';
  org?: string;
  role: 'server' | 'trustedCA';
  /** Where it is configured. */
  source: string;
  file: string;
  /** A gateway certificate's staged successor (tls.certificates[].next.cert), not served yet. */
  next?: string;
  subject: string;
  issuer: string;
  sanNames: string[];
  validFrom: string;
  validTo: string;
  daysLeft: number;
  fingerprintSha256: string;
  warnings: string[];
}

export const certificateId = (fingerprint256: string): string => fingerprint256.replace(/:/g, '').toLowerCase();

/** Every certificate the configuration names: the gateway's, then each organisation's trustedCAs. */
export function certificateInventory(c: Config, trust: TrustStore, now = Date.now()): CertificateEntry[] {
  const out: CertificateEntry[] = gatewayCertificateFiles(c).map(({ file, source, next }) => {
    const i = inspectCertificateFile(file, trust, { now });
    return {
      id: certificateId(i.fingerprintSha256),
      scope: 'gateway',
      role: 'server',
      source,
      file,
      subject: i.subject,
      issuer: i.issuer,
      sanNames: i.sanNames,
      validFrom: i.validFrom,
      validTo: i.validTo,
      daysLeft: i.daysLeft,
      fingerprintSha256: i.fingerprintSha256,
      warnings: i.warnings,
      ...(next ? { next } : {}),
    };
  });
  for (const o of c.organizations) {
    for (const x of o.inboundConnectors) {
      for (const file of x.trustedCAs) {
        for (const ca of readCaFile(file, `the trustedCAs of connector "${x.name}"`)) {
          const d = describeCa(ca, now);
          out.push({
            id: certificateId(ca.fingerprint256),
            scope: 'organization',
            org: o.name,
            role: 'trustedCA',
            source: `inbound connector "${x.name}" trustedCAs`,
            file,
            subject: d.subject,
            issuer: dnLine(ca.issuer),
            sanNames: [],
            validFrom: d.validFrom,
            validTo: d.validTo,
            daysLeft: Math.floor((Date.parse(d.validTo) - now) / DAY),
            fingerprintSha256: ca.fingerprint256,
            warnings: d.warnings,
          });
        }
      }
    }
  }
  return out;
}

/** Full facts of one certificate: `cert info` for the gateway's, the CA's own facts for trust material. */
export function certificateFacts(
  e: CertificateEntry,
  trust: TrustStore,
  now = Date.now(),
): CertificateInfo | ReturnType<typeof describeCa> {
  if (e.role === 'server') return inspectCertificateFile(e.file, trust, { now });
  const ca = readCaFile(e.file).find((x) => certificateId(x.fingerprint256) === e.id);
  if (!ca) throw new AdminError(`certificate ${e.id} is no longer in ${e.file}`, 'reload the list');
  return describeCa(ca, now);
}

export interface RotationReadiness {
  /** `tls check --cert` of the certificate being served. */
  current: CertCheck;
  /** The next certificate staged for rotation (tls.certificates[].next), checked the same way, or none. */
  next: { staged: false; note: string } | { staged: true; file: string; check: CertCheck };
}

/** Can partners keep validating us after a rotation? The served certificate's check, and the staged next one. */
export async function rotationReadiness(
  e: CertificateEntry,
  tools: { trust: TrustStore; revocation: RevocationChecker },
): Promise<RotationReadiness> {
  if (e.role !== 'server')
    throw new AdminError(
      "rotation readiness applies to the gateway's own certificates",
      'check a trusted CA file with `portcullis tls trust list`',
    );
  const current = await checkCertificate({ file: e.file, trust: tools.trust, revocation: tools.revocation });
  if (!e.next)
    return {
      current,
      next: {
        staged: false,
        note: 'none staged: tls.certificates[].next names the next certificate before a rotation',
      },
    };
  return {
    current,
    next: {
      staged: true,
      file: e.next,
      check: await checkCertificate({ file: e.next, trust: tools.trust, revocation: tools.revocation }),
    },
  };
}
