// Owns: the transit-security reports, built from the report counters (kinds.ts) for one
// organisation or the whole gateway over a time range: inbound sessions and messages by TLS
// version and cipher with the plaintext share, the clients still on plaintext or the oldest TLS,
// outbound deliveries by how they were secured, deferrals and bounces by requirement and TLS
// failure (with the RFC 8460 result type), and the recipient domains that took mail only in
// plaintext. The admin API serves these; the web UI draws them.
// Promise: answers from sums of counters only (never the trace), so the cost depends on the range
// and the number of distinct clients and domains, not on how much mail flowed. Lists are paged.
import type { ReportSum, Store } from '../store/types.ts';
import { isTlsFailureKind, tlsFailureLabel } from '../tls/failures.ts';
import { bucketOf, DAY, HOUR, KINDS, resultType, SECURITY_TYPES, type SecurityType } from './kinds.ts';

export type Granularity = 'hour' | 'day';

export interface ReportRange {
  /** An organisation's name, or '*' for the whole gateway. */
  org: string;
  from: number;
  until: number;
  granularity: Granularity;
}

export interface Page {
  limit: number;
  offset: number;
}

export interface Series {
  /** Start of each slot (ms epoch, UTC), every slot of the range, empty ones included. */
  t: number[];
  /** One count per slot for each key. */
  values: Record<string, number[]>;
}

export interface TlsBreakdown {
  total: number;
  plaintext: number;
  /** plaintext / total (0 when there is nothing). */
  plaintextShare: number;
  byVersion: { tlsVersion: string; count: number }[];
  byVersionAndCipher: { tlsVersion: string; cipher: string; count: number }[];
  series: Series;
}

/** Oldest first; 'none' (plaintext) before all. */
const VERSION_ORDER = ['none', 'SSLv2', 'SSLv3', 'TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3'];
const versionRank = (v: string) => {
  const i = VERSION_ORDER.indexOf(v);
  return i < 0 ? VERSION_ORDER.length : i;
};
const byVersion = (a: string, b: string) => versionRank(a) - versionRank(b) || a.localeCompare(b);

const slotWidth = (g: Granularity) => (g === 'hour' ? HOUR : DAY);

/** The slots of a range: from its first bucket up to (not including) `until`. */
function slots(r: ReportRange): number[] {
  const w = slotWidth(r.granularity);
  const out: number[] = [];
  for (let t = bucketOf(r.from, w); t < r.until; t += w) out.push(t);
  return out;
}

function series(
  r: ReportRange,
  rows: ReportSum[],
  key: (s: ReportSum) => string,
  keys: readonly string[] = [],
): Series {
  const t = slots(r);
  const index = new Map(t.map((x, i) => [x, i]));
  const values: Record<string, number[]> = {};
  for (const k of keys) values[k] = t.map(() => 0);
  for (const row of rows) {
    const i = index.get(row.bucket!);
    if (i === undefined) continue;
    const k = key(row);
    (values[k] ??= t.map(() => 0))[i] += row.n;
  }
  return { t, values };
}

/** The range a kind's buckets can answer: whole buckets around [from, until). */
function span(r: ReportRange, width: number): { from: number; until: number } {
  return { from: bucketOf(r.from, width), until: bucketOf(r.until - 1, width) + width };
}

async function tlsBreakdown(
  store: Store,
  kind: typeof KINDS.inSessions | typeof KINDS.inMessages,
  r: ReportRange,
): Promise<TlsBreakdown> {
  const q = { kind: kind.kind, org: r.org, ...span(r, kind.span) };
  const [cells, timed] = await Promise.all([
    store.sumReportCounts({ ...q, by: ['d1', 'd2'] }),
    store.sumReportCounts({ ...q, by: ['bucket', 'd1'], bucketMs: slotWidth(r.granularity) }),
  ]);
  const versions = new Map<string, number>();
  for (const c of cells) versions.set(c.d1!, (versions.get(c.d1!) ?? 0) + c.n);
  const total = [...versions.values()].reduce((a, b) => a + b, 0);
  const plaintext = versions.get('none') ?? 0;
  return {
    total,
    plaintext,
    plaintextShare: total ? plaintext / total : 0,
    byVersion: [...versions]
      .sort((a, b) => byVersion(a[0], b[0]))
      .map(([tlsVersion, count]) => ({ tlsVersion, count })),
    byVersionAndCipher: cells
      .map((c) => ({ tlsVersion: c.d1!, cipher: c.d2!, count: c.n }))
      .sort((a, b) => byVersion(a.tlsVersion, b.tlsVersion) || b.count - a.count),
    series: series(r, timed, (s) => s.d1!, [...versions.keys()].sort(byVersion)),
  };
}

