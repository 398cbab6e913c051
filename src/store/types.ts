// Owns: the store interface every backend implements (store/sqlite, store/postgres); the
// conformance suite test/unit/store/conformance.ts holds both to it. Leases carry a fencing
// generation, so that a node whose lease was taken over cannot apply a late completion. Also the
// one reading of a node row everyone shares: when a node counts as up (nodeUp).
// Promise: a resolved write is durable (committed and synced); a rejected one wrote nothing (on
// PostgreSQL, unless the connection broke while COMMIT was under way: then the write may have
// been committed although it was reported failed; a retry can duplicate, never lose).
import type { TlsFacts } from '../events.ts';
import type { SmtpReply } from '../errors.ts';
import type { Rfc8460Policy, Rfc8460ResultType } from '../tls/failures.ts';

export type MessageState = 'incoming' | 'active' | 'deferred' | 'held' | 'done';
/** The states of a message still in the queue (not done). */
export type QueuedState = Exclude<MessageState, 'done'>;
/** Messages per queued state: the queue's depth (done messages are history, not counted). */
export type QueueDepth = Record<QueuedState, number>;
/** 'deleted': taken out of the queue by an administrator (`queue delete`), never delivered. */
export type RecipientStatus = 'pending' | 'delivered' | 'deferred' | 'failed' | 'deleted';
export type Route = 'local' | 'remote';

export interface InboundFacts {
  sessionId: string;
  clientIp: string;
  clientPort: number;
  helo: string;
  protocol: string; // ESMTP, ESMTPS, SMTP …
  receivedBy: string; // our hostname
  tls?: TlsFacts;
  /** The inbound connector the transaction matched, and how. */
  connector?: { name: string; organization: string; by: 'certificate' | 'ip' | 'senderDomain' };
  /** treatMessagesAsInternal: the organisation's own servers sent it. */
  internal?: boolean;
}

export interface EnvelopeParams {
  ret?: 'FULL' | 'HDRS';
  envid?: string;
  body?: '7BIT' | '8BITMIME';
  smtputf8: boolean;
  /**
   * Longest line of the stored data in octets, CRLF excluded, recorded at ingest so delivery
   * knows about lines over 998 octets without a scan. Absent on messages stored before it was.
   */
  longestLine?: number;
  /** RFC 8689: MAIL FROM carried REQUIRETLS: relayed only over validated TLS to a peer offering REQUIRETLS. */
  requireTls?: boolean;
  /**
   * RFC 8689 §5: the header `TLS-Required: No` (recorded only without REQUIRETLS): DANE and
   * MTA-STS failures relax to opportunistic TLS; a connector's level still applies.
   */
  tlsRequiredNo?: boolean;
  /** A TLS-RPT report we generated (RFC 8460 §5.3: its own sessions are not counted). */
  tlsReport?: boolean;
}

export interface NewRecipient {
  address: string;
  org: string;
  route: Route;
  notify?: string; // DSN NOTIFY (comma list) as received
  orcpt?: string; // DSN ORCPT as received (addr-type;xtext)
}

export interface NewMessage {
  id: string;
  org: string;
  receivedAt: number;
  mailFrom: string; // "" for the null sender
  messageId?: string;
  envelope: EnvelopeParams;
  inbound: InboundFacts;
  /** The full message as stored (our Received: header first). */
  data: Buffer;
  recipients: NewRecipient[];
}

export interface QueueRecipient {
  idx: number;
  address: string;
  org: string;
  route: Route;
  status: RecipientStatus;
  attempts: number;
  notify?: string;
  orcpt?: string;
  lastReply?: SmtpReply;
}

export interface QueueMessage {
  id: string;
  org: string;
  state: MessageState;
  receivedAt: number;
  mailFrom: string;
  messageId?: string;
  size: number;
  sha256: string;
  envelope: EnvelopeParams;
  inbound: InboundFacts;
  attempts: number;
  nextAttemptAt: number;
  lastError?: string;
  delayWarned: boolean;
  /** An administrator asked to return it to the sender now ("bounce now"): who. */
  bounceRequestedBy?: string;
  /**
   * Fencing generation: how many times the message has been claimed. A claim returns the
   * generation it created; a completion or renewal carries it, and is refused once another
   * claim (another node taking over an expired lease) has moved it on.
   */
  leaseGen: number;
  recipients: QueueRecipient[];
}

/** A claimed message with its data (null: the data is gone, which delivery reports). */
export interface ClaimedMessage {
  message: QueueMessage;
  data: Buffer | null;
}

