// Owns: TLS-RPT sending (RFC 8460): counting the sessions delivery reports (per policy domain and
// UTC day, in the store), and sending a day's aggregate reports: `_smtp._tls.<domain>` looked up
// through the configured resolver, then each rua: `mailto:` queued as a mail through our own
// queue (ingest), `https:` POSTed as application/tlsrpt+gzip (certificate validated against
// tls.trust, host resolved through dns.servers, no redirects, bounded in time).
// Promises: counting never throws into delivery (a failed write is logged); a domain whose
// record cannot be looked up (a DNS failure, not "no record") is not marked sent, so the next
// run tries again; every destination's result is recorded with the report. The daily pass sends
// each domain's report once for the whole cluster (a claim in the store); `tlsrpt send` sends
// when asked.
import https from 'node:https';
import net from 'node:net';
import type { Config } from '../config/load.ts';
import { DnsError, type Resolver } from '../dns/types.ts';
import { emit } from '../events.ts';
import type { Ingest } from '../ingest/ingest.ts';
import type { TlsSessionReport } from '../delivery/remote.ts';
import type { Store, TlsReportSent } from '../store/types.ts';
import type { TrustStore } from '../tls/trust.ts';
import { buildReport, gzipReport, parseTlsRptRecord, reportMail, utcDay, type TlsRptReport } from './report.ts';
import { errorDetail, errorMessage } from '../util/errors.ts';

/** organization-name and contact-info as configured, or their defaults. */
export function reporter(c: Config): { organizationName: string; contactInfo: string } {
  return {
    organizationName: c.tlsRpt.organizationName ?? c.hostname,
    contactInfo: c.tlsRpt.contactInfo ?? `postmaster@${c.hostname}`,
  };
}

/** Feeds the store's counters from delivery (RemoteOptions.onTlsSession). */
export function sessionCounter(
  store: () => Store,
  config: () => Config,
  now: () => number = Date.now,
): (s: TlsSessionReport) => void {
  return (s) => {
    if (!config().tlsRpt.enabled) return;
    const { policyDomain, policy, resultType, sendingIp, mxHost, mxIp, reason } = s;
    const row = resultType
      ? {
          day: utcDay(now()),
          policyDomain,
          policy,
          resultType,
          mxHost,
          mxIp,
          count: 1,
          ...(sendingIp ? { sendingIp } : {}),
          ...(reason ? { reason } : {}),
        }
      : { day: utcDay(now()), policyDomain, policy, count: 1 };
    store()
      .countTlsSessions([row])
      .catch((e: unknown) => emit({ event: 'internal.error', where: 'tlsrpt.count', error: errorMessage(e) }));
  };
}

export interface SenderDeps {
  store: Store;
  resolver: () => Resolver;
  config: () => Config;
  trust: () => TrustStore;
  ingest: Ingest;
  /** Route of a mailto address: local when its domain is an authoritative accepted domain. */
  /** Where a report mailed to `address` goes (InboundPolicy.destination). */
  destination: (address: string) => { address: string; route: 'local' | 'remote'; org?: string };
  /** HTTPS POST time limit (ms). */
  timeoutMs?: number;
}

/** What happened to one domain's report. */
export interface DomainResult {
  domain: string;
  /** Sent (or attempted): the record kept in the store. */
  sent?: TlsReportSent;
  /** Why nothing was sent (no record, DNS failure, already sent). */
  skipped?: string;
  /** The report that was (or would have been) sent. */
  report?: TlsRptReport;
}

const MAX_HTTP_ANSWER = 64 * 1024;
/** The daily pass claims each domain's report (store memory of this kind) for at most this long. */
const CLAIM_KIND = 'tlsrptSending';
const CLAIM_MS = 15 * 60_000;

export class TlsReportSender {
  constructor(private readonly d: SenderDeps) {}

