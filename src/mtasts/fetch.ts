// Owns: fetching an MTA-STS policy file (RFC 8461 §3.3): `https://mta-sts.<domain>/.well-known/
// mta-sts.txt` on port 443, the host's addresses looked up through the gateway's Resolver (so
// through dns.servers only), the certificate validated as WebPKI against tls.trust (chain to a
// trusted root, dates, the name mta-sts.<domain>), TLS 1.2 or newer, no redirects, at most 64 KB,
// each step bounded in time. Nothing else is sent (no client certificate, no cookies).
// Promise: never throws; a failure is a result naming its RFC 8460 result type:
// `sts-webpki-invalid` (the certificate), `sts-policy-fetch-error` (DNS, connection, HTTP status,
// redirect, size, time) or `sts-policy-invalid` (media type, syntax). Every fetch is reported as an
// `mtasts.fetch` event with its outcome and duration (the admin centre's latency histogram).
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import { DnsError, type Resolver } from '../dns/types.ts';
import { emit } from '../events.ts';
import type { TrustStore } from '../tls/trust.ts';
import { parseStsPolicy, type StsPolicy } from './policy.ts';

export type StsFetchFailure = 'sts-policy-fetch-error' | 'sts-policy-invalid' | 'sts-webpki-invalid';

export type FetchResult =
  | { ok: true; policy: StsPolicy; text: string; url: string; ip: string }
  | { ok: false; failure: StsFetchFailure; error: string; url: string };

/** RFC 8461 §3.3: "senders SHOULD impose a limit on the response size ... 64 KB". */
export const MAX_POLICY_BYTES = 64 * 1024;
const PORT = 443;

export interface FetchOptions {
  resolver: Resolver;
  trust: TrustStore;
  /** Connect and TLS handshake, per address (default 10 s). */
  connectTimeoutMs?: number;
  /** The whole fetch, all addresses (default 30 s: §3.3 "SHOULD" a timeout, suggests one minute at most). */
  totalTimeoutMs?: number;
  /** Our local address for the connection (delivery.sourceAddresses), when the family matches. */
  localAddress?: (ip: string) => string | undefined;
}

export const policyHost = (domain: string): string => `mta-sts.${domain}`;
export const policyUrl = (domain: string): string => `https://${policyHost(domain)}/.well-known/mta-sts.txt`;

/** Certificate verification errors of Node/OpenSSL (X509_V_ERR_* names, and the name check). */
const WEBPKI = new RegExp(
  '^(CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED|SELF_SIGNED_CERT|INVALID_CA|PATH_LENGTH|INVALID_PURPOSE|' +
    'HOSTNAME_MISMATCH|ERR_TLS_CERT_ALTNAME|ERR_TLS_CERT)',
);
/** Failures to reach an address, after which the next address is tried. */
const UNREACHABLE = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'EADDRNOTAVAIL',
  'ECONNRESET',
]);

const pemCache = new WeakMap<TrustStore, string[]>();
const pems = (t: TrustStore): string[] => {
  let p = pemCache.get(t);
  if (!p) {
    p = t.roots.map((c) => c.toString());
    pemCache.set(t, p);
  }
  return p;
};

/** Fetch and parse the policy of `domain`; the outcome and duration go out as an `mtasts.fetch` event. */
export async function fetchStsPolicy(domain: string, o: FetchOptions): Promise<FetchResult> {
  const start = performance.now();
  const r = await fetchPolicy(domain, o);
  emit({ event: 'mtasts.fetch', outcome: r.ok ? 'ok' : r.failure, ms: performance.now() - start });
  return r;
}

async function fetchPolicy(domain: string, o: FetchOptions): Promise<FetchResult> {
  const url = policyUrl(domain);
  const host = policyHost(domain);
  const fail = (failure: StsFetchFailure, error: string): FetchResult => ({ ok: false, failure, error, url });
  let ips: string[];
  try {
    ips = (await o.resolver.addresses(host)).records;
  } catch (e) {
    if (!(e instanceof DnsError)) throw e;
    return fail('sts-policy-fetch-error', `address lookup for ${host} failed: ${e.message}`);
  }
  if (!ips.length) return fail('sts-policy-fetch-error', `${host} has no address`);
  const deadline = Date.now() + (o.totalTimeoutMs ?? 30_000);
  let last = fail('sts-policy-fetch-error', `could not connect to ${host}`);
  for (const ip of ips) {
    const left = deadline - Date.now();
    if (left <= 0)
      return fail(
        'sts-policy-fetch-error',
        `fetching ${url} took longer than ${(o.totalTimeoutMs ?? 30_000) / 1000} s`,
      );
    const r = await fetchFrom(ip, host, url, o, left);
    if (r.kind === 'done') return r.result;
    last = r.result;
    if (r.kind === 'final') return last;
  }
  return last;
}

