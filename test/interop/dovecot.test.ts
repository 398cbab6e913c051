// Interop with a real Dovecot (Debian's dovecot-imapd, a throwaway instance of its own, loopback
// only): Portcullis started as root runs as the mail user and delivers into Maildir; Dovecot serves
// those messages over IMAP byte for byte, sets flags (renames in cur/), and Portcullis keeps
// delivering into the folders Dovecot has worked in. Two documented setups: both running as one
// user (private mailboxes), and separate users sharing a group (delivery.maildir group and mode).
// Needs root; run with `npm run test:interop`.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { cleanup, freePort, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { dovecotInstalled, startDovecot, type DovecotInstance } from '../helpers/dovecot.ts';
import { ImapClient } from '../helpers/imap.ts';
import { sendOverTls } from '../helpers/smtp.ts';
import { findGroup, findUser } from '../../src/service/privileges.ts';

const IMAP_HOST = '127.0.0.10';
const MAIL = findUser('mail');
const MAIL_GROUP = findGroup('mail');
const NOBODY = findUser('nobody');
const skip =
  process.getuid?.() !== 0
    ? 'needs root (Dovecot runs mail processes as the mail user)'
    : !dovecotInstalled()
      ? "needs Debian's dovecot-imapd (apt-get install dovecot-imapd)"
      : !MAIL || !MAIL_GROUP || !NOBODY
        ? 'needs the system users mail and nobody'
        : false;

const st = (p: string) => {
  const s = statSync(p);
  return { uid: s.uid, gid: s.gid, mode: s.mode & 0o7777 };
};
const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

const message = (subject: string) =>
  `From: Bob <bob@fabrikam.test>\r\nTo: Alice <alice@contoso.test>\r\nSubject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '')}@fabrikam.test>\r\n` +
  `MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Fabrikam.\r\n\r\nTrailing spaces stay:   \r\n.dot at line start\r\n`;

async function deliver(gw: GatewayHandle, subject: string): Promise<{ sent: Buffer; file: string; bytes: Buffer }> {
  const body = message(subject);
  const r = await sendOverTls(gw.port, 'bob@fabrikam.test', ['alice@contoso.test'], body);
  assert.equal(r.code, 250, r.text);
  const id = /queued as ([0-9A-Z]+)/.exec(r.text)![1];
  await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'delivered');
  const newDir = path.join(gw.dataDir, 'mailboxes/contoso.test/alice/new');
  const name = readdirSync(newDir).find((f) => readFileSync(path.join(newDir, f)).includes(`Subject: ${subject}\r\n`))!;
  return { sent: Buffer.from(body), file: name, bytes: readFileSync(path.join(newDir, name)) };
}

/** Read message `n` over IMAP; it must be the Maildir file byte for byte: our headers, then what was sent. */
async function fetchAndCompare(imap: ImapClient, n: number, d: { sent: Buffer; bytes: Buffer }): Promise<void> {
  const f = await imap.ok(`FETCH ${n} BODY[]`);
  assert.equal(f.literals.length, 1);
  const got = f.literals[0];
  assert.ok(got.equals(d.bytes), `IMAP returned ${got.length} octets, the Maildir file holds ${d.bytes.length}`);
  assert.ok(got.subarray(got.length - d.sent.length).equals(d.sent), 'the message as sent ends the mailbox copy');
  assert.match(
    got.subarray(0, got.length - d.sent.length).toString(),
    /^Return-Path: <bob@fabrikam\.test>\r\nDelivered-To: alice@contoso\.test\r\nReceived: from client\.test \(\[127\.0\.0\.1\]\)\r\n[^]*\tby mx1\.contoso\.test \(Portcullis\) with ESMTPS id [0-9A-Z]+\r\n\tfor <alice@contoso\.test>; [^\r\n]+\r\n$/,
  );
}

