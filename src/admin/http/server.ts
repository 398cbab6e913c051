// Owns: the admin centre's HTTPS listener (admin.listen). Bound before privileges are dropped, with
// the SMTP listeners; connections that arrive before open() wait and are served by it. It serves
// the gateway's certificates (tls/server.ts: chosen by SNI, the first as default, so also the
// development certificate) and follows their reloads.
// Promise: a listener that cannot bind fails the start with the address and the fix; close()
// stops accepting and ends the connections within the grace time.
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { FastifyInstance } from 'fastify';
import { listenOptions, listenSockets } from '../../config/listen.ts';
import { AdminError } from '../../errors.ts';
import { emit, onEvent } from '../../events.ts';
import type { ServerTls } from '../../tls/server.ts';
import { buildApp, type AdminDeps } from './app.ts';

export class AdminServer {
  private listener: net.Server | undefined;
  private https: https.Server | undefined;
  private app: FastifyInstance | undefined;
  private early: net.Socket[] | null = [];
  private unsubscribe: (() => void) | undefined;

  /** Bind admin.listen (before privileges are dropped); connections wait for open(). */
  async listen(address: string): Promise<void> {
    const [sock] = listenSockets([address]);
    const srv = net.createServer((s) => this.accept(s));
    await new Promise<void>((resolve, reject) => {
      srv.once('error', (e: NodeJS.ErrnoException) =>
        reject(
          new AdminError(
            `the admin centre cannot listen on ${address}: ` +
              `${e.code === 'EADDRINUSE' ? 'the address is in use' : e.message}`,
            'set admin.listen to a free address (or admin.enabled: false)',
            1,
          ),
        ),
      );
      srv.listen(listenOptions(sock, 128), () => resolve());
    });
    srv.on('error', (e) => emit({ event: 'internal.error', where: `admin listener ${address}`, error: e.message }));
    this.listener = srv;
    emit({ event: 'server.listening', address: `https://${address}/ (admin centre)` });
  }

  private accept(s: net.Socket): void {
    if (this.https) {
      this.https.emit('connection', s);
      return;
    }
    s.on('error', () => {});
    if (!this.early || this.early.length >= 256) {
      s.destroy();
      return;
    }
    this.early.push(s);
  }

  /** Start serving with the gateway's certificates, following their reloads. */
  async open(deps: AdminDeps, certs: ServerTls): Promise<void> {
    const context = () => {
      const id = certs.clientIdentity();
      return { cert: id.cert, key: id.key, minVersion: 'TLSv1.2' as tls.SecureVersion };
    };
    this.app = await buildApp(deps, (handler) => {
      const srv = https.createServer(
        {
          ...context(),
          SNICallback: certs.sniCallback,
          requestTimeout: 120_000,
          headersTimeout: 20_000,
          keepAliveTimeout: 5_000,
        },
        handler,
      );
      srv.on('tlsClientError', () => {
        /* a client that failed its handshake: nothing to answer */
      });
      this.https = srv;
      return srv;
    });
    await this.app.ready();
    this.unsubscribe = onEvent((e) => {
      if (e.event === 'tls.certificates.loaded') this.https?.setSecureContext(context());
    });
    const waiting = this.early ?? [];
    this.early = null;
    for (const s of waiting) if (!s.destroyed) this.https!.emit('connection', s);
  }

  async close(graceMs = 2000): Promise<void> {
    this.unsubscribe?.();
    for (const s of this.early ?? []) s.destroy();
    this.early = null;
    await new Promise<void>((r) => (this.listener ? this.listener.close(() => r()) : r()));
    if (this.https) {
      this.https.closeIdleConnections();
      await Promise.race([this.app?.close(), new Promise((r) => setTimeout(r, graceMs).unref())]);
      this.https.closeAllConnections();
    }
  }
}
