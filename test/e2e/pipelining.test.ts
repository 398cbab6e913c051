// smtp.forbidUnauthPipelining (issue 8, item 4), on by default, as Postfix's
// smtpd_forbid_unauth_pipelining: input waiting behind a command that must end a pipelined group
// (RFC 2920 §3.1: EHLO, HELO, DATA, VRFY, EXPN, TURN, NOOP — for DATA, message content sent
// before our 354), or behind any command before EHLO negotiated PIPELINING, gets
// "554 5.5.0 Protocol error: …" instead of the command's reply and the connection is closed.
// Pipelining as RFC 2920 allows it keeps working; with the setting off the old behaviour stays.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { cleanup, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { SmtpClient } from '../helpers/smtp.ts';

let gw: GatewayHandle; // default: forbidUnauthPipelining on
let gwOff: GatewayHandle; // forbidUnauthPipelining: false

before(async () => {
  [gw, gwOff] = await Promise.all([
    startGateway(),
    startGateway({ config: { smtp: { forbidUnauthPipelining: false } } }),
  ]);
});
after(async () => {
  await Promise.all([cleanup(gw), cleanup(gwOff)]);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const QUEUED = /^250 2\.0\.0 OK queued as [0-9A-Z]+$/;
const SYNC = (what: string) => `554 5.5.0 Protocol error: ${what} (RFC 2920)`;
const CONTENT_EARLY = SYNC('message content sent before the 354 reply');

function mailFiles(g: GatewayHandle, local: string): string[] {
  const dir = path.join(g.dataDir, 'mailboxes/contoso.test', local, 'new');
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Every reply (first line … last line joined by \n) until the server closes; bounded by `ms`. */
async function repliesUntilClosed(c: SmtpClient, ms = 5000): Promise<{ replies: string[]; closed: boolean }> {
  const replies: string[] = [];
  const end = Date.now() + ms;
  while (Date.now() < end) {
    let r;
    try {
      r = await c.read(Math.max(1, end - Date.now()));
    } catch {
      break;
    }
    if (!r) return { replies, closed: true };
    replies.push(r.text);
  }
  return { replies, closed: false };
}

async function greeted(g: GatewayHandle, ehlo = true): Promise<SmtpClient> {
  const c = await SmtpClient.connect(g.port);
  if (ehlo) await c.hello();
  else assert.equal((await c.read())?.code, 220);
  return c;
}

describe('refused (default)', () => {
  test('message content in the same write as DATA: 554 5.5.0 instead of 354, connection closed, nothing stored', async () => {
    const c = await greeted(gw);
    c.write(
      'MAIL FROM:<early@fabrikam.test>\r\nRCPT TO:<early-data@contoso.test>\r\nDATA\r\nSubject: early\r\n\r\nbody\r\n.\r\nQUIT\r\n',
    );
    const { replies, closed } = await repliesUntilClosed(c);
    assert.deepEqual(replies, ['250 2.1.0 Sender OK', '250 2.1.5 Recipient OK', CONTENT_EARLY]);
    assert.ok(closed, 'the server closed the connection');
    const ev = await gw.waitForLog((e) => e.event === 'session.pipelining' && e.after === 'DATA', 5000);
    assert.equal(ev.ip, '127.0.0.1');
    assert.match(String(ev.sample), /^"Subject: early/);
    await gw.waitForLog((e) => e.event === 'session.end' && e.close === 'improper pipelining', 5000);
    await sleep(300);
    assert.deepEqual(mailFiles(gw, 'early-data'), []);
  });

  test('also when DATA itself would fail (no valid recipient): 554 5.5.0, the content is never read as commands', async () => {
    const c = await greeted(gw);
    c.write(
      'MAIL FROM:<early@fabrikam.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\nRSET\r\nMAIL FROM:<x@y.test>\r\n',
    );
    const { replies, closed } = await repliesUntilClosed(c);
    assert.equal(replies.length, 3, JSON.stringify(replies));
    assert.match(replies[1], /^550 5\.7\.1 /);
    assert.equal(replies[2], CONTENT_EARLY);
    assert.ok(closed);
  });

  test('a whole transaction smuggled behind a real end of data (DATA and content in one write) is refused at its DATA', async () => {
    const c = await greeted(gw);
    await c.expect('MAIL FROM:<carrier@fabrikam.test>', 250);
    await c.expect('RCPT TO:<carrier@contoso.test>', 250);
    await c.expect('DATA', 354);
    c.write(
      'Subject: carrier\r\n\r\nbefore\r\n.\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<smuggled-victim@contoso.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n',
    );
    const { replies, closed } = await repliesUntilClosed(c);
    assert.equal(replies.length, 4, JSON.stringify(replies));
    assert.match(replies[0], QUEUED, 'the carrier message is accepted');
    assert.deepEqual(replies.slice(1), ['250 2.1.0 Sender OK', '250 2.1.5 Recipient OK', CONTENT_EARLY]);
    assert.ok(closed);
    await sleep(300);
    assert.equal(mailFiles(gw, 'carrier').length, 1);
    assert.deepEqual(mailFiles(gw, 'smuggled-victim'), []);
  });

  const cases: { name: string; ehlo: boolean; first?: string; write: string; expect: string[] }[] = [
    {
      name: 'EHLO and MAIL in one write',
      ehlo: false,
      write: 'EHLO client.test\r\nMAIL FROM:<a@fabrikam.test>\r\n',
      expect: [SYNC('command sent before the reply to EHLO')],
    },
    {
      name: 'HELO, then MAIL and RCPT in one write (PIPELINING not negotiated)',
      ehlo: false,
      first: 'HELO client.test',
      write: 'MAIL FROM:<a@fabrikam.test>\r\nRCPT TO:<u@contoso.test>\r\n',
      expect: [SYNC('commands pipelined without EHLO (PIPELINING not negotiated)')],
    },
    {
      name: 'RSET and RSET before any EHLO',
      ehlo: false,
      write: 'RSET\r\nRSET\r\n',
      expect: [SYNC('commands pipelined without EHLO (PIPELINING not negotiated)')],
    },
    {
      name: 'NOOP followed by RSET',
      ehlo: true,
      write: 'NOOP\r\nRSET\r\n',
      expect: [SYNC('command sent before the reply to NOOP')],
    },
    {
      name: 'VRFY followed by RSET',
      ehlo: true,
      write: 'VRFY u\r\nRSET\r\n',
      expect: [SYNC('command sent before the reply to VRFY')],
    },
  ];
  for (const k of cases) {
    test(`${k.name}: 554 5.5.0 and closed`, async () => {
      const c = await greeted(gw, k.ehlo);
      if (k.first) assert.equal((await c.cmd(k.first)).code, 250);
      c.write(k.write);
      const { replies, closed } = await repliesUntilClosed(c);
      assert.deepEqual(replies, k.expect);
      assert.ok(closed, 'the server closed the connection');
    });
  }
});

describe('allowed (default)', () => {
  test('MAIL, RCPT, DATA in one write, content after the 354, then RSET, MAIL, RCPT, DATA behind the final dot', async () => {
    const c = await greeted(gw);
    c.write('MAIL FROM:<p@fabrikam.test>\r\nRCPT TO:<pipe-ok1@contoso.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\n');
    const got: string[] = [];
    for (let i = 0; i < 4; i++) got.push((await c.read())?.text ?? 'closed');
    assert.match(got[3], /^354 /, JSON.stringify(got));
    c.write(
      'Subject: one\r\n\r\nfirst\r\n.\r\nRSET\r\nMAIL FROM:<p@fabrikam.test>\r\nRCPT TO:<pipe-ok2@contoso.test>\r\nDATA\r\n',
    );
    for (let i = 0; i < 5; i++) got.push((await c.read())?.text ?? 'closed');
    assert.match(got[4], QUEUED);
    assert.deepEqual(got.slice(5, 8), ['250 2.0.0 Reset state', '250 2.1.0 Sender OK', '250 2.1.5 Recipient OK']);
    assert.match(got[8], /^354 /);
    c.write('Subject: two\r\n\r\nsecond\r\n.\r\nQUIT\r\n');
    assert.match((await c.read())?.text ?? 'closed', QUEUED);
    assert.match((await c.read())?.text ?? 'closed', /^221 /, 'QUIT may follow the final dot');
    for (let i = 0; i < 40 && (mailFiles(gw, 'pipe-ok1').length < 1 || mailFiles(gw, 'pipe-ok2').length < 1); i++)
      await sleep(50);
    assert.equal(mailFiles(gw, 'pipe-ok1').length, 1);
    assert.equal(mailFiles(gw, 'pipe-ok2').length, 1);
  });

  test('RSET, RSET, NOOP in one write (NOOP last), and QUIT with bytes behind it: answered, no 554', async () => {
    const c = await greeted(gw);
    c.write('RSET\r\nRSET\r\nNOOP\r\n');
    const got: string[] = [];
    for (let i = 0; i < 3; i++) got.push((await c.read())?.text ?? 'closed');
    assert.deepEqual(got, ['250 2.0.0 Reset state', '250 2.0.0 Reset state', '250 2.0.0 OK']);
    c.write('QUIT\r\nNOOP\r\n');
    const { replies, closed } = await repliesUntilClosed(c);
    assert.deepEqual(replies, ['221 2.0.0 mx1.contoso.test closing connection']);
    assert.ok(closed);
  });

  test('HELO, then one command at a time: a whole transaction works', async () => {
    const c = await greeted(gw, false);
    await c.expect('HELO client.test', 250);
    const r = await c.send('h@fabrikam.test', ['helo-ok@contoso.test'], 'Subject: helo\r\n\r\nhi\r\n');
    assert.match(r.text, QUEUED);
    await c.expect('QUIT', 221);
    c.close();
  });
});

describe('smtp.forbidUnauthPipelining: false', () => {
  test('DATA with its content in one write is accepted, EHLO and MAIL in one write both answered', async () => {
    const c = await greeted(gwOff, false);
    c.write(
      'EHLO client.test\r\nMAIL FROM:<early@fabrikam.test>\r\nRCPT TO:<off-early@contoso.test>\r\nDATA\r\nSubject: early\r\n\r\nbody\r\n.\r\nQUIT\r\n',
    );
    const { replies, closed } = await repliesUntilClosed(c);
    assert.equal(replies.length, 6, JSON.stringify(replies));
    assert.match(replies[0], /^250-mx1\.contoso\.test\n/);
    assert.deepEqual(
      replies.slice(1, 4).map((r) => r.slice(0, 9)),
      ['250 2.1.0', '250 2.1.5', '354 2.0.0'],
    );
    assert.match(replies[4], QUEUED);
    assert.match(replies[5], /^221 /);
    assert.ok(closed);
  });
});
