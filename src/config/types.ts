// Owns: the types of a loaded configuration (what load.ts returns and every module reads): the
// schema's output with paths resolved, each accepted domain and connector tagged with its
// organization, and the hostname filled in. Types only.
import type { ParsedConfig } from './schema.ts';
import type { StoreConfig } from './store.ts';

export interface AcceptedDomain {
  domain: string;
  type: 'authoritative' | 'internalRelay';
  recipients: 'any' | readonly string[];
  organization: string;
}

type RawOrg = ParsedConfig['organizations'][number];
export type InboundConnector = RawOrg['inboundConnectors'][number] & { organization: string };
export type OutboundConnector = RawOrg['outboundConnectors'][number] & { organization: string };

export interface Organization {
  name: string;
  acceptedDomains: readonly AcceptedDomain[];
  inboundConnectors: readonly InboundConnector[];
  outboundConnectors: readonly OutboundConnector[];
}

export interface Config extends Omit<ParsedConfig, 'organizations' | 'hostname' | 'store' | 'nodeId'> {
  hostname: string;
  /** nodeId, or the host name and dataDir. */
  nodeId: string;
  /** With the PostgreSQL URL resolved (config/store.ts). */
  store: StoreConfig;
  organizations: readonly Organization[];
  /** The file this came from, or null for the embedded defaults. */
  source: string | null;
}
