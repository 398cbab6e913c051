// The CLI's start-up stays light: `portcullis --help` (and a command's --help) must not load the
// gateway's runtime (configuration schema, YAML, SQLite, pino, X.509, DNS): commands import what
// they run when they run. Checked by recording every module the real process resolves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { BIN, tempDir } from '../helpers/gateway.ts';

/** Every URL the CLI process resolves while running `args` (an ESM resolve hook logs them). */
function resolvedUrls(args: string[]): { urls: string[]; stdout: string } {
  const dir = tempDir('pc-imports-');
  const log = path.join(dir, 'imports.log');
  const hook = `import { appendFileSync } from 'node:fs';
    export async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(${JSON.stringify(log)}, r.url + '\\n'); return r; }`;
  const register = `import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hook)}`)});`;
  try {
    const r = spawnSync(
      process.execPath,
      ['--import', `data:text/javascript,${encodeURIComponent(register)}`, BIN, ...args],
      { encoding: 'utf8', timeout: 60_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    return { urls: readFileSync(log, 'utf8').split('\n').filter(Boolean), stdout: r.stdout };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// commander; and tsx with its helpers when bin/portcullis.js runs the sources (dist/ older than src/).
const ALLOWED = new Set(['commander', 'tsx', 'esbuild', 'get-tsconfig', 'resolve-pkg-maps']);
const packages = (urls: string[]) => [
  ...new Set(urls.flatMap((u) => /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(u)?.[1] ?? [])),
];

for (const args of [['--help'], ['queue', 'list', '--help'], ['connector', 'validate', '--help']]) {
  test(`\`portcullis ${args.join(' ')}\` loads commander and the command definitions only`, () => {
    const { urls, stdout } = resolvedUrls(args);
    assert.match(stdout, /Usage: portcullis/);
    assert.ok(packages(urls).includes('commander'), `the resolve log works: ${urls.length} URLs`);
    assert.deepEqual(
      packages(urls).filter((p) => !ALLOWED.has(p)),
      [],
      'packages loaded for help',
    );
    const ours = urls
      .filter((u) => /\/(src|dist)\//.test(u) && !u.includes('/node_modules/'))
      .map((u) => u.replace(/.*\/(src|dist)\//, ''));
    for (const heavy of [
      'gateway',
      'config/load',
      'config/schema',
      'store/sqlite/index',
      'events',
      'tls/x509',
      'dns/resolver',
    ]) {
      assert.ok(
        !ours.some((u) => u.replace(/\.[jt]s$/, '') === heavy),
        `${heavy} is not loaded for help (loaded: ${ours.join(', ')})`,
      );
    }
  });
}
