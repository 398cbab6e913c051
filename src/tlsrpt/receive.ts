// Owns: TLS-RPT receiving (RFC 8460): reading a report out of a mail sent to a `tlsRpt.receive`
// address (the application/tlsrpt+gzip or +json part of a multipart/report, or a single part;
// base64 or plain; gzip or JSON), validating it against RFC 8460 §4.4, and the summary per
// reporting organisation and policy domain that `portcullis tlsrpt received` shows.
// Promises: never throws on any input; whatever cannot be read or validated comes back with a
// `problem` and what could be read (bounded), so a bad report is kept and flagged, never lost;
// decompression is bounded (MAX_JSON).
import { gunzipSync } from 'node:zlib';
import {
  fieldValue,
  parseContentType,
  parseHeaders,
  parseTransferEncoding,
  splitMultipart,
} from '../delivery/mime-parse.ts';
import type { Outcome } from '../delivery/classify.ts';
import { emit } from '../events.ts';
import type { ReceivedTlsReport, Store } from '../store/types.ts';
import type { TlsRptReport } from './report.ts';
import { errorMessage } from '../util/errors.ts';

/** Largest report JSON read (decompressed). */
export const MAX_JSON = 8 * 1024 * 1024;
/** Largest content kept with a report in the store. */
const MAX_KEPT = 1024 * 1024;
const REPORT_TYPES = new Set([
  'application/tlsrpt+gzip',
  'application/tlsrpt+json',
  'application/gzip',
  'application/json',
  'application/x-gzip',
]);

interface Part {
  type: string;
  data: Buffer;
  filename?: string;
}

/** The leaf parts of a message (two levels of multipart at most), decoded from their transfer encoding. */
function leafParts(buf: Buffer, start: number, end: number, depth = 0): Part[] {
  const h = parseHeaders(buf, start, end);
  const ct = parseContentType(fieldValue(buf, h, 'content-type') ?? 'text/plain') ?? {
    type: 'text',
    subtype: 'plain',
    params: new Map<string, string>(),
  };
  const boundary = ct.params.get('boundary');
  if (ct.type === 'multipart' && boundary && depth < 2) {
    return splitMultipart(buf, h.bodyStart, end, boundary).parts.flatMap((p) =>
      leafParts(buf, p.start, p.end, depth + 1),
    );
  }
  const body = buf.subarray(h.bodyStart, end);
  const cte = parseTransferEncoding(fieldValue(buf, h, 'content-transfer-encoding') ?? '7bit');
  const data = cte === 'base64' ? Buffer.from(body.toString('latin1').replace(/[^A-Za-z0-9+/=]/g, ''), 'base64') : body;
  const disp = fieldValue(buf, h, 'content-disposition');
  const filename = (disp ? /filename\s*=\s*"?([^";]+)"?/i.exec(disp)?.[1] : undefined) ?? ct.params.get('name');
  return [{ type: `${ct.type}/${ct.subtype}`, data, ...(filename ? { filename } : {}) }];
}

const isGzip = (b: Buffer) => b.length >= 2 && b[0] === 0x1f && b[1] === 0x8b;
const str = (v: unknown): v is string => typeof v === 'string' && v.length > 0;
const count = (v: unknown): v is number => Number.isInteger(v) && (v as number) >= 0;
const isDate = (v: unknown) => str(v) && !Number.isNaN(Date.parse(v));
const POLICY_TYPES = new Set(['tlsa', 'sts', 'no-policy-found']);

/** What is wrong with a parsed report (RFC 8460 §4.4), or undefined when it is valid. */
export function reportProblem(r: unknown): string | undefined {
  if (!r || typeof r !== 'object' || Array.isArray(r)) return 'the report is not a JSON object';
  const o = r as Record<string, unknown>;
  for (const k of ['organization-name', 'contact-info', 'report-id'])
    if (!str(o[k])) return `"${k}" is missing or not a string`;
  const dr = o['date-range'] as Record<string, unknown> | undefined;
  if (!dr || !isDate(dr['start-datetime']) || !isDate(dr['end-datetime']))
    return '"date-range" needs "start-datetime" and "end-datetime" (RFC 3339)';
  if (!Array.isArray(o.policies)) return '"policies" is missing or not an array';
  for (const [i, p] of (o.policies as unknown[]).entries()) {
    const pol = (p as Record<string, unknown> | null)?.policy as Record<string, unknown> | undefined;
    if (!pol || !POLICY_TYPES.has(pol['policy-type'] as string))
      return `policies[${i}].policy."policy-type" must be tlsa, sts or no-policy-found`;
    if (!str(pol['policy-domain'])) return `policies[${i}].policy."policy-domain" is missing`;
    const s = (p as Record<string, unknown>).summary as Record<string, unknown> | undefined;
    if (!s || !count(s['total-successful-session-count']) || !count(s['total-failure-session-count']))
      return `policies[${i}].summary needs both session counts (integers)`;
    const fd = (p as Record<string, unknown>)['failure-details'];
    if (fd !== undefined && !Array.isArray(fd)) return `policies[${i}]."failure-details" is not an array`;
    for (const [j, f] of ((fd as unknown[] | undefined) ?? []).entries()) {
      const x = f as Record<string, unknown> | null;
      if (!x || !str(x['result-type']) || !count(x['failed-session-count']))
        return `policies[${i}]."failure-details"[${j}] needs "result-type" and "failed-session-count"`;
    }
  }
  return undefined;
}

