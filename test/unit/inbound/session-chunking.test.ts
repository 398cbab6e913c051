// The session's BDAT path as ingest sees it (an in-process stub at the ingest seam): a message sent
// as one-octet chunks arrives whole and in order, in a few blocks rather than a piece per chunk
// (memory kept about the message's size however it is cut).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Ingest } from '../../../src/ingest/ingest.ts';
import { listenSessions, sessionDeps } from '../../helpers/session.ts';
import { SmtpClient } from '../../helpers/smtp.ts';

test('a message in 3,000 one-octet BDAT chunks reaches ingest whole, in order, in a few blocks', async () => {
  let got: Buffer[] | null = null;
  const ingest = {
    async accept(t: { chunks: Buffer[] }) {
      got = t.chunks;
      return { ok: true as const, copies: [{ queueId: 'Q1', org: 'contoso', recipients: 1 }] };
    },
  } as unknown as Ingest;
  const deps = sessionDeps({}, ingest);
  const srv = await listenSessions(deps);
  const c = await SmtpClient.connect(srv.port);
  try {
    await c.hello();
    await c.expect('MAIL FROM:<a@fabrikam.test>', 250);
    await c.expect('RCPT TO:<b@contoso.test>', 250);
    const text = `Subject: tiny\r\n\r\n${'abc.\r\n'.repeat(500)}`;
    c.write(
      Buffer.concat(
        [...Buffer.from(text, 'latin1')].map((o) => Buffer.from(`BDAT 1\r\n${String.fromCharCode(o)}`, 'latin1')),
      ),
    );
    for (let i = 0; i < text.length; i++) assert.equal((await c.read(5000))?.text, '250 2.0.0 1 octets received');
    assert.equal((await c.cmd('BDAT 0 LAST')).text, '250 2.0.0 OK queued as Q1');
    assert.ok(got, 'ingest got the message');
    const chunks = got as Buffer[];
    assert.equal(Buffer.concat(chunks).toString('latin1'), text);
    assert.ok(chunks.length < 10, `${chunks.length} pieces for ${text.length} one-octet chunks`);
  } finally {
    c.close();
    await srv.close();
  }
});

test('BDAT after HELO (CHUNKING not offered) is 503 5.5.1, its chunk read and dropped; DATA works', async () => {
  let got = 0;
  const ingest = {
    async accept() {
      got++;
      return { ok: true as const, copies: [{ queueId: 'Q1', org: 'contoso', recipients: 1 }] };
    },
  } as unknown as Ingest;
  const srv = await listenSessions(sessionDeps({}, ingest));
  const c = await SmtpClient.connect(srv.port);
  try {
    assert.equal((await c.read(5000))?.code, 220);
    await c.expect('HELO client.fabrikam.test', 250);
    await c.expect('MAIL FROM:<a@fabrikam.test>', 250);
    await c.expect('RCPT TO:<b@contoso.test>', 250);
    // The chunk's 12 octets look like commands: they are read as the chunk and dropped. (Sent in
    // the same segment as the command, they would be refused as pipelining without EHLO.)
    c.write('BDAT 12 LAST\r\n');
    await new Promise((r) => setTimeout(r, 50));
    c.write('RSET\r\nQUIT\r\n');
    assert.equal(
      (await c.read(5000))?.text,
      '503 5.5.1 Bad sequence of commands: BDAT needs EHLO (CHUNKING is an SMTP extension)',
    );
    assert.equal(got, 0, 'nothing stored');
    // The failed LAST chunk ended the transaction (RFC 3030 §2); a new one with DATA goes through.
    assert.equal(
      (await c.send('a@fabrikam.test', ['b@contoso.test'], 'Subject: s\r\n\r\nhi\r\n')).text,
      '250 2.0.0 OK queued as Q1',
    );
  } finally {
    c.close();
    await srv.close();
  }
});
