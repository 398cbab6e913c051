// Owns: the SQLite schema (one migration list; version in user_version).
import type { Migration } from '../migrations.ts';

export const migrations: Migration[] = [
  {
    name: 'messages, bodies, recipients and trace events',
    sql: `CREATE TABLE messages (
     id TEXT PRIMARY KEY,
     org TEXT NOT NULL,
     state TEXT NOT NULL,
     received_at INTEGER NOT NULL,
     mail_from TEXT NOT NULL,
     message_id TEXT,
     size INTEGER NOT NULL,
     sha256 TEXT NOT NULL,
     envelope TEXT NOT NULL,
     inbound TEXT NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     next_attempt_at INTEGER NOT NULL,
     last_error TEXT,
     lease_owner TEXT,
     lease_until INTEGER,
     updated_at INTEGER NOT NULL
   );
   CREATE INDEX messages_due ON messages(state, next_attempt_at);
   CREATE INDEX messages_received ON messages(received_at);
   CREATE TABLE bodies (id TEXT PRIMARY KEY, data BLOB NOT NULL);
   CREATE TABLE recipients (
     msg_id TEXT NOT NULL,
     idx INTEGER NOT NULL,
     address TEXT NOT NULL,
     org TEXT NOT NULL,
     route TEXT NOT NULL,
     status TEXT NOT NULL,
     notify TEXT,
     orcpt TEXT,
     attempts INTEGER NOT NULL DEFAULT 0,
     last_reply TEXT,
     updated_at INTEGER NOT NULL,
     PRIMARY KEY (msg_id, idx)
   ) WITHOUT ROWID;
   CREATE INDEX recipients_address ON recipients(address);
   CREATE TABLE events (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     msg_id TEXT NOT NULL,
     ts INTEGER NOT NULL,
     kind TEXT NOT NULL,
     data TEXT NOT NULL
   );
   CREATE INDEX events_msg ON events(msg_id, id);`,
  },
  {
    name: 'delay warnings sent once per message; sender and Message-ID indexes',
    sql: `ALTER TABLE messages ADD COLUMN delay_warned INTEGER NOT NULL DEFAULT 0;
   CREATE INDEX messages_from ON messages(mail_from);
   CREATE INDEX messages_msgid ON messages(message_id);`,
  },
  // Trace retention finds done messages by the time they finished without scanning the table.
  {
    name: 'index of finished messages (trace retention)',
    sql: `CREATE INDEX messages_finished ON messages(state, updated_at);`,
  },
  // The same fencing generation and node table as on PostgreSQL (one store interface).
  {
    name: 'fencing generation of leases; nodes and their heartbeats',
    sql: `ALTER TABLE messages ADD COLUMN lease_gen INTEGER NOT NULL DEFAULT 0;
   CREATE TABLE nodes (
     id TEXT PRIMARY KEY,
     version TEXT NOT NULL,
     config_hash TEXT NOT NULL,
     host TEXT NOT NULL,
     pid INTEGER NOT NULL,
     started_at INTEGER NOT NULL,
     heartbeat_at INTEGER NOT NULL
   );`,
  },
  // TLS-RPT (RFC 8460): session counters per UTC day and policy domain, reports sent, reports received.
  {
    name: 'TLS-RPT counters, reports sent and received',
    sql: `CREATE TABLE tlsrpt_sessions (
     day TEXT NOT NULL,
     policy_domain TEXT NOT NULL,
     policy TEXT NOT NULL,
     result_type TEXT NOT NULL,
     sending_ip TEXT NOT NULL,
     mx_host TEXT NOT NULL,
     mx_ip TEXT NOT NULL,
     reason TEXT NOT NULL,
     count INTEGER NOT NULL,
     PRIMARY KEY (day, policy_domain, policy, result_type, sending_ip, mx_host, mx_ip, reason)
   ) WITHOUT ROWID;
   CREATE TABLE tlsrpt_sent (
     day TEXT NOT NULL,
     policy_domain TEXT NOT NULL,
     report_id TEXT NOT NULL,
     at INTEGER NOT NULL,
     destinations TEXT NOT NULL,
     PRIMARY KEY (day, policy_domain)
   ) WITHOUT ROWID;
   CREATE TABLE tlsrpt_received (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     received_at INTEGER NOT NULL,
     queue_id TEXT NOT NULL,
     mail_from TEXT NOT NULL,
     organization TEXT,
     report_id TEXT,
     content TEXT NOT NULL,
     problem TEXT
   );`,
  },
  // Cached MTA-STS policies (RFC 8461 §5.1), one per policy domain.
  {
    name: 'cached MTA-STS policies',
    sql: `CREATE TABLE sts_policies (
     domain TEXT PRIMARY KEY,
     id TEXT NOT NULL,
     text TEXT NOT NULL,
     fetched_at INTEGER NOT NULL,
     expires_at INTEGER NOT NULL
   ) WITHOUT ROWID;`,
  },
  // The admin centre: "bounce now", trace search per organisation, API tokens (hashed), the
  // audit log, and report counters per kind, organisation ('*': the gateway) and time bucket.
  {
    name: 'admin centre: bounce requests, API tokens, audit log, report counters',
    sql: `ALTER TABLE messages ADD COLUMN bounce_by TEXT;
   CREATE INDEX messages_org ON messages(org, received_at);
   CREATE TABLE admin_tokens (
     id TEXT PRIMARY KEY,
     name TEXT NOT NULL,
     org TEXT,
     hash TEXT NOT NULL UNIQUE,
     created_at INTEGER NOT NULL,
     created_by TEXT NOT NULL,
     revoked_at INTEGER
   );
   CREATE UNIQUE INDEX admin_tokens_active_name ON admin_tokens(name) WHERE revoked_at IS NULL;
   CREATE TABLE audit_log (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     ts INTEGER NOT NULL,
     actor TEXT NOT NULL,
     token_id TEXT,
     org TEXT,
     action TEXT NOT NULL,
     target TEXT,
     target_org TEXT,
     result TEXT NOT NULL,
     status INTEGER,
     detail TEXT
   );
   CREATE INDEX audit_ts ON audit_log(ts);
   CREATE TABLE report_counts (
     kind TEXT NOT NULL,
     org TEXT NOT NULL,
     bucket INTEGER NOT NULL,
     d1 TEXT NOT NULL,
     d2 TEXT NOT NULL,
     d3 TEXT NOT NULL,
     d4 TEXT NOT NULL,
     n INTEGER NOT NULL,
     PRIMARY KEY (kind, org, bucket, d1, d2, d3, d4)
   ) WITHOUT ROWID;
   CREATE INDEX report_counts_bucket ON report_counts(bucket);
   CREATE INDEX report_counts_d1 ON report_counts(kind, org, d1, bucket);`,
  },
  // A cluster (or several processes on one queue): memories the nodes share (destinations down,
  // TLS fallbacks, once-only claims), a node's drain flag, and control requests for a node.
  {
    name: 'cluster: shared memories, drain flag, control requests',
    sql: `ALTER TABLE nodes ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;
   CREATE TABLE memories (
     kind TEXT NOT NULL,
     key TEXT NOT NULL,
     value TEXT NOT NULL,
     expires_at INTEGER NOT NULL,
     PRIMARY KEY (kind, key)
   ) WITHOUT ROWID;
   CREATE INDEX memories_expiry ON memories(expires_at);
   CREATE TABLE node_requests (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     node TEXT NOT NULL,
     kind TEXT NOT NULL,
     requested_at INTEGER NOT NULL,
     requested_by TEXT NOT NULL,
     answered_at INTEGER,
     ok INTEGER,
     message TEXT
   );
   CREATE INDEX node_requests_open ON node_requests(node) WHERE answered_at IS NULL;`,
  },
  // `queue list` pages in (received_at, id) order over the queued messages only: its cost follows
  // the page, not the done messages kept for the trace.
  {
    name: 'index of queued messages in list order (queue list paging)',
    sql: `CREATE INDEX messages_queued ON messages(received_at, id) WHERE state <> 'done';`,
  },
  // Trace retention finds done messages by the time they finished. On (state, updated_at) every
  // move of a message (claimed, deferred, done) rewrote its entry, since each sets updated_at: 2.2
  // of the 21 pages a relayed message wrote to the WAL. Only finished messages are in this one.
  {
    name: 'index of finished messages holds done messages only',
    sql: `CREATE INDEX messages_done ON messages(updated_at) WHERE state = 'done';
   DROP INDEX messages_finished;`,
  },
  // A claim looks for expired leases among the messages in delivery, and the next-due query for the
  // earliest lease: by (state, next_attempt_at) both read the row of every message in delivery (up
  // to queue.concurrency of them), each time. The leases get their own ordered index, as on
  // PostgreSQL. The trace's sender and recipient searches compare lower-cased: the indexes on the
  // plain columns never served them (a scan of every message, or of every recipient's entry).
  {
    name: 'index of leases by expiry; sender and recipient indexes serve the case-blind trace search',
    sql: `CREATE INDEX messages_leased ON messages(lease_until) WHERE state = 'active';
   DROP INDEX messages_from;
   CREATE INDEX messages_from ON messages(lower(mail_from));
   DROP INDEX recipients_address;
   CREATE INDEX recipients_address ON recipients(lower(address));`,
  },
  // A node that stopped cleanly says so (cluster status: stopped, not up until its heartbeat ages).
  {
    name: 'nodes: when a node stopped cleanly',
    sql: `ALTER TABLE nodes ADD COLUMN stopped_at INTEGER;`,
  },
];