  /** Send the reports of `day` (YYYY-MM-DD); with `unsentOnly`, skip domains already reported. */
  async sendDay(day: string, o: { unsentOnly?: boolean } = {}): Promise<DomainResult[]> {
    const rows = await this.d.store.tlsSessions(day);
    const done = new Set(o.unsentOnly ? (await this.d.store.tlsReportsSent(day)).map((r) => r.policyDomain) : []);
    const domains = [...new Set(rows.map((r) => r.policyDomain))].sort();
    const out: DomainResult[] = [];
    for (const domain of domains) {
      if (done.has(domain)) {
        out.push({ domain, skipped: 'already sent' });
        continue;
      }
      const send = () =>
        this.sendDomain(
          day,
          domain,
          rows.filter((r) => r.policyDomain === domain),
        );
      out.push(o.unsentOnly ? await this.once(day, domain, send) : await send());
    }
    return out;
  }

  /**
   * The daily pass of every node: the domain's report is claimed in the store first, so only one
   * node of the cluster sends it. A claim not followed by a record (lookup failed, will retry) is
   * given back; one whose node died runs out after CLAIM_MS.
   */
  private async once(day: string, domain: string, send: () => Promise<DomainResult>): Promise<DomainResult> {
    const key = `${day} ${domain}`;
    if (!(await this.d.store.memoryClaim(CLAIM_KIND, key, true, Date.now() + CLAIM_MS)))
      return { domain, skipped: 'being sent by another node' };
    const sent = async () => (await this.d.store.tlsReportsSent(day)).some((r) => r.policyDomain === domain);
    // Sent meanwhile (this pass read the list earlier) by a node whose claim has run out since.
    if (await sent()) return { domain, skipped: 'already sent' };
    const r = await send();
    if (!(await sent())) await this.d.store.memoryDelete(CLAIM_KIND, key);
    return r;
  }

  private async sendDomain(
    day: string,
    domain: string,
    rows: Parameters<typeof buildReport>[0]['rows'],
  ): Promise<DomainResult> {
    const c = this.d.config();
    const report = buildReport({ day, domain, rows, ...reporter(c) });
    let txts: string[];
    try {
      txts = (await this.d.resolver().txt(`_smtp._tls.${domain}`)).records;
    } catch (e) {
      if (e instanceof DnsError && !e.temporary)
        return this.nowhere(day, domain, report, `no TLS-RPT record (_smtp._tls.${domain}: ${e.kind})`);
      return { domain, report, skipped: `lookup of _smtp._tls.${domain} failed, will retry: ${errorMessage(e)}` };
    }
    const rec = parseTlsRptRecord(txts);
    if (!rec.rua.length) return this.nowhere(day, domain, report, `no TLS-RPT destination: ${rec.problem}`);
    const gz = gzipReport(report);
    const destinations: TlsReportSent['destinations'] = [];
    for (const uri of rec.rua) {
      try {
        destinations.push({
          uri,
          ok: true,
          detail: uri.toLowerCase().startsWith('mailto:')
            ? await this.mail(uri, domain, report, gz)
            : await this.post(uri, gz),
        });
      } catch (e) {
        destinations.push({ uri, ok: false, detail: errorMessage(e) });
      }
    }
    const sent: TlsReportSent = {
      day,
      policyDomain: domain,
      reportId: report['report-id'],
      at: Date.now(),
      destinations,
    };
    await this.d.store.tlsReportSent(sent);
    emit({
      event: 'tlsrpt.sent',
      day,
      domain,
      reportId: sent.reportId,
      destinations: destinations.map((x) => `${x.uri}: ${x.ok ? '' : 'FAILED '}${x.detail}`),
    });
    return { domain, sent, report };
  }

  /** The domain publishes no destination: recorded (no destinations) so the daily run does not ask again. */
  private async nowhere(day: string, domain: string, report: TlsRptReport, why: string): Promise<DomainResult> {
    await this.d.store.tlsReportSent({
      day,
      policyDomain: domain,
      reportId: report['report-id'],
      at: Date.now(),
      destinations: [],
    });
    return { domain, report, skipped: why };
  }

