// Owns: the Received: trace header (RFC 5321 §4.4, protocol names per RFC 3848) with the TLS facts.
import type { InboundFacts } from '../store/types.ts';
import { peerCertVerdict } from '../tls/facts.ts';

export function rfc5322Date(d: Date): string {
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const p = (n: number) => String(n).padStart(2, '0');
  return (
    `${days[d.getUTCDay()]}, ${p(d.getUTCDate())} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
    `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`
  );
}

/** Comments must not break the header: drop CR/LF and unbalanced parentheses. */
const clean = (s: string) =>
  s
    .replace(/[\r\n\\()]/g, ' ')
    .replace(/[^\x20-\x7e]/g, '?')
    .slice(0, 200);

export function tlsComment(f: InboundFacts): string[] {
  if (!f.tls) return [];
  const t = f.tls;
  const lines = [`(using ${t.version} with cipher ${t.cipher} (${t.bits}/${t.bits} bits))`];
  if (!t.peerCert) lines.push('(no client certificate presented)');
  else {
    lines.push(
      `(client certificate ${clean(t.peerCert.subject)} issued by ${clean(t.peerCert.issuer)}, ` +
        `${clean(peerCertVerdict(t.peerCert))})`,
    );
  }
  return lines;
}

export function receivedHeader(f: InboundFacts, queueId: string, rcpt: string | undefined, at: Date): Buffer {
  const ip = f.clientIp.includes(':') ? `IPv6:${f.clientIp}` : f.clientIp;
  const parts = [
    `Received: from ${clean(f.helo || 'unknown')} ([${ip}])`,
    ...tlsComment(f),
    `by ${f.receivedBy} (Portcullis) with ${f.protocol} id ${queueId}`,
    // The recipient in its canonical form (../mailbox.ts), which has no control characters; the
    // replace only keeps that true for the header whatever a caller passes.
    ...(rcpt ? [`for <${rcpt.replace(/[\x00-\x1f\x7f]/g, '?')}>; ${rfc5322Date(at)}`] : [`; ${rfc5322Date(at)}`]),
  ];
  return Buffer.from(parts.join('\r\n\t') + '\r\n');
}
