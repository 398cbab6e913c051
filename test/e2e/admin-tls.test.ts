// The admin centre's HTTPS listener serves the gateway's configured certificate and follows its
// rotation: after the files change, new connections get the new certificate, without a restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import tls from 'node:tls';
import { cleanup, freePort, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { makePki, type Pki } from '../helpers/pki.ts';

let gw: GatewayHandle;
let pki: Pki;
let dir: string;
let adminPort: number;
const files = { cert: '', key: '' };

before(async () => {
  dir = tempDir('pc-admin-tls-');
  pki = await makePki(dir, 'Contoso');
  const first = await pki.issue('mx1.contoso.test', { subject: 'CN=mx1.contoso.test, O=Contoso first' });
  Object.assign(files, { cert: first.cert, key: first.key });
  adminPort = await freePort();
  gw = await startGateway({
    config: {
      admin: { listen: `127.0.0.1:${adminPort}` },
      tls: { certificates: [files], trust: { system: false, caFiles: [pki.rootFile] } },
    },
  });
});
after(async () => {
  await cleanup(gw);
  rmSync(dir, { recursive: true, force: true });
});

/**
 * The organisation of the certificate the admin listener presents (chain verified against the test
 * root), with SNI or without it (a browser pointed at https://127.0.0.1:PORT/ sends none).
 */
function served(sni: boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect(
      {
        host: '127.0.0.1',
        port: adminPort,
        ca: readFileSync(pki.rootFile),
        ALPNProtocols: ['http/1.1'],
        ...(sni ? { servername: 'mx1.contoso.test' } : { checkServerIdentity: () => undefined }),
      },
      () => {
        const subject = s.getPeerCertificate().subject.O;
        s.end();
        resolve(String(subject));
      },
    );
    s.on('error', reject);
  });
}

test('the admin listener presents the configured certificate and the rotated one after the files change', async () => {
  assert.equal(await served(true), 'Contoso first');
  assert.equal(await served(false), 'Contoso first');
  const next = await pki.issue('mx1.contoso.test', { subject: 'CN=mx1.contoso.test, O=Contoso second' });
  const from = gw.logs.length;
  writeFileSync(files.key, readFileSync(next.key));
  writeFileSync(files.cert, readFileSync(next.cert));
  await gw.waitForLog(
    (e) => e.event === 'tls.certificates.loaded' && e.source === 'file change' && gw.logs.length > from,
  );
  assert.equal(await served(true), 'Contoso second');
  assert.equal(await served(false), 'Contoso second', 'without SNI too (the default context)');
  assert.equal(new X509Certificate(readFileSync(files.cert)).subject.includes('Contoso second'), true);
});
