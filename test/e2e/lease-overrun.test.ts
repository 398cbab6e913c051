// A delivery that outlives its queue lease (a slow peer: the RFC 5321 timeouts add up to more
// than queue.leaseSeconds) must not be started a second time by the same process. Found by the
// fault proof (proof/faults.ts): the scheduler's claim took the still-running message again once
// its lease expired and delivered it twice, with no crash involved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { cleanup, freePort, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { tinySmtp } from '../helpers/tiny-smtp.ts';

test('a delivery longer than queue.leaseSeconds is not started twice', { timeout: 60_000 }, async () => {
  const LEASE = 5;
  const SLOW_MS = (LEASE + 3) * 1000;
  const port = await freePort('127.0.0.1');
  let dns: DnsServer | undefined;
  let gw: GatewayHandle | undefined;
  const copies: number[] = [];
  // A peer that takes longer than the lease to answer the end of data.
  const srv = net.createServer((s) => {
    tinySmtp(s, 'slow.test', (_text, reply) => {
      copies.push(Date.now());
      setTimeout(() => reply('250 2.0.0 Ok'), SLOW_MS);
    });
  });
  await new Promise<void>((r) => srv.listen(port, '127.0.0.9', () => r()));
  try {
    dns = await startDnsServer({
      'slow.test': { MX: [{ exchange: 'mx.slow.test', priority: 10 }] },
      'mx.slow.test': { A: ['127.0.0.9'] },
    });
    gw = await startGateway({
      config: {
        dns: { servers: [dns.server] },
        delivery: { port, timeouts: { dataEnd: 60 } },
        queue: { leaseSeconds: LEASE, retrySchedule: [60] },
        organizations: [
          {
            name: 'contoso',
            acceptedDomains: [{ domain: 'contoso.test' }],
            inboundConnectors: [{ name: 'Local', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] }],
          },
        ],
      },
    });
    const c = await SmtpClient.connect(gw.port);
    await c.hello();
    const r = await c.send('a@contoso.test', ['u@slow.test'], 'Subject: slow peer\r\n\r\nbody\r\n');
    c.close();
    assert.equal(r.code, 250, r.text);
    const id = /queued as (\w+)/.exec(r.text)![1];
    await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'delivered', 30_000);
    await new Promise((res) => setTimeout(res, 1500));
    assert.equal(copies.length, 1, `the peer received the message ${copies.length} times`);
    const results = gw.events().filter((e) => e.event === 'delivery.result' && e.queueId === id);
    assert.equal(results.length, 1, JSON.stringify(results));
    const q = await gw.cli(['queue', 'list', '--json']);
    assert.deepEqual(JSON.parse(q.stdout), [], 'the message left the queue');
  } finally {
    await cleanup(gw);
    await new Promise<void>((r) => srv.close(() => r()));
    await dns?.close();
  }
});
