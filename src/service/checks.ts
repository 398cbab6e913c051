// Owns: the checks of what the service user must be able to reach, run at start (as that user,
// with the kernel's access(2)) and by `config check` (on its behalf, from owners and modes):
// dataDir (exists or can be created, owned or writable, not world-writable, the queue files and
// folders written by the server writable) and the files read again after start (the configuration
// file, certificates and keys, CA files), plus membership of the Maildir group.
// Promise: returns problems, each naming the path and the command that fixes it; throws nothing.
import { accessSync, constants, statSync, readdirSync, type Stats } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/load.ts';
import type { AdminError } from '../errors.ts';
import { configuredGroup, groupName, planPrivileges, userName, type Identity, type Plan } from './privileges.ts';

export interface Problem {
  problem: string;
  fix: string;
}

/** May `who` access `p` with mode (R_OK | W_OK | X_OK), judged on `p` alone (not its folders)? */
export type Access = (p: string, mode: number) => boolean;

/** The kernel's answer for this process (honours ACLs): use it once running as the service user. */
export const processAccess: Access = (p, mode) => {
  try {
    accessSync(p, mode);
    return true;
  } catch {
    return false;
  }
};

/** Owner, group and mode bits judged for `who` (POSIX ACLs are not considered). */
export function accessFor(who: Identity): Access {
  return (p, mode) => {
    let st: Stats;
    try {
      st = statSync(p);
    } catch {
      return false;
    }
    if (who.uid === 0) return (mode & constants.X_OK) === 0 || st.isDirectory() || (st.mode & 0o111) !== 0;
    const bits =
      st.uid === who.uid ? (st.mode >> 6) & 7 : who.groups.includes(st.gid) ? (st.mode >> 3) & 7 : st.mode & 7;
    return (bits & mode) === mode;
  };
}

const octal = (st: Stats) => `0${(st.mode & 0o7777).toString(8)}`;
const describe = (p: string): string => {
  try {
    const st = statSync(p);
    return `owner ${userName(st.uid)}:${groupName(st.gid)}, mode ${octal(st)}`;
  } catch {
    return 'missing';
  }
};
const exists = (p: string) => {
  try {
    statSync(p);
    return true;
  } catch {
    return false;
  }
};

/** The first folder on the way to `p` that `who` cannot search (x), or null. */
function blockingFolder(p: string, access: Access): string | null {
  const parts = path.resolve(p).split(path.sep).filter(Boolean);
  let dir: string = path.sep;
  for (let i = 0; i < parts.length - 1; i++) {
    if (!access(dir, constants.X_OK)) return dir;
    dir = path.join(dir, parts[i]);
  }
  return access(dir, constants.X_OK) ? null : dir;
}

function reach(p: string, who: Identity, access: Access): Problem | null {
  const dir = blockingFolder(p, access);
  if (!dir) return null;
  return {
    problem: `user ${who.user} cannot reach ${p}: folder ${dir} (${describe(dir)}) is not searchable by it`,
    fix: `chmod o+x ${dir} (or chgrp ${who.group} ${dir} && chmod g+x ${dir})`,
  };
}

/** dataDir and what the server writes inside it. */
export function dataDirProblems(dataDir: string, who: Identity, access: Access): Problem[] {
  const chown = `chown -R ${who.user}:${who.group} ${dataDir}`;
  let st: Stats;
  try {
    st = statSync(dataDir);
  } catch {
    let parent = path.dirname(dataDir);
    while (!exists(parent) && parent !== path.dirname(parent)) parent = path.dirname(parent);
    if (who.uid === 0 || (access(parent, constants.W_OK | constants.X_OK) && !blockingFolder(parent, access)))
      return []; // created at start
    return [
      {
        problem:
          `dataDir ${dataDir} does not exist and user ${who.user} cannot create it (${parent}: ` +
          `${describe(parent)})`,
        fix: `mkdir -p ${dataDir} && chown ${who.user}:${who.group} ${dataDir} && chmod 0750 ${dataDir}`,
      },
    ];
  }
  if (!st.isDirectory())
    return [
      { problem: `dataDir ${dataDir} is not a folder`, fix: 'point dataDir at a folder (default /var/lib/portcullis)' },
    ];
  const out: Problem[] = [];
  if (st.mode & 0o002)
    out.push({
      problem: `dataDir ${dataDir} is writable by every user (${describe(dataDir)})`,
      fix: `chmod o-w ${dataDir} (0750 is usual)`,
    });
  if (who.uid === 0) return out;
  const blocked = reach(dataDir, who, access);
  if (blocked) return [...out, blocked];
  if (!access(dataDir, constants.W_OK | constants.X_OK)) {
    return [
      ...out,
      { problem: `dataDir ${dataDir} (${describe(dataDir)}) is not writable by user ${who.user}`, fix: chown },
    ];
  }
  const rw = constants.R_OK | constants.W_OK;
  const dir = rw | constants.X_OK;
  const entries: [string, number][] = [
    ['queue.sqlite', rw],
    ['queue.sqlite-wal', rw],
    ['queue.sqlite-shm', rw],
    ['certs', dir],
    ['certs/dev-cert.pem', constants.R_OK],
    ['certs/dev-key.pem', constants.R_OK],
    ['mailboxes', dir],
  ];
  try {
    for (const d of readdirSync(path.join(dataDir, 'mailboxes'))) entries.push([path.join('mailboxes', d), dir]);
  } catch {
    /* no mailboxes yet, or unreadable: reported below */
  }
  for (const [rel, mode] of entries) {
    const p = path.join(dataDir, rel);
    if (exists(p) && !access(p, mode)) {
      out.push({
        problem:
          `${p} (${describe(p)}) is not ${mode & constants.W_OK ? 'writable' : 'readable'} by user ` +
          `${who.user} (was Portcullis run as another user on this dataDir?)`,
        fix: chown,
      });
    }
  }
  return out;
}

