// Owns: what `smtp.listen` (and `admin.listen`) mean as sockets: each entry's address in one canonical spelling, the
// entries that cannot all be bound together, and how each entry is bound. No name is ever looked
// up here: an entry is an IP address, or "localhost", which means 127.0.0.1.
// Promise: a list without problems binds on Linux without one entry taking another's address
// (checked by `config check` and at start, so both agree).
// A worker process (workers: N) does not bind: it listens on the socket its supervisor bound for the
// same address, handed down as a file descriptor (LISTEN_FDS_ENV, set by workers/supervisor.ts).
import { isIP, type ListenOptions } from 'node:net';
import { parseListen } from '../util/net.ts';

export interface ListenSocket {
  entry: string;
  host: string;
  port: number;
  family: 4 | 6;
  ipv6Only: boolean;
}

/** The one spelling of an IP address ("0:0::0" -> "::", "localhost" -> "127.0.0.1"). */
function canonical(host: string): string {
  if (host === 'localhost') return '127.0.0.1';
  return isIP(host) === 6 ? new URL(`http://[${host}]/`).hostname.slice(1, -1) : host;
}

const WILDCARD = { 4: '0.0.0.0', 6: '::' } as const;

/** "::ffff:7f00:1" -> "127.0.0.1"; undefined for other addresses. */
function mappedIpv4(host: string): string | undefined {
  const m = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
  if (!m) return undefined;
  const [a, b] = [parseInt(m[1], 16), parseInt(m[2], 16)];
  return `${a >> 8}.${a & 255}.${b >> 8}.${b & 255}`;
}

/**
 * How to bind each entry. "[::]:P" alone takes IPv4 too (dual-stack, as the OS allows); listed
 * with IPv4 entries on the same port it takes IPv6 only, so "0.0.0.0:25" and "[::]:25" work together.
 */
export function listenSockets(entries: readonly string[]): ListenSocket[] {
  const parsed = entries.map((entry) => {
    const p = parseListen(entry)!;
    const host = canonical(p.host);
    return { entry, host, port: p.port, family: isIP(host) as 4 | 6 };
  });
  return parsed.map((s) => ({
    ...s,
    ipv6Only: s.host === WILDCARD[6] && parsed.some((o) => o.family === 4 && o.port === s.port),
  }));
}

/** Entries that cannot be bound together, one line each, naming the entries and the fix. */
export function listenProblems(entries: readonly string[]): string[] {
  if (entries.some((e) => parseListen(e) === null)) return []; // the schema reports those
  const socks = listenSockets(entries);
  const problems: string[] = [];
  socks.forEach((s, i) => {
    const at = `smtp.listen[${i}]`;
    const v4 = mappedIpv4(s.host);
    if (v4) {
      problems.push(`${at}: "${s.entry}" is an IPv4 address written as IPv6; write it as "${v4}:${s.port}"`);
      return;
    }
    const earlier = socks
      .slice(0, i)
      .find(
        (o) =>
          o.port === s.port &&
          o.family === s.family &&
          (o.host === s.host || o.host === WILDCARD[s.family] || s.host === WILDCARD[s.family]),
      );
    if (!earlier) return;
    if (earlier.host === s.host) {
      problems.push(`${at}: "${s.entry}" is the same address as "${earlier.entry}"; list each address once`);
    } else {
      const [wild, other] = earlier.host === WILDCARD[s.family] ? [earlier, s] : [s, earlier];
      problems.push(
        `${at}: "${wild.entry}" already listens on every IPv${s.family} address, including "${other.entry}"; keep ` +
          `one of them`,
      );
    }
  });
  return problems;
}

/** admin.listen against smtp.listen: the admin centre cannot share an SMTP listener's address. */
export function adminListenProblems(admin: { enabled: boolean; listen: string }, smtp: readonly string[]): string[] {
  if (!admin.enabled || parseListen(admin.listen) === null || smtp.some((e) => parseListen(e) === null)) return [];
  const [a, ...others] = listenSockets([admin.listen, ...smtp]);
  const clash = others.find(
    (o) =>
      o.port === a.port &&
      o.family === a.family &&
      (o.host === a.host || o.host === WILDCARD[a.family] || a.host === WILDCARD[a.family]),
  );
  return clash
    ? [
        `admin.listen: "${admin.listen}" takes the address of smtp.listen "${clash.entry}"; give the admin centre ` +
          `another port`,
      ]
    : [];
}

/** Environment variable with the sockets a supervisor hands to a worker: JSON {"host port": fd}. */
export const LISTEN_FDS_ENV = 'PORTCULLIS_LISTEN_FDS';

/** The key of a socket in LISTEN_FDS_ENV. */
export const socketKey = (s: Pick<ListenSocket, 'host' | 'port'>): string => `${s.host} ${s.port}`;

/** The descriptor this process inherited for the socket, if it runs as a worker. */
export function inheritedFd(s: Pick<ListenSocket, 'host' | 'port'>): number | undefined {
  const raw = process.env[LISTEN_FDS_ENV];
  if (!raw) return undefined;
  const fd = (JSON.parse(raw) as Record<string, number>)[socketKey(s)];
  return typeof fd === 'number' ? fd : undefined;
}

/** What to pass to listen(): the inherited socket in a worker, else the address to bind. */
export function listenOptions(s: ListenSocket, backlog?: number): ListenOptions | { fd: number; backlog?: number } {
  const fd = inheritedFd(s);
  return fd === undefined ? { host: s.host, port: s.port, ipv6Only: s.ipv6Only, backlog } : { fd, backlog };
}
