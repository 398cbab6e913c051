// TLS-RPT (RFC 8460) end to end: the gateway delivers to an MX with STARTTLS and to one without;
// the sessions are counted per policy domain and UTC day; `portcullis tlsrpt send` looks up
// `_smtp._tls` through the test DNS server and delivers the aggregate report to a mailto sink
// (through the gateway's own queue: a multipart/report with the gzipped JSON) and to an https
// collector (POST application/tlsrpt+gzip, certificate validated against tls.trust). The JSON is
// checked field by field, and its counts equal the sessions the peers saw. Reports sent to
// tlsRpt.receive are parsed and shown by `tlsrpt received`; a bad one is kept and flagged.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import https from 'node:https';
import { readFileSync, rmSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { cleanup, freePort, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { makePki, type Pki } from '../helpers/pki.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { until } from '../helpers/wait.ts';

const IP = { tls: '127.0.0.61', plain: '127.0.0.62', sink: '127.0.0.63', collector: '127.0.0.64' } as const;
const TODAY = new Date().toISOString().slice(0, 10);

let dir: string;
let pki: Pki;
let gw: GatewayHandle;
let dns: DnsServer;
let port: number;
let httpsPort: number;
let tlsPeer: Peer;
let plainPeer: Peer;
let sink: Peer;
let collector: https.Server;
const posts: { type?: string; path?: string; body: Buffer }[] = [];

async function relay(to: string, subject: string): Promise<void> {
  const c = await SmtpClient.connect(gw.port);
  try {
    await c.hello();
    const r = await c.send(
      'alice@contoso.test',
      [to],
      `From: <alice@contoso.test>\r\nTo: <${to}>\r\nSubject: ${subject}\r\n\r\nbody\r\n`,
    );
    assert.equal(r.code, 250, r.text);
  } finally {
    c.close();
  }
}

const delivered = (status?: string) =>
  gw.events().filter((e) => e.event === 'delivery.result' && e.agent === 'smtp' && (!status || e.status === status));

before(async () => {
  dir = tempDir('pc-tlsrpt-');
  port = await freePort();
  httpsPort = await freePort(IP.collector);
  pki = await makePki(dir, 'Rpt');
  const mx = await pki.issue('mx.dest.test');
  const col = await pki.issue('collector.reports.test');
  const tlsOf = (c: { chain: string; key: string }) => ({
    cert: readFileSync(c.chain, 'utf8'),
    key: readFileSync(c.key, 'utf8'),
  });
  dns = await startDnsServer({
    'dest.test': { MX: [{ exchange: 'mx.dest.test', priority: 10 }] },
    'mx.dest.test': { A: [IP.tls] },
    '_smtp._tls.dest.test': {
      TXT: [`v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,https://collector.reports.test:${httpsPort}/v1/tlsrpt`],
    },
    'plain.test': { MX: [{ exchange: 'mx.plain.test', priority: 10 }] },
    'mx.plain.test': { A: [IP.plain] },
    '_smtp._tls.plain.test': { TXT: ['v=spf1 -all', 'v=TLSRPTv1; rua=mailto:tlsrpt@reports.test'] },
    'reports.test': { MX: [{ exchange: 'mx.reports.test', priority: 10 }] },
    'mx.reports.test': { A: [IP.sink] },
    'collector.reports.test': { A: [IP.collector] },
  });
  tlsPeer = await startPeer({ host: IP.tls, port, name: 'mx.dest.test', tls: tlsOf(mx) });
  plainPeer = await startPeer({ host: IP.plain, port, name: 'mx.plain.test' });
  sink = await startPeer({ host: IP.sink, port, name: 'mx.reports.test', tls: tlsOf(mx) });
  collector = https.createServer(tlsOf(col), (req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      posts.push({ type: req.headers['content-type'], path: req.url, body: Buffer.concat(parts) });
      res.writeHead(201).end('thanks');
    });
  });
  await new Promise<void>((r) => collector.listen(httpsPort, IP.collector, () => r()));
  gw = await startGateway({
    dir,
    config: {
      dns: { servers: [dns.server] },
      delivery: {
        port,
        timeouts: { connect: 3, greeting: 10, command: 10 },
        destinationDownSeconds: 0,
        connectionReuse: { idleSeconds: 0 },
      },
      tls: { trust: { system: false, caFiles: [pki.rootFile] } },
      queue: { retrySchedule: [1], delayWarning: 0 },
      tlsRpt: {
        organizationName: 'Contoso Test',
        contactInfo: 'tls-admin@contoso.test',
        receive: ['tlsrpt@contoso.test'],
      },
      organizations: [
        {
          name: 'contoso',
          acceptedDomains: [{ domain: 'contoso.test', type: 'authoritative', recipients: 'any' }],
          inboundConnectors: [
            { name: 'Local submission', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] },
          ],
        },
      ],
    },
  });
});

