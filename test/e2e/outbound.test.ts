// Outbound delivery against loopback peers on their own addresses, with a DNS server on loopback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { cleanup, freePort, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { makePki } from '../helpers/pki.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { until } from '../helpers/wait.ts';

let gw: GatewayHandle;
let dns: DnsServer;
const peers: Record<string, Peer> = {};

const mx = (host: string, priority = 10) => ({ MX: [{ exchange: host, priority }] });

before(async () => {
  const port = await freePort('127.0.0.1');
  gw = await startGateway();
  const pki = await makePki(gw.dir, 'Peer');
  const cert = await pki.issue('mx.peers.test', { dnsNames: ['mx.peers.test', '*.peers.test'] });
  const tlsOpts = { cert: readFileSync(cert.chain, 'utf8'), key: readFileSync(cert.key, 'utf8') };
  dns = await startDnsServer({
    'pref.test': {
      MX: [
        { exchange: 'mx1.pref.test', priority: 10 },
        { exchange: 'mx2.pref.test', priority: 20 },
      ],
    },
    'mx1.pref.test': { A: ['127.0.0.2'] }, // nothing listens there
    'mx2.pref.test': { A: ['127.0.0.3'] },
    'afallback.test': { A: ['127.0.0.3'] }, // no MX at all: implicit MX
    'nullmx.test': { MX: [{ exchange: '', priority: 0 }] },
    'tls13.test': mx('mx.tls13.test'),
    'mx.tls13.test': { A: ['127.0.0.3'] },
    'plain.test': mx('mx.plain.test'),
    'mx.plain.test': { A: ['127.0.0.4'] },
    'brokentls.test': mx('mx.brokentls.test'),
    'mx.brokentls.test': { A: ['127.0.0.5'] },
    'tls10.test': mx('mx.tls10.test'),
    'mx.tls10.test': { A: ['127.0.0.6'] },
    'inject.test': mx('mx.inject.test'),
    'mx.inject.test': { A: ['127.0.0.7'] },
    'retry.test': mx('mx.tls13.test'),
    'reject.test': mx('mx.tls13.test'),
    'stuck.test': mx('mx.tls13.test'),
    'reuse.test': mx('mx.reuse.test'),
    'mx.reuse.test': { A: ['127.0.0.8'] },
    'cname.test': mx('alias.cname.test'),
    'alias.cname.test': { CNAME: 'mx.tls13.test' },
  });
  peers.main = await startPeer({
    host: '127.0.0.3',
    port,
    tls: tlsOpts,
    rcpt: (a, n) => {
      if (a === 'later@retry.test' && n === 1) return '451 4.3.0 Try again later';
      if (a.endsWith('@reject.test')) return '550 5.1.1 <' + a + '>: Recipient address rejected: User unknown';
      if (a.endsWith('@stuck.test')) return '451 4.7.1 Greylisted, come back later';
      return undefined;
    },
  });
  peers.plain = await startPeer({ host: '127.0.0.4', port });
  peers.broken = await startPeer({ host: '127.0.0.5', port, tls: tlsOpts, breakHandshake: true });
  peers.tls10 = await startPeer({
    host: '127.0.0.6',
    port,
    tls: { ...tlsOpts, minVersion: 'TLSv1', maxVersion: 'TLSv1', ciphers: 'DEFAULT@SECLEVEL=0' },
  });
  peers.inject = await startPeer({
    host: '127.0.0.7',
    port,
    tls: tlsOpts,
    injectAfterStarttls: '250 2.0.0 injected reply\r\n',
  });
  peers.reuse = await startPeer({ host: '127.0.0.8', port, tls: tlsOpts });
  gw.writeConfig({
    dns: { servers: [dns.server] },
    delivery: { port, timeouts: { connect: 3 }, destinationDownSeconds: 0, maxConnectionsPerDestination: 2 },
    tls: { trust: { system: false, caFiles: [pki.rootFile] } },
    queue: { retrySchedule: [1], delayWarning: 2, messageExpiration: 5 },
    organizations: [
      {
        name: 'contoso',
        acceptedDomains: [{ domain: 'contoso.test' }],
        inboundConnectors: [
          { name: 'On-premises servers', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] },
        ],
      },
    ],
  });
  await gw.stop();
  await gw.restart();
});

after(async () => {
  await cleanup(gw);
  await Promise.all(Object.values(peers).map((p) => p.close()));
  await dns?.close();
});

async function relay(from: string, to: string[], subject: string): Promise<string> {
  const c = await SmtpClient.connect(gw.port);
  await c.hello();
  const r = await c.send(
    from,
    to,
    `Subject: ${subject}\r\nMessage-ID: <${subject.replace(/\W/g, '-')}@contoso.test>\r\n\r\nbody of ${subject}\r\n`,
  );
  c.close();
  assert.equal(r.code, 250, r.text);
  return /queued as (\w+)/.exec(r.text)![1];
}

