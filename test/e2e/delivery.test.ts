// Delivery over STARTTLS with a real client (swaks) into Maildir, with the TLS facts in Received:.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { cleanup, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { makePki } from '../helpers/pki.ts';
import { SmtpClient } from '../helpers/smtp.ts';

const run = promisify(execFile);
let gw: GatewayHandle;

async function waitForMail(dir: string, n = 1, timeoutMs = 10_000): Promise<string[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    let files: string[] = [];
    try {
      files = readdirSync(path.join(dir, 'new')).map((f) => path.join(dir, 'new', f));
    } catch {
      /* not yet */
    }
    if (files.length >= n || Date.now() > until) return files;
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  gw = await startGateway();
  const pki = await makePki(gw.dir);
  const server = await pki.issue('mx1.contoso.test');
  gw.writeConfig({
    tls: { certificates: [{ cert: server.cert, key: server.key }], trust: { system: false, caFiles: [pki.rootFile] } },
  });
  await gw.stop();
  await gw.restart();
});
after(() => cleanup(gw));

test('swaks delivers over STARTTLS into Maildir with TLS facts in Received:', async () => {
  const { stdout } = await run('swaks', [
    '--server',
    `127.0.0.1:${gw.port}`,
    '--from',
    'sender@fabrikam.test',
    '--to',
    'alice@contoso.test',
    '--ehlo',
    'client.fabrikam.test',
    '-tls',
    '--header',
    'Subject: swaks over tls',
  ]);
  assert.match(stdout, /250 2\.0\.0 OK queued as [0-9A-Z]+/);
  const files = await waitForMail(path.join(gw.dataDir, 'mailboxes/contoso.test/alice'));
  assert.equal(files.length, 1);
  const msg = readFileSync(files[0], 'latin1');
  assert.match(
    msg,
    /^Return-Path: <sender@fabrikam\.test>\r\nDelivered-To: alice@contoso\.test\r\nReceived: from client\.fabrikam\.test \(\[127\.0\.0\.1\]\)\r\n/,
  );
  assert.match(
    msg,
    /\(using TLSv1\.3 with cipher TLS_AES_256_GCM_SHA384 \(256\/256 bits\)\)\r\n\t\(no client certificate presented\)\r\n\tby mx1\.contoso\.test \(Portcullis\) with ESMTPS id [0-9A-Z]+\r\n\tfor <alice@contoso\.test>; /,
  );
  assert.match(msg, /Subject: swaks over tls/);
  assert.doesNotMatch(msg.replace(/\r\n/g, ''), /[\r\n]/, 'only CRLF line endings in the mailbox file');
});

test('plaintext session is recorded as ESMTP without TLS comment', async () => {
  const c = await SmtpClient.connect(gw.port);
  await c.hello();
  const r = await c.send('a@fabrikam.test', ['bob@contoso.test'], 'Subject: plain\r\n\r\nhi\r\n');
  assert.equal(r.code, 250);
  await c.expect('QUIT', 221);
  const files = await waitForMail(path.join(gw.dataDir, 'mailboxes/contoso.test/bob'));
  const msg = readFileSync(files[0], 'latin1');
  assert.match(msg, /by mx1\.contoso\.test \(Portcullis\) with ESMTP id /);
  assert.doesNotMatch(msg, /using TLS/);
});

test('client certificate facts appear in Received:', async () => {
  const pki = await makePki(gw.dir, 'Partner');
  const client = await pki.issue('mail.fabrikam.test');
  const c = await SmtpClient.connect(gw.port);
  await c.hello();
  await c.starttls({ cert: readFileSync(client.cert), key: readFileSync(client.key) });
  await c.expect('EHLO client.test', 250);
  assert.equal((await c.send('a@fabrikam.test', ['carol@contoso.test'], 'Subject: cc\r\n\r\nhi\r\n')).code, 250);
  c.close();
  const files = await waitForMail(path.join(gw.dataDir, 'mailboxes/contoso.test/carol'));
  const msg = readFileSync(files[0], 'latin1');
  // Partner root is not in our trust store: presented but not verified, and the reason is named.
  assert.match(
    msg,
    /\(client certificate CN=mail\.fabrikam\.test, O=Partner Org issued by CN=Partner Issuing CA, O=Partner Trust, not verified: unable to find issuer/,
  );
});

test('NOTIFY=SUCCESS gets a "delivered" report; UTF-8 mail is received "with UTF8SMTPS"', async () => {
  const c = await SmtpClient.connect(gw.port);
  await c.hello();
  await c.starttls({ servername: 'mx1.contoso.test' });
  await c.expect('EHLO client.test', 250);
  await c.expect('MAIL FROM:<asker@contoso.test> RET=HDRS ENVID=env+2B1', 250);
  await c.expect('RCPT TO:<dora@contoso.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;dora@contoso.test', 250);
  await c.expect('DATA', 354);
  c.write('Subject: notify me\r\n\r\nhi\r\n.\r\n');
  assert.equal((await c.read())?.code, 250);
  await c.expect('MAIL FROM:<jöran@contoso.test> SMTPUTF8', 250);
  await c.expect('RCPT TO:<émile@contoso.test>', 250);
  await c.expect('DATA', 354);
  c.write('Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nçà\r\n.\r\n');
  assert.equal((await c.read())?.code, 250);
  c.close();
  const [report] = await waitForMail(path.join(gw.dataDir, 'mailboxes/contoso.test/asker'));
  const r = readFileSync(report, 'utf8');
  assert.match(r, /Subject: Successful Mail Delivery Report/);
  assert.match(r, /Original-Envelope-Id: env\+1/);
  assert.match(
    r,
    /Original-Recipient: rfc822; dora@contoso\.test\r\nFinal-Recipient: rfc822; dora@contoso\.test\r\nAction: delivered\r\nStatus: 2\.0\.0/,
  );
  assert.match(r, /Content-Type: text\/rfc822-headers/);
  const [utf8] = await waitForMail(path.join(gw.dataDir, 'mailboxes/contoso.test/%C3%A9mile'));
  assert.match(readFileSync(utf8, 'utf8'), /with UTF8SMTPS id /);
});
