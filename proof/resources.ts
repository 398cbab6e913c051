// Resource bounds (issue 5, item 5; issue 8, items 3 and 11): a real `portcullis serve` with
// modest limits on loopback under slowloris (hundreds of dripping sockets from several 127.0.0.x
// addresses), a connection flood above maxConnections, clients that pipeline megabytes of
// commands and never read a reply, huge messages (at and over maxMessageSize) and thousands of
// recipients per transaction. During each attack well-behaved clients keep sending one small
// message over STARTTLS (connect → 250, retrying after a 421 greeting as an MTA would) — two from
// addresses no connector knows, one from a partner's address named by an inbound connector (it may
// use smtp.reservedConnections) — and the gateway's RSS is sampled from /proc/PID/status. Attacks
// run in a child process (proof/lib/resources-attacker.ts) so they never share an event loop with
// the measurement.
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { reservedConnections } from '../src/inbound/admission.ts';
import { startDnsServer } from '../test/helpers/dns-server.ts';
import { startGateway, type GatewayHandle } from '../test/helpers/gateway.ts';
import { SmtpClient } from '../test/helpers/smtp.ts';
import type { AttackSpec, AttackStats } from './lib/resources-attacker.ts';
import { mb, RssSampler } from './lib/resources-rss.ts';
import type { ProofContext, ProofModule, ProofSection } from './types.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const HOST = '127.0.0.1';
const LIMITS = { maxConnections: 200, maxConnectionsPerIP: 100, maxMessageSize: 10 * 1024 * 1024, maxRecipients: 1000 };
/** smtp.reservedConnections is not set: the default (10% of maxConnections). */
const RESERVED = reservedConnections(LIMITS);
const TIMEOUTS = { command: 4, data: 60, tlsHandshake: 10 };
const P99_BOUND_MS = 5000;
const TRY_BUDGET_MS = 10_000;
const RSS_BOUND_MB = 600;
/** Pipelining clients that never read: growth of the gateway's RSS over the phase. */
const PIPELINE_GROWTH_MB = 100;
const PIPELINE_BYTES = 16 * 1024 * 1024;
/** Retry delay after a 421 greeting (an MTA retries later; compressed here). */
const RETRY_MS = 50;
const WELL_BEHAVED = ['127.0.0.1', '127.0.0.2'];
/** A partner's server: its address is in an inbound connector's senderIPAddresses. */
const PARTNER = '127.0.0.3';
const ORGANIZATIONS = [
  {
    name: 'contoso',
    acceptedDomains: [{ domain: 'contoso.test', type: 'authoritative', recipients: 'any' }],
    inboundConnectors: [{ name: 'Partner servers', connectorType: 'partner', senderIPAddresses: [`${PARTNER}/32`] }],
  },
];

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Tries {
  ok: number;
  failed: number;
  retries: number;
  ms: number[];
  errors: string[];
}

/** One well-behaved delivery: connect, (421 → retry), EHLO, STARTTLS, EHLO, MAIL, RCPT, DATA → 250. */
async function wellBehaved(
  port: number,
  n: number,
  localAddress: string,
): Promise<{ ok: boolean; ms: number; retries: number; error?: string }> {
  const t0 = performance.now();
  let retries = 0;
  const left = () => TRY_BUDGET_MS - (performance.now() - t0);
  while (left() > 0) {
    let c: SmtpClient | undefined;
    try {
      c = await SmtpClient.connect(port, HOST, localAddress);
      const g = await c.read(Math.max(1, left()));
      if (!g || g.code === 421) {
        retries++;
        c.close();
        await sleep(RETRY_MS);
        continue;
      }
      if (g.code !== 220) throw new Error(`greeting ${g.text}`);
      const cmd = async (line: string, code: number) => {
        c!.write(`${line}\r\n`);
        const r = await c!.read(Math.max(1, left()));
        if (!r || r.code !== code) throw new Error(`${line.split(' ')[0]}: ${r?.text ?? 'closed'}`);
      };
      await cmd('EHLO good.fabrikam.test', 250);
      await cmd('STARTTLS', 220);
      await c.upgrade({ servername: 'mx1.contoso.test' });
      await cmd('EHLO good.fabrikam.test', 250);
      await cmd('MAIL FROM:<good@fabrikam.test>', 250);
      await cmd('RCPT TO:<good@contoso.test>', 250);
      await cmd('DATA', 354);
      c.write(
        `From: <good@fabrikam.test>\r\nTo: <good@contoso.test>\r\nSubject: well-behaved ${n}\r\n\r\nA small message sent during an attack.\r\n.\r\n`,
      );
      const r = await c.read(Math.max(1, left()));
      if (r?.code !== 250) throw new Error(`end of data: ${r?.text ?? 'closed'}`);
      const ms = performance.now() - t0;
      c.write('QUIT\r\n');
      return { ok: true, ms, retries };
    } catch (e) {
      return { ok: false, ms: performance.now() - t0, retries, error: (e as Error).message };
    } finally {
      c?.close();
    }
  }
  return { ok: false, ms: performance.now() - t0, retries, error: `refused (421) for ${TRY_BUDGET_MS} ms` };
}

