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
  assert.equal(mailboxFolder('..'), '%2E.');
  assert.equal(mailboxFolder('a\u0000b'), 'a%00b');
  assert.equal(
    mailboxFolder(''),
    '%',
    'the empty local part ""@domain gets a folder of its own, not the domain folder',
  );
});

test('folders of plain dot-atom mailboxes keep their names (upgrade compatibility)', () => {
  const md = new MaildirDelivery('/srv/data');
  assert.equal(md.pathFor('Bob.Smith+tag@contoso.test'), '/srv/data/mailboxes/contoso.test/bob.smith+tag');
  assert.equal(md.pathFor("o'brien@contoso.test"), '/srv/data/mailboxes/contoso.test/o%27brien');
  assert.equal(md.pathFor('ÉMILE@contoso.test'), '/srv/data/mailboxes/contoso.test/%C3%A9mile');
});

test('quoted local parts map to folders of their own: no aliasing, no escape from the domain folder', () => {
  const md = new MaildirDelivery('/srv/data');
  const box = (a: string) => path.relative('/srv/data/mailboxes/contoso.test', md.pathFor(a)!);
  assert.equal(box('"\\"carol\\""@contoso.test'), '%22carol%22', 'the quote characters are part of the local part');
  assert.equal(box('carol@contoso.test'), 'carol');
  assert.equal(box('"a b"@contoso.test'), 'a%20b');
  assert.equal(
    box('"../../etc"@contoso.test'),
    '%2E.%2F..%2Fetc',
    'one folder name: "/" is escaped, so ".." inside it is harmless',
  );
  assert.equal(box('""@contoso.test'), '%');
  assert.equal(box('%20@contoso.test'), '%2520', 'an escape-looking name is escaped again');
  assert.equal(box('\u212Aate@contoso.test'), '%E2%84%AAate', 'KELVIN SIGN does not reach the mailbox "kate"');
  // Different local parts (after case folding) never share a folder; nothing leaves the domain folder.
  const locals = [
    'carol',
    '"carol"',
    'Carol',
    'a b',
    'a%20b',
    '%',
    '',
    '.',
    '..',
    '.a',
    '%2Ea',
    'a/b',
    'a%2Fb',
    '\u212Aate',
    'kate',
  ];
  const seen = new Map<string, string>();
  for (const l of locals) {
    const f = mailboxFolder(l);
    assert.ok(f && !f.startsWith('.') && !f.includes('/') && !f.includes('\0'), `${JSON.stringify(l)} -> ${f}`);
    const other = seen.get(f);
    assert.ok(
      other === undefined || other.toLowerCase() === l.toLowerCase(),
      `${JSON.stringify(l)} and ${JSON.stringify(other)} share ${f}`,
    );
    seen.set(f, l);
  }
  assert.equal(md.pathFor('x> NOTIFY=NEVER@contoso.test'), null, 'not a canonical address: no folder at all');
});

test('an address that is not in canonical form fails permanently instead of landing somewhere', async () => {
  const o = await new MaildirDelivery(tempDir()).deliver('"carol"x@contoso.test', 'a@x.test', Buffer.from('x\r\n'));
  assert.equal(o.status, 'failed');
  assert.equal(o.reply.enhanced, '5.1.3');
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
  assert.equal(
    readFileSync(path.join(box, 'new', f), 'utf8'),
    'Return-Path: <a@x.test>\r\nDelivered-To: bob@contoso.test\r\nSubject: x\r\n\r\nhi\r\n',
  );
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
  assert.deepEqual(
    readdirSync(tmp).sort(),
    [`1795000000.12345_1.imap.example`, `1795000000.M1000P${process.pid}Q1.${host}`].sort(),
  );
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

test(
  'delivery.maildir group and mode: every folder and file created gets them exactly, whatever the umask',
  { skip: process.getuid?.() === 0 ? false : 'needs root (gives files to another group)' },
  async () => {
    for (const [mode, dirMode] of [
      ['0660', 0o770],
      ['0640', 0o750],
    ] as const) {
      const dir = tempDir();
      const old = process.umask(0o077);
      try {
        const md = new MaildirDelivery(dir, { mode, gid: 4343 });
        assert.equal((await md.deliver('bob@contoso.test', 'a@x.test', Buffer.from('x\r\n'))).status, 'delivered');
        assert.equal((await md.deliver('carol@contoso.test', 'a@x.test', Buffer.from('y\r\n'))).status, 'delivered');
      } finally {
        process.umask(old);
      }
      const folders = [
        'mailboxes',
        'mailboxes/contoso.test',
        ...['bob', 'carol'].flatMap((b) => ['', '/tmp', '/new', '/cur'].map((s) => `mailboxes/contoso.test/${b}${s}`)),
      ];
      for (const f of folders) {
        assert.equal(modeOf(path.join(dir, f)), dirMode, `${f} ${mode}`);
        assert.equal(statSync(path.join(dir, f)).gid, 4343, f);
      }
      const newDir = path.join(dir, 'mailboxes/contoso.test/bob/new');
      const file = path.join(newDir, readdirSync(newDir)[0]);
      assert.equal(modeOf(file), parseInt(mode, 8));
      assert.equal(statSync(file).gid, 4343);
    }
  },
);