const delivered = (id: string) =>
  gw.events().find((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'delivered');
const mailbox = (local: string) => {
  try {
    return readdirSync(path.join(gw.dataDir, 'mailboxes/contoso.test', local, 'new')).map((f) =>
      readFileSync(path.join(gw.dataDir, 'mailboxes/contoso.test', local, 'new', f), 'utf8'),
    );
  } catch {
    return [];
  }
};
async function traceOf(id: string) {
  const r = await gw.cli(['trace', '--queue-id', id, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { trace: { data: Record<string, unknown> }[] }[])[0].trace.map((t) => t.data);
}

test('relay is denied to a sender that is not the onPremises organization', async () => {
  const c = await SmtpClient.connect(gw.port);
  await c.hello();
  await c.expect('MAIL FROM:<someone@elsewhere.test>', 250);
  const r = await c.cmd('RCPT TO:<x@tls13.test>');
  assert.match(r.text, /^550 5\.7\.1 /);
  c.close();
});

test('MX preference with failover to the second MX', async () => {
  const id = await relay('a@contoso.test', ['u@pref.test'], 'pref failover');
  await until('delivery', () => delivered(id));
  assert.ok(peers.main.messages.some((m) => m.to.includes('u@pref.test')));
  const t = await traceOf(id);
  assert.equal(t.at(-1)!.host, 'mx2.pref.test');
});

test('A-record fallback when there is no MX; CNAME chains are followed', async () => {
  const a = await relay('a@contoso.test', ['u@afallback.test'], 'a fallback');
  const c = await relay('a@contoso.test', ['u@cname.test'], 'cname');
  await until('delivery', () => delivered(a) && delivered(c));
});

test('null MX bounces at once with 5.1.10 and an RFC 3464 report', async () => {
  const id = await relay('nullsender@contoso.test', ['u@nullmx.test'], 'null mx');
  const dsn = await until('DSN', () => mailbox('nullsender')[0]);
  assert.match(dsn, /Content-Type: multipart\/report; report-type=delivery-status;/);
  assert.match(dsn, /Content-Type: message\/delivery-status/);
  assert.match(dsn, /Final-Recipient: rfc822; u@nullmx\.test\r\nAction: failed\r\nStatus: 5\.1\.10/);
  assert.match(dsn, /null MX record \(RFC 7505\)/);
  assert.match(dsn, new RegExp(`X-Portcullis-Queue-ID: ${id}`));
  assert.match(dsn, /Content-Type: message\/rfc822[\s\S]*Subject: null mx/);
  assert.match(dsn, /^Return-Path: <>/);
});

test('delivery over TLS 1.3 with the version and cipher in the trace', async () => {
  const id = await relay('a@contoso.test', ['u@tls13.test'], 'tls13');
  await until('delivery', () => delivered(id));
  const t = (await traceOf(id)).at(-1)!;
  const tls = t.tls as { version: string; cipher: string; chainValid: boolean; subject: string };
  assert.equal(tls.version, 'TLSv1.3');
  assert.equal(tls.cipher, 'TLS_AES_256_GCM_SHA384');
  assert.equal(tls.chainValid, true, JSON.stringify(tls));
  assert.match(tls.subject, /CN=mx\.peers\.test/);
  assert.equal(t.tlsAchieved, 'certificateValidation', 'valid chain, but the certificate does not name the MX host');
  assert.deepEqual(t.tlsRequired, { level: 'opportunistic', source: 'default' });
  const m = peers.main.messages.find((x) => x.to.includes('u@tls13.test'))!;
  assert.equal(m.tls?.version, 'TLSv1.3');
  const text = await gw.cli(['trace', '--message-id', 'tls13@contoso.test']);
  assert.match(text.stdout, /TLS: TLSv1\.3 TLS_AES_256_GCM_SHA384 \(256 bits\)/);
  assert.match(text.stdout, /TLS policy: required opportunistic \(default\), achieved certificateValidation/);
});

test('plaintext delivery to a peer without STARTTLS, recorded as such', async () => {
  const id = await relay('a@contoso.test', ['u@plain.test'], 'plain');
  await until('delivery', () => delivered(id));
  const t = (await traceOf(id)).at(-1)!;
  assert.equal(t.tls, undefined);
  assert.equal(t.tlsAchieved, 'none');
  assert.equal(t.fallback, 'STARTTLS not offered');
  assert.equal(peers.plain.messages[0].tls, null);
});

test('a peer whose TLS handshake fails gets the message in plaintext, and the fallback is recorded', async () => {
  const id = await relay('a@contoso.test', ['u@brokentls.test'], 'broken tls');
  await until('delivery', () => delivered(id));
  const t = (await traceOf(id)).at(-1)!;
  assert.match(String(t.fallback), /TLS handshake (failed|with this host failed recently)/);
  assert.equal(peers.broken.messages.length, 1);
  assert.equal(peers.broken.messages[0].tls, null);
});

test('a TLS 1.0-only peer gets opportunistic mail over legacy TLS 1.0, not plaintext, and the trace says so', async () => {
  const id = await relay('a@contoso.test', ['u@tls10.test'], 'tls10');
  await until('delivery', () => delivered(id));
  assert.equal(peers.tls10.messages[0].tls?.version, 'TLSv1', 'delivered inside a TLS 1.0 session');
  const t = (await traceOf(id)).at(-1)!;
  assert.equal(t.tlsLegacy, true);
  assert.equal(t.tlsFailure, 'protocol-version');
  assert.equal(t.tlsAchieved, 'opportunistic');
  assert.match(
    String(t.fallback),
    /TLS handshake failed \(.*\(protocol-version\); detail: ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION .*\); retrying with legacy TLS/,
  );
});

test('response injection after STARTTLS is ignored', async () => {
  const id = await relay('a@contoso.test', ['u@inject.test'], 'inject');
  await until('delivery', () => delivered(id));
  const m = peers.inject.messages[0];
  assert.equal(m.tls?.version, 'TLSv1.3', 'delivered over TLS despite the injected reply');
  assert.match(m.data, /Subject: inject/);
});

test('a 4xx is retried and then delivered', async () => {
  const id = await relay('a@contoso.test', ['later@retry.test'], 'retry');
  await until('delivery', () => delivered(id));
  const t = await traceOf(id);
  assert.equal(t[0].status, 'deferred');
  assert.equal(t.at(-1)!.status, 'delivered');
});

test('a 5xx is bounced with a correct DSN naming the host and its reply', async () => {
  await relay('bouncer@contoso.test', ['nobody@reject.test'], 'reject');
  const dsn = await until('DSN', () => mailbox('bouncer')[0]);
  assert.match(dsn, /Subject: Undelivered Mail Returned to Sender/);
  assert.match(dsn, /Status: 5\.1\.1/);
  assert.match(dsn, /Remote-MTA: dns; mx\.tls13\.test/);
  assert.match(
    dsn,
    /mx\.tls13\.test \[127\.0\.0\.3\] said: 550 5\.1\.1 <nobody@reject\.test>: Recipient address rejected: User unknown \(in reply to RCPT TO\)/,
  );
  assert.match(dsn, /The connection to mx\.tls13\.test was encrypted with TLSv1\.3/);
});

test('delay warning, then an expiry bounce', async () => {
  await relay('waiter@contoso.test', ['u@stuck.test'], 'stuck');
  const warn = await until('delay warning', () => mailbox('waiter').find((m) => /Delayed Mail/.test(m)));
  assert.match(warn, /Action: delayed\r\nStatus: 4\.7\.1/);
  assert.match(warn, /Will-Retry-Until: /);
  assert.match(warn, /Content-Type: text\/rfc822-headers/);
  const bounce = await until('expiry bounce', () => mailbox('waiter').find((m) => /Undelivered Mail/.test(m)), 20_000);
  assert.match(bounce, /Action: failed\r\nStatus: 5\.4\.7/);
  assert.match(bounce, /retried until the message expired/);
  assert.equal(mailbox('waiter').filter((m) => /Delayed Mail/.test(m)).length, 1, 'one delay warning only');
});

test('many messages to one destination reuse connections', async () => {
  const ids: string[] = [];
  for (let i = 0; i < 10; i++) {
    const id = await relay('a@contoso.test', [`u${i}@reuse.test`], `reuse seq ${i}`);
    await until('delivery', () => delivered(id));
    ids.push(id);
  }
  assert.equal(peers.reuse.connections, 1, 'sequential messages share one connection');
  const burst = await Promise.all(
    Array.from({ length: 30 }, (_, i) =>
      relay('a@contoso.test', [`b${i}@reuse.test`, `c${i}@reuse.test`], `reuse burst ${i}`),
    ),
  );
  await until('burst deliveries', () => burst.every(delivered));
  assert.equal(peers.reuse.messages.length, 40);
  assert.ok(
    peers.reuse.messages.slice(10).every((m) => m.to.length === 2),
    'recipients of one message travel in one transaction',
  );
  assert.ok(
    peers.reuse.connections <= 3,
    `30 messages over at most maxConnectionsPerDestination (2) connections plus the first; saw ${peers.reuse.connections}`,
  );
  assert.equal(peers.reuse.tlsSessions, peers.reuse.connections);
});
