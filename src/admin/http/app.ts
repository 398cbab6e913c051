// Owns: the admin centre's HTTP application (fastify): bearer-token authentication of every
// /api/v1 and /metrics request, the organisation scope of the token (scope.ts), the audit log of
// every mutating call, validation errors as a 400 naming the field, the security headers (a CSP
// without inline scripts), the OpenAPI document (openapi.ts) and the web UI's built files. The
// routes live in routes/*.ts and reach the gateway only through AdminDeps.
// Promise: a request without a valid token gets 401 before any route code runs; a mutating call's
// audit entry is durable before its answer is sent (calls without a valid token: up to
// ANONYMOUS_AUDIT a minute, the rest counted in a summary entry, audit-limit.ts); no stack trace
// or internal message reaches a client (a 500 names a reference to look up in the server log).
import fastifyStatic from '@fastify/static';
import Fastify, {
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerFactory,
} from 'fastify';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { AdminError } from '../../errors.ts';
import { emit } from '../../events.ts';
import { errorDetail, errorMessage } from '../../util/errors.ts';
import type { AdminToken, AuditResult } from '../../store/types.ts';
import { authenticate } from '../tokens.ts';
import type { AdminDeps, RouteMeta } from './deps.ts';
import { AnonymousAudit } from './audit-limit.ts';
import { ApiError } from './scope.ts';
import { collectRoutes, openApiDocument } from './openapi.ts';
import { certificateRoutes } from './routes/certificates.ts';
import { connectorRoutes } from './routes/connectors.ts';
import { messageRoutes } from './routes/messages.ts';
import { reportRoutes } from './routes/reports.ts';
import { systemRoutes } from './routes/system.ts';

declare module 'fastify' {
  interface FastifyRequest {
    token: AdminToken | null;
    /** What a mutating route acted on, for the audit log (set by the route). */
    audit: { target?: string; targetOrg?: string; detail?: string };
  }
  interface FastifyContextConfig {
    globalOnly?: boolean;
    action?: string;
  }
  /** OpenAPI facts of a route (openapi.ts); `hide`: not part of the API document. */
  interface FastifySchema {
    summary?: string;
    description?: string;
    tags?: string[];
    hide?: boolean;
  }
}

export const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; " +
  "connect-src 'self'; " +
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/**
 * The API and the metrics need a token; the UI's files and the OpenAPI document do not. Asked of
 * the route the request matched (its pattern), never of the raw URL: the router decodes the path
 * (`/%61pi/v1/messages` is `/api/v1/messages`), so a check of the raw URL let such a request through
 * without a token.
 */
export const needsToken = (route: string): boolean => route.startsWith('/api/v1/') || route === '/metrics';

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

function auditResult(status: number): AuditResult {
  if (status < 400) return 'ok';
  if (status === 404) return 'notFound';
  if (status === 400) return 'invalid';
  if (status >= 500) return 'error';
  return 'refused';
}

