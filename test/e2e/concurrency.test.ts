// The concurrency window per destination, end to end: a burst of 30 messages to one destination
// opens at most 6 connections to it (initial window 5, one step of growth at most), on a quiet
// machine and while CPU burners keep both cores busy; a receiver that turns every third connection
// away with 421 sees the window shrink (delivery.window events, fewer transactions at once) and
// still gets every message, and never finds it down; with `workers: 2` the workers split the
// window, so a burst still opens at most 6. Real gateway, real peers on their own loopback addresses.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cleanup, freePort, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { makePki } from '../helpers/pki.ts';
import { startPeer, type Peer, type PeerOptions } from '../helpers/peer.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { until } from '../helpers/wait.ts';

let gw: GatewayHandle;
let dns: DnsServer;
let port: number;
let tlsOpts: PeerOptions['tls'];
const peers: Peer[] = [];

const mx = (host: string) => ({ MX: [{ exchange: host, priority: 10 }] });

const config = (delivery: Record<string, unknown> = {}) => ({
  dns: { servers: [dns.server] },
  log: { level: 'debug' },
  delivery: { port, timeouts: { connect: 5 }, destinationDownSeconds: 0, ...delivery },
  tls: { trust: { system: false, caFiles: [pkiRoot] } },
  queue: { retrySchedule: [1] },
  organizations: [
    {
      name: 'contoso',
      acceptedDomains: [{ domain: 'contoso.test' }],
      inboundConnectors: [
        { name: 'On-premises servers', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] },
      ],
    },
  ],
});
let pkiRoot = '';

before(async () => {
  port = await freePort('127.0.0.1');
  gw = await startGateway();
  const pki = await makePki(gw.dir, 'Peer');
  pkiRoot = pki.rootFile;
  const cert = await pki.issue('mx.quiet.test', { dnsNames: ['*.quiet.test', '*.loaded.test'] });
  tlsOpts = { cert: readFileSync(cert.chain, 'utf8'), key: readFileSync(cert.key, 'utf8') };
  dns = await startDnsServer({
    'quiet.test': mx('mx.quiet.test'),
    'mx.quiet.test': { A: ['127.0.0.131'] },
    'loaded.test': mx('mx.loaded.test'),
    'mx.loaded.test': { A: ['127.0.0.132'] },
    'throttle.test': mx('mx.throttle.test'),
    'mx.throttle.test': { A: ['127.0.0.133'] },
    'workers.test': mx('mx.workers.test'),
    'mx.workers.test': { A: ['127.0.0.134'] },
  });
  gw.writeConfig(config());
  await gw.stop();
  await gw.restart();
});

after(async () => {
  await cleanup(gw);
  await Promise.all(peers.map((p) => p.close()));
  await dns?.close();
});

async function peer(o: PeerOptions): Promise<Peer> {
  const p = await startPeer(o);
  peers.push(p);
  return p;
}

/** 30 messages submitted at once, each in its own session; their queue ids. */
async function burst(domain: string, n = 30): Promise<string[]> {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const c = await SmtpClient.connect(gw.port);
      await c.hello();
      const r = await c.send(
        'sender@contoso.test',
        [`user${i}@${domain}`],
        `Subject: burst ${i}\r\nMessage-ID: <burst-${i}-${domain}@contoso.test>\r\n\r\nmessage ${i} of the burst\r\n`,
      );
      c.close();
      assert.equal(r.code, 250, r.text);
      return /queued as (\w+)/.exec(r.text)![1];
    }),
  );
}

