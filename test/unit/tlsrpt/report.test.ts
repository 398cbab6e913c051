// TLS-RPT formats (RFC 8460): the _smtp._tls record, the report JSON field by field, the report
// mail and its attachment, and reading reports back (good, gzip or plain, and bad ones flagged).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gunzipSync, gzipSync } from 'node:zlib';
import {
  buildReport,
  dayStart,
  gzipReport,
  parseTlsRptRecord,
  reportFileName,
  reportMail,
  type TlsSessionCount,
} from '../../../src/tlsrpt/report.ts';
import { MAX_JSON, readReportMail, reportProblem, summarize } from '../../../src/tlsrpt/receive.ts';

const day = '2026-03-04';
const rows: TlsSessionCount[] = [
  { day, policyDomain: 'dest.test', policy: { type: 'no-policy-found' }, count: 7 },
  {
    day,
    policyDomain: 'dest.test',
    policy: { type: 'no-policy-found' },
    resultType: 'starttls-not-supported',
    sendingIp: '127.0.0.1',
    mxHost: 'mx2.dest.test',
    mxIp: '127.0.0.62',
    reason: 'the server did not offer STARTTLS (starttls-not-offered)',
    count: 2,
  },
  {
    day,
    policyDomain: 'dest.test',
    policy: {
      type: 'sts',
      strings: ['version: STSv1', 'mode: enforce', 'mx: *.dest.test', 'max_age: 86400'],
      mxHost: ['*.dest.test'],
    },
    count: 3,
  },
];

test('_smtp._tls: exactly one v=TLSRPTv1 record; mailto and https destinations (RFC 8460 §3)', () => {
  assert.deepEqual(parseTlsRptRecord(['v=TLSRPTv1; rua=mailto:tlsrpt@dest.test,https://rpt.dest.test/v1']).rua, [
    'mailto:tlsrpt@dest.test',
    'https://rpt.dest.test/v1',
  ]);
  assert.deepEqual(
    parseTlsRptRecord(['v=spf1 -all', 'v=TLSRPTv1;rua=mailto:a@b.test']).rua,
    ['mailto:a@b.test'],
    'other TXT records are ignored',
  );
  assert.match(
    parseTlsRptRecord(['v=TLSRPTv1; rua=mailto:a@b.test', 'v=TLSRPTv1; rua=mailto:c@b.test']).problem!,
    /2 v=TLSRPTv1 records/,
  );
  assert.deepEqual(
    parseTlsRptRecord(['v=TLSRPTv1; rua=http://insecure.test/x']).rua,
    [],
    'plain http is no destination',
  );
  assert.match(parseTlsRptRecord([]).problem!, /no v=TLSRPTv1 record/);
  assert.deepEqual(parseTlsRptRecord(['v=TLSRPTv10; rua=mailto:a@b.test']).rua, []);
});

