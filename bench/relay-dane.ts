// npm run bench:relay-dane — what DANE costs on the relay path (issue 10): the same relay job as
// `npm run bench:relay` (STARTTLS in from the Postfix comparison harness's client.js, queued
// durably, relayed over TLS to the harness's sink), but routed by MX through DNS instead of a
// smart host: a DNSSEC-signed dest.test (NSD + Unbound on loopback, test/helpers/dnssec.ts) with
// MX mx.dest.test → 127.0.0.1 (the sink) and a TLSA 3 1 1 record of the sink's key at
// _2546._tcp.mx.dest.test (the sink's port). Two modes, otherwise identical, alternated run by run so a busy
// machine weighs on both alike:
//   opportunistic  dane.enabled: false — opportunistic TLS to the sink (the baseline);
//   dane           dane.enabled: true  — the TLSA records make TLS with a matching key mandatory.
// Every lookup is cached by then (the harness's warm-up runs first). Prints the e2e msg/s of each
// run, the medians and dane/opportunistic, the gateway process's own CPU per message (not skewed
// by other load on the machine, unlike the harness's machine-wide estimate); checks in the gateway's log that every message of the
// dane mode was delivered with DANE (tlsAchieved dane) and none of the baseline.
// Env: BENCH_HARNESS=DIR (default: shared/bench beside this checkout), BENCH_WORK (default
// mtabench in $TMPDIR or /tmp), N (5000), C (20), SIZE (5120), REPS (3), TARGET_PORT (2601),
// SINK_PORT (2546), SINK_CTL_PORT (2597).
// Needs root (the DNSSEC rig) and nsd, unbound, ldnsutils; the harness's setup.sh runs first.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { tlsaRecord } from '../src/tls/dane.ts';
import { startDnssecRig } from '../test/helpers/dnssec.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const HARNESS = path.resolve(
  process.env.BENCH_HARNESS ?? process.env.SHARED_BENCH ?? path.join(ROOT, '..', 'shared', 'bench'),
);
const WORK = process.env.BENCH_WORK ?? path.join(process.env.TMPDIR ?? '/tmp', 'mtabench');
const num = (name: string, def: number) => {
  const v = Number(process.env[name] ?? def);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive whole number`);
  return v;
};
const N = num('N', 5000);
const C = num('C', 20);
const SIZE = num('SIZE', 5120);
const REPS = num('REPS', 3);
const PORT = num('TARGET_PORT', 2601);
// A sink of its own (port, control port, pid file), so a `bench:relay` running beside is not disturbed.
const SINK_PORT = num('SINK_PORT', 2546);
const SINK_CTL_PORT = num('SINK_CTL_PORT', 2597);
const MODES = ['opportunistic', 'dane'] as const;
type Mode = (typeof MODES)[number];

const say = (s: string) => process.stdout.write(`${s}\n`);
const env = {
  ...process.env,
  BENCH_WORK: WORK,
  SINK_PORT: String(SINK_PORT),
  SINK_CTL_PORT: String(SINK_CTL_PORT),
  SINK_PIDFILE: path.join(WORK, 'run', 'sink-dane.pid'),
};

if (!existsSync(path.join(HARNESS, 'run-target.sh'))) {
  process.stderr.write(`Postfix comparison harness not found at ${HARNESS} (set BENCH_HARNESS=DIR)\n`);
  process.exit(2);
}
execFileSync('bash', [path.join(HARNESS, 'setup.sh')], { env, stdio: ['ignore', 'ignore', 'inherit'] });
const CERTS = path.join(WORK, 'certs');
const RUN = path.join(WORK, 'portcullis-dane');
rmSync(RUN, { recursive: true, force: true });
mkdirSync(RUN, { recursive: true });

const sinkKey = new X509Certificate(readFileSync(path.join(CERTS, 'server.pem')));
const rig = await startDnssecRig({
  base: path.join(RUN, 'dns'),
  zones: { 'dest.test': 'secure' },
  records: {
    'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'mx.dest.test': { A: ['127.0.0.1'] },
    [`_${SINK_PORT}._tcp.mx.dest.test`]: { TLSA: [tlsaRecord(sinkKey, 3, 1, 1)] },
  },
});

function configFor(mode: Mode): string {
  const dir = path.join(RUN, mode);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'portcullis.yaml');
  writeFileSync(
    file,
    YAML.stringify({
      hostname: 'relay.portcullis.bench.test',
      dataDir: path.join(dir, 'data'),
      ...(process.getuid?.() === 0 ? { runAs: 'root' } : {}),
      log: { level: process.env.LOG_LEVEL ?? 'info' },
      smtp: { listen: [`127.0.0.1:${PORT}`], maxConnectionsPerIP: 1000 },
      tls: {
        certificates: [{ cert: path.join(CERTS, 'server-chain.pem'), key: path.join(CERTS, 'server.key') }],
        trust: { system: false, caFiles: [path.join(CERTS, 'ca.pem')] },
      },
      dns: { servers: [rig.server] },
      dane: { enabled: mode === 'dane' },
      delivery: { port: SINK_PORT },
      organizations: [
        {
          name: 'bench',
          acceptedDomains: [{ domain: 'src.test' }],
          inboundConnectors: [
            { name: 'Bench clients', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.0/8'] },
          ],
        },
      ],
    }),
  );
  return file;
}

const listening = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });

async function startServer(cfg: string, log: string): Promise<ChildProcess> {
  const out = openSync(log, 'a');
  const p = spawn(process.execPath, [path.join(ROOT, 'bin/portcullis.js'), 'serve', '-c', cfg], {
    stdio: ['ignore', out, out],
  });
  for (let i = 0; i < 150; i++) {
    if (await listening(PORT)) return p;
    if (p.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  p.kill('SIGTERM');
  throw new Error(`portcullis did not start; see ${log}`);
}

/** CPU seconds the gateway process has used (user + system, /proc/PID/stat; Linux). */
function cpuSeconds(p: ChildProcess): number {
  const f = readFileSync(`/proc/${p.pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return (Number(rest[11]) + Number(rest[12])) / 100; // utime, stime (fields 14, 15) in USER_HZ ticks
}

async function stopServer(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null) return;
  const done = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 30_000);
  await done;
  clearTimeout(t);
}

