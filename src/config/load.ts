// Owns: reading a YAML file into a validated, frozen Config (types.ts, re-exported here for the
// callers of loadConfig). Relative paths are resolved against the config file's folder.
// Errors are AdminErrors naming each bad key and the fix.
import { existsSync, readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import type { z } from 'zod';
import { AdminError } from '../errors.ts';
import { configSchema, type ConfigInput } from './schema.ts';
import { findTies } from './ties.ts';
import { adminListenProblems, listenProblems } from './listen.ts';
import { resolveStore } from './store.ts';
import type { Config, Organization } from './types.ts';
import { errorMessage } from '../util/errors.ts';
import { underDomain } from '../mailbox.ts';

export type { AcceptedDomain, Config, InboundConnector, Organization, OutboundConnector } from './types.ts';

export const DEFAULT_CONFIG_FILE = 'portcullis.yaml';
export const SYSTEM_CONFIG_FILE = '/etc/portcullis/portcullis.yaml';

/**
 * The configuration file when none is named with -c: $PORTCULLIS_CONFIG, else the first of
 * ./portcullis.yaml and /etc/portcullis/portcullis.yaml that exists, else ./portcullis.yaml
 * (which does not exist: the caller may then use the embedded defaults).
 */
export function defaultConfigPath(candidates: readonly string[] = [DEFAULT_CONFIG_FILE, SYSTEM_CONFIG_FILE]): string {
  return process.env.PORTCULLIS_CONFIG || candidates.find((f) => existsSync(f)) || candidates[0];
}

/** The embedded defaults used when no configuration file exists. */
export const embeddedDefaults: ConfigInput = {
  dataDir: './data',
  smtp: { listen: ['127.0.0.1:2525'] },
  organizations: [
    { name: 'default', acceptedDomains: [{ domain: 'localhost', type: 'authoritative', recipients: 'any' }] },
  ],
};

function formatIssues(issues: z.core.$ZodIssue[]): string {
  return issues
    .map((i) => {
      const key = i.path.length
        ? i.path.map((p, n) => (typeof p === 'number' ? `[${p}]` : `${n ? '.' : ''}${String(p)}`)).join('')
        : '(top level)';
      if (i.code === 'unrecognized_keys')
        return (
          `  ${key}: unknown key(s) ${i.keys.map((k) => `"${k}"`).join(', ')} (check the spelling against ` +
          `docs/configuration.md)`
        );
      return `  ${key}: ${i.message}`;
    })
    .join('\n');
}

/** Validate an already-parsed object. `baseDir` resolves relative paths. */
export function buildConfig(input: unknown, baseDir: string, source: string | null): Config {
  const r = configSchema.safeParse(input ?? {});
  if (!r.success) {
    throw new AdminError(
      `invalid configuration${source ? ` in ${source}` : ''}:\n${formatIssues(r.error.issues)}`,
      'correct the keys above; docs/configuration.md describes each one',
    );
  }
  const c = r.data;
  const problems: string[] = [];
  const owner = new Map<string, string>();
  const orgNames = new Set<string>();
  const organizations: Organization[] = c.organizations.map((o, oi) => {
    if (orgNames.has(o.name)) problems.push(`  organizations[${oi}].name: "${o.name}" is used by two organizations`);
    orgNames.add(o.name);
    for (const kind of ['inboundConnectors', 'outboundConnectors'] as const) {
      const names = new Set<string>();
      o[kind].forEach((c, ci) => {
        if (names.has(c.name.toLowerCase()))
          problems.push(
            `  organizations[${oi}].${kind}[${ci}].name: "${c.name}" is used twice in organization "${o.name}"`,
          );
        names.add(c.name.toLowerCase());
      });
    }
    return Object.freeze({
      name: o.name,
      acceptedDomains: Object.freeze(
        o.acceptedDomains.map((d, di) => {
          const prev = owner.get(d.domain);
          if (prev)
            problems.push(
              `  organizations[${oi}].acceptedDomains[${di}].domain: "${d.domain}" is already accepted by ` +
                `organization "${prev}"`,
            );
          owner.set(d.domain, o.name);
          return Object.freeze({
            ...d,
            recipients: d.recipients === 'any' ? ('any' as const) : Object.freeze([...d.recipients]),
            organization: o.name,
          });
        }),
      ),
      inboundConnectors: o.inboundConnectors.map((c) => ({
        ...c,
        trustedCAs: c.trustedCAs.map((f) => path.resolve(baseDir, f)),
        organization: o.name,
      })),
      outboundConnectors: o.outboundConnectors.map((c) => ({ ...c, organization: o.name })),
    });
  });
  organizations.forEach((o, oi) => {
    // An onPremises connector's certificate is of the organisation's own domains (as its relay
    // attribution assumes): a certificate name of another organisation's would take its servers.
    o.inboundConnectors.forEach((c, ci) => {
      const name = c.tlsSenderCertificateName?.replace(/^\*\./, '');
      if (c.connectorType !== 'onPremises' || !c.enabled || !name) return;
      // The most specific accepted domain the name lies in (of any organisation) must be its own.
      if (underDomain(name, owner) === o.name) return;
      problems.push(
        `  organizations[${oi}].inboundConnectors[${ci}].tlsSenderCertificateName: "${c.tlsSenderCertificateName}" ` +
          `is not in a domain of organization "${o.name}" (${o.acceptedDomains.map((d) => d.domain).join(', ')}); ` +
          `an onPremises connector is identified by a certificate of the organization's own accepted domains: ` +
          `name one of those, or identify the servers by senderIPAddresses instead`,
      );
    });
    const relayDomains = o.acceptedDomains.filter((d) => d.type === 'internalRelay');
    const onPrem = o.outboundConnectors.filter((c) => c.enabled && c.connectorType === 'onPremises');
    if (relayDomains.length && !onPrem.length) {
      problems.push(
        `  organizations[${oi}].acceptedDomains: ${relayDomains.map((d) => d.domain).join(', ')} ` +
          `${relayDomains.length > 1 ? 'are' : 'is'} internalRelay, but organization "${o.name}" has no enabled ` +
          `onPremises outbound connector to deliver to`,
      );
    }
  });
  for (const tie of findTies(organizations)) problems.push(`  ${tie}: make them distinct, or give one a restriction`);
  const listen = [...listenProblems(c.smtp.listen), ...adminListenProblems(c.admin, c.smtp.listen)].map(
    (p) => `  ${p}`,
  );
  const store = resolveStore(c);
  if (store.problems.length) {
    throw new AdminError(
      `invalid configuration${source ? ` in ${source}` : ''}:\n` +
        [...listen, ...problems, ...store.problems].join('\n'),
      'correct the store settings above; docs/configuration.md describes each key',
    );
  }
  if (problems.length || listen.length) {
    throw new AdminError(
      `invalid configuration${source ? ` in ${source}` : ''}:\n${[...listen, ...problems].join('\n')}`,
      problems.length
        ? 'each organization name, accepted domain and connector name must appear once, and no two inbound ' +
            'connectors may match the same senders equally'
        : 'listen on each address once: "0.0.0.0:PORT" and "[::]:PORT" already cover every address of their family',
    );
  }
  const resolve = (p: string) => path.resolve(baseDir, p);
  const config: Config = {
    ...c,
    hostname: c.hostname ?? osHostname().toLowerCase(),
    dataDir: resolve(c.dataDir),
    nodeId: c.nodeId ?? `${osHostname().toLowerCase()}:${resolve(c.dataDir)}`,
    store: store.store,
    tls: {
      ...c.tls,
      certificates: c.tls.certificates.map((p) => ({
        cert: resolve(p.cert),
        key: resolve(p.key),
        ...(p.next ? { next: { cert: resolve(p.next.cert), key: resolve(p.next.key) } } : {}),
      })),
      trust: { ...c.tls.trust, caFiles: c.tls.trust.caFiles.map(resolve) },
    },
    organizations: Object.freeze(organizations),
    source,
  };
  return deepFreeze(config);
}

/** Load `file`; when it does not exist and `allowDefaults`, use the embedded defaults. */
export function loadConfig(file: string, allowDefaults = false): Config {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && allowDefaults) {
      return buildConfig(embeddedDefaults, process.cwd(), null);
    }
    throw new AdminError(
      `cannot read configuration file ${abs}: ${errorMessage(e)}`,
      'pass the right file with -c FILE or PORTCULLIS_CONFIG',
    );
  }
  let doc: unknown;
  try {
    doc = YAML.parse(text, { prettyErrors: true, uniqueKeys: true });
  } catch (e) {
    throw new AdminError(
      `configuration file ${abs} is not valid YAML: ${errorMessage(e)}`,
      'fix the YAML syntax at the line shown',
    );
  }
  return buildConfig(doc, path.dirname(abs), abs);
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}
