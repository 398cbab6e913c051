// A small DNS server for tests, on loopback (UDP and TCP on the same port). Zones are plain data.
import dgram from 'node:dgram';
import net from 'node:net';
import * as dnsPacket from 'dns-packet';
import type { Packet } from 'dns-packet';

export type Zone = Record<
  string,
  {
    A?: string[];
    AAAA?: string[];
    MX?: { exchange: string; priority: number }[];
    CNAME?: string;
    TXT?: string[];
    TLSA?: { usage: number; selector: number; matchingType: number; data: Buffer }[];
    PTR?: string[];
    /** Force an outcome for this name: 'SERVFAIL' | 'REFUSED' | 'drop' (no answer at all). */
    fail?: 'SERVFAIL' | 'REFUSED' | 'drop';
    /** AD bit on answers to questions for this name (overrides the server-wide `authenticated`). */
    authenticated?: boolean;
    /**
     * This name is a zone apex: NXDOMAIN and NODATA answers for it and the names under it carry its
     * SOA in the authority section (RFC 2308 §3), with this TTL and MINIMUM field as given.
     */
    SOA?: { ttl: number; minimum: number };
  }
>;

/** The SOA of the closest enclosing zone apex of `name`, as an authority record, if any. */
function soaFor(zone: Zone, name: string): object[] {
  const labels = name.split('.');
  for (let i = 0; i < labels.length; i++) {
    const apex = labels.slice(i).join('.');
    const soa = zone[apex]?.SOA;
    if (soa)
      return [
        {
          type: 'SOA',
          name: apex,
          ttl: soa.ttl,
          data: {
            mname: `ns.${apex}`,
            rname: `hostmaster.${apex}`,
            serial: 1,
            refresh: 3600,
            retry: 600,
            expire: 86_400,
            minimum: soa.minimum,
          },
        },
      ];
  }
  return [];
}

export interface DnsServer {
  port: number;
  server: string;
  zone: Zone;
  queries: { name: string; type: string }[];
  authenticated: boolean;
  close(): Promise<void>;
}

function answer(zone: Zone, q: { name: string; type: string }, auth: boolean): Buffer | null {
  const name = q.name.toLowerCase().replace(/\.$/, '');
  const z = zone[name];
  const ad = z?.authenticated ?? auth;
  const base = {
    type: 'response' as const,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (ad ? dnsPacket.AUTHENTIC_DATA : 0),
    questions: [q as Packet['questions'] extends (infer T)[] | undefined ? T : never],
  };
  if (z?.fail === 'drop') return null;
  const rcode = (r: string) =>
    dnsPacket.encode({
      ...base,
      id: 0,
      flags: base.flags | ({ SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as Record<string, number>)[r],
      ...(r === 'NXDOMAIN' ? { authorities: soaFor(zone, name) } : {}),
    } as Packet);
  if (z?.fail) return rcode(z.fail);
  if (!z) return rcode('NXDOMAIN');
  const answers: object[] = [];
  const ttl = 300;
  if (z.CNAME && q.type !== 'CNAME') {
    answers.push({ type: 'CNAME', name, ttl, data: z.CNAME });
    const t = zone[z.CNAME];
    const recs = t?.[q.type as 'A'];
    if (Array.isArray(recs)) for (const r of recs) answers.push({ type: q.type, name: z.CNAME, ttl, data: r });
  } else if (q.type === 'MX')
    for (const m of z.MX ?? [])
      answers.push({ type: 'MX', name, ttl, data: { exchange: m.exchange, preference: m.priority } });
  else if (q.type === 'TLSA')
    for (const t of z.TLSA ?? [])
      answers.push({
        type: 'TLSA',
        name,
        ttl,
        data: { usage: t.usage, selector: t.selector, matchingType: t.matchingType, certificate: t.data },
      });
  else
    for (const r of z[q.type as 'A' | 'AAAA' | 'TXT' | 'PTR'] ?? []) answers.push({ type: q.type, name, ttl, data: r });
  return dnsPacket.encode({
    ...base,
    id: 0,
    answers,
    ...(answers.length ? {} : { authorities: soaFor(zone, name) }),
  } as Packet);
}

export async function startDnsServer(zone: Zone, host = '127.0.0.1'): Promise<DnsServer> {
  const queries: DnsServer['queries'] = [];
  const state = { authenticated: false };
  const reply = (msg: Buffer): Buffer | null => {
    let p: Packet;
    try {
      p = dnsPacket.decode(msg);
    } catch {
      return null;
    }
    const q = p.questions?.[0];
    if (!q) return null;
    queries.push({ name: q.name, type: q.type });
    const out = answer(zone, q, state.authenticated);
    if (!out) return null;
    out.writeUInt16BE(p.id ?? 0, 0);
    return out;
  };
  const tcp = net.createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('error', () => {});
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 2 || buf.length < 2 + buf.readUInt16BE(0)) return;
      const r = reply(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      if (r) {
        const len = Buffer.alloc(2);
        len.writeUInt16BE(r.length);
        s.end(Buffer.concat([len, r]));
      } else s.destroy();
    });
  });
  // One port number for both: the UDP socket takes a free one, TCP the same; when another process
  // holds that number on TCP (tests run in parallel), both try again with another.
  let udp: dgram.Socket | undefined;
  let port = 0;
  for (let attempt = 1; !udp; attempt++) {
    const u = dgram.createSocket('udp4');
    await new Promise<void>((r) => u.bind(0, host, () => r()));
    port = u.address().port;
    try {
      await new Promise<void>((r, j) => {
        tcp.once('error', j);
        tcp.listen(port, host, () => {
          tcp.off('error', j);
          r();
        });
      });
      udp = u;
    } catch (e) {
      u.close();
      if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 20) throw e;
    }
  }
  const sock = udp;
  sock.on('message', (msg, rinfo) => {
    const r = reply(msg);
    if (r) sock.send(r, rinfo.port, rinfo.address);
  });
  return {
    port,
    server: `${host}:${port}`,
    zone,
    queries,
    get authenticated() {
      return state.authenticated;
    },
    set authenticated(v: boolean) {
      state.authenticated = v;
    },
    close: () =>
      new Promise<void>((r) => {
        sock.close();
        tcp.close(() => r());
      }),
  };
}
