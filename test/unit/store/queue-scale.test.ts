// The queue's paths cost what is due or asked for, not the queue's size (both stores): with
// 100,000 messages deferred far into the future (and done messages beside them), finding when
// the next message is due, claiming due work and reading a page of `queue list` after a cursor
// take about as long as with 1,000. Compared as medians of repeated calls on the same store
// (small queue first, then grown), so the check holds on a slow or busy machine: a path that
// reads every waiting message is tens of times slower with the big queue.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { PostgresStore } from '../../../src/store/postgres/index.ts';
import { queueFile, SqliteStore } from '../../../src/store/sqlite/index.ts';
import type { Store } from '../../../src/store/types.ts';
import { postgresMissing, startPostgres, type PgInstance } from '../../helpers/postgres.ts';

const SMALL = 1_000;
const BIG = 100_000;
const CALLS = 30;
/** Below this a median is noise, whatever the ratio. */
const FLOOR_MS = 0.25;
const MAX_RATIO = 4;

/** Insert messages [from, to): every tenth done, the rest deferred for a day; ids in reception order. */
type Seed = (from: number, to: number) => Promise<void>;

const id = (i: number) => `S${String(i).padStart(7, '0')}`;

async function median(f: () => Promise<unknown>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < CALLS; i++) {
    const t = process.hrtime.bigint();
    await f();
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  return times.sort((a, b) => a - b)[CALLS >> 1];
}

async function check(s: Store, seed: Seed): Promise<void> {
  const paths: Record<string, (n: number) => () => Promise<unknown>> = {
    nextDue: () => () => s.nextDue(),
    'claim (nothing due)': () => () => s.claim('bench', 10, 60_000),
    'list after a cursor': (n) => () => s.list({ limit: 20, after: id(n - 50) }),
  };
  await seed(0, SMALL);
  const small: Record<string, number> = {};
  for (const [k, f] of Object.entries(paths)) small[k] = await median(f(SMALL));
  await seed(SMALL, BIG);
  const page = await s.list({ limit: 20, after: id(BIG - 50) });
  assert.equal(page[0].id, id(BIG - 49), 'the page starts right after the cursor');
  assert.deepEqual(
    page.map((m) => m.id),
    Array.from({ length: 49 }, (_, i) => id(BIG - 49 + i))
      .filter((x) => !x.endsWith('5'))
      .slice(0, 20),
    'done messages left out',
  );
  for (const [k, f] of Object.entries(paths)) {
    const big = await median(f(BIG));
    assert.ok(
      big < FLOOR_MS || big < small[k] * MAX_RATIO,
      `${k}: ${big.toFixed(3)} ms with ${BIG} queued against ${small[k].toFixed(3)} ms with ${SMALL}`,
    );
  }
  assert.equal((await s.depth()).deferred, BIG - BIG / 10);
}

const ROW = `'o', ?, ?, 's@x.test', 10, 'x', '{"smtputf8":false}', '{}', ?, ?`;

test('sqlite: retry pass, claim and a queue page cost the same with 100,000 queued as with 1,000', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-scale-'));
  const s = new SqliteStore(dir);
  const db = new Database(queueFile(dir));
  const ins = db.prepare(
    `INSERT INTO messages (id, org, state, received_at, mail_from, size, sha256, envelope, inbound, ` +
      `next_attempt_at, updated_at) VALUES (?, ${ROW})`,
  );
  const t0 = Date.now() - BIG;
  const seed: Seed = async (from, to) => {
    db.transaction(() => {
      for (let i = from; i < to; i++)
        ins.run(id(i), i % 10 === 5 ? 'done' : 'deferred', t0 + i, t0 + 86_400_000 + i, t0 + i);
    })();
  };
  try {
    await check(s, seed);
  } finally {
    db.close();
    await s.close();
  }
});

let pgi: PgInstance | undefined;
before(async () => {
  if (!postgresMissing) pgi = await startPostgres();
});
after(async () => {
  await pgi?.destroy();
});

test(
  'postgres: retry pass, claim and a queue page cost the same with 100,000 queued as with 1,000',
  { skip: postgresMissing },
  async () => {
    const url = await pgi!.createDatabase();
    const s = await PostgresStore.open(url);
    const c = new pg.Client(url);
    await c.connect();
    const t0 = Date.now() - BIG;
    const seed: Seed = async (from, to) => {
      await c.query(
        `INSERT INTO messages (id, org, state, received_at, mail_from, size, sha256, envelope, inbound,
          next_attempt_at, updated_at)
        SELECT 'S' || lpad(i::text, 7, '0'), 'o', CASE WHEN i % 10 = 5 THEN 'done' ELSE 'deferred' END, $1::bigint + i,
          's@x.test', 10, 'x', '{"smtputf8":false}', '{}', $1::bigint + 86400000 + i, $1::bigint + i
        FROM generate_series($2::int, $3::int - 1) AS i`,
        [t0, from, to],
      );
      await c.query('ANALYZE messages');
    };
    try {
      await check(s, seed);
    } finally {
      await c.end();
      await s.close();
    }
  },
);
