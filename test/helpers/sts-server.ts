// An HTTPS server for MTA-STS policies in tests: listens on a loopback address at port 443 (the
// RFC's port: the gateway has no setting to fetch elsewhere, so tests run as root), presents the
// certificate given, and answers GET /.well-known/mta-sts.txt as scripted: a policy, a redirect,
// another status or media type, an oversized body, or nothing at all. Requests are counted.
import https from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';

export interface StsAnswer {
  status?: number;
  type?: string;
  body?: string | Buffer;
  location?: string;
  /** Never answer (the client's timeout decides). */
  hang?: boolean;
}

export interface StsServer {
  ip: string;
  port: number;
  /** Requests received (path and Host header). */
  requests: { path: string; host: string }[];
  /** What the next requests get; a string is a text/plain policy. */
  answer: StsAnswer | string;
  /** Serve another certificate from now on. */
  setCertificate(files: { cert: string; key: string }): void;
  close(): Promise<void>;
}

export async function startStsServer(
  ip: string,
  files: { cert: string; key: string },
  answer: StsAnswer | string,
  port = 443,
): Promise<StsServer> {
  const requests: StsServer['requests'] = [];
  const state = { answer };
  const server = https.createServer({ cert: readFileSync(files.cert), key: readFileSync(files.key) }, (req, res) => {
    requests.push({ path: req.url ?? '', host: String(req.headers.host ?? '') });
    const a: StsAnswer = typeof state.answer === 'string' ? { body: state.answer } : state.answer;
    if (a.hang) return;
    const headers: Record<string, string> = { 'content-type': a.type ?? 'text/plain' };
    if (a.location) headers.location = a.location;
    res.writeHead(a.status ?? 200, headers);
    res.end(a.body ?? '');
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, ip, () => resolve());
  });
  return {
    ip,
    port: (server.address() as AddressInfo).port,
    requests,
    get answer() {
      return state.answer;
    },
    set answer(v: StsAnswer | string) {
      state.answer = v;
    },
    setCertificate(f) {
      server.setSecureContext({ cert: readFileSync(f.cert), key: readFileSync(f.key) });
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
