// Owns: what name resolution means to the rest of the gateway: the `Resolver` interface that
// delivery, probes and revocation checks take (never the network class itself), the answer types
// with their DNSSEC status, and the one list of DNS failure kinds (`DnsErrorKind`, `DnsError`).
// Implemented by resolver.ts (the configured servers) and, in unit tests, by an in-process fake.
// Promises: a Resolver's failures are DnsError with a kind of DnsErrorKind, never a lowered answer:
// nxdomain/nodata are answers (with `secure` for an authenticated denial); the other kinds mean
// "could not find out" and are never "no record".
import type { RecordType } from 'dns-packet';

/** The one list of DNS failure kinds (classification, CLI texts and the trace use these). */
export type DnsErrorKind = 'nxdomain' | 'nodata' | 'servfail' | 'bogus' | 'timeout' | 'refused' | 'malformed';

/**
 * DNSSEC status of an answer (positive or negative). 'secure': validated by the resolver and
 * we trust it to say so; 'insecure': everything else (unsigned zone, no validating resolver,
 * dns.dnssec false). Bogus data is never an answer: it is a DnsError of kind 'bogus'.
 */
export type DnssecStatus = 'secure' | 'insecure';

/** An Extended DNS Error (RFC 8914, EDNS option 15) that came with a failed answer. */
export interface ExtendedDnsError {
  code: number;
  name: string;
  text: string;
}

export interface DnsErrorDetails {
  /** nxdomain/nodata: the denial was DNSSEC-authenticated along the whole CNAME chain. */
  secure?: boolean;
  /** The names followed (query name first, each CNAME target after it), the last where it ended. */
  names?: readonly string[];
  /** Extended DNS Errors the resolver sent (bogus/servfail). */
  ede?: readonly ExtendedDnsError[];
}

export class DnsError extends Error {
  /**
   * nxdomain/nodata only: true when the resolver authenticated the denial (AD bit, trusted
   * server, every CNAME on the way secure). A secure "no TLSA" means the domain publishes none;
   * an insecure one proves nothing. Always false for the other kinds.
   */
  readonly secure: boolean;
  readonly names: readonly string[];
  readonly ede: readonly ExtendedDnsError[];
  constructor(
    readonly kind: DnsErrorKind,
    readonly qname: string,
    readonly qtype: string,
    readonly detail = '',
    more: DnsErrorDetails = {},
  ) {
    super(`DNS ${qtype} ${qname}: ${kind}${detail ? ` (${detail})` : ''}`);
    this.name = 'DnsError';
    this.secure = (kind === 'nxdomain' || kind === 'nodata') && !!more.secure;
    this.names = more.names ?? [qname];
    this.ede = more.ede ?? [];
  }
  /** nxdomain/nodata are answers; the rest mean "could not find out". */
  get temporary(): boolean {
    return this.kind !== 'nxdomain' && this.kind !== 'nodata';
  }
  /** DNSSEC status of a negative answer ('insecure' for failures, which are not answers). */
  get status(): DnssecStatus {
    return this.secure ? 'secure' : 'insecure';
  }
}

/** A resource record as decoded (dns-packet's union type hides `data` behind OPT). */
export interface DnsRecord {
  type: string;
  name: string;
  ttl?: number;
  data: unknown;
}

export interface Lookup<T> {
  records: T[];
  /** status === 'secure' (kept for existing callers). */
  authenticated: boolean;
  /** 'secure' only when every answer on the way (each CNAME link included) was secure. */
  status: DnssecStatus;
  ttl: number;
  /**
   * The owner names from the query name through every CNAME target: `names[0]` is the name
   * asked for, the last one holds the records (RFC 7672 §2.2.2 needs it for the TLSA base
   * domain and the certificate name checks). Lower case, no trailing dot.
   */
  names: string[];
}
export interface MxRecord {
  exchange: string;
  priority: number;
}
export interface TlsaRecord {
  usage: number;
  selector: number;
  matchingType: number;
  data: Buffer;
}

/** MX records by preference; [] and nullMx for a null MX (RFC 7505). */
export type MxLookup = Lookup<MxRecord> & { nullMx: boolean };
/** Addresses of both families; a family whose lookup failed is listed in `failures`. */
export type AddressLookup = Lookup<string> & { failures: DnsError[] };

/**
 * Name resolution as the gateway uses it. Every method throws DnsError (nxdomain/nodata for a
 * denial, another kind for a failure); none ever returns a failure as an empty answer.
 */
export interface Resolver {
  /** Raw lookup of `type` at `name`, following CNAME chains. */
  lookup(name: string, type: RecordType): Promise<Lookup<DnsRecord>>;
  /** MX records; nullMx for a null MX (RFC 7505); throws nodata when there is no MX. */
  mx(domain: string): Promise<MxLookup>;
  /** IPv4 and IPv6 addresses; throws only when neither family could be found. */
  addresses(host: string): Promise<AddressLookup>;
  txt(name: string): Promise<Lookup<string>>;
  /** TLSA records (RFC 6698) at e.g. `_25._tcp.mx.example.com`. */
  tlsa(name: string): Promise<Lookup<TlsaRecord>>;
  ptr(ip: string): Promise<Lookup<string>>;
}
