// Owns: the configuration hash nodes report in their heartbeat (`portcullis cluster status` warns
// when nodes differ). It covers the effective configuration except what is meant to differ
// between nodes (nodeId, hostname, dataDir, smtp.listen, workers, the file's own path).
import { createHash } from 'node:crypto';
import type { Config } from './types.ts';

/** The first 16 hex digits of the SHA-256 of the node-independent configuration. */
export function configHash(c: Config): string {
  const {
    nodeId: _n,
    hostname: _h,
    dataDir: _d,
    source: _s,
    workers: _w,
    smtp: { listen: _l, ...smtp },
    ...shared
  } = c;
  return createHash('sha256')
    .update(JSON.stringify({ ...shared, smtp }))
    .digest('hex')
    .slice(0, 16);
}
