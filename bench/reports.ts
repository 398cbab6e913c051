// Report benchmark (not a test): how long the admin centre's transit-security reports take over 30
// days with 1,000,000 messages in the trace.
//
//   npm run bench:reports -- [--messages 1000000] [--days 30] [--runs 25] [--domains 5000] [--clients 2000] [--keep DIR] [--no-trace]
//
// Fills a fresh SQLite store (in a temporary folder) through the Store interface, as the gateway
// does: each message is enqueued (envelope, recipient, data: the trace; --no-trace skips that), and its inbound session
// and outbound delivery events go through the report aggregator (reports/aggregate.ts) at
// timestamps spread over the last --days days, so the counters are what the store keeps as mail
// flows. Traffic mix: three organisations; TLS 1.3 / 1.2 / plaintext inbound; outbound to
// --domains recipient domains (some plaintext-only, some failing required TLS) from --clients
// client addresses. Then every report of the API (reports/query.ts, what /api/v1/reports/* answers)
// is run --runs times over the 30-day range, for the whole gateway and for one organisation, and
// min / median / p95 / max are printed in milliseconds. The budget is 200 ms per report.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Event } from '../src/events.ts';
import { ReportAggregator } from '../src/reports/aggregate.ts';
import {
  inboundPeers,
  inboundReport,
  outboundReport,
  plaintextDomains,
  tlsFailures,
  type ReportRange,
} from '../src/reports/query.ts';
import { SqliteStore } from '../src/store/sqlite/index.ts';
import type { NewMessage } from '../src/store/types.ts';
import { intArg } from './lib/args.ts';

const { values: a } = parseArgs({
  options: {
    messages: { type: 'string', default: '1000000' },
    days: { type: 'string', default: '30' },
    runs: { type: 'string', default: '25' },
    domains: { type: 'string', default: '5000' },
    clients: { type: 'string', default: '2000' },
    keep: { type: 'string' },
    'no-trace': { type: 'boolean', default: false },
  },
  strict: true,
});
const N = intArg('messages', a.messages, 1, 10_000_000);
const DAYS = intArg('days', a.days, 1, 400);
const RUNS = intArg('runs', a.runs, 1, 1000);
const DOMAINS = intArg('domains', a.domains, 1, 1_000_000);
const CLIENTS = intArg('clients', a.clients, 1, 65_000);
const DAY = 86_400_000;
const BATCH = 5000;
const ORGS = ['contoso', 'fabrikam', 'northwind'];

const dir = a.keep ?? mkdtempSync(path.join(os.tmpdir(), 'pc-bench-reports-'));
const store = new SqliteStore(dir);
const agg = new ReportAggregator(store);
const now = Date.now();
const start = now - DAYS * DAY;

/** Deterministic mix, by message number. */
function traffic(i: number): { at: number; org: string; events: Event[]; msg: NewMessage } {
  const at = start + Math.floor((i / N) * DAYS * DAY);
  const org = ORGS[i % 3];
  const id = `B${i.toString(36).toUpperCase().padStart(9, '0')}`;
  const sid = `s${i}`;
  const tls =
    i % 10 === 0
      ? undefined
      : {
          version: i % 4 === 0 ? 'TLSv1.2' : 'TLSv1.3',
          cipher: i % 4 === 0 ? 'ECDHE-RSA-AES256-GCM-SHA384' : 'TLS_AES_256_GCM_SHA384',
          bits: 256,
        };
  const d = i % DOMAINS;
  const domain = `d${d}.example`;
  const rcpt = `user${i % 97}@${domain}`;
  const ip = `10.${((i % CLIENTS) >> 8) & 255}.${(i % CLIENTS) & 255}.1`;
  // Every 50th domain takes mail only in plaintext; every 40th requires TLS (a connector) and some of those fail.
  const plainOnly = d % 50 === 0;
  const forced = d % 40 === 1;
  const failed = forced && i % 7 === 0;
  const delivery: Event = failed
    ? {
        event: 'delivery.result',
        queueId: id,
        rcpt,
        status: i % 2 ? 'deferred' : 'failed',
        agent: 'smtp',
        reason: 'TLS required',
        org,
        tlsRequired: 'certificateValidation',
        tlsSource: 'connector "To partner"',
        tlsFailure: 'certificate-expired',
      }
    : {
        event: 'delivery.result',
        queueId: id,
        rcpt,
        status: 'delivered',
        agent: 'smtp',
        reason: '250 ok',
        org,
        ...(plainOnly
          ? { tlsAchieved: 'none' }
          : { tlsVersion: 'TLSv1.3', tlsCipher: 'TLS_AES_256_GCM_SHA384', tlsAchieved: 'encryptionOnly' }),
        ...(forced ? { tlsRequired: 'certificateValidation', tlsSource: 'connector "To partner"' } : {}),
      };
  return {
    at,
    org,
    events: [
      {
        event: 'message.accepted',
        sid,
        queueId: id,
        from: 'sender@partner.example',
        rcpts: 1,
        size: 2048,
        org,
        ...(tls ? { tls } : {}),
      },
      {
        event: 'session.end',
        sid,
        ip,
        helo: `mx${i % CLIENTS}.client.example`,
        ...(tls ? { tls } : {}),
        messages: 1,
        commands: 6,
        errors: 0,
        durationMs: 40,
        close: 'quit',
      },
      delivery,
    ],
    msg: {
      id,
      org,
      receivedAt: at,
      mailFrom: 'sender@partner.example',
      messageId: `<${id}@partner.example>`,
      envelope: { smtputf8: false },
      inbound: {
        sessionId: sid,
        clientIp: ip,
        clientPort: 25000,
        helo: `mx${i % CLIENTS}.client.example`,
        protocol: tls ? 'ESMTPS' : 'ESMTP',
        receivedBy: 'mx1.contoso.test',
        ...(tls ? { tls } : {}),
      },
      data: Buffer.from(`Subject: bench ${i}\r\nMessage-ID: <${id}@partner.example>\r\n\r\nbody\r\n`),
      recipients: [{ address: rcpt, org, route: 'remote' }],
    },
  };
}

