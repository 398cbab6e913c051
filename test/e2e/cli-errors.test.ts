// The real CLI's failures and conventions: start-up errors (address not on the machine, port in
// use, second server on a dataDir, duplicate listen entries, ports below 1024), DNS failure,
// broken stdout pipe, usage errors, --version, reading commands that create nothing and keep log
// lines off stdout, log format. Every failure: the cause and the fix, the documented exit status,
// never a stack trace, and the process ends by itself.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import {
  BIN,
  ROOT,
  asRoot,
  cleanup,
  defaultOrgs,
  freePort,
  startGateway,
  tempDir as newTempDir,
} from '../helpers/gateway.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { makePki } from '../helpers/pki.ts';
import { SmtpClient } from '../helpers/smtp.ts';

const HOST = '127.0.0.82';
const LIMIT_MS = 90_000; // a command that has not ended by then hangs (the machine may be loaded)

const dirs: string[] = [];
const tempDir = (): string => {
  const d = newTempDir();
  dirs.push(d);
  return d;
};
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the CLI; fails the test if it does not end by itself. `closeStdout`: as if piped to `head` that already quit. */
function cli(
  args: string[],
  o: { env?: NodeJS.ProcessEnv; closeStdout?: boolean; prefix?: string[] } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const [cmd, ...pre] = o.prefix ?? [];
    const p = spawn(cmd ?? process.execPath, [...pre, ...(cmd ? [process.execPath] : []), BIN, ...args], {
      env: { ...process.env, PORTCULLIS_DEBUG: '', ...o.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (o.closeStdout) p.stdout.destroy();
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => {
      stdout += d;
    });
    p.stderr.on('data', (d) => {
      stderr += d;
    });
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`portcullis ${args.join(' ')} did not end by itself:\n${stderr}`));
    }, LIMIT_MS);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

function noStack(r: Run): void {
  assert.doesNotMatch(`${r.stdout}\n${r.stderr}`, /^\s+at /m, `a stack trace reached the user:\n${r.stderr}`);
}

function writeConfig(dir: string, cfg: Record<string, unknown>): string {
  const file = path.join(dir, 'portcullis.yaml');
  writeFileSync(
    file,
    YAML.stringify({
      ...asRoot(),
      hostname: 'mx1.contoso.test',
      dataDir: path.join(dir, 'data'),
      organizations: defaultOrgs,
      admin: { enabled: false },
      ...cfg,
    }),
  );
  return file;
}

/** Every path under dir, for "nothing was created". */
function tree(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort();
}

async function occupy(host: string, port: number): Promise<net.Server> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(port, host, r));
  return s;
}

test('--version and -V print the package version', async () => {
  const { version } = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
  for (const flag of ['--version', '-V']) {
    const r = await cli([flag]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout, `${version}\n`);
  }
});

