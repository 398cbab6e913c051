// Running as a service (needs root; skipped otherwise): started as root, Portcullis binds port 25
// (in a private network namespace), reads its keys, then runs as the unprivileged runAs user: every
// thread's ids, no capabilities, and every file it creates in dataDir belongs to that user. It
// refuses to run as root without runAs (a real configuration file), refuses keys and a dataDir the
// service user could not use (naming the fix), and started unprivileged with CAP_NET_BIND_SERVICE
// (what the systemd unit does) it binds port 25 without runAs.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import YAML from 'yaml';
import {
  cleanup,
  defaultOrgs,
  freePort,
  runCli,
  startGateway,
  tempDir,
  type GatewayHandle,
} from '../helpers/gateway.ts';
import { makePki } from '../helpers/pki.ts';
import { findUser } from '../../src/service/privileges.ts';

const run = promisify(execFile);
const MAIL = findUser('mail');
const root = process.getuid?.() === 0;
const tools = ['unshare', 'nsenter', 'setpriv', 'ip', 'swaks'].filter(
  (t) => spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0,
);
const skip = !root
  ? 'needs root'
  : !MAIL
    ? 'needs the system user mail'
    : tools.length
      ? `needs ${tools.join(', ')} (iproute2, util-linux, swaks)`
      : false;
/**
 * Port 25 in a network namespace of the server's own when this machine lets us create one (the
 * real port, nothing else on the host is touched); otherwise a free high port on the host.
 */
const NETNS = root && !tools.length && spawnSync('unshare', ['--net', 'true']).status === 0;
if (root && !NETNS) console.log('# network namespaces cannot be created here: the port-25 tests use a high port');
async function placement(prefix = ''): Promise<{ port: number; wrap: string[] }> {
  if (NETNS)
    return { port: 25, wrap: ['unshare', '--net', '--', 'sh', '-c', `ip link set lo up && exec ${prefix} "$0" "$@"`] };
  return { port: await freePort(), wrap: prefix ? ['sh', '-c', `exec ${prefix} "$0" "$@"`] : [] };
}
/** As the systemd unit starts it: user mail, only CAP_NET_BIND_SERVICE (ambient), no new privileges. */
const SYSTEMD_LIKE =
  'setpriv --reuid=mail --regid=mail --init-groups --inh-caps=+net_bind_service --ambient-caps=+net_bind_service --no-new-privs --';

const handles: GatewayHandle[] = [];
after(async () => {
  for (const h of handles) await cleanup(h);
});

/** A folder the mail user owns, for the config file and dataDir. */
function mailDir(): string {
  const dir = tempDir('pc-service-');
  chownSync(dir, MAIL!.uid, MAIL!.gid);
  return dir;
}

function status(pid: number): { task: string; uid: string; gid: string; groups: string; capEff: string }[] {
  return readdirSync(`/proc/${pid}/task`).map((t) => {
    const s = readFileSync(`/proc/${pid}/task/${t}/status`, 'utf8');
    const line = (k: string) => new RegExp(`^${k}:\\s*(.*)$`, 'm').exec(s)![1].trim();
    return { task: t, uid: line('Uid'), gid: line('Gid'), groups: line('Groups'), capEff: line('CapEff') };
  });
}

/** swaks (plain SMTP) to the server, inside its network namespace when it has one. */
async function send(gw: GatewayHandle, to: string): Promise<string> {
  const swaks = [
    'swaks',
    '--server',
    `127.0.0.1:${gw.port}`,
    '--from',
    'a@fabrikam.test',
    '--to',
    to,
    '--ehlo',
    'client.fabrikam.test',
    '--header',
    'Subject: as a service',
    '--body',
    'hello',
  ];
  const [cmd, ...args] = NETNS ? ['nsenter', '-t', String(gw.proc.pid), '-n', '--', ...swaks] : swaks;
  return (await run(cmd, args, { timeout: 30_000 })).stdout;
}

const ownerOf = (p: string) => {
  const st = statSync(p);
  return `${st.uid}:${st.gid}`;
};

