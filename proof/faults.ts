// Proof module "faults" (issue 5, item 1): load with faults, nothing lost.
//
// Phase 1, load with faults. A driver (20 persistent STARTTLS sessions from 127.0.0.1, paced,
// bounded in count and time) sends N messages through the real `portcullis serve`, which relays
// them to six loopback peers (127.0.0.2–127.0.0.7, found through a test DNS server; two of the
// destinations go through forced-TLS outbound connectors, certificateValidation and
// domainValidation). Meanwhile a fault injector SIGKILLs the gateway at random moments and
// restarts it, and switches peers into faults for a while: refuse connections, drop mid-DATA, 4xx,
// stall past the delivery timeouts, answer so slowly that deliveries outlive their queue lease,
// abort TLS handshakes, present a bad certificate (self-signed / wrong name) to the forced
// connectors. Every message carries a unique X-Proof-Id first; peers
// record it with the sha256 of what they received from that header on and the queue id of the
// gateway's Received: header. Afterwards every (queue id, recipient) that got a 250 must be
// delivered to its peer with an equal hash, or bounced with a DSN (recipients the peers refuse
// with 550 by design), or still be in `portcullis queue list --json` with a reason. Lost and
// corrupted must be 0; duplicates are counted and each must be explained by a crash (a SIGKILL
// between the peer's 250 and the gateway's commit, or a 250 lost with the killed process);
// forced-TLS peers must never see a transaction without TLS with their good certificate.
//
// Variant "faults-workers" (proof/faults-workers.ts): phase 1 with `workers: 2`, the kills
// alternating between SIGKILL of one worker (its supervisor restarts it) and SIGKILL of the
// supervisor (its workers exit with it; the proof restarts it). A duplicate is explained by the
// SIGKILL of any process that was running when the first copy's connection was accepted.
//
// Phase 2, disk full (root: a tmpfs of 32 MiB as the dataDir of a second gateway, with a ballast
// file): messages of 64 KiB go in until the gateway answers 452 4.3.1 (or 451 4.3.x), more attempts
// while it is full, then the ballast is removed and it must accept again; every 250 of the phase
// must reach the peer intact. The tmpfs is unmounted in `finally`.
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, statfsSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { issueCertificate } from '../src/tls/certgen.ts';
import { LoadSession } from '../bench/lib/loadgen.ts';
import { startDnsServer, type DnsServer } from '../test/helpers/dns-server.ts';
import { freePort } from '../test/helpers/gateway.ts';
import { makePki } from '../test/helpers/pki.ts';
import { postgresMissing, startPostgres, type PgInstance } from '../test/helpers/postgres.ts';
import { FaultPeer, type PeerCopy, type PeerFault } from './lib/fault-peer.ts';
import { onAbort } from './lib/cleanup.ts';
import { proofGateway, type ProofGateway } from './lib/gateway.ts';
import type { ProofContext, ProofModule, ProofSection, ProofSize } from './types.ts';

interface Plan {
  messages: number;
  /** Pacing: the load is spread over about this many seconds (so faults hit it throughout). */
  loadSeconds: number;
  kills: number;
  loadDeadlineMs: number;
  drainDeadlineMs: number;
  holdMs: [number, number];
  stallMs: [number, number];
  gapMs: [number, number];
  /** Cluster runs (--store postgres): PostgreSQL stopped (immediate) and restarted this often mid-load. */
  pgStops: number;
  pgDownMs: [number, number];
}

export const PLANS: Record<ProofSize, Plan> = {
  ci: {
    messages: 5_000,
    loadSeconds: 60,
    kills: 4,
    loadDeadlineMs: 150_000,
    drainDeadlineMs: 75_000,
    holdMs: [1500, 4000],
    stallMs: [5000, 7000],
    gapMs: [200, 1200],
    pgStops: 1,
    pgDownMs: [3000, 6000],
  },
  full: {
    messages: 100_000,
    loadSeconds: 420,
    kills: 12,
    loadDeadlineMs: 660_000,
    drainDeadlineMs: 150_000,
    holdMs: [3000, 8000],
    stallMs: [5000, 10_000],
    gapMs: [500, 3000],
    pgStops: 3,
    pgDownMs: [3000, 8000],
  },
};
/** Several nodes on PostgreSQL: the CI size is smaller (three gateways and the database share the machine). */
const CLUSTER_CI: Partial<Plan> = {
  messages: 2_000,
  loadSeconds: 60,
  loadDeadlineMs: 240_000,
  drainDeadlineMs: 120_000,
};
/**
 * Several nodes on PostgreSQL at full size: the same 100,000 messages over a longer load. Three
 * gateways and the database share two cores, and each `pg_ctl stop -m immediate` is followed by
 * crash recovery (13 s in one run) during which every node answers 4xx: paced over 420 s with a
 * 660 s deadline, 77,428 of the 100,000 were sent in time (0 lost).
 */
const CLUSTER_FULL: Partial<Plan> = {
  loadSeconds: 600,
  loadDeadlineMs: 1_080_000,
  drainDeadlineMs: 240_000,
};
/**
 * The queue lease of a cluster run, and how long a slow peer then takes (longer than the lease).
 * Longer than the single node's 5 s: renewals go to a database server that competes for the
 * same cores and is stopped mid-run, and a lease must survive a few seconds of its latency.
 */
const CLUSTER_LEASE_S = 15;
const CLUSTER_SLOW_MS: [number, number] = [16_000, 18_000];

/** The module's name ("faults", or "faults-workers") and the gateway's worker processes (1: one process). */
let MODULE = 'faults';
let WORKERS = 1;
const command = (ctx: Pick<ProofContext, 'store' | 'nodes'>) =>
  `npm run proof -- --only ${MODULE}${ctx.store === 'postgres' ? ` --store postgres --nodes ${ctx.nodes}` : ''}`;

