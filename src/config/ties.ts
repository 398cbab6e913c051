// Owns: refusing ambiguous inbound connectors at load: two enabled connectors that identify the
// same senders at the same rank (certificate name, client address, sender domain) with the same
// restriction status. The policy's selection order cannot choose between them.
import { blockList, inBlocks, parseCidr } from '../util/net.ts';
import type { InboundConnector } from './types.ts';

/**
 * A partner connector with an anti-spoofing restriction (it wins a selection tie over one
 * without). The restrictions are a partner's: on an onPremises connector they change nothing,
 * so they do not break a tie either (one organisation's servers are never taken for another's
 * because one connector carries a flag).
 */
export function restricted(c: InboundConnector): boolean {
  return c.connectorType === 'partner' && (c.restrictDomainsToCertificate || c.restrictDomainsToIPAddresses);
}

/** Sender domains identify partner connectors only (an onPremises connector: its addresses or certificate). */
const identifyingDomains = (c: InboundConnector) => (c.connectorType === 'partner' ? c.senderDomains : []);

/** Configuration problems: inbound connectors that would match the same senders equally. */
export function findTies(organizations: readonly { inboundConnectors: readonly InboundConnector[] }[]): string[] {
  const all = organizations.flatMap((o) => o.inboundConnectors).filter((c) => c.enabled);
  const problems: string[] = [];
  const label = (c: InboundConnector) => `"${c.name}" (organization ${c.organization})`;
  for (let i = 0; i < all.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      const a = all[i];
      const b = all[j];
      // Selection decides when one is a restricted partner connector (the restricted partner over
      // another partner; an onPremises connector over a partner). Two onPremises connectors
      // (never restricted) that overlap are a tie whatever their flags.
      if (restricted(a) !== restricted(b)) continue;
      if (a.tlsSenderCertificateName && a.tlsSenderCertificateName === b.tlsSenderCertificateName) {
        problems.push(
          `inbound connectors ${label(a)} and ${label(b)} are both identified by certificate name ` +
            `${a.tlsSenderCertificateName}`,
        );
      }
      const bb = blockList(b.senderIPAddresses);
      const overlap =
        a.senderIPAddresses.find((x) => {
          const p = parseCidr(x)!;
          return inBlocks(bb, p.ip);
        }) ??
        b.senderIPAddresses.find((x) => {
          const p = parseCidr(x)!;
          return inBlocks(blockList(a.senderIPAddresses), p.ip);
        });
      if (overlap) {
        problems.push(`inbound connectors ${label(a)} and ${label(b)} both match client address ${overlap}`);
      }
      const shared = identifyingDomains(a).find((d) => identifyingDomains(b).includes(d));
      if (shared) {
        problems.push(`inbound connectors ${label(a)} and ${label(b)} both claim sender domain ${shared}`);
      }
    }
  }
  return problems;
}
