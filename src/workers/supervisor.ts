// Owns: the supervisor of `workers: N` (N > 1). It binds the listeners as the starting user, drops
// privileges (service/start.ts), owns the control socket (the single-instance guard), prepares the
// queue once (migrations; on SQLite it returns every lease of the previous run, being the only
// server on its queue), then forks N workers (`serve` again, WORKER_ENV set) that run the gateway,
// each a node of the store (`nodeId/wN`). It accepts the SMTP connections and hands each to the
// least busy worker (workers/distribute.ts); the workers inherit the other sockets. It keeps the
// connection counts for all of them (workers/admission.ts), restarts a worker that dies, fans
// reload, kick and status out to every worker and stops them all gracefully on SIGTERM.
// Promises: the server counts as started (server.started) only when every worker started; a worker
// that fails during the start fails the start. A worker that dies later is restarted at once (after
// a growing pause, up to 30 s, when it keeps dying young); its replacement returns its leases to the
// queue. The supervisor holds no mail: killing it loses nothing (the workers notice the closed
// channel and exit at once, as if killed with it; a new supervisor returns their leases).
import { fork, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import os from 'node:os';
import { assertNoServer, startControlServer, type ControlResponse } from '../admin/control.ts';
import { loadConfig, type Config } from '../config/load.ts';
import { LISTEN_FDS_ENV } from '../config/listen.ts';
import { RESTART_ONLY_ENV, restartOnlyOf } from '../config/restart-only.ts';
import { AdminError } from '../errors.ts';
import { emit, notice, setLogLevel, setLogOutput } from '../events.ts';
import { MaildirDelivery } from '../delivery/maildir.ts';
import { configuredGroup, planPrivileges, type RunAsOverride } from '../service/privileges.ts';
import { becomeServiceUser } from '../service/start.ts';
import { openStore } from '../store/open.ts';
import { ensureDevCertificate } from '../tls/devcert.ts';
import { errorMessage } from '../util/errors.ts';
import { SharedAdmission } from './admission.ts';
import { Distributor } from './distribute.ts';
import { WORKER_ENV, WORKERS_ENV, workerNodeId, type Command, type ToSupervisor, type ToWorker } from './protocol.ts';
import { Sockets } from './sockets.ts';

export interface SuperviseOptions {
  configFile: string;
  allowDefaults: boolean;
  runAs?: RunAsOverride;
  workers: number;
}

/** `workers: auto` is the number of cores the process may use. */
export function workerCount(setting: number | 'auto', override?: string): number {
  const v = override ?? setting;
  if (v === 'auto') return os.availableParallelism();
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 64)
    throw new AdminError(`--workers ${String(v)} is not a number of workers`, 'give auto or a number from 1 to 64', 2);
  return n;
}

interface Worker {
  n: number;
  child: ChildProcess;
  startedAt: number;
  started: boolean;
  /** It said it stops (SIGTERM sent to it alone): no more connections for it. */
  stopping: boolean;
  calls: Map<number, (r: ControlResponse) => void>;
}

/** A worker's answer to a command, well within the control client's 15 s (which names no worker). */
const CALL_MS = 10_000;
const STOP_MS = 60_000;

export class Supervisor {
  private readonly sockets = new Sockets();
  private readonly admission = new SharedAdmission();
  private readonly workers = new Map<number, Worker>();
  private readonly distributor = new Distributor(() =>
    [...this.workers.values()]
      .filter((w) => w.started && !w.stopping && w.child.connected)
      .map((w) => ({
        n: w.n,
        sessions: this.admission.sessionsOf(w.n),
        hand: (socket) => this.send(w, { t: 'conn' }, socket),
      })),
  );
  private readonly pause = new Map<number, number>();
  private control: import('node:net').Server | undefined;
  private config!: Config;
  private stopping = false;
  /** Every worker started once: from now on a worker that dies is replaced. */
  private startedOnce = false;
  private nextCall = 1;

  constructor(private readonly opts: SuperviseOptions) {}

  async start(): Promise<void> {
    try {
      await this.open();
    } catch (e) {
      this.stopping = true;
      for (const w of this.workers.values()) w.child.kill('SIGKILL');
      this.distributor.close();
      this.control?.close();
      this.sockets.close();
      throw e;
    }
  }