const SENDER = 'load@contoso.test';
const SESSIONS = 20;
const MAX_ATTEMPTS = 40;
const FAULT_KINDS: PeerFault[] = ['refuse', 'dropData', 'tempfail', 'stall', 'slow', 'tlsAbort', 'badCert'];
const FAULT_LABEL: Record<string, string> = {
  kill: 'gateway SIGKILL at a random moment, then restart',
  workerKill: 'SIGKILL of one worker process at a random moment (its supervisor restarts it)',
  refuse: 'peer refuses connections (listener closed)',
  dropData: 'peer drops the connection mid-DATA',
  tempfail: 'peer answers 4xx (RCPT or end of data)',
  stall: 'peer stalls past the delivery timeouts (no greeting / no reply to DATA)',
  slow: 'peer answers the end of data after 6–8 s: longer than the 5 s queue lease, within the 60 s timeout',
  tlsAbort: 'peer aborts the TLS handshake after its 220 to STARTTLS',
  badCert: 'forced-TLS peer presents a bad certificate (self-signed / wrong name)',
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha256 = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');
const between = ([a, b]: [number, number]) => randomInt(a, b + 1);

// ---- the peers and the DNS zone -------------------------------------------------------------
interface PeerSpec {
  name: string;
  ip: string;
  domains: string[];
  mx: string;
  forced?: 'certificateValidation' | 'domainValidation';
}
const PEERS: PeerSpec[] = [
  { name: 'alpha', ip: '127.0.0.2', domains: ['alpha.test'], mx: 'mx.alpha.test' },
  { name: 'bravo', ip: '127.0.0.3', domains: ['bravo.test'], mx: 'mx.bravo.test' },
  { name: 'charlie1', ip: '127.0.0.4', domains: ['charlie.test'], mx: 'mx1.charlie.test' },
  { name: 'charlie2', ip: '127.0.0.5', domains: ['charlie.test'], mx: 'mx2.charlie.test' },
  { name: 'secure', ip: '127.0.0.6', domains: ['secure.test'], mx: 'mx.secure.test', forced: 'certificateValidation' },
  { name: 'strict', ip: '127.0.0.7', domains: ['strict.test'], mx: 'mx.strict.test', forced: 'domainValidation' },
];
const DOMAINS = ['alpha.test', 'bravo.test', 'charlie.test', 'secure.test', 'strict.test'];
const FULL_PEER = { name: 'fullpeer', ip: '127.0.0.8', domain: 'full.test', mx: 'mx.full.test' };

function zone(): Parameters<typeof startDnsServer>[0] {
  const z: Parameters<typeof startDnsServer>[0] = {
    'alpha.test': { MX: [{ exchange: 'mx.alpha.test', priority: 10 }] },
    'bravo.test': { MX: [{ exchange: 'mx.bravo.test', priority: 10 }] },
    // Two MX hosts: a fault on the preferred one moves mail to the other.
    'charlie.test': {
      MX: [
        { exchange: 'mx1.charlie.test', priority: 10 },
        { exchange: 'mx2.charlie.test', priority: 20 },
      ],
    },
    'secure.test': { MX: [{ exchange: 'mx.secure.test', priority: 10 }] },
    'strict.test': { MX: [{ exchange: 'mx.strict.test', priority: 10 }] },
    'full.test': { MX: [{ exchange: FULL_PEER.mx, priority: 10 }] },
    [FULL_PEER.mx]: { A: [FULL_PEER.ip] },
  };
  for (const p of PEERS) z[p.mx] = { A: [p.ip] };
  return z;
}

/**
 * Recipients of message `idx`: the domains in turn; every 7th message also has a recipient at
 * one of the other four domains (varying); every 97th a recipient its peer refuses with 550.
 */
function rcptsOf(idx: number): string[] {
  const d = DOMAINS[idx % DOMAINS.length];
  const r = [`u${idx % 40}@${d}`];
  if (idx % 7 === 3) r.push(`v${idx % 40}@${DOMAINS[(idx + 1 + (Math.floor(idx / 7) % 4)) % DOMAINS.length]}`);
  if (idx % 97 === 5) r.push(`reject-${idx}@${d}`); // the peer answers 550 at RCPT: bounced with a DSN
  return r;
}
const isReject = (addr: string) => addr.startsWith('reject-');
const domainOf = (addr: string) => addr.slice(addr.lastIndexOf('@') + 1);

// ---- messages -------------------------------------------------------------------------------
class MessageFactory {
  private readonly pool = randomBytes(750_000).toString('base64');
  constructor(readonly tag: string) {}

  /** The message as sent (CRLF text; the first line is X-Proof-Id). Deterministic per idx. */
  text(idx: number, rcpts: string[], minSize = 300, spread = 2700): string {
    const len = minSize + ((idx * 7919) % spread);
    const off = (idx * 104_729) % (this.pool.length - len - 1);
    const lines = this.pool.slice(off, off + len).match(/.{1,76}/g) ?? [];
    return [
      `X-Proof-Id: ${this.tag}-${idx}`,
      `From: Load <${SENDER}>`,
      `To: ${rcpts.map((r) => `<${r}>`).join(', ')}`,
      `Subject: proof faults ${idx}`,
      `Message-ID: <${this.tag}.${idx}@load.contoso.test>`,
      'MIME-Version: 1.0',
      'Content-Type: text/plain; charset=us-ascii',
      '',
      `.a line that starts with a dot (${idx})`,
      ...lines,
      '..',
      `end of ${idx}`,
      '',
    ].join('\r\n');
  }
}

/** Dot-stuffed wire form with the terminator (LoadSession.transaction sends it as is). */
const wire = (text: string) => Buffer.from(text.replace(/(^|\r\n)\./g, '$1..') + '.\r\n', 'latin1');
const proofIdx = (tag: string, id: string | null): number => {
  if (!id || !id.startsWith(`${tag}-`)) return -1;
  const n = Number(id.slice(tag.length + 1));
  return Number.isInteger(n) ? n : -1;
};

interface QueueEntry {
  id: string;
  state: string;
  lastError?: string;
  recipients: { address: string; status: string; lastReply?: { code: number; enhanced: string; message: string } }[];
}

/** The whole queue, page by page (`queue list --json --after` the last id of the previous page). */
async function queueList(g: ProofGateway): Promise<QueueEntry[]> {
  const PAGE = 1000;
  const all: QueueEntry[] = [];
  for (let pages = 0; pages < 1000; pages++) {
    const after = all.length ? ['--after', all[all.length - 1].id] : [];
    const r = await g.cli(['queue', 'list', '--json', '--limit', String(PAGE), ...after]);
    if (r.code !== 0) throw new Error(`portcullis queue list failed: ${r.stderr}`);
    const page = JSON.parse(r.stdout) as QueueEntry[];
    all.push(...page);
    if (page.length < PAGE) return all;
  }
  throw new Error('portcullis queue list: more than 1,000 pages');
}

/** Bounces in the sender's mailbox: "queueId rcpt" for each failed recipient, and each DSN's X-Proof-Id. */
function scanDsns(dataDir: string, seen: Map<string, { keys: string[]; proofId: string | null }>, prefix = ''): void {
  const dir = path.join(dataDir, 'mailboxes', 'contoso.test', 'load', 'new');
  let names: string[] = [];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) {
    if (seen.has(prefix + n)) continue;
    const text = readFileSync(path.join(dir, n), 'latin1');
    const q = /^X-Portcullis-Queue-ID: (\S+)/m.exec(text)?.[1];
    const keys = [...text.matchAll(/^Final-Recipient: rfc822; (\S+)\r\nAction: failed\r\n/gm)].map(
      (m) => `${q} ${m[1]}`,
    );
    seen.set(prefix + n, { keys, proofId: /^X-Proof-Id: (\S+)/m.exec(text)?.[1] ?? null });
  }
}

// ---- the module -----------------------------------------------------------------------------
/** The module; `workers: 2` runs phase 1 against a supervisor with two workers and skips phase 2. */
export function faultsModule(name: string, workers: number): ProofModule {
  return {
    name,
    run: (ctx) => {
      WORKERS = workers;
      MODULE = name;
      return impl.run(ctx);
    },
  };
}

