// Two gateway nodes, two real processes, on one throwaway PostgreSQL: the load goes to both, one
// node is killed with SIGKILL while its deliveries are in flight, and the other takes its work
// over once the leases expire (queue.leaseSeconds plus a heartbeat): every message reaches the
// relay exactly once. `cluster status` lists both nodes, the dead one DOWN, and the queue depth.
// A node that stalls (SIGSTOP) past its lease loses the message to the other node; when it
// wakes up, its late completion is refused by the fencing generation and logged.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { cleanup, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { postgresMissing, startPostgres, type PgInstance } from '../helpers/postgres.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { tinySmtp } from '../helpers/tiny-smtp.ts';
import { until } from '../helpers/wait.ts';

const skip = postgresMissing;
const RELAY = '127.0.0.65';
// Renewed every third of it: ample margin on a loaded machine, short enough for a quick test.
const LEASE = 10;

/**
 * The organisation's relay: counts a message only when it answers 250 to its end of data. While
 * `hold` is on, the 250 waits (deliveries stay in flight); a connection that closes before the
 * 250 delivered nothing.
 */
interface Relay {
  port: number;
  subjects: string[];
  waiting: number;
  release(): void;
  close(): Promise<void>;
}

async function startRelay(): Promise<Relay> {
  // Answers held back until release(), each with its connection: one that closes drops its own.
  let held: { s: net.Socket; accept: () => void }[] = [];
  let hold = true;
  const sockets = new Set<net.Socket>();
  const relay: Relay = {
    port: 0,
    subjects: [],
    get waiting() {
      return held.length;
    },
    release: () => {
      hold = false;
      for (const h of held.splice(0)) h.accept();
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => {
      sockets.delete(s);
      held = held.filter((h) => h.s !== s);
    });
    tinySmtp(s, 'relay.corp.contoso.test', (text, reply) => {
      const subject = /^Subject: (.*)$/m.exec(text)?.[1] ?? '?';
      const accept = () => {
        if (s.destroyed) return;
        relay.subjects.push(subject);
        reply('250 2.0.0 Ok');
      };
      if (hold) held.push({ s, accept });
      else accept();
    });
  });
  await new Promise<void>((r) => srv.listen(0, RELAY, () => r()));
  relay.port = (srv.address() as net.AddressInfo).port;
  return relay;
}

let pg: PgInstance;
const nodes: GatewayHandle[] = [];
const relays: Relay[] = [];

before(async () => {
  if (skip) return;
  pg = await startPostgres();
});

after(async () => {
  for (const n of nodes) {
    if (n.proc?.signalCode === null && n.proc.exitCode === null) n.proc.kill('SIGCONT');
    await cleanup(n);
  }
  for (const r of relays) await r.close();
  await pg?.destroy();
});

const node = (id: string, url: string, relay: Relay) => ({
  nodeId: id,
  store: { type: 'postgres', url, poolSize: 4 },
  queue: { leaseSeconds: LEASE, retrySchedule: [1] },
  // all 20 deliveries in flight at once (the relay holds them): the concurrency window starts at 20
  delivery: {
    destinationDownSeconds: 0,
    initialConnectionsPerDestination: 20,
    connectionReuse: { idleSeconds: 0 },
  },
  organizations: [
    {
      name: 'contoso',
      acceptedDomains: [{ domain: 'corp.contoso.test', type: 'internalRelay' }],
      outboundConnectors: [
        {
          name: 'To on-premises',
          connectorType: 'onPremises',
          recipientDomains: ['corp.contoso.test'],
          useMXRecord: false,
          smartHosts: [`${RELAY}:${relay.port}`],
        },
      ],
    },
  ],
});

async function send(g: GatewayHandle, subject: string): Promise<string> {
  const c = await SmtpClient.connect(g.port, g.host);
  try {
    await c.hello();
    const r = await c.send(
      'sender@fabrikam.test',
      ['dave@corp.contoso.test'],
      `Subject: ${subject}\r\nMessage-ID: <${subject}@fabrikam.test>\r\n\r\nhello\r\n`,
    );
    assert.equal(r.code, 250, r.text);
    return /queued as (\w+)/.exec(r.text)![1];
  } finally {
    c.close();
  }
}