/** Well-behaved clients (one per address in `from`), each one try every `gapMs`, until `stop()` says so. */
async function measure(
  port: number,
  stop: () => boolean,
  gapMs: number,
  maxTries: number,
  from: readonly string[],
): Promise<Tries> {
  const t: Tries = { ok: 0, failed: 0, retries: 0, ms: [], errors: [] };
  let n = 0;
  await Promise.all(
    from.map(async (ip) => {
      while (n < maxTries && !stop()) {
        const r = await wellBehaved(port, n++, ip);
        t.retries += r.retries;
        if (r.ok) {
          t.ok++;
          t.ms.push(r.ms);
        } else {
          t.failed++;
          if (t.errors.length < 5) t.errors.push(r.error ?? '?');
        }
        await sleep(gapMs);
      }
    }),
  );
  return t;
}

const pct = (xs: number[], p: number): number => {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

function runAttacker(spec: AttackSpec, log: (l: string) => void): { done: Promise<AttackStats | null>; kill(): void } {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(ROOT, 'proof/lib/resources-attacker.ts'), JSON.stringify(spec)],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d;
  });
  child.stderr.on('data', (d: Buffer) => {
    err += d;
  });
  // Bounded: killed (by its pid, via the handle) if it overruns its duration by far.
  const guard = setTimeout(() => {
    log(`attacker ${spec.kind} overran; killing pid ${child.pid}`);
    child.kill('SIGKILL');
  }, spec.durationMs + 180_000);
  const done = new Promise<AttackStats | null>((resolve) => {
    child.on('close', (code) => {
      clearTimeout(guard);
      const last = out.trim().split('\n').pop();
      try {
        resolve(JSON.parse(last ?? '') as AttackStats);
      } catch {
        log(`attacker ${spec.kind} exited ${code} without stats: ${err.slice(-500)}`);
        resolve(null);
      }
    });
  });
  return {
    done,
    kill: () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}

interface Row {
  attack: string;
  size: string;
  tries: Tries;
  partner: Tries;
  rssStartKb: number;
  rssKb: number;
  stats: AttackStats | null;
  gwRefused: number;
  gwTimeouts: number;
  seconds: number;
}

