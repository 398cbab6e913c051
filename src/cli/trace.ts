// Owns: `portcullis trace`: the full story of messages (inbound TLS facts with the client
// certificate's verdict and revocation status, every delivery attempt with host, TLS
// version/cipher/certificate, the TLS policy demanded vs achieved, the TLS failure kind with its
// label (tls/failures.ts), legacy TLS, the reply with its raw detail, deletion by an
// administrator), and the one renderer of trace events (`queue list|show` use it).
import type { Command } from 'commander';
import { findMessages, parseTime } from '../admin/ops/queue.ts';
import { isTlsFailureKind, rfc8460ResultType, tlsFailureLabel } from '../tls/failures.ts';
import { atLeast, type TlsLevel } from '../tls/levels.ts';
import type { QueueMessage, RecipientStatus, TraceEvent } from '../store/types.ts';
import { peerCertVerdict } from '../tls/facts.ts';
import { isoSeconds as iso } from '../util/time.ts';
import { cliConfig, cliStore, printJson, withConfig, type CommonOpts } from './context.ts';
import { say } from './terminal.ts';

interface TraceOpts extends CommonOpts {
  messageId?: string;
  queueId?: string;
  sender?: string;
  recipient?: string;
  since?: string;
  until?: string;
  limit?: string;
  org?: string;
  status?: string;
  tlsLevel?: string;
  connector?: string;
}

type Reply = { code: number; enhanced: string; message: string; reason?: string };
type AttemptData = Record<string, unknown> & { rcpt?: number; reply?: Reply };

const replyText = (r: Reply) => `${r.code} ${r.enhanced} ${r.reason ?? r.message}`;
const rcptName = (m: QueueMessage, idx: unknown) =>
  m.recipients.find((r) => r.idx === idx)?.address ?? `#${String(idx)}`;

/**
 * One line for a recipient's attempt: the connector, the host [ip]:port and the cause (the reply,
 * or our reason for it). Used by `queue list` for deferred recipients.
 */
export function attemptCause(e: TraceEvent): string {
  const d = e.data as AttemptData;
  const where =
    [
      d.connector ? `connector "${String(d.connector)}"` : '',
      d.host ? `host ${String(d.host)}${d.ip ? ` [${String(d.ip)}]:${String(d.port)}` : ''}` : '',
    ]
      .filter(Boolean)
      .join(', ') || `via ${String(d.agent)}`;
  return `${where}: ${d.reply ? replyText(d.reply) : String(d.status)}`;
}

export function describeAttempt(e: TraceEvent, m: QueueMessage): string {
  const d = e.data as AttemptData;
  const lines = [`  ${iso(e.ts)}  ${rcptName(m, d.rcpt)}: ${String(d.status).toUpperCase()} via ${String(d.agent)}`];
  if (d.host)
    lines.push(
      `      host ${String(d.host)}` +
        (d.ip ? ` [${String(d.ip)}]:${String(d.port)}` : '') +
        (d.connector ? `, connector "${String(d.connector)}"` : '') +
        (d.reused ? ', reused connection' : ''),
    );
  const req = d.tlsRequired as { level: string; source: string; tlsDomain?: string } | undefined;
  if (req)
    lines.push(
      `      TLS policy: required ${req.level} ` +
        `(${req.source}${req.tlsDomain ? `, tlsDomain ${req.tlsDomain}` : ''}), achieved ${String(d.tlsAchieved)}`,
    );
  for (const o of (d.tlsDemands as { level: string; source: string; tlsDomain?: string }[] | undefined) ?? []) {
    lines.push(`      also required: ${o.level} (${o.source}${o.tlsDomain ? `, tlsDomain ${o.tlsDomain}` : ''})`);
  }
  for (const n of (d.tlsNotes as string[] | undefined) ?? []) lines.push(`      TLS policy note: ${n}`);
  if (d.tlsProof) lines.push(`      authenticated: ${String(d.tlsProof)}`);
  const t = d.tls as
    | {
        version: string;
        cipher: string;
        bits: number;
        subject?: string;
        issuer?: string;
        fingerprint256?: string;
        chainValid: boolean;
        chainError?: string;
        resumed: boolean;
      }
    | undefined;
  if (t) {
    lines.push(
      `      TLS: ${t.version} ${t.cipher} (${t.bits} ` +
        `bits)${t.resumed ? ', resumed' : ''}${d.tlsLegacy ? ', legacy TLS' : ''}`,
    );
    if (t.subject)
      lines.push(
        `      peer certificate: ${t.subject}; issuer ${t.issuer}; SHA-256 ${t.fingerprint256}; ` +
          `${t.chainValid ? 'chain valid' : `chain NOT valid: ${t.chainError}`}`,
      );
  } else if (d.agent === 'smtp') lines.push('      TLS: none (plaintext)');
  if (isTlsFailureKind(d.tlsFailure)) {
    const forced = !!req && atLeast(req.level as TlsLevel, 'encryptionOnly');
    const what = d.tlsLegacy ? 'legacy TLS (opportunistic)' : forced ? 'TLS failure' : 'TLS not used';
    lines.push(
      `      ${what}: ${tlsFailureLabel(d.tlsFailure)} ` +
        `(${d.tlsFailure})${forced ? `, RFC 8460 result type ${rfc8460ResultType(d.tlsFailure)}` : ''}`,
    );
  }
  if (d.internal) lines.push(`      ${String(d.internal)}`);
  if (d.revocation) lines.push(`      revocation: ${String(d.revocation)}`);
  if (d.fallback) lines.push(`      note: ${String(d.fallback)}`);
  if (Array.isArray(d.tlsNotes)) for (const n of d.tlsNotes) lines.push(`      policy: ${String(n)}`);
  if (d.conversion) lines.push(`      content: ${String(d.conversion)}`);
  if (d.reply) lines.push(`      result: ${replyText(d.reply)}`);
  return lines.join('\n');
}

