// What the SMTP client puts on the wire for an envelope (valid RFC 5321 paths only), and the client
// against a scripted peer: greeting, EHLO/HELO, PIPELINING, reply matching, STARTTLS injection,
// timeouts, protocol errors, dot-stuffing, CHUNKING (BDAT).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  CHUNKED_MAX,
  DeliveryError,
  SmtpConnection,
  dotStuff,
  envelopeCommands,
  type ConnectOptions,
  type Envelope,
} from '../../../src/delivery/smtp-client.ts';
import { issueCertificate } from '../../../src/tls/certgen.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { scriptedPeer } from '../../helpers/scripted-peer.ts';
import { parsePathArg } from '../../../src/inbound/address.ts';
import { formatMailbox } from '../../../src/mailbox.ts';

const EXT = new Map([
  ['PIPELINING', ''],
  ['SIZE', '0'],
  ['8BITMIME', ''],
  ['SMTPUTF8', ''],
  ['DSN', ''],
]);
const env = (from: string, rcpts: Envelope['rcpts'], smtputf8 = false): Envelope => ({
  from,
  rcpts,
  eightBit: false,
  smtputf8,
});
const failure = (f: () => unknown): DeliveryError => {
  try {
    f();
  } catch (e) {
    if (e instanceof DeliveryError) return e;
    throw e;
  }
  throw new Error('expected a DeliveryError');
};

test('quoted local parts go out quoted: no parameter injection, no broken paths', () => {
  const rcpts = [
    '"x> NOTIFY=NEVER ORCPT=rfc822;y"@corp.contoso.test',
    '"a b"@corp.contoso.test',
    '"a>"@corp.contoso.test',
    '"\\"carol\\""@contoso.test',
  ];
  const c = envelopeCommands(
    env(
      '"s x"@fabrikam.test',
      rcpts.map((address) => ({ address })),
    ),
    EXT,
    10,
  );
  assert.equal(c.mail, 'MAIL FROM:<"s x"@fabrikam.test> SIZE=10');
  assert.deepEqual(
    c.rcpts,
    rcpts.map((a) => `RCPT TO:<${a}>`),
  );
});

test('an address that is not a valid path is refused (553, permanent) before anything is sent', () => {
  const e = failure(() =>
    envelopeCommands(
      env('a@b.test', [{ address: 'ok@c.test' }, { address: 'x> NOTIFY=NEVER ORCPT=rfc822;y@corp.contoso.test' }]),
      EXT,
      1,
    ),
  );
  assert.equal(e.kind, 'mail');
  assert.equal(e.reply?.code, 553);
  assert.equal(e.reply?.enhanced, '5.1.3');
  assert.match(e.message, /recipient address is not a valid RFC 5321 path/);
  assert.equal(
    failure(() => envelopeCommands(env('postmaster', [{ address: 'a@c.test' }]), EXT, 1)).reply?.enhanced,
    '5.1.7',
  );
  // UTF-8 only when the message uses SMTPUTF8 and the server offers it.
  assert.ok(failure(() => envelopeCommands(env('a@b.test', [{ address: 'jöran@c.test' }]), EXT, 1)));
  assert.ok(
    failure(() => envelopeCommands(env('a@b.test', [{ address: 'jöran@c.test' }], true), new Map([['SIZE', '0']]), 1)),
  );
  assert.equal(
    envelopeCommands(env('a@b.test', [{ address: 'jöran@c.test' }], true), EXT, 1).mail,
    'MAIL FROM:<a@b.test> SIZE=1 SMTPUTF8',
  );
});

const PRINTABLE = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i));
const local = (utf8: boolean) =>
  fc
    .oneof(
      fc.string({ unit: fc.constantFrom(...PRINTABLE, ...(utf8 ? ['ö', '日', '😀'] : [])), maxLength: 40 }),
      fc.constantFrom(
        'x> NOTIFY=NEVER ORCPT=rfc822;y',
        'a b',
        'a>',
        '"carol"',
        'user@other.test',
        '\\"',
        ' SIZE=1',
        '> RCPT TO:<z@z.test',
      ),
    )
    .filter((l) => Buffer.byteLength(l) <= 64);
