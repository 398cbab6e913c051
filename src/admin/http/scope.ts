// Owns: what a token may see and the answers that say no: a global token sees every organisation,
// an organisation's token only its own; the API errors (ApiError) and the shared schema pieces
// (paging, organisation, time range) of the routes.
// Promise: an object of another organisation is refused with exactly the answer of one that does
// not exist (404, same words), so an organisation's token cannot learn what others have.
import type { FastifyRequest } from 'fastify';
import type { Config } from '../../config/load.ts';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export const notFound = (what: string): ApiError => new ApiError(404, 'notFound', `no ${what}`);

/** The token's organisation; null for a global token. */
export const tokenOrg = (req: FastifyRequest): string | null => req.token?.org ?? null;

/** May this request see an object of `org`? */
export const canSee = (req: FastifyRequest, org: string | undefined): boolean =>
  tokenOrg(req) === null || tokenOrg(req) === org;

/**
 * The organisation a listing is limited to: an organisation token's own (asking for another one
 * is a 404, as for an organisation that does not exist); a global token's choice, or all (undefined).
 */
export function orgFilter(req: FastifyRequest, config: Config, asked: string | undefined): string | undefined {
  const mine = tokenOrg(req);
  if (asked !== undefined && (mine !== null ? asked !== mine : !config.organizations.some((o) => o.name === asked)))
    throw notFound(`organization "${asked}"`);
  return mine ?? asked;
}

// ---- Schema pieces (JSON Schema, validated by fastify; unknown fields are errors) ----

export const str = (description: string, extra: Record<string, unknown> = {}) => ({
  type: 'string',
  description,
  ...extra,
});
export const time = (description: string) =>
  str(`${description}: ISO 8601 (2026-11-27T15:00Z) or relative to now (30m, 2h, 1d)`, { maxLength: 40 });
export const orgParam = str('organization name (global tokens; an organization token sees only its own)', {
  maxLength: 200,
});
export const paging = (max = 500, dflt = 50) => ({
  limit: { type: 'integer', minimum: 1, maximum: max, default: dflt, description: `page size (1 to ${max})` },
  offset: { type: 'integer', minimum: 0, maximum: 1_000_000, default: 0, description: 'skip this many first' },
});

export const query = (properties: Record<string, unknown>, required: string[] = []) => ({
  type: 'object',
  additionalProperties: false,
  properties,
  ...(required.length ? { required } : {}),
});

export interface Paging {
  limit: number;
  offset: number;
}
