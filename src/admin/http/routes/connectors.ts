// Owns: the admin API's connector routes: list, show, validate (each smart host or MX host probed
// as delivery would meet it, optionally with a test message). What connectors are and how one is
// validated is admin/ops/connectors.ts, shared with the CLI.
// Promise: another organisation's connector is a 404 like one that does not exist; a host that
// fails validation is a report (200, passes: false), not an error.
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { AdminError } from '../../../errors.ts';
import { allConnectors, validateConnector, type AnyConnector } from '../../ops/connectors.ts';
import type { AdminDeps } from '../deps.ts';
import { canSee, notFound, orgFilter, orgParam, query, str } from '../scope.ts';

const PARAMS = {
  type: 'object',
  additionalProperties: false,
  required: ['org', 'name'],
  properties: { org: str('organization', { maxLength: 200 }), name: str('connector name', { maxLength: 200 }) },
};

export const connectorRoutes =
  (deps: AdminDeps): FastifyPluginAsync =>
  async (app) => {
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
      async (req) => {
        const { org, name } = req.params as { org: string; name: string };
        req.audit.target = `connector "${name}"`;
        const x = find(req);
        req.audit.targetOrg = x.organization;
        const body = (req.body ?? {}) as { recipient?: string; send?: boolean };
        if (x.direction !== 'outbound')
          throw new AdminError(`"${x.name}" is an inbound connector; validate checks outbound connectors`);
        const hosts = await validateConnector(deps.config(), await deps.probeTools(), x, {
          ...(body.recipient ? { recipient: body.recipient } : {}),
          send: !!body.send,
        });
        const passes = hosts.length > 0 && hosts.every((h) => h.passes);
        req.audit.detail =
          `${passes ? 'PASS' : 'FAIL'}: ${hosts.filter((h) => h.passes).length} of ` +
          `${hosts.length} host(s) meet the requirement`;
        return { connector: x.name, org, passes, hosts };
      },
    );
  };
