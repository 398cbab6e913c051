// Owns: turning stored rows into the store interface's objects, one definition for both backends
// (their tables have the same columns; JSON is kept as text in both).
import type { MessageState, NodeStatus, QueueMessage, QueueRecipient } from './types.ts';

export type Row = Record<string, unknown>;

export function toRecipient(x: Row): QueueRecipient {
  return {
    idx: x.idx as number, address: x.address as string, org: x.org as string, route: x.route as QueueRecipient['route'],
    status: x.status as QueueRecipient['status'], attempts: x.attempts as number,
    ...(x.notify ? { notify: x.notify as string } : {}), ...(x.orcpt ? { orcpt: x.orcpt as string } : {}),
    ...(x.last_reply ? { lastReply: JSON.parse(x.last_reply as string) } : {}),
  };
}

export function toMessage(r: Row, rcpts: Row[]): QueueMessage {
  return {
    id: r.id as string, org: r.org as string, state: r.state as MessageState, receivedAt: r.received_at as number,
    mailFrom: r.mail_from as string, size: r.size as number, sha256: r.sha256 as string,
    ...(r.message_id ? { messageId: r.message_id as string } : {}),
    envelope: JSON.parse(r.envelope as string), inbound: JSON.parse(r.inbound as string),
    attempts: r.attempts as number, nextAttemptAt: r.next_attempt_at as number,
    ...(r.last_error ? { lastError: r.last_error as string } : {}),
    delayWarned: r.delay_warned === 1 || r.delay_warned === true,
    leaseGen: (r.lease_gen as number | undefined) ?? 0,
    recipients: rcpts.map(toRecipient),
  };
}

export function toNode(r: Row): NodeStatus {
  return {
    id: r.id as string, version: r.version as string, configHash: r.config_hash as string, host: r.host as string, pid: r.pid as number,
    startedAt: r.started_at as number, lastHeartbeat: r.heartbeat_at as number, leases: Number(r.leases),
  };
}

const STATES: MessageState[] = ['incoming', 'active', 'deferred', 'held', 'done'];

/** Counts per state (every state present, 0 when none). */
export function toDepth(rows: { state: string; n: number }[]): Record<MessageState, number> {
  const d = Object.fromEntries(STATES.map((s) => [s, 0])) as Record<MessageState, number>;
  for (const r of rows) if ((STATES as string[]).includes(r.state)) d[r.state as MessageState] = Number(r.n);
  return d;
}