const domain = fc.constantFrom('corp.contoso.test', 'Contoso.TEST', '[127.0.0.1]', '[IPv6:::1]', 'bücher.test');

test('property: the RCPT line the client sends parses back to the same address with only our parameters', () => {
  fc.assert(
    fc.property(
      fc
        .boolean()
        .chain((u) =>
          fc.tuple(fc.constant(u), local(u), domain, fc.option(fc.constantFrom('NEVER', 'SUCCESS,FAILURE'))),
        ),
      ([utf8, l, d, notify]) => {
        if (!utf8 && d === 'bücher.test') return;
        const address = formatMailbox(l, d);
        if (Buffer.byteLength(address) > 254) return;
        const c = envelopeCommands(env('', [{ address, ...(notify ? { notify } : {}) }], utf8), EXT, 1);
        assert.equal(c.mail, `MAIL FROM:<> SIZE=1${utf8 ? ' SMTPUTF8' : ''}`);
        const line = c.rcpts[0];
        assert.ok(line.startsWith('RCPT TO:'));
        const back = parsePathArg(line.slice('RCPT TO:'.length), { allowNull: false, utf8Allowed: utf8 });
        if (!back.ok) assert.fail(`${line} refused: ${back.reply.message}`);
        assert.equal(back.mailbox.address, address);
        assert.equal(back.mailbox.local, l);
        assert.deepEqual([...back.params.entries()], notify ? [['NOTIFY', notify]] : []);
      },
    ),
    { numRuns: 3000, seed: 3461 },
  );
});

// ---- the client against a scripted peer ---------------------------------------------------------

const EHLO_OK = '250-mx.fabrikam.test\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250 8BITMIME';
const open = (port: number, o: Partial<ConnectOptions> = {}) =>
  SmtpConnection.open({
    ip: '127.0.0.1',
    port,
    hostname: 'mx.fabrikam.test',
    heloName: 'gw.contoso.test',
    starttls: 'never',
    trust: new TrustStore(false, []),
    timeouts: { connect: 2, greeting: 2, command: 2, dataInit: 2, dataBlock: 2, dataEnd: 2 },
    ...o,
  });
const message = Buffer.from('Subject: t\r\n\r\nhello\r\n');
const envelope = (rcpts: string[]): Envelope => ({
  from: 'a@contoso.test',
  rcpts: rcpts.map((address) => ({ address })),
  eightBit: false,
  smtputf8: false,
});
const rejection = async (p: Promise<unknown>): Promise<DeliveryError> => {
  try {
    await p;
  } catch (e) {
    if (e instanceof DeliveryError) return e;
    throw e;
  }
  throw new Error('expected a DeliveryError');
};

test('PIPELINING: MAIL, every RCPT and DATA go out together; replies are matched in order, multi-line ones joined', async () => {
  const peer = await scriptedPeer([
    [
      { send: '220 mx.fabrikam.test ESMTP' },
      { expect: 'EHLO gw.contoso.test', reply: EHLO_OK },
      // Nothing is answered before all four lines arrived: a client waiting for the MAIL reply would stall.
      {
        expect: [
          'MAIL FROM:<a@contoso.test> SIZE=21',
          'RCPT TO:<b@fabrikam.test>',
          'RCPT TO:<c@fabrikam.test>',
          'DATA',
        ],
        reply: ['250 2.1.0 ok', '250 2.1.5 ok', '550-5.1.1 no such user\r\n550 5.1.1 here either', '354 go'],
      },
      { data: 'Subject: t\r\n\r\nhello', reply: '250 2.0.0 queued as 42' },
    ],
  ]);
  try {
    const c = await open(peer.port);
    assert.deepEqual([...c.extensions.keys()], ['PIPELINING', 'SIZE', '8BITMIME']);
    assert.equal(c.extensions.get('SIZE'), '1000000');
    const r = await c.send(envelope(['b@fabrikam.test', 'c@fabrikam.test']), message);
    assert.equal(r.mail.code, 250);
    assert.deepEqual(
      r.rcpts.map((x) => [x.code, x.enhanced, x.text]),
      [
        [250, '2.1.5', 'ok'],
        [550, '5.1.1', 'no such user here either'],
      ],
    );
    assert.deepEqual(r.rcpts[1].lines, ['5.1.1 no such user', '5.1.1 here either']);
    assert.equal(r.data?.code, 250);
    assert.equal(r.data?.text, 'queued as 42');
    await peer.done;
    c.close();
  } finally {
    await peer.close();
  }
});

