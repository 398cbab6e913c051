// Owns: composing the gateway from its modules, the runtime configuration snapshot, reload
// (SIGHUP or control socket) and orderly shutdown. The only place that wires modules together.
// Start order: as the starting user (root for port 25) bind the listeners and read the configured
// keys; then become the service user (service/start.ts); only then create or open anything in
// dataDir, so everything there belongs to the service user.
// On start the node writes its heartbeat (scheduler/presence.ts) and returns its previous run's
// leases: all of them on SQLite, its own (nodeId) on PostgreSQL, where other nodes hold theirs. It
// then follows its drain flag and control requests in the store (scheduler/directives.ts).
// Promise: an invalid new configuration (or unusable certificate) is refused and the running
// one stays in force; sessions in flight keep the snapshot they started with. A start that fails
// part-way (a listener cannot bind) releases what it opened: control socket, listeners, store.
// With `workers: N` (N > 1) serve() runs the supervisor (workers/supervisor.ts) instead, and each
// worker runs this gateway in worker mode (GatewayOptions.worker): the supervisor's sockets, node id
// `nodeId/wN`, admission counted by the supervisor, no control socket (the supervisor's), the admin
// centre and the daily TLS-RPT reports in worker 1 only; at start it returns only its own leases.
import { existsSync, readFileSync } from 'node:fs';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SecureVersion } from 'node:tls';
import { loadConfig, type Config } from './config/load.ts';
import { keepRestartOnly, restartOnlyChanges, RESTART_ONLY_ENV, type RestartOnly } from './config/restart-only.ts';
import { emit, notice, setLogLevel, setLogOutput } from './events.ts';
import { InboundPolicy } from './policy/inbound.ts';
import { openStore } from './store/open.ts';
import type { Store } from './store/types.ts';
import { ServerTls, type CertPair } from './tls/server.ts';
import { ensureDevCertificate } from './tls/devcert.ts';
import { TrustStore } from './tls/trust.ts';
import { Ingest } from './ingest/ingest.ts';
import { SmtpServer } from './inbound/server.ts';
import type { SessionDeps } from './inbound/session.ts';
import { Scheduler } from './scheduler/scheduler.ts';
import { NodePresence } from './scheduler/presence.ts';
import { NodeDirectives } from './scheduler/directives.ts';
import { configHash } from './config/hash.ts';
import { MaildirDelivery } from './delivery/maildir.ts';
import { ConnectionPool } from './delivery/pool.ts';
import { RemoteDelivery } from './delivery/remote.ts';
import { storeMemories } from './delivery/trouble.ts';
import { DaneProvider } from './delivery/dane.ts';
import { DnsResolver } from './dns/resolver.ts';
import type { Resolver } from './dns/types.ts';
import { OutboundPolicy } from './policy/outbound.ts';
import { RevocationChecker } from './tls/revocation.ts';
import { MtaSts, mtaStsProvider } from './mtasts/sts.ts';
import { PolicyServer } from './mtasts/host.ts';
import { assertNoServer, startControlServer, type ControlResponse } from './admin/control.ts';
import type { AdminServer } from './admin/http/server.ts';
import { GatewayMetrics } from './admin/metrics.ts';
import { probeTools } from './admin/ops/connectors.ts';
import { ReportAggregator } from './reports/aggregate.ts';
import { configuredGroup, planPrivileges, type RunAsOverride } from './service/privileges.ts';
import { becomeServiceUser } from './service/start.ts';
import { DailyReports, sessionCounter, TlsReportSender } from './tlsrpt/send.ts';
import { ReportInbox } from './tlsrpt/receive.ts';
import { errorMessage } from './util/errors.ts';
import { shareOf, workerNodeId, workerNumber, type Command } from './workers/protocol.ts';
import type { WorkerRole } from './workers/worker.ts';

export interface GatewayOptions {
  configFile: string;
  /** Use the embedded defaults when configFile does not exist. */
  allowDefaults: boolean;
  /** serve --user/--group (override runAs). */
  runAs?: RunAsOverride;
  /** serve --workers (overrides `workers`). */
  workers?: string;
  /** Set in a worker process of `workers: N`. */
  worker?: WorkerRole;
}

const { version: VERSION } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

/** The built web UI of the admin centre (`npm run build`: dist/ui), or null. */
function uiDir(): string | null {
  const dirs = ['./ui/', '../dist/ui/'].map((d) => fileURLToPath(new URL(d, import.meta.url)));
  return dirs.find((d) => existsSync(path.join(d, 'index.html'))) ?? null;
}