export interface TraceFilter {
  queueId?: string;
  messageId?: string;
  sender?: string;
  recipient?: string;
  since?: number;
  until?: number;
  /** Only messages of this organisation (the message's own `org`). */
  org?: string;
  /** Messages with at least one recipient in this status. */
  status?: RecipientStatus;
  /** Messages with a delivery attempt that achieved this TLS level (trace `tlsAchieved`; 'none' is plaintext). */
  tlsLevel?: string;
  /** Messages whose inbound connector, or the outbound connector of a delivery attempt, has this name (any case). */
  connector?: string;
  limit?: number;
  /** Skip this many matches first (paging). */
  offset?: number;
}

export interface RecipientOutcome {
  idx: number;
  status: 'delivered' | 'deferred' | 'failed';
  reply: SmtpReply;
  agent: string; // "maildir", "smtp" …
  detail?: Record<string, unknown>; // trace facts: host, ip, tls, policy …
}

export interface TraceEvent {
  ts: number;
  kind: string;
  data: Record<string, unknown>;
}

/** Why an administrator's queue action was not done: no such message, no longer queued, in delivery now. */
export type QueueRefusal = 'unknown' | 'finished' | 'inDelivery';

/** What `deleteQueued` did: deleted (how many recipients were still open), or why not. */
export type DeleteResult = { deleted: true; recipients: number } | { deleted: false; why: QueueRefusal };

/** What `requestBounce` did: the message is due now and will be returned (open recipients), or why not. */
export type BounceResult = { requested: true; recipients: number } | { requested: false; why: QueueRefusal };

/** A cached MTA-STS policy (RFC 8461 §5.1): the policy file as fetched, with its TXT id. */
export interface StsPolicyEntry {
  domain: string;
  /** The `id` of the `_mta-sts` TXT record when the policy was fetched. */
  id: string;
  /** The policy file as served (parsed again when read). */
  text: string;
  fetchedAt: number;
  /** fetchedAt + max_age (ms epoch): the policy is not used after this. */
  expiresAt: number;
}

/**
 * What `complete` did: the message's state afterwards, 'fenced' when the caller no longer holds
 * the lease (another owner, or a later claim: nothing was applied), null for an unknown message.
 */
export type CompleteResult = MessageState | 'fenced' | null;

/** A lease the caller holds: the message and the generation its claim returned. */
export interface HeldLease {
  id: string;
  gen: number;
}

/** What a node writes into the store with every heartbeat. */
export interface NodeBeat {
  id: string;
  version: string;
  /** Hash of the node's effective configuration (node-specific keys left out). */
  configHash: string;
  host: string;
  pid: number;
  startedAt: number;
}

export interface NodeStatus extends NodeBeat {
  lastHeartbeat: number;
  /** Messages in delivery under a lease of this node that has not expired. */
  leases: number;
  /** `cluster drain`: the node claims no new queue work (it finishes its leases). */
  draining: boolean;
  /** When the node stopped cleanly (absent while it runs, or when it died without stopping). */
  stoppedAt?: number;
}

/** Nodes without a heartbeat for this long (7 days) are forgotten: their rows are deleted. */
export const NODE_FORGET_MS = 7 * 86_400_000;

/** A node is up while it has not stopped and its heartbeat is younger than a lease (its leases hold). */
export function nodeUp(n: NodeStatus, leaseSeconds: number, now: number): boolean {
  return n.stoppedAt === undefined && now - n.lastHeartbeat <= leaseSeconds * 1000;
}

export interface QueueFilter {
  states?: MessageState[];
  /** Only messages of this organisation. */
  org?: string;
  limit?: number;
  /** Skip this many first (paging; costs the skipped rows: prefer `after`). */
  offset?: number;
  /**
   * Keyset paging: only messages after this one (a queue id, the last of the previous page) in
   * the list's order (received, then id); the page then costs its own rows, not the skipped ones.
   * An id that is not stored gives an empty page.
   */
  after?: string;
}

// ---- Cluster: what the nodes share besides the queue, drain, control requests ----

/** An entry of a shared memory (store.memory*): its value (JSON) and when it stops counting (ms epoch). */
export interface SharedEntry {
  value: unknown;
  until: number;
}

/** What an operator can ask of a node through the store (`config reload --node/--all`). */
export type ControlKind = 'reload';

/** A control request for one node, and its answer once the node has handled it. */
export interface ControlRequest {
  id: number;
  node: string;
  kind: ControlKind;
  requestedAt: number;
  /** Who asked (the operating-system user of the CLI). */
  requestedBy: string;
  answeredAt?: number;
  ok?: boolean;
  message?: string;
}