test('without PIPELINING each command waits for its reply; EHLO refused with 502 falls back to HELO', async () => {
  const peer = await scriptedPeer([
    [
      { send: '220 old.fabrikam.test' },
      { expect: 'EHLO gw.contoso.test', reply: '502 5.5.2 what?' },
      { expect: 'HELO gw.contoso.test', reply: '250 old.fabrikam.test' },
      { expect: 'MAIL FROM:<a@contoso.test>', reply: '250 ok' },
      { expect: 'RCPT TO:<b@fabrikam.test>', reply: '250 ok' },
      { expect: 'DATA', reply: '354 go' },
      { data: true, reply: '250 ok' },
    ],
  ]);
  try {
    const c = await open(peer.port);
    assert.equal(c.extensions.size, 0);
    const r = await c.send(envelope(['b@fabrikam.test']), message);
    assert.equal(r.data?.code, 250);
    await peer.done;
    c.close();
  } finally {
    await peer.close();
  }
});

test('a 554 to EHLO is a refusal, not a reason to try HELO; a 554 greeting fails before EHLO', async () => {
  const peer = await scriptedPeer([
    [{ send: '220 x' }, { expect: 'EHLO gw.contoso.test', reply: '554 5.7.1 go away' }],
    [{ send: '554 5.7.1 no service for you' }],
  ]);
  try {
    const e = await rejection(open(peer.port));
    assert.equal(e.kind, 'ehlo');
    assert.equal(e.reply?.code, 554);
    const g = await rejection(open(peer.port));
    assert.equal(g.kind, 'greeting');
    assert.equal(g.reply?.enhanced, '5.7.1');
    await peer.done;
  } finally {
    await peer.close();
  }
});

test('bytes injected after the 220 to STARTTLS are discarded; EHLO is sent again over TLS (RFC 3207 §4.2)', async () => {
  const issued = await issueCertificate({
    subject: 'CN=mx.fabrikam.test',
    dnsNames: ['mx.fabrikam.test'],
    key: 'ec256',
  });
  const peer = await scriptedPeer([
    [
      { send: '220 mx.fabrikam.test' },
      { expect: 'EHLO gw.contoso.test', reply: '250-mx.fabrikam.test\r\n250 STARTTLS' },
      { expect: 'STARTTLS', reply: '220 2.0.0 go ahead\r\n250-mx.fabrikam.test\r\n250 INJECTED' },
      { tls: { cert: issued.certPem, key: issued.keyPem } },
      { expect: 'EHLO gw.contoso.test', reply: '250-mx.fabrikam.test\r\n250 SIZE 1000' },
    ],
  ]);
  try {
    const c = await open(peer.port, { starttls: 'require' });
    assert.ok(c.tls, 'TLS established');
    assert.equal(c.tls.chainValid, false, 'a self-signed certificate is not trusted');
    assert.deepEqual([...c.extensions.keys()], ['SIZE'], 'the injected reply was not taken for the EHLO reply');
    await peer.done;
    c.close();
  } finally {
    await peer.close();
  }
});

test('every wait has a timeout: greeting, and a command whose reply never comes', async () => {
  const peer = await scriptedPeer([
    [{ wait: 1500 }],
    [
      { send: '220 x' },
      { expect: 'EHLO gw.contoso.test', reply: '250 x' },
      { expect: 'MAIL FROM:<a@contoso.test>' },
      { wait: 1500 },
    ],
  ]);
  try {
    const t0 = Date.now();
    const g = await rejection(open(peer.port, { timeouts: { greeting: 0.3 } }));
    assert.equal(g.kind, 'timeout');
    assert.match(g.message, /timeout after 0\.3s waiting for the reply to greeting/);
    assert.ok(Date.now() - t0 < 1200);
    const c = await open(peer.port, { timeouts: { command: 0.3 } });
    const m = await rejection(c.send(envelope(['b@fabrikam.test']), message));
    assert.equal(m.kind, 'timeout');
    assert.match(m.message, /reply to MAIL/);
    await peer.done;
  } finally {
    await peer.close();
  }
});

