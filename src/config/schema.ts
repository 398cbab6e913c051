// Owns: the one configuration schema. Every key here is documented in docs/configuration.md.
// Validation errors name the key and what is wrong; unknown keys are errors (typos must not
// silently fall back to defaults in a security product).
import { z } from 'zod';
import { isIP } from 'node:net';

const domainRe = /^(?=.{1,253}$)([a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9])?)*$/i;

export const domainName = z.string().trim().toLowerCase()
  .refine((d) => domainRe.test(d), { message: 'is not a valid domain name' });

/** "host:port", "[v6]:port" or ":port". */
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
  message: 'must be "IP:port" or "[IPv6]:port", e.g. "127.0.0.1:2525" or "[::1]:2525"',
});

const dnsServer = z.string().refine((s) => {
  const p = parseListen(s);
  return isIP(s) !== 0 || (p !== null && isIP(p.host) !== 0);
}, { message: 'must be an IP address with optional port, e.g. "127.0.0.1:5353"' });

const seconds = (def: number) => z.number().positive().max(86_400).default(def);

const acceptedDomain = z.strictObject({
  domain: domainName,
  type: z.literal('authoritative', { error: 'must be "authoritative" (internalRelay arrives with connectors)' }).default('authoritative'),
  recipients: z.union([z.literal('any'), z.array(z.string().min(1).max(64).toLowerCase())]).default('any'),
});

const organization = z.strictObject({
  name: z.string().trim().min(1).max(64).regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'may contain letters, digits, ".", "_" and "-" only'),
  acceptedDomains: z.array(acceptedDomain).min(1, 'needs at least one accepted domain'),
});

const certPair = z.strictObject({ cert: z.string().min(1), key: z.string().min(1) });

export const configSchema = z.strictObject({
  hostname: domainName.optional(),
  dataDir: z.string().min(1).default('./data'),
  log: z.strictObject({ level: z.enum(['debug', 'info', 'warn', 'error']).default('info') }).prefault({}),
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
      message: 'must be TLSv1.2 or TLSv1.3; Portcullis never negotiates anything older than TLS 1.2',
    }),
    trust: z.strictObject({
      system: z.boolean().default(true),
      caFiles: z.array(z.string().min(1)).default([]),
    }).prefault({}),
  }).prefault({}),
  dns: z.strictObject({ servers: z.array(dnsServer).default([]) }).prefault({}),
  queue: z.strictObject({
    retrySchedule: z.array(z.number().positive()).min(1).default([60, 300, 900, 1800, 3600, 7200, 14_400]),
    messageExpiration: z.number().positive().default(172_800),
    leaseSeconds: z.number().int().min(5).default(300),
    concurrency: z.number().int().min(1).max(1000).default(20),
  }).prefault({}),
  organizations: z.array(organization).min(1, 'needs at least one organization'),
});

export type ConfigInput = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
