// The TLS failure vocabulary: kinds decided from real handshakes (Node's OpenSSL on loopback) and
// real chain verification, never from message text; the legacy client profile really reaches
// TLS 1.0/1.1 servers and still gets a modern session from a modern server.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { issueCertificate } from '../../../src/tls/certgen.ts';
import {
  TLS_FAILURE_KINDS,
  describeTlsFailure,
  handshakeFailureKind,
  legacyTlsMayHelp,
  rfc8460ResultType,
  tlsFailureLabel,
  tlsFailurePlain,
} from '../../../src/tls/failures.ts';
import { ECDH_CURVES, clientTlsProfile, isModernSession } from '../../../src/tls/policy-constants.ts';
import { TrustStore, verifyChain } from '../../../src/tls/trust.ts';
import { tempDir } from '../../helpers/gateway.ts';
import { makePki, type Pki } from '../../helpers/pki.ts';

let pki: Pki;
let serverTls: { cert: string; key: string };

before(async () => {
  pki = await makePki(tempDir('pc-failures-'), 'Vocab');
  const c = await pki.issue('mx.vocab.test');
  serverTls = { cert: readFileSync(c.chain, 'utf8'), key: readFileSync(c.key, 'utf8') };
});

type Handshake = { ok: true; version: string; cipher: string } | { ok: false; code?: string };

/** One handshake on loopback: a server with `server` options (or a raw socket handler) and our client profile. */
async function handshake(server: tls.TlsOptions | ((s: net.Socket) => void), legacy: boolean): Promise<Handshake> {
  const srv =
    typeof server === 'function'
      ? net.createServer(server)
      : tls.createServer({ ...serverTls, ...server }, (s) => s.end());
  srv.on('tlsClientError', () => {});
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  try {
    return await new Promise<Handshake>((resolve) => {
      const s = tls.connect({
        host: '127.0.0.1',
        port,
        rejectUnauthorized: false,
        ecdhCurve: ECDH_CURVES,
        ...clientTlsProfile(legacy),
      });
      const t = setTimeout(() => {
        s.destroy();
        resolve({ ok: false, code: 'test timeout' });
      }, 5000);
      s.once('secureConnect', () => {
        clearTimeout(t);
        resolve({ ok: true, version: s.getProtocol() ?? '', cipher: s.getCipher().name });
        s.destroy();
      });
      s.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(t);
        resolve({ ok: false, ...(e.code ? { code: e.code } : {}) });
      });
    });
  } finally {
    srv.close();
  }
}

const kindOf = (h: Handshake) => (h.ok ? 'ok' : handshakeFailureKind(h.code));

