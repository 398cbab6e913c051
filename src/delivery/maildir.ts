// Owns: local delivery into Maildir (dataDir/mailboxes/<domain>/<localpart>/{tmp,new,cur}) and
// the mapping of a mailbox to its folder.
// Promise: a message is in new/ only complete and synced (write tmp, fsync, rename, fsync dir).
// Two mailboxes share a folder only when their local parts are equal after case folding, and no
// folder lies outside its domain folder. Failures come back as a classified outcome; nothing here
// throws to the caller.
import { mkdir, readdir, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import path from 'node:path';
import { foldCase, parseAddress } from '../mailbox.ts';
import { writeChunksDurable } from '../util/fsync.ts';
import { classifyLocalError, type Outcome } from './classify.ts';

let counter = 0;
const HOST = hostname().replace(/[/:]/g, '_');

/**
 * Folder-safe name, one-to-one after case folding: every octet outside [a-z0-9._+=-] (so "%",
 * "/", NUL, quotes and all non-ASCII) and a leading dot become %XX; the empty name becomes "%"
 * (which no other name produces). Dot-atom names keep the folder names of earlier versions.
 */
export function mailboxFolder(s: string): string {
  let out = '';
  for (const ch of Buffer.from(foldCase(s), 'utf8')) {
    const c = String.fromCharCode(ch);
    out += /[a-z0-9._+=-]/.test(c) ? c : `%${ch.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  if (!out) return '%';
  return out.startsWith('.') ? `%2E${out.slice(1)}` : out;
}

export class MaildirDelivery {
  private readonly root: string;
  private readonly made = new Set<string>();

  constructor(dataDir: string) { this.root = path.join(dataDir, 'mailboxes'); }

  /** The folder of a mailbox (canonical address), or null when it is not a mailbox address. */
  pathFor(address: string): string | null {
    const mb = parseAddress(address, true);
    if ('code' in mb || mb.bare || !mb.domain) return null;
    return path.join(this.root, mailboxFolder(mb.domain), mailboxFolder(mb.local));
  }

  private async ensure(dir: string): Promise<void> {
    if (this.made.has(dir)) return;
    await Promise.all(['tmp', 'new', 'cur'].map((d) => mkdir(path.join(dir, d), { recursive: true, mode: 0o700 })));
    this.made.add(dir);
  }

  /**
   * Remove what a killed process left in tmp/ folders: files in our naming scheme
   * (`<time>.M<usec>P<pid>Q<n>.<host>`) from another pid of this host. Only one server runs on a
   * dataDir, so such a pid is dead; files of other writers (an IMAP server's LDA) are never touched.
   * Runs in the background at start-up; returns how many files it removed.
   */
  async cleanTmp(): Promise<number> {
    const mine = new RegExp(`^\\d+\\.M\\d+P(\\d+)Q\\d+\\.${HOST.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`);
    let removed = 0;
    const list = async (d: string) => { try { return await readdir(d); } catch { return []; } };
    for (const domain of await list(this.root)) {
      for (const box of await list(path.join(this.root, domain))) {
        const tmp = path.join(this.root, domain, box, 'tmp');
        for (const f of await list(tmp)) {
          const m = mine.exec(f);
          if (m && Number(m[1]) !== process.pid) {
            try { await unlink(path.join(tmp, f)); removed++; } catch { /* gone already */ }
          }
        }
      }
    }
    return removed;
  }

  /** Deliver `data` (with our Received: first) for one recipient. */
  async deliver(address: string, mailFrom: string, data: Buffer): Promise<Outcome> {
    const dir = this.pathFor(address);
    if (!dir) {
      const why = `"${address}" is not a mailbox address in canonical form`;
      return { status: 'failed', reply: { code: 550, enhanced: '5.1.3', message: 'Bad recipient address syntax', reason: why } };
    }
    const prefix = Buffer.from(`Return-Path: <${mailFrom}>\r\nDelivered-To: ${address}\r\n`);
    const now = Date.now();
    const name = `${Math.floor(now / 1000)}.M${(now % 1000) * 1000}P${process.pid}Q${++counter}.${HOST}`;
    const size = prefix.length + data.length;
    try {
      await this.ensure(dir);
      await writeChunksDurable(path.join(dir, 'tmp', name), path.join(dir, 'new', `${name},S=${size}`), [prefix, data]);
      return { status: 'delivered', reply: { code: 250, enhanced: '2.0.0', message: `Delivered to mailbox ${dir}` } };
    } catch (e) {
      this.made.delete(dir);
      return classifyLocalError(e as NodeJS.ErrnoException, dir);
    }
  }
}
