// Owns: the cipher policy. TLS 1.2 suites are all ECDHE (forward secrecy) with AEAD ciphers;
// no static-RSA key exchange, no CBC, no SHA-1 MACs. TLS 1.3 suites are all forward secret.
export const TLS13_SUITES = 'TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256';
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305',
  'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256',
].join(':');
export const CIPHERS = `${TLS13_SUITES}:${TLS12_CIPHERS}`;
export const ECDH_CURVES = 'X25519:P-256:P-384';

/** Symmetric key bits of a negotiated suite (for the Received header and trace). */
export function cipherBits(name: string): number {
  if (/AES_?256|AES256|CHACHA20/i.test(name)) return 256;
  if (/AES_?128|AES128/i.test(name)) return 128;
  return 0;
}
