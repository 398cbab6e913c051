// Owns: inbound connector selection and enforcement for one SMTP transaction (decides only).
// Selection: certificate-identified connectors first, then IP-identified, then sender-domain
// ones (partner connectors only: an onPremises connector is identified by certificate or IP);
// among equals a connector with a restriction wins over one without; remaining ties are
// refused at configuration load (see findTies). The chosen connector is recorded in the trace.
// Promises: a partner connector's requireTls refuses plaintext (530 5.7.0); its restrictions
// refuse a sender claiming the partner's domain without the partner's certificate / addresses
// (5.7.1, anti-spoofing); a client certificate satisfies tlsSenderCertificateName only if it
// carries the name, its chain verifies (trust store, or the connector's trustedCAs) or it is
// explicitly pinned, its extended key usage allows client authentication, and it is not revoked
// (tls.revocation: softFail also accepts an unknown status, hardFail only a confirmed good one).
// Decides from the session's judgement of the certificate (tls/client-cert.ts), never does I/O;
// every refusal names the cause.
import type { BlockList } from 'node:net';
import type { Config, InboundConnector } from '../config/load.ts';
import { restricted } from '../config/ties.ts';
import { blockList, inBlocks } from '../util/net.ts';
import { reply, type SmtpReply } from '../errors.ts';
import { normalizeFingerprint, type ClientAnchor, type ClientCertificate } from '../tls/client-cert.ts';
import { namesSatisfy } from '../tls/names.ts';
import type { RevocationMode } from '../tls/revocation.ts';
import { TrustStore } from '../tls/trust.ts';
import { patternMatch } from './outbound.ts';

/** What the session knows when MAIL FROM arrives. */
export interface TransactionView {
  clientIp: string;
  tls: boolean;
  /** The client certificate as judged after the handshake; absent when none was presented. */
  clientCert?: ClientCertificate | undefined;
  senderDomain: string;
}

export interface ConnectorMatch {
  connector: InboundConnector;
  /** How it was identified. */
  by: 'certificate' | 'ip' | 'senderDomain';
}

interface Prepared {
  c: InboundConnector;
  blocks: BlockList | null;
  /** What the connector accepts as a client certificate (with tlsSenderCertificateName). */
  anchor: ClientAnchor | null;
  restricted: boolean;
}

const label = (c: InboundConnector) => `"${c.name}" (organization ${c.organization})`;

/** How specific a connector's certificate name is: any exact name above any wildcard, longer above shorter. */
const specificity = (p: Prepared) => {
  const n = p.c.tlsSenderCertificateName ?? '';
  return n.startsWith('*.') ? n.length : 1000 + n.length;
};

export class InboundConnectors {
  private readonly list: Prepared[];
  private readonly revocation: RevocationMode;
  /** Per certificate-identified connector, what it accepts: for judging a client certificate once per session. */
  readonly anchors: readonly ClientAnchor[];

  constructor(config: Config) {
    this.revocation = config.tls.revocation;
    this.list = config.organizations
      .flatMap((o) => o.inboundConnectors)
      .filter((c) => c.enabled)
      .map((c) => ({
        c,
        blocks: blockList(c.senderIPAddresses),
        anchor: c.tlsSenderCertificateName
          ? {
              id: `${c.organization}/${c.name}`,
              pattern: c.tlsSenderCertificateName,
              trust: c.trustedCAs.length ? new TrustStore(false, c.trustedCAs) : null,
              pins: new Set(c.pinnedCertificates.map(normalizeFingerprint)),
            }
          : null,
        restricted: restricted(c),
      }));
    this.anchors = this.list.flatMap((p) => (p.anchor ? [p.anchor] : []));
  }

  /**
   * Why the presented certificate does not prove the connector's tlsSenderCertificateName, or
   * null when it does. Checked in this order: presence, name, chain (or pin), EKU, revocation.
   */
  private certificateRefusal(p: Prepared, cert: ClientCertificate | undefined): string | null {
    const a = p.anchor;
    if (!a) return 'the connector has no tlsSenderCertificateName';
    if (!cert) return 'no certificate was presented';
    const presented = `presented ${cert.subject} (SHA-256 ${cert.fingerprint256})`;
    if (!namesSatisfy(cert.names, a.pattern))
      return `${presented}: name mismatch, it carries ${cert.names.join(', ') || 'no DNS name'}, required ${a.pattern}`;
    if (!cert.verified && !cert.trustedBy.includes(a.id))
      return `${presented}: certificate not trusted (${cert.verifyError ?? 'chain does not verify'})`;
    if (cert.ekuError) return `${presented}: ${cert.ekuError}`;
    if (this.revocation === 'off') return null;
    const r = cert.revocation;
    if (!r) return `${presented}: its revocation status was not checked`;
    if (r.status === 'revoked') return `${presented}: ${r.summary}`;
    if (r.status === 'unknown' && this.revocation === 'hardFail')
      return `${presented}: tls.revocation hardFail: ${r.summary}`;
    return null;
  }

  private certificateSatisfies(p: Prepared, cert: ClientCertificate | undefined): boolean {
    return p.anchor !== null && this.certificateRefusal(p, cert) === null;
  }

