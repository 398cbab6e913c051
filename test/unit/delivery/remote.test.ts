// Remote delivery against scripted peers and the fake resolver: MX order, host failure order, the
// destination-down memory, the 5xx→4xx rewrite, the TLS fallback memory, the pooled-connection
// retry, and what the trace keeps. Real sockets on loopback (127.0.77.x), no gateway process.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { buildConfig, type Config } from '../../../src/config/load.ts';
import { ConnectionPool } from '../../../src/delivery/pool.ts';
import { RemoteDelivery, type RemoteJob, type TlsSessionReport } from '../../../src/delivery/remote.ts';
import { InMemory } from '../../../src/delivery/memory.ts';
import { inProcessMemories, type DeliveryMemories, type TlsFallback } from '../../../src/delivery/trouble.ts';
import { issueCertificate } from '../../../src/tls/certgen.ts';
import { RevocationChecker } from '../../../src/tls/revocation.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { DnsResolver } from '../../../src/dns/resolver.ts';
import type { Resolver } from '../../../src/dns/types.ts';
import { startDnsServer } from '../../helpers/dns-server.ts';
import { FakeResolver } from '../../helpers/fake-resolver.ts';
import { scriptedPeer, type ScriptedPeer, type Step } from '../../helpers/scripted-peer.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-remote-'));
const NET = '127.0.77';
/** An address where nothing listens on the delivery port: connection refused at once. */
const DEAD = `${NET}.250`;

let port = 0;
const peers: ScriptedPeer[] = [];
const remotes: RemoteDelivery[] = [];
after(async () => {
  await Promise.all(remotes.map((r) => r.close()));
  await Promise.all(peers.map((p) => p.close()));
});

/** A scripted peer on 127.0.77.`n`, on the one delivery port all these tests share. */
async function peer(n: number, scripts: Step[][]): Promise<ScriptedPeer> {
  const p = await scriptedPeer(scripts, `${NET}.${n}`, port);
  port = p.port;
  peers.push(p);
  return p;
}

// Fix the delivery port every test shares (a peer nothing connects to).
before(async () => {
  await peer(254, []);
});

const config = (delivery: Record<string, unknown> = {}): Config =>
  buildConfig(
    {
      hostname: 'gw.contoso.test',
      organizations: [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }],
      delivery: {
        port,
        timeouts: { connect: 2, greeting: 2, command: 2, dataInit: 2, dataBlock: 2, dataEnd: 2 },
        connectionReuse: { idleSeconds: 0 },
        ...delivery,
      },
    },
    dir,
    null,
  );

function remote(
  dns: Resolver,
  cfg: Config,
  o: { memories?: DeliveryMemories; random?: () => number } = {},
): RemoteDelivery {
  const r = new RemoteDelivery(
    () => dns,
    new ConnectionPool(() => cfg.delivery.connectionReuse),
    () => new TrustStore(false, []),
    () => cfg,
    new RevocationChecker(() => dns),
    undefined,
    o,
  );
  remotes.push(r);
  return r;
}

const job = (domain: string, rcpts = ['b@fabrikam.test']): RemoteJob => ({
  queueId: 'q1',
  mailFrom: 'a@contoso.test',
  envelope: { smtputf8: false },
  data: Buffer.from('Subject: t\r\n\r\nhi\r\n'),
  recipients: rcpts.map((address, idx) => ({
    idx,
    address,
    org: 'contoso',
    route: 'remote' as const,
    status: 'pending' as const,
    attempts: 0,
  })),
  hop: { key: `mx:${domain}`, kind: 'mx', domain, smartHosts: [], tls: { level: 'opportunistic', source: 'default' } },
});

const HELLO: Step[] = [{ send: '220 mx ESMTP' }, { expect: 'EHLO gw.contoso.test', reply: '250-mx\r\n250 PIPELINING' }];
/** A session that takes one message for one recipient. */
const takes = (): Step[] => [
  ...HELLO,
  { expect: [/^MAIL FROM:<a@contoso\.test>/, /^RCPT TO:</, 'DATA'], reply: ['250 2.1.0 ok', '250 2.1.5 ok', '354 go'] },
  { data: true, reply: '250 2.0.0 queued' },
];
/** Address lookups in the order delivery asked them: the order hosts were tried. */
const tried = (dns: FakeResolver) => dns.queries.filter((q) => q.endsWith(' A')).map((q) => q.split(' ')[0]);