async function imapSession(
  port: number,
  d1: { sent: Buffer; bytes: Buffer; file: string },
  box: string,
): Promise<void> {
  const imap = await ImapClient.connect(port, IMAP_HOST);
  try {
    await imap.ok('LOGIN alice@contoso.test secret');
    const sel = await imap.ok('SELECT INBOX');
    assert.ok(sel.lines.includes('* 1 EXISTS'), sel.lines.join('\n'));
    await fetchAndCompare(imap, 1, d1);
    await imap.ok('STORE 1 +FLAGS (\\Flagged)');
    const flags = await imap.ok('FETCH 1 FLAGS');
    assert.match(flags.lines[0], /FLAGS \((?=.*\\Seen)(?=.*\\Flagged)/);
    await imap.ok('LOGOUT');
  } finally {
    imap.close();
  }
  // Dovecot keeps flags in the Maildir file name, after moving the file to cur/.
  const base = d1.file.replace(/,S=\d+$/, '');
  const cur = readdirSync(path.join(box, 'cur'));
  assert.ok(
    cur.some((f) => f.startsWith(base) && /:2,FS$/.test(f)),
    `cur/ holds ${cur.join(', ')}`,
  );
}

async function run(gw: GatewayHandle, uid: number, gid: number): Promise<void> {
  const base = tempDir('pc-dovecot-');
  cleanups.push(async () => rmSync(base, { recursive: true, force: true }));
  const port = await freePort(IMAP_HOST);
  let dovecot: DovecotInstance | undefined;
  const box = path.join(gw.dataDir, 'mailboxes/contoso.test/alice');
  try {
    const d1 = await deliver(gw, 'First over IMAP');
    dovecot = await startDovecot({
      base,
      host: IMAP_HOST,
      port,
      uid,
      gid,
      password: 'secret',
      mailLocation: `maildir:${gw.dataDir}/mailboxes/%d/%n`,
      home: `${gw.dataDir}/mailboxes/%d/%n`,
    });
    await imapSession(port, d1, box);
    // Portcullis still delivers into the folder Dovecot has written its index files to.
    const d2 = await deliver(gw, 'Second after Dovecot');
    const imap = await ImapClient.connect(port, IMAP_HOST);
    try {
      await imap.ok('LOGIN alice@contoso.test secret');
      const sel = await imap.ok('SELECT INBOX');
      assert.ok(sel.lines.includes('* 2 EXISTS'), sel.lines.join('\n'));
      await fetchAndCompare(imap, 2, d2);
      await imap.ok('LOGOUT');
    } finally {
      imap.close();
    }
  } catch (e) {
    throw new Error(`${(e as Error).message}\n--- dovecot log ---\n${dovecot?.log() ?? '(not started)'}`);
  } finally {
    await dovecot?.stop();
  }
}

test(
  "one user: Portcullis started as root runs as mail, Dovecot's mail processes run as mail; private mailboxes served byte-identical, flags kept",
  { skip, timeout: 120_000 },
  async () => {
    const dir = tempDir('pc-dovecot-');
    chownSync(dir, MAIL!.uid, MAIL!.gid);
    const gw = await startGateway({ dir, config: { runAs: { user: 'mail', group: 'mail' } } });
    cleanups.push(() => cleanup(gw));
    await run(gw, MAIL!.uid, MAIL!.gid);
    const cur = path.join(gw.dataDir, 'mailboxes/contoso.test/alice/cur');
    const files = readdirSync(cur);
    assert.equal(files.length, 2);
    for (const f of files)
      assert.deepEqual(st(path.join(cur, f)), { uid: MAIL!.uid, gid: MAIL!.gid, mode: 0o600 }, 'private by default');
  },
);

test(
  'separate users sharing a group: Portcullis runs as nobody with delivery.maildir {group: mail, mode: "0660"}, Dovecot as mail',
  { skip, timeout: 120_000 },
  async () => {
    const dir = tempDir('pc-dovecot-');
    chmodSync(dir, 0o755);
    // The documented dataDir for this setup: the service user's, the mail group may pass through it.
    const dataDir = path.join(dir, 'data');
    mkdirSync(dataDir);
    chownSync(dataDir, NOBODY!.uid, MAIL_GROUP!.gid);
    chmodSync(dataDir, 0o710);
    const gw = await startGateway({
      dir,
      config: { runAs: { user: 'nobody', group: 'nogroup' }, delivery: { maildir: { group: 'mail', mode: '0660' } } },
    });
    cleanups.push(() => cleanup(gw));
    const ev = await gw.waitForLog((e) => e.event === 'server.privileges');
    assert.ok((ev.groups as number[]).includes(MAIL_GROUP!.gid), "the Maildir group joins the service user's groups");
    await run(gw, MAIL!.uid, MAIL_GROUP!.gid);
    const box = path.join(dataDir, 'mailboxes/contoso.test/alice');
    for (const d of ['', 'tmp', 'new', 'cur'])
      assert.deepEqual(st(path.join(box, d)), { uid: NOBODY!.uid, gid: MAIL_GROUP!.gid, mode: 0o770 }, d);
    const files = readdirSync(path.join(box, 'cur'));
    assert.equal(files.length, 2);
    for (const f of files)
      assert.deepEqual(st(path.join(box, 'cur', f)), { uid: NOBODY!.uid, gid: MAIL_GROUP!.gid, mode: 0o660 });
    assert.equal(st(path.join(dataDir, 'queue.sqlite')).mode, 0o600, 'the mail group cannot read the queue');
  },
);
