// Owns: the types the admin centre's HTTP modules share: what the app needs from the running
// gateway (AdminDeps) and what a route declares besides its schema (RouteMeta). Types only.
import type { Config } from '../../config/load.ts';
import type { Store } from '../../store/types.ts';
import type { GatewayMetrics } from '../metrics.ts';
import type { ProbeTools } from '../ops/connectors.ts';

/** What the admin centre needs from the running gateway. */
export interface AdminDeps {
  config(): Config;
  store(): Store;
  /** Ask the scheduler to look at the queue now (after retry, bounce now). */
  kick(): void;
  reload(source: string): Promise<{ ok: boolean; message: string }>;
  metrics: GatewayMetrics;
  /** DNS resolver, trust store and revocation checker for connector validation and readiness checks. */
  probeTools(): Promise<ProbeTools>;
  startedAt: number;
  version: string;
  /** The built web UI (index.html and assets), or null when it was not built. */
  uiDir: string | null;
}

/** What a route declares beyond its schema. */
export interface RouteMeta {
  /** Only a global token may call it (gateway-wide actions and data). */
  globalOnly?: boolean;
  /** Audit action name of a mutating route ("queue.retry"). */
  action?: string;
}
