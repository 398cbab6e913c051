// Owns: the SMTP listeners; connects sessions to admission (inbound/admission.ts: global,
// per-IP and reserved capacity). Each session gets the configuration snapshot current when it
// connected, so a reload never changes the rules under a session in flight.
// Promises: over a limit, the client gets "421 4.7.0" and the connection is closed at once; a
// session's capacity is free as soon as the session ends (221 or 421 sent), though its socket
// may linger for a peer that does not close — at most maxConnections such sockets, the oldest
// is dropped beyond that.
// Listeners are bound (as root, for port 25) before the rest of the server exists: connections
// that arrive before open() wait (their bytes buffered) and are admitted by open(). In a worker
// process there are no listeners: the supervisor accepts and hands each connection over (take()),
// and admission is asked of the supervisor (an AdmissionGate that answers asynchronously).
import net from 'node:net';
import { listenOptions, listenSockets } from '../config/listen.ts';
import { emit } from '../events.ts';
import { formatReply, Replies, type SmtpReply } from '../errors.ts';
import { Admission, PROBATION_MS, type AdmissionGate, type Slot } from './admission.ts';
import { SmtpSession, type SessionDeps } from './session.ts';

export class SmtpServer {
  private servers: net.Server[] = [];
  private readonly sessions = new Set<SmtpSession>();
  /** Sockets of ended sessions waiting for the peer to close, oldest first. */
  private readonly lingering = new Set<net.Socket>();
  /** Connections accepted before open(); null once open. */
  private early: net.Socket[] | null = [];
  private closed = false;

  constructor(
    private readonly deps: () => SessionDeps,
    private readonly admission: AdmissionGate = new Admission(),
  ) {}

  /** Start admitting connections (the ones that arrived since listen() first). */
  open(): void {
    const waiting = this.early ?? [];
    this.early = null;
    for (const s of waiting) if (!s.destroyed) this.admit(s);
  }

  private accept(s: net.Socket): void {
    if (!this.early) {
      this.admit(s);
      return;
    }
    s.on('error', () => {});
    if (this.early.length >= 1024) {
      s.destroy();
      return;
    }
    this.early.push(s);
  }

  /** A connection accepted elsewhere (a worker's, from its supervisor): served as if accepted here. */
  take(s: net.Socket): void {
    if (this.closed) {
      s.on('error', () => {});
      s.end(formatReply(Replies.shuttingDown(this.deps().config.hostname)));
      setTimeout(() => s.destroy(), 2000).unref();
      return;
    }
    s.setNoDelay(true);
    this.accept(s);
  }

  get connections(): number {
    return this.sessions.size;
  }

  /** Bind every entry; on failure the listeners opened so far stay open until close(). */
  async listen(addresses: readonly string[]): Promise<void> {
    for (const sock of listenSockets(addresses)) {
      const a = sock.entry;
      const srv = net.createServer({ noDelay: true }, (s) => this.accept(s));
      srv.maxConnections = 1_000_000; // admission is ours, with a proper 421
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(listenOptions(sock, 1024), () => {
          srv.off('error', reject);
          resolve();
        });
      });
      srv.on('error', (e) => emit({ event: 'internal.error', where: `listener ${a}`, error: e.message }));
      this.servers.push(srv);
      emit({ event: 'server.listening', address: a });
    }
  }

  private admit(socket: net.Socket): void {
    const deps = this.deps();
    const ip = (socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    const connectors = deps.policy.connectors;
    const verdict = this.admission.admit(ip, deps.config.smtp, connectors);
    if (!(verdict instanceof Promise)) {
      this.begin(socket, deps, ip, verdict);
      return;
    }
    socket.on('error', () => {}); // the peer may leave while the supervisor answers
    void verdict.then((v) => {
      if (!socket.destroyed) this.begin(socket, deps, ip, v);
      else if (!('code' in v)) this.admission.release(v);
    });
  }

  private begin(socket: net.Socket, deps: SessionDeps, ip: string, slot: Slot | SmtpReply): void {
    const connectors = deps.policy.connectors;
    if ('code' in slot) {
      emit({ event: 'session.rejected', ip, reason: slot.message });
      socket.on('error', () => {});
      socket.end(formatReply(slot));
      setTimeout(() => socket.destroy(), 2000).unref();
      return;
    }
    const maxLingering = deps.config.smtp.maxConnections;
    let probation: NodeJS.Timeout | undefined;
    const session: SmtpSession = new SmtpSession(socket, deps, {
      ended: () => {
        this.admission.release(slot);
        this.lingering.add(socket);
        if (this.lingering.size > maxLingering) {
          const [oldest] = this.lingering;
          this.lingering.delete(oldest);
          oldest.destroy();
        }
      },
      closed: () => {
        clearTimeout(probation);
        this.lingering.delete(socket);
        this.sessions.delete(session);
      },
      secured: (cert) => {
        if (connectors.identifiesCertificate(cert)) this.admission.identified(slot);
        else if (slot.provisional) session.refuse(Replies.tooManyConnections());
      },
    });
    this.sessions.add(session);
    if (slot.provisional) {
      // Admitted on an address that proved a connector's certificate before: prove it again, soon.
      probation = setTimeout(() => {
        if (slot.provisional) session.refuse(Replies.tooManyConnections());
      }, PROBATION_MS).unref();
    }
  }

  /** Stop accepting; ask idle sessions to leave; wait up to `graceMs` for the rest. */
  async close(graceMs = 10_000): Promise<void> {
    this.closed = true;
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
