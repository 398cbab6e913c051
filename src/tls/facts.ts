// Owns: the TLS facts of an established session, as logged, traced and written in Received:.
import type { TLSSocket } from 'node:tls';
import type { TlsFacts } from '../events.ts';
import { cipherBits } from './policy-constants.ts';
import type { X509Certificate } from 'node:crypto';
import { verifyChain, type TrustStore } from './trust.ts';

const oneLine = (dn: string) => dn.split('\n').join(', ');

export function sessionFacts(s: TLSSocket, chain: readonly X509Certificate[], trust: TrustStore, sni?: string): TlsFacts {
  const c = s.getCipher();
  const name = c.standardName || c.name;
  const facts: TlsFacts = { version: s.getProtocol() ?? 'unknown', cipher: name, bits: cipherBits(name), resumed: s.isSessionReused() };
  if (sni) facts.sni = sni;
  const [leaf, ...intermediates] = chain;
  if (leaf) {
    const v = verifyChain(leaf, intermediates, trust);
    facts.peerCert = {
      subject: oneLine(leaf.subject), issuer: oneLine(leaf.issuer), fingerprint256: leaf.fingerprint256,
      verified: v.ok, ...(v.error ? { verifyError: v.error } : {}),
    };
  }
  return facts;
}
