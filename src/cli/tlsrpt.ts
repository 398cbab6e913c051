// Owns: `portcullis tlsrpt send [--date YYYY-MM-DD]` (a day's TLS-RPT aggregate reports, RFC 8460,
// to every domain that publishes a `_smtp._tls` record; mail goes through the server's queue) and
// `portcullis tlsrpt received` (reports others sent to tlsRpt.receive: per reporting organisation
// and policy domain, successes and failures by result type; bad reports flagged).
// Everything heavy is imported when the command runs.
import type { Command } from 'commander';
import { controlRequest } from '../admin/control.ts';
import { AdminError } from '../errors.ts';
import { cliConfig, cliStore, printJson, withConfig, type CommonOpts } from './context.ts';
import { say, warn } from './terminal.ts';

const yesterday = () => new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);

export function registerTlsRpt(program: Command): void {
  const t = program
    .command('tlsrpt')
    .description('SMTP TLS reporting (RFC 8460): send our reports, read the ones we received');

  withConfig(
    t
      .command('send')
      .description('send the TLS reports of a UTC day (default: yesterday) to every domain that asks for them')
      .option('--date <YYYY-MM-DD>', 'the UTC day to report')
      .option('--json', 'machine-readable output'),
  ).action(async (o: CommonOpts & { date?: string }) => {
    const c = cliConfig(o);
    const [{ dayStart }, { TlsReportSender }, { Ingest }, { DnsResolver }, { TrustStore }, { InboundPolicy }] =
      await Promise.all([
        import('../tlsrpt/report.ts'),
        import('../tlsrpt/send.ts'),
        import('../ingest/ingest.ts'),
        import('../dns/resolver.ts'),
        import('../tls/trust.ts'),
        import('../policy/inbound.ts'),
      ]);
    const day = o.date ?? yesterday();
    if (dayStart(day) === undefined)
      throw new AdminError(`--date ${day} is not a date`, 'give a UTC day as YYYY-MM-DD, e.g. --date 2026-01-31');
    if (!c.tlsRpt.enabled)
      throw new AdminError(
        'TLS reporting is off (tlsRpt.enabled: false): nothing was counted to report',
        'set tlsRpt.enabled: true (the default)',
        1,
      );
    const store = await cliStore(c, 'write');
    const inbound = new InboundPolicy(c);
    const kicked = { queued: false };
    const ingest = new Ingest(
      store,
      {
        reserve: () => undefined,
        take: () => {},
        kick: () => {
          kicked.queued = true;
        },
        unreserve: () => {},
      },
      () => c.smtp,
    );
    const sender = new TlsReportSender({
      store,
      ingest,
      config: () => c,
      resolver: () => new DnsResolver(c.dns.servers, { dnssec: c.dns.dnssec }),
      trust: () => new TrustStore(c.tls.trust.system, c.tls.trust.caFiles),
      destination: (a) => inbound.destination(a),
    });
    let results;
    try {
      results = await sender.sendDay(day);
    } finally {
      await store.close();
    }
    // Mail reports wait in the queue: ask the running server to look now (it polls anyway).
    if (kicked.queued) await controlRequest(c.dataDir, { cmd: 'kick' }).catch(() => undefined);
    const failed = results.some((r) => r.sent?.destinations.some((d) => !d.ok));
    if (failed) process.exitCode = 1;
    if (o.json)
      return printJson({
        day,
        domains: results.map((r) => ({
          domain: r.domain,
          ...(r.sent ? { reportId: r.sent.reportId, destinations: r.sent.destinations } : {}),
          ...(r.skipped ? { skipped: r.skipped } : {}),
          ...(r.report ? { report: r.report } : {}),
        })),
      });
    if (!results.length) {
      say(`no TLS sessions counted on ${day}: nothing to report`);
      return;
    }
    for (const r of results) {
      const total =
        r.report?.policies.reduce(
          (n, p) => n + p.summary['total-successful-session-count'] + p.summary['total-failure-session-count'],
          0,
        ) ?? 0;
      if (r.skipped) {
        say(`${r.domain}: not sent (${total} sessions): ${r.skipped}`);
        continue;
      }
      say(`${r.domain}: report ${r.sent!.reportId} (${total} sessions)`);
      for (const d of r.sent!.destinations)
        (d.ok ? say : warn)(`  ${d.uri}: ${d.ok ? d.detail : `FAILED: ${d.detail}`}`);
    }
  });

  withConfig(
    t
      .command('received')
      .description('TLS reports received at tlsRpt.receive: per reporting organization and policy domain')
      .option('--json', 'machine-readable output')
      .option('--limit <n>', 'read at most this many of the newest reports', '1000'),
  ).action(async (o: CommonOpts & { limit: string }) => {
    const c = cliConfig(o);
    const limit = Number(o.limit);
    if (!Number.isInteger(limit) || limit < 1)
      throw new AdminError(`--limit ${o.limit} is not a positive whole number`, 'e.g. --limit 100');
    const { summarize } = await import('../tlsrpt/receive.ts');
    const store = await cliStore(c);
    const reports = await store.receivedTlsReports(limit);
    await store.close();
    const summary = summarize(reports);
    const flagged = reports
      .filter((r) => r.problem)
      .map((r) => ({
        receivedAt: new Date(r.receivedAt).toISOString(),
        queueId: r.queueId,
        from: r.mailFrom,
        ...(r.organization ? { organization: r.organization } : {}),
        problem: r.problem!,
      }));
    if (o.json) return printJson({ reports: reports.length, summary, flagged });
    if (!reports.length) {
      say(
        c.tlsRpt.receive.length
          ? 'no TLS reports received yet'
          : 'no TLS reports received (tlsRpt.receive lists no address)',
      );
      return;
    }
    for (const s of summary) {
      const kinds = Object.entries(s.failures)
        .map(([k, n]) => `${k} ${n}`)
        .join(', ');
      say(
        `${s.organization}  ${s.policyDomain} (${s.policyType}): ${s.reports} report(s), ${s.successful} ` +
          `successful, ${s.failed} failed${kinds ? ` (${kinds})` : ''}`,
      );
    }
    for (const f of flagged)
      warn(
        `BAD REPORT ${f.receivedAt} queue id ${f.queueId} from ` +
          `<${f.from}>${f.organization ? ` (${f.organization})` : ''}: ${f.problem}`,
      );
  });
}
