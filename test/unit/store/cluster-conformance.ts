// Conformance cases for what the nodes (or processes) sharing one store share besides the queue:
// the memories (delivery/memory.ts), once-only claims, the drain flag and control requests. Every
// backend runs them (sqlite.test.ts, postgres.test.ts); "two nodes" are two store instances on
// the same data (the harness's reopen), each its own connection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Store } from '../../../src/store/types.ts';
import type { StoreHarness } from './conformance.ts';

export function clusterStoreConformance(name: string, h: StoreHarness): void {
  const t = (title: string, f: (a: Store, b: Store) => Promise<void>): void =>
    void test(`${name}: ${title}`, { skip: h.skip }, async () => {
      const { store, reopen } = await h.fresh();
      const other = await reopen();
      try {
        await f(store, other);
      } finally {
        await other.close();
        await store.close();
      }
    });

  t('shared memories: what one node remembers, the other reads, until it runs out', async (a, b) => {
    const now = Date.now();
    await a.memorySet('down', 'hop:example.test', { why: '421 busy', n: 1 }, now + 60_000);
    assert.deepEqual(await b.memoryGet('down', 'hop:example.test'), {
      value: { why: '421 busy', n: 1 },
      until: now + 60_000,
    });
    assert.equal(await b.memoryGet('other', 'hop:example.test'), null, 'kinds are separate');
    assert.equal(await b.memoryGet('down', 'hop:example.test', now + 60_000), null, 'not at its until');
    await b.memorySet('down', 'hop:example.test', true, now + 120_000);
    assert.deepEqual(await a.memoryGet('down', 'hop:example.test'), { value: true, until: now + 120_000 });
    await a.memorySet('down', 'hop:example.test', true, now - 1);
    assert.equal(await b.memoryGet('down', 'hop:example.test'), null, 'an until already past forgets');
    await a.memorySet('tls', '127.0.0.9', { mode: 'legacy' }, now + 60_000);
    await b.memoryDelete('tls', '127.0.0.9');
    assert.equal(await a.memoryGet('tls', '127.0.0.9'), null);
  });

  t('shared memories: the sweep forgets what ran out and keeps at most max per kind', async (a, b) => {
    const now = Date.now();
    for (let i = 0; i < 5; i++) await a.memorySet('host', `h${i}`, true, now + (i + 1) * 1000);
    await a.memorySet('tls', 'ip', 'plaintext', now + 500);
    assert.equal(await b.memoryExpire(now + 1500, 100), 2, 'h0 and tls/ip ran out');
    assert.equal(await a.memoryGet('host', 'h0', now), null, 'gone even for an earlier clock');
    assert.equal(await b.memoryExpire(now + 1500, 2), 2, 'past 2 per kind: those that run out first go');
    const left = [];
    for (let i = 0; i < 5; i++) if (await a.memoryGet('host', `h${i}`, now)) left.push(i);
    assert.deepEqual(left, [3, 4]);
  });

  t('claims: taken once across nodes while live, again once it ran out', async (a, b) => {
    const now = Date.now();
    const got = await Promise.all([
      a.memoryClaim('once', 'tlsrpt 2026-01-01 example.test', 'node-a', now + 60_000, now),
      b.memoryClaim('once', 'tlsrpt 2026-01-01 example.test', 'node-b', now + 60_000, now),
      a.memoryClaim('once', 'tlsrpt 2026-01-01 example.test', 'node-a', now + 60_000, now),
    ]);
    assert.equal(got.filter(Boolean).length, 1, `one claim wins: ${JSON.stringify(got)}`);
    assert.equal(await b.memoryClaim('once', 'tlsrpt 2026-01-01 other.test', 'node-b', now + 60_000, now), true);
    assert.equal(
      await b.memoryClaim('once', 'tlsrpt 2026-01-01 example.test', 'node-b', now + 120_000, now + 60_000),
      true,
    );
    assert.deepEqual(await a.memoryGet('once', 'tlsrpt 2026-01-01 example.test', now + 60_000), {
      value: 'node-b',
      until: now + 120_000,
    });
  });

  t('drain flag: set and undone on a node known by its heartbeat, shown by nodes()', async (a, b) => {
    const beat = { id: 'node-a', version: '1', configHash: 'h', host: 'mx1', pid: 1, startedAt: Date.now() };
    assert.equal(await b.setDraining('node-a', true), false, 'no such node yet');
    await a.heartbeat(beat);
    assert.deepEqual(await a.nodeDirectives('node-a'), { draining: false, requests: [] });
    assert.equal(await b.setDraining('node-a', true), true);
    assert.equal((await a.nodeDirectives('node-a')).draining, true);
    await a.heartbeat(beat);
    assert.equal((await b.nodes())[0].draining, true, 'a heartbeat keeps the flag');
    assert.equal(await b.setDraining('node-a', false), true);
    assert.equal((await a.nodeDirectives('node-a')).draining, false);
    assert.deepEqual(await a.nodeDirectives('nobody'), { draining: false, requests: [] });
  });

  t('control requests: asked on one node, seen and answered by the node they are for', async (a, b) => {
    const now = Date.now();
    const r1 = await b.requestControl('node-a', 'reload', 'root', now);
    const r2 = await b.requestControl('node-b', 'reload', 'root', now);
    const waiting = (await a.nodeDirectives('node-a')).requests;
    assert.deepEqual(waiting, [{ id: r1, node: 'node-a', kind: 'reload', requestedAt: now, requestedBy: 'root' }]);
    await a.answerControl(r1, false, 'configuration refused: bad key', now + 5);
    assert.deepEqual((await a.nodeDirectives('node-a')).requests, [], 'answered: no longer waiting');
    const both = await b.controlRequests([r1, r2]);
    assert.deepEqual(
      both.map((r) => [r.id, r.node, r.answeredAt, r.ok, r.message]),
      [
        [r1, 'node-a', now + 5, false, 'configuration refused: bad key'],
        [r2, 'node-b', undefined, undefined, undefined],
      ],
    );
  });
}
