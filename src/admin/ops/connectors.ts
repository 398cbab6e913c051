// Owns: the connectors as the CLI (`connector list|show|validate`, `tls check`) and the admin API
// see them: every connector of every organisation with its direction, finding one by name,
// validating an outbound connector (each smart host or MX host, as delivery would meet it, with
// an optional test message), and the admin centre's test send (one test message through the
// first host that meets the connector's requirement, only to a domain the connector serves).
// The probing modules (DNS, SMTP client, TLS, revocation) are imported when a probe runs, so that
// listing connectors stays light for the CLI.
// Promise: validation never throws for a bad host (the report says why); a connector that
// cannot be validated (inbound, MX with only wildcard domains, a bad recipient) is an AdminError
// naming the fix.
import type { Config, InboundConnector, OutboundConnector } from '../../config/load.ts';
import type { Resolver } from '../../dns/types.ts';
import type { HostReport, ProbeTarget } from '../../delivery/probe.ts';
import { AdminError } from '../../errors.ts';
import { patternMatch, type TlsRequirement } from '../../policy/outbound.ts';
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
  const targets = await connectorTargets(c, tools, x, rcpt?.domain);
  const { connectorDemand } = await import('../../policy/outbound.ts');
  return probeAll(c, tools, targets, connectorDemand(x), o.send ? rcpt?.address : undefined);
}

/** The smart hosts of an outbound connector, or the MX hosts of `domain` (else its first non-wildcard domain). */
async function connectorTargets(
  c: Config,
  tools: ProbeTools,
  x: OutboundConnector,
  domain: string | undefined,
): Promise<ProbeTarget[]> {
  if (x.smartHosts.length) {
    const { parseSmartHost } = await import('../../util/net.ts');
    return x.smartHosts.map((h) => {
      const p = parseSmartHost(h)!;
      return { host: p.host, port: p.port ?? c.delivery.port };
    });
  }
  const d = domain ?? x.recipientDomains.find((p) => !p.startsWith('*'));
  if (!d)
    throw new AdminError(
      `connector "${x.name}" uses MX records and has only wildcard domains`,
      'give a recipient address to pick the domain',
    );
  return probeTargets(tools, d, c.delivery.port);
}

/**
 * Is `domain` one this outbound connector is configured to carry mail for: a recipientDomains
 * pattern, the organisation's accepted domains (allAcceptedDomains), or any domain outside them
 * (routeAllMessagesViaOnPremises)?
 */
export function connectorServes(c: Config, x: OutboundConnector, domain: string): boolean {
  const d = domain.toLowerCase();
  if (x.recipientDomains.some((p) => patternMatch(p, d) >= 0)) return true;
  const accepted = !!c.organizations
    .find((o) => o.name === x.organization)
    ?.acceptedDomains.some((a) => a.domain === d);
  return (x.allAcceptedDomains && accepted) || (x.routeAllMessagesViaOnPremises && !accepted);
}

/**
 * The recipient of a test message through `x`: the address given, or postmaster (RFC 5321 §4.5.1)
 * of the connector's first non-wildcard domain; an AdminError when it is not a valid address or
 * not in a domain the connector serves.
 */
export async function testRecipient(c: Config, x: OutboundConnector, given: string | undefined): Promise<string> {
  const first = x.recipientDomains.find((p) => !p.startsWith('*'));
  const address = given ?? (first ? `postmaster@${first}` : undefined);
  if (!address)
    throw new AdminError(
      `connector "${x.name}" has only wildcard recipient domains: name the test recipient`,
      'give recipient: an address in a domain the connector serves',
    );
  const { parseMailbox } = await import('../../mailbox.ts');
  const parsed = parseMailbox(address, true);
  if (!parsed.ok || parsed.mailbox.bare)
    throw new AdminError(
      `recipient "${address}" is not a valid address${!parsed.ok ? `: ${parsed.reply.message}` : ''}`,
      'give user@domain',
    );
  if (!connectorServes(c, x, parsed.mailbox.domain))
    throw new AdminError(
      `recipient "${address}" is not in a domain connector "${x.name}" serves ` +
        `(${x.recipientDomains.join(', ') || "its organization's routing"})`,
      'a test message goes only where the connector carries mail: give an address in one of its recipient domains',
    );
  return parsed.mailbox.address;
}

export interface TestSendResult {
  recipient: string;
  /** A host took the message (250 to the end of data). */
  sent: boolean;
  /** The host that took it, with the TLS facts of its session. */
  via?: HostReport;
  /** Every host tried, in order, until one took it. */
  hosts: HostReport[];
}

/**
 * Send one test message to `recipient` through the connector, as delivery would: smart hosts or MX
 * hosts in order, each judged against the connector's requirement (a host that does not meet it
 * gets no message), stopping at the first that takes it.
 */
export async function testSend(
  c: Config,
  tools: ProbeTools,
  x: OutboundConnector,
  recipient: string,
): Promise<TestSendResult> {
  const domain = recipient.slice(recipient.lastIndexOf('@') + 1);
  const targets = await connectorTargets(c, tools, x, domain);
  const { connectorDemand } = await import('../../policy/outbound.ts');
  const hosts: HostReport[] = [];
  for (const t of targets) {
    const reports = await probeAll(c, tools, [t], connectorDemand(x), recipient);
    hosts.push(...reports);
    const via = reports.find((r) => r.passes && r.testMessage?.startsWith('250'));
    if (via) return { recipient, sent: true, via, hosts };
  }
  return { recipient, sent: false, hosts };
}