test('protocol errors: a line that is no reply, mixed codes in one reply, a reply nobody asked for', async () => {
  const peer = await scriptedPeer([
    [{ send: 'hello there' }],
    [{ send: '220-x\r\n221 y' }],
    [{ send: '220 x' }, { expect: 'EHLO gw.contoso.test', reply: ['250 x', '250 and more'] }, { expect: /.*/ }],
  ]);
  try {
    assert.match((await rejection(open(peer.port))).message, /unexpected reply line "hello there"/);
    assert.match((await rejection(open(peer.port))).message, /reply lines with different codes/);
    const c = await open(peer.port);
    await new Promise((r) => setTimeout(r, 100));
    const e = await rejection(c.send(envelope(['b@fabrikam.test']), message));
    assert.equal(e.kind, 'protocol');
    assert.match(e.message, /unsolicited reply 250/);
  } finally {
    await peer.close();
  }
});

test('DATA answered with a success other than 354 is a protocol error, never a reply to the message', async () => {
  const peer = await scriptedPeer([
    [
      { send: '220 x' },
      { expect: 'EHLO gw.contoso.test', reply: EHLO_OK },
      {
        expect: [/^MAIL FROM:/, 'RCPT TO:<b@fabrikam.test>', 'DATA'],
        reply: ['250 ok', '250 ok', '250 fine, no data needed'],
      },
    ],
  ]);
  try {
    const c = await open(peer.port);
    const e = await rejection(c.send(envelope(['b@fabrikam.test']), message));
    assert.equal(e.kind, 'protocol');
    assert.match(e.message, /250 in reply to DATA/);
  } finally {
    await peer.close();
  }
});

test('dot-stuffing (RFC 5321 §4.5.2): leading dots doubled, CRLF added before the terminator when missing', async () => {
  const raw = Buffer.from('.first\r\nmiddle\r\n..two\r\n.\r\nlast');
  const peer = await scriptedPeer([
    [
      { send: '220 x' },
      { expect: 'EHLO gw.contoso.test', reply: EHLO_OK },
      { expect: [/^MAIL FROM:/, 'RCPT TO:<b@fabrikam.test>', 'DATA'], reply: ['250 ok', '250 ok', '354 go'] },
      { data: '..first\r\nmiddle\r\n...two\r\n..\r\nlast', reply: '250 ok' },
    ],
  ]);
  try {
    const c = await open(peer.port);
    assert.equal((await c.send(envelope(['b@fabrikam.test']), raw)).data?.code, 250);
    await peer.done;
    c.close();
  } finally {
    await peer.close();
  }
  assert.equal(Buffer.concat(dotStuff(Buffer.from('a\r\n'))).toString(), 'a\r\n.\r\n');
  assert.equal(Buffer.concat(dotStuff(Buffer.from(''))).toString(), '\r\n.\r\n');
});

// ---- CHUNKING (RFC 3030): BDAT in the same flight as MAIL and RCPT ------------------------------

const EHLO_CHUNKING = `${EHLO_OK.replace('250 8BITMIME', '250-8BITMIME')}\r\n250 CHUNKING`;

