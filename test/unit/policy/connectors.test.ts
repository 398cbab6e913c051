import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { buildConfig } from '../../../src/config/load.ts';
import { parsePathArg, type Mailbox } from '../../../src/inbound/address.ts';
import { InboundPolicy } from '../../../src/policy/inbound.ts';
import { issueCertificate } from '../../../src/tls/certgen.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { makePki, type Pki } from '../../helpers/pki.ts';
import { tempDir } from '../../helpers/gateway.ts';

let pki: Pki; let partnerPki: Pki;
let fabrikam: X509Certificate[]; let stranger: X509Certificate[]; let selfSigned: X509Certificate[]; let onprem: X509Certificate[];
const chainOf = (pem: string) => (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((p) => new X509Certificate(p));

before(async () => {
  const dir = tempDir();
  pki = await makePki(dir, 'Public');          // in our trust store
  partnerPki = await makePki(dir, 'Private');  // trusted only by the connector (trustedCAs)
  fabrikam = chainOf((await partnerPki.issue('mail.fabrikam.test')).issued.certPem + partnerPki.intermediate.certPem);
  stranger = chainOf((await pki.issue('mx.stranger.test')).issued.certPem + pki.intermediate.certPem);
  selfSigned = chainOf((await issueCertificate({ subject: 'CN=mail.fabrikam.test', dnsNames: ['mail.fabrikam.test'], key: 'ec256' })).certPem);
  onprem = chainOf((await pki.issue('mail.corp.contoso.test')).issued.certPem + pki.intermediate.certPem);
});

function policy(extra: Record<string, unknown>[] = [], pins: string[] = []) {
  const config = buildConfig({
    organizations: [{
      name: 'contoso',
      acceptedDomains: [{ domain: 'contoso.test' }, { domain: 'corp.contoso.test' }],
      inboundConnectors: [
        { name: 'From Fabrikam', connectorType: 'partner', senderDomains: ['fabrikam.test', '*.fabrikam.test'], senderIPAddresses: ['127.0.0.3/32'],
          requireTls: true, tlsSenderCertificateName: '*.fabrikam.test', restrictDomainsToCertificate: true, trustedCAs: [partnerPki.rootFile], pinnedCertificates: pins },
        { name: 'From on-premises', connectorType: 'onPremises', tlsSenderCertificateName: 'mail.corp.contoso.test', senderIPAddresses: ['127.0.0.4/32'], treatMessagesAsInternal: true },
        ...extra,
      ],
    }],
  }, '/tmp', null);
  return new InboundPolicy(config, new TrustStore(false, [pki.rootFile]));
}

const view = (o: Partial<{ clientIp: string; tls: boolean; clientChain: X509Certificate[]; senderDomain: string }>) =>
  ({ clientIp: '127.0.0.9', tls: true, clientChain: [], senderDomain: 'fabrikam.test', ...o });
const mb = (s: string): Mailbox => { const r = parsePathArg(s, { allowNull: false, utf8Allowed: false }); if ('code' in r) throw new Error(r.message); return r.mailbox; };

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
  assert.match(none.reply.reason!, /requires a client certificate matching \*\.fabrikam\.test .*no certificate was presented/);
  const wrong = p.mailFrom(view({ clientChain: stranger }));
  assert.ok(!wrong.ok);
  assert.match(wrong.reply.reason!, /presented CN=mx\.stranger\.test/);
  const ok = p.mailFrom(view({ clientChain: fabrikam }));
  assert.ok(ok.ok && ok.match?.connector.name === 'From Fabrikam' && ok.match.by === 'certificate');
});

test('a self-signed certificate with the right name never satisfies the connector unless pinned', () => {
  assert.ok(!policy().mailFrom(view({ clientChain: selfSigned })).ok);
  assert.ok(policy([], [selfSigned[0].fingerprint256]).mailFrom(view({ clientChain: selfSigned })).ok);
});

