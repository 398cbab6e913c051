// Receive benchmark (not a test): how fast the real gateway process accepts mail over STARTTLS,
// what each message costs it in CPU, and how long the queue takes to drain into Maildir.
//
//   npm run bench:receive -- [--n 5000] [--reps 3] [--mode both|seq|pipe|harness|seq,pipe,harness] [--concurrency 20]
//                            [--size 5120] [--rcpts 1-3] [--warmup 200] [--greetings 50]
//                            [--time-cap 300] [--quiet-wait 60] [--profile] [--keep] [--log-level info]
//                            [--store sqlite|postgres] [--workers 1|N|auto]
//   (environment: BENCH_N, BENCH_REPS, BENCH_MODE, BENCH_TIME_CAP override the defaults)
//
// Everything runs on 127.0.0.1: a throwaway PKI and config in a temp dir, the real
// `portcullis serve` process (test/helpers/gateway.ts), and an in-process load generator
// (bench/lib/loadgen.ts). Mode "harness" drives the gateway with the Postfix comparison harness's
// client.js instead (the generator the Postfix reference numbers were taken with; needs its
// setup.sh; --harness DIR or BENCH_HARNESS, default: shared/bench beside this checkout).
// --store postgres runs the gateway on a throwaway PostgreSQL (test/helpers/postgres.ts: Debian's
// server binaries, loopback, fsync on); its server's CPU is not in the gateway columns (it is in
// "other cores"). --workers N runs the gateway with `workers: N`: the gateway columns then count the
// supervisor only (the workers' CPU is in "other cores"). See docs/performance.md for the harness and the numbers.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import pg from 'pg';
import { ROOT, startGateway, tempDir, type GatewayHandle } from '../test/helpers/gateway.ts';
import { startPostgres, type PgInstance } from '../test/helpers/postgres.ts';
import { makePki } from '../test/helpers/pki.ts';
import { greetingLatencies, Messages, nowMs, runLoad, type LoadResult } from './lib/loadgen.ts';
import { summarizeProfile } from './lib/cpuprofile.ts';
import { intArg } from './lib/args.ts';

const HARD_MAX_N = 100_000;
const HZ = 100; // USER_HZ: /proc tick rate on Linux
const HOST = '127.0.0.1';
const DOMAIN = 'contoso.test';
const MAILBOXES = 10;
const SENDER = 'bench@fabrikam.test';

const { values: a } = parseArgs({
  options: {
    n: { type: 'string', default: process.env.BENCH_N ?? '5000' },
    reps: { type: 'string', default: process.env.BENCH_REPS ?? '3' },
    mode: { type: 'string', default: process.env.BENCH_MODE ?? 'both' },
    concurrency: { type: 'string', default: '20' },
    size: { type: 'string', default: '5120' },
    rcpts: { type: 'string', default: '1-3' },
    warmup: { type: 'string', default: '200' },
    greetings: { type: 'string', default: '50' },
    'time-cap': { type: 'string', default: process.env.BENCH_TIME_CAP ?? '300' },
    'total-cap': { type: 'string', default: '3600' },
    'quiet-wait': { type: 'string', default: '60' },
    profile: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    'log-level': { type: 'string', default: 'info' },
    store: { type: 'string', default: 'sqlite' },
    workers: { type: 'string', default: '1' },
    harness: { type: 'string', default: process.env.BENCH_HARNESS ?? path.join(path.dirname(ROOT), 'shared', 'bench') },
  },
  strict: true,
});

const N = intArg('n', a.n!, 1, HARD_MAX_N);
const REPS = intArg('reps', a.reps!, 1, 20);
const C = intArg('concurrency', a.concurrency!, 1, 200);
const SIZE = intArg('size', a.size!, 100, 1_000_000);
const WARMUP = intArg('warmup', a.warmup!, 0, 10_000);
const GREETINGS = intArg('greetings', a.greetings!, 0, 1000);
const RUN_CAP_MS = intArg('time-cap', a['time-cap']!, 10, 1800) * 1000;
const TOTAL_CAP_MS = intArg('total-cap', a['total-cap']!, 60, 7200) * 1000;
const QUIET_WAIT_MS = intArg('quiet-wait', a['quiet-wait']!, 0, 600) * 1000;
const QUIET_CORES = 0.15;
const rc = /^(\d+)(?:-(\d+))?$/.exec(a.rcpts!);
if (!rc) throw new Error('--rcpts must be "K" or "MIN-MAX", e.g. 1-3');
const RCPT_MIN = intArg('rcpts', rc[1], 1, 100);
const RCPT_MAX = intArg('rcpts', rc[2] ?? rc[1], RCPT_MIN, 100);
type Mode = 'seq' | 'pipe' | 'harness';
const MODES: readonly Mode[] = [...new Set((a.mode === 'both' ? 'seq,pipe' : a.mode!).split(','))] as Mode[];
if (!MODES.length || MODES.some((m) => !['seq', 'pipe', 'harness'].includes(m)))
  throw new Error('--mode must be both, seq, pipe, harness or a comma list');
