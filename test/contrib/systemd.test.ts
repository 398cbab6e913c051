// The service files in contrib/: the systemd unit carries the hardening and passes
// `systemd-analyze verify` (and scores well in `systemd-analyze security`); the sysusers and
// tmpfiles snippets create the user and folders they promise; the example configuration is valid.
// The systemd tools are optional: tests that need them are skipped with the reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../../src/config/load.ts';
import { BIN, ROOT, tempDir } from '../helpers/gateway.ts';

const unitFile = path.join(ROOT, 'contrib/systemd/portcullis.service');
const unit = readFileSync(unitFile, 'utf8');
const has = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
const noTool = (tool: string) => (has(tool) ? false : `${tool} is not installed (Debian package systemd)`);

/** Every Key=value of the [Service] section (a key may repeat). */
function serviceKeys(): Map<string, string[]> {
  const section = /^\[Service\]$([^]*?)(?=^\[|(?![^]))/m.exec(unit)![1];
  const m = new Map<string, string[]>();
  for (const line of section.split('\n')) {
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (kv) m.set(kv[1], [...(m.get(kv[1]) ?? []), kv[2]]);
  }
  return m;
}

test('the unit runs unprivileged with only CAP_NET_BIND_SERVICE, read-only but for the dataDir, restarts on failure and reloads with SIGHUP', () => {
  const k = serviceKeys();
  const one = (key: string) => { assert.equal(k.get(key)?.length, 1, key); return k.get(key)![0]; };
  assert.equal(one('User'), 'portcullis');
  assert.equal(one('Group'), 'portcullis');
  assert.equal(one('AmbientCapabilities'), 'CAP_NET_BIND_SERVICE');
  assert.equal(one('CapabilityBoundingSet'), 'CAP_NET_BIND_SERVICE');
  for (const key of ['NoNewPrivileges', 'PrivateTmp', 'ProtectHome', 'PrivateDevices', 'RestrictSUIDSGID']) assert.equal(one(key), 'yes', key);
  assert.equal(one('ProtectSystem'), 'strict');
  assert.equal(one('ReadWritePaths'), '/var/lib/portcullis');
  assert.equal(one('Restart'), 'on-failure');
  assert.equal(one('RestartPreventExitStatus'), '2', 'a configuration error (exit 2) is not restarted in a loop');
  assert.equal(one('ExecReload'), '/bin/kill -HUP $MAINPID');
  assert.equal(one('ExecStart'), '/usr/bin/node /opt/portcullis/bin/portcullis.js serve -c /etc/portcullis/portcullis.yaml');
  assert.equal(one('UMask'), '0077');
  assert.ok(!k.has('MemoryDenyWriteExecute'), 'the V8 JIT needs writable code pages');
});

/** A copy whose ExecStart runs this checkout with this node (verify checks the binary exists). */
function localUnit(dir: string): string {
  const f = path.join(dir, 'portcullis.service');
  writeFileSync(f, unit.replace('/usr/bin/node /opt/portcullis/bin/portcullis.js', `${process.execPath} ${BIN}`));
  return f;
}

test('systemd-analyze verify finds nothing to say about the unit', { skip: noTool('systemd-analyze') }, () => {
  const dir = tempDir('pc-unit-');
  try {
    const r = spawnSync('systemd-analyze', ['verify', localUnit(dir)], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(`${r.stdout}${r.stderr}`.trim(), '', 'no warnings (unknown keys are only warned about)');
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('systemd-analyze security rates the unit\'s exposure at 2.0 or less ("OK")', { skip: noTool('systemd-analyze') }, (t) => {
  const dir = tempDir('pc-unit-');
  try {
    const r = spawnSync('systemd-analyze', ['security', '--offline=yes', '--no-pager', localUnit(dir)], { encoding: 'utf8', timeout: 60_000 });
    if (/unrecognized option/.test(r.stderr)) { t.skip('this systemd-analyze has no --offline (systemd < 250)'); return; }
    const m = /Overall exposure level for portcullis\.service: (\d+\.\d+)/.exec(r.stdout);
    assert.ok(m, r.stdout + r.stderr);
    assert.ok(Number(m[1]) <= 2.0, `exposure ${m[1]}`);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('sysusers creates the portcullis user; tmpfiles creates /etc/portcullis 0750 root:portcullis and /var/lib/portcullis 0750 portcullis', {
  skip: noTool('systemd-sysusers') || noTool('systemd-tmpfiles') || (process.getuid?.() === 0 ? false : 'needs root (chown)'),
}, () => {
  const root = tempDir('pc-root-');
  try {
    for (const [kind, src] of [['sysusers.d', 'portcullis.sysusers'], ['tmpfiles.d', 'portcullis.tmpfiles']]) {
      mkdirSync(path.join(root, 'etc', kind), { recursive: true });
      copyFileSync(path.join(ROOT, 'contrib/systemd', src), path.join(root, 'etc', kind, 'portcullis.conf'));
    }
    const users = spawnSync('systemd-sysusers', [`--root=${root}`, 'portcullis.conf'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(users.status, 0, users.stderr);
    const pw = readFileSync(path.join(root, 'etc/passwd'), 'utf8').split('\n').find((l) => l.startsWith('portcullis:'))!.split(':');
    assert.equal(pw[5], '/var/lib/portcullis');
    assert.match(pw[6], /nologin$/);
    const files = spawnSync('systemd-tmpfiles', ['--create', `--root=${root}`, 'portcullis.conf'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(files.status, 0, files.stderr);
    const uid = Number(pw[2]); const gid = Number(pw[3]);
    const st = (p: string) => { const s = statSync(path.join(root, p)); return { uid: s.uid, gid: s.gid, mode: s.mode & 0o7777 }; };
    assert.deepEqual(st('etc/portcullis'), { uid: 0, gid, mode: 0o750 });
    assert.deepEqual(st('var/lib/portcullis'), { uid, gid, mode: 0o750 });
  } finally { rmSync(root, { recursive: true, force: true }); }
});

test('the example configuration for /etc/portcullis is valid and names its service user', () => {
  const c = loadConfig(path.join(ROOT, 'contrib/portcullis.yaml'));
  assert.deepEqual(c.runAs, { user: 'portcullis', group: 'portcullis' });
  assert.equal(c.dataDir, '/var/lib/portcullis');
  assert.deepEqual(c.dns.servers, ['127.0.0.1']);
});
