import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  buildConfig,
  DEFAULT_CONFIG_FILE,
  defaultConfigPath,
  loadConfig,
  SYSTEM_CONFIG_FILE,
} from '../../../src/config/load.ts';

const orgs = [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }];
const err = (input: unknown): string => {
  try {
    buildConfig(input, '/etc/portcullis', 'x.yaml');
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected the configuration to be refused');
};

test('defaults fill in; relative paths resolve against the config folder; result is frozen', () => {
  const c = buildConfig(
    { organizations: orgs, tls: { certificates: [{ cert: 'c.pem', key: 'k.pem' }] } },
    '/etc/portcullis',
    'x.yaml',
  );
  assert.equal(c.dataDir, '/etc/portcullis/data');
  assert.deepEqual(c.smtp.listen, ['127.0.0.1:2525']);
  assert.equal(c.smtp.maxMessageSize, 36_700_160);
  assert.equal(c.smtp.bareLineEndings, 'normalize');
  assert.equal(c.tls.minVersion, 'TLSv1.2');
  assert.equal(c.tls.certificates[0].cert, '/etc/portcullis/c.pem');
  assert.equal(c.organizations[0].acceptedDomains[0].organization, 'contoso', 'every object carries its organization');
  assert.equal(c.organizations[0].acceptedDomains[0].recipients, 'any');
  assert.ok(Object.isFrozen(c) && Object.isFrozen(c.smtp) && Object.isFrozen(c.organizations[0].acceptedDomains[0]));
});

test('errors name the key and what is wrong', () => {
  assert.match(
    err({ organizations: orgs, tls: { minVersion: 'TLSv1.1' } }),
    /tls\.minVersion: must be TLSv1\.2 or TLSv1\.3/,
  );
  assert.match(err({ organizations: orgs, smpt: {} }), /unknown key\(s\) "smpt"/);
  assert.match(err({ organizations: orgs, smtp: { listen: ['nonsense'] } }), /smtp\.listen\[0\]: must be "IP:port"/);
  assert.match(err({ organizations: orgs, smtp: { bareLineEndings: 'lenient' } }), /smtp\.bareLineEndings/);
  assert.match(
    err({ organizations: [{ name: 'a', acceptedDomains: [{ domain: 'bad..domain' }] }] }),
    /organizations\[0\]\.acceptedDomains\[0\]\.domain: is not a valid domain name/,
  );
  assert.match(err({}), /organizations/);
  assert.match(
    err({ organizations: [...orgs, { name: 'b', acceptedDomains: [{ domain: 'contoso.test' }] }] }),
    /"contoso\.test" is already accepted by organization "contoso"/,
  );
  assert.match(
    err({ organizations: [...orgs, { name: 'contoso', acceptedDomains: [{ domain: 'x.test' }] }] }),
    /"contoso" is used by two organizations/,
  );
});

test('YAML errors and missing files are explained', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-cfg-'));
  const f = path.join(dir, 'p.yaml');
  writeFileSync(f, 'smtp: [unclosed\n');
  assert.throws(() => loadConfig(f), /is not valid YAML/);
  assert.throws(() => loadConfig(path.join(dir, 'missing.yaml')), /cannot read configuration file .*missing\.yaml/);
  const d = loadConfig(path.join(dir, 'missing.yaml'), true);
  assert.equal(d.source, null);
  assert.equal(d.organizations[0].acceptedDomains[0].domain, 'localhost');
});

test('runAs: root, or a user with an optional group; anything else is explained', () => {
  assert.equal(buildConfig({ organizations: orgs, runAs: 'root' }, '/etc/portcullis', 'x.yaml').runAs, 'root');
  assert.deepEqual(
    buildConfig(
      { organizations: orgs, runAs: { user: 'portcullis', group: 'portcullis' } },
      '/etc/portcullis',
      'x.yaml',
    ).runAs,
    { user: 'portcullis', group: 'portcullis' },
  );
  assert.equal(buildConfig({ organizations: orgs }, '/etc/portcullis', 'x.yaml').runAs, undefined);
  assert.match(
    err({ organizations: orgs, runAs: 'portcullis' }),
    /runAs: must be root, or \{user: NAME, group: NAME\}/,
  );
  assert.match(err({ organizations: orgs, runAs: { user: 'portcullis', gruop: 'x' } }), /runAs/);
  assert.match(err({ organizations: orgs, runAs: { user: 'a b' } }), /runAs/);
});

test('delivery.maildir: private by default; group modes in quotes; a group needs a mode that gives it rights', () => {
  const d = buildConfig({ organizations: orgs }, '/etc/portcullis', 'x.yaml').delivery.maildir;
  assert.deepEqual({ ...d }, { mode: '0600' });
  const g = buildConfig(
    { organizations: orgs, delivery: { maildir: { group: 'mail', mode: '0660' } } },
    '/etc/portcullis',
    'x.yaml',
  ).delivery.maildir;
  assert.deepEqual({ ...g }, { group: 'mail', mode: '0660' });
  assert.match(
    err({ organizations: orgs, delivery: { maildir: { mode: 660 } } }),
    /delivery\.maildir\.mode: must be "0600" \(private\), "0640" .* in quotes/,
  );
  assert.match(err({ organizations: orgs, delivery: { maildir: { mode: '0666' } } }), /delivery\.maildir\.mode/);
  assert.match(
    err({ organizations: orgs, delivery: { maildir: { group: 'mail' } } }),
    /delivery\.maildir\.mode: gives group "mail" no rights/,
  );
});

