// Addresses end to end against the real process (issue 8, items 2 and 5): quoted local parts keep
// their quotes from RCPT to the next hop (an internalRelay domain relayed to a loopback peer, which
// records exactly what it receives) and get mailbox folders of their own; HELO/EHLO arguments are
// validated; control characters from outside never reach the admin's terminal through the CLI.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { SqliteStore } from '../../src/store/sqlite/index.ts';
import { cleanup, freePort, runCli, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';
import { SmtpClient } from '../helpers/smtp.ts';

const PEER = '127.0.0.61';
const HOSTILE = '\x1b]0;owned\x07\x1b[2J';
const RAW_CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f]/;

let gw: GatewayHandle;
let peer: Peer;

before(async () => {
  peer = await startPeer({
    host: PEER,
    port: await freePort(PEER),
    name: 'onprem.corp.contoso.test',
    rcpt: (a) => (a.startsWith('hostile') ? `550 5.1.1 ${HOSTILE}no such user\x1b[0m` : undefined),
  });
  gw = await startGateway({
    config: {
      delivery: { destinationDownSeconds: 0, timeouts: { connect: 5, greeting: 10, command: 10 } },
      queue: { retrySchedule: [3600] },
      organizations: [
        {
          name: 'contoso',
          acceptedDomains: [{ domain: 'contoso.test' }, { domain: 'corp.contoso.test', type: 'internalRelay' }],
          outboundConnectors: [
            {
              name: 'To on-premises',
              connectorType: 'onPremises',
              recipientDomains: ['corp.contoso.test'],
              useMXRecord: false,
              smartHosts: [`${PEER}:${peer.port}`],
            },
          ],
        },
      ],
    },
  });
});

after(async () => {
  await cleanup(gw);
  await peer?.close();
});

async function send(rcpts: string[], body: string, helo = 'client.test'): Promise<string> {
  const c = await SmtpClient.connect(gw.port);
  await c.hello(helo);
  await c.expect('MAIL FROM:<"s x"@fabrikam.test>', 250);
  for (const r of rcpts) await c.expect(`RCPT TO:<${r}>`, 250);
  await c.expect('DATA', 354);
  const r = await c.expect(`${body}\r\n.`, 250);
  await c.expect('QUIT', 221);
  return /queued as (\w+)/.exec(r.text)![1];
}

const done = (id: string) =>
  gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.status !== 'deferred', 15_000);

test('quoted local parts reach the next hop exactly as quoted: no injected parameters, no broken paths', async () => {
  const rcpts = [
    '"x> NOTIFY=NEVER ORCPT=rfc822;y"@corp.contoso.test',
    '"a b"@corp.contoso.test',
    '"a>"@corp.contoso.test',
  ];
  const id = await send(rcpts, 'Subject: quoted\r\n\r\nhi');
  await done(id);
  const sent = peer.transcript.filter((l) => /^C: (MAIL|RCPT) /.test(l));
  assert.deepEqual(sent, [
    'C: MAIL FROM:<"s x"@fabrikam.test> SIZE=' + /SIZE=(\d+)/.exec(sent[0])![1],
    ...rcpts.map((r) => `C: RCPT TO:<${r}>`),
  ]);
  const list = JSON.parse((await gw.cli(['queue', 'show', id, '--json'])).stdout) as {
    recipients: { address: string; status: string }[];
  };
  assert.deepEqual(
    list.recipients.map((r) => [r.address, r.status]),
    rcpts.map((r) => [r, 'delivered']),
  );
});

test('"\\"carol\\""@contoso.test and carol@contoso.test land in different mailboxes', async () => {
  const quoted = '"\\"carol\\""@contoso.test';
  await done(await send([quoted], 'Subject: to "carol"\r\n\r\nhi'));
  await done(await send(['carol@contoso.test'], 'Subject: to carol\r\n\r\nhi'));
  const dir = path.join(gw.dataDir, 'mailboxes', 'contoso.test');
  const file = (box: string) => {
    const n = readdirSync(path.join(dir, box, 'new'));
    assert.equal(n.length, 1, box);
    return readFileSync(path.join(dir, box, 'new', n[0]), 'utf8');
  };
  const q = file('%22carol%22');
  assert.match(q, /^Return-Path: <"s x"@fabrikam\.test>\r\nDelivered-To: "\\"carol\\""@contoso\.test\r\n/);
  assert.match(q, /\tfor <"\\"carol\\""@contoso\.test>; /);
  assert.match(q, /Subject: to "carol"/);
  assert.match(file('carol'), /Subject: to carol\r\n/);
});