/** What a node reads from the store on its poll: its drain flag and the requests waiting for it. */
export interface NodeDirectives {
  draining: boolean;
  requests: ControlRequest[];
}

// ---- Admin centre: tokens, audit log, report counters (admin/, reports/) ----

/** A bearer token of the admin API; only a hash of its secret is stored. */
export interface AdminToken {
  id: string;
  name: string;
  /** The organisation it is limited to; null: every organisation (global). */
  org: string | null;
  createdAt: number;
  /** Who created it (the operating-system user of `admin token create`). */
  createdBy: string;
  revokedAt?: number;
}

export interface NewAdminToken extends Omit<AdminToken, 'revokedAt'> {
  /** SHA-256 of the secret, hex. */
  hash: string;
}

export type AuditResult = 'ok' | 'refused' | 'notFound' | 'invalid' | 'error';

/** One mutating call: who (token or user), what, when, on what, and how it ended. */
export interface AuditEntry {
  ts: number;
  /** Token name, or the operating-system user for CLI actions. */
  actor: string;
  tokenId?: string;
  /** The actor's organisation (null: global). */
  org: string | null;
  /** e.g. "queue.retry", "config.reload", "token.create". */
  action: string;
  target?: string;
  /** The organisation the target belongs to. */
  targetOrg?: string;
  result: AuditResult;
  /** HTTP status of the answer (API calls). */
  status?: number;
  detail?: string;
}

export interface AuditFilter {
  /** Entries by this organisation's tokens or about its objects. */
  org?: string;
  since?: number;
  until?: number;
  action?: string;
  limit?: number;
  offset?: number;
}

/**
 * One counter of the reports (reports/): `n` events of `kind` for `org` ('*' is the whole
 * gateway) in the time bucket starting at `bucket` (ms epoch, UTC hour or day start), keyed by up
 * to four dimensions whose meaning the kind defines (reports/kinds.ts). Absent dimensions are ''.
 */
export interface ReportCount {
  kind: string;
  org: string;
  bucket: number;
  d1?: string;
  d2?: string;
  d3?: string;
  d4?: string;
  n: number;
}

export type ReportDim = 'bucket' | 'd1' | 'd2' | 'd3' | 'd4';

export interface ReportQuery {
  kind: string;
  org: string;
  /** Buckets starting at or after `from` and before `until` (ms epoch). */
  from: number;
  until: number;
  /** Sum per distinct value of these; none: one grand total. */
  by: readonly ReportDim[];
  /** With 'bucket' in `by`: group buckets into slots of this width (ms, from the epoch; default: as stored). */
  bucketMs?: number;
  /**
   * Only counters whose d1 is one of these (none: no counter). Backends answer it from an index on
   * (kind, org, d1, bucket), so its cost follows these values' counters, not the range's.
   */
  d1In?: readonly string[];
}

/** A sum of counters: the dimensions asked for, and `n`. */
export interface ReportSum {
  bucket?: number;
  d1?: string;
  d2?: string;
  d3?: string;
  d4?: string;
  n: number;
}

/** TLS-RPT (RFC 8460): sessions of one kind for one policy domain on one UTC day. */
export interface TlsSessionCount {
  /** UTC day, YYYY-MM-DD. */
  day: string;
  policyDomain: string;
  policy: Rfc8460Policy;
  /** Absent for successful sessions. */
  resultType?: Rfc8460ResultType;
  sendingIp?: string;
  mxHost?: string;
  mxIp?: string;
  reason?: string;
  count: number;
}

/** A TLS-RPT report we sent (or tried to): one per policy domain and day. */
export interface TlsReportSent {
  day: string;
  policyDomain: string;
  reportId: string;
  at: number;
  /** Per destination (rua URI): what happened ("queued as …", "HTTP 200", or the error). */
  destinations: { uri: string; ok: boolean; detail: string }[];
}

/** A TLS-RPT report received (RFC 8460) at a `tlsRpt.receive` address; bad ones are kept, flagged. */
export interface ReceivedTlsReport {
  receivedAt: number;
  queueId: string;
  mailFrom: string;
  /** The report's organization-name and report-id, when readable. */
  organization?: string;
  reportId?: string;
  /** The report JSON (valid) or what could be read of the attachment (bad), at most 1 MiB. */
  content: string;
  /** Why the report is bad; absent when it is valid. */
  problem?: string;
}

