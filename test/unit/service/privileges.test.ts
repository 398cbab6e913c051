// Who the server runs as: the decision (refuse root without runAs, development mode, drop, already
// the runAs user) and the drop itself, proven in a child process (a drop cannot be undone).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { findGroup, findUser, planPrivileges } from '../../../src/service/privileges.ts';
import { ROOT, tempDir } from '../../helpers/gateway.ts';

const root = process.getuid?.() === 0;
const nobody = findUser('nobody');
const mail = findGroup('mail');
const skip = !root ? 'needs root' : !nobody || !mail ? 'needs the user nobody and the group mail' : false;

/** Run `body` (TypeScript, with `P` = the privileges module and `fs`) in a child as uid/gid; its JSON output. */
function child(body: string, ids: { uid?: number; gid?: number } = {}): unknown {
  const dir = tempDir('pc-priv-');
  const file = path.join(dir, 'child.mts');
  writeFileSync(
    file,
    `import * as P from ${JSON.stringify(path.join(ROOT, 'src/service/privileges.ts'))};\nimport fs from 'node:fs';\n` +
      `const out = (() => { try { ${body} } catch (e) { return { error: (e as Error).message }; } })();\nprocess.stdout.write(JSON.stringify(out));\n`,
    { mode: 0o644 },
  );
  spawnSync('chmod', ['755', dir]);
  const r = spawnSync(process.execPath, ['--import', 'tsx', file], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 30_000,
    ...ids,
  });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test(
  'as root: a configuration file without runAs is refused with the fix; runAs root is deliberate; defaults are development mode',
  { skip, timeout: 60_000 },
  () => {
    assert.throws(
      () => planPrivileges({ runAs: undefined, source: '/etc/portcullis/portcullis.yaml' }),
      /refusing to run as root: \/etc\/portcullis\/portcullis\.yaml has no runAs\n {2}fix: set runAs: \{user: portcullis, group: portcullis\} in \/etc\/portcullis\/portcullis\.yaml \(or pass --user\/--group\), or runAs: root to run as root deliberately/,
    );
    const deliberate = planPrivileges({ runAs: 'root', source: '/x.yaml' });
    assert.equal(deliberate.kind, 'stay');
    const dev = planPrivileges({ runAs: undefined, source: null });
    assert.ok(dev.kind === 'stay' && /RUNNING AS ROOT/.test(dev.warning ?? ''));
    const drop = planPrivileges({ runAs: { user: 'nobody' }, source: '/x.yaml' }, {}, [mail!.gid]);
    assert.ok(drop.kind === 'drop');
    assert.equal(drop.target.uid, nobody!.uid);
    assert.equal(drop.target.gid, nobody!.gid, "the group defaults to the user's primary group");
    assert.ok(drop.target.groups.includes(mail!.gid), 'the Maildir group joins the supplementary groups');
    const cli = planPrivileges({ runAs: undefined, source: '/x.yaml' }, { user: 'nobody', group: 'mail' });
    assert.ok(
      cli.kind === 'drop' && cli.target.gid === mail!.gid && cli.target.group === 'mail',
      '--user/--group stand in for runAs',
    );
    assert.throws(
      () => planPrivileges({ runAs: undefined, source: '/x.yaml' }, { group: 'mail' }),
      /--group needs --user/,
    );
    assert.throws(
      () => planPrivileges({ runAs: { user: 'no-such-user-pc' }, source: '/x.yaml' }),
      /runAs: user "no-such-user-pc" does not exist on this system\n {2}fix: create it \(Debian: adduser --system/,
    );
  },
);

test(
  'started unprivileged: runAs must be that user (or absent); root cannot be asked for',
  { skip, timeout: 60_000 },
  () => {
    const ids = { uid: nobody!.uid, gid: nobody!.gid };
    const plan = (runAs: string) => `return P.planPrivileges({ runAs: ${runAs}, source: '/x.yaml' });`;
    assert.deepEqual(Object.keys(child(plan('undefined'), ids) as object), ['kind', 'who', 'note']);
    assert.equal((child(plan(`{ user: 'nobody' }`), ids) as { kind: string }).kind, 'stay');
    assert.match(
      (child(plan(`'root'`), ids) as { error: string }).error,
      /runAs: root, but Portcullis was started as nobody/,
    );
    assert.match(
      (child(plan(`{ user: 'mail' }`), ids) as { error: string }).error,
      /runAs: mail:mail, but Portcullis was started as nobody:.*only root can change user\n {2}fix: start it as root \(it drops to mail after binding its ports\), or start it as mail with group mail \(systemd: User=mail Group=mail\)/,
    );
  },
);

test(
  'dropping root: every thread takes the new ids, supplementary groups are set, root cannot be regained',
  { skip, timeout: 60_000 },
  () => {
    const r = child(`
    const target = P.resolveIdentity('nobody');
    P.dropPrivileges({ ...target, groups: [...target.groups, ${mail!.gid}] });
    const tasks = fs.readdirSync('/proc/self/task').map((t) => fs.readFileSync('/proc/self/task/' + t + '/status', 'utf8'));
    const line = (s: string, k: string) => new RegExp('^' + k + ':\\\\s+(.*)$', 'm').exec(s)![1].trim();
    let regained = true;
    try { process.setuid(0); } catch { regained = false; }
    return { tasks: tasks.length, uid: tasks.map((s) => line(s, 'Uid')), gid: tasks.map((s) => line(s, 'Gid')),
      groups: line(tasks[0], 'Groups'), capEff: line(tasks[0], 'CapEff'), capPrm: line(tasks[0], 'CapPrm'), regained };`) as {
      tasks: number;
      uid: string[];
      gid: string[];
      groups: string;
      capEff: string;
      capPrm: string;
      regained: boolean;
    };
    assert.ok(r.tasks > 1, 'the check covers the worker threads too');
    const n = nobody!;
    for (const u of r.uid) assert.equal(u, `${n.uid}\t${n.uid}\t${n.uid}\t${n.uid}`);
    for (const g of r.gid) assert.equal(g, `${n.gid}\t${n.gid}\t${n.gid}\t${n.gid}`);
    assert.ok(r.groups.split(/\s+/).includes(String(mail!.gid)));
    assert.ok(!r.groups.split(/\s+/).includes('0'), "root's group is gone");
    assert.equal(r.capEff, '0000000000000000');
    assert.equal(r.capPrm, '0000000000000000');
    assert.equal(r.regained, false);
  },
);
