// Owns: accepting SMTP connections in the supervisor (workers: N) and handing each to the least
// busy worker over its IPC channel (the socket's descriptor travels with the message). When the
// workers accepted on the shared socket themselves, the kernel woke every one and the first to call
// accept() took every connection waiting: a burst of 20 went to one worker, which then served 8,148
// of 8,200 messages of a benchmark while the other idled.
// Promises: a connection goes to a started worker with the fewest sessions, counting those handed to
// it that it has not yet asked admission for; ties go round. While no worker can take one (all are
// restarting), up to MAX_WAITING connections wait here, unread, and go out when one starts; beyond
// that, and after close(), new connections are closed at once. Nothing is read from a connection
// here, so a worker sees its bytes from the first.
import net from 'node:net';
import { emit } from '../events.ts';

/** A worker that can take a connection now. */
export interface Taker {
  n: number;
  /** Sessions the worker holds (admitted, not yet ended). */
  sessions: number;
  /** Hand the connection over; false when the worker's channel is gone. */
  hand(socket: net.Socket): boolean;
}

const MAX_WAITING = 1024;

export class Distributor {
  private readonly servers: net.Server[] = [];
  /** Connections handed to each worker that it has not asked admission for yet. */
  private readonly handed = new Map<number, number>();
  private readonly waiting: net.Socket[] = [];
  private turn = 0;
  private closed = false;

  /** `takers` lists the workers that can take a connection now. */
  constructor(private readonly takers: () => Taker[]) {}

  /** Accept on each bound socket (a libuv handle bound by workers/sockets.ts; closing it is ours). */
  async listen(sockets: readonly { handle: object; entry: string }[]): Promise<void> {
    for (const s of sockets) {
      const srv = net.createServer({ pauseOnConnect: true, noDelay: true }, (c) => this.connection(c));
      srv.maxConnections = 1_000_000; // admission is the workers', with a proper 421
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(s.handle, 1024, () => {
          srv.off('error', reject);
          resolve();
        });
      });
      srv.on('error', (e) => emit({ event: 'internal.error', where: `listener ${s.entry}`, error: e.message }));
      this.servers.push(srv);
    }
  }

  /** Worker n asked admission for a connection it was handed. */
  admitted(n: number): void {
    const h = this.handed.get(n) ?? 0;
    if (h > 0) this.handed.set(n, h - 1);
  }

  /** Worker n is gone (its connections with it). */
  forget(n: number): void {
    this.handed.delete(n);
  }

  /** A worker started: the connections that waited for one go out. */
  flush(): void {
    while (this.waiting.length) {
      const c = this.waiting.shift()!;
      if (c.destroyed) continue;
      if (!this.give(c)) {
        this.waiting.unshift(c);
        return;
      }
    }
  }

  /** Stop accepting; the connections still waiting are closed. */
  close(): void {
    this.closed = true;
    for (const s of this.servers.splice(0)) s.close();
    for (const c of this.waiting.splice(0)) c.destroy();
  }

  private connection(c: net.Socket): void {
    c.on('error', () => {});
    if (this.closed) {
      c.destroy();
      return;
    }
    // The ones waiting go first (a worker may have become able to take them since).
    this.flush();
    if (!this.waiting.length && this.give(c)) return;
    if (this.waiting.length >= MAX_WAITING) c.destroy();
    else this.waiting.push(c);
  }

  /** Hand c to the least busy worker; false when none can take it. */
  private give(c: net.Socket): boolean {
    const all = this.takers();
    for (let tries = all.length; tries > 0; tries--) {
      const load = (t: Taker) => t.sessions + (this.handed.get(t.n) ?? 0);
      let best: Taker | undefined;
      for (let i = 0; i < all.length; i++) {
        const t = all[(this.turn + i) % all.length];
        if (!best || load(t) < load(best)) best = t;
      }
      if (!best) return false;
      this.turn = (all.indexOf(best) + 1) % all.length;
      if (best.hand(c)) {
        this.handed.set(best.n, (this.handed.get(best.n) ?? 0) + 1);
        return true;
      }
      all.splice(all.indexOf(best), 1);
    }
    return false;
  }
}
