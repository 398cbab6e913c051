// A throwaway Dovecot IMAP server for interop tests: its own configuration, base_dir, state_dir and
// log under a folder the test owns (never /etc/dovecot or the system instance), IMAP only, plaintext
// LOGIN on one loopback address, every user mapped to one uid/gid (static passdb and userdb).
// Needs root and the Debian dovecot-imapd package.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';

export const DOVECOT = '/usr/sbin/dovecot';

export interface DovecotOptions {
  /** Folder for the instance (created if missing); must be searchable by the dovecot users. */
  base: string;
  host: string;
  port: number;
  /** mail_location, e.g. maildir:/var/lib/portcullis/mailboxes/%d/%n */
  mailLocation: string;
  /** Home of every user (userdb static), e.g. /var/lib/portcullis/mailboxes/%d/%n */
  home: string;
  /** The uid and gid mail processes run as. */
  uid: number;
  gid: number;
  /** Password of every user. */
  password: string;
}

export interface DovecotInstance {
  log(): string;
  stop(): Promise<void>;
}

export const dovecotInstalled = (): boolean => existsSync(DOVECOT);

export async function startDovecot(o: DovecotOptions): Promise<DovecotInstance> {
  mkdirSync(o.base, { recursive: true });
  chmodSync(o.base, 0o755);
  const logFile = path.join(o.base, 'dovecot.log');
  const conf = path.join(o.base, 'dovecot.conf');
  writeFileSync(
    conf,
    `# throwaway test instance
instance_name = portcullis-test-${o.port}
base_dir = ${o.base}/run
state_dir = ${o.base}/state
log_path = ${logFile}
info_log_path = ${logFile}
protocols = imap
listen = ${o.host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = ${o.mailLocation}
first_valid_uid = ${o.uid}
last_valid_uid = ${o.uid}
first_valid_gid = ${o.gid}
passdb {
  driver = static
  args = password=${o.password}
}
userdb {
  driver = static
  args = uid=${o.uid} gid=${o.gid} home=${o.home}
}
service imap-login {
  inet_listener imap {
    address = ${o.host}
    port = ${o.port}
  }
  inet_listener imaps {
    port = 0
  }
}
`,
  );
  const proc: ChildProcess = spawn(DOVECOT, ['-F', '-c', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  proc.stdout!.on('data', (d) => {
    output += d;
  });
  proc.stderr!.on('data', (d) => {
    output += d;
  });
  const log = () => `${output}${existsSync(logFile) ? readFileSync(logFile, 'utf8') : ''}`;
  const end = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`dovecot exited with ${proc.exitCode}:\n${log()}`);
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(o.port, o.host, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (up) break;
    if (Date.now() > end) {
      proc.kill('SIGKILL');
      throw new Error(`dovecot did not listen on ${o.host}:${o.port} within 15 s:\n${log()}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    log,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const done = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 10_000);
      await done;
      clearTimeout(t);
    },
  };
}
