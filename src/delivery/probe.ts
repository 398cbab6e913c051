// Owns: inspecting a destination the way delivery would meet it, for administrators
// (`portcullis tls check`, `portcullis connector validate`): resolve its hosts, connect, STARTTLS,
// and report the TLS facts, chain and root, name match, every revocation and CA-issuer endpoint of
// the chain (also when it does not verify), and whether a required TLS level would pass, with the
// TLS failure kind (tls/failures.ts) when it would not. TLS facts are kept when SMTP fails after
// STARTTLS. For a mail domain's hosts, also the DNSSEC status of the MX and address records and
// what DANE demands of each host (delivery/dane.ts), with whether the presented certificate
// matches the TLSA records. Optionally sends a test message. Never throws for a bad host.
import net from 'node:net';
import type { Config } from '../config/load.ts';
import { mailHosts } from '../dns/mx.ts';
import type { ProviderAnswer } from '../policy/outbound.ts';
import { DaneProvider } from './dane.ts';
import type { Resolver } from '../dns/types.ts';
import type { TlsRequirement } from '../policy/outbound.ts';
import { tlsFailureLabel, type TlsFailureKind } from '../tls/failures.ts';
import { dnLine, namesSatisfy } from '../tls/names.ts';
import type { EndpointResult, RevocationChecker, RevocationResult } from '../tls/revocation.ts';
import type { TrustStore } from '../tls/trust.ts';
import { DeliveryError, SmtpConnection, type PeerTls } from './smtp-client.ts';
import { judgeTls } from './tls-check.ts';
import { errorMessage } from '../util/errors.ts';

/** A host to probe; `mx` when it is a mail host of a domain (its MX RRset's DNSSEC status). */
export interface ProbeTarget {
  host: string;
  port: number;
  mx?: { domain: string; kind: 'mx' | 'implicit'; secure: boolean };
}

/** What DANE (RFC 7672) says about a mail host, as delivery would see it. */
export interface DaneReport {
  /** DNSSEC status of the MX records and of the host's addresses. */
  mxSecure: boolean;
  addressesSecure: boolean;
  /**
   * 'none': DANE does not apply (why in `text`); 'demand': TLSA records apply; 'refuse': delivery would not contact the
   * host.
   */
  status: ProviderAnswer['kind'];
  /** The demand's source, or why there is none, or why the host is refused. */
  text: string;
  /** With usable records and a TLS session: whether the presented certificate matches. */
  matches?: boolean;
  detail?: string;
}

export interface HostReport {
  host: string;
  ip?: string;
  port: number;
  connected: boolean;
  starttlsOffered?: boolean;
  tls?: {
    version: string;
    cipher: string;
    bits: number;
    subject?: string;
    issuer?: string;
    fingerprint256?: string;
    names?: string[];
    chain: string[];
    chainValid: boolean;
    chainError?: string;
    rootInTrustStore: boolean;
  };
  nameMatch?: { required: string; ok: boolean };
  revocation?: RevocationResult;
  requirement: TlsRequirement;
  passes: boolean;
  reason?: string;
  /** What went wrong with TLS, when something did. */
  tlsFailure?: TlsFailureKind;
  /** Mail hosts of a domain: DNSSEC and DANE. */
  dane?: DaneReport;
  testMessage?: string;
  error?: string;
}

export interface ProbeOptions {
  config: Config;
  resolver: Resolver;
  trust: TrustStore;
  revocation: RevocationChecker;
  requirement: TlsRequirement;
  /** Send a test message to this address through each host that passes. */
  sendTo?: string;
}

/**
 * MX hosts of a domain by preference, or the domain itself when it has no MX (the implicit MX);
 * none for a null MX. Throws the DnsError when the domain does not exist or DNS failed, so the
 * administrator reads why (dns/mx.ts decides, as for delivery).
 */