const t0 = performance.now();
for (let i = 0; i < N; i += BATCH) {
  const batch = [];
  for (let j = i; j < Math.min(N, i + BATCH); j++) {
    const t = traffic(j);
    for (const e of t.events) agg.record(e, t.at);
    if (!a['no-trace']) batch.push(store.enqueue(t.msg));
  }
  await Promise.all(batch);
  await agg.flush();
  if ((i / BATCH) % 40 === 39)
    process.stderr.write(`  ${i + BATCH} messages stored (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`);
}
await agg.flush();
const fillSeconds = (performance.now() - t0) / 1000;

const range = (org: string): ReportRange => ({ org, from: now - DAYS * DAY, until: now, granularity: 'day' });
const page = { limit: 50, offset: 0 };
const reports: [string, (org: string) => Promise<unknown>][] = [
  ['inbound by TLS version and cipher (daily series)', (org) => inboundReport(store, range(org))],
  [
    'inbound by TLS version and cipher (hourly series)',
    (org) => inboundReport(store, { ...range(org), granularity: 'hour' }),
  ],
  ['clients on plaintext or the oldest TLS', (org) => inboundPeers(store, range(org), page)],
  ['outbound by how secured', (org) => outboundReport(store, range(org))],
  ['TLS deferrals and bounces by domain', (org) => tlsFailures(store, range(org), page)],
  ['plaintext-only recipient domains', (org) => plaintextDomains(store, range(org), page)],
];

const q = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))];
const fmt = (x: number) => x.toFixed(1);
console.log(
  `\n${N.toLocaleString('en')} messages in the trace over ${DAYS} days (filled in ${fillSeconds.toFixed(0)} s); ${RUNS} runs per report; times in ms\n`,
);
console.log('| report | scope | min | median | p95 | max |');
console.log('|---|---|---:|---:|---:|---:|');
let worst = 0;
for (const [name, run] of reports) {
  for (const org of ['*', 'contoso']) {
    await run(org); // warm-up: statements prepared, pages cached
    const ms: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      const s = performance.now();
      await run(org);
      ms.push(performance.now() - s);
    }
    ms.sort((x, y) => x - y);
    worst = Math.max(worst, q(ms, 0.95));
    console.log(
      `| ${name} | ${org === '*' ? 'gateway' : `organization ${org}`} | ${fmt(ms[0])} | ${fmt(q(ms, 0.5))} | ${fmt(q(ms, 0.95))} | ${fmt(ms[ms.length - 1])} |`,
    );
  }
}
console.log(`\nslowest p95: ${fmt(worst)} ms (budget 200 ms): ${worst < 200 ? 'PASS' : 'FAIL'}`);
await store.close();
if (!a.keep) rmSync(dir, { recursive: true, force: true });
if (worst >= 200) process.exitCode = 1;
