// Summary of one bench:relay results file (JSON lines written by the comparison harness): for each
// label, the median end-to-end rate and relay CPU per message, and that CPU against the zero-cost
// relay — the harness's generator sending straight into its sink (label `direct`), whose
// generator + sink CPU per message is what a relay cannot avoid: one SMTP/TLS server plus one
// SMTP/TLS client. Also each Portcullis label's e2e rate against Postfix's and against
// `workers: 1` on SQLite (portcullis-w1): the speed-up of `workers`, of PostgreSQL and of nodes;
// and for each SQLite `workers` label the most this machine allows that speed-up to be, the
// generator and the sink sharing its cores (docs/performance.md, "Workers on two cores").
//
//   node --import tsx bench/relay-summary.ts RESULTS.jsonl [--config b]
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';

interface Run {
  label: string;
  expect: number;
  e2eRate: number;
  latMs: { p99: number };
  cpu: { generatorS: number; sinkS: number; restMsPerMsg: number | null };
  complete: boolean;
}

const { values, positionals } = parseArgs({ allowPositionals: true, options: { config: { type: 'string' } } });
const config = values.config ?? 'b';
if (positionals.length !== 1) {
  console.error('usage: relay-summary RESULTS.jsonl [--config b]');
  process.exit(2);
}
const runs = readFileSync(positionals[0], 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l) as Run)
  .filter((r) => r.complete && r.label.endsWith(`:${config}`));

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2 : NaN;
};
const byLabel = new Map<string, Run[]>();
for (const r of runs)
  byLabel.set(r.label.slice(0, -config.length - 1), [...(byLabel.get(r.label.slice(0, -config.length - 1)) ?? []), r]);

const direct = byLabel.get('direct');
const floorMs = direct ? median(direct.map((r) => ((r.cpu.generatorS + r.cpu.sinkS) * 1000) / r.expect)) : NaN;
const w1 = byLabel.get('portcullis-w1');
const w1Rate = w1 ? median(w1.map((r) => r.e2eRate)) : NaN;
const postfix = [...byLabel].find(([label]) => label.startsWith('postfix'))?.[1];
const postfixRate = postfix ? median(postfix.map((r) => r.e2eRate)) : NaN;
const f = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '—');

console.log(`\n== relay summary (config ${config}, medians; zero-cost relay = generator straight into the sink)`);
console.log(
  '| label | runs | e2e msg/s | accept p99 ms | relay CPU ms/msg | relay CPU ÷ (generator + sink) | e2e ÷ Postfix ' +
    '| e2e ÷ workers: 1 (SQLite) |',
);
console.log('|---|---|---|---|---|---|---|---|');
if (direct)
  console.log(
    `| direct (zero-cost relay) | ${direct.length} | ${f(median(direct.map((r) => r.e2eRate)), 0)} | ` +
      `${f(median(direct.map((r) => r.latMs.p99)), 1)} | generator + sink: ${f(floorMs)} | 1 (the floor) | — | — |`,
  );
for (const [label, rs] of byLabel) {
  if (label === 'direct') continue;
  const rate = median(rs.map((r) => r.e2eRate));
  const cpu = median(rs.map((r) => r.cpu.restMsPerMsg ?? NaN));
  const ours = label.startsWith('portcullis-');
  const vsW1 = ours ? f(rate / w1Rate) : '—';
  const vsPostfix = ours ? f(rate / postfixRate) : '—';
  console.log(
    `| ${label} | ${rs.length} | ${f(rate, 0)} | ${f(median(rs.map((r) => r.latMs.p99)), 1)} | ${f(cpu)} | ` +
      `${f(cpu / floorMs)} | ${vsPostfix} | ${vsW1} |`,
  );
}

// The bound: one process is limited by its one core, e2e(1) ≤ 1/c1; W workers by W cores and by
// the machine's cores shared with the generator and the sink, e2e(W) ≤ min(W/cW, cores/(cW + g)).
const cores = os.availableParallelism();
const c1 = w1 ? median(w1.map((r) => r.cpu.restMsPerMsg ?? NaN)) : NaN;
for (const [label, rs] of byLabel) {
  const m = /^portcullis-w(\d+|auto)$/.exec(label);
  if (!m || label === 'portcullis-w1' || !Number.isFinite(c1) || !Number.isFinite(floorMs)) continue;
  const workers = m[1] === 'auto' ? cores : Number(m[1]);
  const cW = median(rs.map((r) => r.cpu.restMsPerMsg ?? NaN));
  const bound = c1 * Math.min(workers / cW, cores / (cW + floorMs));
  console.log(
    `${label}: e2e ÷ workers: 1 is ${f(median(rs.map((r) => r.e2eRate)) / w1Rate)}; on ${cores} cores shared with ` +
      `the generator and the sink at most c1·min(W/cW, cores/(cW + g)) = ${f(c1)}·min(${workers}/${f(cW)}, ` +
      `${cores}/(${f(cW)} + ${f(floorMs)})) = ${f(bound)}`,
  );
}
