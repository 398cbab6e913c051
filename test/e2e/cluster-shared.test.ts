// What two gateway nodes (two real processes on one throwaway PostgreSQL) agree on through the
// store: a destination one node found down, the other defers without connecting (the peer counts
// connections); one DSN or delay warning per event when a node stalls past its lease and the other
// takes the message over; `cluster drain` (the node stops claiming, finishes its leases, keeps
// accepting SMTP); `queue retry` and `config reload --node/--all` from any node's command line.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { cleanup, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { postgresMissing, startPostgres, type PgInstance } from '../helpers/postgres.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { tinySmtp } from '../helpers/tiny-smtp.ts';

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
        reply(o.answer ?? '250 2.0.0 Ok');
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
  delivery: { destinationDownSeconds: 600, connectionReuse: { idleSeconds: 0 } },
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