test('MX hosts by preference; equal preferences in random order (RFC 5321 §5.1)', async () => {
  const good = await peer(1, [takes(), takes()]);
  const dns = new FakeResolver({
    'fabrikam.test': {
      MX: [
        { exchange: 'b.fabrikam.test', priority: 10 },
        { exchange: 'c.fabrikam.test', priority: 20 },
        { exchange: 'a.fabrikam.test', priority: 10 },
      ],
    },
    'a.fabrikam.test': { A: [DEAD] },
    'b.fabrikam.test': { A: [DEAD] },
    'c.fabrikam.test': { A: [good.host] },
  });
  const cfg = config({ destinationDownSeconds: 0 });
  const low = await remote(dns, cfg, { random: () => 0 }).deliver(job('fabrikam.test'));
  assert.equal(low.outcomes.get(0)?.status, 'delivered');
  const first = tried(dns);
  assert.deepEqual(first.slice(0, 2).sort(), ['a.fabrikam.test', 'b.fabrikam.test']);
  assert.equal(first[2], 'c.fabrikam.test', 'the higher preference last');
  dns.queries.length = 0;
  await remote(dns, cfg, { random: () => 0.99 }).deliver(job('fabrikam.test'));
  assert.deepEqual(tried(dns).slice(0, 2), [...first.slice(0, 2)].reverse(), 'another random draw, the other order');
  await good.done;
});

test('a host that failed is tried last next time; one that worked is forgotten', async () => {
  const good = await peer(2, [takes(), takes()]);
  const dns = new FakeResolver({
    'order.test': {
      MX: [
        { exchange: 'mx1.order.test', priority: 10 },
        { exchange: 'mx2.order.test', priority: 20 },
      ],
    },
    'mx1.order.test': { A: [DEAD] },
    'mx2.order.test': { A: [good.host] },
  });
  const r = remote(dns, config());
  assert.equal((await r.deliver(job('order.test'))).outcomes.get(0)?.status, 'delivered');
  assert.deepEqual(tried(dns), ['mx1.order.test', 'mx2.order.test']);
  dns.queries.length = 0;
  assert.equal((await r.deliver(job('order.test'))).outcomes.get(0)?.status, 'delivered');
  assert.deepEqual(tried(dns), ['mx2.order.test'], 'the failed MX went last, and was not needed');
  await good.done;
});

