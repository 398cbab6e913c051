// SMTP smuggling (RFC 5321 §4.1.4 end-of-data) against the real process over loopback.
// Only the octets CR LF "." CR LF end DATA. Every fake end-of-data sequence from the published
// scanner lists (SEC Consult's smtp-smuggling-scanner / smtp_analysis_scanner, Postfix's and
// Sendmail's advisories) plus a systematic grid of bare-CR/bare-LF combinations is sent with a
// smuggled second transaction behind it. In the default mode (bareLineEndings: normalize) the
// whole thing must be ONE message (one 250, no replies to the smuggled commands), stored with
// CRLF line endings only and with exactly the content an independent reference decoder predicts.
// In reject mode every message with a bare CR or LF gets 550 5.6.0; NUL always gets 554 5.6.0.
// A control case with the real terminator proves the harness does detect a second transaction.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { cleanup, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { SmtpClient, type Reply } from '../helpers/smtp.ts';

// ---------------------------------------------------------------------------------------------
// Variants

interface Variant {
  seq: string;
  source: string;
}

const PUBLISHED: Variant[] = [
  // SEC Consult, "SMTP Smuggling - Spoofing E-Mails Worldwide" (2023), smtp_smuggling_scanner.py
  // inbound_eod_sequences / outbound_eod_sequences and smtp_analysis_scanner.py eod_sequences.
  { seq: '\n.\n', source: 'SEC Consult scanner (inbound, outbound, analysis)' },
  { seq: '\n.\r', source: 'SEC Consult scanner (inbound, outbound, analysis)' },
  { seq: '\r.\n', source: 'SEC Consult scanner (inbound, outbound, analysis)' },
  { seq: '\r.\r', source: 'SEC Consult scanner (inbound, outbound, analysis)' },
  { seq: '\n.\r\n', source: 'SEC Consult scanner (inbound, outbound, analysis)' },
  { seq: '\r.\r\n', source: 'SEC Consult scanner (inbound, outbound, analysis)' },
  { seq: '\r\n.\n', source: 'SEC Consult analysis scanner; Postfix advisory (<CR><LF>.<LF>)' },
  { seq: '\r\n.\r', source: 'SEC Consult analysis scanner; Sendmail' },
  { seq: '\r\n.\r\r\n', source: 'SEC Consult outbound scanner' },
  { seq: '\r\r\n.\r\r\n', source: 'SEC Consult outbound scanner' },
  { seq: '\r\n\x00.\r\n', source: 'SEC Consult scanner (inbound, outbound, analysis): NUL before the dot' },
  { seq: '\r\n.\x00\r\n', source: 'SEC Consult analysis scanner: NUL after the dot' },
  { seq: '.\n', source: 'dot + bare LF right after text' },
  { seq: '.\r', source: 'dot + bare CR right after text' },
  { seq: '\n\n.\n\n', source: 'bare-LF only mailers' },
  { seq: '\r\r.\r\r', source: 'bare-CR only mailers' },
  { seq: '\n..\n', source: 'dot-stuffed fake terminator after bare LF' },
  { seq: '\r\n. \r\n', source: 'dot + trailing space (whitespace-trimming parsers)' },
  { seq: '\r\n.\t\r\n', source: 'dot + trailing tab (whitespace-trimming parsers)' },
  { seq: '\n. \n', source: 'dot + space + bare LF' },
];

// Systematic grid: <pre> "." <post> over bare and mixed line endings.
const PRE = ['', '\r', '\n', '\r\n', '\r\r\n', '\n\r'];
const POST = ['\r', '\n', '\r\n', '\r\r\n', '\n\r'];

