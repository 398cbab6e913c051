// Owns: who the server runs as. Resolves users and groups through the system's account databases
// (`getent`, so NSS sources count), decides from runAs / --user / --group and the starting user
// whether to drop root, and drops it (supplementary groups, gid, uid) with proof that root cannot be
// regained. A future supervisor calls dropPrivileges() once, before forking its workers.
// Promise: never returns from a drop with the process able to become root again; every refusal is
// an AdminError that names the fix.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import type { Config } from '../config/load.ts';
import { AdminError } from '../errors.ts';

/** A user as the kernel sees it: ids, plus names for messages. */
export interface Identity {
  user: string;
  uid: number;
  group: string;
  gid: number;
  /** Supplementary groups (the primary gid included). */
  groups: readonly number[];
}

/** runAs from the command line (`serve --user/--group`); overrides the file. */
export interface RunAsOverride {
  user?: string;
  group?: string;
}

export type Plan =
  /** Started as root: bind and read keys, then become `target`. */
  | { kind: 'drop'; target: Identity; note: string }
  /** Keep the starting identity (unprivileged already, or root deliberately). `warning` is loud. */
  | { kind: 'stay'; who: Identity; note: string; warning?: string };

function lookup(db: 'passwd' | 'group', key: string): string[] | null {
  try {
    const out = execFileSync('getent', [db, key], {
      encoding: 'utf8',
      timeout: 10_000,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const line = out.split('\n')[0];
    return line ? line.split(':') : null;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { status?: number };
    if (err.code !== 'ENOENT') return null; // exit 2: no such entry
    // No getent (not glibc): the files are the account database.
    const file = readFileSync(db === 'passwd' ? '/etc/passwd' : '/etc/group', 'utf8');
    for (const l of file.split('\n')) {
      const f = l.split(':'); // the id is the third field in both files
      if (f.length > 2 && (f[0] === key || (/^\d+$/.test(key) && f[2] === key))) return f;
    }
    return null;
  }
}

/** uid, primary gid and name of a user given by name or number; null when unknown. */
export function findUser(nameOrId: string | number): { name: string; uid: number; gid: number } | null {
  const f = lookup('passwd', String(nameOrId));
  return f ? { name: f[0], uid: Number(f[2]), gid: Number(f[3]) } : null;
}

/** gid and name of a group given by name or number; null when unknown. */
export function findGroup(nameOrId: string | number): { name: string; gid: number } | null {
  const f = lookup('group', String(nameOrId));
  return f ? { name: f[0], gid: Number(f[2]) } : null;
}

/** gid of a group named in the configuration at `key`; AdminError when it does not exist. */
export function configuredGroup(name: string, key: string): number {
  const g = findGroup(name);
  if (!g)
    throw new AdminError(
      `${key}: group "${name}" does not exist on this system`,
      `create it (addgroup --system ${name}) or correct ${key}`,
    );
  return g.gid;
}

/** "name" for a uid/gid when the account database knows it, else the number. */
export const userName = (uid: number): string => findUser(uid)?.name ?? String(uid);
export const groupName = (gid: number): string => findGroup(gid)?.name ?? String(gid);

/** The group list a login of `user` gets (what initgroups sets), for checks made on its behalf. */
function groupsOf(user: string, gid: number): number[] {
  try {
    const out = execFileSync('id', ['-G', '--', user], {
      encoding: 'utf8',
      timeout: 10_000,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return [...new Set([gid, ...out.trim().split(/\s+/).map(Number).filter(Number.isInteger)])];
  } catch {
    return [gid];
  }
}

/** Resolve a runAs user (and group, default the user's primary group) or explain what is missing. */
export function resolveIdentity(user: string, group?: string): Identity {
  const u = findUser(user);
  if (!u) {
    throw new AdminError(
      `runAs: user "${user}" does not exist on this system`,
      `create it (Debian: adduser --system --group --home /var/lib/portcullis ${user}) or correct runAs.user / --user`,
    );
  }
  const g = group === undefined ? (findGroup(u.gid) ?? { name: String(u.gid), gid: u.gid }) : findGroup(group);
  if (!g)
    throw new AdminError(
      `runAs: group "${group}" does not exist on this system`,
      `create it (addgroup --system ${group}) or correct runAs.group / --group`,
    );
  return { user: u.name, uid: u.uid, group: g.name, gid: g.gid, groups: groupsOf(u.name, g.gid) };
}

/** The identity this process has now. */
export function currentIdentity(): Identity {
  const uid = process.getuid!();
  const gid = process.getgid!();
  return { user: userName(uid), uid, group: groupName(gid), gid, groups: [...new Set([gid, ...process.getgroups!()])] };
}

const fixRunAs = (file: string | null) =>
  `set runAs: {user: portcullis, group: portcullis} in ${file ?? 'portcullis.yaml'} (or pass --user/--group), or ` +
  `runAs: root to run as root deliberately`;

/**
 * Decide who the server runs as. `extraGids` (the Maildir group) join the supplementary groups of a
 * dropped identity. With `forCheck`, a runAs user other than the current one is reported as the
 * identity to check for instead of refused (`config check` run by an administrator).
 */
export function planPrivileges(
  config: Pick<Config, 'runAs' | 'source'>,
  cli: RunAsOverride = {},
  extraGids: readonly number[] = [],
  forCheck = false,
): Plan {
  if (cli.group !== undefined && cli.user === undefined && (config.runAs === undefined || config.runAs === 'root')) {
    throw new AdminError(
      '--group needs --user (or runAs.user in the configuration file)',
      'pass --user NAME --group NAME',
    );
  }
  const fromFile = config.runAs;
  const want: 'root' | { user: string; group?: string } | undefined =
    cli.user !== undefined
      ? cli.user === 'root' && cli.group === undefined
        ? 'root'
        : { user: cli.user, group: cli.group }
      : fromFile === undefined || fromFile === 'root'
        ? fromFile
        : { user: fromFile.user, group: cli.group ?? fromFile.group };
  const me = currentIdentity();
  if (me.uid === 0) {
    if (want === undefined) {
      if (config.source)
        throw new AdminError(`refusing to run as root: ${config.source} has no runAs`, fixRunAs(config.source));
      return {
        kind: 'stay',
        who: me,
        note: 'root (embedded defaults, development mode)',
        warning:
          'RUNNING AS ROOT: the embedded defaults are for development. A configuration file must name the user to ' +
          'run as (runAs), and Portcullis then drops root after binding its ports.',
      };
    }
    if (want === 'root') return { kind: 'stay', who: me, note: 'root (runAs: root)' };
    const target = resolveIdentity(want.user, want.group);
    if (target.uid === 0) return { kind: 'stay', who: me, note: `root (runAs: ${target.user})` };
    const groups = [...new Set([...target.groups, ...extraGids])];
    return { kind: 'drop', target: { ...target, groups }, note: `${target.user}:${target.group} (dropped from root)` };
  }
  if (want === undefined) return { kind: 'stay', who: me, note: `${me.user}:${me.group} (started unprivileged)` };
  if (want === 'root') {
    throw new AdminError(
      `runAs: root, but Portcullis was started as ${me.user} (uid ${me.uid})`,
      'start it as root, or remove runAs',
    );
  }
  const target = resolveIdentity(want.user, want.group);
  if (target.uid === me.uid && target.gid === me.gid)
    return { kind: 'stay', who: me, note: `${me.user}:${me.group} (started as the runAs user)` };
  if (forCheck)
    return {
      kind: 'drop',
      target: { ...target, groups: [...new Set([...target.groups, ...extraGids])] },
      note: `${target.user}:${target.group}`,
    };
  throw new AdminError(
    `runAs: ${target.user}:${target.group}, but Portcullis was started as ${me.user}:${me.group} (uid ${me.uid}, ` +
      `gid ${me.gid}); only root can change user`,
    `start it as root (it drops to ${target.user} after binding its ports), or start it as ${target.user} with ` +
      `group ${target.group} (systemd: User=${target.user} Group=${target.group})`,
  );
}

/** Uid:/Gid: lines of every thread of this process: real, effective, saved and filesystem ids. */
function threadIds(): { uid: number[]; gid: number[] }[] {
  let tasks: string[];
  try {
    tasks = readdirSync('/proc/self/task');
  } catch {
    return [];
  }
  return tasks.flatMap((t) => {
    try {
      const s = readFileSync(`/proc/self/task/${t}/status`, 'utf8');
      const ids = (k: string) =>
        (new RegExp(`^${k}:\\s+(.*)$`, 'm').exec(s)?.[1] ?? '').trim().split(/\s+/).map(Number);
      return [{ uid: ids('Uid'), gid: ids('Gid') }];
    } catch {
      return [];
    } // thread ended meanwhile
  });
}

/**
 * Become `target`: supplementary groups (`target.groups`: the user's own, its runAs group and the
 * Maildir group), gid, then uid. Then prove it: every thread's real, effective, saved and filesystem ids are the
 * target's, and setuid(0) / setgid(0) fail. Throws (the caller must exit) if anything is off.
 */
export function dropPrivileges(target: Identity): void {
  process.setgroups!([...new Set([target.gid, ...target.groups])]);
  process.setgid!(target.gid);
  process.setuid!(target.uid);
  const wrong: string[] = [];
  if (process.getuid!() !== target.uid || process.geteuid!() !== target.uid) wrong.push('uid');
  if (process.getgid!() !== target.gid || process.getegid!() !== target.gid) wrong.push('gid');
  for (const t of threadIds()) {
    if (t.uid.some((u) => u !== target.uid)) wrong.push(`thread uid ${t.uid.join(' ')}`);
    if (t.gid.some((g) => g !== target.gid)) wrong.push(`thread gid ${t.gid.join(' ')}`);
  }
  for (const [what, regain] of [
    ['setuid(0)', () => process.setuid!(0)],
    ['setgid(0)', () => process.setgid!(0)],
  ] as const) {
    try {
      regain();
      wrong.push(`${what} succeeded`);
    } catch {
      /* expected: EPERM */
    }
  }
  if (wrong.length) {
    throw new AdminError(
      `dropping privileges to ${target.user}:${target.group} failed (${wrong.join(', ')}); refusing to run`,
      `start Portcullis as ${target.user} directly (systemd unit: User=${target.user}, ` +
        `AmbientCapabilities=CAP_NET_BIND_SERVICE)`,
    );
  }
}
