// Owns: the syntax of network values in the configuration, as plain functions without I/O: domain
// names, "IP:port" listen addresses, IP addresses and CIDR blocks (and membership of an address
// in a list of blocks), smart hosts. No name is ever looked up here. Promise: the parsers return
// null for anything they do not accept; none throws.
import { BlockList, isIP } from 'node:net';

const domainRe = /^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)*$/i;

/** A DNS name: labels of letters, digits, "-" and "_", at most 253 characters. */
export const isDomainName = (d: string): boolean => domainRe.test(d);

/** "IP:port", "[v6]:port", "localhost:port" or ":port" (all IPv4 addresses); see config/listen.ts. */
export function parseListen(s: string): { host: string; port: number } | null {
  // Groups: 1 the bracketed IPv6 address, 2 the bare host (one of the two), 3 the port.
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(s.trim()) as
    [string, string | undefined, string | undefined, string] | null;
  if (!m) return null;
  const host = m[1] ?? (m[2] || '0.0.0.0');
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  if (m[1] !== undefined && isIP(host) !== 6) return null;
  if (m[2] && isIP(host) === 0 && host !== 'localhost') return null;
  return { host, port };
}

/** IPv4/IPv6 address or CIDR block. */
export function parseCidr(s: string): { ip: string; bits: number } | null {
  const [ip, len, extra] = s.trim().split('/') as [string, string?, string?];
  if (extra !== undefined) return null;
  const v = isIP(ip);
  if (!v) return null;
  const max = v === 4 ? 32 : 128;
  const bits = len === undefined ? max : Number(len);
  if (!Number.isInteger(bits) || bits < 0 || bits > max || (len !== undefined && !/^\d+$/.test(len))) return null;
  return { ip, bits };
}

/** A BlockList of CIDR strings (null for none). */
export function blockList(cidrs: readonly string[]): BlockList | null {
  if (!cidrs.length) return null;
  const b = new BlockList();
  for (const a of cidrs) {
    const p = parseCidr(a);
    if (p) b.addSubnet(p.ip, p.bits, isIP(p.ip) === 6 ? 'ipv6' : 'ipv4');
  }
  return b;
}

export const inBlocks = (b: BlockList | null, ip: string): boolean =>
  !!b && !!ip && isIP(ip) !== 0 && b.check(ip, isIP(ip) === 6 ? 'ipv6' : 'ipv4');

/** "host", "host:port", "ip", "ip:port", "[ipv6]:port". */
export function parseSmartHost(s: string): { host: string; port?: number } | null {
  const t = s.trim();
  const v6 = /^\[([0-9a-fA-F:.]+)\](?::(\d{1,5}))?$/.exec(t);
  if (v6) return isIP(v6[1]) === 6 ? { host: v6[1], ...(v6[2] ? { port: Number(v6[2]) } : {}) } : null;
  if (isIP(t) === 6) return { host: t };
  const m = /^([^:]+)(?::(\d{1,5}))?$/.exec(t);
  if (!m || (isIP(m[1]) === 0 && !isDomainName(m[1]))) return null;
  const port = m[2] ? Number(m[2]) : undefined;
  if (port !== undefined && (port < 1 || port > 65535)) return null;
  return { host: m[1].toLowerCase(), ...(port ? { port } : {}) };
}
