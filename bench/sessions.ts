// Sessions benchmark (not a test): how much memory each process of the real gateway holds with
// many concurrent STARTTLS sessions open. Opens --sessions sessions (default 1,000) from
// 127.0.0.1 through greeting, EHLO, STARTTLS (certificate verified) and EHLO, keeps them all
// open, then reads VmRSS of the supervisor and of every worker (workers: --workers, default 2;
// 1 is the single process) and prints one line per process. Bounded: every session has 30 s to
// get through its handshake, the whole run --time-cap seconds.
//
//   npm run bench:sessions -- [--sessions 1000] [--workers 2|auto|1] [--time-cap 300]
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import { cleanup, startGateway, tempDir } from '../test/helpers/gateway.ts';
import { makePki } from '../test/helpers/pki.ts';
import { readRssKb } from '../proof/lib/resources-rss.ts';
import { LoadSession } from './lib/loadgen.ts';

const { values: a } = parseArgs({
  options: {
    sessions: { type: 'string', default: '1000' },
    workers: { type: 'string', default: '2' },
    'time-cap': { type: 'string', default: '300' },
  },
});
const N = Math.min(Number(a.sessions), 5000);
const workers = a.workers === 'auto' ? 'auto' : Number(a.workers);
const deadline = Date.now() + Number(a['time-cap']) * 1000;

const pkiDir = tempDir('pc-bench-sessions-');
const pki = await makePki(pkiDir, 'Bench');
const leaf = await pki.issue('mx1.contoso.test');
const ca = readFileSync(pki.rootFile, 'utf8');
const gw = await startGateway({
  config: {
    workers,
    smtp: { maxConnections: N + 100, maxConnectionsPerIP: N + 100 },
    tls: { certificates: [{ cert: leaf.chain, key: leaf.key }], trust: { system: false, caFiles: [pki.rootFile] } },
  },
});
const sessions: LoadSession[] = [];
let failed = 0;
try {
  const started = Date.now();
  // 50 handshakes at a time: a burst of 1,000 TLS handshakes would only measure the backlog.
  let next = 0;
  await Promise.all(
    Array.from({ length: 50 }, async () => {
      while (next < N && Date.now() < deadline) {
        next++;
        try {
          const s = await LoadSession.connect('127.0.0.1', gw.port, 30_000);
          await s.handshake('bench.contoso.test', 'mx1.contoso.test', ca);
          sessions.push(s);
        } catch {
          failed++;
        }
      }
    }),
  );
  const openMs = Date.now() - started;
  await new Promise((r) => setTimeout(r, 2000)); // let the processes settle
  const pids: [string, number][] = [['supervisor or single process', gw.proc.pid!]];
  for (const e of gw.events())
    if (e.event === 'worker.started') pids.push([`worker ${String(e.worker)}`, e.pid as number]);
  console.log(
    `${sessions.length} STARTTLS sessions open (${failed} failed) in ${(openMs / 1000).toFixed(1)} s; ` +
      `workers: ${String(workers)}; load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`,
  );
  for (const [name, pid] of pids)
    console.log(`${name} (pid ${pid}): RSS ${((readRssKb(pid) ?? 0) / 1024).toFixed(1)} MB`);
} finally {
  for (const s of sessions) s.quit();
  await cleanup(gw);
}
