// Owns: the admin API's certificate routes: the inventory (the gateway's own certificates, seen by
// every token, and each organisation's trust material, seen by that organisation), one
// certificate's facts as `cert info` shows them with the expiry countdown, and the rotation
// readiness check. The data is admin/ops/certificates.ts, shared with the CLI.
// Promise: another organisation's certificate is a 404 like one that does not exist; a readiness
// check never fails for an unreachable endpoint (the answer says so).
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import {
  certificateFacts,
  certificateInventory,
  rotationReadiness,
  type CertificateEntry,
} from '../../ops/certificates.ts';
import type { AdminDeps } from '../deps.ts';
import { canSee, notFound, orgFilter, orgParam, query, str } from '../scope.ts';

const ID = {
  type: 'object',
  additionalProperties: false,
  required: ['id'],
  properties: { id: str('SHA-256 fingerprint, lowercase hex', { pattern: '^[0-9a-f]{64}$' }) },
};

export const certificateRoutes =
  (deps: AdminDeps): FastifyPluginAsync =>
  async (app) => {
    const visibleTo = (req: FastifyRequest, e: CertificateEntry) => e.scope === 'gateway' || canSee(req, e.org);

    async function find(req: FastifyRequest): Promise<CertificateEntry> {
      const { id } = req.params as { id: string };
      const e = certificateInventory(deps.config(), (await deps.probeTools()).trust).find((x) => x.id === id);
      if (!e || !visibleTo(req, e)) throw notFound(`certificate ${id}`);
      return e;
    }

    app.get(
      '/api/v1/certificates',
      {
        schema: {
          summary:
            "the gateway's certificates and the trust material of the organizations the token sees, with days left",
          tags: ['certificates'],
          querystring: query({ org: orgParam }),
        },
      },
      async (req) => {
        const org = orgFilter(req, deps.config(), (req.query as { org?: string }).org);
        const all = certificateInventory(deps.config(), (await deps.probeTools()).trust);
        return {
          items: all
            .filter((e) => visibleTo(req, e) && (!org || e.scope === 'gateway' || e.org === org))
            .sort((a, b) => a.daysLeft - b.daysLeft),
        };
      },
    );

    app.get(
      '/api/v1/certificates/:id',
      {
        schema: {
          summary: 'one certificate: what a partner needs (as `cert info --json`) and the expiry countdown',
          tags: ['certificates'],
          params: ID,
        },
      },
      async (req) => {
        const e = await find(req);
        return { ...e, facts: certificateFacts(e, (await deps.probeTools()).trust) };
      },
    );

    app.get(
      '/api/v1/certificates/:id/readiness',
      {
        schema: {
          summary:
            'rotation readiness of a gateway certificate: chain to a trusted root, CRL/OCSP/CA-issuer endpoints ' +
            'reachable from this node, the staged next certificate',
          tags: ['certificates'],
          params: ID,
        },
      },
      async (req) => {
        const e = await find(req);
        const r = await rotationReadiness(e, await deps.probeTools());
        return { id: e.id, ready: r.current.passes && (!r.next.staged || r.next.check.passes), ...r };
      },
    );
  };
