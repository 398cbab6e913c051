// Owns: the PostgreSQL schema (one migration list; what is applied is recorded in
// schema_migrations, one row per version). The tables mirror store/sqlite/schema.ts column for
// column (times are ms since the epoch in bigint), so `store copy` moves rows as they are.
// Several nodes: lease_gen counts the claims of a message (a fencing generation); nodes holds
// their heartbeats.
import type { Migration } from '../migrations.ts';

export const migrations: Migration[] = [
  {
    name: 'messages, bodies, recipients and trace events',
    sql: `CREATE TABLE messages (
       id text PRIMARY KEY,
       org text NOT NULL,
       state text NOT NULL,
       received_at bigint NOT NULL,
       mail_from text NOT NULL,
       message_id text,
       size bigint NOT NULL,
       sha256 text NOT NULL,
       envelope text NOT NULL,
       inbound text NOT NULL,
       attempts integer NOT NULL DEFAULT 0,
       next_attempt_at bigint NOT NULL,
       last_error text,
       lease_owner text,
       lease_until bigint,
       lease_gen bigint NOT NULL DEFAULT 0,
       delay_warned boolean NOT NULL DEFAULT false,
       updated_at bigint NOT NULL
     );
     CREATE INDEX messages_due ON messages (state, next_attempt_at);
     CREATE INDEX messages_received ON messages (received_at);
     CREATE INDEX messages_from ON messages (lower(mail_from));
     CREATE INDEX messages_msgid ON messages (message_id);
     CREATE INDEX messages_finished ON messages (state, updated_at);
     CREATE TABLE bodies (id text PRIMARY KEY, data bytea NOT NULL);
     -- Message data is mostly compressed already (attachments) or read once: no TOAST compression.
     ALTER TABLE bodies ALTER COLUMN data SET STORAGE EXTERNAL;
     CREATE TABLE recipients (
       msg_id text NOT NULL,
       idx integer NOT NULL,
       address text NOT NULL,
       org text NOT NULL,
       route text NOT NULL,
       status text NOT NULL,
       notify text,
       orcpt text,
       attempts integer NOT NULL DEFAULT 0,
       last_reply text,
       updated_at bigint NOT NULL,
       PRIMARY KEY (msg_id, idx)
     );
     CREATE INDEX recipients_address ON recipients (lower(address));
     CREATE TABLE events (
       id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
       msg_id text NOT NULL,
       ts bigint NOT NULL,
       kind text NOT NULL,
       data text NOT NULL
     );
     CREATE INDEX events_msg ON events (msg_id, id);`,
  },
  {
    name: 'nodes and their heartbeats',
    sql: `CREATE TABLE nodes (
       id text PRIMARY KEY,
       version text NOT NULL,
       config_hash text NOT NULL,
       host text NOT NULL,
       pid integer NOT NULL,
       started_at bigint NOT NULL,
       heartbeat_at bigint NOT NULL
     );
     CREATE INDEX messages_leases ON messages (lease_owner) WHERE state = 'active';`,
  },
  {
    name: 'TLS-RPT counters, reports sent and received',
    sql: `CREATE TABLE tlsrpt_sessions (
       day text NOT NULL,
       policy_domain text NOT NULL,
       policy text NOT NULL,
       result_type text NOT NULL,
       sending_ip text NOT NULL,
       mx_host text NOT NULL,
       mx_ip text NOT NULL,
       reason text NOT NULL,
       count bigint NOT NULL,
       PRIMARY KEY (day, policy_domain, policy, result_type, sending_ip, mx_host, mx_ip, reason)
     );
     CREATE TABLE tlsrpt_sent (
       day text NOT NULL,
       policy_domain text NOT NULL,
       report_id text NOT NULL,
       at bigint NOT NULL,
       destinations text NOT NULL,
       PRIMARY KEY (day, policy_domain)
     );
     CREATE TABLE tlsrpt_received (
       id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
       received_at bigint NOT NULL,
       queue_id text NOT NULL,
       mail_from text NOT NULL,
       organization text,
       report_id text,
       content text NOT NULL,
       problem text
     );`,
  },
  {
    name: 'cached MTA-STS policies',
    sql: `CREATE TABLE sts_policies (
       domain text PRIMARY KEY,
       id text NOT NULL,
       text text NOT NULL,
       fetched_at bigint NOT NULL,
       expires_at bigint NOT NULL
     );`,
  },
  {
    // The admin centre: "bounce now", trace search per organisation, API tokens (only hashes of
    // their secrets), the audit log, and report counters per kind, organisation ('*': the gateway)
    // and time bucket. Same tables and columns as the SQLite store's migration of that name.
    name: 'admin centre: bounce requests, API tokens, audit log, report counters',
    sql: `ALTER TABLE messages ADD COLUMN bounce_by text;
     CREATE INDEX messages_org ON messages (org, received_at);
     CREATE TABLE admin_tokens (
       id text PRIMARY KEY,
       name text NOT NULL,
       org text,
       hash text NOT NULL UNIQUE,
       created_at bigint NOT NULL,
       created_by text NOT NULL,
       revoked_at bigint
     );
     CREATE UNIQUE INDEX admin_tokens_active_name ON admin_tokens (name) WHERE revoked_at IS NULL;
     CREATE TABLE audit_log (
       id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
       ts bigint NOT NULL,
       actor text NOT NULL,
       token_id text,
       org text,
       action text NOT NULL,
       target text,
       target_org text,
       result text NOT NULL,
       status integer,
       detail text
     );
     CREATE INDEX audit_ts ON audit_log (ts);
     CREATE TABLE report_counts (
       kind text NOT NULL,
       org text NOT NULL,
       bucket bigint NOT NULL,
       d1 text NOT NULL,
       d2 text NOT NULL,
       d3 text NOT NULL,
       d4 text NOT NULL,
       n bigint NOT NULL,
       PRIMARY KEY (kind, org, bucket, d1, d2, d3, d4)
     );
     CREATE INDEX report_counts_bucket ON report_counts (bucket);
     CREATE INDEX report_counts_d1 ON report_counts (kind, org, d1, bucket);`,
  },
  {
    // Several nodes: memories they share (destinations down, TLS fallbacks, once-only claims), a
    // node's drain flag, and control requests for a node. Same as the SQLite store's migration.
    name: 'cluster: shared memories, drain flag, control requests',
    sql: `ALTER TABLE nodes ADD COLUMN draining boolean NOT NULL DEFAULT false;
     CREATE TABLE memories (
       kind text NOT NULL,
       key text NOT NULL,
       value text NOT NULL,
       expires_at bigint NOT NULL,
       PRIMARY KEY (kind, key)
     );
     CREATE INDEX memories_expiry ON memories (expires_at);
     CREATE TABLE node_requests (
       id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
       node text NOT NULL,
       kind text NOT NULL,
       requested_at bigint NOT NULL,
       requested_by text NOT NULL,
       answered_at bigint,
       ok boolean,
       message text
     );
     CREATE INDEX node_requests_open ON node_requests (node) WHERE answered_at IS NULL;`,
  },
  {
    // `queue list` pages in (received_at, id) order over the queued messages only: its cost follows
    // the page, not the done messages kept for the trace. Same index as the SQLite store's.
    name: 'index of queued messages in list order (queue list paging)',
    sql: `CREATE INDEX messages_queued ON messages (received_at, id) WHERE state <> 'done';`,
  },
  {
    // Every message passes through incoming, active and done (and deferred on each retry): each
    // move leaves a dead row version and dead entries in messages_due that a claim walks until
    // vacuum removes them. The defaults wait for a fifth of the table to be dead, which a burst of
    // mail into a big queue outruns (measured with bench:queue: a third more CPU per message until
    // a vacuum). Vacuum and analyze these two tables after 1 % of their rows changed; no cost
    // delay, so a vacuum keeps up with the churn it is there for. Storage settings only.
    name: 'autovacuum the queue tables after 1 % of their rows changed',
    sql: `ALTER TABLE messages SET (autovacuum_vacuum_scale_factor = 0.01,
       autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.01,
       autovacuum_vacuum_cost_delay = 0);
     ALTER TABLE recipients SET (autovacuum_vacuum_scale_factor = 0.01,
       autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_analyze_scale_factor = 0.01,
       autovacuum_vacuum_cost_delay = 0);`,
  },
  {
    // Message data up to about 8 KB (most text mail) stays in the bodies row itself: the default
    // target (2 KB) moved it into TOAST chunks, an insert and a delete of each chunk and its
    // index entry per message, for data that is written once, read once and deleted.
    name: 'keep message data up to about 8 KB in the bodies row (no TOAST chunks)',
    sql: `ALTER TABLE bodies SET (toast_tuple_target = 8160);`,
  },
  {
    // A claim reads the waiting messages in retry order and the expired leases in expiry order,
    // each by an ordered scan of an index holding only those rows (a scan stops at the first row
    // not yet due, and marks the entries of rows that moved on as dead for the next one). On
    // (state, next_attempt_at) one claim over both waiting states became a bitmap scan of every
    // waiting and active entry, dead ones included: 2 ms of server time per claim in bench:relay.
    // Rows enter these indexes only in those states, so a message's other moves skip them.
    name: 'partial indexes for claims: waiting messages by retry time, leases by expiry',
    sql: `CREATE INDEX messages_waiting ON messages (next_attempt_at) WHERE state IN ('incoming', 'deferred');
     CREATE INDEX messages_leased ON messages (lease_until, lease_owner) WHERE state = 'active';
     DROP INDEX messages_due;
     DROP INDEX messages_leases;`,
  },
  // A node that stopped cleanly says so (cluster status: stopped, not up until its heartbeat ages).
  {
    name: 'nodes: when a node stopped cleanly',
    sql: `ALTER TABLE nodes ADD COLUMN stopped_at bigint;`,
  },
];
