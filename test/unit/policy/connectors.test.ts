import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { buildConfig } from '../../../src/config/load.ts';
import { parsePathArg, type Mailbox } from '../../../src/inbound/address.ts';
import { InboundPolicy } from '../../../src/policy/inbound.ts';
import { issueCertificate } from '../../../src/tls/certgen.ts';
import { judgeClientChain, type ClientCertificate } from '../../../src/tls/client-cert.ts';
import type { RevocationMode } from '../../../src/tls/revocation.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { makePki, type Pki } from '../../helpers/pki.ts';
import { tempDir } from '../../helpers/gateway.ts';

let pki: Pki;
let partnerPki: Pki;
let fabrikam: X509Certificate[];
let stranger: X509Certificate[];
let selfSigned: X509Certificate[];
let onprem: X509Certificate[];
let serverOnly: X509Certificate[];
let expired: X509Certificate[];
let noIntermediate: X509Certificate[];
const chainOf = (pem: string) =>
  (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => new X509Certificate(p));

before(async () => {
  const dir = tempDir();
  pki = await makePki(dir, 'Public'); // in our trust store
  partnerPki = await makePki(dir, 'Private'); // trusted only by the connector (trustedCAs)
  fabrikam = chainOf((await partnerPki.issue('mail.fabrikam.test')).issued.certPem + partnerPki.intermediate.certPem);
  stranger = chainOf((await pki.issue('mx.stranger.test')).issued.certPem + pki.intermediate.certPem);
  selfSigned = chainOf(
    (await issueCertificate({ subject: 'CN=mail.fabrikam.test', dnsNames: ['mail.fabrikam.test'], key: 'ec256' }))
      .certPem,
  );
  onprem = chainOf((await pki.issue('mail.corp.contoso.test')).issued.certPem + pki.intermediate.certPem);
  serverOnly = chainOf(
    (await partnerPki.issue('mx2.fabrikam.test', { clientAuth: false })).issued.certPem +
      partnerPki.intermediate.certPem,
  );
  expired = chainOf(
    (
      await partnerPki.issue('mx3.fabrikam.test', {
        notBefore: new Date(Date.now() - 9 * 86_400_000),
        notAfter: new Date(Date.now() - 86_400_000),
      })
    ).issued.certPem + partnerPki.intermediate.certPem,
  );
  noIntermediate = chainOf((await partnerPki.issue('mx4.fabrikam.test')).issued.certPem);
});

function policy(extra: Record<string, unknown>[] = [], pins: string[] = [], revocation: RevocationMode = 'softFail') {
  const config = buildConfig(
    {
      tls: { revocation },
      organizations: [
        {
          name: 'contoso',
          acceptedDomains: [{ domain: 'contoso.test' }, { domain: 'corp.contoso.test' }],
          inboundConnectors: [
            {
              name: 'From Fabrikam',
              connectorType: 'partner',
              senderDomains: ['fabrikam.test', '*.fabrikam.test'],
              senderIPAddresses: ['127.0.0.3/32'],
              requireTls: true,
              tlsSenderCertificateName: '*.fabrikam.test',
              restrictDomainsToCertificate: true,
              trustedCAs: [partnerPki.rootFile],
              pinnedCertificates: pins,
            },
            {
              name: 'From on-premises',
              connectorType: 'onPremises',
              tlsSenderCertificateName: 'mail.corp.contoso.test',
              senderIPAddresses: ['127.0.0.4/32'],
              treatMessagesAsInternal: true,
            },
            ...extra,
          ],
        },
      ],
    },
    '/tmp',
    null,
  );
  return new InboundPolicy(config);
}

type Revocation = ClientCertificate['revocation'];
const GOOD: Revocation = { status: 'good', summary: 'not revoked (OCSP http://ocsp.test: good)' };
const REVOKED: Revocation = {
  status: 'revoked',
  summary: 'certificate CN=x is REVOKED since 2026-11-27T15:00:00.000Z (CRL http://crl.test/int.crl: revoked)',
};
const UNKNOWN: Revocation = {
  status: 'unknown',
  summary: 'revocation status of CN=x unknown (OCSP http://ocsp.test: unreachable (ECONNREFUSED))',
};

