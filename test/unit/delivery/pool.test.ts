// Outbound connection reuse: per key, healthy only, idle close, maxMessages, the TLS session cache.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { ConnectionPool } from '../../../src/delivery/pool.ts';
import type { SmtpConnection } from '../../../src/delivery/smtp-client.ts';

/** A connection as the pool sees it (the seam: usable, messages, quit). */
function conn(o: { usable?: boolean; messages?: number } = {}) {
  const c = {
    usable: o.usable ?? true,
    messages: o.messages ?? 1,
    quits: 0,
    async quit() {
      c.quits++;
      c.usable = false;
    },
  };
  return c as typeof c & SmtpConnection;
}

test('reuse: a connection given back is taken again under the same key only, and counted', () => {
  const pool = new ConnectionPool(() => ({ idleSeconds: 10, maxMessages: 100 }));
  const a = conn();
  pool.give('127.0.0.2:25|opportunistic|', a);
  assert.equal(pool.take('127.0.0.2:25|domainValidation|mx.test'), undefined, 'never for another TLS requirement');
  assert.equal(pool.take('127.0.0.2:25|opportunistic|'), a);
  assert.equal(pool.take('127.0.0.2:25|opportunistic|'), undefined, 'taken once');
  assert.equal(pool.stats.reused, 1);
  pool.opened();
  assert.equal(pool.stats.opened, 1);
  void pool.closeAll();
});

test('a connection that died while idle is skipped; an unusable one is not kept', () => {
  const pool = new ConnectionPool(() => ({ idleSeconds: 10, maxMessages: 100 }));
  const dead = conn();
  const alive = conn();
  pool.give('k', alive);
  pool.give('k', dead);
  dead.usable = false;
  assert.equal(pool.take('k'), alive, 'the dead one (most recent) skipped');
  const broken = conn({ usable: false });
  pool.give('k', broken);
  assert.equal(broken.quits, 1);
  assert.equal(pool.take('k'), undefined);
});

test('maxMessages: a connection that carried that many is closed (QUIT), not kept; idleSeconds 0 keeps none', () => {
  const pool = new ConnectionPool(() => ({ idleSeconds: 10, maxMessages: 3 }));
  const worn = conn({ messages: 3 });
  pool.give('k', worn);
  assert.equal(worn.quits, 1);
  assert.equal(pool.take('k'), undefined);
  const none = new ConnectionPool(() => ({ idleSeconds: 0, maxMessages: 3 }));
  const c = conn();
  none.give('k', c);
  assert.equal(c.quits, 1);
});

test('idle close: QUIT after idleSeconds, and the connection is no longer offered', () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    const pool = new ConnectionPool(() => ({ idleSeconds: 10, maxMessages: 100 }));
    const a = conn();
    const b = conn();
    pool.give('k', a);
    mock.timers.tick(5000);
    pool.give('k', b);
    mock.timers.tick(5001);
    assert.equal(a.quits, 1, 'a idled out');
    assert.equal(b.quits, 0);
    assert.equal(pool.take('k'), b);
    mock.timers.tick(20_000);
    assert.equal(b.quits, 0, 'a connection in use is not closed by its old idle timer');
  } finally {
    mock.timers.reset();
  }
});

test('closeAll quits every idle connection', async () => {
  const pool = new ConnectionPool(() => ({ idleSeconds: 10, maxMessages: 100 }));
  const cs = [conn(), conn(), conn()];
  pool.give('a', cs[0]);
  pool.give('a', cs[1]);
  pool.give('b', cs[2]);
  await pool.closeAll();
  assert.deepEqual(
    cs.map((c) => c.quits),
    [1, 1, 1],
  );
  assert.equal(pool.take('a'), undefined);
});

test('TLS sessions: per host, for an hour, the cache bounded at 10,000 hosts (oldest first)', () => {
  mock.timers.enable({ apis: ['Date'], now: 1_000_000 });
  try {
    const pool = new ConnectionPool(() => ({ idleSeconds: 10, maxMessages: 100 }));
    pool.saveSession('mx1.test', Buffer.from('s1'));
    assert.equal(pool.session('mx1.test')?.toString(), 's1');
    assert.equal(pool.session('mx2.test'), undefined);
    mock.timers.tick(3_600_001);
    assert.equal(pool.session('mx1.test'), undefined, 'an hour later: a full handshake');
    for (let i = 0; i < 10_005; i++) pool.saveSession(`h${i}.test`, Buffer.from(String(i)));
    assert.equal(pool.session('h0.test'), undefined, 'the oldest went');
    assert.equal(pool.session('h10004.test')?.toString(), '10004');
    let kept = 0;
    for (let i = 0; i < 10_005; i++) if (pool.session(`h${i}.test`)) kept++;
    assert.ok(kept <= 10_001, `at most the bound is kept (${kept})`);
  } finally {
    mock.timers.reset();
  }
});
