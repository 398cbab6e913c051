// The per-host composition of TLS demands (policy/outbound.ts composeHost): the strictest demand
// names the result, every demand is kept and checked, replaced and relaxed demands are recorded;
// what the message demands (REQUIRETLS, TLS-Required: No; RFC 8689) is decided there too.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { composeHost, plainRequirement, type HostDemand, type ProviderAnswer } from '../../../src/policy/outbound.ts';

const conn: HostDemand = { level: 'domainValidation', source: 'connector "To Fabrikam"', tlsDomain: '*.fabrikam.test' };
const dflt: HostDemand = { level: 'opportunistic', source: 'default' };
const dane: HostDemand = {
  level: 'dane',
  source: 'DANE (TLSA 3 1 1 at _25._tcp.mx.fabrikam.test, DNSSEC secure)',
  published: true,
  replaces: ['MTA-STS'],
  verify: () => ({ ok: true, detail: 'm' }),
};
const sts: HostDemand = {
  level: 'domainValidation',
  source: 'MTA-STS (enforce, id 1)',
  tlsDomain: 'mx.fabrikam.test',
  published: true,
};
const demand = (d: HostDemand): ProviderAnswer => ({ kind: 'demand', demand: d });

test("no provider demands anything: the hop requirement, and the providers' notes", () => {
  const r = composeHost(dflt, [
    { provider: 'DANE', answer: { kind: 'none', note: 'DANE: the MX records of x.test are not DNSSEC-secure' } },
  ]);
  assert.deepEqual(plainRequirement(r), dflt);
  assert.deepEqual(
    r.demands.map((d) => d.source),
    ['default'],
  );
  assert.deepEqual(r.notes, ['DANE: the MX records of x.test are not DNSSEC-secure']);
});

test('DANE above opportunistic names the result; its own check travels with it', () => {
  const r = composeHost(dflt, [{ provider: 'DANE', answer: demand(dane) }]);
  assert.equal(r.level, 'dane');
  assert.equal(r.source, dane.source);
  assert.equal(r.demands.length, 1, 'opportunistic demands nothing to check');
  assert.equal(r.demands[0].verify, dane.verify);
});

test('a connector and DANE: the strictest names the result and both are checked (never a fallback past either)', () => {
  const r = composeHost(conn, [{ provider: 'DANE', answer: demand(dane) }]);
  assert.equal(r.level, 'dane');
  assert.deepEqual(
    r.demands.map((d) => d.source),
    [dane.source, conn.source],
  );
  assert.equal(r.demands[1].tlsDomain, '*.fabrikam.test');
  const weaker = composeHost(conn, [
    { provider: 'DANE', answer: demand({ level: 'encryptionOnly', source: 'DANE (unusable)', published: true }) },
  ]);
  assert.deepEqual(
    weaker.demands.map((d) => d.source),
    [conn.source, 'DANE (unusable)'],
    'a weaker demand is still checked, after the strictest',
  );
  assert.equal(weaker.source, conn.source);
});

test('usable DANE replaces MTA-STS for the host (RFC 8461 §2); the replacement is recorded', () => {
  const r = composeHost(dflt, [
    { provider: 'DANE', answer: demand(dane) },
    { provider: 'MTA-STS', answer: demand(sts) },
  ]);
  assert.deepEqual(
    r.demands.map((d) => d.source),
    [dane.source],
  );
  assert.deepEqual(r.waived, [`${sts.source}: domainValidation, replaced by ${dane.source}`]);
  const alone = composeHost(dflt, [
    { provider: 'DANE', answer: { kind: 'none' } },
    { provider: 'MTA-STS', answer: demand(sts) },
  ]);
  assert.deepEqual(
    alone.demands.map((d) => d.source),
    [sts.source],
  );
});

test("TLS-Required: No relaxes published demands only, never a connector's", () => {
  const r = composeHost(conn, [{ provider: 'DANE', answer: demand(dane) }], { tlsRequiredNo: true });
  assert.deepEqual(
    r.demands.map((d) => d.source),
    [conn.source],
  );
  assert.match(r.waived[0], /relaxed by the message's TLS-Required: No$/);
  assert.equal(
    composeHost(dflt, [{ provider: 'DANE', answer: demand(dane) }], { tlsRequiredNo: true }).level,
    'opportunistic',
  );
});

test('the recorded requirement carries no function and keeps `published`', () => {
  assert.deepEqual(plainRequirement(dane), { level: 'dane', source: dane.source, published: true });
  assert.equal(
    JSON.stringify(plainRequirement(conn)),
    JSON.stringify({ level: 'domainValidation', source: conn.source, tlsDomain: '*.fabrikam.test' }),
  );
});

test("REQUIRETLS: composed with the host's demands; only a source that authenticates the server satisfies it", () => {
  const none = composeHost(dflt, [], { requireTls: true });
  assert.match(
    none.requireTlsProblem ?? '',
    /^TLS required by REQUIRETLS \(RFC 8689\): the next hop is not authenticated by DANE, MTA-STS or a connector .*\(opportunistic by default\)$/,
  );
  assert.equal(
    composeHost(dflt, [{ provider: 'DANE', answer: demand(dane) }], { requireTls: true }).requireTlsProblem,
    undefined,
  );
  assert.equal(
    composeHost(dflt, [{ provider: 'MTA-STS', answer: demand(sts) }], { requireTls: true }).requireTlsProblem,
    undefined,
  );
  assert.equal(composeHost(conn, [], { requireTls: true }).requireTlsProblem, undefined);
  // DANE with only unusable records encrypts but does not authenticate.
  const unusable: HostDemand = { level: 'encryptionOnly', source: 'DANE (no usable record)', published: true };
  assert.ok(
    composeHost(dflt, [{ provider: 'DANE', answer: demand(unusable) }], { requireTls: true }).requireTlsProblem,
  );
  // With REQUIRETLS, TLS-Required: No is ignored (RFC 8689 §5): DANE still applies and satisfies it.
  const both = composeHost(dflt, [{ provider: 'DANE', answer: demand(dane) }], {
    requireTls: true,
    tlsRequiredNo: true,
  });
  assert.deepEqual([both.level, both.waived, both.requireTlsProblem], ['dane', [], undefined]);
  // Without REQUIRETLS there is no verdict.
  assert.equal(composeHost(dflt, []).requireTlsProblem, undefined);
});
