// Owns: the TLS-RPT formats (RFC 8460): the `_smtp._tls` TXT record (§3), the aggregate report
// JSON built from the day's session counts (§4), its gzip and file name (§5.1), and the report
// mail (§5.3: multipart/report; report-type="tlsrpt", application/tlsrpt+gzip attachment, the
// RFC's headers and subject). Pure: no I/O.
// Promises: the JSON carries exactly the RFC's field names; counts are copied, never estimated;
// a TXT record that is not exactly one valid v=TLSRPTv1 record yields no destinations.
import { randomBytes, randomUUID } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import type { Rfc8460Policy } from '../tls/failures.ts';
import { rfc5322Date } from '../ingest/received.ts';
import type { TlsSessionCount } from '../store/types.ts';

export type { TlsSessionCount } from '../store/types.ts';

/** RFC 8460 §4.4 report JSON. */
export interface TlsRptReport {
  'organization-name': string;
  'date-range': { 'start-datetime': string; 'end-datetime': string };
  'contact-info': string;
  'report-id': string;
  policies: {
    policy: { 'policy-type': string; 'policy-string'?: string[]; 'policy-domain': string; 'mx-host'?: string[] };
    summary: { 'total-successful-session-count': number; 'total-failure-session-count': number };
    'failure-details'?: {
      'result-type': string;
      'sending-mta-ip'?: string;
      'receiving-mx-hostname'?: string;
      'receiving-ip'?: string;
      'failed-session-count': number;
      'failure-reason-code'?: string;
    }[];
  }[];
}

export const DAY = /^\d{4}-\d{2}-\d{2}$/;
export const utcDay = (ms: number): string => new Date(ms).toISOString().slice(0, 10);
/** Start of a UTC day, ms epoch; undefined for a string that is not a real date. */
export function dayStart(day: string): number | undefined {
  if (!DAY.test(day)) return undefined;
  const t = Date.parse(`${day}T00:00:00Z`);
  return Number.isNaN(t) || utcDay(t) !== day ? undefined : t;
}

/**
 * The rua URIs of a `_smtp._tls` TXT RRset (RFC 8460 §3): records not starting with
 * "v=TLSRPTv1" are ignored; unless exactly one remains, the domain has no TLS-RPT. Only mailto:
 * and https: destinations are returned; `problem` says why there are none.
 */
export function parseTlsRptRecord(txts: readonly string[]): { rua: string[]; problem?: string } {
  const mine = txts.filter((t) => /^v=TLSRPTv1\s*(;|$)/.test(t));
  if (mine.length !== 1)
    return {
      rua: [],
      problem: mine.length ? `${mine.length} v=TLSRPTv1 records (RFC 8460 §3: exactly one)` : 'no v=TLSRPTv1 record',
    };
  const fields = new Map<string, string>();
  for (const part of mine[0].split(';').slice(1)) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1).trim());
  }
  const rua = (fields.get('rua') ?? '')
    .split(',')
    .map((u) => u.trim())
    .filter((u) => /^(mailto:[^@\s]+@[^@\s]+|https:\/\/\S+)$/i.test(u));
  return rua.length ? { rua } : { rua: [], problem: 'no usable rua (mailto: or https:) in the record' };
}

const policyKey = (p: Rfc8460Policy) => JSON.stringify([p.type, p.strings ?? [], p.mxHost ?? []]);

