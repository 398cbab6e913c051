import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
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

const modeOf = (p: string) => statSync(p).mode & 0o7777;

test('default mailboxes stay private: folders 0700, files 0600', async () => {
  const dir = tempDir();
  const md = new MaildirDelivery(dir);
  assert.equal((await md.deliver('bob@contoso.test', 'a@x.test', Buffer.from('x\r\n'))).status, 'delivered');
  const box = path.join(dir, 'mailboxes/contoso.test/bob');
  for (const d of ['', 'tmp', 'new', 'cur']) assert.equal(modeOf(path.join(box, d)), 0o700, d);
  assert.equal(modeOf(path.join(box, 'new', readdirSync(path.join(box, 'new'))[0])), 0o600);
});

test('delivery.maildir group and mode: every folder and file created gets them exactly, whatever the umask', { skip: process.getuid?.() === 0 ? false : 'needs root (gives files to another group)' }, async () => {
  for (const [mode, dirMode] of [['0660', 0o770], ['0640', 0o750]] as const) {
    const dir = tempDir();
    const old = process.umask(0o077);
    try {
      const md = new MaildirDelivery(dir, { mode, gid: 4343 });
      assert.equal((await md.deliver('bob@contoso.test', 'a@x.test', Buffer.from('x\r\n'))).status, 'delivered');
      assert.equal((await md.deliver('carol@contoso.test', 'a@x.test', Buffer.from('y\r\n'))).status, 'delivered');
    } finally { process.umask(old); }
    const folders = ['mailboxes', 'mailboxes/contoso.test', ...['bob', 'carol'].flatMap((b) => ['', '/tmp', '/new', '/cur'].map((s) => `mailboxes/contoso.test/${b}${s}`))];
    for (const f of folders) {
      assert.equal(modeOf(path.join(dir, f)), dirMode, `${f} ${mode}`);
      assert.equal(statSync(path.join(dir, f)).gid, 4343, f);
    }
    const newDir = path.join(dir, 'mailboxes/contoso.test/bob/new');
    const file = path.join(newDir, readdirSync(newDir)[0]);
    assert.equal(modeOf(file), parseInt(mode, 8));
    assert.equal(statSync(file).gid, 4343);
  }
});
