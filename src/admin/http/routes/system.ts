// Owns: the admin API's routes about the gateway itself: who the token is (/me), the node's status,
// configuration reload, the audit log, and the Prometheus metrics (/metrics).
// Promise: reload refuses an invalid configuration and keeps the running one (the answer says why);
// an organisation's token reads only its own audit entries.
import type { FastifyPluginAsync } from 'fastify';
import { parseTime } from '../../ops/queue.ts';
import type { AdminDeps } from '../deps.ts';
import { ApiError, orgFilter, paging, query, str, time, tokenOrg, type Paging } from '../scope.ts';
import { nodeUp } from '../../../store/types.ts';

export const systemRoutes =
  (deps: AdminDeps): FastifyPluginAsync =>
  async (app) => {
    app.get(
      '/api/v1/me',
      { schema: { summary: 'the token of this request and the organizations it sees', tags: ['system'] } },
      async (req) => {
        const t = req.token!;
        const orgs = deps
          .config()
          .organizations.map((o) => o.name)
          .filter((o) => t.org === null || o === t.org);
        return {
          id: t.id,
          name: t.name,
          org: t.org,
          scope: t.org === null ? 'global' : 'organization',
          organizations: orgs,
        };
      },
    );

    app.get(
      '/api/v1/status',
      {
        schema: {
          summary: 'this node: version, uptime, queue depth by state (global tokens), cluster',
          tags: ['system'],
        },
      },
      async (req) => {
        const c = deps.config();
        const now = Date.now();
        // As `cluster status`: not stopped, and a heartbeat younger than a lease.
        const alive = (await deps.store().nodes(now)).filter((n) => nodeUp(n, c.queue.leaseSeconds, now)).length;
        return {
          node: c.hostname,
          nodeId: c.nodeId,
          version: deps.version,
          startedAt: new Date(deps.startedAt).toISOString(),
          uptimeSeconds: Math.round((now - deps.startedAt) / 1000),
          cluster: {
            mode: c.store.type === 'postgres' ? 'shared store' : 'single node',
            store: c.store.type,
            nodes: alive,
          },
          ...(tokenOrg(req) === null ? { queue: await deps.store().depth() } : {}),
        };
      },
    );

    app.post(
      '/api/v1/config/reload',
      {
        config: { globalOnly: true, action: 'config.reload' },
        schema: {
          summary:
            'reload the configuration and certificates (as SIGHUP); an invalid one is refused and the ' +
            'running one stays',
          tags: ['system'],
        },
      },
      async (req, reply) => {
        const r = await deps.reload(`admin API (token "${req.token!.name}")`);
        req.audit.detail = r.message;
        if (!r.ok) throw new ApiError(409, 'refused', r.message);
        return reply.send({ ok: true, message: r.message });
      },
    );

    app.get(
      '/api/v1/audit',
      {
        schema: {
          summary: 'the audit log, newest first: every mutating call (API and CLI) with who, what, when and the result',
          tags: ['system'],
          querystring: query({
            since: time('entries at or after'),
            until: time('entries at or before'),
            action: str('e.g. queue.retry', { maxLength: 100 }),
            org: str('organization (global tokens)', { maxLength: 200 }),
            ...paging(),
          }),
        },
      },
      async (req) => {
        const q = req.query as { since?: string; until?: string; action?: string; org?: string } & Paging;
        const org = orgFilter(req, deps.config(), q.org);
        const since = parseTime(q.since, 'since');
        const until = parseTime(q.until, 'until');
        const entries = await deps.store().auditLog({
          ...(org ? { org } : {}),
          ...(since !== undefined ? { since } : {}),
          ...(until !== undefined ? { until } : {}),
          ...(q.action ? { action: q.action } : {}),
          limit: q.limit + 1,
          offset: q.offset,
        });
        return {
          limit: q.limit,
          offset: q.offset,
          more: entries.length > q.limit,
          entries: entries.slice(0, q.limit).map((e) => ({ ...e, time: new Date(e.ts).toISOString() })),
        };
      },
    );

    app.get(
      '/metrics',
      {
        config: { globalOnly: true },
        schema: { summary: 'Prometheus metrics (text exposition format)', tags: ['system'] },
      },
      async (_req, reply) => {
        const text = await deps.metrics.text();
        return reply.type(deps.metrics.contentType).send(text);
      },
    );
  };
