// TLS-RPT sending seams: the counter delivery feeds (off when tlsRpt.enabled is false, one row per
// session on the UTC day), and the daily run (yesterday, only domains not yet reported, never
// when disabled).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildConfig } from '../../../src/config/load.ts';
import { DailyReports, sessionCounter, type TlsReportSender } from '../../../src/tlsrpt/send.ts';
import type { Store, TlsSessionCount } from '../../../src/store/types.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-tlsrpt-send-'));
const cfg = (enabled: boolean) =>
  buildConfig(
    {
      hostname: 'gw.contoso.test',
      tlsRpt: { enabled },
      organizations: [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }],
    },
    dir,
    null,
  );

test('the counter: one row per session on its UTC day, failures with their details; nothing when tlsRpt.enabled is false', async () => {
  const rows: TlsSessionCount[] = [];
  const store = {
    countTlsSessions: async (r: readonly TlsSessionCount[]) => {
      rows.push(...r);
    },
  } as unknown as Store;
  let enabled = true;
  const count = sessionCounter(
    () => store,
    () => cfg(enabled),
    () => Date.UTC(2026, 0, 31, 23, 59, 59),
  );
  count({
    policyDomain: 'd.test',
    policy: { type: 'no-policy-found' },
    mxHost: 'mx.d.test',
    mxIp: '127.0.0.9',
    sendingIp: '127.0.0.1',
  });
  count({
    policyDomain: 'd.test',
    policy: { type: 'no-policy-found' },
    mxHost: 'mx.d.test',
    mxIp: '127.0.0.9',
    sendingIp: '127.0.0.1',
    resultType: 'certificate-expired',
    reason: 'r',
  });
  enabled = false;
  count({ policyDomain: 'd.test', policy: { type: 'no-policy-found' }, mxHost: 'mx.d.test', mxIp: '127.0.0.9' });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(rows, [
    { day: '2026-01-31', policyDomain: 'd.test', policy: { type: 'no-policy-found' }, count: 1 },
    {
      day: '2026-01-31',
      policyDomain: 'd.test',
      policy: { type: 'no-policy-found' },
      resultType: 'certificate-expired',
      mxHost: 'mx.d.test',
      mxIp: '127.0.0.9',
      sendingIp: '127.0.0.1',
      reason: 'r',
      count: 1,
    },
  ]);
});

test("the daily run sends yesterday's unsent reports, and nothing while disabled", async () => {
  const calls: [string, boolean | undefined][] = [];
  const sender = {
    sendDay: async (day: string, o: { unsentOnly?: boolean } = {}) => {
      calls.push([day, o.unsentOnly]);
      return [];
    },
  } as unknown as TlsReportSender;
  let enabled = false;
  const daily = new DailyReports(
    () => sender,
    () => enabled,
    20,
  );
  daily.start(1);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(calls, []);
  enabled = true;
  await new Promise((r) => setTimeout(r, 60));
  await daily.stop();
  const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
  assert.ok(calls.length >= 1);
  assert.deepEqual(calls[0], [yesterday, true]);
  const n = calls.length;
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(calls.length, n, 'stopped');
});