test('the report JSON, field by field (RFC 8460 §4.4)', () => {
  const r = buildReport({
    day,
    domain: 'dest.test',
    rows,
    organizationName: 'Contoso Ltd',
    contactInfo: 'postmaster@contoso.test',
    reportId: 'rid-1',
  });
  assert.deepEqual(Object.keys(r), ['organization-name', 'date-range', 'contact-info', 'report-id', 'policies']);
  assert.equal(r['organization-name'], 'Contoso Ltd');
  assert.deepEqual(r['date-range'], {
    'start-datetime': '2026-03-04T00:00:00Z',
    'end-datetime': '2026-03-04T23:59:59Z',
  });
  assert.equal(r['contact-info'], 'postmaster@contoso.test');
  assert.equal(r['report-id'], 'rid-1');
  assert.equal(r.policies.length, 2, 'one entry per policy');
  const [none, sts] = r.policies;
  assert.deepEqual(none, {
    policy: { 'policy-type': 'no-policy-found', 'policy-domain': 'dest.test' },
    summary: { 'total-successful-session-count': 7, 'total-failure-session-count': 2 },
    'failure-details': [
      {
        'result-type': 'starttls-not-supported',
        'sending-mta-ip': '127.0.0.1',
        'receiving-mx-hostname': 'mx2.dest.test',
        'receiving-ip': '127.0.0.62',
        'failed-session-count': 2,
        'failure-reason-code': 'the server did not offer STARTTLS (starttls-not-offered)',
      },
    ],
  });
  assert.deepEqual(sts, {
    policy: {
      'policy-type': 'sts',
      'policy-string': ['version: STSv1', 'mode: enforce', 'mx: *.dest.test', 'max_age: 86400'],
      'policy-domain': 'dest.test',
      'mx-host': ['*.dest.test'],
    },
    summary: { 'total-successful-session-count': 3, 'total-failure-session-count': 0 },
  });
  assert.equal(reportProblem(r), undefined, 'what we send passes our own validation');
  assert.match(
    buildReport({ day, domain: 'dest.test', rows, organizationName: 'o', contactInfo: 'c' })['report-id'],
    /^[0-9a-f-]{36}$/,
  );
});

