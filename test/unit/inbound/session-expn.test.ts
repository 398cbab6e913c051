// EXPN on a gateway that expands no lists (RFC 5321 §7.3: a server that disables VRFY or EXPN
// "MUST return a 252 response, rather than a code that could be confused with successful or
// unsuccessful verification"; §3.5.3): 252 for both, never 250 and never 502/550.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { listenSessions, sessionDeps } from '../../helpers/session.ts';
import { SmtpClient } from '../../helpers/smtp.ts';

test('VRFY and EXPN are answered 252 (disabled, will attempt delivery), as RFC 5321 §7.3 requires', async () => {
  const deps = sessionDeps();
  const srv = await listenSessions(deps);
  const c = await SmtpClient.connect(srv.port);
  try {
    await c.hello();
    const vrfy = await c.expect('VRFY postmaster', 252);
    assert.match(vrfy.text, /^252 2\.5\.0 Cannot VRFY user, but will accept message and attempt delivery$/);
    const expn = await c.expect('EXPN staff', 252);
    assert.match(expn.text, /^252 2\.5\.0 Cannot EXPN list, but will accept message and attempt delivery$/);
    await c.expect('MAIL FROM:<a@fabrikam.test>', 250); // the session goes on
    await c.expect('QUIT', 221);
  } finally {
    c.close();
    await srv.close();
  }
});