test('CHUNKING with PIPELINING: MAIL, every RCPT and BDAT LAST with the message go out in one flight, as stored', async () => {
  // Lines that DATA would dot-stuff go as they are; a missing final CRLF is added and counted.
  const raw = Buffer.from('Subject: t\r\n\r\n.first\r\n.\r\nlast');
  const peer = await scriptedPeer([
    [
      { send: '220 x' },
      { expect: 'EHLO gw.contoso.test', reply: EHLO_CHUNKING },
      // Nothing is answered before the whole chunk arrived: a client waiting for a reply would stall.
      {
        expect: [
          `MAIL FROM:<a@contoso.test> SIZE=${raw.length}`,
          'RCPT TO:<b@fabrikam.test>',
          'RCPT TO:<c@fabrikam.test>',
        ],
      },
      {
        bdat: 'Subject: t\r\n\r\n.first\r\n.\r\nlast\r\n',
        reply: ['250 2.1.0 ok', '250 2.1.5 ok', '550 5.1.1 no such user', '250 2.0.0 queued as 7'],
      },
      // The connection stays usable: the next message on it.
      { expect: [/^MAIL FROM:/, 'RCPT TO:<b@fabrikam.test>'] },
      { bdat: message.toString(), reply: ['250 ok', '250 ok', '250 2.0.0 queued as 8'] },
    ],
  ]);
  try {
    const c = await open(peer.port);
    const r = await c.send(envelope(['b@fabrikam.test', 'c@fabrikam.test']), raw);
    assert.equal(r.chunked, true);
    assert.deepEqual(
      r.rcpts.map((x) => x.code),
      [250, 550],
    );
    assert.equal(r.data?.code, 250);
    assert.equal(r.data?.text, 'queued as 7');
    assert.equal((await c.send(envelope(['b@fabrikam.test']), message)).data?.text, 'queued as 8');
    await peer.done;
    c.close();
  } finally {
    await peer.close();
  }
});

test('BDAT: every recipient refused, or the chunk refused: the refusals are the result, then RSET', async () => {
  const peer = await scriptedPeer([
    [
      { send: '220 x' },
      { expect: 'EHLO gw.contoso.test', reply: EHLO_CHUNKING },
      { expect: [/^MAIL FROM:/, 'RCPT TO:<b@fabrikam.test>'] },
      { bdat: true, reply: ['250 ok', '550 5.1.1 no such user', '554 5.5.1 no valid recipients'] },
      { expect: 'RSET', reply: '250 ok' },
      { expect: [/^MAIL FROM:/, 'RCPT TO:<b@fabrikam.test>'] },
      { bdat: true, reply: ['250 ok', '250 ok', '552 5.3.4 message too big for this mailbox'] },
      { expect: 'RSET', reply: '250 ok' },
      { expect: [/^MAIL FROM:/, 'RCPT TO:<b@fabrikam.test>'] },
      { bdat: true, reply: ['451 4.3.0 try later', '503 5.5.1 no MAIL', '503 5.5.1 no MAIL'] },
      { expect: 'RSET', reply: '250 ok' },
    ],
  ]);
  try {
    const c = await open(peer.port);
    const none = await c.send(envelope(['b@fabrikam.test']), message);
    assert.equal(none.rcpts[0].code, 550);
    assert.equal(none.data, undefined, 'no verdict on data nobody was to receive');
    const big = await c.send(envelope(['b@fabrikam.test']), message);
    assert.equal(big.data?.code, 552);
    assert.equal(big.chunked, true);
    const mail = await c.send(envelope(['b@fabrikam.test']), message);
    assert.equal(mail.mail.code, 451);
    assert.deepEqual(
      mail.rcpts.map((x) => x.code),
      [451],
      'a refused MAIL answers for every recipient',
    );
    await peer.done;
    c.close();
  } finally {
    await peer.close();
  }
});

