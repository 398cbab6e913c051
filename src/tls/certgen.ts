// Owns: generating keys, CAs and certificates (the dev certificate at start-up; test fixtures).
// Failure: throws; nothing is written unless generation succeeded.
import { randomBytes } from 'node:crypto';
import type { webcrypto as WC } from 'node:crypto';
import { x509, webcrypto } from './x509.ts';

export type KeyKind = 'rsa2048' | 'rsa3072' | 'ec256' | 'ec384';

export interface Issued {
  certPem: string;
  keyPem: string;
  /** Keys kept for signing further certificates when this is a CA. */
  keys: WC.CryptoKeyPair;
  cert: x509.X509Certificate;
}

export interface CertOptions {
  subject: string; // e.g. "CN=mx1.contoso.test, O=Contoso"
  dnsNames?: string[];
  ipAddresses?: string[];
  key?: KeyKind;
  notBefore?: Date;
  notAfter?: Date;
  ca?: boolean;
  crlUrls?: string[];
  ocspUrls?: string[];
  /** AIA caIssuers: where the issuer's certificate can be fetched. */
  caIssuerUrls?: string[];
  serverAuth?: boolean;
  clientAuth?: boolean;
}

function algorithm(kind: KeyKind): WC.RsaHashedKeyGenParams | WC.EcKeyGenParams {
  switch (kind) {
    case 'rsa2048':
      return {
        name: 'RSASSA-PKCS1-v1_5',
        hash: 'SHA-256',
        publicExponent: new Uint8Array([1, 0, 1]),
        modulusLength: 2048,
      };
    case 'rsa3072':
      return {
        name: 'RSASSA-PKCS1-v1_5',
        hash: 'SHA-256',
        publicExponent: new Uint8Array([1, 0, 1]),
        modulusLength: 3072,
      };
    case 'ec256':
      return { name: 'ECDSA', namedCurve: 'P-256' };
    case 'ec384':
      return { name: 'ECDSA', namedCurve: 'P-384' };
  }
}

function signingAlgorithm(keys: WC.CryptoKeyPair): WC.Algorithm {
  const a = keys.privateKey.algorithm as WC.RsaHashedKeyAlgorithm | WC.EcKeyAlgorithm;
  if (a.name === 'ECDSA')
    return {
      name: 'ECDSA',
      hash: (a as WC.EcKeyAlgorithm).namedCurve === 'P-384' ? 'SHA-384' : 'SHA-256',
    } as WC.EcdsaParams;
  return { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } as WC.Algorithm;
}

async function pkcs8Pem(key: WC.CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key));
  return `-----BEGIN PRIVATE KEY-----\n${der
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
    .replace(/\n$/, '')}\n-----END PRIVATE KEY-----\n`;
}

/** Issue a certificate; self-signed when `issuer` is omitted. */
export async function issueCertificate(opts: CertOptions, issuer?: Issued): Promise<Issued> {
  const keys = (await webcrypto.subtle.generateKey(algorithm(opts.key ?? 'rsa2048'), true, [
    'sign',
    'verify',
  ])) as WC.CryptoKeyPair;
  const now = Date.now();
  const notBefore = opts.notBefore ?? new Date(now - 60_000);
  const notAfter = opts.notAfter ?? new Date(now + 365 * 86_400_000);
  const exts: x509.Extension[] = [];
  if (opts.ca) {
    exts.push(new x509.BasicConstraintsExtension(true, undefined, true));
    exts.push(
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
        true,
      ),
    );
  } else {
    exts.push(new x509.BasicConstraintsExtension(false, undefined, true));
    exts.push(
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
    );
    const eku: string[] = [];
    if (opts.serverAuth !== false) eku.push(x509.ExtendedKeyUsage.serverAuth);
    if (opts.clientAuth !== false) eku.push(x509.ExtendedKeyUsage.clientAuth);
    exts.push(new x509.ExtendedKeyUsageExtension(eku));
  }
  const names = [
    ...(opts.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(opts.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  if (names.length) exts.push(new x509.SubjectAlternativeNameExtension(names));
  if (opts.crlUrls?.length) exts.push(new x509.CRLDistributionPointsExtension(opts.crlUrls));
  if (opts.ocspUrls?.length || opts.caIssuerUrls?.length) {
    exts.push(
      new x509.AuthorityInfoAccessExtension({
        ...(opts.ocspUrls?.length ? { ocsp: opts.ocspUrls } : {}),
        ...(opts.caIssuerUrls?.length ? { caIssuers: opts.caIssuerUrls } : {}),
      }),
    );
  }
  exts.push(await x509.SubjectKeyIdentifierExtension.create(keys.publicKey));
  if (issuer) exts.push(await x509.AuthorityKeyIdentifierExtension.create(issuer.cert));

  const serialNumber = `7${randomBytes(15).toString('hex')}`;
  const cert = issuer
    ? await x509.X509CertificateGenerator.create({
        serialNumber,
        subject: opts.subject,
        issuer: issuer.cert.subject,
        notBefore,
        notAfter,
        signingAlgorithm: signingAlgorithm(issuer.keys),
        publicKey: keys.publicKey,
        signingKey: issuer.keys.privateKey,
        extensions: exts,
      })
    : await x509.X509CertificateGenerator.createSelfSigned({
        serialNumber,
        name: opts.subject,
        notBefore,
        notAfter,
        signingAlgorithm: signingAlgorithm(keys),
        keys,
        extensions: exts,
      });
  return { certPem: cert.toString('pem') + '\n', keyPem: await pkcs8Pem(keys.privateKey), keys, cert };
}