function allVariants(): Variant[] {
  const seen = new Set<string>();
  const out: Variant[] = [];
  const add = (v: Variant) => {
    if (!seen.has(v.seq)) {
      seen.add(v.seq);
      out.push(v);
    }
  };
  PUBLISHED.forEach(add);
  for (const p of PRE) for (const q of POST) add({ seq: `${p}.${q}`, source: 'grid <pre>.<post>' });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Independent reference (the test's own reading of RFC 5321 §4.1.1.4 / §4.5.2)

/** Offset of the "." of the first real end-of-data (CR LF "." CR LF, or "." CR LF at the start), or -1. */
function realTerminator(data: string): number {
  if (data.startsWith('.\r\n')) return 0;
  const i = data.indexOf('\r\n.\r\n');
  return i < 0 ? -1 : i + 2;
}

/** A CR not followed by LF or an LF not preceded by CR. */
const hasBare = (s: string) => /\r(?!\n)|(?<!\r)\n/.test(s);

/**
 * What must be stored for `content` (the message text up to and including the CRLF before the
 * final "."): every line ending (CRLF, bare CR, bare LF) becomes CRLF; a leading "." is removed
 * from lines that have more than the dot (§4.5.2). A line of only "." can be content here only
 * because a bare CR/LF framed it; it is kept as "." rather than treated as an end of data.
 */
function normalise(content: string): string {
  const lines = content.split(/\r\n|\r|\n/);
  assert.equal(lines.pop(), '', 'content ends with a line ending');
  return lines.map((l) => (l.length > 1 && l.startsWith('.') ? l.slice(1) : l)).join('\r\n') + '\r\n';
}

const SMUGGLED =
  'MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@contoso.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n';

type Framing = 'raw' | 'scanner';
/** raw: "before" + V + "MAIL FROM..."; scanner: as the SEC Consult tool sends it, V between CRLFs. */
function payloadFor(seq: string, framing: Framing): string {
  return framing === 'raw'
    ? `Subject: v\r\n\r\nbefore${seq}${SMUGGLED}`
    : `Subject: v\r\n\r\nbefore\r\n${seq}\r\n${SMUGGLED}`;
}

// ---------------------------------------------------------------------------------------------
// Helpers

function mailbox(gw: GatewayHandle, local: string): string {
  return path.join(gw.dataDir, 'mailboxes/contoso.test', local);
}

function mailFiles(dir: string): string[] {
  try {
    return readdirSync(path.join(dir, 'new')).map((f) => path.join(dir, 'new', f));
  } catch {
    return [];
  }
}

async function waitForMail(dir: string, n = 1, timeoutMs = 10_000): Promise<string[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const files = mailFiles(dir);
    if (files.length >= n || Date.now() > until) return files;
    await new Promise((r) => setTimeout(r, 25));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Outcome {
  final: Reply;
  after: string;
}

/**
 * One transaction whose DATA is `payload` (sent raw, nothing stuffed or appended). Returns the
 * reply to the data and every byte the server sent after it, up to and including the reply to
 * a NOOP sent afterwards (so replies to smuggled commands cannot go unnoticed).
 */
async function transact(
  port: number,
  rcpt: string,
  payload: string,
  how: 'stepwise' | 'oneWrite' | 'bytewise' = 'stepwise',
): Promise<Outcome> {
  const c = await SmtpClient.connect(port);
  try {
    await c.hello();
    if (how === 'oneWrite') {
      c.write(`MAIL FROM:<sender@fabrikam.test>\r\nRCPT TO:<${rcpt}@contoso.test>\r\nDATA\r\n${payload}`);
      for (const [code, text] of [
        [250, '250 2.1.0 Sender OK'],
        [250, '250 2.1.5 Recipient OK'],
        [354, '354 2.0.0 '],
      ] as const) {
        const r = await c.read(5000);
        assert.ok(r && r.code === code && r.text.startsWith(text), `pipelined reply: expected ${text}, got ${r?.text}`);
      }
    } else {
      await c.expect('MAIL FROM:<sender@fabrikam.test>', 250);
      await c.expect(`RCPT TO:<${rcpt}@contoso.test>`, 250);
      await c.expect('DATA', 354);
      if (how === 'stepwise') c.write(payload);
      else {
        c.sock.setNoDelay(true);
        const bytes = Buffer.from(payload, 'latin1');
        for (let i = 0; i < bytes.length; i++) {
          c.write(bytes.subarray(i, i + 1));
          await sleep(1);
        }
      }
    }
    const final = await c.read(5000);
    assert.ok(final, 'connection closed instead of a reply to the data');
    // Everything after the (first, legitimate) 354 line is the server's answer to the data.
    const i354 = c.received.indexOf('\r\n354 ');
    assert.ok(i354 > 0);
    const mark = c.received.indexOf('\r\n', i354 + 2) + 2;
    await sleep(30);
    c.write('NOOP\r\n');
    let noop: Reply | null;
    try {
      noop = await c.read(3000);
    } catch {
      noop = null;
    }
    const after = c.received.slice(mark);
    assert.ok(
      noop,
      `no reply to NOOP after the data (a smuggled DATA swallowed it?); server sent ${JSON.stringify(after)}`,
    );
    assert.equal(c.unread, 0, `unexpected extra replies: ${JSON.stringify(after)}`);
    c.write('QUIT\r\n');
    await c.read(3000).catch(() => null);
    return { final, after };
  } finally {
    c.close();
  }
}

/** Assert: exactly one message for `local`, equal to the reference decoding of `content`, CRLF only. */
async function assertStored(gw: GatewayHandle, local: string, content: string): Promise<void> {
  const files = await waitForMail(mailbox(gw, local));
  assert.equal(files.length, 1, `exactly one message in ${local}'s Maildir`);
  await sleep(20);
  assert.equal(mailFiles(mailbox(gw, local)).length, 1, `still exactly one message in ${local}'s Maildir`);
  const msg = readFileSync(files[0], 'latin1');
  assert.doesNotMatch(msg.replace(/\r\n/g, ''), /[\r\n]/, 'no bare CR or LF in the stored message');
  assert.match(
    msg,
    new RegExp(
      `^Return-Path: <sender@fabrikam\\.test>\\r\\nDelivered-To: ${local}@contoso\\.test\\r\\nReceived: from client\\.test `,
    ),
  );
  const expected = normalise(content);
  assert.ok(
    msg.endsWith(expected),
    `stored data differs from the reference decoding:\n  stored   ${JSON.stringify(msg.slice(msg.indexOf('Subject: v')))}\n  expected ${JSON.stringify(expected)}`,
  );
  assert.equal(
    msg.indexOf('Subject: v\r\n'),
    msg.length - expected.length,
    'data starts right after the trace headers',
  );
}

const QUEUED = /^250 2\.0\.0 OK queued as [0-9A-Z]+$/;

function variantName(v: Variant): string {
  return `${JSON.stringify(v.seq)} (${v.source})`;
}

// ---------------------------------------------------------------------------------------------

let gwN: GatewayHandle; // bareLineEndings: normalize (default)
let gwR: GatewayHandle; // bareLineEndings: reject
/** "<mode>/<local part>" of every message that must (delivered) or must not (refused) arrive. */
const delivered = new Set<string>();
const refused = new Set<string>();

before(async () => {
  // The decoder's contract is tested on its own: with smtp.forbidUnauthPipelining (on by default)
  // a smuggled transaction — DATA and its content in one write — would already be refused with
  // 554 5.5.0 at its DATA (test/e2e/pipelining.test.ts), and so would the "oneWrite" shapes here.
  [gwN, gwR] = await Promise.all([
    startGateway({ config: { smtp: { forbidUnauthPipelining: false } } }),
    startGateway({ config: { smtp: { bareLineEndings: 'reject', forbidUnauthPipelining: false } } }),
  ]);
});
after(async () => {
  await Promise.all([cleanup(gwN), cleanup(gwR)]);
});

const VARIANTS = allVariants();

test('the variant list is what the test claims (reference sanity)', () => {
  assert.ok(VARIANTS.length >= 35, `${VARIANTS.length} variants`);
  for (const v of PUBLISHED) assert.ok(VARIANTS.some((x) => x.seq === v.seq));
  // The reference terminator finder does find the real one, and only it.
  assert.equal(realTerminator('a\r\n.\r\n'), 3);
  assert.equal(realTerminator('.\r\n'), 0);
  assert.equal(realTerminator('a\n.\r\nb\r\n.\n'), -1);
  assert.equal(normalise('a\r\n..b\r\n.\n.\r\n x\r\r\n'), 'a\r\n.b\r\n.\r\n.\r\n x\r\n\r\n');
});

for (const mode of ['normalize', 'reject'] as const) {
  for (const framing of ['raw', 'scanner'] as const) {
    describe(`${mode} mode, ${framing} framing`, { concurrency: 8 }, () => {
      VARIANTS.forEach((v, i) => {
        const payload = payloadFor(v.seq, framing);
        const end = realTerminator(payload);
        // In some framings a grid entry forms the real CRLF.CRLF (e.g. "\r\n" + ".\r\n"): that
        // is a legitimate end of data, not smuggling; the control test covers that shape.
        if (end !== payload.length - 3) return;
        const local = `${mode[0]}-${framing}-${String(i).padStart(2, '0')}`;
        const content = payload.slice(0, end);
        const nul = content.includes('\x00');
        const bare = hasBare(content);
        const expectCode = nul ? '554 5.6.0' : mode === 'reject' && bare ? '550 5.6.0' : null;
        test(`${variantName(v)} -> ${expectCode ?? 'one message'} [${local}]`, async () => {
          const gw = mode === 'normalize' ? gwN : gwR;
          const { final, after } = await transact(gw.port, local, payload);
          if (expectCode) {
            assert.ok(final.text.startsWith(`${expectCode} `), `expected ${expectCode}, got ${final.text}`);
            refused.add(`${mode}/${local}`);
          } else {
            assert.match(final.text, QUEUED);
            delivered.add(`${mode}/${local}`);
          }
          assert.equal(
            after,
            `${final.text}\r\n250 2.0.0 OK\r\n`,
            'exactly one reply to the whole data, then the NOOP reply',
          );
          if (!expectCode) await assertStored(gw, local, content);
        });
      });
    });
  }
}

describe('delivery shapes', { concurrency: 4 }, () => {
  // Whole transaction in one write (PIPELINING), and byte-by-byte (every chunk boundary).
  const picks = ['\n.\n', '\r\n.\n', '\r.\r\n', '\n.\r\n', '\r\n.\r\r\n', '\r\r\n.\r\r\n', '\r\n.\r', '\r\n\x00.\r\n'];
  picks.forEach((seq, i) => {
    for (const how of ['oneWrite', 'bytewise'] as const) {
      const local = `shape-${how.toLowerCase()}-${i}`; // Maildir folders are lower-case
      test(`${JSON.stringify(seq)} sent ${how}`, async () => {
        const payload = payloadFor(seq, 'raw');
        const { final, after } = await transact(gwN.port, local, payload, how);
        assert.equal(
          after,
          `${final.text}\r\n250 2.0.0 OK\r\n`,
          'exactly one reply to the whole data, then the NOOP reply',
        );
        if (seq.includes('\x00')) {
          assert.match(final.text, /^554 5\.6\.0 /);
          refused.add(`normalize/${local}`);
        } else {
          assert.match(final.text, QUEUED);
          delivered.add(`normalize/${local}`);
          await assertStored(gwN, local, payload.slice(0, -3));
        }
      });
    }
  });
});

test('control: after the REAL terminator the next transaction is processed (the harness detects smuggling)', async () => {
  const smuggled = SMUGGLED.replace('victim@', 'victim-control@').replace('evil@', 'control-sender@');
  const payload = `Subject: v\r\n\r\nbefore\r\n.\r\n${smuggled}`;
  const c = await SmtpClient.connect(gwN.port);
  await c.hello();
  await c.expect('MAIL FROM:<sender@fabrikam.test>', 250);
  await c.expect('RCPT TO:<control@contoso.test>', 250);
  await c.expect('DATA', 354);
  c.write(payload);
  const codes: string[] = [];
  for (let i = 0; i < 5; i++) codes.push((await c.read(5000))?.text.slice(0, 9) ?? 'closed');
  assert.deepEqual(codes, ['250 2.0.0', '250 2.1.0', '250 2.1.5', '354 2.0.0', '250 2.0.0']);
  await c.expect('QUIT', 221);
  c.close();
  assert.equal((await waitForMail(mailbox(gwN, 'victim-control'))).length, 1, 'the second transaction was delivered');
  await assertStored(gwN, 'control', 'Subject: v\r\n\r\nbefore\r\n');
  delivered.add('normalize/control');
});

test('reject mode: a clean message is accepted', async () => {
  const payload = 'Subject: v\r\n\r\nclean body\r\n..dot\r\n.\r\n';
  const { final, after } = await transact(gwR.port, 'clean', payload);
  assert.match(final.text, QUEUED);
  assert.equal(after, `${final.text}\r\n250 2.0.0 OK\r\n`);
  await assertStored(gwR, 'clean', payload.slice(0, -3));
  delivered.add('reject/clean');
});

test('reject mode: a bare LF in the header block alone is refused with 550 5.6.0', async () => {
  const { final } = await transact(gwR.port, 'bare-header', 'Subject: v\nX: y\r\n\r\nbody\r\n.\r\n');
  assert.match(final.text, /^550 5\.6\.0 /);
  refused.add('reject/bare-header');
});

describe('dot-stuffing round trip', () => {
  test('"..leading dot" lines arrive as ".leading dot" (raw client-side stuffing)', async () => {
    const payload = 'Subject: dots\r\n\r\n..leading dot\r\n...two dots\r\n..\r\nplain\r\n. space\r\n.\r\n';
    const { final } = await transact(gwN.port, 'dots-raw', payload);
    assert.match(final.text, QUEUED);
    const [f] = await waitForMail(mailbox(gwN, 'dots-raw'));
    assert.ok(f, 'delivered');
    const msg = readFileSync(f, 'latin1');
    assert.ok(
      msg.endsWith('Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nplain\r\n space\r\n'),
      JSON.stringify(msg),
    );
    delivered.add('normalize/dots-raw');
  });

  test('a dot-stuffed first line of DATA is unstuffed too', async () => {
    const { final } = await transact(gwN.port, 'dots-first', '..first line\r\nSubject: x\r\n\r\nb\r\n.\r\n');
    assert.match(final.text, QUEUED);
    const [f] = await waitForMail(mailbox(gwN, 'dots-first'));
    assert.ok(f, 'delivered');
    assert.match(readFileSync(f, 'latin1'), /\r\n\.first line\r\nSubject: x\r\n\r\nb\r\n$/);
    delivered.add('normalize/dots-first');
  });

  test('SmtpClient.send stuffing round-trips lines that start with dots', async () => {
    const body = 'Subject: dots2\r\n\r\n.leading dot\r\n..two\r\n.\r\nend\r\n';
    const c = await SmtpClient.connect(gwN.port);
    await c.hello();
    const r = await c.send('sender@fabrikam.test', ['dots-client@contoso.test'], body);
    assert.match(r.text, QUEUED);
    await c.expect('QUIT', 221);
    c.close();
    const [f] = await waitForMail(mailbox(gwN, 'dots-client'));
    assert.ok(f, 'delivered');
    assert.ok(readFileSync(f, 'latin1').endsWith(body));
    delivered.add('normalize/dots-client');
  });
});

test('sweep: nothing smuggled was queued or delivered anywhere; refused messages left no trace', async () => {
  await sleep(500); // a smuggled message would have been queued right behind its carrier
  for (const gw of [gwN, gwR]) {
    assert.deepEqual(mailFiles(mailbox(gw, 'victim')), [], 'victim mailbox is empty');
    const accepted = gw.events().filter((e) => e.event === 'message.accepted');
    assert.equal(
      accepted.filter((e) => e.from === 'evil@x.test').length,
      0,
      'no message from the smuggled sender was accepted',
    );
    const root = path.join(gw.dataDir, 'mailboxes/contoso.test');
    let boxes: string[] = [];
    try {
      boxes = readdirSync(root);
    } catch {
      /* none */
    }
    const mode = gw === gwN ? 'normalize' : 'reject';
    const want = [...delivered].filter((k) => k.startsWith(`${mode}/`)).map((k) => k.slice(mode.length + 1));
    if (gw === gwN) want.push('victim-control');
    assert.deepEqual(
      boxes.filter((b) => mailFiles(path.join(root, b)).length > 0).sort(),
      want.sort(),
      `${mode}: mailboxes with mail`,
    );
    for (const b of want) assert.equal(mailFiles(path.join(root, b)).length, 1, `${mode}: one message for ${b}`);
    assert.equal(accepted.length, want.length, `${mode}: one accepted message per delivered mailbox`);
    for (const k of refused)
      if (k.startsWith(`${mode}/`)) assert.deepEqual(mailFiles(mailbox(gw, k.slice(mode.length + 1))), []);
  }
  assert.ok(refused.size > 20 && delivered.size > 60, `refused ${refused.size}, delivered ${delivered.size}`);
});