async function certificatePairs(c: Config): Promise<CertPair[]> {
  if (c.tls.certificates.length) return [...c.tls.certificates];
  return [await ensureDevCertificate(c.dataDir, c.hostname)];
}

export class Gateway {
  private deps!: SessionDeps;
  private server!: SmtpServer;
  private scheduler!: Scheduler;
  private presence: NodePresence | undefined;
  /** The configuration the server started with: what restart-only settings still run on. */
  private startedWith: Config | undefined;
  private directives: NodeDirectives | undefined;
  private store!: Store;
  private tls!: ServerTls;
  private remote!: RemoteDelivery;
  private outbound!: OutboundPolicy;
  private resolver!: Resolver;
  private controlServer: net.Server | undefined;
  private admin: AdminServer | undefined;
  private metrics: GatewayMetrics | undefined;
  private reportCounts: ReportAggregator | undefined;
  private reports: DailyReports | undefined;
  private policyServer: PolicyServer | undefined;
  private stopping = false;

  constructor(private readonly opts: GatewayOptions) {}

  get config(): Config {
    return this.deps.config;
  }

  /** Start everything; when a part fails, release what was opened (so a retry works) and throw. */
  async start(): Promise<void> {
    try {
      await this.open();
    } catch (e) {
      await this.release();
      throw e;
    }
  }

  private async release(): Promise<void> {
    // open() sets these one after the other: after a failure part way, the later ones are unset.
    const opened = this as unknown as { tls?: ServerTls; server?: SmtpServer; remote?: RemoteDelivery; store?: Store };
    opened.tls?.unwatch();
    await this.presence?.stop();
    await this.directives?.stop();
    await new Promise((r) => (this.controlServer ? this.controlServer.close(r) : r(undefined)));
    await this.admin?.close(0);
    this.metrics?.stop();
    await this.reportCounts?.stop();
    await opened.server?.close(0);
    await this.policyServer?.close();
    await opened.remote?.close();
    await opened.store?.close();
  }

  /**
   * The configuration to run (`config`) and the file as it is (`file`, what a reload reports changes
   * against). In a worker, `config` keeps the restart-only settings its supervisor started with (the
   * same queue and listeners as the other workers, also when the file changed since); both carry
   * the worker's node id.
   */
  private load(): { config: Config; file: Config } {
    const file = loadConfig(this.opts.configFile, this.opts.allowDefaults);
    const w = this.opts.worker;
    if (!w) return { config: file, file };
    const kept = process.env[RESTART_ONLY_ENV];
    const config = kept ? keepRestartOnly(file, JSON.parse(kept) as RestartOnly) : file;
    const own = (c: Config) => Object.freeze({ ...c, nodeId: workerNodeId(c.nodeId, w.n) });
    return { config: own(config), file: own(file) };
  }

