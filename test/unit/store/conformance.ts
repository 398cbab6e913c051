// The one conformance suite of the store interface (src/store/types.ts): the same cases run
// against every backend (sqlite.test.ts, postgres.test.ts call storeConformance).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NODE_FORGET_MS, nodeUp, type NewMessage, type NodeStatus, type Store } from '../../../src/store/types.ts';

export interface StoreHarness {
  /** A new, empty store, and a way to open the same data again (after closing the first). */
  fresh(): Promise<{ store: Store; reopen(): Promise<Store> }>;
  /** Why the suite cannot run here (the cases are then skipped, loudly). */
  skip?: string;
}

export const msg = (id: string, rcpts = 2): NewMessage => ({
  id,
  org: 'contoso',
  receivedAt: Date.now(),
  mailFrom: 's@x.test',
  messageId: `<${id}@x>`,
  envelope: { smtputf8: false },
  inbound: { sessionId: 's', clientIp: '127.0.0.1', clientPort: 1, helo: 'h', protocol: 'ESMTPS', receivedBy: 'mx' },
  data: Buffer.from(`Subject: ${id}\r\n\r\nbody\r\n`),
  recipients: Array.from({ length: rcpts }, (_, i) => ({
    address: `r${i}@contoso.test`,
    org: 'contoso',
    route: 'local' as const,
  })),
});
const ok = (idx: number) => ({
  idx,
  status: 'delivered' as const,
  reply: { code: 250, enhanced: '2.0.0', message: 'ok' },
  agent: 'maildir',
});
const later = (idx: number) => ({
  idx,
  status: 'deferred' as const,
  reply: { code: 451, enhanced: '4.3.0', message: 'later' },
  agent: 'maildir',
});
const bounce = (idx: number) => ({
  idx,
  status: 'failed' as const,
  reply: { code: 550, enhanced: '5.1.1', message: 'no such user' },
  agent: 'smtp',
  detail: { host: 'mx.example', ip: '127.0.0.9' },
});
const DAY = 86_400_000;

