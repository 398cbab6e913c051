// Owns: reuse of outbound SMTP connections and TLS sessions. Connections are keyed by address,
// port and the TLS requirement they were opened under, so a connection opened for a weaker
// policy is never reused for a stricter one. Idle connections close (QUIT) after idleSeconds.
import type { SmtpConnection } from './smtp-client.ts';

interface Idle {
  conn: SmtpConnection;
  timer: NodeJS.Timeout;
}

export class ConnectionPool {
  private readonly idle = new Map<string, Idle[]>();
  private readonly sessions = new Map<string, { session: Buffer; at: number }>();
  /** Connections opened and reused (for tests and metrics). */
  readonly stats = { opened: 0, reused: 0 };

  constructor(private readonly limits: () => { idleSeconds: number; maxMessages: number }) {}

  take(key: string): SmtpConnection | undefined {
    const list = this.idle.get(key);
    while (list?.length) {
      const { conn, timer } = list.pop()!;
      clearTimeout(timer);
      if (conn.usable) {
        this.stats.reused++;
        return conn;
      }
    }
    return undefined;
  }

  opened(): void {
    this.stats.opened++;
  }

  /** Return a connection after a transaction; it is kept only while healthy and under limits. */
  give(key: string, conn: SmtpConnection): void {
    const { idleSeconds, maxMessages } = this.limits();
    if (!conn.usable || idleSeconds <= 0 || conn.messages >= maxMessages) {
      void conn.quit();
      return;
    }
    const list = this.idle.get(key) ?? [];
    const entry: Idle = {
      conn,
      timer: setTimeout(() => {
        const l = this.idle.get(key);
        const i = l?.indexOf(entry) ?? -1;
        if (l && i >= 0) l.splice(i, 1);
        void conn.quit();
      }, idleSeconds * 1000),
    };
    entry.timer.unref();
    list.push(entry);
    this.idle.set(key, list);
  }

  /** TLS session tickets per host (name or IP) for resumption. */
  session(host: string): Buffer | undefined {
    const s = this.sessions.get(host);
    return s && Date.now() - s.at < 3_600_000 ? s.session : undefined;
  }

  saveSession(host: string, session: Buffer): void {
    if (this.sessions.size > 10_000) this.sessions.delete(this.sessions.keys().next().value!);
    this.sessions.set(host, { session, at: Date.now() });
  }

  async closeAll(): Promise<void> {
    const all = [...this.idle.values()].flat();
    this.idle.clear();
    await Promise.all(
      all.map(({ conn, timer }) => {
        clearTimeout(timer);
        return conn.quit();
      }),
    );
  }
}
