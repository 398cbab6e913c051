// Owns: all name resolution of the gateway (MX, A, AAAA, TXT, TLSA, PTR), sent only to the
// configured `dns.servers` (or, when none are configured, the nameservers of /etc/resolv.conf).
// Exposes whether an answer was DNSSEC-authenticated (AD bit from a validating resolver).
// Promise: failures are typed DnsError kinds (nxdomain, nodata, servfail, timeout, refused,
// malformed) — never a lowered answer; answers are cached per their TTL, negative ones briefly.
import dgram from 'node:dgram';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import * as dnsPacket from 'dns-packet';
import type { Answer, Packet, RecordType } from 'dns-packet';

/** A resource record as decoded (the library's union type hides `data` behind OPT). */
interface Rec { type: string; name: string; ttl?: number; data: unknown }
type Decoded = Packet & { flag_tc?: boolean; flag_ad?: boolean; rcode?: string };

export type DnsErrorKind = 'nxdomain' | 'nodata' | 'servfail' | 'timeout' | 'refused' | 'malformed';

export class DnsError extends Error {
  constructor(readonly kind: DnsErrorKind, readonly qname: string, readonly qtype: string, detail = '') {
    super(`DNS ${qtype} ${qname}: ${kind}${detail ? ` (${detail})` : ''}`);
    this.name = 'DnsError';
  }
  /** nxdomain/nodata are answers; the rest mean "could not find out". */
  get temporary(): boolean { return this.kind !== 'nxdomain' && this.kind !== 'nodata'; }
}

export interface Lookup<T> { records: T[]; authenticated: boolean; ttl: number }
export interface MxRecord { exchange: string; priority: number }
export interface TlsaRecord { usage: number; selector: number; matchingType: number; data: Buffer }

interface Server { host: string; port: number }

export function parseServer(s: string): Server {
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(s) ?? /^([^:]+)(?::(\d+))?$/.exec(s);
  if (m) return { host: m[1], port: m[2] ? Number(m[2]) : 53 };
  return { host: s, port: 53 }; // bare IPv6
}

export function systemServers(file = '/etc/resolv.conf'): string[] {
  try {
    return readFileSync(file, 'utf8').split('\n').map((l) => /^\s*nameserver\s+(\S+)/.exec(l)?.[1]).filter((x): x is string => !!x);
  } catch { return []; }
}

const NEGATIVE_TTL = 60;
const MAX_CNAME = 8;

export interface ResolverOptions { timeoutMs?: number; attempts?: number; cacheMax?: number }

export class Resolver {
  private readonly servers: Server[];
  private readonly cache = new Map<string, { expires: number; value: Lookup<Rec> | DnsError }>();
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly cacheMax: number;

  constructor(servers: readonly string[], opts: ResolverOptions = {}) {
    const list = servers.length ? servers : systemServers();
    this.servers = list.map(parseServer);
    this.timeoutMs = opts.timeoutMs ?? 3000;
    this.attempts = opts.attempts ?? 2;
    this.cacheMax = opts.cacheMax ?? 10_000;
  }

  /** Raw lookup of `type` at `name`, following CNAME chains. */
  async lookup(name: string, type: RecordType): Promise<Lookup<Rec>> {
    let qname = name.toLowerCase().replace(/\.$/, '');
    let authenticated = true;
    let ttl = Infinity;
    for (let hop = 0; hop <= MAX_CNAME; hop++) {
      const r = await this.cached(qname, type);
      authenticated &&= r.authenticated;
      ttl = Math.min(ttl, r.ttl);
      const direct = r.records.filter((a) => a.type === type && a.name.toLowerCase() === qname);
      if (direct.length) return { records: direct, authenticated, ttl };
      // Follow CNAMEs, using what the resolver already included in the answer.
      const cname = r.records.find((a) => a.type === 'CNAME' && a.name.toLowerCase() === qname);
      if (!cname) {
        const any = r.records.filter((a) => a.type === type);
        if (any.length) return { records: any, authenticated, ttl };
        throw new DnsError('nodata', name, type);
      }
      qname = String(cname.data).toLowerCase().replace(/\.$/, '');
      const inline = r.records.filter((a) => a.type === type && a.name.toLowerCase() === qname);
      if (inline.length) return { records: inline, authenticated, ttl };
    }
    throw new DnsError('malformed', name, type, 'CNAME chain too long');
  }

