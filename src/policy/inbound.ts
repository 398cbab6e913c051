// Owns: inbound decisions per SMTP phase: which organisation and route a recipient belongs to,
// and whether it is accepted at all (relay control). Decides only; no I/O.
// Promise: a recipient outside the accepted domains is never accepted (550 5.7.1), nor is one
// whose local part carries routing characters (%, !, @): the classic relay tricks.
import { BlockList, isIP } from 'node:net';
import type { AcceptedDomain, Config, InboundConnector } from '../config/load.ts';
import { parseCidr } from '../config/schema.ts';
import { reply, type SmtpReply } from '../errors.ts';
import type { Mailbox } from '../inbound/address.ts';
import type { Route } from '../store/types.ts';

export interface RelayVerdict {
  ok: true;
  address: string;
  org: string;
  route: 'remote';
  connector: string;
}

export interface RecipientVerdict {
  ok: true;
  address: string;
  org: string;
  domain: AcceptedDomain;
  route: Route;
}

export type Verdict<T> = T | { ok: false; reply: SmtpReply };

/** What the policy may know about the session asking (grows with connectors). */
export interface SessionView {
  clientIp: string;
  tls: boolean;
  /** Envelope sender domain of the current transaction ("" for the null sender). */
  senderDomain?: string;
}

interface IpConnector { connector: InboundConnector; blocks: BlockList }

const relayDenied = (why: string): { ok: false; reply: SmtpReply } =>
  ({ ok: false, reply: reply(550, '5.7.1', 'Relay access denied', why) });

export class InboundPolicy {
  private readonly domains = new Map<string, AcceptedDomain>();
  private readonly postmasterDomain: string;
  private readonly onPremises: IpConnector[] = [];

  constructor(config: Config) {
    for (const o of config.organizations) {
      for (const d of o.acceptedDomains) this.domains.set(d.domain, d);
      for (const c of o.inboundConnectors) {
        if (!c.enabled || c.connectorType !== 'onPremises') continue;
        const blocks = new BlockList();
        for (const a of c.senderIPAddresses) {
          const p = parseCidr(a)!;
          blocks.addSubnet(p.ip, p.bits, isIP(p.ip) === 6 ? 'ipv6' : 'ipv4');
        }
        this.onPremises.push({ connector: c, blocks });
      }
    }
    this.postmasterDomain = config.organizations[0].acceptedDomains[0].domain;
  }

  /** The onPremises connector whose senderIPAddresses contain this client, if any. */
  onPremisesFor(ip: string): InboundConnector | undefined {
    const fam = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
    return this.onPremises.find((x) => x.blocks.check(ip, fam))?.connector;
  }

  acceptedDomain(domain: string): AcceptedDomain | undefined {
    return this.domains.get(domain.toLowerCase());
  }

  recipient(mb: Mailbox, s: SessionView): Verdict<RecipientVerdict | RelayVerdict> {
    const domainName = mb.bare ? this.postmasterDomain : mb.domain;
    const local = mb.bare ? 'postmaster' : mb.local;
    const d = this.domains.get(domainName);
    if (!d) return this.relay(mb, local, domainName, s);
    if (/[%!@]/.test(local)) {
      return relayDenied(`local part "${local}" contains a routing character (% ! @); source-routed relaying is refused`);
    }
    const lower = local.toLowerCase();
    if (d.recipients !== 'any' && lower !== 'postmaster' && !d.recipients.includes(lower)) {
      return { ok: false, reply: reply(550, '5.1.1', 'Recipient address rejected: user unknown', `no mailbox ${lower}@${d.domain} in organization ${d.organization}`) };
    }
    return { ok: true, address: `${local}@${d.domain}`, org: d.organization, domain: d, route: 'local' };
  }

  /**
   * Relay to an outside domain: only for a session identified by an onPremises connector, and only
   * when the envelope sender's domain is an accepted domain of that connector's organization.
   */
  private relay(mb: Mailbox, local: string, domain: string, s: SessionView): Verdict<RelayVerdict> {
    const c = this.onPremisesFor(s.clientIp);
    if (!c) return relayDenied(`recipient domain ${domain} is not an accepted domain and this client is not allowed to relay`);
    if (/[%!@]/.test(local) || mb.quoted && /[%!@]/.test(mb.local)) {
      return relayDenied(`local part "${local}" contains a routing character (% ! @); source-routed relaying is refused`);
    }
    const sender = this.domains.get(s.senderDomain ?? '');
    if (!sender || sender.organization !== c.organization) {
      return relayDenied(`client ${s.clientIp} matches onPremises connector "${c.name}" of organization ${c.organization}, but the sender domain ` +
        `"${s.senderDomain || '(null sender)'}" is not one of its accepted domains`);
    }
    if (domain.startsWith('[')) return relayDenied(`relaying to address literals (${domain}) is refused`);
    return { ok: true, address: mb.address, org: c.organization, route: 'remote', connector: c.name };
  }
}
