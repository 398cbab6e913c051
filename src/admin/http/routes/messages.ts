// Owns: the admin API's message trace and queue routes: search the trace, one message's timeline
// with the TLS facts of every hop, the queue with each recipient's last attempt, and the queue
// actions (retry, bounce now, delete; deleting keeps the trace). Data and actions come from
// admin/ops/queue.ts, shared with the CLI, so both answer the same.
// Promise: a message of another organisation is a 404 like one that does not exist; an action
// that cannot be done now is a 409 naming why; the actor of every action is recorded in the
// message's trace ("by token NAME") and in the audit log.
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { fieldValue, parseHeaders } from '../../../delivery/mime-parse.ts';
import type { MessageState, QueueMessage, Store, TraceFilter } from '../../../store/types.ts';
import { TLS_LEVELS } from '../../../tls/levels.ts';
import {
  messageWithTrace,
  parseTime,
  queueAction,
  queueEntryJson,
  queueList,
  refusalText,
  type QueueAction,
} from '../../ops/queue.ts';
import type { AdminDeps } from '../deps.ts';
import { ApiError, canSee, notFound, orgFilter, orgParam, paging, query, str, time, type Paging } from '../scope.ts';

const STATUSES = ['pending', 'delivered', 'deferred', 'failed', 'deleted'];
const STATES = ['incoming', 'active', 'deferred', 'held', 'done'];
const ID = {
  type: 'object',
  additionalProperties: false,
  required: ['id'],
  properties: { id: str('queue id', { pattern: '^[0-9A-Za-z]{1,64}$' }) },
};

/** The Subject of a message still stored (queued), as sent (the UI shows it as text); undefined once delivered. */
async function subjectOf(store: Store, id: string): Promise<string | undefined> {
  // The header section's first 64 KiB, not the whole message (a page lists up to 500 of them).
  const head = await store.data(id, 64 * 1024);
  if (!head) return undefined;
  return fieldValue(head, parseHeaders(head, 0, head.length), 'subject')?.slice(0, 998);
}

const summary = (m: QueueMessage) => ({
  id: m.id,
  org: m.org,
  state: m.state,
  receivedAt: new Date(m.receivedAt).toISOString(),
  mailFrom: m.mailFrom,
  messageId: m.messageId ?? null,
  size: m.size,
  inboundTls: m.inbound.tls ? { version: m.inbound.tls.version, cipher: m.inbound.tls.cipher } : null,
  clientIp: m.inbound.clientIp,
  helo: m.inbound.helo,
  recipients: m.recipients.map((r) => ({ address: r.address, status: r.status, attempts: r.attempts })),
});

