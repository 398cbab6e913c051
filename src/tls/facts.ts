// Owns: the TLS facts of an established session, as logged, traced and written in Received:, and
// the one wording of what a client certificate proved (used by Received:, trace and queue show).
import type { TLSSocket } from 'node:tls';
import type { PeerCertFacts, TlsFacts } from '../events.ts';
import { cipherBits } from './policy-constants.ts';

/** Version and cipher of a session; the client certificate is added once judged (tls/client-cert.ts). */
export function sessionFacts(s: TLSSocket, sni?: string): TlsFacts {
  const c = s.getCipher();
  const name = c.standardName || c.name;
  const facts: TlsFacts = {
    version: s.getProtocol() ?? 'unknown',
    cipher: name,
    bits: cipherBits(name),
    resumed: s.isSessionReused(),
  };
  if (sni) facts.sni = sni;
  return facts;
}

/**
 * What a client certificate proved, in a few words: never "verified OK" for a certificate that
 * is revoked or not valid for client authentication.
 */
export function peerCertVerdict(p: PeerCertFacts): string {
  if (p.revocation?.status === 'revoked') return 'REVOKED';
  if (!p.verified) return `not verified: ${p.verifyError ?? 'unknown reason'}`;
  if (p.ekuError) return `not valid for client authentication: ${p.ekuError}`;
  if (p.revocation?.status === 'unknown') return 'verified OK, revocation status unknown';
  return 'verified OK';
}