/**
 * The session's judgement of a chain (as tls/client-cert.ts makes it, against our trust store and
 * the policy's connectors), with the revocation status the checker would have found.
 */
function judged(
  p: InboundPolicy,
  chain: X509Certificate[],
  revocation: Revocation = GOOD,
  mode: RevocationMode = 'softFail',
): ClientCertificate {
  const j = judgeClientChain(chain, new TrustStore(false, [pki.rootFile]), p.connectors.anchors, mode)!;
  return j.check ? { ...j.cert, revocation } : j.cert;
}

const view = (o: Partial<{ clientIp: string; tls: boolean; clientCert: ClientCertificate; senderDomain: string }>) => ({
  clientIp: '127.0.0.9',
  tls: true,
  senderDomain: 'fabrikam.test',
  ...o,
});
const mb = (s: string): Mailbox => {
  const r = parsePathArg(s, { allowNull: false, utf8Allowed: false });
  if (!r.ok) throw new Error(r.reply.message);
  return r.mailbox;
};

test('requireTls: a partner domain over plaintext gets 530 5.7.0', () => {
  const v = policy().mailFrom(view({ tls: false }));
  assert.ok(!v.ok);
  assert.equal(v.reply.code, 530);
  assert.equal(v.reply.enhanced, '5.7.0');
  assert.doesNotMatch(v.reply.message, /fabrikam|connector/i, 'the peer learns nothing about our configuration');
});

test('restrictDomainsToCertificate: a stranger claiming fabrikam.test is refused, the partner is accepted', () => {
  const p = policy();
  const none = p.mailFrom(view({}));
  assert.ok(!none.ok && none.reply.enhanced === '5.7.1');
  assert.match(
    none.reply.reason!,
    /requires a client certificate matching \*\.fabrikam\.test .*no certificate was presented/,
  );
  const wrong = p.mailFrom(view({ clientCert: judged(p, stranger) }));
  assert.ok(!wrong.ok);
  assert.match(wrong.reply.reason!, /presented CN=mx\.stranger\.test/);
  const ok = p.mailFrom(view({ clientCert: judged(p, fabrikam) }));
  assert.ok(ok.ok && ok.match?.connector.name === 'From Fabrikam' && ok.match.by === 'certificate');
});

test('a self-signed certificate with the right name never satisfies the connector unless pinned', () => {
  const p = policy();
  assert.ok(!p.mailFrom(view({ clientCert: judged(p, selfSigned) })).ok);
  const pinned = policy([], [selfSigned[0].fingerprint256]);
  assert.ok(pinned.mailFrom(view({ clientCert: judged(pinned, selfSigned) })).ok);
});

test('restrictDomainsToIPAddresses', () => {
  const p = policy([
    {
      name: 'From Tailspin',
      connectorType: 'partner',
      senderDomains: ['tailspin.test'],
      senderIPAddresses: ['127.0.0.5/32'],
      restrictDomainsToIPAddresses: true,
    },
  ]);
  const bad = p.mailFrom(view({ senderDomain: 'tailspin.test', clientIp: '127.0.0.6' }));
  assert.ok(!bad.ok && bad.reply.enhanced === '5.7.1');
  assert.match(bad.reply.reason!, /accepts tailspin\.test only from 127\.0\.0\.5\/32; the client is 127\.0\.0\.6/);
  assert.ok(p.mailFrom(view({ senderDomain: 'tailspin.test', clientIp: '127.0.0.5' })).ok);
});

test('selection order: certificate, then IP, then sender domain', () => {
  const p = policy();
  const byCert = p.mailFrom(
    view({ clientCert: judged(p, onprem), clientIp: '127.0.0.3', senderDomain: 'contoso.test' }),
  );
  assert.ok(
    byCert.ok && byCert.match?.connector.name === 'From on-premises',
    'the certificate wins over the address of another connector',
  );
  const byIp = p.mailFrom(view({ clientIp: '127.0.0.4', senderDomain: 'contoso.test' }));
  assert.ok(byIp.ok && byIp.match?.by === 'ip');
  const byDomain = p.mailFrom(
    view({ clientCert: judged(p, fabrikam), clientIp: '127.0.0.9', senderDomain: 'sub.fabrikam.test' }),
  );
  assert.ok(byDomain.ok && byDomain.match?.by === 'certificate');
});