after(async () => {
  await cleanup(gw);
  await Promise.all([tlsPeer, plainPeer, sink].map((p) => p?.close()));
  await new Promise((r) => collector?.close(r));
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

interface Report {
  'organization-name': string;
  'date-range': Record<string, string>;
  'contact-info': string;
  'report-id': string;
  policies: {
    policy: Record<string, unknown>;
    summary: Record<string, number>;
    'failure-details'?: Record<string, unknown>[];
  }[];
}

/** The gzipped report attached to a mail the sink received, and the mail's header. */
function attached(data: string): { head: string; report: Report; filename: string } {
  const head = data.slice(0, data.indexOf('\r\n\r\n'));
  const m =
    /Content-Type: application\/tlsrpt\+gzip\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="([^"]+)"\r\n\r\n([A-Za-z0-9+/=\r\n]+)\r\n--/.exec(
      data,
    );
  assert.ok(m, 'an application/tlsrpt+gzip attachment');
  return {
    head,
    filename: m[1],
    report: JSON.parse(gunzipSync(Buffer.from(m[2].replace(/\r\n/g, ''), 'base64')).toString()),
  };
}

test('sessions are counted and reported per domain: JSON field by field, counts equal to the sessions the peers saw, to a mailto sink and an https collector', async () => {
  for (let i = 0; i < 3; i++) await relay(`u${i}@dest.test`, `tls-${i}`);
  for (let i = 0; i < 2; i++) await relay(`u${i}@plain.test`, `plain-${i}`);
  await until('5 deliveries', () => delivered('delivered').length >= 5 && delivered('delivered'));
  assert.equal(tlsPeer.tlsSessions, 3);
  assert.equal(plainPeer.connections, 2);

  const r = await gw.cli(['tlsrpt', 'send', '--date', TODAY, '--json']);
  assert.equal(r.code, 0, r.stderr + r.stdout);
  const out = JSON.parse(r.stdout) as {
    day: string;
    domains: {
      domain: string;
      reportId?: string;
      destinations?: { uri: string; ok: boolean; detail: string }[];
      report: Report;
    }[];
  };
  assert.equal(out.day, TODAY);
  assert.deepEqual(
    out.domains.map((d) => d.domain),
    ['dest.test', 'plain.test'],
  );
  const [dest, plain] = out.domains;
  assert.deepEqual(
    dest.destinations!.map((d) => [d.uri, d.ok]),
    [
      ['mailto:tlsrpt@reports.test', true],
      [`https://collector.reports.test:${httpsPort}/v1/tlsrpt`, true],
    ],
  );
  assert.match(dest.destinations![0].detail, /^queued as \w+$/);
  assert.equal(dest.destinations![1].detail, 'HTTP 201');

  // The https collector got the same report, gzipped, as application/tlsrpt+gzip.
  assert.equal(posts.length, 1);
  assert.equal(posts[0].type, 'application/tlsrpt+gzip');
  assert.equal(posts[0].path, '/v1/tlsrpt');
  const posted = JSON.parse(gunzipSync(posts[0].body).toString()) as Report;
  assert.deepEqual(posted, dest.report);

  // Field by field (RFC 8460 §4.4).
  for (const rep of [posted, plain.report]) {
    assert.deepEqual(Object.keys(rep), ['organization-name', 'date-range', 'contact-info', 'report-id', 'policies']);
    assert.equal(rep['organization-name'], 'Contoso Test');
    assert.equal(rep['contact-info'], 'tls-admin@contoso.test');
    assert.deepEqual(rep['date-range'], {
      'start-datetime': `${TODAY}T00:00:00Z`,
      'end-datetime': `${TODAY}T23:59:59Z`,
    });
    assert.match(rep['report-id'], /^[0-9a-f-]{36}$/);
  }
  assert.notEqual(posted['report-id'], plain.report['report-id']);
  assert.deepEqual(posted.policies, [
    {
      policy: { 'policy-type': 'no-policy-found', 'policy-domain': 'dest.test' },
      summary: { 'total-successful-session-count': tlsPeer.tlsSessions, 'total-failure-session-count': 0 },
    },
  ]);
  assert.deepEqual(plain.report.policies, [
    {
      policy: { 'policy-type': 'no-policy-found', 'policy-domain': 'plain.test' },
      summary: { 'total-successful-session-count': 0, 'total-failure-session-count': plainPeer.connections },
      'failure-details': [
        {
          'result-type': 'starttls-not-supported',
          'sending-mta-ip': '127.0.0.1',
          'receiving-mx-hostname': 'mx.plain.test',
          'receiving-ip': IP.plain,
          'failed-session-count': plainPeer.connections,
          'failure-reason-code': 'the server did not offer STARTTLS (starttls-not-offered)',
        },
      ],
    },
  ]);

  // The mailto reports went through our queue to the MX of reports.test.
  const mails = await until('two report mails at the sink', () => sink.messages.length >= 2 && sink.messages);
  const domainOf = (g: { report: Report }) => String(g.report.policies[0].policy['policy-domain']);
  const got = mails.map((m) => attached(m.data)).sort((a, b) => domainOf(a).localeCompare(domainOf(b)));
  assert.deepEqual(
    got.map((g) => g.report),
    [dest.report, plain.report],
  );
  const { head, filename, report } = got[0];
  assert.match(
    head,
    new RegExp(
      `^Subject: Report Domain: dest\\.test Submitter: mx1\\.contoso\\.test Report-ID: <${report['report-id']}>$`,
      'm',
    ),
  );
  assert.match(head, /^TLS-Report-Domain: dest\.test$/m);
  assert.match(head, /^TLS-Report-Submitter: mx1\.contoso\.test$/m);
  assert.match(head, /^Content-Type: multipart\/report; report-type="tlsrpt"; boundary=/m);
  const begin = Date.parse(`${TODAY}T00:00:00Z`) / 1000;
  assert.equal(filename, `mx1.contoso.test!dest.test!${begin}!${begin + 86399}!${report['report-id']}.json.gz`);
  assert.equal(mails[0].to[0], 'tlsrpt@reports.test');
  assert.equal(mails[0].from, '', 'null sender: a report never bounces back into a loop');

  // Report deliveries are not sessions of the next report (RFC 8460 §5.3).
  const again = JSON.parse((await gw.cli(['tlsrpt', 'send', '--date', TODAY, '--json'])).stdout) as typeof out;
  assert.deepEqual(
    again.domains.map((d) => d.domain),
    ['dest.test', 'plain.test'],
  );
  assert.equal(again.domains[0].report.policies[0].summary['total-successful-session-count'], tlsPeer.tlsSessions);
});

