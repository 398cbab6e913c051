// Owns: the one configuration schema. Every key here is documented in docs/configuration.md.
// Validation errors name the key and what is wrong; unknown keys are errors (typos must not
// silently fall back to defaults in a security product).
import { z } from 'zod';
import { isIP } from 'node:net';
import { CONNECTOR_TLS_LEVELS } from '../tls/levels.ts';
import { isDomainName, parseCidr, parseListen, parseSmartHost } from '../util/net.ts';

export const domainName = z.string().trim().toLowerCase()
  .refine(isDomainName, { message: 'is not a valid domain name' });

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

const cidr = z.string().refine((s) => parseCidr(s) !== null, { message: 'must be an IPv4/IPv6 address or CIDR block, e.g. "192.0.2.0/24" or "2001:db8::/32"' });

/** "example.test", "*.example.test" (the domain and all subdomains) or "*" (any). */
const domainPattern = z.string().trim().toLowerCase().refine((d) => d === '*' || isDomainName(d.startsWith('*.') ? d.slice(2) : d), {
  message: 'must be a domain, "*.domain" (the domain and its subdomains) or "*"',
});

const smartHost = z.string().refine((s) => parseSmartHost(s) !== null, { message: 'must be "host", "host:port", "ip" or "ip:port"' });

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
  tlsSettings: z.enum(CONNECTOR_TLS_LEVELS).default('opportunistic'),
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

export const configSchema = z.strictObject({
  hostname: domainName.optional(),
  dataDir: z.string().min(1).default('./data'),
  runAs: runAsSchema.optional(),
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
    /** Sessions only connector-identified clients may use; absent: 10% of maxConnections (see inbound/admission.ts). */
    reservedConnections: z.number().int().min(0).optional(),
    maxErrors: z.number().int().min(1).default(20),
    bareLineEndings: z.enum(['normalize', 'reject']).default('normalize'),
    forbidUnauthPipelining: z.boolean().default(true),
    timeouts: z.strictObject({
      command: seconds(300),
      data: seconds(600),
      tlsHandshake: seconds(30),
    }).prefault({}),
  }).superRefine((s, ctx) => {
    if (s.reservedConnections !== undefined && s.reservedConnections >= s.maxConnections) {
      ctx.addIssue({ code: 'custom', path: ['reservedConnections'], message: `must be less than smtp.maxConnections (${s.maxConnections}): the rest is the capacity for all other clients` });
    }
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