/** Files read again after start, as the service user: they must stay readable by it. */
export function readableProblems(
  files: readonly { file: string; what: string }[],
  who: Identity,
  access: Access,
): Problem[] {
  if (who.uid === 0) return [];
  const out: Problem[] = [];
  for (const { file, what } of files) {
    const blocked = reach(file, who, access);
    if (blocked) {
      out.push(blocked);
      continue;
    }
    if (exists(file) && !access(file, constants.R_OK)) {
      out.push({
        problem:
          `user ${who.user} cannot read ${what} ${file} (${describe(file)}); it is read again after start ` +
          `(reload, certificate rotation)`,
        fix: `chgrp ${who.group} ${file} && chmod g+r ${file} (keys: 0640 root:${who.group})`,
      });
    }
  }
  return out;
}

/** Every file of the configuration that is re-read on reload. */
export function rereadFiles(c: Config): { file: string; what: string }[] {
  return [
    ...(c.source ? [{ file: c.source, what: 'the configuration file' }] : []),
    ...c.tls.certificates.flatMap((p) => [
      { file: p.cert, what: 'certificate' },
      { file: p.key, what: 'private key' },
    ]),
    ...c.tls.trust.caFiles.map((f) => ({ file: f, what: 'CA file' })),
    ...c.organizations.flatMap((o) =>
      o.inboundConnectors.flatMap((ic) =>
        ic.trustedCAs.map((f) => ({ file: f, what: `CA file of connector "${ic.name}"` })),
      ),
    ),
  ];
}

/** The Maildir group must be one of `who`'s groups, or the files cannot be given to it. */
export function maildirGroupProblem(gid: number | undefined, who: Identity): Problem | null {
  if (gid === undefined || who.uid === 0 || who.groups.includes(gid)) return null;
  const g = groupName(gid);
  return {
    problem: `delivery.maildir.group ${g}: user ${who.user} is not a member of group ${g}`,
    fix:
      `adduser ${who.user} ${g} and restart (or start Portcullis as root with runAs: it joins the group when ` +
      `dropping root)`,
  };
}

/** All checks for `who`. */
export function serviceProblems(c: Config, who: Identity, access: Access, maildirGid?: number): Problem[] {
  const g = maildirGroupProblem(maildirGid, who);
  return [
    ...dataDirProblems(c.dataDir, who, access),
    ...readableProblems(rereadFiles(c), who, access),
    ...(g ? [g] : []),
  ];
}

export const formatProblems = (ps: readonly Problem[]): string =>
  ps.map((p) => `  ${p.problem}\n    fix: ${p.fix}`).join('\n');

/**
 * What `config check` reports: who `serve` would run as (when started the way this command was:
 * root drops to runAs) and what that user could not use, judged from owners and modes.
 */
export function checkService(c: Config): { runs: string; problems: Problem[] } {
  const asProblem = (e: unknown): Problem => {
    const err = e as AdminError;
    const cut = err.fix ? err.message.indexOf('\n  fix: ') : -1;
    return { problem: cut >= 0 ? err.message.slice(0, cut) : err.message, fix: err.fix ?? 'see docs/operations.md' };
  };
  let gid: number | undefined;
  let plan: Plan;
  try {
    gid =
      c.delivery.maildir.group === undefined
        ? undefined
        : configuredGroup(c.delivery.maildir.group, 'delivery.maildir.group');
    plan = planPrivileges(c, {}, gid === undefined ? [] : [gid], true);
  } catch (e) {
    return { runs: 'nobody: serve would refuse to start', problems: [asProblem(e)] };
  }
  const who = plan.kind === 'drop' ? plan.target : plan.who;
  return {
    runs: plan.note,
    problems: serviceProblems(c, who, plan.kind === 'drop' ? accessFor(who) : processAccess, gid),
  };
}