test("usage errors exit 2 with commander's message and no stack", async () => {
  for (const [args, msg] of [
    [['bogus'], /unknown command 'bogus'/],
    [['queue', 'list', '--nope'], /unknown option '--nope'/],
    [['queue', 'show'], /missing required argument 'id'/],
    [[], /Usage: portcullis/],
  ] as const) {
    const r = await cli([...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, msg);
    noStack(r);
  }
});

test('reading commands on a dataDir never used: no file created, no log line on stdout, "no queue" said', async () => {
  const dir = tempDir();
  const pki = await makePki(dir);
  const leaf = await pki.issue('mx1.contoso.test');
  const withCert = writeConfig(dir, { tls: { certificates: [{ cert: leaf.cert, key: leaf.key }] } });
  const bare = path.join(dir, 'bare.yaml');
  writeFileSync(
    bare,
    YAML.stringify({
      ...asRoot(),
      hostname: 'mx1.contoso.test',
      dataDir: path.join(dir, 'data2'),
      organizations: defaultOrgs,
    }),
  );
  const before = tree(dir);

  const check = await cli(['config', 'check', '-c', withCert]);
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout, /^configuration OK [^\n]*\n$/, "stdout is the command's output only");
  const info = await cli(['cert', 'info', '-c', withCert]);
  assert.equal(info.code, 0, info.stderr);
  assert.match(info.stdout, /^certificate +\S+\.pem\n/);
  assert.doesNotMatch(info.stdout, /"level"/);

  const noCert = await cli(['cert', 'info', '-c', bare]);
  assert.equal(noCert.code, 1);
  assert.match(
    noCert.stderr,
    /no certificate configured \(tls\.certificates is empty\) and no development certificate at \S+dev-cert\.pem yet\n {2}fix: set tls\.certificates/,
  );
  assert.equal(noCert.stdout, '');
  for (const args of [
    ['queue', 'list'],
    ['queue', 'show', 'X'],
    ['trace'],
    ['queue', 'retry', 'X'],
    ['queue', 'delete', 'X'],
  ]) {
    const r = await cli([...args, '-c', bare]);
    assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(
      r.stderr,
      new RegExp(
        `no queue at ${path.join(dir, 'data2', 'queue.sqlite')}: no server has run with this dataDir yet\\n {2}fix: pass the -c FILE the server runs with`,
      ),
    );
    noStack(r);
  }
  for (const args of [
    ['connector', 'list'],
    ['config', 'check'],
  ])
    assert.equal((await cli([...args, '-c', bare])).code, 0);
  assert.deepEqual(tree(dir), before, 'no file or folder was created');
});

test('a damaged queue: one paragraph; --debug shows the stack', async () => {
  const dir = tempDir();
  const cfg = writeConfig(dir, {});
  mkdirSync(path.join(dir, 'data'));
  writeFileSync(
    path.join(dir, 'data', 'queue.sqlite'),
    'this is not a database, it is long enough to have a header of sorts '.repeat(20),
  );
  const r = await cli(['queue', 'list', '-c', cfg]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /^portcullis: the queue database \(dataDir\/queue\.sqlite\) is damaged: file is not a database\n {2}fix: restore it from a backup/,
  );
  noStack(r);
  const debug = await cli(['queue', 'list', '-c', cfg, '--debug']);
  assert.match(debug.stderr, /^\s+at /m, '--debug shows where it happened');
});

test('serve on an address not on this machine: exit 1, the address, the cause and the fix', async (t) => {
  const addr = '198.51.100.1'; // TEST-NET-2: bind() fails at once, nothing is sent
  if (
    Object.values(os.networkInterfaces())
      .flat()
      .some((i) => i?.address === addr)
  ) {
    t.skip(`${addr} is configured here`);
    return;
  }
  const dir = tempDir();
  const r = await cli(['serve', '-c', writeConfig(dir, { smtp: { listen: [`${addr}:2525`] } })]);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /portcullis: cannot listen on 198\.51\.100\.1:2525: 198\.51\.100\.1 is not an address of this machine\n {2}fix: in smtp\.listen, use an address this machine has/,
  );
  noStack(r);
  assert.equal(existsSync(path.join(dir, 'data', 'control.sock')), false, 'the control socket was released');
});

test('serve when the second of two ports is in use: exit 1 naming it; the retry starts once it is free', async () => {
  const dir = tempDir();
  const [free, busy] = [await freePort(HOST), await freePort(HOST)];
  const blocker = await occupy(HOST, busy);
  const listen = [`${HOST}:${free}`, `${HOST}:${busy}`];
  const r = await cli(['serve', '-c', writeConfig(dir, { smtp: { listen } })]);
  blocker.close();
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    new RegExp(
      `portcullis: cannot listen on ${HOST.replace(/\./g, '\\.')}:${busy}: the address is already in use by another program .*\\n {2}fix: stop that program \\(\`ss -ltnp\` names it\\), or change smtp\\.listen`,
    ),
  );
  noStack(r);
  const gw = await startGateway({ dir, host: HOST, config: { smtp: { listen } } });
  await cleanup(gw);
});

