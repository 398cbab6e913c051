// The PostgreSQL backend on a throwaway server (test/helpers/postgres.ts): the shared conformance
// suites (admin-conformance.ts too), plus what only PostgreSQL has: group commit seen in the rows' transaction ids,
// durability across a server crash, start-up checks (fsync, synchronous_commit), migrations
// under the advisory lock, and a database that goes away and comes back.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { AdminError } from '../../../src/errors.ts';
import { setLogDestination, setLogOutput } from '../../../src/events.ts';
import { PostgresStore } from '../../../src/store/postgres/index.ts';
import { migrations } from '../../../src/store/postgres/schema.ts';
import { postgresMissing, startPostgres, type PgInstance } from '../../helpers/postgres.ts';
import { msg, storeConformance } from './conformance.ts';
import { adminStoreConformance } from './admin-conformance.ts';
import { clusterStoreConformance } from './cluster-conformance.ts';

let pg: PgInstance | undefined;
before(async () => {
  if (!postgresMissing) pg = await startPostgres();
});
after(async () => {
  await pg?.destroy();
});

const harness = {
  skip: postgresMissing,
  async fresh() {
    const url = await pg!.createDatabase();
    return { store: await PostgresStore.open(url), reopen: () => PostgresStore.open(url) };
  },
};
storeConformance('postgres', harness);
adminStoreConformance('postgres', harness);
clusterStoreConformance('postgres', harness);

const skip = postgresMissing;

/** Log lines emitted while `f` runs (events.ts writes to this destination meanwhile). */
async function captureLog<T>(
  f: () => Promise<T>,
): Promise<{ result?: T; error?: unknown; lines: Record<string, unknown>[] }> {
  const lines: Record<string, unknown>[] = [];
  setLogDestination({
    write: (l: string) => {
      lines.push(JSON.parse(l) as Record<string, unknown>);
    },
  });
  try {
    return { result: await f(), lines };
  } catch (error) {
    return { error, lines };
  } finally {
    setLogOutput({ fd: 1 });
    setLogOutput({ fd: 2 });
  }
}

test('postgres: concurrent enqueues share one transaction (group commit)', { skip }, async () => {
  const s = await PostgresStore.open(await pg!.createDatabase());
  try {
    await Promise.all(Array.from({ length: 40 }, (_, i) => s.enqueue(msg(`G${i}`))));
    // Rows written by one transaction carry its transaction id (xmin).
    const rows = await s.search({ limit: 100 });
    assert.equal(rows.length, 40);
    const xids = await pgQuery(s, 'SELECT count(DISTINCT xmin::text)::int AS n FROM messages');
    assert.ok(xids <= 2, `40 concurrent enqueues took ${xids} transactions`);
  } finally {
    await s.close();
  }
});

/** One number from SQL run on the store's own database. */
async function pgQuery(s: PostgresStore, sql: string): Promise<number> {
  return s.transaction(async (c) => (await c.query<{ n: number }>(sql)).rows[0].n);
}

test('postgres: a resolved enqueue survives a crash of the database server', { skip }, async () => {
  const url = await pg!.createDatabase();
  const s = await PostgresStore.open(url);
  await Promise.all(Array.from({ length: 20 }, (_, i) => s.enqueue(msg(`K${i}`))));
  await pg!.stop('immediate');
  await pg!.start();
  await s.close();
  const s2 = await PostgresStore.open(url, { readonly: true });
  try {
    assert.equal((await s2.list()).length, 20);
    assert.equal((await s2.data('K19'))?.toString(), 'Subject: K19\r\n\r\nbody\r\n');
  } finally {
    await s2.close();
  }
});

test(
  'postgres: while the server is down writes fail with a clear error; the pool reconnects when it returns',
  { skip },
  async () => {
    const s = await PostgresStore.open(await pg!.createDatabase());
    try {
      await s.enqueue(msg('UP1'));
      const { lines } = await captureLog(async () => {
        await pg!.stop('immediate');
        try {
          const e = await s.enqueue(msg('DOWN')).then(
            () => null,
            (x: unknown) => x as Error & { code: string },
          );
          assert.ok(e, 'a write while the database is down must fail');
          assert.match(e.message, /^PostgreSQL store postgresql:\/\/postgres:\*\*\*@127\.0\.0\.61:\d+\/t_\d+_\d+: /);
          assert.ok(!e.message.includes(pg!.password), 'no password in the error');
          assert.ok(e.code, 'the error carries a code for ingest to classify');
          await assert.rejects(s.get('UP1'), /PostgreSQL store/);
        } finally {
          await pg!.start();
        }
      });
      assert.ok(lines.every((l) => !JSON.stringify(l).includes(pg!.password)));
      await s.enqueue(msg('UP2'));
      assert.deepEqual(
        (await s.list()).map((m) => m.id).sort(),
        ['UP1', 'UP2'],
        'nothing of the failed write was stored',
      );
    } finally {
      await s.close();
    }
  },
);