export interface InboundReport extends ReportRange {
  sessions: TlsBreakdown;
  messages: TlsBreakdown;
}

export async function inboundReport(store: Store, r: ReportRange): Promise<InboundReport> {
  const [sessions, messages] = await Promise.all([
    tlsBreakdown(store, KINDS.inSessions, r),
    tlsBreakdown(store, KINDS.inMessages, r),
  ]);
  return { ...r, sessions, messages };
}

export interface PeerRow {
  ip: string;
  helo: string;
  tlsVersion: string;
  sessions: number;
}

export interface PeersReport {
  /** The whole UTC days counted (clients are counted per day). */
  from: number;
  until: number;
  /** The oldest TLS version any client used in the range (null when none used TLS). */
  oldestTls: string | null;
  /** Clients that used plaintext or the oldest TLS version, most sessions first. */
  total: number;
  peers: PeerRow[];
}

/** The clients still on plaintext or on the oldest TLS version seen in the range. */
export async function inboundPeers(store: Store, r: ReportRange, page: Page): Promise<PeersReport> {
  const s = span(r, KINDS.inPeers.span);
  // The versions seen, from the (small) session counters; then only those versions' client counters.
  const versions = await store.sumReportCounts({ kind: KINDS.inSessions.kind, org: r.org, ...s, by: ['d1'] });
  const oldestTls =
    versions
      .map((x) => x.d1!)
      .filter((v) => v !== 'none')
      .sort(byVersion)[0] ?? null;
  const rows = await store.sumReportCounts({
    kind: KINDS.inPeers.kind,
    org: r.org,
    ...s,
    by: ['d1', 'd2', 'd3'],
    d1In: ['none', ...(oldestTls ? [oldestTls] : [])],
  });
  const old = rows
    .map((x) => ({ ip: x.d2!, helo: x.d3!, tlsVersion: x.d1!, sessions: x.n }))
    .sort((a, b) => byVersion(a.tlsVersion, b.tlsVersion) || b.sessions - a.sessions || a.ip.localeCompare(b.ip));
  return { ...s, oldestTls, total: old.length, peers: old.slice(page.offset, page.offset + page.limit) };
}

export interface OutboundReport extends ReportRange {
  /** The security types, in the order charts show them (DANE and MTA-STS come with issue 10). */
  securityTypes: readonly SecurityType[];
  delivered: {
    total: number;
    bySecurity: { security: SecurityType; count: number }[];
    byVersionAndCipher: { security: SecurityType; tlsVersion: string; cipher: string; count: number }[];
    series: Series;
  };
  undelivered: {
    deferred: number;
    failed: number;
    /** Of those, because a required TLS level failed. */
    tlsDeferred: number;
    tlsFailed: number;
    byRequirement: { status: string; requirement: string; tlsFailure: string; resultType: string; count: number }[];
    series: Series;
  };
}

export async function outboundReport(store: Store, r: ReportRange): Promise<OutboundReport> {
  const d = { kind: KINDS.outDelivered.kind, org: r.org, ...span(r, HOUR) };
  const u = { kind: KINDS.outUndelivered.kind, org: r.org, ...span(r, HOUR) };
  const w = slotWidth(r.granularity);
  const [dCells, dTimed, uCells, uTimed] = await Promise.all([
    store.sumReportCounts({ ...d, by: ['d1', 'd2', 'd3'] }),
    store.sumReportCounts({ ...d, by: ['bucket', 'd1'], bucketMs: w }),
    store.sumReportCounts({ ...u, by: ['d1', 'd2', 'd3'] }),
    store.sumReportCounts({ ...u, by: ['bucket', 'd1'], bucketMs: w }),
  ]);
  const bySecurity = SECURITY_TYPES.map((security) => ({
    security,
    count: dCells.filter((c) => c.d1 === security).reduce((a, c) => a + c.n, 0),
  }));
  const sum = (f: (c: ReportSum) => boolean) => uCells.filter(f).reduce((a, c) => a + c.n, 0);
  return {
    ...r,
    securityTypes: SECURITY_TYPES,
    delivered: {
      total: bySecurity.reduce((a, b) => a + b.count, 0),
      bySecurity,
      byVersionAndCipher: dCells
        .map((c) => ({ security: c.d1 as SecurityType, tlsVersion: c.d2!, cipher: c.d3!, count: c.n }))
        .sort((a, b) => SECURITY_TYPES.indexOf(a.security) - SECURITY_TYPES.indexOf(b.security) || b.count - a.count),
      series: series(r, dTimed, (s) => s.d1!, SECURITY_TYPES),
    },
    undelivered: {
      deferred: sum((c) => c.d1 === 'deferred'),
      failed: sum((c) => c.d1 === 'failed'),
      tlsDeferred: sum((c) => c.d1 === 'deferred' && !!c.d3),
      tlsFailed: sum((c) => c.d1 === 'failed' && !!c.d3),
      byRequirement: uCells
        .map((c) => ({
          status: c.d1!,
          requirement: c.d2!,
          tlsFailure: c.d3!,
          resultType: resultType(c.d3!),
          count: c.n,
        }))
        .sort((a, b) => b.count - a.count),
      series: series(r, uTimed, (s) => s.d1!, ['deferred', 'failed']),
    },
  };
}

