// Owns: the admin API's transit-security reports (reports/query.ts: built from the counters the
// store keeps as mail flows, never from the trace): inbound by TLS version and cipher with the
// plaintext share, the clients still on plaintext or the oldest TLS, outbound by how messages were
// secured, TLS deferrals and bounces by recipient domain, and the plaintext-only domains. For one
// organisation or the whole gateway, per hour or day over a chosen range.
// Promise: an organisation's token gets its own organisation's counters only (another's is a 404);
// a range is bounded (REPORT_RETENTION_DAYS; hourly series at most 31 days), so is every answer.
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { REPORT_RETENTION_DAYS } from '../../../reports/aggregate.ts';
import {
  inboundPeers,
  inboundReport,
  outboundReport,
  plaintextDomains,
  tlsFailures,
  type Granularity,
  type ReportRange,
} from '../../../reports/query.ts';
import { parseTime } from '../../ops/queue.ts';
import type { AdminDeps } from '../deps.ts';
import { ApiError, orgFilter, orgParam, paging, query, str, time, tokenOrg, type Paging } from '../scope.ts';

const DAY = 86_400_000;
const RANGE = {
  from: time('start of the range (default: 24 hours ago)'),
  until: time('end of the range (default: now)'),
  granularity: str('slot width of the series (default: hour up to 3 days, else day)', { enum: ['hour', 'day'] }),
  org: orgParam,
};

type RangeQuery = { from?: string; until?: string; granularity?: Granularity; org?: string };

function range(deps: AdminDeps, req: FastifyRequest): ReportRange {
  const q = req.query as RangeQuery;
  const now = Date.now();
  const until = parseTime(q.until, 'until', now) ?? now;
  const from = parseTime(q.from, 'from', now) ?? until - DAY;
  const bad = (field: string, message: string) =>
    new ApiError(400, 'invalid', `query parameter "${field}" ${message}`, { field });
  if (from >= until) throw bad('from', 'must be before until');
  if (until - from > REPORT_RETENTION_DAYS * DAY)
    throw bad('from', `must be at most ${REPORT_RETENTION_DAYS} days before until (counters are kept that long)`);
  const granularity = q.granularity ?? (until - from <= 3 * DAY ? 'hour' : 'day');
  if (granularity === 'hour' && until - from > 31 * DAY)
    throw bad('granularity', 'must be "day" for a range over 31 days');
  return { org: orgFilter(req, deps.config(), q.org) ?? '*', from, until, granularity };
}

export const reportRoutes =
  (deps: AdminDeps): FastifyPluginAsync =>
  async (app) => {
    const tags = ['reports'];
    app.get(
      '/api/v1/reports/inbound',
      {
        schema: {
          summary: 'inbound sessions and messages by TLS version and cipher, plaintext share, series per slot',
          tags,
          querystring: query(RANGE),
        },
      },
      async (req) => inboundReport(deps.store(), range(deps, req)),
    );

    app.get(
      '/api/v1/reports/inbound/peers',
      {
        schema: {
          summary: 'the clients (address, HELO name) still using plaintext or the oldest TLS version seen in the range',
          tags,
          querystring: query({ ...RANGE, ...paging() }),
        },
      },
      async (req) => inboundPeers(deps.store(), range(deps, req), req.query as Paging),
    );

    app.get(
      '/api/v1/reports/outbound',
      {
        schema: {
          summary:
            'outbound deliveries by how they were secured (DANE, MTA-STS, connector-forced, opportunistic TLS, ' +
            'legacy TLS, plaintext); deferrals and bounces by requirement and TLS failure',
          tags,
          querystring: query(RANGE),
        },
      },
      async (req) => outboundReport(deps.store(), range(deps, req)),
    );

    app.get(
      '/api/v1/reports/outbound/tls-failures',
      {
        schema: {
          summary:
            'messages deferred or bounced because a required TLS level failed: recipient domain × security type × ' +
            'result type (RFC 8460)',
          tags,
          querystring: query({ ...RANGE, ...paging() }),
        },
      },
      async (req) => tlsFailures(deps.store(), range(deps, req), req.query as Paging),
    );

    app.get(
      '/api/v1/tlsrpt/received',
      {
        schema: {
          summary:
            'TLS reports (RFC 8460) other mail systems sent to tlsRpt.receive, summed per reporting organization ' +
            'and policy domain (as `portcullis tlsrpt received --json`); an organization token sees its own ' +
            "domains' and no unreadable reports",
          tags,
          querystring: query({
            limit: {
              type: 'integer',
              minimum: 1,
              maximum: 10_000,
              default: 1000,
              description: 'read at most this many of the newest reports',
            },
          }),
        },
      },
      async (req) => {
        const { limit } = req.query as { limit: number };
        const { summarize } = await import('../../../tlsrpt/receive.ts');
        const reports = await deps.store().receivedTlsReports(limit);
        const org = tokenOrg(req);
        const mine =
          org === null
            ? null
            : (deps
                .config()
                .organizations.find((o) => o.name === org)
                ?.acceptedDomains.map((d) => d.domain.toLowerCase()) ?? []);
        const ours = (domain: string) =>
          mine === null || mine.some((d) => domain.toLowerCase() === d || domain.toLowerCase().endsWith(`.${d}`));
        const flagged =
          org !== null
            ? []
            : reports
                .filter((r) => r.problem)
                .map((r) => ({
                  receivedAt: new Date(r.receivedAt).toISOString(),
                  queueId: r.queueId,
                  from: r.mailFrom,
                  ...(r.organization ? { organization: r.organization } : {}),
                  problem: r.problem,
                }));
        // An organisation's token counts the reports about its domains only, not the gateway's.
        const visible =
          mine === null ? reports : reports.filter((r) => summarize([r]).some((x) => ours(x.policyDomain)));
        return { reports: visible.length, summary: summarize(visible).filter((x) => ours(x.policyDomain)), flagged };
      },
    );

    app.get(
      '/api/v1/reports/outbound/plaintext-domains',
      {
        schema: {
          summary: 'recipient domains that took mail only in plaintext in the range',
          tags,
          querystring: query({ ...RANGE, ...paging() }),
        },
      },
      async (req) => plaintextDomains(deps.store(), range(deps, req), req.query as Paging),
    );
  };