/** Read the report out of a received mail; a bad one comes back with `problem`. */
export function readReportMail(
  data: Buffer,
  meta: { receivedAt: number; queueId: string; mailFrom: string },
): ReceivedTlsReport {
  const bad = (problem: string, content = ''): ReceivedTlsReport => ({
    ...meta,
    content: content.slice(0, MAX_KEPT),
    problem,
  });
  let parts: Part[];
  try {
    parts = leafParts(data, 0, data.length);
  } catch (e) {
    return bad(`unreadable MIME structure: ${errorMessage(e)}`);
  }
  const part =
    parts.find((p) => REPORT_TYPES.has(p.type)) ?? parts.find((p) => /\.json(\.gz)?$/i.test(p.filename ?? ''));
  if (!part)
    return bad(
      `no report part (application/tlsrpt+gzip or application/tlsrpt+json); parts: ` +
        `${parts.map((p) => p.type).join(', ') || 'none'}`,
    );
  let json: Buffer;
  const tooLarge = (e: unknown) => (e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE';
  if (isGzip(part.data)) {
    try {
      json = gunzipSync(part.data, { maxOutputLength: MAX_JSON });
    } catch (e) {
      return bad(
        `gzip: ${tooLarge(e) ? `larger than ${MAX_JSON} bytes` : errorMessage(e)}`,
        part.data.toString('base64'),
      );
    }
  } else {
    if (part.type.endsWith('gzip')) return bad(`${part.type} part is not gzip data`, part.data.toString('base64'));
    json = part.data;
  }
  const text = json.toString('utf8');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    return bad(`not JSON: ${errorMessage(e)}`, text);
  }
  const o = parsed as Partial<TlsRptReport> | null;
  const named = {
    ...(str(o?.['organization-name']) ? { organization: o['organization-name'] } : {}),
    ...(str(o?.['report-id']) ? { reportId: o['report-id'] } : {}),
  };
  const problem = reportProblem(parsed);
  return { ...meta, ...named, content: text.slice(0, MAX_KEPT), ...(problem ? { problem } : {}) };
}

/** One line of `tlsrpt received`: a reporting organisation's results for one policy domain. */
export interface ReceivedSummary {
  organization: string;
  policyDomain: string;
  policyType: string;
  reports: number;
  successful: number;
  failed: number;
  /** Failed sessions by result type. */
  failures: Record<string, number>;
}

/** Sum the valid reports per organisation and policy domain. */
export function summarize(reports: readonly ReceivedTlsReport[]): ReceivedSummary[] {
  const out = new Map<string, ReceivedSummary>();
  for (const r of reports) {
    if (r.problem) continue;
    const rep = JSON.parse(r.content) as TlsRptReport;
    for (const p of rep.policies) {
      const k = JSON.stringify([rep['organization-name'], p.policy['policy-domain'], p.policy['policy-type']]);
      const s = out.get(k) ?? {
        organization: rep['organization-name'],
        policyDomain: p.policy['policy-domain'],
        policyType: p.policy['policy-type'],
        reports: 0,
        successful: 0,
        failed: 0,
        failures: {},
      };
      s.reports++;
      s.successful += p.summary['total-successful-session-count'];
      s.failed += p.summary['total-failure-session-count'];
      for (const f of p['failure-details'] ?? [])
        s.failures[f['result-type']] = (s.failures[f['result-type']] ?? 0) + f['failed-session-count'];
      out.set(k, s);
    }
  }
  return [...out.values()].sort(
    (a, b) => a.organization.localeCompare(b.organization) || a.policyDomain.localeCompare(b.policyDomain),
  );
}

/** Mail to the `tlsRpt.receive` addresses: read, stored (flagged when bad), never put in a mailbox. */
export class ReportInbox {
  constructor(
    private readonly store: () => Store,
    private readonly addresses: () => readonly string[],
  ) {}

  accepts(address: string): boolean {
    const a = address.toLowerCase();
    return this.addresses().some((x) => x.toLowerCase() === a);
  }

  /** Store the report of message `m`; a store failure defers (the message stays queued). */
  async take(m: { id: string; mailFrom: string }, data: Buffer): Promise<Outcome> {
    const r = readReportMail(data, { receivedAt: Date.now(), queueId: m.id, mailFrom: m.mailFrom });
    try {
      await this.store().addReceivedTlsReport(r);
    } catch (e) {
      return {
        status: 'deferred',
        reply: {
          code: 451,
          enhanced: '4.3.0',
          message: 'TLS report could not be stored',
          reason: `storing the TLS report failed: ${errorMessage(e)}`,
        },
      };
    }
    emit({
      event: 'tlsrpt.received',
      queueId: m.id,
      from: m.mailFrom,
      ...(r.organization ? { organization: r.organization } : {}),
      ...(r.reportId ? { reportId: r.reportId } : {}),
      ...(r.problem ? { problem: r.problem } : {}),
    });
    return r.problem
      ? {
          status: 'delivered',
          reply: {
            code: 250,
            enhanced: '2.0.0',
            message: 'TLS report kept, flagged as bad',
            reason: `TLS report kept, flagged: ${r.problem}`,
          },
        }
      : { status: 'delivered', reply: { code: 250, enhanced: '2.0.0', message: 'TLS report stored' } };
  }
}