/** The aggregate report for one policy domain and day, from its counter rows. */
export function buildReport(o: {
  day: string;
  domain: string;
  rows: readonly TlsSessionCount[];
  organizationName: string;
  contactInfo: string;
  reportId?: string;
}): TlsRptReport {
  const byPolicy = new Map<string, { policy: Rfc8460Policy; rows: TlsSessionCount[] }>();
  for (const r of o.rows) {
    const k = policyKey(r.policy);
    const g = byPolicy.get(k) ?? { policy: r.policy, rows: [] };
    g.rows.push(r);
    byPolicy.set(k, g);
  }
  return {
    'organization-name': o.organizationName,
    'date-range': { 'start-datetime': `${o.day}T00:00:00Z`, 'end-datetime': `${o.day}T23:59:59Z` },
    'contact-info': o.contactInfo,
    'report-id': o.reportId ?? randomUUID(),
    policies: [...byPolicy.values()].map(({ policy, rows }) => {
      const failures = rows.filter((r) => r.resultType);
      return {
        policy: {
          'policy-type': policy.type,
          ...(policy.strings?.length ? { 'policy-string': policy.strings } : {}),
          'policy-domain': o.domain,
          ...(policy.mxHost?.length ? { 'mx-host': policy.mxHost } : {}),
        },
        summary: {
          'total-successful-session-count': rows.filter((r) => !r.resultType).reduce((n, r) => n + r.count, 0),
          'total-failure-session-count': failures.reduce((n, r) => n + r.count, 0),
        },
        ...(failures.length
          ? {
              'failure-details': failures.map((r) => ({
                'result-type': r.resultType!,
                ...(r.sendingIp ? { 'sending-mta-ip': r.sendingIp } : {}),
                ...(r.mxHost ? { 'receiving-mx-hostname': r.mxHost } : {}),
                ...(r.mxIp ? { 'receiving-ip': r.mxIp } : {}),
                'failed-session-count': r.count,
                ...(r.reason ? { 'failure-reason-code': r.reason } : {}),
              })),
            }
          : {}),
      };
    }),
  };
}

export const gzipReport = (r: TlsRptReport): Buffer => gzipSync(Buffer.from(JSON.stringify(r)));

/** RFC 8460 §5.1: submitter!policy-domain!begin!end!unique-id.json.gz (timestamps in epoch seconds). */
export function reportFileName(submitter: string, r: TlsRptReport, domain: string): string {
  const begin = Date.parse(r['date-range']['start-datetime']) / 1000;
  const end = Date.parse(r['date-range']['end-datetime']) / 1000;
  return `${submitter}!${domain}!${begin}!${end}!${r['report-id'].replace(/[^A-Za-z0-9._-]/g, '_')}.json.gz`;
}

/** RFC 8460 §5.3: the report as a mail to `to`. */
export function reportMail(o: {
  submitter: string;
  from: string;
  to: string;
  domain: string;
  report: TlsRptReport;
  gz: Buffer;
  now?: Date;
}): { data: Buffer; messageId: string } {
  const boundary = `=_tlsrpt_${randomBytes(9).toString('base64url')}`;
  const messageId = `<tlsrpt.${randomBytes(8).toString('hex')}@${o.submitter}>`;
  const id = o.report['report-id'];
  const b64 = o.gz.toString('base64').replace(/.{1,76}/g, '$&\r\n');
  const text = [
    `From: TLS reporting <${o.from}>`,
    `To: <${o.to}>`,
    `Subject: Report Domain: ${o.domain} Submitter: ${o.submitter} Report-ID: <${id}>`,
    `Date: ${rfc5322Date(o.now ?? new Date())}`,
    `Message-ID: ${messageId}`,
    `TLS-Report-Domain: ${o.domain}`,
    `TLS-Report-Submitter: ${o.submitter}`,
    // RFC 8460 §5.3: reports must be delivered despite TLS failures (RFC 8689 §5).
    'TLS-Required: No',
    'Auto-Submitted: auto-generated',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type="tlsrpt"; boundary="${boundary}"`,
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=us-ascii',
    '',
    `This is an aggregate TLS report (RFC 8460) from ${o.submitter} for ${o.domain},`,
    `${o.report['date-range']['start-datetime']} to ${o.report['date-range']['end-datetime']}.`,
    '',
    `--${boundary}`,
    'Content-Type: application/tlsrpt+gzip',
    'Content-Transfer-Encoding: base64',
    `Content-Disposition: attachment; filename="${reportFileName(o.submitter, o.report, o.domain)}"`,
    '',
    b64 + `--${boundary}--`,
    '',
  ].join('\r\n');
  return { data: Buffer.from(text), messageId };
}
