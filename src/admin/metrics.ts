// Owns: the Prometheus metrics of the gateway (`/metrics` of the admin centre), fed by the typed
// event catalogue (events.ts onEvent) — the one instrumentation path, shared with the log — plus
// the queue depth read from the store at scrape time and Node's process metrics.
// Promise: label values come from closed vocabularies (TLS versions, levels, failure kinds, reply
// codes, DNS record types, MTA-STS result types, organisation names), never from what a peer sends, so the number of
// series stays bounded.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { onEvent, type Event } from '../events.ts';
import type { Store } from '../store/types.ts';

const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Reply codes and enhanced codes as they are; anything else (never expected) as "other". */
const code = (v: unknown, re: RegExp) =>
  (typeof v === 'string' || typeof v === 'number') && re.test(String(v)) ? String(v) : 'other';

export class GatewayMetrics {
  readonly registry = new Registry();
  private unsubscribe: (() => void) | undefined;
  private readonly accepted;
  private readonly rejected;
  private readonly sessions;
  private readonly sessionsRefused;
  private readonly deliveries;
  private readonly tlsFailures;
  private readonly dns;
  private readonly revocation;
  private readonly mtaSts;
  private readonly reloads;

  constructor(store: () => Store) {
    const registers = [this.registry];
    this.accepted = new Counter({
      name: 'portcullis_messages_accepted_total',
      help: 'Messages accepted (250 after the commit), by organisation.',
      labelNames: ['org'],
      registers,
    });
    this.rejected = new Counter({
      name: 'portcullis_messages_rejected_total',
      help: 'MAIL, RCPT and DATA refusals, by reply code and enhanced status code.',
      labelNames: ['code', 'enhanced'],
      registers,
    });
    this.sessions = new Counter({
      name: 'portcullis_sessions_total',
      help: 'Inbound SMTP sessions ended, by the TLS version they used ("none": plaintext).',
      labelNames: ['tls_version'],
      registers,
    });
    this.sessionsRefused = new Counter({
      name: 'portcullis_sessions_refused_total',
      help: 'Connections refused at admission (421: too many connections overall or from one address).',
      registers,
    });
    this.deliveries = new Counter({
      name: 'portcullis_deliveries_total',
      help:
        'Delivery outcomes per recipient, by outcome, agent (smtp, maildir, admin) and the TLS level achieved ' +
        '(smtp; "none": plaintext, "local": a mailbox).',
      labelNames: ['outcome', 'agent', 'tls_level'],
      registers,
    });
    this.tlsFailures = new Counter({
      name: 'portcullis_tls_handshake_failures_total',
      help:
        'TLS failures by direction and kind (tls/failures.ts): inbound handshakes that failed; outbound, per ' +
        'recipient attempt, what failed or made opportunistic TLS step down.',
      labelNames: ['direction', 'reason'],
      registers,
    });
    this.dns = new Histogram({
      name: 'portcullis_dns_query_duration_seconds',
      help: 'DNS queries sent to dns.servers (cache misses), by record type and outcome.',
      labelNames: ['qtype', 'outcome'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.revocation = new Histogram({
      name: 'portcullis_revocation_fetch_duration_seconds',
      help: 'OCSP, CRL and CA-issuer fetches, by kind and outcome.',
      labelNames: ['kind', 'outcome'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.mtaSts = new Histogram({
      name: 'portcullis_mtasts_fetch_duration_seconds',
      help: 'MTA-STS policy fetches (HTTPS), by outcome: ok or the RFC 8460 result type of the failure.',
      labelNames: ['outcome'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.reloads = new Counter({
      name: 'portcullis_config_reloads_total',
      help: 'Configuration reloads, by result.',
      labelNames: ['result'],
      registers,
    });
    new Gauge({
      name: 'portcullis_queue_messages',
      help: 'Messages in the queue now, by state.',
      labelNames: ['state'],
      registers,
      async collect() {
        const depth = await store().depth();
        for (const [state, n] of Object.entries(depth)) this.set({ state }, n);
      },
    });
    collectDefaultMetrics({ register: this.registry });
  }

  start(): void {
    this.unsubscribe = onEvent((e) => this.observe(e));
  }
  stop(): void {
    this.unsubscribe?.();
  }

  observe(e: Event): void {
    switch (e.event) {
      case 'message.accepted':
        this.accepted.inc({ org: e.org });
        return;
      case 'message.rejected':
        this.rejected.inc({
          code: code(e.code, /^[2-5]\d\d$/),
          enhanced: code(e.enhanced, /^[245]\.\d{1,3}\.\d{1,3}$/),
        });
        return;
      case 'session.end':
        this.sessions.inc({ tls_version: e.tls?.version ?? 'none' });
        return;
      case 'session.rejected':
        this.sessionsRefused.inc();
        return;
      case 'session.tlsFailed':
        this.tlsFailures.inc({ direction: 'inbound', reason: e.kind ?? 'handshake-failed' });
        return;
      case 'delivery.result':
        if (e.agent === 'dsn' || e.agent === 'bounce') return; // notices about deliveries, not deliveries
        this.deliveries.inc({
          outcome: e.status,
          agent: e.agent,
          tls_level: e.agent === 'smtp' ? (e.tlsAchieved ?? 'none') : 'local',
        });
        if (e.agent === 'smtp' && e.tlsFailure) this.tlsFailures.inc({ direction: 'outbound', reason: e.tlsFailure });
        return;
      case 'dns.query':
        this.dns.observe({ qtype: e.qtype, outcome: e.outcome }, e.ms / 1000);
        return;
      case 'revocation.fetch':
        this.revocation.observe({ kind: e.kind, outcome: e.outcome }, e.ms / 1000);
        return;
      case 'mtasts.fetch':
        this.mtaSts.observe({ outcome: e.outcome }, e.ms / 1000);
        return;
      case 'config.reloaded':
        this.reloads.inc({ result: 'ok' });
        return;
      case 'config.rejected':
        this.reloads.inc({ result: 'refused' });
        return;
      default:
    }
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
  get contentType(): string {
    return this.registry.contentType;
  }
}
