// Owns: the `store` key as the rest of the program sees it: the PostgreSQL URL resolved from
// store.url or $PORTCULLIS_STORE_URL (the environment wins, so that one YAML can serve every node
// while the secret comes from the service's environment), and the start-up rule that local
// (Maildir) delivery on PostgreSQL needs shared mailbox storage.
// Promise: problems name the key and the fix and never contain the URL's password.
import { isPostgresUrl } from '../util/secret-url.ts';
import type { ParsedConfig } from './schema.ts';

export const STORE_URL_ENV = 'PORTCULLIS_STORE_URL';
const DEFAULT_POOL_SIZE = 10;

export type StoreConfig =
  | { type: 'sqlite' }
  | {
      type: 'postgres';
      url: string;
      poolSize: number;
      /** Where url came from. */ urlFrom: 'store.url' | typeof STORE_URL_ENV;
    };

/** The store configuration with its URL resolved, or the problems that prevent it. */
export function resolveStore(
  c: ParsedConfig,
  env: NodeJS.ProcessEnv = process.env,
): { store: StoreConfig; problems: string[] } {
  const s = c.store;
  if (s.type === 'sqlite') return { store: { type: 'sqlite' }, problems: [] };
  const fromEnv = env[STORE_URL_ENV];
  const problems: string[] = [];
  if (fromEnv !== undefined && fromEnv !== '' && !isPostgresUrl(fromEnv)) {
    problems.push(
      `  ${STORE_URL_ENV}: must be a PostgreSQL URL, postgresql://USER@HOST:PORT/DATABASE (the value is not ` +
        `shown: it may hold a password)`,
    );
  }
  const url = fromEnv || s.url;
  if (!url)
    problems.push(
      `  store.url: store type postgres needs a URL: set store.url, or ${STORE_URL_ENV} in the server's environment`,
    );
  const authoritative = c.organizations.flatMap((o) =>
    o.acceptedDomains.filter((d) => d.type === 'authoritative').map((d) => d.domain),
  );
  if (authoritative.length && !c.delivery.maildirShared) {
    problems.push(
      `  delivery.maildirShared: authoritative domains (${authoritative.join(', ')}) are delivered to Maildir ` +
        `mailboxes in dataDir; ` +
        'with store type postgres every node may deliver any message, so the mailboxes must be on storage all ' +
        'nodes share: ' +
        'put dataDir/mailboxes on shared storage and set delivery.maildirShared: true (docs/cluster.md), or make ' +
        'the domains internalRelay',
    );
  }
  return {
    store: {
      type: 'postgres',
      url: url ?? '',
      poolSize: s.poolSize ?? DEFAULT_POOL_SIZE,
      urlFrom: fromEnv ? STORE_URL_ENV : 'store.url',
    },
    problems,
  };
}
