// An in-process Resolver for unit tests (in the spirit of mox's dns/mock.go): records per name and
// type, a DNSSEC status per name, scripted failures (any DnsErrorKind, with Extended DNS Errors)
// and delays. It answers through the same typed lookups as the network resolver (src/dns/typed.ts),
// so MX, null MX and address handling are the real ones; only the wire is fake. Every question is
// logged in `queries`.
import type { RecordType } from 'dns-packet';
import { TypedResolver } from '../../src/dns/typed.ts';
import {
  DnsError,
  type DnsErrorKind,
  type DnsRecord,
  type ExtendedDnsError,
  type Lookup,
  type TlsaRecord,
} from '../../src/dns/types.ts';

export interface FakeName {
  A?: string[];
  AAAA?: string[];
  TXT?: string[];
  PTR?: string[];
  MX?: { exchange: string; priority: number }[];
  TLSA?: TlsaRecord[];
  /** The name is an alias: every question follows it (at most 8 links, as the real resolver). */
  CNAME?: string;
  /** Answers and denials for this name are DNSSEC-secure. */
  secure?: boolean;
}

export type FakeZone = Record<string, FakeName>;

/** A scripted failure: the kind, and for bogus/servfail the Extended DNS Errors that came with it. */
export type FakeFailure = DnsErrorKind | { kind: DnsErrorKind; ede?: ExtendedDnsError[] };

const norm = (n: string) => n.toLowerCase().replace(/\.$/, '');
const MAX_CNAME = 8;

export class FakeResolver extends TypedResolver {
  /** Every question asked, in order ("mx.contoso.test A"). */
  readonly queries: string[] = [];
  private readonly failures = new Map<string, FakeFailure>();
  private readonly delays = new Map<string, number>();
  private readonly names = new Map<string, FakeName>();

  /** `secureDenials`: NXDOMAIN for unknown names is secure (a signed parent zone). */
  constructor(
    zone: FakeZone = {},
    private readonly opts: { secureDenials?: boolean } = {},
  ) {
    super();
    for (const [n, z] of Object.entries(zone)) this.set(n, z);
  }

  /** Publish (or replace) the records of `name`. */
  set(name: string, records: FakeName): this {
    this.names.set(norm(name), records);
    return this;
  }

  /** Fail questions for `name` (of `type` only, when given) with `failure`. */
  fail(name: string, failure: FakeFailure, type?: RecordType): this {
    this.failures.set(type ? `${norm(name)} ${type}` : norm(name), failure);
    return this;
  }

  /** Answer questions for `name` only after `ms` milliseconds. */
  delay(name: string, ms: number): this {
    this.delays.set(norm(name), ms);
    return this;
  }

  /** Questions asked for `name` (of `type`, when given). */
  asked(name: string, type?: string): number {
    return this.queries.filter((q) => {
      const [n, t] = q.split(' ');
      return n === norm(name) && (!type || t === type);
    }).length;
  }

  async lookup(name: string, type: RecordType): Promise<Lookup<DnsRecord>> {
    const names = [norm(name)];
    let secure = true;
    for (let hop = 0; hop <= MAX_CNAME; hop++) {
      const cur = names[names.length - 1];
      this.queries.push(`${cur} ${type}`);
      const ms = this.delays.get(cur);
      if (ms) await new Promise((r) => setTimeout(r, ms));
      const f = this.failures.get(`${cur} ${type}`) ?? this.failures.get(cur);
      if (f) {
        const { kind, ede } = typeof f === 'string' ? { kind: f, ede: undefined } : f;
        throw new DnsError(kind, name, type, 'scripted', { names, ...(ede ? { ede } : {}) });
      }
      const z = this.names.get(cur);
      if (!z) throw new DnsError('nxdomain', name, type, '', { secure: secure && !!this.opts.secureDenials, names });
      secure &&= !!z.secure;
      if (z.CNAME && type !== 'CNAME') {
        const next = norm(z.CNAME);
        if (names.includes(next)) throw new DnsError('malformed', name, type, `CNAME loop at ${next}`, { names });
        names.push(next);
        continue;
      }
      const records = recordsOf(cur, z, type);
      if (!records.length) throw new DnsError('nodata', name, type, '', { secure, names });
      return { records, authenticated: secure, status: secure ? 'secure' : 'insecure', ttl: 300, names: [...names] };
    }
    throw new DnsError('malformed', name, type, 'CNAME chain too long', { names });
  }
}

function recordsOf(name: string, z: FakeName, type: RecordType): DnsRecord[] {
  const rec = (data: unknown): DnsRecord => ({ type, name, ttl: 300, data });
  switch (type) {
    case 'MX':
      return (z.MX ?? []).map((m) => rec({ exchange: m.exchange, preference: m.priority }));
    case 'TLSA':
      return (z.TLSA ?? []).map((t) =>
        rec({ usage: t.usage, selector: t.selector, matchingType: t.matchingType, certificate: t.data }),
      );
    case 'A':
    case 'AAAA':
    case 'TXT':
    case 'PTR':
      return (z[type] ?? []).map(rec);
    default:
      return [];
  }
}
