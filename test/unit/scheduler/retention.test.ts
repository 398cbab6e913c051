import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SqliteStore } from '../../../src/store/sqlite/index.ts';
import { TraceRetention } from '../../../src/scheduler/retention.ts';
import type { NewMessage } from '../../../src/store/types.ts';

const DAY = 86_400_000;
const msg = (id: string, receivedAt: number): NewMessage => ({
  id,
  org: 'contoso',
  receivedAt,
  mailFrom: 's@x.test',
  envelope: { smtputf8: false },
  inbound: { sessionId: 's', clientIp: '127.0.0.1', clientPort: 1, helo: 'h', protocol: 'ESMTP', receivedBy: 'mx' },
  data: Buffer.from('Subject: x\r\n\r\nx\r\n'),
  recipients: [{ address: 'r@contoso.test', org: 'contoso', route: 'local' }],
});

test('a sweep forgets done messages past retentionDays in bounded batches; the rest follows in the next sweep', async () => {
  const s = new SqliteStore(mkdtempSync(path.join(os.tmpdir(), 'pc-retention-')));
  const now = Date.now();
  for (let i = 0; i < 7; i++) {
    await s.enqueue(msg(`OLD${i}`, now - 20 * DAY));
    await s.deleteQueued(`OLD${i}`, 'root', now - (11 + i) * DAY);
  }
  await s.enqueue(msg('RECENT', now - 20 * DAY));
  await s.deleteQueued('RECENT', 'root', now - 9 * DAY);
  await s.enqueue(msg('QUEUED', now - 20 * DAY));

  let days = 10;
  const r = new TraceRetention(s, () => days, { batch: 2, maxBatches: 3, intervalMs: 3_600_000, backlogMs: 60_000 });
  assert.deepEqual(await r.sweep(now), { removed: 6, more: true }, 'at most batch × maxBatches per sweep');
  assert.deepEqual(await r.sweep(now), { removed: 1, more: false });
  assert.deepEqual(await r.sweep(now), { removed: 0, more: false });
  assert.ok(await s.get('RECENT'), 'within retention');
  assert.ok(await s.get('QUEUED'));
  days = 5; // the setting is read at every sweep (config reload)
  assert.deepEqual(await r.sweep(now), { removed: 1, more: false });
  assert.equal(await s.get('RECENT'), null);
  assert.equal((await s.get('QUEUED'))?.state, 'incoming');
  await r.stop();
  await s.close();
});

test('start sweeps at once; stop waits for the sweep and schedules nothing more', async () => {
  const s = new SqliteStore(mkdtempSync(path.join(os.tmpdir(), 'pc-retention-')));
  const now = Date.now();
  await s.enqueue(msg('OLD', now - 40 * DAY));
  await s.deleteQueued('OLD', 'root', now - 31 * DAY);
  const r = new TraceRetention(s, () => 30);
  r.start();
  const end = Date.now() + 5000;
  while ((await s.get('OLD')) && Date.now() < end) await new Promise((x) => setTimeout(x, 20));
  assert.equal(await s.get('OLD'), null, 'swept at start');
  await r.stop();
  await s.close();
});
