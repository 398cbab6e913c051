// The CLI against the same dataDir while the server runs: queue list/show/retry/delete, config check.
// queue list says why each recipient waits, queue show tells the history readably, and queue delete
// takes a message out of the queue without erasing its trace.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cleanup, runCli, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { sendOverTls } from '../helpers/smtp.ts';

let gw: GatewayHandle;
before(async () => {
  gw = await startGateway({ config: { queue: { retrySchedule: [3600] } } });
});
after(() => cleanup(gw));

const queued = (text: string) => /queued as ([0-9A-Z]+)/.exec(text)![1];

test('a message that cannot be delivered is deferred with its reason; retry delivers it once fixed', async () => {
  // A file where the mailbox folder belongs makes local delivery fail temporarily (ENOTDIR).
  const domainDir = path.join(gw.dataDir, 'mailboxes', 'contoso.test');
  mkdirSync(domainDir, { recursive: true });
  writeFileSync(path.join(domainDir, 'blocked'), 'not a folder');
  const r = await sendOverTls(
    gw.port,
    'sender@fabrikam.test',
    ['blocked@contoso.test'],
    'Subject: stuck\r\nMessage-ID: <stuck@fabrikam.test>\r\n\r\nhi\r\n',
  );
  const id = queued(r.text);
  await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'deferred');

  const list = await gw.cli(['queue', 'list', '--json']);
  assert.equal(list.code, 0, list.stderr);
  type Entry = {
    id: string;
    state: string;
    lastError: string;
    recipients: {
      address: string;
      lastAttempt?: { agent: string; status: string; reply: { code: number; reason: string } };
    }[];
  };
  const entry = (JSON.parse(list.stdout) as Entry[]).find((m) => m.id === id)!;
  assert.equal(entry.state, 'deferred');
  assert.match(entry.lastError, /4\.3\.0/);
  assert.equal(entry.recipients[0].lastAttempt?.agent, 'maildir');
  assert.equal(entry.recipients[0].lastAttempt?.reply.code, 451);
  assert.match(entry.recipients[0].lastAttempt?.reply.reason ?? '', /ENOTDIR/);

  const text = await gw.cli(['queue', 'list']);
  assert.match(text.stdout, new RegExp(`${id} +deferred`));
  assert.match(text.stdout, /^ +next attempt \S+, after 1 attempt\(s\)$/m);
  assert.match(
    text.stdout,
    /^ +blocked@contoso\.test: via maildir: 451 4\.3\.0 a file stands where a mailbox folder belongs \(ENOTDIR at /m,
    'the reason of the last attempt, per recipient',
  );

  const show = await gw.cli(['queue', 'show', id, '--json']);
  const m = JSON.parse(show.stdout);
  assert.equal(m.messageId, '<stuck@fabrikam.test>');
  assert.equal(m.inbound.tls.version, 'TLSv1.3');
  assert.equal(m.inbound.clientIp, '127.0.0.1');
  assert.equal(m.trace[0].kind, 'delivery');
  const showText = await gw.cli(['queue', 'show', id]);
  assert.match(showText.stdout, /tls: +TLSv1\.3 TLS_AES_256_GCM_SHA384 \(256 bits\); no client certificate/);
  assert.match(
    showText.stdout,
    /^history:\n {2}\S+Z {2}blocked@contoso\.test: DEFERRED via maildir\n {6}result: 451 4\.3\.0 a file stands where a mailbox folder belongs/m,
  );
  assert.doesNotMatch(showText.stdout, /[{}]/, 'events are shown readably, not as JSON');

  rmSync(path.join(domainDir, 'blocked'));
  const retry = await gw.cli(['queue', 'retry', id]);
  assert.equal(retry.code, 0, retry.stderr);
  await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'delivered');
  assert.equal(readdirSync(path.join(domainDir, 'blocked', 'new')).length, 1);
  const after = JSON.parse((await gw.cli(['queue', 'list', '--json'])).stdout) as unknown[];
  assert.equal(after.length, 0);
});

test('delete takes a deferred message out of the queue and keeps its trace; unknown ids give a non-zero exit', async () => {
  const domainDir = path.join(gw.dataDir, 'mailboxes', 'contoso.test');
  writeFileSync(path.join(domainDir, 'gone'), 'x');
  const id = queued(
    (
      await sendOverTls(
        gw.port,
        's@fabrikam.test',
        ['gone@contoso.test', 'kept@contoso.test'],
        'Subject: d\r\nMessage-ID: <gone@fabrikam.test>\r\n\r\nx\r\n',
      )
    ).text,
  );
  await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'deferred');
  const del = await gw.cli(['queue', 'delete', id]);
  assert.equal(del.code, 0, del.stderr);
  const who = os.userInfo().username;
  assert.match(
    del.stdout,
    new RegExp(`^message ${id} deleted by ${who}: 1 recipient\\(s\\) will not get it; its trace is kept for 30 days`),
  );
  const list = JSON.parse((await gw.cli(['queue', 'list', '--json'])).stdout) as { id: string }[];
  assert.ok(!list.some((m) => m.id === id), 'no longer in the queue');

  // The story is still there: who deleted it, and which recipient got it before.
  const tr = await gw.cli(['trace', '--message-id', 'gone@fabrikam.test']);
  assert.equal(tr.code, 0, tr.stderr);
  assert.match(tr.stdout, new RegExp(`message ${id} {2}\\[done\\]`));
  assert.match(tr.stdout, /recipients: gone@contoso\.test \(deleted\), kept@contoso\.test \(delivered\)/);
  assert.match(tr.stdout, /gone@contoso\.test: DEFERRED via maildir/);
  assert.match(
    tr.stdout,
    new RegExp(
      `DELETED from the queue by administrator ${who} \\(was deferred\\); not delivered to gone@contoso\\.test$`,
      'm',
    ),
  );
  const show = JSON.parse((await gw.cli(['queue', 'show', id, '--json'])).stdout) as {
    state: string;
    trace: { kind: string; data: { by: string } }[];
  };
  assert.equal(show.state, 'done');
  assert.deepEqual(show.trace.at(-1), {
    ...show.trace.at(-1),
    kind: 'deleted',
    data: { by: who, rcpts: [0], state: 'deferred' },
  });

  const again = await gw.cli(['queue', 'delete', id]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, new RegExp(`message ${id} is no longer in the queue .*portcullis trace --queue-id ${id}`));
  const unknown = await gw.cli(['queue', 'delete', 'NOPE']);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /no message NOPE in the queue/);
  assert.equal((await gw.cli(['queue', 'show', 'NOPE'])).code, 1);
});

