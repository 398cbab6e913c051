import { test } from 'node:test';
import assert from 'node:assert/strict';
import { receivedHeader } from '../../../src/ingest/received.ts';
import { findMessageId } from '../../../src/ingest/ingest.ts';
import { queueId } from '../../../src/util/ids.ts';

const base = {
  sessionId: 's',
  clientIp: '127.0.0.1',
  clientPort: 1,
  helo: 'client.test',
  protocol: 'ESMTPS',
  receivedBy: 'mx1.contoso.test',
};
const at = new Date(Date.UTC(2026, 10, 27, 15, 0, 0));

test('Received: with TLS facts and no client certificate', () => {
  const h = receivedHeader(
    { ...base, tls: { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', bits: 256 } },
    'Q1',
    'a@contoso.test',
    at,
  ).toString();
  assert.equal(
    h,
    'Received: from client.test ([127.0.0.1])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\t(no client certificate presented)\r\n\tby mx1.contoso.test (Portcullis) with ESMTPS id Q1\r\n\tfor <a@contoso.test>; Fri, 27 Nov 2026 15:00:00 +0000\r\n',
  );
});

test('Received: with a verified client certificate; IPv6; hostile HELO cannot break the header', () => {
  const h = receivedHeader(
    {
      ...base,
      clientIp: '::1',
      helo: 'evil\r\nX-Injected: 1 (x)',
      tls: {
        version: 'TLSv1.2',
        cipher: 'TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256',
        bits: 128,
        peerCert: { subject: 'CN=mail.fabrikam.test', issuer: 'CN=CA', fingerprint256: 'AA', verified: true },
      },
    },
    'Q2',
    undefined,
    at,
  ).toString();
  assert.match(h, /from evil {2}X-Injected: 1 {2}x {2}\(\[IPv6:::1\]\)/);
  assert.match(h, /\(client certificate CN=mail\.fabrikam\.test issued by CN=CA, verified OK\)/);
  assert.equal(
    h.split('\r\n').filter((l) => l && !l.startsWith('\t')).length,
    1,
    'one header, continuation lines only',
  );
  assert.doesNotMatch(h, / for </, 'no "for" clause with several recipients');
});

test('Received: never says "verified OK" for a revoked certificate or one not valid for client authentication', () => {
  const cert = { subject: 'CN=mail.fabrikam.test', issuer: 'CN=CA', fingerprint256: 'AA', verified: true };
  const comment = (peerCert: object) =>
    /\(client certificate [^\r]*\)/.exec(
      receivedHeader(
        {
          ...base,
          tls: { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', bits: 256, peerCert: { ...cert, ...peerCert } },
        },
        'Q3',
        undefined,
        at,
      ).toString(),
    )![0];
  assert.equal(
    comment({
      revocation: {
        status: 'revoked',
        summary:
          'certificate CN=mail.fabrikam.test is REVOKED since 2026-11-27T15:00:00.000Z (OCSP http://ocsp.test: revoked)',
      },
    }),
    '(client certificate CN=mail.fabrikam.test issued by CN=CA, REVOKED)',
  );
  assert.equal(
    comment({ ekuError: 'its extended key usage is limited to serverAuth and does not include clientAuth' }),
    '(client certificate CN=mail.fabrikam.test issued by CN=CA, not valid for client authentication: its extended key usage is limited to serverAuth and does not include clientAuth)',
  );
  assert.equal(
    comment({ revocation: { status: 'unknown', summary: 'x' } }),
    '(client certificate CN=mail.fabrikam.test issued by CN=CA, verified OK, revocation status unknown)',
  );
  assert.equal(
    comment({ revocation: { status: 'good', summary: 'x' } }),
    '(client certificate CN=mail.fabrikam.test issued by CN=CA, verified OK)',
  );
});

test('Message-ID extraction handles folding and case', () => {
  assert.equal(findMessageId('Subject: x\r\nMESSAGE-ID:\r\n <a@b>\r\n'), '<a@b>');
  assert.equal(findMessageId('Subject: x\r\n'), undefined);
});

test('queue ids are unique and time-ordered', () => {
  const ids = Array.from({ length: 10_000 }, () => queueId(1_795_000_000_000));
  assert.equal(new Set(ids).size, ids.length);
  assert.ok(queueId(1_795_000_000_000) < queueId(1_795_000_000_001 + 1000));
});

test('Received: "for" carries the recipient in its canonical form, quotes and escapes intact', () => {
  const h = receivedHeader(base, 'Q3', '"a \\"b\\" (c)"@contoso.test', at).toString();
  assert.match(h, /\tfor <"a \\"b\\" \(c\)"@contoso\.test>; /);
});
