// Revocation infrastructure for tests: a CRL served over HTTP on loopback, and a real OCSP
// responder (`openssl ocsp`) on loopback, for certificates issued by a test CA.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import type { X509Certificate } from 'node:crypto';
import { x509 } from '../../src/tls/x509.ts';
import type { Issued } from '../../src/tls/certgen.ts';
import { freePort } from './gateway.ts';

export interface CrlServer {
  url: (name: string) => string;
  publish(name: string, issuer: Issued, revoked: X509Certificate[], opts?: { signer?: Issued; nextUpdate?: Date }): Promise<void>;
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
    if (!body) { res.statusCode = 404; res.end(); return; }
    res.setHeader('content-type', 'application/pkix-crl');
    res.end(body);
  });
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  return {
    url: (name) => `http://${host}:${port}/${name}`,
    get requests() { return state.requests; },
    async publish(name, issuer, revoked, opts = {}) {
      const signer = opts.signer ?? issuer;
      const crl = await x509.X509CrlGenerator.create({
        issuer: issuer.cert.subject, thisUpdate: new Date(Date.now() - 60_000), nextUpdate: opts.nextUpdate ?? new Date(Date.now() + 3_600_000),
        entries: revoked.map((c) => ({ serialNumber: c.serialNumber, revocationDate: new Date(Date.now() - 120_000) })),
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as { name: string }, signingKey: signer.keys.privateKey,
      });
      crls.set(name, Buffer.from(crl.rawData));
    },
    put(name, body) { crls.set(name, body); },
    close: () => new Promise((r) => srv.close(() => r())),
  } as CrlServer;
}

const asnTime = (d: Date) => d.toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';

export interface OcspResponder { url: string; proc: ChildProcess; close(): Promise<void> }

/**
 * `openssl ocsp` answering for certificates of `issuer`; `revoked` are reported revoked, `good`
 * good. OpenSSL 3.0 takes only a port number (no bind address); tests connect via 127.0.0.1.
 */
export async function startOcspResponder(dir: string, issuer: Issued, good: X509Certificate[], revoked: X509Certificate[], port?: number, host = '127.0.0.1'): Promise<OcspResponder> {
  port ??= await freePort(host);
  const line = (c: X509Certificate, r: boolean) => [r ? 'R' : 'V', asnTime(new Date(c.validTo)), r ? asnTime(new Date(Date.now() - 120_000)) : '', c.serialNumber.toUpperCase(), 'unknown',
    '/' + c.subject.split('\n').join('/')].join('\t');
  const index = path.join(dir, `ocsp-index-${port}.txt`);
  writeFileSync(index, [...good.map((c) => line(c, false)), ...revoked.map((c) => line(c, true))].join('\n') + '\n');
  const ca = path.join(dir, `ocsp-ca-${port}.pem`); const key = path.join(dir, `ocsp-ca-${port}.key`);
  writeFileSync(ca, issuer.certPem); writeFileSync(key, issuer.keyPem);
  const proc = spawn('openssl', ['ocsp', '-index', index, '-port', String(port), '-rsigner', ca, '-rkey', key, '-CA', ca, '-ndays', '1'], { stdio: ['ignore', 'ignore', 'pipe'] });
  // Wait for its banner: a probing connect would wedge it (it blocks on a dropped connection).
  let err = '';
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`openssl ocsp did not start: ${err}`)), 10_000);
    proc.stderr!.on('data', (d) => { err += d; if (/waiting for OCSP client connections/.test(err)) { clearTimeout(t); resolve(); } });
    proc.once('exit', () => { clearTimeout(t); reject(new Error(`openssl ocsp exited: ${err}`)); });
  });
  return {
    url: `http://${host}:${port}`, proc,
    close: () => new Promise<void>((r) => { if (proc.exitCode !== null) { r(); return; } proc.once('exit', () => r()); proc.kill('SIGTERM'); }),
  };
}