  private async open(): Promise<void> {
    const { config } = this.load();
    this.startedWith = config;
    const worker = this.opts.worker;
    setLogLevel(config.log.level);
    setLogOutput({ format: config.log.format });
    if (!config.source) {
      notice(
        `no configuration file at ${this.opts.configFile}: running the embedded defaults ` +
          `(SMTP on ${config.smtp.listen.join(', ')}, data in ${config.dataDir}, accepting mail for "localhost"). ` +
          'Write portcullis.yaml (see docs/configuration.md) or pass -c FILE.',
      );
    }
    const maildir = config.delivery.maildir;
    const maildirGid =
      maildir.group === undefined ? undefined : configuredGroup(maildir.group, 'delivery.maildir.group');
    const plan = planPrivileges(config, this.opts.runAs, maildirGid === undefined ? [] : [maildirGid]);
    if (!worker) await assertNoServer(config.dataDir);
    const configured = config.tls.certificates.length
      ? new ServerTls(config.tls.certificates, config.tls.minVersion as SecureVersion)
      : undefined;
    this.server = new SmtpServer(() => this.deps, worker?.admission);
    // A worker's connections come from its supervisor (connection()).
    if (!worker) await this.server.listen(config.smtp.listen);
    if (config.admin.enabled && (!worker || worker.n === 1)) {
      this.admin = new (await import('./admin/http/server.ts')).AdminServer();
      await this.admin.listen(config.admin.listen);
    }
    if (config.mtaSts.hosting) {
      // Port 443 needs root too: bound now, serving once the certificates and the configuration exist.
      this.policyServer = new PolicyServer(
        () => this.tls as ServerTls | undefined,
        () => (this.deps as SessionDeps | undefined)?.config,
      );
      await this.policyServer.listen(config.mtaSts.hosting.listen);
    }
    becomeServiceUser(plan, config, maildirGid);
    if (!worker)
      this.controlServer = await startControlServer(config.dataDir, (r) => this.control(r.cmd, 'control socket'));
    this.tls = configured ?? new ServerTls(await certificatePairs(config), config.tls.minVersion as SecureVersion);
    this.tls.watch();
    this.store = await openStore(config, { server: true });
    // A node among others returns only its own leases (its previous run's); a single node owns its queue.
    const own = config.store.type === 'postgres' || worker;
    const released = await this.store.releaseLeases(own ? config.nodeId : undefined);
    if (released) emit({ event: 'queue.recovered', released });
    const trust = new TrustStore(config.tls.trust.system, config.tls.trust.caFiles);
    this.resolver = new DnsResolver(config.dns.servers, { dnssec: config.dns.dnssec });
    this.outbound = new OutboundPolicy(config);
    const pool = new ConnectionPool(() => this.deps.config.delivery.connectionReuse);
    const revocation = new RevocationChecker(() => this.resolver);
    const dane = new DaneProvider(() => this.resolver);
    const mtaSts = mtaStsProvider(
      new MtaSts({ resolver: () => this.resolver, trust: () => this.deps.trust, cache: this.store }),
      () => this.deps.config.mtaSts.enabled,
    );
    this.remote = new RemoteDelivery(
      () => this.resolver,
      pool,
      () => this.deps.trust,
      () => this.deps.config,
      revocation,
      () => this.tls.clientIdentity(),
      {
        onTlsSession: sessionCounter(
          () => this.store,
          () => this.deps.config,
        ),
        providers: () => [...(this.deps.config.dane.enabled ? [dane] : []), mtaSts],
        // Destinations down, hosts that failed, TLS fallbacks: in the store, shared by every node and process.
        memories: storeMemories(() => this.store),
        // Connections per destination: the workers split the limits (each keeps its own window and pool).
        ...(worker ? { share: (total: number) => shareOf(total, worker.n, worker.of) } : {}),
      },
    );
    const ingest = new Ingest(
      this.store,
      {
        reserve: () => this.scheduler.reserve(),
        take: (m, d) => this.scheduler.take(m, d),
        kick: () => this.scheduler.kick(),
        unreserve: () => this.scheduler.unreserve(),
      },
      () => this.deps.config.smtp,
    );
    const mailboxes = new MaildirDelivery(config.dataDir, { mode: maildir.mode, gid: maildirGid });
    // Workers: the supervisor cleaned before they started (other workers' files are in flight now).
    if (!worker)
      void mailboxes.cleanTmp().then((n) => {
        if (n) notice(`removed ${n} partial mailbox file(s) left in Maildir tmp/ folders by a previous process`);
      });
    const reports = new ReportInbox(
      () => this.store,
      () => this.deps.config.tlsRpt.receive,
    );
    this.scheduler = new Scheduler(
      this.store,
      { local: mailboxes, remote: this.remote, reports },
      ingest,
      () => ({ config: this.deps.config, inbound: this.deps.policy, outbound: this.outbound }),
      config.nodeId,
    );
    const startedAt = Date.now();
    this.presence = new NodePresence(
      this.store,
      () => ({
        id: config.nodeId,
        version: VERSION,
        configHash: configHash(this.deps.config),
        host: os.hostname(),
        pid: process.pid,
        startedAt,
      }),
      () => this.deps.config.queue.leaseSeconds,
      () => this.scheduler.renewLeases(),
    );
    this.deps = { config, policy: new InboundPolicy(config), tls: this.tls, trust, revocation, ingest };
    const sender = new TlsReportSender({
      store: this.store,
      resolver: () => this.resolver,
      config: () => this.deps.config,
      trust: () => this.deps.trust,
      ingest,
      destination: (a) => this.deps.policy.destination(a),
    });
    this.reports = new DailyReports(
      () => sender,
      () => this.deps.config.tlsRpt.enabled,
    );
    await this.presence.start();
    this.metrics = new GatewayMetrics(() => this.store);
    this.metrics.start();
    this.reportCounts = new ReportAggregator(this.store);
    this.reportCounts.start();
    await this.admin?.open(
      {
        config: () => this.deps.config,
        store: () => this.store,
        kick: () => this.scheduler.kick(),
        reload: (source) => (worker ? worker.reloadAll(source) : this.reload(source)),
        metrics: this.metrics,
        probeTools: () => probeTools(this.deps.config),
        startedAt: Date.now(),
        version: VERSION,
        uiDir: uiDir(),
      },
      this.tls,
    );
    // Drain flag and control requests from any node's command line, through the store.
    this.directives = new NodeDirectives(this.store, config.nodeId, {
      draining: (on) => this.scheduler.setDraining(on),
      control: () => this.reload('store request'), // the only kind of request (store ControlKind)
    });
    await this.directives.start();
    this.server.open();
    this.scheduler.start();
    if (!worker || worker.n === 1) this.reports.start();
    if (!worker)
      emit({ event: 'server.started', hostname: config.hostname, dataDir: config.dataDir, configFile: config.source });
  }

