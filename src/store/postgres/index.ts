// Owns: the PostgreSQL backend, shared by several nodes. Writes from concurrent callers
// are grouped (group commit): the writes of one event-loop turn go into one transaction on one
// pooled connection, and every caller's promise settles only after its COMMIT returned. Up to
// `writers` such transactions are in flight; what arrives while all are busy waits for the next. Message
// data (bytea) is written in the same statement as its envelope and recipients. Claims take due
// messages with FOR UPDATE SKIP LOCKED. Reads use the pool.
// Start-up (server, `store copy`, writing commands): refuses a server with fsync = off, warns
// about synchronous_commit = off (and sets it on for its own writes); the server applies
// migrations under an advisory lock. Reading commands open read-only sessions and never migrate.
// Failure: a failed transaction rejects every write in it; the writes of a failed batch are
// retried one by one so that one bad write fails alone. While the server is unreachable every
// write fails (PostgresError, the URL without its password) and the pool reconnects afterwards.
import { createHash } from 'node:crypto';
import type pg from 'pg';
import { AdminError } from '../../errors.ts';
import { emit } from '../../events.ts';
import { redactUrl } from '../../util/secret-url.ts';
import type { MigrationStatus } from '../migrations.ts';
import { committedMessage, DEPTH_SQL, toDepth, toMessage, toNode, type Row } from '../rows.ts';
import type {
  AdminToken,
  AuditEntry,
  AuditFilter,
  BounceResult,
  ClaimedMessage,
  ControlKind,
  ControlRequest,
  CompleteResult,
  DeleteResult,
  HeldLease,
  MessageState,
  NewAdminToken,
  NewEntry,
  NewMessage,
  NodeBeat,
  NodeDirectives,
  NodeStatus,
  QueueDepth,
  QueueFilter,
  QueueMessage,
  ReceivedTlsReport,
  RecipientOutcome,
  ReportCount,
  ReportQuery,
  ReportSum,
  SharedEntry,
  Store,
  StsPolicyEntry,
  TlsReportSent,
  TlsSessionCount,
  TraceEvent,
  TraceFilter,
} from '../types.ts';
import { NODE_FORGET_MS } from '../types.ts';
import * as admin from './admin.ts';
import * as cluster from './cluster.ts';
import {
  assertKnownSchema,
  checkDurability,
  checkout,
  connectOrExplain,
  createPool,
  migrate,
  migrationStatus,
  PostgresError,
} from './server.ts';

export interface PostgresOpenOptions {
  /** Reads only (read-only sessions); the schema must be up to date. */
  readonly?: boolean;
  /** Use an existing schema only: never migrate (CLI commands that write). */
  existing?: boolean;
  poolSize?: number;
  /** How long a new connection may take (default 10 s). */
  connectTimeoutMs?: number;
  /**
   * Transactions (group commits) in flight at once; default 1: on a small machine more did not
   * raise throughput (measured with 20 concurrent writers), and one maximises the batches.
   */
  writers?: number;
}

type Op = (c: pg.PoolClient) => Promise<unknown>;
/**
 * One write of a group commit. `single`: it sends exactly one statement, at once when called, and
 * nothing after its answer, so the next write's statements may follow it on the wire before that
 * answer arrives (pipelined). Any other write runs alone: the next one starts after it settled.
 */
interface TxOp {
  run: Op;
  single: boolean;
}
interface Pending extends TxOp {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

const OPEN = `status IN ('pending', 'deferred')`;

/** When the next message is due: one probe of each claim index (schema.ts, partial indexes for claims). */
const NEXT_DUE_SQL = `SELECT min(t) AS t FROM (
  SELECT min(next_attempt_at) AS t FROM messages WHERE state IN ('incoming', 'deferred')
  UNION ALL SELECT min(lease_until) FROM messages WHERE state = 'active') due`;

/** Errors of a statement that the server refused on a connection that stayed healthy. */
const statementFailed = new WeakSet<object>();

export class PostgresStore implements Store {
  private pending: Pending[] = [];
  private scheduled = false;
  private inFlight = 0;
  private idle: (() => void)[] = [];
  private closed = false;

  private constructor(
    private readonly pool: pg.Pool,
    readonly location: string,
    private readonly forceSyncCommit: boolean,
    private readonly writers: number,
  ) {}

  /** Connect, check the server and the schema (migrating it unless readonly/existing). */
  static async open(url: string, opts: PostgresOpenOptions = {}): Promise<PostgresStore> {
    const location = redactUrl(url);
    const readonly = !!opts.readonly;
    const pool = createPool(url, {
      poolSize: opts.poolSize ?? 10,
      readonly,
      ...(opts.connectTimeoutMs ? { connectTimeoutMs: opts.connectTimeoutMs } : {}),
    });
    try {
      const { client, release } = await connectOrExplain(pool, location);
      try {
        let force = false;
        if (!readonly) force = (await checkDurability(client, location)).forceSyncCommit;
        if (!readonly && !opts.existing) {
          const migrated = await migrate(client, location);
          emit({ event: 'store.opened', store: 'postgres', location, migrated });
        } else {
          assertCurrent(await migrationStatus(client, location));
        }
        return new PostgresStore(pool, location, force, Math.max(1, opts.writers ?? 1));
      } finally {
        release();
      }
    } catch (e) {
      await pool.end().catch(() => undefined);
      throw e;
    }
  }

