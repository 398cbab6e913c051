// What two gateway nodes (two real processes on one throwaway PostgreSQL) agree on through the
// store: a destination one node found down, the other defers without connecting (the peer counts
// connections); one DSN or delay warning per event when a node stalls past its lease and the other
// takes the message over; `cluster drain` (the node stops claiming, finishes its leases, keeps
// accepting SMTP); `queue retry` and `config reload --node/--all` from any node's command line.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { cleanup, runCli, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { postgresMissing, startPostgres, type PgInstance } from '../helpers/postgres.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { tinySmtp } from '../helpers/tiny-smtp.ts';
import { until } from '../helpers/wait.ts';

const skip = postgresMissing;
const LEASE = 10;

let pg: PgInstance;
const nodes: GatewayHandle[] = [];
const closers: (() => Promise<void>)[] = [];

before(async () => {
  if (skip) return;
  pg = await startPostgres();
});

after(async () => {
  for (const n of nodes) {
    if (n.proc?.signalCode === null && n.proc.exitCode === null) n.proc.kill('SIGCONT');
    await cleanup(n);
  }
  for (const c of closers) await c();
  await pg?.destroy();
});

/** A peer on `host`: counts connections; `answer` decides each end of data (none: 421 greeting, closed). */
interface Peer {
  port: number;
  connections: number;
  subjects: string[];
  /** Ends of data waiting for release(). */
  waiting: number;
  release(): void;
  /** Hold the answers from now on (until release). */
  hold(): void;
  /** The answer to the next ends of data. */
  reply: string;
}

async function startPeer(
  host: string,
  o: { greeting421?: boolean; hold?: boolean; answer?: string } = {},
): Promise<Peer> {
  const held: (() => void)[] = [];
  let hold = !!o.hold;
  const sockets = new Set<net.Socket>();
  const peer: Peer = {
    port: 0,
    connections: 0,
    subjects: [],
    get waiting() {
      return held.length;
    },
    release() {
      hold = false;
      for (const f of held.splice(0)) f();
    },
    hold() {
      hold = true;
    },
    reply: o.answer ?? '250 2.0.0 Ok',
  };
  const srv = net.createServer((s) => {
    peer.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    if (o.greeting421) {
      s.end('421 4.3.2 peer.test busy, try later\r\n');
      return;
    }
    tinySmtp(s, 'peer.test', (text, reply) => {
      const go = () => {
        peer.subjects.push(/^Subject: (.*)$/m.exec(text)?.[1] ?? '?');
        reply(peer.reply);
      };
      if (hold) held.push(go);
      else go();
    });
  });
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  peer.port = (srv.address() as net.AddressInfo).port;
  closers.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => srv.close(() => r()));
  });
  return peer;
}

const node = (id: string, url: string, peerHost: string, peer: Peer, extra: Record<string, unknown> = {}) => ({
  nodeId: id,
  store: { type: 'postgres', url, poolSize: 4 },
  queue: { leaseSeconds: LEASE, retrySchedule: [600] },
  // A window of one: one delivery that fails with every host marks the destination down.
  delivery: { destinationDownSeconds: 600, initialConnectionsPerDestination: 1, connectionReuse: { idleSeconds: 0 } },
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
          smartHosts: [`${peerHost}:${peer.port}`],
        },
      ],
    },
  ],
  ...extra,
});

async function send(g: GatewayHandle, subject: string, from = 'sender@fabrikam.test'): Promise<string> {
  const c = await SmtpClient.connect(g.port, g.host);
  try {
    await c.hello();
    const r = await c.send(
      from,
      ['dave@corp.contoso.test'],
      `Subject: ${subject}\r\nMessage-ID: <${subject}@fabrikam.test>\r\n\r\nhello\r\n`,
    );
    assert.equal(r.code, 250, r.text);
    return /queued as (\w+)/.exec(r.text)![1];
  } finally {
    c.close();
  }
}

const result = (queueId: string, status?: string) => (e: Record<string, unknown>) =>
  e.event === 'delivery.result' && e.queueId === queueId && e.agent === 'smtp' && (!status || e.status === status);

