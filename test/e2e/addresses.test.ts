// Addresses end to end against the real process: quoted local parts keep their quotes from RCPT to
// the next hop (an internalRelay domain relayed to a loopback peer, which records exactly what it
// receives) and get mailbox folders of their own.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { cleanup, freePort, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';
import { SmtpClient } from '../helpers/smtp.ts';

const PEER = '127.0.0.61';

let gw: GatewayHandle;
let peer: Peer;

before(async () => {
  peer = await startPeer({ host: PEER, port: await freePort(PEER), name: 'onprem.corp.contoso.test' });
  gw = await startGateway({ config: {
    delivery: { destinationDownSeconds: 0, timeouts: { connect: 5, greeting: 10, command: 10 } },
    queue: { retrySchedule: [3600] },
    organizations: [{
      name: 'contoso',
      acceptedDomains: [{ domain: 'contoso.test' }, { domain: 'corp.contoso.test', type: 'internalRelay' }],
      outboundConnectors: [{ name: 'To on-premises', connectorType: 'onPremises', recipientDomains: ['corp.contoso.test'], useMXRecord: false, smartHosts: [`${PEER}:${peer.port}`] }],
    }],
  } });
});

after(async () => {
  await cleanup(gw);
  await peer?.close();
});

async function send(rcpts: string[], body: string): Promise<string> {
  const c = await SmtpClient.connect(gw.port);
  await c.hello();
  await c.expect('MAIL FROM:<"s x"@fabrikam.test>', 250);
  for (const r of rcpts) await c.expect(`RCPT TO:<${r}>`, 250);
  await c.expect('DATA', 354);
  const r = await c.expect(`${body}\r\n.`, 250);
  await c.expect('QUIT', 221);
  return /queued as (\w+)/.exec(r.text)![1];
}

const done = (id: string) => gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id && e.status !== 'deferred', 15_000);

test('quoted local parts reach the next hop exactly as quoted: no injected parameters, no broken paths', async () => {
  const rcpts = ['"x> NOTIFY=NEVER ORCPT=rfc822;y"@corp.contoso.test', '"a b"@corp.contoso.test', '"a>"@corp.contoso.test'];
  const id = await send(rcpts, 'Subject: quoted\r\n\r\nhi');
  await done(id);
  const sent = peer.transcript.filter((l) => /^C: (MAIL|RCPT) /.test(l));
  assert.deepEqual(sent, [
    'C: MAIL FROM:<"s x"@fabrikam.test> SIZE=' + /SIZE=(\d+)/.exec(sent[0])![1],
    ...rcpts.map((r) => `C: RCPT TO:<${r}>`),
  ]);
  const list = JSON.parse((await gw.cli(['queue', 'show', id, '--json'])).stdout) as { recipients: { address: string; status: string }[] };
  assert.deepEqual(list.recipients.map((r) => [r.address, r.status]), rcpts.map((r) => [r, 'delivered']));
});

test('"\\"carol\\""@contoso.test and carol@contoso.test land in different mailboxes', async () => {
  const quoted = '"\\"carol\\""@contoso.test';
  await done(await send([quoted], 'Subject: to "carol"\r\n\r\nhi'));
  await done(await send(['carol@contoso.test'], 'Subject: to carol\r\n\r\nhi'));
  const dir = path.join(gw.dataDir, 'mailboxes', 'contoso.test');
  const file = (box: string) => { const n = readdirSync(path.join(dir, box, 'new')); assert.equal(n.length, 1, box); return readFileSync(path.join(dir, box, 'new', n[0]), 'utf8'); };
  const q = file('%22carol%22');
  assert.match(q, /^Return-Path: <"s x"@fabrikam\.test>\r\nDelivered-To: "\\"carol\\""@contoso\.test\r\n/);
  assert.match(q, /\tfor <"\\"carol\\""@contoso\.test>; /);
  assert.match(q, /Subject: to "carol"/);
  assert.match(file('carol'), /Subject: to carol\r\n/);
});
