// Owns: the cipher policy. TLS 1.2 suites are all ECDHE (forward secrecy) with AEAD ciphers;
// no static-RSA key exchange, no CBC, no SHA-1 MACs. TLS 1.3 suites are all forward secret.
// The one exception is the legacy client profile: opportunistic delivery only, as the last try
// before plaintext to a server that refused all of the above (never inbound, never forced levels).
export const TLS13_SUITES = 'TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256';
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
].join(':');
export const CIPHERS = `${TLS13_SUITES}:${TLS12_CIPHERS}`;
export const ECDH_CURVES = 'X25519:P-256:P-384';

/**
 * Legacy TLS suites, strongest first: forward-secret AEAD (DHE), then forward-secret CBC (ECDHE,
 * then DHE; SHA-2 MACs before SHA-1), then static-RSA key exchange. ECDHE-*-AES*-SHA and
 * DHE-RSA-AES*-SHA are the best TLS 1.0/1.1 can do (no AEAD before TLS 1.2). No 3DES, RC4, NULL,
 * anonymous or export suites: those are no better than plaintext.
 */
export const LEGACY_CIPHERS = [
  'DHE-RSA-AES256-GCM-SHA384',
  'DHE-RSA-CHACHA20-POLY1305',
  'DHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-SHA384',
  'ECDHE-RSA-AES256-SHA384',
  'ECDHE-ECDSA-AES128-SHA256',
  'ECDHE-RSA-AES128-SHA256',
  'ECDHE-ECDSA-AES256-SHA',
  'ECDHE-RSA-AES256-SHA',
  'ECDHE-ECDSA-AES128-SHA',
  'ECDHE-RSA-AES128-SHA',
  'DHE-RSA-AES256-SHA256',
  'DHE-RSA-AES128-SHA256',
  'DHE-RSA-AES256-SHA',
  'DHE-RSA-AES128-SHA',
  'AES256-GCM-SHA384',
  'AES128-GCM-SHA256',
  'AES256-SHA256',
  'AES128-SHA256',
  'AES256-SHA',
  'AES128-SHA',
].join(':');

export interface ClientTlsProfile {
  minVersion: 'TLSv1' | 'TLSv1.2';
  maxVersion: 'TLSv1.3';
  ciphers: string;
}

/**
 * What our SMTP client offers. Modern: TLS 1.2+ with the suites above. Legacy: additionally
 * TLS 1.0/1.1 and LEGACY_CIPHERS after the modern ones (a modern server still gets a modern
 * session). OpenSSL 3 refuses TLS 1.0/1.1 (their MD5+SHA-1 handshake signatures) and SHA-1
 * signatures at security level 1 and above, so the legacy profile must run at level 0.
 */
export function clientTlsProfile(legacy: boolean): ClientTlsProfile {
  return legacy
    ? { minVersion: 'TLSv1', maxVersion: 'TLSv1.3', ciphers: `${CIPHERS}:${LEGACY_CIPHERS}@SECLEVEL=0` }
    : { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.3', ciphers: CIPHERS };
}

const MODERN_TLS12 = new Set(TLS12_CIPHERS.split(':'));

/** Did a session get what the modern profile offers (TLS 1.3, or TLS 1.2 with one of its suites)? */
export function isModernSession(version: string, opensslCipherName: string): boolean {
  return version === 'TLSv1.3' || (version === 'TLSv1.2' && MODERN_TLS12.has(opensslCipherName));
}

/** Symmetric key bits of a negotiated suite (for the Received header and trace). */
export function cipherBits(name: string): number {
  if (/AES_?256|AES256|CHACHA20/i.test(name)) return 256;
  if (/AES_?128|AES128/i.test(name)) return 128;
  return 0;
}
