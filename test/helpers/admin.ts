// The admin centre in tests: a gateway with admin.listen on a free loopback port, tokens made with
// the real CLI, and HTTPS requests that verify the gateway's (development) certificate.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import { devCertificatePaths } from '../../src/tls/devcert.ts';
import { freePort, startGateway, type GatewayHandle } from './gateway.ts';

export interface AdminGateway extends GatewayHandle {
  adminPort: number;
  /** An HTTPS request to the admin centre; the body is parsed when it is JSON. */
  api(
    method: string,
    path: string,
    o?: { token?: string | null; body?: unknown; headers?: Record<string, string> },
  ): Promise<ApiAnswer>;
  /** Make a token with `portcullis admin token create --json`; returns its secret. */
  token(name: string, org?: string): Promise<string>;
}

export interface ApiAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
}

export async function startAdminGateway(config: Record<string, unknown>): Promise<AdminGateway> {
  const adminPort = await freePort();
  const gw = await startGateway({ config: { ...config, admin: { listen: `127.0.0.1:${adminPort}` } } });
  const ca = readFileSync(devCertificatePaths(gw.dataDir).cert);
  const api: AdminGateway['api'] = (method, path, o = {}) =>
    new Promise((resolve, reject) => {
      const body = o.body === undefined ? undefined : JSON.stringify(o.body);
      const req = https.request(
        {
          host: '127.0.0.1',
          port: adminPort,
          method,
          path,
          ca,
          servername: 'mx1.contoso.test',
          agent: false,
          headers: {
            ...(o.token ? { authorization: `Bearer ${o.token}` } : {}),
            ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
            ...o.headers,
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            text += d;
          });
          res.on('end', () => {
            let json: unknown;
            try {
              json = JSON.parse(text);
            } catch {
              json = undefined;
            }
            resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
          });
        },
      );
      req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${path}: no answer in 30 s`)));
      req.on('error', reject);
      req.end(body);
    });
  const token = async (name: string, org?: string) => {
    const r = await gw.cli(['admin', 'token', 'create', '--name', name, ...(org ? ['--org', org] : []), '--json']);
    if (r.code !== 0) throw new Error(`token create failed: ${r.stderr}`);
    return (JSON.parse(r.stdout) as { token: string }).token;
  };
  return Object.assign(gw, { adminPort, api, token });
}
