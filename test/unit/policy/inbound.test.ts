import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildConfig } from '../../../src/config/load.ts';
import { parsePathArg, type Mailbox } from '../../../src/inbound/address.ts';
import { InboundPolicy } from '../../../src/policy/inbound.ts';

const config = buildConfig(
  {
    organizations: [
      {
        name: 'contoso',
        acceptedDomains: [{ domain: 'contoso.test' }, { domain: 'corp.contoso.test', recipients: ['alice', 'bob'] }],
      },
      { name: 'fabrikam', acceptedDomains: [{ domain: 'fabrikam.test' }] },
    ],
  },
  '/tmp',
  null,
);
const policy = new InboundPolicy(config);
const session = { clientIp: '127.0.0.1', tls: true, senderDomain: 'sender.test' };
const mb = (s: string): Mailbox => {
  const r = parsePathArg(s, { allowNull: false, utf8Allowed: false });
  if (!r.ok) throw new Error(r.reply.message);
  return r.mailbox;
};
const verdict = (s: string) => policy.recipient(mb(s), session);

test('accepted domains route locally with their organization', () => {
  const v = verdict('<Alice@CONTOSO.test>');
  assert.ok(v.ok);
  assert.equal(v.org, 'contoso');
  assert.equal(v.route, 'local');
  const f = verdict('<x@fabrikam.test>');
  assert.ok(f.ok && f.org === 'fabrikam');
});

test('outside domains are relay-denied with 550 5.7.1', () => {
  const v = verdict('<x@other.test>');
  assert.ok(!v.ok);
  assert.equal(v.reply.code, 550);
  assert.equal(v.reply.enhanced, '5.7.1');
  assert.match(v.reply.reason ?? '', /not an accepted domain/);
});

test('classic relay tricks are never accepted', () => {
  for (const trick of [
    '<user%other.test@contoso.test>',
    '<@contoso.test:user@other.test>',
    '<other.test!user@contoso.test>',
    '<"user@other.test"@contoso.test>',
    '<"user%other.test"@contoso.test>',
  ]) {
    const v = verdict(trick);
    assert.ok(!v.ok, `${trick} must be refused`);
    assert.equal(v.reply.enhanced, '5.7.1', trick);
  }
});

test('recipient lists: unknown users get 550 5.1.1; postmaster is always accepted', () => {
  assert.ok(verdict('<bob@corp.contoso.test>').ok);
  const v = verdict('<mallory@corp.contoso.test>');
  assert.ok(!v.ok && v.reply.enhanced === '5.1.1');
  assert.ok(verdict('<postmaster@corp.contoso.test>').ok);
  const bare = verdict('<postmaster>');
  assert.ok(bare.ok && bare.address === 'postmaster@contoso.test');
});

test('accepted-domain recipients keep the canonical form: a quoted local part stays quoted', () => {
  const inject = verdict('<"x> NOTIFY=NEVER ORCPT=rfc822;y"@Contoso.TEST>');
  assert.ok(inject.ok);
  assert.equal(inject.address, '"x> NOTIFY=NEVER ORCPT=rfc822;y"@contoso.test');
  const carol = verdict('<"\\"carol\\""@contoso.test>');
  assert.ok(carol.ok && carol.address === '"\\"carol\\""@contoso.test');
  const space = verdict('<"a b"@contoso.test>');
  assert.ok(space.ok && space.address === '"a b"@contoso.test');
  const plain = verdict('<"simple"@contoso.test>');
  assert.ok(plain.ok && plain.address === 'simple@contoso.test');
  // Recipient lists compare the local part itself: "Bob" is bob, "\"bob\"" is someone else.
  assert.ok(verdict('<"Bob"@corp.contoso.test>').ok);
  const quotes = verdict('<"\\"bob\\""@corp.contoso.test>');
  assert.ok(!quotes.ok && quotes.reply.enhanced === '5.1.1');
});

test('an onPremises connector is identified by certificate or address only: claiming its sender domain relays nothing', () => {
  const c = buildConfig(
    {
      organizations: [
        {
          name: 'northwind',
          acceptedDomains: [{ domain: 'northwind.test' }],
          inboundConnectors: [
            {
              name: 'HQ',
              connectorType: 'onPremises',
              senderDomains: ['northwind.test'],
              senderIPAddresses: ['127.0.0.20'],
            },
          ],
        },
        { name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] },
      ],
    },
    '/tmp',
    null,
  );
  const p = new InboundPolicy(c);
  const from = (clientIp: string) => {
    const v = { clientIp, tls: true, senderDomain: 'northwind.test' };
    const m = p.mailFrom(v);
    assert.ok(m.ok);
    return { ...v, ...(m.match ? { match: m.match } : {}) };
  };
  const outsider = from('127.0.0.1');
  assert.equal(outsider.match, undefined, 'the sender domain alone does not identify the onPremises connector');
  const relayed = p.recipient(mb('<victim@internet.test>'), outsider);
  assert.ok(!relayed.ok && relayed.reply.code === 550 && relayed.reply.enhanced === '5.7.1', 'no relay');
  const own = from('127.0.0.20');
  assert.equal(own.match?.by, 'ip');
  assert.ok(p.recipient(mb('<victim@internet.test>'), own).ok, 'its servers relay');
  // A relayed domain written in UTF-8 or by its A-label is one recipient, in the A-label form.
  for (const arg of ['<Anna@BÜCHER.example>', '<Anna@xn--bcher-kva.example>']) {
    const r = parsePathArg(arg, { allowNull: false, utf8Allowed: true });
    assert.ok(r.ok);
    const v = p.recipient(r.mailbox, own);
    assert.ok(v.ok && v.address === 'Anna@xn--bcher-kva.example', arg);
  }
});

test('a recipient domain written in UTF-8 is the accepted domain configured by its A-label', () => {
  const c = buildConfig(
    { organizations: [{ name: 'bucher', acceptedDomains: [{ domain: 'xn--bcher-kva.test' }] }] },
    '/tmp',
    null,
  );
  const p = new InboundPolicy(c);
  const r = parsePathArg('<Anna@BÜCHER.test>', { allowNull: false, utf8Allowed: true });
  assert.ok(r.ok);
  const v = p.recipient(r.mailbox, session);
  assert.ok(v.ok, !v.ok ? v.reply.message : '');
  assert.deepEqual([v.address, v.org, v.route], ['Anna@xn--bcher-kva.test', 'bucher', 'local']);
  assert.deepEqual(
    p.destination('x@bücher.test'),
    { address: 'x@xn--bcher-kva.test', route: 'local', org: 'bucher' },
    "a bounce to a UTF-8 sender goes to the mailbox its mail goes to (the domain's configured form)",
  );
  assert.deepEqual(p.destination('x@elsewhere.test'), { address: 'x@elsewhere.test', route: 'remote' });
});
