// Owns: the TLS-RPT part of `portcullis tls check DOMAIN`: the domain's `_smtp._tls` TXT record
// (RFC 8460 §3) looked up through the configured resolver and parsed as the report sender
// parses it (report.ts parseTlsRptRecord): where reports go, that none is published, or why the
// record is not usable.
// Promise: never throws for DNS trouble; a failed lookup is reported as such, never as "none".
import { DnsError, type Resolver } from '../dns/types.ts';
import { parseTlsRptRecord } from './report.ts';

export type TlsRptCheck =
  | { domain: string; name: string; status: 'published'; record: string; rua: string[] }
  /** No v=TLSRPTv1 record: senders send this domain no reports. */
  | { domain: string; name: string; status: 'none' }
  /** v=TLSRPTv1 record(s) that senders cannot use; `problem` says why. */
  | { domain: string; name: string; status: 'invalid'; records: string[]; problem: string }
  /** The lookup failed: whether a record exists is unknown. */
  | { domain: string; name: string; status: 'lookup-failed'; error: string };

export async function checkTlsRpt(domain: string, resolver: Resolver): Promise<TlsRptCheck> {
  const name = `_smtp._tls.${domain}`;
  let txts: string[];
  try {
    txts = (await resolver.txt(name)).records;
  } catch (e) {
    if (!(e instanceof DnsError)) throw e;
    if (!e.temporary) return { domain, name, status: 'none' };
    return { domain, name, status: 'lookup-failed', error: e.message };
  }
  const mine = txts.filter((t) => /^v=TLSRPTv1\s*(;|$)/.test(t));
  if (!mine.length) return { domain, name, status: 'none' };
  const p = parseTlsRptRecord(txts);
  if (p.problem) return { domain, name, status: 'invalid', records: mine, problem: p.problem };
  return { domain, name, status: 'published', record: mine[0], rua: p.rua };
}

/** Text lines for `tls check`. */
export function formatTlsRptCheck(c: TlsRptCheck): string[] {
  const L = [`TLS-RPT (RFC 8460) for ${c.domain}:`];
  switch (c.status) {
    case 'published':
      L.push(`  TXT ${c.name}: ${c.record}`, `  reports go to: ${c.rua.join(', ')}`);
      break;
    case 'none':
      L.push(`  TXT ${c.name}: none published (senders send ${c.domain} no TLS reports)`);
      break;
    case 'invalid':
      L.push(
        ...c.records.map((r) => `  TXT ${c.name}: ${r}`),
        `  NOT usable: ${c.problem}; senders send ${c.domain} no TLS reports`,
      );
      break;
    case 'lookup-failed':
      L.push(`  TXT ${c.name}: lookup FAILED (${c.error}); whether reports are wanted is unknown`);
  }
  return L;
}
