// Owns: the data behind the trace and queue commands and the admin API's message and queue
// endpoints, so both answer the same: trace search (messages with their history), the queue list
// with each waiting recipient's last attempt, one message with its history, and the queue actions
// (retry, bounce now, delete) with the words that explain a refusal.
// Promise: reads and acts only through the Store interface; an action on a message that is not
// queued (any more) is refused with its reason, never half done.
import { AdminError } from '../../errors.ts';
import type { MessageState, QueueMessage, QueueRefusal, Store, TraceEvent, TraceFilter } from '../../store/types.ts';

export type MessageWithTrace = QueueMessage & { trace: TraceEvent[] };

/** A time as the CLI and the API take it: ISO 8601, or relative to now ("30m", "2h", "1d"); undefined when absent. */
export function parseTime(s: string | undefined, what: string, now = Date.now()): number | undefined {
  if (s === undefined) return undefined;
  const rel = /^(\d+)([smhd])$/.exec(s);
  if (rel) return now - Number(rel[1]) * { s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7 }[rel[2] as 's']!;
  const t = Date.parse(s);
  if (Number.isNaN(t))
    throw new AdminError(
      `${what} "${s}" is not a time`,
      'use an ISO time (2026-11-27T15:00Z) or a relative one (30m, 2h, 1d)',
    );
  return t;
}

/** Messages matching the filter (newest first), each with its trace events. */
export async function findMessages(store: Store, f: TraceFilter): Promise<MessageWithTrace[]> {
  const msgs = await store.search(f);
  return Promise.all(msgs.map(async (m) => ({ ...m, trace: await store.trace(m.id) })));
}

/** One message with its trace, or null. */
export async function messageWithTrace(store: Store, id: string): Promise<MessageWithTrace | null> {
  const m = await store.get(id);
  return m ? { ...m, trace: await store.trace(id) } : null;
}

/** The last delivery attempt of each recipient (by recipient index). */
export function lastAttempts(events: TraceEvent[]): Map<number, TraceEvent> {
  const last = new Map<number, TraceEvent>();
  for (const e of events) if (e.kind === 'delivery') last.set((e.data as { rcpt?: number }).rcpt as number, e);
  return last;
}

export const isOpen = (status: string): boolean => status === 'pending' || status === 'deferred';

export interface QueueListFilter {
  states?: MessageState[];
  org?: string;
  limit?: number;
  offset?: number;
  /** The page after this message (queue id): the last message of the previous page. */
  after?: string;
}

/**
 * The queue (`queue list --json`): messages with each recipient's last attempt, and the trace events of those still
 * waiting. Pages in the list's order (received, then queue id); the next page starts `after` the last message of
 * this one. Refuses an `after` that names no stored message (an empty page would look like the end), or one
 * of another organisation than `org`, in the same words.
 */
export async function queueList(
  store: Store,
  f: QueueListFilter = {},
): Promise<{ messages: QueueMessage[]; traces: TraceEvent[][] }> {
  // A cursor outside the listed organisation is as unknown as one nobody has (no other org's ids confirmed).
  const cursor = f.after === undefined ? undefined : await store.get(f.after);
  if (f.after !== undefined && (!cursor || (f.org !== undefined && cursor.org !== f.org)))
    throw new AdminError(
      `no message ${f.after} in the queue to page after`,
      'give the queue id of the last message of the previous page, or leave the cursor out to start at the beginning',
    );
  const messages = await store.list({
    ...(f.states ? { states: f.states } : {}),
    ...(f.org !== undefined ? { org: f.org } : {}),
    ...(f.limit !== undefined ? { limit: f.limit } : {}),
    ...(f.offset ? { offset: f.offset } : {}),
    ...(f.after !== undefined ? { after: f.after } : {}),
  });
  const traces = await Promise.all(
    messages.map((m) => (m.recipients.some((r) => isOpen(r.status)) ? store.trace(m.id) : Promise.resolve([]))),
  );
  return { messages, traces };
}

/** The JSON form of a queue entry: recipients carry their last attempt. */
export function queueEntryJson(m: QueueMessage, trace: TraceEvent[]): QueueMessage {
  const last = lastAttempts(trace);
  return {
    ...m,
    recipients: m.recipients.map((r) => {
      const e = last.get(r.idx);
      return e ? { ...r, lastAttempt: { ts: e.ts, ...e.data } } : r;
    }),
  };
}

export type QueueAction = 'retry' | 'bounce' | 'delete';

/** Why a queue action was refused, for the administrator. */
export function refusalText(action: QueueAction, id: string, why: QueueRefusal): string {
  switch (why) {
    case 'unknown':
      return `no message ${id} in the queue`;
    case 'finished':
      return (
        `message ${id} is no longer in the queue (delivered, failed or deleted already); \`portcullis trace ` +
        `--queue-id ${id}\` shows what happened`
      );
    case 'inDelivery':
      return `message ${id} is being delivered right now; try ${action === 'retry' ? 'again' : action} in a moment`;
  }
}

export type ActionResult = { ok: true; recipients?: number } | { ok: false; why: QueueRefusal };

/**
 * Do a queue action as `by` (who, for the trace). Retry makes a deferred or held message due now;
 * the caller then asks the scheduler to look (control socket or in-process).
 */
export async function queueAction(store: Store, action: QueueAction, id: string, by: string): Promise<ActionResult> {
  if (action === 'retry') {
    if (await store.retryNow(id)) return { ok: true };
    const m = await store.get(id);
    return { ok: false, why: !m ? 'unknown' : m.state === 'done' ? 'finished' : 'inDelivery' };
  }
  if (action === 'bounce') {
    const r = await store.requestBounce(id, by);
    return r.requested ? { ok: true, recipients: r.recipients } : { ok: false, why: r.why };
  }
  const r = await store.deleteQueued(id, by);
  return r.deleted ? { ok: true, recipients: r.recipients } : { ok: false, why: r.why };
}