  /** The migrations applied at `url`, through a read-only session; changes nothing. */
  static async inspect(url: string): Promise<MigrationStatus> {
    const location = redactUrl(url);
    const pool = createPool(url, { poolSize: 1, readonly: true });
    try {
      const { client, release } = await connectOrExplain(pool, location);
      try {
        return await migrationStatus(client, location);
      } finally {
        release();
      }
    } finally {
      await pool.end().catch(() => undefined);
    }
  }

  async migrationStatus(): Promise<MigrationStatus> {
    return this.withClient((c) => migrationStatus(c, this.location));
  }

  /** One transaction on one pooled connection (store copy). */
  async transaction<T>(run: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const [r] = await this.runTx([{ run, single: false }]);
    return r as T;
  }

  private async withClient<T>(f: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const { client, release } = await checkout(this.pool, this.location);
    let broken = false;
    try {
      return await f(client);
    } catch (e) {
      broken = true;
      throw wrap(this.location, e);
    } finally {
      release(broken);
    }
  }

  /** A read on the pool; with `name`, a statement prepared once per connection (hot paths). */
  private async read<R extends pg.QueryResultRow = Row>(
    text: string,
    values: unknown[] = [],
    name?: string,
  ): Promise<R[]> {
    try {
      return (await this.pool.query<R>(name ? { name, text, values } : { text, values })).rows;
    } catch (e) {
      throw wrap(this.location, e);
    }
  }

  private readonly reader: admin.Read = (text, values) => this.read(text, values);

