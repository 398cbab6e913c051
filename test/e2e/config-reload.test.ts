// Configuration reload without dropping connections; an invalid new config is refused.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { cleanup, defaultOrgs, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { SmtpClient } from '../helpers/smtp.ts';

let gw: GatewayHandle;
before(async () => {
  gw = await startGateway();
});
after(() => cleanup(gw));

const withFabrikam = [...defaultOrgs, { name: 'fabrikam', acceptedDomains: [{ domain: 'fabrikam.test' }] }];

test('portcullis config reload applies a new domain to new sessions; a session in flight keeps its rules', async () => {
  const old = await SmtpClient.connect(gw.port);
  await old.hello();
  await old.expect('MAIL FROM:<a@x.test>', 250);
  assert.equal((await old.cmd('RCPT TO:<u@fabrikam.test>')).code, 550);

  gw.writeConfig({ organizations: withFabrikam });
  const r = await gw.cli(['config', 'reload']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /configuration reloaded/);

  const fresh = await SmtpClient.connect(gw.port);
  await fresh.hello();
  await fresh.expect('MAIL FROM:<a@x.test>', 250);
  await fresh.expect('RCPT TO:<u@fabrikam.test>', 250);
  fresh.close();

  // The old session was not dropped and still runs under the rules it started with.
  assert.equal((await old.cmd('RCPT TO:<u@fabrikam.test>')).code, 550);
  await old.expect('RCPT TO:<u@contoso.test>', 250);
  await old.expect('QUIT', 221);
});

test('an invalid configuration is refused with the reason, and the running one stays', async () => {
  writeFileSync(gw.configFile, 'organizations: []\nsmtp: { listen: ["127.0.0.1:1"] }\n');
  const r = await gw.cli(['config', 'reload']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /configuration refused, the running one stays in force/);
  assert.match(r.stderr, /organizations: needs at least one organization/);
  await gw.waitForLog((e) => e.event === 'config.rejected');
  const c = await SmtpClient.connect(gw.port);
  await c.hello();
  await c.expect('MAIL FROM:<a@x.test>', 250);
  await c.expect('RCPT TO:<u@fabrikam.test>', 250);
  c.close();
});

test('SIGHUP reloads too', async () => {
  gw.writeConfig({ organizations: defaultOrgs });
  const n = gw.events().filter((e) => e.event === 'config.reloaded').length;
  gw.proc.kill('SIGHUP');
  await gw.waitForLog(() => gw.events().filter((e) => e.event === 'config.reloaded').length > n);
  const c = await SmtpClient.connect(gw.port);
  await c.hello();
  await c.expect('MAIL FROM:<a@x.test>', 250);
  assert.equal((await c.cmd('RCPT TO:<u@fabrikam.test>')).code, 550);
  c.close();
});

test('a restart-only setting is reported while the file differs from what runs, and no longer once it is back', async () => {
  gw.writeConfig({ organizations: defaultOrgs, workers: 3 });
  const changed = await gw.cli(['config', 'reload']);
  assert.equal(changed.code, 0, changed.stderr);
  assert.match(changed.stdout, /configuration reloaded \(workers changed: these take effect after a restart\)/);
  gw.writeConfig({ organizations: defaultOrgs });
  const back = await gw.cli(['config', 'reload']);
  assert.equal(back.code, 0, back.stderr);
  assert.equal(back.stdout.trim(), 'configuration reloaded', 'the file says again what runs: nothing to restart for');
});