  /**
   * Why a certificate that carries the name of a connector of this type did not identify it
   * (for refusals that follow from it, such as relay denial); undefined when none applies.
   */
  certificateNotAccepted(
    type: InboundConnector['connectorType'],
    cert: ClientCertificate | undefined,
  ): string | undefined {
    if (!cert) return undefined;
    for (const p of this.list) {
      if (p.c.connectorType !== type || !p.anchor || !namesSatisfy(cert.names, p.anchor.pattern)) continue;
      const why = this.certificateRefusal(p, cert);
      if (why) return `its client certificate does not identify ${type} connector ${label(p.c)}: ${why}`;
    }
    return undefined;
  }

  /** Select the connector for this transaction (none is a normal outcome). */
  select(v: TransactionView): ConnectorMatch | undefined {
    // An organisation's own servers (onPremises) first, then a partner with a restriction, then others.
    const rank = (p: Prepared) => (p.c.connectorType === 'onPremises' ? 0 : p.restricted ? 1 : 2);
    const facts = (p: Prepared, by: ConnectorMatch['by']): ConnectorMatch => ({ connector: p.c, by });
    // Of certificate names that both fit, the more specific wins (an exact name over a wildcard:
    // an organisation's partner connector for one name under its own servers' wildcard), except
    // that another organisation's partner connector never takes an organisation's own servers.
    const byCert = this.list
      .filter((p) => this.certificateSatisfies(p, v.clientCert))
      .sort((a, b) => specificity(b) - specificity(a) || rank(a) - rank(b));
    if (byCert.length) {
      const best = byCert[0];
      const own =
        best.c.connectorType === 'partner'
          ? byCert.find((p) => p.c.connectorType === 'onPremises' && p.c.organization !== best.c.organization)
          : undefined;
      return facts(own ?? best, 'certificate');
    }
    const byIp = this.list.filter((p) => inBlocks(p.blocks, v.clientIp)).sort((a, b) => rank(a) - rank(b));
    if (byIp.length) return facts(byIp[0], 'ip');
    let best: Prepared | undefined;
    let score = -1;
    for (const p of this.list) {
      // An onPremises connector grants relay: only its certificate or addresses identify it,
      // never a sender domain anyone can write in MAIL FROM.
      if (p.c.connectorType === 'onPremises') continue;
      for (const pat of p.c.senderDomains) {
        const s = patternMatch(pat, v.senderDomain);
        if (s > score || (s === score && s >= 0 && best && rank(p) < rank(best))) {
          score = s;
          best = p;
        }
      }
    }
    return best && score >= 0 ? facts(best, 'senderDomain') : undefined;
  }

  /**
   * The verdict at MAIL FROM: undefined = go on, or a refusal. requireTls comes from the matched
   * connector; the anti-spoofing restrictions come from EVERY partner connector whose
   * senderDomains cover the sender domain, whichever connector the session matched.
   */
  enforce(m: ConnectorMatch | undefined, v: TransactionView): SmtpReply | undefined {
    if (m?.connector.requireTls && !v.tls) {
      return reply(
        530,
        '5.7.0',
        'Must issue a STARTTLS command first',
        `connector "${m.connector.name}" (organization ${m.connector.organization}) requires TLS; the client sent ` +
          `MAIL in plaintext`,
      );
    }
    for (const p of this.list) {
      const c = p.c;
      if (c.connectorType !== 'partner' || !p.restricted) continue;
      if (!c.senderDomains.some((pat) => patternMatch(pat, v.senderDomain) >= 0)) continue;
      if (c.requireTls && !v.tls) {
        return reply(
          530,
          '5.7.0',
          'Must issue a STARTTLS command first',
          `partner connector ${label(c)} requires TLS for ${v.senderDomain}; the client sent MAIL in plaintext`,
        );
      }
      const refusal = c.restrictDomainsToCertificate ? this.certificateRefusal(p, v.clientCert) : null;
      if (refusal) {
        return reply(
          550,
          '5.7.1',
          `Sender domain ${v.senderDomain} may only be used by its partner's certificate-authenticated servers`,
          `partner connector ${label(c)} requires a client certificate matching ${c.tlsSenderCertificateName} for ` +
            `${v.senderDomain}; ${refusal}`,
        );
      }
      if (c.restrictDomainsToIPAddresses && !inBlocks(p.blocks, v.clientIp)) {
        return reply(
          550,
          '5.7.1',
          `Sender domain ${v.senderDomain} may only be used from its partner's servers`,
          `partner connector ${label(c)} accepts ${v.senderDomain} only from ${c.senderIPAddresses.join(', ')}; ` +
            `the client is ${v.clientIp}`,
        );
      }
    }
    return undefined;
  }

  // Admission (inbound/admission.ts): which clients may use the reserved connection capacity.
  /** Whether some enabled connector can identify a client at all (by address or certificate). */
  get identifiesClients(): boolean {
    return this.list.some((p) => p.blocks !== null || !!p.c.tlsSenderCertificateName);
  }

  /** The client address is in an enabled connector's senderIPAddresses. */
  identifiesAddress(ip: string): boolean {
    return this.list.some((p) => inBlocks(p.blocks, ip));
  }

  /** The judged client certificate identifies an enabled connector (revocation and EKU included). */
  identifiesCertificate(cert: ClientCertificate | undefined): boolean {
    return !!cert && this.list.some((p) => this.certificateSatisfies(p, cert));
  }
}
