// Owns: the TLS facts of an established session, as logged, traced and written in Received:.
import type { TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type { TlsFacts } from '../events.ts';
import { cipherBits } from './policy-constants.ts';
import { verifyChain, type TrustStore } from './trust.ts';

const oneLine = (dn: string) => dn.split('\n').join(', ');

export function sessionFacts(s: TLSSocket, trust: TrustStore, sni?: string): TlsFacts {
  const c = s.getCipher();
  const name = c.standardName || c.name;
  const facts: TlsFacts = { version: s.getProtocol() ?? 'unknown', cipher: name, bits: cipherBits(name), resumed: s.isSessionReused() };
  if (sni) facts.sni = sni;
  const leaf = s.getPeerX509Certificate();
  if (leaf) {
    const intermediates: X509Certificate[] = [];
    let p = s.getPeerCertificate(true);
    const seen = new Set<string>([p.fingerprint256]);
    while (p?.issuerCertificate && !seen.has(p.issuerCertificate.fingerprint256)) {
      p = p.issuerCertificate;
      seen.add(p.fingerprint256);
      intermediates.push(new X509Certificate(p.raw));
    }
    const v = verifyChain(leaf, intermediates, trust);
    facts.peerCert = {
      subject: oneLine(leaf.subject), issuer: oneLine(leaf.issuer), fingerprint256: leaf.fingerprint256,
      verified: v.ok, ...(v.error ? { verifyError: v.error } : {}),
    };
  }
  return facts;
}