test('relay: only an onPremises session, and only for its organization', () => {
  const p = policy();
  const rcpt = (v: ReturnType<typeof view>) => {
    const m = p.mailFrom(v);
    assert.ok(m.ok);
    return p.recipient(mb('<x@internet.test>'), { ...v, ...(m.match ? { match: m.match } : {}) });
  };
  assert.ok(
    rcpt(view({ clientCert: judged(p, onprem), senderDomain: 'contoso.test' })).ok,
    'certificate-identified on-premises server relays',
  );
  assert.ok(
    rcpt(view({ clientCert: judged(p, onprem), senderDomain: 'customer.test' })).ok,
    'certificate domain attributes the message',
  );
  assert.ok(rcpt(view({ clientIp: '127.0.0.4', senderDomain: 'contoso.test' })).ok, 'IP-identified, own sender domain');
  const foreign = rcpt(view({ clientIp: '127.0.0.4', senderDomain: 'customer.test' }));
  assert.ok(!foreign.ok && foreign.reply.enhanced === '5.7.1');
  const partner = rcpt(view({ clientCert: judged(p, fabrikam), senderDomain: 'fabrikam.test' }));
  assert.ok(!partner.ok && partner.reply.enhanced === '5.7.1', 'a partner connector never grants relay');
  assert.ok(!rcpt(view({ senderDomain: 'contoso.test' })).ok, 'an unidentified client never relays');
});