test('HELO/EHLO: control characters, spaces and non-ASCII get 501 5.5.4; real-world names pass', async () => {
  const c = await SmtpClient.connect(gw.port);
  await c.read();
  for (const bad of [`EHLO evil${HOSTILE}.test`, 'HELO a b', 'EHLO bücher.test', 'EHLO [1.2.3]', 'EHLO']) {
    const r = await c.cmd(bad);
    assert.match(r.text, /^501 5\.5\.4 Syntax error: (EHLO|HELO): /, JSON.stringify(bad));
    assert.doesNotMatch(r.text, RAW_CONTROL, 'the reply does not echo the name');
  }
  assert.equal((await c.cmd('MAIL FROM:<a@b.test>')).code, 503, 'a refused EHLO does not start the session');
  for (const good of ['EHLO WIN_SERVER01', 'EHLO host.example.', 'EHLO [127.0.0.1]', 'HELO client.test'])
    assert.equal((await c.cmd(good)).code, 250, good);
  await c.expect('QUIT', 221);
});

test('queue show and trace print hostile Message-IDs and peer replies with visible escapes, never raw', async () => {
  const id = await send(['hostile@corp.contoso.test'], `Subject: x\r\nMessage-ID: <${HOSTILE}id@evil.test>\r\n\r\nhi`);
  await done(id);
  for (const args of [
    ['queue', 'show', id],
    ['trace', '--queue-id', id],
  ]) {
    const r = await gw.cli(args);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, RAW_CONTROL, args.join(' '));
    assert.ok(r.stdout.includes('<\\x1b]0;owned\\x07\\x1b[2Jid@evil.test>'), `${args.join(' ')}: ${r.stdout}`);
    assert.ok(r.stdout.includes('\\x1b[2Jno such user\\x1b[0m'), `${args.join(' ')}: ${r.stdout}`);
  }
  const list = await gw.cli(['queue', 'list', '--all']);
  assert.doesNotMatch(list.stdout, RAW_CONTROL);
  const json = await gw.cli(['queue', 'show', id, '--json']);
  assert.equal(
    JSON.parse(json.stdout).messageId,
    `<${HOSTILE}id@evil.test>`,
    'JSON output keeps the data (JSON-escaped)',
  );
});

test('a HELO name stored by an earlier version is shown escaped too', async () => {
  const dir = tempDir();
  const dataDir = path.join(dir, 'data');
  const store = new SqliteStore(dataDir);
  const helo = `evil${HOSTILE}.test`;
  await store.enqueue({
    id: 'OLDHELO1',
    org: 'contoso',
    receivedAt: Date.now(),
    mailFrom: 'a@fabrikam.test',
    messageId: '<m@fabrikam.test>',
    envelope: { smtputf8: false },
    inbound: {
      sessionId: 's',
      clientIp: '192.0.2.1',
      clientPort: 1,
      helo,
      protocol: 'ESMTP',
      receivedBy: 'mx1.contoso.test',
    },
    data: Buffer.from('Subject: x\r\n\r\nx\r\n'),
    recipients: [{ address: 'bob@contoso.test', org: 'contoso', route: 'local' }],
  });
  await store.close();
  const config = path.join(dir, 'portcullis.yaml');
  writeFileSync(
    config,
    YAML.stringify({ dataDir, organizations: [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }] }),
  );
  for (const args of [
    ['queue', 'show', 'OLDHELO1'],
    ['trace', '--queue-id', 'OLDHELO1'],
  ]) {
    const r = await runCli([...args, '-c', config]);
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stdout, RAW_CONTROL, args.join(' '));
    assert.ok(r.stdout.includes('helo evil\\x1b]0;owned\\x07\\x1b[2J.test'), r.stdout);
  }
});