/** A message to store and, optionally, the lease it is stored under (see Store.enqueue). */
export interface NewEntry {
  message: NewMessage;
  lease?: { owner: string; ms: number };
}

export interface Store {
  /**
   * Durably store a new message; resolves only after the commit is synced. With `lease`, the
   * message is stored already claimed by that owner (direct handoff to a local delivery worker).
   */
  enqueue(m: NewMessage, lease?: { owner: string; ms: number }): Promise<QueueMessage>;
  /**
   * `enqueue` for several messages in one transaction: all are stored or none (the copies of one
   * SMTP transaction for recipients of several organisations, which one reply covers).
   */
  enqueueAll(ms: readonly NewEntry[]): Promise<QueueMessage[]>;
  /** Lease up to `limit` due messages to `owner`; returns them with their unfinished recipients. */
  claim(owner: string, limit: number, leaseMs: number, now?: number): Promise<QueueMessage[]>;
  /**
   * `claim`, with each message's data read in the same transaction (the delivery needs it at
   * once): one round trip for the batch instead of one `data` per message on a database server.
   */
  claimWithData(owner: string, limit: number, leaseMs: number, now?: number): Promise<ClaimedMessage[]>;
  /** The stored message data; with `limit`, its first `limit` octets only (the rest is not read). */
  data(id: string, limit?: number): Promise<Buffer | null>;
  /**
   * Record per-recipient outcomes, release the lease; `nextAttemptAt` for what remains. Applied
   * only while the caller holds the lease: a message in delivery under another owner, or (with
   * `gen`) claimed again since, is left untouched and the result is 'fenced'.
   */
  complete(
    id: string,
    owner: string,
    outcomes: RecipientOutcome[],
    nextAttemptAt: number,
    opts?: { delayWarned?: boolean; gen?: number },
  ): Promise<CompleteResult>;
  /**
   * Extend the leases `owner` still holds (same generation, still in delivery) to `now + leaseMs`;
   * returns the ids renewed. A lease missing from the answer was taken over.
   */
  renew(owner: string, leases: HeldLease[], leaseMs: number, now?: number): Promise<string[]>;
  /**
   * Record that a node is alive (insert or update its row; it is no longer stopped). Rows of nodes
   * without a heartbeat for NODE_FORGET_MS are deleted at the same time, unless drained (the flag
   * must outlive a long maintenance).
   */
  heartbeat(node: NodeBeat, now?: number): Promise<void>;
  /**
   * Record that a node stopped cleanly (its leases handed back): it is shown stopped, not up. Only
   * while the row is still this process's (`pid`): never over a newer process of the same node id.
   */
  nodeStopped(id: string, pid: number, now?: number): Promise<void>;
  /** Every node that has sent a heartbeat, with the leases it holds, most recent first. */
  nodes(now?: number): Promise<NodeStatus[]>;
  /**
   * The queue's depth: messages per queued state (cluster status, /metrics, admin API). Counted
   * per state from the (state, next_attempt_at) index; done messages are not counted.
   */
  depth(): Promise<QueueDepth>;
  /** Messages matching every given criterion (any state), newest first. */
  search(f: TraceFilter): Promise<QueueMessage[]>;
  get(id: string): Promise<QueueMessage | null>;
  /** Messages in the given states (default: the queued ones), oldest first (received, then id). */
  list(filter?: QueueFilter): Promise<QueueMessage[]>;
  trace(id: string): Promise<TraceEvent[]>;
  /** Make a deferred/held message due now. */
  retryNow(id: string): Promise<boolean>;
  /**
   * An administrator takes a message out of the queue without delivering it: its data is
   * deleted, its open recipients become 'deleted', the message is done, and a 'deleted' trace
   * event records `by`. Envelope, recipients and trace stay (see purgeDone). A message that is
   * finished, or in delivery under a live lease, is left as it is.
   */
  deleteQueued(id: string, by: string, now?: number): Promise<DeleteResult>;
  /**
   * "Bounce now": an administrator returns a queued message to its sender. It becomes due at
   * once with `by` recorded (a 'bounceRequested' trace event); the scheduler then fails its open
   * recipients with a DSN instead of delivering. Finished messages and messages in delivery under
   * a live lease are left as they are.
   */
  requestBounce(id: string, by: string, now?: number): Promise<BounceResult>;
  /**
   * Trace retention: forget up to `limit` done messages that finished before `before` (ms epoch),
   * with their recipients and trace events, oldest first. Returns how many were forgotten.
   */
  purgeDone(before: number, limit: number): Promise<number>;
  /**
   * When the next message becomes due (ms epoch), or null when nothing waits. One index probe per
   * state: its cost does not grow with the queue.
   */
  nextDue(): Promise<number | null>;
  /** TLS-RPT: add session counts (same day, domain, policy and failure: the counts add up). */
  countTlsSessions(rows: readonly TlsSessionCount[]): Promise<void>;
  /** TLS-RPT: every counter row of a UTC day. */
  tlsSessions(day: string): Promise<TlsSessionCount[]>;
  /** TLS-RPT: record a report sent (replaces an earlier one for the same day and domain). */
  tlsReportSent(r: TlsReportSent): Promise<void>;
  /** TLS-RPT: the reports sent for a UTC day. */
  tlsReportsSent(day: string): Promise<TlsReportSent[]>;
  /** TLS-RPT: keep a received report (valid or flagged). */
  addReceivedTlsReport(r: ReceivedTlsReport): Promise<void>;
  /** TLS-RPT: received reports, newest first. */
  receivedTlsReports(limit: number): Promise<ReceivedTlsReport[]>;
  /** The cached MTA-STS policy of `domain` (expired or not), or null. */
  stsPolicy(domain: string): Promise<StsPolicyEntry | null>;
  /** Cache (or replace) the MTA-STS policy of `entry.domain`. */
  saveStsPolicy(entry: StsPolicyEntry): Promise<void>;
  /**
   * Start-up: leases of a previous (crashed) process are released: those of `owner` (a node
   * restarting among others), or every lease (a single node, the only user of its queue).
   */
  releaseLeases(owner?: string): Promise<number>;
  close(): Promise<void>;

