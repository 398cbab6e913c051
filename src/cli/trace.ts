// Owns: `portcullis trace`: the full story of messages (inbound TLS facts, every delivery attempt
// with host, TLS version/cipher/certificate, the TLS policy demanded vs achieved, the TLS failure
// kind with its label (tls/failures.ts), legacy TLS, the reply with its raw detail).
import type { Command } from 'commander';
import { AdminError } from '../errors.ts';
import { levelRank, type TlsLevel } from '../policy/outbound.ts';
import { isTlsFailureKind, tlsFailureLabel } from '../tls/failures.ts';
import type { QueueMessage, TraceEvent } from '../store/types.ts';
import { cliConfig, cliStore, printJson, withConfig, type CommonOpts } from './context.ts';

interface TraceOpts extends CommonOpts {
  messageId?: string; queueId?: string; sender?: string; recipient?: string; since?: string; until?: string; limit?: string;
}

const iso = (t: number) => new Date(t).toISOString().replace('.000Z', 'Z');

function time(s: string | undefined, what: string): number | undefined {
  if (s === undefined) return undefined;
  const rel = /^(\d+)([smhd])$/.exec(s);
  if (rel) return Date.now() - Number(rel[1]) * { s: 1e3, m: 6e4, h: 3.6e6, d: 8.64e7 }[rel[2] as 's']!;
  const t = Date.parse(s);
  if (Number.isNaN(t)) throw new AdminError(`--${what} "${s}" is not a time`, 'use an ISO time (2026-11-27T15:00Z) or a relative one (30m, 2h, 1d)');
  return t;
}

export function describeAttempt(e: TraceEvent, m: QueueMessage): string {
  const d = e.data as Record<string, unknown> & { reply?: { code: number; enhanced: string; message: string; reason?: string } };
  const rcpt = m.recipients.find((r) => r.idx === d.rcpt)?.address ?? `#${String(d.rcpt)}`;
  const lines = [`  ${iso(e.ts)}  ${rcpt}: ${String(d.status).toUpperCase()} via ${String(d.agent)}`];
  if (d.host) lines.push(`      host ${String(d.host)}${d.ip ? ` [${String(d.ip)}]:${String(d.port)}` : ''}${d.connector ? `, connector "${String(d.connector)}"` : ''}${d.reused ? ', reused connection' : ''}`);
  const req = d.tlsRequired as { level: string; source: string; tlsDomain?: string } | undefined;
  if (req) lines.push(`      TLS policy: required ${req.level} (${req.source}${req.tlsDomain ? `, tlsDomain ${req.tlsDomain}` : ''}), achieved ${String(d.tlsAchieved)}`);
  const t = d.tls as { version: string; cipher: string; bits: number; subject?: string; issuer?: string; fingerprint256?: string; chainValid: boolean; chainError?: string; resumed: boolean } | undefined;
  if (t) {
    lines.push(`      TLS: ${t.version} ${t.cipher} (${t.bits} bits)${t.resumed ? ', resumed' : ''}${d.tlsLegacy ? ', legacy TLS' : ''}`);
    if (t.subject) lines.push(`      peer certificate: ${t.subject}; issuer ${t.issuer}; SHA-256 ${t.fingerprint256}; ${t.chainValid ? 'chain valid' : `chain NOT valid: ${t.chainError}`}`);
  } else if (d.agent === 'smtp') lines.push('      TLS: none (plaintext)');
  if (isTlsFailureKind(d.tlsFailure)) {
    const forced = !!req && levelRank(req.level as TlsLevel) >= levelRank('encryptionOnly');
    const what = d.tlsLegacy ? 'legacy TLS (opportunistic)' : forced ? 'TLS failure' : 'TLS not used';
    lines.push(`      ${what}: ${tlsFailureLabel(d.tlsFailure)} (${d.tlsFailure})`);
  }
  if (d.internal) lines.push(`      ${String(d.internal)}`);
  if (d.revocation) lines.push(`      revocation: ${String(d.revocation)}`);
  if (d.fallback) lines.push(`      note: ${String(d.fallback)}`);
  if (d.reply) lines.push(`      result: ${d.reply.code} ${d.reply.enhanced} ${d.reply.reason ?? d.reply.message}`);
  return lines.join('\n');
}

export function describeMessage(m: QueueMessage, events: TraceEvent[]): string {
  const i = m.inbound;
  const out = [
    `message ${m.id}  [${m.state}]  organization ${m.org}`,
    `  received ${iso(m.receivedAt)} from ${i.clientIp ? `[${i.clientIp}] helo ${i.helo} with ${i.protocol}` : `this gateway (${i.protocol}, ${i.sessionId})`}`,
    ...(i.connector ? [`  inbound connector: "${i.connector.name}" (organization ${i.connector.organization}, matched by ${i.connector.by})${i.internal ? ', internal' : ''}`] : []),
    `  inbound TLS: ${i.tls ? `${i.tls.version} ${i.tls.cipher} (${i.tls.bits} bits)${i.tls.peerCert ? `; client certificate ${i.tls.peerCert.subject}, issuer ${i.tls.peerCert.issuer}, ${i.tls.peerCert.verified ? 'verified' : `not verified (${i.tls.peerCert.verifyError})`}` : '; no client certificate'}` : 'none (plaintext)'}`,
    `  from <${m.mailFrom}>  message-id ${m.messageId ?? '(none)'}  size ${m.size}`,
    `  recipients: ${m.recipients.map((r) => `${r.address} (${r.status})`).join(', ')}`,
  ];
  const attempts = events.filter((e) => e.kind === 'delivery');
  out.push(attempts.length ? '  attempts:' : '  attempts: none yet');
  for (const e of attempts) out.push(describeAttempt(e, m));
  if (m.state === 'deferred') out.push(`  next attempt ${iso(m.nextAttemptAt)}`);
  return out.join('\n');
}

export function registerTrace(program: Command): void {
  withConfig(program.command('trace').description('find messages and show what happened to them, with the TLS facts of every hop')
    .option('--message-id <id>', 'Message-ID header (with or without <>)')
    .option('--queue-id <id>', 'queue id')
    .option('--sender <address>', 'envelope sender')
    .option('--recipient <address>', 'envelope recipient')
    .option('--since <time>', 'received at or after (ISO time, or 30m / 2h / 1d ago)')
    .option('--until <time>', 'received at or before')
    .option('--limit <n>', 'at most this many messages (default 20)')
    .option('--json', 'machine-readable output'))
    .action(async (o: TraceOpts) => {
      const store = cliStore(cliConfig(o));
      const since = time(o.since, 'since'); const until = time(o.until, 'until');
      const msgs = await store.search({
        ...(o.queueId ? { queueId: o.queueId } : {}), ...(o.messageId ? { messageId: o.messageId } : {}),
        ...(o.sender ? { sender: o.sender } : {}), ...(o.recipient ? { recipient: o.recipient } : {}),
        ...(since !== undefined ? { since } : {}), ...(until !== undefined ? { until } : {}), limit: Number(o.limit ?? 20),
      });
      const withEvents = await Promise.all(msgs.map(async (m) => ({ ...m, trace: await store.trace(m.id) })));
      await store.close();
      if (o.json) return printJson(withEvents);
      if (!withEvents.length) { console.log('no message matches'); process.exitCode = 1; return; }
      console.log(withEvents.map((m) => describeMessage(m, m.trace)).join('\n\n'));
    });
}
