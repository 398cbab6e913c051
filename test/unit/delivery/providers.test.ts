// Per-host demand providers in remote delivery (policy/outbound.ts DemandProvider): a host a
// provider refuses is never contacted and the next MX is tried; when every host is refused the
// message waits (4.7.5, with the failure kind) and the destination is not marked down; a demand
// raises the host's requirement; an observed requirement is only recorded; notes reach the trace;
// a refused host counts as one failed TLS-RPT session under the refusing source's policy.
// Scripted peers on 127.0.78.x, the fake resolver; no gateway process.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildConfig, type Config } from '../../../src/config/load.ts';
import { ConnectionPool } from '../../../src/delivery/pool.ts';
import { DaneProvider } from '../../../src/delivery/dane.ts';
import { RemoteDelivery, type RemoteJob, type TlsSessionReport } from '../../../src/delivery/remote.ts';
import { inProcessMemories } from '../../../src/delivery/trouble.ts';
import { MtaSts, mtaStsProvider } from '../../../src/mtasts/sts.ts';
import { parseStsPolicy } from '../../../src/mtasts/policy.ts';
import type { DemandProvider, HostContext, ProviderAnswer } from '../../../src/policy/outbound.ts';
import { RevocationChecker } from '../../../src/tls/revocation.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { FakeResolver } from '../../helpers/fake-resolver.ts';
import { scriptedPeer, type ScriptedPeer, type Step } from '../../helpers/scripted-peer.ts';

const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-providers-'));
const NET = '127.0.78';
let port = 0;
const peers: ScriptedPeer[] = [];
const remotes: RemoteDelivery[] = [];
after(async () => {
  await Promise.all(remotes.map((r) => r.close()));
  await Promise.all(peers.map((p) => p.close()));
});

async function peer(n: number, scripts: Step[][]): Promise<ScriptedPeer> {
  const p = await scriptedPeer(scripts, `${NET}.${n}`, port);
  port = p.port;
  peers.push(p);
  return p;
}
before(async () => {
  await peer(254, []);
});

const config = (): Config =>
  buildConfig(
    {
      hostname: 'gw.contoso.test',
      organizations: [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }],
      delivery: {
        port,
        timeouts: { connect: 2, greeting: 2, command: 2, dataBlock: 2, dataEnd: 2 },
        connectionReuse: { idleSeconds: 0 },
        destinationDownSeconds: 60,
      },
    },
    dir,
    null,
  );

const job = (domain: string): RemoteJob => ({
  queueId: 'q1',
  mailFrom: 'a@contoso.test',
  envelope: { smtputf8: false },
  data: Buffer.from('Subject: t\r\n\r\nhi\r\n'),
  recipients: [
    {
      idx: 0,
      address: `b@${domain}`,
      org: 'contoso',
      route: 'remote' as const,
      status: 'pending' as const,
      attempts: 0,
    },
  ],
  hop: { key: `mx:${domain}`, kind: 'mx', domain, smartHosts: [], tls: { level: 'opportunistic', source: 'default' } },
});

const takes = (): Step[] => [
  { send: '220 mx ESMTP' },
  { expect: 'EHLO gw.contoso.test', reply: '250-mx\r\n250 PIPELINING' },
  { expect: [/^MAIL FROM:<a@contoso\.test>/, /^RCPT TO:</, 'DATA'], reply: ['250 2.1.0 ok', '250 2.1.5 ok', '354 go'] },
  { data: true, reply: '250 2.0.0 queued' },
];

/** A provider answering per host name from a table; records what it was asked. */
function provider(table: Record<string, ProviderAnswer>): DemandProvider & { asked: HostContext[] } {
  const asked: HostContext[] = [];
  return {
    name: 'TEST',
    asked,
    async forHost(ctx) {
      asked.push(ctx);
      return table[ctx.host] ?? { kind: 'none' };
    },
  };
}

function remote(
  dns: FakeResolver,
  p: DemandProvider | DemandProvider[],
  onTlsSession?: (s: TlsSessionReport) => void,
): RemoteDelivery {
  const cfg = config();
  const r = new RemoteDelivery(
    () => dns,
    new ConnectionPool(() => cfg.delivery.connectionReuse),
    () => new TrustStore(false, []),
    () => cfg,
    new RevocationChecker(() => dns),
    undefined,
    {
      memories: inProcessMemories(),
      providers: () => (Array.isArray(p) ? p : [p]),
      ...(onTlsSession ? { onTlsSession } : {}),
    },
  );
  remotes.push(r);
  return r;
}