export const messageRoutes =
  (deps: AdminDeps): FastifyPluginAsync =>
  async (app) => {
    /** The message when this request may see it; a 404 otherwise. */
    async function visible(req: FastifyRequest, id: string): Promise<QueueMessage> {
      const m = await deps.store().get(id);
      if (!m || !canSee(req, m.org)) throw notFound(`message ${id}`);
      return m;
    }

    app.get(
      '/api/v1/messages',
      {
        schema: {
          summary: 'message trace search, newest first (as `portcullis trace --json`)',
          tags: ['messages'],
          querystring: query({
            sender: str('envelope sender (exact, any case)', { maxLength: 320 }),
            recipient: str('envelope recipient (exact, any case)', { maxLength: 320 }),
            messageId: str('Message-ID header (with or without <>)', { maxLength: 998 }),
            queueId: str('queue id', { maxLength: 64 }),
            since: time('received at or after'),
            until: time('received at or before'),
            status: str('a recipient in this status', { enum: STATUSES }),
            tlsLevel: str('a delivery attempt achieved this TLS level', { enum: [...TLS_LEVELS] }),
            connector: str('inbound or outbound connector name', { maxLength: 200 }),
            org: orgParam,
            ...paging(),
          }),
        },
      },
      async (req) => {
        const q = req.query as Record<string, string | undefined> & Paging;
        const org = orgFilter(req, deps.config(), q.org);
        const since = parseTime(q.since, 'since');
        const until = parseTime(q.until, 'until');
        const f: TraceFilter = {
          limit: q.limit + 1,
          offset: q.offset,
          ...(org ? { org } : {}),
          ...(since !== undefined ? { since } : {}),
          ...(until !== undefined ? { until } : {}),
        };
        for (const k of ['sender', 'recipient', 'messageId', 'queueId', 'connector', 'status', 'tlsLevel'] as const)
          if (q[k] !== undefined) (f as Record<string, unknown>)[k] = q[k];
        const found = await deps.store().search(f);
        const page = found.slice(0, q.limit);
        const items = await Promise.all(
          page.map(async (m) => ({ ...summary(m), subject: (await subjectOf(deps.store(), m.id)) ?? null })),
        );
        return { limit: q.limit, offset: q.offset, more: found.length > q.limit, items };
      },
    );

    app.get(
      '/api/v1/messages/:id',
      {
        schema: {
          summary:
            'one message: envelope, inbound TLS facts, recipients and its timeline (every event, with the TLS ' +
            'facts of each delivery hop)',
          tags: ['messages'],
          params: ID,
        },
      },
      async (req) => {
        const { id } = req.params as { id: string };
        await visible(req, id);
        const m = (await messageWithTrace(deps.store(), id))!;
        return {
          ...m,
          subject: (await subjectOf(deps.store(), id)) ?? null,
          timeline: m.trace.map((e) => ({ time: new Date(e.ts).toISOString(), ...e })),
        };
      },
    );

    app.get(
      '/api/v1/queue',
      {
        schema: {
          summary:
            'the queue (as `portcullis queue list --json`): messages not done, each recipient with its last attempt',
          tags: ['queue'],
          querystring: query({
            state: {
              type: 'array',
              items: { type: 'string', enum: STATES.filter((s) => s !== 'done') },
              description: 'only these states (repeat the parameter)',
            },
            org: orgParam,
            ...paging(),
            after: str('the page after this queue id (`next` of the previous page; cheaper than offset)', {
              pattern: '^[0-9A-Za-z]{1,64}$',
            }),
          }),
        },
      },
      async (req) => {
        const q = req.query as { state?: MessageState[]; org?: string; after?: string } & Paging;
        const org = orgFilter(req, deps.config(), q.org);
        const states = q.state?.length ? q.state : (['incoming', 'active', 'deferred', 'held'] as MessageState[]);
        const { messages, traces } = await queueList(deps.store(), {
          states,
          ...(org ? { org } : {}),
          limit: q.limit + 1,
          offset: q.offset,
          ...(q.after !== undefined ? { after: q.after } : {}),
        });
        const items = await Promise.all(
          messages.slice(0, q.limit).map(async (m, i) => ({
            ...queueEntryJson(m, traces[i]),
            subject: (await subjectOf(deps.store(), m.id)) ?? null,
          })),
        );
        const more = messages.length > q.limit;
        return { limit: q.limit, offset: q.offset, more, next: more ? items[items.length - 1].id : null, items };
      },
    );

    const act = (action: QueueAction, summaryText: string) => async (req: FastifyRequest) => {
      const { id } = req.params as { id: string };
      req.audit.target = `message ${id}`;
      const m = await visible(req, id);
      req.audit.targetOrg = m.org;
      const r = await queueAction(deps.store(), action, id, `token "${req.token!.name}"`);
      if (!r.ok)
        throw new ApiError(
          r.why === 'unknown' ? 404 : 409,
          r.why === 'unknown' ? 'notFound' : 'refused',
          refusalText(action, id, r.why),
          { why: r.why },
        );
      if (action !== 'delete') deps.kick();
      return {
        ok: true,
        id,
        action,
        message: summaryText,
        ...(r.recipients !== undefined ? { recipients: r.recipients } : {}),
      };
    };
    app.post(
      '/api/v1/queue/:id/retry',
      {
        config: { action: 'queue.retry' },
        schema: { summary: 'retry a deferred or held message now', tags: ['queue'], params: ID },
      },
      act('retry', 'due now: the scheduler tries it at once'),
    );
    app.post(
      '/api/v1/queue/:id/bounce',
      {
        config: { action: 'queue.bounce' },
        schema: {
          summary: 'bounce now: return the message to its sender with a DSN instead of delivering it',
          tags: ['queue'],
          params: ID,
        },
      },
      act('bounce', 'will be returned to its sender'),
    );
    app.delete(
      '/api/v1/queue/:id',
      {
        config: { action: 'queue.delete' },
        schema: {
          summary: 'delete a queued message without delivering it or notifying the sender; its trace is kept',
          tags: ['queue'],
          params: ID,
        },
      },
      act('delete', 'deleted from the queue; its trace is kept'),
    );
  };
