// Owns: the one configuration schema. Every key here is documented in docs/configuration.md.
// Validation errors name the key and what is wrong; unknown keys are errors (typos must not
// silently fall back to defaults in a security product).
import { z } from 'zod';
import { BlockList, isIP } from 'node:net';
import { isPostgresUrl } from '../util/secret-url.ts';

const domainRe = /^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)*$/i;

export const domainName = z.string().trim().toLowerCase()
  .refine((d) => domainRe.test(d), { message: 'is not a valid domain name' });

/** "IP:port", "[v6]:port", "localhost:port" or ":port" (all IPv4 addresses); see config/listen.ts. */
export function parseListen(s: string): { host: string; port: number } | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(s.trim());
  if (!m) return null;
  const host = m[1] ?? (m[2] || '0.0.0.0');
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  if (m[1] !== undefined && isIP(host) !== 6) return null;
  if (m[2] && isIP(host) === 0 && host !== 'localhost') return null;
  return { host, port };
}

const listenAddr = z.string().refine((s) => parseListen(s) !== null, {
  message: 'must be "IP:port", "[IPv6]:port" or "localhost:port" (host names are not looked up), e.g. "0.0.0.0:25", "[::]:25" or "127.0.0.1:2525"',
});

const dnsServer = z.string().refine((s) => {
  const p = parseListen(s);
  return isIP(s) !== 0 || (p !== null && isIP(p.host) !== 0);
}, { message: 'must be an IP address with optional port, e.g. "127.0.0.1:5353"' });

const seconds = (def: number) => z.number().positive().max(86_400).default(def);

const acceptedDomain = z.strictObject({
  domain: domainName,
  type: z.enum(['authoritative', 'internalRelay']).default('authoritative'),
  recipients: z.union([z.literal('any'), z.array(z.string().min(1).max(64).toLowerCase())]).default('any'),
});

/** IPv4/IPv6 address or CIDR block. */
export function parseCidr(s: string): { ip: string; bits: number } | null {
  const [ip, len, extra] = s.trim().split('/');
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

export const inBlocks = (b: BlockList | null, ip: string): boolean => !!b && !!ip && isIP(ip) !== 0 && b.check(ip, isIP(ip) === 6 ? 'ipv6' : 'ipv4');

const cidr = z.string().refine((s) => parseCidr(s) !== null, { message: 'must be an IPv4/IPv6 address or CIDR block, e.g. "192.0.2.0/24" or "2001:db8::/32"' });

/** "example.test", "*.example.test" (the domain and all subdomains) or "*" (any). */
const domainPattern = z.string().trim().toLowerCase().refine((d) => d === '*' || domainRe.test(d.startsWith('*.') ? d.slice(2) : d), {
  message: 'must be a domain, "*.domain" (the domain and its subdomains) or "*"',
});

/** "host", "host:port", "ip", "ip:port", "[ipv6]:port". */
export function parseSmartHost(s: string): { host: string; port?: number } | null {
  const t = s.trim();
  const v6 = /^\[([0-9a-fA-F:.]+)\](?::(\d{1,5}))?$/.exec(t);
  if (v6) return isIP(v6[1]) === 6 ? { host: v6[1], ...(v6[2] ? { port: Number(v6[2]) } : {}) } : null;
  if (isIP(t) === 6) return { host: t };
  const m = /^([^:]+)(?::(\d{1,5}))?$/.exec(t);
  if (!m || (isIP(m[1]) === 0 && !domainRe.test(m[1]))) return null;
  const port = m[2] ? Number(m[2]) : undefined;
  if (port !== undefined && (port < 1 || port > 65535)) return null;
  return { host: m[1].toLowerCase(), ...(port ? { port } : {}) };
}

const smartHost = z.string().refine((s) => parseSmartHost(s) !== null, { message: 'must be "host", "host:port", "ip" or "ip:port"' });

export const TLS_SETTINGS = ['opportunistic', 'encryptionOnly', 'certificateValidation', 'domainValidation'] as const;

const fingerprint = z.string().refine((f) => /^[0-9a-f]{64}$/i.test(f.replace(/:/g, '')), {
  message: 'must be a SHA-256 certificate fingerprint (64 hex digits, colons allowed)',
});

const inboundConnector = z.strictObject({
  name: z.string().trim().min(1).max(128),
  connectorType: z.enum(['partner', 'onPremises']),
  enabled: z.boolean().default(true),
  senderDomains: z.array(domainPattern).default([]),
  senderIPAddresses: z.array(cidr).default([]),
  requireTls: z.boolean().default(false),
  tlsSenderCertificateName: domainPattern.optional(),
  restrictDomainsToCertificate: z.boolean().default(false),
  restrictDomainsToIPAddresses: z.boolean().default(false),
  treatMessagesAsInternal: z.boolean().default(false),
  trustedCAs: z.array(z.string().min(1)).default([]),
  pinnedCertificates: z.array(fingerprint).default([]),
}).superRefine((c, ctx) => {
  const issue = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message });
  if (!c.senderDomains.length && !c.senderIPAddresses.length && !c.tlsSenderCertificateName) {
    issue('senderDomains', 'a connector must be identified by senderDomains, senderIPAddresses or tlsSenderCertificateName');
  }
  if (c.connectorType === 'onPremises' && !c.senderIPAddresses.length && !c.tlsSenderCertificateName) {
    issue('tlsSenderCertificateName', 'an onPremises connector identifies your own servers by tlsSenderCertificateName (preferred) or senderIPAddresses');
  }
  if (c.restrictDomainsToCertificate && !c.tlsSenderCertificateName) issue('restrictDomainsToCertificate', 'needs tlsSenderCertificateName (the certificate the partner must present)');
  if (c.restrictDomainsToIPAddresses && !c.senderIPAddresses.length) issue('restrictDomainsToIPAddresses', 'needs senderIPAddresses (the addresses the partner sends from)');
  if ((c.restrictDomainsToCertificate || c.restrictDomainsToIPAddresses) && !c.senderDomains.length) issue('senderDomains', 'restrictions apply to senderDomains: list the partner\'s domains');
  if (c.treatMessagesAsInternal && c.connectorType !== 'onPremises') issue('treatMessagesAsInternal', 'applies to onPremises connectors only');
});

