// Owns: `portcullis store copy`: moving a single-node SQLite queue and its trace history into a
// PostgreSQL store. Messages go in batches, each batch one PostgreSQL transaction that writes a
// message with its data, recipients and trace events together or not at all; a message whose id
// is already in PostgreSQL is left alone. So the copy is idempotent (running it twice copies
// nothing twice) and resumable (after a crash, the batches committed stay and a second run
// copies the rest).
// Refuses while a server uses the source: its control socket answers, or it holds the queue's
// write lock. While copying, the copy holds that lock itself (a server starting meanwhile waits,
// then fails to open the queue): the source does not change under it.
// Beside the queue: the admin centre's tables, TLS-RPT's (session counters, reports sent and
// received) and the MTA-STS policy cache, each row once (a row already in PostgreSQL stays as it is).
import Database from 'better-sqlite3';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { assertNoServer } from '../admin/control.ts';
import { AdminError } from '../errors.ts';
import type { Row } from './rows.ts';
import { queueFile, SqliteStore } from './sqlite/index.ts';
import type { PostgresStore } from './postgres/index.ts';

export interface CopyCounts {
  /** Messages in the source. */
  source: number;
  /** Copied now, with their data (queued ones), recipients and trace events. */
  messages: number;
  bodies: number;
  recipients: number;
  events: number;
  /** Already in PostgreSQL (copied before): left as they are there. */
  present: number;
  /** Of those, the ones whose state in the source is newer than in PostgreSQL (changed after the first copy). */
  differ: string[];
  /** Admin centre rows copied now: API tokens, audit log entries, report counters. */
  tokens: number;
  auditEntries: number;
  reportCounts: number;
  /** TLS-RPT rows copied now: session counters, reports sent, reports received; cached MTA-STS policies. */
  tlsSessions: number;
  tlsReportsSent: number;
  tlsReportsReceived: number;
  stsPolicies: number;
}

export interface CopyOptions {
  batchSize?: number;
  /** Called after each committed batch (progress; tests stop a copy half-way). */
  onBatch?: (counts: CopyCounts) => void;
}

/** The dataDir of a `sqlite:PATH` source: PATH is the dataDir or its queue.sqlite. */
export function sourceDataDir(p: string): string {
  const abs = path.resolve(p);
  if (existsSync(abs) && statSync(abs).isFile()) return path.dirname(abs);
  return abs;
}

export async function copySqliteToPostgres(
  dataDir: string,
  target: PostgresStore,
  opts: CopyOptions = {},
): Promise<CopyCounts> {
  const file = queueFile(dataDir);
  if (!existsSync(file)) {
    throw new AdminError(
      `no queue at ${file}`,
      'pass --from sqlite:DATADIR, the dataDir of the single-node server (it holds queue.sqlite)',
      1,
    );
  }
  await assertNoServer(dataDir);
  await new SqliteStore(dataDir, { existing: true }).close(); // a queue of an older version is upgraded first
  const db = new Database(file, { fileMustExist: true });
  try {
    db.pragma('busy_timeout = 0');
    try {
      db.exec('BEGIN IMMEDIATE');
    } catch (e) {
      if ((e as { code?: string }).code?.startsWith('SQLITE_BUSY')) {
        throw new AdminError(
          `${file} is in use: another process holds its write lock (a Portcullis server, or another copy)`,
          'stop the server that uses this dataDir (the copy moves a stopped queue), then run the copy again',
          1,
        );
      }
      throw e;
    }
    return await copyRows(db, target, opts);
  } finally {
    if (db.inTransaction) db.exec('ROLLBACK');
    db.close();
  }
}