  private async open(): Promise<void> {
    const c = (this.config = loadConfig(this.opts.configFile, this.opts.allowDefaults));
    setLogLevel(c.log.level);
    setLogOutput({ format: c.log.format });
    const maildir = c.delivery.maildir;
    const gid = maildir.group === undefined ? undefined : configuredGroup(maildir.group, 'delivery.maildir.group');
    const plan = planPrivileges(c, this.opts.runAs, gid === undefined ? [] : [gid]);
    await assertNoServer(c.dataDir);
    this.sockets.bindAll(c);
    becomeServiceUser(plan, c, gid);
    this.control = await startControlServer(c.dataDir, (r) => this.command(r.cmd, 'control socket'));
    // Done once here, so that the workers do not race for it.
    if (!c.tls.certificates.length) await ensureDevCertificate(c.dataDir, c.hostname);
    const store = await openStore(c);
    try {
      // SQLite: this server is the only one on its queue. PostgreSQL: each worker returns its own.
      const released = c.store.type === 'sqlite' ? await store.releaseLeases() : 0;
      if (released) emit({ event: 'queue.recovered', released });
    } finally {
      await store.close();
    }
    const removed = await new MaildirDelivery(c.dataDir, { mode: maildir.mode, gid }).cleanTmp();
    if (removed)
      notice(`removed ${removed} partial mailbox file(s) left in Maildir tmp/ folders by a previous process`);
    await Promise.all(Array.from({ length: this.opts.workers }, (_, i) => this.spawn(i + 1)));
    this.startedOnce = true;
    await this.distributor.listen(this.sockets.takeSmtp());
    emit({ event: 'server.started', hostname: c.hostname, dataDir: c.dataDir, configFile: c.source });
  }

  /** Fork worker n; resolves when it started, rejects when it exits first during the server's start. */
  private spawn(n: number): Promise<void> {
    const { fds, map } = this.sockets.forWorker(n);
    let child: ChildProcess;
    try {
      child = fork(process.argv[1], process.argv.slice(2), {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc', ...fds],
        env: {
          ...process.env,
          [WORKER_ENV]: String(n),
          [WORKERS_ENV]: String(this.opts.workers),
          [LISTEN_FDS_ENV]: JSON.stringify(map),
          // What the server started with stays for a worker started later, whatever the file says by then.
          [RESTART_ONLY_ENV]: JSON.stringify(restartOnlyOf(this.config)),
        },
      });
    } catch (e) {
      // A fork that throws (ENOMEM and the like): as a worker that could not start.
      if (!this.startedOnce) return Promise.reject(notStarted(n, errorMessage(e)));
      emit({ event: 'internal.error', where: `worker ${n}`, error: `could not start it: ${errorMessage(e)}` });
      this.restartLater(n, Date.now());
      return Promise.resolve();
    }
    const w: Worker = { n, child, startedAt: Date.now(), started: false, stopping: false, calls: new Map() };
    this.workers.set(n, w);
    return new Promise((resolve, reject) => {
      child.on('message', (m: ToSupervisor) => {
        if (m.t === 'started') {
          w.started = true;
          emit({
            event: 'worker.started',
            worker: n,
            pid: child.pid ?? 0,
            nodeId: workerNodeId(this.config.nodeId, n),
          });
          this.distributor.flush();
          resolve();
        } else this.onMessage(w, m);
      });
      let over = false;
      const gone = (code: number | null, signal: NodeJS.Signals | null, failed?: string) => {
        if (over) return;
        over = true;
        this.admission.forget(n);
        // Connections it was handed and never took up: to another worker (none had a byte from it),
        // unless it was stopping (it answered those 421 itself).
        const back = this.distributor.reclaim(n, !w.stopping);
        if (back) notice(`worker ${n} exited with ${back} connection(s) handed to it and not yet served: passed on`);
        for (const done of w.calls.values()) done({ ok: false, message: `worker ${n} exited` });
        if (this.workers.get(n) === w) this.workers.delete(n);
        if (!w.started && !this.startedOnce) {
          reject(notStarted(n, failed ?? signal ?? `status ${code}`));
          return;
        }
        this.exited(w, code, signal);
      };
      child.on('error', (e) => {
        emit({ event: 'internal.error', where: `worker ${n}`, error: e.message });
        // EMFILE, EAGAIN (a TasksMax) and the like: no process, and no exit event will follow.
        if (child.pid === undefined) gone(null, null, e.message);
      });
      child.once('exit', (code, signal) => gone(code, signal));
    });
  }

  private exited(w: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    const restart = !this.stopping;
    const pause = restart ? this.restartLater(w.n, w.startedAt) : 0;
    emit({
      event: 'worker.exited',
      worker: w.n,
      pid: w.child.pid ?? 0,
      code,
      signal,
      ...(restart ? { restartInMs: pause } : {}),
    });
  }

  /** Start worker n again: at once after a long life, else after a pause that doubles (0.5 to 30 s). */
  private restartLater(n: number, startedAt: number): number {
    const lived = Date.now() - startedAt;
    const pause = lived > 10_000 ? 0 : Math.min(30_000, Math.max(500, (this.pause.get(n) ?? 0) * 2));
    this.pause.set(n, pause);
    setTimeout(() => {
      if (!this.stopping && !this.workers.has(n))
        this.spawn(n).catch((e: unknown) =>
          emit({ event: 'internal.error', where: `worker ${n}`, error: errorMessage(e) }),
        );
    }, pause).unref();
    return pause;
  }