test('delete of a delivered message refuses and erases nothing', async () => {
  const id = queued(
    (await sendOverTls(gw.port, 's@fabrikam.test', ['fine@contoso.test'], 'Subject: ok\r\n\r\nx\r\n')).text,
  );
  await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'delivered');
  const del = await gw.cli(['queue', 'delete', id]);
  assert.equal(del.code, 1);
  assert.match(del.stderr, /is no longer in the queue \(delivered, failed or deleted already\)/);
  const [m] = JSON.parse((await gw.cli(['trace', '--queue-id', id, '--json'])).stdout) as {
    state: string;
    trace: { kind: string; data: { status: string } }[];
  }[];
  assert.equal(m.state, 'done');
  assert.deepEqual(
    m.trace.map((e) => [e.kind, e.data.status]),
    [['delivery', 'delivered']],
  );
});

test('config check: OK summary, and a clear refusal naming the key', async () => {
  const ok = await gw.cli(['config', 'check']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /configuration OK .*accepted domains contoso\.test/);
  const dir = tempDir();
  const bad = path.join(dir, 'bad.yaml');
  writeFileSync(
    bad,
    'organizations:\n  - name: x\n    acceptedDomains: [{ domain: x.test }]\ntls:\n  minVersion: TLSv1.0\n',
  );
  const r = await runCli(['config', 'check', '-c', bad]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /tls\.minVersion: must be TLSv1\.2 or TLSv1\.3/);
  const env = await runCli(['config', 'check'], { PORTCULLIS_CONFIG: bad });
  assert.equal(env.code, 2, 'PORTCULLIS_CONFIG is honoured');
});

test('the server forgets done messages after trace.retentionDays (swept at start), never queued ones', async () => {
  const domainDir = path.join(gw.dataDir, 'mailboxes', 'contoso.test');
  writeFileSync(path.join(domainDir, 'waits'), 'x');
  const waiting = queued(
    (await sendOverTls(gw.port, 's@fabrikam.test', ['waits@contoso.test'], 'Subject: w\r\n\r\nx\r\n')).text,
  );
  await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === waiting && e.status === 'deferred');
  const all = JSON.parse((await gw.cli(['queue', 'list', '--all', '--json'])).stdout) as {
    id: string;
    state: string;
  }[];
  const done = all.filter((m) => m.state === 'done').map((m) => m.id);
  assert.ok(done.length >= 3, `done messages from the tests above: ${done.join(', ')}`);

  await new Promise((r) => setTimeout(r, 1500));
  await gw.stop();
  gw.writeConfig({ queue: { retrySchedule: [3600] }, trace: { retentionDays: 1 / 86_400 } }); // one second
  assert.ok(!gw.events().some((e) => e.event === 'trace.expired'), 'nothing was old enough under the default 30 days');
  await gw.restart();
  const swept = await gw.waitForLog((e) => e.event === 'trace.expired');
  assert.equal(swept.removed, done.length);
  const left = JSON.parse((await gw.cli(['queue', 'list', '--all', '--json'])).stdout) as {
    id: string;
    state: string;
  }[];
  assert.deepEqual(
    left.map((m) => [m.id, m.state]),
    [[waiting, 'deferred']],
  );
  const gone = await gw.cli(['trace', '--queue-id', done[0]]);
  assert.equal(gone.code, 1);
  assert.match(gone.stdout, /no message matches/);
});

test('queue list pages: --limit, then --after the last queue id shown; an unknown cursor is refused', async () => {
  for (let i = 0; i < 3; i++) {
    const id = queued(
      (await sendOverTls(gw.port, 's@fabrikam.test', ['waits@contoso.test'], `Subject: p${i}\r\n\r\nx\r\n`)).text,
    );
    await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.status === 'deferred');
  }
  const ids = async (args: string[]) =>
    (JSON.parse((await gw.cli(['queue', 'list', '--json', ...args])).stdout) as { id: string }[]).map((m) => m.id);
  const whole = await ids([]);
  assert.ok(whole.length >= 4, `queued: ${whole.join(', ')}`);
  const paged: string[] = [];
  for (let page = await ids(['--limit', '2']), n = 0; page.length && n < 10; n++) {
    paged.push(...page);
    page = await ids(['--limit', '2', '--after', page[page.length - 1]]);
  }
  assert.deepEqual(paged, whole, 'the pages together are the queue, each message once, in order');
  const text = await gw.cli(['queue', 'list', '--limit', '2']);
  assert.match(text.stdout, new RegExp(`^next page: portcullis queue list --limit 2 --after ${whole[1]}$`, 'm'));
  const bad = await gw.cli(['queue', 'list', '--after', 'NOSUCHID']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /no message NOSUCHID in the queue to page after/);
  assert.doesNotMatch(bad.stderr, /at .*\.ts:\d+/, 'no stack trace');
});
