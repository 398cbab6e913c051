// The admission questions policy/ answers (InboundConnectors.identifiesClients, identifiesAddress,
// identifiesCertificate): only enabled connectors count, and a judged certificate counts only when
// it satisfies the connector's tlsSenderCertificateName (verified chain, or pinned).
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { buildConfig } from '../../../src/config/load.ts';
import { InboundPolicy } from '../../../src/policy/inbound.ts';
import { issueCertificate } from '../../../src/tls/certgen.ts';
import { judgeClientChain, type ClientCertificate } from '../../../src/tls/client-cert.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { makePki, type Pki } from '../../helpers/pki.ts';
import { tempDir } from '../../helpers/gateway.ts';

let pki: Pki;
let fabrikam: X509Certificate[];
let stranger: X509Certificate[];
let selfSigned: X509Certificate[];
const chainOf = (pem: string) =>
  (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => new X509Certificate(p));

before(async () => {
  pki = await makePki(tempDir(), 'Admission');
  fabrikam = chainOf((await pki.issue('mail.fabrikam.test')).issued.certPem + pki.intermediate.certPem);
  stranger = chainOf((await pki.issue('mx.stranger.test')).issued.certPem + pki.intermediate.certPem);
  selfSigned = chainOf(
    (await issueCertificate({ subject: 'CN=mail.fabrikam.test', dnsNames: ['mail.fabrikam.test'], key: 'ec256' }))
      .certPem,
  );
});

const connectors = (inbound: Record<string, unknown>[]) =>
  new InboundPolicy(
    buildConfig(
      {
        tls: { revocation: 'off' },
        organizations: [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }], inboundConnectors: inbound }],
      },
      '/tmp',
      null,
    ),
  ).connectors;

/** The session's judgement of a chain (revocation not needed here: tls.revocation off). */
const judged = (c: ReturnType<typeof connectors>, chain: X509Certificate[]): ClientCertificate | undefined =>
  judgeClientChain(chain, new TrustStore(false, [pki.rootFile]), c.anchors, 'off')?.cert;

test('addresses and certificates of enabled connectors identify a client; nothing else does', () => {
  const c = connectors([
    {
      name: 'Fabrikam',
      connectorType: 'partner',
      senderDomains: ['fabrikam.test'],
      tlsSenderCertificateName: '*.fabrikam.test',
    },
    { name: 'Servers', connectorType: 'onPremises', senderIPAddresses: ['192.0.2.0/24', '2001:db8::/32'] },
    { name: 'Old', connectorType: 'partner', senderIPAddresses: ['198.51.100.1'], enabled: false },
  ]);
  assert.ok(c.identifiesClients);
  assert.ok(c.identifiesAddress('192.0.2.77'));
  assert.ok(c.identifiesAddress('2001:db8::5'));
  assert.ok(!c.identifiesAddress('198.51.100.1'), 'a disabled connector identifies no one');
  assert.ok(!c.identifiesAddress('203.0.113.1'));
  assert.ok(c.identifiesCertificate(judged(c, fabrikam)));
  assert.ok(!c.identifiesCertificate(judged(c, stranger)), 'another name');
  assert.ok(!c.identifiesCertificate(judged(c, selfSigned)), 'the right name without a verifying chain');
  assert.ok(!c.identifiesCertificate(judged(c, [])));
  assert.ok(!c.identifiesCertificate(undefined));
});

test('connectors by sender domain only identify no client: nothing to reserve for', () => {
  const c = connectors([{ name: 'Fabrikam', connectorType: 'partner', senderDomains: ['fabrikam.test'] }]);
  assert.ok(!c.identifiesClients);
  assert.ok(!connectors([]).identifiesClients);
});