  private onMessage(w: Worker, m: ToSupervisor): void {
    switch (m.t) {
      case 'answer':
        w.calls.get(m.id)?.(m.res);
        w.calls.delete(m.id);
        return;
      case 'stopping':
        w.stopping = true;
        return;
      case 'call':
        // The admin centre (worker 1) asks for a reload of every worker.
        void this.command(m.cmd, m.source).then((res) => this.send(w, { t: 'answer', id: m.id, res }));
        return;
      default: {
        if (m.t === 'admit') this.distributor.admitted(w.n);
        const answer = this.admission.handle(w.n, m);
        if (answer) this.send(w, answer);
      }
    }
  }

  /**
   * Send m (with a connection's socket as its handle); false when the worker's channel is gone. The
   * supervisor keeps its copy of the socket open (the distributor closes it once the worker took the
   * connection up, or passes it on when the worker dies first).
   */
  private send(w: Worker, m: ToWorker, socket?: Socket): boolean {
    if (!w.child.connected) return false;
    if (!socket) w.child.send(m);
    else w.child.send(m, socket, { keepOpen: true });
    return true;
  }

  private call(w: Worker, cmd: Command, source: string): Promise<ControlResponse> {
    const id = this.nextCall++;
    return new Promise((resolve) => {
      const t = setTimeout(() => done({ ok: false, message: `worker ${w.n} did not answer in time` }), CALL_MS);
      const done = (r: ControlResponse) => {
        clearTimeout(t);
        w.calls.delete(id);
        resolve(r);
      };
      w.calls.set(id, done);
      if (!this.send(w, { t: 'call', id, cmd, source })) done({ ok: false, message: `worker ${w.n} is not running` });
    });
  }

  /** A control command for every worker; one answer. */
  async command(cmd: Command, source: string): Promise<ControlResponse> {
    const live = [...this.workers.values()].filter((w) => w.started).sort((a, b) => a.n - b.n);
    if (cmd === 'reload') this.reloadOwn();
    const answers = await Promise.all(live.map((w) => this.call(w, cmd, source)));
    if (cmd === 'status') {
      // Every worker, those (re)starting too, so that a missing one shows.
      const workers = Array.from({ length: this.opts.workers }, (_, i) => {
        const k = live.findIndex((w) => w.n === i + 1);
        if (k < 0) return { worker: i + 1, state: this.workers.has(i + 1) ? 'starting' : 'restarting' };
        const w = live[k];
        return { worker: w.n, pid: w.child.pid, state: w.stopping ? 'stopping' : 'running', ...answers[k].data };
      });
      return {
        ok: answers.every((a) => a.ok),
        message: 'running',
        data: { pid: process.pid, connections: this.admission.sessions, workers },
      };
    }
    const ok = answers.every((a) => a.ok);
    const same = answers.every((a) => a.message === answers[0]?.message);
    const message = same
      ? (answers[0]?.message ?? 'no worker is running')
      : answers.map((a, i) => `worker ${live[i].n}: ${a.message}`).join('\n');
    return { ok: ok && answers.length > 0, message };
  }

  /** The supervisor's own part of a reload: its log settings. */
  private reloadOwn(): void {
    try {
      const next = loadConfig(this.opts.configFile, this.opts.allowDefaults);
      setLogLevel(next.log.level);
      setLogOutput({ format: next.log.format });
    } catch {
      /* the workers refuse it and say why */
    }
  }

  /** Graceful: each worker stops accepting, finishes its sessions and deliveries; then the sockets close. */
  async stop(signal: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    emit({ event: 'server.stopping', signal });
    this.distributor.close();
    this.control?.close();
    const exits = [...this.workers.values()].map(
      (w) =>
        new Promise<void>((resolve) => {
          if (w.child.exitCode !== null || w.child.signalCode !== null) return resolve();
          const t = setTimeout(() => w.child.kill('SIGKILL'), STOP_MS);
          w.child.once('exit', () => {
            clearTimeout(t);
            resolve();
          });
          w.child.kill('SIGTERM');
        }),
    );
    await Promise.all(exits);
    this.distributor.closeHanded();
    this.sockets.close();
  }
}

const notStarted = (n: number, why: string) =>
  new AdminError(`worker ${n} exited during the start (${why})`, 'its log lines above say why', 1);

/** Run the supervisor until SIGTERM/SIGINT; SIGHUP reloads every worker. */
export async function supervise(opts: SuperviseOptions): Promise<void> {
  const sup = new Supervisor(opts);
  await sup.start();
  process.on('SIGHUP', () => {
    void sup.command('reload', 'SIGHUP');
  });
  const stop = (sig: string) => {
    void sup.stop(sig).then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
