// Owns: the connectors as the CLI (`connector list|show|validate`, `tls check`) and the admin API
// see them: every connector of every organisation with its direction, finding one by name, and
// validating an outbound connector (each smart host or MX host, as delivery would meet it, with
// an optional test message).
// The probing modules (DNS, SMTP client, TLS, revocation) are imported when a probe runs, so that
// listing connectors stays light for the CLI.
// Promise: validation never throws for a bad host (the report says why); a connector that
// cannot be validated (inbound, MX with only wildcard domains, a bad recipient) is an AdminError
// naming the fix.
import type { Config, InboundConnector, OutboundConnector } from '../../config/load.ts';
import type { Resolver } from '../../dns/types.ts';
import type { HostReport, ProbeTarget } from '../../delivery/probe.ts';
import { AdminError } from '../../errors.ts';
import type { TlsRequirement } from '../../policy/outbound.ts';
import type { RevocationChecker } from '../../tls/revocation.ts';
import type { TrustStore } from '../../tls/trust.ts';

export type AnyConnector =
  (InboundConnector & { direction: 'inbound' }) | (OutboundConnector & { direction: 'outbound' });
export type Direction = AnyConnector['direction'];

export function allConnectors(c: Config): AnyConnector[] {
  return c.organizations.flatMap((o) => [
    ...o.inboundConnectors.map((x) => ({ ...x, direction: 'inbound' as const })),
    ...o.outboundConnectors.map((x) => ({ ...x, direction: 'outbound' as const })),
  ]);
}

/** Connectors named `name` (any case), in `org` when given; an AdminError when there is none. */
export function findConnectors(c: Config, name: string, org?: string): AnyConnector[] {
  const hits = allConnectors(c).filter(
    (x) => x.name.toLowerCase() === name.toLowerCase() && (!org || x.organization === org),
  );
  if (!hits.length)
    throw new AdminError(
      `no connector named "${name}"${org ? ` in organization ${org}` : ''}`,
      'see `portcullis connector list`',
    );
  return hits;
}

/** What probing needs: the configured DNS servers, trust store and a revocation checker. */
export interface ProbeTools {
  resolver: Resolver;
  trust: TrustStore;
  revocation: RevocationChecker;
}

export async function probeTools(c: Config): Promise<ProbeTools> {
  const [{ DnsResolver }, { TrustStore }, { RevocationChecker }] = await Promise.all([
    import('../../dns/resolver.ts'),
    import('../../tls/trust.ts'),
    import('../../tls/revocation.ts'),
  ]);
  const resolver = new DnsResolver(c.dns.servers, { dnssec: c.dns.dnssec });
  return {
    resolver,
    trust: new TrustStore(c.tls.trust.system, c.tls.trust.caFiles),
    revocation: new RevocationChecker(() => resolver),
  };
}

/** HOST[:PORT], or a mail domain's MX hosts (delivery/probe.ts). */
export async function probeTargets(tools: ProbeTools, spec: string, defaultPort: number): Promise<ProbeTarget[]> {
  return (await import('../../delivery/probe.ts')).targetsFor(tools.resolver, spec, defaultPort);
}

/** Probe every target in turn against `requirement`; optionally send a test message through each host that passes. */
export async function probeAll(
  c: Config,
  tools: ProbeTools,
  targets: ProbeTarget[],
  requirement: TlsRequirement,
  sendTo?: string,
): Promise<HostReport[]> {
  const { probeHost } = await import('../../delivery/probe.ts');
  const out: HostReport[] = [];
  for (const target of targets)
    out.push(...(await probeHost(target, { config: c, ...tools, requirement, ...(sendTo ? { sendTo } : {}) })));
  return out;
}

export interface ValidateOptions {
  /** Whose domain picks the MX hosts (MX connectors); with `send`, where the test message goes. */
  recipient?: string;
  send?: boolean;
}

/** Connect to each smart host or MX host of an outbound connector and judge its tlsSettings. */
export async function validateConnector(
  c: Config,
  tools: ProbeTools,
  x: AnyConnector,
  o: ValidateOptions,
): Promise<HostReport[]> {
  if (x.direction !== 'outbound')
    throw new AdminError(
      `"${x.name}" is an inbound connector; validate checks outbound connectors`,
      'inbound connectors are checked by the partner sending to you',
    );
  if (o.send && !o.recipient)
    throw new AdminError(
      'sending a test message needs a recipient',
      'name the address that should receive the test message',
    );
  const { parseMailbox } = await import('../../mailbox.ts');
  const parsed = o.recipient === undefined ? undefined : parseMailbox(o.recipient, true);
  if (parsed && (!parsed.ok || parsed.mailbox.bare)) {
    throw new AdminError(
      `recipient "${o.recipient}" is not a valid address${!parsed.ok ? `: ${parsed.reply.message}` : ''}`,
      'give user@domain; quote a local part with spaces or special characters: \'"john doe"@example.com\'',
    );
  }
  const rcpt = parsed?.mailbox;
  const { connectorDemand } = await import('../../policy/outbound.ts');
  const requirement = connectorDemand(x);
  let targets: ProbeTarget[];
  if (x.smartHosts.length) {
    const { parseSmartHost } = await import('../../util/net.ts');
    targets = x.smartHosts.map((h) => {
      const p = parseSmartHost(h)!;
      return { host: p.host, port: p.port ?? c.delivery.port };
    });
  } else {
    const domain = rcpt?.domain ?? x.recipientDomains.find((d) => !d.startsWith('*'));
    if (!domain)
      throw new AdminError(
        `connector "${x.name}" uses MX records and has only wildcard domains`,
        'give a recipient address to pick the domain',
      );
    targets = await probeTargets(tools, domain, c.delivery.port);
  }
  return probeAll(c, tools, targets, requirement, o.send ? rcpt?.address : undefined);
}
