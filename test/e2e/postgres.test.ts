// The real gateway on a PostgreSQL store (a throwaway server, test/helpers/postgres.ts): mail is
// accepted and delivered (Maildir and relay to a loopback peer), the CLI reads the queue and the
// trace from PostgreSQL, a database that is down means 451 4.3.0 (never 250) and mail flows again
// when it is back, fsync = off refuses the start, `store copy` moves a single-node SQLite queue
// (twice: nothing copied twice) and the gateway on PostgreSQL delivers what was queued. The
// password of the store URL never appears in logs or command output.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { asRoot, cleanup, freePort, runCli, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';
import { postgresMissing, startPostgres, type PgInstance } from '../helpers/postgres.ts';
import { SmtpClient } from '../helpers/smtp.ts';

const skip = postgresMissing;
const PEER = '127.0.0.63';
/** `runAs: root` in the YAML files of the CLI tests when the tests run as root. */
const RUN_AS = asRoot().runAs ? 'runAs: root\n' : '';
let pg: PgInstance;
let peer: Peer;
let gw: GatewayHandle | undefined;
const others: GatewayHandle[] = [];

const orgs = (relayPort: number) => [
  {
    name: 'contoso',
    acceptedDomains: [{ domain: 'contoso.test' }, { domain: 'corp.contoso.test', type: 'internalRelay' }],
    outboundConnectors: [
      {
        name: 'To on-premises',
        connectorType: 'onPremises',
        recipientDomains: ['corp.contoso.test'],
        useMXRecord: false,
        smartHosts: [`${PEER}:${relayPort}`],
      },
    ],
  },
];
const config = (url: string, relayPort: number) => ({
  store: { type: 'postgres', url, poolSize: 4 },
  delivery: { maildirShared: true, destinationDownSeconds: 0, timeouts: { connect: 5, greeting: 10, command: 10 } },
  queue: { retrySchedule: [3600] },
  organizations: orgs(relayPort),
});

before(async () => {
  if (skip) return;
  pg = await startPostgres();
  peer = await startPeer({ host: PEER, port: await freePort(PEER), name: 'onprem.corp.contoso.test' });
  gw = await startGateway({ config: config(await pg.createDatabase('e2e'), peer.port) });
});

after(async () => {
  await cleanup(gw);
  for (const g of others) await cleanup(g);
  await peer?.close();
  await pg?.destroy();
});

async function send(
  g: GatewayHandle,
  rcpts: string[],
  subject: string,
): Promise<{ code: number; text: string; id?: string }> {
  const c = await SmtpClient.connect(g.port);
  try {
    await c.hello();
    const r = await c.send(
      'sender@fabrikam.test',
      rcpts,
      `Subject: ${subject}\r\nMessage-ID: <${subject}@fabrikam.test>\r\n\r\nhello\r\n`,
    );
    return { ...r, id: /queued as (\w+)/.exec(r.text)?.[1] };
  } finally {
    c.close();
  }
}

const delivered = (g: GatewayHandle, id: string, rcpt: string) =>
  g.waitForLog(
    (e) => e.event === 'delivery.result' && e.queueId === id && e.rcpt === rcpt && e.status === 'delivered',
    20_000,
  );

const mailbox = (g: GatewayHandle, user: string): string[] => {
  const dir = path.join(g.dataDir, 'mailboxes/contoso.test', user, 'new');
  try {
    return readdirSync(dir).map((f) => readFileSync(path.join(dir, f), 'utf8'));
  } catch {
    return [];
  }
};

