// Pages the SQLite store writes to its WAL per message, and the CPU the store spends per message
// (not a test): the write amplification and the cost of the queue's schema, phase by phase. A
// queue in a temp folder holds --history done messages first (so the tables and indexes are not
// tiny), then --messages go through the relay's cycle in batches of --batch: enqueued together
// (one group commit), claimed with their data, completed as delivered. With --handoff they are
// enqueued leased to the worker instead (the relay's direct handoff) and not claimed. Message-IDs,
// senders and recipients are sequential, or random with --random-keys (real mail: each lands on a
// leaf of its index of its own). Automatic checkpoints are off on the store's connection, so the
// WAL only grows and its growth in frames is the pages written; the CPU is this process's (user
// and system) over the measured messages, checkpoints excluded. Pages are deterministic for a
// given schema (sequential keys); the CPU varies from run to run by a few per cent.
//
//   node --import tsx bench/wal-pages.ts [--messages 1000] [--batch 5] [--history 2000] [--size 5120]
//     [--handoff] [--random-keys]
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type Database from 'better-sqlite3';
import { queueFile, SqliteStore } from '../src/store/sqlite/index.ts';
import type { NewMessage, RecipientOutcome } from '../src/store/types.ts';
import { intArg } from './lib/args.ts';

const { values: a } = parseArgs({
  options: {
    messages: { type: 'string', default: '1000' },
    batch: { type: 'string', default: '5' },
    history: { type: 'string', default: '2000' },
    size: { type: 'string', default: '5120' },
    handoff: { type: 'boolean', default: false },
    'random-keys': { type: 'boolean', default: false },
  },
  strict: true,
});
const N = intArg('messages', a.messages!, 1, 100_000);
const B = intArg('batch', a.batch!, 1, 1000);
const HISTORY = intArg('history', a.history!, 1, 100_000);
const SIZE = intArg('size', a.size!, 1, 10_000_000);

/** A key part: the message's id, or random bytes (--random-keys). */
const key = (id: string) => (a['random-keys'] ? randomBytes(8).toString('hex') : id);
const msg = (id: string): NewMessage => ({
  id,
  org: 'contoso',
  receivedAt: Date.now(),
  mailFrom: `sender-${key(id)}@fabrikam.test`,
  messageId: `<${key(id)}@fabrikam.test>`,
  envelope: { smtputf8: false },
  inbound: { sessionId: 's', clientIp: '127.0.0.1', clientPort: 1, helo: 'h', protocol: 'ESMTPS', receivedBy: 'mx' },
  data: Buffer.alloc(SIZE, 'x'),
  recipients: [{ address: `r-${key(id)}@contoso.test`, org: 'contoso', route: 'remote' }],
});
const delivered: RecipientOutcome = {
  idx: 0,
  status: 'delivered',
  reply: { code: 250, enhanced: '2.0.0', message: 'Ok' },
  agent: 'smtp',
  detail: { mx: 'mx.contoso.test', ip: '127.0.0.1', tlsAchieved: 'encrypted', tlsVersion: 'TLSv1.3' },
};

const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-wal-'));
const store = new SqliteStore(dir);
// The store's own connection (private): its automatic checkpoint off, so the WAL only grows.
(store as unknown as { db: Database.Database }).db.pragma('wal_autocheckpoint = 0');
const wal = `${queueFile(dir)}-wal`;
const pageSize = (store as unknown as { db: Database.Database }).db.pragma('page_size', { simple: true }) as number;
const frames = () => Math.round((statSync(wal).size - 32) / (pageSize + 24));

async function cycle(prefix: string, count: number, phases: Map<string, number> | null): Promise<void> {
  for (let k = 0; k < count; k += B) {
    const n = Math.min(B, count - k);
    let f = frames();
    const lease = a.handoff ? { owner: 'bench', ms: 60_000 } : undefined;
    const queued = await Promise.all(
      Array.from({ length: n }, (_, i) => store.enqueue(msg(`${prefix}${k + i}`), lease)),
    );
    const add = (phase: string) => {
      const now = frames();
      phases?.set(phase, (phases.get(phase) ?? 0) + now - f);
      f = now;
    };
    add('enqueue');
    const claimed = lease ? queued : (await store.claimWithData('bench', n, 60_000)).map((c) => c.message);
    if (!lease) add('claim');
    await Promise.all(claimed.map((m) => store.complete(m.id, 'bench', [delivered], Date.now(), { gen: m.leaseGen })));
    add('complete');
  }
}

try {
  await cycle('H', HISTORY, null);
  const phases = new Map<string, number>();
  const cpu0 = process.cpuUsage();
  await cycle('M', N, phases);
  const cpu = process.cpuUsage(cpu0);
  const total = [...phases.values()].reduce((s, v) => s + v, 0);
  console.log(
    `WAL pages per message (${N} messages, batches of ${B}, ${HISTORY} done before, ${SIZE} bytes, page ${pageSize}` +
      `${a.handoff ? ', handed off' : ''}${a['random-keys'] ? ', random keys' : ''}):`,
  );
  for (const [phase, v] of phases) console.log(`  ${phase.padEnd(8)} ${(v / N).toFixed(1)}`);
  console.log(`  ${'total'.padEnd(8)} ${(total / N).toFixed(1)}`);
  console.log(
    `store CPU per message: ${((cpu.user + cpu.system) / 1000 / N).toFixed(3)} ms ` +
      `(user ${(cpu.user / 1000 / N).toFixed(3)}, system ${(cpu.system / 1000 / N).toFixed(3)})`,
  );
} finally {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
}
