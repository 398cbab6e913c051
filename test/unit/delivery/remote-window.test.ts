// Remote delivery under the concurrency window (window.ts): a message that finds the window full
// takes the connection the running delivery hands back, one that waits too long is deferred with
// 4.4.5 (never sent, nothing marked down), and a 421 greeting shrinks the window (delivery.window
// event). Real sockets on loopback (127.0.78.x), the fake resolver, no gateway process.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildConfig, type Config } from '../../../src/config/load.ts';
import { onEvent, type Event } from '../../../src/events.ts';
import { ConnectionPool } from '../../../src/delivery/pool.ts';
import { RemoteDelivery, type RemoteJob } from '../../../src/delivery/remote.ts';
import { RevocationChecker } from '../../../src/tls/revocation.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { FakeResolver } from '../../helpers/fake-resolver.ts';
import { freePort } from '../../helpers/gateway.ts';
import { startPeer, type Peer, type PeerOptions } from '../../helpers/peer.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-window-'));
const closing: { close(): Promise<void> }[] = [];
after(async () => {
  for (const c of closing) await c.close();
});

async function peer(o: Omit<PeerOptions, 'port'> & { port?: number }): Promise<Peer> {
  const p = await startPeer({ ...o, port: o.port ?? (await freePort(o.host)) });
  closing.push(p);
  return p;
}

function remote(p: Peer, delivery: Record<string, unknown>, maxWaitMs = 60_000): RemoteDelivery {
  const cfg: Config = buildConfig(
    {
      hostname: 'gw.contoso.test',
      organizations: [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }],
      delivery: { port: p.port, destinationDownSeconds: 0, ...delivery },
    },
    dir,
    null,
  );
  const dns = new FakeResolver({ [`${p.host}.test`]: { A: [p.host] } });
  const r = new RemoteDelivery(
    () => dns,
    new ConnectionPool(() => cfg.delivery.connectionReuse),
    () => new TrustStore(false, []),
    () => cfg,
    new RevocationChecker(() => dns),
    undefined,
    { windowTiming: { waitMs: 1000, growMs: 10_000, maxWaitMs, idleMs: 60_000, sustained: 8 } },
  );
  closing.push(r);
  return r;
}

const job = (host: string, n: number): RemoteJob => ({
  queueId: `q${n}`,
  mailFrom: 'a@contoso.test',
  envelope: { smtputf8: false },
  data: Buffer.from(`Subject: ${n}\r\n\r\nhi\r\n`),
  recipients: [{ idx: 0, address: `u${n}@x.test`, org: 'contoso', route: 'remote', status: 'pending', attempts: 0 }],
  hop: {
    key: `smart:contoso/${host}`,
    kind: 'smarthost',
    domain: 'x.test',
    smartHosts: [{ host: `${host}.test` }],
    connector: { name: host, organization: 'contoso', type: 'partner' },
    tls: { level: 'opportunistic', source: 'default' },
  },
});

test('window full: the next message waits and goes over the connection handed back', async () => {
  const p = await peer({ host: '127.0.78.1', dataDelayMs: 200 });
  const r = remote(p, { initialConnectionsPerDestination: 1 });
  const results = await Promise.all([1, 2, 3].map((n) => r.deliver(job(p.host, n))));
  assert.deepEqual(
    results.map((x) => x.outcomes.get(0)?.status),
    ['delivered', 'delivered', 'delivered'],
  );
  assert.equal(p.connections, 1, 'one connection for the three');
  assert.equal(p.maxTransactions, 1);
  assert.deepEqual(
    results.map((x) => x.attempt.reused ?? false),
    [false, true, true],
  );
});

test('no slot within the bound: deferred 451 4.4.5 with the reason, never sent', async () => {
  const p = await peer({ host: '127.0.78.2', dataDelayMs: 600 });
  const r = remote(p, { initialConnectionsPerDestination: 1 }, 150);
  const [first, second] = await Promise.all([r.deliver(job(p.host, 1)), r.deliver(job(p.host, 2))]);
  assert.equal(first.outcomes.get(0)?.status, 'delivered');
  const o = second.outcomes.get(0)!;
  assert.equal(o.status, 'deferred');
  assert.equal(o.reply.code, 451);
  assert.equal(o.reply.enhanced, '4.4.5');
  assert.match(o.reply.reason!, /no connection to the smart hosts of connector 127\.0\.78\.2 came free within 0 s/);
  assert.match(o.reply.reason!, /window allows 1 at once/);
  assert.equal(p.messages.length, 1, 'the waiting message was never sent');
  const third = await r.deliver(job(p.host, 3));
  assert.equal(third.outcomes.get(0)?.status, 'delivered', 'the destination is not marked down');
});

test('a 421 greeting shrinks the window at once (delivery.window event)', async () => {
  const p = await peer({
    host: '127.0.78.3',
    greetingFor: (n) => (n === 1 ? '421 4.7.0 Too many connections from your address' : undefined),
  });
  const events: Event[] = [];
  const stop = onEvent((e) => {
    if (e.event === 'delivery.window') events.push(e);
  });
  try {
    const r = remote(p, { initialConnectionsPerDestination: 3 });
    const first = await r.deliver(job(p.host, 1));
    assert.equal(first.outcomes.get(0)?.status, 'deferred');
    assert.equal(first.outcomes.get(0)?.reply.code, 421);
    assert.deepEqual(events, [
      {
        event: 'delivery.window',
        destination: 'smart:contoso/127.0.78.3',
        window: 2,
        previous: 3,
        reason: 'throttled',
        max: 20,
      },
    ]);
    const second = await r.deliver(job(p.host, 2));
    assert.equal(second.outcomes.get(0)?.status, 'delivered');
  } finally {
    stop();
  }
});