test(
  "started as root with --user/--group (or runAs): port 25 bound, then every thread runs as the mail user without capabilities; what it creates is the mail user's",
  { skip, timeout: 120_000 },
  async () => {
    const dir = mailDir();
    // serve --user/--group stand in for runAs (none in this file).
    const gw = await startGateway({
      dir,
      ...(await placement()),
      config: { runAs: undefined },
      args: ['--user', 'mail', '--group', 'mail'],
    });
    handles.push(gw);
    const pid = gw.proc.pid!;
    const uid = MAIL!.uid;
    const gid = MAIL!.gid;
    const tasks = status(pid);
    assert.ok(tasks.length > 1);
    for (const t of tasks) {
      assert.equal(t.uid, `${uid}\t${uid}\t${uid}\t${uid}`, `thread ${t.task}`);
      assert.equal(t.gid, `${gid}\t${gid}\t${gid}\t${gid}`, `thread ${t.task}`);
      assert.equal(t.capEff, '0000000000000000', `thread ${t.task}`);
      assert.ok(!t.groups.split(/\s+/).includes('0'), `thread ${t.task} keeps no root group`);
    }
    const ev = await gw.waitForLog((e) => e.event === 'server.privileges');
    assert.equal(ev.user, 'mail');
    assert.match(String(ev.runs), /dropped from root/);
    assert.ok(gw.events().some((e) => e.event === 'server.listening' && e.address === `127.0.0.1:${gw.port}`));

    const out = await send(gw, 'alice@contoso.test');
    assert.match(out, /250 2\.0\.0 OK queued as/);
    await gw.waitForLog((e) => e.event === 'delivery.result' && e.status === 'delivered');
    const box = path.join(gw.dataDir, 'mailboxes/contoso.test/alice');
    const file = path.join(box, 'new', readdirSync(path.join(box, 'new'))[0]);
    for (const p of [
      gw.dataDir,
      'queue.sqlite',
      'queue.sqlite-wal',
      'queue.sqlite-shm',
      'control.sock',
      'certs',
      'certs/dev-key.pem',
      'mailboxes',
      box,
      file,
    ]) {
      assert.equal(ownerOf(path.resolve(gw.dataDir, p)), `${uid}:${gid}`, p);
    }
    assert.equal(statSync(path.join(gw.dataDir, 'control.sock')).mode & 0o777, 0o660);
    assert.equal(
      statSync(path.join(gw.dataDir, 'queue.sqlite')).mode & 0o777,
      0o600,
      'the service umask keeps the queue private',
    );

    // The control socket serves root and the service user.
    const reload = await gw.cli(['config', 'reload']);
    assert.equal(reload.code, 0, reload.stderr);
    const asMail = await run(
      process.execPath,
      [path.resolve('bin/portcullis.js'), 'config', 'reload', '-c', gw.configFile],
      { uid, gid },
    );
    assert.match(asMail.stdout, /configuration reloaded/);
  },
);

test(
  'started as root without runAs: a configuration file is refused with the fix (serve and config check)',
  { skip, timeout: 120_000 },
  async () => {
    const dir = tempDir('pc-service-');
    const file = path.join(dir, 'portcullis.yaml');
    writeFileSync(
      file,
      YAML.stringify({
        dataDir: path.join(dir, 'data'),
        smtp: { listen: [`127.0.0.1:${await freePort()}`] },
        organizations: defaultOrgs,
      }),
    );
    const serve = await runCli(['serve', '-c', file]);
    assert.equal(serve.code, 2);
    assert.equal(
      serve.stderr,
      `portcullis: refusing to run as root: ${file} has no runAs\n  fix: set runAs: {user: portcullis, group: portcullis} in ${file} (or pass --user/--group), or runAs: root to run as root deliberately\n`,
    );
    const check = await runCli(['config', 'check', '-c', file]);
    assert.equal(check.code, 2);
    assert.match(
      check.stderr,
      /serve would refuse to start:\n {2}refusing to run as root: .* has no runAs\n {4}fix: set runAs/,
    );
    assert.deepEqual(readdirSync(dir), ['portcullis.yaml'], 'nothing was created');
    rmSync(dir, { recursive: true, force: true });
  },
);

const ownNetns =
  skip || (NETNS ? false : 'needs a network namespace of its own (the embedded defaults listen on 127.0.0.1:2525)');
test(
  'embedded defaults as root are development mode: they run, with a loud warning',
  { skip: ownNetns, timeout: 120_000 },
  async () => {
    // No configuration file in the working folder (the handle's own file is not used): `npm start`.
    const cwd = tempDir('pc-service-');
    const gw = await startGateway({
      wrap: ['unshare', '--net', '--', 'sh', '-c', `ip link set lo up && cd ${cwd} && exec "$0" "$1" serve`],
    });
    handles.push(gw);
    after(() => rmSync(cwd, { recursive: true, force: true }));
    await gw.waitForLog(
      (e) =>
        e.msg ===
        'RUNNING AS ROOT: the embedded defaults are for development. A configuration file must name the user to run as (runAs), and Portcullis then drops root after binding its ports.',
    );
    assert.ok(gw.events().some((e) => e.event === 'server.listening' && e.address === '127.0.0.1:2525'));
    assert.equal(status(gw.proc.pid!)[0].uid, '0\t0\t0\t0');
  },
);

