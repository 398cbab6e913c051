// Conformance cases for the admin centre's part of the store interface (tokens, audit log, report
// counters, "bounce now", the trace and queue filters). Every backend runs them: sqlite-admin.test.ts
// and postgres.test.ts call adminStoreConformance with their harness (the same shape as the other store suites).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NewMessage, RecipientOutcome, Store } from '../../../src/store/types.ts';

export interface AdminStoreHarness {
  /** A new, empty store, and a way to open the same data again (after closing the first). */
  fresh(): Promise<{ store: Store; reopen(): Promise<Store> }>;
  skip?: string;
}

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

const msg = (id: string, org = 'contoso', extra: Partial<NewMessage> = {}): NewMessage => ({
  id,
  org,
  receivedAt: Date.now(),
  mailFrom: 's@x.test',
  messageId: `<${id}@x>`,
  envelope: { smtputf8: false },
  inbound: { sessionId: 's', clientIp: '127.0.0.1', clientPort: 1, helo: 'h', protocol: 'ESMTPS', receivedBy: 'mx' },
  data: Buffer.from(`Subject: ${id}\r\n\r\nbody\r\n`),
  recipients: [{ address: `r@${org}.test`, org, route: 'remote' as const }],
  ...extra,
});

const attempt = (status: RecipientOutcome['status'], detail: Record<string, unknown>): RecipientOutcome => ({
  idx: 0,
  status,
  reply: {
    code: status === 'delivered' ? 250 : 451,
    enhanced: status === 'delivered' ? '2.0.0' : '4.4.1',
    message: status,
  },
  agent: 'smtp',
  detail,
});