  /** Re-read configuration and certificates; refuse (and keep running) when anything is wrong. */
  async reload(source: string): Promise<ControlResponse> {
    let next: Config;
    try {
      const loaded = this.load();
      next = loaded.config;
      const cur = this.deps.config;
      // Restart-only settings are compared with what runs: the configuration the server started with.
      const running = this.startedWith ?? cur;
      const ignored = restartOnlyChanges(running, loaded.file);
      // `serve --workers N` overrides the file: its `workers` then changes nothing, now or later.
      if (this.opts.workers === undefined && JSON.stringify(next.workers) !== JSON.stringify(running.workers))
        ignored.push('workers');
      const trust = new TrustStore(next.tls.trust.system, next.tls.trust.caFiles);
      const pairs = await certificatePairs(next);
      if (!this.tls.reload(source, pairs, next.tls.minVersion as SecureVersion)) {
        throw new Error(
          `the certificates could not be loaded: ${this.tls.lastError}; the running configuration stays in force`,
        );
      }
      setLogLevel(next.log.level);
      setLogOutput({ format: next.log.format });
      if (JSON.stringify(next.dns) !== JSON.stringify(cur.dns))
        this.resolver = new DnsResolver(next.dns.servers, { dnssec: next.dns.dnssec });
      this.outbound = new OutboundPolicy(next);
      this.deps = { ...this.deps, config: next, policy: new InboundPolicy(next), trust };
      emit({ event: 'config.reloaded', source });
      const note = ignored.length ? ` (${ignored.join(', ')} changed: these take effect after a restart)` : '';
      return { ok: true, message: `configuration reloaded${note}` };
    } catch (e) {
      const error = errorMessage(e);
      emit({ event: 'config.rejected', source, error });
      return { ok: false, message: `configuration refused, the running one stays in force:\n${error}` };
    }
  }

  /** An SMTP connection the supervisor accepted (a worker's). */
  connection(socket: net.Socket): void {
    this.server.take(socket);
  }

  /** A control socket command (from the supervisor, in a worker). */
  async control(cmd: Command, source: string): Promise<ControlResponse> {
    switch (cmd) {
      case 'reload':
        return this.reload(source);
      case 'kick':
        this.scheduler.kick();
        return { ok: true, message: 'queue run requested' };
      case 'status':
        return {
          ok: true,
          message: 'running',
          data: { pid: process.pid, connections: this.server.connections, nodeId: this.deps.config.nodeId },
        };
      default:
        return { ok: false, message: `unknown command ${cmd}` };
    }
  }

  async stop(signal: string): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    emit({ event: 'server.stopping', signal });
    this.tls.unwatch();
    this.controlServer?.close();
    await this.admin?.close();
    await this.server.close(10_000);
    await this.reports?.stop();
    await this.policyServer?.close();
    await this.directives?.stop();
    await this.scheduler.stop();
    this.metrics?.stop();
    await this.reportCounts?.stop();
    await this.presence?.stop(true);
    await this.remote.close();
    await this.store.close();
  }
}

/**
 * Run until SIGTERM/SIGINT; SIGHUP reloads. The log goes to stdout. With `workers` above 1 this
 * process becomes the supervisor; a worker process (WORKER_ENV) runs the gateway in worker mode.
 */
export async function serve(opts: GatewayOptions): Promise<void> {
  setLogOutput({ fd: 1 });
  const n = workerNumber();
  if (n !== undefined) {
    const { runWorker } = await import('./workers/worker.ts');
    return runWorker(n, (worker) => new Gateway({ ...opts, worker }));
  }
  const { supervise, workerCount } = await import('./workers/supervisor.ts');
  const workers = workerCount(loadConfig(opts.configFile, opts.allowDefaults).workers, opts.workers);
  if (workers > 1) return supervise({ ...opts, workers });
  const gw = new Gateway(opts);
  await gw.start();
  process.on('SIGHUP', () => {
    void gw.reload('SIGHUP');
  });
  const stop = (sig: string) => {
    void gw.stop(sig).then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