test(
  'node A finds a destination down: node B defers mail to it at once, without connecting (shared memory)',
  { skip, timeout: 120_000 },
  async () => {
    const url = await pg.createDatabase('down');
    const peer = await startPeer('127.0.0.71', { greeting421: true });
    const a = await startGateway({ host: '127.0.0.72', config: node('node-a', url, '127.0.0.71', peer) });
    nodes.push(a);
    const b = await startGateway({ host: '127.0.0.73', config: node('node-b', url, '127.0.0.71', peer) });
    nodes.push(b);
    const first = await send(a, 'first');
    const ra = await a.waitForLog(result(first), 20_000);
    assert.equal(ra.status, 'deferred');
    assert.equal(peer.connections, 1, 'node A tried the peer once');
    const second = await send(b, 'second');
    const rb = await b.waitForLog(result(second), 20_000);
    assert.equal(rb.status, 'deferred');
    assert.match(String(rb.reason), /destination marked unreachable until \d{4}-/);
    assert.equal(peer.connections, 1, 'node B did not connect: it knew from node A');
  },
);

/** Messages with the null sender in the store: the DSNs and delay warnings queued, by any node. */
async function notices(g: GatewayHandle): Promise<{ id: string; messageId?: string }[]> {
  const r = await g.cli(['queue', 'list', '--all', '--json']);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { id: string; mailFrom: string; messageId?: string }[])
    .filter((m) => m.mailFrom === '')
    .map((m) => ({ id: m.id, messageId: m.messageId }));
}

for (const c of [
  { what: 'the bounce at expiry', queue: { messageExpiration: 3 }, status: 'failed' },
  { what: 'the delay warning', queue: { delayWarning: 1 }, status: 'deferred' },
]) {
  test(
    `${c.what} is sent once when a node stalls past its lease (SIGSTOP) and the other takes the message over`,
    { skip, timeout: 120_000 },
    async () => {
      const url = await pg.createDatabase('dsn');
      const peer = await startPeer('127.0.0.74', { answer: '451 4.3.0 try again later' });
      const extra = { queue: { leaseSeconds: LEASE, retrySchedule: [4], ...c.queue } };
      const a = await startGateway({ host: '127.0.0.75', config: node('node-a', url, '127.0.0.74', peer, extra) });
      nodes.push(a);
      const id = await send(a, 'stalled', 'sender@corp.contoso.test');
      // The first attempt is deferred at once; the retry, seconds later, is the one that notices.
      await a.waitForLog(result(id, 'deferred'), 20_000);
      peer.hold();
      await until('node A retries, waiting for the peer', () => peer.waiting === 1, 20_000);
      const b = await startGateway({ host: '127.0.0.76', config: node('node-b', url, '127.0.0.74', peer, extra) });
      nodes.push(b);
      a.proc.kill('SIGSTOP');
      try {
        await until('node B took the message over', () => peer.waiting === 2, (LEASE + 15) * 1000);
        peer.release(); // both get 451; node A reads it when it wakes
        await b.waitForLog((e) => result(id, c.status)(e), 20_000);
        await b.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.agent === 'dsn', 20_000);
      } finally {
        a.proc.kill('SIGCONT');
      }
      await a.waitForLog((e) => e.event === 'queue.fenced' && e.queueId === id, 20_000);
      assert.equal(a.events().filter(result(id)).at(-1)?.status, c.status, 'node A got the same outcome, late');
      await new Promise((r) => setTimeout(r, 1000)); // room for a second notice to be queued
      const n = await notices(b);
      assert.equal(n.length, 1, `one notice for the cluster, not one per node: ${JSON.stringify(n)}`);
    },
  );
}

