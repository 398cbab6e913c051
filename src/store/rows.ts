// Owns: turning stored rows into the store interface's objects, one definition for both backends
// (their tables have the same columns; JSON is kept as text in both), and the queue's read-only
// query that both SQL dialects run as written (depth). The next due time has one query per store:
// each follows its own indexes.
import type {
  AdminToken,
  AuditEntry,
  ControlRequest,
  MessageState,
  NewMessage,
  NodeStatus,
  QueueDepth,
  QueuedState,
  QueueMessage,
  QueueRecipient,
  ReportDim,
  ReportSum,
} from './types.ts';

export type Row = Record<string, unknown>;

export function toRecipient(x: Row): QueueRecipient {
  return {
    idx: x.idx as number,
    address: x.address as string,
    org: x.org as string,
    route: x.route as QueueRecipient['route'],
    status: x.status as QueueRecipient['status'],
    attempts: x.attempts as number,
    ...(x.notify ? { notify: x.notify as string } : {}),
    ...(x.orcpt ? { orcpt: x.orcpt as string } : {}),
    ...(x.last_reply ? { lastReply: JSON.parse(x.last_reply as string) } : {}),
  };
}

export function toMessage(r: Row, rcpts: Row[]): QueueMessage {
  return {
    id: r.id as string,
    org: r.org as string,
    state: r.state as MessageState,
    receivedAt: r.received_at as number,
    mailFrom: r.mail_from as string,
    size: r.size as number,
    sha256: r.sha256 as string,
    ...(r.message_id ? { messageId: r.message_id as string } : {}),
    envelope: JSON.parse(r.envelope as string),
    inbound: JSON.parse(r.inbound as string),
    attempts: r.attempts as number,
    nextAttemptAt: r.next_attempt_at as number,
    ...(r.last_error ? { lastError: r.last_error as string } : {}),
    delayWarned: r.delay_warned === 1 || r.delay_warned === true,
    leaseGen: (r.lease_gen as number | undefined) ?? 0,
    ...(r.bounce_by ? { bounceRequestedBy: r.bounce_by as string } : {}),
    recipients: rcpts.map(toRecipient),
  };
}

/** The queue entry a new message is once committed (`leased`: stored claimed, generation 1). */
export function committedMessage(m: NewMessage, sha256: string, leased: boolean): QueueMessage {
  return {
    id: m.id,
    org: m.org,
    state: leased ? 'active' : 'incoming',
    receivedAt: m.receivedAt,
    mailFrom: m.mailFrom,
    ...(m.messageId ? { messageId: m.messageId } : {}),
    size: m.data.length,
    sha256,
    envelope: m.envelope,
    inbound: m.inbound,
    attempts: 0,
    nextAttemptAt: m.receivedAt,
    delayWarned: false,
    leaseGen: leased ? 1 : 0,
    recipients: m.recipients.map((r, idx) => ({ ...r, idx, status: 'pending' as const, attempts: 0 })),
  };
}

export function toNode(r: Row): NodeStatus {
  return {
    id: r.id as string,
    version: r.version as string,
    configHash: r.config_hash as string,
    host: r.host as string,
    pid: r.pid as number,
    startedAt: r.started_at as number,
    lastHeartbeat: r.heartbeat_at as number,
    leases: Number(r.leases),
    draining: !!r.draining,
    ...(r.stopped_at != null ? { stoppedAt: Number(r.stopped_at) } : {}),
  };
}

/** A control request row (node_requests), either backend. */
export function toControl(r: Row): ControlRequest {
  return {
    id: Number(r.id),
    node: r.node as string,
    kind: r.kind as ControlRequest['kind'],
    requestedAt: Number(r.requested_at),
    requestedBy: r.requested_by as string,
    ...(r.answered_at !== null && r.answered_at !== undefined
      ? { answeredAt: Number(r.answered_at), ok: !!r.ok, message: (r.message as string | null) ?? '' }
      : {}),
  };
}

export const QUEUED_STATES: readonly QueuedState[] = ['incoming', 'active', 'deferred', 'held'];

/**
 * The queue's depth: one count per state, each a range of the (state, next_attempt_at) index
 * (a GROUP BY over the table would read the done messages too). One row, a column per state.
 */
export const DEPTH_SQL = `SELECT ${QUEUED_STATES.map(
  (s) => `(SELECT count(*) FROM messages WHERE state = '${s}') AS ${s}`,
).join(', ')}`;

export function toDepth(r: Row | undefined): QueueDepth {
  return Object.fromEntries(QUEUED_STATES.map((s) => [s, Number(r?.[s] ?? 0)])) as QueueDepth;
}

export function toToken(r: Row): AdminToken {
  return {
    id: r.id as string,
    name: r.name as string,
    org: (r.org as string | null) ?? null,
    createdAt: r.created_at as number,
    createdBy: r.created_by as string,
    ...(r.revoked_at != null ? { revokedAt: r.revoked_at as number } : {}),
  };
}

export function toAudit(r: Row): AuditEntry & { id: number } {
  return {
    id: r.id as number,
    ts: r.ts as number,
    actor: r.actor as string,
    org: (r.org as string | null) ?? null,
    action: r.action as string,
    result: r.result as AuditEntry['result'],
    ...(r.token_id != null ? { tokenId: r.token_id as string } : {}),
    ...(r.target != null ? { target: r.target as string } : {}),
    ...(r.target_org != null ? { targetOrg: r.target_org as string } : {}),
    ...(r.status != null ? { status: r.status as number } : {}),
    ...(r.detail != null ? { detail: r.detail as string } : {}),
  };
}

/** The dimensions of report counters, in column order (the only column names report queries use). */
export const REPORT_DIMS: readonly ReportDim[] = ['bucket', 'd1', 'd2', 'd3', 'd4'];

/** One row of a report sum: the dimensions grouped by, and n. */
export function toReportSum(r: Row, by: readonly ReportDim[]): ReportSum {
  const out: ReportSum = { n: Number(r.n) };
  for (const d of by) (out as unknown as Record<string, unknown>)[d] = d === 'bucket' ? Number(r[d]) : r[d];
  return out;
}