test('ambiguous connectors are a configuration error', () => {
  assert.throws(
    () =>
      policy([
        {
          name: 'Copy',
          connectorType: 'partner',
          senderDomains: ['x.test'],
          tlsSenderCertificateName: '*.fabrikam.test',
          restrictDomainsToCertificate: true,
        },
      ]),
    /both identified by certificate name \*\.fabrikam\.test/,
  );
  assert.throws(
    () => policy([{ name: 'Overlap', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.0/24'] }]),
    /both match client address/,
  );
  assert.throws(
    () =>
      buildConfig(
        {
          organizations: [
            {
              name: 'a',
              acceptedDomains: [{ domain: 'a.test' }],
              inboundConnectors: [
                { name: 'x', connectorType: 'partner', senderDomains: ['p.test'] },
                { name: 'y', connectorType: 'partner', senderDomains: ['p.test'] },
              ],
            },
          ],
        },
        '/tmp',
        null,
      ),
    /both claim sender domain p\.test/,
  );
  assert.throws(
    () =>
      buildConfig(
        {
          organizations: [
            {
              name: 'a',
              acceptedDomains: [{ domain: 'a.test' }],
              inboundConnectors: [
                { name: 'x', connectorType: 'partner', senderDomains: ['p.test'], restrictDomainsToCertificate: true },
              ],
            },
          ],
        },
        '/tmp',
        null,
      ),
    /restrictDomainsToCertificate: needs tlsSenderCertificateName/,
  );
});

test("one organisation's servers are never taken for another's onPremises servers", () => {
  const two = (alpha: Record<string, unknown>, beta: Record<string, unknown>) =>
    buildConfig(
      {
        organizations: [
          { name: 'alpha', acceptedDomains: [{ domain: 'alpha.test' }], inboundConnectors: [alpha] },
          { name: 'beta', acceptedDomains: [{ domain: 'beta.test' }], inboundConnectors: [beta] },
        ],
      },
      '/tmp',
      null,
    );
  // A partner's anti-spoofing flag on an onPremises connector does not break an address tie.
  assert.throws(
    () =>
      two(
        { name: 'A servers', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.0/24'] },
        {
          name: 'B servers',
          connectorType: 'onPremises',
          senderIPAddresses: ['127.0.0.20'],
          senderDomains: ['beta.test'],
          restrictDomainsToIPAddresses: true,
        },
      ),
    /inbound connectors "A servers" \(organization alpha\) and "B servers" \(organization beta\) both match client address/,
  );
  // Nor does another organisation's restricted partner connector for the same address take them.
  const shared = new InboundPolicy(
    two(
      { name: 'A servers', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.20'] },
      {
        name: 'B partner',
        connectorType: 'partner',
        senderIPAddresses: ['127.0.0.20'],
        senderDomains: ['partner.test'],
        restrictDomainsToIPAddresses: true,
      },
    ),
  );
  const m = shared.mailFrom(view({ clientIp: '127.0.0.20', senderDomain: 'alpha.test' }));
  assert.ok(m.ok && m.match?.connector.name === 'A servers' && m.match.by === 'ip');
  // An onPremises connector's certificate is of its own organisation's domains.
  assert.throws(
    () =>
      two(
        { name: 'A servers', connectorType: 'onPremises', tlsSenderCertificateName: '*.alpha.test' },
        { name: 'B servers', connectorType: 'onPremises', tlsSenderCertificateName: 'mail.alpha.test' },
      ),
    /inboundConnectors\[0\]\.tlsSenderCertificateName: "mail\.alpha\.test" is not in a domain of organization "beta" \(beta\.test\)/,
  );
  // Nor of a domain under them that another organisation accepts.
  assert.throws(
    () =>
      buildConfig(
        {
          organizations: [
            {
              name: 'alpha',
              acceptedDomains: [{ domain: 'alpha.test' }],
              inboundConnectors: [
                { name: 'A servers', connectorType: 'onPremises', tlsSenderCertificateName: '*.eu.alpha.test' },
              ],
            },
            { name: 'beta', acceptedDomains: [{ domain: 'eu.alpha.test' }] },
          ],
        },
        '/tmp',
        null,
      ),
    /"\*\.eu\.alpha\.test" is not in a domain of organization "alpha"/,
  );
  // Sender domains do not identify an onPremises connector, so they cannot tie with a partner's.
  assert.doesNotThrow(() =>
    two(
      {
        name: 'A servers',
        connectorType: 'onPremises',
        senderIPAddresses: ['127.0.0.21'],
        senderDomains: ['shared.test'],
      },
      { name: 'Shared partner', connectorType: 'partner', senderDomains: ['shared.test'] },
    ),
  );
});

test("an organisation's onPremises certificate is never outranked by another organisation's partner connector", async () => {
  const p = new InboundPolicy(
    buildConfig(
      {
        organizations: [
          {
            name: 'alpha',
            acceptedDomains: [{ domain: 'alpha.test' }],
            inboundConnectors: [
              { name: 'A servers', connectorType: 'onPremises', tlsSenderCertificateName: 'mail.alpha.test' },
            ],
          },
          {
            name: 'beta',
            acceptedDomains: [{ domain: 'beta.test' }],
            inboundConnectors: [
              {
                name: 'B partner',
                connectorType: 'partner',
                tlsSenderCertificateName: '*.alpha.test',
                senderDomains: ['partner.test'],
                restrictDomainsToCertificate: true,
              },
            ],
          },
        ],
      },
      '/tmp',
      null,
    ),
  );
  const alpha = chainOf((await pki.issue('mail.alpha.test')).issued.certPem + pki.intermediate.certPem);
  const m = p.mailFrom(view({ clientCert: judged(p, alpha), senderDomain: 'alpha.test' }));
  assert.ok(m.ok && m.match?.connector.name === 'A servers', `matched ${m.ok && m.match?.connector.name}`);
});

test("a partner connector for one name under an organisation's own servers' wildcard is that partner, not a server", async () => {
  const orgs = (partnerOrg: 'alpha' | 'beta') =>
    new InboundPolicy(
      buildConfig(
        {
          organizations: ['alpha', 'beta'].map((name) => ({
            name,
            acceptedDomains: [{ domain: `${name}.test` }],
            inboundConnectors: [
              ...(name === 'alpha'
                ? [{ name: 'A servers', connectorType: 'onPremises', tlsSenderCertificateName: '*.alpha.test' }]
                : []),
              ...(name === partnerOrg
                ? [{ name: 'Vendor', connectorType: 'partner', tlsSenderCertificateName: 'mailer.alpha.test' }]
                : []),
            ],
          })),
        },
        '/tmp',
        null,
      ),
    );
  const vendor = chainOf((await pki.issue('mailer.alpha.test')).issued.certPem + pki.intermediate.certPem);
  const own = orgs('alpha');
  const v = view({ clientCert: judged(own, vendor), senderDomain: 'vendor.test' });
  const m = own.mailFrom(v);
  assert.ok(m.ok && m.match?.connector.name === 'Vendor', 'the organisation carved the name out of its wildcard');
  assert.ok(!own.recipient(mb('<x@internet.test>'), { ...v, match: m.match! }).ok, 'so it relays nothing');
  const other = orgs('beta');
  const o = other.mailFrom(view({ clientCert: judged(other, vendor), senderDomain: 'vendor.test' }));
  assert.ok(o.ok && o.match?.connector.name === 'A servers', "another organisation's partner connector cannot");
});

test('of two certificate names a client certificate satisfies, the more specific connector is chosen', async () => {
  const hosted = chainOf((await pki.issue('relay.hosting.test')).issued.certPem + pki.intermediate.certPem);
  for (const order of [0, 1]) {
    const connectors = [
      { name: 'Hosting wildcard', connectorType: 'partner', tlsSenderCertificateName: '*.hosting.test' },
      { name: 'Exact relay', connectorType: 'partner', tlsSenderCertificateName: 'relay.hosting.test' },
    ];
    const p = policy(order ? connectors.reverse() : connectors);
    const m = p.mailFrom(view({ clientCert: judged(p, hosted), senderDomain: 'hosting.test' }));
    assert.ok(
      m.ok && m.match?.connector.name === 'Exact relay',
      `listed in order ${order}: ${m.ok && m.match?.connector.name}`,
    );
  }
});

// Issue 8 (1, 14): a certificate grants nothing inbound unless it is trusted, allows client
// authentication and is not revoked; every refusal names the cause.

const refusal = (p: InboundPolicy, cert: ClientCertificate | undefined) => {
  const v = p.mailFrom(view(cert ? { clientCert: cert } : {}));
  assert.ok(!v.ok, 'refused');
  assert.equal(v.reply.code, 550);
  assert.equal(v.reply.enhanced, '5.7.1');
  assert.equal(
    v.reply.message,
    "Sender domain fabrikam.test may only be used by its partner's certificate-authenticated servers",
    'the peer sees no detail',
  );
  return v.reply.reason!;
};
const relayTo = (p: InboundPolicy, cert: ClientCertificate) => {
  const v = view({ clientCert: cert, senderDomain: 'contoso.test' });
  const m = p.mailFrom(v);
  assert.ok(m.ok);
  return {
    match: m.match,
    rcpt: p.recipient(mb('<x@internet.test>'), { ...v, ...(m.match ? { match: m.match } : {}) }),
  };
};

test('a revoked certificate never matches: no partner identification, no anti-spoofing pass, no relay', () => {
  for (const mode of ['softFail', 'hardFail'] as const) {
    const p = policy([], [], mode);
    const why = refusal(p, judged(p, fabrikam, REVOKED));
    assert.match(
      why,
      /^partner connector "From Fabrikam" \(organization contoso\) requires a client certificate matching \*\.fabrikam\.test for fabrikam\.test; presented CN=mail\.fabrikam\.test, O=Private Org \(SHA-256 [0-9A-F:]+\): certificate CN=x is REVOKED since 2026-11-27T15:00:00\.000Z \(CRL http:\/\/crl\.test\/int\.crl: revoked\)$/,
      mode,
    );
    const other = p.mailFrom(view({ clientCert: judged(p, fabrikam, REVOKED), senderDomain: 'elsewhere.test' }));
    assert.ok(other.ok && other.match === undefined, `${mode}: not identified by the revoked certificate`);
    const { match, rcpt } = relayTo(p, judged(p, onprem, REVOKED));
    assert.equal(match, undefined, `${mode}: the on-premises connector is not matched`);
    assert.ok(!rcpt.ok && rcpt.reply.message === 'Relay access denied');
    assert.match(
      rcpt.reply.reason!,
      /not allowed to relay; its client certificate does not identify onPremises connector "From on-premises" \(organization contoso\): presented CN=mail\.corp\.contoso\.test, O=Public Org \(SHA-256 [0-9A-F:]+\): certificate CN=x is REVOKED since /,
    );
  }
});

test('unknown revocation status: softFail counts the certificate, hardFail does not and says why', () => {
  const soft = policy([], [], 'softFail');
  const ok = soft.mailFrom(view({ clientCert: judged(soft, fabrikam, UNKNOWN) }));
  assert.ok(ok.ok && ok.match?.by === 'certificate');
  assert.ok(relayTo(soft, judged(soft, onprem, UNKNOWN)).rcpt.ok, 'softFail: the on-premises server relays');
  const hard = policy([], [], 'hardFail');
  assert.match(
    refusal(hard, judged(hard, fabrikam, UNKNOWN)),
    /: tls\.revocation hardFail: revocation status of CN=x unknown \(OCSP http:\/\/ocsp\.test: unreachable \(ECONNREFUSED\)\)$/,
  );
  const { rcpt } = relayTo(hard, judged(hard, onprem, UNKNOWN));
  assert.ok(!rcpt.ok);
  assert.match(
    rcpt.reply.reason!,
    /does not identify onPremises connector "From on-premises" .*tls\.revocation hardFail: revocation status of CN=x unknown/,
  );
  const good = hard.mailFrom(view({ clientCert: judged(hard, fabrikam, GOOD) }));
  assert.ok(good.ok && good.match?.by === 'certificate', 'hardFail: a confirmed good status counts');
  assert.ok(relayTo(hard, judged(hard, onprem, GOOD)).rcpt.ok);
});

test('a certificate whose revocation status was not established never counts unless tls.revocation is off', () => {
  const soft = policy();
  const unchecked = judgeClientChain(
    fabrikam,
    new TrustStore(false, [pki.rootFile]),
    soft.connectors.anchors,
    'softFail',
  )!.cert;
  assert.match(refusal(soft, unchecked), /: its revocation status was not checked$/);
  const off = policy([], [], 'off');
  const j = judgeClientChain(fabrikam, new TrustStore(false, [pki.rootFile]), off.connectors.anchors, 'off')!;
  assert.equal(j.check, undefined, 'off: nothing to fetch');
  const v = off.mailFrom(view({ clientCert: j.cert }));
  assert.ok(v.ok && v.match?.by === 'certificate');
});

test('extended key usage: a serverAuth-only certificate does not authenticate a client', () => {
  const p = policy();
  const cert = judged(p, serverOnly);
  assert.equal(cert.ekuError, 'its extended key usage is limited to serverAuth and does not include clientAuth');
  assert.equal(cert.revocation, undefined, 'nothing is fetched for a certificate that cannot count');
  assert.match(
    refusal(p, cert),
    /presented CN=mx2\.fabrikam\.test, O=Private Org \(SHA-256 [0-9A-F:]+\): its extended key usage is limited to serverAuth and does not include clientAuth$/,
  );
});

test('refusals name the cause: no certificate, name mismatch, expired, chain incomplete', () => {
  const p = policy();
  assert.match(refusal(p, undefined), /for fabrikam\.test; no certificate was presented$/);
  assert.match(
    refusal(p, judged(p, stranger)),
    /presented CN=mx\.stranger\.test, O=Public Org \(SHA-256 [0-9A-F:]+\): name mismatch, it carries mx\.stranger\.test, required \*\.fabrikam\.test$/,
  );
  assert.match(
    refusal(p, judged(p, expired)),
    /presented CN=mx3\.fabrikam\.test, O=Private Org \(SHA-256 [0-9A-F:]+\): certificate not trusted \(certificate CN=mx3\.fabrikam\.test, O=Private Org expired on .+\)$/,
  );
  assert.match(
    refusal(p, judged(p, noIntermediate)),
    /presented CN=mx4\.fabrikam\.test, O=Private Org \(SHA-256 [0-9A-F:]+\): certificate not trusted \(unable to find issuer "CN=Private Issuing CA, O=Private Trust" in the trust store\)$/,
  );
});
