// CHUNKING (RFC 3030) on the gateway's SMTP server, against the real process over loopback: BDAT
// chunks are read by their count, never as commands. A chunk's content is stored as it came (no
// dot-stuffing to undo, so CRLF "." CRLF inside a chunk is content and a transaction written inside
// a chunk is never run); line endings are made CRLF as for DATA (or refused with
// bareLineEndings: reject); a chunk that fails (no transaction, no recipient, too large) is read
// and discarded, and the chunks pipelined behind it up to LAST with it; DATA and RCPT may not
// follow BDAT; a BDAT line the server cannot use (no readable size, a NUL, overlong) ends the
// session with 521, as its chunk could not be told from commands; a chunked message has
// smtp.timeouts.data from its first BDAT to its last chunk. Messages go to local mailboxes, so what
// was stored is read back byte for byte.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { cleanup, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { SmtpClient, type Reply } from '../helpers/smtp.ts';
import { SmtpConnection } from '../../src/delivery/smtp-client.ts';
import { TrustStore } from '../../src/tls/trust.ts';

let gw: GatewayHandle; // bareLineEndings: normalize (the default)
let gwR: GatewayHandle; // bareLineEndings: reject, maxMessageSize 2000, timeouts.data 2 s

before(async () => {
  [gw, gwR] = await Promise.all([
    startGateway(),
    startGateway({ config: { smtp: { bareLineEndings: 'reject', maxMessageSize: 2000, timeouts: { data: 2 } } } }),
  ]);
});
after(async () => {
  await Promise.all([cleanup(gw), cleanup(gwR)]);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The message files delivered to `local`@contoso.test, waiting up to 10 s for `n` of them. */
async function mailFor(h: GatewayHandle, local: string, n = 1): Promise<string[]> {
  const dir = path.join(h.dataDir, 'mailboxes/contoso.test', local, 'new');
  const until = Date.now() + 10_000;
  for (;;) {
    let files: string[] = [];
    try {
      files = readdirSync(dir).map((f) => path.join(dir, f));
    } catch {
      /* not yet */
    }
    if (files.length >= n || Date.now() > until) return files.map((f) => readFileSync(f, 'latin1'));
    await sleep(25);
  }
}

/** The message as stored, without the trace header fields the gateway put in front of it. */
function content(stored: string, firstOwnHeader: string): string {
  const i = stored.indexOf(firstOwnHeader);
  assert.ok(i >= 0, `stored message has ${JSON.stringify(firstOwnHeader)}: ${JSON.stringify(stored.slice(0, 300))}`);
  return stored.slice(i);
}

async function session(h: GatewayHandle): Promise<SmtpClient> {
  const c = await SmtpClient.connect(h.port);
  await c.hello();
  return c;
}

/** Read `n` replies (each must arrive within 5 s). */
async function replies(c: SmtpClient, n: number): Promise<Reply[]> {
  const out: Reply[] = [];
  for (let i = 0; i < n; i++) {
    const r = await c.read(5000);
    assert.ok(r, `connection closed after ${out.map((x) => x.text).join(' | ')}`);
    out.push(r);
  }
  return out;
}

const bdat = (data: string, last = false) =>
  `BDAT ${Buffer.byteLength(data, 'latin1')}${last ? ' LAST' : ''}\r\n${data}`;

test('EHLO offers CHUNKING (and not BINARYMIME)', async () => {
  const c = await SmtpClient.connect(gw.port);
  try {
    const ehlo = await c.hello();
    assert.ok(
      ehlo.lines.some((l) => /^250[- ]CHUNKING$/.test(l)),
      ehlo.text,
    );
    assert.ok(!ehlo.lines.some((l) => /BINARYMIME/.test(l)), ehlo.text);
  } finally {
    c.close();
  }
});

test('a message in three pipelined chunks is stored as sent: dots, a fake end of data and a transaction inside it are content', async () => {
  const smuggled = 'MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@contoso.test>\r\nDATA\r\nsmuggled\r\n.\r\n';
  const parts = [
    'Subject: chunked\r\nMessage-ID: <chunk1@fabrikam.test>\r\n\r\n.leading dot\r\n',
    `..two dots\r\n.\r\n${smuggled}`,
    'QUIT\r\nlast line\r\n',
  ];
  const c = await session(gw);
  try {
    c.write(
      'MAIL FROM:<sender@fabrikam.test>\r\nRCPT TO:<chunks@contoso.test>\r\n' +
        bdat(parts[0]) +
        bdat(parts[1]) +
        bdat(parts[2], true),
    );
    const r = await replies(c, 5);
    assert.deepEqual(
      r.map((x) => x.code),
      [250, 250, 250, 250, 250],
      r.map((x) => x.text).join(' | '),
    );
    assert.equal(r[2].text, `250 2.0.0 ${Buffer.byteLength(parts[0])} octets received`);
    assert.equal(r[3].text, `250 2.0.0 ${Buffer.byteLength(parts[1])} octets received`);
    assert.match(r[4].text, /^250 2\.0\.0 OK queued as \S+$/);
    await c.expect('NOOP', 250); // the session is in step: nothing in the chunks was run
    assert.equal(c.unread, 0);
    const [stored] = await mailFor(gw, 'chunks');
    assert.equal(content(stored, 'Subject: chunked'), parts.join(''));
    await sleep(200);
    assert.throws(() => readdirSync(path.join(gw.dataDir, 'mailboxes/contoso.test/victim')), 'nothing for the victim');
  } finally {
    c.close();
  }
});

test('chunk sizes cutting a CRLF in two, one octet per chunk, BDAT 0 LAST, and a last line without CRLF', async () => {
  const body = 'Subject: split\r\n\r\nab\r\ncd';
  const c = await session(gw);
  try {
    await c.expect('MAIL FROM:<sender@fabrikam.test>', 250);
    await c.expect('RCPT TO:<split@contoso.test>', 250);
    // "Subject: split\r" | "\n" ... : every chunk one octet, then an empty last chunk.
    for (const ch of body) {
      c.write(bdat(ch));
      const r = await c.read(5000);
      assert.equal(r?.text, '250 2.0.0 1 octets received');
    }
    const fin = await c.cmd('BDAT 0 LAST');
    assert.match(fin.text, /^250 2\.0\.0 OK queued as /);
    const [stored] = await mailFor(gw, 'split');
    assert.equal(content(stored, 'Subject: split'), `${body}\r\n`, 'CRLFs kept whole; the last line ended');
  } finally {
    c.close();
  }
});

test('bare line endings in chunks: made CRLF by default, 550 5.6.0 with bareLineEndings: reject', async () => {
  const body = 'Subject: bare\r\n\r\none\ntwo\rthree\r\n';
  const c = await session(gw);
  try {
    c.write('MAIL FROM:<sender@fabrikam.test>\r\nRCPT TO:<bare@contoso.test>\r\n' + bdat(body, true));
    const r = await replies(c, 3);
    assert.match(r[2].text, /^250 2\.0\.0 OK queued as /);
    const [stored] = await mailFor(gw, 'bare');
    assert.equal(content(stored, 'Subject: bare'), 'Subject: bare\r\n\r\none\r\ntwo\r\nthree\r\n');
  } finally {
    c.close();
  }
  const cr = await session(gwR);
  try {
    cr.write('MAIL FROM:<sender@fabrikam.test>\r\nRCPT TO:<bare@contoso.test>\r\n' + bdat(body, true));
    const r = await replies(cr, 3);
    assert.equal(r[2].text, '550 5.6.0 Message contains bare CR or LF; lines must end with CRLF');
    await cr.expect('MAIL FROM:<sender@fabrikam.test>', 250); // the transaction is over
  } finally {
    cr.close();
  }
});

test('a chunk without a transaction is read and discarded: 503, and its commands are never run', async () => {
  const c = await session(gw);
  try {
    const inside = 'MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@contoso.test>\r\nQUIT\r\n';
    c.write(bdat(inside, true));
    const r = await c.read(5000);
    assert.equal(r?.text, '503 5.5.1 Bad sequence of commands: send MAIL first');
    await c.expect('NOOP', 250);
    assert.equal(c.unread, 0, c.received);
  } finally {
    c.close();
  }
});

test('a failed chunk fails the transaction: the chunks pipelined behind it are discarded up to LAST', async () => {
  const c = await session(gw);
  try {
    // The only recipient is refused (not an accepted domain): the first BDAT gets 554, the next 503.
    c.write(
      'MAIL FROM:<sender@fabrikam.test>\r\nRCPT TO:<someone@elsewhere.test>\r\n' +
        bdat('Subject: x\r\n\r\n') +
        bdat('body\r\n', true),
    );
    const r = await replies(c, 4);
    assert.equal(r[0].code, 250);
    assert.ok(r[1].code >= 500, r[1].text);
    assert.equal(r[2].text, '554 5.5.1 No valid recipients');
    assert.equal(
      r[3].text,
      '503 5.5.1 Bad sequence of commands: an earlier BDAT of this transaction failed; chunk discarded',
    );
    // After LAST the failed transaction is over: a new one needs no RSET.
    await c.expect('MAIL FROM:<sender@fabrikam.test>', 250);
    await c.expect('RCPT TO:<again@contoso.test>', 250);
    c.write(bdat('Subject: y\r\n\r\nz\r\n', true));
    assert.match((await c.read(5000))?.text ?? '', /^250 2\.0\.0 OK queued/);
  } finally {
    c.close();
  }
});

test('DATA may not follow BDAT in a transaction; RSET drops the chunks received so far', async () => {
  const c = await session(gw);
  try {
    await c.expect('MAIL FROM:<sender@fabrikam.test>', 250);
    await c.expect('RCPT TO:<mixed@contoso.test>', 250);
    c.write(bdat('Subject: first\r\n'));
    assert.equal((await c.read(5000))?.code, 250);
    const d = await c.cmd('DATA');
    assert.equal(d.text, '503 5.5.1 Bad sequence of commands: DATA cannot follow BDAT in a transaction (RFC 3030)');
    await c.expect('RSET', 250);
    await c.expect('MAIL FROM:<sender@fabrikam.test>', 250);
    await c.expect('RCPT TO:<mixed@contoso.test>', 250);
    c.write(bdat('Subject: second\r\n\r\nbody\r\n', true));
    assert.match((await c.read(5000))?.text ?? '', /^250 2\.0\.0 OK queued/);
    const [stored] = await mailFor(gw, 'mixed');
    assert.equal(content(stored, 'Subject: '), 'Subject: second\r\n\r\nbody\r\n');
  } finally {
    c.close();
  }
});

test('a chunk over the size limit is read and refused (552 5.3.4); the session goes on', async () => {
  const c = await session(gwR); // maxMessageSize 2000
  try {
    c.write('MAIL FROM:<sender@fabrikam.test>\r\nRCPT TO:<big@contoso.test>\r\n' + bdat('x'.repeat(1500)));
    c.write(bdat('y'.repeat(1200) + 'NOOP\r\n', true));
    const r = await replies(c, 4);
    assert.equal(r[2].text, '250 2.0.0 1500 octets received');
    assert.equal(r[3].text, '552 5.3.4 Message size exceeds fixed maximum message size');
    await c.expect('NOOP', 250);
    assert.equal(c.unread, 0, 'the NOOP inside the refused chunk was not run');
  } finally {
    c.close();
  }
});

test('a chunk far over the size limit (over 1.5 times, counting the message so far) is not read: 552 and close', async () => {
  const c = await session(gwR); // maxMessageSize 2000
  try {
    c.write('MAIL FROM:<sender@fabrikam.test>\r\nRCPT TO:<huge@contoso.test>\r\n' + bdat('x'.repeat(1500)));
    // 1500 + 1501 = 3001 octets: one over 1.5 times the limit. Only 9 of its octets are sent.
    c.write('BDAT 1501 LAST\r\nNOOP\r\nNOO');
    const r = await replies(c, 4);
    assert.equal(r[2].text, '250 2.0.0 1500 octets received');
    assert.equal(
      r[3].text,
      '552 5.3.4 mx1.contoso.test Message size exceeds fixed maximum message size: this BDAT would bring it to ' +
        '3001 octets, over 1.5 times the maximum of 2000; closing',
    );
    await c.closedPromise;
    const lines = c.received.split('\r\n').filter(Boolean);
    assert.equal(lines.at(-1), r[3].text, 'the NOOP behind the BDAT line was not run');
  } finally {
    c.close();
  }
  // With no transaction at all, the declared size alone counts.
  const d = await session(gwR);
  try {
    d.write('BDAT 999999999999999 LAST\r\n');
    assert.match((await d.read(5000))?.text ?? '', /^552 5\.3\.4 .*999999999999999 octets.*; closing$/);
    await d.closedPromise;
  } finally {
    d.close();
  }
});

const UNUSABLE =
  '521 5.5.4 mx1.contoso.test Unusable BDAT command (use BDAT <size> [LAST]): closing, as its chunk cannot be told ' +
  'from commands';

test('a BDAT line the server cannot use ends the session with 521 5.5.4: no size, a NUL, overlong, a refused bare ending', async () => {
  const chunk = 'RSET\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@contoso.test>\r\n';
  const cases: [GatewayHandle, string][] = [
    [gw, 'BDAT twelve LAST\r\n'],
    [gw, 'BDAT\r\n'],
    [gw, `BDAT ${chunk.length} LAST\x00\r\n`],
    [gw, `BDAT ${chunk.length}${' '.repeat(2100)}LAST\r\n`],
    [gwR, `BDAT ${chunk.length} LAST\n`], // bareLineEndings: reject refuses the line
  ];
  for (const [h, bdatLine] of cases) {
    const c = await session(h);
    try {
      await c.expect('MAIL FROM:<sender@fabrikam.test>', 250);
      await c.expect('RCPT TO:<broken@contoso.test>', 250);
      c.write(bdatLine + chunk);
      const r = await c.read(5000);
      assert.equal(r?.text, UNUSABLE, JSON.stringify(bdatLine.slice(0, 40)));
      await c.closedPromise;
      const after = c.received.slice(c.received.indexOf('Recipient OK'));
      assert.ok(!/Reset state|Sender OK/.test(after), `the chunk was run as commands: ${after}`);
    } finally {
      c.close();
    }
  }
});

test('RCPT after BDAT is refused (RFC 3030 §2: the chunks follow every RCPT)', async () => {
  const c = await session(gw);
  try {
    await c.expect('MAIL FROM:<sender@fabrikam.test>', 250);
    await c.expect('RCPT TO:<late@contoso.test>', 250);
    c.write(bdat('Subject: late\r\n\r\n'));
    assert.equal((await c.read(5000))?.code, 250);
    const r = await c.cmd('RCPT TO:<later@contoso.test>');
    assert.equal(r.text, '503 5.5.1 Bad sequence of commands: RCPT after BDAT');
    c.write(bdat('body\r\n', true));
    assert.match((await c.read(5000))?.text ?? '', /^250 2\.0\.0 OK queued/);
  } finally {
    c.close();
  }
});

test('a chunked message has smtp.timeouts.data in all, however its chunks are spaced (2 s here)', async () => {
  const c = await session(gwR);
  const t0 = Date.now();
  try {
    await c.expect('MAIL FROM:<sender@fabrikam.test>', 250);
    await c.expect('RCPT TO:<slow@contoso.test>', 250);
    // A 3-octet chunk every 0.7 s: each is answered, until the 2 s since the first are up.
    let last: Reply | null = null;
    for (let i = 0; i < 10; i++) {
      if (!c.closed) c.write(bdat('x\r\n'));
      last = await c.read(5000); // the 421 may have come during the pause, before this write
      if (last?.code !== 250) break;
      await sleep(700);
    }
    assert.equal(last?.text, '421 4.4.2 mx1.contoso.test Error: timeout exceeded');
    const took = Date.now() - t0;
    assert.ok(took >= 1900 && took < 4000, `timed out after ${took} ms, not after the 2 s of timeouts.data`);
  } finally {
    c.close();
  }
});

test("the gateway's own SMTP client and server speak BDAT to each other: ten messages on one connection, stored as sent", async () => {
  const conn = await SmtpConnection.open({
    ip: '127.0.0.1',
    port: gw.port,
    hostname: 'mx1.contoso.test',
    heloName: 'gw.fabrikam.test',
    starttls: 'never',
    trust: new TrustStore(false, []),
    timeouts: { connect: 5, greeting: 5, command: 5, dataInit: 5, dataBlock: 5, dataEnd: 5 },
  });
  const sent: string[] = [];
  try {
    for (let i = 0; i < 10; i++) {
      const text = `Subject: own ${i}\r\n\r\n.dot line\r\n.\r\nQUIT\r\nend ${i}\r\n`;
      sent.push(text);
      const r = await conn.send(
        { from: 'sender@fabrikam.test', rcpts: [{ address: 'own@contoso.test' }], eightBit: false, smtputf8: false },
        Buffer.from(text),
      );
      assert.equal(r.chunked, true, 'the client used BDAT: the server offers CHUNKING and PIPELINING');
      assert.match(`${r.data?.code} ${r.data?.text}`, /^250 .*OK queued as /);
    }
    await conn.quit();
  } finally {
    conn.close();
  }
  const stored = (await mailFor(gw, 'own', 10)).map((m) => content(m, 'Subject: own'));
  assert.deepEqual(stored.sort(), sent.sort());
});
