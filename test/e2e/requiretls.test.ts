// REQUIRETLS (RFC 8689) end to end with two Portcullis instances: A relays for contoso.test, B
// receives b.test. REQUIRETLS is advertised only after STARTTLS and refused before it; a message
// sent with it is stored with it, relayed from A to B (a connector at certificateValidation,
// B offering REQUIRETLS) with the parameter passed on. To a next hop that does not offer
// REQUIRETLS, or one no source authenticates (opportunistic), it is never sent: 5.7.30 bounce
// whose DSN carries the headers only and is itself queued with REQUIRETLS. `TLS-Required: No`
// never lowers a connector's forced level and is ignored with REQUIRETLS.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { cleanup, freePort, startGateway, tempDir, type GatewayHandle } from '../helpers/gateway.ts';
import { makePki, type Pki } from '../helpers/pki.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { until } from '../helpers/wait.ts';

const IP = { a: '127.0.0.41', b: '127.0.0.42', noreq: '127.0.0.43', opp: '127.0.0.44', notls: '127.0.0.45' } as const;

let dir: string;
let pki: Pki;
let a: GatewayHandle;
let b: GatewayHandle;
let port: number;
const peers = {} as Record<'noreq' | 'opp' | 'notls', Peer>;

/** Submit to A over STARTTLS; `requireTls` adds the MAIL parameter. Returns A's queue id. */
async function submit(
  from: string,
  to: string,
  subject: string,
  o: { requireTls?: boolean; header?: string } = {},
): Promise<string> {
  const c = await SmtpClient.connect(port, IP.a);
  try {
    await c.hello();
    await c.starttls();
    await c.expect('EHLO client.test', 250);
    await c.expect(`MAIL FROM:<${from}>${o.requireTls ? ' REQUIRETLS' : ''}`, 250);
    await c.expect(`RCPT TO:<${to}>`, 250);
    await c.expect('DATA', 354);
    c.write(
      `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\n${o.header ?? ''}Message-ID: <${subject}@contoso.test>\r\n\r\nsecret body of ${subject}\r\n.\r\n`,
    );
    const r = await c.read();
    assert.equal(r?.code, 250, r?.text);
    return /queued as (\w+)/.exec(r!.text)![1];
  } finally {
    c.close();
  }
}

const mailbox = (g: GatewayHandle, domain: string, local: string) => {
  const d = path.join(g.dataDir, 'mailboxes', domain, local, 'new');
  try {
    return readdirSync(d).map((f) => readFileSync(path.join(d, f), 'utf8'));
  } catch {
    return [];
  }
};
const result = (g: GatewayHandle, id: string) =>
  g.events().find((e) => e.event === 'delivery.result' && e.queueId === id && e.agent === 'smtp');
const transactions = (p: Peer) => p.transcript.filter((l) => /^C: (MAIL|RCPT|DATA)\b/i.test(l));

async function traced(
  g: GatewayHandle,
  args: string[],
): Promise<
  { id: string; envelope: Record<string, unknown>; trace: { kind: string; data: Record<string, unknown> }[] }[]
