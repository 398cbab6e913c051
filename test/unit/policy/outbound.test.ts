import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildConfig } from '../../../src/config/load.ts';
import { OutboundPolicy, patternMatch, raise, requireTlsProblem, strictest } from '../../../src/policy/outbound.ts';
import { atLeast, CONNECTOR_TLS_LEVELS, levelRank, TLS_LEVELS } from '../../../src/tls/levels.ts';

const config = buildConfig(
  {
    organizations: [
      {
        name: 'contoso',
        acceptedDomains: [{ domain: 'contoso.test' }, { domain: 'corp.contoso.test', type: 'internalRelay' }],
        outboundConnectors: [
          {
            name: 'To Fabrikam',
            recipientDomains: ['fabrikam.test', '*.fabrikam.test'],
            tlsSettings: 'domainValidation',
            tlsDomain: '*.fabrikam.test',
          },
          { name: 'To Fabrikam EU', recipientDomains: ['*.eu.fabrikam.test'], tlsSettings: 'encryptionOnly' },
          { name: 'Exact wins', recipientDomains: ['hr.fabrikam.test'], tlsSettings: 'certificateValidation' },
          { name: 'Disabled', enabled: false, recipientDomains: ['tailspin.test'], tlsSettings: 'encryptionOnly' },
          {
            name: 'To on-premises',
            connectorType: 'onPremises',
            recipientDomains: ['corp.contoso.test'],
            useMXRecord: false,
            smartHosts: ['mail.corp.contoso.test:2525'],
            tlsSettings: 'domainValidation',
            tlsDomain: 'mail.corp.contoso.test',
          },
        ],
      },
      {
        name: 'northwind',
        acceptedDomains: [{ domain: 'northwind.test' }],
        inboundConnectors: [
          {
            name: 'From HQ',
            connectorType: 'onPremises',
            senderDomains: ['northwind.test'],
            senderIPAddresses: ['127.0.0.20'],
          },
          {
            name: 'From partner',
            connectorType: 'partner',
            senderDomains: ['partner.test'],
            senderIPAddresses: ['127.0.0.21'],
          },
        ],
        outboundConnectors: [
          {
            name: 'Everything via HQ',
            connectorType: 'onPremises',
            routeAllMessagesViaOnPremises: true,
            useMXRecord: false,
            smartHosts: ['hq.northwind.test'],
            tlsSettings: 'encryptionOnly',
          },
          { name: 'Partner', recipientDomains: ['partner.test'], tlsSettings: 'certificateValidation' },
        ],
      },
    ],
  },
  '/tmp',
  null,
);
const p = new OutboundPolicy(config);

test('wildcards and specificity', () => {
  assert.equal(patternMatch('*', 'x.test'), 0);
  assert.ok(patternMatch('*.fabrikam.test', 'fabrikam.test') > 0);
  assert.ok(patternMatch('*.fabrikam.test', 'a.b.fabrikam.test') > 0);
  assert.equal(patternMatch('*.fabrikam.test', 'notfabrikam.test'), -1);
  assert.ok(patternMatch('hr.fabrikam.test', 'hr.fabrikam.test') > patternMatch('*.fabrikam.test', 'hr.fabrikam.test'));
});

test('connector selection: exact, then most specific wildcard; disabled ones are skipped', () => {
  assert.equal(p.connectorFor('contoso', 'fabrikam.test')?.name, 'To Fabrikam');
  assert.equal(p.connectorFor('contoso', 'hr.fabrikam.test')?.name, 'Exact wins');
  assert.equal(p.connectorFor('contoso', 'paris.eu.fabrikam.test')?.name, 'To Fabrikam EU');
  assert.equal(p.connectorFor('contoso', 'www.fabrikam.test')?.name, 'To Fabrikam');
  assert.equal(p.connectorFor('contoso', 'tailspin.test'), undefined);
  assert.equal(p.connectorFor('contoso', 'internet.test'), undefined);
});

test('next hop and TLS level on one scale; default is opportunistic MX', () => {
  const f = p.nextHop('contoso', 'mx.fabrikam.test');
  assert.deepEqual(f.tls, {
    level: 'domainValidation',
    source: 'connector "To Fabrikam"',
    tlsDomain: '*.fabrikam.test',
  });
  assert.equal(f.kind, 'mx');
  const d = p.nextHop('contoso', 'internet.test');
  assert.deepEqual(d.tls, { level: 'opportunistic', source: 'default' });
  const onprem = p.nextHop('contoso', 'corp.contoso.test');
  assert.equal(onprem.kind, 'smarthost');
  assert.deepEqual(onprem.smartHosts, [{ host: 'mail.corp.contoso.test', port: 2525 }]);
});

test('routeAllMessagesViaOnPremises catches internet mail but not specific partners', () => {
  assert.equal(p.connectorFor('northwind', 'internet.test')?.name, 'Everything via HQ');
  assert.equal(p.connectorFor('northwind', 'partner.test')?.name, 'Partner');
});

test("routeAllMessagesViaOnPremises does not send the organisation's own servers' mail back to them", () => {
  const hq = { name: 'From HQ', organization: 'northwind', by: 'certificate' as const };
  assert.equal(p.nextHop('northwind', 'internet.test', {}, hq).kind, 'mx', 'came from on-premises: straight out');
  assert.equal(p.connectorFor('northwind', 'partner.test', hq)?.name, 'Partner', 'a partner connector still applies');
  const partner = { name: 'From partner', organization: 'northwind', by: 'ip' as const };
  assert.equal(p.connectorFor('northwind', 'internet.test', partner)?.name, 'Everything via HQ');
  const other = { name: 'From HQ', organization: 'contoso', by: 'ip' as const };
  assert.equal(p.connectorFor('northwind', 'internet.test', other)?.name, 'Everything via HQ', "another org's");
});

