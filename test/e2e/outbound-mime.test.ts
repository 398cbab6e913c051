// Outbound content conversion: 8-bit mail to a peer without 8BITMIME is converted to
// quoted-printable (RFC 6152), lines over 998 octets are never sent (RFC 5321 §4.5.3.1.6), and
// what cannot be converted (8-bit headers) bounces with 5.6.3 naming the header.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { cleanup, freePort, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { until } from '../helpers/wait.ts';
import { decodeQp, has8bit, hasBareCrLf, lineLengths, splitMessage } from '../helpers/mime.ts';

let gw: GatewayHandle;
let dns: DnsServer;
let old: Peer; // no 8BITMIME
let modern: Peer; // 8BITMIME

before(async () => {
  const port = await freePort('127.0.0.1');
  gw = await startGateway();
  dns = await startDnsServer({
    'old.test': { MX: [{ exchange: 'mx.old.test', priority: 10 }] },
    'mx.old.test': { A: ['127.0.0.86'] },
    'modern.test': { MX: [{ exchange: 'mx.modern.test', priority: 10 }] },
    'mx.modern.test': { A: ['127.0.0.87'] },
  });
  old = await startPeer({
    host: '127.0.0.86',
    port,
    extensions: ['PIPELINING', 'SIZE 10240000', 'ENHANCEDSTATUSCODES', 'DSN'],
  });
  modern = await startPeer({ host: '127.0.0.87', port });
  gw.writeConfig({
    dns: { servers: [dns.server] },
    delivery: { port, timeouts: { connect: 3 }, destinationDownSeconds: 0 },
    queue: { retrySchedule: [1] },
    organizations: [
      {
        name: 'contoso',
        acceptedDomains: [{ domain: 'contoso.test' }],
        inboundConnectors: [
          { name: 'On-premises servers', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] },
        ],
      },
    ],
  });
  await gw.stop();
  await gw.restart();
});

after(async () => {
  await cleanup(gw);
  await old?.close();
  await modern?.close();
  await dns?.close();
});

/** Send a message (a JS string, written as UTF-8) and return its queue id. */
async function relay(from: string, to: string, message: string): Promise<string> {
  const c = await SmtpClient.connect(gw.port);
  await c.hello();
  const r = await c.send(from, [to], message);
  c.close();
  assert.equal(r.code, 250, r.text);
  return /queued as (\w+)/.exec(r.text)![1];
}

const result = (id: string) =>
  gw
    .events()
    .find((e) => e.event === 'delivery.result' && e.queueId === id && e.agent === 'smtp' && e.status !== 'deferred');
