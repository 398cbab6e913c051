// Owns: inbound decisions per SMTP phase: which organisation and route a recipient belongs to,
// and whether it is accepted at all (relay control). Decides only; no I/O.
// Promise: a recipient outside the accepted domains is never accepted (550 5.7.1), nor is one
// whose local part carries routing characters (%, !, @): the classic relay tricks.
import type { AcceptedDomain, Config } from '../config/load.ts';
import { reply, type SmtpReply } from '../errors.ts';
import type { Mailbox } from '../inbound/address.ts';
import type { Route } from '../store/types.ts';

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
}

const relayDenied = (why: string): { ok: false; reply: SmtpReply } =>
  ({ ok: false, reply: reply(550, '5.7.1', 'Relay access denied', why) });

export class InboundPolicy {
  private readonly domains = new Map<string, AcceptedDomain>();
  private readonly postmasterDomain: string;

  constructor(config: Config) {
    for (const o of config.organizations) for (const d of o.acceptedDomains) this.domains.set(d.domain, d);
    this.postmasterDomain = config.organizations[0].acceptedDomains[0].domain;
  }

  acceptedDomain(domain: string): AcceptedDomain | undefined {
    return this.domains.get(domain.toLowerCase());
  }

  recipient(mb: Mailbox, _s: SessionView): Verdict<RecipientVerdict> {
    const domainName = mb.bare ? this.postmasterDomain : mb.domain;
    const local = mb.bare ? 'postmaster' : mb.local;
    const d = this.domains.get(domainName);
    if (!d) return relayDenied(`recipient domain ${domainName} is not an accepted domain and this client is not allowed to relay`);
    if (/[%!@]/.test(local)) {
      return relayDenied(`local part "${local}" contains a routing character (% ! @); source-routed relaying is refused`);
    }
    const lower = local.toLowerCase();
    if (d.recipients !== 'any' && lower !== 'postmaster' && !d.recipients.includes(lower)) {
      return { ok: false, reply: reply(550, '5.1.1', 'Recipient address rejected: user unknown', `no mailbox ${lower}@${d.domain} in organization ${d.organization}`) };
    }
    return { ok: true, address: `${local}@${d.domain}`, org: d.organization, domain: d, route: 'local' };
  }
}