test('duplicate or overlapping listen entries: config check and serve both refuse (exit 2); host names are refused', async () => {
  const dir = tempDir();
  const dup = writeConfig(dir, { smtp: { listen: [`${HOST}:2525`, `${HOST}:2525`] } });
  for (const cmd of [['config', 'check'], ['serve']]) {
    const r = await cli([...cmd, '-c', dup]);
    assert.equal(r.code, 2, `${cmd.join(' ')}: ${r.stderr}`);
    assert.match(
      r.stderr,
      new RegExp(
        `smtp\\.listen\\[1\\]: "${HOST.replace(/\./g, '\\.')}:2525" is the same address as "${HOST.replace(/\./g, '\\.')}:2525"; list each address once\\n {2}fix: listen on each address once`,
      ),
    );
    noStack(r);
  }
  const spelled = await cli([
    'config',
    'check',
    '-c',
    writeConfig(dir, { smtp: { listen: ['0.0.0.0:25', ':25', '[::]:25', '[0::0]:25'] } }),
  ]);
  assert.equal(spelled.code, 2);
  assert.match(spelled.stderr, /smtp\.listen\[1\]: ":25" is the same address as "0\.0\.0\.0:25"/);
  assert.match(spelled.stderr, /smtp\.listen\[3\]: "\[0::0\]:25" is the same address as "\[::\]:25"/);
  const both = await cli(['config', 'check', '-c', writeConfig(dir, { smtp: { listen: ['0.0.0.0:25', '[::]:25'] } })]);
  assert.equal(both.code, 0, 'every IPv4 and every IPv6 address on one port bind together');
  const named = await cli(['config', 'check', '-c', writeConfig(dir, { smtp: { listen: ['mx1.contoso.test:25'] } })]);
  assert.equal(named.code, 2);
  assert.match(
    named.stderr,
    /smtp\.listen\[0\]: must be "IP:port", "\[IPv6\]:port" or "localhost:port" \(host names are not looked up\)/,
  );
});