export function adminStoreConformance(name: string, h: AdminStoreHarness): void {
  const t = (title: string, f: (s: Store, reopen: () => Promise<Store>) => Promise<void>): void => {
    test(`${name}: ${title}`, { skip: h.skip }, async () => {
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
  };

  t(
    'tokens: found by hash while active; names unique among active tokens; revoked by id or name; listed with revocations',
    async (s, reopen) => {
      await s.createToken({ id: 'T1', name: 'ops', org: null, hash: 'h1', createdAt: 1000, createdBy: 'root' });
      await s.createToken({
        id: 'T2',
        name: 'contoso-admin',
        org: 'contoso',
        hash: 'h2',
        createdAt: 2000,
        createdBy: 'alice',
      });
      await assert.rejects(
        s.createToken({ id: 'T3', name: 'ops', org: null, hash: 'h3', createdAt: 3000, createdBy: 'root' }),
        'a second active "ops"',
      );
      await assert.rejects(
        s.createToken({ id: 'T4', name: 'other', org: null, hash: 'h1', createdAt: 3000, createdBy: 'root' }),
        'the same secret twice',
      );
      assert.deepEqual(await s.tokenByHash('h2'), {
        id: 'T2',
        name: 'contoso-admin',
        org: 'contoso',
        createdAt: 2000,
        createdBy: 'alice',
      });
      assert.equal(await s.tokenByHash('nope'), null);
      const r = await s.revokeToken('ops', 5000);
      assert.equal(r?.id, 'T1');
      assert.equal(r?.revokedAt, 5000);
      assert.equal(await s.tokenByHash('h1'), null, 'a revoked token no longer authenticates');
      assert.equal(await s.revokeToken('ops'), null, 'nothing active by that name');
      assert.equal((await s.revokeToken('T2', 6000))?.name, 'contoso-admin', 'by id');
      await s.createToken({ id: 'T5', name: 'ops', org: null, hash: 'h5', createdAt: 7000, createdBy: 'root' });
      const s2 = await (async () => {
        await s.close();
        return reopen();
      })();
      const all = await s2.tokens();
      assert.deepEqual(
        all.map((x) => [x.id, x.name, x.org, x.revokedAt ?? null]),
        [
          ['T1', 'ops', null, 5000],
          ['T2', 'contoso-admin', 'contoso', 6000],
          ['T5', 'ops', null, null],
        ],
      );
    },
  );

  t('audit log: newest first, filtered by organisation (actor or target), time, action; paged', async (s) => {
    const base = { actor: 'ops', result: 'ok' as const };
    await s.appendAudit({ ...base, ts: 100, org: null, action: 'config.reload' });
    await s.appendAudit({
      ...base,
      ts: 200,
      org: null,
      action: 'queue.retry',
      target: 'Q1',
      targetOrg: 'contoso',
      status: 200,
    });
    await s.appendAudit({
      ...base,
      ts: 300,
      actor: 'c',
      tokenId: 'T2',
      org: 'contoso',
      action: 'queue.delete',
      target: 'Q2',
      targetOrg: 'contoso',
      result: 'notFound',
      status: 404,
      detail: 'no such message',
    });
    await s.appendAudit({
      ...base,
      ts: 400,
      actor: 'f',
      org: 'fabrikam',
      action: 'queue.retry',
      target: 'Q3',
      targetOrg: 'fabrikam',
    });
    const all = await s.auditLog({});
    assert.deepEqual(
      all.map((e) => e.ts),
      [400, 300, 200, 100],
    );
    assert.deepEqual(all[1], {
      id: all[1].id,
      ts: 300,
      actor: 'c',
      tokenId: 'T2',
      org: 'contoso',
      action: 'queue.delete',
      target: 'Q2',
      targetOrg: 'contoso',
      result: 'notFound',
      status: 404,
      detail: 'no such message',
    });
    assert.deepEqual(
      (await s.auditLog({ org: 'contoso' })).map((e) => e.ts),
      [300, 200],
      'its own actions and actions on its objects',
    );
    assert.deepEqual(
      (await s.auditLog({ since: 200, until: 300 })).map((e) => e.ts),
      [300, 200],
    );
    assert.deepEqual(
      (await s.auditLog({ action: 'queue.retry' })).map((e) => e.ts),
      [400, 200],
    );
    assert.deepEqual(
      (await s.auditLog({ limit: 2, offset: 1 })).map((e) => e.ts),
      [300, 200],
    );
  });

  t(
    'report counters add up per key, sum by any dimension and by wider buckets, per organisation, within the range; purge by age',
    async (s, reopen) => {
      const t0 = Date.UTC(2026, 0, 10);
      await s.addReportCounts([
        { kind: 'k', org: '*', bucket: t0, d1: 'TLSv1.3', d2: 'AES', n: 2 },
        { kind: 'k', org: '*', bucket: t0 + HOUR, d1: 'TLSv1.2', n: 1 },
        { kind: 'k', org: 'contoso', bucket: t0, d1: 'TLSv1.3', d2: 'AES', n: 2 },
        { kind: 'other', org: '*', bucket: t0, d1: 'TLSv1.3', n: 50 },
      ]);
      await s.addReportCounts([
        { kind: 'k', org: '*', bucket: t0, d1: 'TLSv1.3', d2: 'AES', n: 3 },
        { kind: 'k', org: '*', bucket: t0 + DAY, d1: '', n: 4 },
      ]);
      await s.close();
      const s2 = await reopen();
      const q = { kind: 'k', org: '*', from: t0, until: t0 + 2 * DAY };
      assert.deepEqual(await s2.sumReportCounts({ ...q, by: [] }), [{ n: 10 }]);
      const byVersion = await s2.sumReportCounts({ ...q, by: ['d1'] });
      assert.deepEqual(
        byVersion.sort((a, b) => a.d1!.localeCompare(b.d1!)),
        [
          { d1: '', n: 4 },
          { d1: 'TLSv1.2', n: 1 },
          { d1: 'TLSv1.3', n: 5 },
        ],
      );
      const hourly = await s2.sumReportCounts({ ...q, by: ['bucket', 'd2'] });
      assert.deepEqual(
        hourly.sort((a, b) => a.bucket! - b.bucket!),
        [
          { bucket: t0, d2: 'AES', n: 5 },
          { bucket: t0 + HOUR, d2: '', n: 1 },
          { bucket: t0 + DAY, d2: '', n: 4 },
        ],
      );
      const daily = await s2.sumReportCounts({ ...q, by: ['bucket'], bucketMs: DAY });
      assert.deepEqual(
        daily.sort((a, b) => a.bucket! - b.bucket!),
        [
          { bucket: t0, n: 6 },
          { bucket: t0 + DAY, n: 4 },
        ],
      );
      assert.deepEqual(await s2.sumReportCounts({ ...q, org: 'contoso', by: [] }), [{ n: 2 }]);
      assert.deepEqual(await s2.sumReportCounts({ ...q, org: 'fabrikam', by: [] }), [], 'nothing counted: no rows');
      assert.deepEqual(await s2.sumReportCounts({ ...q, until: t0 + HOUR, by: [] }), [{ n: 5 }], 'until is exclusive');
      const only = await s2.sumReportCounts({ ...q, by: ['d1'], d1In: ['TLSv1.2', '', 'SSLv3'] });
      assert.deepEqual(
        only.sort((a, b) => a.d1!.localeCompare(b.d1!)),
        [
          { d1: '', n: 4 },
          { d1: 'TLSv1.2', n: 1 },
        ],
        'd1In: only those values',
      );
      assert.deepEqual(await s2.sumReportCounts({ ...q, by: ['d1'], d1In: [] }), [], 'd1In empty: nothing');
      assert.deepEqual(
        await s2.sumReportCounts({ ...q, until: t0 + HOUR, by: [], d1In: ['TLSv1.3'] }),
        [{ n: 5 }],
        'd1In with the time range',
      );
      assert.deepEqual(
        await s2.sumReportCounts({ ...q, from: t0 + HOUR, by: ['d1'], d1In: ['TLSv1.3'] }),
        [],
        'none of it later',
      );
      const many = Array.from({ length: 12_000 }, (_, i) => `v${i}`).concat('TLSv1.3');
      assert.deepEqual(
        await s2.sumReportCounts({ ...q, by: ['d1'], d1In: many }),
        [{ d1: 'TLSv1.3', n: 5 }],
        'd1In beyond the variable limit of one statement',
      );
      assert.equal(await s2.purgeReportCounts(t0 + DAY), 4);
      assert.deepEqual(await s2.sumReportCounts({ ...q, by: [] }), [{ n: 4 }]);
    },
  );

  t(
    'trace search filters by organisation, recipient status, TLS level achieved and connector, and pages',
    async (s) => {
      const now = Date.now();
      await s.enqueue(
        msg('A1', 'contoso', {
          receivedAt: now - 3000,
          inbound: { ...msg('x').inbound, connector: { name: 'Partner In', organization: 'contoso', by: 'ip' } },
        }),
      );
      await s.enqueue(msg('A2', 'contoso', { receivedAt: now - 2000 }));
      await s.enqueue(msg('B1', 'fabrikam', { receivedAt: now - 1000 }));
      for (const [id, o] of [
        ['A1', attempt('delivered', { host: 'mx', tlsAchieved: 'certificateValidation', connector: 'To Fabrikam' })],
        ['A2', attempt('deferred', { host: 'mx', tlsAchieved: 'none' })],
        ['B1', attempt('delivered', { host: 'mx', tlsAchieved: 'none', connector: 'To Contoso' })],
      ] as const) {
        await s.claim('w', 10, 60_000);
        await s.complete(id, 'w', [o], Date.now() + 60_000);
      }
      const ids = async (f: Parameters<Store['search']>[0]) => (await s.search(f)).map((m) => m.id);
      assert.deepEqual(await ids({}), ['B1', 'A2', 'A1'], 'newest first');
      assert.deepEqual(await ids({ org: 'contoso' }), ['A2', 'A1']);
      assert.deepEqual(await ids({ status: 'delivered' }), ['B1', 'A1']);
      assert.deepEqual(await ids({ status: 'deferred', org: 'fabrikam' }), []);
      assert.deepEqual(await ids({ tlsLevel: 'none' }), ['B1', 'A2']);
      assert.deepEqual(await ids({ tlsLevel: 'certificateValidation' }), ['A1']);
      assert.deepEqual(await ids({ connector: 'partner in' }), ['A1'], 'the inbound connector, any case');
      assert.deepEqual(await ids({ connector: 'To Contoso' }), ['B1'], 'the outbound connector of an attempt');
      assert.deepEqual(await ids({ limit: 1, offset: 1 }), ['A2']);
      assert.deepEqual(
        (await s.list({ org: 'contoso' })).map((m) => m.id),
        ['A2'],
        'queued messages of one organisation',
      );
      assert.deepEqual(
        (await s.list({ states: ['deferred', 'done'], limit: 1, offset: 1 })).map((m) => m.id),
        ['A2'],
      );
    },
  );

  t(
    'bounce now: a queued message becomes due with who asked; finished, unknown and leased messages are refused',
    async (s) => {
      const now = Date.now();
      await s.enqueue(msg('Q1'));
      await s.enqueue(msg('Q2'));
      await s.enqueue(msg('Q3'), { owner: 'w', ms: 60_000 });
      assert.deepEqual(await s.depth(), { incoming: 2, active: 1, deferred: 0, held: 0 });
      await s.claim('w', 1, 60_000);
      await s.complete('Q1', 'w', [attempt('deferred', {})], now + 3_600_000);
      assert.deepEqual(await s.requestBounce('NOPE', 'ops'), { requested: false, why: 'unknown' });
      assert.deepEqual(await s.requestBounce('Q3', 'ops'), { requested: false, why: 'inDelivery' });
      assert.deepEqual(await s.requestBounce('Q1', 'ops (token)', now), { requested: true, recipients: 1 });
      assert.equal((await s.nextDue())! <= now, true, 'due at once');
      const [claimed] = (await s.claim('w', 10, 60_000)).filter((m) => m.id === 'Q1');
      assert.equal(claimed.bounceRequestedBy, 'ops (token)');
      const ev = (await s.trace('Q1')).find((e) => e.kind === 'bounceRequested');
      assert.deepEqual(ev?.data, { by: 'ops (token)', state: 'deferred' });
      await s.complete(
        'Q1',
        'w',
        [{ ...attempt('failed', {}), reply: { code: 550, enhanced: '5.3.0', message: 'returned' } }],
        now,
      );
      assert.deepEqual(await s.requestBounce('Q1', 'ops'), { requested: false, why: 'finished' });
      assert.equal((await s.get('Q2'))?.bounceRequestedBy, undefined);
    },
  );
}
