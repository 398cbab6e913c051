// Owns: inbound connector selection and enforcement for one SMTP transaction (decides only).
// Selection: certificate-identified connectors first, then IP-identified, then sender-domain
// ones; among equals a connector with a restriction wins over one without; remaining ties are
// refused at configuration load (see findTies). The chosen connector is recorded in the trace.
// Promises: a partner connector's requireTls refuses plaintext (530 5.7.0); its restrictions
// refuse a sender claiming the partner's domain without the partner's certificate / addresses
// (5.7.1, anti-spoofing); a certificate satisfies tlsSenderCertificateName only if its chain
// verifies (trust store, or the connector's trustedCAs) or it is explicitly pinned.
import type { BlockList } from 'node:net';
import type { X509Certificate } from 'node:crypto';
import type { Config, InboundConnector } from '../config/load.ts';
import { blockList, inBlocks } from '../config/schema.ts';
import { reply, type SmtpReply } from '../errors.ts';
import { certificateNames, namesSatisfy } from '../tls/names.ts';
import { TrustStore, verifyChain } from '../tls/trust.ts';
import { patternMatch } from './outbound.ts';

/** What the session knows when MAIL FROM arrives. */
export interface TransactionView {
  clientIp: string;
  tls: boolean;
  /** Client certificate chain as presented, leaf first (empty when none). */
  clientChain: readonly X509Certificate[];
  senderDomain: string;
}

export interface ConnectorMatch {
  connector: InboundConnector;
  /** How it was identified. */
  by: 'certificate' | 'ip' | 'senderDomain';
  /** The client certificate satisfied the connector's tlsSenderCertificateName. */
  certificateOk: boolean;
  ipOk: boolean;
}

interface Prepared {
  c: InboundConnector;
  blocks: BlockList | null;
  trust: TrustStore | null;
  pins: Set<string>;
  restricted: boolean;
}

const normFp = (f: string) => f.replace(/[^0-9a-f]/gi, '').toUpperCase();


export class InboundConnectors {
  private readonly list: Prepared[];

  constructor(config: Config, private readonly trust: TrustStore) {
    this.list = config.organizations.flatMap((o) => o.inboundConnectors).filter((c) => c.enabled).map((c) => ({
      c, blocks: blockList(c.senderIPAddresses),
      trust: c.trustedCAs.length ? new TrustStore(false, c.trustedCAs) : null,
      pins: new Set(c.pinnedCertificates.map(normFp)),
      restricted: c.restrictDomainsToCertificate || c.restrictDomainsToIPAddresses,
    }));
  }

  /** Does the presented chain prove the connector's tlsSenderCertificateName? */
  private certificateSatisfies(p: Prepared, chain: readonly X509Certificate[]): boolean {
    const pattern = p.c.tlsSenderCertificateName;
    if (!pattern || !chain.length) return false;
    const leaf = chain[0];
    const trusted = p.pins.has(normFp(leaf.fingerprint256))
      || verifyChain(leaf, chain.slice(1), this.trust).ok
      || (p.trust !== null && verifyChain(leaf, chain.slice(1), p.trust).ok);
    return trusted && namesSatisfy(certificateNames(leaf), pattern);
  }

  /** Select the connector for this transaction (none is a normal outcome). */
  select(v: TransactionView): ConnectorMatch | undefined {
    const rank = (p: Prepared) => (p.restricted ? 0 : 1);
    const facts = (p: Prepared, by: ConnectorMatch['by']): ConnectorMatch => ({
      connector: p.c, by, certificateOk: this.certificateSatisfies(p, v.clientChain), ipOk: inBlocks(p.blocks, v.clientIp),
    });
    const byCert = this.list.filter((p) => this.certificateSatisfies(p, v.clientChain)).sort((a, b) => rank(a) - rank(b));
    if (byCert.length) return facts(byCert[0], 'certificate');
    const byIp = this.list.filter((p) => inBlocks(p.blocks, v.clientIp)).sort((a, b) => rank(a) - rank(b));
    if (byIp.length) return facts(byIp[0], 'ip');
    let best: Prepared | undefined; let score = -1;
    for (const p of this.list) {
      for (const pat of p.c.senderDomains) {
        const s = patternMatch(pat, v.senderDomain);
        if (s > score || (s === score && s >= 0 && best && rank(p) < rank(best))) { score = s; best = p; }
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
      return reply(530, '5.7.0', 'Must issue a STARTTLS command first',
        `connector "${m.connector.name}" (organization ${m.connector.organization}) requires TLS; the client sent MAIL in plaintext`);
    }
    for (const p of this.list) {
      const c = p.c;
      if (c.connectorType !== 'partner' || !p.restricted) continue;
      if (!c.senderDomains.some((pat) => patternMatch(pat, v.senderDomain) >= 0)) continue;
      if (c.requireTls && !v.tls) {
        return reply(530, '5.7.0', 'Must issue a STARTTLS command first',
          `partner connector "${c.name}" (organization ${c.organization}) requires TLS for ${v.senderDomain}; the client sent MAIL in plaintext`);
      }
      if (c.restrictDomainsToCertificate && !this.certificateSatisfies(p, v.clientChain)) {
        return reply(550, '5.7.1', `Sender domain ${v.senderDomain} may only be used by its partner's certificate-authenticated servers`,
          `partner connector "${c.name}" (organization ${c.organization}) requires a client certificate matching ${c.tlsSenderCertificateName ?? '(no tlsSenderCertificateName)'} for ${v.senderDomain}; ` +
          `${v.clientChain.length ? `presented ${v.clientChain[0].subject.split('\n').join(', ')} (SHA-256 ${v.clientChain[0].fingerprint256}), which does not satisfy it` : 'no certificate was presented'}`);
      }
      if (c.restrictDomainsToIPAddresses && !inBlocks(p.blocks, v.clientIp)) {
        return reply(550, '5.7.1', `Sender domain ${v.senderDomain} may only be used from its partner's servers`,
          `partner connector "${c.name}" (organization ${c.organization}) accepts ${v.senderDomain} only from ${c.senderIPAddresses.join(', ')}; the client is ${v.clientIp}`);
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

  /** The client certificate chain satisfies an enabled connector's tlsSenderCertificateName. */
  identifiesCertificate(chain: readonly X509Certificate[]): boolean {
    return chain.length > 0 && this.list.some((p) => this.certificateSatisfies(p, chain));
  }
}

