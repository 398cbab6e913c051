import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { MaildirDelivery, mailboxFolder } from '../../../src/delivery/maildir.ts';
import { tempDir } from '../../helpers/gateway.ts';

test('mailbox folder names cannot escape the mailbox tree', () => {
  assert.equal(mailboxFolder('Alice'), 'alice');
  assert.equal(mailboxFolder('../etc'), '%2E.%2Fetc');
  assert.equal(mailboxFolder('a/b'), 'a%2Fb');
  assert.equal(mailboxFolder('émile'), '%C3%A9mile');
});

test('delivery writes a complete file into new/ with Return-Path and Delivered-To', async () => {
  const dir = tempDir();
  const md = new MaildirDelivery(dir);
  const o = await md.deliver('bob@contoso.test', 'a@x.test', Buffer.from('Subject: x\r\n\r\nhi\r\n'));
  assert.equal(o.status, 'delivered');
  const box = path.join(dir, 'mailboxes/contoso.test/bob');
  assert.deepEqual(readdirSync(path.join(box, 'tmp')), []);
  const [f] = readdirSync(path.join(box, 'new'));
  assert.match(f, /,S=\d+$/);
  assert.equal(readFileSync(path.join(box, 'new', f), 'utf8'), 'Return-Path: <a@x.test>\r\nDelivered-To: bob@contoso.test\r\nSubject: x\r\n\r\nhi\r\n');
});

test('cleanTmp removes partial files of dead processes only', async () => {
  const dir = tempDir();
  const tmp = path.join(dir, 'mailboxes/contoso.test/bob/tmp');
  mkdirSync(tmp, { recursive: true });
  const host = hostname().replace(/[/:]/g, '_');
  writeFileSync(path.join(tmp, `1795000000.M1000P999999Q1.${host}`), 'partial');
  writeFileSync(path.join(tmp, `1795000000.M1000P${process.pid}Q1.${host}`), 'in progress');
  writeFileSync(path.join(tmp, '1795000000.12345_1.imap.example'), 'dovecot');
  assert.equal(await new MaildirDelivery(dir).cleanTmp(), 1);
  assert.deepEqual(readdirSync(tmp).sort(), [`1795000000.12345_1.imap.example`, `1795000000.M1000P${process.pid}Q1.${host}`].sort());
});