const delivered = (id: string) =>
  gw.events().some((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'delivered');

const windows = (domain: string) =>
  gw.events().filter((e) => e.event === 'delivery.window' && e.destination === `mx:${domain}`);

/** Keep both cores busy for at most `ms` (the children end themselves; killed earlier when done). */
function burnCpu(ms: number): ChildProcess[] {
  return [0, 1].map(() =>
    spawn(process.execPath, ['-e', `const end = Date.now() + ${ms}; while (Date.now() < end) {}`], {
      stdio: 'ignore',
    }),
  );
}

test('30 messages to one destination at once: at most 6 connections (quiet machine)', async () => {
  // A receiver that takes 100 ms to accept each message keeps every connection busy for a while.
  const p = await peer({ host: '127.0.0.131', port, tls: tlsOpts, dataDelayMs: 100 });
  const ids = await burst('quiet.test');
  await until('all 30 delivered', () => ids.every(delivered), 60_000);
  assert.equal(p.messages.length, 30);
  assert.ok(p.connections <= 6, `at most 6 connections for the burst; the receiver accepted ${p.connections}`);
  assert.ok(p.maxTransactions <= 6, `at most 6 transactions at once; saw ${p.maxTransactions}`);
});

test('30 messages to one destination at once: at most 6 connections while the CPU is busy', async () => {
  const p = await peer({ host: '127.0.0.132', port, tls: tlsOpts, dataDelayMs: 100 });
  const burners = burnCpu(45_000);
  try {
    const ids = await burst('loaded.test');
    await until('all 30 delivered', () => ids.every(delivered), 60_000);
  } finally {
    for (const b of burners) b.kill('SIGKILL');
  }
  assert.equal(p.messages.length, 30);
  assert.ok(p.connections <= 6, `at most 6 connections for the burst; the receiver accepted ${p.connections}`);
  assert.ok(p.maxTransactions <= 6, `at most 6 transactions at once; saw ${p.maxTransactions}`);
});

test('a receiver that answers 421 to every third connection: the window shrinks, all mail arrives', async () => {
  // Every message on a new connection, so the receiver's 421s keep coming; destinationDownSeconds
  // at its default: a refusal among deliveries that succeed must not mark the destination down.
  gw.writeConfig(config({ connectionReuse: { idleSeconds: 0 }, destinationDownSeconds: 60 }));
  await gw.stop();
  await gw.restart();
  const p = await peer({
    host: '127.0.0.133',
    port,
    dataDelayMs: 50,
    greetingFor: (n) => (n % 3 === 0 ? '421 4.7.0 mx.throttle.test Too many connections, slow down' : undefined),
  });
  const ids = await burst('throttle.test');
  // Once the window is down to 2 (and the deliveries that began under the larger one are done),
  // count again what the receiver sees at once.
  const low =
    (await until(
      'window down to 2',
      () => windows('throttle.test').findIndex((e) => (e.window as number) <= 2) + 1,
      60_000,
    )) - 1;
  await new Promise((r) => setTimeout(r, 1000));
  p.maxTransactions = p.transactions;
  await until('all 30 delivered', () => ids.every(delivered), 90_000);
  const seen = windows('throttle.test');
  assert.equal(seen[0].previous, 5, 'started at the initial window');
  assert.equal(seen[0].reason, 'throttled', 'the first 421 shrank it');
  const most = Math.max(...seen.slice(low).map((e) => e.window as number));
  assert.ok(most < 5);
  assert.ok(
    p.maxTransactions <= most,
    `after the window shrank to 2, at most ${most} transactions at once; saw ${p.maxTransactions}`,
  );
  assert.equal(new Set(p.messages.map((m) => m.to[0])).size, 30, 'every message arrived');
  assert.ok(p.connections >= 33, `some connections were turned away (${p.connections} in all)`);
  const down = gw.events().filter((e) => /marked unreachable/.test(String(e.reason ?? '')));
  assert.deepEqual(down, [], 'never marked down: it took most messages');
});

test('with workers: 2, 30 messages to one destination at once: at most 6 connections (the workers split the window)', async () => {
  gw.writeConfig({ ...config(), workers: 2 });
  await gw.stop();
  await gw.restart();
  const p = await peer({ host: '127.0.0.134', port, dataDelayMs: 100 });
  const ids = await burst('workers.test');
  await until('all 30 delivered', () => ids.every(delivered), 60_000);
  assert.equal(p.messages.length, 30);
  const by = new Set(
    gw
      .events()
      .filter((e) => e.event === 'delivery.result' && ids.includes(e.queueId as string))
      .map((e) => e.worker),
  );
  assert.deepEqual([...by].sort(), [1, 2], 'both workers delivered part of the burst');
  assert.ok(p.connections <= 6, `at most 6 connections for the burst; the receiver accepted ${p.connections}`);
  assert.ok(p.maxTransactions <= 6, `at most 6 transactions at once; saw ${p.maxTransactions}`);
});