const refuse = (host: string): ProviderAnswer => ({
  kind: 'refuse',
  demand: { level: 'domainValidation', source: 'TEST policy', tlsDomain: host, published: true },
  tlsFailure: 'sts-mx-mismatch',
  detail: `${host} is not in the policy`,
});

test("a refused host is never contacted; the next MX takes the message, with the providers' notes in the trace", async () => {
  const skipped = await peer(1, []);
  const good = await peer(2, [takes()]);
  const dns = new FakeResolver({
    'one.test': {
      MX: [
        { exchange: 'mx1.one.test', priority: 10 },
        { exchange: 'mx2.one.test', priority: 20 },
      ],
    },
    'mx1.one.test': { A: [skipped.host] },
    'mx2.one.test': { A: [good.host] },
  });
  const p = provider({
    'mx1.one.test': refuse('mx1.one.test'),
    'mx2.one.test': { kind: 'none', note: 'TEST: nothing to demand of mx2' },
  });
  const r = await remote(dns, p).deliver(job('one.test'));
  assert.equal(r.outcomes.get(0)?.status, 'delivered');
  assert.equal(skipped.connections, 0, 'the refused host was not contacted');
  assert.equal(r.attempt.host, 'mx2.one.test');
  assert.deepEqual(r.attempt.tlsNotes, ['TEST: nothing to demand of mx2']);
  assert.deepEqual(
    p.asked.map((c) => [c.host, c.via.kind, c.hop.domain]),
    [
      ['mx1.one.test', 'mx', 'one.test'],
      ['mx2.one.test', 'mx', 'one.test'],
    ],
  );
  await good.done;
});

test('every host refused: deferred 4.7.5 with the failure kind; the destination is not marked down', async () => {
  const skipped = await peer(3, []);
  const dns = new FakeResolver({
    'two.test': { MX: [{ exchange: 'mx.two.test', priority: 10 }] },
    'mx.two.test': { A: [skipped.host] },
  });
  const rd = remote(dns, provider({ 'mx.two.test': refuse('mx.two.test') }));
  const r = await rd.deliver(job('two.test'));
  const o = r.outcomes.get(0)!;
  assert.equal(o.status, 'deferred');
  assert.equal(o.reply.enhanced, '4.7.5');
  assert.equal(r.attempt.tlsFailure, 'sts-mx-mismatch');
  assert.equal(o.reply.reason, 'TLS required by TEST policy: mx.two.test is not in the policy, host mx.two.test');
  assert.equal(skipped.connections, 0);
  const again = await rd.deliver(job('two.test'));
  assert.doesNotMatch(again.outcomes.get(0)!.reply.reason ?? '', /marked unreachable/, 'not remembered as down');
});

test("a demand raises the host's requirement (no STARTTLS: deferred, no transaction); an observed one is only recorded", async () => {
  const plain = await peer(4, [
    [
      { send: '220 mx ESMTP' },
      { expect: 'EHLO gw.contoso.test', reply: '250-mx\r\n250 PIPELINING' },
      { expect: 'QUIT', reply: '221 bye' },
    ],
  ]);
  const observed = await peer(5, [takes()]);
  const dns = new FakeResolver({
    'three.test': { MX: [{ exchange: 'mx.three.test', priority: 10 }] },
    'mx.three.test': { A: [plain.host] },
    'four.test': { MX: [{ exchange: 'mx.four.test', priority: 10 }] },
    'mx.four.test': { A: [observed.host] },
  });
  const p = provider({
    'mx.three.test': {
      kind: 'demand',
      demand: { level: 'domainValidation', source: 'TEST enforce', tlsDomain: 'mx.three.test', published: true },
    },
    'mx.four.test': {
      kind: 'none',
      observe: { level: 'domainValidation', source: 'TEST testing', tlsDomain: 'mx.four.test' },
    },
  });
  const r = await remote(dns, p).deliver(job('three.test'));
  assert.equal(r.outcomes.get(0)?.status, 'deferred');
  assert.equal(r.outcomes.get(0)?.reply.enhanced, '4.7.4');
  assert.deepEqual(r.attempt.tlsRequired, {
    level: 'domainValidation',
    source: 'TEST enforce',
    tlsDomain: 'mx.three.test',
    published: true,
  });
  assert.ok(!plain.transcript.some((l) => /^C: (MAIL|RCPT|DATA)/.test(l)), plain.transcript.join('\n'));
  const t = await remote(dns, p).deliver(job('four.test'));
  assert.equal(t.outcomes.get(0)?.status, 'delivered');
  assert.equal(t.attempt.tlsRequired.level, 'opportunistic');
  assert.deepEqual(t.attempt.tlsNotes, [
    'TEST testing: this session would NOT meet the policy (domainValidation for mx.four.test, achieved none); delivered anyway (testing mode)',
  ]);
  await observed.done;
});

