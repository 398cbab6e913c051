// Owns: the admin API's connector routes: list, show, validate (each smart host or MX host probed
// as delivery would meet it, optionally with a test message) and test send (one small test message
// through the connector, with the TLS facts of the host that took it). What connectors are, how
// one is validated and where a test message may go is admin/ops/connectors.ts, shared with the CLI.
// Promise: another organisation's connector is a 404 like one that does not exist; a host that
// fails validation is a report (200, passes: false), not an error. A test message goes only to an
// address in a domain the connector serves, and at most TEST_SENDS (per connector, per
// organisation, per node) are sent: beyond that a 429 says which limit and when the next may go.
// One organisation cannot use up another's test messages (the node's limit is well above one
// organisation's).
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { AdminError } from '../../../errors.ts';
import type { OutboundConnector } from '../../../config/load.ts';
import { allConnectors, testRecipient, testSend, validateConnector, type AnyConnector } from '../../ops/connectors.ts';
import type { AdminDeps } from '../deps.ts';
import { Limits } from '../limit.ts';
import { ApiError, canSee, notFound, orgFilter, orgParam, query, str } from '../scope.ts';

/** Test messages: one per connector per minute, ten per organisation and a hundred per node per hour. */
export const TEST_SENDS = {
  perConnector: { max: 1, windowMs: 60_000 },
  perOrganization: { max: 10, windowMs: 3_600_000 },
  perNode: { max: 100, windowMs: 3_600_000 },
};

/** What a 429 says of the limit reached. */
const REACHED: Record<keyof typeof TEST_SENDS, (x: AnyConnector) => string> = {
  perConnector: (x) =>
    `a test message went through connector "${x.name}" less than ${TEST_SENDS.perConnector.windowMs / 1000} s ago`,
  perOrganization: (x) =>
    `organization ${x.organization} sent ${TEST_SENDS.perOrganization.max} test messages in the last hour`,
  perNode: () => `this node sent ${TEST_SENDS.perNode.max} test messages in the last hour`,
};

const PARAMS = {
  type: 'object',
  additionalProperties: false,
  required: ['org', 'name'],
  properties: { org: str('organization', { maxLength: 200 }), name: str('connector name', { maxLength: 200 }) },
};

