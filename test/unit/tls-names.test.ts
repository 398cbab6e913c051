import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { issueCertificate } from '../../src/tls/certgen.ts';
import { certificateNames, dnLine, nameMatches, namesSatisfy, sanDnsNames } from '../../src/tls/names.ts';

test('RFC 6125 wildcard rules', () => {
  assert.ok(nameMatches('mx1.fabrikam.test', 'MX1.fabrikam.test.'));
  assert.ok(nameMatches('*.fabrikam.test', 'mx1.fabrikam.test'));
  assert.ok(!nameMatches('*.fabrikam.test', 'fabrikam.test'));
  assert.ok(!nameMatches('*.fabrikam.test', 'a.mx1.fabrikam.test'), 'one label only');
  assert.ok(!nameMatches('*.test', 'fabrikam.test'), 'no wildcard over a bare TLD');
  assert.ok(!nameMatches('m*.fabrikam.test', 'mx1.fabrikam.test'), 'partial-label wildcards are not honoured');
  assert.ok(!nameMatches('*.*.fabrikam.test', 'a.b.fabrikam.test'));
});

test('required patterns (tlsDomain)', () => {
  assert.ok(namesSatisfy(['mx1.fabrikam.test'], '*.fabrikam.test'));
  assert.ok(namesSatisfy(['*.fabrikam.test'], '*.fabrikam.test'));
  assert.ok(!namesSatisfy(['mx.other.test'], '*.fabrikam.test'));
  assert.ok(!namesSatisfy(['fabrikam.test.evil.test'], '*.fabrikam.test'));
  assert.ok(namesSatisfy(['*.fabrikam.test'], 'mx1.fabrikam.test'));
  assert.ok(!namesSatisfy(['mx2.fabrikam.test'], 'mx1.fabrikam.test'));
});

test('certificate names (RFC 6125 §6.4.4): SAN DNS names; the subject CN only when there are none', async () => {
  const cnOnly = new X509Certificate((await issueCertificate({ subject: 'CN=MX.Dest.test, O=Dest' })).certPem);
  assert.deepEqual(sanDnsNames(cnOnly), []);
  assert.deepEqual(certificateNames(cnOnly), ['mx.dest.test']);
  const both = new X509Certificate(
    (
      await issueCertificate({
        subject: 'CN=cn.dest.test',
        dnsNames: ['MX1.dest.test', 'mx2.dest.test'],
        ipAddresses: ['127.0.0.1'],
      })
    ).certPem,
  );
  assert.deepEqual(
    certificateNames(both),
    ['mx1.dest.test', 'mx2.dest.test'],
    'the CN is not a name when SAN DNS names exist',
  );
  const ipOnly = new X509Certificate(
    (await issueCertificate({ subject: 'CN=ip.dest.test', ipAddresses: ['127.0.0.1'] })).certPem,
  );
  assert.deepEqual(certificateNames(ipOnly), ['ip.dest.test'], 'SAN entries of other types do not hide the CN');
  assert.equal(dnLine(cnOnly.subject), 'CN=MX.Dest.test, O=Dest');
});