  /** Queue a write for the next group commit (`single`: see TxOp). */
  private write<T>(run: (c: pg.PoolClient) => Promise<T>, single = false): Promise<T> {
    if (this.closed) return Promise.reject(new Error(`the PostgreSQL store ${this.location} is closed`));
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ run, single, resolve: resolve as (v: unknown) => void, reject });
      this.schedule();
    });
  }

  /** At the end of this event-loop turn, what is pending becomes one transaction (when a writer is free). */
  private schedule(): void {
    if (this.scheduled || !this.pending.length || this.inFlight >= this.writers) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  /**
   * Commit what is pending as one transaction. Writes arriving meanwhile form the next batch, on
   * another connection when a writer is free (up to `writers` transactions in flight), else when
   * this one has committed.
   */
  private async flush(): Promise<void> {
    if (!this.pending.length || this.inFlight >= this.writers) return;
    this.inFlight++;
    const batch = this.pending;
    this.pending = [];
    try {
      const results = await this.runTx(batch);
      batch.forEach((p, i) => p.resolve(results[i]));
    } catch (e) {
      // A statement refused on a healthy connection: retry each write on its own so that the bad
      // one fails alone. A lost or unreachable server fails them all at once (no retries that
      // would each wait for a connection).
      if (batch.length === 1 || !statementFailed.has(e as object)) for (const p of batch) p.reject(e);
      else
        for (const p of batch) {
          try {
            p.resolve((await this.runTx([p]))[0]);
          } catch (err) {
            p.reject(err);
          }
        }
    }
    this.inFlight--;
    this.schedule();
    if (!this.inFlight && !this.scheduled) for (const f of this.idle.splice(0)) f();
  }

  /**
   * BEGIN, the operations in order, COMMIT; resolves only after COMMIT returned. The connection
   * pipelines (store/postgres/server.ts): BEGIN and a run of single-statement writes go out
   * together and cost one round trip, not one each; a write of several statements is awaited
   * before the next starts, so statements still reach the server in the writes' order.
   */
  private async runTx(ops: readonly TxOp[]): Promise<unknown[]> {
    const { client, release } = await checkout(this.pool, this.location);
    const head = [client.query('BEGIN')];
    if (this.forceSyncCommit) head.push(client.query('SET LOCAL synchronous_commit = on'));
    const started: Promise<unknown>[] = [];
    for (const op of ops) {
      let p: Promise<unknown>;
      try {
        p = op.run(client);
      } catch (e) {
        p = Promise.reject(e); // a write that throws before its first statement fails like one refused
      }
      p.catch(() => undefined); // settled below
      started.push(p);
      if (op.single) continue;
      const ok = await p.then(
        () => true,
        () => false,
      );
      if (!ok) break; // the transaction is lost: start nothing more
    }
    const settled = await Promise.allSettled([...head, ...started]);
    const headFailed = settled.slice(0, head.length).some((s) => s.status === 'rejected');
    let err: unknown = firstCause(settled);
    if (err === undefined)
      try {
        const done = await client.query('COMMIT');
        if (done.command !== 'COMMIT') err = new Error(`the server ended the transaction with ${done.command}`);
      } catch (e) {
        err = e;
      }
    if (err === undefined) {
      release();
      return settled.slice(head.length).map((s) => (s as PromiseFulfilledResult<unknown>).value);
    }
    // A broken connection is dropped from the pool; a healthy one is rolled back and reused.
    const healthy = await client.query('ROLLBACK').then(
      () => true,
      () => false,
    );
    release(!healthy);
    const wrapped = wrap(this.location, err);
    if (healthy && !headFailed && settled.some((s) => s.status === 'rejected')) statementFailed.add(wrapped);
    throw wrapped;
  }

  enqueue(m: NewMessage, lease?: { owner: string; ms: number }): Promise<QueueMessage> {
    return this.enqueueAll([{ message: m, ...(lease ? { lease } : {}) }]).then((r) => r[0]);
  }

  enqueueAll(ms: readonly NewEntry[]): Promise<QueueMessage[]> {
    const entries = ms.map((e) => ({ ...e, sha256: createHash('sha256').update(e.message.data).digest('hex') }));
    // One statement per message, sent together (the connection pipelines them); one write of
    // several statements is `single: false`, so its statements run before the next write's.
    return this.write(
      (c) => Promise.all(entries.map((e) => c.query(enqueueQuery(e.message, e.sha256, e.lease)))),
      entries.length === 1,
    ).then(() => entries.map((e) => committedMessage(e.message, e.sha256, !!e.lease)));
  }

  claim(owner: string, limit: number, leaseMs: number, now = Date.now()): Promise<QueueMessage[]> {
    return this.write((c) => this.claimIn(c, owner, limit, leaseMs, now));
  }

  claimWithData(owner: string, limit: number, leaseMs: number, now = Date.now()): Promise<ClaimedMessage[]> {
    return this.write(async (c) => {
      let bodies: Promise<pg.QueryResult<{ id: string; data: Buffer }>> | undefined;
      const messages = await this.claimIn(c, owner, limit, leaseMs, now, (ids) => {
        bodies = c.query({
          name: 'pc_claim_bodies',
          text: 'SELECT id, data FROM bodies WHERE id = ANY($1)',
          values: [ids],
        });
        bodies.catch(() => undefined); // awaited below unless the recipients' read failed first
      });
      if (!messages.length || !bodies) return [];
      const data = new Map((await bodies).rows.map((b) => [b.id, b.data]));
      return messages.map((message) => ({ message, data: data.get(message.id) ?? null }));
    });
  }

  /**
   * Inside a write transaction: lease the due messages and read their open recipients. `alongside`
   * sends another read of the claimed ids right behind the recipients' (the same round trip).
   */
  private async claimIn(
    c: pg.PoolClient,
    owner: string,
    limit: number,
    leaseMs: number,
    now: number,
    alongside?: (ids: string[]) => void,
  ): Promise<QueueMessage[]> {
    const rows = (
      await c.query<Row>({
        name: 'pc_claim',
        // Each kind of due row by an ordered scan of its partial index (schema.ts): up to `limit`
        // of each is locked, the earliest `limit` of them leased (the rest stay free once this
        // transaction ends; expired leases are rare).
        text: `WITH waiting AS (SELECT id, next_attempt_at AS t FROM messages
            WHERE state IN ('incoming', 'deferred') AND next_attempt_at <= $3
            ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED),
          expired AS (SELECT id, lease_until AS t FROM messages WHERE state = 'active' AND lease_until < $3
            ORDER BY lease_until LIMIT $4 FOR UPDATE SKIP LOCKED),
          due AS (SELECT id FROM (SELECT * FROM waiting UNION ALL SELECT * FROM expired) d ORDER BY t LIMIT $4)
        UPDATE messages SET state = 'active', lease_owner = $1, lease_until = $2, lease_gen = lease_gen + 1,
          updated_at = $3
        WHERE id IN (SELECT id FROM due)
        RETURNING *`,
        values: [owner, now + leaseMs, now, limit],
      })
    ).rows.sort((a, b) => (a.next_attempt_at as number) - (b.next_attempt_at as number));
    if (!rows.length) return [];
    const ids = rows.map((r) => r.id as string);
    const rcpts = c.query<Row>({
      name: 'pc_claim_rcpts',
      text: `SELECT * FROM recipients WHERE msg_id = ANY($1) AND ${OPEN} ORDER BY msg_id, idx`,
      values: [ids],
    });
    alongside?.(ids);
    return withRecipients(rows, (await rcpts).rows);
  }

  async data(id: string, limit?: number): Promise<Buffer | null> {
    // Bodies are stored uncompressed out of line (EXTERNAL): a prefix reads only its own pages.
    const rows =
      limit === undefined
        ? await this.read<{ data: Buffer }>('SELECT data FROM bodies WHERE id = $1', [id], 'pc_data')
        : await this.read<{ data: Buffer }>(
            'SELECT substring(data from 1 for $2) AS data FROM bodies WHERE id = $1',
            [id, limit],
            'pc_data_head',
          );
    return rows[0]?.data ?? null;
  }

  complete(
    id: string,
    owner: string,
    outcomes: RecipientOutcome[],
    nextAttemptAt: number,
    opts: { delayWarned?: boolean; gen?: number } = {},
  ): Promise<CompleteResult> {
    const lastDeferred = outcomes.filter((o) => o.status === 'deferred').at(-1);
    // One statement, applied only while the lease is ours (or the message is not in delivery)
    // and, with a generation, not claimed again since: otherwise nothing is written (fenced).
    // A recipient stays open when it was open and got no outcome, or a deferral (the CTEs see the
    // rows as they were before).
    const values = [
      id,
      Date.now(),
      outcomes.map((o) => o.idx),
      outcomes.map((o) => o.status),
      outcomes.map((o) => JSON.stringify(o.reply)),
      outcomes.map((o) =>
        JSON.stringify({ rcpt: o.idx, status: o.status, agent: o.agent, reply: o.reply, ...o.detail }),
      ),
      owner,
      nextAttemptAt,
      lastDeferred ? JSON.stringify(lastDeferred.reply) : null,
      !!opts.delayWarned,
      opts.gen ?? null,
    ];
    return this.write(async (c) => {
      const r = await c.query<{ before: MessageState; lost: boolean; after: MessageState | null }>({
        name: 'pc_complete',
        text: `WITH m AS (SELECT state, ((state = 'active' AND lease_owner IS DISTINCT FROM $7) OR ($11::bigint IS
          NOT NULL AND lease_gen <> $11::bigint)) AS lost
              FROM messages WHERE id = $1 FOR UPDATE),
            o AS (SELECT * FROM unnest($3::int[], $4::text[], $5::text[], $6::text[]) WITH ORDINALITY AS t(idx,
              status, reply, event, n) WHERE EXISTS (SELECT 1 FROM m WHERE NOT m.lost)),
            u AS (SELECT DISTINCT ON (idx) idx, status, reply FROM o ORDER BY idx, n DESC),
            upd AS (UPDATE recipients r SET status = u.status, attempts = r.attempts + 1, last_reply = u.reply,
              updated_at = $2
              FROM u WHERE r.msg_id = $1 AND r.idx = u.idx AND r.${OPEN} RETURNING r.idx, u.status),
            ev AS (INSERT INTO events (msg_id, ts, kind, data) SELECT $1, $2, 'delivery', event FROM o ORDER BY n),
            remaining AS (SELECT count(*) AS n FROM recipients r WHERE r.msg_id = $1 AND r.${OPEN}
              AND NOT EXISTS (SELECT 1 FROM upd WHERE upd.idx = r.idx AND upd.status <> 'deferred')),
            fin AS (UPDATE messages SET state = CASE WHEN remaining.n = 0 THEN 'done' ELSE 'deferred' END,
                next_attempt_at = CASE WHEN remaining.n = 0 THEN $2::bigint ELSE $8::bigint END,
                attempts = attempts + 1, last_error = $9, delay_warned = delay_warned OR $10,
                lease_owner = NULL, lease_until = NULL, updated_at = $2
              FROM remaining, m WHERE messages.id = $1 AND NOT m.lost RETURNING messages.state),
            body AS (DELETE FROM bodies WHERE id = $1 AND EXISTS (SELECT 1 FROM fin WHERE fin.state = 'done'))
          SELECT m.state AS before, m.lost, (SELECT state FROM fin) AS after FROM m`,
        values,
      });
      const row = r.rows[0] as (typeof r.rows)[number] | undefined;
      if (!row) return null;
      return row.lost ? 'fenced' : (row.after ?? row.before);
    }, true);
  }

  async get(id: string): Promise<QueueMessage | null> {
    const rows = await this.read('SELECT * FROM messages WHERE id = $1', [id]);
    return rows.length ? (await this.withRecipientsRead(rows))[0] : null;
  }

  async list(filter: QueueFilter = {}): Promise<QueueMessage[]> {
    const states = filter.states ?? ['incoming', 'active', 'deferred', 'held'];
    const args: unknown[] = [states, filter.limit ?? 1000, filter.offset ?? 0];
    const arg = (v: unknown) => `$${args.push(v)}`;
    // Without done messages the partial index messages_queued serves the order.
    let where = `state = ANY($1)${states.includes('done') ? '' : ` AND state <> 'done'`}`;
    if (filter.org !== undefined) where += ` AND org = ${arg(filter.org)}`;
    if (filter.after !== undefined)
      where += ` AND (received_at, id) > (SELECT received_at, id FROM messages WHERE id = ${arg(filter.after)})`;
    const rows = await this.read(
      `SELECT * FROM messages WHERE ${where} ORDER BY received_at, id LIMIT $2 OFFSET $3`,
      args,
    );
    return this.withRecipientsRead(rows);
  }

  async search(f: TraceFilter): Promise<QueueMessage[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const arg = (v: unknown) => {
      args.push(v);
      return `$${args.length}`;
    };
    if (f.queueId) where.push(`m.id = ${arg(f.queueId)}`);
    if (f.messageId)
      where.push(
        `(m.message_id = ${arg(f.messageId)} OR m.message_id = ${arg(`<${f.messageId.replace(/^<|>$/g, '')}>`)})`,
      );
    if (f.sender) where.push(`lower(m.mail_from) = lower(${arg(f.sender)})`);
    if (f.recipient)
      where.push(`m.id IN (SELECT msg_id FROM recipients WHERE lower(address) = lower(${arg(f.recipient)}))`);
    if (f.since !== undefined) where.push(`m.received_at >= ${arg(f.since)}`);
    if (f.until !== undefined) where.push(`m.received_at <= ${arg(f.until)}`);
    if (f.org !== undefined) where.push(`m.org = ${arg(f.org)}`);
    if (f.status)
      where.push(`EXISTS (SELECT 1 FROM recipients r WHERE r.msg_id = m.id AND r.status = ${arg(f.status)})`);
    const attempt = (cond: string) =>
      `EXISTS (SELECT 1 FROM events e WHERE e.msg_id = m.id AND e.kind = 'delivery' AND ${cond})`;
    if (f.tlsLevel) where.push(attempt(`e.data::jsonb ->> 'tlsAchieved' = ${arg(f.tlsLevel)}`));
    if (f.connector) {
      const name = arg(f.connector);
      where.push(
        `(lower(m.inbound::jsonb -> 'connector' ->> 'name') = lower(${name}) OR ` +
          `${attempt(`lower(e.data::jsonb ->> 'connector') = lower(${name})`)})`,
      );
    }
    const rows = await this.read(
      `SELECT * FROM messages m ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
      ORDER BY m.received_at DESC, m.id DESC LIMIT ${arg(f.limit ?? 100)} OFFSET ${arg(f.offset ?? 0)}`,
      args,
    );
    return this.withRecipientsRead(rows);
  }

  async trace(id: string): Promise<TraceEvent[]> {
    const rows = await this.read<{ ts: number; kind: string; data: string }>(
      'SELECT ts, kind, data FROM events WHERE msg_id = $1 ORDER BY id',
      [id],
    );
    return rows.map((e) => ({ ts: e.ts, kind: e.kind, data: JSON.parse(e.data) }));
  }

  retryNow(id: string): Promise<boolean> {
    return this.write(async (c) => {
      const now = Date.now();
      const r = await c.query(
        `UPDATE messages SET state = 'deferred', next_attempt_at = $1, updated_at = $1 WHERE id = $2 AND state IN ` +
          `('deferred', 'held', 'incoming')`,
        [now, id],
      );
      return (r.rowCount ?? 0) > 0;
    });
  }

  deleteQueued(id: string, by: string, now = Date.now()): Promise<DeleteResult> {
    return this.write(async (c): Promise<DeleteResult> => {
      const msg = (await c.query<Row>('SELECT state, lease_until FROM messages WHERE id = $1 FOR UPDATE', [id]))
        .rows[0] as Row | undefined;
      if (!msg) return { deleted: false, why: 'unknown' };
      if (msg.state === 'done') return { deleted: false, why: 'finished' };
      if (msg.state === 'active' && (msg.lease_until as number) >= now) return { deleted: false, why: 'inDelivery' };
      const rcpts = (
        await c.query<{ idx: number }>(
          `UPDATE recipients SET status = 'deleted', updated_at = $1 WHERE msg_id = $2 AND ${OPEN} RETURNING idx`,
          [now, id],
        )
      ).rows
        .map((r) => r.idx)
        .sort((a, b) => a - b);
      await c.query(
        `WITH e AS (INSERT INTO events (msg_id, ts, kind, data) VALUES ($1, $2, 'deleted', $3)),
          b AS (DELETE FROM bodies WHERE id = $1)
        UPDATE messages SET state = 'done', next_attempt_at = $2, lease_owner = NULL, lease_until = NULL, updated_at
          = $2 WHERE id = $1`,
        [id, now, JSON.stringify({ by, rcpts, state: msg.state })],
      );
      return { deleted: true, recipients: rcpts.length };
    });
  }

  requestBounce(id: string, by: string, now = Date.now()): Promise<BounceResult> {
    return this.write((c) => admin.requestBounce(c, id, by, now));
  }

  createToken(t: NewAdminToken): Promise<void> {
    return this.write((c) => admin.createToken(c, t));
  }
  tokenByHash(hash: string): Promise<AdminToken | null> {
    return admin.tokenByHash(this.reader, hash);
  }
  tokens(): Promise<AdminToken[]> {
    return admin.tokens(this.reader);
  }
  revokeToken(idOrName: string, now = Date.now()): Promise<AdminToken | null> {
    return this.write((c) => admin.revokeToken(c, idOrName, now));
  }
  appendAudit(e: AuditEntry): Promise<number> {
    return this.write((c) => admin.appendAudit(c, e));
  }
  auditLog(f: AuditFilter): Promise<(AuditEntry & { id: number })[]> {
    return admin.auditLog(this.reader, f);
  }
  addReportCounts(rows: readonly ReportCount[]): Promise<void> {
    return rows.length ? this.write((c) => admin.addReportCounts(c, rows), true) : Promise.resolve();
  }
  sumReportCounts(q: ReportQuery): Promise<ReportSum[]> {
    return admin.sumReportCounts(this.reader, q);
  }
  purgeReportCounts(before: number): Promise<number> {
    return this.write((c) => admin.purgeReportCounts(c, before));
  }

  purgeDone(before: number, limit: number): Promise<number> {
    return this.write(async (c) => {
      const r = await c.query(
        `WITH ids AS (SELECT id FROM messages WHERE state = 'done' AND updated_at < $1 ORDER BY updated_at LIMIT $2
          FOR UPDATE SKIP LOCKED),
          e AS (DELETE FROM events WHERE msg_id IN (SELECT id FROM ids)),
          r AS (DELETE FROM recipients WHERE msg_id IN (SELECT id FROM ids)),
          b AS (DELETE FROM bodies WHERE id IN (SELECT id FROM ids))
        DELETE FROM messages WHERE id IN (SELECT id FROM ids)`,
        [before, limit],
      );
      return r.rowCount ?? 0;
    });
  }

  async nextDue(): Promise<number | null> {
    const rows = await this.read<{ t: number | null }>(NEXT_DUE_SQL, [], 'pc_next_due');
    return rows[0]?.t ?? null;
  }

  countTlsSessions(rows: readonly TlsSessionCount[]): Promise<void> {
    if (!rows.length) return Promise.resolve();
    return this.write(async (c) => {
      for (const r of rows) {
        await c.query({
          name: 'pc_tls_count',
          text: `INSERT INTO tlsrpt_sessions (day, policy_domain, policy, result_type, sending_ip, mx_host, mx_ip,
            reason, count)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (day, policy_domain, policy, result_type, sending_ip, mx_host, mx_ip, reason) DO UPDATE SET
              count = tlsrpt_sessions.count + excluded.count`,
          values: [
            r.day,
            r.policyDomain,
            JSON.stringify(r.policy),
            r.resultType ?? '',
            r.sendingIp ?? '',
            r.mxHost ?? '',
            r.mxIp ?? '',
            r.reason ?? '',
            r.count,
          ],
        });
      }
    });
  }

  async tlsSessions(day: string): Promise<TlsSessionCount[]> {
    return (
      await this.read(
        'SELECT * FROM tlsrpt_sessions WHERE day = $1 ORDER BY policy_domain, result_type, mx_host, mx_ip',
        [day],
      )
    ).map((r) => ({
      day: r.day as string,
      policyDomain: r.policy_domain as string,
      policy: JSON.parse(r.policy as string) as TlsSessionCount['policy'],
      count: r.count as number,
      ...(r.result_type ? { resultType: r.result_type as TlsSessionCount['resultType'] } : {}),
      ...(r.sending_ip ? { sendingIp: r.sending_ip as string } : {}),
      ...(r.mx_host ? { mxHost: r.mx_host as string } : {}),
      ...(r.mx_ip ? { mxIp: r.mx_ip as string } : {}),
      ...(r.reason ? { reason: r.reason as string } : {}),
    }));
  }

  tlsReportSent(r: TlsReportSent): Promise<void> {
    return this.write(async (c) => {
      await c.query(
        `INSERT INTO tlsrpt_sent (day, policy_domain, report_id, at, destinations) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (day, policy_domain) DO UPDATE SET report_id = excluded.report_id, at = excluded.at, destinations
          = excluded.destinations`,
        [r.day, r.policyDomain, r.reportId, r.at, JSON.stringify(r.destinations)],
      );
    });
  }

  async tlsReportsSent(day: string): Promise<TlsReportSent[]> {
    return (await this.read('SELECT * FROM tlsrpt_sent WHERE day = $1 ORDER BY policy_domain', [day])).map((r) => ({
      day: r.day as string,
      policyDomain: r.policy_domain as string,
      reportId: r.report_id as string,
      at: r.at as number,
      destinations: JSON.parse(r.destinations as string) as TlsReportSent['destinations'],
    }));
  }

  addReceivedTlsReport(r: ReceivedTlsReport): Promise<void> {
    return this.write(async (c) => {
      await c.query(
        `INSERT INTO tlsrpt_received (received_at, queue_id, mail_from, organization, report_id, content, ` +
          `problem) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
        [r.receivedAt, r.queueId, r.mailFrom, r.organization ?? null, r.reportId ?? null, r.content, r.problem ?? null],
      );
    });
  }

  async receivedTlsReports(limit: number): Promise<ReceivedTlsReport[]> {
    return (await this.read('SELECT * FROM tlsrpt_received ORDER BY id DESC LIMIT $1', [limit])).map((r) => ({
      receivedAt: r.received_at as number,
      queueId: r.queue_id as string,
      mailFrom: r.mail_from as string,
      content: r.content as string,
      ...(r.organization ? { organization: r.organization as string } : {}),
      ...(r.report_id ? { reportId: r.report_id as string } : {}),
      ...(r.problem ? { problem: r.problem as string } : {}),
    }));
  }

  async stsPolicy(domain: string): Promise<StsPolicyEntry | null> {
    const rows = await this.read(
      'SELECT domain, id, text, fetched_at AS "fetchedAt", expires_at AS "expiresAt" FROM sts_policies WHERE ' +
        'domain = $1',
      [domain],
    );
    return (rows[0] as unknown as StsPolicyEntry | undefined) ?? null;
  }

  saveStsPolicy(e: StsPolicyEntry): Promise<void> {
    return this.write(async (c) => {
      await c.query(
        `INSERT INTO sts_policies (domain, id, text, fetched_at, expires_at) VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (domain) DO UPDATE SET id = excluded.id, text = excluded.text, fetched_at = excluded.fetched_at,
          expires_at = excluded.expires_at`,
        [e.domain, e.id, e.text, e.fetchedAt, e.expiresAt],
      );
    });
  }

  releaseLeases(owner?: string): Promise<number> {
    return this.write(
      async (c) =>
        (
          await c.query(
            `UPDATE messages SET state = 'deferred', lease_owner = NULL, lease_until = NULL, next_attempt_at = $1
      WHERE state = 'active' AND ($2::text IS NULL OR lease_owner = $2)`,
            [Date.now(), owner ?? null],
          )
        ).rowCount ?? 0,
    );
  }

  renew(owner: string, leases: HeldLease[], leaseMs: number, now = Date.now()): Promise<string[]> {
    if (!leases.length) return Promise.resolve([]);
    return this.write(
      async (c) =>
        (
          await c.query<{ id: string }>({
            name: 'pc_renew',
            text: `UPDATE messages m SET lease_until = $4 FROM unnest($2::text[], $3::bigint[]) AS l(id, gen)
        WHERE m.id = l.id AND m.lease_gen = l.gen AND m.state = 'active' AND m.lease_owner = $1 RETURNING m.id`,
            values: [owner, leases.map((l) => l.id), leases.map((l) => l.gen), now + leaseMs],
          })
        ).rows.map((r) => r.id),
      true,
    );
  }

  heartbeat(n: NodeBeat, now = Date.now()): Promise<void> {
    return this.write(async (c) => {
      await c.query({
        name: 'pc_heartbeat',
        text: `INSERT INTO nodes (id, version, config_hash, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3,
          $4, $5, $6, $7)
          ON CONFLICT (id) DO UPDATE SET version = excluded.version, config_hash = excluded.config_hash, host =
            excluded.host, pid = excluded.pid,
            started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, stopped_at = NULL`,
        values: [n.id, n.version, n.configHash, n.host, n.pid, n.startedAt, now],
      });
      await c.query({
        name: 'pc_forget_nodes',
        text: 'DELETE FROM nodes WHERE heartbeat_at < $1 AND NOT draining',
        values: [now - NODE_FORGET_MS],
      });
    }, true);
  }

  nodeStopped(id: string, pid: number, now = Date.now()): Promise<void> {
    return this.write(async (c) => {
      await c.query({
        name: 'pc_node_stopped',
        text: 'UPDATE nodes SET stopped_at = $1 WHERE id = $2 AND pid = $3',
        values: [now, id, pid],
      });
    }, true);
  }

  async nodes(now = Date.now()): Promise<NodeStatus[]> {
    return (
      await this.read(
        `SELECT n.*, (SELECT count(*) FROM messages m WHERE m.state = 'active' AND m.lease_owner = n.id AND
          m.lease_until >= $1) AS leases
      FROM nodes n ORDER BY n.heartbeat_at DESC, n.id`,
        [now],
      )
    ).map(toNode);
  }

  async depth(): Promise<QueueDepth> {
    return toDepth((await this.read(DEPTH_SQL))[0]);
  }

  memoryGet(kind: string, key: string, now = Date.now()): Promise<SharedEntry | null> {
    return cluster.memoryGet(this.reader, kind, key, now);
  }
  memorySet(kind: string, key: string, value: unknown, until: number, now = Date.now()): Promise<void> {
    return this.write((c) => cluster.memorySet(c, kind, key, value, until, now), true);
  }
  memoryDelete(kind: string, key: string): Promise<void> {
    return this.write((c) => cluster.memorySet(c, kind, key, null, 0, 1), true);
  }
  memoryClaim(kind: string, key: string, value: unknown, until: number, now = Date.now()): Promise<boolean> {
    return this.write((c) => cluster.memoryClaim(c, kind, key, value, until, now), true);
  }
  memoryExpire(now: number, max: number): Promise<number> {
    return this.write((c) => cluster.memoryExpire(c, now, max));
  }
  setDraining(node: string, on: boolean): Promise<boolean> {
    return this.write((c) => cluster.setDraining(c, node, on));
  }
  requestControl(node: string, kind: ControlKind, by: string, now = Date.now()): Promise<number> {
    return this.write((c) => cluster.requestControl(c, node, kind, by, now));
  }
  nodeDirectives(node: string): Promise<NodeDirectives> {
    return cluster.nodeDirectives(this.reader, node);
  }
  answerControl(id: number, ok: boolean, message: string, now = Date.now()): Promise<void> {
    return this.write((c) => cluster.answerControl(c, id, ok, message, now));
  }
  controlRequests(ids: readonly number[]): Promise<ControlRequest[]> {
    return cluster.controlRequests(this.reader, ids);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.scheduled || this.inFlight || this.pending.length)
      await new Promise<void>((r) => (this.inFlight ? this.idle.push(r) : setImmediate(r)));
    await this.pool.end();
  }

  private async withRecipientsRead(rows: Row[]): Promise<QueueMessage[]> {
    if (!rows.length) return [];
    const rcpts = await this.read('SELECT * FROM recipients WHERE msg_id = ANY($1) ORDER BY msg_id, idx', [
      rows.map((r) => r.id),
    ]);
    return withRecipients(rows, rcpts);
  }
}

function withRecipients(rows: Row[], rcpts: Row[]): QueueMessage[] {
  const by = new Map<string, Row[]>();
  for (const r of rcpts) {
    const k = r.msg_id as string;
    const l = by.get(k);
    if (l) l.push(r);
    else by.set(k, [r]);
  }
  return rows.map((r) => toMessage(r, by.get(r.id as string) ?? []));
}

/** The error that failed a transaction: the first one other than "current transaction is aborted" (25P02). */
function firstCause(settled: readonly PromiseSettledResult<unknown>[]): unknown {
  const failed = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected').map((s) => s.reason);
  return failed.find((e) => (e as { code?: string } | null)?.code !== '25P02') ?? failed[0];
}

function wrap(location: string, e: unknown): Error {
  return e instanceof PostgresError || e instanceof AdminError ? e : new PostgresError(location, e);
}

function assertCurrent(s: MigrationStatus): void {
  assertKnownSchema(s);
  const applied = s.migrations.filter((m) => m.applied).length;
  if (applied === 0) {
    throw new AdminError(
      `no queue in the PostgreSQL store ${s.location}: no server has run with it yet`,
      'start the server once (`portcullis serve`) or create the schema with `portcullis store migrate`',
      1,
    );
  }
  if (applied < s.migrations.length) {
    throw new AdminError(
      `the PostgreSQL store ${s.location} was written by an older version of Portcullis`,
      'start the server once (`portcullis serve`) or run `portcullis store migrate`: either upgrades the schema',
      1,
    );
  }
}

/** The statement storing one new message: its row, its data and its recipients. */
function enqueueQuery(m: NewMessage, sha256: string, lease: { owner: string; ms: number } | undefined) {
  const r = m.recipients;
  return {
    name: 'pc_enqueue',
    text: `WITH msg AS (
          INSERT INTO messages (id, org, state, received_at, mail_from, message_id, size, sha256, envelope, inbound,
            next_attempt_at, lease_owner, lease_until, lease_gen, updated_at)
          VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $4, $11, $12, CASE WHEN $11::text IS NULL THEN 0 ELSE 1
            END, $4)),
        body AS (INSERT INTO bodies (id, data) VALUES ($1, $13))
        INSERT INTO recipients (msg_id, idx, address, org, route, status, notify, orcpt, updated_at)
        SELECT $1, t.idx, t.address, t.org, t.route, 'pending', t.notify, t.orcpt, $4
        FROM unnest($14::int[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[]) AS t(idx, address,
          org, route, notify, orcpt)`,
    values: [
      m.id,
      m.org,
      lease ? 'active' : 'incoming',
      m.receivedAt,
      m.mailFrom,
      m.messageId ?? null,
      m.data.length,
      sha256,
      JSON.stringify(m.envelope),
      JSON.stringify(m.inbound),
      lease?.owner ?? null,
      lease ? m.receivedAt + lease.ms : null,
      m.data,
      r.map((_, i) => i),
      r.map((x) => x.address),
      r.map((x) => x.org),
      r.map((x) => x.route),
      r.map((x) => x.notify ?? null),
      r.map((x) => x.orcpt ?? null),
    ],
  };
}
