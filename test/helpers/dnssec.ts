// A real DNSSEC test rig on loopback, started like the throwaway Postfix: NSD serves a signed
// `test.` zone and its child zones (keys from ldns-keygen, signatures from ldns-signzone), and
// Unbound validates them from a test trust anchor for `test.`. The gateway's `dns.servers` is
// the Unbound address (rig.server). Needs root and the Debian packages nsd, unbound, ldnsutils.
//
// Loopback only: NSD and Unbound listen on their own 127.0.53.x addresses on free high ports;
// Unbound sends queries only from its loopback address (outgoing-interface), has a stub for "."
// and for every zone pointing at NSD (no root hints, nothing on port 53), no IPv6. Keys are made
// once per process and zone name and reused; a rig starts in well under a second.
//
// Zone modes (each zone below `test.`, delegated from the deepest zone above it, e.g.
// `fabrikam.test` from `test.` and `_tcp.mx.fabrikam.test` from `fabrikam.test`):
//   secure   signed, DS in test.                    → answers 'secure'
//   insecure unsigned, no DS                        → answers 'insecure'
//   expired  signed with expired signatures, DS     → SERVFAIL, EDE 7 Signature Expired
//   stripped unsigned, but DS in test.              → SERVFAIL, EDE DNSSEC (DNSKEY/RRSIGs missing)
//   dead     delegated (no DS), NSD has no data     → SERVFAIL without a DNSSEC reason
// `forged` replaces RRsets after signing and keeps the old signatures (bogus in a signed zone).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { existsSync, mkdirSync, openSync, closeSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as dnsPacket from 'dns-packet';

export type ZoneMode = 'secure' | 'insecure' | 'expired' | 'stripped' | 'dead';

/** Records at one owner name. */
export interface Rrs {
  A?: string[];
  AAAA?: string[];
  /** exchange '' is a null MX (RFC 7505). */
  MX?: { exchange: string; priority: number }[];
  CNAME?: string;
  TXT?: string[];
  TLSA?: { usage: number; selector: number; matchingType: number; data: Buffer }[];
}

export interface DnssecZones {
  /**
   * Zones below test. by name and how they are served: e.g. 'fabrikam.test', or
   * '_tcp.mx.fabrikam.test' as 'dead' for a TLSA lookup that fails under a secure MX host.
   */
  zones: Record<string, ZoneMode>;
  /** Records by absolute owner name; each goes into the deepest zone containing it (test. included). */
  records: Record<string, Rrs>;
  /** RRsets replaced after signing, keeping the old signatures: a forgery the validator must catch. */
  forged?: Record<string, Rrs>;
}

export interface DnssecRigOptions extends DnssecZones {
  /** Folder for keys, zones, configs and logs (created if missing). */
  base: string;
  /** Loopback address of NSD (default 127.0.53.1) and of Unbound (default 127.0.53.2). */
  authorityHost?: string;
  resolverHost?: string;
  /** Port of Unbound (default: a free one). 53 for clients that can only be told an address (libc's resolv.conf). */
  resolverPort?: number;
}

export interface DnssecRig {
  /** Unbound, "IP:port": the validating resolver to put in dns.servers. */
  server: string;
  /** NSD, "IP:port" (answers without validation; for tests that want the raw data). */
  authority: string;
  /** Replace the records and forgeries (same zones and keys), re-sign, reload NSD, flush Unbound. */
  update(z: Pick<DnssecZones, 'records'> & Partial<Pick<DnssecZones, 'forged'>>): Promise<void>;
  /** Every upstream "IP@port" Unbound has talked to (its infrastructure cache): only NSD, ever. */
  upstreams(): Promise<string[]>;
  /** Unbound's and NSD's logs so far. */
  resolverLog(): string;
  authorityLog(): string;
  stop(): Promise<void>;
}

const NSD = '/usr/sbin/nsd';
const NSD_CONTROL = '/usr/sbin/nsd-control';
const UNBOUND = '/usr/sbin/unbound';
const UNBOUND_CONTROL = '/usr/sbin/unbound-control';
const KEYGEN = '/usr/bin/ldns-keygen';
const SIGNZONE = '/usr/bin/ldns-signzone';
const TTL = 60;
const DAY = 86_400;

function run(file: string, args: string[], cwd?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { cwd, timeout: 20_000, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err)
        reject(
          new Error(
            `${path.basename(file)} ${args.join(' ')} failed: ${err.message}\n${String(stderr)}${String(stdout)}`,
          ),
        );
      else resolve(String(stdout));
    });
  });
}