test('restrictDomainsToIPAddresses', () => {
  const p = policy([{ name: 'From Tailspin', connectorType: 'partner', senderDomains: ['tailspin.test'], senderIPAddresses: ['127.0.0.5/32'], restrictDomainsToIPAddresses: true }]);
  const bad = p.mailFrom(view({ senderDomain: 'tailspin.test', clientIp: '127.0.0.6' }));
  assert.ok(!bad.ok && bad.reply.enhanced === '5.7.1');
  assert.match(bad.reply.reason!, /accepts tailspin\.test only from 127\.0\.0\.5\/32; the client is 127\.0\.0\.6/);
  assert.ok(p.mailFrom(view({ senderDomain: 'tailspin.test', clientIp: '127.0.0.5' })).ok);
});

test('selection order: certificate, then IP, then sender domain', () => {
  const p = policy();
  const byCert = p.mailFrom(view({ clientChain: onprem, clientIp: '127.0.0.3', senderDomain: 'contoso.test' }));
  assert.ok(byCert.ok && byCert.match?.connector.name === 'From on-premises', 'the certificate wins over the address of another connector');
  const byIp = p.mailFrom(view({ clientIp: '127.0.0.4', senderDomain: 'contoso.test' }));
  assert.ok(byIp.ok && byIp.match?.by === 'ip');
  const byDomain = p.mailFrom(view({ clientChain: fabrikam, clientIp: '127.0.0.9', senderDomain: 'sub.fabrikam.test' }));
  assert.ok(byDomain.ok && byDomain.match?.by === 'certificate');
});

test('relay: only an onPremises session, and only for its organization', () => {
  const p = policy();
  const rcpt = (v: ReturnType<typeof view>) => {
    const m = p.mailFrom(v);
    assert.ok(m.ok);
    return p.recipient(mb('<x@internet.test>'), { ...v, ...(m.match ? { match: m.match } : {}) });
  };
  assert.ok(rcpt(view({ clientChain: onprem, senderDomain: 'contoso.test' })).ok, 'certificate-identified on-premises server relays');
  assert.ok(rcpt(view({ clientChain: onprem, senderDomain: 'customer.test' })).ok, 'certificate domain attributes the message');
  assert.ok(rcpt(view({ clientIp: '127.0.0.4', senderDomain: 'contoso.test' })).ok, 'IP-identified, own sender domain');
  const foreign = rcpt(view({ clientIp: '127.0.0.4', senderDomain: 'customer.test' }));
  assert.ok(!foreign.ok && foreign.reply.enhanced === '5.7.1');
  const partner = rcpt(view({ clientChain: fabrikam, senderDomain: 'fabrikam.test' }));
  assert.ok(!partner.ok && partner.reply.enhanced === '5.7.1', 'a partner connector never grants relay');
  assert.ok(!rcpt(view({ senderDomain: 'contoso.test' })).ok, 'an unidentified client never relays');
});

test('ambiguous connectors are a configuration error', () => {
  assert.throws(() => policy([{ name: 'Copy', connectorType: 'partner', senderDomains: ['x.test'], tlsSenderCertificateName: '*.fabrikam.test', restrictDomainsToCertificate: true }]),
    /both identified by certificate name \*\.fabrikam\.test/);
  assert.throws(() => policy([{ name: 'Overlap', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.0/24'] }]), /both match client address/);
  assert.throws(() => buildConfig({ organizations: [{ name: 'a', acceptedDomains: [{ domain: 'a.test' }], inboundConnectors: [
    { name: 'x', connectorType: 'partner', senderDomains: ['p.test'] }, { name: 'y', connectorType: 'partner', senderDomains: ['p.test'] }] }] }, '/tmp', null), /both claim sender domain p\.test/);
  assert.throws(() => buildConfig({ organizations: [{ name: 'a', acceptedDomains: [{ domain: 'a.test' }], inboundConnectors: [
    { name: 'x', connectorType: 'partner', senderDomains: ['p.test'], restrictDomainsToCertificate: true }] }] }, '/tmp', null), /restrictDomainsToCertificate: needs tlsSenderCertificateName/);
});
