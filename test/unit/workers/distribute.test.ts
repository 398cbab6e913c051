// The supervisor's distribution of SMTP connections (workers/distribute.ts) on a real listening
// socket, with the workers replaced by takers that keep what they are handed: the least busy worker
// takes each connection (sessions and connections handed but not yet admitted both count), ties go
// round, a worker whose channel is gone is passed over, connections wait while no worker can take
// one and go out when one starts, and close() stops accepting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Distributor, type Taker } from '../../../src/workers/distribute.ts';
import { until } from '../../helpers/wait.ts';

type CreateHandle = (a: string, p: number, f: 4 | 6, fd: undefined, flags: number) => object;
const createServerHandle = (net as unknown as { _createServerHandle: CreateHandle })._createServerHandle;

interface Fake extends Taker {
  got: net.Socket[];
  up: boolean;
}

function fake(n: number, sessions = 0): Fake {
  const f: Fake = {
    n,
    sessions,
    up: true,
    got: [],
    hand: (s) => {
      if (!f.up) return false;
      f.got.push(s);
      return true;
    },
  };
  return f;
}

async function open(takers: () => Taker[]) {
  const d = new Distributor(takers);
  const handle = createServerHandle('127.0.0.1', 0, 4, undefined, 0) as { getsockname(o: { port?: number }): number };
  const addr: { port?: number } = {};
  handle.getsockname(addr);
  await d.listen([{ handle, entry: `127.0.0.1:${addr.port}` }]);
  const clients: net.Socket[] = [];
  const connect = async (k: number) => {
    for (let i = 0; i < k; i++) {
      const c = net.connect(addr.port!, '127.0.0.1');
      c.on('error', () => {});
      clients.push(c);
      await new Promise((r) => c.once('connect', r));
    }
  };
  const done = () => {
    d.close();
    for (const c of clients) c.destroy();
  };
  return { d, connect, done, port: addr.port!, clients };
}

test('the least busy worker takes each connection; ties go round', async () => {
  const a = fake(1, 3);
  const b = fake(2, 0);
  const { d, connect, done } = await open(() => [a, b]);
  try {
    await connect(5);
    await until('five handed over', () => a.got.length + b.got.length === 5, 5000);
    // b had 0 sessions and a 3: b takes three (0, 1, 2 handed), then they alternate.
    assert.deepEqual([a.got.length, b.got.length], [1, 4]);
    d.admitted(2);
    d.admitted(2);
    b.sessions = 2; // two of the four admitted: its load is still 4
    await connect(2);
    await until('seven handed over', () => a.got.length + b.got.length === 7, 5000);
    assert.deepEqual([a.got.length, b.got.length], [2, 5]);
  } finally {
    done();
  }
});

test('a worker whose channel is gone is passed over', async () => {
  const a = fake(1);
  const b = fake(2);
  a.up = false;
  const { connect, done } = await open(() => [a, b]);
  try {
    await connect(3);
    await until('three handed over', () => b.got.length === 3, 5000);
    assert.equal(a.got.length, 0);
  } finally {
    done();
  }
});

test('connections wait while no worker can take one, unread, and go out when one starts', async () => {
  const a = fake(1);
  let live: Taker[] = [];
  const { d, connect, done } = await open(() => live);
  try {
    await connect(2);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(a.got.length, 0);
    live = [a];
    d.flush();
    assert.equal(a.got.length, 2);
    // Nothing was read from them: the bytes a client sent first are still there for the worker.
    assert.ok(a.got.every((s) => s.isPaused()));
  } finally {
    done();
  }
});

test('waiting connections go out with the next connection once a worker can take them', async () => {
  const a = fake(1);
  a.up = false;
  const { connect, done } = await open(() => [a]);
  try {
    await connect(2);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(a.got.length, 0, 'its channel was down');
    a.up = true; // no start event: the next connection takes the waiting ones along
    await connect(1);
    await until('all three handed over, in order', () => a.got.length === 3, 5000);
  } finally {
    done();
  }
});

test('after close() the waiting connections are closed and new ones refused', async () => {
  const { d, connect, port, clients, done } = await open(() => []);
  try {
    await connect(1);
    const closed = new Promise((r) => clients[0].once('close', r));
    await new Promise((r) => setTimeout(r, 50));
    d.close();
    await closed;
    const refused = await new Promise<string>((resolve) => {
      const c = net.connect(port, '127.0.0.1');
      c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? ''));
      c.on('connect', () => resolve('connected'));
    });
    assert.equal(refused, 'ECONNREFUSED');
  } finally {
    done();
  }
});

test('a worker gone before it took its connections up: they go to another worker; the ones it took up stay closed here', async () => {
  const a = fake(1);
  const b = fake(2, 100); // busy: a takes the connections first
  const { d, connect, done } = await open(() => (a.up ? [a, b] : [b]));
  try {
    await connect(3);
    await until('three handed to a', () => a.got.length === 3, 5000);
    d.admitted(1); // a took up its oldest: that copy is closed here (a holds its own)
    assert.ok(a.got[0].destroyed);
    a.up = false;
    assert.equal(d.reclaim(1, true), 2, 'the two it never asked admission for');
    assert.deepEqual(
      b.got.map((s) => a.got.indexOf(s)),
      [1, 2],
      'passed on in order',
    );
    assert.equal(d.reclaim(2, false), 0);
    assert.ok(
      b.got.every((s) => s.destroyed),
      'a stopping worker answered them itself: closed here',
    );
  } finally {
    done();
  }
});
