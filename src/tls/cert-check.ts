// Owns: checking a certificate before it is served or trusted (`portcullis tls check --cert`):
// what inspect.ts finds (chain to our trust store, validity, key, signature, names), a required
// name, and every CRL, OCSP and CA-issuer endpoint of the chain tried from this node (the
// firewall question), with the revocation status.
// Promise: never throws for a bad certificate or endpoint (only for an unreadable file); `passes`
// is false when a peer validating the certificate, or this node checking its revocation, would fail.
import { inspectCertificateFile, readCertificates, type CertificateInfo, type Finding } from './inspect.ts';
import { namesSatisfy, sanDnsNames } from './names.ts';
import { fetchable, type RevocationChecker, type RevocationResult } from './revocation.ts';
import type { TrustStore } from './trust.ts';

export interface CertCheck {
  info: CertificateInfo;
  nameMatch?: { required: string; ok: boolean };
  revocation: RevocationResult;
  /** Everything found, the certificate findings of inspect.ts first. */
  problems: Finding[];
  passes: boolean;
}

export interface CertCheckOptions {
  file: string;
  chainFile?: string;
  /** A host name the certificate must cover. */
  name?: string;
  trust: TrustStore;
  revocation: RevocationChecker;
  now?: number;
}

const KIND = { ocsp: 'OCSP', crl: 'CRL', caIssuers: 'CA-issuer' } as const;

function endpointProblems(rev: RevocationResult): Finding[] {
  const out: Finding[] = [];
  for (const c of rev.certificates) {
    for (const e of c.endpoints) {
      const what = `${KIND[e.kind]} endpoint ${e.url} of ${c.subject}`;
      if (!fetchable(e.url))
        out.push({
          level: 'warn',
          text: `${what} is not an http(s) URL: neither this node nor most peers can fetch it`,
        });
      else if (!e.reachable)
        out.push({
          level: 'fail',
          text:
            `${what} is not reachable from this node: ${e.error}; check the firewall, proxy and DNS ` +
            `(dns.servers) between this node and it`,
        });
      else if (!e.ok && c.issuer) out.push({ level: 'fail', text: `${what} answered, but unusably: ${e.error}` });
      else if (e.ok && e.status === 'unknown')
        out.push({
          level: 'warn',
          text: `${what} answered "unknown": the responder does not know this certificate (yet)`,
        });
      else if (e.ok && e.kind === 'caIssuers' && !e.servedIsIssuer)
        out.push({ level: 'warn', text: `${what} serves ${e.served}, which did not issue it` });
    }
    if (!c.endpoints.some((e) => e.kind !== 'caIssuers'))
      out.push({
        level: 'warn',
        text:
          `${c.subject} names no CRL or OCSP endpoint: its revocation cannot be checked, and peers with ` +
          `hardFail refuse it`,
      });
    if (c.status === 'revoked')
      out.push({ level: 'fail', text: `${c.subject} is REVOKED${c.revokedAt ? ` since ${c.revokedAt}` : ''}` });
  }
  return out;
}

export async function checkCertificate(o: CertCheckOptions): Promise<CertCheck> {
  const now = o.now ?? Date.now();
  const info = inspectCertificateFile(o.file, o.trust, { now, ...(o.chainFile ? { chainFile: o.chainFile } : {}) });
  const presented = readCertificates([o.file, ...(o.chainFile ? [o.chainFile] : [])]);
  const leaf = presented[0];
  const problems: Finding[] = [...info.findings];
  const names = info.names;
  if (!sanDnsNames(leaf).length)
    problems.push({
      level: 'warn',
      text:
        `no DNS names in subjectAltName: only the subject CN${names.length ? ` (${names.join(', ')})` : ''} ` +
        `names it, which many TLS clients ignore`,
    });
  let nameMatch: CertCheck['nameMatch'];
  if (o.name) {
    nameMatch = { required: o.name, ok: namesSatisfy(names, o.name) };
    if (!nameMatch.ok)
      problems.push({
        level: 'fail',
        text: `does not cover the name ${o.name} (it names ${names.join(', ') || 'nothing'})`,
      });
  }
  const revocation = await o.revocation.survey(presented, o.trust);
  problems.push(...endpointProblems(revocation));
  return {
    info,
    ...(nameMatch ? { nameMatch } : {}),
    revocation,
    problems,
    passes: !problems.some((p) => p.level === 'fail'),
  };
}
