// Owns: the OpenAPI 3 document of the admin API (/api/openapi.json), made from the routes as they
// are registered (their JSON schemas and audit metadata), so the document and the routes cannot
// drift apart (the tests compare them).
// Promise: every /api/v1 route and /metrics is in the document with its parameters and body;
// nothing else is.
import type { FastifyInstance, RouteOptions } from 'fastify';
import type { RouteMeta } from './deps.ts';

interface Collected {
  method: string;
  url: string;
  schema: Record<string, unknown>;
  meta: RouteMeta;
}

/** Remember every route registered from now on (call before registering them). */
export function collectRoutes(app: FastifyInstance): Collected[] {
  const out: Collected[] = [];
  app.addHook('onRoute', (r: RouteOptions) => {
    const schema = (r.schema ?? {}) as Record<string, unknown>;
    if (schema.hide) return;
    for (const method of [r.method].flat()) {
      if (method === 'HEAD' || !(r.url.startsWith('/api/v1/') || r.url === '/metrics')) continue;
      out.push({ method: method.toLowerCase(), url: r.url, schema, meta: (r.config ?? {}) as RouteMeta });
    }
  });
  return out;
}

/** "/api/v1/queue/:id/retry" -> "/api/v1/queue/{id}/retry" */
export const openApiPath = (url: string): string => url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

type Props = Record<string, Record<string, unknown>>;

function parameters(where: 'path' | 'query', s: unknown): unknown[] {
  const o = s as { properties?: Props; required?: string[] } | undefined;
  return Object.entries(o?.properties ?? {}).map(([name, schema]) => {
    const { description, ...rest } = schema;
    return {
      name,
      in: where,
      required: where === 'path' || (o?.required ?? []).includes(name),
      ...(description ? { description } : {}),
      schema: rest,
    };
  });
}

const ERROR = { $ref: '#/components/schemas/Error' };
const errorResponse = (description: string) => ({ description, content: { 'application/json': { schema: ERROR } } });

export function openApiDocument(routes: Collected[], version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const r of routes) {
    const s = r.schema;
    const responses: Record<string, unknown> = {
      200:
        r.url === '/metrics'
          ? {
              description: 'Prometheus text exposition format',
              content: { 'text/plain': { schema: { type: 'string' } } },
            }
          : { description: 'OK', content: { 'application/json': { schema: { type: 'object' } } } },
      400: errorResponse('invalid input: `field` names the parameter or body field'),
      401: errorResponse('no valid bearer token (missing, unknown or revoked)'),
      ...(r.meta.globalOnly
        ? { 403: errorResponse('the token is limited to one organization; this needs a global token') }
        : {}),
      404: errorResponse('no such object, or an object of another organization'),
      ...(r.meta.action
        ? { 409: errorResponse("refused in the object's present state (e.g. the message is being delivered)") }
        : {}),
    };
    paths[openApiPath(r.url)] ??= {};
    paths[openApiPath(r.url)][r.method] = {
      operationId: `${r.method}${openApiPath(r.url)
        .replace(/^\/api\/v1/, '')
        .replace(/[{}]/g, '')
        .split(/[/-]/)
        .map((w) => w && w[0].toUpperCase() + w.slice(1))
        .join('')}`,
      ...(s.summary ? { summary: s.summary } : {}),
      ...(s.description ? { description: s.description } : {}),
      ...(s.tags ? { tags: s.tags } : {}),
      ...(r.meta.action ? { 'x-audit-action': r.meta.action } : {}),
      parameters: [...parameters('path', s.params), ...parameters('query', s.querystring)],
      ...(s.body ? { requestBody: { required: false, content: { 'application/json': { schema: s.body } } } } : {}),
      responses,
      security: [{ bearer: [] }],
    };
  }
  return {
    openapi: '3.0.3',
    info: {
      title: 'Portcullis admin API',
      version,
      description:
        'Message trace, queue, connectors, certificates, transit-security reports, audit log and configuration ' +
        'reload of a Portcullis gateway. Bearer tokens: `portcullis admin token create`.',
    },
    servers: [{ url: '/' }],
    components: {
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          description: 'a token made with `portcullis admin token create` (pcat_…)',
        },
      },
      schemas: {
        Error: {
          type: 'object',
          required: ['error', 'message'],
          properties: { error: { type: 'string' }, message: { type: 'string' }, field: { type: 'string' } },
        },
      },
    },
    paths,
  };
}