test('tlsrpt send: a bad date is refused with the fix; a day without sessions has nothing to report', async () => {
  const bad = await gw.cli(['tlsrpt', 'send', '--date', '2026-02-30']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--date 2026-02-30 is not a date/);
  assert.match(bad.stderr, /fix: give a UTC day as YYYY-MM-DD/);
  const none = await gw.cli(['tlsrpt', 'send', '--date', '2001-01-01']);
  assert.equal(none.code, 0, none.stderr);
  assert.match(none.stdout, /no TLS sessions counted on 2001-01-01: nothing to report/);
});

test('reports sent to tlsRpt.receive are stored and summed per organisation and domain; a bad one is kept and flagged; none reaches a mailbox', async () => {
  await until('a report at the sink', () => sink.messages.length >= 1);
  const good = sink.messages[0].data;
  const badMail =
    'From: <r@fabrikam.test>\r\nSubject: broken report\r\nMIME-Version: 1.0\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\n\r\nbm90IGd6aXA=\r\n';
  for (const body of [good, good, badMail]) {
    const c = await SmtpClient.connect(gw.port);
    try {
      await c.hello();
      const r = await c.send('reports@fabrikam.test', ['tlsrpt@contoso.test'], body);
      assert.equal(r.code, 250, r.text);
    } finally {
      c.close();
    }
  }
  await until('three reports taken', () => gw.events().filter((e) => e.event === 'tlsrpt.received').length >= 3);
  const r = await gw.cli(['tlsrpt', 'received', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as {
    reports: number;
    summary: Record<string, unknown>[];
    flagged: { problem: string; from: string }[];
  };
  assert.equal(out.reports, 3);
  const rep = attached(good).report;
  const domain = rep.policies[0].policy['policy-domain'] as string;
  const s = rep.policies[0].summary;
  const failures = Object.fromEntries(
    (rep.policies[0]['failure-details'] ?? []).map((f) => [
      f['result-type'],
      2 * (f['failed-session-count'] as number),
    ]),
  );
  assert.deepEqual(out.summary, [
    {
      organization: 'Contoso Test',
      policyDomain: domain,
      policyType: 'no-policy-found',
      reports: 2,
      successful: 2 * s['total-successful-session-count'],
      failed: 2 * s['total-failure-session-count'],
      failures,
    },
  ]);
  assert.equal(out.flagged.length, 1);
  assert.equal(out.flagged[0].from, 'reports@fabrikam.test');
  assert.match(out.flagged[0].problem, /application\/tlsrpt\+gzip part is not gzip data/);
  const text = await gw.cli(['tlsrpt', 'received']);
  assert.match(
    text.stdout,
    new RegExp(`^Contoso Test  ${domain.replace('.', '\\.')} \\(no-policy-found\\): 2 report\\(s\\)`, 'm'),
  );
  assert.match(
    text.stderr,
    /BAD REPORT .* from <reports@fabrikam\.test>: application\/tlsrpt\+gzip part is not gzip data/,
  );
  const results = gw.events().filter((e) => e.event === 'delivery.result' && e.agent === 'tlsrpt');
  assert.equal(results.length, 3);
  assert.ok(results.every((e) => e.status === 'delivered'));
  assert.ok(
    !gw
      .events()
      .some((e) => e.event === 'delivery.result' && e.agent === 'maildir' && e.rcpt === 'tlsrpt@contoso.test'),
    'no mailbox delivery',
  );
});