/** The field a validation error is about: "limit", "body.recipient". */
function validationField(e: FastifyError): string {
  const v = e.validation?.[0];
  if (!v) return '';
  const p = v.params as { missingProperty?: string; additionalProperty?: string };
  const tail = p.missingProperty ?? p.additionalProperty;
  const at = v.instancePath.replace(/^\//, '').replace(/\//g, '.');
  return [at, tail].filter(Boolean).join('.');
}

function sendError(
  reply: FastifyReply,
  status: number,
  error: string,
  message: string,
  extra: Record<string, unknown> = {},
): FastifyReply {
  return reply
    .code(status)
    .type('application/json; charset=utf-8')
    .send({ error, message, ...extra });
}

export type { AdminDeps, RouteMeta } from './deps.ts';

export async function buildApp(deps: AdminDeps, serverFactory?: FastifyServerFactory): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    ...(serverFactory ? { serverFactory } : {}),
    bodyLimit: 64 * 1024,
    routerOptions: { maxParamLength: 200 },
    requestTimeout: 120_000,
    // Unknown fields are errors (removeAdditional: false, additionalProperties: false in every schema).
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: false } },
  });
  const routes = collectRoutes(app);
  app.decorateRequest('token', null);
  const anonymous = new AnonymousAudit((e) => deps.store().appendAudit(e));
  app.addHook('onClose', () => anonymous.close());
  app.decorateRequest('audit', null as unknown as FastifyRequest['audit']);

  app.addHook('onRequest', async (req, reply) => {
    req.audit = {};
    reply
      .header('content-security-policy', CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('x-frame-options', 'DENY')
      .header('strict-transport-security', 'max-age=31536000');
    const meta: RouteMeta = req.routeOptions.config;
    const route = req.routeOptions.url;
    // the UI's files, the OpenAPI document; or no such route (404 below)
    if (!route || !needsToken(route)) return;
    reply.header('cache-control', 'no-store');
    req.token = await authenticate(deps.store(), req.headers.authorization);
    if (!req.token) {
      reply.header('www-authenticate', 'Bearer realm="portcullis"');
      return sendError(
        reply,
        401,
        'unauthorized',
        'a valid bearer token is needed: send "Authorization: Bearer <token>"; make one with `portcullis admin ' +
          'token create --name NAME`',
      );
    }
    if (meta.globalOnly && req.token.org !== null) {
      return sendError(
        reply,
        403,
        'forbidden',
        `token "${req.token.name}" is limited to organization ${req.token.org}; this needs a global token (made ` +
          `without --org)`,
      );
    }
  });

  // The audit entry is written before the answer leaves: a mutating call is never answered unrecorded.
  app.addHook('onSend', async (req, reply, payload) => {
    const meta: RouteMeta = req.routeOptions.config;
    if (!meta.action || !MUTATING.has(req.method)) return payload;
    const t = req.token;
    let detail = req.audit.detail;
    if (reply.statusCode >= 400 && !detail && typeof payload === 'string') {
      try {
        detail = (JSON.parse(payload) as { message?: string }).message;
      } catch {
        /* not JSON */
      }
    }
    if (!t) {
      // Without a token, anyone who reaches the port could write entries without end (audit-limit.ts).
      if (!anonymous.admit(req.ip)) return payload;
      detail = `from ${req.ip}${detail ? `: ${detail}` : ''}`;
    }
    await deps.store().appendAudit({
      ts: Date.now(),
      actor: t ? t.name : '(no valid token)',
      ...(t ? { tokenId: t.id } : {}),
      org: t ? t.org : null,
      action: meta.action,
      result: auditResult(reply.statusCode),
      status: reply.statusCode,
      ...(req.audit.target ? { target: req.audit.target } : {}),
      ...(req.audit.targetOrg ? { targetOrg: req.audit.targetOrg } : {}),
      ...(detail ? { detail: detail.slice(0, 1000) } : {}),
    });
    return payload;
  });

  app.setErrorHandler((e: FastifyError, req, reply) => {
    if (e.validation) {
      const field = validationField(e);
      const where =
        e.validationContext === 'querystring'
          ? 'query parameter'
          : e.validationContext === 'params'
            ? 'path parameter'
            : 'body field';
      const v = e.validation[0];
      const why =
        v.keyword === 'additionalProperties'
          ? 'is not known here'
          : v.keyword === 'required'
            ? 'is required'
            : (v.message ?? 'is invalid');
      return sendError(reply, 400, 'invalid', `${where} "${field}" ${why}`, { field });
    }
    if (e instanceof ApiError) return sendError(reply, e.status, e.code, e.message, e.extra);
    if (e instanceof AdminError) return sendError(reply, 400, 'invalid', e.message);
    if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500)
      return sendError(reply, e.statusCode, 'bad request', e.message);
    const ref = randomBytes(4).toString('hex');
    const route: string | undefined = req.routeOptions.url; // undefined when no route matched
    emit({
      event: 'internal.error',
      where: `admin API ${req.method} ${route ?? req.url} (reference ${ref})`,
      error: errorMessage(e),
      stack: errorDetail(e),
    });
    return sendError(reply, 500, 'internal', `internal error (reference ${ref}): the server log has the details`);
  });

  app.setNotFoundHandler((req, reply) =>
    sendError(reply, 404, 'notFound', `no such resource: ${req.method} ${req.url.split('?')[0]}`),
  );

  await app.register(systemRoutes(deps));
  await app.register(messageRoutes(deps));
  await app.register(connectorRoutes(deps));
  await app.register(certificateRoutes(deps));
  await app.register(reportRoutes(deps));
  app.get('/api/openapi.json', { schema: { hide: true } }, async () => openApiDocument(routes, deps.version));

  if (deps.uiDir && existsSync(deps.uiDir)) {
    await app.register(fastifyStatic, {
      root: deps.uiDir,
      prefix: '/',
      index: ['index.html'],
      wildcard: true,
      decorateReply: false,
    });
  } else {
    app.get('/', { schema: { hide: true } }, async (_req, reply) =>
      reply
        .type('text/plain; charset=utf-8')
        .send(
          "The admin centre's web UI is not built: run `npm run build`. The API is at /api/v1/ (OpenAPI document: " +
            '/api/openapi.json).\n',
        ),
    );
  }
  return app;
}