const RESULTS = path.join(WORK, 'results', `${new Date().toISOString().replace(/[-:]|\.\d+/g, '')}-dane.jsonl`);
const logs: Record<Mode, string> = { opportunistic: '', dane: '' };
/** Gateway CPU ms per message of each run (warm-up included: its messages are counted). */
const cpu: Record<Mode, number[]> = { opportunistic: [], dane: [] };
let failed = false;
try {
  for (let rep = 0; rep < REPS; rep++) {
    // Alternate which mode goes first, so a drift in machine load does not favour one.
    for (const mode of rep % 2 ? [...MODES].reverse() : MODES) {
      const cfg = configFor(mode);
      logs[mode] = path.join(RUN, `${mode}.log`);
      const server = await startServer(cfg, logs[mode]);
      const cpu0 = cpuSeconds(server);
      try {
        execFileSync('bash', [path.join(HARNESS, 'run-target.sh')], {
          env: {
            ...env,
            NAME: `portcullis-${mode}`,
            TARGET_PORT: String(PORT),
            CONFIGS: 'b',
            REPS: '1',
            N: String(N),
            C: String(C),
            SIZE: String(SIZE),
            RESULTS,
            DRAIN_CMD: `bash ${path.join(ROOT, 'bench/drain.sh')} ${cfg}`,
          },
          stdio: ['ignore', 'inherit', 'inherit'],
        });
        cpu[mode].push(Math.round(((cpuSeconds(server) - cpu0) * 1e6) / (N + 200)) / 1000);
      } catch {
        failed = true;
        say(`!! ${mode} run ${rep + 1} failed`);
      } finally {
        await stopServer(server);
      }
    }
  }
} finally {
  await rig.stop();
  execFileSync('bash', [path.join(HARNESS, 'sink.sh'), 'stop'], { env, stdio: 'ignore' });
}

const runs = readFileSync(RESULTS, 'utf8')
  .split('\n')
  .filter(Boolean)
  .map((l) => JSON.parse(l) as { label: string; e2eRate: number | null; tlsAtSink?: unknown });
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const rates = (mode: Mode) =>
  runs.filter((r) => r.label === `portcullis-${mode}:b`).map((r) => (r.e2eRate === null ? NaN : r.e2eRate));
/** Messages the gateway delivered in a mode's runs (warm-ups included), by the TLS level achieved. */
const achieved = (mode: Mode) => {
  const by: Record<string, number> = {};
  for (const l of readFileSync(logs[mode], 'utf8').split('\n')) {
    const m = /"event":"delivery\.result".*"tlsAchieved":"(\w+)"/.exec(l);
    if (m && /"status":"delivered"/.test(l)) by[m[1]] = (by[m[1]] ?? 0) + 1;
  }
  return by;
};
const opp = rates('opportunistic');
const dane = rates('dane');
say('');
say(`e2e msg/s, config b (STARTTLS in, MX route to the sink), N=${N} C=${C} SIZE=${SIZE}, ${REPS} run(s) each:`);
say(`  opportunistic: ${opp.join(', ')}  (median ${median(opp)})`);
say(`  dane:          ${dane.join(', ')}  (median ${median(dane)})`);
say(`  dane/opportunistic: ${(median(dane) / median(opp)).toFixed(3)}`);
say(
  `gateway CPU ms/msg (the gateway process alone, warm-up included): opportunistic ` +
    `${cpu.opportunistic.join(', ')}; dane ${cpu.dane.join(', ')}`,
);
say(
  `delivered by TLS level achieved: opportunistic ${JSON.stringify(achieved('opportunistic'))}, dane ` +
    `${JSON.stringify(achieved('dane'))}`,
);
say(
  `results: ${RESULTS}; machine load now: ${os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')}`,
);
if (failed || [...opp, ...dane].some((x) => Number.isNaN(x))) process.exit(3);