  private async cached(name: string, type: RecordType): Promise<Lookup<Rec>> {
    const key = `${type} ${name}`;
    const hit = this.cache.get(key);
    if (hit && hit.expires > Date.now()) {
      if (hit.value instanceof DnsError) throw hit.value;
      return hit.value;
    }
    try {
      const v = await this.query(name, type);
      this.store(key, v, Math.max(0, Math.min(v.ttl, 86_400)));
      return v;
    } catch (e) {
      if (e instanceof DnsError && !e.temporary) this.store(key, e, NEGATIVE_TTL);
      throw e;
    }
  }

  private store(key: string, value: Lookup<Rec> | DnsError, ttl: number): void {
    if (ttl <= 0) return;
    if (this.cache.size >= this.cacheMax) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, { expires: Date.now() + ttl * 1000, value });
  }

  clearCache(): void { this.cache.clear(); }

  /** One question to the servers in turn (UDP, TCP when truncated). */
  private async query(name: string, type: RecordType): Promise<Lookup<Rec>> {
    if (!this.servers.length) throw new DnsError('servfail', name, type, 'no DNS servers configured and none in /etc/resolv.conf');
    let last: DnsError = new DnsError('timeout', name, type);
    for (let attempt = 0; attempt < this.attempts; attempt++) {
      for (const s of this.servers) {
        try {
          let p = await this.exchange(s, name, type, false);
          if (p.flag_tc) p = await this.exchange(s, name, type, true);
          return this.interpret(p, name, type);
        } catch (e) {
          if (!(e instanceof DnsError)) throw e;
          if (e.kind === 'nxdomain' || e.kind === 'nodata') throw e;
          last = e;
        }
      }
    }
    throw last;
  }

  private interpret(p: Decoded, name: string, type: RecordType): Lookup<Rec> {
    const rcode = p.rcode ?? 'NOERROR';
    if (rcode === 'NXDOMAIN') throw new DnsError('nxdomain', name, type);
    if (rcode === 'SERVFAIL') throw new DnsError('servfail', name, type);
    if (rcode === 'REFUSED') throw new DnsError('refused', name, type);
    if (rcode !== 'NOERROR') throw new DnsError('servfail', name, type, rcode);
    const answers = (p.answers ?? []) as unknown as Rec[];
    if (!answers.length) throw new DnsError('nodata', name, type);
    const ttl = Math.min(...answers.map((a) => (typeof a.ttl === 'number' ? a.ttl : 300)));
    return { records: answers, authenticated: !!p.flag_ad, ttl };
  }

  private exchange(s: Server, name: string, type: RecordType, tcp: boolean): Promise<Decoded> {
    const id = randomInt(1, 65_535);
    const q: Packet = {
      type: 'query', id, flags: dnsPacket.RECURSION_DESIRED | dnsPacket.AUTHENTIC_DATA,
      questions: [{ type, name, class: 'IN' }],
      additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232, flags: dnsPacket.DNSSEC_OK } as unknown as Answer],
    };
    return tcp ? this.tcp(s, q, name, type) : this.udp(s, q, name, type);
  }

  private udp(s: Server, q: Packet, name: string, type: RecordType): Promise<Decoded> {
    return new Promise((resolve, reject) => {
      const sock = dgram.createSocket(net.isIPv6(s.host) ? 'udp6' : 'udp4');
      const done = (e: Error | null, p?: Decoded) => { clearTimeout(t); sock.close(); if (e) reject(e); else resolve(p!); };
      const t = setTimeout(() => done(new DnsError('timeout', name, type, `${s.host}:${s.port}`)), this.timeoutMs);
      sock.on('error', (e) => done(new DnsError('servfail', name, type, e.message)));
      sock.on('message', (msg) => {
        let p: Packet;
        try { p = dnsPacket.decode(msg); } catch { return; }
        if (p.id !== q.id || p.questions?.[0]?.name.toLowerCase() !== name.toLowerCase()) return; // not ours
        done(null, p);
      });
      sock.send(dnsPacket.encode(q), s.port, s.host);
    });
  }

  private tcp(s: Server, q: Packet, name: string, type: RecordType): Promise<Decoded> {
    return new Promise((resolve, reject) => {
      const sock = net.connect({ host: s.host, port: s.port });
      let buf = Buffer.alloc(0);
      const done = (e: Error | null, p?: Decoded) => { clearTimeout(t); sock.destroy(); if (e) reject(e); else resolve(p!); };
      const t = setTimeout(() => done(new DnsError('timeout', name, type, `${s.host}:${s.port}/tcp`)), this.timeoutMs);
      sock.on('error', (e) => done(new DnsError('servfail', name, type, e.message)));
      sock.on('connect', () => sock.write(dnsPacket.streamEncode(q)));
      sock.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
        try {
          const p = dnsPacket.streamDecode(buf);
          if (p.id !== q.id) { done(new DnsError('malformed', name, type, 'id mismatch')); return; }
          done(null, p);
        } catch { done(new DnsError('malformed', name, type)); }
      });
    });
  }

  // ---- typed helpers -------------------------------------------------------------------

  /** MX records by preference; [] for a null MX (RFC 7505); throws nodata when there is no MX. */
  async mx(domain: string): Promise<Lookup<MxRecord> & { nullMx: boolean }> {
    const r = await this.lookup(domain, 'MX');
    const records = r.records.map((a) => a.data as { exchange: string; preference: number })
      .map((d) => ({ exchange: d.exchange.toLowerCase().replace(/\.$/, ''), priority: d.preference }));
    const nullMx = records.length === 1 && records[0].exchange === '';
    return { records: nullMx ? [] : records, authenticated: r.authenticated, ttl: r.ttl, nullMx };
  }

  /** IPv4 and IPv6 addresses of a host (either family may be absent). */
  async addresses(host: string): Promise<Lookup<string>> {
    const results = await Promise.allSettled([this.lookup(host, 'A'), this.lookup(host, 'AAAA')]);
    const ok = results.filter((r): r is PromiseFulfilledResult<Lookup<Rec>> => r.status === 'fulfilled').map((r) => r.value);
    if (!ok.length) {
      const errs = results.map((r) => (r as PromiseRejectedResult).reason);
      const temp = errs.find((e) => !(e instanceof DnsError) || e.temporary);
      throw temp ?? errs[0];
    }
    return {
      records: ok.flatMap((l) => l.records.map((a) => String(a.data))),
      authenticated: ok.every((l) => l.authenticated), ttl: Math.min(...ok.map((l) => l.ttl)),
    };
  }

  async txt(name: string): Promise<Lookup<string>> {
    const r = await this.lookup(name, 'TXT');
    return { ...r, records: r.records.map((a) => ([] as (string | Buffer)[]).concat(a.data as string | Buffer | (string | Buffer)[]).map(String).join('')) };
  }

  async tlsa(name: string): Promise<Lookup<TlsaRecord>> {
    const r = await this.lookup(name, 'TLSA');
    return { ...r, records: r.records.map((a) => { const d = a.data as { usage: number; selector: number; matchingType: number; certificate: Buffer }; return { usage: d.usage, selector: d.selector, matchingType: d.matchingType, data: d.certificate }; }) };
  }

  async ptr(ip: string): Promise<Lookup<string>> {
    const r = await this.lookup(reverseName(ip), 'PTR');
    return { ...r, records: r.records.map((a) => String(a.data).replace(/\.$/, '')) };
  }
}

export function reverseName(ip: string): string {
  if (net.isIPv4(ip)) return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
  const parts = ip.split('::');
  const head = parts[0] ? parts[0].split(':') : [];
  const tail = parts.length > 1 && parts[1] ? parts[1].split(':') : [];
  const groups = [...head, ...Array(8 - head.length - tail.length).fill('0'), ...tail];
  return `${groups.map((g) => g.padStart(4, '0')).join('').split('').reverse().join('.')}.ip6.arpa`;
}