type Attempt = { kind: 'done' | 'final' | 'next'; result: FetchResult };

function fetchFrom(ip: string, host: string, url: string, o: FetchOptions, budgetMs: number): Promise<Attempt> {
  const fail = (kind: 'final' | 'next', failure: StsFetchFailure, error: string): Attempt => ({
    kind,
    result: { ok: false, failure, error: `${error} (${url}, ${host} [${ip}]:${PORT})`, url },
  });
  return new Promise((resolve) => {
    let settled = false;
    const finish = (a: Attempt) => {
      if (settled) return;
      settled = true;
      clearTimeout(total);
      req.destroy();
      resolve(a);
    };
    const local = o.localAddress?.(ip);
    const req = https.request(
      {
        host: ip,
        port: PORT,
        servername: host,
        path: '/.well-known/mta-sts.txt',
        method: 'GET',
        agent: false,
        headers: { host, 'user-agent': 'Portcullis MTA-STS', accept: 'text/plain', connection: 'close' },
        ca: pems(o.trust),
        rejectUnauthorized: true,
        minVersion: 'TLSv1.2',
        timeout: o.connectTimeoutMs ?? 10_000,
        ...(local ? { localAddress: local } : {}),
      },
      (res) => readBody(res, (a) => finish(a), fail, ip, url),
    );
    const total = setTimeout(
      () =>
        finish(fail('final', 'sts-policy-fetch-error', `no complete answer within ${Math.round(budgetMs / 1000)} s`)),
      budgetMs,
    );
    req.on('timeout', () =>
      finish(
        fail('next', 'sts-policy-fetch-error', `connection timed out after ${(o.connectTimeoutMs ?? 10_000) / 1000} s`),
      ),
    );
    req.on('error', (e: NodeJS.ErrnoException) => {
      const code = e.code ?? '';
      if (WEBPKI.test(code))
        finish(fail('final', 'sts-webpki-invalid', `certificate of ${host} not valid: ${e.message} (${code})`));
      else
        finish(
          fail(
            UNREACHABLE.has(code) ? 'next' : 'final',
            'sts-policy-fetch-error',
            `HTTPS request failed: ${e.message}${code && !e.message.includes(code) ? ` (${code})` : ''}`,
          ),
        );
    });
    req.end();
  });
}

function readBody(
  res: IncomingMessage,
  done: (a: Attempt) => void,
  fail: (k: 'final', f: StsFetchFailure, e: string) => Attempt,
  ip: string,
  url: string,
): void {
  const status = res.statusCode ?? 0;
  if (status >= 300 && status < 400) {
    done(
      fail(
        'final',
        'sts-policy-fetch-error',
        `redirect refused: HTTP ` +
          `${status}${res.headers.location ? ` to ${String(res.headers.location).slice(0, 200)}` : ''} (RFC 8461 ` +
          `§3.3: redirects are not followed)`,
      ),
    );
    return;
  }
  if (status !== 200) {
    done(fail('final', 'sts-policy-fetch-error', `HTTP ${status} ${res.statusMessage ?? ''}`.trim()));
    return;
  }
  const type = String(res.headers['content-type'] ?? '')
    .split(';')[0]
    .trim()
    .toLowerCase();
  if (type !== 'text/plain') {
    done(fail('final', 'sts-policy-invalid', `media type "${type || '(none)'}" is not text/plain`));
    return;
  }
  const declared = Number(res.headers['content-length']);
  if (declared > MAX_POLICY_BYTES) {
    done(fail('final', 'sts-policy-fetch-error', `policy of ${declared} bytes is larger than ${MAX_POLICY_BYTES}`));
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  res.on('data', (d: Buffer) => {
    size += d.length;
    if (size > MAX_POLICY_BYTES) {
      done(fail('final', 'sts-policy-fetch-error', `policy larger than ${MAX_POLICY_BYTES} bytes`));
      return;
    }
    chunks.push(d);
  });
  res.on('error', (e) => done(fail('final', 'sts-policy-fetch-error', `reading the policy failed: ${e.message}`)));
  res.on('end', () => {
    const text = Buffer.concat(chunks).toString('utf8');
    const p = parseStsPolicy(text);
    if (!p.ok) {
      done(fail('final', 'sts-policy-invalid', `policy not valid: ${p.error}`));
      return;
    }
    done({ kind: 'done', result: { ok: true, policy: p.value, text, url, ip } });
  });
}
