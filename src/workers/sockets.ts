// Owns: binding the listening sockets in the supervisor (workers: N): every smtp.listen entry, the
// admin centre's and the MTA-STS policy host's, bound as the starting user (root, for ports 25 and
// 443) before privileges are dropped. The SMTP sockets stay with the supervisor, which accepts on
// them and hands each connection to a worker (workers/distribute.ts); the others are handed to the
// workers as file descriptors, and the workers listen and accept on them, so a worker that dies
// leaves the socket open: connections wait in its backlog for the other workers or the restarted one.
// Promise: a socket that cannot be bound fails the start naming the address, the cause and the fix;
// close() releases every socket bound so far.
import net from 'node:net';
import { getSystemErrorName } from 'node:util';
import type { Config } from '../config/load.ts';
import { listenSockets, socketKey, type ListenSocket } from '../config/listen.ts';
import { AdminError } from '../errors.ts';
import { emit } from '../events.ts';

/** libuv's TCP handle as net._createServerHandle returns it (bound, not listening). */
interface TcpHandle {
  fd: number;
  getsockname(out: Record<string, unknown>): number;
  close(): void;
}
type CreateHandle = (address: string, port: number, family: 4 | 6, fd: undefined, flags: number) => TcpHandle | number;
const createServerHandle = (net as unknown as { _createServerHandle: CreateHandle })._createServerHandle;
/** UV_TCP_IPV6ONLY */
const IPV6_ONLY = 1;

export interface BoundSocket {
  entry: string;
  key: string;
  fd: number;
  /** Handed only to worker 1 (the admin centre runs once). */
  firstOnly: boolean;
  /** An SMTP listener: the supervisor accepts on it (not handed to the workers). */
  smtp: boolean;
}

export class Sockets {
  /** Handles this object closes (the SMTP ones leave it with takeSmtp). */
  private handles = new Map<BoundSocket, TcpHandle>();
  readonly bound: BoundSocket[] = [];

  /** Bind what the configuration listens on; throws (after close()) when one cannot be bound. */
  bindAll(c: Config): void {
    try {
      for (const s of listenSockets(c.smtp.listen)) this.bind(s, 'smtp.listen', false);
      if (c.admin.enabled) for (const s of listenSockets([c.admin.listen])) this.bind(s, 'admin.listen', true);
      if (c.mtaSts.hosting)
        for (const s of listenSockets(c.mtaSts.hosting.listen)) this.bind(s, 'mtaSts.hosting.listen', false);
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private bind(s: ListenSocket, key: string, firstOnly: boolean): void {
    if (this.bound.some((b) => b.key === socketKey(s))) return;
    const h = createServerHandle(s.host, s.port, s.family, undefined, s.ipv6Only ? IPV6_ONLY : 0);
    // libuv reports EADDRINUSE only later (at listen or getsockname), so both are checked here.
    const err = typeof h === 'number' ? h : h.getsockname({});
    if (typeof h === 'number' || err) {
      if (typeof h !== 'number') h.close();
      const code = getSystemErrorName(err);
      throw new AdminError(
        `cannot listen on ${s.entry} (${key}): ${code === 'EADDRINUSE' ? 'the address is in use' : code}`,
        code === 'EACCES'
          ? 'start as root (ports below 1024), or grant CAP_NET_BIND_SERVICE'
          : `stop what listens on ${s.entry}, or change ${key}`,
        1,
      );
    }
    const b = { entry: s.entry, key: socketKey(s), fd: h.fd, firstOnly, smtp: key === 'smtp.listen' };
    this.bound.push(b);
    this.handles.set(b, h);
    emit({ event: 'server.listening', address: s.entry });
  }

  /** The stdio slots and the LISTEN_FDS_ENV map for worker `n` (descriptors from 4 on; 3 is IPC). */
  forWorker(n: number): { fds: number[]; map: Record<string, number> } {
    const mine = this.bound.filter((b) => !b.smtp && (n === 1 || !b.firstOnly));
    return { fds: mine.map((b) => b.fd), map: Object.fromEntries(mine.map((b, i) => [b.key, 4 + i])) };
  }

  /** The SMTP listeners' handles, for the supervisor to accept on: closing them is the taker's from now on. */
  takeSmtp(): { handle: object; entry: string }[] {
    return this.bound.flatMap((b) => {
      const handle = b.smtp && this.handles.get(b);
      if (!handle) return [];
      this.handles.delete(b);
      return [{ handle, entry: b.entry }];
    });
  }

  close(): void {
    for (const h of this.handles.values()) h.close();
    this.handles.clear();
  }
}