test(
  'on PostgreSQL: mail is accepted, delivered to Maildir and relayed; queue list and trace read from PostgreSQL',
  { skip },
  async () => {
    const r = await send(gw!, ['alice@contoso.test', 'bob@corp.contoso.test'], 'pg-first');
    assert.equal(r.code, 250, r.text);
    const id = r.id!;
    await delivered(gw!, id, 'alice@contoso.test');
    await delivered(gw!, id, 'bob@corp.contoso.test');
    assert.match(mailbox(gw!, 'alice').join('\n'), /Subject: pg-first/);
    assert.ok(
      peer.messages.some((m) => m.to.includes('bob@corp.contoso.test') && m.data.includes('Subject: pg-first')),
    );

    const db = new URL(gwUrl()).pathname.slice(1);
    const rows = await pg.query<{ state: string }>(`SELECT state FROM messages WHERE id = '${id}'`, db);
    assert.deepEqual(rows, [{ state: 'done' }], 'the message is in PostgreSQL');

    const list = await gw!.cli(['queue', 'list', '--all', '--json']);
    assert.equal(list.code, 0, list.stderr);
    assert.ok((JSON.parse(list.stdout) as { id: string }[]).some((m) => m.id === id));
    const trace = await gw!.cli(['trace', '--queue-id', id]);
    assert.equal(trace.code, 0, trace.stderr);
    assert.match(trace.stdout, /alice@contoso\.test: DELIVERED via maildir/);
    assert.match(trace.stdout, /bob@corp\.contoso\.test: DELIVERED via smtp/);
    const status = await gw!.cli(['store', 'migrate', '--status']);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /store +postgres postgresql:\/\/postgres:\*\*\*@127\.0\.0\.61:\d+\/e2e_\d+_\d+/);
    assert.match(status.stdout, /migration 1 +applied \d{4}-\d\d-\d\dT/);
    assert.match(status.stdout, /schema up to date/);
    const check = await gw!.cli(['config', 'check']);
    assert.equal(check.code, 0, check.stderr);
    assert.match(
      check.stdout,
      /store postgres postgresql:\/\/postgres:\*\*\*@127\.0\.0\.61:\d+\/e2e_\d+_\d+ \(url from store\.url\)/,
    );
    for (const out of [list, trace, status, check])
      assert.ok(!(out.stdout + out.stderr).includes(pg.password), 'no password in command output');
    assert.ok(!gw!.logs.join('\n').includes(pg.password), 'no password in the log');
    assert.ok(
      gw!
        .events()
        .some((e) => e.event === 'store.opened' && e.store === 'postgres' && /\*\*\*/.test(String(e.location))),
    );
  },
);

/** The store URL the main gateway was started with (from its configuration file). */
function gwUrl(): string {
  const m = /url: (postgresql:\/\/\S+)/.exec(readFileSync(gw!.configFile, 'utf8'));
  return m![1];
}

test(
  'on PostgreSQL: while the database is down DATA gets 451 4.3.0, never 250, and the gateway keeps running; mail flows again after',
  { skip },
  async () => {
    await pg.stop('immediate');
    let down: Awaited<ReturnType<typeof send>>;
    try {
      down = await send(gw!, ['alice@contoso.test'], 'pg-down');
      const again = await send(gw!, ['carol@contoso.test'], 'pg-down-2');
      assert.equal(again.code, 451, again.text);
    } finally {
      await pg.start();
    }
    assert.equal(down.code, 451, down.text);
    assert.match(down.text, /^451 4\.3\.0 /);
    assert.equal(gw!.proc.exitCode, null, 'the gateway is still running');
    assert.equal(gw!.proc.signalCode, null);
    const e = gw!.events().find((x) => x.event === 'internal.error' && x.where === 'ingest.enqueue');
    assert.match(String(e?.error), /PostgreSQL store postgresql:\/\/postgres:\*\*\*@/);

    const up = await send(gw!, ['alice@contoso.test'], 'pg-back');
    assert.equal(up.code, 250, up.text);
    await delivered(gw!, up.id!, 'alice@contoso.test');
    assert.ok(!mailbox(gw!, 'alice').join('\n').includes('pg-down'), 'nothing refused was delivered');
    assert.ok(!gw!.logs.join('\n').includes(pg.password));
  },
);

test('a server with fsync = off is refused at start, with the setting and the fix', { skip }, async () => {
  const url = await pg.createDatabase('nofsync');
  await pg.setSystem('fsync', 'off');
  let err: Error | undefined;
  try {
    others.push(await startGateway({ config: config(url, peer.port) }));
  } catch (e) {
    err = e as Error;
  } finally {
    await pg.setSystem('fsync', 'on');
  }
  assert.ok(err, 'the gateway must not start');
  assert.match(err.message, /gateway exited with 1/);
  assert.match(
    err.message,
    /the PostgreSQL server of the store postgresql:\/\/postgres:\*\*\*@127\.0\.0\.61:\d+\/nofsync_\d+_\d+ runs with fsync = off/,
  );
  assert.match(err.message, /fix: set fsync = on in its postgresql\.conf/);
  assert.ok(!err.message.includes(pg.password));
});

