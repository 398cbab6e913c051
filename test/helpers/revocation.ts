// Revocation infrastructure for tests: a CRL served over HTTP on loopback, and a real OCSP
// responder (`openssl ocsp`) on loopback, for certificates issued by a test CA; CAs, certificates
// (delegated OCSP responders too) and CRLs made with openssl, with every key type CAs sign with.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { x509 } from '../../src/tls/x509.ts';
import type { Issued } from '../../src/tls/certgen.ts';
import { freePort } from './gateway.ts';

export interface CrlServer {
  url: (name: string) => string;
  publish(
    name: string,
    issuer: Issued,
    revoked: X509Certificate[],
    opts?: { signer?: Issued; nextUpdate?: Date },
  ): Promise<void>;
  /** Serve any bytes at `name` (a CA-issuer certificate, a broken answer). */
  put(name: string, body: Buffer): void;
  requests: number;
  close(): Promise<void>;
}

export async function startCrlServer(host = '127.0.0.1'): Promise<CrlServer> {
  const crls = new Map<string, Buffer>();
  const state = { requests: 0 };
  const srv = http.createServer((req, res) => {
    state.requests++;
    const body = crls.get((req.url ?? '').replace(/^\//, ''));
    if (!body) {
      res.statusCode = 404;
      res.end();
      return;
    }
    res.setHeader('content-type', 'application/pkix-crl');
    res.end(body);
  });
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  return {
    url: (name) => `http://${host}:${port}/${name}`,
    get requests() {
      return state.requests;
    },
    async publish(name, issuer, revoked, opts = {}) {
      const signer = opts.signer ?? issuer;
      const crl = await x509.X509CrlGenerator.create({
        issuer: issuer.cert.subject,
        thisUpdate: new Date(Date.now() - 60_000),
        nextUpdate: opts.nextUpdate ?? new Date(Date.now() + 3_600_000),
        entries: revoked.map((c) => ({ serialNumber: c.serialNumber, revocationDate: new Date(Date.now() - 120_000) })),
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as { name: string },
        signingKey: signer.keys.privateKey,
      });
      crls.set(name, Buffer.from(crl.rawData));
    },
    put(name, body) {
      crls.set(name, body);
    },
    close: () => new Promise((r) => srv.close(() => r())),
  } as CrlServer;
}

const asnTime = (d: Date) => d.toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';

export interface OcspResponder {
  url: string;
  proc: ChildProcess;
  close(): Promise<void>;
}

/** A certificate and its key in PEM. */
export interface PemPair {
  certPem: string;
  keyPem: string;
}

/** An openssl `ca` database: one line per certificate, V(alid) or R(evoked). */
function indexFile(good: X509Certificate[], revoked: X509Certificate[]): string {
  const line = (c: X509Certificate, r: boolean) =>
    [
      r ? 'R' : 'V',
      asnTime(new Date(c.validTo)),
      r ? asnTime(new Date(Date.now() - 120_000)) : '',
      c.serialNumber.toUpperCase(),
      'unknown',
      '/' + c.subject.split('\n').join('/'),
    ].join('\t');
  return [...good.map((c) => line(c, false)), ...revoked.map((c) => line(c, true))].join('\n') + '\n';
}

/**
 * `openssl ocsp` answering for certificates of `issuer`; `revoked` are reported revoked, `good`
 * good. The responses are signed by the issuer, or by `o.signer` (a delegated responder
 * certificate, or any certificate for a responder that must not be believed), with `o.rmd` and
 * `o.rsigopt` (e.g. "rsa_padding_mode:pss"). OpenSSL 3.0 takes only a port number (no bind
 * address); tests connect via 127.0.0.1.
 */
export async function startOcspResponder(
  dir: string,
  issuer: PemPair,
  good: X509Certificate[],
  revoked: X509Certificate[],
  port?: number,
  host = '127.0.0.1',
  o: { signer?: PemPair; rmd?: string; rsigopt?: string[] } = {},
): Promise<OcspResponder> {
  port ??= await freePort(host);
  const index = path.join(dir, `ocsp-index-${port}.txt`);
  writeFileSync(index, indexFile(good, revoked));
  const ca = path.join(dir, `ocsp-ca-${port}.pem`);
  const key = path.join(dir, `ocsp-ca-${port}.key`);
  writeFileSync(ca, issuer.certPem);
  writeFileSync(key, issuer.keyPem);
  let rsigner = ca;
  let rkey = key;
  if (o.signer) {
    rsigner = path.join(dir, `ocsp-signer-${port}.pem`);
    rkey = path.join(dir, `ocsp-signer-${port}.key`);
    writeFileSync(rsigner, o.signer.certPem);
    writeFileSync(rkey, o.signer.keyPem);
  }
  const sign = [...(o.rmd ? ['-rmd', o.rmd] : []), ...(o.rsigopt ?? []).flatMap((x) => ['-rsigopt', x])];
  const proc = spawn(
    'openssl',
    [
      'ocsp',
      '-index',
      index,
      '-port',
      String(port),
      '-rsigner',
      rsigner,
      '-rkey',
      rkey,
      '-CA',
      ca,
      '-ndays',
      '1',
      ...sign,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  // Wait for its banner: a probing connect would wedge it (it blocks on a dropped connection).
  let err = '';
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`openssl ocsp did not start: ${err}`)), 10_000);
    proc.stderr!.on('data', (d) => {
      err += d;
      if (/waiting for OCSP client connections/.test(err)) {
        clearTimeout(t);
        resolve();
      }
    });
    proc.once('exit', () => {
      clearTimeout(t);
      reject(new Error(`openssl ocsp exited: ${err}`));
    });
  });
  return {
    url: `http://${host}:${port}`,
    proc,
    close: () =>
      new Promise<void>((r) => {
        if (proc.exitCode !== null) {
          r();
          return;
        }
        proc.once('exit', () => r());
        proc.kill('SIGTERM');
      }),
  };
}

