// Owns: inbound decisions per SMTP phase: the connector a transaction matches (and its
// requirements), which organisation and route a recipient belongs to, and whether it is accepted
// at all (relay control). Decides only; no I/O.
// Promises: a recipient outside the accepted domains is accepted only for a session identified
// by an onPremises connector whose organisation owns the certificate domain or the sender domain
// (550 5.7.1 otherwise; when the client's certificate carries an onPremises connector's name but
// did not identify it, the refusal says why); local parts with routing characters (%, !, @),
// quoted or not, are never relayed. The recipient address it returns is in the canonical form
// (../mailbox.ts).
import type { AcceptedDomain, Config } from '../config/load.ts';
import { reply, type SmtpReply } from '../errors.ts';
import { foldCase, formatMailbox, policyDomain, underDomain, type Mailbox } from '../mailbox.ts';
import type { Route } from '../store/types.ts';
import { InboundConnectors, type ConnectorMatch, type TransactionView } from './connectors.ts';

export interface RecipientVerdict {
  ok: true;
  address: string;
  org: string;
  route: Route;
}

export type Verdict<T> = T | { ok: false; reply: SmtpReply };

/** What the policy knows when a recipient is asked for. */
export interface SessionView extends TransactionView {
  match?: ConnectorMatch;
}

const relayDenied = (why: string): { ok: false; reply: SmtpReply } => ({
  ok: false,
  reply: reply(550, '5.7.1', 'Relay access denied', why),
});

export class InboundPolicy {
  private readonly domains = new Map<string, AcceptedDomain>();
  private readonly postmasterDomain: string;
  readonly connectors: InboundConnectors;

  constructor(config: Config) {
    for (const o of config.organizations) for (const d of o.acceptedDomains) this.domains.set(d.domain, d);
    this.postmasterDomain = config.organizations[0].acceptedDomains[0].domain;
    this.connectors = new InboundConnectors(config);
  }

  acceptedDomain(domain: string): AcceptedDomain | undefined {
    return this.domains.get(policyDomain(domain));
  }

  /**
   * Where a message the gateway generates (a DSN, a TLS report) for `address` goes: a mailbox
   * here (authoritative domain), else out, routed by the connectors of the organisation the
   * address belongs to (an internalRelay domain's), when it is one of ours.
   */
  destination(address: string): { address: string; route: Route; org?: string } {
    const at = address.lastIndexOf('@');
    const d = this.acceptedDomain(address.slice(at + 1));
    if (!d) return { address, route: 'remote' };
    return {
      // In the domain's configured form, as its recipients are (a UTF-8 domain by its A-label).
      address: address.slice(0, at + 1) + d.domain,
      route: d.type === 'authoritative' ? 'local' : 'remote',
      org: d.organization,
    };
  }

  /** MAIL FROM: select the connector and apply its requirements. */
  mailFrom(v: TransactionView): Verdict<{ ok: true; match?: ConnectorMatch }> {
    const match = this.connectors.select(v);
    const refusal = this.connectors.enforce(match, v);
    if (refusal) return { ok: false, reply: refusal };
    return match ? { ok: true, match } : { ok: true };
  }

  recipient(mb: Mailbox, s: SessionView): Verdict<RecipientVerdict> {
    const domainName = mb.bare ? this.postmasterDomain : mb.domain;
    const local = mb.bare ? 'postmaster' : mb.local;
    if (/[%!@]/.test(local)) {
      return relayDenied(
        `local part "${local}" contains a routing character (% ! @); source-routed relaying is refused`,
      );
    }
    // A UTF-8 domain by its A-label (the configured form): the recipient is written in that form.
    const d = this.acceptedDomain(domainName);
    if (!d) return this.relay(mb, domainName, s);
    const lower = foldCase(local);
    if (d.recipients !== 'any' && lower !== 'postmaster' && !d.recipients.includes(lower)) {
      return {
        ok: false,
        reply: reply(
          550,
          '5.1.1',
          'Recipient address rejected: user unknown',
          `no mailbox ${formatMailbox(lower, d.domain)} in organization ${d.organization}`,
        ),
      };
    }
    return {
      ok: true,
      address: formatMailbox(local, d.domain),
      org: d.organization,
      route: d.type === 'internalRelay' ? 'remote' : 'local',
    };
  }

  /**
   * Relay to an outside domain: only for a session matched to an onPremises connector, and only
   * when the certificate domain or the envelope sender's domain belongs to its organization.
   * Attribution: certificate domain, then sender domain.
   */
  private relay(mb: Mailbox, domain: string, s: SessionView): Verdict<RecipientVerdict> {
    const m = s.match;
    if (!m || m.connector.connectorType !== 'onPremises' || m.by === 'senderDomain') {
      const cert = this.connectors.certificateNotAccepted('onPremises', s.clientCert);
      return relayDenied(
        `recipient domain ${domain} is not an accepted domain and this client is not allowed to ` +
          `relay${cert ? `; ${cert}` : ''}`,
      );
    }
    const c = m.connector;
    const certDomain =
      m.by === 'certificate' && s.clientCert
        ? s.clientCert.names.map((n) => underDomain(n.replace(/^\*\./, ''), this.domains)).find((x) => x)
        : undefined;
    const owner = [certDomain, this.domains.get(s.senderDomain)].find((d) => d?.organization === c.organization);
    if (!owner) {
      return relayDenied(
        `client ${s.clientIp} matches onPremises connector "${c.name}" of organization ${c.organization} (by ` +
          `${m.by}), but neither ` +
          `its certificate domain nor the sender domain "${s.senderDomain || '(null sender)'}" is one of that ` +
          `organization's accepted domains`,
      );
    }
    if (domain.startsWith('[')) return relayDenied(`relaying to address literals (${domain}) is refused`);
    // The domain by its A-label: one recipient however its domain is written (and sent in the form DNS knows).
    return { ok: true, address: formatMailbox(mb.local, policyDomain(domain)), org: c.organization, route: 'remote' };
  }
}
