// Owns: local delivery into Maildir (dataDir/mailboxes/<domain>/<localpart>/{tmp,new,cur}) and
// the mapping of a mailbox to its folder.
// Promise: a message is in new/ only complete and synced (write tmp, fsync, rename, fsync dir).
// Two mailboxes share a folder only when their local parts are equal after case folding, and no
// folder lies outside its domain folder. Folders and files are private (0700/0600) unless
// delivery.maildir names a group and mode: then every folder and file created here gets exactly
// that group and mode, whatever the umask. Failures come back as a classified outcome; nothing
// here throws to the caller.
import { chmod, chown, mkdir, readdir, unlink } from 'node:fs/promises';
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

/** delivery.maildir: the file mode ("0600", "0640", "0660") and the group of folders and files. */
export interface MaildirPermissions {
  mode?: string;
  gid?: number;
}

export class MaildirDelivery {
  private readonly root: string;
  private readonly made = new Set<string>();
  private readonly file: { mode?: number; gid?: number };
  /** Folder mode: the file mode plus x wherever r is given. */
  private readonly dirMode: number;

  constructor(dataDir: string, perm: MaildirPermissions = {}) {
    this.root = path.join(dataDir, 'mailboxes');
    const mode = perm.mode ? parseInt(perm.mode, 8) : 0o600;
    this.dirMode = mode | ((mode & 0o444) >> 2);
    this.file = mode === 0o600 && perm.gid === undefined ? {} : { mode, gid: perm.gid };
  }

  /** The folder of a mailbox (canonical address), or null when it is not a mailbox address. */
  pathFor(address: string): string | null {
    const r = parseAddress(address, true);
    if (!r.ok || r.mailbox.bare || !r.mailbox.domain) return null;
    const mb = r.mailbox;
    return path.join(this.root, mailboxFolder(mb.domain), mailboxFolder(mb.local));
  }

  private async ensure(dir: string): Promise<void> {
    if (this.made.has(dir)) return;
    if (this.file.mode === undefined) {
      await Promise.all(['tmp', 'new', 'cur'].map((d) => mkdir(path.join(dir, d), { recursive: true, mode: 0o700 })));
    } else {
      // mailboxes/, the domain and the mailbox folder, then tmp/ new/ cur/: each one created here
      // gets the group and mode (existing folders are left as the administrator set them).
      const levels = [this.root, path.dirname(dir), dir];
      for (const d of levels) await this.mkdirShared(d);
      await Promise.all(['tmp', 'new', 'cur'].map((d) => this.mkdirShared(path.join(dir, d))));
    }
    this.made.add(dir);
  }

  private async mkdirShared(d: string): Promise<void> {
    try {
      await mkdir(d, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return;
      throw e;
    }
    if (this.file.gid !== undefined) await chown(d, -1, this.file.gid);
    await chmod(d, this.dirMode);
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
    const list = async (d: string) => {
      try {
        return await readdir(d);
      } catch {
        return [];
      }
    };
    for (const domain of await list(this.root)) {
      for (const box of await list(path.join(this.root, domain))) {
        const tmp = path.join(this.root, domain, box, 'tmp');
        for (const f of await list(tmp)) {
          const m = mine.exec(f);
          if (m && Number(m[1]) !== process.pid) {
            try {
              await unlink(path.join(tmp, f));
              removed++;
            } catch {
              /* gone already */
            }
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
      return {
        status: 'failed',
        reply: { code: 550, enhanced: '5.1.3', message: 'Bad recipient address syntax', reason: why },
      };
    }
    const prefix = Buffer.from(`Return-Path: <${mailFrom}>\r\nDelivered-To: ${address}\r\n`);
    const now = Date.now();
    const name = `${Math.floor(now / 1000)}.M${(now % 1000) * 1000}P${process.pid}Q${++counter}.${HOST}`;
    const size = prefix.length + data.length;
    try {
      await this.ensure(dir);
      await writeChunksDurable(
        path.join(dir, 'tmp', name),
        path.join(dir, 'new', `${name},S=${size}`),
        [prefix, data],
        this.file,
      );
      return { status: 'delivered', reply: { code: 250, enhanced: '2.0.0', message: `Delivered to mailbox ${dir}` } };
    } catch (e) {
      this.made.delete(dir);
      return classifyLocalError(e as NodeJS.ErrnoException, dir);
    }
  }
}