test(
  'keys the service user cannot read are refused at start, naming the file and the fix; readable by its group, rotation works after the drop',
  { skip, timeout: 120_000 },
  async () => {
    const dir = mailDir();
    const certs = path.join(dir, 'certs');
    mkdirSync(certs);
    const pki = await makePki(certs, 'Service');
    const leaf = await pki.issue('mx1.contoso.test');
    chmodSync(leaf.key, 0o600);
    const port = await freePort();
    const file = path.join(dir, 'portcullis.yaml');
    const config = {
      hostname: 'mx1.contoso.test',
      dataDir: path.join(dir, 'data'),
      runAs: { user: 'mail', group: 'mail' },
      smtp: { listen: [`127.0.0.1:${port}`] },
      organizations: defaultOrgs,
      tls: { certificates: [{ cert: leaf.chain, key: leaf.key }], trust: { system: false, caFiles: [pki.rootFile] } },
    };
    writeFileSync(file, YAML.stringify(config));
    const check = await runCli(['config', 'check', '-c', file]);
    assert.equal(check.code, 2);
    const problem = `user mail cannot read private key ${leaf.key} (owner root:root, mode 0600); it is read again after start (reload, certificate rotation)\n    fix: chgrp mail ${leaf.key} && chmod g+r ${leaf.key} (keys: 0640 root:mail)`;
    assert.ok(check.stderr.includes(problem), check.stderr.replace(/^/, 'config check said: '));
    const serve = await runCli(['serve', '-c', file]);
    assert.equal(serve.code, 2);
    assert.ok(
      serve.stderr.includes(`portcullis: Portcullis cannot run as user mail (group mail):\n  ${problem}`),
      serve.stderr,
    );

    chownSync(leaf.key, 0, MAIL!.gid);
    chmodSync(leaf.key, 0o640);
    const ok = await runCli(['config', 'check', '-c', file]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /runs as mail:mail \(dropped from root\)/);
    const gw = await startGateway({ dir, port, config });
    handles.push(gw);
    // Rotation: new files renamed over the old ones are read by the mail user.
    const next = await pki.issue('mx1.contoso.test', { subject: 'CN=mx1.contoso.test, O=Rotated' });
    for (const [from, to] of [
      [next.key, leaf.key],
      [next.chain, leaf.chain],
    ]) {
      chownSync(from, 0, MAIL!.gid);
      chmodSync(from, 0o640);
      renameSync(from, to);
    }
    const loaded = await gw.waitForLog((e) => e.event === 'tls.certificates.loaded' && e.source === 'file change');
    assert.ok(loaded);
    const reload = await gw.cli(['config', 'reload']);
    assert.match(reload.stdout, /configuration reloaded/);
  },
);

test(
  'a dataDir left with root-owned queue files is refused with the chown fix',
  { skip, timeout: 120_000 },
  async () => {
    const dir = mailDir();
    const dataDir = path.join(dir, 'data');
    mkdirSync(dataDir);
    chownSync(dataDir, MAIL!.uid, MAIL!.gid);
    writeFileSync(path.join(dataDir, 'queue.sqlite'), '');
    chmodSync(path.join(dataDir, 'queue.sqlite'), 0o644);
    const file = path.join(dir, 'portcullis.yaml');
    writeFileSync(
      file,
      YAML.stringify({
        dataDir,
        runAs: { user: 'mail' },
        smtp: { listen: [`127.0.0.1:${await freePort()}`] },
        organizations: defaultOrgs,
      }),
    );
    const serve = await runCli(['serve', '-c', file]);
    assert.equal(serve.code, 2);
    assert.ok(
      serve.stderr.includes(
        `  ${dataDir}/queue.sqlite (owner root:root, mode 0644) is not writable by user mail (was Portcullis run as another user on this dataDir?)\n    fix: chown -R mail:mail ${dataDir}`,
      ),
      serve.stderr,
    );
    const check = await runCli(['config', 'check', '-c', file]);
    assert.equal(check.code, 2);
    assert.ok(check.stderr.includes(`fix: chown -R mail:mail ${dataDir}`), check.stderr);
    rmSync(dir, { recursive: true, force: true });
  },
);

test(
  'started unprivileged with CAP_NET_BIND_SERVICE (as the systemd unit does): port 25 without runAs, or with runAs naming that user',
  { skip, timeout: 120_000 },
  async () => {
    for (const config of [{}, { runAs: { user: 'mail', group: 'mail' } }]) {
      const dir = mailDir();
      const gw = await startGateway({
        dir,
        ...(await placement(SYSTEMD_LIKE)),
        config: { runAs: undefined, ...config },
      });
      handles.push(gw);
      const ev = await gw.waitForLog((e) => e.event === 'server.privileges');
      assert.equal(ev.user, 'mail');
      assert.match(String(ev.runs), /started (unprivileged|as the runAs user)/);
      const [t] = status(gw.proc.pid!);
      assert.equal(t.uid, `${MAIL!.uid}\t${MAIL!.uid}\t${MAIL!.uid}\t${MAIL!.uid}`);
      assert.match(await send(gw, 'bob@contoso.test'), /250 2\.0\.0 OK queued as/);
      await gw.stop();
    }
  },
);