test('destination down: set when every host failed at connection level, served while fresh, then tried again', async () => {
  const dns = new FakeResolver({
    'down.test': { MX: [{ exchange: 'mx.down.test', priority: 10 }] },
    'mx.down.test': { A: [DEAD] },
  });
  // A window of one: one failed delivery is a whole failed cohort (the next test: wider windows).
  const r = remote(dns, config({ destinationDownSeconds: 0.4, initialConnectionsPerDestination: 1 }));
  const first = await r.deliver(job('down.test'));
  const o = first.outcomes.get(0)!;
  assert.equal(o.status, 'deferred');
  assert.equal(o.reply.enhanced, '4.4.1');
  dns.queries.length = 0;
  const t0 = Date.now();
  const second = await r.deliver(job('down.test'));
  const s = second.outcomes.get(0)!;
  assert.equal(s.status, 'deferred');
  assert.deepEqual([s.reply.code, s.reply.enhanced], [o.reply.code, o.reply.enhanced]);
  assert.match(s.reply.reason ?? '', /\(destination marked unreachable until \d{4}-\d\d-\d\dT/);
  assert.equal(second.attempt.host, 'mx.down.test', 'the trace keeps the attempt that found it down');
  assert.deepEqual(dns.queries, [], 'nothing asked, nothing tried');
  assert.ok(Date.now() - t0 < 100);
  await new Promise((res) => setTimeout(res, 450));
  await r.deliver(job('down.test'));
  assert.deepEqual(dns.queries, ['down.test MX', 'mx.down.test A', 'mx.down.test AAAA'], 'expired: tried again');
});

test('destination down with the initial window of 5: after five deliveries in a row failed with every host, none before', async () => {
  const dns = new FakeResolver({
    'cohort.test': { MX: [{ exchange: 'mx.cohort.test', priority: 10 }] },
    'mx.cohort.test': { A: [DEAD] },
  });
  const r = remote(dns, config({ destinationDownSeconds: 60 }));
  const down = async () =>
    /marked unreachable/.test((await r.deliver(job('cohort.test'))).outcomes.get(0)?.reply.reason ?? '');
  // Each failure counts 1/window, the window never less than the initial 5 here: 1/5 five times.
  for (let i = 1; i <= 5; i++) assert.equal(await down(), false, `failure ${i} was tried, not served from memory`);
  assert.equal(await down(), true, 'the sixth is deferred at once: the destination is down');
});

test('one refusal among deliveries that succeed shrinks the window but never marks the destination down', async () => {
  // Every third connection gets 421 at the greeting, as a receiver that throttles us does.
  const ok = takes;
  const throttling: Step[] = [{ send: '421 4.7.0 mx too many connections, slow down' }];
  const scripts: Step[][] = [];
  for (let i = 0; i < 9; i++) scripts.push(i % 3 === 2 ? throttling : ok());
  const p = await peer(21, scripts);
  const dns = new FakeResolver({
    'busy.test': { MX: [{ exchange: 'mx.busy.test', priority: 10 }] },
    'mx.busy.test': { A: [p.host] },
  });
  // A cohort of 2: without a success starting the count again, the second 421 would mark it down.
  const r = remote(dns, config({ destinationDownSeconds: 60, initialConnectionsPerDestination: 2 }));
  const statuses = [];
  for (let i = 0; i < 9; i++) {
    const o = (await r.deliver(job('busy.test'))).outcomes.get(0)!;
    assert.doesNotMatch(o.reply.reason ?? '', /marked unreachable/, `delivery ${i}`);
    statuses.push(o.status);
  }
  assert.deepEqual(statuses, [
    'delivered',
    'delivered',
    'deferred',
    'delivered',
    'delivered',
    'deferred',
    'delivered',
    'delivered',
    'deferred',
  ]);
  await p.done;
});

test('marked down while messages waited for a slot: they are deferred from memory, not one more connection', async () => {
  // A receiver that answers every greeting with 421, a little late, so that the others line up.
  let connections = 0;
  const srv = net.createServer((c) => {
    connections++;
    c.on('error', () => {});
    setTimeout(() => c.end('421 4.3.2 mx.shut.test Service not available, closing\r\n'), 150);
  });
  await new Promise<void>((r) => srv.listen(port, `${NET}.31`, r));
  try {
    const dns = new FakeResolver({
      'shut.test': { MX: [{ exchange: 'mx.shut.test', priority: 10 }] },
      'mx.shut.test': { A: [`${NET}.31`] },
    });
    const r = remote(dns, config({ destinationDownSeconds: 60, initialConnectionsPerDestination: 2 }));
    const results = await Promise.all(Array.from({ length: 10 }, () => r.deliver(job('shut.test'))));
    const reasons = results.map((x) => x.outcomes.get(0)?.reply.reason ?? '');
    assert.equal(connections, 2, 'the two in the window, then the cohort of 2 marked it down');
    assert.ok(results.every((x) => x.outcomes.get(0)?.status === 'deferred'));
    assert.equal(reasons.filter((x) => /marked unreachable/.test(x)).length, 8, reasons.join('\n'));
  } finally {
    srv.close();
  }
});

test('a host that took one recipient and greylisted another is reachable: never marked down between failures', async () => {
  const throttling: Step[] = [{ send: '421 4.7.0 mx too many connections, slow down' }];
  const partly: Step[] = [
    ...HELLO,
    {
      expect: [/^MAIL FROM:/, /^RCPT TO:<b@/, /^RCPT TO:<c@/, 'DATA'],
      reply: ['250 2.1.0 ok', '250 2.1.5 ok', '450 4.7.1 <c@fabrikam.test> greylisted, try later', '354 go'],
    },
    { data: true, reply: '250 2.0.0 queued' },
  ];
  const p = await peer(22, [throttling, partly, throttling, partly, throttling]);
  const dns = new FakeResolver({
    'grey.test': { MX: [{ exchange: 'mx.grey.test', priority: 10 }] },
    'mx.grey.test': { A: [p.host] },
  });
  // A cohort of 2: without the answered transaction starting the count again, the second 421 would mark it down.
  const r = remote(dns, config({ destinationDownSeconds: 60, initialConnectionsPerDestination: 2 }));
  for (let i = 0; i < 5; i++) {
    const o = (await r.deliver(job('grey.test', ['b@fabrikam.test', 'c@fabrikam.test']))).outcomes;
    assert.doesNotMatch(o.get(0)?.reply.reason ?? '', /marked unreachable/, `delivery ${i}`);
    assert.equal(o.get(0)?.status, i % 2 ? 'delivered' : 'deferred', `delivery ${i}`);
  }
  await p.done;
});

test('destination down is not set for DNS-only failures, nor when a host answered, nor with destinationDownSeconds 0', async () => {
  const refusing = await peer(3, [
    [
      { send: '220 mx' },
      { expect: 'EHLO gw.contoso.test', reply: '250 mx' },
      { expect: /^MAIL FROM:/, reply: '451 4.3.0 try later' },
    ],
    [
      { send: '220 mx' },
      { expect: 'EHLO gw.contoso.test', reply: '250 mx' },
      { expect: /^MAIL FROM:/, reply: '451 4.3.0 try later' },
    ],
  ]);
  const dns = new FakeResolver({
    'nodns.test': { MX: [{ exchange: 'mx.nodns.test', priority: 10 }] },
    'answers.test': { MX: [{ exchange: 'mx.answers.test', priority: 10 }] },
    'mx.answers.test': { A: [refusing.host] },
    'zero.test': { MX: [{ exchange: 'mx.zero.test', priority: 10 }] },
    'mx.zero.test': { A: [DEAD] },
  }).fail('mx.nodns.test', 'servfail');
  const r = remote(dns, config());
  const zero = remote(dns, config({ destinationDownSeconds: 0 }));
  for (const [d, via] of [
    ['nodns.test', r],
    ['answers.test', r],
    ['zero.test', zero],
  ] as const) {
    const first = await via.deliver(job(d));
    assert.equal(first.outcomes.get(0)?.status, 'deferred', d);
    dns.queries.length = 0;
    const again = await via.deliver(job(d));
    assert.doesNotMatch(again.outcomes.get(0)?.reply.reason ?? '', /marked unreachable/, d);
    assert.ok(dns.asked(d, 'MX') === 1, `${d}: looked up again`);
  }
  await refusing.done;
});

test('5xx before any transaction is deferred as 4xx; a 5xx to MAIL FROM fails the message without trying further hosts', async () => {
  const p554 = await peer(4, [[{ send: '554 5.7.1 no service here' }]]);
  const pMail = await peer(5, [
    [
      ...HELLO,
      {
        expect: [/^MAIL FROM:/, /^RCPT TO:/, 'DATA'],
        reply: ['550 5.7.1 sender refused', '503 5.5.1 no', '503 5.5.1 no'],
      },
    ],
  ]);
  const dns = new FakeResolver({
    'greet.test': { MX: [{ exchange: 'mx.greet.test', priority: 10 }] },
    'mx.greet.test': { A: [p554.host] },
    'mail.test': {
      MX: [
        { exchange: 'mx1.mail.test', priority: 10 },
        { exchange: 'mx2.mail.test', priority: 20 },
      ],
    },
    'mx1.mail.test': { A: [pMail.host] },
    'mx2.mail.test': { A: [DEAD] },
  });
  const r = remote(dns, config({ destinationDownSeconds: 0 }));
  const g = (await r.deliver(job('greet.test'))).outcomes.get(0)!;
  assert.deepEqual([g.status, g.reply.code, g.reply.enhanced], ['deferred', 451, '4.7.1']);
  assert.match(g.reply.reason ?? '', /greeted with 554/);
  const m = await r.deliver(job('mail.test'));
  const o = m.outcomes.get(0)!;
  assert.deepEqual([o.status, o.reply.code, o.reply.enhanced], ['failed', 550, '5.7.1']);
  assert.match(o.reply.reason ?? '', /said: 550 5\.7\.1 sender refused \(in reply to MAIL FROM\)/);
  assert.equal(dns.asked('mx2.mail.test'), 0, 'a message failure: no further host');
  await Promise.all([p554.done, pMail.done]);
});

test('a 4xx to MAIL FROM moves on to the next host; recipients get their own RCPT replies', async () => {
  const busy = await peer(6, [
    [
      ...HELLO,
      {
        expect: [/^MAIL FROM:/, /^RCPT TO:/, /^RCPT TO:/, 'DATA'],
        reply: ['451 4.3.2 busy', '503 no', '503 no', '503 no'],
      },
    ],
  ]);
  const ok = await peer(7, [
    [
      ...HELLO,
      {
        expect: [/^MAIL FROM:/, 'RCPT TO:<b@fabrikam.test>', 'RCPT TO:<c@fabrikam.test>', 'DATA'],
        reply: ['250 ok', '550 5.1.1 unknown user', '250 ok', '354 go'],
      },
      { data: true, reply: '250 2.0.0 queued' },
    ],
  ]);
  const dns = new FakeResolver({
    'busy.test': {
      MX: [
        { exchange: 'mx1.busy.test', priority: 10 },
        { exchange: 'mx2.busy.test', priority: 20 },
      ],
    },
    'mx1.busy.test': { A: [busy.host] },
    'mx2.busy.test': { A: [ok.host] },
  });
  const res = await remote(dns, config({ destinationDownSeconds: 0 })).deliver(
    job('busy.test', ['b@fabrikam.test', 'c@fabrikam.test']),
  );
  assert.deepEqual([res.outcomes.get(0)?.status, res.outcomes.get(0)?.reply.enhanced], ['failed', '5.1.1']);
  assert.deepEqual([res.outcomes.get(1)?.status, res.outcomes.get(1)?.reply.code], ['delivered', 250]);
  assert.equal(res.attempt.host, 'mx2.busy.test');
  await Promise.all([busy.done, ok.done]);
});

test("a reply that is no refusal in a refusal's place (250 greeting) defers, never reads as delivered", async () => {
  const odd = await peer(8, [[{ send: '250 mx.odd.test hello' }]]);
  const dns = new FakeResolver({
    'odd.test': { MX: [{ exchange: 'mx.odd.test', priority: 10 }] },
    'mx.odd.test': { A: [odd.host] },
  });
  const o = (await remote(dns, config({ destinationDownSeconds: 0 })).deliver(job('odd.test'))).outcomes.get(0)!;
  assert.deepEqual([o.status, o.reply.code, o.reply.enhanced], ['deferred', 451, '4.5.0']);
  await odd.done;
});

test('opportunistic TLS: a broken handshake steps down to plaintext, remembered per address for tlsFallbackSeconds', async () => {
  const broken: Step[] = [
    { send: '220 mx' },
    { expect: 'EHLO gw.contoso.test', reply: '250-mx\r\n250-PIPELINING\r\n250 STARTTLS' },
    { expect: 'STARTTLS', reply: '220 2.0.0 go ahead' },
    { send: 'this is not TLS' },
    { close: true },
  ];
  const plain: Step[] = [
    { send: '220 mx' },
    { expect: 'EHLO gw.contoso.test', reply: '250-mx\r\n250-PIPELINING\r\n250 STARTTLS' },
    { expect: [/^MAIL FROM:/, /^RCPT TO:/, 'DATA'], reply: ['250 ok', '250 ok', '354 go'] },
    { data: true, reply: '250 2.0.0 queued' },
  ];
  const tls = await peer(9, [broken, plain, plain]);
  const dns = new FakeResolver({
    'tls.test': { MX: [{ exchange: 'mx.tls.test', priority: 10 }] },
    'mx.tls.test': { A: [tls.host] },
  });
  const sets: [string, TlsFallback][] = [];
  const fallback = new InMemory<TlsFallback>();
  const memories = {
    ...inProcessMemories(),
    tlsFallback: {
      get: fallback.get.bind(fallback),
      delete: fallback.delete.bind(fallback),
      expire: fallback.expire.bind(fallback),
      set: async (k: string, v: TlsFallback, until: number) => {
        sets.push([k, v]);
        await fallback.set(k, v, until);
      },
    },
  };
  const r = remote(dns, config({ destinationDownSeconds: 0 }), { memories });
  const first = await r.deliver(job('tls.test'));
  assert.equal(first.outcomes.get(0)?.status, 'delivered');
  assert.equal(first.attempt.tlsAchieved, 'none');
  const cause = first.attempt.tlsFailure;
  assert.ok(cause === 'handshake-failed' || cause === 'connection-lost-during-handshake', String(cause));
  assert.match(first.attempt.fallback ?? '', /^TLS handshake failed \(.*\); retrying in plaintext$/);
  assert.deepEqual(sets, [[tls.host, { mode: 'plaintext', cause }]], 'remembered through the memory interface');
  const second = await r.deliver(job('tls.test'));
  assert.equal(second.outcomes.get(0)?.status, 'delivered');
  assert.match(
    second.attempt.fallback ?? '',
    /^TLS 1\.2\+ handshake with this host failed recently: .*; sending in plaintext until \d{4}-/,
  );
  assert.equal(tls.connections, 3, 'the second delivery went straight to plaintext');
  await tls.done;
});

test('tlsFallbackSeconds 0: the step down still happens within the attempt, and nothing is remembered', async () => {
  const broken: Step[] = [
    { send: '220 mx' },
    { expect: 'EHLO gw.contoso.test', reply: '250-mx\r\n250 STARTTLS' },
    { expect: 'STARTTLS', reply: '220 2.0.0 go ahead' },
    { send: 'this is not TLS' },
    { close: true },
  ];
  const plain: Step[] = [
    { send: '220 mx' },
    { expect: 'EHLO gw.contoso.test', reply: '250-mx\r\n250 STARTTLS' },
    { expect: /^MAIL FROM:/, reply: '250 ok' },
    { expect: /^RCPT TO:/, reply: '250 ok' },
    { expect: 'DATA', reply: '354 go' },
    { data: true, reply: '250 ok' },
  ];
  const p = await peer(10, [broken, plain, broken, plain]);
  const dns = new FakeResolver({
    'zero.test': { MX: [{ exchange: 'mx.zero.test', priority: 10 }] },
    'mx.zero.test': { A: [p.host] },
  });
  const r = remote(dns, config({ destinationDownSeconds: 0, tlsFallbackSeconds: 0 }));
  for (let i = 0; i < 2; i++) {
    const res = await r.deliver(job('zero.test'));
    assert.equal(res.outcomes.get(0)?.status, 'delivered', `delivery ${i + 1}`);
    assert.match(res.attempt.fallback ?? '', /retrying in plaintext/, 'TLS was tried first again');
  }
  await p.done;
});

test('a pooled connection that died while idle: once more on a fresh connection, and only once', async () => {
  const dies: Step[] = [...takes(), { expect: [/^MAIL FROM:/, /^RCPT TO:/, 'DATA'] }, { close: true }];
  const p = await peer(11, [
    dies,
    takes(),
    dies,
    [...HELLO, { expect: [/^MAIL FROM:/, /^RCPT TO:/, 'DATA'] }, { close: true }],
  ]);
  const dns = new FakeResolver({
    'pool.test': { MX: [{ exchange: 'mx.pool.test', priority: 10 }] },
    'mx.pool.test': { A: [p.host] },
  });
  const r = remote(dns, config({ destinationDownSeconds: 0, connectionReuse: { idleSeconds: 5 } }));
  assert.equal((await r.deliver(job('pool.test'))).outcomes.get(0)?.status, 'delivered');
  const again = await r.deliver(job('pool.test'));
  assert.equal(again.outcomes.get(0)?.status, 'delivered', 'retried on a fresh connection');
  assert.equal(again.attempt.reused, undefined);
  assert.equal(p.connections, 2);
  // Third delivery: the pooled connection dies, and so does the fresh one: a deferral, no third try.
  await r.close();
  const r2 = remote(dns, config({ destinationDownSeconds: 0, connectionReuse: { idleSeconds: 5 } }));
  assert.equal((await r2.deliver(job('pool.test'))).outcomes.get(0)?.status, 'delivered');
  const last = await r2.deliver(job('pool.test'));
  assert.deepEqual([last.outcomes.get(0)?.status, last.outcomes.get(0)?.reply.enhanced], ['deferred', '4.4.2']);
  assert.equal(p.connections, 4, 'one retry, not more');
  await p.done;
});

test('SMTP failing after STARTTLS succeeded: the trace keeps the TLS facts of the session', async () => {
  const issued = await issueCertificate({ subject: 'CN=mx.after.test', dnsNames: ['mx.after.test'], key: 'ec256' });
  const p = await peer(12, [
    [
      { send: '220 mx' },
      { expect: 'EHLO gw.contoso.test', reply: '250-mx\r\n250 STARTTLS' },
      { expect: 'STARTTLS', reply: '220 2.0.0 go ahead' },
      { tls: { cert: issued.certPem, key: issued.keyPem } },
      { expect: 'EHLO gw.contoso.test', reply: '421 4.7.0 closing: no service after STARTTLS' },
      { close: true },
    ],
  ]);
  const dns = new FakeResolver({
    'after.test': { MX: [{ exchange: 'mx.after.test', priority: 10 }] },
    'mx.after.test': { A: [p.host] },
  });
  const res = await remote(dns, config({ destinationDownSeconds: 0 })).deliver(job('after.test'));
  assert.equal(res.outcomes.get(0)?.status, 'deferred');
  assert.match(res.attempt.tls?.version ?? '', /^TLSv1\.[23]$/);
  assert.equal(res.attempt.tls?.subject, 'CN=mx.after.test');
  assert.ok(!('chain' in (res.attempt.tls ?? {})), 'the chain is not kept in the trace');
  await p.done;
});

test('DNS: NXDOMAIN for the domain fails at once (5.1.2); SERVFAIL and bogus defer (4.4.3)', async () => {
  const dns = new FakeResolver({ 'bogus.test': { A: ['127.0.77.99'] } })
    .fail('bogus.test', { kind: 'bogus', ede: [{ code: 6, name: 'DNSSEC Bogus', text: '' }] }, 'MX')
    .fail('sf.test', 'servfail');
  const r = remote(dns, config());
  const nx = (await r.deliver(job('nowhere.test'))).outcomes.get(0)!;
  assert.deepEqual([nx.status, nx.reply.code, nx.reply.enhanced], ['failed', 550, '5.1.2']);
  assert.deepEqual(dns.queries, ['nowhere.test MX'], 'no address lookup for a domain that does not exist');
  for (const d of ['bogus.test', 'sf.test']) {
    const o = (await r.deliver(job(d))).outcomes.get(0)!;
    assert.deepEqual([o.status, o.reply.code, o.reply.enhanced], ['deferred', 451, '4.4.3'], d);
  }
  assert.equal(dns.asked('bogus.test', 'A'), 0, 'a bogus MX answer is never "no MX, use the address"');
});

test('delivery.maxConnectionsPerDestination: deliveries to one next hop wait their turn (a slow DNS answer shows it)', async () => {
  const dns = new FakeResolver({
    'slow.test': { MX: [{ exchange: 'mx.slow.test', priority: 10 }] },
    'mx.slow.test': { A: [DEAD] },
  }).delay('slow.test', 300);
  const one = remote(dns, config({ destinationDownSeconds: 0, maxConnectionsPerDestination: 1 }));
  let t0 = Date.now();
  await Promise.all([one.deliver(job('slow.test')), one.deliver(job('slow.test'))]);
  assert.ok(Date.now() - t0 >= 590, 'one after the other');
  const two = remote(dns, config({ destinationDownSeconds: 0, maxConnectionsPerDestination: 2 }));
  t0 = Date.now();
  await Promise.all([two.deliver(job('slow.test')), two.deliver(job('slow.test'))]);
  assert.ok(Date.now() - t0 < 590, 'side by side');
});

test('this gateway in the MX list (RFC 5321 §5.1): records at its preference and after are discarded; none left loops back to myself, 5.4.6', async () => {
  const good = await peer(20, [takes()]);
  const dns = await startDnsServer({
    // We (gw.contoso.test, the configured hostname) are the backup MX at 10: only the 5 is ours to use.
    'backup.test': {
      MX: [
        { exchange: 'GW.Contoso.Test.', priority: 10 },
        { exchange: 'mx.backup.test', priority: 5 },
        { exchange: 'late.backup.test', priority: 20 },
      ],
    },
    'mx.backup.test': { A: [good.host] },
    'late.backup.test': { A: [DEAD] },
    'gw.contoso.test': { A: [DEAD] },
    // We are the best MX: nothing is left, the mail would come back to us.
    'loop.test': {
      MX: [
        { exchange: 'gw.contoso.test', priority: 10 },
        { exchange: 'mx.loop.test', priority: 10 },
        { exchange: 'mx2.loop.test', priority: 30 },
      ],
    },
    'mx.loop.test': { A: [good.host] },
    'mx2.loop.test': { A: [good.host] },
  });
  try {
    const resolver = new DnsResolver([dns.server], { timeoutMs: 1000, attempts: 1 });
    const cfg = config({ destinationDownSeconds: 0 });
    const ok = await remote(resolver, cfg).deliver(job('backup.test'));
    assert.equal(ok.outcomes.get(0)?.status, 'delivered');
    assert.equal(ok.attempt.host, 'mx.backup.test');
    const asked = () => dns.queries.filter((q) => q.type === 'A').map((q) => q.name.toLowerCase());
    assert.ok(
      !asked().includes('late.backup.test') && !asked().includes('gw.contoso.test'),
      'hosts at or after our own preference are never tried',
    );
    const loop = await remote(resolver, cfg).deliver(job('loop.test', ['b@loop.test', 'c@loop.test']));
    for (const o of loop.outcomes.values()) {
      assert.equal(o.status, 'failed');
      assert.equal(o.reply.code, 554);
      assert.equal(o.reply.enhanced, '5.4.6');
      assert.match(o.reply.message, /^Mail for this domain loops back to this gateway/);
      assert.match(
        o.reply.reason ?? '',
        /^mail for loop\.test loops back to myself: this gateway \(gw\.contoso\.test\) is listed as its mail server \(MX, preference 10\)/,
      );
    }
    assert.equal(loop.outcomes.size, 2);
    assert.ok(!asked().some((n) => n.endsWith('loop.test')), 'no connection attempted');
    // The implicit MX of our own name is ourselves too.
    const self = await remote(resolver, cfg).deliver(job('gw.contoso.test'));
    assert.equal(self.outcomes.get(0)?.reply.enhanced, '5.4.6');
    await good.done;
  } finally {
    await dns.close();
  }
});

test('TLS-RPT: every TLS negotiation with an MX host is reported once, with its RFC 8460 result type; smart hosts and our own reports are not', async () => {
  const broken: Step[] = [
    { send: '220 mx' },
    { expect: 'EHLO gw.contoso.test', reply: '250-mx\r\n250 STARTTLS' },
    { expect: 'STARTTLS', reply: '220 2.0.0 go ahead' },
    { send: 'this is not TLS' },
    { close: true },
  ];
  const plain = (starttls: boolean): Step[] => [
    { send: '220 mx' },
    { expect: 'EHLO gw.contoso.test', reply: `250-mx\r\n250 ${starttls ? 'STARTTLS' : 'PIPELINING'}` },
    { expect: /^MAIL FROM:/, reply: '250 ok' },
    { expect: /^RCPT TO:/, reply: '250 ok' },
    { expect: 'DATA', reply: '354 go' },
    { data: true, reply: '250 ok' },
  ];
  const p = await peer(13, [broken, plain(true), plain(false), plain(false), plain(false)]);
  const dns = new FakeResolver({
    'rpt.test': { MX: [{ exchange: 'mx.rpt.test', priority: 10 }] },
    'mx.rpt.test': { A: [p.host] },
  });
  const seen: TlsSessionReport[] = [];
  const r = new RemoteDelivery(
    () => dns,
    new ConnectionPool(() => ({ idleSeconds: 0, maxMessages: 1 })),
    () => new TrustStore(false, []),
    () => config({ destinationDownSeconds: 0, tlsFallbackSeconds: 0 }),
    new RevocationChecker(() => dns),
    undefined,
    { onTlsSession: (s) => seen.push(s) },
  );
  remotes.push(r);
  assert.equal((await r.deliver(job('rpt.test'))).outcomes.get(0)?.status, 'delivered');
  assert.equal(seen.length, 1, 'the failed handshake; the plaintext retry negotiates nothing');
  assert.equal(seen[0].policyDomain, 'rpt.test');
  assert.deepEqual(seen[0].policy, { type: 'no-policy-found' });
  assert.equal(seen[0].resultType, 'validation-failure');
  assert.equal(seen[0].mxHost, 'mx.rpt.test');
  assert.equal(seen[0].mxIp, p.host);
  assert.equal(seen[0].sendingIp, '127.0.0.1');
  assert.match(seen[0].reason!, /\((handshake-failed|connection-lost-during-handshake)\)$/);
  seen.length = 0;
  assert.equal((await r.deliver(job('rpt.test'))).outcomes.get(0)?.status, 'delivered');
  assert.deepEqual(
    seen.map((s) => [s.resultType, s.reason]),
    [['starttls-not-supported', 'the server did not offer STARTTLS (starttls-not-offered)']],
  );
  seen.length = 0;
  await r.deliver({ ...job('rpt.test'), envelope: { smtputf8: false, tlsReport: true } });
  await r.deliver({
    ...job('rpt.test'),
    hop: {
      key: 'smart:x',
      kind: 'smarthost',
      domain: 'rpt.test',
      smartHosts: [{ host: p.host }],
      tls: { level: 'opportunistic', source: 'default' },
    },
  });
  assert.deepEqual(seen, [], "a TLS report's own session and smart hosts are not counted");
  await p.done;
});

test('REQUIRETLS: a host that does not offer it is skipped (no MAIL), the next one gets MAIL FROM … REQUIRETLS', async () => {
  const cert = await issueCertificate({ subject: 'CN=mx.rtls.test', dnsNames: ['mx.rtls.test'] });
  const trustFile = path.join(dir, 'rtls-ca.pem');
  writeFileSync(trustFile, cert.certPem);
  const tlsUp = (ext: string): Step[] => [
    { send: '220 mx' },
    { expect: 'EHLO gw.contoso.test', reply: '250-mx\r\n250 STARTTLS' },
    { expect: 'STARTTLS', reply: '220 2.0.0 go ahead' },
    { tls: { cert: cert.certPem, key: cert.keyPem } },
    { expect: 'EHLO gw.contoso.test', reply: `250-mx\r\n250 ${ext}` },
  ];
  const without = await peer(14, [[...tlsUp('PIPELINING'), { expect: 'QUIT', reply: '221 bye' }]]);
  const withIt = await peer(15, [
    [
      ...tlsUp('REQUIRETLS'),
      { expect: /^MAIL FROM:<a@contoso\.test> REQUIRETLS$/, reply: '250 ok' },
      { expect: /^RCPT TO:/, reply: '250 ok' },
      { expect: 'DATA', reply: '354 go' },
      { data: true, reply: '250 ok' },
    ],
  ]);
  const dns = new FakeResolver({
    'rtls.test': {
      MX: [
        { exchange: 'a.rtls.test', priority: 10 },
        { exchange: 'b.rtls.test', priority: 20 },
      ],
    },
    'a.rtls.test': { A: [without.host] },
    'b.rtls.test': { A: [withIt.host] },
  });
  const cfg = config({ destinationDownSeconds: 0 });
  const r = new RemoteDelivery(
    () => dns,
    new ConnectionPool(() => cfg.delivery.connectionReuse),
    () => new TrustStore(false, [trustFile]),
    () => cfg,
    new RevocationChecker(() => dns),
  );
  remotes.push(r);
  const j = job('rtls.test');
  const res = await r.deliver({
    ...j,
    envelope: { smtputf8: false, requireTls: true },
    hop: { ...j.hop, tls: { level: 'certificateValidation', source: 'connector "T"' } },
  });
  assert.equal(res.outcomes.get(0)?.status, 'delivered');
  assert.ok(!without.transcript.some((l) => /^C: (MAIL|RCPT|DATA)/.test(l)));
  await Promise.all([without.done, withIt.done]);
});
