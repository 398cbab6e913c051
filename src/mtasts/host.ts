// Owns: MTA-STS hosting for our accepted domains (RFC 8461 §3.2, §3.3): the policy each domain
// publishes (mtaSts.hosting: mode, mx, maxAgeSeconds), its `id` derived from the policy content,
// the DNS records to publish (`_mta-sts` and `_smtp._tls` TXT), and the HTTPS listener serving
// `https://mta-sts.<domain>/.well-known/mta-sts.txt` with the certificate chosen by SNI from
// tls.certificates (ServerTls: the one that covers mta-sts.<domain>, else the first).
// Promise: the listener answers every request with a status (200 policy, 404 unknown host or
// path, 405 other methods, 503 before the server is ready) and never throws; it reads the
// configuration on each request, so a reload changes the policy without a restart.
import { createHash } from 'node:crypto';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config } from '../config/types.ts';
import { listenOptions, listenSockets } from '../config/listen.ts';
import { emit } from '../events.ts';
import type { ServerTls } from '../tls/server.ts';
import { formatStsPolicy, type StsPolicy } from './policy.ts';
import { policyHost } from './fetch.ts';

export const WELL_KNOWN = '/.well-known/mta-sts.txt';

type Hosting = NonNullable<Config['mtaSts']['hosting']>;

/** The policy we publish (the same for every accepted domain). */
export function hostedPolicy(c: Pick<Config, 'hostname'>, h: Hosting): StsPolicy {
  return { mode: h.mode, mx: h.mx?.length ? [...h.mx] : [c.hostname.toLowerCase()], maxAge: h.maxAgeSeconds };
}

/** The `id` of the `_mta-sts` record: derived from the policy text, so it changes exactly when the policy does. */
export function policyId(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 20);
}

/** Accepted domains of every organisation, lower case, each once. */
export const hostedDomains = (c: Pick<Config, 'organizations'>): string[] => [
  ...new Set(c.organizations.flatMap((o) => o.acceptedDomains.map((d) => d.domain.toLowerCase()))),
];

export interface DomainRecords {
  domain: string;
  policyHost: string;
  policyUrl: string;
  /** `_mta-sts.<domain>` TXT. */
  stsName: string;
  stsTxt: string;
  /** `_smtp._tls.<domain>` TXT (RFC 8460). */
  tlsRptName: string;
  tlsRptTxt: string;
}

/** The records to publish for each accepted domain; `rua`: where TLS reports go (RFC 8460 §3). */
export function hostingRecords(
  c: Pick<Config, 'organizations' | 'hostname'>,
  h: Hosting,
  rua: readonly string[],
): { policy: string; id: string; domains: DomainRecords[] } {
  const policy = formatStsPolicy(hostedPolicy(c, h));
  const id = policyId(policy);
  return {
    policy,
    id,
    domains: hostedDomains(c).map((domain) => ({
      domain,
      policyHost: policyHost(domain),
      policyUrl: `https://${policyHost(domain)}${WELL_KNOWN}`,
      stsName: `_mta-sts.${domain}`,
      stsTxt: `v=STSv1; id=${id}`,
      tlsRptName: `_smtp._tls.${domain}`,
      tlsRptTxt: `v=TLSRPTv1; rua=${(rua.length ? rua : [`mailto:tlsrpt@${domain}`]).join(',')}`,
    })),
  };
}

/** One request: the policy for mta-sts.<accepted domain>, nothing else. */
export function answer(req: IncomingMessage, res: ServerResponse, config: Config | undefined): void {
  const h = config?.mtaSts.hosting;
  if (!config || !h) {
    res.writeHead(503, { 'content-type': 'text/plain' }).end('not ready\n');
    return;
  }
  const host = String(req.headers.host ?? '')
    .toLowerCase()
    .replace(/:\d+$/, '')
    .replace(/\.$/, '');
  const path = (req.url ?? '').split('?')[0];
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
    return;
  }
  const domain = host.startsWith('mta-sts.') ? host.slice('mta-sts.'.length) : '';
  if (path !== WELL_KNOWN || !hostedDomains(config).includes(domain)) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return;
  }
  const body = formatStsPolicy(hostedPolicy(config, h));
  res.writeHead(200, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'max-age=300',
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** The HTTPS listeners of mtaSts.hosting.listen; bound before privileges are dropped (port 443). */
export class PolicyServer {
  private servers: https.Server[] = [];

  constructor(
    private readonly tls: () => ServerTls | undefined,
    private readonly config: () => Config | undefined,
  ) {}

  async listen(addresses: readonly string[]): Promise<void> {
    for (const sock of listenSockets(addresses)) {
      const entry = sock.entry;
      const srv = https.createServer(
        {
          minVersion: 'TLSv1.2',
          SNICallback: (name, cb) => {
            const t = this.tls();
            if (t) t.sniCallback(name, cb);
            else cb(new Error('not ready'));
          },
          requestTimeout: 10_000,
          headersTimeout: 10_000,
          keepAliveTimeout: 5_000,
        },
        (req, res) => {
          try {
            answer(req, res, this.config());
          } catch (e) {
            res.destroy();
            emit({ event: 'internal.error', where: 'mta-sts hosting', error: (e as Error).message });
          }
        },
      );
      srv.maxHeadersCount = 50;
      srv.on('tlsClientError', () => {
        /* a client that cannot complete the handshake: nothing to serve */
      });
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(listenOptions(sock), () => {
          srv.off('error', reject);
          resolve();
        });
      });
      this.servers.push(srv);
      emit({ event: 'server.listening', address: `${entry} (MTA-STS policy, HTTPS)` });
    }
  }

  async close(): Promise<void> {
    await Promise.all(
      this.servers.map(
        (s) =>
          new Promise<void>((r) => {
            s.closeAllConnections();
            s.close(() => r());
          }),
      ),
    );
    this.servers = [];
  }
}
