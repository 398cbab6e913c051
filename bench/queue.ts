// Queue-at-scale benchmark (not a test): does a big queue of deferred mail slow the gateway down?
//
//   npm run bench:queue -- [--store sqlite,postgres] [--messages 100000] [--n 2000] [--reps 2]
//                          [--concurrency 20] [--size 2048] [--spread 3600] [--lead 150] [--time-cap 300] [--vacuum]
//                          [--right-after-fill]
//
// For each store: `--messages` messages to an unreachable destination (a loopback port where
// nothing listens) are put in the queue through the store API in bulk (enqueue, claim, and a
// deferred outcome, in batches), their next attempts spread over `--spread` seconds (as a retry
// schedule leaves them) from `--lead` seconds after the fill started, so some of them fall due and
// are retried during the measurement, about as many per second as a running gateway would retry
// (the runs wait for that moment; a fill slower than the lead leaves a backlog, which is printed).
// Then the real `portcullis serve` is started on that queue and on an empty one, alternately
// (empty, full, full, empty, …), and each run measures:
//   - start-up: from spawning `serve` until it logs server.started (listeners bound, queue open);
//   - accept rate: `--n` messages over `--concurrency` STARTTLS sessions, first MAIL to last 250;
//   - relay rate: the same messages reaching a healthy loopback sink, first MAIL to last arrival;
//   - the gateway's CPU per message (user + sys over the run, to the last arrival), which a busy
//     machine disturbs less than the rates.
// It prints one row per run and the ratios full/empty (medians over the runs). Every loop is
// bounded in count and time (--time-cap per phase). --vacuum: on PostgreSQL, VACUUM ANALYZE the
// filled queue before the runs. On PostgreSQL the runs start once the server's autovacuum has been
// through the fill (a queue that has been sitting, as the issue describes: the wait is printed);
// --right-after-fill starts them at once, while the dead rows of the fill are still there. PostgreSQL runs on a throwaway server
// (test/helpers/postgres.ts: Debian's binaries, loopback, fsync on). Loopback addresses only:
// the gateway on 127.0.0.40, the sink on 127.0.0.41, the unreachable destination 127.0.0.42:1.
import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { PostgresStore } from '../src/store/postgres/index.ts';
import { SqliteStore } from '../src/store/sqlite/index.ts';
import type { NewMessage, Store } from '../src/store/types.ts';
import { freePort, startGateway, tempDir, type GatewayHandle } from '../test/helpers/gateway.ts';
import { startPostgres, type PgInstance } from '../test/helpers/postgres.ts';
import { makePki } from '../test/helpers/pki.ts';
import { tinySmtp } from '../test/helpers/tiny-smtp.ts';
import { Messages, nowMs, runLoad } from './lib/loadgen.ts';
import { intArg } from './lib/args.ts';

const GATEWAY = '127.0.0.40';
const SINK = '127.0.0.41';
const UNREACHABLE = '127.0.0.42:1';
const HOSTNAME = 'mx1.queue.bench.test';
const SENDER = 'bench@src.test';
const BATCH = 1000;
const HZ = 100; // USER_HZ: /proc tick rate on Linux

const { values: a } = parseArgs({
  options: {
    store: { type: 'string', default: 'sqlite,postgres' },
    messages: { type: 'string', default: '100000' },
    n: { type: 'string', default: '2000' },
    reps: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '20' },
    size: { type: 'string', default: '2048' },
    spread: { type: 'string', default: '3600' },
    lead: { type: 'string', default: '150' },
    'time-cap': { type: 'string', default: '300' },
    vacuum: { type: 'boolean', default: false },
    'right-after-fill': { type: 'boolean', default: false },
  },
  strict: true,
});
const STORES = a.store!.split(',');
if (!STORES.length || STORES.some((s) => s !== 'sqlite' && s !== 'postgres'))
  throw new Error('--store must be sqlite, postgres or both (sqlite,postgres)');
const QUEUED = intArg('messages', a.messages!, 1, 1_000_000);
const N = intArg('n', a.n!, 10, 100_000);
const REPS = intArg('reps', a.reps!, 1, 10);
const C = intArg('concurrency', a.concurrency!, 1, 200);
const SIZE = intArg('size', a.size!, 100, 1_000_000);
const SPREAD_MS = intArg('spread', a.spread!, 60, 86_400) * 1000;
const LEAD_MS = intArg('lead', a.lead!, 0, 3600) * 1000;
const CAP_MS = intArg('time-cap', a['time-cap']!, 10, 3600) * 1000;

