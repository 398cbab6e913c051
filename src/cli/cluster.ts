// Owns: `portcullis cluster status [--json]`: the nodes sharing the configured store (last
// heartbeat, version, configuration hash, leases held, draining), the queue depth by state, and a
// warning when live nodes run different configurations (reads the store only, read-only session);
// `portcullis cluster drain NODE [--undo]` (the node's drain flag in the store); and `config reload
// --node NODE|--all` through the store: a request per node, answered by the node (it polls every
// 2 s), waited for and printed.
// Failure: an unknown node is refused, naming the nodes there are; a node that does not answer in
// time is reported as such (exit 1), as is a node that refused its new configuration.
import type { Command } from 'commander';
import { configHash } from '../config/hash.ts';
import type { Config } from '../config/load.ts';
import { AdminError } from '../errors.ts';
import { nodeUp, type NodeStatus, type Store } from '../store/types.ts';
import { administrator, cliConfig, cliStore, printJson, withConfig, type CommonOpts } from './context.ts';
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
    // A node is alive while it has not stopped and its heartbeat is younger than a lease.
    const shown: Shown[] = nodes.map((n) => ({
      ...n,
      heartbeatAgeMs: Math.max(0, now - n.lastHeartbeat),
      alive: nodeUp(n, c.queue.leaseSeconds, now),
    }));
    const mine = configHash(c);
    const warnings = clusterWarnings(shown, mine);
    if (o.json) return printJson({ nodes: shown, depth, configHash: mine, warnings });
    say(`${shown.length} node(s)`);
    for (const n of shown) {
      const state = n.alive
        ? 'up'
        : n.stoppedAt !== undefined
          ? `stopped ${age(Math.max(0, now - n.stoppedAt))}`
          : 'DOWN';
      say(
        `${n.id}  ${state}` +
          `${n.draining ? ' DRAINING' : ''}  heartbeat ${age(n.heartbeatAgeMs)}  ` +
          `version ${n.version}  config ${n.configHash}  leases ${n.leases}  host ${n.host} pid ${n.pid}`,
      );
    }
    say(
      `queue: ${Object.entries(depth)
        .map(([s, k]) => `${s} ${k}`)
        .join(', ')}`,
    );
    for (const w of warnings) warn(`WARNING ${w}`);
  });
  withConfig(
    cl
      .command('drain')
      .argument('<node>', 'the node id (nodeId), as `cluster status` lists it')
      .option('--undo', 'the node claims queue work again')
      .description(
        'the node stops claiming new queue work and finishes its leases; it keeps accepting SMTP (the other ' +
          'nodes deliver what it accepts)',
      ),
  ).action(async (node: string, o: CommonOpts & { undo?: boolean }) => {
    const c = cliConfig(o);
    const store = await cliStore(c, 'write');
    try {
      const on = !o.undo;
      const known = await nodeOrRefuse(store, node, () => store.setDraining(node, on));
      const leases = known.find((n) => n.id === node)?.leases ?? 0;
      say(
        on
          ? `node ${node} is draining: within seconds it claims no new queue work; it finishes the ${leases} ` +
              'message(s) it delivers now and keeps accepting SMTP (the other nodes deliver what it accepts). ' +
              '`portcullis cluster status` shows its leases; at 0 it can be stopped. Undo with `portcullis cluster ' +
              `drain ${node} --undo\`.`
          : `node ${node} claims queue work again (within seconds)`,
      );
    } finally {
      await store.close();
    }
  });
}

/** Run `act` (false: no such node); refuse an unknown node, naming those there are. Resolves with the nodes. */
async function nodeOrRefuse(store: Store, node: string, act: () => Promise<boolean>): Promise<NodeStatus[]> {
  const ok = await act();
  const nodes = await store.nodes();
  if (!ok)
    throw new AdminError(
      `no node ${node} in this store`,
      nodes.length
        ? `the nodes are: ${nodes.map((n) => n.id).join(', ')} (\`portcullis cluster status\`)`
        : 'no node has started with this store yet: a node appears once `portcullis serve` runs',
      1,
    );
  return nodes;
}

/** How long `config reload --node/--all` waits for the answers (a node polls every 2 s). */
const ANSWER_MS = 30_000;

/**
 * `config reload --node NODE | --all`: a request in the store for each node (every live one with
 * `all`), each answered by its node; true when every node reloaded.
 */
export async function reloadThroughStore(c: Config, target: { node?: string; all?: boolean }): Promise<boolean> {
  const store = await cliStore(c, 'write');
  try {
    const now = Date.now();
    const nodes = await store.nodes(now);
    const alive = (n: NodeStatus) => nodeUp(n, c.queue.leaseSeconds, now);
    let ids: string[];
    if (target.all) {
      ids = nodes.filter(alive).map((n) => n.id);
      if (!ids.length) throw new AdminError('no live node in this store', 'start the nodes (`portcullis serve`)', 1);
    } else {
      const node = target.node!;
      const n = (await nodeOrRefuse(store, node, async () => nodes.some((x) => x.id === node))).find(
        (x) => x.id === node,
      )!;
      if (!alive(n))
        throw new AdminError(
          n.stoppedAt !== undefined
            ? `node ${node} is not running (it stopped ${Math.round((now - n.stoppedAt) / 1000)} s ago)`
            : `node ${node} is not running (its last heartbeat is ${Math.round((now - n.lastHeartbeat) / 1000)} s old)`,
          'start it: it reads its configuration file as it starts',
          1,
        );
      ids = [node];
    }
    const by = administrator();
    const asked = await Promise.all(ids.map((id) => store.requestControl(id, 'reload', by)));
    const end = Date.now() + ANSWER_MS;
    let answers = await store.controlRequests(asked);
    while (answers.some((a) => a.answeredAt === undefined) && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 250));
      answers = await store.controlRequests(asked);
    }
    for (const a of answers) {
      if (a.answeredAt === undefined)
        warn(`${a.node}: no answer within ${ANSWER_MS / 1000} s (is it running? \`portcullis cluster status\`)`);
      else (a.ok ? say : warn)(`${a.node}: ${a.message}`);
    }
    return answers.every((a) => a.ok === true);
  } finally {
    await store.close();
  }
}
