// Owns: verifying a signature over DER data that a certificate's key made (OCSP responses, CRLs),
// with the algorithm its AlgorithmIdentifier names: RSA PKCS#1 v1.5 with SHA-1/256/384/512,
// RSA-PSS with the hash and salt length of its parameters (MGF1 with that same hash, as RFC 4055
// recommends and CAs use), ECDSA with SHA-1/256/384/512 on the key's curve (P-256, P-384,
// P-521), Ed25519 and Ed448. @peculiar/x509 reads the AlgorithmIdentifier; node:crypto verifies.
// Promise: never throws. An algorithm not listed here, a key of another type than the algorithm
// or a signature that does not verify is `false`: the signed data is then not believed.
import { constants, verify, type KeyObject, type X509Certificate } from 'node:crypto';
import type { AlgorithmIdentifier } from '@peculiar/asn1-x509';
import { x509 } from './x509.ts';

const HASH: Readonly<Record<string, string>> = {
  'SHA-1': 'sha1',
  'SHA-256': 'sha256',
  'SHA-384': 'sha384',
  'SHA-512': 'sha512',
};

/** What node:crypto needs: the digest (null for EdDSA), the key types it may be made with, the RSA padding. */
interface Method {
  hash: string | null;
  keyTypes: readonly string[];
  pss?: { saltLength: number };
}

interface WebAlgorithm {
  name: string;
  hash?: { name: string };
  saltLength?: number;
  namedCurve?: string;
}

const provider = new x509.AlgorithmProvider();

/** How to verify a signature made with `alg`, or undefined for an algorithm not supported. */
export function signatureMethod(alg: AlgorithmIdentifier): Method | undefined {
  let web: WebAlgorithm;
  try {
    web = provider.toWebAlgorithm(alg) as WebAlgorithm;
  } catch {
    return undefined;
  }
  const hash = web.hash ? HASH[web.hash.name] : undefined;
  switch (web.name) {
    case 'RSASSA-PKCS1-v1_5':
      return hash ? { hash, keyTypes: ['rsa'] } : undefined;
    case 'RSA-PSS':
      // RFC 4055 §3.1: the parameters are required with a signature (absent: no hash, no salt length).
      return hash && web.saltLength !== undefined
        ? { hash, keyTypes: ['rsa', 'rsa-pss'], pss: { saltLength: web.saltLength } }
        : undefined;
    case 'ECDSA':
      return hash ? { hash, keyTypes: ['ec'] } : undefined;
    case 'Ed25519':
      return { hash: null, keyTypes: ['ed25519'] };
    case 'EdDSA':
      return web.namedCurve === 'Ed448' ? { hash: null, keyTypes: ['ed448'] } : undefined;
    default:
      return undefined;
  }
}

/** Did the key of `signer` make `signature` over `data` with the algorithm `alg` names? */
export function verifySignature(
  alg: AlgorithmIdentifier,
  data: ArrayBuffer | Uint8Array,
  signature: ArrayBuffer | Uint8Array,
  signer: X509Certificate | KeyObject,
): boolean {
  const m = signatureMethod(alg);
  if (!m) return false;
  try {
    const key = 'publicKey' in signer ? signer.publicKey : signer;
    if (!m.keyTypes.includes(key.asymmetricKeyType ?? '')) return false;
    const k = m.pss ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: m.pss.saltLength } : key;
    return verify(m.hash, new Uint8Array(data), k, new Uint8Array(signature));
  } catch {
    return false;
  }
}
