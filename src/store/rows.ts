// Owns: turning stored rows into the store interface's objects, one definition for both backends
// (their tables have the same columns; JSON is kept as text in both).
import type { MessageState, QueueMessage, QueueRecipient } from './types.ts';

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
    recipients: rcpts.map(toRecipient),
  };
}
