// Owns: the embedded SQLite backend (WAL, synchronous=FULL). Writes from concurrent callers are
// grouped into one transaction per event-loop turn (group commit): one fsync serves many sessions,
// and every caller's promise settles only after that commit returned.
// Failure: a failed transaction rejects every write in it; nothing of it is visible.
// Several processes (the workers of `workers: N`) may write one queue: every write transaction
// takes the write lock at BEGIN (IMMEDIATE), so no transaction fails half-way on a snapshot
// another process has changed. A group commit that finds the lock taken does not wait in SQLite's
// busy handler (which sleeps on the event loop, stalling every session of the process): it tries
// again on a timer, the writes arriving meanwhile joining it; a write fails (SQLITE_BUSY) once it
// has itself waited LOCK_WAIT_MS, never because the batch it joined had. A batch with a failing
// write commits the others one by one, each taking the lock the same way.
// Read-only opening (the CLI's reading commands) never creates the folder or the file and refuses
// every write (query_only). It is not an OS-level read-only handle: that one would leave the WAL
// side files (-wal, -shm) behind in a stopped server's dataDir; this one removes them on close.
// The serving process copies the WAL back in a thread of its own (checkpointer.ts).
import Database from 'better-sqlite3';
import { existsSync, mkdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
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
import type { MigrationStatus } from '../migrations.ts';
import { committedMessage, DEPTH_SQL, toDepth, toMessage, toNode, type Row } from '../rows.ts';
import { migrations } from './schema.ts';
import { SqliteAdminTables } from './admin.ts';
import { SqliteClusterTables } from './cluster.ts';
import { Checkpointer, WAL_SIZE_LIMIT } from './checkpointer.ts';
import { AdminError } from '../../errors.ts';

export interface SqliteOpenOptions {
  /** Reads only: the queue must exist, writes are refused. */
  readonly?: boolean;
  /** Open an existing queue only: never create the folder or the file. */
  existing?: boolean;
  /** The serving process: WAL checkpoints run in a thread of their own (checkpointer.ts). */
  checkpointThread?: boolean;
  /** With the thread: WAL pages at which the writer starts the WAL over (RESTART_FRAMES; tests set less). */
  walRestartFrames?: number;
  /** How long a write waits for another process's write lock (LOCK_WAIT_MS; tests set less). */
  lockWaitMs?: number;
}

/**
 * When the next message is due: the earliest retry of each waiting state and the earliest
 * lease expiry, each found by an index probe with the state equal (with `state IN (...)` SQLite
 * reads every waiting message's entry instead). The leases' index is named: without statistics
 * the planner takes messages_due (state = 'active') and reads every leased message's row.
 */
const NEXT_DUE_SQL = `SELECT min(t) AS t FROM (
  SELECT min(next_attempt_at) AS t FROM messages WHERE state = 'incoming'
  UNION ALL SELECT min(next_attempt_at) FROM messages WHERE state = 'deferred'
  UNION ALL SELECT min(lease_until) FROM messages INDEXED BY messages_leased WHERE state = 'active') due`;

/**
 * Claimable messages of each kind, earliest first: an ordered probe of the kind's index that
 * reads at most a limit of entries. A claim merges the three (claimNow). One statement over all
 * kinds (`UPDATE ... WHERE id IN (SELECT ... ORDER BY ... LIMIT) RETURNING *`) cost 0.3 ms even
 * when nothing was due: SQLite built ephemeral tables for the IN list, the order and the returned
 * rows (each a page cache of its own), and re-prepared the statement on most calls. The leases'
 * index is named: without statistics the planner takes messages_due (state = 'active') and reads
 * every leased message's row. The limit is written into the statement (dueProbes), never bound:
 * SQLite re-prepares a statement whose LIMIT is a bound parameter at every run (9 µs a probe
 * instead of 4).
 */
const DUE_SQL = [
  `SELECT id, next_attempt_at FROM messages WHERE state = 'incoming' AND next_attempt_at <= ?
    ORDER BY next_attempt_at LIMIT `,
  `SELECT id, next_attempt_at FROM messages WHERE state = 'deferred' AND next_attempt_at <= ?
    ORDER BY next_attempt_at LIMIT `,
  `SELECT id, lease_until FROM messages INDEXED BY messages_leased WHERE state = 'active' AND lease_until < ?
    ORDER BY lease_until LIMIT `,
];

export const queueFile = (dataDir: string): string => path.join(dataDir, 'queue.sqlite');

/** The migrations of the queue in dataDir (all pending when there is none yet); writes nothing. */
export function sqliteMigrationStatus(dataDir: string): MigrationStatus {
  const file = queueFile(dataDir);
  let version = 0;
  if (existsSync(file)) {
    const db = new Database(file, { fileMustExist: true });
    try {
      db.pragma('query_only = ON');
      version = db.pragma('user_version', { simple: true }) as number;
    } finally {
      db.close();
    }
  }
  return {
    store: 'sqlite',
    location: file,
    unknown: Array.from({ length: Math.max(0, version - migrations.length) }, (_, i) => migrations.length + i + 1),
    migrations: migrations.map((m, i) => ({ version: i + 1, name: m.name, applied: i < version })),
  };
}
/**
 * The queue file is read through a memory mapping of up to this size (reads only; writes stay
 * pwrite and fsync). With several workers every commit of one empties the page cache of the
 * others, and each of their next transactions read the B-tree pages again: a pread and a copy
 * each without the mapping, in place with it (relay benchmark, `workers: auto`: 0.79–0.83 ms of
 * CPU per message against 1.09–1.10). The file never shrinks (no vacuum), so the mapping never
 * outlives its pages. Touched pages count in the process's RSS as file pages the kernel reclaims.
 */
const MMAP_BYTES = 256 * 1024 * 1024;
/** How long a group commit keeps trying for another process's write lock before its writes fail. */
const LOCK_WAIT_MS = 10_000;
/** SQLite's own wait for a lock, for everything but the group commit's first try (opening, closing). */
const BUSY_TIMEOUT_MS = 10_000;

interface Pending {
  /** When the write was queued: it waits for another process's lock LOCK_WAIT_MS at most. */
  since: number;
  run: () => unknown;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private pending: Pending[] = [];
  private scheduled = false;
  /** The group commit's next try for a write lock another process holds. */
  private retry: NodeJS.Timeout | undefined;
  private readonly lockWaitMs: number;
  private checkpointer: Checkpointer | undefined;
  private readonly st;
  /** The due probes by the power of two their LIMIT says (dueProbes). */
  private readonly dueByCap = new Map<number, Database.Statement[]>();
  private readonly admin: SqliteAdminTables;
  private readonly cluster: SqliteClusterTables;

  constructor(dataDir: string, opts: SqliteOpenOptions = {}) {
    this.lockWaitMs = opts.lockWaitMs ?? LOCK_WAIT_MS;
    const existing = !!(opts.readonly || opts.existing);
    if (!existing) mkdirSync(dataDir, { recursive: true, mode: 0o750 });
    this.db = new Database(queueFile(dataDir), { fileMustExist: existing });
    this.db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    if (opts.readonly) {
      this.db.pragma('query_only = ON');
      if ((this.db.pragma('user_version', { simple: true }) as number) < migrations.length) {
        this.db.close();
        throw new AdminError(
          `the queue ${queueFile(dataDir)} was written by an older version of Portcullis`,
          'start the server once (`portcullis serve`): it upgrades the queue',
          1,
        );
      }
    } else {
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = FULL');
      this.db.pragma(`mmap_size = ${MMAP_BYTES}`);
      // A WAL that grew in a burst is truncated back to this when it is next started over.
      this.db.pragma(`journal_size_limit = ${WAL_SIZE_LIMIT}`);
      this.migrate();
      if (opts.checkpointThread)
        this.checkpointer = new Checkpointer(this.db, queueFile(dataDir), undefined, opts.walRestartFrames);
    }
    const db = this.db;
    this.st = {
      beginNow: db.prepare('BEGIN IMMEDIATE'),
      commit: db.prepare('COMMIT'),
      rollback: db.prepare('ROLLBACK'),
      insMsg:
        db.prepare(`INSERT INTO messages (id, org, state, received_at, mail_from, message_id, size, sha256, envelope,
          inbound, next_attempt_at, lease_owner, lease_until, lease_gen, updated_at)
        VALUES (@id, @org, @state, @receivedAt, @mailFrom, @messageId, @size, @sha256, @envelope, @inbound,
          @receivedAt, @owner, @until, @gen, @receivedAt)`),
      insBody: db.prepare('INSERT INTO bodies (id, data) VALUES (?, ?)'),
      insRcpt: db.prepare(`INSERT INTO recipients (msg_id, idx, address, org, route, status, notify, orcpt, updated_at)
        VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)`),
      lease: db.prepare(
        `UPDATE messages SET state = 'active', lease_owner = ?, lease_until = ?, lease_gen = lease_gen + 1, ` +
          `updated_at = ? WHERE id = ?`,
      ),
      rcptsOpen: db.prepare(
        `SELECT * FROM recipients WHERE msg_id = ? AND status IN ('pending', 'deferred') ORDER BY idx`,
      ),
      rcptsAll: db.prepare('SELECT * FROM recipients WHERE msg_id = ? ORDER BY idx'),
      body: db.prepare('SELECT data FROM bodies WHERE id = ?').pluck(),
      bodyHead: db.prepare('SELECT substr(data, 1, ?) FROM bodies WHERE id = ?').pluck(),
      msg: db.prepare('SELECT * FROM messages WHERE id = ?'),
      /** What the fences and state checks read of a message (not its envelope and trace columns). */
      leaseOf: db.prepare('SELECT state, lease_owner, lease_until, lease_gen FROM messages WHERE id = ?'),
      updRcpt: db.prepare(`UPDATE recipients SET status = ?, attempts = attempts + 1, last_reply = ?, updated_at = ?
        WHERE msg_id = ? AND idx = ? AND status IN ('pending', 'deferred')`),
      insEvent: db.prepare('INSERT INTO events (msg_id, ts, kind, data) VALUES (?, ?, ?, ?)'),
      openCount: db
        .prepare(`SELECT count(*) FROM recipients WHERE msg_id = ? AND status IN ('pending', 'deferred')`)
        .pluck(),
      finish:
        db.prepare(`UPDATE messages SET state = @state, attempts = attempts + 1, next_attempt_at = @next, last_error
          = @err,
        delay_warned = max(delay_warned, @warned), lease_owner = NULL, lease_until = NULL, updated_at = @now WHERE id
          = @id`),
      delBody: db.prepare('DELETE FROM bodies WHERE id = ?'),
      events: db.prepare('SELECT ts, kind, data FROM events WHERE msg_id = ? ORDER BY id'),
      retry: db.prepare(
        `UPDATE messages SET state = 'deferred', next_attempt_at = ?, updated_at = ? WHERE id = ? AND state IN ` +
          `('deferred', 'held', 'incoming')`,
      ),
      delMsg: db.prepare('DELETE FROM messages WHERE id = ?'),
      delRcpts: db.prepare('DELETE FROM recipients WHERE msg_id = ?'),
      delEvents: db.prepare('DELETE FROM events WHERE msg_id = ?'),
      rcptsDelete: db
        .prepare(
          `UPDATE recipients SET status = 'deleted', updated_at = ? WHERE msg_id = ? AND status IN ('pending', ` +
            `'deferred') RETURNING idx`,
        )
        .pluck(),
      markDone: db.prepare(
        `UPDATE messages SET state = 'done', next_attempt_at = @now, lease_owner = NULL, lease_until = NULL, ` +
          `updated_at = @now WHERE id = @id`,
      ),
      // Served by messages_done (updated_at) WHERE state = 'done', named: without statistics the
      // planner takes messages_due (state = 'done') and sorts every done message.
      finishedBefore: db
        .prepare(
          `SELECT id FROM messages INDEXED BY messages_done WHERE state = 'done' AND updated_at < ? ORDER BY ` +
            `updated_at LIMIT ?`,
        )
        .pluck(),
      nextDue: db.prepare(NEXT_DUE_SQL).pluck(),
      stsGet: db.prepare(
        'SELECT domain, id, text, fetched_at AS fetchedAt, expires_at AS expiresAt FROM sts_policies WHERE domain = ?',
      ),
      stsPut:
        db.prepare(`INSERT INTO sts_policies (domain, id, text, fetched_at, expires_at) VALUES (@domain, @id, @text,
          @fetchedAt, @expiresAt)
        ON CONFLICT (domain) DO UPDATE SET id = excluded.id, text = excluded.text, fetched_at = excluded.fetched_at,
          expires_at = excluded.expires_at`),
      release: db.prepare(
        `UPDATE messages SET state = 'deferred', lease_owner = NULL, lease_until = NULL, next_attempt_at = ? ` +
          `WHERE state = 'active'`,
      ),
      bounce: db.prepare(
        `UPDATE messages SET bounce_by = @by, state = 'deferred', next_attempt_at = @now, updated_at = @now, ` +
          `lease_owner = NULL, lease_until = NULL WHERE id = @id`,
      ),
      tlsCount:
        db.prepare(`INSERT INTO tlsrpt_sessions (day, policy_domain, policy, result_type, sending_ip, mx_host, mx_ip,
          reason, count)
        VALUES (@day, @domain, @policy, @result, @sip, @mx, @mxip, @reason, @count)
        ON CONFLICT (day, policy_domain, policy, result_type, sending_ip, mx_host, mx_ip, reason) DO UPDATE SET count
          = count + excluded.count`),
      tlsDay: db.prepare(
        'SELECT * FROM tlsrpt_sessions WHERE day = ? ORDER BY policy_domain, result_type, mx_host, mx_ip',
      ),
      tlsSent: db.prepare(
        `INSERT OR REPLACE INTO tlsrpt_sent (day, policy_domain, report_id, at, destinations) VALUES (?, ?, ?, ?, ?)`,
      ),
      tlsSentDay: db.prepare('SELECT * FROM tlsrpt_sent WHERE day = ? ORDER BY policy_domain'),
      tlsRecv: db.prepare(
        `INSERT INTO tlsrpt_received (received_at, queue_id, mail_from, organization, report_id, content, ` +
          `problem) VALUES (?, ?, ?, ?, ?, ?, ?)`,
      ),
      tlsRecvList: db.prepare('SELECT * FROM tlsrpt_received ORDER BY id DESC LIMIT ?'),
      releaseOwn: db.prepare(
        `UPDATE messages SET state = 'deferred', lease_owner = NULL, lease_until = NULL, next_attempt_at = ? ` +
          `WHERE state = 'active' AND lease_owner = ?`,
      ),
      renew: db.prepare(
        `UPDATE messages SET lease_until = @until WHERE id = @id AND state = 'active' AND lease_owner = @owner ` +
          `AND lease_gen = @gen`,
      ),
      beat: db.prepare(`INSERT INTO nodes (id, version, config_hash, host, pid, started_at, heartbeat_at) VALUES
        (@id, @version, @configHash, @host, @pid, @startedAt, @now)
        ON CONFLICT (id) DO UPDATE SET version = excluded.version, config_hash = excluded.config_hash, host =
          excluded.host, pid = excluded.pid,
          started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, stopped_at = NULL`),
      forgetNodes: db.prepare('DELETE FROM nodes WHERE heartbeat_at < ? AND draining = 0'),
      nodeStopped: db.prepare('UPDATE nodes SET stopped_at = ? WHERE id = ? AND pid = ?'),
      nodes: db.prepare(`SELECT n.*, (SELECT count(*) FROM messages m WHERE m.state = 'active' AND m.lease_owner = n.id
          AND m.lease_until >= ?) AS leases
        FROM nodes n ORDER BY n.heartbeat_at DESC, n.id`),
      depth: db.prepare(DEPTH_SQL),
    };
    this.admin = new SqliteAdminTables(db);
    this.cluster = new SqliteClusterTables(db);
  }

  private migrate(): void {
    const version = this.db.pragma('user_version', { simple: true }) as number;
    for (let v = version; v < migrations.length; v++) {
      this.db.transaction(() => {
        this.db.exec(migrations[v].sql);
        this.db.pragma(`user_version = ${v + 1}`);
      })();
    }
  }

  /** Which migrations this queue has (all of them once opened for writing: opening applies them). */
  async migrationStatus(): Promise<MigrationStatus> {
    return sqliteMigrationStatus(path.dirname(this.db.name));
  }

  /** Queue a write for the next group commit. */
  private write<T>(run: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ since: Date.now(), run, resolve: resolve as (v: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /**
   * BEGIN IMMEDIATE without waiting (false: another process holds the write lock), or, when
   * `wait`, waiting up to busy_timeout as before (closing: no later turn to try in). The PRAGMA
   * is never kept as a prepared statement: SQLite applies busy_timeout when it prepares the
   * statement, so the first run of a kept one changed nothing, and the first commit of a process
   * to find the lock taken slept in the busy handler, the event loop with it.
   */
  private begin(wait: boolean): boolean {
    if (wait) {
      this.st.beginNow.run();
      return true;
    }
    this.db.pragma('busy_timeout = 0');
    try {
      this.st.beginNow.run();
      return true;
    } catch (e) {
      if ((e as { code?: string }).code === 'SQLITE_BUSY') return false;
      throw e;
    } finally {
      this.db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    }
  }

  private flush(wait = false): void {
    const batch = this.pending;
    this.pending = [];
    this.scheduled = false;
    let began: boolean;
    try {
      began = this.begin(wait);
    } catch (e) {
      for (const p of batch) p.reject(e);
      return;
    }
    if (!began) {
      this.later(batch);
      return;
    }
    const results: unknown[] = [];
    try {
      for (const p of batch) results.push(p.run());
      this.st.commit.run();
    } catch (e) {
      if (this.db.inTransaction) this.st.rollback.run();
      if (batch.length === 1) {
        batch[0].reject(e);
        return;
      }
      this.oneByOne(batch, wait);
      return;
    }
    batch.forEach((p, i) => p.resolve(results[i]));
  }

  /**
   * Another process holds the write lock: the writes that waited lockWaitMs fail, the others are
   * tried again shortly (what is written meanwhile joins them).
   */
  private later(batch: Pending[]): void {
    const now = Date.now();
    const left: Pending[] = [];
    for (const p of batch) {
      if (now - p.since < this.lockWaitMs) left.push(p);
      else
        p.reject(
          Object.assign(new Error(`database is locked (waited ${this.lockWaitMs / 1000} s for the write lock)`), {
            code: 'SQLITE_BUSY',
          }),
        );
    }
    this.pending = left.concat(this.pending);
    if (!this.pending.length) return;
    this.scheduled = true;
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.flush();
    }, 1);
  }

  /**
   * A batch failed: each write is committed on its own so that one bad write fails alone. Each
   * takes the lock as a batch does (never in SQLite's sleeping busy handler unless closing); when
   * another process took it meanwhile, the rest go back to waiting for it.
   */
  private oneByOne(batch: Pending[], wait: boolean): void {
    for (let i = 0; i < batch.length; i++) {
      const p = batch[i];
      let began: boolean;
      try {
        began = this.begin(wait);
      } catch (e) {
        p.reject(e);
        continue;
      }
      if (!began) {
        this.later(batch.slice(i));
        return;
      }
      try {
        const v = p.run();
        this.st.commit.run();
        p.resolve(v);
      } catch (e) {
        if (this.db.inTransaction) this.st.rollback.run();
        p.reject(e);
      }
    }
  }

  enqueue(m: NewMessage, lease?: { owner: string; ms: number }): Promise<QueueMessage> {
    const row = messageRow(m, lease);
    return this.write(() => this.insert(m, row, lease)).then(() => committedMessage(m, row.sha256, !!lease));
  }

  enqueueAll(ms: readonly NewEntry[]): Promise<QueueMessage[]> {
    const rows = ms.map((e) => messageRow(e.message, e.lease));
    return this.write(() => ms.forEach((e, i) => this.insert(e.message, rows[i], e.lease))).then(() =>
      ms.map((e, i) => committedMessage(e.message, rows[i].sha256, !!e.lease)),
    );
  }

  /** Inside a write: the message, its data and its recipients. */
  private insert(m: NewMessage, row: MessageRow, lease: { ms: number } | undefined): void {
    // The lease runs from the commit, not from the reception: the commit may wait for another
    // process's write lock longer than a short queue.leaseSeconds.
    if (lease) row.until = Date.now() + lease.ms;
    this.st.insMsg.run(row);
    this.st.insBody.run(m.id, m.data);
    m.recipients.forEach((r, i) =>
      this.st.insRcpt.run(m.id, i, r.address, r.org, r.route, r.notify ?? null, r.orcpt ?? null, m.receivedAt),
    );
  }

  // Leases run from the commit (`now` is taken inside the write), as in enqueue.
  claim(owner: string, limit: number, leaseMs: number, now?: number): Promise<QueueMessage[]> {
    return this.write(() => this.claimNow(owner, limit, leaseMs, now ?? Date.now()));
  }

  claimWithData(owner: string, limit: number, leaseMs: number, now?: number): Promise<ClaimedMessage[]> {
    return this.write(() =>
      this.claimNow(owner, limit, leaseMs, now ?? Date.now()).map((message) => ({
        message,
        data: (this.st.body.get(message.id) as Buffer | undefined) ?? null,
      })),
    );
  }

  /**
   * The due probes reading at most `limit` entries each or a little more: the limit is rounded up
   * to a power of two, so that a few statements serve every limit (claimNow keeps `limit`).
   */
  private dueProbes(limit: number): Database.Statement[] {
    const cap = 2 ** Math.ceil(Math.log2(Math.max(1, limit)));
    let probes = this.dueByCap.get(cap);
    if (!probes) {
      probes = DUE_SQL.map((sql) => this.db.prepare(sql + cap).raw());
      this.dueByCap.set(cap, probes);
    }
    return probes;
  }

  /** Inside a write: lease the due messages and read their open recipients. */
  private claimNow(owner: string, limit: number, leaseMs: number, now: number): QueueMessage[] {
    const due = this.dueProbes(limit).flatMap((st) => st.all(now) as [string, number][]);
    due.sort((a, b) => a[1] - b[1]);
    return due.slice(0, limit).map(([id]) => {
      this.st.lease.run(owner, now + leaseMs, now, id);
      return toMessage(this.st.msg.get(id) as Row, this.st.rcptsOpen.all(id) as Row[]);
    });
  }

  async data(id: string, limit?: number): Promise<Buffer | null> {
    // substr of a BLOB counts octets: only the prefix reaches JavaScript (SQLite reads the value whole).
    const v = limit === undefined ? this.st.body.get(id) : this.st.bodyHead.get(limit, id);
    return (v as Buffer | undefined) ?? null;
  }

  complete(
    id: string,
    owner: string,
    outcomes: RecipientOutcome[],
    nextAttemptAt: number,
    opts: { delayWarned?: boolean; gen?: number } = {},
  ): Promise<CompleteResult> {
    return this.write((): CompleteResult => {
      const now = Date.now();
      const msg = this.st.leaseOf.get(id) as Row | undefined;
      if (!msg) return null;
      if (
        (msg.state === 'active' && msg.lease_owner !== owner) ||
        (opts.gen !== undefined && msg.lease_gen !== opts.gen)
      )
        return 'fenced';
      for (const o of outcomes) {
        this.st.updRcpt.run(o.status, JSON.stringify(o.reply), now, id, o.idx);
        this.st.insEvent.run(
          id,
          now,
          'delivery',
          JSON.stringify({ rcpt: o.idx, status: o.status, agent: o.agent, reply: o.reply, ...o.detail }),
        );
      }
      const open = this.st.openCount.get(id) as number;
      const state: MessageState = open === 0 ? 'done' : 'deferred';
      const lastDeferred = outcomes.filter((o) => o.status === 'deferred').at(-1);
      this.st.finish.run({
        id,
        state,
        next: state === 'done' ? now : nextAttemptAt,
        err: lastDeferred ? JSON.stringify(lastDeferred.reply) : null,
        now,
        warned: opts.delayWarned ? 1 : 0,
      });
      if (state === 'done') this.st.delBody.run(id);
      return state;
    });
  }

  async get(id: string): Promise<QueueMessage | null> {
    const r = this.st.msg.get(id) as Row | undefined;
    return r ? toMessage(r, this.st.rcptsAll.all(id) as Row[]) : null;
  }

  async list(filter: QueueFilter = {}): Promise<QueueMessage[]> {
    const states = filter.states ?? ['incoming', 'active', 'deferred', 'held'];
    // The order's index serves the page: `+state` keeps the planner from looking the states up in
    // messages_due instead and sorting every queued message. Without done messages the partial
    // index messages_queued serves it (SQLite uses it only when the query says its condition as written).
    const where = [`+state IN (${states.map(() => '?').join(',')})`];
    const args: unknown[] = [...states];
    if (!states.includes('done')) where.push(`state <> 'done'`);
    if (filter.org !== undefined) {
      where.push('org = ?');
      args.push(filter.org);
    }
    if (filter.after !== undefined) {
      where.push('(received_at, id) > (SELECT received_at, id FROM messages WHERE id = ?)');
      args.push(filter.after);
    }
    const rows = this.db
      .prepare(`SELECT * FROM messages WHERE ${where.join(' AND ')} ORDER BY received_at, id LIMIT ? OFFSET ?`)
      .all(...args, filter.limit ?? 1000, filter.offset ?? 0) as Row[];
    return rows.map((r) => toMessage(r, this.st.rcptsAll.all(r.id) as Row[]));
  }

  async search(f: TraceFilter): Promise<QueueMessage[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (f.queueId) {
      where.push('m.id = ?');
      args.push(f.queueId);
    }
    if (f.messageId) {
      where.push('(m.message_id = ? OR m.message_id = ?)');
      args.push(f.messageId, `<${f.messageId.replace(/^<|>$/g, '')}>`);
    }
    if (f.sender) {
      where.push('lower(m.mail_from) = lower(?)');
      args.push(f.sender);
    }
    if (f.recipient) {
      where.push('m.id IN (SELECT msg_id FROM recipients WHERE lower(address) = lower(?))');
      args.push(f.recipient);
    }
    if (f.since !== undefined) {
      where.push('m.received_at >= ?');
      args.push(f.since);
    }
    if (f.until !== undefined) {
      where.push('m.received_at <= ?');
      args.push(f.until);
    }
    if (f.org !== undefined) {
      where.push('m.org = ?');
      args.push(f.org);
    }
    if (f.status) {
      where.push('EXISTS (SELECT 1 FROM recipients r WHERE r.msg_id = m.id AND r.status = ?)');
      args.push(f.status);
    }
    const attempt = (cond: string) =>
      `EXISTS (SELECT 1 FROM events e WHERE e.msg_id = m.id AND e.kind = 'delivery' AND ${cond})`;
    if (f.tlsLevel) {
      where.push(attempt(`json_extract(e.data, '$.tlsAchieved') = ?`));
      args.push(f.tlsLevel);
    }
    if (f.connector) {
      where.push(
        `(lower(json_extract(m.inbound, '$.connector.name')) = lower(?) OR ` +
          `${attempt(`lower(json_extract(e.data, '$.connector')) = lower(?)`)})`,
      );
      args.push(f.connector, f.connector);
    }
    const rows = this.db
      .prepare(
        `SELECT * FROM messages m ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY m.received_at ` +
          `DESC, m.id DESC LIMIT ? OFFSET ?`,
      )
      .all(...args, f.limit ?? 100, f.offset ?? 0) as Row[];
    return rows.map((r) => toMessage(r, this.st.rcptsAll.all(r.id) as Row[]));
  }

  async trace(id: string): Promise<TraceEvent[]> {
    return (this.st.events.all(id) as Row[]).map((e) => ({
      ts: e.ts as number,
      kind: e.kind as string,
      data: JSON.parse(e.data as string),
    }));
  }

  retryNow(id: string): Promise<boolean> {
    return this.write(() => {
      const now = Date.now();
      return this.st.retry.run(now, now, id).changes > 0;
    });
  }

  deleteQueued(id: string, by: string, now = Date.now()): Promise<DeleteResult> {
    return this.write((): DeleteResult => {
      const msg = this.st.leaseOf.get(id) as Row | undefined;
      if (!msg) return { deleted: false, why: 'unknown' };
      if (msg.state === 'done') return { deleted: false, why: 'finished' };
      if (msg.state === 'active' && (msg.lease_until as number) >= now) return { deleted: false, why: 'inDelivery' };
      const rcpts = this.st.rcptsDelete.all(now, id) as number[];
      this.st.insEvent.run(id, now, 'deleted', JSON.stringify({ by, rcpts, state: msg.state }));
      this.st.markDone.run({ id, now });
      this.st.delBody.run(id);
      return { deleted: true, recipients: rcpts.length };
    });
  }

  requestBounce(id: string, by: string, now = Date.now()): Promise<BounceResult> {
    return this.write((): BounceResult => {
      const msg = this.st.leaseOf.get(id) as Row | undefined;
      if (!msg) return { requested: false, why: 'unknown' };
      if (msg.state === 'done') return { requested: false, why: 'finished' };
      if (msg.state === 'active' && (msg.lease_until as number) >= now) return { requested: false, why: 'inDelivery' };
      this.st.bounce.run({ id, by, now });
      this.st.insEvent.run(id, now, 'bounceRequested', JSON.stringify({ by, state: msg.state }));
      return { requested: true, recipients: this.st.openCount.get(id) as number };
    });
  }

  createToken(t: NewAdminToken): Promise<void> {
    return this.write(() => this.admin.createToken(t));
  }
  async tokenByHash(hash: string): Promise<AdminToken | null> {
    return this.admin.tokenByHash(hash);
  }
  async tokens(): Promise<AdminToken[]> {
    return this.admin.tokens();
  }
  revokeToken(idOrName: string, now = Date.now()): Promise<AdminToken | null> {
    return this.write(() => this.admin.revokeToken(idOrName, now));
  }
  appendAudit(e: AuditEntry): Promise<number> {
    return this.write(() => this.admin.appendAudit(e));
  }
  async auditLog(f: AuditFilter): Promise<(AuditEntry & { id: number })[]> {
    return this.admin.auditLog(f);
  }
  addReportCounts(rows: readonly ReportCount[]): Promise<void> {
    return this.write(() => this.admin.addReportCounts(rows));
  }
  async sumReportCounts(q: ReportQuery): Promise<ReportSum[]> {
    return this.admin.sumReportCounts(q);
  }
  purgeReportCounts(before: number): Promise<number> {
    return this.write(() => this.admin.purgeReportCounts(before));
  }

  purgeDone(before: number, limit: number): Promise<number> {
    return this.write(() => {
      const ids = this.st.finishedBefore.all(before, limit) as string[];
      for (const id of ids) {
        this.st.delEvents.run(id);
        this.st.delRcpts.run(id);
        this.st.delBody.run(id);
        this.st.delMsg.run(id);
      }
      return ids.length;
    });
  }

  async nextDue(): Promise<number | null> {
    return (this.st.nextDue.get() as number | null) ?? null;
  }

  countTlsSessions(rows: readonly TlsSessionCount[]): Promise<void> {
    return this.write(() => {
      for (const r of rows) {
        this.st.tlsCount.run({
          day: r.day,
          domain: r.policyDomain,
          policy: JSON.stringify(r.policy),
          result: r.resultType ?? '',
          sip: r.sendingIp ?? '',
          mx: r.mxHost ?? '',
          mxip: r.mxIp ?? '',
          reason: r.reason ?? '',
          count: r.count,
        });
      }
    });
  }

  async tlsSessions(day: string): Promise<TlsSessionCount[]> {
    return (this.st.tlsDay.all(day) as Row[]).map((r) => ({
      day: r.day as string,
      policyDomain: r.policy_domain as string,
      policy: JSON.parse(r.policy as string),
      count: r.count as number,
      ...(r.result_type ? { resultType: r.result_type as TlsSessionCount['resultType'] } : {}),
      ...(r.sending_ip ? { sendingIp: r.sending_ip as string } : {}),
      ...(r.mx_host ? { mxHost: r.mx_host as string } : {}),
      ...(r.mx_ip ? { mxIp: r.mx_ip as string } : {}),
      ...(r.reason ? { reason: r.reason as string } : {}),
    }));
  }

  tlsReportSent(r: TlsReportSent): Promise<void> {
    return this.write(() => {
      this.st.tlsSent.run(r.day, r.policyDomain, r.reportId, r.at, JSON.stringify(r.destinations));
    });
  }

  async tlsReportsSent(day: string): Promise<TlsReportSent[]> {
    return (this.st.tlsSentDay.all(day) as Row[]).map((r) => ({
      day: r.day as string,
      policyDomain: r.policy_domain as string,
      reportId: r.report_id as string,
      at: r.at as number,
      destinations: JSON.parse(r.destinations as string),
    }));
  }

  addReceivedTlsReport(r: ReceivedTlsReport): Promise<void> {
    return this.write(() => {
      this.st.tlsRecv.run(
        r.receivedAt,
        r.queueId,
        r.mailFrom,
        r.organization ?? null,
        r.reportId ?? null,
        r.content,
        r.problem ?? null,
      );
    });
  }

  async receivedTlsReports(limit: number): Promise<ReceivedTlsReport[]> {
    return (this.st.tlsRecvList.all(limit) as Row[]).map((r) => ({
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
    return (this.st.stsGet.get(domain) as StsPolicyEntry | undefined) ?? null;
  }

  saveStsPolicy(e: StsPolicyEntry): Promise<void> {
    return this.write(() => {
      this.st.stsPut.run(e);
    });
  }

  releaseLeases(owner?: string): Promise<number> {
    return this.write(
      () => (owner === undefined ? this.st.release.run(Date.now()) : this.st.releaseOwn.run(Date.now(), owner)).changes,
    );
  }

  renew(owner: string, leases: HeldLease[], leaseMs: number, now?: number): Promise<string[]> {
    return this.write(() => {
      const until = (now ?? Date.now()) + leaseMs;
      return leases
        .filter((l) => this.st.renew.run({ id: l.id, gen: l.gen, owner, until }).changes > 0)
        .map((l) => l.id);
    });
  }

  heartbeat(n: NodeBeat, now = Date.now()): Promise<void> {
    return this.write(() => {
      this.st.beat.run({ ...n, now });
      this.st.forgetNodes.run(now - NODE_FORGET_MS);
    });
  }

  nodeStopped(id: string, pid: number, now = Date.now()): Promise<void> {
    return this.write(() => {
      this.st.nodeStopped.run(now, id, pid);
    });
  }

  async nodes(now = Date.now()): Promise<NodeStatus[]> {
    return (this.st.nodes.all(now) as Row[]).map(toNode);
  }

  async depth(): Promise<QueueDepth> {
    return toDepth(this.st.depth.get() as Row | undefined);
  }

  async memoryGet(kind: string, key: string, now = Date.now()): Promise<SharedEntry | null> {
    return this.cluster.get(kind, key, now);
  }
  memorySet(kind: string, key: string, value: unknown, until: number, now = Date.now()): Promise<void> {
    return this.write(() => this.cluster.set(kind, key, value, until, now));
  }
  memoryDelete(kind: string, key: string): Promise<void> {
    return this.write(() => this.cluster.delete(kind, key));
  }
  memoryClaim(kind: string, key: string, value: unknown, until: number, now = Date.now()): Promise<boolean> {
    return this.write(() => this.cluster.claim(kind, key, value, until, now));
  }
  memoryExpire(now: number, max: number): Promise<number> {
    return this.write(() => this.cluster.expire(now, max));
  }
  setDraining(node: string, on: boolean): Promise<boolean> {
    return this.write(() => this.cluster.setDraining(node, on));
  }
  requestControl(node: string, kind: ControlKind, by: string, now = Date.now()): Promise<number> {
    return this.write(() => this.cluster.request(node, kind, by, now));
  }
  async nodeDirectives(node: string): Promise<NodeDirectives> {
    return this.cluster.directives(node);
  }
  answerControl(id: number, ok: boolean, message: string, now = Date.now()): Promise<void> {
    return this.write(() => this.cluster.answer(id, ok, message, now));
  }
  async controlRequests(ids: readonly number[]): Promise<ControlRequest[]> {
    return this.cluster.requests(ids);
  }

  async close(): Promise<void> {
    clearTimeout(this.retry);
    if (this.pending.length) this.flush(true);
    await this.checkpointer?.stop();
    this.db.close();
  }
}

/** The messages row of a new message (its lease's end is set inside the write, at the commit). */
function messageRow(m: NewMessage, lease: { owner: string } | undefined) {
  return {
    id: m.id,
    org: m.org,
    receivedAt: m.receivedAt,
    mailFrom: m.mailFrom,
    messageId: m.messageId ?? null,
    size: m.data.length,
    sha256: createHash('sha256').update(m.data).digest('hex'),
    envelope: JSON.stringify(m.envelope),
    inbound: JSON.stringify(m.inbound),
    state: (lease ? 'active' : 'incoming') as MessageState,
    owner: lease?.owner ?? null,
    until: null as number | null,
    gen: lease ? 1 : 0,
  };
}
type MessageRow = ReturnType<typeof messageRow>;