const CLIENT_JS = path.join(a.harness!, 'client.js');
if (MODES.includes('harness') && !existsSync(CLIENT_JS))
  throw new Error(`--mode harness needs ${CLIENT_JS} (set --harness DIR and run its setup.sh)`);
const MODE_LABEL: Record<Mode, string> = {
  seq: 'sequential',
  pipe: 'pipelined',
  harness: 'harness client.js (1 rcpt, mailbox per message)',
};
if (!['debug', 'info', 'warn', 'error'].includes(a['log-level']!))
  throw new Error('--log-level must be debug|info|warn|error');
const STORE = a.store!;
if (STORE !== 'sqlite' && STORE !== 'postgres') throw new Error('--store must be sqlite or postgres');

const rcptsFor = (seq: number): string[] => {
  const k = RCPT_MIN + (seq % (RCPT_MAX - RCPT_MIN + 1));
  return Array.from({ length: k }, (_, i) => `user${(seq + i) % MAILBOXES}@${DOMAIN}`);
};

const log = (s: string) => process.stderr.write(`${s}\n`);
/** The code under test: commit and whether the working tree differs from it. */
const codeVersion = (): string => {
  try {
    return execFileSync('git', ['-C', ROOT, 'describe', '--always', '--dirty'], {
      encoding: 'utf8',
      timeout: 5000,
    }).trim();
  } catch {
    return 'unknown';
  }
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const pct = (sorted: ArrayLike<number>, p: number) =>
  sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : NaN;
const median = (xs: number[]) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((x, y) => x - y);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};
const r1 = (x: number) => Math.round(x * 10) / 10;
const r2 = (x: number) => Math.round(x * 100) / 100;
const r3 = (x: number) => Math.round(x * 1000) / 1000;

/** utime + stime of a process, in ms (all its threads). */
function procCpuMs(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / HZ;
}
/** Bytes a process caused to be written to storage (page cache writes included, /proc/PID/io write_bytes). */
function procWriteBytes(pid: number): number {
  try {
    return Number(/^write_bytes: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? NaN);
  } catch {
    return NaN;
  }
}
/** Whole-machine busy CPU in ms. */
function machineBusyMs(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return ((f.slice(0, 8).reduce((x, y) => x + y, 0) - f[3] - (f[4] ?? 0)) * 1000) / HZ;
}
const selfCpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** What one load run produced, whichever generator drove it. */
interface Sample {
  accepted: number;
  failed: number;
  aborted: boolean;
  windowMs: number;
  firstAt: number;
  lastAt: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  rcptTotal: number;
  /** CPU the generator used in the window (ms), or null to measure this process. */
  genCpuMs: number | null;
  errors: Record<string, number>;
}

function fromLoad(r: LoadResult): Sample {
  const lat = Array.from(r.latencies).sort((x, y) => x - y);
  return {
    accepted: r.accepted,
    failed: r.failed,
    aborted: r.aborted,
    windowMs: r.windowMs,
    firstAt: r.firstAt,
    lastAt: r.lastAt,
    p50: pct(lat, 50),
    p90: pct(lat, 90),
    p99: pct(lat, 99),
    max: lat[lat.length - 1] ?? NaN,
    rcptTotal: r.rcptTotal,
    genCpuMs: null,
    errors: r.errors,
  };
}

