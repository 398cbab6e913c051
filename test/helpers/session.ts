// What an in-process SmtpSession needs (tests at the session's seam): the contoso.test configuration
// with the given smtp settings, its inbound policy, no TLS, and an ingest stub of the test's own.
import { buildConfig } from '../../src/config/load.ts';
import type { SessionDeps } from '../../src/inbound/session.ts';
import type { Ingest } from '../../src/ingest/ingest.ts';
import { InboundPolicy } from '../../src/policy/inbound.ts';
import type { RevocationChecker } from '../../src/tls/revocation.ts';
import { TrustStore } from '../../src/tls/trust.ts';

export function sessionDeps(smtp: Record<string, unknown> = {}, ingest: Partial<Ingest> = {}): SessionDeps {
  const config = buildConfig(
    {
      hostname: 'mx1.contoso.test',
      smtp,
      organizations: [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }],
    },
    '/tmp',
    null,
  );
  return {
    config,
    policy: new InboundPolicy(config),
    tls: null,
    trust: new TrustStore(false, []),
    revocation: {} as RevocationChecker,
    ingest: ingest as Ingest,
  };
}
