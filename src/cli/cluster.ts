// Owns: `portcullis cluster status [--json]`: the nodes sharing the configured store (last
// heartbeat, version, configuration hash, leases held), the queue depth by state, and a warning
// when live nodes run different configurations. Reads the store only (read-only session).
import type { Command } from 'commander';
import { configHash } from '../config/hash.ts';
import type { NodeStatus } from '../store/types.ts';
import { cliConfig, cliStore, printJson, withConfig, type CommonOpts } from './context.ts';
import { say, warn } from './terminal.ts';

type Shown = NodeStatus & { alive: boolean; heartbeatAgeMs: number };

/** Warnings about the nodes: live ones with different configurations, or another than this file's. */
export function clusterWarnings(nodes: Shown[], mine: string): string[] {
  const live = nodes.filter((n) => n.alive);
  const hashes = new Set(live.map((n) => n.configHash));
  const out: string[] = [];
  if (hashes.size > 1)
    out.push(
      `the live nodes run ${hashes.size} different configurations ` +
        `(${live.map((n) => `${n.id}: ${n.configHash}`).join(', ')}): make their YAML files the same (nodeId, ` +
        `hostname, dataDir and smtp.listen may differ)`,
    );
  else if (hashes.size === 1 && !hashes.has(mine))
    out.push(
      `the live nodes run configuration ${[...hashes][0]}, this file is ${mine}: reload them (\`portcullis config ` +
        `reload\` on each) or correct this file`,
    );
  return out;
}

const age = (ms: number) =>
  ms < 120_000
    ? `${Math.round(ms / 1000)} s ago`
    : ms < 7_200_000
      ? `${Math.round(ms / 60_000)} min ago`
      : `${Math.round(ms / 3_600_000)} h ago`;

export function registerCluster(program: Command): void {
  const cl = program.command('cluster').description('the nodes that share the configured store');
  withConfig(
    cl
      .command('status')
      .description('nodes (last heartbeat, version, configuration hash, leases held) and queue depth by state')
      .option('--json', 'machine-readable output'),
  ).action(async (o: CommonOpts) => {
    const c = cliConfig(o);
    const store = await cliStore(c);
    const now = Date.now();
    let nodes: NodeStatus[];
    let depth;
    try {
      [nodes, depth] = await Promise.all([store.nodes(now), store.depth()]);
    } finally {
      await store.close();
    }
    // A node is alive while its heartbeat is younger than a lease: after that its leases have expired too.
    const shown: Shown[] = nodes.map((n) => ({
      ...n,
      heartbeatAgeMs: Math.max(0, now - n.lastHeartbeat),
      alive: now - n.lastHeartbeat <= c.queue.leaseSeconds * 1000,
    }));
    const mine = configHash(c);
    const warnings = clusterWarnings(shown, mine);
    if (o.json) return printJson({ nodes: shown, depth, configHash: mine, warnings });
    say(`${shown.length} node(s)`);
    for (const n of shown) {
      say(
        `${n.id}  ${n.alive ? 'up' : 'DOWN'}  heartbeat ${age(n.heartbeatAgeMs)}  version ${n.version}  config ` +
          `${n.configHash}  leases ${n.leases}  host ${n.host} pid ${n.pid}`,
      );
    }
    say(
      `queue: ${Object.entries(depth)
        .map(([s, k]) => `${s} ${k}`)
        .join(', ')}`,
    );
    for (const w of warnings) warn(`WARNING ${w}`);
  });
}