/** Any trace event, readable: delivery attempts in full, an administrator's deletion, others by their fields. */
export function describeEvent(e: TraceEvent, m: QueueMessage): string {
  if (e.kind === 'delivery') return describeAttempt(e, m);
  const d = e.data;
  if (e.kind === 'deleted') {
    const rcpts = (Array.isArray(d.rcpts) ? d.rcpts : []).map((i) => rcptName(m, i));
    return (
      `  ${iso(e.ts)}  DELETED from the queue by administrator ${String(d.by)} (was ${String(d.state)}); ` +
      `${rcpts.length ? `not delivered to ${rcpts.join(', ')}` : 'no recipient was still open'}`
    );
  }
  return `  ${iso(e.ts)}  ${e.kind}: ${Object.entries(d)
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(' ')}`;
}

export function describeMessage(m: QueueMessage, events: TraceEvent[]): string {
  const i = m.inbound;
  const out = [
    `message ${m.id}  [${m.state}]  organization ${m.org}`,
    `  received ${iso(m.receivedAt)} from ` +
      (i.clientIp
        ? `[${i.clientIp}] helo ${i.helo} with ${i.protocol}`
        : `this gateway (${i.protocol}, ${i.sessionId})`),
    ...(i.connector
      ? [
          `  inbound connector: "${i.connector.name}" (organization ${i.connector.organization}, matched by ` +
            `${i.connector.by})${i.internal ? ', internal' : ''}`,
        ]
      : []),
    `  inbound TLS: ` +
      (!i.tls
        ? 'none (plaintext)'
        : `${i.tls.version} ${i.tls.cipher} (${i.tls.bits} bits)` +
          (i.tls.peerCert
            ? `; client certificate ${i.tls.peerCert.subject}, issuer ${i.tls.peerCert.issuer}, ` +
              peerCertVerdict(i.tls.peerCert)
            : '; no client certificate')),
    ...(i.tls?.peerCert?.revocation ? [`  client certificate revocation: ${i.tls.peerCert.revocation.summary}`] : []),
    `  from <${m.mailFrom}>  message-id ${m.messageId ?? '(none)'}  size ${m.size}`,
    `  recipients: ${m.recipients.map((r) => `${r.address} (${r.status})`).join(', ')}`,
  ];
  out.push(events.length ? '  history:' : '  history: no delivery attempt yet');
  for (const e of events) out.push(describeEvent(e, m));
  if (m.state === 'deferred') out.push(`  next attempt ${iso(m.nextAttemptAt)}`);
  return out.join('\n');
}

export function registerTrace(program: Command): void {
  withConfig(
    program
      .command('trace')
      .description('find messages and show what happened to them, with the TLS facts of every hop')
      .option('--message-id <id>', 'Message-ID header (with or without <>)')
      .option('--queue-id <id>', 'queue id')
      .option('--sender <address>', 'envelope sender')
      .option('--recipient <address>', 'envelope recipient')
      .option('--since <time>', 'received at or after (ISO time, or 30m / 2h / 1d ago)')
      .option('--until <time>', 'received at or before')
      .option('--org <organization>', 'messages of this organization')
      .option('--status <status>', 'with a recipient in this status (pending, delivered, deferred, failed, deleted)')
      .option(
        '--tls-level <level>',
        'with a delivery attempt that achieved this TLS level (none, opportunistic, encryptionOnly, ' +
          'certificateValidation, domainValidation)',
      )
      .option('--connector <name>', 'received through, or delivered through, the connector of this name')
      .option('--limit <n>', 'at most this many messages (default 20)')
      .option('--json', 'machine-readable output'),
  ).action(async (o: TraceOpts) => {
    const since = parseTime(o.since, '--since');
    const until = parseTime(o.until, '--until');
    const store = await cliStore(cliConfig(o));
    const withEvents = await findMessages(store, {
      ...(o.queueId ? { queueId: o.queueId } : {}),
      ...(o.messageId ? { messageId: o.messageId } : {}),
      ...(o.sender ? { sender: o.sender } : {}),
      ...(o.recipient ? { recipient: o.recipient } : {}),
      ...(since !== undefined ? { since } : {}),
      ...(until !== undefined ? { until } : {}),
      limit: Number(o.limit ?? 20),
      ...(o.org ? { org: o.org } : {}),
      ...(o.status ? { status: o.status as RecipientStatus } : {}),
      ...(o.tlsLevel ? { tlsLevel: o.tlsLevel } : {}),
      ...(o.connector ? { connector: o.connector } : {}),
    });
    await store.close();
    if (o.json) return printJson(withEvents);
    if (!withEvents.length) {
      say('no message matches');
      process.exitCode = 1;
      return;
    }
    say(withEvents.map((m) => describeMessage(m, m.trace)).join('\n\n'));
  });
}
