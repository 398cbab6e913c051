// The harness's load generator spread over several gateway nodes (bench/relay.sh NODES=K): runs one
// client.js per target (host:port) at once, with the message count and the sessions split evenly, and
// prints one JSON line in client.js's own format for measure.js. Merged figures: counts, connections
// and CPU are summed; each latency figure is the largest of the clients' (a conservative bound, as
// the raw latencies stay in the clients). As senders spread over the MX hosts of one preference.
// Usage: node bench/lib/split-client.mjs CLIENT_JS --targets 127.0.0.1:2600,127.0.0.1:2601 -- CLIENT ARGS…
// (CLIENT ARGS without --host and --port, with the total --count and --concurrency).
import { spawn } from 'node:child_process';
import process from 'node:process';

const argv = process.argv.slice(2);
const clientJs = argv[0];
const targetsAt = argv.indexOf('--targets');
const sep = argv.indexOf('--');
if (!clientJs || targetsAt < 0 || sep < 0) {
  process.stderr.write('usage: split-client.mjs CLIENT_JS --targets HOST:PORT,HOST:PORT -- CLIENT ARGS\n');
  process.exit(2);
}
const targets = argv[targetsAt + 1].split(',').map((t) => t.split(':'));
const rest = argv.slice(sep + 1);
const take = (name) => {
  const i = rest.indexOf(`--${name}`);
  if (i < 0) throw new Error(`--${name} is required`);
  const v = Number(rest[i + 1]);
  rest.splice(i, 2);
  return v;
};
const count = take('count');
const concurrency = take('concurrency');
const share = (total, i) => Math.floor(total / targets.length) + (i < total % targets.length ? 1 : 0);

const runs = targets.map(
  ([host, port], i) =>
    new Promise((resolve) => {
      const args = [clientJs, ...rest, '--host', host, '--port', port, '--count', String(share(count, i))];
      args.push('--concurrency', String(Math.max(1, share(concurrency, i))));
      const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.on('close', (code) => {
        let parsed = null;
        try {
          parsed = JSON.parse(out.trim().split('\n').pop() ?? '');
        } catch {
          parsed = null;
        }
        resolve({ code, parsed });
      });
    }),
);
const results = await Promise.all(runs);
const parts = results.map((r) => r.parsed).filter(Boolean);
const sum = (f) => parts.reduce((a, p) => a + (f(p) ?? 0), 0);
const max = (f) => Math.max(...parts.map((p) => f(p) ?? 0));
const first = parts[0] ?? {};
const merged = {
  ...first,
  host: argv[targetsAt + 1],
  count,
  concurrency,
  accepted: sum((p) => p.accepted),
  failed: sum((p) => p.failed),
  aborted: parts.some((p) => p.aborted),
  elapsedS: max((p) => p.elapsedS),
  acceptRate: sum((p) => p.accepted) / (max((p) => p.elapsedS) || 1),
  latMs: Object.fromEntries(['p50', 'p90', 'p99', 'max', 'mean'].map((k) => [k, max((p) => p.latMs?.[k])])),
  connects: sum((p) => p.connects),
  connFail: sum((p) => p.connFail),
  clientCpuS: sum((p) => p.clientCpuS),
  errors: Object.assign({}, ...parts.map((p) => p.errors ?? {})),
  splitOver: targets.length,
};
process.stdout.write(`${JSON.stringify(merged)}\n`);
process.exit(results.every((r) => r.code === 0) && parts.length === targets.length ? 0 : 1);