const received = (peer: Peer, subject: string) => peer.messages.find((m) => m.data.includes(`Subject: ${subject}\r\n`));
async function traceText(id: string): Promise<string> {
  const r = await gw.cli(['trace', '--queue-id', id]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}
async function lastAttempt(id: string): Promise<Record<string, unknown>> {
  const r = await gw.cli(['trace', '--queue-id', id, '--json']);
  return (JSON.parse(r.stdout) as { trace: { data: Record<string, unknown> }[] }[])[0].trace.at(-1)!.data;
}
const mailbox = (local: string) => {
  const dir = path.join(gw.dataDir, 'mailboxes/contoso.test', local, 'new');
  try {
    return readdirSync(dir).map((f) => readFileSync(path.join(dir, f), 'utf8'));
  } catch {
    return [];
  }
};
/** What the peer got is CRLF text, 7-bit, no line over `max`. */
function assertClean(data: string, max = 998): void {
  assert.equal(hasBareCrLf(data), false, 'only CRLF line endings');
  const long = lineLengths(data).filter((n) => n > max);
  assert.deepEqual(long, [], `no line over ${max} octets`);
}

test('8-bit text to a peer without 8BITMIME is converted to quoted-printable that decodes to the original', async () => {
  const body =
    'Grüße aus Köln: ça va?\r\nTrailing space \r\nTab at the end\t\r\n' +
    'ü'.repeat(120) +
    '\r\n.leading dot\r\n-- \r\nsignature\r\n';
  const id = await relay(
    'a@contoso.test',
    'u@old.test',
    'From: <a@contoso.test>\r\nTo: <u@old.test>\r\nSubject: eight bit\r\nMIME-Version: 1.0\r\n' +
      'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n' +
      body,
  );
  await until('delivery', () => result(id));
  assert.equal(result(id)!.status, 'delivered', JSON.stringify(result(id)));
  const m = received(old, 'eight bit')!;
  assert.equal(has8bit(m.data), false, 'nothing 8-bit reaches the peer');
  assertClean(m.data);
  const { head, body: sent } = splitMessage(m.data);
  assert.match(
    head,
    /\r\nContent-Type: text\/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n$/,
  );
  assert.deepEqual(
    lineLengths(sent).filter((n) => n > 76),
    [],
    'quoted-printable lines are at most 76 octets',
  );
  assert.deepEqual(decodeQp(sent), Buffer.from(body, 'utf8'));
  assert.equal(
    (await lastAttempt(id)).conversion,
    'converted 8-bit body to quoted-printable for a peer without 8BITMIME',
  );
  assert.match(await traceText(id), /content: converted 8-bit body to quoted-printable for a peer without 8BITMIME/);
});

test('multipart: 8-bit parts and the attached message are converted, 7-bit parts stay byte-identical', async () => {
  const plain = '--=_outer\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain part, untouched =3D\r\n';
  const attachment =
    '--=_outer\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgc=\r\n';
  const html = '<p>Grüße, Zoë</p>\r\n<p>naïve café</p>';
  const inner = 'inner Köln';
  const msg =
    'From: <a@contoso.test>\r\nSubject: multipart eight\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="=_outer"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n' +
    'This is a multi-part message in MIME format.\r\n' +
    plain +
    '--=_outer\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n' +
    html +
    '\r\n' +
    attachment +
    '--=_outer\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n' +
    'From: <x@fabrikam.test>\r\nSubject: inner\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n' +
    inner +
    '\r\n' +
    '--=_outer--\r\nepilogue\r\n';
  const id = await relay('a@contoso.test', 'u@old.test', msg);
  await until('delivery', () => result(id));
  assert.equal(result(id)!.status, 'delivered', JSON.stringify(result(id)));
  const m = received(old, 'multipart eight')!;
  assert.equal(has8bit(m.data), false);
  assertClean(m.data);
  assert.ok(m.data.includes(plain), 'the 7-bit text part is byte-identical');
  assert.ok(m.data.includes(attachment), 'the base64 part is byte-identical');
  assert.match(
    m.data,
    /boundary="=_outer"\r\nContent-Transfer-Encoding: 7bit\r\n\r\nThis is a multi-part message/,
    'the multipart is 7bit now',
  );
  const htmlPart =
    /Content-Type: text\/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n([\s\S]*?)\r\n--=_outer\r\n/.exec(
      m.data,
    );
  assert.ok(htmlPart, m.data);
  assert.deepEqual(decodeQp(htmlPart[1]), Buffer.from(html, 'utf8'));
  assert.match(
    m.data,
    /Content-Type: message\/rfc822\r\nContent-Transfer-Encoding: 7bit\r\n\r\nFrom: <x@fabrikam\.test>\r\nSubject: inner\r\n/,
  );
  const innerBody =
    /Subject: inner\r\nContent-Type: text\/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n([\s\S]*?)\r\n--=_outer--\r\nepilogue\r\n$/.exec(
      m.data,
    );
  assert.ok(innerBody, m.data);
  assert.deepEqual(
    decodeQp(innerBody[1]),
    Buffer.from(inner, 'utf8'),
    'the CRLF before the delimiter is not part of the body',
  );
  assert.match(
    await traceText(id),
    /content: converted 8-bit content of 2 MIME parts to quoted-printable for a peer without 8BITMIME/,
  );
});

test('8-bit headers cannot be converted: bounced with 5.6.3 naming the header, nothing sent', async () => {
  const id = await relay(
    'bouncer8@contoso.test',
    'u@old.test',
    'From: <bouncer8@contoso.test>\r\nSubject: Grüße\r\nMIME-Version: 1.0\r\n' +
      'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n',
  );
  await until('bounce', () => result(id));
  assert.equal(result(id)!.status, 'failed');
  assert.equal(result(id)!.enhanced, '5.6.3');
  assert.match(
    String(result(id)!.reason),
    /mx\.old\.test \[127\.0\.0\.86\] does not offer 8BITMIME and the message cannot be converted to 7 bit: 8-bit octets in the "Subject" header of the message/,
  );
  assert.equal(old.messages.filter((m) => m.from === 'bouncer8@contoso.test').length, 0);
  const dsn = await until('DSN', () => mailbox('bouncer8')[0]);
  assert.match(dsn, /Action: failed\r\nStatus: 5\.6\.3/);
  assert.match(dsn, /8-bit octets in the "Subject" header of the message/);
  assert.match(await traceText(id), /result: 554 5\.6\.3 .*"Subject" header/);
});

test('a 7-bit message to a peer without 8BITMIME is sent byte for byte, with nothing in the trace', async () => {
  const msg = 'From: <a@contoso.test>\r\nSubject: seven bit\r\n\r\nplain =E9 text\r\n.\r\n..two dots\r\n';
  const id = await relay('a@contoso.test', 'u@old.test', msg);
  await until('delivery', () => result(id));
  const m = received(old, 'seven bit')!;
  assert.ok(m.data.endsWith(msg), JSON.stringify(m.data));
  assert.equal((await lastAttempt(id)).conversion, undefined);
});

test('a 5,000-octet line is never sent: the text is re-encoded, the header folded, the base64 line broken', async () => {
  const text = 'word '.repeat(1000).trimEnd() + ' ünïcödé\r\nshort line\r\n';
  const header = `X-Long: ${'token '.repeat(834).trimEnd()}`;
  const b64 = Buffer.alloc(3750, 7).toString('base64');
  assert.equal(b64.length, 5000);
  const msg =
    `From: <a@contoso.test>\r\nSubject: long lines\r\n${header}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n` +
    `--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${text}` +
    `--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64}\r\n--b1--\r\n`;
  assert.ok(header.length > 5000);
  const id = await relay('a@contoso.test', 'u@modern.test', msg);
  await until('delivery', () => result(id));
  assert.equal(result(id)!.status, 'delivered', JSON.stringify(result(id)));
  const m = received(modern, 'long lines')!;
  assertClean(m.data);
  const folded = /\r\n(X-Long: [\s\S]*?)\r\nMIME-Version/.exec(m.data)![1];
  assert.equal(folded.replace(/\r\n(?=[ \t])/g, ''), header, 'unfolding gives the original header');
  const qp = /charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n([\s\S]*?)\r\n--b1\r\n/.exec(
    m.data,
  )![1];
  assert.deepEqual(decodeQp(qp), Buffer.from(text.slice(0, -2), 'utf8'));
  const sent64 = /base64\r\n\r\n([\s\S]*?)\r\n--b1--/.exec(m.data)![1];
  assert.equal(sent64.replace(/\r\n/g, ''), b64);
  assert.equal(
    (await lastAttempt(id)).conversion,
    're-encoded 1 MIME part as quoted-printable to keep lines within 998 octets; folded 1 header line longer than 998 octets; broke 1 line longer than 998 octets',
  );
  assert.match(await traceText(id), /content: re-encoded 1 MIME part as quoted-printable/);
});

test('a plain (non-MIME) message with a 5,000-octet line becomes MIME quoted-printable', async () => {
  const body = `${'a'.repeat(5000)}\r\nend\r\n`;
  const id = await relay(
    'a@contoso.test',
    'u@modern.test',
    `From: <a@contoso.test>\r\nSubject: long plain\r\n\r\n${body}`,
  );
  await until('delivery', () => result(id));
  const m = received(modern, 'long plain')!;
  assertClean(m.data);
  const { head, body: sent } = splitMessage(m.data);
  assert.deepEqual(
    lineLengths(sent).filter((n) => n > 76),
    [],
  );
  assert.match(head, /Subject: long plain\r\nMIME-Version: 1\.0\r\nContent-Transfer-Encoding: quoted-printable\r\n$/);
  assert.deepEqual(decodeQp(sent), Buffer.from(body));
  assert.equal(
    (await lastAttempt(id)).conversion,
    're-encoded the body as quoted-printable to keep lines within 998 octets',
  );
});