const outboundConnector = z.strictObject({
  name: z.string().trim().min(1).max(128),
  connectorType: z.enum(['partner', 'onPremises']).default('partner'),
  enabled: z.boolean().default(true),
  recipientDomains: z.array(domainPattern).default([]),
  allAcceptedDomains: z.boolean().default(false),
  routeAllMessagesViaOnPremises: z.boolean().default(false),
  useMXRecord: z.boolean().default(true),
  smartHosts: z.array(smartHost).default([]),
  tlsSettings: z.enum(TLS_SETTINGS).default('opportunistic'),
  tlsDomain: domainPattern.optional(),
}).superRefine((c, ctx) => {
  if (!c.recipientDomains.length && !c.allAcceptedDomains && !c.routeAllMessagesViaOnPremises) {
    ctx.addIssue({ code: 'custom', path: ['recipientDomains'], message: 'name the recipient domains this connector is for (or set allAcceptedDomains / routeAllMessagesViaOnPremises)' });
  }
  if ((c.allAcceptedDomains || c.routeAllMessagesViaOnPremises) && c.connectorType !== 'onPremises') {
    ctx.addIssue({ code: 'custom', path: [c.allAcceptedDomains ? 'allAcceptedDomains' : 'routeAllMessagesViaOnPremises'], message: 'applies to onPremises connectors only' });
  }
  if (!c.useMXRecord && !c.smartHosts.length) ctx.addIssue({ code: 'custom', path: ['smartHosts'], message: 'list at least one smart host, or set useMXRecord: true' });
  if (c.useMXRecord && c.smartHosts.length) ctx.addIssue({ code: 'custom', path: ['useMXRecord'], message: 'set useMXRecord: false when smartHosts are given (one or the other)' });
  if (c.tlsSettings === 'domainValidation' && !c.tlsDomain) ctx.addIssue({ code: 'custom', path: ['tlsDomain'], message: 'is required with tlsSettings: domainValidation (the name the partner certificate must carry)' });
});

const organization = z.strictObject({
  name: z.string().trim().min(1).max(64).regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'may contain letters, digits, ".", "_" and "-" only'),
  acceptedDomains: z.array(acceptedDomain).min(1, 'needs at least one accepted domain'),
  inboundConnectors: z.array(inboundConnector).default([]),
  outboundConnectors: z.array(outboundConnector).default([]),
});

const certPair = z.strictObject({ cert: z.string().min(1), key: z.string().min(1) });

/** A user or group: a name (letters, digits, ".", "_", "-") or a numeric id. */
const accountName = z.string().trim().min(1).max(64).regex(/^[A-Za-z0-9_][A-Za-z0-9._-]*$/, 'must be a user or group name, or a numeric id');

/** `root` (deliberately), or the unprivileged user (and group) to run as after binding. */
export const runAsSchema = z.union([
  z.literal('root'),
  z.strictObject({ user: accountName, group: accountName.optional() }),
], { error: 'must be root, or {user: NAME, group: NAME} (for example {user: portcullis, group: portcullis})' });

/** Maildir file modes: owner read/write, optionally group; never others, never execute. */
export const MAILDIR_MODES = ['0600', '0640', '0660'] as const;

