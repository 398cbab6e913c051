// Group commit on the PostgreSQL store (not a test): N concurrent callers enqueue messages back
// to back, with the store's group commit (the writes of one event-loop turn in one transaction)
// and without it (one transaction per write, on up to poolSize connections), alternating, on a
// throwaway PostgreSQL server (test/helpers/postgres.ts: Debian's server, loopback, fsync on).
//
//   node --import tsx bench/group-commit.ts [--callers 20] [--rounds 100] [--reps 3] [--size 2048]
import { parseArgs } from 'node:util';
import { PostgresStore } from '../src/store/postgres/index.ts';
import type { NewMessage } from '../src/store/types.ts';
import { startPostgres } from '../test/helpers/postgres.ts';
import { intArg } from './lib/args.ts';

const { values: a } = parseArgs({
  options: {
    callers: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '100' },
    reps: { type: 'string', default: '3' },
    size: { type: 'string', default: '2048' },
  },
  strict: true,
});
const CALLERS = intArg('callers', a.callers!, 1, 200);
const ROUNDS = intArg('rounds', a.rounds!, 1, 10_000);
const REPS = intArg('reps', a.reps!, 1, 20);
const SIZE = intArg('size', a.size!, 1, 10_000_000);

const body = Buffer.alloc(SIZE, 0x61);
const message = (id: string): NewMessage => ({
  id,
  org: 'contoso',
  receivedAt: Date.now(),
  mailFrom: 'bench@fabrikam.test',
  envelope: { smtputf8: false },
  inbound: { sessionId: 's', clientIp: '127.0.0.1', clientPort: 1, helo: 'h', protocol: 'ESMTPS', receivedBy: 'mx' },
  data: body,
  recipients: [{ address: 'user@contoso.test', org: 'contoso', route: 'local' }],
});

async function run(
  url: string,
  grouped: boolean,
  rep: number,
): Promise<{ perSec: number; p50: number; p99: number; transactions: number }> {
  const s = await PostgresStore.open(url, { poolSize: 10 });
  // Without group commit: every write is its own transaction (what the store does for a batch of one).
  const inner = s as unknown as { write: unknown; runTx: (ops: unknown[]) => Promise<unknown[]> };
  if (!grouped) inner.write = (op: unknown) => inner.runTx([op]).then((r) => r[0]);
  const prefix = `B${rep}${grouped ? 'g' : 'u'}-`;
  let n = 0;
  const lat: number[] = [];
  const t0 = performance.now();
  for (let r = 0; r < ROUNDS; r++) {
    await Promise.all(
      Array.from({ length: CALLERS }, async () => {
        const t = performance.now();
        await s.enqueue(message(`${prefix}${n++}`));
        lat.push(performance.now() - t);
      }),
    );
  }
  const elapsed = performance.now() - t0;
  const transactions = await s.transaction(
    async (c) =>
      (
        await c.query<{ n: number }>(
          `SELECT count(DISTINCT xmin::text)::int AS n FROM messages WHERE id LIKE '${prefix}%'`,
        )
      ).rows[0].n,
  );
  await s.close();
  lat.sort((x, y) => x - y);
  return {
    perSec: Math.round(n / (elapsed / 1000)),
    p50: Math.round(lat[lat.length >> 1] * 10) / 10,
    p99: Math.round(lat[Math.floor(lat.length * 0.99)] * 10) / 10,
    transactions,
  };
}

const pg = await startPostgres();
try {
  const url = await pg.createDatabase('bench');
  console.log(`| rep | group commit | enqueues/s | p50 ms | p99 ms | transactions for ${CALLERS * ROUNDS} enqueues |`);
  console.log('|---|---|---|---|---|---|');
  for (let rep = 1; rep <= REPS; rep++) {
    for (const grouped of [true, false]) {
      const r = await run(url, grouped, rep);
      console.log(`| ${rep} | ${grouped ? 'on' : 'off'} | ${r.perSec} | ${r.p50} | ${r.p99} | ${r.transactions} |`);
    }
  }
} finally {
  await pg.destroy();
}