async function copyRows(db: Database.Database, target: PostgresStore, opts: CopyOptions): Promise<CopyCounts> {
  const batchSize = opts.batchSize ?? 500;
  const counts: CopyCounts = {
    source: db.prepare('SELECT count(*) FROM messages').pluck().get() as number,
    messages: 0,
    bodies: 0,
    recipients: 0,
    events: 0,
    present: 0,
    differ: [],
    tokens: 0,
    auditEntries: 0,
    reportCounts: 0,
    tlsSessions: 0,
    tlsReportsSent: 0,
    tlsReportsReceived: 0,
    stsPolicies: 0,
  };
  const page = db.prepare('SELECT * FROM messages WHERE id > ? ORDER BY id LIMIT ?');
  const bodyOf = db.prepare('SELECT data FROM bodies WHERE id = ?');
  const rcptsOf = db.prepare('SELECT * FROM recipients WHERE msg_id = ? ORDER BY idx');
  const eventsOf = db.prepare('SELECT msg_id, ts, kind, data FROM events WHERE msg_id = ? ORDER BY id');
  let last = '';
  for (;;) {
    const msgs = page.all(last, batchSize) as Row[];
    if (!msgs.length) break;
    last = msgs[msgs.length - 1].id as string;
    const done = await target.transaction(async (c) => {
      const messages = msgs.map((m) => ({ ...m, delay_warned: m.delay_warned === 1 }));
      const inserted = new Set(
        (
          await c.query<{ id: string }>(
            `INSERT INTO messages SELECT * FROM json_populate_recordset(NULL::messages, $1) ON CONFLICT (id) DO ` +
              `NOTHING RETURNING id`,
            [JSON.stringify(messages)],
          )
        ).rows.map((r) => r.id),
      );
      const already = msgs.filter((m) => !inserted.has(m.id as string));
      const differ: string[] = [];
      if (already.length) {
        const there = await c.query<{ id: string; updated_at: number }>(
          'SELECT id, updated_at FROM messages WHERE id = ANY($1)',
          [already.map((m) => m.id)],
        );
        const at = new Map(there.rows.map((r) => [r.id, r.updated_at]));
        for (const m of already)
          if ((m.updated_at as number) > (at.get(m.id as string) ?? 0)) differ.push(m.id as string);
      }
      const fresh = msgs.filter((m) => inserted.has(m.id as string)).map((m) => m.id as string);
      const rcpts = fresh.flatMap((id) => rcptsOf.all(id) as Row[]);
      const events = fresh.flatMap((id) => eventsOf.all(id) as Row[]);
      if (rcpts.length)
        await c.query('INSERT INTO recipients SELECT * FROM json_populate_recordset(NULL::recipients, $1)', [
          JSON.stringify(rcpts),
        ]);
      if (events.length) {
        await c.query(
          `INSERT INTO events (msg_id, ts, kind, data)
          SELECT e.msg_id, e.ts, e.kind, e.data FROM json_populate_recordset(NULL::events, $1) WITH ORDINALITY AS
            e(id, msg_id, ts, kind, data, n) ORDER BY e.n`,
          [JSON.stringify(events)],
        );
      }
      let bodies = 0;
      for (const id of fresh) {
        const b = bodyOf.get(id) as { data: Buffer } | undefined;
        if (b) {
          await c.query('INSERT INTO bodies (id, data) VALUES ($1, $2)', [id, b.data]);
          bodies++;
        }
      }
      return {
        messages: fresh.length,
        present: already.length,
        differ,
        recipients: rcpts.length,
        events: events.length,
        bodies,
      };
    });
    // Counted once committed.
    counts.messages += done.messages;
    counts.present += done.present;
    counts.differ.push(...done.differ);
    counts.recipients += done.recipients;
    counts.events += done.events;
    counts.bodies += done.bodies;
    opts.onBatch?.(counts);
  }
  counts.tokens = await copyTable(db, target, 'admin_tokens', 'id', batchSize);
  counts.auditEntries = await copyTable(db, target, 'audit_log', 'id', batchSize);
  counts.reportCounts = await copyTable(db, target, 'report_counts', 'kind, org, bucket, d1, d2, d3, d4', batchSize);
  counts.tlsSessions = await copyTable(
    db,
    target,
    'tlsrpt_sessions',
    'day, policy_domain, policy, result_type, sending_ip, mx_host, mx_ip, reason',
    batchSize,
  );
  counts.tlsReportsSent = await copyTable(db, target, 'tlsrpt_sent', 'day, policy_domain', batchSize);
  counts.tlsReportsReceived = await copyTable(db, target, 'tlsrpt_received', 'id', batchSize);
  counts.stsPolicies = await copyTable(db, target, 'sts_policies', 'domain', batchSize);
  // Ids are copied as they are: new rows on PostgreSQL continue after the highest.
  for (const table of ['audit_log', 'tlsrpt_received'])
    await target.transaction((c) =>
      c.query(`SELECT setval(pg_get_serial_sequence('${table}', 'id'), GREATEST((SELECT max(id) FROM ${table}), 1))`),
    );
  return counts;
}

/**
 * Every row of a table of the same columns on both sides, in batches (one transaction each); a
 * row whose key (or another unique column) is there already stays as it is. Rows copied now.
 */
async function copyTable(
  db: Database.Database,
  target: PostgresStore,
  table:
    | 'admin_tokens'
    | 'audit_log'
    | 'report_counts'
    | 'tlsrpt_sessions'
    | 'tlsrpt_sent'
    | 'tlsrpt_received'
    | 'sts_policies',
  order: string,
  batchSize: number,
): Promise<number> {
  const page = db.prepare(`SELECT * FROM ${table} ORDER BY ${order} LIMIT ? OFFSET ?`);
  let copied = 0;
  for (let offset = 0; ; offset += batchSize) {
    const rows = page.all(batchSize, offset) as Row[];
    if (!rows.length) return copied;
    copied += await target.transaction(
      async (c) =>
        (
          await c.query(
            `INSERT INTO ${table} OVERRIDING SYSTEM VALUE
      SELECT * FROM json_populate_recordset(NULL::${table}, $1) ON CONFLICT DO NOTHING`,
            [JSON.stringify(rows)],
          )
        ).rowCount ?? 0,
    );
  }
}