interface Status {
  nodes: { id: string; alive: boolean; draining: boolean; leases: number }[];
}
const status = async (g: GatewayHandle): Promise<Status> => {
  const r = await g.cli(['cluster', 'status', '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Status;
};
const nodeOf = (s: Status, id: string) => s.nodes.find((n) => n.id === id)!;
const drainEvent = (on: boolean) => (e: Record<string, unknown>) => e.event === 'node.draining' && e.draining === on;

test(
  'cluster drain NODE: the node claims no new work, finishes its leases and keeps accepting SMTP; --undo',
  { skip, timeout: 120_000 },
  async () => {
    const url = await pg.createDatabase('drain');
    const peer = await startPeer('127.0.0.77', { hold: true });
    const a = await startGateway({ host: '127.0.0.78', config: node('node-a', url, '127.0.0.77', peer) });
    nodes.push(a);
    const b = await startGateway({ host: '127.0.0.79', config: node('node-b', url, '127.0.0.77', peer) });
    nodes.push(b);
    const m1 = await send(a, 'in-flight');
    await until('node A delivers m1', () => peer.waiting === 1, 20_000);

    const unknown = await b.cli(['cluster', 'drain', 'node-x']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no node node-x in this store/);
    assert.match(unknown.stderr, /node-a/);
    const drain = await b.cli(['cluster', 'drain', 'node-a']);
    assert.equal(drain.code, 0, drain.stderr);
    assert.match(drain.stdout, /node node-a is draining: .* finishes the 1 message\(s\) it delivers now/);
    await a.waitForLog(drainEvent(true), 10_000);

    // Still accepting SMTP; what it accepts now is delivered by node B.
    const m2 = await send(a, 'while-draining');
    await until('node B delivers m2', () => peer.waiting === 2, 20_000);
    const during = await status(b);
    assert.deepEqual(
      [nodeOf(during, 'node-a').draining, nodeOf(during, 'node-a').leases],
      [true, 1],
      'draining, its lease still held',
    );
    assert.equal(nodeOf(during, 'node-b').draining, false);
    const text = await b.cli(['cluster', 'status']);
    assert.match(text.stdout, /^node-a +up DRAINING +heartbeat .* leases 1/m);

    peer.release();
    await a.waitForLog(result(m1, 'delivered'), 20_000);
    await b.waitForLog(result(m2, 'delivered'), 20_000);
    assert.ok(!a.events().some(result(m2)), 'node A did not take m2');
    await until('node A holds no lease', async () => nodeOf(await status(b), 'node-a').leases === 0, 10_000);

    const undo = await a.cli(['cluster', 'drain', 'node-a', '--undo']);
    assert.equal(undo.code, 0, undo.stderr);
    await a.waitForLog(drainEvent(false), 10_000);
    const m3 = await send(a, 'after-undo');
    await a.waitForLog(result(m3, 'delivered'), 20_000);
    assert.equal(nodeOf(await status(a), 'node-a').draining, false);
  },
);

test(
  'queue retry and config reload --node/--all from any node: through the store, answered by the nodes',
  { skip, timeout: 120_000 },
  async () => {
    const url = await pg.createDatabase('control');
    const peer = await startPeer('127.0.0.80', { answer: '451 4.3.0 try again later' });
    const cfgA = node('node-a', url, '127.0.0.80', peer, { queue: { leaseSeconds: LEASE, retrySchedule: [3600] } });
    const cfgB = node('node-b', url, '127.0.0.80', peer, { queue: { leaseSeconds: LEASE, retrySchedule: [3600] } });
    const a = await startGateway({ host: '127.0.0.81', config: cfgA });
    nodes.push(a);
    const b = await startGateway({ host: '127.0.0.82', config: cfgB });
    nodes.push(b);

    // An administration host: the same store, no server of its own.
    const dir = tempDir();
    closers.push(async () => {
      const { rmSync } = await import('node:fs');
      rmSync(dir, { recursive: true, force: true });
    });
    const adminFile = path.join(dir, 'portcullis.yaml');
    writeFileSync(
      adminFile,
      YAML.stringify({
        ...cfgA,
        nodeId: 'admin-host',
        hostname: 'admin.contoso.test',
        dataDir: path.join(dir, 'data'),
        runAs: 'root',
      }),
    );
    const id = await send(a, 'deferred');
    await a.waitForLog(result(id, 'deferred'), 20_000);
    peer.reply = '250 2.0.0 Ok';
    const retry = await runCli(['queue', 'retry', id, '-c', adminFile]);
    assert.equal(retry.code, 0, retry.stderr);
    assert.match(
      retry.stdout,
      new RegExp(
        `message ${id} is due now \\(no server runs here: the 2 live node\\(s\\) of the cluster pick it up within seconds\\)`,
      ),
    );
    await until('a node delivered it', () => [a, b].some((g) => g.events().some(result(id, 'delivered'))), 15_000);

    const one = await runCli(['config', 'reload', '--node', 'node-b', '-c', adminFile]);
    assert.equal(one.code, 0, one.stderr);
    assert.match(one.stdout, /^node-b: configuration reloaded/m);
    await b.waitForLog((e) => e.event === 'config.reloaded' && e.source === 'store request', 5000);
    assert.ok(!a.events().some((e) => e.event === 'config.reloaded'), 'node A was not asked');

    const nobody = await runCli(['config', 'reload', '--node', 'node-x', '-c', adminFile]);
    assert.equal(nobody.code, 1);
    assert.match(nobody.stderr, /no node node-x in this store/);

    a.writeConfig({ ...cfgA, queue: { leaseSeconds: LEASE, retrySchedule: [3600], noSuchKey: 1 } });
    const all = await b.cli(['config', 'reload', '--all']);
    assert.equal(all.code, 1, 'node A refused its new configuration');
    assert.match(all.stdout, /^node-b: configuration reloaded/m);
    assert.match(all.stderr, /^node-a: configuration refused, the running one stays in force:[\s\S]*noSuchKey/m);
  },
);