export function storeConformance(name: string, h: StoreHarness): void {
  const t = (title: string, f: (s: Store, reopen: () => Promise<Store>) => Promise<void>): void =>
    void test(`${name}: ${title}`, { skip: h.skip }, async () => {
      const { store, reopen } = await h.fresh();
      let current = store;
      try {
        await f(store, async () => {
          current = await reopen();
          return current;
        });
      } finally {
        await current.close();
      }
    });

  t('concurrent enqueues commit together and survive reopening (resolved = committed)', async (s, reopen) => {
    await Promise.all(Array.from({ length: 50 }, (_, i) => s.enqueue(msg(`M${i}`))));
    await s.close();
    const s2 = await reopen();
    assert.equal((await s2.list()).length, 50);
    const m = await s2.get('M7');
    assert.equal(m?.recipients.length, 2);
    assert.equal((await s2.data('M7'))?.toString(), 'Subject: M7\r\n\r\nbody\r\n');
    assert.equal((await s2.data('M7', 11))?.toString(), 'Subject: M7', 'a prefix, in octets');
    assert.equal((await s2.data('M7', 1000))?.toString(), 'Subject: M7\r\n\r\nbody\r\n');
    assert.equal(await s2.data('NONE', 11), null);
    assert.equal(m?.messageId, '<M7@x>');
    assert.equal(m?.state, 'incoming');
    assert.equal(m?.size, 'Subject: M7\r\n\r\nbody\r\n'.length);
    assert.match(m?.sha256 ?? '', /^[0-9a-f]{64}$/);
    assert.deepEqual(m?.inbound, msg('M7').inbound);
    assert.deepEqual(
      m?.recipients.map((r) => [r.idx, r.address, r.status, r.attempts]),
      [
        [0, 'r0@contoso.test', 'pending', 0],
        [1, 'r1@contoso.test', 'pending', 0],
      ],
    );
  });

  t('a failing write in a batch fails alone', async (s) => {
    await s.enqueue(msg('DUP'));
    const results = await Promise.allSettled([s.enqueue(msg('A1')), s.enqueue(msg('DUP')), s.enqueue(msg('A2'))]);
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.equal((await s.list()).length, 3);
    assert.equal((await s.data('DUP'))?.toString(), 'Subject: DUP\r\n\r\nbody\r\n', 'the first DUP is untouched');
  });

  t('enqueueAll stores every message in one commit, or none of them', async (s, reopen) => {
    const stored = await s.enqueueAll([
      { message: { ...msg('B1', 1), org: 'contoso' } },
      { message: { ...msg('B2', 1), org: 'tailspin' }, lease: { owner: 'worker', ms: 60_000 } },
    ]);
    assert.deepEqual(
      stored.map((m) => [m.id, m.org, m.state, m.leaseGen]),
      [
        ['B1', 'contoso', 'incoming', 0],
        ['B2', 'tailspin', 'active', 1],
      ],
    );
    await s.enqueue(msg('TAKEN'));
    const alongside = s.enqueue(msg('B3'));
    await assert.rejects(s.enqueueAll([{ message: msg('B4') }, { message: msg('TAKEN') }]), 'a duplicate id');
    await alongside;
    s = await reopen();
    assert.deepEqual(
      (await s.list()).map((m) => m.id).sort(),
      ['B1', 'B2', 'B3', 'TAKEN'],
      'B4 was not stored: its companion failed; a write batched with them was',
    );
    assert.equal((await s.get('B2'))?.org, 'tailspin');
  });

  t('writes issued together apply in the order they were issued', async (s) => {
    // One batch: single-statement writes around writes of several statements (delete, claim).
    const [a, deleted, b, claimed, c] = await Promise.all([
      s.enqueue(msg('O1')),
      s.deleteQueued('O1', 'alice'),
      s.enqueue(msg('O2')),
      s.claimWithData('A', 10, 60_000),
      s.enqueue(msg('O3')),
    ]);
    assert.equal(a.id, 'O1');
    assert.deepEqual(deleted, { deleted: true, recipients: 2 }, 'the delete sees the enqueue before it');
    assert.equal(b.id, 'O2');
    assert.deepEqual(
      claimed.map((x) => [x.message.id, x.data?.toString()]),
      [['O2', 'Subject: O2\r\n\r\nbody\r\n']],
      'the claim sees O2 (not the deleted O1, not O3 issued after it)',
    );
    assert.equal(c.id, 'O3');
    assert.equal((await s.get('O3'))?.state, 'incoming');
    const done = await s.complete('O2', 'A', [ok(0), ok(1)], Date.now());
    assert.equal(done, 'done');
  });

  t('enqueue with a lease stores the message claimed by that owner', async (s) => {
    const q = await s.enqueue(msg('H1'), { owner: 'worker', ms: 60_000 });
    assert.equal(q.state, 'active');
    assert.equal((await s.get('H1'))?.state, 'active');
    assert.equal((await s.claim('B', 10, 60_000)).length, 0, 'leased: nobody else claims it');
    assert.equal((await s.claim('B', 10, 60_000, Date.now() + 61_000)).length, 1, 'until the lease expires');
  });

  t('claim leases; a second claimer gets nothing until the lease expires', async (s) => {
    await s.enqueue(msg('L1'));
    const a = await s.claim('A', 10, 60_000);
    assert.equal(a.length, 1);
    assert.equal(a[0].state, 'active');
    assert.equal((await s.claim('B', 10, 60_000)).length, 0);
    const b = await s.claim('B', 10, 60_000, Date.now() + 61_000);
    assert.equal(b.length, 1, 'an expired lease is claimable by another owner');
  });

  t('claimWithData: the same lease as claim, each message with its data', async (s) => {
    await s.enqueue(msg('W1'));
    await s.enqueue(msg('W2', 1));
    const got = await s.claimWithData('A', 10, 60_000);
    assert.deepEqual(got.map((c) => c.message.id).sort(), ['W1', 'W2']);
    for (const c of got) {
      assert.equal(c.message.state, 'active');
      assert.deepEqual(c.message, await s.get(c.message.id).then((m) => ({ ...m!, recipients: c.message.recipients })));
      assert.equal(c.data?.toString(), `Subject: ${c.message.id}\r\n\r\nbody\r\n`);
    }
    assert.equal(got.find((c) => c.message.id === 'W2')?.message.recipients.length, 1);
    assert.deepEqual(await s.claimWithData('B', 10, 60_000), [], 'leased: nobody else claims them');
  });

  t('claim takes at most limit, the longest due first, and only what is due', async (s) => {
    const now = Date.now();
    for (const [id, due] of [
      ['D3', now - 1000],
      ['D1', now - 3000],
      ['D2', now - 2000],
      ['LATER', now + 3_600_000],
    ] as const) {
      await s.enqueue({ ...msg(id), receivedAt: due });
    }
    const first = await s.claim('A', 2, 60_000, now);
    assert.deepEqual(first.map((m) => m.id).sort(), ['D1', 'D2']);
    assert.deepEqual(
      (await s.claim('A', 10, 60_000, now)).map((m) => m.id),
      ['D3'],
    );
    assert.equal((await s.claim('A', 10, 60_000, now)).length, 0, 'LATER is not due');
  });

  t('a claim takes exactly its limit when more are due, whatever the limit', async (s) => {
    const now = Date.now();
    for (let i = 0; i < 7; i++) await s.enqueue({ ...msg(`E${i}`), receivedAt: now - 10_000 + i });
    assert.deepEqual((await s.claim('A', 3, 60_000, now)).map((m) => m.id).sort(), ['E0', 'E1', 'E2']);
    assert.deepEqual(
      (await s.claim('A', 1, 60_000, now)).map((m) => m.id),
      ['E3'],
    );
    assert.deepEqual((await s.claim('A', 5, 60_000, now)).map((m) => m.id).sort(), ['E4', 'E5', 'E6']);
  });

  t('complete: partial delivery defers the rest; all delivered ⇒ done and data purged', async (s) => {
    await s.enqueue(msg('C1'));
    await s.claim('A', 10, 60_000);
    const next = Date.now() + 60_000;
    assert.equal(await s.complete('C1', 'A', [ok(0), later(1)], next), 'deferred');
    let m = await s.get('C1');
    assert.equal(m?.state, 'deferred');
    assert.equal(m?.nextAttemptAt, next);
    assert.equal(m?.attempts, 1);
    assert.deepEqual(JSON.parse(m?.lastError ?? 'null'), later(1).reply);
    assert.deepEqual(
      m?.recipients.map((r) => r.status),
      ['delivered', 'deferred'],
    );
    assert.deepEqual(m?.recipients[1].lastReply, later(1).reply);
    assert.equal((await s.claim('A', 10, 60_000)).length, 0, 'not due yet');
    assert.ok(await s.retryNow('C1'));
    const again = await s.claim('A', 10, 60_000);
    assert.deepEqual(
      again[0].recipients.map((r) => r.idx),
      [1],
      'only unfinished recipients are handed out',
    );
    assert.equal(await s.complete('C1', 'A', [ok(1)], 0), 'done');
    m = await s.get('C1');
    assert.equal(m?.state, 'done');
    assert.equal(m?.attempts, 2);
    assert.deepEqual(
      m?.recipients.map((r) => r.attempts),
      [1, 2],
    );
    assert.equal(await s.data('C1'), null);
    assert.equal((await s.trace('C1')).filter((e) => e.kind === 'delivery').length, 3);
  });

  t('complete records a failure with its details in the trace; the delay warning flag sticks', async (s) => {
    await s.enqueue(msg('F1'));
    await s.claim('A', 10, 60_000);
    assert.equal(
      await s.complete('F1', 'A', [bounce(0), later(1)], Date.now() + 60_000, { delayWarned: true }),
      'deferred',
    );
    assert.equal((await s.get('F1'))?.delayWarned, true);
    await s.retryNow('F1');
    await s.claim('A', 10, 60_000);
    await s.complete('F1', 'A', [later(1)], Date.now() + 60_000);
    assert.equal((await s.get('F1'))?.delayWarned, true, 'once warned, always warned');
    const trace = await s.trace('F1');
    assert.deepEqual(trace[0].data, {
      rcpt: 0,
      status: 'failed',
      agent: 'smtp',
      reply: bounce(0).reply,
      host: 'mx.example',
      ip: '127.0.0.9',
    });
    assert.deepEqual(
      trace.map((e) => [e.kind, e.data.rcpt, e.data.status]),
      [
        ['delivery', 0, 'failed'],
        ['delivery', 1, 'deferred'],
        ['delivery', 1, 'deferred'],
      ],
    );
    assert.ok(trace.every((e) => typeof e.ts === 'number' && e.ts > 0));
  });

  t('complete from an owner whose lease was taken over is fenced: nothing of it is applied', async (s) => {
    await s.enqueue(msg('T1'));
    await s.claim('A', 10, 1000);
    await s.claim('B', 10, 60_000, Date.now() + 2000);
    assert.equal(await s.complete('T1', 'A', [ok(0), ok(1)], 0), 'fenced', 'B holds it now');
    const m = await s.get('T1');
    assert.equal(m?.state, 'active');
    assert.deepEqual(
      m?.recipients.map((r) => [r.status, r.attempts]),
      [
        ['pending', 0],
        ['pending', 0],
      ],
      'no outcome recorded',
    );
    assert.deepEqual(await s.trace('T1'), [], 'no trace event');
    assert.ok(await s.data('T1'), 'data kept for the lease holder');
    assert.equal(await s.complete('NOPE', 'A', [], 0), null, 'unknown message');
  });

  t(
    'fencing generation: every claim moves it on; a completion carrying an older one is refused, the current one applies',
    async (s) => {
      await s.enqueue(msg('G1'));
      const [first] = await s.claim('A', 10, 1000);
      assert.equal(first.leaseGen, 1);
      // A's lease expires; another node takes the message over, its lease expires too, and A claims it again.
      const [second] = await s.claim('B', 10, 1000, Date.now() + 2000);
      assert.equal(second.leaseGen, 2);
      const [third] = await s.claim('A', 10, 60_000, Date.now() + 4000);
      assert.equal(third.leaseGen, 3);
      assert.equal(
        await s.complete('G1', 'A', [ok(0), ok(1)], 0, { gen: first.leaseGen }),
        'fenced',
        'same owner, stale generation',
      );
      assert.equal(
        await s.complete('G1', 'B', [ok(0), ok(1)], 0, { gen: second.leaseGen }),
        'fenced',
        'no longer the owner',
      );
      assert.equal(
        (await s.get('G1'))?.recipients.every((r) => r.status === 'pending'),
        true,
      );
      assert.equal(
        await s.complete('G1', 'A', [ok(0), later(1)], Date.now() + 60_000, { gen: third.leaseGen }),
        'deferred',
      );
      const after = await s.get('G1');
      assert.deepEqual(
        after?.recipients.map((r) => r.status),
        ['delivered', 'deferred'],
      );
      const held = await s.enqueue(msg('G2'), { owner: 'W', ms: 60_000 });
      assert.equal(held.leaseGen, 1, 'a message stored leased is claim number 1');
      assert.equal((await s.get('G2'))?.leaseGen, 1);
    },
  );

  t('renew extends only the leases the owner still holds, at the generation it holds', async (s) => {
    for (const id of ['W1', 'W2', 'W3']) await s.enqueue(msg(id));
    const now = Date.now();
    const mine = await s.claim('A', 10, 1000, now);
    const gen = new Map(mine.map((m) => [m.id, m.leaseGen]));
    // The leases expire; B takes one of the messages over before A renews.
    const [{ id: taken }] = await s.claim('B', 1, 60_000, now + 2000);
    const renewed = await s.renew(
      'A',
      mine.map((m) => ({ id: m.id, gen: gen.get(m.id)! })),
      30_000,
      now + 2000,
    );
    assert.deepEqual(
      renewed.sort(),
      mine
        .map((m) => m.id)
        .filter((id) => id !== taken)
        .sort(),
      'the one B took is not renewed',
    );
    assert.equal(
      (await s.claim('C', 10, 60_000, now + 20_000)).length,
      0,
      'renewed leases hold past their first expiry',
    );
    const later = await s.claim('C', 10, 60_000, now + 33_000);
    assert.deepEqual(later.map((m) => m.id).sort(), renewed.sort(), 'and expire when no longer renewed');
    assert.deepEqual(
      await s.renew('A', [{ id: renewed[0], gen: gen.get(renewed[0])! }], 30_000),
      [],
      'taken over by C: not renewed',
    );
    assert.deepEqual(await s.renew('A', [], 30_000), []);
  });

  t("releaseLeases(owner) releases that owner's leases only; without an owner, every lease", async (s) => {
    for (const id of ['O1', 'O2', 'O3']) await s.enqueue(msg(id));
    await s.claim('A', 2, 3_600_000);
    await s.claim('B', 1, 3_600_000);
    assert.equal(await s.releaseLeases('A'), 2);
    assert.deepEqual(
      (await s.list({ states: ['active'] })).map((m) => m.id),
      ['O3'],
      'B keeps its lease',
    );
    assert.equal(await s.releaseLeases('nobody'), 0);
    assert.equal(await s.releaseLeases(), 1);
  });

  t('heartbeat, nodes (with the leases each holds) and depth by state', async (s) => {
    assert.deepEqual(await s.nodes(), []);
    const t0 = Date.now();
    const a = {
      id: 'mx1:/var/lib/portcullis',
      version: '0.1.0',
      configHash: 'h1',
      host: 'mx1',
      pid: 11,
      startedAt: t0 - 5000,
    };
    await s.heartbeat(a, t0 - 1000);
    await s.heartbeat({ ...a, id: 'mx2:/var/lib/portcullis', host: 'mx2', configHash: 'h2' }, t0 - 500);
    await s.heartbeat(a, t0);
    for (const id of ['N1', 'N2', 'N3']) await s.enqueue(msg(id));
    const t1 = Date.now();
    await s.claim(a.id, 2, 60_000, t1);
    const nodes = await s.nodes(t1 + 1000);
    assert.deepEqual(
      nodes.map((n) => [n.id, n.lastHeartbeat, n.leases, n.configHash]),
      [
        [a.id, t0, 2, 'h1'],
        ['mx2:/var/lib/portcullis', t0 - 500, 0, 'h2'],
      ],
    );
    assert.deepEqual(
      { ...nodes[0], lastHeartbeat: 0, leases: 0 },
      { ...a, lastHeartbeat: 0, leases: 0, draining: false },
    );
    assert.equal((await s.nodes(t1 + 61_000))[0].leases, 0, 'expired leases are not held');
    assert.deepEqual(await s.depth(), { incoming: 1, active: 2, deferred: 0, held: 0 });
  });

  t(
    'a node that stopped cleanly is not up; its next heartbeat makes it up again; week-old nodes are forgotten',
    async (s) => {
      const t0 = Date.now();
      const a = { id: 'mx1/w1', version: '0.1.0', configHash: 'h1', host: 'mx1', pid: 11, startedAt: t0 - 5000 };
      const old = { ...a, id: 'mx0/w1', host: 'mx0' };
      await s.heartbeat(old, t0 - NODE_FORGET_MS + 5000);
      await s.heartbeat(a, t0);
      const up = (n: NodeStatus[], id: string) =>
        nodeUp(
          n.find((x) => x.id === id)!,
          300,
          t0 + 1000,
        );
      assert.equal(up(await s.nodes(), a.id), true);
      assert.equal(up(await s.nodes(), old.id), false, 'a heartbeat older than a lease: down');
      await s.nodeStopped(a.id, 99, t0 + 400);
      assert.equal((await s.nodes()).find((n) => n.id === a.id)!.stoppedAt, undefined, 'another process: not this one');
      await s.nodeStopped(a.id, a.pid, t0 + 500);
      const stopped = (await s.nodes()).find((n) => n.id === a.id)!;
      assert.equal(stopped.stoppedAt, t0 + 500);
      assert.equal(nodeUp(stopped, 300, t0 + 1000), false, 'stopped: not up, however fresh its heartbeat');
      await s.heartbeat(a, t0 + 2000);
      const again = (await s.nodes()).find((n) => n.id === a.id)!;
      assert.equal(again.stoppedAt, undefined);
      assert.equal(nodeUp(again, 300, t0 + 3000), true);
      assert.deepEqual(
        (await s.nodes()).map((n) => n.id),
        [a.id, old.id],
      );
      const drained = { ...a, id: 'mx9/w1', host: 'mx9' };
      await s.heartbeat(drained, t0 - NODE_FORGET_MS + 5000);
      await s.setDraining(drained.id, true);
      await s.heartbeat(a, t0 + 6000);
      assert.deepEqual(
        (await s.nodes()).map((n) => n.id),
        [a.id, drained.id],
        'a node without a heartbeat for 7 days is forgotten, unless drained',
      );
    },
  );

  t('releaseLeases returns active messages to the queue (single-node restart)', async (s) => {
    await s.enqueue(msg('R1'));
    await s.claim('dead', 10, 3_600_000);
    assert.equal(await s.releaseLeases(), 1);
    assert.equal((await s.get('R1'))?.state, 'deferred');
    assert.equal((await s.claim('A', 10, 60_000)).length, 1);
  });

  t('retryNow makes deferred work due, and leaves work in delivery or done alone', async (s) => {
    await s.enqueue(msg('Y1'));
    await s.claim('A', 10, 60_000);
    assert.equal(await s.retryNow('Y1'), false, 'in delivery');
    await s.complete('Y1', 'A', [later(0), later(1)], Date.now() + 3_600_000);
    assert.equal(await s.retryNow('Y1'), true);
    assert.ok((await s.get('Y1'))!.nextAttemptAt <= Date.now());
    assert.equal(await s.retryNow('NOPE'), false);
  });

  t('nextDue: the earliest due time, or a lease expiry; null when nothing waits', async (s) => {
    assert.equal(await s.nextDue(), null);
    const now = Date.now();
    await s.enqueue({ ...msg('N1'), receivedAt: now + 50_000 });
    await s.enqueue({ ...msg('N2'), receivedAt: now + 20_000 });
    assert.equal(await s.nextDue(), now + 20_000);
    await s.claim('A', 1, 5_000, now + 20_000);
    assert.equal(await s.nextDue(), now + 25_000, 'a lease that expires becomes due');
    await s.complete('N2', 'A', [ok(0), ok(1)], 0);
    assert.equal(await s.nextDue(), now + 50_000);
  });

  t(
    'list pages after a queue id in (received, id) order; done messages are skipped; depth per queued state',
    async (s) => {
      const t0 = Date.now() - 60_000;
      // Two messages share a reception time: the id breaks the tie.
      const plan: [string, number][] = [
        ['P1', t0],
        ['P3', t0 + 1],
        ['P2', t0 + 1],
        ['P4', t0 + 2],
        ['P5', t0 + 3],
        ['P6', t0 + 4],
      ];
      for (const [id, at] of plan) await s.enqueue({ ...msg(id, 1), receivedAt: at });
      await s.claim('w', 10, 60_000);
      await s.complete('P3', 'w', [ok(0)], 0); // done: not in the queue any more
      await s.complete('P5', 'w', [later(0)], Date.now() + 3_600_000);
      await s.releaseLeases('w');
      const page = async (f: Parameters<Store['list']>[0]) => (await s.list(f)).map((m) => m.id);
      assert.deepEqual(await page({ limit: 2 }), ['P1', 'P2']);
      assert.deepEqual(await page({ limit: 2, after: 'P2' }), ['P4', 'P5']);
      assert.deepEqual(await page({ limit: 2, after: 'P5' }), ['P6']);
      assert.deepEqual(await page({ limit: 2, after: 'P6' }), []);
      assert.deepEqual(await page({ after: 'P3' }), ['P4', 'P5', 'P6'], 'after a done message: its place in the order');
      assert.deepEqual(await page({ states: ['deferred', 'done'], after: 'P1' }), ['P2', 'P3', 'P4', 'P5', 'P6']);
      assert.deepEqual(await page({ after: 'NOPE' }), [], 'an unknown cursor gives nothing, not the first page');
      assert.deepEqual(await s.depth(), { incoming: 0, active: 0, deferred: 5, held: 0 });
      const now = Date.now();
      assert.ok((await s.nextDue())! <= now, 'released leases are due now, before the deferred one');
    },
  );

  t('get, list and search', async (s) => {
    const t0 = Date.now() - 10_000;
    await s.enqueue({ ...msg('S1'), receivedAt: t0, mailFrom: 'Alice@X.test' });
    await s.enqueue({ ...msg('S2'), receivedAt: t0 + 1000, messageId: '<abc@x>' });
    await s.enqueue({
      ...msg('S3', 1),
      receivedAt: t0 + 2000,
      recipients: [
        {
          address: 'Bob@Contoso.test',
          org: 'contoso',
          route: 'remote',
          notify: 'FAILURE',
          orcpt: 'rfc822;bob@contoso.test',
        },
      ],
    });
    assert.equal(await s.get('NOPE'), null);
    const s3 = await s.get('S3');
    assert.deepEqual(s3?.recipients[0], {
      idx: 0,
      address: 'Bob@Contoso.test',
      org: 'contoso',
      route: 'remote',
      status: 'pending',
      attempts: 0,
      notify: 'FAILURE',
      orcpt: 'rfc822;bob@contoso.test',
    });
    assert.deepEqual(
      (await s.list()).map((m) => m.id),
      ['S1', 'S2', 'S3'],
      'oldest first',
    );
    assert.deepEqual(
      (await s.list({ limit: 2 })).map((m) => m.id),
      ['S1', 'S2'],
    );
    await s.claim('A', 1, 60_000);
    await s.complete('S1', 'A', [ok(0), ok(1)], 0);
    assert.deepEqual(
      (await s.list()).map((m) => m.id),
      ['S2', 'S3'],
      'done messages are not listed by default',
    );
    assert.deepEqual(
      (await s.list({ states: ['done'] })).map((m) => m.id),
      ['S1'],
    );
    assert.deepEqual(
      (await s.search({})).map((m) => m.id),
      ['S3', 'S2', 'S1'],
      'newest first, any state',
    );
    assert.deepEqual(
      (await s.search({ queueId: 'S2' })).map((m) => m.id),
      ['S2'],
    );
    assert.deepEqual(
      (await s.search({ messageId: 'abc@x' })).map((m) => m.id),
      ['S2'],
      'with or without <>',
    );
    assert.deepEqual(
      (await s.search({ messageId: '<abc@x>' })).map((m) => m.id),
      ['S2'],
    );
    assert.deepEqual(
      (await s.search({ sender: 'alice@x.TEST' })).map((m) => m.id),
      ['S1'],
      'sender: any case',
    );
    assert.deepEqual(
      (await s.search({ recipient: 'bob@contoso.test' })).map((m) => m.id),
      ['S3'],
      'recipient: any case',
    );
    assert.deepEqual(
      (await s.search({ since: t0 + 500, until: t0 + 1500 })).map((m) => m.id),
      ['S2'],
    );
    assert.deepEqual(
      (await s.search({ limit: 1 })).map((m) => m.id),
      ['S3'],
    );
    assert.deepEqual(
      (await s.search({ sender: 's@x.test', recipient: 'r0@contoso.test' })).map((m) => m.id),
      ['S2'],
      'every criterion',
    );
  });

  t('message data is kept byte for byte (every octet value, large)', async (s) => {
    const data = Buffer.concat([
      Buffer.from('Subject: bin\r\n\r\n'),
      Buffer.from(Array.from({ length: 256 }, (_, i) => i)),
      Buffer.alloc(3_000_000, 0x41),
    ]);
    await s.enqueue({
      ...msg('B1'),
      data,
      messageId: undefined,
      envelope: { smtputf8: true, body: '8BITMIME', longestLine: 3_000_000, ret: 'HDRS', envid: 'e1' },
    });
    const got = await s.data('B1');
    assert.ok(got && got.equals(data));
    const m = await s.get('B1');
    assert.equal(m?.messageId, undefined);
    assert.deepEqual(m?.envelope, {
      smtputf8: true,
      body: '8BITMIME',
      longestLine: 3_000_000,
      ret: 'HDRS',
      envid: 'e1',
    });
    assert.equal(await s.data('NOPE'), null);
  });

  t('deleteQueued takes a message out of the queue but keeps envelope, recipients and trace', async (s) => {
    await s.enqueue(msg('D1'));
    await s.claim('A', 10, 60_000);
    await s.complete('D1', 'A', [ok(0), later(1)], Date.now() + 60_000);
    const r = await s.deleteQueued('D1', 'alice');
    assert.deepEqual(r, { deleted: true, recipients: 1 });
    const m = await s.get('D1');
    assert.equal(m?.state, 'done');
    assert.deepEqual(
      m?.recipients.map((x) => x.status),
      ['delivered', 'deleted'],
      'only the open recipient is deleted',
    );
    assert.equal(await s.data('D1'), null, 'the message data is gone');
    const trace = await s.trace('D1');
    assert.deepEqual(
      trace.map((e) => e.kind),
      ['delivery', 'delivery', 'deleted'],
    );
    assert.deepEqual(trace[2].data, { by: 'alice', rcpts: [1], state: 'deferred' });
    assert.equal((await s.claim('A', 10, 60_000, Date.now() + 3_600_000)).length, 0, 'never claimed again');
    assert.equal((await s.search({ queueId: 'D1' })).length, 1, 'trace still finds it');
    assert.deepEqual(await s.deleteQueued('D1', 'alice'), { deleted: false, why: 'finished' });
    assert.deepEqual(await s.deleteQueued('NOPE', 'alice'), { deleted: false, why: 'unknown' });
  });

  t('deleteQueued leaves a message in delivery alone until its lease has expired', async (s) => {
    await s.enqueue(msg('L2'));
    await s.claim('A', 10, 60_000);
    assert.deepEqual(await s.deleteQueued('L2', 'bob'), { deleted: false, why: 'inDelivery' });
    assert.equal((await s.get('L2'))?.state, 'active');
    assert.deepEqual(await s.deleteQueued('L2', 'bob', Date.now() + 61_000), { deleted: true, recipients: 2 });
  });

  t('purgeDone forgets only done messages that finished before the cut-off, oldest first, in batches', async (s) => {
    const t0 = Date.now();
    // Done at explicit times (deleted by an administrator then), and messages still queued.
    for (const [id, age] of [
      ['OLD3', 33],
      ['OLD1', 40],
      ['OLD2', 35],
      ['NEW', 1],
    ] as const) {
      await s.enqueue({ ...msg(id), receivedAt: t0 - (age + 1) * DAY });
      await s.deleteQueued(id, 'root', t0 - age * DAY);
    }
    await s.enqueue({ ...msg('WAITING'), receivedAt: t0 - 100 * DAY });
    await s.enqueue(msg('DELIVERED'));
    await s.claim('A', 10, 60_000);
    await s.complete('DELIVERED', 'A', [ok(0), ok(1)], 0);
    await s.claim('A', 10, 60_000, t0 + 1); // WAITING: in delivery, received 100 days ago
    await s.releaseLeases();

    const cut = t0 - 30 * DAY;
    assert.equal(await s.purgeDone(cut, 2), 2);
    assert.equal(await s.get('OLD1'), null, 'oldest first');
    assert.equal(await s.get('OLD2'), null);
    assert.ok(await s.get('OLD3'));
    assert.equal(await s.purgeDone(cut, 2), 1);
    assert.equal(await s.purgeDone(cut, 2), 0);
    for (const id of ['OLD1', 'OLD2', 'OLD3']) {
      assert.deepEqual(await s.trace(id), [], `${id}: events gone`);
      assert.equal((await s.search({ queueId: id })).length, 0);
    }
    assert.equal(
      (await s.search({ recipient: 'r0@contoso.test' })).length,
      3,
      'recipients of forgotten messages are gone',
    );
    for (const id of ['NEW', 'WAITING', 'DELIVERED']) assert.ok(await s.get(id), `${id} kept`);
    assert.equal((await s.trace('NEW')).length, 1);
    assert.equal((await s.trace('DELIVERED')).length, 2);
    assert.equal((await s.get('WAITING'))?.state, 'deferred', 'a queued message is never forgotten, however old');
    assert.ok(await s.data('WAITING'));
  });
}