export const connectorRoutes =
  (deps: AdminDeps): FastifyPluginAsync =>
  async (app) => {
    const budget = new Limits(TEST_SENDS);

    /**
     * Run `send` under the test-message limits: refused with a 429 (Retry-After) when a limit is
     * reached; the reservation is given back when `send` reports that nothing was sent.
     */
    async function limited<T>(
      x: AnyConnector,
      reply: FastifyReply,
      send: () => Promise<{ result: T; sent: boolean }>,
    ): Promise<T> {
      const keys = {
        perConnector: `${x.organization}/${x.name.toLowerCase()}`,
        perOrganization: x.organization,
        perNode: 'node',
      };
      const at = Date.now();
      const refused = budget.take(keys, at);
      if (refused) {
        const seconds = Math.ceil(refused.waitMs / 1000);
        reply.header('retry-after', String(seconds));
        throw new ApiError(429, 'rateLimited', `${REACHED[refused.limit](x)}: try again in ${seconds} s`, {
          retryAfterSeconds: seconds,
        });
      }
      let sent = false;
      try {
        const r = await send();
        sent = r.sent;
        return r.result;
      } finally {
        if (!sent) budget.release(keys, at);
      }
    }

    const outbound = (x: AnyConnector, what: string): OutboundConnector => {
      if (x.direction !== 'outbound')
        throw new AdminError(`"${x.name}" is an inbound connector; ${what} outbound connectors`);
      return x;
    };

    function find(req: FastifyRequest): AnyConnector {
      const { org, name } = req.params as { org: string; name: string };
      const x = allConnectors(deps.config()).find(
        (c) => c.organization === org && c.name.toLowerCase() === name.toLowerCase(),
      );
      if (!x || !canSee(req, x.organization)) throw notFound(`connector "${name}" in organization ${org}`);
      return x;
    }

    app.get(
      '/api/v1/connectors',
      {
        schema: {
          summary: 'every connector the token sees (as `portcullis connector list --json`)',
          tags: ['connectors'],
          querystring: query({
            org: orgParam,
            direction: str('inbound or outbound', { enum: ['inbound', 'outbound'] }),
          }),
        },
      },
      async (req) => {
        const q = req.query as { org?: string; direction?: string };
        const org = orgFilter(req, deps.config(), q.org);
        return {
          items: allConnectors(deps.config()).filter(
            (x) => (!org || x.organization === org) && (!q.direction || x.direction === q.direction),
          ),
        };
      },
    );

    app.get(
      '/api/v1/connectors/:org/:name',
      { schema: { summary: 'one connector with every setting', tags: ['connectors'], params: PARAMS } },
      async (req) => find(req),
    );

    app.post(
      '/api/v1/connectors/:org/:name/validate',
      {
        config: { action: 'connector.validate' },
        schema: {
          summary:
            'connect to each smart host or MX host of an outbound connector and judge its tlsSettings (as ' +
            '`portcullis connector validate`)',
          tags: ['connectors'],
          params: PARAMS,
          body: {
            type: 'object',
            additionalProperties: false,
            properties: {
              recipient: str('an address whose domain picks the MX hosts; with send, where the test message goes', {
                maxLength: 320,
              }),
              send: {
                type: 'boolean',
                default: false,
                description: 'also send a test message through each host that passes',
              },
            },
          },
        },
      },
      async (req, reply) => {
        const { org, name } = req.params as { org: string; name: string };
        req.audit.target = `connector "${name}"`;
        const x = find(req);
        req.audit.targetOrg = x.organization;
        const body = (req.body ?? {}) as { recipient?: string; send?: boolean };
        const out = outbound(x, 'validate checks');
        // With send, the test messages follow the rules of test-send (where to, how many).
        const recipient = body.send ? await testRecipient(deps.config(), out, body.recipient) : body.recipient;
        const run = async () => {
          const hosts = await validateConnector(deps.config(), await deps.probeTools(), x, {
            ...(recipient ? { recipient } : {}),
            send: !!body.send,
          });
          return { result: hosts, sent: hosts.some((h) => h.testMessage?.startsWith('250')) };
        };
        const hosts = body.send ? await limited(x, reply, run) : (await run()).result;
        const passes = hosts.length > 0 && hosts.every((h) => h.passes);
        req.audit.detail =
          `${passes ? 'PASS' : 'FAIL'}: ${hosts.filter((h) => h.passes).length} of ` +
          `${hosts.length} host(s) meet the requirement`;
        return { connector: x.name, org, passes, hosts };
      },
    );

    app.post(
      '/api/v1/connectors/:org/:name/test-send',
      {
        config: { action: 'connector.testSend' },
        schema: {
          summary:
            'send one small test message through an outbound connector, as delivery would (smart hosts or MX ' +
            "hosts in order, each judged against the connector's TLS requirement), and report the host that " +
            'took it with the TLS facts of its session; at most one per connector per minute',
          tags: ['connectors'],
          params: PARAMS,
          body: {
            type: 'object',
            additionalProperties: false,
            properties: {
              recipient: str(
                'where the test message goes: an address in a domain the connector serves (default: postmaster ' +
                  "of the connector's first recipient domain)",
                { maxLength: 320 },
              ),
            },
          },
        },
      },
      async (req, reply) => {
        const { org, name } = req.params as { org: string; name: string };
        req.audit.target = `connector "${name}"`;
        const x = find(req);
        req.audit.targetOrg = x.organization;
        const out = outbound(x, 'test messages go through');
        const recipient = await testRecipient(
          deps.config(),
          out,
          ((req.body ?? {}) as { recipient?: string }).recipient,
        );
        const r = await limited(x, reply, async () => {
          const result = await testSend(deps.config(), await deps.probeTools(), out, recipient);
          return { result, sent: result.sent };
        });
        const last = r.via ?? r.hosts.at(-1);
        req.audit.detail = r.sent
          ? `sent to ${recipient} via ${r.via!.host} [${r.via!.ip ?? ''}]:${r.via!.port}` +
            `${r.via!.tls ? ` over ${r.via!.tls.version}` : ' in plaintext'}: ${r.via!.testMessage ?? ''}`
          : `not sent to ${recipient}: ${last?.reason ?? 'no host to try'}`;
        return { connector: x.name, org, ...r };
      },
    );
  };