async function resources(ctx: ProofContext): Promise<ProofSection[]> {
  const ci = ctx.size === 'ci';
  const dur = (c: number, f: number) => (ci ? c : f) * 1000;
  const dns = await startDnsServer({}); // the gateway never asks the system resolver
  const dir = path.join(ctx.workDir, 'gw');
  mkdirSync(dir, { recursive: true });
  let gw: GatewayHandle | undefined;
  const failures: string[] = [];
  const rows: Row[] = [];
  try {
    gw = await startGateway({
      dir,
      config: { dns: { servers: [dns.server] }, smtp: { ...LIMITS, timeouts: TIMEOUTS }, organizations: ORGANIZATIONS },
    });
    const g = gw;
    let crashed = '';
    g.proc.once('exit', (code, sig) => {
      crashed = `gateway exited (code ${code}, signal ${sig})`;
    });
    const rss = new RssSampler(() => g.proc.pid, 100).start();
    const startKb = rss.lastKb;
    const gwCounts = () => {
      let refused = 0;
      let timeouts = 0;
      const errors: string[] = [];
      for (const l of g.logs) {
        if (l.includes('"session.rejected"')) refused++;
        else if (l.includes('"session.end"') && l.includes('"close":"timeout')) timeouts++;
        if (l.includes('"internal.error"') || l.startsWith('[stderr]')) errors.push(l.slice(0, 300));
      }
      g.logs.length = 0; // counted: keep the harness's memory flat
      return { refused, timeouts, errors };
    };
    const internalErrors: string[] = [];

    // Warm-up (first TLS handshakes, JIT) outside the figures.
    await measure(g.port, () => false, 0, 3, [...WELL_BEHAVED, PARTNER]);
    gwCounts();

    const only = process.env.PROOF_RESOURCES_ONLY?.split(',');
    const phase = async (
      attack: string,
      size: string,
      spec: Omit<AttackSpec, 'port' | 'host'> | null,
      durationMs: number,
      growthBoundMb?: number,
    ): Promise<void> => {
      if (only && !only.some((o) => attack.startsWith(o))) return;
      ctx.log(`${attack}: ${size} for ${durationMs / 1000} s`);
      rss.mark();
      const rssStartKb = rss.lastKb;
      const t0 = Date.now();
      const a = spec ? runAttacker({ ...spec, port: g.port, host: HOST, durationMs }, ctx.log) : null;
      await sleep(spec ? Math.min(3000, durationMs / 4) : 0); // let the attack build up before measuring
      const stop = () => Date.now() - t0 > durationMs;
      const [tries, partner] = await Promise.all([
        measure(g.port, stop, 200, 10_000, WELL_BEHAVED),
        measure(g.port, stop, 200, 10_000, [PARTNER]),
      ]);
      const stats = a ? await a.done : null;
      const c = gwCounts();
      internalErrors.push(...c.errors);
      const row: Row = {
        attack,
        size,
        tries,
        partner,
        rssStartKb,
        rssKb: rss.mark(),
        stats,
        gwRefused: c.refused,
        gwTimeouts: c.timeouts,
        seconds: (Date.now() - t0) / 1000,
      };
      rows.push(row);
      ctx.log(
        `${attack}: well-behaved ${tries.ok}/${tries.ok + tries.failed} ok, p50 ${pct(tries.ms, 50).toFixed(0)} ms, p99 ${pct(tries.ms, 99).toFixed(0)} ms, retries ${tries.retries}; ` +
          `partner ${partner.ok}/${partner.ok + partner.failed} ok, p50 ${pct(partner.ms, 50).toFixed(0)} ms, p99 ${pct(partner.ms, 99).toFixed(0)} ms, retries ${partner.retries}; ` +
          `RSS ${mb(rssStartKb)} → peak ${mb(row.rssKb)} MB; attacker ${JSON.stringify(stats)}`,
      );
      for (const [who, t] of [
        ['well-behaved', tries],
        ['partner', partner],
      ] as const) {
        if (!t.ok) failures.push(`${attack}: the ${who} client completed no transaction`);
        if (t.failed) failures.push(`${attack}: ${t.failed} ${who} transactions failed (${t.errors.join('; ')})`);
        if (pct(t.ms, 99) > P99_BOUND_MS)
          failures.push(`${attack}: ${who} p99 ${pct(t.ms, 99).toFixed(0)} ms > ${P99_BOUND_MS} ms`);
      }
      if (row.rssKb / 1024 > RSS_BOUND_MB)
        failures.push(`${attack}: gateway RSS peaked at ${mb(row.rssKb)} MB (bound ${RSS_BOUND_MB} MB)`);
      if (growthBoundMb !== undefined && (row.rssKb - rssStartKb) / 1024 > growthBoundMb) {
        failures.push(`${attack}: gateway RSS grew by ${mb(row.rssKb - rssStartKb)} MB (bound ${growthBoundMb} MB)`);
      }
      if (spec && !stats) failures.push(`${attack}: the attacker reported nothing`);
      if (crashed) throw new Error(crashed);
      // Let sessions drain before the next attack.
      await sleep(spec ? 1500 : 0);
    };

    await phase('baseline (no attack)', '—', null, dur(8, 20));
    // Dripping sockets that stay just under the general pool (maxConnections minus the reserve: 75 +
    // the per-IP cap of 100 = 175 < 180): below the limits, they must not starve anyone.
    const slowSources = [
      { ip: '127.0.0.11', clients: 25 },
      { ip: '127.0.0.12', clients: 25 },
      { ip: '127.0.0.13', clients: 25 },
      { ip: '127.0.0.14', clients: 150 },
    ];
    await phase(
      'slowloris',
      `${slowSources.reduce((k, s) => k + s.clients, 0)} sockets from 4 addresses (one with 150 > maxConnectionsPerIP ${LIMITS.maxConnectionsPerIP}), 1 byte/s, reconnecting when cut off`,
      { kind: 'slowloris', sources: slowSources, durationMs: 0 },
      dur(25, 90),
    );
    const floodSources = ['127.0.0.21', '127.0.0.22', '127.0.0.23'].map((ip) => ({ ip, clients: 100 }));
    await phase(
      'connection flood',
      `300 concurrent connect/EHLO/QUIT loops from 3 addresses (maxConnections ${LIMITS.maxConnections}, ${RESERVED} reserved), slot held 0–500 ms, retry 20–100 ms after a refusal`,
      { kind: 'flood', sources: floodSources, durationMs: 0 },
      dur(25, 60),
    );
    const pipeSources = ['127.0.0.51', '127.0.0.52'].map((ip) => ({ ip, clients: ci ? 10 : 25 }));
    await phase(
      'pipelining, never reading',
      `${pipeSources.reduce((k, s) => k + s.clients, 0)} clients from 2 addresses, each EHLO then up to ${PIPELINE_BYTES / 1048576} MiB of pipelined RSET, no reply read, held to the end`,
      { kind: 'pipeline', sources: pipeSources, pipelineBytes: PIPELINE_BYTES, durationMs: 0 },
      dur(20, 45),
      PIPELINE_GROWTH_MB,
    );
    const rcpt = ci ? 3000 : 5000;
    await phase(
      'thousands of recipients',
      `4 sessions alternating ${rcpt} and ${LIMITS.maxRecipients + 10} pipelined RCPT per transaction (maxRecipients ${LIMITS.maxRecipients}), ${ci ? 3 : 10} completed with DATA`,
      {
        kind: 'recipients',
        sources: [
          { ip: '127.0.0.31', clients: 2 },
          { ip: '127.0.0.32', clients: 2 },
        ],
        rcptsPerTxn: rcpt,
        maxRecipients: LIMITS.maxRecipients,
        maxMessages: ci ? 3 : 10,
        durationMs: 0,
      },
      dur(20, 60),
    );
    const hugeKept = ci ? 15 : 45;
    await phase(
      'huge messages',
      `3 senders cycling ${mb(LIMITS.maxMessageSize / 1024 - 4)} MB (just under maxMessageSize; the first ${hugeKept}), ${mb((2 * LIMITS.maxMessageSize) / 1024)} MB (over, no SIZE) and SIZE=${2 * LIMITS.maxMessageSize} at MAIL`,
      {
        kind: 'huge',
        sources: [{ ip: '127.0.0.41', clients: 3 }],
        maxMessageSize: LIMITS.maxMessageSize,
        maxMessages: hugeKept,
        durationMs: 0,
      },
      dur(25, 60),
    );
    await phase('after the attacks', '—', null, dur(5, 10));
    rss.stop();
    for (const e of internalErrors.slice(0, 10)) failures.push(`gateway logged an internal error: ${e}`);

    const f = (x: number) => (Number.isNaN(x) ? '—' : x.toFixed(0));
    return [
      {
        title: 'Resource bounds',
        command: `npm run ${ci ? 'proof:ci' : 'proof'} -- --only resources`,
        table: {
          header: [
            'attack',
            'attack size',
            'well-behaved ok / tries',
            'p50 ms',
            'p99 ms',
            'max ms',
            '421-greeting retries',
            `partner (${PARTNER}) ok / tries`,
            'partner p50 ms',
            'partner p99 ms',
            'partner retries',
            'RSS at start → peak MB',
            '421 4.7.0 refused',
            '421 4.7.0 too many errors',
            '421 4.4.2 timed out',
            '452 4.5.3',
            '552',
            'attacker connections / messages accepted',
          ],
          rows: rows.map((r) => [
            r.attack,
            r.size,
            `${r.tries.ok} / ${r.tries.ok + r.tries.failed}`,
            f(pct(r.tries.ms, 50)),
            f(pct(r.tries.ms, 99)),
            f(r.tries.ms.length ? Math.max(...r.tries.ms) : NaN),
            r.tries.retries,
            `${r.partner.ok} / ${r.partner.ok + r.partner.failed}`,
            f(pct(r.partner.ms, 50)),
            f(pct(r.partner.ms, 99)),
            r.partner.retries,
            `${mb(r.rssStartKb)} → ${mb(r.rssKb)}`,
            r.stats ? `${r.stats.refused421} (gateway logged ${r.gwRefused})` : r.gwRefused,
            r.stats?.errors421 ?? 0,
            r.stats ? `${r.stats.timeout421} (gateway logged ${r.gwTimeouts})` : r.gwTimeouts,
            r.stats?.rcpt452 ?? 0,
            r.stats?.size552 ?? 0,
            r.stats
              ? `${r.stats.connections} / ${r.attack.startsWith('pipelining') ? `${mb(r.stats.pipelinedAccepted / 1024)} MB` : r.stats.accepted250}`
              : '—',
          ]),
        },
        notes: [
          `Real \`portcullis serve\` on 127.0.0.1 with maxConnections ${LIMITS.maxConnections}, maxConnectionsPerIP ${LIMITS.maxConnectionsPerIP}, maxMessageSize ${LIMITS.maxMessageSize}, maxRecipients ${LIMITS.maxRecipients}, timeouts.command ${TIMEOUTS.command} s; gateway RSS ${mb(startKb)} MB at start, ${mb(rss.peakKb)} MB peak over the whole run (bound ${RSS_BOUND_MB} MB).`,
          `Two well-behaved clients (${WELL_BEHAVED.join(', ')}) each send one small message over STARTTLS every 200 ms during each attack: latency is connect → 250 after the final dot, including any retries after a 421 greeting (${RETRY_MS} ms apart; an MTA would retry later); a try fails after ${TRY_BUDGET_MS / 1000} s. The proof fails if any try fails or p99 exceeds ${P99_BOUND_MS} ms.`,
          `A partner's server (${PARTNER}, in an inbound connector's senderIPAddresses) does the same at the same time; it may use the ${RESERVED} sessions of smtp.reservedConnections (default: 10% of maxConnections) that no unidentified client can take, so a flood that fills the other ${LIMITS.maxConnections - RESERVED} does not reach it.`,
          `Pipelining attack: after EHLO each client writes pipelined RSETs (RFC 2920 allows them in a group; pipelined EHLO or NOOP is refused at once with 554 5.5.0 by smtp.forbidUnauthPipelining) and never reads a reply. The gateway stops reading a session once 64 KiB of its replies wait unsent, so TCP flow control holds the rest in the client; the proof fails if the gateway's RSS grows by more than ${PIPELINE_GROWTH_MB} MB over the phase. "attacker connections / messages accepted" there shows connections / octets handed to TCP by the attacker.`,
          'Attacks run in a separate process; counts of 421/452/552 are what the attacker received, and "gateway logged" what the gateway recorded (session.rejected, session.end with a timeout).',
          `Recipients attack: RCPT addresses are distinct, so every RCPT after the ${LIMITS.maxRecipients}th gets 452 4.5.3, and as each 452 counts toward maxErrors (20) a session pipelining thousands is cut off with 421 4.7.0 "too many errors"; the messages completed with DATA are delivered to ${LIMITS.maxRecipients} local mailboxes each while later attacks run.`,
          "Peak RSS is per phase (sampled every 100 ms); V8 keeps freed heap for a while, so a phase can show the previous phase's peak.",
        ],
        failures,
      },
    ];
  } finally {
    await gw?.stop();
    await dns.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const mod: ProofModule = { name: 'resources', run: resources };
export default mod;