test('BDAT answered 3xx is a protocol error; a message over CHUNKED_MAX, or a server without PIPELINING, gets DATA', async () => {
  const large = Buffer.alloc(CHUNKED_MAX + 1, 0x61);
  large.write('Subject: big\r\n\r\n');
  const peer = await scriptedPeer([
    [
      { send: '220 x' },
      { expect: 'EHLO gw.contoso.test', reply: EHLO_CHUNKING },
      { expect: [/^MAIL FROM:/, 'RCPT TO:<b@fabrikam.test>'] },
      { bdat: true, reply: ['250 ok', '250 ok', '354 go on'] },
    ],
    [
      { send: '220 x' },
      { expect: 'EHLO gw.contoso.test', reply: EHLO_CHUNKING },
      { expect: [/^MAIL FROM:/, 'RCPT TO:<b@fabrikam.test>', 'DATA'], reply: ['250 ok', '250 ok', '354 go'] },
      { data: true, reply: '250 ok' },
    ],
    [
      { send: '220 x' },
      { expect: 'EHLO gw.contoso.test', reply: '250-mx.fabrikam.test\r\n250 CHUNKING' },
      { expect: /^MAIL FROM:/, reply: '250 ok' },
      { expect: 'RCPT TO:<b@fabrikam.test>', reply: '250 ok' },
      { expect: 'DATA', reply: '354 go' },
      { data: true, reply: '250 ok' },
    ],
  ]);
  try {
    const c = await open(peer.port);
    const e = await rejection(c.send(envelope(['b@fabrikam.test']), message));
    assert.equal(e.kind, 'protocol');
    assert.match(e.message, /354 in reply to BDAT/);
    const d = await open(peer.port);
    const r = await d.send(envelope(['b@fabrikam.test']), large);
    assert.equal(r.data?.code, 250);
    assert.equal(r.chunked, undefined);
    d.close();
    const old = await open(peer.port);
    assert.equal((await old.send(envelope(['b@fabrikam.test']), message)).chunked, undefined);
    old.close();
    await peer.done;
  } finally {
    await peer.close();
  }
});

test('BDAT: the peer closing mid-flight, or never answering the chunk, is a DeliveryError, never a verdict', async () => {
  const peer = await scriptedPeer([
    [
      { send: '220 x' },
      { expect: 'EHLO gw.contoso.test', reply: EHLO_CHUNKING },
      { expect: [/^MAIL FROM:/, 'RCPT TO:<b@fabrikam.test>'] },
      { close: true },
    ],
    [
      { send: '220 x' },
      { expect: 'EHLO gw.contoso.test', reply: EHLO_CHUNKING },
      { expect: [/^MAIL FROM:/, 'RCPT TO:<b@fabrikam.test>'] },
      // MAIL and RCPT answered, the chunk read, its verdict never sent.
      { bdat: true, reply: ['250 ok', '250 ok'] },
      { wait: 3000 },
    ],
  ]);
  try {
    const c = await open(peer.port);
    const closed = await rejection(c.send(envelope(['b@fabrikam.test']), message));
    assert.equal(closed.kind, 'closed');
    const d = await open(peer.port);
    const silent = await rejection(d.send(envelope(['b@fabrikam.test']), message));
    assert.equal(silent.kind, 'timeout');
    assert.match(silent.message, /waiting for the reply to BDAT/);
    d.close();
  } finally {
    await peer.close();
  }
});

test('the scripted peer fails the test on an unexpected command', async () => {
  const peer = await scriptedPeer([[{ send: '220 x' }, { expect: 'HELO gw.contoso.test', reply: '250 x' }]]);
  try {
    await rejection(open(peer.port));
    await assert.rejects(peer.done, /expected HELO gw\.contoso\.test, the client sent "EHLO gw\.contoso\.test"/);
  } finally {
    await peer.close();
  }
});

// RFC 5321 §4.5.3.2.4-6: DATA initiation (the 354) 2 minutes, each data block 3 minutes (no
// progress for that long), DATA termination 10 minutes from the final dot. Scaled down here.
const big = (mib: number) => Buffer.from(`Subject: big\r\n\r\n${`${'x'.repeat(1022)}\r\n`.repeat(mib * 1024)}`);
test('a slow link sending a large message does not time out while it makes progress; DATA termination starts after the final dot', async () => {
  const msg = big(24);
  const peer = await scriptedPeer([
    [
      { send: '220 x' },
      { expect: 'EHLO gw.contoso.test', reply: EHLO_OK.replace('SIZE 1000000', 'SIZE 100000000') },
      { expect: [/^MAIL FROM:<a@contoso\.test>/, /^RCPT TO:/, 'DATA'], reply: ['250 ok', '250 ok', '354 go'] },
      { data: true, reply: '250 2.0.0 queued', pace: 20 },
    ],
  ]);
  try {
    // 24 MiB read 64 KiB at a time with a 20 ms pause after each: at least 7.7 s in all. The
    // kernel buffers still hold a few MB when the final dot is sent; dataEnd covers reading them.
    const c = await open(peer.port, { timeouts: { dataBlock: 1, dataEnd: 4 } });
    const t0 = Date.now();
    const r = await c.send(envelope(['b@fabrikam.test']), msg);
    const took = Date.now() - t0;
    assert.equal(r.data?.code, 250);
    assert.ok(
      took > 5000,
      `the transfer took ${took} ms: longer than dataEnd and dataBlock together, so the test shows what it claims`,
    );
    await peer.done;
  } finally {
    await peer.close();
  }
});

