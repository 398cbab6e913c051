// Owns: what `portcullis dane tlsa` and `portcullis dane check` compute (loaded when they run):
// the TLSA records to publish for each certificate we serve (`3 1 1` of the current key and of a
// staged next one, `2 1 1` of the issuing CA) with their owner names, and whether the records a
// domain publishes match the current and the staged certificates (looked up through dns.servers).
// Promise: a file that cannot be read, a DNS answer or failure, is reported, never thrown as a
// stack trace; the check says what to publish when something does not match.
import type { X509Certificate } from 'node:crypto';
import type { Config } from '../config/load.ts';
import { mailHosts } from '../dns/mx.ts';
import { DnsResolver } from '../dns/resolver.ts';
import { DnsError, type TlsaRecord } from '../dns/types.ts';
import { AdminError } from '../errors.ts';
import { daneMatch, formatTlsa, tlsaRecord, usableTlsa } from '../tls/dane.ts';
import { devCertificatePaths } from '../tls/devcert.ts';
import { readCertificates } from '../tls/inspect.ts';
import { certificateNames, dnLine, nameMatches } from '../tls/names.ts';

/** The port of the TLSA owner names we publish: SMTP to an MX host is port 25 (RFC 7672 §2.2). */
const PORT = 25;

export type Role = 'current' | 'next' | 'issuer';

export interface PublishRecord {
  owner: string;
  usage: number;
  selector: number;
  matchingType: number;
  data: string;
  role: Role;
  subject: string;
  file: string;
}

export interface CertificateRecords {
  /** The certificate file as configured. */
  cert: string;
  subject: string;
  /** The MX host names the records are for (the certificate's DNS names, and our hostname for the default one). */
  hosts: string[];
  records: PublishRecord[];
  /** Things the administrator should know (no issuing CA in the file, a next certificate for other names). */
  notes: string[];
}

interface Pair {
  cert: string;
  key: string;
  next?: { cert: string; key: string };
}

function pairs(c: Config, nextFile?: string): Pair[] {
  const list: Pair[] = c.tls.certificates.length
    ? c.tls.certificates.map((p) => ({ ...p }))
    : [{ ...devCertificatePaths(c.dataDir) }];
  if (nextFile) list[0] = { ...list[0], next: { cert: nextFile, key: '' } };
  return list;
}

/** The chain in a PEM file, leaf first, as an AdminError naming the file when it cannot be read. */
function chainOf(file: string, what: string): X509Certificate[] {
  try {
    const chain = readCertificates([file]);
    if (!chain.length) throw new Error('no certificate in it');
    return chain;
  } catch (e) {
    throw new AdminError(
      `cannot read the ${what} ${file}: ${(e as Error).message}`,
      'give a PEM file with the certificate first, then its issuing CA',
    );
  }
}

const hostNames = (leaf: X509Certificate): string[] => certificateNames(leaf).filter((n) => !n.startsWith('*.'));

/** The TLSA records to publish for every configured certificate (with `nextFile` as the first one's next). */
export function publishRecords(c: Config, nextFile?: string): CertificateRecords[] {
  return pairs(c, nextFile).map((p, i) => {
    const chain = chainOf(p.cert, 'certificate');
    const leaf = chain[0];
    const hosts = [...new Set([...hostNames(leaf), ...(i === 0 ? [c.hostname] : [])])];
    const notes: string[] = [];
    const records: PublishRecord[] = [];
    const add = (cert: X509Certificate, usage: number, role: Role, file: string) => {
      const r = tlsaRecord(cert, usage, 1, 1);
      for (const h of hosts)
        records.push({
          owner: `_${PORT}._tcp.${h}`,
          usage,
          selector: 1,
          matchingType: 1,
          data: r.data.toString('hex'),
          role,
          subject: dnLine(cert.subject),
          file,
        });
    };
    add(leaf, 3, 'current', p.cert);
    if (p.next) {
      const next = chainOf(p.next.cert, 'next certificate');
      add(next[0], 3, 'next', p.next.cert);
      const missing = hosts.filter((h) => !certificateNames(next[0]).some((n) => nameMatches(n, h)));
      if (missing.length)
        notes.push(
          `the next certificate ${p.next.cert} does not carry ${missing.join(', ')} (DANE-EE does not check ` +
            `names, DANE-TA and WebPKI senders do)`,
        );
      if (next[1] && !(chain[1] && next[1].raw.equals(chain[1].raw))) add(next[1], 2, 'issuer', p.next.cert);
    }
    if (chain[1]) add(chain[1], 2, 'issuer', p.cert);
    else
      notes.push(
        `${p.cert} holds no issuing CA certificate after the leaf: no 2 1 1 record (append the chain to print one)`,
      );
    return { cert: p.cert, subject: dnLine(leaf.subject), hosts, records, notes };
  });
}

const ROLE: Record<Role, string> = { current: 'current key', next: 'staged next key', issuer: 'issuing CA' };

export function formatPublish(list: readonly CertificateRecords[]): string {
  const L: string[] = [];
  for (const c of list) {
    L.push(`certificate ${c.cert} (${c.subject}), for ${c.hosts.join(', ')}:`);
    for (const r of c.records)
      L.push(
        `  ${r.owner}. IN TLSA ${r.usage} ${r.selector} ${r.matchingType} ${r.data}  ; ${ROLE[r.role]}: ${r.subject}`,
      );
    for (const n of c.notes) L.push(`  note: ${n}`);
  }
  L.push(
    '',
    "Publish these in DNSSEC-signed zones. Before a rotation, publish the staged key's 3 1 1 beside the current " +
      'one and wait',
    'at least the TTL; the 2 1 1 record stays valid across renewals by the same CA.',
  );
  return L.join('\n');
}