> {
  const r = await g.cli(['trace', ...args, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

before(async () => {
  dir = tempDir('pc-requiretls-');
  port = await freePort(IP.a);
  pki = await makePki(dir, 'Rtls');
  const bCert = await pki.issue('mx.b.test');
  const peerCert = await pki.issue('mx.peer.test');
  const tlsOf = (c: { chain: string; key: string }) => ({
    cert: readFileSync(c.chain, 'utf8'),
    key: readFileSync(c.key, 'utf8'),
  });
  const noReqExt = ['PIPELINING', 'SIZE 10240000', '8BITMIME', 'ENHANCEDSTATUSCODES', 'DSN'];
  peers.noreq = await startPeer({ host: IP.noreq, port, name: 'mx.peer.test', tls: tlsOf(peerCert) });
  peers.opp = await startPeer({ host: IP.opp, port, name: 'mx.peer.test', tls: tlsOf(peerCert) });
  peers.notls = await startPeer({ host: IP.notls, port, name: 'mx.peer.test', extensions: noReqExt });
  mkdirSync(path.join(dir, 'a'));
  mkdirSync(path.join(dir, 'b'));
  b = await startGateway({
    dir: path.join(dir, 'b'),
    host: IP.b,
    port,
    config: {
      hostname: 'mx.b.test',
      tls: { certificates: [{ cert: bCert.chain, key: bCert.key }] },
      organizations: [
        { name: 'fabrikam', acceptedDomains: [{ domain: 'b.test', type: 'authoritative', recipients: 'any' }] },
      ],
    },
  });
  const smart = (ip: string) => [`${ip}:${port}`];
  a = await startGateway({
    dir: path.join(dir, 'a'),
    host: IP.a,
    port,
    config: {
      hostname: 'mx.a.test',
      delivery: { port, timeouts: { connect: 3, greeting: 10, command: 10 }, destinationDownSeconds: 0 },
      tls: { trust: { system: false, caFiles: [pki.rootFile] } },
      queue: { retrySchedule: [1], messageExpiration: 600, delayWarning: 0 },
      organizations: [
        {
          name: 'contoso',
          acceptedDomains: [{ domain: 'contoso.test', type: 'authoritative', recipients: 'any' }],
          inboundConnectors: [
            { name: 'Local submission', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] },
          ],
          outboundConnectors: [
            {
              name: 'To B',
              recipientDomains: ['b.test'],
              useMXRecord: false,
              smartHosts: smart(IP.b),
              tlsSettings: 'certificateValidation',
            },
            {
              name: 'To Noreq',
              recipientDomains: ['noreq.test'],
              useMXRecord: false,
              smartHosts: smart(IP.noreq),
              tlsSettings: 'domainValidation',
              tlsDomain: 'mx.peer.test',
            },
            {
              name: 'To Opp',
              recipientDomains: ['opp.test'],
              useMXRecord: false,
              smartHosts: smart(IP.opp),
              tlsSettings: 'opportunistic',
            },
            {
              name: 'To Notls',
              recipientDomains: ['notls.test'],
              useMXRecord: false,
              smartHosts: smart(IP.notls),
              tlsSettings: 'certificateValidation',
            },
          ],
        },
      ],
    },
  });
});

after(async () => {
  await cleanup(a);
  await cleanup(b);
  await Promise.all(Object.values(peers).map((p) => p?.close()));
  rmSync(dir, { recursive: true, force: true });
});

test('REQUIRETLS is advertised only after STARTTLS, and refused before it', async () => {
  const c = await SmtpClient.connect(port, IP.b);
  try {
    const plain = await c.hello();
    assert.doesNotMatch(plain.text, /REQUIRETLS/);
    const r = await c.cmd('MAIL FROM:<x@contoso.test> REQUIRETLS');
    assert.equal(r.code, 555, r.text);
    assert.match(r.text, /5\.5\.4 Unsupported parameter: REQUIRETLS/);
    await c.starttls();
    const secured = await c.expect('EHLO client.test', 250);
    assert.match(secured.text, /250[- ]REQUIRETLS/);
    assert.equal((await c.cmd('MAIL FROM:<x@contoso.test> REQUIRETLS=yes')).code, 501);
    assert.equal((await c.cmd('MAIL FROM:<x@contoso.test> REQUIRETLS')).code, 250);
  } finally {
    c.close();
  }
});

test('a REQUIRETLS message goes from A to B over validated TLS with the parameter passed on, and B stores it with the message', async () => {
  const id = await submit('alice@contoso.test', 'bob@b.test', 'rtls-ok', { requireTls: true });
  const [m] = await traced(a, ['--queue-id', id]);
  assert.equal(m.envelope.requireTls, true, 'A stores the parameter with the message');
  await until('delivered at B', () => mailbox(b, 'b.test', 'bob').find((x) => x.includes('rtls-ok')));
  const atB = await traced(b, ['--recipient', 'bob@b.test']);
  const stored = atB.find(
    (x) => x.envelope && (x as unknown as { messageId?: string }).messageId === '<rtls-ok@contoso.test>',
  );
  assert.ok(stored, 'B traced the message');
  assert.equal(stored.envelope.requireTls, true, 'B received MAIL FROM with REQUIRETLS');
  const r = result(a, id);
  assert.equal(r?.status, 'delivered');
});

test('a next hop that does not offer REQUIRETLS: 5.7.30 bounce, no MAIL sent, DSN with headers only, queued with REQUIRETLS', async () => {
  const id = await submit('carol@contoso.test', 'u@noreq.test', 'rtls-noreq', { requireTls: true });
  await until('the verdict', () => result(a, id));
  const r = result(a, id)!;
  assert.equal(r.status, 'failed');
  assert.equal(r.enhanced, '5.7.30');
  assert.equal(r.code, 550);
  assert.equal(r.reason, 'TLS required by REQUIRETLS (RFC 8689): 127.0.0.43 [127.0.0.43] does not offer REQUIRETLS');
  assert.ok(peers.noreq.tlsSessions >= 1, 'the peer was reached over TLS');
  assert.deepEqual(transactions(peers.noreq), [], 'no MAIL/RCPT/DATA at a peer without REQUIRETLS');
  const dsn = await until("the DSN in carol's mailbox", () =>
    mailbox(a, 'contoso.test', 'carol').find((x) => x.includes('rtls-noreq')),
  );
  assert.match(dsn, /Status: 5\.7\.30/);
  assert.match(dsn, /Diagnostic-Code: smtp; 550 5\.7\.30 REQUIRETLS support required/);
  assert.match(dsn, /Content-Type: text\/rfc822-headers/);
  assert.doesNotMatch(dsn, /secret body of rtls-noreq/, 'the body of a REQUIRETLS message never travels in a DSN');
  assert.match(dsn, /sent with REQUIRETLS/);
  const dsns = await traced(a, ['--recipient', 'carol@contoso.test']);
  const queued = dsns.find((x) => x.envelope.requireTls === true);
  assert.ok(queued, 'the DSN itself is queued with REQUIRETLS');
});

test('a next hop no source authenticates (opportunistic): 5.7.30 without connecting', async () => {
  const before = peers.opp.connections;
  const id = await submit('dave@contoso.test', 'u@opp.test', 'rtls-opp', { requireTls: true });
  await until('the verdict', () => result(a, id));
  const r = result(a, id)!;
  assert.equal(r.status, 'failed');
  assert.equal(r.enhanced, '5.7.30');
  assert.match(
    String(r.reason),
    /^TLS required by REQUIRETLS \(RFC 8689\): the next hop is not authenticated by DANE, MTA-STS or a connector at certificateValidation or domainValidation \(opportunistic by default\)$/,
  );
  assert.equal(peers.opp.connections, before, 'never connected');
  // Without REQUIRETLS the same destination takes the message.
  await submit('dave@contoso.test', 'u@opp.test', 'plain-opp');
  await until('delivered without REQUIRETLS', () => peers.opp.messages.find((x) => x.data.includes('plain-opp')));
  assert.ok(
    !peers.opp.transcript.some((l) => /^C: MAIL .*REQUIRETLS/i.test(l)),
    'no REQUIRETLS on a message that did not ask for it',
  );
});

test('TLS-Required: No is ignored with REQUIRETLS (RFC 8689 §4.1)', async () => {
  const id = await submit('erin@contoso.test', 'u@opp.test', 'rtls-header', {
    requireTls: true,
    header: 'TLS-Required: No\r\n',
  });
  await until('the verdict', () => result(a, id));
  assert.equal(result(a, id)!.enhanced, '5.7.30');
  const [m] = await traced(a, ['--queue-id', id]);
  assert.equal(m.envelope.tlsRequiredNo, undefined);
});

test("TLS-Required: No never lowers a connector's forced level; it is recorded and relayed as is", async () => {
  const id = await submit('frank@contoso.test', 'u@notls.test', 'norequired-forced', {
    header: 'TLS-Required: No\r\n',
  });
  await until('the first attempt', () => result(a, id));
  const r = result(a, id)!;
  assert.equal(r.status, 'deferred');
  assert.equal(r.enhanced, '4.7.4');
  assert.deepEqual(transactions(peers.notls), [], 'never sent in plaintext');
  const [m] = await traced(a, ['--queue-id', id]);
  assert.equal(m.envelope.tlsRequiredNo, true);
  const id2 = await submit('frank@contoso.test', 'bob@b.test', 'norequired-b', { header: 'TLS-Required: No\r\n' });
  const got = await until('delivered at B', () => mailbox(b, 'b.test', 'bob').find((x) => x.includes('norequired-b')));
  assert.match(got, /\r\nTLS-Required: No\r\n/);
  assert.equal(result(a, id2)?.status, 'delivered');
});
