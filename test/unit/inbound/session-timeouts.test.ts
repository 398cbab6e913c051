// Session timeouts. The reply to the end of the data waits for the store, bounded by RFC 5321
// §4.5.3.2.6's 10 minutes, not by the client's command timeout: a store slower than
// smtp.timeouts.command made the session answer 421 and close while the message was being stored
// (the client then sent it again). The command timer runs again once the reply is out. DATA and
// BDAT LAST alike.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { listenSessions, sessionDeps } from '../../helpers/session.ts';
import { SmtpClient } from '../../helpers/smtp.ts';

test('a store slower than the command timeout: the client gets the 250, then the command timer runs again', async () => {
  let stored = 0;
  const ingest = {
    async accept() {
      await new Promise((r) => setTimeout(r, 2500)); // longer than the 1 s command timeout
      stored++;
      return { ok: true as const, copies: [{ queueId: `Q${stored}`, org: 'contoso', recipients: 1 }] };
    },
  };
  const srv = await listenSessions(sessionDeps({ timeouts: { command: 1 } }, ingest as never));
  try {
    const c = await SmtpClient.connect(srv.port);
    await c.hello();
    await c.expect('MAIL FROM:<a@fabrikam.test>', 250);
    await c.expect('RCPT TO:<b@contoso.test>', 250);
    await c.expect('DATA', 354);
    const r = await c.cmd('Subject: slow store\r\n\r\nhi\r\n.', 10_000);
    assert.equal(r.code, 250, r.text);
    assert.equal(stored, 1);
    await c.expect('MAIL FROM:<a@fabrikam.test>', 250);
    await c.expect('RCPT TO:<b@contoso.test>', 250);
    c.write('BDAT 18 LAST\r\nSubject: chunk\r\n\r\n');
    const b = await c.read(10_000);
    assert.equal(b?.code, 250, b?.text);
    const idle = await c.read(5000); // nothing more to say: the command timer closes the session
    assert.equal(idle?.code, 421);
    c.close();
  } finally {
    await srv.close();
  }
});