/** One run of the shared harness's client.js (STARTTLS, 1 recipient `<seq>.0@domain`, no certificate check). */
async function harnessLoad(port: number, count: number, deadline: number, onStart: () => void): Promise<Sample> {
  const timeoutS = Math.max(10, Math.floor((deadline - Date.now()) / 1000));
  onStart();
  const child = spawn(
    process.execPath,
    [
      CLIENT_JS,
      '--tls',
      '--insecure',
      '--host',
      HOST,
      '--port',
      String(port),
      '--count',
      String(count),
      '--concurrency',
      String(C),
      '--size',
      String(SIZE),
      '--from',
      SENDER,
      '--to-domain',
      DOMAIN,
      '--timeout-s',
      String(timeoutS),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d;
  });
  child.stderr.on('data', (d: Buffer) => {
    err += d;
  });
  const killer = setTimeout(() => child.kill('SIGKILL'), timeoutS * 1000 + 10_000);
  await new Promise((r) => child.once('close', r));
  clearTimeout(killer);
  const end = nowMs();
  let j: {
    accepted: number;
    failed: number;
    aborted: boolean;
    elapsedS: number;
    clientCpuS: number;
    errors: Record<string, number>;
    latMs: { p50: number; p90: number; p99: number; max: number };
  };
  try {
    j = JSON.parse(out.trim().split('\n').pop() ?? '');
  } catch {
    throw new Error(`client.js gave no result: ${err.slice(-500)}`);
  }
  return {
    accepted: j.accepted,
    failed: j.failed,
    aborted: j.aborted || j.accepted < count,
    windowMs: j.elapsedS * 1000,
    firstAt: end - j.elapsedS * 1000,
    lastAt: end,
    p50: j.latMs.p50,
    p90: j.latMs.p90,
    p99: j.latMs.p99,
    max: j.latMs.max,
    rcptTotal: j.accepted,
    genCpuMs: j.clientCpuS * 1000,
    errors: j.errors,
  };
}

interface RunRecord {
  mode: Mode;
  rep: number;
  ok: boolean;
  accepted: number;
  failed: number;
  recipients: number;
  acceptRate: number; // msg/s, first MAIL → last 250
  p50: number;
  p90: number;
  p99: number;
  max: number; // ms, per message MAIL → 250
  gwCpuMsPerMsgAccept: number; // gateway CPU in the accept window ÷ N (includes the deliveries that ran meanwhile)
  gwCpuMsPerMsgTotal: number; // gateway CPU from first MAIL to empty queue ÷ N (receive + store + deliver)
  gwWriteKBPerMsg: number; // storage writes of the gateway (SQLite WAL + checkpoints + Maildir) ÷ N
  gwCoresAccept: number;
  genCpuMsPerMsg: number; // this process (load generator) in the accept window ÷ N
  machineCoresAccept: number;
  otherCoresAccept: number; // machine busy − gateway − generator: kernel threads and other processes
  busyBefore: number; // machine cores busy in the second before the run (0 = quiet)
  e2eRate: number; // msg/s, first MAIL → queue empty (all delivered to Maildir)
  drainAfterS: number; // s from last 250 to queue empty
  greetP50: number;
  greetP99: number;
  errors: Record<string, number>;
}

