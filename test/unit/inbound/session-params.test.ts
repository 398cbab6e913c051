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