  // Admin centre (admin/, reports/).
  /** Store a new token; rejects when an active token already has this name. */
  createToken(t: NewAdminToken): Promise<void>;
  /** The active (not revoked) token with this secret hash, or null. */
  tokenByHash(hash: string): Promise<AdminToken | null>;
  /** Every token, revoked ones included, oldest first. */
  tokens(): Promise<AdminToken[]>;
  /** Revoke the active token with this id or name; the token as revoked, or null when none matches. */
  revokeToken(idOrName: string, now?: number): Promise<AdminToken | null>;
  /** Append to the audit log; resolves with the entry's id once durable. */
  appendAudit(e: AuditEntry): Promise<number>;
  /** Audit entries matching the filter, newest first. */
  auditLog(f: AuditFilter): Promise<(AuditEntry & { id: number })[]>;
  /** Add to report counters (created at 0 when new), in one transaction. */
  addReportCounts(rows: readonly ReportCount[]): Promise<void>;
  /** Sums of report counters. */
  sumReportCounts(q: ReportQuery): Promise<ReportSum[]>;
  /** Forget report counters of buckets before `before`; how many rows went. */
  purgeReportCounts(before: number): Promise<number>;

  // Cluster: memories the nodes share (delivery/memory.ts), once-only work, drain, control requests.
  /** The entry of `kind` for `key` while it lasts (its `until` after `now`), else null. */
  memoryGet(kind: string, key: string, now?: number): Promise<SharedEntry | null>;
  /** Remember `value` (JSON) for `key` until `until`; an `until` not after `now` forgets the key. */
  memorySet(kind: string, key: string, value: unknown, until: number, now?: number): Promise<void>;
  memoryDelete(kind: string, key: string): Promise<void>;
  /**
   * Take `key` for `value` until `until` unless a live entry holds it, atomically across nodes:
   * true when this call took it (work done once for the whole cluster).
   */
  memoryClaim(kind: string, key: string, value: unknown, until: number, now?: number): Promise<boolean>;
  /** Forget what ran out and, past `max` entries of a kind, those that run out first; how many went. */
  memoryExpire(now: number, max: number): Promise<number>;
  /** `cluster drain NODE [--undo]`: set the node's drain flag; false when no node has this id. */
  setDraining(node: string, on: boolean): Promise<boolean>;
  /** Ask `node` for something (it polls); resolves with the request's id. */
  requestControl(node: string, kind: ControlKind, by: string, now?: number): Promise<number>;
  /** A node's poll: its drain flag and its unanswered requests, oldest first. */
  nodeDirectives(node: string): Promise<NodeDirectives>;
  /** The node's answer to a request. */
  answerControl(id: number, ok: boolean, message: string, now?: number): Promise<void>;
  /** Requests by id (answered or not). */
  controlRequests(ids: readonly number[]): Promise<ControlRequest[]>;
}
