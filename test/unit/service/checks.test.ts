// The service-user checks, judged for another user from owners and modes (what `config check` does
// as root on behalf of runAs): each problem names the path and the fix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { accessFor, dataDirProblems, maildirGroupProblem, readableProblems } from '../../../src/service/checks.ts';
import { findGroup, type Identity } from '../../../src/service/privileges.ts';
import { tempDir } from '../../helpers/gateway.ts';

const root = process.getuid?.() === 0;
const skip = root ? false : 'needs root (creates files owned by other users)';
// A service user that is none of the test's own ids.
const svc: Identity = { user: 'svc', uid: 4242, group: 'svc', gid: 4242, groups: [4242] };

function base(): string {
  const d = tempDir('pc-checks-');
  chmodSync(d, 0o755);
  return d;
}

test('dataDir owned by the service user passes; root-owned queue files are named with the chown fix', { skip }, () => {
  const dataDir = path.join(base(), 'data');
  mkdirSync(dataDir, { mode: 0o750 });
  chownSync(dataDir, svc.uid, svc.gid);
  const access = accessFor(svc);
  assert.deepEqual(dataDirProblems(dataDir, svc, access), []);
  writeFileSync(path.join(dataDir, 'queue.sqlite'), '');
  writeFileSync(path.join(dataDir, 'queue.sqlite-wal'), '');
  chmodSync(path.join(dataDir, 'queue.sqlite-wal'), 0o644);
  chownSync(path.join(dataDir, 'queue.sqlite'), svc.uid, svc.gid);
  const ps = dataDirProblems(dataDir, svc, access);
  assert.equal(ps.length, 1);
  assert.match(
    ps[0].problem,
    new RegExp(`${dataDir}/queue\\.sqlite-wal \\(owner root:root, mode 0644\\) is not writable by user svc`),
  );
  assert.equal(ps[0].fix, `chown -R svc:svc ${dataDir}`);
});

test('dataDir: not writable, world-writable, missing with an unwritable parent, unreachable', { skip }, () => {
  const b = base();
  const access = accessFor(svc);
  const rootOwned = path.join(b, 'root-owned');
  mkdirSync(rootOwned, { mode: 0o755 });
  const [p] = dataDirProblems(rootOwned, svc, access);
  assert.match(p.problem, /dataDir .*root-owned \(owner root:root, mode 0755\) is not writable by user svc/);
  assert.equal(p.fix, `chown -R svc:svc ${rootOwned}`);

  const open = path.join(b, 'open');
  mkdirSync(open);
  chmodSync(open, 0o777);
  assert.match(dataDirProblems(open, svc, access)[0].problem, /writable by every user/);
  assert.match(dataDirProblems(open, svc, access)[0].fix, /chmod o-w/);

  const missing = path.join(rootOwned, 'data');
  const [m] = dataDirProblems(missing, svc, access);
  assert.match(m.problem, /does not exist and user svc cannot create it/);
  assert.equal(m.fix, `mkdir -p ${missing} && chown svc:svc ${missing} && chmod 0750 ${missing}`);

  const hidden = path.join(b, 'hidden');
  mkdirSync(path.join(hidden, 'data'), { recursive: true });
  chmodSync(hidden, 0o700);
  chownSync(path.join(hidden, 'data'), svc.uid, svc.gid);
  const [h] = dataDirProblems(path.join(hidden, 'data'), svc, access);
  assert.match(
    h.problem,
    new RegExp(`cannot reach ${hidden}/data: folder ${hidden} \\(owner root:root, mode 0700\\) is not searchable`),
  );
  assert.match(h.fix, /chmod o\+x/);

  const free = path.join(b, 'free');
  mkdirSync(free);
  chownSync(free, svc.uid, svc.gid);
  assert.deepEqual(
    dataDirProblems(path.join(free, 'data'), svc, access),
    [],
    'a missing dataDir the user can create is fine',
  );
});

test('keys must stay readable by the service user: 0600 root is refused, 0640 root:group passes', { skip }, () => {
  const b = base();
  const key = path.join(b, 'mx1.key');
  writeFileSync(key, 'k', { mode: 0o600 });
  const files = [{ file: key, what: 'private key' }];
  const [p] = readableProblems(files, svc, accessFor(svc));
  assert.match(
    p.problem,
    new RegExp(
      `user svc cannot read private key ${key} \\(owner root:root, mode 0600\\); it is read again after start`,
    ),
  );
  assert.equal(p.fix, `chgrp svc ${key} && chmod g+r ${key} (keys: 0640 root:svc)`);
  chownSync(key, 0, svc.gid);
  chmodSync(key, 0o640);
  assert.deepEqual(readableProblems(files, svc, accessFor(svc)), []);
});

const mail = findGroup('mail');
test(
  "the Maildir group must be one of the service user's groups",
  { skip: mail ? false : 'no group "mail" on this system' },
  () => {
    assert.equal(maildirGroupProblem(undefined, svc), null);
    assert.equal(maildirGroupProblem(4242, svc), null);
    assert.match(
      maildirGroupProblem(mail!.gid, svc)!.problem,
      /delivery\.maildir\.group mail: user svc is not a member of group mail/,
    );
    assert.match(maildirGroupProblem(mail!.gid, svc)!.fix, /^adduser svc mail/);
  },
);
