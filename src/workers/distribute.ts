// Owns: accepting SMTP connections in the supervisor (workers: N) and handing each to the least
// busy worker over its IPC channel (the socket's descriptor travels with the message). When the
// workers accepted on the shared socket themselves, the kernel woke every one and the first to call
// accept() took every connection waiting: a burst of 20 went to one worker, which then served 8,148
// of 8,200 messages of a benchmark while the other idled.
// Promises: a connection goes to a started worker with the fewest sessions, counting those handed to
// it that it has not yet asked admission for; ties go round. While no worker can take one (all are
// restarting), up to MAX_WAITING connections wait here, unread, and go out when one starts; beyond
// that, and after close(), new connections are closed at once. Nothing is read from a connection
// here, so a worker sees its bytes from the first. This process keeps its own copy of each
// connection it handed to a worker until the worker asks admission for one (it has then received
// every connection handed to it before, in order, so the oldest copy is closed): a worker that
// dies before that never wrote a byte to them (the greeting waits for admission), and they go to
// another worker (`reclaim`) instead of hanging open with nobody to answer them. Node never
// delivers, nor closes, the connections still queued for a channel whose process died.
import net from 'node:net';
import { emit } from '../events.ts';

/** A worker that can take a connection now. */
export interface Taker {
  n: number;
  /** Sessions the worker holds (admitted, not yet ended). */
  sessions: number;
  /** Hand the connection over (this process keeps its copy open); false when the worker's channel is gone. */
  hand(socket: net.Socket): boolean;
}

const MAX_WAITING = 1024;

export class Distributor {
  private readonly servers: net.Server[] = [];
  /** Connections handed to each worker that it has not asked admission for yet, oldest first. */
  private readonly handed = new Map<number, net.Socket[]>();
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

  /** Worker n asked admission for a connection it was handed: it holds the oldest; our copy closes. */
  admitted(n: number): void {
    this.handed.get(n)?.shift()?.destroy();
  }

  /**
   * Worker n is gone: the connections handed to it that it never asked admission for go to the
   * others (or wait for one), as new ones would, when `passOn`; else they close. The rest went
   * with it. Returns how many were passed on.
   */
  reclaim(n: number, passOn: boolean): number {
    const left = (this.handed.get(n) ?? []).filter((c) => !c.destroyed);
    this.handed.delete(n);
    for (const c of left) {
      if (passOn) this.connection(c);
      else c.destroy();
    }
    return passOn ? left.length : 0;
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

  /** After the workers exited: this process's copies of what they were handed close too. */
  closeHanded(): void {
    for (const list of this.handed.values()) for (const c of list) c.destroy();
    this.handed.clear();
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
      const load = (t: Taker) => t.sessions + (this.handed.get(t.n)?.length ?? 0);
      let best: Taker | undefined;
      for (let i = 0; i < all.length; i++) {
        const t = all[(this.turn + i) % all.length];
        if (!best || load(t) < load(best)) best = t;
      }
      if (!best) return false;
      this.turn = (all.indexOf(best) + 1) % all.length;
      if (best.hand(c)) {
        const list = this.handed.get(best.n);
        if (list) list.push(c);
        else this.handed.set(best.n, [c]);
        return true;
      }
      all.splice(all.indexOf(best), 1);
    }
    return false;
  }
}