const maildirOptions = z.strictObject({
  group: accountName.optional(),
  mode: z.enum(MAILDIR_MODES, { error: 'must be "0600" (private), "0640" (group may read) or "0660" (group may read and write), in quotes' }).default('0600'),
}).superRefine((m, ctx) => {
  if (m.group !== undefined && m.mode === '0600') ctx.addIssue({ code: 'custom', path: ['mode'], message: `gives group "${m.group}" no rights: use "0640" (read) or "0660" (read and write, what an IMAP server needs for flags)` });
});

/** Where the queue and trace live: SQLite in dataDir (one node), or PostgreSQL (config/store.ts resolves the URL). */
const storeSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('sqlite') }),
  z.strictObject({
    type: z.literal('postgres'),
    // The message never repeats the value: it may hold a password.
    url: z.string().refine(isPostgresUrl, { message: 'must be a PostgreSQL URL, postgresql://USER@HOST:PORT/DATABASE (the value is not shown: it may hold a password)' }).optional(),
    poolSize: z.number().int().min(2).max(200).default(10),
  }),
], { error: 'must be {type: sqlite} or {type: postgres, url: "postgresql://USER@HOST:PORT/DATABASE"}' });

export const configSchema = z.strictObject({
  hostname: domainName.optional(),
  dataDir: z.string().min(1).default('./data'),
  runAs: runAsSchema.optional(),
  store: storeSchema.default({ type: 'sqlite' }),
  log: z.strictObject({
    level: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
    format: z.enum(['auto', 'json', 'text']).default('auto'),
  }).prefault({}),
  smtp: z.strictObject({
    listen: z.array(listenAddr).min(1).default(['127.0.0.1:2525']),
    maxMessageSize: z.number().int().min(1024).max(2 ** 31 - 1).default(36_700_160),
    maxHeaderSize: z.number().int().min(1024).default(102_400),
    maxRecipients: z.number().int().min(1).max(100_000).default(500),
    maxConnections: z.number().int().min(1).max(1_000_000).default(1000),
    maxConnectionsPerIP: z.number().int().min(1).default(50),
    maxErrors: z.number().int().min(1).default(20),
    bareLineEndings: z.enum(['normalize', 'reject']).default('normalize'),
    timeouts: z.strictObject({
      command: seconds(300),
      data: seconds(600),
      tlsHandshake: seconds(30),
    }).prefault({}),
  }).prefault({}),
  tls: z.strictObject({
    certificates: z.array(certPair).default([]),
    minVersion: z.string().default('TLSv1.2').refine((v) => v === 'TLSv1.2' || v === 'TLSv1.3', {
      message: 'must be TLSv1.2 or TLSv1.3; Portcullis never accepts anything older than TLS 1.2',
    }),
    revocation: z.enum(['softFail', 'hardFail', 'off']).default('softFail'),
    trust: z.strictObject({
      system: z.boolean().default(true),
      caFiles: z.array(z.string().min(1)).default([]),
    }).prefault({}),
  }).prefault({}),
  dns: z.strictObject({ servers: z.array(dnsServer).default([]), dnssec: z.boolean().default(true) }).prefault({}),
  delivery: z.strictObject({
    port: z.number().int().min(1).max(65535).default(25),
    heloName: domainName.optional(),
    sourceAddresses: z.array(z.string().refine((a) => isIP(a) !== 0, { message: 'must be an IP address of this machine' })).default([]),
    maxConnectionsPerDestination: z.number().int().min(1).max(1000).default(20),
    connectionReuse: z.strictObject({
      idleSeconds: z.number().min(0).max(600).default(10),
      maxMessages: z.number().int().min(1).max(100_000).default(1000),
    }).prefault({}),
    maildir: maildirOptions.prefault({}),
    /** The dataDir mailboxes are on storage every node shares (required for authoritative domains on PostgreSQL). */
    maildirShared: z.boolean().default(false),
    tlsFallbackSeconds: z.number().min(0).default(3600),
    opportunisticLegacyTls: z.boolean().default(true),
    destinationDownSeconds: z.number().min(0).default(60),
    timeouts: z.strictObject({
      connect: seconds(30), greeting: seconds(300), command: seconds(300), dataBlock: seconds(180), dataEnd: seconds(600),
    }).prefault({}),
  }).prefault({}),
  queue: z.strictObject({
    delayWarning: z.number().min(0).default(14_400),
    retrySchedule: z.array(z.number().positive()).min(1).default([60, 300, 900, 1800, 3600, 7200, 14_400]),
    messageExpiration: z.number().positive().default(172_800),
    leaseSeconds: z.number().int().min(5).default(300),
    concurrency: z.number().int().min(1).max(1000).default(20),
  }).prefault({}),
  trace: z.strictObject({
    retentionDays: z.number().positive().max(3650).default(30),
  }).prefault({}),
  organizations: z.array(organization).min(1, 'needs at least one organization'),
});

export type ConfigInput = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