test('levels only rise', () => {
  const base = { level: 'certificateValidation' as const, source: 'a' };
  assert.equal(raise(base, { level: 'opportunistic', source: 'b' }), base);
  assert.equal(raise(base, { level: 'domainValidation', source: 'c' }).source, 'c');
});

test('the strictest demand wins; of equally strict demands the first consulted is named; none: the default', () => {
  assert.deepEqual(strictest([]), { level: 'opportunistic', source: 'default' });
  assert.deepEqual(strictest([{ level: 'opportunistic', source: 'a' }]), { level: 'opportunistic', source: 'default' });
  const demands = [
    { level: 'encryptionOnly' as const, source: 'a' },
    { level: 'domainValidation' as const, source: 'b', tlsDomain: 'mx.b.test' },
    { level: 'certificateValidation' as const, source: 'c' },
    { level: 'domainValidation' as const, source: 'd', tlsDomain: 'mx.d.test' },
  ];
  assert.deepEqual(strictest(demands), demands[1]);
});

test('one scale: ranks follow its order, connectors may demand every level but none and dane', () => {
  assert.deepEqual(TLS_LEVELS.map(levelRank), [0, 1, 2, 3, 4, 5]);
  assert.ok(atLeast('dane', 'domainValidation'));
  assert.deepEqual(CONNECTOR_TLS_LEVELS, [
    'opportunistic',
    'encryptionOnly',
    'certificateValidation',
    'domainValidation',
  ]);
  assert.ok(atLeast('domainValidation', 'certificateValidation') && atLeast('encryptionOnly', 'encryptionOnly'));
  assert.ok(!atLeast('opportunistic', 'encryptionOnly') && !atLeast('none', 'opportunistic'));
  assert.throws(
    () =>
      buildConfig(
        {
          organizations: [
            {
              name: 'x',
              acceptedDomains: [{ domain: 'x.test' }],
              outboundConnectors: [{ name: 'n', recipientDomains: ['y.test'], tlsSettings: 'none' }],
            },
          ],
        },
        '/tmp',
        null,
      ),
    /tlsSettings/,
  );
});

test('internalRelay needs an onPremises connector', () => {
  assert.throws(
    () =>
      buildConfig(
        { organizations: [{ name: 'x', acceptedDomains: [{ domain: 'x.test', type: 'internalRelay' }] }] },
        '/tmp',
        null,
      ),
    /x\.test is internalRelay, but organization "x" has no enabled onPremises outbound connector/,
  );
});

test("TLS-Required: No waives only published demands (DANE, MTA-STS), never a connector's; REQUIRETLS makes it ignored (RFC 8689 §4.1, §5)", () => {
  const dane = { level: 'domainValidation' as const, source: 'DANE (test)', published: true };
  const conn = { level: 'encryptionOnly' as const, source: 'connector "X"' };
  assert.equal(strictest([dane, conn]).source, 'DANE (test)');
  assert.equal(strictest([dane, conn], { tlsRequiredNo: true }).source, 'connector "X"', 'the connector still applies');
  assert.equal(strictest([dane], { tlsRequiredNo: true }).level, 'opportunistic', 'relaxed to opportunistic');
  assert.equal(
    strictest([dane], { tlsRequiredNo: true, requireTls: true }).source,
    'DANE (test)',
    'ignored with REQUIRETLS',
  );
  assert.equal(strictest([conn], { tlsRequiredNo: true }).level, 'encryptionOnly');
});

test('REQUIRETLS needs a source that authenticates the next hop (certificateValidation and above)', () => {
  assert.equal(requireTlsProblem({ level: 'certificateValidation', source: 'connector "X"' }), undefined);
  assert.equal(requireTlsProblem({ level: 'domainValidation', source: 'connector "X"' }), undefined);
  for (const level of ['opportunistic', 'encryptionOnly'] as const) {
    assert.match(
      requireTlsProblem({ level, source: 'default' })!,
      new RegExp(
        `^TLS required by REQUIRETLS \\(RFC 8689\\): the next hop is not authenticated .* \\(${level} by default\\)$`,
      ),
    );
  }
  const p = new OutboundPolicy(config);
  assert.equal(requireTlsProblem(p.nextHop('contoso', 'hr.fabrikam.test', { requireTls: true }).tls), undefined);
  assert.ok(requireTlsProblem(p.nextHop('contoso', 'example.test', { requireTls: true }).tls));
});

test('a UTF-8 recipient domain is routed by its A-label: the connector for it applies, with its TLS settings', () => {
  const c = buildConfig(
    {
      organizations: [
        {
          name: 'contoso',
          acceptedDomains: [{ domain: 'contoso.test' }],
          outboundConnectors: [
            { name: 'To Bücher', recipientDomains: ['xn--bcher-kva.test'], tlsSettings: 'certificateValidation' },
          ],
        },
      ],
    },
    '/tmp',
    null,
  );
  const hop = new OutboundPolicy(c).nextHop('contoso', 'BÜCHER.test');
  assert.equal(hop.domain, 'xn--bcher-kva.test');
  assert.equal(hop.connector?.name, 'To Bücher');
  assert.equal(hop.tls.level, 'certificateValidation');
});
