// Start-up benchmark (not a test): how long `portcullis --help` takes, and how long `portcullis
// serve` on the embedded defaults takes from spawn until it greets on 127.0.0.1:2525.
//
//   npm run bench:startup -- [--runs 10] [--source] [--bin FILE]...
//
// Each measurement spawns a fresh `node` process and reports min / median / max over --runs runs:
// wall clock and CPU time (user + sys). `--help` is timed with bash's `time`; for `serve` the CPU
// time is read from /proc/PID/stat at the greeting. CPU time is what to compare on a machine that
// is busy with other work (the wall clock then mostly measures the wait for a core). `serve` runs in a fresh temporary working folder with no
// configuration file, so it uses the embedded defaults (dataDir ./data there); one start before the
// timed runs generates the development certificate, which later starts reuse (that first start is
// reported on its own line). "ready" is the first `220` greeting read from 127.0.0.1:2525.
// --source measures the TypeScript sources through tsx as well (`node --import tsx
// src/cli/main.ts`, how bin/portcullis.js ran before the compiled build), in the same run.
// --bin FILE (repeatable) measures that entry point instead of this checkout's bin/portcullis.js,
// e.g. the bin/ of an older checkout, for a before/after comparison in one run.
// Port 2525 must be free: the benchmark refuses to start otherwise.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const HOST = '127.0.0.1';
const PORT = 2525;
const RUN_CAP_MS = 30_000;

const { values: a } = parseArgs({
  options: {
    runs: { type: 'string', default: '10' },
    source: { type: 'boolean', default: false },
    bin: { type: 'string', multiple: true },
  },
  strict: true,
});
const RUNS = Number(a.runs);
if (!Number.isInteger(RUNS) || RUNS < 1 || RUNS > 100)
  throw new Error(`--runs must be an integer in 1..100 (got ${a.runs})`);

interface Variant {
  name: string;
  args: string[];
}
const bins = a.bin?.length ? a.bin.map((b) => path.resolve(b)) : [path.join(ROOT, 'bin/portcullis.js')];
const variants: Variant[] = bins.map((b) => ({ name: `node ${path.relative(ROOT, b)}`, args: [b] }));
if (a.source)
  variants.push({
    name: 'node --import tsx src/cli/main.ts',
    args: ['--import', import.meta.resolve('tsx'), path.join(ROOT, 'src/cli/main.ts')],
  });

const now = () => Number(process.hrtime.bigint()) / 1e6;
const load = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ');
const HZ = 100; // USER_HZ: the unit of /proc/PID/stat times on Linux

interface Sample {
  wallMs: number;
  cpuMs: number;
}

/** `time node …` (bash's `time`: real, user, sys). */
function timeRun(args: string[]): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const script = 'TIMEFORMAT="%3R %3U %3S"; time "$@" >/dev/null 2>&1';
    const p = spawn('bash', ['-c', script, 'bash', process.execPath, ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let out = '';
    p.stderr!.on('data', (d) => {
      out += d;
    });
    const cap = setTimeout(() => p.kill('SIGKILL'), RUN_CAP_MS);
    p.once('error', reject);
    p.once('exit', (code) => {
      clearTimeout(cap);
      const m = /(\d+\.\d+) (\d+\.\d+) (\d+\.\d+)\s*$/.exec(out);
      if (code !== 0 || !m) return reject(new Error(`node ${args.join(' ')} failed (${code}): ${out}`));
      resolve({ wallMs: Number(m[1]) * 1000, cpuMs: (Number(m[2]) + Number(m[3])) * 1000 });
    });
  });
}

/** utime + stime of a running process, in ms. */
function cpuOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / HZ;
}

/** One attempt to read a `220` greeting; false when nothing listens yet. */
function greeted(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(PORT, HOST);
    let buf = '';
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(5000, () => done(false));
    s.on('data', (d) => {
      buf += d.toString('latin1');
      if (buf.includes('\r\n')) done(buf.startsWith('220'));
    });
    s.on('error', () => done(false));
    s.on('close', () => done(false));
  });
}

/** From spawning `serve` in `cwd` until it greets; the server is stopped afterwards. */
async function timeServe(v: Variant, cwd: string): Promise<Sample> {
  const t0 = now();
  const env = { ...process.env };
  delete env.PORTCULLIS_CONFIG;
  const p = spawn(process.execPath, [...v.args, 'serve'], { cwd, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  p.stderr!.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  try {
    for (;;) {
      if (p.exitCode !== null || p.signalCode !== null)
        throw new Error(`${v.name} serve exited before greeting:\n${stderr}`);
      if (now() - t0 > RUN_CAP_MS) throw new Error(`${v.name} serve did not greet within ${RUN_CAP_MS} ms`);
      if (await greeted()) return { wallMs: now() - t0, cpuMs: cpuOf(p.pid!) };
      await new Promise((r) => setTimeout(r, 2));
    }
  } finally {
    p.kill('SIGTERM');
    const cap = setTimeout(() => p.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(cap);
  }
}

function stats(xs: number[]): string {
  const s = [...xs].sort((x, y) => x - y);
  const median = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  const f = (x: number) => (x / 1000).toFixed(2);
  return `${f(s[0])} / ${f(median)} / ${f(s[s.length - 1])}`;
}
const row = (what: string, xs: Sample[]) =>
  console.log(`| ${what} | ${xs.length} | ${stats(xs.map((x) => x.wallMs))} | ${stats(xs.map((x) => x.cpuMs))} |`);

if (await greeted()) {
  console.error(
    `something already answers on ${HOST}:${PORT}; stop it first (the benchmark measures serve on the embedded defaults)`,
  );
  process.exit(2);
}
console.log(`node ${process.version}, ${os.cpus().length} cores, ${RUNS} runs each; load average before: ${load()}`);
console.log('');
console.log('| command | runs | wall s min / median / max | CPU s min / median / max |');
console.log('|---|---|---|---|');
const bare: Sample[] = [];
for (let i = 0; i < RUNS; i++) bare.push(await timeRun(['-e', '0']));
row('`node -e 0` (Node alone, for scale)', bare);
for (const v of variants) {
  const help: Sample[] = [];
  for (let i = 0; i < RUNS; i++) help.push(await timeRun([...v.args, '--help']));
  row(`\`${v.name} --help\``, help);
  const cwd = mkdtempSync(path.join(os.tmpdir(), 'pc-startup-'));
  try {
    row(`\`${v.name} serve\` → 220, first start (generates the development certificate)`, [await timeServe(v, cwd)]);
    const serve: Sample[] = [];
    for (let i = 0; i < RUNS; i++) serve.push(await timeServe(v, cwd));
    row(`\`${v.name} serve\` → 220`, serve);
  } finally {
    rmSync(cwd, { recursive: true, force: true });
  }
}
console.log('');
console.log(`load average after: ${load()}`);
