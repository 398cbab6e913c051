// The CLI against the same dataDir while the server runs: queue list/show/retry/delete, config check.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { cleanup, runCli, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { sendOverTls } from '../helpers/smtp.ts';

let gw: GatewayHandle;
before(async () => { gw = await startGateway({ config: { queue: { retrySchedule: [3600] } } }); });
after(() => cleanup(gw));

const queued = (text: string) => /queued as ([0-9A-Z]+)/.exec(text)![1];

test('a message that cannot be delivered is deferred with its reason; retry delivers it once fixed', async () => {
  // A file where the mailbox folder belongs makes local delivery fail temporarily (ENOTDIR).
  const domainDir = path.join(gw.dataDir, 'mailboxes', 'contoso.test');
  mkdirSync(domainDir, { recursive: true });
  writeFileSync(path.join(domainDir, 'blocked'), 'not a folder');
  const r = await sendOverTls(gw.port, 'sender@fabrikam.test', ['blocked@contoso.test'], 'Subject: stuck\r\nMessage-ID: <stuck@fabrikam.test>\r\n\r\nhi\r\n');
  const id = queued(r.text);
  await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'deferred');

  const list = await gw.cli(['queue', 'list', '--json']);
  assert.equal(list.code, 0, list.stderr);
  const entry = (JSON.parse(list.stdout) as { id: string; state: string; lastError: string }[]).find((m) => m.id === id)!;
  assert.equal(entry.state, 'deferred');
  assert.match(entry.lastError, /4\.3\.0/);

  const text = await gw.cli(['queue', 'list']);
  assert.match(text.stdout, new RegExp(`${id} +deferred`));
  assert.match(text.stdout, /last error: 451 4\.3\.0 Local delivery failed: a file stands where a mailbox folder belongs/);

  const show = await gw.cli(['queue', 'show', id, '--json']);
  const m = JSON.parse(show.stdout);
  assert.equal(m.messageId, '<stuck@fabrikam.test>');
  assert.equal(m.inbound.tls.version, 'TLSv1.3');
  assert.equal(m.inbound.clientIp, '127.0.0.1');
  assert.equal(m.trace[0].kind, 'delivery');
  const showText = await gw.cli(['queue', 'show', id]);
  assert.match(showText.stdout, /tls: +TLSv1\.3 TLS_AES_256_GCM_SHA384 \(256 bits\); no client certificate/);

  rmSync(path.join(domainDir, 'blocked'));
  const retry = await gw.cli(['queue', 'retry', id]);
  assert.equal(retry.code, 0, retry.stderr);
  await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'delivered');
  assert.equal(readdirSync(path.join(domainDir, 'blocked', 'new')).length, 1);
  const after = JSON.parse((await gw.cli(['queue', 'list', '--json'])).stdout) as unknown[];
  assert.equal(after.length, 0);
});

test('delete removes a deferred message; unknown ids give a non-zero exit', async () => {
  const domainDir = path.join(gw.dataDir, 'mailboxes', 'contoso.test');
  writeFileSync(path.join(domainDir, 'gone'), 'x');
  const id = queued((await sendOverTls(gw.port, 's@fabrikam.test', ['gone@contoso.test'], 'Subject: d\r\n\r\nx\r\n')).text);
  await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id);
  const del = await gw.cli(['queue', 'delete', id]);
  assert.equal(del.code, 0, del.stderr);
  assert.match(del.stdout, /deleted/);
  const again = await gw.cli(['queue', 'delete', id]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /no message/);
  assert.equal((await gw.cli(['queue', 'show', 'NOPE'])).code, 1);
});

test('config check: OK summary, and a clear refusal naming the key', async () => {
  const ok = await gw.cli(['config', 'check']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /configuration OK .*accepted domains contoso\.test/);
  const dir = tempDir();
  const bad = path.join(dir, 'bad.yaml');
  writeFileSync(bad, 'organizations:\n  - name: x\n    acceptedDomains: [{ domain: x.test }]\ntls:\n  minVersion: TLSv1.0\n');
  const r = await runCli(['config', 'check', '-c', bad]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /tls\.minVersion: must be TLSv1\.2 or TLSv1\.3/);
  const env = await runCli(['config', 'check'], { PORTCULLIS_CONFIG: bad });
  assert.equal(env.code, 2, 'PORTCULLIS_CONFIG is honoured');
});