test('postgres: an idle pooled connection that breaks is logged, not fatal', { skip }, async () => {
  const s = await PostgresStore.open(await pg!.createDatabase());
  try {
    await s.get('X'); // one idle connection in the pool now
    const { lines } = await captureLog(async () => {
      await pg!.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'portcullis'`);
      await new Promise((r) => setTimeout(r, 300));
    });
    assert.ok(
      lines.some((l) => l.event === 'store.connectionError'),
      JSON.stringify(lines),
    );
    assert.equal(await s.get('X'), null, 'a new connection serves the next read');
  } finally {
    await s.close();
  }
});

test('postgres: refuses to start on a server with fsync = off, naming the setting and the fix', { skip }, async () => {
  const url = await pg!.createDatabase();
  await pg!.setSystem('fsync', 'off');
  try {
    const e = await PostgresStore.open(url).then(
      () => null,
      (x: unknown) => x,
    );
    assert.ok(e instanceof AdminError, String(e));
    assert.match(e.message, /runs with fsync = off: a crash of that server can lose or corrupt accepted mail/);
    assert.match(e.message, /fix: set fsync = on in its postgresql\.conf/);
    assert.ok(!e.message.includes(pg!.password));
  } finally {
    await pg!.setSystem('fsync', 'on');
  }
  await (await PostgresStore.open(url)).close();
});

test('postgres: synchronous_commit = off is reported, and our commits are synchronous anyway', { skip }, async () => {
  const url = await pg!.createDatabase();
  const name = new URL(url).pathname.slice(1);
  await pg!.query(`ALTER DATABASE ${name} SET synchronous_commit = off`);
  const { result: s, lines } = await captureLog(() => PostgresStore.open(url));
  assert.ok(s);
  try {
    const w = lines.find((l) => l.event === 'store.warning');
    assert.equal(w?.setting, 'synchronous_commit');
    assert.match(String(w?.message), /turns it on for its own write transactions/);
    // Every write transaction of the store runs as this one does.
    assert.equal(
      await s.transaction(
        async (c) => (await c.query<{ s: string }>("SELECT current_setting('synchronous_commit') AS s")).rows[0].s,
      ),
      'on',
    );
    const outside = (await pg!.query<{ s: string }>("SELECT current_setting('synchronous_commit') AS s", name))[0].s;
    assert.equal(outside, 'off', 'the database default stays as the administrator set it');
  } finally {
    await s.close();
  }
});

test('postgres: nodes starting together apply each migration once (advisory lock)', { skip }, async () => {
  const url = await pg!.createDatabase();
  const stores = await Promise.all(Array.from({ length: 4 }, () => PostgresStore.open(url)));
  try {
    const st = await stores[0].migrationStatus();
    assert.deepEqual(
      st.migrations.map((m) => m.applied),
      migrations.map(() => true),
    );
    assert.equal(await pgQuery(stores[0], 'SELECT count(*)::int AS n FROM schema_migrations'), migrations.length);
  } finally {
    await Promise.all(stores.map((s) => s.close()));
  }
});

test('postgres: reading commands neither create nor change the schema, and cannot write', { skip }, async () => {
  const url = await pg!.createDatabase();
  const status = await PostgresStore.inspect(url);
  assert.ok(status.migrations.every((m) => !m.applied));
  assert.ok(!status.location.includes(pg!.password));
  await assert.rejects(
    PostgresStore.open(url, { readonly: true }),
    /no queue in the PostgreSQL store postgresql:\/\/postgres:\*\*\*@.*no server has run with it yet/,
  );
  await assert.rejects(PostgresStore.open(url, { existing: true }), /no queue in the PostgreSQL store/);
  assert.equal(
    (await pg!.query(`SELECT to_regclass('messages')::text AS t`, new URL(url).pathname.slice(1)))[0].t,
    null,
  );
  await (await PostgresStore.open(url)).close();
  const ro = await PostgresStore.open(url, { readonly: true });
  try {
    await assert.rejects(ro.enqueue(msg('RO')), /read-only transaction/);
  } finally {
    await ro.close();
  }
});

test(
  'postgres: a wrong password or an unreachable server is an admin error without the password',
  { skip },
  async () => {
    const bad = pg!.url().replace(encodeURIComponent(pg!.password), 'not-the-password');
    const e1 = await PostgresStore.open(bad).then(
      () => null,
      (x: unknown) => x as Error,
    );
    assert.ok(e1 instanceof AdminError);
    assert.match(
      e1.message,
      /cannot connect to the PostgreSQL store postgresql:\/\/postgres:\*\*\*@.*password authentication failed/,
    );
    assert.ok(!e1.message.includes('not-the-password'));
    const e2 = await PostgresStore.open(`postgresql://u:sekrit@127.0.0.61:1/db`).then(
      () => null,
      (x: unknown) => x as Error,
    );
    assert.ok(e2 instanceof AdminError);
    assert.match(
      e2.message,
      /cannot connect to the PostgreSQL store postgresql:\/\/u:\*\*\*@127\.0\.0\.61:1\/db: connect ECONNREFUSED/,
    );
    assert.ok(!e2.message.includes('sekrit'));
  },
);

test(
  'postgres: with several transactions in flight (writers), every write lands once and a bad one fails alone',
  { skip },
  async () => {
    const s = await PostgresStore.open(await pg!.createDatabase(), { writers: 3 });
    try {
      await s.enqueue(msg('DUP'));
      const all: Promise<unknown>[] = [];
      for (let turn = 0; turn < 10; turn++) {
        for (let i = 0; i < 5; i++) all.push(s.enqueue(msg(`W${turn}-${i}`)));
        if (turn === 5)
          all.push(
            s.enqueue(msg('DUP')).then(
              () => 'stored twice',
              () => 'refused',
            ),
          );
        await new Promise((r) => setImmediate(r)); // the next turn: another batch, maybe on another connection
      }
      const results = await Promise.all(all);
      assert.equal(results.filter((r) => r === 'refused').length, 1);
      assert.equal((await s.list()).length, 51);
      assert.ok((await pgQuery(s, 'SELECT count(DISTINCT xmin::text)::int AS n FROM messages')) > 1);
    } finally {
      await s.close();
    }
  },
);

test(
  'postgres: once the schema is in place, a role that may only read and write the tables can run a node',
  { skip },
  async () => {
    const url = await pg!.createDatabase();
    const db = new URL(url).pathname.slice(1);
    await (await PostgresStore.open(url)).close(); // the owner creates the schema
    await pg!.query(
      `DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'mailnode') THEN CREATE ROLE mailnode LOGIN PASSWORD 'node-pw'; END IF; END $$`,
    );
    await pg!.query(`GRANT CONNECT ON DATABASE ${db} TO mailnode`);
    await pg!.query(
      'GRANT USAGE ON SCHEMA public TO mailnode; REVOKE CREATE ON SCHEMA public FROM mailnode, PUBLIC; GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO mailnode',
      db,
    );
    const s = await PostgresStore.open(`postgresql://mailnode:node-pw@${pg!.host}:${pg!.port}/${db}`);
    try {
      await s.enqueue(msg('N1'));
      await s.claim('A', 1, 60_000);
      assert.equal(await s.complete('N1', 'A', [], Date.now()), 'deferred');
      assert.equal((await s.trace('N1')).length, 0);
      assert.deepEqual(await s.deleteQueued('N1', 'root'), { deleted: true, recipients: 2 });
      assert.equal((await s.trace('N1')).length, 1, 'trace events: the identity column needs no extra grant');
    } finally {
      await s.close();
    }
  },
);

/** A TCP relay to the test server that can stop answering (a network partition: no reset, no reply). */
async function relay(
  to: PgInstance,
): Promise<{ url: (db: string) => string; partition: () => void; close: () => Promise<void> }> {
  const open = new Set<net.Socket>();
  let cut = false;
  const srv = net.createServer((c) => {
    open.add(c);
    c.on('close', () => open.delete(c));
    c.on('error', () => {});
    if (cut) return; // accepted, never answered
    const up = net.connect(to.port, to.host);
    open.add(up);
    up.on('error', () => c.destroy());
    c.pipe(up).pipe(c);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.64', r));
  const port = (srv.address() as net.AddressInfo).port;
  return {
    url: (db) => `postgresql://${to.user}:${encodeURIComponent(to.password)}@127.0.0.64:${port}/${db}`,
    partition: () => {
      cut = true;
      for (const s of open) s.destroy();
    },
    close: () => {
      for (const s of open) s.destroy();
      return new Promise((r) => srv.close(() => r()));
    },
  };
}

test(
  'postgres: when the server cannot be reached, a batch of writes fails together within one connect timeout',
  { skip },
  async () => {
    const db = new URL(await pg!.createDatabase()).pathname.slice(1);
    const r = await relay(pg!);
    const s = await PostgresStore.open(r.url(db), { connectTimeoutMs: 1000 });
    try {
      await s.enqueue(msg('BEFORE'));
      r.partition();
      await new Promise((res) => setTimeout(res, 100)); // the pool notices its connections are gone
      const t0 = Date.now();
      const results = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => s.enqueue(msg(`P${i}`))));
      const took = Date.now() - t0;
      assert.deepEqual(
        results.map((x) => x.status),
        Array(6).fill('rejected'),
      );
      assert.match(
        String((results[0] as PromiseRejectedResult).reason),
        /PostgreSQL store postgresql:\/\/postgres:\*\*\*@127\.0\.0\.64:\d+\/.*timeout/i,
      );
      assert.ok(took < 3000, `all six failed after ${took} ms (one connect timeout is 1000 ms)`);
    } finally {
      await s.close();
      await r.close();
    }
  },
);
