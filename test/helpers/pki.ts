// Test PKI: a CA hierarchy generated per test run (nothing opaque committed).
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { issueCertificate, type CertOptions, type Issued } from '../../src/tls/certgen.ts';

export interface Pki {
  root: Issued;
  intermediate: Issued;
  rootFile: string;
  issue(
    name: string,
    opts?: Partial<CertOptions>,
    issuer?: Issued,
  ): Promise<{ cert: string; key: string; chain: string; issued: Issued }>;
}

/** Root → intermediate; `issue` writes leaf (+ intermediate) cert and key files into `dir`. */
export function makePki(dir: string, label = 'Test'): Promise<Pki> {
  return makePkiWith(dir, label, {});
}

/**
 * Like makePki, but the intermediate is issued with `intermediateOpts` (e.g. `crlUrls` pointing at
 * a CRL the root signs), so revocation can be checked along the whole chain, not only the leaf.
 */
export async function makePkiWith(dir: string, label: string, intermediateOpts: Partial<CertOptions>): Promise<Pki> {
  const root = await issueCertificate({ subject: `CN=${label} Root CA, O=${label} Trust`, ca: true, key: 'ec256' });
  const intermediate = await issueCertificate(
    { subject: `CN=${label} Issuing CA, O=${label} Trust`, ca: true, key: 'ec256', ...intermediateOpts },
    root,
  );
  const rootFile = path.join(dir, `${label.toLowerCase()}-root.pem`);
  writeFileSync(rootFile, root.certPem);
  return {
    root,
    intermediate,
    rootFile,
    async issue(name, opts = {}, issuer = intermediate) {
      const issued = await issueCertificate(
        { subject: `CN=${name}, O=${label} Org`, dnsNames: [name], key: 'rsa2048', ...opts },
        issuer,
      );
      const base = path.join(dir, name.replace(/[^a-z0-9.-]/gi, '_'));
      const cert = `${base}.pem`;
      const key = `${base}.key`;
      const chain = `${base}-chain.pem`;
      writeFileSync(cert, issued.certPem + (issuer === root ? '' : intermediate.certPem));
      writeFileSync(key, issued.keyPem);
      writeFileSync(chain, issued.certPem + intermediate.certPem);
      return { cert, key, chain, issued };
    },
  };
}