const norm = (n: string) => n.toLowerCase().replace(/\.$/, '');
const fqdn = (n: string) => `${norm(n)}.`;
const within = (name: string, zone: string) => name === zone || name.endsWith(`.${zone}`);

// ---- keys: one ECDSA P-256 key (KSK flag, signs everything) per zone name, per process -----

interface KeyFiles {
  base: string;
  key: string;
  private: string;
  ds: string;
}
const keyCache = new Map<string, Promise<KeyFiles>>();

function zoneKey(zone: string, scratch: string): Promise<KeyFiles> {
  let k = keyCache.get(zone);
  if (!k) {
    k = (async () => {
      const dir = path.join(scratch, 'keygen', zone);
      mkdirSync(dir, { recursive: true });
      const base = (await run(KEYGEN, ['-a', 'ECDSAP256SHA256', '-k', fqdn(zone)], dir)).trim();
      const read = (ext: string) => readFileSync(path.join(dir, `${base}.${ext}`), 'utf8');
      return { base, key: read('key'), private: read('private'), ds: read('ds') };
    })();
    keyCache.set(zone, k);
    k.catch(() => keyCache.delete(zone));
  }
  return k;
}

/** Write a zone's key files into `dir`; returns the base name for ldns-signzone. */
function installKey(k: KeyFiles, dir: string): string {
  for (const ext of ['key', 'private', 'ds'] as const) writeFileSync(path.join(dir, `${k.base}.${ext}`), k[ext]);
  return path.join(dir, k.base);
}

// ---- zone files --------------------------------------------------------------------------

function rdataLines(owner: string, r: Rrs): string[] {
  const o = fqdn(owner);
  const line = (type: string, data: string) => `${o}\t${TTL}\tIN\t${type}\t${data}`;
  const out: string[] = [];
  for (const a of r.A ?? []) out.push(line('A', a));
  for (const a of r.AAAA ?? []) out.push(line('AAAA', a));
  for (const m of r.MX ?? []) out.push(line('MX', `${m.priority} ${m.exchange ? fqdn(m.exchange) : '.'}`));
  if (r.CNAME) out.push(line('CNAME', fqdn(r.CNAME)));
  for (const t of r.TXT ?? []) {
    const chunks = t.match(/[\s\S]{1,255}/g) ?? [''];
    out.push(line('TXT', chunks.map((c) => `"${c.replace(/["\\]/g, '\\$&')}"`).join(' ')));
  }
  for (const t of r.TLSA ?? [])
    out.push(line('TLSA', `${t.usage} ${t.selector} ${t.matchingType} ${t.data.toString('hex') || '00'}`));
  return out;
}

const TYPES = ['A', 'AAAA', 'MX', 'CNAME', 'TXT', 'TLSA'] as const;

/** Remove the RRsets named in `forged` from a signed zone file (RRSIGs stay) and add the forged ones. */
function forge(signed: string, forged: Record<string, Rrs>): string {
  const drop = new Set<string>();
  for (const [owner, r] of Object.entries(forged))
    for (const t of TYPES) if (r[t] !== undefined) drop.add(`${fqdn(owner)} ${t}`);
  const kept = signed.split('\n').filter((l) => {
    const f = l.split(/\s+/);
    return !(f.length > 4 && drop.has(`${f[0].toLowerCase()} ${f[3]}`));
  });
  return [...kept, ...Object.entries(forged).flatMap(([o, r]) => rdataLines(o, r))].join('\n') + '\n';
}

// ---- ports and readiness ----------------------------------------------------------------

async function freePort(host: string): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const srv = net.createServer();
    const port = await new Promise<number>((res, rej) => {
      srv.once('error', rej);
      srv.listen(0, host, () => res((srv.address() as net.AddressInfo).port));
    });
    const udp = dgram.createSocket('udp4');
    const ok = await new Promise<boolean>((res) => {
      udp.once('error', () => res(false));
      udp.bind(port, host, () => res(true));
    });
    await new Promise<void>((r) => srv.close(() => r()));
    if (ok) await new Promise<void>((r) => udp.close(() => r()));
    else
      try {
        udp.close();
      } catch {
        /* never bound */
      }
    if (ok) return port;
  }
  throw new Error(`no free UDP+TCP port on ${host}`);
}