test('no progress writing message data for dataBlock seconds is a timeout (RFC 5321 §4.5.3.2.5)', async () => {
  const peer = await scriptedPeer([
    [
      { send: '220 x' },
      { expect: 'EHLO gw.contoso.test', reply: EHLO_OK.replace('SIZE 1000000', 'SIZE 100000000') },
      { expect: [/^MAIL FROM:<a@contoso\.test>/, /^RCPT TO:/, 'DATA'], reply: ['250 ok', '250 ok', '354 go'] },
      { data: true, reply: '250 2.0.0 queued', pace: 5000 },
    ],
  ]);
  try {
    const c = await open(peer.port, { timeouts: { dataBlock: 0.5, dataEnd: 30 } });
    const t0 = Date.now();
    const e = await rejection(c.send(envelope(['b@fabrikam.test']), big(24)));
    assert.equal(e.kind, 'timeout');
    assert.match(e.message, /no progress for 0\.5s sending the message data to mx\.fabrikam\.test \[127\.0\.0\.1\]/);
    assert.ok(Date.now() - t0 < 5000, 'well before the 30 s of dataEnd');
  } finally {
    await peer.close();
  }
});

test('the wait for 354 is DATA initiation (dataInit), the wait after the final dot is dataEnd', async () => {
  const peer = await scriptedPeer([
    [
      { send: '220 x' },
      { expect: 'EHLO gw.contoso.test', reply: EHLO_OK },
      { expect: [/^MAIL FROM:/, /^RCPT TO:/, 'DATA'], reply: ['250 ok', '250 ok'] },
      { wait: 1500 },
    ],
    [
      { send: '220 x' },
      { expect: 'EHLO gw.contoso.test', reply: EHLO_OK },
      { expect: [/^MAIL FROM:/, /^RCPT TO:/, 'DATA'], reply: ['250 ok', '250 ok', '354 go'] },
      { data: true },
      { wait: 800 },
      { send: '250 late' },
    ],
  ]);
  try {
    const c = await open(peer.port, { timeouts: { dataInit: 0.3, dataBlock: 5, dataEnd: 5 } });
    const e = await rejection(c.send(envelope(['b@fabrikam.test']), message));
    assert.equal(e.kind, 'timeout');
    assert.match(e.message, /timeout after 0\.3s waiting for the reply to DATA/);
    const c2 = await open(peer.port, { timeouts: { dataInit: 0.3, dataBlock: 0.3, dataEnd: 5 } });
    assert.equal(
      (await c2.send(envelope(['b@fabrikam.test']), message)).data?.code,
      250,
      'dataBlock does not bound the wait for the final reply',
    );
    await peer.done;
  } finally {
    await peer.close();
  }
});

test('REQUIRETLS goes on MAIL FROM only when the envelope asks for it and the server offers it (RFC 8689 §4.2.1)', () => {
  const e = { ...env('a@b.test', [{ address: 'c@d.test' }]), requireTls: true };
  assert.equal(
    envelopeCommands(e, new Map([...EXT, ['REQUIRETLS', '']]), 1).mail,
    'MAIL FROM:<a@b.test> SIZE=1 REQUIRETLS',
  );
  assert.equal(envelopeCommands(e, EXT, 1).mail, 'MAIL FROM:<a@b.test> SIZE=1');
  assert.equal(
    envelopeCommands(env('a@b.test', [{ address: 'c@d.test' }]), new Map([...EXT, ['REQUIRETLS', '']]), 1).mail,
    'MAIL FROM:<a@b.test> SIZE=1',
  );
});
