import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { buildConfig, loadConfig } from '../../../src/config/load.ts';

const orgs = [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }];
const err = (input: unknown): string => {
  try { buildConfig(input, '/etc/portcullis', 'x.yaml'); } catch (e) { return (e as Error).message; }
  throw new Error('expected the configuration to be refused');
};

test('defaults fill in; relative paths resolve against the config folder; result is frozen', () => {
  const c = buildConfig({ organizations: orgs, tls: { certificates: [{ cert: 'c.pem', key: 'k.pem' }] } }, '/etc/portcullis', 'x.yaml');
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
  assert.match(err({ organizations: orgs, tls: { minVersion: 'TLSv1.1' } }), /tls\.minVersion: must be TLSv1\.2 or TLSv1\.3/);
  assert.match(err({ organizations: orgs, smpt: {} }), /unknown key\(s\) "smpt"/);
  assert.match(err({ organizations: orgs, smtp: { listen: ['nonsense'] } }), /smtp\.listen\[0\]: must be "IP:port"/);
  assert.match(err({ organizations: orgs, smtp: { bareLineEndings: 'lenient' } }), /smtp\.bareLineEndings/);
  assert.match(err({ organizations: [{ name: 'a', acceptedDomains: [{ domain: 'bad..domain' }] }] }), /organizations\[0\]\.acceptedDomains\[0\]\.domain: is not a valid domain name/);
  assert.match(err({}), /organizations/);
  assert.match(err({ organizations: [...orgs, { name: 'b', acceptedDomains: [{ domain: 'contoso.test' }] }] }), /"contoso\.test" is already accepted by organization "contoso"/);
  assert.match(err({ organizations: [...orgs, { name: 'contoso', acceptedDomains: [{ domain: 'x.test' }] }] }), /"contoso" is used by two organizations/);
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

test('smtp.forbidUnauthPipelining defaults to on; smtp.reservedConnections must leave room below maxConnections', () => {
  const c = buildConfig({ organizations: orgs }, '/etc/portcullis', 'x.yaml');
  assert.equal(c.smtp.forbidUnauthPipelining, true);
  assert.equal(c.smtp.reservedConnections, undefined, 'absent: the default is computed from maxConnections');
  assert.equal(buildConfig({ organizations: orgs, smtp: { maxConnections: 10, reservedConnections: 9 } }, '/etc/portcullis', 'x.yaml').smtp.reservedConnections, 9);
  assert.match(err({ organizations: orgs, smtp: { maxConnections: 10, reservedConnections: 10 } }), /smtp\.reservedConnections: must be less than smtp\.maxConnections \(10\)/);
  assert.match(err({ organizations: orgs, smtp: { reservedConnections: -1 } }), /smtp\.reservedConnections/);
});