test('a running server: "localhost" listens on 127.0.0.1; a second serve is refused; a stopped server\'s queue is read without leaving files', async () => {
  const port = await freePort('127.0.0.1');
  const gw = await startGateway({
    dir: tempDir(),
    host: '127.0.0.1',
    config: { smtp: { listen: [`localhost:${port}`] } },
  });
  try {
    const c = await SmtpClient.connect(port, '127.0.0.1');
    assert.equal((await c.read())?.code, 220);
    c.sock.destroy();

    // A second `npm start` (the same configuration, found through the environment).
    const second = await cli(['serve'], { env: { PORTCULLIS_CONFIG: gw.configFile } });
    assert.equal(second.code, 1);
    assert.match(
      second.stderr,
      new RegExp(
        `portcullis: another Portcullis server is already running on ${gw.dataDir} \\(its control socket \\S+control\\.sock answers\\)\\n {2}fix: stop the other server first, or give this one another dataDir`,
      ),
    );
    noStack(second);
    // Another dataDir, the same port.
    const other = tempDir();
    const busy = await cli(['serve', '-c', writeConfig(other, { smtp: { listen: [`127.0.0.1:${port}`] } })]);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}: the address is already in use`));
    noStack(busy);
  } finally {
    await gw.stop();
  }
  const before = tree(gw.dataDir);
  for (const args of [['queue', 'list'], ['trace'], ['queue', 'show', 'X'], ['cert', 'info'], ['config', 'check']]) {
    const r = await gw.cli(args);
    assert.ok(r.code === 0 || r.code === 1, `${args.join(' ')}: ${r.stderr}`);
    noStack(r);
  }
  assert.deepEqual(tree(gw.dataDir), before, 'no file left in the dataDir (no -wal/-shm from a reader)');
  await cleanup(gw);
});

test('without privileges: a port below 1024 names CAP_NET_BIND_SERVICE; another user\'s queue is "permission denied"', async (t) => {
  if (process.getuid?.() !== 0 || spawnSync('setpriv', ['--version']).status !== 0) {
    t.skip('needs root (to become nobody) and setpriv');
    return;
  }
  const dir = tempDir();
  chmodSync(dir, 0o777);
  const cfg = writeConfig(dir, { smtp: { listen: [`${HOST}:587`] }, runAs: undefined }); // started as nobody: no runAs needed
  chmodSync(cfg, 0o644);
  const r = await cli(['serve', '-c', cfg], {
    prefix: ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'],
  });
  assert.equal(r.code, 1, r.stderr);
  assert.match(
    r.stderr,
    new RegExp(
      `cannot listen on ${HOST.replace(/\./g, '\\.')}:587: permission denied; ports below 1024 need the CAP_NET_BIND_SERVICE capability\\n {2}fix: grant it \\(systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE\\)`,
    ),
  );
  noStack(r);
  // Reading another user's queue: "permission denied", not "no queue".
  const rootData = path.join(dir, 'root-data');
  mkdirSync(rootData, { mode: 0o700 });
  writeFileSync(path.join(rootData, 'queue.sqlite'), '');
  const rootCfg = path.join(dir, 'root.yaml');
  writeFileSync(rootCfg, YAML.stringify({ dataDir: rootData, organizations: defaultOrgs }), { mode: 0o644 });
  const q = await cli(['queue', 'list', '-c', rootCfg], {
    prefix: ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'],
  });
  assert.equal(q.code, 1);
  assert.match(
    q.stderr,
    /^portcullis: permission denied: stat \S+\/root-data\/queue\.sqlite\n {2}fix: run as the user that owns dataDir/,
  );
  noStack(q);
});

test('tls check when DNS fails: the lookup, the cause and where to look; exit 1', async () => {
  const dns = await startDnsServer({ 'fabrikam.test': { fail: 'SERVFAIL' } }, HOST);
  try {
    const dir = tempDir();
    const r = await cli(['tls', 'check', 'fabrikam.test', '-c', writeConfig(dir, { dns: { servers: [dns.server] } })]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^portcullis: DNS lookup failed, the answer is unknown \(DNS MX fabrikam\.test: servfail( \([^)]*\))?\)\n {2}fix: check that the servers in dns\.servers/,
    );
    noStack(r);
  } finally {
    await dns.close();
  }
});

test('stdout closed by the reader (piped to head): quiet exit 0', async () => {
  const dir = tempDir();
  const cfg = writeConfig(dir, {});
  const closed = await freePort(HOST);
  for (const args of [['tls', 'check', `${HOST}:${closed}`, '-c', cfg], ['config', 'check', '-c', cfg], ['--help']]) {
    const r = await cli(args, { closeStdout: true });
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    assert.equal(r.stderr, '');
  }
});

test('serve logs: JSON lines on a pipe, text with log.format: text, text at a terminal', async (t) => {
  const dir = tempDir();
  const port = await freePort(HOST);
  const started = (format: string | undefined, prefix: string[] = []) =>
    new Promise<string>((resolve, reject) => {
      const cfg = writeConfig(dir, { smtp: { listen: [`${HOST}:${port}`] }, ...(format ? { log: { format } } : {}) });
      const cmd = prefix.length ? prefix[0] : process.execPath;
      const args = prefix.length
        ? [...prefix.slice(1), `${process.execPath} ${BIN} serve -c ${cfg}`, '/dev/null']
        : [BIN, 'serve', '-c', cfg];
      const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      const timer = setTimeout(() => {
        p.kill('SIGKILL');
        reject(new Error(`no server.started line:\n${out}`));
      }, LIMIT_MS);
      p.stdout.on('data', (d) => {
        out += d;
        if (/server\.started/.test(out)) {
          clearTimeout(timer);
          p.kill('SIGTERM');
        }
      });
      p.on('close', () => resolve(out));
    });
  const json = await started(undefined);
  assert.match(json, /^\{"level":30,.*"event":"server\.started"/m);
  const text = await started('text');
  assert.match(text, /^\S+Z INFO {2}server\.started hostname=mx1\.contoso\.test dataDir=\S+ configFile=\S+$/m);
  assert.doesNotMatch(text, /^\{/m);
  if (spawnSync('script', ['--version']).status !== 0) {
    t.skip('no script(1) to provide a terminal');
    return;
  }
  const tty = await started(undefined, ['script', '-qec']);
  assert.match(tty, /INFO {2}server\.started hostname=mx1\.contoso\.test/);
});
