// Owns: all name resolution of the gateway (MX, A, AAAA, TXT, TLSA, PTR): the network Resolver
// (types.ts; typed lookups from typed.ts), sent only to the configured `dns.servers` (or, when
// none are configured, the nameservers of /etc/resolv.conf),
// and the DNSSEC status of every answer: 'secure' when a server we trust for it set the AD bit
// (dns.dnssec true; explicit dns.servers, or loopback resolv.conf servers), else 'insecure'.
// Promise: failures are typed DnsError kinds — never a lowered answer. nxdomain/nodata are
// answers and carry `secure` (an authenticated denial); 'bogus' (a validating resolver answered
// SERVFAIL and its Extended DNS Error says DNSSEC) and 'servfail'/'timeout'/'refused'/'malformed'
// mean "could not find out" and are never "no record". Answers are cached per their TTL,
// negative ones per the SOA of their authority section (RFC 2308 §5), not at all without one;
// failures are not cached.
import dgram from 'node:dgram';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import * as dnsPacket from 'dns-packet';
import type { Answer, Packet, RecordType } from 'dns-packet';
import { emit } from '../events.ts';
import { DnsError, type DnsRecord, type ExtendedDnsError, type Lookup } from './types.ts';
import { TypedResolver } from './typed.ts';

type Decoded = Packet & { flag_tc?: boolean; flag_ad?: boolean; rcode?: string };

/** RFC 8914 §4 and the IANA registry: the INFO-CODE names. */
const EDE_NAMES = [
  'Other',
  'Unsupported DNSKEY Algorithm',
  'Unsupported DS Digest Type',
  'Stale Answer',
  'Forged Answer',
  'DNSSEC Indeterminate',
  'DNSSEC Bogus',
  'Signature Expired',
  'Signature Not Yet Valid',
  'DNSKEY Missing',
  'RRSIGs Missing',
  'No Zone Key Bit Set',
  'NSEC Missing',
  'Cached Error',
  'Not Ready',
  'Blocked',
  'Censored',
  'Filtered',
  'Prohibited',
  'Stale NXDOMAIN Answer',
  'Not Authoritative',
  'Not Supported',
  'No Reachable Authority',
  'Network Error',
  'Invalid Data',
  'Signature Expired before Valid',
  'Too Early',
  'Unsupported NSEC3 Iterations Value',
  'Unable to conform to policy',
  'Synthesized',
  'Invalid Query Type',
];
/** INFO-CODEs that say validation failed: a SERVFAIL carrying one of them is 'bogus'. */
const EDE_DNSSEC = new Set([1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 25, 27]);
const EDE_OPTION = 15;

/** A server the resolver asks, and whether its AD bit counts (see the file header). */
export interface Upstream {
  host: string;
  port: number;
  trustAd: boolean;
}
type Server = Upstream;

export function parseServer(s: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(s) ?? /^([^:]+)(?::(\d+))?$/.exec(s);
  if (m) return { host: m[1], port: m[2] ? Number(m[2]) : 53 };
  return { host: s, port: 53 }; // bare IPv6
}

export function systemServers(file = '/etc/resolv.conf'): string[] {
  try {
    return readFileSync(file, 'utf8')
      .split('\n')
      .map((l) => /^\s*nameserver\s+(\S+)/.exec(l)?.[1])
      .filter((x): x is string => !!x);
  } catch {
    return [];
  }
}

const isLoopback = (ip: string) => /^(::ffff:)?127\./i.test(ip) || ip === '::1';

/**
 * The longest a negative answer is cached (3 hours): RFC 2308 §5 finds one to three hours a
 * sensible default and values over a day problematic.
 */
const NEGATIVE_TTL_MAX = 10_800;
const MAX_CNAME = 8;
const EDE_TEXT_MAX = 300;

export interface ResolverOptions {
  timeoutMs?: number;
  attempts?: number;
  cacheMax?: number;
  /**
   * dns.dnssec: trust the AD bit of the servers (default true). false: every answer is
   * 'insecure' (DANE is then off) and queries ask for no DNSSEC data.
   */
  dnssec?: boolean;
  /** Where the nameservers come from when `servers` is empty (default /etc/resolv.conf). */
  resolvConf?: string;
}

