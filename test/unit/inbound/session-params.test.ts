// MAIL parameters after HELO: no service extension was offered, so a parameter is not implemented
// (555, RFC 5321 §4.1.1.11), SMTPUTF8 included; after EHLO a malformed SMTPUTF8 is 501.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { listenSessions, sessionDeps } from '../../helpers/session.ts';
import { SmtpClient } from '../../helpers/smtp.ts';

test('SMTPUTF8 after HELO is 555 (not offered), after EHLO with a value 501', async () => {
  const srv = await listenSessions(sessionDeps());
  try {
    const c = await SmtpClient.connect(srv.port);
    assert.equal((await c.read())?.code, 220);
    await c.expect('HELO client.test', 250);
    const helo = await c.cmd('MAIL FROM:<a@fabrikam.test> SMTPUTF8');
    assert.match(helo.text, /^555 5\.5\.4 /);
    await c.expect('EHLO client.test', 250);
    await c.expect('MAIL FROM:<a@fabrikam.test> SMTPUTF8=yes', 501);
    await c.expect('MAIL FROM:<a@fabrikam.test> SMTPUTF8', 250);
    c.close();
  } finally {
    await srv.close();
  }
});

test('recipients of more than 10 organisations in one transaction: 452 4.5.3 for the rest, not counted as errors', async () => {
  const organizations = Array.from({ length: 40 }, (_, i) => ({
    name: `o${i}`,
    acceptedDomains: [{ domain: `o${i}.test` }],
  }));
  let rcpts: { address: string; org: string }[] = [];
  const ingest = {
    async accept(t: { recipients: { address: string; org: string }[] }) {
      rcpts = t.recipients;
      return { ok: true as const, copies: [{ queueId: 'Q1', org: 'o0', recipients: 1 }] };
    },
  };
  const srv = await listenSessions(sessionDeps({}, ingest, organizations));
  const c = await SmtpClient.connect(srv.port);
  try {
    await c.hello();
    await c.expect('MAIL FROM:<a@internet.test>', 250);
    for (let i = 0; i < 10; i++) await c.expect(`RCPT TO:<u@o${i}.test>`, 250);
    // More refused recipients than smtp.maxErrors (20): a long list, not a misbehaving client.
    for (let i = 10; i < 40; i++) {
      const r = await c.cmd(`RCPT TO:<u@o${i}.test>`);
      assert.equal(
        r.text,
        '452 4.5.3 Too many recipients: at most 10 organisations per message; send the rest in another',
      );
    }
    await c.expect('RCPT TO:<v@o3.test>', 250); // an organisation already in the transaction
    await c.expect('RCPT TO:<u@o0.test>', 250); // a recipient already in it
    await c.expect('DATA', 354);
    assert.equal((await c.cmd('Subject: s\r\n\r\nhi\r\n.')).code, 250);
    assert.equal(rcpts.length, 11);
    assert.equal(new Set(rcpts.map((x) => x.org)).size, 10);
  } finally {
    c.close();
    await srv.close();
  }
});

test("a partner's domain written in UTF-8 (SMTPUTF8) is held to its connector's anti-spoofing like its ASCII form", async () => {
  const organizations = [
    {
      name: 'contoso',
      acceptedDomains: [{ domain: 'contoso.test' }],
      inboundConnectors: [
        {
          name: 'From Bücher',
          connectorType: 'partner',
          senderDomains: ['xn--bcher-kva.test'],
          senderIPAddresses: ['127.0.0.77'],
          restrictDomainsToIPAddresses: true,
        },
      ],
    },
  ];
  const srv = await listenSessions(sessionDeps({}, {}, organizations));
  const c = await SmtpClient.connect(srv.port);
  try {
    await c.hello();
    for (const from of ['ceo@xn--bcher-kva.test', 'ceo@bücher.test', 'ceo@BÜCHER.test', 'ceo@XN--BCHER-KVA.test']) {
      const r = await c.cmd(`MAIL FROM:<${from}> SMTPUTF8`);
      assert.equal(
        r.text,
        "550 5.7.1 Sender domain xn--bcher-kva.test may only be used from its partner's servers",
        from,
      );
    }
    await c.expect('MAIL FROM:<ceo@bücher.example> SMTPUTF8', 250); // another domain: no connector applies
  } finally {
    c.close();
    await srv.close();
  }
});