/** Key types CAs sign with; `rsa` signs PKCS#1 v1.5 unless the signing options ask for PSS. */
export type OpensslKey = 'rsa' | 'rsa-pss' | 'ed25519' | 'ed448' | 'p256' | 'p384';

const GENPKEY: Record<OpensslKey, string[]> = {
  rsa: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
  'rsa-pss': ['-algorithm', 'RSA-PSS', '-pkeyopt', 'rsa_keygen_bits:2048'],
  ed25519: ['-algorithm', 'ED25519'],
  ed448: ['-algorithm', 'ED448'],
  p256: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
  p384: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
};

/** A certificate made with openssl, its key, and how its key signs (digest and signature options). */
export interface OpensslCert extends PemPair {
  certFile: string;
  keyFile: string;
  x: X509Certificate;
  /** openssl options for signing with this key: -md/-sigopt for `x509` and `ca`. */
  signing: { md?: string; sigopt?: string[] };
}

const openssl = (args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] });
const signArgs = (s: OpensslCert['signing']) => [
  ...(s.md ? [`-${s.md}`] : []),
  ...(s.sigopt ?? []).flatMap((x) => ['-sigopt', x]),
];

function made(base: string, signing: OpensslCert['signing']): OpensslCert {
  const certPem = readFileSync(`${base}.pem`, 'utf8');
  return {
    certFile: `${base}.pem`,
    keyFile: `${base}.key`,
    certPem,
    keyPem: readFileSync(`${base}.key`, 'utf8'),
    x: new X509Certificate(certPem),
    signing,
  };
}