export async function targetsFor(resolver: Resolver, spec: string, defaultPort: number): Promise<ProbeTarget[]> {
  const m = /^\[?([^\]]+?)\]?(?::(\d+))?$/.exec(spec.trim());
  const name = m?.[1] ?? spec;
  const port = m?.[2] ? Number(m[2]) : undefined;
  if (port || net.isIP(name)) return [{ host: name, port: port ?? defaultPort }];
  const hosts = await mailHosts(resolver, name);
  if (hosts.kind === 'error') throw hosts.error;
  if (hosts.kind === 'nullMx') return [];
  return hosts.hosts.map((h) => ({
    host: h.name,
    port: defaultPort,
    mx: { domain: name, kind: hosts.kind, secure: hosts.secure },
  }));
}

export async function probeHost(t: ProbeTarget, o: ProbeOptions): Promise<HostReport[]> {
  let ips: string[];
  let addresses: { secure: boolean; names: string[] } | undefined;
  try {
    if (net.isIP(t.host)) ips = [t.host];
    else {
      const a = await o.resolver.addresses(t.host);
      ips = a.records;
      addresses = { secure: a.status === 'secure', names: a.names };
    }
  } catch (e) {
    return [
      {
        host: t.host,
        port: t.port,
        connected: false,
        requirement: o.requirement,
        passes: false,
        error: errorMessage(e),
        reason: `cannot resolve ${t.host}: ${errorMessage(e)}`,
      },
    ];
  }
  const dane = t.mx && addresses ? await daneFor(t, addresses, o) : undefined;
  const reports: HostReport[] = [];
  for (const ip of ips) {
    const r = await probeAddress(t, ip, o, dane?.answer);
    if (dane) r.dane = { ...dane.report, ...(r.dane ?? {}) };
    reports.push(r);
  }
  return reports;
}

/** What DANE demands of a mail host (as delivery's provider decides it), for the report. */
async function daneFor(
  t: ProbeTarget,
  addresses: { secure: boolean; names: string[] },
  o: ProbeOptions,
): Promise<{ answer: ProviderAnswer; report: DaneReport }> {
  const mx = t.mx!;
  const hop = { key: `mx:${mx.domain}`, kind: 'mx' as const, domain: mx.domain, smartHosts: [], tls: o.requirement };
  const answer = await new DaneProvider(() => o.resolver).forHost({
    hop,
    host: t.host,
    port: t.port,
    via: { kind: mx.kind, secure: mx.secure },
    addresses,
    message: { queueId: '' },
  });
  const text =
    answer.kind === 'none'
      ? (answer.note ?? 'DANE: not applicable')
      : answer.kind === 'demand'
        ? `${answer.demand.source}: requires ${answer.demand.level}`
        : `${answer.demand.source}: ${answer.detail}`;
  return { answer, report: { mxSecure: mx.secure, addressesSecure: addresses.secure, status: answer.kind, text } };
}

/** Record the TLS facts of a session in the report and judge them; returns the judgement. */
async function judgeSession(
  r: HostReport,
  t0: PeerTls,
  t: ProbeTarget,
  o: ProbeOptions,
): Promise<{ violation: string | null; kind?: TlsFailureKind }> {
  const root = t0.chainValid ? t0.chain?.at(-1) : undefined;
  r.tls = {
    version: t0.version,
    cipher: t0.cipher,
    bits: t0.bits,
    chain: (t0.chain ?? []).map((c) => dnLine(c.subject)),
    chainValid: t0.chainValid,
    rootInTrustStore: !!root && o.trust.isTrusted(root),
    ...(t0.subject ? { subject: t0.subject } : {}),
    ...(t0.issuer ? { issuer: t0.issuer } : {}),
    ...(t0.fingerprint256 ? { fingerprint256: t0.fingerprint256 } : {}),
    ...(t0.names ? { names: t0.names } : {}),
    ...(t0.chainError ? { chainError: t0.chainError } : {}),
  };
  const want = o.requirement.tlsDomain ?? t.host;
  r.nameMatch = { required: want, ok: namesSatisfy(t0.names ?? [], want) };
  const j = await judgeTls(t0, o.requirement, `host ${t.host} [${r.ip}]`, o.revocation, o.config.tls.revocation, true);
  if (j.revocation) r.revocation = j.revocation;
  // A chain that does not verify is not revocation-checked, but its endpoints are still reported.
  else if (!t0.chainValid && t0.chain?.length) {
    const s = await o.revocation.survey(t0.chain, o.trust);
    if (s.certificates.length) r.revocation = s;
  }
  return j;
}

