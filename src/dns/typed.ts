// Owns: the typed lookups (MX with null MX, addresses of both families, TXT, TLSA, PTR) on top of
// one raw `lookup`: shared by the network resolver (resolver.ts) and the unit tests' fake, so both
// read records the same way.
// Promises: what `lookup` promises (types.ts); a family whose address lookup failed is reported
// in `failures`, never silently dropped, and a lookup throws only when neither family answered.
import net from 'node:net';
import type { RecordType } from 'dns-packet';
import {
  DnsError,
  type AddressLookup,
  type DnsRecord,
  type Lookup,
  type MxLookup,
  type Resolver,
  type TlsaRecord,
} from './types.ts';
import { errorMessage } from '../util/errors.ts';

const norm = (n: string) => n.toLowerCase().replace(/\.$/, '');

export abstract class TypedResolver implements Resolver {
  abstract lookup(name: string, type: RecordType): Promise<Lookup<DnsRecord>>;

  /**
   * MX records; [] for a null MX; throws nodata when there is no MX. RFC 7505 §3: a null MX is
   * exactly one MX record with preference 0 and exchange "." (the root); a "." exchange in any
   * other RRset names no host and is left out (never a host with an empty name).
   */
  async mx(domain: string): Promise<MxLookup> {
    const r = await this.lookup(domain, 'MX');
    const all = r.records
      .map((a) => a.data as { exchange: string; preference: number })
      .map((d) => ({ exchange: norm(d.exchange), priority: d.preference }));
    const nullMx = all.length === 1 && all[0].exchange === '' && all[0].priority === 0;
    return { ...r, records: all.filter((m) => m.exchange !== ''), nullMx };
  }

  /**
   * IPv4 and IPv6 addresses of a host (either family may be absent). `status` is 'secure' only
   * when every answer received (records or denial, for both families) was secure; a family
   * whose lookup failed is left out of `records` and `status` and listed in `failures`.
   */
  async addresses(host: string): Promise<AddressLookup> {
    const results = await Promise.allSettled([this.lookup(host, 'A'), this.lookup(host, 'AAAA')]);
    const ok = results
      .filter((r): r is PromiseFulfilledResult<Lookup<DnsRecord>> => r.status === 'fulfilled')
      .map((r) => r.value);
    const errs = results
      .map((r, i) => (r.status === 'fulfilled' ? undefined : asDnsError(r.reason, host, i ? 'AAAA' : 'A')))
      .filter((e): e is DnsError => !!e);
    if (!ok.length) throw errs.find((e) => e.temporary) ?? errs[0];
    const denials = errs.filter((e) => !e.temporary);
    const secure = ok.every((l) => l.authenticated) && denials.every((e) => e.secure);
    return {
      records: ok.flatMap((l) => l.records.map((a) => String(a.data))),
      authenticated: secure,
      status: secure ? 'secure' : 'insecure',
      ttl: Math.min(...ok.map((l) => l.ttl)),
      names: ok[0].names,
      failures: errs.filter((e) => e.temporary),
    };
  }

  async txt(name: string): Promise<Lookup<string>> {
    const r = await this.lookup(name, 'TXT');
    return {
      ...r,
      records: r.records.map((a) =>
        ([] as (string | Buffer)[])
          .concat(a.data as string | Buffer | (string | Buffer)[])
          .map(String)
          .join(''),
      ),
    };
  }

  /**
   * TLSA records at `name` (e.g. `_25._tcp.mx.example.com`). For DANE read `status` (only a
   * 'secure' RRset counts) and, on a DnsError nxdomain/nodata, its `secure` flag: a secure
   * denial means "no TLSA records", an insecure one proves nothing; any other kind is a
   * failure that must defer delivery (RFC 7672 §2.2).
   */
  async tlsa(name: string): Promise<Lookup<TlsaRecord>> {
    const r = await this.lookup(name, 'TLSA');
    return {
      ...r,
      records: r.records.map((a) => {
        const d = a.data as { usage: number; selector: number; matchingType: number; certificate: Buffer };
        return { usage: d.usage, selector: d.selector, matchingType: d.matchingType, data: d.certificate };
      }),
    };
  }

  async ptr(ip: string): Promise<Lookup<string>> {
    const r = await this.lookup(reverseName(ip), 'PTR');
    return { ...r, records: r.records.map((a) => String(a.data).replace(/\.$/, '')) };
  }
}

function asDnsError(e: unknown, name: string, type: string): DnsError {
  return e instanceof DnsError ? e : new DnsError('malformed', name, type, errorMessage(e));
}

export function reverseName(ip: string): string {
  if (net.isIPv4(ip)) return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
  const parts = ip.split('::');
  const head = parts[0] ? parts[0].split(':') : [];
  const tail = parts.length > 1 && parts[1] ? parts[1].split(':') : [];
  const groups = [...head, ...Array(8 - head.length - tail.length).fill('0'), ...tail];
  return `${groups
    .map((g) => g.padStart(4, '0'))
    .join('')
    .split('')
    .reverse()
    .join('.')}.ip6.arpa`;
}
