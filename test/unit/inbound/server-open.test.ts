// Listeners are bound (as root, for port 25) before the rest of the server exists: a client that
// connects in that window waits and is greeted once the server opens, never crashes it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildConfig } from '../../../src/config/load.ts';
import { SmtpServer } from '../../../src/inbound/server.ts';
import type { SessionDeps } from '../../../src/inbound/session.ts';
import { InboundPolicy } from '../../../src/policy/inbound.ts';
import type { Ingest } from '../../../src/ingest/ingest.ts';
import type { RevocationChecker } from '../../../src/tls/revocation.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { freePort } from '../../helpers/gateway.ts';
import { SmtpClient } from '../../helpers/smtp.ts';

test('a connection accepted before open() is greeted after it', async () => {
  const ready: { deps?: SessionDeps } = {};
  const server = new SmtpServer(() => ready.deps!);
  const port = await freePort();
  await server.listen([`127.0.0.1:${port}`]);
  const early = await SmtpClient.connect(port);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(early.received, '', 'nothing is said before the server is open');
  const config = buildConfig(
    {
      hostname: 'mx1.contoso.test',
      organizations: [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }],
    },
    '/tmp',
    null,
  );
  const trust = new TrustStore(false, []);
  ready.deps = {
    config,
    policy: new InboundPolicy(config),
    tls: null,
    trust,
    revocation: {} as RevocationChecker,
    ingest: {} as Ingest,
  };
  server.open();
  const greeting = await early.read();
  assert.equal(greeting?.code, 220);
  await early.expect('QUIT', 221);
  const late = await SmtpClient.connect(port);
  assert.equal((await late.read())?.code, 220);
  await late.expect('QUIT', 221);
  await server.close(1000);
});