async function main(): Promise<void> {
  const tBench = Date.now();
  const dir = tempDir('pc-bench-');
  log(`bench: temp dir ${dir}`);
  const pki = await makePki(dir, 'Bench');
  const server = await pki.issue('mx1.contoso.test');
  const ca = readFileSync(pki.rootFile, 'utf8');
  const profDir = path.join(dir, 'cpuprof');
  // Node 20 refuses --cpu-prof in NODE_OPTIONS: a preload starts the profiler through the inspector.
  const savedEnv = { NODE_OPTIONS: process.env.NODE_OPTIONS, BENCH_CPU_PROF_DIR: process.env.BENCH_CPU_PROF_DIR };
  if (a.profile) {
    const preload = pathToFileURL(
      path.join(path.dirname(fileURLToPath(import.meta.url)), 'lib/cpu-profile-preload.mjs'),
    ).href;
    process.env.NODE_OPTIONS = `${savedEnv.NODE_OPTIONS ?? ''} --import ${preload}`.trim();
    process.env.BENCH_CPU_PROF_DIR = profDir;
  }
  const restoreEnv = () => {
    for (const [k, v] of Object.entries(savedEnv)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  };
  let gw: GatewayHandle | undefined;
  let db: Database.Database | undefined;
  let pgServer: PgInstance | undefined;
  let pgClient: pg.Client | undefined;
  const runs: RunRecord[] = [];
  let finished = false;
  try {
    let storeConfig = {};
    if (STORE === 'postgres') {
      pgServer = await startPostgres();
      const url = await pgServer.createDatabase('bench');
      storeConfig = { store: { type: 'postgres', url }, delivery: { maildirShared: true } };
      pgClient = new pg.Client({ connectionString: url });
      pgClient.on('error', () => {});
    }
    gw = await startGateway({
      dir,
      config: {
        ...storeConfig,
        workers: a.workers === 'auto' ? 'auto' : Number(a.workers),
        log: { level: a['log-level'] },
        tls: {
          certificates: [{ cert: server.cert, key: server.key }],
          trust: { system: false, caFiles: [pki.rootFile] },
        },
      },
    });
    restoreEnv();
    const g = gw;
    const pid = g.proc.pid!;
    // The helper keeps and parses every log line; the benchmark only needs them drained, so that
    // the load generator does not spend its CPU on JSON.parse of the gateway's log.
    g.proc.stdout!.removeAllListeners('data');
    g.proc.stdout!.on('data', () => {});
    log(
      `bench: code ${codeVersion()}; gateway pid ${pid} on ${HOST}:${g.port} (log level ${a['log-level']}${a.profile ? ', CPU profiler on' : ''}; store ${STORE})`,
    );

    const OPEN = `SELECT count(*)::int AS n FROM messages WHERE state <> 'done'`;
    let openCount: () => Promise<number>;
    if (pgClient) {
      await pgClient.connect();
      const c = pgClient;
      openCount = async () => (await c.query<{ n: number }>(OPEN)).rows[0].n;
    } else {
      db = new Database(path.join(g.dataDir, 'queue.sqlite'), { readonly: true, fileMustExist: true });
      const st = db.prepare(OPEN.replace('::int', '')).pluck();
      openCount = async () => st.get() as number;
    }
    const mailboxRoot = path.join(g.dataDir, 'mailboxes', DOMAIN);
    const countMaildir = () => {
      let n = 0;
      let boxes: string[] = [];
      try {
        boxes = readdirSync(mailboxRoot);
      } catch {
        return 0;
      }
      for (const b of boxes) {
        try {
          n += readdirSync(path.join(mailboxRoot, b, 'new')).length;
        } catch {
          /* not yet */
        }
      }
      return n;
    };
    /** Wait (bounded) until the rest of the machine is quiet: other work skews every number here. */
    const waitQuiet = async (maxMs: number): Promise<number> => {
      const until = Date.now() + maxMs;
      let busy = Infinity;
      while (Date.now() < until) {
        const m0 = machineBusyMs();
        const t = Date.now();
        await sleep(1000);
        busy = (machineBusyMs() - m0) / (Date.now() - t);
        if (busy < QUIET_CORES) break;
      }
      return r2(busy);
    };
    /** Poll until every queued message is done; returns the time (hrtime ms) it was seen empty. */
    const waitDrained = async (deadline: number): Promise<number | null> => {
      for (;;) {
        if ((await openCount()) === 0) return nowMs();
        if (Date.now() > deadline) return null;
        await sleep(20);
      }
    };
    const messages = new Messages(SIZE, SENDER);
    let seqBase = 0;
    const load = (count: number, pipelined: boolean, deadline: number, onStart?: () => void): Promise<LoadResult> => {
      const base = seqBase;
      seqBase += count;
      return runLoad({
        host: HOST,
        port: g.port,
        ca,
        servername: 'mx1.contoso.test',
        count,
        concurrency: C,
        pipelined,
        from: SENDER,
        rcpts: (s) => rcptsFor(base + s),
        message: (s, r) => messages.make(base + s, r),
        deadline,
        maxFailures: Math.max(10, Math.floor(count / 100)),
        onStart,
      });
    };

    if (WARMUP) {
      const w = await load(WARMUP, MODES[0] === 'pipe', Date.now() + 120_000); // the harness mode warms up with seq
      const drained = await waitDrained(Date.now() + 120_000);
      log(`bench: warm-up ${w.accepted}/${WARMUP} accepted, ${drained ? 'drained' : 'NOT drained'}`);
      if (w.accepted < WARMUP || !drained) throw new Error(`warm-up failed: ${JSON.stringify(w.errors)}`);
    }

    for (let rep = 1; rep <= REPS; rep++) {
      for (const mode of MODES) {
        if (Date.now() - tBench > TOTAL_CAP_MS) {
          log('bench: total time cap reached, stopping');
          break;
        }
        await sleep(1000); // settle: the previous run's tail (fsyncs, session ends) is over
        const idleBefore = QUIET_WAIT_MS ? await waitQuiet(QUIET_WAIT_MS) : NaN;
        const files0 = countMaildir();
        const greet = GREETINGS ? (await greetingLatencies(HOST, g.port, GREETINGS)).sort((x, y) => x - y) : [];
        const deadline = Date.now() + RUN_CAP_MS;
        let cpu0 = 0;
        let mach0 = 0;
        let self0 = 0;
        let io0 = 0;
        const snap = () => {
          cpu0 = procCpuMs(pid);
          mach0 = machineBusyMs();
          self0 = selfCpuMs();
          io0 = procWriteBytes(pid);
        };
        const res =
          mode === 'harness'
            ? await harnessLoad(g.port, N, deadline, snap)
            : fromLoad(await load(N, mode === 'pipe', deadline, snap));
        const cpu1 = procCpuMs(pid);
        const mach1 = machineBusyMs();
        const self1 = selfCpuMs();
        const genMs = res.genCpuMs ?? self1 - self0;
        const drainedAt = await waitDrained(deadline);
        const cpu2 = procCpuMs(pid);
        const io2 = procWriteBytes(pid);
        const win = res.windowMs;
        const e2eMs = drainedAt === null ? NaN : drainedAt - res.firstAt;
        // Maildir files are kept (deleting thousands of files between runs makes ext4's inode
        // allocator skip "recently deleted" inodes for a minute, which slows the next run's deliveries).
        const delivered = countMaildir() - files0;
        const ok = !res.aborted && drainedAt !== null && delivered === res.rcptTotal;
        const rec: RunRecord = {
          mode,
          rep,
          ok,
          accepted: res.accepted,
          failed: res.failed,
          recipients: res.rcptTotal,
          acceptRate: r1((res.accepted * 1000) / win),
          p50: r2(res.p50),
          p90: r2(res.p90),
          p99: r2(res.p99),
          max: r2(res.max),
          gwCpuMsPerMsgAccept: r3((cpu1 - cpu0) / N),
          gwCpuMsPerMsgTotal: r3((cpu2 - cpu0) / N),
          gwWriteKBPerMsg: r1((io2 - io0) / 1024 / N),
          gwCoresAccept: r2((cpu1 - cpu0) / win),
          genCpuMsPerMsg: r3(genMs / N),
          machineCoresAccept: r2((mach1 - mach0) / win),
          otherCoresAccept: r2((mach1 - mach0 - (cpu1 - cpu0) - genMs) / win),
          e2eRate: r1((N * 1000) / e2eMs),
          drainAfterS: drainedAt === null ? NaN : r2((drainedAt - res.lastAt) / 1000),
          busyBefore: idleBefore,
          greetP50: r2(pct(greet, 50)),
          greetP99: r2(pct(greet, 99)),
          errors: res.errors,
        };
        runs.push(rec);
        log(
          `bench: ${mode} rep ${rep}: ${ok ? 'OK' : 'INCOMPLETE'} ${res.accepted}/${N} accepted (${res.failed} failed), ` +
            `${rec.acceptRate} msg/s, p50 ${rec.p50} ms p99 ${rec.p99} ms, gateway CPU ${rec.gwCpuMsPerMsgAccept} ms/msg accept / ` +
            `${rec.gwCpuMsPerMsgTotal} ms/msg total, writes ${rec.gwWriteKBPerMsg} KB/msg (${rec.gwCoresAccept} cores; machine ${rec.machineCoresAccept}, other ${rec.otherCoresAccept}), e2e ${rec.e2eRate} msg/s (drain +${rec.drainAfterS} s), ` +
            `${delivered}/${res.rcptTotal} Maildir files, machine busy before ${idleBefore} cores, greeting p50 ${rec.greetP50} ms p99 ${rec.greetP99} ms` +
            (Object.keys(res.errors).length ? `; errors ${JSON.stringify(res.errors)}` : ''),
        );
        if (!ok && drainedAt === null) {
          log('bench: queue did not drain within the time cap; stopping');
          break;
        }
      }
    }
    finished = true;
  } finally {
    restoreEnv();
    db?.close();
    await pgClient?.end().catch(() => undefined);
    if (gw) await gw.stop();
    await pgServer?.destroy();
    if (!finished && !a.keep) rmSync(dir, { recursive: true, force: true });
  }

  let profile: ReturnType<typeof summarizeProfile> | undefined;
  if (a.profile) {
    const files = (() => {
      try {
        return readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'));
      } catch {
        return [];
      }
    })();
    const biggest = files.map((f) => path.join(profDir, f)).sort((x, y) => statSync(y).size - statSync(x).size)[0];
    if (biggest) profile = summarizeProfile(biggest, 25);
    else log(`bench: no .cpuprofile found in ${profDir}`);
  }

  // ---- report ----
  const cpu = cpus()[0]?.model ?? 'unknown';
  const summary: Record<string, Record<string, number | string>> = {};
  const table: string[] = [
    `Receive benchmark (store ${STORE}): N=${N} messages of ~${SIZE + 250} bytes, ${RCPT_MIN === RCPT_MAX ? RCPT_MIN : `${RCPT_MIN}-${RCPT_MAX}`} recipient(s) each (internal generator), ` +
      `${C} STARTTLS sessions, ${REPS} rep(s), medians (min..max); ${cpus().length} x ${cpu}`,
    '',
    '| mode | runs ok | accept msg/s | accept p50 ms | accept p99 ms | gateway CPU ms/msg (accept window) | gateway CPU ms/msg (to empty queue) | gateway disk writes KB/msg | gateway cores busy | generator CPU ms/msg | other cores busy | e2e msg/s (into Maildir) | drain after last 250 s | greeting p50 / p99 ms |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const mode of MODES) {
    const rs = runs.filter((r) => r.mode === mode);
    const good = rs.filter((r) => r.ok);
    const use = good.length ? good : rs;
    const m = (k: keyof RunRecord) => median(use.map((r) => r[k] as number));
    const range = (k: keyof RunRecord) => {
      const v = use.map((r) => r[k] as number);
      return v.length > 1 ? ` (${Math.min(...v)}..${Math.max(...v)})` : '';
    };
    summary[mode] = {
      runsOk: `${good.length}/${rs.length}`,
      acceptRate: r1(m('acceptRate')),
      p50: r2(m('p50')),
      p99: r2(m('p99')),
      gwCpuMsPerMsgAccept: r3(m('gwCpuMsPerMsgAccept')),
      gwCpuMsPerMsgTotal: r3(m('gwCpuMsPerMsgTotal')),
      gwWriteKBPerMsg: r1(m('gwWriteKBPerMsg')),
      gwCoresAccept: r2(m('gwCoresAccept')),
      genCpuMsPerMsg: r3(m('genCpuMsPerMsg')),
      machineCoresAccept: r2(m('machineCoresAccept')),
      otherCoresAccept: r2(m('otherCoresAccept')),
      busyBefore: r2(m('busyBefore')),
      e2eRate: r1(m('e2eRate')),
      drainAfterS: r2(m('drainAfterS')),
      greetP50: r2(m('greetP50')),
      greetP99: r2(m('greetP99')),
    };
    const s = summary[mode];
    table.push(
      `| ${MODE_LABEL[mode]} | ${s.runsOk} | **${s.acceptRate}**${range('acceptRate')} | ${s.p50} | ${s.p99} | ` +
        `${s.gwCpuMsPerMsgAccept} | ${s.gwCpuMsPerMsgTotal} | ${s.gwWriteKBPerMsg} | ${s.gwCoresAccept} | ${s.genCpuMsPerMsg} | ${s.otherCoresAccept} | ${s.e2eRate}${range('e2eRate')} | ${s.drainAfterS} | ${s.greetP50} / ${s.greetP99} |`,
    );
  }
  if (a.profile) table.push('', '(profiled run: the sampling profiler adds overhead; do not quote these rates)');
  process.stdout.write(table.join('\n') + '\n\n');
  if (profile) {
    const lines = [
      `CPU profile of the gateway main thread: ${profile.totalMs} ms busy, ${profile.idleMs} ms idle`,
      '',
      '| self ms | % | area |',
      '|---|---|---|',
      ...profile.areas.map((h) => `| ${h.selfMs} | ${h.pct} | ${h.name} |`),
      '',
      '| self ms | % | function |',
      '|---|---|---|',
      ...profile.functions.map((h) => `| ${h.selfMs} | ${h.pct} | \`${h.name}\` |`),
    ];
    process.stdout.write(lines.join('\n') + '\n\n');
  }
  process.stdout.write(
    JSON.stringify({
      bench: 'receive',
      store: STORE,
      at: new Date(tBench).toISOString(),
      n: N,
      reps: REPS,
      concurrency: C,
      size: SIZE,
      rcpts: `${RCPT_MIN}-${RCPT_MAX}`,
      warmup: WARMUP,
      logLevel: a['log-level'],
      profiled: !!a.profile,
      code: codeVersion(),
      machine: { nproc: cpus().length, cpu, node: process.version },
      medians: summary,
      runs,
      ...(profile ? { profile } : {}),
    }) + '\n',
  );
  if (a.keep) log(`bench: kept ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
  if (runs.some((r) => !r.ok) || runs.length < REPS * MODES.length) process.exitCode = 1;
}

main().catch((e: unknown) => {
  log(`bench: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