test('the report mail: multipart/report tlsrpt, the RFC headers and subject, application/tlsrpt+gzip named per §5.1', () => {
  const report = buildReport({
    day,
    domain: 'dest.test',
    rows,
    organizationName: 'Contoso',
    contactInfo: 'c@contoso.test',
    reportId: 'rid-2',
  });
  const gz = gzipReport(report);
  const { data } = reportMail({
    submitter: 'mx1.contoso.test',
    from: 'noreply-tlsrpt@mx1.contoso.test',
    to: 'tlsrpt@dest.test',
    domain: 'dest.test',
    report,
    gz,
  });
  const text = data.toString();
  const [head] = text.split('\r\n\r\n');
  assert.match(head, /^Subject: Report Domain: dest\.test Submitter: mx1\.contoso\.test Report-ID: <rid-2>$/m);
  assert.match(head, /^TLS-Report-Domain: dest\.test$/m);
  assert.match(head, /^TLS-Report-Submitter: mx1\.contoso\.test$/m);
  assert.match(head, /^TLS-Required: No$/m);
  assert.match(head, /^Content-Type: multipart\/report; report-type="tlsrpt"; boundary="/m);
  assert.match(text, /\r\nContent-Type: application\/tlsrpt\+gzip\r\n/);
  const begin = Date.UTC(2026, 2, 4) / 1000;
  assert.equal(
    reportFileName('mx1.contoso.test', report, 'dest.test'),
    `mx1.contoso.test!dest.test!${begin}!${begin + 86399}!rid-2.json.gz`,
  );
  assert.match(
    text,
    new RegExp(`filename="mx1\\.contoso\\.test!dest\\.test!${begin}!${begin + 86399}!rid-2\\.json\\.gz"`),
  );
  assert.ok(text.split('\r\n').every((l) => l.length <= 998));
  const back = readReportMail(data, { receivedAt: 1, queueId: 'Q', mailFrom: '' });
  assert.equal(back.problem, undefined);
  assert.deepEqual(JSON.parse(back.content), report);
  assert.equal(back.organization, 'Contoso');
  assert.equal(back.reportId, 'rid-2');
  assert.deepEqual(JSON.parse(gunzipSync(gz).toString()), report);
});

const mail = (type: string, body: string, cte = '') =>
  Buffer.from(
    `From: <r@x.test>\r\nSubject: s\r\nContent-Type: ${type}\r\n${cte ? `Content-Transfer-Encoding: ${cte}\r\n` : ''}\r\n${body}\r\n`,
  );

test('reading reports: plain JSON parts too; bad reports come back flagged with what could be read, never a throw', () => {
  const report = buildReport({
    day,
    domain: 'dest.test',
    rows,
    organizationName: 'Org',
    contactInfo: 'c',
    reportId: 'r3',
  });
  const meta = { receivedAt: 1, queueId: 'Q', mailFrom: 'r@x.test' };
  assert.equal(readReportMail(mail('application/tlsrpt+json', JSON.stringify(report)), meta).problem, undefined);
  const b64 = gzipSync(Buffer.from(JSON.stringify(report))).toString('base64');
  assert.equal(readReportMail(mail('application/tlsrpt+gzip', b64, 'base64'), meta).problem, undefined);
  assert.match(readReportMail(mail('text/plain', 'hello'), meta).problem!, /no report part/);
  assert.match(
    readReportMail(mail('application/tlsrpt+gzip', Buffer.from('not gzip').toString('base64'), 'base64'), meta)
      .problem!,
    /not gzip data/,
  );
  assert.match(readReportMail(mail('application/tlsrpt+json', '{"organization-name": '), meta).problem!, /^not JSON/);
  const noCounts = {
    ...report,
    policies: [
      {
        policy: report.policies[0].policy,
        summary: { 'total-successful-session-count': -1, 'total-failure-session-count': 0 },
      },
    ],
  };
  const flagged = readReportMail(mail('application/tlsrpt+json', JSON.stringify(noCounts)), meta);
  assert.match(flagged.problem!, /summary needs both session counts/);
  assert.equal(flagged.organization, 'Org', 'the reporter is named even for a bad report');
  assert.ok(flagged.content.length > 0, 'the content is kept');
  const bomb = gzipSync(Buffer.alloc(MAX_JSON + 1, 32)).toString('base64');
  assert.match(readReportMail(mail('application/tlsrpt+gzip', bomb, 'base64'), meta).problem!, /larger than/);
  for (const junk of [
    Buffer.alloc(0),
    Buffer.from('\r\n\r\n'),
    Buffer.from('Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n--x--'),
    Buffer.from([0xff, 0x00, 0x1f, 0x8b]),
  ]) {
    assert.ok(readReportMail(junk, meta).problem);
  }
  assert.match(reportProblem({ ...report, 'date-range': { 'start-datetime': 'yesterday' } })!, /date-range/);
  assert.match(
    reportProblem({ ...report, policies: [{ policy: { 'policy-type': 'dane', 'policy-domain': 'x' } }] })!,
    /policy-type/,
  );
});

test('received reports summed per reporting organisation and policy domain, bad ones left out', () => {
  const r1 = buildReport({
    day,
    domain: 'contoso.test',
    rows: rows.slice(0, 2).map((r) => ({ ...r, policyDomain: 'contoso.test' })),
    organizationName: 'Fabrikam',
    contactInfo: 'c',
    reportId: 'a',
  });
  const r2 = buildReport({
    day: '2026-03-05',
    domain: 'contoso.test',
    rows: rows.slice(0, 2).map((r) => ({ ...r, policyDomain: 'contoso.test' })),
    organizationName: 'Fabrikam',
    contactInfo: 'c',
    reportId: 'b',
  });
  const meta = { receivedAt: 1, queueId: 'Q', mailFrom: '' };
  const s = summarize([
    { ...meta, content: JSON.stringify(r1) },
    { ...meta, content: JSON.stringify(r2) },
    { ...meta, content: 'x', problem: 'bad' },
  ]);
  assert.deepEqual(s, [
    {
      organization: 'Fabrikam',
      policyDomain: 'contoso.test',
      policyType: 'no-policy-found',
      reports: 2,
      successful: 14,
      failed: 4,
      failures: { 'starttls-not-supported': 4 },
    },
  ]);
});

test('dayStart takes real UTC days only', () => {
  assert.equal(dayStart('2026-03-04'), Date.UTC(2026, 2, 4));
  for (const d of ['2026-02-30', '2026-3-4', 'yesterday', '2026-03-04T00:00:00Z'])
    assert.equal(dayStart(d), undefined, d);
});
