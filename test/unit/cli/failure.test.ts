// The CLI's error boundary: what the operator reads for each kind of failure, and the exit status.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { describeFailure } from '../../../src/cli/failure.ts';
import { DnsError } from '../../../src/dns/types.ts';
import { AdminError } from '../../../src/errors.ts';
import { ROOT } from '../../helpers/gateway.ts';

const sysError = (message: string, fields: Record<string, unknown>) => Object.assign(new Error(message), fields);

test('a real EADDRINUSE names the address, the cause and the fix', async () => {
  const a = net.createServer();
  await new Promise<void>((r) => a.listen(0, '127.0.0.1', r));
  const port = (a.address() as net.AddressInfo).port;
  const b = net.createServer();
  const e = await new Promise<Error>((r) => {
    b.once('error', r);
    b.listen(port, '127.0.0.1');
  });
  a.close();
  const f = describeFailure(e);
  assert.equal(f.exitCode, 1);
  assert.equal(f.unexpected, false);
  assert.match(
    f.text,
    new RegExp(`^cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use by another program`),
  );
  assert.match(f.text, /\n {2}fix: stop that program \(`ss -ltnp` names it\), or change smtp\.listen$/);
});

test('ports below 1024 without privileges: CAP_NET_BIND_SERVICE is named', () => {
  const f = describeFailure(
    sysError('listen EACCES: permission denied 0.0.0.0:25', {
      code: 'EACCES',
      syscall: 'listen',
      address: '0.0.0.0',
      port: 25,
    }),
  );
  assert.match(
    f.text,
    /^cannot listen on 0\.0\.0\.0:25: permission denied; ports below 1024 need the CAP_NET_BIND_SERVICE capability/,
  );
  assert.match(f.text, /AmbientCapabilities=CAP_NET_BIND_SERVICE/);
});

test('an address not on this machine, IPv6 written in brackets', () => {
  const f = describeFailure(
    sysError('listen EADDRNOTAVAIL', { code: 'EADDRNOTAVAIL', syscall: 'listen', address: '2001:db8::1', port: 25 }),
  );
  assert.match(
    f.text,
    /^cannot listen on \[2001:db8::1\]:25: 2001:db8::1 is not an address of this machine\n {2}fix: in smtp\.listen/,
  );
});

test('file system errors name the path; a damaged queue says how to restore', () => {
  assert.match(
    describeFailure(
      sysError("EACCES: permission denied, mkdir '/var/lib/portcullis'", {
        code: 'EACCES',
        syscall: 'mkdir',
        path: '/var/lib/portcullis',
      }),
    ).text,
    /^permission denied: mkdir \/var\/lib\/portcullis\n {2}fix: run as the user that owns dataDir/,
  );
  assert.match(
    describeFailure(sysError('file is not a database', { code: 'SQLITE_NOTADB' })).text,
    /queue database .* is damaged: file is not a database\n {2}fix: restore it from a backup/,
  );
  assert.match(
    describeFailure(sysError('attempt to write a readonly database', { code: 'SQLITE_READONLY_DBMOVED' })).text,
    /^cannot use the queue database \(dataDir\/queue\.sqlite\): attempt to write a readonly database\n {2}fix: run as the user that owns dataDir/,
  );
});

test('DNS failures: unknown answers point at dns.servers, a missing name at its spelling', () => {
  const t = describeFailure(new DnsError('servfail', 'fabrikam.test', 'MX'));
  assert.equal(t.exitCode, 1);
  assert.match(
    t.text,
    /^DNS lookup failed, the answer is unknown \(DNS MX fabrikam\.test: servfail\)\n {2}fix: check that the servers in dns\.servers/,
  );
  assert.match(
    describeFailure(new DnsError('nxdomain', 'fabrikam.tset', 'MX')).text,
    /^fabrikam\.tset does not exist in DNS .*\n {2}fix: check the spelling of fabrikam\.tset$/,
  );
});

test('AdminErrors keep their text and exit status; anything else is unexpected, in one line', () => {
  assert.deepEqual(describeFailure(new AdminError('bad', 'do this')), {
    text: 'bad\n  fix: do this',
    exitCode: 2,
    unexpected: false,
  });
  assert.equal(describeFailure(new AdminError('no server', 'start it', 1)).exitCode, 1);
  const f = describeFailure(new TypeError("Cannot read properties of undefined (reading 'x')"));
  assert.deepEqual(f, {
    text: "unexpected error: Cannot read properties of undefined (reading 'x')",
    exitCode: 1,
    unexpected: true,
  });
});

/** A process that installs the boundary with the log (as main.ts does once a command runs), then lets `escape` escape. */
function escaped(escape: string, serving: boolean, env: NodeJS.ProcessEnv = {}) {
  const script = `const { installBoundary, logTo } = await import('./src/cli/failure.ts');
    const { emit, setLogOutput } = await import('./src/events.ts');
    setLogOutput({ fd: 1, format: 'json' });
    logTo(emit);
    installBoundary(() => ${serving});
    ${escape}`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, PORTCULLIS_DEBUG: '', ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('an uncaught exception: one line and where the details are, no stack; exit 1', () => {
  const r = escaped("setTimeout(() => { throw new TypeError('boom'); });", false);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'portcullis: unexpected error: boom\n  details: run the command again with --debug\n');
  assert.equal(r.stdout, '');
});

test('while serving, an unhandled rejection is logged with its stack (internal.error), stderr points there', () => {
  const r = escaped("void Promise.reject(new Error('kaput'));", true);
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr,
    'portcullis: unexpected error: kaput\n  details: in the log (event internal.error, with the stack)\n',
  );
  const logged = JSON.parse(r.stdout.trim()) as { event: string; error: string; stack: string };
  assert.equal(logged.event, 'internal.error');
  assert.equal(logged.error, 'kaput');
  assert.match(logged.stack, /^Error: kaput\n\s+at /);
});

test('PORTCULLIS_DEBUG=1 shows the stack', () => {
  const r = escaped("setTimeout(() => { throw new TypeError('boom'); });", false, { PORTCULLIS_DEBUG: '1' });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^portcullis: unexpected error: boom\nTypeError: boom\n\s+at /);
});