/** One UDP question; resolves with the decoded answer or undefined after `ms`. */
function ask(
  host: string,
  port: number,
  name: string,
  type: string,
  ms = 500,
): Promise<(dnsPacket.Packet & { flag_ad?: boolean; rcode?: string }) | undefined> {
  return new Promise((resolve) => {
    const sock = dgram.createSocket('udp4');
    const id = 1 + Math.floor(Math.random() * 65_000);
    const t = setTimeout(() => {
      sock.close();
      resolve(undefined);
    }, ms);
    sock.on('error', () => {
      clearTimeout(t);
      sock.close();
      resolve(undefined);
    });
    sock.on('message', (m) => {
      let p: dnsPacket.Packet;
      try {
        p = dnsPacket.decode(m);
      } catch {
        return;
      }
      if (p.id !== id) return;
      clearTimeout(t);
      sock.close();
      resolve(p);
    });
    sock.send(
      dnsPacket.encode({
        type: 'query',
        id,
        flags: dnsPacket.RECURSION_DESIRED | dnsPacket.AUTHENTIC_DATA,
        questions: [{ type: type as 'SOA', name, class: 'IN' }],
        additionals: [
          { type: 'OPT', name: '.', udpPayloadSize: 1232, flags: dnsPacket.DNSSEC_OK } as unknown as dnsPacket.Answer,
        ],
      }),
      port,
      host,
    );
  });
}