  private async mail(uri: string, domain: string, report: TlsRptReport, gz: Buffer): Promise<string> {
    const c = this.d.config();
    const to = decodeURIComponent(uri.slice('mailto:'.length).split('?')[0]);
    const m = reportMail({ submitter: c.hostname, from: `noreply-tlsrpt@${c.hostname}`, to, domain, report, gz });
    const id = await this.d.ingest.generated({
      org: c.organizations[0].name,
      to: this.d.destination(to),
      data: m.data,
      messageId: m.messageId,
      host: c.hostname,
      regarding: `${domain} ${report['date-range']['start-datetime'].slice(0, 10)}`,
      source: 'tlsrpt',
      envelope: { tlsReport: true, tlsRequiredNo: true },
    });
    return `queued as ${id}`;
  }

  /** RFC 8460 §5.4: POST the gzipped report; 2xx is success. */
  private post(uri: string, gz: Buffer): Promise<string> {
    const u = new URL(uri);
    const timeoutMs = this.d.timeoutMs ?? 30_000;
    const lookup: net.LookupFunction = (host, opts, cb) => {
      const done = cb as unknown as (
        e: Error | null,
        a: string | { address: string; family: number }[],
        f?: number,
      ) => void;
      if (net.isIP(host)) {
        done(
          null,
          (opts as { all?: boolean }).all ? [{ address: host, family: net.isIP(host) }] : host,
          net.isIP(host),
        );
        return;
      }
      this.d
        .resolver()
        .addresses(host)
        .then(
          (r) => {
            if ((opts as { all?: boolean }).all)
              done(
                null,
                r.records.map((x) => ({ address: x, family: net.isIP(x) })),
              );
            else done(null, r.records[0], net.isIP(r.records[0]));
          },
          (e: Error) => done(e, '', 4),
        );
    };
    return new Promise((resolve, reject) => {
      const req = https.request(
        u,
        {
          method: 'POST',
          lookup,
          agent: false,
          timeout: timeoutMs,
          ca: this.d.trust().roots.map((x) => x.toString()),
          headers: { 'content-type': 'application/tlsrpt+gzip', 'content-length': gz.length },
        },
        (res) => {
          let n = 0;
          res.on('data', (b: Buffer) => {
            n += b.length;
            if (n > MAX_HTTP_ANSWER) req.destroy(new Error('answer too large'));
          });
          res.on('end', () => {
            const code = res.statusCode ?? 0;
            if (code >= 200 && code < 300) resolve(`HTTP ${code}`);
            else reject(new Error(`HTTP ${code}${code >= 300 && code < 400 ? ' (redirects are not followed)' : ''}`));
          });
          res.on('error', reject);
        },
      );
      const deadline = setTimeout(() => req.destroy(new Error(`no complete answer within ${timeoutMs} ms`)), timeoutMs);
      req.on('close', () => clearTimeout(deadline));
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on('error', (e: NodeJS.ErrnoException) => reject(new Error(e.code ? `${e.code} ${e.message}` : e.message)));
      req.end(gz);
    });
  }
}

/** Once a day, shortly after midnight UTC, the previous day's reports (only the unsent ones). */
export class DailyReports {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly sender: () => TlsReportSender,
    private readonly enabled: () => boolean,
    private readonly everyMs = 3_600_000,
  ) {}

  start(firstMs = 60_000): void {
    const tick = () => {
      if (this.enabled()) {
        const day = utcDay(Date.now() - 86_400_000);
        this.running = this.sender()
          .sendDay(day, { unsentOnly: true })
          .catch((e: unknown) => emit({ event: 'internal.error', where: 'tlsrpt.daily', error: errorDetail(e) }));
      }
      this.timer = setTimeout(tick, this.everyMs);
      this.timer.unref();
    };
    this.timer = setTimeout(tick, firstMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearTimeout(this.timer);
    await this.running;
  }
}
