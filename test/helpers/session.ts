// What an in-process SmtpSession needs (tests at the session's seam): the contoso.test configuration
// (or the organisations given)
// with the given smtp settings, its inbound policy, no TLS, and an ingest stub of the test's own;
// and a loopback listener that runs sessions with it.
import net from 'node:net';
import { buildConfig } from '../../src/config/load.ts';
import { SmtpSession, type SessionDeps } from '../../src/inbound/session.ts';
import type { Ingest } from '../../src/ingest/ingest.ts';
import { InboundPolicy } from '../../src/policy/inbound.ts';
import type { RevocationChecker } from '../../src/tls/revocation.ts';
import { TrustStore } from '../../src/tls/trust.ts';

export function sessionDeps(
  smtp: Record<string, unknown> = {},
  ingest: Partial<Ingest> = {},
  organizations: unknown[] = [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }],
): SessionDeps {
  const config = buildConfig(
    {
      hostname: 'mx1.contoso.test',
      smtp,
      organizations,
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

/** A loopback listener running an SmtpSession for each connection; `close` stops it. */
export async function listenSessions(deps: SessionDeps): Promise<{ port: number; close: () => Promise<void> }> {
  const srv = net.createServer((s) => {
    new SmtpSession(s, deps, { ended() {}, closed() {} });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return {
    port: (srv.address() as net.AddressInfo).port,
    close: () => new Promise<void>((r) => srv.close(() => r())),
  };
}