test('configuration lookup: $PORTCULLIS_CONFIG, else the first existing of ./portcullis.yaml and /etc/portcullis/portcullis.yaml', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-cfg-'));
  const local = path.join(dir, 'portcullis.yaml');
  const system = path.join(dir, 'etc.yaml');
  const saved = process.env.PORTCULLIS_CONFIG;
  delete process.env.PORTCULLIS_CONFIG;
  try {
    assert.deepEqual([DEFAULT_CONFIG_FILE, SYSTEM_CONFIG_FILE], ['portcullis.yaml', '/etc/portcullis/portcullis.yaml']);
    assert.equal(
      defaultConfigPath([local, system]),
      local,
      'neither exists: the local name (embedded defaults follow)',
    );
    writeFileSync(system, 'x');
    assert.equal(defaultConfigPath([local, system]), system);
    writeFileSync(local, 'x');
    assert.equal(defaultConfigPath([local, system]), local, 'the working directory comes first');
    process.env.PORTCULLIS_CONFIG = '/elsewhere.yaml';
    assert.equal(defaultConfigPath([local, system]), '/elsewhere.yaml');
  } finally {
    if (saved === undefined) delete process.env.PORTCULLIS_CONFIG;
    else process.env.PORTCULLIS_CONFIG = saved;
  }
});

test('dns.dnssec: on by default, can be turned off, must be a boolean', () => {
  assert.equal(buildConfig({ organizations: orgs }, '/etc/portcullis', 'x.yaml').dns.dnssec, true);
  assert.equal(
    buildConfig({ organizations: orgs, dns: { dnssec: false } }, '/etc/portcullis', 'x.yaml').dns.dnssec,
    false,
  );
  assert.match(err({ organizations: orgs, dns: { dnssec: 'yes' } }), /dns\.dnssec/);
  assert.match(err({ organizations: orgs, dns: { dnsec: true } }), /unknown key\(s\) "dnsec"/);
});

test('smtp.forbidUnauthPipelining defaults to on; smtp.reservedConnections must leave room below maxConnections', () => {
  const c = buildConfig({ organizations: orgs }, '/etc/portcullis', 'x.yaml');
  assert.equal(c.smtp.forbidUnauthPipelining, true);
  assert.equal(c.smtp.reservedConnections, undefined, 'absent: the default is computed from maxConnections');
  assert.equal(
    buildConfig(
      { organizations: orgs, smtp: { maxConnections: 10, reservedConnections: 9 } },
      '/etc/portcullis',
      'x.yaml',
    ).smtp.reservedConnections,
    9,
  );
  assert.match(
    err({ organizations: orgs, smtp: { maxConnections: 10, reservedConnections: 10 } }),
    /smtp\.reservedConnections: must be less than smtp\.maxConnections \(10\)/,
  );
  assert.match(err({ organizations: orgs, smtp: { reservedConnections: -1 } }), /smtp\.reservedConnections/);
});

test('nodeId: the host name and the resolved dataDir unless set; the configuration hash leaves node-specific keys out', async () => {
  const { configHash } = await import('../../../src/config/hash.ts');
  const a = buildConfig({ organizations: orgs, dataDir: './data' }, '/etc/portcullis', 'x.yaml');
  assert.equal(a.nodeId, `${os.hostname().toLowerCase()}:/etc/portcullis/data`);
  const b = buildConfig(
    {
      organizations: orgs,
      nodeId: 'mx2',
      hostname: 'mx2.contoso.test',
      dataDir: '/srv/p',
      smtp: { listen: ['192.0.2.2:25'] },
    },
    '/etc/portcullis',
    'y.yaml',
  );
  assert.equal(b.nodeId, 'mx2');
  assert.equal(
    configHash(a),
    configHash(b),
    'nodeId, hostname, dataDir, smtp.listen and the file name differ between nodes',
  );
  assert.match(configHash(a), /^[0-9a-f]{16}$/);
  const c = buildConfig({ organizations: orgs, queue: { leaseSeconds: 60 } }, '/etc/portcullis', 'x.yaml');
  assert.notEqual(configHash(a), configHash(c), 'a shared setting differs');
  assert.match(err({ organizations: orgs, nodeId: '' }), /nodeId/);
});

test('queue.messageExpiration: 5 days by default (RFC 5321 §4.5.4.1: give up after at least 4-5 days; Postfix maximal_queue_lifetime)', () => {
  const c = buildConfig({ organizations: orgs }, '/etc/portcullis', 'x.yaml');
  assert.equal(c.queue.messageExpiration, 5 * 24 * 3600);
  assert.deepEqual(c.queue.retrySchedule, [60, 300, 900, 1800, 3600, 7200, 14_400], 'the retry schedule stays');
  assert.equal(
    buildConfig({ organizations: orgs, queue: { messageExpiration: 3600 } }, '/etc/portcullis', 'x.yaml').queue
      .messageExpiration,
    3600,
  );
});

test('delivery.initialConnectionsPerDestination: unset by default (5, at most the max), never above maxConnectionsPerDestination', () => {
  const build = (delivery: Record<string, unknown>) =>
    buildConfig({ organizations: orgs, delivery }, '/etc/portcullis', 'x.yaml').delivery;
  assert.equal(build({}).initialConnectionsPerDestination, undefined);
  assert.equal(build({ maxConnectionsPerDestination: 2 }).maxConnectionsPerDestination, 2, 'a small max alone is fine');
  assert.equal(build({ initialConnectionsPerDestination: 8 }).initialConnectionsPerDestination, 8);
  assert.match(
    err({ organizations: orgs, delivery: { initialConnectionsPerDestination: 8, maxConnectionsPerDestination: 4 } }),
    /delivery\.initialConnectionsPerDestination.*must not exceed delivery\.maxConnectionsPerDestination \(4\)/,
  );
  assert.match(err({ organizations: orgs, delivery: { initialConnectionsPerDestination: 0 } }), /initialConnections/);
});
