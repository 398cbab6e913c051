// Owns: the development certificate used when no certificate is configured.
// Promise: reuses an existing one in dataDir; writes key with mode 0600, fsync'd.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { X509Certificate } from 'node:crypto';
import { emit } from '../events.ts';
import { writeFileDurable } from '../util/fsync.ts';
import { issueCertificate } from './certgen.ts';

/** Where the development certificate lives (whether or not it exists yet). */
export function devCertificatePaths(dataDir: string): { dir: string; cert: string; key: string } {
  const dir = path.join(dataDir, 'certs');
  return { dir, cert: path.join(dir, 'dev-cert.pem'), key: path.join(dir, 'dev-key.pem') };
}

export async function ensureDevCertificate(dataDir: string, hostname: string): Promise<{ cert: string; key: string }> {
  const { dir, cert, key } = devCertificatePaths(dataDir);
  const names = [...new Set([hostname, 'localhost'])];
  if (existsSync(cert) && existsSync(key)) {
    const x = new X509Certificate(readFileSync(cert));
    const stillValid = Date.parse(x.validTo) > Date.now() + 86_400_000;
    if (stillValid && names.every((n) => x.checkHost(n) !== undefined)) return { cert, key };
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const issued = await issueCertificate({
    subject: `CN=${hostname}, O=Portcullis development certificate`,
    dnsNames: names,
    ipAddresses: ['127.0.0.1', '::1'],
    key: 'ec256',
  });
  writeFileDurable(key, issued.keyPem, 0o600);
  writeFileDurable(cert, issued.certPem, 0o644);
  emit(
    { event: 'tls.devcert.generated', path: cert, names },
    'NO CERTIFICATE CONFIGURED: generated a self-signed development certificate. Partners cannot validate it; ' +
      'set tls.certificates to your real certificate and key before receiving mail from the internet.',
  );
  return { cert, key };
}