/** One decoded response: records (possibly only a CNAME chain) or a denial, with its AD status. */
interface Response {
  rcode: 'NOERROR' | 'NXDOMAIN';
  records: DnsRecord[];
  secure: boolean;
  ttl: number;
}

/**
 * How long a negative answer (NXDOMAIN, NODATA) may be cached, from the SOA record in its authority
 * section: the smaller of that record's TTL and its MINIMUM field (RFC 2308 §3, §5), at most
 * NEGATIVE_TTL_MAX. 0 without an SOA: §5 says such answers "SHOULD NOT be cached".
 */
export function negativeTtl(authorities: readonly DnsRecord[]): number {
  const soa = authorities.find((a) => a.type === 'SOA');
  if (!soa) return 0;
  const minimum = (soa.data as { minimum?: number }).minimum ?? 0;
  return Math.max(0, Math.min(soa.ttl ?? 0, minimum, NEGATIVE_TTL_MAX));
}

const norm = (n: string) => n.toLowerCase().replace(/\.$/, '');

export class DnsResolver extends TypedResolver {
  /** The servers asked, in order, with their AD trust (for diagnostics: DANE needs one trusted). */
  readonly upstreams: readonly Upstream[];
  private readonly cache = new Map<string, { expires: number; value: Response }>();
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly cacheMax: number;
  /** Whether DNSSEC status is read at all (dns.dnssec). false: DANE is off in effect. */
  readonly dnssec: boolean;

  constructor(servers: readonly string[], opts: ResolverOptions = {}) {
    super();
    this.dnssec = opts.dnssec ?? true;
    // Explicit servers are the operator's choice of validating resolver; the resolv.conf
    // fallback is trusted only on loopback (an AD bit from across a network can be forged).
    // RFC 4035 §4.6: AD counts only over a secure channel or when configured to be trusted.
    this.upstreams = servers.length
      ? servers.map((s) => ({ ...parseServer(s), trustAd: this.dnssec }))
      : systemServers(opts.resolvConf).map((s) => {
          const p = parseServer(s);
          return { ...p, trustAd: this.dnssec && isLoopback(p.host) };
        });
    this.timeoutMs = opts.timeoutMs ?? 3000;
    this.attempts = opts.attempts ?? 2;
    this.cacheMax = opts.cacheMax ?? 10_000;
  }

  /**
   * Raw lookup of `type` at `name`, following CNAME chains (RFC 1034 §3.6.2; at most 8 links). Throws DnsError
   * nxdomain/nodata (with `secure` and `names` for the chain followed) or a failure kind.
   */
  async lookup(name: string, type: RecordType): Promise<Lookup<DnsRecord>> {
    const names = [norm(name)];
    let secure = true;
    let ttl = Infinity;
    for (let hop = 0; hop <= MAX_CNAME; hop++) {
      const qname = names[names.length - 1];
      let r: Response;
      try {
        r = await this.cached(qname, type);
      } catch (e) {
        // A failure further down a chain is reported for the name asked, with the chain so far.
        if (e instanceof DnsError && hop > 0)
          throw new DnsError(e.kind, name, type, `at ${qname}: ${e.detail}`, { names, ede: e.ede });
        throw e;
      }
      secure &&= r.secure;
      ttl = Math.min(ttl, r.ttl);
      const done = (records: DnsRecord[]): Lookup<DnsRecord> => ({
        records,
        authenticated: secure,
        status: secure ? 'secure' : 'insecure',
        ttl,
        names: [...names],
      });
      // Follow the chain as far as the resolver included it in this answer.
      for (;;) {
        const cur = names[names.length - 1];
        const direct = r.records.filter((a) => a.type === type && norm(a.name) === cur);
        if (direct.length) return done(direct);
        const cname = r.records.find((a) => a.type === 'CNAME' && norm(a.name) === cur);
        if (!cname) break;
        if (names.length > MAX_CNAME) throw new DnsError('malformed', name, type, 'CNAME chain too long', { names });
        const next = norm(String(cname.data));
        if (names.includes(next)) throw new DnsError('malformed', name, type, `CNAME loop at ${next}`, { names });
        names.push(next);
      }
      if (r.rcode === 'NXDOMAIN')
        throw new DnsError('nxdomain', name, type, names.length > 1 ? `at ${names[names.length - 1]}` : '', {
          secure,
          names,
        });
      if (names[names.length - 1] === qname) {
        const any = r.records.filter((a) => a.type === type);
        if (any.length) return done(any);
        throw new DnsError('nodata', name, type, names.length > 1 ? `at ${qname}` : '', { secure, names });
      }
      // The answer ended in a CNAME to a name it did not resolve: ask for that name.
    }
    throw new DnsError('malformed', name, type, 'CNAME chain too long', { names });
  }