test('a server that only speaks TLS 1.0 or 1.1: protocol-version from the OpenSSL code', async () => {
  for (const v of ['TLSv1', 'TLSv1.1'] as const) {
    const h = await handshake({ minVersion: v, maxVersion: v, ciphers: 'DEFAULT@SECLEVEL=0' }, false);
    assert.deepEqual([h.ok, !h.ok && h.code], [false, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION'], v);
    assert.equal(kindOf(h), 'protocol-version', v);
  }
});

test('a TLS 1.2 server with only suites outside our policy: no-shared-cipher', async () => {
  for (const ciphers of ['AES128-SHA', 'ECDHE-RSA-AES128-SHA', 'AES128-GCM-SHA256']) {
    const h = await handshake({ minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2', ciphers }, false);
    assert.equal(kindOf(h), 'no-shared-cipher', ciphers);
  }
});

test('not TLS at all, or a server that hangs up: handshake-failed / connection-lost-during-handshake', async () => {
  const garbage = await handshake((s) => {
    s.once('data', () => {
      s.write('this is not TLS\r\n');
      s.end();
    });
  }, false);
  assert.equal(!garbage.ok && garbage.code, 'ERR_SSL_WRONG_VERSION_NUMBER');
  assert.equal(
    kindOf(garbage),
    'handshake-failed',
    'a record-layer version error means "not TLS", not an old protocol',
  );
  const hangup = await handshake((s) => {
    s.once('data', () => s.destroy());
  }, false);
  assert.equal(kindOf(hangup), 'connection-lost-during-handshake');
});

test('unknown or odd codes are handshake-failed; only protocol and cipher failures make legacy TLS worth a try', () => {
  assert.equal(handshakeFailureKind(undefined), 'handshake-failed');
  assert.equal(handshakeFailureKind('ERR_SSL_SOMETHING_NEW'), 'handshake-failed');
  assert.equal(handshakeFailureKind('constructor'), 'handshake-failed');
  assert.equal(handshakeFailureKind('ETIMEDOUT'), 'handshake-timeout');
  assert.deepEqual(TLS_FAILURE_KINDS.filter(legacyTlsMayHelp), ['protocol-version', 'no-shared-cipher']);
});

test('the legacy profile reaches TLS 1.0/1.1 and old TLS 1.2 suites with the strongest suite, and stays modern with a modern server', async () => {
  const t10 = await handshake({ minVersion: 'TLSv1', maxVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' }, true);
  assert.deepEqual(t10, { ok: true, version: 'TLSv1', cipher: 'ECDHE-RSA-AES256-SHA' });
  const t11 = await handshake({ minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }, true);
  assert.deepEqual(t11, { ok: true, version: 'TLSv1.1', cipher: 'ECDHE-RSA-AES256-SHA' });
  const cbc = await handshake(
    {
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      ciphers: 'AES128-SHA:ECDHE-RSA-AES128-SHA',
      honorCipherOrder: false,
    },
    true,
  );
  assert.deepEqual(
    cbc,
    { ok: true, version: 'TLSv1.2', cipher: 'ECDHE-RSA-AES128-SHA' },
    'forward secrecy preferred over static RSA',
  );
  for (const h of [t10, t11, cbc]) assert.equal(h.ok && isModernSession(h.version, h.cipher), false);
  const modern = await handshake({}, true);
  assert.ok(modern.ok && isModernSession(modern.version, modern.cipher), JSON.stringify(modern));
});

test('suites no better than plaintext (NULL, anonymous) are not offered, not even by the legacy profile', async () => {
  for (const ciphers of ['NULL-SHA256@SECLEVEL=0', 'ADH-AES128-GCM-SHA256@SECLEVEL=0']) {
    const server = {
      minVersion: 'TLSv1.2' as const,
      maxVersion: 'TLSv1.2' as const,
      ciphers,
      dhparam: 'auto' as const,
    };
    // Control: a client that offers the suite gets a session, so the server really offers it.
    const permissive = await new Promise<boolean>((resolve) => {
      const srv = tls.createServer({ ...serverTls, ...server }, (s) => s.end());
      srv.listen(0, '127.0.0.1', () => {
        const s = tls.connect({
          host: '127.0.0.1',
          port: (srv.address() as net.AddressInfo).port,
          rejectUnauthorized: false,
          ciphers,
          minVersion: 'TLSv1.2',
          maxVersion: 'TLSv1.2',
        });
        s.once('secureConnect', () => {
          s.destroy();
          srv.close();
          resolve(true);
        });
        s.once('error', () => {
          srv.close();
          resolve(false);
        });
      });
    });
    assert.equal(permissive, true, `control: ${ciphers} is offered`);
    const h = await handshake(server, true);
    assert.equal(kindOf(h), 'no-shared-cipher', ciphers);
  }
});

test('chain verification reports a kind: expired, not yet valid, not trusted', async () => {
  const trust = new TrustStore(false, [pki.rootFile]);
  const x = async (o: Parameters<Pki['issue']>[1]) =>
    new X509Certificate((await pki.issue('c.vocab.test', o)).issued.certPem);
  const inter = [new X509Certificate(pki.intermediate.certPem)];
  const day = 86_400_000;
  const good = verifyChain(await x({}), inter, trust);
  assert.deepEqual([good.ok, good.failure], [true, undefined]);
  const expired = verifyChain(
    await x({ notBefore: new Date(Date.now() - 30 * day), notAfter: new Date(Date.now() - day) }),
    inter,
    trust,
  );
  assert.deepEqual([expired.ok, expired.failure], [false, 'certificate-expired']);
  const early = verifyChain(
    await x({ notBefore: new Date(Date.now() + day), notAfter: new Date(Date.now() + 30 * day) }),
    inter,
    trust,
  );
  assert.deepEqual([early.ok, early.failure], [false, 'certificate-not-yet-valid']);
  const self = await issueCertificate({ subject: 'CN=self.vocab.test', dnsNames: ['self.vocab.test'] });
  const s = verifyChain(new X509Certificate(self.certPem), [], trust);
  assert.deepEqual(
    [s.ok, s.failure, s.error],
    [false, 'certificate-not-trusted', 'self-signed certificate not in the trust store'],
  );
  const incomplete = verifyChain(await x({}), [], trust);
  assert.deepEqual([incomplete.ok, incomplete.failure], [false, 'certificate-not-trusted'], 'missing intermediate');
});

test('every kind has an admin label and plain words; RFC 8460 result types where they exist', () => {
  const labels = new Set<string>();
  for (const k of TLS_FAILURE_KINDS) {
    assert.ok(tlsFailureLabel(k).length > 10 && tlsFailurePlain(k).length > 10, k);
    labels.add(tlsFailureLabel(k));
  }
  assert.equal(labels.size, TLS_FAILURE_KINDS.length, 'labels are distinct');
  assert.equal(rfc8460ResultType('starttls-not-offered'), 'starttls-not-supported');
  assert.equal(rfc8460ResultType('starttls-refused'), 'starttls-not-supported');
  assert.equal(rfc8460ResultType('certificate-host-mismatch'), 'certificate-host-mismatch');
  assert.equal(rfc8460ResultType('certificate-expired'), 'certificate-expired');
  assert.equal(rfc8460ResultType('certificate-not-trusted'), 'certificate-not-trusted');
  assert.equal(rfc8460ResultType('protocol-version'), 'validation-failure');
  // DANE (RFC 8460 §4.3.2.1): no TLSA record validates the server; the TLSA RRset could not be had.
  assert.equal(rfc8460ResultType('tlsa-mismatch'), 'tlsa-invalid');
  assert.equal(rfc8460ResultType('tlsa-bogus'), 'dnssec-invalid');
  assert.equal(rfc8460ResultType('tlsa-lookup-failed'), 'dnssec-invalid');
  assert.equal(rfc8460ResultType('sts-mx-mismatch'), 'validation-failure');
  assert.equal(
    describeTlsFailure('protocol-version', 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION x'),
    'the server only supports TLS versions older than TLS 1.2 (protocol-version); detail: ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION x',
  );
  assert.doesNotMatch(tlsFailurePlain('protocol-version'), /identity|certificate/);
});