async function waitFor(what: string, check: () => Promise<boolean>, log: () => string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end)
      throw new Error(`${what}: not ready after ${ms} ms\n${log().split('\n').slice(-30).join('\n')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ---- processes ---------------------------------------------------------------------------

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running)
    if (c.pid)
      try {
        process.kill(-c.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
});

function start(file: string, args: string[], logFile: string): ChildProcess {
  const fd = openSync(logFile, 'a');
  // Own process group, so that stop() ends NSD's server and xfrd children with it.
  const c = spawn(file, args, { detached: true, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  c.unref(); // a rig a test forgot to stop must not keep the test process alive (the exit hook ends it)
  running.add(c);
  c.once('exit', () => running.delete(c));
  return c;
}

async function stopProcess(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null || !c.pid) return;
  const group = c.pid;
  const killGroup = () => {
    try {
      process.kill(-group, 'SIGKILL');
    } catch {
      /* all gone */
    }
  };
  const exited = new Promise<void>((r) => c.once('exit', () => r()));
  // The main process first, so that it stops and reaps its own children; then whatever is left.
  try {
    process.kill(group, 'SIGTERM');
  } catch {
    return;
  }
  const t = setTimeout(killGroup, 5000);
  await exited;
  clearTimeout(t);
  killGroup();
}

// ---- the rig -----------------------------------------------------------------------------

export async function startDnssecRig(o: DnssecRigOptions): Promise<DnssecRig> {
  if (process.getuid?.() !== 0) throw new Error('the DNSSEC rig must be started as root');
  for (const f of [NSD, UNBOUND, KEYGEN, SIGNZONE])
    if (!existsSync(f)) throw new Error(`${f} is missing (apt-get install nsd unbound ldnsutils)`);
  const aHost = o.authorityHost ?? '127.0.53.1';
  const rHost = o.resolverHost ?? '127.0.53.2';
  for (const h of [aHost, rHost])
    if (!/^127\.\d+\.\d+\.\d+$/.test(h)) throw new Error(`the DNSSEC rig listens on loopback only, not ${h}`);
  const base = path.resolve(o.base);
  const zdir = path.join(base, 'zones');
  mkdirSync(zdir, { recursive: true });
  const children = Object.fromEntries(Object.entries(o.zones).map(([z, m]) => [norm(z), m]));
  for (const z of Object.keys(children)) {
    if (!/^([a-z0-9_-]+\.)+test$/.test(z)) throw new Error(`zone ${z} must be below test.`);
  }
  /** The zone a zone is delegated from: the deepest other zone above it, else test. */
  const parentOf = (z: string) =>
    Object.keys(children)
      .filter((c) => c !== z && within(z, c))
      .sort((a, b) => b.length - a.length)[0] ?? 'test';
  const signed = (z: string) => z === 'test' || ['secure', 'expired'].includes(children[z]);
  const hasDs = (z: string) => ['secure', 'expired', 'stripped'].includes(children[z]);
  const served = ['test', ...Object.keys(children).filter((z) => children[z] !== 'dead')];
  const keyed = ['test', ...Object.keys(children).filter((c) => signed(c) || hasDs(c))];
  const keys = await Promise.all(keyed.map((z) => zoneKey(z, base)));
  const keyOf = new Map(keyed.map((z, i) => [z, installKey(keys[i], zdir)]));

  const [aPort, rPort] = [await freePort(aHost), o.resolverPort ?? (await freePort(rHost))];
  let serial = Math.floor(Date.now() / 1000);

  const zoneOf = (owner: string): string => {
    const n = norm(owner);
    if (!within(n, 'test')) throw new Error(`record owner ${owner} is outside test.`);
    const z = Object.keys(children)
      .filter((c) => within(n, c))
      .sort((a, b) => b.length - a.length)[0];
    if (z && children[z] === 'dead') throw new Error(`${owner} is in the dead zone ${z}: it has no data`);
    return z ?? 'test';
  };

  async function writeZone(z: string, records: Record<string, Rrs>, forged: Record<string, Rrs>): Promise<void> {
    const own = (m: Record<string, Rrs>) => Object.fromEntries(Object.entries(m).filter(([n]) => zoneOf(n) === z));
    const lines = [
      `$TTL ${TTL}`,
      `${fqdn(z)}\t${TTL}\tIN\tSOA\tns.test. hostmaster.test. ${serial} 3600 600 86400 ${TTL}`,
      `${fqdn(z)}\t${TTL}\tIN\tNS\tns.test.`,
    ];
    if (z === 'test') lines.push(`ns.test.\t${TTL}\tIN\tA\t${aHost}`);
    for (const c of Object.keys(children).filter((k) => parentOf(k) === z)) {
      lines.push(`${fqdn(c)}\t${TTL}\tIN\tNS\tns.test.`);
      if (hasDs(c)) lines.push((await zoneKey(c, base)).ds.trim());
    }
    for (const [n, r] of Object.entries(own(records))) lines.push(...rdataLines(n, r));
    const file = path.join(zdir, `${z}.zone`);
    writeFileSync(file, lines.join('\n') + '\n');
    const out = path.join(zdir, `${z}.zone.served`);
    if (signed(z)) {
      const now = Math.floor(Date.now() / 1000);
      const [inception, expiration] =
        children[z] === 'expired' ? [now - 30 * DAY, now - 3 * DAY] : [now - 3600, now + 30 * DAY];
      await run(SIGNZONE, ['-i', String(inception), '-e', String(expiration), '-f', out, file, keyOf.get(z)!]);
      writeFileSync(out, forge(readFileSync(out, 'utf8'), own(forged)));
    } else {
      writeFileSync(out, forge(readFileSync(file, 'utf8'), own(forged)));
    }
  }
  async function writeZones(records: Record<string, Rrs>, forged: Record<string, Rrs>): Promise<void> {
    for (const n of [...Object.keys(records), ...Object.keys(forged)]) zoneOf(n); // refuse misplaced names before any work
    serial++;
    await Promise.all(served.map((z) => writeZone(z, records, forged)));
  }

  await writeZones(o.records, o.forged ?? {});
  const nsdConf = path.join(base, 'nsd.conf');
  const nsdLog = path.join(base, 'nsd.log');
  writeFileSync(
    nsdConf,
    [
      'server:',
      `  ip-address: ${aHost}@${aPort}`,
      '  do-ip6: no',
      '  username: ""',
      '  chroot: ""',
      `  zonesdir: "${zdir}"`,
      '  database: ""',
      `  pidfile: "${path.join(base, 'nsd.pid')}"`,
      `  logfile: "${nsdLog}"`,
      `  xfrdfile: "${path.join(base, 'xfrd.state')}"`,
      `  zonelistfile: "${path.join(base, 'zone.list')}"`,
      `  xfrdir: "${base}"`,
      '  server-count: 1',
      '  reuseport: no',
      '  hide-version: yes',
      '  verbosity: 1',
      'remote-control:',
      '  control-enable: yes',
      `  control-interface: "${path.join(base, 'nsd.ctl')}"`,
      // A dead zone is configured without a zone file: NSD answers SERVFAIL for it.
      ...['test', ...Object.keys(children)].flatMap((z) => [
        'zone:',
        `  name: "${fqdn(z)}"`,
        `  zonefile: "${children[z] === 'dead' ? `${z}.zone.missing` : `${z}.zone.served`}"`,
      ]),
    ].join('\n') + '\n',
  );

  const anchor = path.join(base, 'test.anchor');
  writeFileSync(anchor, (await zoneKey('test', base)).ds);
  const unboundConf = path.join(base, 'unbound.conf');
  const unboundLog = path.join(base, 'unbound.log');
  const stub = (z: string) => [
    'stub-zone:',
    `  name: "${z === '.' ? '.' : fqdn(z)}"`,
    `  stub-addr: ${aHost}@${aPort}`,
  ];
  writeFileSync(
    unboundConf,
    [
      'server:',
      `  interface: ${rHost}@${rPort}`,
      `  port: ${rPort}`,
      `  outgoing-interface: ${rHost}`,
      '  do-ip6: no',
      '  do-daemonize: no',
      '  username: ""',
      '  chroot: ""',
      `  directory: "${base}"`,
      `  pidfile: "${path.join(base, 'unbound.pid')}"`,
      `  logfile: "${unboundLog}"`,
      '  use-syslog: no',
      '  verbosity: 1',
      '  log-servfail: yes',
      '  val-log-level: 2',
      '  num-threads: 1',
      '  so-reuseport: no',
      '  outgoing-range: 64',
      '  num-queries-per-thread: 32',
      '  msg-cache-size: 1m',
      '  rrset-cache-size: 1m',
      '  key-cache-size: 1m',
      '  neg-cache-size: 256k',
      '  access-control: 127.0.0.0/8 allow',
      '  do-not-query-localhost: no',
      '  module-config: "validator iterator"',
      `  trust-anchor-file: "${anchor}"`,
      '  trust-anchor-signaling: no',
      '  root-key-sentinel: no',
      '  ede: yes',
      '  qname-minimisation: no',
      '  aggressive-nsec: no',
      '  prefetch: no',
      // test. is one of Unbound's built-in empty local zones (RFC 6761); serve it from NSD instead.
      '  local-zone: "test." nodefault',
      'remote-control:',
      '  control-enable: yes',
      `  control-interface: "${path.join(base, 'unbound.ctl')}"`,
      // Every zone, and the root, is a stub at NSD: nothing is ever asked of port 53 or the internet.
      ...stub('.'),
      ...stub('test'),
      ...Object.keys(children).flatMap(stub),
    ].join('\n') + '\n',
  );

  const readLog = (f: string) => () => {
    try {
      return readFileSync(f, 'utf8');
    } catch {
      return '';
    }
  };
  // Both start at once; Unbound only needs NSD once it is asked something.
  const nsd = start(NSD, ['-d', '-c', nsdConf], nsdLog);
  const unbound = start(UNBOUND, ['-d', '-c', unboundConf], unboundLog);
  const stop = async () => {
    await Promise.all([stopProcess(unbound), stopProcess(nsd)]);
  };
  const soaSerial = async (z: string) => {
    const p = await ask(aHost, aPort, fqdn(z), 'SOA', 100);
    const soa = p?.answers?.find((a) => a.type === 'SOA') as { data: { serial: number } } | undefined;
    return soa?.data.serial;
  };
  // Unbound is ready when it validates test.'s SOA from the trust anchor (AD set).
  const validates = async () => !!(await ask(rHost, rPort, 'test.', 'SOA', 200))?.flag_ad;
  try {
    await waitFor(`nsd on ${aHost}:${aPort}`, async () => (await soaSerial('test')) === serial, readLog(nsdLog));
    await waitFor(`unbound on ${rHost}:${rPort}`, validates, readLog(unboundLog));
  } catch (e) {
    await stop();
    throw e;
  }

  return {
    server: `${rHost}:${rPort}`,
    authority: `${aHost}:${aPort}`,
    resolverLog: readLog(unboundLog),
    async upstreams() {
      const dump = await run(UNBOUND_CONTROL, ['-c', unboundConf, 'dump_infra']);
      return [
        ...new Set(
          dump
            .split('\n')
            .map((l) => l.split(' ')[0])
            .filter(Boolean),
        ),
      ];
    },
    authorityLog: readLog(nsdLog),
    async update(z) {
      await writeZones(z.records, z.forged ?? {});
      // One reload reads every zone file whose modification time changed; a zone that still
      // shows its old serial (same mtime) is then reloaded by name, which forces it.
      await run(NSD_CONTROL, ['-c', nsdConf, 'reload']);
      for (const zone of served) {
        await waitFor(
          `nsd reload of ${zone}`,
          async () => (await soaSerial(zone)) === serial,
          readLog(nsdLog),
          2000,
        ).catch(() =>
          run(NSD_CONTROL, ['-c', nsdConf, 'reload', fqdn(zone)]).then(() =>
            waitFor(`nsd reload of ${zone}`, async () => (await soaSerial(zone)) === serial, readLog(nsdLog)),
          ),
        );
      }
      await run(UNBOUND_CONTROL, ['-c', unboundConf, 'reload']);
      await waitFor('unbound reload', validates, readLog(unboundLog));
    },
    stop,
  };
}