  private async cached(name: string, type: RecordType): Promise<Response> {
    const key = `${type} ${name}`;
    const hit = this.cache.get(key);
    if (hit && hit.expires > Date.now()) return hit.value;
    const v = await this.timed(name, type);
    // Positive answers for their TTL (RFC 1035 §3.2.1: 0 means not cached), at most a day;
    // negative ones for the TTL interpret() took from their SOA (RFC 2308 §5; 0 without one).
    this.store(key, v, Math.max(0, Math.min(v.ttl, 86_400)));
    return v;
  }

  private store(key: string, value: Response, ttl: number): void {
    if (ttl <= 0) return;
    if (this.cache.size >= this.cacheMax) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, { expires: Date.now() + ttl * 1000, value });
  }

  clearCache(): void {
    this.cache.clear();
  }

  /** query(), its duration and outcome emitted as a dns.query event (metrics). */
  private async timed(name: string, type: RecordType): Promise<Response> {
    const t0 = performance.now();
    let outcome = 'error';
    try {
      const v = await this.query(name, type);
      outcome = v.rcode === 'NXDOMAIN' ? 'nxdomain' : 'ok';
      return v;
    } catch (e) {
      if (e instanceof DnsError) outcome = e.kind;
      throw e;
    } finally {
      emit({ event: 'dns.query', qtype: type, outcome, ms: performance.now() - t0 });
    }
  }

  /** One question to the servers in turn (UDP, TCP when truncated). */
  private async query(name: string, type: RecordType): Promise<Response> {
    if (!this.upstreams.length)
      throw new DnsError('servfail', name, type, 'no DNS servers configured and none in /etc/resolv.conf');
    let last: DnsError = new DnsError('timeout', name, type);
    let bogus: DnsError | undefined;
    for (let attempt = 0; attempt < this.attempts && !bogus; attempt++) {
      for (const s of this.upstreams) {
        try {
          let p = await this.exchange(s, name, type, false);
          // Truncated (TC, RFC 1035 §4.2.1): the same question again over TCP.
          if (p.flag_tc) p = await this.exchange(s, name, type, true);
          return this.interpret(p, s, name, type);
        } catch (e) {
          if (!(e instanceof DnsError)) throw e;
          last = e;
          // A validation failure is a verdict, not a lost packet: no second round. Keep the
          // first one: its EDE text is the fresh diagnosis, a repeat comes from the bogus cache.
          if (e.kind === 'bogus') bogus ??= e;
        }
      }
    }
    throw bogus ?? last;
  }

  private interpret(p: Decoded, s: Server, name: string, type: RecordType): Response {
    const rcode = p.rcode ?? 'NOERROR';
    const secure = s.trustAd && !!p.flag_ad; // RFC 4035 §3.2.3 (set by the validator), §4.6 (trusted here)
    const answers = ((p.answers ?? []) as unknown as DnsRecord[]).filter((a) => a.type !== 'RRSIG');
    const negative = rcode === 'NXDOMAIN' || !answers.length;
    const ttl = negative
      ? negativeTtl((p.authorities ?? []) as unknown as DnsRecord[])
      : Math.min(...answers.map((a) => (typeof a.ttl === 'number' ? a.ttl : 300)));
    // NXDOMAIN and NOERROR-without-records (NODATA) are answers (RFC 2308 §2.1, §2.2).
    if (rcode === 'NOERROR' || rcode === 'NXDOMAIN') return { rcode, records: answers, secure, ttl };
    if (rcode === 'REFUSED') throw new DnsError('refused', name, type, `${s.host}:${s.port}`);
    const ede = extendedErrors(p);
    const why = ede.map((e) => `EDE ${e.code} ${e.name}${e.text ? `: ${e.text}` : ''}`).join('; ');
    if (rcode === 'SERVFAIL') {
      const bogus = ede.some((e) => EDE_DNSSEC.has(e.code));
      throw new DnsError(bogus ? 'bogus' : 'servfail', name, type, `${s.host}:${s.port}${why ? `: ${why}` : ''}`, {
        ede,
      });
    }
    throw new DnsError('servfail', name, type, `${s.host}:${s.port} answered ${rcode}${why ? `; ${why}` : ''}`, {
      ede,
    });
  }

  private exchange(s: Server, name: string, type: RecordType, tcp: boolean): Promise<Decoded> {
    const id = randomInt(1, 65_535);
    // dns.dnssec: DO asks for signatures (RFC 3225 §3, RFC 4035 §3.2.1) and AD for the validation result
    // (RFC 6840 §5.7); without it neither is asked for and AD is ignored anyway.
    const q: Packet = {
      type: 'query',
      id,
      flags: dnsPacket.RECURSION_DESIRED | (this.dnssec ? dnsPacket.AUTHENTIC_DATA : 0),
      questions: [{ type, name, class: 'IN' }],
      additionals: [
        {
          type: 'OPT',
          name: '.',
          udpPayloadSize: 1232,
          flags: this.dnssec ? dnsPacket.DNSSEC_OK : 0,
        } as unknown as Answer,
      ],
    };
    return tcp ? this.tcp(s, q, name, type) : this.udp(s, q, name, type);
  }

  private udp(s: Server, q: Packet, name: string, type: RecordType): Promise<Decoded> {
    return new Promise((resolve, reject) => {
      const sock = dgram.createSocket(net.isIPv6(s.host) ? 'udp6' : 'udp4');
      const done = (e: Error | null, p?: Decoded) => {
        clearTimeout(t);
        sock.close();
        if (e) reject(e);
        else resolve(p!);
      };
      const t = setTimeout(() => done(new DnsError('timeout', name, type, `${s.host}:${s.port}`)), this.timeoutMs);
      sock.on('error', (e) => done(new DnsError('servfail', name, type, e.message)));
      sock.on('message', (msg) => {
        let p: Packet;
        try {
          p = dnsPacket.decode(msg);
        } catch {
          return;
        }
        // Not ours (RFC 5452: a random ID per query, and the answer must match ID and question).
        if (p.id !== q.id || p.questions?.[0]?.name.toLowerCase() !== name.toLowerCase()) return;
        done(null, p);
      });
      sock.send(dnsPacket.encode(q), s.port, s.host);
    });
  }

  private tcp(s: Server, q: Packet, name: string, type: RecordType): Promise<Decoded> {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: s.host, port: s.port });
      let buf = Buffer.alloc(0);
      const done = (e: Error | null, p?: Decoded) => {
        clearTimeout(t);
        sock.destroy();
        if (e) reject(e);
        else resolve(p!);
      };
      const t = setTimeout(() => done(new DnsError('timeout', name, type, `${s.host}:${s.port}/tcp`)), this.timeoutMs);
      sock.on('error', (e) => done(new DnsError('servfail', name, type, e.message)));
      sock.on('connect', () => sock.write(dnsPacket.streamEncode(q))); // 2-octet length prefix (RFC 1035 §4.2.2)
      sock.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
        try {
          const p = dnsPacket.streamDecode(buf);
          if (p.id !== q.id) {
            done(new DnsError('malformed', name, type, 'id mismatch'));
            return;
          }
          done(null, p);
        } catch {
          done(new DnsError('malformed', name, type));
        }
      });
    });
  }
}

/** The Extended DNS Errors (RFC 8914) in a response's OPT record; text sanitised and bounded. */
export function extendedErrors(p: Packet): ExtendedDnsError[] {
  const opt = (p.additionals ?? []).find((a) => a.type === 'OPT') as
    { options?: { code: number; data?: Buffer }[] } | undefined;
  return (opt?.options ?? [])
    .filter((o) => o.code === EDE_OPTION && o.data && o.data.length >= 2)
    .map((o) => {
      const code = o.data!.readUInt16BE(0);
      const text = o
        .data!.subarray(2)
        .toString('utf8')
        .replace(/[\x00-\x1f\x7f]+/g, ' ')
        .trim()
        .slice(0, EDE_TEXT_MAX);
      return { code, name: EDE_NAMES[code] ?? `code ${code}`, text };
    });
}