const log = (s: string) => process.stderr.write(`${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const load = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');
const median = (xs: number[]) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
function procCpuMs(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / HZ;
}

/** A healthy destination: answers 250 at once and notes when each message arrived. */
async function startSink(): Promise<{ port: number; arrivals: number[]; close(): void }> {
  const arrivals: number[] = [];
  // noDelay: the replies (250, 250, 354 to a pipelined group) leave at once, not after a delayed ACK.
  const server = net.createServer({ noDelay: true }, (s) =>
    tinySmtp(s, 'sink.healthy.test', (_text, reply) => {
      arrivals.push(nowMs());
      reply('250 2.0.0 ok');
    }),
  );
  const port = await freePort(SINK);
  await new Promise<void>((r) => server.listen(port, SINK, r));
  return { port, arrivals, close: () => server.close() };
}

/** Fill the queue through the store API: enqueue, claim and defer in batches of BATCH. */
async function seed(store: Store, count: number, body: Buffer, origin: number): Promise<number> {
  const t0 = Date.now();
  const now = Date.now();
  for (let done = 0, b = 0; done < count; b++) {
    const k = Math.min(BATCH, count - done);
    const batch: NewMessage[] = Array.from({ length: k }, (_, i) => ({
      id: `SEED${String(done + i).padStart(9, '0')}`,
      org: 'bench',
      receivedAt: now - 60_000,
      mailFrom: SENDER,
      messageId: `<seed.${done + i}@src.test>`,
      envelope: { smtputf8: false },
      inbound: {
        sessionId: `seed${b}`,
        clientIp: '127.0.0.1',
        clientPort: 1,
        helo: 'seed',
        protocol: 'ESMTPS',
        receivedBy: HOSTNAME,
      },
      data: body,
      recipients: [{ address: `u${(done + i) % 100}@unreachable.test`, org: 'bench', route: 'remote' }],
    }));
    await Promise.all(batch.map((m) => store.enqueue(m)));
    const claimed = await store.claim('seed', k, 600_000);
    await Promise.all(
      claimed.map((m) =>
        store.complete(
          m.id,
          'seed',
          [
            {
              idx: 0,
              status: 'deferred',
              reply: { code: 451, enhanced: '4.4.1', message: `connection to ${UNREACHABLE} refused` },
              agent: 'smtp',
              detail: { host: UNREACHABLE },
            },
          ],
          origin + Math.floor(Math.random() * SPREAD_MS),
          { gen: m.leaseGen },
        ),
      ),
    );
    done += claimed.length;
    if (!claimed.length) throw new Error('seeding: nothing to claim (is something else using the store?)');
    if (b % 20 === 0) log(`  seeded ${done} of ${count} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
    if (Date.now() - t0 > 20 * CAP_MS) throw new Error(`seeding took longer than ${(20 * CAP_MS) / 1000} s`);
  }
  return Date.now() - t0;
}

interface Run {
  queue: 'empty' | 'full';
  startupMs: number;
  acceptPerS: number;
  relayPerS: number;
  cpuMsPerMsg: number;
  depth: number;
}

