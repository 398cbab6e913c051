// Owns: the SMTP listeners and connection admission (global and per-IP limits).
// Each session gets the configuration snapshot current when it connected, so a reload never
// changes the rules under a session in flight.
// Promise: over a limit, the client gets "421 4.7.0" and the connection is closed at once.
// Listeners are bound (as root, for port 25) before the rest of the server exists: connections
// that arrive before open() wait (their bytes buffered) and are admitted by open().
import net from 'node:net';
import { listenSockets } from '../config/listen.ts';
import { emit } from '../events.ts';
import { formatReply, Replies } from '../errors.ts';
import { SmtpSession, type SessionDeps } from './session.ts';

export class SmtpServer {
  private servers: net.Server[] = [];
  private readonly sessions = new Set<SmtpSession>();
  private readonly perIp = new Map<string, number>();
  /** Connections accepted before open(); null once open. */
  private early: net.Socket[] | null = [];

  constructor(private readonly deps: () => SessionDeps) {}

  /** Start admitting connections (the ones that arrived since listen() first). */
  open(): void {
    const waiting = this.early ?? [];
    this.early = null;
    for (const s of waiting) if (!s.destroyed) this.admit(s);
  }

  private accept(s: net.Socket): void {
    if (!this.early) { this.admit(s); return; }
    s.on('error', () => {});
    if (this.early.length >= 1024) { s.destroy(); return; }
    this.early.push(s);
  }

  get connections(): number { return this.sessions.size; }

  /** Bind every entry; on failure the listeners opened so far stay open until close(). */
  async listen(addresses: readonly string[]): Promise<void> {
    for (const { entry: a, host, port, ipv6Only } of listenSockets(addresses)) {
      const srv = net.createServer({ noDelay: true }, (s) => this.accept(s));
      srv.maxConnections = 1_000_000; // admission is ours, with a proper 421
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen({ host, port, ipv6Only, backlog: 1024 }, () => { srv.off('error', reject); resolve(); });
      });
      srv.on('error', (e) => emit({ event: 'internal.error', where: `listener ${a}`, error: e.message }));
      this.servers.push(srv);
      emit({ event: 'server.listening', address: a });
    }
  }

  private admit(socket: net.Socket): void {
    const deps = this.deps();
    const ip = (socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    const { maxConnections, maxConnectionsPerIP } = deps.config.smtp;
    const mine = this.perIp.get(ip) ?? 0;
    if (this.sessions.size >= maxConnections || mine >= maxConnectionsPerIP) {
      const r = this.sessions.size >= maxConnections ? Replies.tooManyConnections() : Replies.tooManyConnectionsFromIp();
      emit({ event: 'session.rejected', ip, reason: r.message });
      socket.on('error', () => {});
      socket.end(formatReply(r));
      setTimeout(() => socket.destroy(), 2000).unref();
      return;
    }
    this.perIp.set(ip, mine + 1);
    const session = new SmtpSession(socket, deps, () => {
      this.sessions.delete(session);
      const n = (this.perIp.get(ip) ?? 1) - 1;
      if (n <= 0) this.perIp.delete(ip); else this.perIp.set(ip, n);
    });
    this.sessions.add(session);
  }

  /** Stop accepting; ask idle sessions to leave; wait up to `graceMs` for the rest. */
  async close(graceMs = 10_000): Promise<void> {
    for (const s of this.servers) s.close();
    this.servers = [];
    for (const s of this.early ?? []) s.destroy();
    const until = Date.now() + graceMs;
    while (this.sessions.size && Date.now() < until) {
      for (const s of this.sessions) s.shutdown();
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
