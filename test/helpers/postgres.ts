// A throwaway PostgreSQL server for tests, started like the throwaway Postfix: Debian's initdb and
// pg_ctl (/usr/lib/postgresql/VERSION/bin, found explicitly: other initdb/pg_ctl may be on PATH),
// data, socket and log in a temp folder, listening on a loopback address and port of its own.
// Never touches a system instance. PostgreSQL refuses to run as root: as root the server runs as
// the package's `postgres` user. One instance per test file; a fresh database per test
// (createDatabase). Password authentication over TCP (scram), so tests can check that the
// password never shows. Stopped with `pg_ctl stop -m immediate` and removed at the end, also when
// the test process exits early.
import { execFile, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { freePort } from './gateway.ts';
import { systemUser } from './postfix.ts';

/** The folder of Debian's PostgreSQL server binaries (newest version), or null when not installed. */
export function postgresBin(): string | null {
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const versions = readdirSync(root)
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a));
  for (const v of versions) {
    const bin = path.join(root, v, 'bin');
    if (['initdb', 'pg_ctl', 'postgres'].every((f) => existsSync(path.join(bin, f)))) return bin;
  }
  return null;
}

const BIN = postgresBin();

/**
 * Why PostgreSQL tests cannot run here (undefined when they can). Callers pass it as `skip`, and it
 * is printed loudly once: CI installs the package, so a skip there is a setup failure.
 */
export const postgresMissing: string | undefined = BIN
  ? undefined
  : 'PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin: apt-get install postgresql): the PostgreSQL tests are SKIPPED';
if (postgresMissing) process.stderr.write(`\n!!!!! ${postgresMissing} !!!!!\n\n`);

export interface PgInstance {
  host: string;
  port: number;
  base: string;
  user: string;
  password: string;
  /** URL of a database (default: postgres) as the superuser, password included. */
  url(db?: string): string;
  /** A new empty database; returns its URL. */
  createDatabase(prefix?: string): Promise<string>;
  /** Run SQL as the superuser (default database: postgres). */
  query<R extends pg.QueryResultRow = Record<string, unknown>>(sql: string, db?: string): Promise<R[]>;
  /** Server-wide setting in postgresql.auto.conf, reloaded; waits until new connections see it. */
  setSystem(name: string, value: string): Promise<void>;
  /** pg_ctl stop (immediate: like a crash or power loss; fast: orderly). */
  stop(mode?: 'immediate' | 'fast'): Promise<void>;
  /** Start again after stop() (same data, address and port). */
  start(): Promise<void>;
  log(): string;
  /** Stop and remove everything. */
  destroy(): Promise<void>;
}

function run(
  file: string,
  args: string[],
  asUser: { uid: number; gid: number } | undefined,
  timeoutMs = 60_000,
): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      {
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        env: { PATH: '/usr/bin:/bin', LC_ALL: 'C', LANG: 'C' },
        ...(asUser ?? {}),
        cwd: '/',
      },
      (err, stdout, stderr) =>
        resolve({
          code: err ? (typeof err.code === 'number' ? err.code : -1) : 0,
          out: `${stdout}${stderr}${err && typeof err.code !== 'number' ? err.message : ''}`,
        }),
    );
  });
}

let counter = 0;

export async function startPostgres(opts: { host?: string } = {}): Promise<PgInstance> {
  if (!BIN) throw new Error(postgresMissing);
  const host = opts.host ?? '127.0.0.61';
  if (!host.startsWith('127.')) throw new Error(`PostgreSQL must listen on loopback, not ${host}`);
  const port = await freePort(host);
  const base = mkdtempSync(path.join(os.tmpdir(), 'pc-pg-'));
  const data = path.join(base, 'data');
  const logFile = path.join(base, 'postgres.log');
  const as = process.getuid?.() === 0 ? systemUser('postgres') : undefined;
  if (as) chownSync(base, as.uid, as.gid);
  const user = 'postgres';
  const password = `pw-${randomBytes(9).toString('base64url')}`;
  const pwfile = path.join(base, 'pwfile');
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  if (as) chownSync(pwfile, as.uid, as.gid);
  const init = await run(
    path.join(BIN, 'initdb'),
    [
      '-D',
      data,
      '-U',
      user,
      `--pwfile=${pwfile}`,
      '--auth-local=trust',
      '--auth-host=scram-sha-256',
      '-E',
      'UTF8',
      '--no-locale',
      '--no-sync',
      '--no-instructions',
    ],
    as,
  );
  rmSync(pwfile, { force: true });
  if (init.code !== 0) {
    rmSync(base, { recursive: true, force: true });
    throw new Error(`initdb failed:\n${init.out}`);
  }
  const serverOpts = [
    `-c listen_addresses=${host}`,
    `-c port=${port}`,
    `-c unix_socket_directories=${base}`,
    '-c shared_buffers=16MB',
    '-c max_connections=60',
    '-c max_wal_size=256MB',
  ].join(' ');
  const pgctl = (args: string[]) => run(path.join(BIN, 'pg_ctl'), ['-D', data, ...args], as);
  const url = (db = 'postgres') => `postgresql://${user}:${encodeURIComponent(password)}@${host}:${port}/${db}`;

  const inst: PgInstance = {
    host,
    port,
    base,
    user,
    password,
    url,
    async createDatabase(prefix = 't') {
      const name = `${prefix}_${process.pid}_${++counter}`;
      await inst.query(`CREATE DATABASE ${name}`);
      return url(name);
    },
    async query(sql, db) {
      const c = new pg.Client({ connectionString: url(db) });
      c.on('error', () => {});
      await c.connect();
      try {
        return (await c.query(sql)).rows;
      } finally {
        await c.end().catch(() => {});
      }
    },
    async setSystem(name, value) {
      await inst.query(`ALTER SYSTEM SET ${name} = '${value}'`);
      await inst.query('SELECT pg_reload_conf()');
      const end = Date.now() + 10_000;
      for (;;) {
        const [row] = await inst.query<{ v: string }>(`SELECT current_setting('${name}') AS v`);
        if (row.v === value) return;
        if (Date.now() > end) throw new Error(`PostgreSQL did not take ${name} = ${value} (still ${row.v})`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async stop(mode = 'immediate') {
      const r = await pgctl(['stop', '-m', mode, '-w', '-t', '30']);
      if (r.code !== 0 && !/not running|No such process/i.test(r.out)) throw new Error(`pg_ctl stop failed:\n${r.out}`);
    },
    async start() {
      const r = await pgctl(['start', '-w', '-t', '60', '-l', logFile, '-o', serverOpts]);
      if (r.code !== 0) throw new Error(`PostgreSQL did not start (${host}:${port}):\n${r.out}\n${inst.log()}`);
    },
    log: () => {
      try {
        return readFileSync(logFile, 'utf8');
      } catch {
        return '';
      }
    },
    async destroy() {
      process.off('exit', onExit);
      await inst.stop('immediate').catch(() => {});
      rmSync(base, { recursive: true, force: true });
    },
  };
  // A test process that ends early must not leave a server running.
  const onExit = () => {
    spawnSync(path.join(BIN, 'pg_ctl'), ['-D', data, 'stop', '-m', 'immediate'], {
      ...(as ?? {}),
      stdio: 'ignore',
      timeout: 10_000,
    });
    rmSync(base, { recursive: true, force: true });
  };
  process.on('exit', onExit);
  await inst.start();
  return inst;
}