/** One MX host of a domain, what it publishes and whether our certificates match it. */
export interface HostCheck {
  host: string;
  owner: string;
  /** 'secure', 'insecure', or the DNS failure kind. */
  dnssec: string;
  records: string[];
  /** The certificate we serve for this host, and the staged one. */
  current?: { cert: string; matches: boolean; detail: string };
  next?: { cert: string; matches: boolean; detail: string };
  problems: string[];
}

export interface DomainCheck {
  domain: string;
  mx: string;
  hosts: HostCheck[];
  ok: boolean;
}

/** The pair we serve for `host`: the one whose names cover it, else the default (first). */
function pairFor(all: readonly Pair[], host: string): Pair {
  return (
    all.find((p) => certificateNames(chainOf(p.cert, 'certificate')[0]).some((n) => nameMatches(n, host))) ?? all[0]
  );
}

function judge(
  records: readonly TlsaRecord[],
  file: string,
  host: string,
  domain: string,
): { cert: string; matches: boolean; detail: string } {
  const m = daneMatch({ records, chain: chainOf(file, 'certificate'), names: [host, domain] });
  if (m.status === 'authenticated') return { cert: file, matches: true, detail: m.detail };
  return { cert: file, matches: false, detail: m.detail };
}

/**
 * `dane check DOMAIN`: the domain's MX hosts, their TLSA records, and our current and staged certificates against them.
 */
export async function checkDomain(c: Config, domain: string, nextFile?: string): Promise<DomainCheck> {
  const resolver = new DnsResolver(c.dns.servers, { dnssec: c.dns.dnssec });
  const all = pairs(c, nextFile);
  const mx = await mailHosts(resolver, domain);
  if (mx.kind === 'error')
    throw new AdminError(
      `MX lookup for ${domain} failed: ${mx.error.message}`,
      'check dns.servers and the domain name',
    );
  if (mx.kind === 'nullMx') return { domain, mx: 'null MX (accepts no mail)', hosts: [], ok: true };
  const mxText =
    `${mx.kind === 'implicit' ? 'no MX records (the domain itself)' : mx.hosts.map((h) => h.name).join(', ')}, ` +
    `DNSSEC ${mx.secure ? 'secure' : 'insecure'}`;
  const hosts: HostCheck[] = [];
  for (const h of mx.hosts) {
    const owner = `_${PORT}._tcp.${h.name}`;
    const r: HostCheck = { host: h.name, owner, dnssec: 'insecure', records: [], problems: [] };
    hosts.push(r);
    if (!mx.secure) r.problems.push(`the MX records of ${domain} are not DNSSEC-secure: senders will not use DANE`);
    let records: TlsaRecord[];
    try {
      const l = await resolver.tlsa(owner);
      r.dnssec = l.status;
      records = l.records;
      r.records = records.map(formatTlsa);
      if (l.status !== 'secure')
        r.problems.push(`the TLSA records at ${owner} are not DNSSEC-secure: senders ignore them`);
    } catch (e) {
      if (!(e instanceof DnsError)) throw e;
      r.dnssec = e.temporary ? e.kind : e.status;
      r.problems.push(
        e.temporary
          ? `the TLSA lookup at ${owner} failed (${e.message}): DANE senders defer mail to this host`
          : `no TLSA records at ${owner}`,
      );
      continue;
    }
    if (!records.some(usableTlsa)) {
      r.problems.push('no usable TLSA record (DANE-TA 2 or DANE-EE 3): senders only encrypt');
      continue;
    }
    const p = pairFor(all, h.name);
    r.current = judge(records, p.cert, h.name, domain);
    if (!r.current.matches)
      r.problems.push(
        `the certificate we serve (${p.cert}) matches none of the records: DANE senders defer mail to this host now`,
      );
    if (p.next) {
      r.next = judge(records, p.next.cert, h.name, domain);
      if (!r.next.matches) {
        const want = tlsaRecord(chainOf(p.next.cert, 'next certificate')[0], 3, 1, 1);
        r.problems.push(
          `the staged certificate (${p.next.cert}) matches none of the records: publish ${owner}. IN TLSA ` +
            `${formatTlsa(want)} before the rotation`,
        );
      }
    }
  }
  return { domain, mx: mxText, hosts, ok: hosts.length > 0 && hosts.every((h) => !h.problems.length) };
}

export function formatCheck(d: DomainCheck): string {
  const L = [`${d.domain}: MX ${d.mx}`];
  for (const h of d.hosts) {
    L.push(`  ${h.host}: TLSA at ${h.owner} (DNSSEC ${h.dnssec})${h.records.length ? '' : ': none'}`);
    for (const r of h.records) L.push(`    ${r}`);
    if (h.current)
      L.push(
        `    current certificate ${h.current.cert}: ${h.current.matches ? 'MATCHES' : 'does NOT match'} ` +
          `(${h.current.detail})`,
      );
    if (h.next)
      L.push(
        `    staged certificate ${h.next.cert}: ${h.next.matches ? 'MATCHES' : 'does NOT match'} (${h.next.detail})`,
      );
    for (const p of h.problems) L.push(`    problem: ${p}`);
  }
  L.push(
    d.ok
      ? 'OK: DANE senders can reach every MX host now, and after the staged rotation'
      : 'NOT OK: see the problems above',
  );
  return L.join('\n');
}