test(
  'authoritative domains on PostgreSQL need delivery.maildirShared; PORTCULLIS_STORE_URL wins over store.url',
  { skip },
  async () => {
    const dir = tempDir();
    try {
      const file = path.join(dir, 'portcullis.yaml');
      writeFileSync(
        file,
        `dataDir: ./data\n${RUN_AS}store: {type: postgres, url: "postgresql://app:hunter2@127.0.0.61:1/mail"}\norganizations: [{name: contoso, acceptedDomains: [{domain: contoso.test}]}]\n`,
      );
      const r = await runCli(['config', 'check', '-c', file]);
      assert.equal(r.code, 2, 'a configuration error');
      assert.match(
        r.stderr,
        /delivery\.maildirShared: authoritative domains \(contoso\.test\) are delivered to Maildir mailboxes in dataDir/,
      );
      assert.match(r.stderr, /set delivery\.maildirShared: true/);
      assert.ok(!r.stderr.includes('hunter2'));
      writeFileSync(
        file,
        `dataDir: ./data\n${RUN_AS}store: {type: postgres, url: "postgresql://app:hunter2@127.0.0.61:1/mail"}\ndelivery: {maildirShared: true}\norganizations: [{name: contoso, acceptedDomains: [{domain: contoso.test}]}]\n`,
      );
      const ok = await runCli(['config', 'check', '-c', file]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /store postgres postgresql:\/\/app:\*\*\*@127\.0\.0\.61:1\/mail \(url from store\.url\)/);
      const env = await runCli(['config', 'check', '-c', file], {
        PORTCULLIS_STORE_URL: 'postgresql://envuser:s3cret@127.0.0.61:2/other',
      });
      assert.equal(env.code, 0, env.stderr);
      assert.match(
        env.stdout,
        /store postgres postgresql:\/\/envuser:\*\*\*@127\.0\.0\.61:2\/other \(url from PORTCULLIS_STORE_URL\)/,
      );
      assert.ok(!(ok.stdout + env.stdout + env.stderr).includes('hunter2') && !env.stdout.includes('s3cret'));
      const down = await runCli(['queue', 'list', '-c', file]);
      assert.equal(down.code, 1);
      assert.match(
        down.stderr,
        /cannot connect to the PostgreSQL store postgresql:\/\/app:\*\*\*@127\.0\.0\.61:1\/mail: connect ECONNREFUSED/,
      );
      assert.ok(!down.stderr.includes('hunter2'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

test(
  'store copy moves a stopped SQLite queue (queued and finished mail) into PostgreSQL, twice without duplicates; the gateway on PostgreSQL delivers what was queued',
  { skip },
  async () => {
    // A single-node gateway on SQLite: one message delivered locally, one waiting for a relay that is down.
    const deadPort = await freePort(PEER);
    const single = await startGateway({
      config: {
        queue: { retrySchedule: [3600] },
        delivery: { destinationDownSeconds: 0, timeouts: { connect: 2 } },
        organizations: orgs(deadPort),
      },
    });
    others.push(single);
    const done = await send(single, ['alice@contoso.test'], 'copy-done');
    const waiting = await send(single, ['dave@corp.contoso.test'], 'copy-waiting');
    await delivered(single, done.id!, 'alice@contoso.test');
    await single.waitForLog(
      (e) => e.event === 'delivery.result' && e.queueId === waiting.id && e.status === 'deferred',
      20_000,
    );
    const url = await pg.createDatabase('copy');
    const target = `postgres:${url}`;

    const busy = await runCli(['store', 'copy', '--from', `sqlite:${single.dataDir}`, '--to', target]);
    assert.equal(busy.code, 1, 'refused while the server runs');
    assert.match(busy.stderr, /another Portcullis server is already running on .* \(its control socket .* answers\)/);
    assert.ok(!busy.stderr.includes(pg.password));
    await single.stop();

    const first = await runCli(['store', 'copy', '--from', `sqlite:${single.dataDir}`, '--to', target]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(
      first.stdout,
      /copied 2 message\(s\) \(1 still queued, with their data\), 2 recipient\(s\) and [2-9] trace event\(s\)/,
    );
    assert.ok(!first.stdout.includes(pg.password));
    assert.match(first.stdout, /to postgresql:\/\/postgres:\*\*\*@/);
    const second = await runCli([
      'store',
      'copy',
      '--from',
      `sqlite:${single.dataDir}/queue.sqlite`,
      '--to',
      target,
      '--json',
    ]);
    assert.equal(second.code, 0, second.stderr);
    const counts = JSON.parse(second.stdout) as Record<string, unknown>;
    assert.equal(counts.messages, 0, 'nothing copied twice');
    assert.equal(counts.present, 2);
    const db = new URL(url).pathname.slice(1);
    assert.deepEqual(
      await pg.query(
        `SELECT (SELECT count(*) FROM messages)::int AS m, (SELECT count(*) FROM recipients)::int AS r, (SELECT count(*) FROM bodies)::int AS b`,
        db,
      ),
      [{ m: 2, r: 2, b: 1 }],
    );

    // The same organisation on PostgreSQL, with the relay up now.
    const onPg = await startGateway({ config: config(url, peer.port) });
    others.push(onPg);
    const retry = await onPg.cli(['queue', 'retry', waiting.id!]);
    assert.equal(retry.code, 0, retry.stderr);
    await delivered(onPg, waiting.id!, 'dave@corp.contoso.test');
    assert.ok(
      peer.messages.some((m) => m.to.includes('dave@corp.contoso.test') && m.data.includes('Subject: copy-waiting')),
    );
    const trace = await onPg.cli(['trace', '--queue-id', waiting.id!]);
    assert.equal(trace.code, 0, trace.stderr);
    assert.match(
      trace.stdout,
      /dave@corp\.contoso\.test: DEFERRED via smtp[\s\S]*dave@corp\.contoso\.test: DELIVERED via smtp/,
      'the history from SQLite, then the delivery from PostgreSQL',
    );
    const old = await onPg.cli(['trace', '--message-id', 'copy-done@fabrikam.test']);
    assert.match(old.stdout, /alice@contoso\.test: DELIVERED via maildir/, 'finished mail keeps its trace');
  },
);

test(
  'store migrate: --status changes nothing; without it the pending migrations are applied once',
  { skip },
  async () => {
    const dir = tempDir();
    try {
      const url = await pg.createDatabase('migrate');
      const file = path.join(dir, 'portcullis.yaml');
      writeFileSync(
        file,
        `dataDir: ./data\n${RUN_AS}store: {type: postgres, url: "${url}"}\ndelivery: {maildirShared: true}\norganizations: [{name: contoso, acceptedDomains: [{domain: contoso.test}]}]\n`,
      );
      const before = await runCli(['store', 'migrate', '--status', '--json', '-c', file]);
      assert.equal(before.code, 0, before.stderr);
      const st = JSON.parse(before.stdout) as { store: string; location: string; migrations: { applied: boolean }[] };
      assert.equal(st.store, 'postgres');
      assert.ok(st.migrations.length > 0 && st.migrations.every((m) => !m.applied));
      assert.ok(!st.location.includes(pg.password));
      assert.deepEqual(
        await pg.query(`SELECT to_regclass('messages')::text AS t`, new URL(url).pathname.slice(1)),
        [{ t: null }],
        '--status created nothing',
      );
      const apply = await runCli(['store', 'migrate', '-c', file]);
      assert.equal(apply.code, 0, apply.stderr);
      assert.match(apply.stdout, /^applied migration\(s\) 1/);
      assert.match(apply.stdout, /schema up to date/);
      const again = await runCli(['store', 'migrate', '-c', file]);
      assert.match(again.stdout, /^nothing to apply/);
      for (const out of [before, apply, again]) assert.ok(!(out.stdout + out.stderr).includes(pg.password));
      // SQLite: the status of a dataDir no server has used yet is "all pending", and creates nothing.
      writeFileSync(
        file,
        `dataDir: ./data\n${RUN_AS}organizations: [{name: contoso, acceptedDomains: [{domain: contoso.test}]}]\n`,
      );
      const lite = await runCli(['store', 'migrate', '--status', '-c', file]);
      assert.equal(lite.code, 0, lite.stderr);
      assert.match(lite.stdout, /store +sqlite .*queue\.sqlite\nmigration 1 +PENDING/);
      assert.throws(() => readdirSync(path.join(dir, 'data')), /ENOENT/, 'no dataDir created');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