async function probeAddress(t: ProbeTarget, ip: string, o: ProbeOptions, dane?: ProviderAnswer): Promise<HostReport> {
  const base: HostReport = {
    host: t.host,
    ip,
    port: t.port,
    connected: false,
    requirement: o.requirement,
    passes: false,
  };
  let conn: SmtpConnection;
  try {
    conn = await SmtpConnection.open({
      ip,
      port: t.port,
      hostname: t.host,
      heloName: o.config.delivery.heloName ?? o.config.hostname,
      trust: o.trust,
      starttls: 'try',
      timeouts: {
        ...o.config.delivery.timeouts,
        greeting: Math.min(o.config.delivery.timeouts.greeting, 30),
        command: Math.min(o.config.delivery.timeouts.command, 30),
      },
    });
  } catch (e) {
    const msg = e instanceof DeliveryError ? e.message : String(e);
    if (!(e instanceof DeliveryError && e.tls))
      return {
        ...base,
        error: msg,
        reason: msg,
        ...(e instanceof DeliveryError && e.tlsFailure ? { tlsFailure: e.tlsFailure } : {}),
      };
    // STARTTLS worked, SMTP failed afterwards: what TLS showed is still worth reporting.
    const r: HostReport = { ...base, connected: true, starttlsOffered: true, error: msg };
    await judgeSession(r, e.tls, t, o);
    r.reason = `SMTP failed after TLS was established: ${msg}`;
    return r;
  }
  const r: HostReport = { ...base, connected: true, starttlsOffered: conn.starttlsOffered };
  try {
    let j: { violation: string | null; kind?: TlsFailureKind };
    if (conn.tls && dane?.kind === 'demand' && dane.demand.verify) {
      const m = dane.demand.verify({ presented: conn.tls.presented ?? [] });
      r.dane = { matches: m.ok, detail: m.ok ? m.detail : `${m.failure.text} (${m.failure.kind})` } as DaneReport;
    }
    if (conn.tls) j = await judgeSession(r, conn.tls, t, o);
    else {
      if (conn.tlsSkipped) {
        r.error = conn.tlsSkipped.detail;
        r.tlsFailure = conn.tlsSkipped.kind;
      }
      j = await judgeTls(null, o.requirement, `host ${t.host} [${ip}]`, o.revocation, o.config.tls.revocation, true);
    }
    r.passes = j.violation === null;
    if (j.violation) r.reason = j.violation;
    if (j.violation && j.kind) r.tlsFailure = j.kind;
    if (o.sendTo && r.passes) {
      const data = Buffer.from(
        `From: Portcullis connector validation <postmaster@${o.config.hostname}>\r\nTo: <${o.sendTo}>\r\nSubject: ` +
          `Portcullis connector validation\r\n` +
          `Date: ${new Date().toUTCString()}\r\nMessage-ID: ` +
          `<validate.${Date.now()}@${o.config.hostname}>\r\n\r\nThis is a test message sent by "portcullis ` +
          `connector validate".\r\n`,
      );
      const res = await conn.send(
        { from: `postmaster@${o.config.hostname}`, rcpts: [{ address: o.sendTo }], eightBit: false, smtputf8: false },
        data,
      );
      const final = res.data ?? res.rcpts.at(0) ?? res.mail;
      r.testMessage = `${final.code} ${final.enhanced ?? ''} ${final.text}`.replace(/ {2}/g, ' ');
      if (final.code !== 250) {
        r.passes = false;
        r.reason = `test message refused: ${r.testMessage}`;
      }
    }
  } catch (e) {
    r.passes = false;
    r.reason = r.error = e instanceof Error ? e.message : String(e);
  } finally {
    await conn.quit();
  }
  return r;
}

const KIND: Record<EndpointResult['kind'], string> = { ocsp: 'OCSP', crl: 'CRL', caIssuers: 'CA issuers' };