test(
  'two nodes on one PostgreSQL: one is killed (SIGKILL) with deliveries in flight, the other takes them over: 0 lost, 0 duplicated',
  { skip, timeout: 180_000 },
  async () => {
    const url = await pg.createDatabase('cluster');
    const relay = await startRelay();
    relays.push(relay);
    const a = await startGateway({ host: '127.0.0.66', config: node('node-a', url, relay) });
    nodes.push(a);
    const b = await startGateway({ host: '127.0.0.67', config: node('node-b', url, relay) });
    nodes.push(b);
    const PER_NODE = 10;
    const fromA: string[] = [];
    const fromB: string[] = [];
    for (let i = 0; i < PER_NODE; i++) {
      fromA.push(await send(a, `a-${i}`));
      fromB.push(await send(b, `b-${i}`));
    }
    // Every message is in delivery, its end of data waiting for the relay's answer.
    await until('all 20 deliveries wait for the relay', () => relay.waiting === 2 * PER_NODE, 30_000);
    const during = await b.cli(['cluster', 'status', '--json']);
    assert.equal(during.code, 0, during.stderr);
    const st = JSON.parse(during.stdout) as {
      nodes: { id: string; alive: boolean; leases: number; configHash: string }[];
      depth: Record<string, number>;
      warnings: string[];
    };
    assert.deepEqual(st.nodes.map((n) => n.id).sort(), ['node-a', 'node-b']);
    assert.ok(st.nodes.every((n) => n.alive));
    assert.equal(
      st.nodes.reduce((s, n) => s + n.leases, 0),
      2 * PER_NODE,
      'every message in delivery is leased to one node',
    );
    assert.equal(st.depth.active, 2 * PER_NODE);
    assert.deepEqual(st.warnings, [], 'same configuration on both nodes');
    // Leases are renewed while the deliveries run: past a lease, node B has taken nothing of A's.
    await new Promise((r) => setTimeout(r, (LEASE + 2) * 1000));
    assert.ok(
      !b.events().some((e) => e.event === 'delivery.result' && fromA.includes(e.queueId as string)),
      'no takeover while node A lives',
    );

    const killedAt = Date.now();
    await a.kill9();
    // A's connections died with it, unanswered: once the relay has seen them close, B's deliveries
    // are answered (the process's exit can be seen before its connections' close).
    await until("node A's connections closed at the relay", () => relay.waiting === PER_NODE, 10_000);
    relay.release();
    await until('every message reached the relay', () => relay.subjects.length >= 2 * PER_NODE, (LEASE + 30) * 1000);
    const takeoverMs = Date.now() - killedAt;
    await new Promise((r) => setTimeout(r, 3000)); // room for a duplicate to show up
    const counts = new Map<string, number>();
    for (const s of relay.subjects) counts.set(s, (counts.get(s) ?? 0) + 1);
    const expected = [
      ...Array.from({ length: PER_NODE }, (_, i) => `a-${i}`),
      ...Array.from({ length: PER_NODE }, (_, i) => `b-${i}`),
    ].sort();
    assert.deepEqual([...counts.keys()].sort(), expected, 'nothing lost');
    const twice = [...counts].filter(([, n]) => n > 1);
    const story = (g: GatewayHandle) =>
      g
        .events()
        .filter((e) =>
          ['queue.leaseLost', 'queue.fenced', 'delivery.result', 'queue.recovered'].includes(e.event as string),
        )
        .map(
          (e) =>
            `${String(e.time)} ${String(e.event)} ${String(e.queueId)} ${String(e.status ?? '')} gen ${String(e.gen ?? '')}`,
        )
        .join('\n');
    assert.deepEqual(twice, [], `nothing delivered twice\nnode A:\n${story(a)}\nnode B:\n${story(b)}`);
    for (const id of fromA) {
      assert.ok(
        b.events().some((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'delivered'),
        `node B delivered ${id} of node A`,
      );
    }
    assert.ok(takeoverMs < (LEASE + 15) * 1000, `taken over within ${takeoverMs} ms`);
    process.stderr.write(
      `# takeover: node A's ${PER_NODE} messages delivered by node B ${takeoverMs} ms after the kill (lease ${LEASE} s)\n`,
    );

    await until(
      'the queue is empty',
      async () => {
        const r = await b.cli(['cluster', 'status', '--json']);
        const s = JSON.parse(r.stdout) as { depth: Record<string, number> };
        return Object.values(s.depth).every((n) => n === 0);
      },
      20_000,
    );
    const end = await b.cli(['cluster', 'status']);
    assert.equal(end.code, 0, end.stderr);
    assert.match(end.stdout, /^node-a +DOWN +heartbeat \d+ s ago +version \S+ +config [0-9a-f]{16} +leases 0/m);
    assert.match(end.stdout, /^node-b +up +heartbeat \d+ s ago .* leases 0/m);
    assert.match(end.stdout, /queue: incoming 0, active 0, deferred 0, held 0$/m);
  },
);

test(
  'a node that stalls past its lease (SIGSTOP) loses the message to the other node; its late completion is fenced: logged, not applied',
  { skip, timeout: 120_000 },
  async () => {
    const url = await pg.createDatabase('fence');
    const relay = await startRelay();
    relays.push(relay);
    const a = await startGateway({ host: '127.0.0.68', config: node('node-a', url, relay) });
    nodes.push(a);
    const b = await startGateway({ host: '127.0.0.69', config: node('node-b', url, relay) });
    nodes.push(b);
    const id = await send(a, 'stalled');
    await until('node A delivers, waiting for the relay', () => relay.waiting === 1, 20_000);
    a.proc.kill('SIGSTOP');
    try {
      // A's lease expires; B claims the message and delivers it too (its end of data waits as well).
      await until('node B took the message over', () => relay.waiting === 2, (LEASE + 15) * 1000);
      relay.release(); // B's delivery is answered; A's answer waits in its socket until it wakes
      await b.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'delivered', 20_000);
    } finally {
      a.proc.kill('SIGCONT');
    }
    const fenced = await a.waitForLog((e) => e.event === 'queue.fenced' && e.queueId === id, 20_000);
    assert.equal(fenced.node, 'node-a');
    assert.equal(fenced.level, 40, 'a warning');
    const q = await b.cli(['queue', 'show', id, '--json']);
    assert.equal(q.code, 0, q.stderr);
    const shown = JSON.parse(q.stdout) as {
      state: string;
      recipients: { status: string; attempts: number }[];
      trace: { kind: string }[];
    };
    assert.equal(shown.state, 'done');
    assert.deepEqual(
      shown.recipients.map((r) => [r.status, r.attempts]),
      [['delivered', 1]],
      "one outcome recorded: node B's",
    );
    assert.equal(
      shown.trace.filter((e) => e.kind === 'delivery').length,
      1,
      "node A's late outcome is not in the trace",
    );
  },
);