test('TLS-RPT: a host skipped before any connection is one failed session under the policy that skipped it (DANE: dnssec-invalid; MTA-STS: validation-failure)', async () => {
  const never = await peer(6, []);
  const good = await peer(7, [takes(), takes()]);
  const plain = await peer(8, [
    [{ send: '220 mx ESMTP' }, { expect: 'EHLO gw.contoso.test', reply: '250-mx\r\n250 PIPELINING' }],
  ]);
  const dns = new FakeResolver({
    // DANE: a secure MX RRset and addresses, a TLSA lookup that fails (SERVFAIL, then bogus).
    'dane.test': {
      MX: [
        { exchange: 'mx1.dane.test', priority: 10 },
        { exchange: 'mx2.dane.test', priority: 20 },
      ],
      secure: true,
    },
    'mx1.dane.test': { A: [never.host], secure: true },
    'mx2.dane.test': { A: [good.host] },
    // MTA-STS enforce naming only mx2: mx1 is outside the policy.
    'sts.test': {
      MX: [
        { exchange: 'mx1.sts.test', priority: 10 },
        { exchange: 'mx2.sts.test', priority: 20 },
      ],
    },
    'mx1.sts.test': { A: [never.host] },
    'mx2.sts.test': { A: [plain.host] },
    '_mta-sts.sts.test': { TXT: ['v=STSv1; id=1'] },
  }).fail(`_${port}._tcp.mx1.dane.test`, 'servfail', 'TLSA');
  const text = 'version: STSv1\r\nmode: enforce\r\nmx: mx2.sts.test\r\nmax_age: 86400\r\n';
  const parsed = parseStsPolicy(text);
  assert.ok(parsed.ok);
  const sts = new MtaSts({
    resolver: () => dns,
    trust: () => new TrustStore(false, []),
    cache: null,
    fetcher: async () => ({ ok: true, policy: parsed.value, text, url: 'https://mta-sts.sts.test/', ip: good.host }),
  });
  const seen: TlsSessionReport[] = [];
  const r = remote(dns, [new DaneProvider(() => dns), mtaStsProvider(sts, () => true)], (s) => seen.push(s));
  const d = await r.deliver(job('dane.test'));
  assert.equal(d.outcomes.get(0)?.status, 'delivered', d.outcomes.get(0)?.reply.reason);
  assert.deepEqual(seen[0], {
    policyDomain: 'dane.test',
    policy: { type: 'tlsa' },
    mxHost: 'mx1.dane.test',
    mxIp: never.host,
    resultType: 'dnssec-invalid',
    reason: 'the TLSA records of the server could not be looked up (tlsa-lookup-failed)',
  });
  assert.deepEqual(
    seen.slice(1).map((s) => [s.mxHost, s.resultType ?? 'success', s.policy.type]),
    [['mx2.dane.test', 'starttls-not-supported', 'no-policy-found']],
    'then the session with mx2 (which offers no STARTTLS)',
  );
  // A bogus TLSA RRset (DNSSEC validation failed) is dnssec-invalid too.
  seen.length = 0;
  dns.fail(`_${port}._tcp.mx1.dane.test`, 'bogus', 'TLSA');
  await r.deliver(job('dane.test'));
  assert.deepEqual(
    [seen[0]?.mxHost, seen[0]?.resultType, seen[0]?.reason],
    ['mx1.dane.test', 'dnssec-invalid', 'the TLSA records of the server failed DNSSEC validation (bogus) (tlsa-bogus)'],
  );
  seen.length = 0;
  // mx2 is in the policy but offers no STARTTLS: deferred, after two failed sessions.
  assert.equal((await r.deliver(job('sts.test'))).outcomes.get(0)?.status, 'deferred');
  assert.deepEqual(seen[0], {
    policyDomain: 'sts.test',
    policy: {
      type: 'sts',
      strings: ['version: STSv1', 'mode: enforce', 'mx: mx2.sts.test', 'max_age: 86400'],
      mxHost: ['mx2.sts.test'],
    },
    mxHost: 'mx1.sts.test',
    mxIp: never.host,
    resultType: 'validation-failure',
    reason: 'the MX host is not one the MTA-STS policy names (sts-mx-mismatch)',
  });
  assert.deepEqual(
    seen.slice(1).map((s) => [s.mxHost, s.resultType, s.policy.type]),
    [['mx2.sts.test', 'starttls-not-supported', 'sts']],
  );
  assert.equal(never.connections, 0);
  await good.done;
  await plain.done;
});