/** One endpoint: what it answered (and whether from our cache), or why it could not be used. */
export function formatEndpoint(e: EndpointResult): string {
  let what: string;
  if (e.kind === 'caIssuers' && e.ok)
    what = `served ${e.served}${e.servedIsIssuer ? ' (the issuer)' : ' (NOT the issuer of this certificate)'}`;
  else if (e.ok) what = `answered, ${e.status}${e.cached ? ` (from our cache, fetched ${e.fetchedAt})` : ''}`;
  else what = e.reachable ? `answered, but unusable: ${e.error}` : `UNREACHABLE (${e.error})`;
  return `${KIND[e.kind]} ${e.url}: ${what}`;
}

/** Revocation and CA-issuer endpoints of every certificate, indented by `indent`. */
export function formatRevocation(rev: RevocationResult, indent = '  '): string[] {
  const L: string[] = [];
  for (const c of rev.certificates) {
    L.push(
      `${indent}revocation of ${c.subject}: ${c.status}` +
        (c.revokedAt ? ` (revoked ${c.revokedAt})` : '') +
        (c.issuerUrl
          ? ` (issuer ${c.issuer} fetched from its CA-issuer URL)`
          : c.issuer
            ? ''
            : ' (issuer certificate not found: answers cannot be verified)'),
    );
    for (const e of c.endpoints) L.push(`${indent}  ${formatEndpoint(e)}`);
    if (!c.endpoints.some((e) => e.kind !== 'caIssuers')) L.push(`${indent}  no CRL or OCSP endpoints`);
  }
  return L;
}

/** Text for administrators, one block per host. */
export function formatReport(r: HostReport): string {
  const L = [
    `${r.host} [${r.ip ?? '?'}]:${r.port}  ${r.passes ? 'PASS' : 'FAIL'}  (required: ` +
      `${r.requirement.level}${r.requirement.tlsDomain ? `, tlsDomain ${r.requirement.tlsDomain}` : ''} — ` +
      `${r.requirement.source})`,
  ];
  const failure = r.tlsFailure ? [`  TLS failure: ${tlsFailureLabel(r.tlsFailure)} (${r.tlsFailure})`] : [];
  if (!r.connected) {
    L.push(`  connection: ${r.error}`, ...failure);
    return L.join('\n');
  }
  L.push(`  STARTTLS: ${r.starttlsOffered ? 'offered' : 'NOT offered'}`);
  if (r.tls) {
    L.push(`  TLS: ${r.tls.version} ${r.tls.cipher} (${r.tls.bits} bits)`);
    L.push(`  certificate: ${r.tls.subject}; issuer ${r.tls.issuer}; SHA-256 ${r.tls.fingerprint256}`);
    L.push(
      `  names: ${(r.tls.names ?? []).join(', ') || '(none)'}` +
        (r.nameMatch ? `; match ${r.nameMatch.required}: ${r.nameMatch.ok ? 'yes' : 'NO'}` : ''),
    );
    L.push(
      `  chain: ${r.tls.chain.join('  ->  ')}  ${r.tls.chainValid ? '(valid)' : `(NOT valid: ${r.tls.chainError})`}`,
    );
    L.push(`  root in our trust store: ${r.tls.rootInTrustStore ? 'yes' : 'no'}`);
  } else if (r.error) L.push(`  TLS: not used (${r.error})`);
  if (r.revocation) L.push(...formatRevocation(r.revocation));
  if (r.dane) {
    L.push(
      `  DNSSEC: MX records ${r.dane.mxSecure ? 'secure' : 'insecure'}, addresses of ${r.host} ` +
        `${r.dane.addressesSecure ? 'secure' : 'insecure'}`,
    );
    L.push(`  DANE: ${r.dane.status === 'refuse' ? 'delivery would NOT contact this host: ' : ''}${r.dane.text}`);
    if (r.dane.matches !== undefined)
      L.push(
        `  DANE certificate: ${r.dane.matches ? 'MATCHES' : 'does NOT match (delivery would defer)'}: ${r.dane.detail}`,
      );
  }
  if (r.testMessage) L.push(`  test message: ${r.testMessage}`);
  L.push(...failure);
  if (r.reason) L.push(`  reason: ${r.reason}`);
  return L.join('\n');
}