async function main(): Promise<void> {
  const work = tempDir('pc-bench-queue-');
  const pki = await makePki(work, 'Bench');
  const server = await pki.issue(HOSTNAME);
  const ca = readFileSync(pki.rootFile, 'utf8');
  const sink = await startSink();
  const messages = new Messages(SIZE, SENDER);
  const config = (store: Record<string, unknown>) => ({
    hostname: HOSTNAME,
    log: { level: 'info' },
    ...store,
    tls: { certificates: [{ cert: server.cert, key: server.key }], trust: { system: false, caFiles: [pki.rootFile] } },
    dns: { servers: ['127.0.0.1:1'] }, // never asked: every next hop is numeric
    smtp: { maxConnectionsPerIP: 1000 },
    organizations: [
      {
        name: 'bench',
        acceptedDomains: [{ domain: 'src.test' }],
        inboundConnectors: [{ name: 'Bench clients', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.0/8'] }],
        outboundConnectors: [
          {
            name: 'Healthy',
            recipientDomains: ['healthy.test'],
            useMXRecord: false,
            smartHosts: [`${SINK}:${sink.port}`],
          },
          {
            name: 'Unreachable',
            recipientDomains: ['unreachable.test'],
            useMXRecord: false,
            smartHosts: [UNREACHABLE],
          },
        ],
      },
    ],
  });
  let seq = 0;
  const results: string[] = [];
  let pgServer: PgInstance | undefined;
  const tempDirs: string[] = [work];
  try {
    for (const kind of STORES) {
      log(`== ${kind}: load average ${load()}`);
      const dirs = { empty: tempDir('pc-bench-queue-empty-'), full: tempDir('pc-bench-queue-full-') };
      tempDirs.push(...Object.values(dirs));
      const storeConfig = { empty: {}, full: {} } as Record<'empty' | 'full', Record<string, unknown>>;
      let open: () => Promise<Store>;
      let vacuum = async () => {};
      let settle = async () => {};
      if (kind === 'postgres') {
        pgServer ??= await startPostgres({ host: '127.0.0.43' });
        const urls = { empty: await pgServer.createDatabase('empty'), full: await pgServer.createDatabase('full') };
        // Mailboxes on storage all nodes share: required on PostgreSQL (one node here).
        const shared = { delivery: { maildirShared: true } };
        storeConfig.empty = { store: { type: 'postgres', url: urls.empty }, ...shared };
        storeConfig.full = { store: { type: 'postgres', url: urls.full }, ...shared };
        open = () => PostgresStore.open(urls.full);
        vacuum = async () => {
          const c = new pg.Client(urls.full);
          await c.connect();
          try {
            await c.query('VACUUM ANALYZE messages, recipients, events');
          } finally {
            await c.end();
          }
        };
        // A queue that has been sitting: autovacuum has been through the burst of the fill (every
        // message inserted and updated twice). Waits, bounded by --time-cap, until the server's own
        // autovacuum has run on messages after the fill, none is running and under 2 % is dead.
        settle = async () => {
          const c = new pg.Client(urls.full);
          await c.connect();
          try {
            const until = Date.now() + CAP_MS;
            for (;;) {
              const { rows } = await c.query<{ dead: string; live: string; runs: string; running: string }>(
                `SELECT n_dead_tup AS dead, n_live_tup AS live, autovacuum_count AS runs,
                   (SELECT count(*) FROM pg_stat_progress_vacuum p WHERE p.relid = s.relid) AS running
                 FROM pg_stat_user_tables s WHERE relname = 'messages'`,
              );
              const r = rows[0];
              const settled = r && Number(r.runs) > 0 && Number(r.running) === 0;
              if (settled && Number(r.dead) <= 0.02 * (Number(r.live) + 1)) return;
              if (Date.now() > until)
                throw new Error(`autovacuum did not settle within the time cap: ${JSON.stringify(r)}`);
              await sleep(1000);
            }
          } finally {
            await c.end();
          }
        };
      } else open = async () => new SqliteStore(path.join(dirs.full, 'data'));
      const body = Buffer.from(`Subject: seeded\r\n\r\n${'x'.repeat(Math.max(0, SIZE - 40))}\r\n`);
      const store = await open();
      let seedMs: number;
      // The first retry falls due `--lead` s after the fill starts: a running gateway would have
      // retried what fell due meanwhile; here nothing runs, so that would be a backlog, not a queue.
      const origin = Date.now() + LEAD_MS;
      try {
        seedMs = await seed(store, QUEUED, body, origin);
      } finally {
        await store.close();
      }
      log(`  ${QUEUED} deferred messages in the queue in ${(seedMs / 1000).toFixed(1)} s`);
      if (kind === 'postgres' && !a['right-after-fill']) {
        const t = Date.now();
        await settle();
        log(`  autovacuum settled ${((Date.now() - t) / 1000).toFixed(1)} s after the fill`);
      }
      if (a.vacuum && kind === 'postgres') {
        const t = Date.now();
        await vacuum();
        log(`  VACUUM ANALYZE in ${((Date.now() - t) / 1000).toFixed(1)} s`);
      }
      if (Date.now() < origin) {
        log(`  waiting ${((origin - Date.now()) / 1000).toFixed(0)} s for the first retries to fall due (--lead)`);
        await sleep(origin - Date.now());
      } else log(`  the first retries fell due ${((Date.now() - origin) / 1000).toFixed(0)} s ago: a backlog`);
      const runs: Run[] = [];
      for (let r = 0; r < REPS; r++) {
        for (const queue of r % 2 ? (['full', 'empty'] as const) : (['empty', 'full'] as const)) {
          const t0 = nowMs();
          const gw: GatewayHandle = await startGateway({
            dir: dirs[queue],
            host: GATEWAY,
            config: config(storeConfig[queue]),
          });
          const startupMs = nowMs() - t0;
          try {
            gw.proc.stdout!.removeAllListeners('data');
            gw.proc.stdout!.on('data', () => {});
            const depth = (
              JSON.parse((await gw.cli(['cluster', 'status', '--json'])).stdout) as {
                depth: { deferred: number };
              }
            ).depth.deferred;
            const before = sink.arrivals.length;
            const cpu0 = procCpuMs(gw.proc.pid!);
            const base = seq;
            seq += N;
            const res = await runLoad({
              host: GATEWAY,
              port: gw.port,
              ca,
              servername: HOSTNAME,
              count: N,
              concurrency: C,
              pipelined: false,
              from: SENDER,
              rcpts: (s) => [`u${(base + s) % 10}@healthy.test`],
              message: (s, rc) => messages.make(base + s, rc),
              deadline: Date.now() + CAP_MS,
              maxFailures: Math.max(10, Math.floor(N / 100)),
            });
            if (res.aborted || res.accepted < N)
              throw new Error(`${queue} queue: ${res.accepted} of ${N} accepted (${JSON.stringify(res.errors)})`);
            const until = Date.now() + CAP_MS;
            while (sink.arrivals.length - before < N && Date.now() < until) await sleep(20);
            const got = sink.arrivals.length - before;
            if (got < N) throw new Error(`${queue} queue: ${got} of ${N} relayed within ${CAP_MS / 1000} s`);
            const cpuMsPerMsg = (procCpuMs(gw.proc.pid!) - cpu0) / N;
            const run: Run = {
              queue,
              startupMs,
              acceptPerS: (res.accepted / res.windowMs) * 1000,
              relayPerS: (N / (sink.arrivals[before + N - 1] - res.firstAt)) * 1000,
              cpuMsPerMsg,
              depth,
            };
            runs.push(run);
            const row =
              `| ${kind} | ${queue} (${depth} deferred) | ${(startupMs / 1000).toFixed(2)} | ` +
              `${run.acceptPerS.toFixed(0)} | ${run.relayPerS.toFixed(0)} | ${cpuMsPerMsg.toFixed(2)} | ${load()} |`;
            results.push(row);
            log(row);
          } finally {
            await gw.stop();
          }
        }
      }
      const m = (q: 'empty' | 'full', k: keyof Omit<Run, 'queue'>) =>
        median(runs.filter((x) => x.queue === q).map((x) => x[k]));
      const ratio = (k: 'acceptPerS' | 'relayPerS' | 'cpuMsPerMsg') => (m('full', k) / m('empty', k)).toFixed(2);
      results.push(
        `${kind}: full/empty (medians of ${REPS}): accept ${ratio('acceptPerS')}, relay ${ratio('relayPerS')}, ` +
          `CPU per message ${ratio('cpuMsPerMsg')}; start-up with ${QUEUED} queued ` +
          `${(m('full', 'startupMs') / 1000).toFixed(2)} s (empty ${(m('empty', 'startupMs') / 1000).toFixed(2)} s); ` +
          `seeding ${(seedMs / 1000).toFixed(0)} s`,
      );
    }
  } finally {
    sink.close();
    await pgServer?.destroy();
    for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  }
  console.log(
    `node ${process.version}, ${os.cpus().length} cores; --messages ${QUEUED} --n ${N} --reps ${REPS} ` +
      `--concurrency ${C} --size ${SIZE} --spread ${SPREAD_MS / 1000} --lead ${LEAD_MS / 1000}${a.vacuum ? ' --vacuum' : ''}` +
      `${a['right-after-fill'] ? ' --right-after-fill' : ''}`,
  );
  console.log('');
  console.log('| store | queue | start-up s | accept msg/s | relay msg/s | gateway CPU ms/msg | load average after |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of results.filter((x) => x.startsWith('|'))) console.log(r);
  console.log('');
  for (const r of results.filter((x) => !x.startsWith('|'))) console.log(r);
}

await main();
