// Owns: the moment the server becomes its service user at start: after its listeners are bound and
// its keys read, drop root (when the plan says so), set the umask, create dataDir and check that the
// service user can use everything it will create, open and re-read from now on.
// Promise: returns only when the process runs as the planned identity and the checks passed;
// otherwise throws an AdminError listing each problem with its fix (the caller exits).
import { mkdirSync } from 'node:fs';
import type { Config } from '../config/load.ts';
import { AdminError } from '../errors.ts';
import { emit, notice } from '../events.ts';
import { formatProblems, processAccess, serviceProblems } from './checks.ts';
import { currentIdentity, dropPrivileges, type Identity, type Plan } from './privileges.ts';
import { errorMessage } from '../util/errors.ts';

/** Files the server creates are private unless given a mode explicitly (Maildir groups, control socket). */
export const SERVICE_UMASK = 0o077;

export function becomeServiceUser(plan: Plan, c: Config, maildirGid?: number): Identity {
  if (plan.kind === 'drop') dropPrivileges(plan.target);
  process.umask(SERVICE_UMASK);
  const who = currentIdentity();
  if (plan.kind === 'stay' && plan.warning) notice(plan.warning);
  try {
    mkdirSync(c.dataDir, { recursive: true, mode: 0o750 });
  } catch (e) {
    throw new AdminError(
      `cannot create dataDir ${c.dataDir} as user ${who.user}: ${errorMessage(e)}`,
      `mkdir -p ${c.dataDir} && chown ${who.user}:${who.group} ${c.dataDir} && chmod 0750 ${c.dataDir}`,
    );
  }
  const problems = serviceProblems(c, who, processAccess, maildirGid);
  if (problems.length)
    throw new AdminError(
      `Portcullis cannot run as user ${who.user} (group ${who.group}):\n${formatProblems(problems)}`,
    );
  emit({
    event: 'server.privileges',
    user: who.user,
    uid: who.uid,
    group: who.group,
    gid: who.gid,
    groups: [...who.groups],
    runs: plan.note,
  });
  return who;
}
