// `portcullis admin token create|list|revoke` against the dataDir of a running server: the secret
// is printed once, lists never show it, revocation is by name or id, and each change is audited.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cleanup, startGateway, type GatewayHandle } from '../helpers/gateway.ts';

let gw: GatewayHandle;
before(async () => {
  gw = await startGateway({
    config: {
      organizations: [
        { name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] },
        { name: 'fabrikam', acceptedDomains: [{ domain: 'fabrikam.test' }] },
      ],
    },
  });
});
after(() => cleanup(gw));

test('tokens are made, listed without secrets and revoked; unknown organizations and names are refused with the fix', async () => {
  const made = await gw.cli(['admin', 'token', 'create', '--name', 'ops']);
  assert.equal(made.code, 0, made.stderr);
  const secret = /^(pcat_\S+)$/m.exec(made.stdout)?.[1];
  assert.ok(secret, made.stdout);
  assert.match(made.stdout, /token "ops" \(id [0-9a-f]{12}\), global \(every organization\):/);
  assert.match(made.stdout, /it is not shown again/);

  const json = await gw.cli(['admin', 'token', 'create', '--name', 'fabrikam-reader', '--org', 'fabrikam', '--json']);
  assert.equal(json.code, 0, json.stderr);
  const t = JSON.parse(json.stdout) as { id: string; name: string; org: string; token: string; createdBy: string };
  assert.equal(t.org, 'fabrikam');
  assert.match(t.token, /^pcat_/);

  const bad = await gw.cli(['admin', 'token', 'create', '--name', 'x', '--org', 'northwind']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /no organization named "northwind"/);
  assert.match(bad.stderr, /use one of: contoso, fabrikam/);

  const list = await gw.cli(['admin', 'token', 'list', '--json']);
  const all = JSON.parse(list.stdout) as { id: string; name: string; org: string | null; revokedAt?: number }[];
  assert.deepEqual(
    all.map((x) => [x.name, x.org]),
    [
      ['ops', null],
      ['fabrikam-reader', 'fabrikam'],
    ],
  );
  assert.ok(
    !list.stdout.includes(secret!) && !list.stdout.includes(t.token) && !list.stdout.includes('hash'),
    'no secret, no hash',
  );

  const rv = await gw.cli(['admin', 'token', 'revoke', t.id]);
  assert.equal(rv.code, 0, rv.stderr);
  assert.match(rv.stdout, /token "fabrikam-reader" \(id [0-9a-f]+, organization fabrikam\) revoked/);
  const again = await gw.cli(['admin', 'token', 'revoke', 'fabrikam-reader']);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /no active token named or numbered "fabrikam-reader"/);
  const text = await gw.cli(['admin', 'token', 'list']);
  assert.match(text.stdout, /fabrikam-reader +organization fabrikam .* revoked \d{4}-/);
  assert.match(text.stdout, /ops +global \(every organization\) .* active$/m);
});