const impl = {
  async run(ctx: ProofContext): Promise<ProofSection[]> {
    const cluster = ctx.store === 'postgres';
    if (cluster && postgresMissing) throw new Error(postgresMissing);
    const plan = { ...PLANS[ctx.size], ...(cluster ? (ctx.size === 'ci' ? CLUSTER_CI : CLUSTER_FULL) : {}) };
    const t0 = Date.now();
    const pki = await makePki(ctx.workDir, 'Proof');
    const gwCert = await pki.issue('mx1.contoso.test');
    const peerCert = await pki.issue('mx.peers.test', { dnsNames: [...PEERS.map((p) => p.mx), FULL_PEER.mx] });
    const wrongName = await pki.issue('mx.other.test'); // valid chain, another name
    const selfSigned = await issueCertificate({
      subject: 'CN=mx.secure.test, O=Nobody',
      dnsNames: ['mx.secure.test', 'mx.strict.test'],
      key: 'ec256',
    });
    const good = { cert: readFileSync(peerCert.chain, 'utf8'), key: readFileSync(peerCert.key, 'utf8') };
    const ca = readFileSync(pki.rootFile, 'utf8');
    const dns = await startDnsServer(zone());
    const peerPort = await freePort('127.0.0.1');
    const peers: FaultPeer[] = [];
    const copies: PeerCopy[] = [];
    const sections: ProofSection[] = [];
    let pgi: PgInstance | undefined;
    try {
      if (cluster) pgi = await startPostgres({ host: '127.0.0.9' });
      for (const p of PEERS) {
        const bad =
          p.forced === 'certificateValidation'
            ? { cert: selfSigned.certPem, key: selfSigned.keyPem }
            : p.forced === 'domainValidation'
              ? { cert: readFileSync(wrongName.chain, 'utf8'), key: readFileSync(wrongName.key, 'utf8') }
              : undefined;
        const fp = new FaultPeer({
          name: p.name,
          host: p.ip,
          port: peerPort,
          tls: { good, ...(bad ? { bad } : {}) },
          forced: !!p.forced,
          ...(cluster ? { slowMs: CLUSTER_SLOW_MS } : {}),
          rcptReply: (a) => (isReject(a) ? `550 5.1.1 <${a}>: Recipient address rejected: User unknown` : undefined),
          onMessage: (c) => copies.push(c),
        });
        await fp.listen();
        peers.push(fp);
      }
      sections.push(
        ...(await loadWithFaults(ctx, plan, {
          pki: { gwCert, ca, rootFile: pki.rootFile },
          dns,
          peerPort,
          peers,
          copies,
          ...(pgi ? { cluster: { pg: pgi, url: await pgi.createDatabase('proof'), nodes: ctx.nodes } } : {}),
        })),
      );
      // The disk-full phase fills the dataDir that holds an SQLite queue; on PostgreSQL the queue is elsewhere.
      if (!cluster && WORKERS === 1)
        sections.push(await diskFull(ctx, { gwCert, ca, rootFile: pki.rootFile, dns, peerPort, good }));
    } finally {
      await Promise.all(peers.map((p) => p.close()));
      await dns.close();
      await pgi?.destroy();
    }
    ctx.log(`done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return sections;
  },
};
const mod = faultsModule('faults', 1);
export default mod;

interface Env {
  pki: { gwCert: { chain: string; key: string }; ca: string; rootFile: string };
  dns: DnsServer;
  peerPort: number;
  peers: FaultPeer[];
  copies: PeerCopy[];
  /** Several gateway nodes on one PostgreSQL server (which the proof stops and restarts). */
  cluster?: { pg: PgInstance; url: string; nodes: number };
}

function gatewayConfig(o: {
  gwCert: { chain: string; key: string };
  rootFile: string;
  dns: DnsServer;
  peerPort: number;
  leaseSeconds?: number;
}): Record<string, unknown> {
  return {
    ...(WORKERS > 1 ? { workers: WORKERS } : {}),
    log: { level: 'info' },
    smtp: { maxConnectionsPerIP: 1000 },
    tls: {
      certificates: [{ cert: o.gwCert.chain, key: o.gwCert.key }],
      trust: { system: false, caFiles: [o.rootFile] },
      revocation: 'off',
    },
    dns: { servers: [o.dns.server] },
    delivery: {
      port: o.peerPort,
      maxConnectionsPerDestination: 10,
      destinationDownSeconds: 2,
      tlsFallbackSeconds: 3,
      connectionReuse: { idleSeconds: 5 },
      // Small timeouts so stalls are timed out quickly; the end-of-data wait stays long (a short
      // one turns a slow 250 into a duplicate, which this proof must attribute to crashes only).
      timeouts: { connect: 3, greeting: 3, command: 5, dataInit: 4, dataBlock: 4, dataEnd: 60 },
    },
    // A 5 s lease: deliveries held up by stalls, slow peers and connection limits outlive it.
    queue: {
      retrySchedule: [1, 2, 3],
      delayWarning: 0,
      messageExpiration: 7200,
      concurrency: 100,
      leaseSeconds: o.leaseSeconds ?? 5,
    },
    organizations: [
      {
        name: 'contoso',
        acceptedDomains: [{ domain: 'contoso.test' }],
        inboundConnectors: [{ name: 'Proof driver', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] }],
        outboundConnectors: [
          { name: 'To Secure', recipientDomains: ['secure.test'], tlsSettings: 'certificateValidation' },
          {
            name: 'To Strict',
            recipientDomains: ['strict.test'],
            tlsSettings: 'domainValidation',
            tlsDomain: 'mx.strict.test',
          },
        ],
      },
    ],
  };
}

async function loadWithFaults(ctx: ProofContext, plan: Plan, env: Env): Promise<ProofSection[]> {
  const dir = path.join(ctx.workDir, 'load');
  mkdirSync(dir, { recursive: true });
  const tag = `f${randomBytes(3).toString('hex')}`;
  const factory = new MessageFactory(tag);
  const host = '127.0.0.1';
  const cluster = env.cluster;
  const NODES = cluster?.nodes ?? 1;
  const COMMAND = command(ctx);
  const base = gatewayConfig({
    gwCert: env.pki.gwCert,
    rootFile: env.pki.rootFile,
    dns: env.dns,
    peerPort: env.peerPort,
    ...(cluster ? { leaseSeconds: CLUSTER_LEASE_S } : {}),
  });
  // Nodes of a cluster: their own dataDir, port, node id and hostname (the peers see it in EHLO,
  // which tells which node delivered a copy); one PostgreSQL store.
  const gs: ProofGateway[] = [];
  for (let k = 0; k < NODES; k++) {
    const nd = cluster ? path.join(dir, `node${k + 1}`) : dir;
    mkdirSync(nd, { recursive: true });
    gs.push(
      proofGateway({
        dir: nd,
        dataDir: path.join(nd, 'data'),
        host,
        port: await freePort(host),
        config: cluster
          ? {
              ...base,
              hostname: `mx${k + 1}.contoso.test`,
              nodeId: `node${k + 1}`,
              store: { type: 'postgres', url: cluster.url },
              delivery: { ...(base.delivery as object), maildirShared: true },
            }
          : base,
      }),
    );
  }
  const g = gs[0];
  const nodeOf = (client: string) =>
    NODES > 1
      ? Math.max(
          0,
          gs.findIndex((_, k) => client === `mx${k + 1}.contoso.test`),
        )
      : 0;
  const N = plan.messages;
  const shaOf: string[] = new Array(N);
  const acks: string[][] = Array.from({ length: N }, () => []);
  const lostReplies = new Uint16Array(N); // transactions of this message cut without a final reply
  // 451 4.3.x: the store failed (PostgreSQL down); a commit cut in flight may still have landed.
  const storageRefused = new Uint16Array(N);
  const acceptedBy = new Array<number>(NODES).fill(0);
  // PostgreSQL outages: from the stop (done) until it accepts connections again; what sessions got meanwhile.
  const outages: { start: number; restart: number | null; end: number | null }[] = [];
  // Answered while it was down: `ok` lists 250s to transactions begun after the stop and answered
  // before its start (none may exist); `committed` counts the other 250s (stored before the stop,
  // or once it accepted connections again, before pg_ctl returned).
  const whileDown = { ok: [] as string[], committed: 0, tempfail: 0, permfail: 0, cut: 0 };
  const attempts = new Uint16Array(N);
  const refusals = new Map<number, string[]>();
  const faults: Record<string, number> = { kill: 0, ...(WORKERS > 1 ? { workerKill: 0 } : {}) };
  for (const k of FAULT_KINDS) faults[k] = 0;
  const failures: string[] = [];
  const notes: string[] = [];
  let acked = 0;
  let givenUp = 0;
  let transactions = 0;
  let sessionsOpened = 0;
  let connectFailures = 0;
  let inFlight = 0;
  const killsInFlight: number[] = [];
  const pgDown = () => outages.some((o) => o.end === null);
  const tStart = Date.now();
  let loadMs = 0;
  let drainMs = 0;
  try {
    await Promise.all(gs.map((x) => x.start()));
    ctx.log(
      `${NODES > 1 ? `${NODES} gateway nodes on one PostgreSQL` : 'gateway'} on ${host}:${gs.map((x) => x.port).join(',')}, ` +
        `peers on 127.0.0.2-7:${env.peerPort}, ${N} messages paced over ~${plan.loadSeconds} s`,
    );

    // ---- driver ---------------------------------------------------------------------------
    const deadline = Date.now() + plan.loadDeadlineMs;
    const retry: number[] = [];
    let next = 0;
    let loadDone = false;
    const interval = (plan.loadSeconds * 1000) / N;
    let slot = Date.now();
    const pace = async () => {
      const now = Date.now();
      slot = Math.max(slot + interval, now - 1000); // no burst of more than a second of backlog
      if (slot > now) await sleep(slot - now);
    };
    const worker = async (w: number) => {
      let s: LoadSession | null = null;
      let at = w % NODES; // the node this session talks to; the next one when it cannot connect
      while (!loadDone && Date.now() < deadline && acked + givenUp < N) {
        if (!s) {
          try {
            s = await LoadSession.connect(host, gs[at].port, 30_000);
            await s.handshake('driver.contoso.test', 'mx1.contoso.test', env.pki.ca);
            sessionsOpened++;
          } catch {
            s?.destroy();
            s = null;
            connectFailures++;
            at = (at + 1) % NODES;
            await sleep(randomInt(50, 250));
            continue;
          }
        }
        const idx = retry.length ? retry.shift()! : next < N ? next++ : -1;
        if (idx < 0) {
          await sleep(50);
          continue;
        }
        await pace();
        const rcpts = rcptsOf(idx);
        const text = factory.text(idx, rcpts);
        shaOf[idx] ??= sha256(text);
        attempts[idx]++;
        transactions++;
        inFlight++;
        let r: { code: number; text: string } | null = null;
        const tx0 = Date.now();
        try {
          r = await s.transaction(SENDER, rcpts, wire(text), true);
        } catch {
          r = null;
        } finally {
          inFlight--;
        }
        // Answered while PostgreSQL was down: never a 250 to a transaction begun after the stop.
        const tx1 = Date.now();
        const down = outages.find((o) => tx1 >= o.start && (o.end === null || tx1 <= o.end));
        if (down) {
          // Begun after the stop and answered before the start was even asked: nothing could be stored.
          if (r?.code === 250 && tx0 >= down.start && (down.restart === null || tx1 <= down.restart))
            whileDown.ok.push(`${tag}-${idx}: ${r.text.split('\n')[0]}`);
          else if (r?.code === 250) whileDown.committed++;
          else if (!r) whileDown.cut++;
          else if (r.code >= 500) whileDown.permfail++;
          else whileDown.tempfail++;
        }
        if (r && /^451 4\.3\./.test(r.text)) storageRefused[idx]++;
        if (r?.code === 250) {
          const q = /queued as ([0-9A-Z]+)/.exec(r.text)?.[1];
          if (!q) {
            failures.push(`250 without a queue id: ${r.text}`);
            givenUp++;
            continue;
          }
          acks[idx].push(q);
          acked++;
          acceptedBy[at]++;
          continue;
        }
        if (r) {
          const l = refusals.get(idx) ?? [];
          l.push(r.text.split('\n')[0]);
          refusals.set(idx, l);
        } else lostReplies[idx]++;
        if ((r && r.code >= 500) || attempts[idx] >= MAX_ATTEMPTS) givenUp++;
        else retry.push(idx);
        s.destroy();
        s = null; // a fresh session for whatever comes next
        // A sender backs off after a 4xx: 100 ms more per attempt, up to 2 s (40 attempts span about
        // a minute), so a database outage of seconds does not use up a message's attempts.
        if (r) await sleep(Math.min(2000, 100 * attempts[idx]));
      }
      s?.quit();
    };

    // ---- fault injector: kills --------------------------------------------------------------
    const killAt = Array.from({ length: plan.kills }, (_, k) =>
      Math.floor(N * (0.05 + (0.9 * (k + Math.random())) / plan.kills)),
    ).sort((a, b) => a - b);
    const restarting = new Set<ProofGateway>();
    let selfExitTail: string | undefined;
    const killer = async () => {
      for (const th of killAt) {
        while ((acked < th || pgDown()) && !loadDone && Date.now() < deadline) await sleep(5);
        if (loadDone || Date.now() >= deadline) return;
        await sleep(randomInt(0, 40));
        const victim = gs[randomInt(NODES)]; // a random node of a cluster
        // With workers, every other kill is one worker's (the supervisor restarts it).
        if (WORKERS > 1 && killAt.indexOf(th) % 2 === 0) {
          killsInFlight.push(inFlight);
          if (victim.killWorker(randomInt(1, WORKERS + 1))) faults.workerKill++;
          continue;
        }
        restarting.add(victim);
        try {
          killsInFlight.push(inFlight);
          await victim.kill9();
          faults.kill++;
          await sleep(randomInt(50, 600));
          while (pgDown() && Date.now() < deadline) await sleep(50); // a node needs its store to start
          await victim.start();
        } finally {
          restarting.delete(victim);
        }
      }
    };
    // PostgreSQL stopped as by a crash (pg_ctl stop -m immediate) mid-load, then started again;
    // an outage lasts from the stop until the server accepts connections again.
    const pgAt = Array.from({ length: cluster ? plan.pgStops : 0 }, (_, k) =>
      Math.floor(N * (0.15 + (0.7 * (k + Math.random())) / plan.pgStops)),
    ).sort((a, b) => a - b);
    const stopper = async () => {
      for (const th of pgAt) {
        while ((acked < th || restarting.size) && !loadDone && Date.now() < deadline) await sleep(5);
        if (loadDone || Date.now() >= deadline) return;
        await cluster!.pg.stop('immediate');
        const o = { start: Date.now(), restart: null as number | null, end: null as number | null };
        outages.push(o);
        await sleep(between(plan.pgDownMs));
        o.restart = Date.now();
        await cluster!.pg.start(); // pg_ctl start -w: returns once the server accepts connections
        o.end = Date.now();
        ctx.log(`PostgreSQL stopped (immediate), accepting connections again after ${o.end - o.start} ms`);
      }
    };
    // A gateway that exits on its own (a crash we did not cause) fails the proof; it is restarted
    // so the run can still account for everything.
    const watchdog = setInterval(() => {
      for (const x of gs) {
        if (restarting.has(x) || x.running() || pgDown()) continue;
        restarting.add(x);
        selfExitTail ??= x.tail.slice(-8).join('\n');
        void x
          .start()
          .catch((e) => failures.push(`restart after a crash failed: ${(e as Error).message}`))
          .finally(() => restarting.delete(x));
      }
    }, 500);

    // ---- fault injector: peers --------------------------------------------------------------
    const injector = async (offset: number) => {
      const order = [...FAULT_KINDS].sort(() => Math.random() - 0.5);
      for (let i = offset; !loadDone && Date.now() < deadline; i++) {
        const kind = order[i % order.length];
        const candidates = env.peers.filter(
          (p) => p.fault === 'none' && (kind === 'badCert' ? p.hasBadCert : kind === 'tlsAbort' ? p.hasTls : true),
        );
        if (!candidates.length) {
          await sleep(200);
          continue;
        }
        const p = candidates[randomInt(candidates.length)];
        await p.setFault(kind);
        faults[kind]++;
        const until = Date.now() + between(kind === 'stall' ? plan.stallMs : plan.holdMs);
        while (!loadDone && Date.now() < until) await sleep(50);
        await p.setFault('none');
        await sleep(between(plan.gapMs));
      }
    };

    const killing = killer();
    const stopping = stopper();
    const injecting = [injector(0), injector(3)];
    const progress = setInterval(
      () =>
        ctx.log(
          `load: ${acked}/${N} accepted, ${transactions} transactions, ${faults.kill} kills, ${outages.length} database stops, peer faults ${FAULT_KINDS.map((k) => `${k} ${faults[k]}`).join(', ')}`,
        ),
      10_000,
    );
    try {
      await Promise.all(Array.from({ length: SESSIONS }, (_, w) => worker(w)));
    } finally {
      loadDone = true;
      clearInterval(progress);
      clearInterval(watchdog);
      await killing;
      await stopping;
      await Promise.all(injecting);
      await Promise.all(env.peers.map((p) => p.setFault('none')));
    }
    loadMs = Date.now() - tStart;
    ctx.log(`load done: ${acked}/${N} accepted in ${(loadMs / 1000).toFixed(1)} s (by node: ${acceptedBy.join(', ')})`);
    for (const x of gs) if (!x.running()) await x.start();

    // ---- drain (with one more kill while the queue is busy) -----------------------------------
    const expected = new Map<string, number>(); // "queueId rcpt" -> idx
    for (let i = 0; i < N; i++) for (const q of acks[i]) for (const r of rcptsOf(i)) expected.set(`${q} ${r}`, i);
    const deliveredKeys = new Map<string, number>(); // "queueId rcpt" -> copies with the right hash
    let scanned = 0;
    const absorb = () => {
      for (; scanned < env.copies.length; scanned++) {
        const c = env.copies[scanned];
        const i = proofIdx(tag, c.proofId);
        if (i < 0 || c.sha256 !== shaOf[i]) continue;
        for (const r of c.rcpts) {
          const k = `${c.queueId} ${r}`;
          deliveredKeys.set(k, (deliveredKeys.get(k) ?? 0) + 1);
        }
      }
    };
    const dsns = new Map<string, { keys: string[]; proofId: string | null }>();
    const bouncedKeys = () => new Set([...dsns.values()].flatMap((d) => d.keys));
    const tDrain = Date.now();
    let drainKilled = false;
    const drainKillAfter = randomInt(300, 1500);
    const scanAll = () => gs.forEach((x, k) => scanDsns(x.dataDir, dsns, `${k}/`));
    for (;;) {
      absorb();
      scanAll();
      const b = bouncedKeys();
      let open = 0;
      for (const k of expected.keys()) if (!deliveredKeys.has(k) && !b.has(k)) open++;
      if (!open || Date.now() - tDrain > plan.drainDeadlineMs) break;
      for (const x of gs)
        if (!x.running()) {
          selfExitTail ??= x.tail.slice(-8).join('\n');
          await x.start();
        }
      if (!drainKilled && Date.now() - tDrain > drainKillAfter) {
        drainKilled = true;
        ctx.log(`drain: ${open} deliveries outstanding; SIGKILL while the queue is busy`);
        killsInFlight.push(0);
        const victim = gs[randomInt(NODES)];
        await victim.kill9();
        faults.kill++;
        await sleep(randomInt(50, 600));
        await victim.start();
      }
      await sleep(250);
    }
    drainMs = Date.now() - tDrain;
    absorb();
    scanAll();
    const queue = await queueList(g);

    // ---- accounting -----------------------------------------------------------------------
    const bounced = bouncedKeys();
    const queued = new Map<string, string>(); // "queueId rcpt" -> reason
    for (const m of queue) {
      for (const r of m.recipients) {
        if (r.status !== 'pending' && r.status !== 'deferred') continue;
        const reason = r.lastReply
          ? `${r.lastReply.code} ${r.lastReply.enhanced} ${r.lastReply.message}`
          : (m.lastError ?? (m.state === 'active' ? 'being delivered now' : `state ${m.state}, not attempted yet`));
        queued.set(`${m.id} ${r.address}`, reason);
      }
    }
    const corrupted: string[] = [];
    const leaks: string[] = env.peers.flatMap((p) => p.leaks);
    const copiesByKey = new Map<string, PeerCopy[]>(); // "queueId rcpt"
    const queueIdsByMsgRcpt = new Map<string, Set<string>>(); // "idx rcpt" -> queue ids delivered
    for (const c of env.copies) {
      const i = proofIdx(tag, c.proofId);
      const spec = PEERS.find((p) => p.name === c.peer)!;
      if (i < 0 || i >= N) {
        corrupted.push(`${c.peer}: a message without a known X-Proof-Id (queue id ${c.queueId})`);
        continue;
      }
      if (c.sha256 !== shaOf[i]) {
        corrupted.push(`${c.peer}: ${tag}-${i} (queue id ${c.queueId}) does not hash to what was sent`);
        continue;
      }
      if (!c.queueId) {
        corrupted.push(`${c.peer}: ${tag}-${i} without the gateway's Received: queue id`);
        continue;
      }
      for (const r of c.rcpts) {
        if (!rcptsOf(i).includes(r) || !spec.domains.includes(domainOf(r))) {
          corrupted.push(`${c.peer}: ${tag}-${i} delivered for ${r}, not a recipient of this peer`);
          continue;
        }
        const k = `${c.queueId} ${r}`;
        copiesByKey.set(k, [...(copiesByKey.get(k) ?? []), c]);
        const mk = `${i} ${r}`;
        queueIdsByMsgRcpt.set(mk, (queueIdsByMsgRcpt.get(mk) ?? new Set()).add(c.queueId));
      }
      if (spec.forced && !(c.tls && c.goodCert))
        leaks.push(`${c.peer}: ${tag}-${i} delivered ${c.tls ? 'with the bad certificate' : 'without TLS'}`);
    }
    // A DSN must return the message of the queue id it reports on.
    const msgOfQueueId = new Map<string, number>();
    for (let i = 0; i < N; i++) for (const q of acks[i]) msgOfQueueId.set(q, i);
    for (const [mk, ids] of queueIdsByMsgRcpt) for (const q of ids) msgOfQueueId.set(q, Number(mk.split(' ')[0]));
    for (const d of dsns.values()) {
      if (!d.keys.length) continue;
      const q = d.keys[0].split(' ')[0];
      const i = proofIdx(tag, d.proofId);
      const owner = msgOfQueueId.get(q);
      if (i < 0 || (owner !== undefined && owner !== i))
        corrupted.push(`the DSN for ${q} returns ${d.proofId ?? 'no X-Proof-Id'}, not the message of that queue id`);
    }
    let delivered = 0;
    let bouncedN = 0;
    let queuedN = 0;
    const lost: string[] = [];
    const queuedReasons = new Map<string, number>();
    for (const [k, i] of expected) {
      if (copiesByKey.has(k)) delivered++;
      else if (bounced.has(k)) bouncedN++;
      else if (queued.has(k)) {
        queuedN++;
        const why = queued.get(k)!.slice(0, 120);
        queuedReasons.set(why, (queuedReasons.get(why) ?? 0) + 1);
      } else lost.push(`${tag}-${i} (${k})`);
      if (isReject(k.split(' ')[1]) && copiesByKey.has(k))
        corrupted.push(`${k}: delivered although its peer refuses it`);
    }
    // Duplicates. A copy came from the gateway process that was running when its connection was
    // accepted (a new process needs hundreds of ms to start, so there is no ambiguity at a kill).
    // A redelivery is explained when that process was SIGKILLed after the copy (within a minute;
    // the peer may process the last bytes a moment after the kill) and before the next copy.
    const epochOf = (node: number, t: number) => [...gs[node].epochs].reverse().find((e) => e.start <= t);
    // With workers, any worker (or the supervisor) running at the time may have sent it.
    const epochsAt = (node: number, t: number) =>
      WORKERS > 1 ? gs[node].epochs.filter((e) => e.start <= t && (e.end === null || e.end >= t)) : [epochOf(node, t)];
    // On a cluster also a database outage explains one: the first delivery ran into it (its
    // lease could not be renewed, or its outcome not recorded) and the next one came after it began.
    const outageBetween = (a: PeerCopy, b: PeerCopy) =>
      outages.some((o) => a.connAt <= (o.end ?? Infinity) + 2000 && b.at >= o.start);
    const redelivered: string[] = [];
    const unexplained: string[] = [];
    for (const [k, cs] of copiesByKey) {
      if (cs.length < 2) continue;
      const c = [...cs].sort((a, b) => a.at - b.at);
      redelivered.push(`${k} x${cs.length}`);
      for (let j = 1; j < c.length; j++) {
        const crash =
          outageBetween(c[j - 1], c[j]) ||
          epochsAt(nodeOf(c[j - 1].client), c[j - 1].connAt).some(
            (e) =>
              !!e &&
              e.how === 'SIGKILL' &&
              e.end !== null &&
              c[j - 1].at <= e.end + 2000 &&
              e.end - c[j - 1].at < 60_000 &&
              c[j].at >= e.end,
          );
        if (!crash) {
          unexplained.push(
            `${k}: delivered again ${c[j].at - c[j - 1].at} ms later, the first copy not followed by a SIGKILL of the process that sent it ` +
              `(${c.map((x) => `${x.peer} conn ${x.conn} accepted ${new Date(x.connAt).toISOString()}, 250 at ${new Date(x.at).toISOString()}`).join('; ')})`,
          );
        }
      }
    }
    const resent: string[] = [];
    for (const [mk, ids] of queueIdsByMsgRcpt) {
      if (ids.size < 2) continue;
      const i = Number(mk.split(' ')[0]);
      resent.push(`${tag}-${mk} under ${[...ids].join(', ')}`);
      if (!lostReplies[i] && !storageRefused[i])
        unexplained.push(
          `${tag}-${mk}: delivered under ${ids.size} queue ids although no transaction of it lost its reply ` +
            'or was refused for a store failure',
        );
    }
    const unackedDelivered = [...copiesByKey.keys()].filter((k) => !expected.has(k));
    const resentMessages = new Set(resent.map((r) => r.split(' ')[0])).size;
    const maxResends = killsInFlight.reduce((a, b) => a + b, 0) + storageRefused.reduce((a, b) => a + (b ? 1 : 0), 0);

    // ---- verdict ----------------------------------------------------------------------------
    const accepted = acks.filter((a) => a.length > 0).length;
    if (accepted < N)
      failures.push(
        `only ${accepted} of ${N} messages were accepted within the deadline (gave up on ${givenUp}; refusals: ${[...refusals.values()].flat().slice(0, 5).join(' | ')})`,
      );
    if (lost.length) failures.push(`${lost.length} accepted deliveries lost: ${lost.slice(0, 10).join(', ')}`);
    if (corrupted.length) failures.push(`${corrupted.length} corrupted: ${corrupted.slice(0, 10).join('; ')}`);
    if (leaks.length)
      failures.push(
        `${leaks.length} transactions reached a forced-TLS peer without TLS with its good certificate: ${leaks.slice(0, 5).join('; ')}`,
      );
    if (unexplained.length)
      failures.push(`${unexplained.length} duplicates not explained by a crash: ${unexplained.slice(0, 5).join('; ')}`);
    if (resentMessages > maxResends)
      failures.push(
        `${resentMessages} messages were resent after a lost 250, more than the ${maxResends} transactions in flight at the kills or refused for a store failure`,
      );
    const selfExits = gs.reduce((a, x) => a + x.epochs.filter((e) => e.how === 'exit').length, 0);
    if (cluster) {
      if (outages.length < plan.pgStops)
        failures.push(`PostgreSQL was stopped ${outages.length} times, ${plan.pgStops} planned`);
      if (whileDown.ok.length)
        failures.push(
          `${whileDown.ok.length} transactions got 250 while PostgreSQL was down: ${whileDown.ok.slice(0, 5).join('; ')}`,
        );
      if (whileDown.permfail) failures.push(`${whileDown.permfail} transactions got 5xx while PostgreSQL was down`);
      if (outages.length && !whileDown.tempfail)
        failures.push(
          'no transaction was refused with 4xx while PostgreSQL was down (sessions must be told, not held)',
        );
      const idle = acceptedBy.findIndex((n) => n === 0);
      if (idle >= 0) failures.push(`node${idle + 1} accepted nothing: the load was not spread over the nodes`);
    }
    if (selfExits)
      failures.push(
        `the gateway exited by itself ${selfExits} time(s) (a crash nobody caused); last lines:\n${selfExitTail ?? ''}`,
      );
    const kills = faults.kill + (faults.workerKill ?? 0);
    if (kills < plan.kills) failures.push(`only ${kills} of ${plan.kills + 1} planned kills happened`);
    for (const k of FAULT_KINDS) if (!faults[k]) failures.push(`fault ${k} was never injected`);

    const peerStats = (f: keyof FaultPeer['stats']) => env.peers.reduce((a, p) => a + p.stats[f], 0);
    const rcptTotal = expected.size;
    const internalBy = new Map<string, number>();
    for (const x of gs) for (const [w, n] of x.internalErrors) internalBy.set(w, (internalBy.get(w) ?? 0) + n);
    const internal = [...internalBy].map(([w, n]) => `${w} ${n}`).join(', ') || '0';
    const figures: (string | number)[][] = [
      ['messages sent (distinct, each with a unique X-Proof-Id)', N],
      ['SMTP transactions (including resends after a kill)', transactions],
      ['messages accepted (250)', accepted],
      ['recipients accepted (queue id × recipient)', rcptTotal],
      ['delivered to their peer, sha256 equal', delivered],
      ['bounced with a DSN (recipients the peers refuse with 550 by design)', bouncedN],
      ['still queued, with a reason', queuedN],
      ['**lost**', lost.length],
      ['**corrupted** (hash mismatch, unknown id, wrong peer)', corrupted.length],
      ["duplicated: delivered again after a SIGKILL between the peer's 250 and our commit", redelivered.length],
      ['duplicated: resent by the driver after a 250 lost in a SIGKILL (same message, two queue ids)', resentMessages],
      ['duplicates not explained by a crash', unexplained.length],
      ['delivered under a queue id whose 250 the driver never saw', unackedDelivered.length],
      ['transactions reaching a forced-TLS peer without TLS with its good certificate', leaks.length],
      ['gateway internal errors (by where)', internal],
      ...(cluster
        ? [
            ['gateway nodes on one PostgreSQL; messages accepted by each', `${NODES}; ${acceptedBy.join(', ')}`],
            [
              'PostgreSQL stopped (`pg_ctl stop -m immediate`) and restarted mid-load; down until it accepted connections again (ms)',
              `${outages.length}; ${outages.map((o) => (o.end ?? Date.now()) - o.start).join(', ')}`,
            ],
            ['transactions begun after the stop and answered **250** before its restart', whileDown.ok.length],
            [
              'transactions answered while it was down: 4xx / 5xx / cut without a reply / 250 begun before the stop',
              `${whileDown.tempfail} / ${whileDown.permfail} / ${whileDown.cut} / ${whileDown.committed}`,
            ],
            [
              'transactions refused 451 4.3.x (the store failed; resent by the driver)',
              storageRefused.reduce((a, b) => a + b, 0),
            ],
          ]
        : []),
      ['load duration (s)', (loadMs / 1000).toFixed(1)],
      ['drain after the load (s)', (drainMs / 1000).toFixed(1)],
    ];
    const faultRows: (string | number)[][] = [
      ...(WORKERS > 1
        ? [
            [
              'workerKill',
              faults.workerKill,
              FAULT_LABEL.workerKill,
              `${WORKERS} workers; ${g.epochs.length} process lifetimes recorded (supervisors and workers)`,
            ],
          ]
        : []),
      [
        'kill',
        faults.kill,
        FAULT_LABEL.kill,
        `${gs.reduce((a, x) => a + x.recovered, 0)} restarts released leases of the killed process; ${sessionsOpened} driver sessions opened, ${connectFailures} connects refused while down`,
      ],
      ['refuse', faults.refuse, FAULT_LABEL.refuse, 'connections refused (ECONNREFUSED at the gateway)'],
      ['dropData', faults.dropData, FAULT_LABEL.dropData, `${peerStats('dropped')} connections cut mid-DATA`],
      ['tempfail', faults.tempfail, FAULT_LABEL.tempfail, `${peerStats('tempfails')} 4xx replies`],
      ['stall', faults.stall, FAULT_LABEL.stall, `${peerStats('stalls')} stalled sessions`],
      [
        'slow',
        faults.slow,
        cluster
          ? `peer answers the end of data after ${CLUSTER_SLOW_MS[0] / 1000}–${CLUSTER_SLOW_MS[1] / 1000} s: longer than the ${CLUSTER_LEASE_S} s queue lease, within the 60 s timeout`
          : FAULT_LABEL.slow,
        `${peerStats('slowReplies')} deliveries that outlived their lease (none may be started twice)`,
      ],
      ['tlsAbort', faults.tlsAbort, FAULT_LABEL.tlsAbort, `${peerStats('tlsAborts')} handshakes aborted`],
      [
        'badCert',
        faults.badCert,
        FAULT_LABEL.badCert,
        `${peerStats('badCertHandshakes')} handshakes with the bad certificate, 0 transactions allowed (leaks: ${leaks.length})`,
      ],
    ];
    notes.push(
      `${ctx.size} size: ${N} messages (\`npm run proof:ci -- --only faults\` runs 5,000; \`${COMMAND}\` runs ${PLANS.full.messages.toLocaleString('en')}), ` +
        `${SESSIONS} STARTTLS sessions from 127.0.0.1, paced over about ${plan.loadSeconds} s; 300–3,000-byte bodies with dot-stuffed lines; every 7th message has a second recipient at another domain (the hops are delivered in parallel), every 97th a recipient its peer refuses with 550 (bounced).`,
      'The gateway relays to six loopback peers found through a test DNS server: alpha, bravo, charlie (two MX hosts), secure.test through an outbound connector with `tlsSettings: certificateValidation` (bad certificate: self-signed) and strict.test with `domainValidation` (bad certificate: valid chain, wrong name). Delivery timeouts: greeting 3 s, command 5 s, DATA 4 s, end of data 60 s; retries after 1, 2, 3 s; queue lease 5 s, so deliveries held up by faults outlive their lease (which must never start a second delivery).',
      `Accounting: every (queue id, recipient) from a 250 is looked up at its peer (by the queue id in the gateway's Received: header and the sha256 of the message from X-Proof-Id on), in the DSNs in the sender's Maildir, and in \`portcullis queue list --json\` after a drain of at most ${plan.drainDeadlineMs / 1000} s. A duplicate is explained only by a SIGKILL between two copies (redelivery) or by a transaction whose reply was cut by a SIGKILL (resend).`,
      ...(cluster
        ? [
            `${NODES} gateway nodes (own dataDir, port, nodeId and hostname) share one PostgreSQL 15 server on loopback (fsync on); the driver's sessions are spread over the nodes (a session that cannot connect moves to the next node); a SIGKILL hits a random node; PostgreSQL is stopped with \`pg_ctl stop -m immediate\` ${plan.pgStops} time(s) mid-load for ${plan.pgDownMs[0] / 1000}–${plan.pgDownMs[1] / 1000} s and started again. A transaction begun and answered while it is down must not get a 250; one refused 451 4.3.x may still have been committed (its COMMIT was cut in flight), so the driver's resend of it is an explained duplicate, as is a second delivery of a message whose first delivery overlapped an outage (its lease could not be renewed or its outcome not recorded). Queue lease ${CLUSTER_LEASE_S} s (slow peers answer after ${CLUSTER_SLOW_MS[0] / 1000}–${CLUSTER_SLOW_MS[1] / 1000} s). The disk-full phase runs on SQLite only.`,
          ]
        : []),
      ...(queuedReasons.size
        ? [`Still queued, by reason: ${[...queuedReasons].map(([r, n]) => `${n}× ${r}`).join('; ')}`]
        : []),
      ...(redelivered.length
        ? [`Redelivered after a crash: ${redelivered.slice(0, 10).join(', ')}${redelivered.length > 10 ? ', …' : ''}`]
        : []),
      ...(gs.flatMap((x) => x.internalErrorSamples).length
        ? [
            `First internal errors: ${gs
              .flatMap((x) => x.internalErrorSamples)
              .slice(0, 3)
              .map((l) => `\`${internalErrorText(l)}\``)
              .join(' ')}`,
          ]
        : []),
    );
    ctx.log(
      `accounting: ${JSON.stringify({ acceptedBy, outages: outages.length, whileDown: { ...whileDown, ok: whileDown.ok.length }, accepted, rcptTotal, delivered, bounced: bouncedN, queued: queuedN, lost: lost.length, corrupted: corrupted.length, redelivered: redelivered.length, resentMessages, unexplained: unexplained.length, leaks: leaks.length, faults, internal })}`,
    );
    return [
      {
        title: `Load with faults${cluster ? `, ${NODES} nodes on PostgreSQL` : ''}${WORKERS > 1 ? ` (workers: ${WORKERS})` : ''}: nothing lost`,
        command: COMMAND,
        table: { header: ['figure', 'value'], rows: figures },
        notes,
        failures,
      },
      {
        title: `Load with faults${cluster ? `, ${NODES} nodes on PostgreSQL` : ''}${WORKERS > 1 ? ` (workers: ${WORKERS})` : ''}: faults injected`,
        command: COMMAND,
        table: { header: ['fault', 'injected', 'what it does', 'observed'], rows: faultRows },
        failures: [],
      },
    ];
  } finally {
    for (const x of gs) {
      await x.kill9().catch(() => {});
      await x.closeLog();
    }
    if (process.env.KEEP_PROOF === '1') {
      writeFileSync(
        path.join(dir, 'peers.json'),
        JSON.stringify(
          {
            tag,
            kills: gs.map((x) => x.kills),
            epochs: gs.map((x) => x.epochs),
            outages,
            history: Object.fromEntries(env.peers.map((p) => [p.name, p.history])),
          },
          null,
          1,
        ),
      );
    }
  }
}

// ---- phase 2: disk full -------------------------------------------------------------------
async function diskFull(
  ctx: ProofContext,
  o: {
    gwCert: { chain: string; key: string };
    ca: string;
    rootFile: string;
    dns: DnsServer;
    peerPort: number;
    good: { cert: string; key: string };
  },
): Promise<ProofSection> {
  const title = 'Disk full: 452 4.3.1, never a 250 for what cannot be stored';
  const failures: string[] = [];
  const notes: string[] = [];
  const dir = path.join(ctx.workDir, 'diskfull');
  const mnt = path.join(dir, 'data');
  mkdirSync(mnt, { recursive: true });
  const SIZE_MB = 32;
  const BALLAST_MB = 16;
  const MSG_KB = 64;
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${SIZE_MB}m,mode=0750`, 'tmpfs', mnt], { stdio: 'pipe' });
  } catch (e) {
    const why = (e as { stderr?: Buffer }).stderr?.toString().trim() || (e as Error).message;
    return {
      title,
      command: command({ store: 'sqlite', nodes: 1 }),
      table: { header: ['figure', 'value'], rows: [['tmpfs mount', `failed: ${why}`]] },
      failures: [`the disk-full phase needs root to mount a tmpfs (${why})`],
    };
  }
  const unmountOnAbort = onAbort(() => execFileSync('umount', ['-l', mnt], { stdio: 'pipe' }));
  const tag = `d${randomBytes(3).toString('hex')}`;
  const factory = new MessageFactory(tag);
  const host = '127.0.0.1';
  const port = await freePort(host);
  const copies: PeerCopy[] = [];
  const peer = new FaultPeer({
    name: FULL_PEER.name,
    host: FULL_PEER.ip,
    port: o.peerPort,
    tls: { good: o.good },
    onMessage: (c) => copies.push(c),
  });
  // The short lease (5 s) also means a delivery whose outcome could not be recorded (disk full) is retried soon.
  const cfg = gatewayConfig({ gwCert: o.gwCert, rootFile: o.rootFile, dns: o.dns, peerPort: o.peerPort });
  const g = proofGateway({
    dir,
    dataDir: mnt,
    host,
    port,
    config: { ...cfg, delivery: { ...(cfg.delivery as object), destinationDownSeconds: 1 } },
  });
  const t0 = Date.now();
  const accepted = new Map<number, { q: string; phase: 'fill' | 'full' | 'freed' }>();
  const sha = new Map<number, string>();
  const replies = {
    fill: new Map<string, number>(),
    full: new Map<string, number>(),
    freed: new Map<string, number>(),
  };
  let full452 = 0;
  let full451 = 0;
  let full250 = 0;
  let freed250 = 0;
  let fillCount = 0;
  const FULL_PROBES = 30;
  const FREED_PROBES = 30;
  const freeBytes = () => {
    const s = statfsSync(mnt);
    return s.bavail * s.bsize;
  };
  let freeAtFirstRefusal = -1;
  try {
    writeFileSync(path.join(mnt, 'ballast'), Buffer.alloc(BALLAST_MB * 1024 * 1024, 0x42));
    await g.start();
    let s: LoadSession | null = null;
    let idx = 0;
    const send = async (phase: 'fill' | 'full' | 'freed'): Promise<{ code: number; text: string }> => {
      for (let tries = 0; tries < 5; tries++) {
        if (!s) {
          s = await LoadSession.connect(host, port, 30_000);
          await s.handshake('driver.contoso.test', 'mx1.contoso.test', o.ca);
        }
        const i = idx++;
        const rcpts = [`u${i % 7}@${FULL_PEER.domain}`];
        const text = factory.text(i, rcpts, MSG_KB * 1024, 1024);
        sha.set(i, sha256(text));
        let r: { code: number; text: string };
        try {
          r = await s.transaction(SENDER, rcpts, wire(text), true);
        } catch {
          s.destroy();
          s = null;
          if (!g.running())
            throw new Error(`the gateway died during the disk-full phase:\n${g.tail.slice(-10).join('\n')}`);
          continue;
        }
        const key = `${r.code} ${/^\d{3} (\d\.\d\.\d)/.exec(r.text)?.[1] ?? ''}`.trim();
        replies[phase].set(key, (replies[phase].get(key) ?? 0) + 1);
        if (r.code === 250) accepted.set(i, { q: /queued as ([0-9A-Z]+)/.exec(r.text)?.[1] ?? '', phase });
        if (r.code >= 400) {
          s.destroy();
          s = null;
        }
        return r;
      }
      throw new Error('the gateway kept dropping the connection in the disk-full phase');
    };
    const storageRefusal = (r: { code: number; text: string }) =>
      (r.code === 452 || r.code === 451) && /^\d{3} 4\.3\.\d/.test(r.text);
    // Fill until the first storage refusal (bounded).
    let first: { code: number; text: string } | null = null;
    const limit = Math.ceil(((SIZE_MB - BALLAST_MB) * 1024) / MSG_KB) * 4;
    while (fillCount < limit) {
      const r = await send('fill');
      fillCount++;
      if (storageRefusal(r)) {
        first = r;
        freeAtFirstRefusal = freeBytes();
        break;
      }
      if (r.code !== 250) notes.push(`while filling: ${r.text.split('\n')[0]}`);
    }
    if (!first)
      failures.push(
        `the gateway never refused for lack of storage in ${fillCount} messages of ${MSG_KB} KiB on a ${SIZE_MB - BALLAST_MB} MiB free tmpfs`,
      );
    else {
      if (first.code === 452) full452++;
      else full451++;
      ctx.log(`disk full after ${fillCount} messages: ${first.text.split('\n')[0]} (free ${freeAtFirstRefusal} bytes)`);
      for (let k = 0; k < FULL_PROBES; k++) {
        const r = await send('full');
        if (r.code === 250) full250++;
        else if (r.code === 452 && /4\.3\.1/.test(r.text)) full452++;
        else if (storageRefusal(r)) full451++;
      }
    }
    if (!g.running()) failures.push('the gateway exited while the disk was full');
    // Free space, then it must accept again.
    unlinkSync(path.join(mnt, 'ballast'));
    for (let k = 0; k < FREED_PROBES; k++) {
      const r = await send('freed');
      if (r.code === 250) freed250++;
    }
    (s as LoadSession | null)?.quit();
    if (!freed250) failures.push('after space was freed the gateway did not accept again');
    // Now let the queue drain to the peer: every 250 of the phase must arrive intact.
    await peer.listen();
    const tDrain = Date.now();
    const deliveredOk = () => {
      const ok = new Set<string>();
      for (const c of copies) {
        const i = proofIdx(tag, c.proofId);
        if (i >= 0 && c.sha256 === sha.get(i) && c.queueId) ok.add(c.queueId);
      }
      return ok;
    };
    while (Date.now() - tDrain < 90_000) {
      const ok = deliveredOk();
      if ([...accepted.values()].every((a) => ok.has(a.q))) break;
      await sleep(250);
    }
    const ok = deliveredOk();
    const queue = await queueList(g).catch(() => [] as QueueEntry[]);
    const inQueue = new Set(queue.map((m) => m.id));
    const missing = [...accepted].filter(([, a]) => !ok.has(a.q));
    const lost = missing.filter(([, a]) => !inQueue.has(a.q));
    const corrupted = copies.filter((c) => {
      const i = proofIdx(tag, c.proofId);
      return i < 0 || c.sha256 !== sha.get(i);
    });
    const fullAccepted = [...accepted].filter(([, a]) => a.phase === 'full');
    const fullLost = fullAccepted.filter(([, a]) => !ok.has(a.q));
    if (fullLost.length)
      failures.push(
        `${fullLost.length} messages got 250 while the disk was full and were not delivered intact: the gateway said 250 for what it could not store`,
      );
    if (lost.length)
      failures.push(
        `${lost.length} messages accepted in the disk-full phase are lost: ${lost
          .slice(0, 5)
          .map(([i, a]) => `${tag}-${i} (${a.q})`)
          .join(', ')}`,
      );
    if (corrupted.length) failures.push(`${corrupted.length} messages of the disk-full phase arrived corrupted`);
    if (missing.length > lost.length)
      notes.push(`${missing.length - lost.length} accepted messages were still queued after the drain of 90 s`);
    const fmt = (m: Map<string, number>) => [...m].map(([k, n]) => `${n}× ${k}`).join(', ') || '-';
    const errors = [...g.internalErrors].map(([w, n]) => `${w} ${n}`).join(', ') || '0';
    notes.push(
      `A tmpfs of ${SIZE_MB} MiB mounted as the gateway's dataDir (SQLite queue, WAL, Maildir, control socket), with a ${BALLAST_MB} MiB ballast file; messages of ${MSG_KB} KiB relayed to ${FULL_PEER.mx}, which refuses connections during the fill so everything stays queued. The ballast is then deleted, ${FREED_PROBES} more messages are sent, the peer starts accepting, and every 250 of the phase must reach it with an equal sha256. The tmpfs is unmounted afterwards.`,
      'A 250 after the first refusal is not an error in itself (SQLite reuses pages freed inside its files, e.g. after a WAL checkpoint): the proof fails if any such message is not delivered intact afterwards.',
      `Replies: fill ${fmt(replies.fill)}; while full ${fmt(replies.full)}; after freeing ${fmt(replies.freed)}. Internal errors logged (each storage failure is logged): ${errors}.`,
    );
    return {
      title,
      command: command({ store: 'sqlite', nodes: 1 }),
      table: {
        header: ['figure', 'value'],
        rows: [
          [
            `messages of ${MSG_KB} KiB accepted before the disk was full`,
            [...accepted.values()].filter((a) => a.phase === 'fill').length,
          ],
          ['first storage refusal', first ? first.text.split('\n')[0] : 'none'],
          ['free bytes on the file system at the first refusal', freeAtFirstRefusal],
          [`attempts while full (${FULL_PROBES} + the first refusal) answered 452 4.3.1`, full452],
          ['attempts while full answered 451 4.3.x', full451],
          ['attempts while full answered 250 (each must be delivered intact)', full250],
          [`accepted after freeing space (of ${FREED_PROBES})`, freed250],
          [
            'accepted in the phase / delivered intact afterwards',
            `${accepted.size} / ${[...accepted.values()].filter((a) => ok.has(a.q)).length}`,
          ],
          ['**lost**', lost.length],
          ['**corrupted**', corrupted.length],
          ['phase duration (s)', ((Date.now() - t0) / 1000).toFixed(1)],
        ],
      },
      notes,
      failures,
    };
  } catch (e) {
    failures.push(`disk-full phase failed: ${(e as Error).message}`);
    return {
      title,
      command: command({ store: 'sqlite', nodes: 1 }),
      table: { header: ['figure', 'value'], rows: [['error', (e as Error).message.split('\n')[0]]] },
      notes,
      failures,
    };
  } finally {
    await g.kill9().catch(() => {});
    await g.closeLog();
    await peer.close();
    for (let k = 0; k < 10; k++) {
      try {
        execFileSync('umount', [mnt], { stdio: 'pipe' });
        break;
      } catch {
        if (k === 9) {
          try {
            execFileSync('umount', ['-l', mnt], { stdio: 'pipe' });
          } catch {
            /* reported below */
          }
        }
        await sleep(300);
      }
    }
    unmountOnAbort();
    try {
      if (
        readFileSync('/proc/mounts', 'utf8')
          .split('\n')
          .some((l) => l.split(' ')[1] === mnt)
      )
        ctx.log(`WARNING: ${mnt} is still mounted`);
    } catch {
      /* no /proc */
    }
  }
}

/**
 * An internal.error log line as the report shows it: when, where and the error's first line (no
 * stack, so no paths of the machine that ran the proof).
 */
function internalErrorText(line: string): string {
  try {
    const e = JSON.parse(line) as { time?: string; where?: string; error?: string };
    return `${e.time ?? '?'} ${e.where ?? '?'}: ${String(e.error ?? '').split('\n')[0]}`.slice(0, 300);
  } catch {
    // Cut at 600 characters (proof/lib/gateway.ts), so no longer JSON: the same fields by pattern.
    const field = (k: string) => new RegExp(`"${k}":"((?:[^"\\\\]|\\\\.)*)`).exec(line)?.[1] ?? '?';
    return `${field('time')} ${field('where')}: ${field('error').split('\\n')[0]}`.slice(0, 300);
  }
}
