// Owns: the store interface every backend implements (store/sqlite now, store/postgres later).
// Promise: a resolved write is durable (committed and synced); a rejected one wrote nothing.
import type { TlsFacts } from '../events.ts';
import type { SmtpReply } from '../errors.ts';
import type { Rfc8460Policy, Rfc8460ResultType } from '../tls/failures.ts';

export type MessageState = 'incoming' | 'active' | 'deferred' | 'held' | 'done';
/** 'deleted': taken out of the queue by an administrator (`queue delete`), never delivered. */
export type RecipientStatus = 'pending' | 'delivered' | 'deferred' | 'failed' | 'deleted';
export type Route = 'local' | 'remote';

export interface InboundFacts {
  sessionId: string;
  clientIp: string;
  clientPort: number;
  helo: string;
  protocol: string;        // ESMTP, ESMTPS, SMTP …
  receivedBy: string;      // our hostname
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
  notify?: string;   // DSN NOTIFY (comma list) as received
  orcpt?: string;    // DSN ORCPT as received (addr-type;xtext)
}

export interface NewMessage {
  id: string;
  org: string;
  receivedAt: number;
  mailFrom: string;        // "" for the null sender
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
  recipients: QueueRecipient[];
}

export interface TraceFilter {
  queueId?: string;
  messageId?: string;
  sender?: string;
  recipient?: string;
  since?: number;
  until?: number;
  limit?: number;
}

export interface RecipientOutcome {
  idx: number;
  status: 'delivered' | 'deferred' | 'failed';
  reply: SmtpReply;
  agent: string;             // "maildir", "smtp" …
  detail?: Record<string, unknown>;  // trace facts: host, ip, tls, policy …
}

export interface TraceEvent {
  ts: number;
  kind: string;
  data: Record<string, unknown>;
}

/** What `deleteQueued` did: deleted (how many recipients were still open), or why not. */
export type DeleteResult =
  | { deleted: true; recipients: number }
  | { deleted: false; why: 'unknown' | 'finished' | 'inDelivery' };

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

export interface QueueFilter {
  states?: MessageState[];
  limit?: number;
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

export interface Store {
  /**
   * Durably store a new message; resolves only after the commit is synced. With `lease`, the
   * message is stored already claimed by that owner (direct handoff to a local delivery worker).
   */
  enqueue(m: NewMessage, lease?: { owner: string; ms: number }): Promise<QueueMessage>;
  /** Lease up to `limit` due messages to `owner`; returns them with their unfinished recipients. */
  claim(owner: string, limit: number, leaseMs: number, now?: number): Promise<QueueMessage[]>;
  /** The stored message data. */
  data(id: string): Promise<Buffer | null>;
  /** Record per-recipient outcomes, release the lease; `nextAttemptAt` for what remains. */
  complete(id: string, owner: string, outcomes: RecipientOutcome[], nextAttemptAt: number, opts?: { delayWarned?: boolean }): Promise<MessageState | null>;
  /** Messages matching every given criterion (any state), newest first. */
  search(f: TraceFilter): Promise<QueueMessage[]>;
  get(id: string): Promise<QueueMessage | null>;
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
   * Trace retention: forget up to `limit` done messages that finished before `before` (ms epoch),
   * with their recipients and trace events, oldest first. Returns how many were forgotten.
   */
  purgeDone(before: number, limit: number): Promise<number>;
  /** When the next message becomes due (ms epoch), or null when nothing waits. */
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
  /** Single-node start-up: leases of a previous (crashed) process are released. */
  releaseLeases(): Promise<number>;
  close(): Promise<void>;
}
