// Relay control against the real process: outside domains and the classic relay tricks are refused.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cleanup, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { SmtpClient } from '../helpers/smtp.ts';

let gw: GatewayHandle;
before(async () => {
  gw = await startGateway({
    config: {
      organizations: [
        {
          name: 'contoso',
          acceptedDomains: [{ domain: 'contoso.test' }, { domain: 'hr.contoso.test', recipients: ['alice'] }],
          inboundConnectors: [
            { name: 'Contoso servers', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.5/32'] },
          ],
        },
        { name: 'tailspin', acceptedDomains: [{ domain: 'tailspin.test' }] },
      ],
    },
  });
});
after(() => cleanup(gw));

const denied = [
  'someone@other.test',
  'user%other.test@contoso.test',
  '@contoso.test:user@other.test',
  '@contoso.test,@hr.contoso.test:user@other.test',
  'other.test!user@contoso.test',
  '"user@other.test"@contoso.test',
  '"user%other.test"@contoso.test',
  'user@contoso.test.other.test',
  'user@[127.0.0.1]',
];

test('relay is denied with 550 5.7.1 for outside domains and every relay trick; nothing is queued', async () => {
  const c = await SmtpClient.connect(gw.port);
  await c.hello();
  await c.expect('MAIL FROM:<spammer@evil.test>', 250);
  for (const rcpt of denied) {
    const r = await c.cmd(`RCPT TO:<${rcpt}>`);
    assert.equal(r.code, 550, `${rcpt}: ${r.text}`);
    assert.match(r.text, /^550 5\.7\.1 Relay access denied/, rcpt);
  }
  const d = await c.cmd('DATA');
  assert.equal(d.code, 554);
  assert.match(d.text, /5\.5\.1 No valid recipients/);
  await c.expect('QUIT', 221);
  const q = await gw.cli(['queue', 'list', '--all', '--json']);
  assert.equal(q.code, 0, q.stderr);
  assert.deepEqual(JSON.parse(q.stdout), []);
});

test('unknown users in a recipient list get 550 5.1.1; the known one is accepted', async () => {
  const c = await SmtpClient.connect(gw.port);
  await c.hello();
  await c.expect('MAIL FROM:<s@fabrikam.test>', 250);
  const r = await c.cmd('RCPT TO:<mallory@hr.contoso.test>');
  assert.match(r.text, /^550 5\.1\.1 /);
  await c.expect('RCPT TO:<Alice@HR.contoso.test>', 250);
  c.close();
});

test('rejections are logged with the reason for the admin', async () => {
  const e = await gw.waitForLog(
    (x) => x.event === 'message.rejected' && String(x.reason).includes('routing character'),
  );
  assert.equal(e.enhanced, '5.7.1');
});

test('mail between organisations hosted here is delivered internally and traced as such', async () => {
  const c = await SmtpClient.connect(gw.port, '127.0.0.1', '127.0.0.5');
  await c.hello();
  const r = await c.send('alice@contoso.test', ['boss@tailspin.test'], 'Subject: cross-org\r\n\r\nhi\r\n');
  assert.equal(r.code, 250, r.text);
  c.close();
  const id = /queued as (\w+)/.exec(r.text)![1];
  await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'delivered');
  const t = await gw.cli(['trace', '--queue-id', id]);
  assert.match(t.stdout, /delivered internally from organization contoso to organization tailspin/);
  assert.match(t.stdout, /inbound connector: "Contoso servers" \(organization contoso, matched by ip\)/);
});
