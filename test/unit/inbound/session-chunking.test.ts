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