export interface TlsFailureRow {
  domain: string;
  /** The requirement that was not met (connector-forced; DANE and MTA-STS with issue 10). */
  requirement: string;
  /** TLS failure kind (tls/failures.ts) and its admin label. */
  tlsFailure: string;
  label: string;
  /** RFC 8460 result type of the kind. */
  resultType: string;
  deferred: number;
  failed: number;
}

/** Deferrals and bounces because a required TLS level failed: recipient domain × requirement × failure. */
export async function tlsFailures(
  store: Store,
  r: ReportRange,
  page: Page,
): Promise<{ from: number; until: number; total: number; rows: TlsFailureRow[] }> {
  const s = span(r, KINDS.outTlsFailures.span);
  const cells = await store.sumReportCounts({
    kind: KINDS.outTlsFailures.kind,
    org: r.org,
    ...s,
    by: ['d1', 'd2', 'd3', 'd4'],
  });
  const rows = new Map<string, TlsFailureRow>();
  for (const c of cells) {
    const key = JSON.stringify([c.d1, c.d2, c.d3]);
    const row = rows.get(key) ?? {
      domain: c.d1!,
      requirement: c.d2!,
      tlsFailure: c.d3!,
      label: isTlsFailureKind(c.d3) ? tlsFailureLabel(c.d3) : c.d3!,
      resultType: resultType(c.d3!),
      deferred: 0,
      failed: 0,
    };
    if (c.d4 === 'failed') row.failed += c.n;
    else row.deferred += c.n;
    rows.set(key, row);
  }
  const all = [...rows.values()].sort(
    (a, b) => b.deferred + b.failed - (a.deferred + a.failed) || a.domain.localeCompare(b.domain),
  );
  return { ...s, total: all.length, rows: all.slice(page.offset, page.offset + page.limit) };
}

/** Recipient domains whose every delivery in the range was in plaintext, most messages first. */
export async function plaintextDomains(
  store: Store,
  r: ReportRange,
  page: Page,
): Promise<{ from: number; until: number; total: number; domains: { domain: string; messages: number }[] }> {
  const s = span(r, KINDS.outDomains.span);
  // The domains that took plaintext at all (few), then all deliveries to only those domains.
  const plain = await store.sumReportCounts({ kind: KINDS.outPlainDomains.kind, org: r.org, ...s, by: ['d1'] });
  const cells = await store.sumReportCounts({
    kind: KINDS.outDomains.kind,
    org: r.org,
    ...s,
    by: ['d1', 'd2'],
    d1In: plain.map((x) => x.d1!),
  });
  const per = new Map<string, { plain: number; secured: number }>();
  for (const c of cells) {
    const x = per.get(c.d1!) ?? { plain: 0, secured: 0 };
    if (c.d2 === 'plaintext') x.plain += c.n;
    else x.secured += c.n;
    per.set(c.d1!, x);
  }
  const all = [...per]
    .filter(([, x]) => x.plain > 0 && x.secured === 0)
    .map(([domain, x]) => ({ domain, messages: x.plain }))
    .sort((a, b) => b.messages - a.messages || a.domain.localeCompare(b.domain));
  return { ...s, total: all.length, domains: all.slice(page.offset, page.offset + page.limit) };
}