/** A self-signed CA made with openssl with a key of `key`; `signing` says how it signs (e.g. { md: 'sha384' }). */
export function opensslCa(
  dir: string,
  name: string,
  key: OpensslKey,
  signing: OpensslCert['signing'] = {},
): OpensslCert {
  const base = path.join(dir, name.replace(/[^a-z0-9.-]/gi, '_'));
  openssl(['genpkey', ...GENPKEY[key], '-out', `${base}.key`]);
  openssl([
    'req',
    '-x509',
    '-new',
    '-key',
    `${base}.key`,
    '-subj',
    `/CN=${name}/O=Openssl Trust`,
    '-days',
    '2',
    ...signArgs(signing),
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
    '-out',
    `${base}.pem`,
  ]);
  return made(base, signing);
}

/**
 * A certificate for `name` issued by `ca` with openssl: with OCSP and CRL URLs (a server), or for
 * OCSP signing only (a delegated responder, RFC 6960 §4.2.2.2).
 */
export function opensslIssue(
  dir: string,
  ca: OpensslCert,
  name: string,
  o: { key?: OpensslKey; ocspUrls?: string[]; crlUrls?: string[]; ocspSigning?: boolean } = {},
): OpensslCert {
  const base = path.join(dir, name.replace(/[^a-z0-9.-]/gi, '_'));
  openssl(['genpkey', ...GENPKEY[o.key ?? 'p256'], '-out', `${base}.key`]);
  openssl(['req', '-new', '-key', `${base}.key`, '-subj', `/CN=${name}/O=Openssl Org`, '-out', `${base}.csr`]);
  const ext = [
    'basicConstraints=critical,CA:FALSE',
    'keyUsage=critical,digitalSignature',
    o.ocspSigning
      ? 'extendedKeyUsage=OCSPSigning'
      : `extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:${name}`,
    ...(o.ocspUrls?.length ? [`authorityInfoAccess=${o.ocspUrls.map((u) => `OCSP;URI:${u}`).join(',')}`] : []),
    ...(o.crlUrls?.length ? [`crlDistributionPoints=${o.crlUrls.map((u) => `URI:${u}`).join(',')}`] : []),
  ];
  writeFileSync(`${base}.ext`, ext.join('\n') + '\n');
  openssl([
    'x509',
    '-req',
    '-in',
    `${base}.csr`,
    '-CA',
    ca.certFile,
    '-CAkey',
    ca.keyFile,
    '-set_serial',
    `0x7${randomBytes(15).toString('hex')}`,
    '-days',
    '2',
    ...signArgs(ca.signing),
    '-extfile',
    `${base}.ext`,
    '-out',
    `${base}.pem`,
  ]);
  return made(base, {});
}

/** A CRL of `ca` (DER) listing `revoked`, made with `openssl ca -gencrl`, signed as `ca.signing` says. */
export function opensslCrl(dir: string, ca: OpensslCert, revoked: X509Certificate[]): Buffer {
  const d = path.join(dir, `crl-${randomBytes(4).toString('hex')}`);
  mkdirSync(d);
  writeFileSync(path.join(d, 'index.txt'), revoked.length ? indexFile([], revoked) : '');
  writeFileSync(path.join(d, 'crlnumber'), '01\n');
  writeFileSync(
    path.join(d, 'ca.cnf'),
    `[ca]\ndefault_ca = d\n[d]\ndatabase = ${d}/index.txt\ncrlnumber = ${d}/crlnumber\ndefault_md = ${ca.signing.md ?? 'default'}\ndefault_crl_days = 1\n`,
  );
  openssl([
    'ca',
    '-config',
    path.join(d, 'ca.cnf'),
    '-gencrl',
    '-keyfile',
    ca.keyFile,
    '-cert',
    ca.certFile,
    ...(ca.signing.sigopt ?? []).flatMap((x) => ['-sigopt', x]),
    '-out',
    path.join(d, 'crl.pem'),
  ]);
  openssl(['crl', '-in', path.join(d, 'crl.pem'), '-outform', 'DER', '-out', path.join(d, 'crl.der')]);
  return readFileSync(path.join(d, 'crl.der'));
}
