// Interop with a real Postfix (Debian package), both directions, loopback only, no DNS beyond the
// test DNS server: Portcullis delivers to Postfix's smtpd over STARTTLS (found by MX in the test
// zone), reuses the connection, and receives mail that Postfix relays to it with mandatory TLS;
// to a Postfix that does not offer 8BITMIME, 8-bit mail arrives converted to quoted-printable.
// Needs root (the throwaway Postfix instance); run with `npm run test:interop`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { makePki } from '../helpers/pki.ts';
import { startPostfix, type PostfixInstance } from '../helpers/postfix.ts';
import { SmtpClient } from '../helpers/smtp.ts';
import { decodeQp } from '../helpers/mime.ts';

const PF_HOST = '127.0.0.9';
const PF_NAME = 'mx.interop.test';

let base: string;
let dns: DnsServer | undefined;
let gw: GatewayHandle | undefined;
let pf: PostfixInstance | undefined;
let pfPort: number;

before(async () => {
  base = mkdtempSync(path.join(os.tmpdir(), 'pc-interop-'));
  chmodSync(base, 0o755); // the postfix user reads the certificates below it
  const certs = path.join(base, 'certs');
  mkdirSync(certs, { mode: 0o755 });
  const pki = await makePki(certs, 'Interop');
  const mxCert = await pki.issue(PF_NAME);
  const gwCert = await pki.issue('mx1.contoso.test');
  for (const f of readdirSync(certs)) chmodSync(path.join(certs, f), 0o644);

  pfPort = await freePort(PF_HOST);
  dns = await startDnsServer({
    'interop.test': { MX: [{ exchange: PF_NAME, priority: 10 }] },
    [PF_NAME]: { A: [PF_HOST] },
  });
  const gwDir = path.join(base, 'gateway');
  mkdirSync(gwDir);
  gw = await startGateway({
    dir: gwDir,
    config: {
      dns: { servers: [dns.server] },
      delivery: {
        port: pfPort,
        timeouts: { connect: 5, greeting: 10, command: 10, dataInit: 10, dataBlock: 10, dataEnd: 20 },
        connectionReuse: { idleSeconds: 3 },
      },
      tls: {
        certificates: [{ cert: gwCert.chain, key: gwCert.key }],
        trust: { system: false, caFiles: [pki.rootFile] },
      },
      queue: { retrySchedule: [2] },
      organizations: [
        {
          name: 'contoso',
          acceptedDomains: [{ domain: 'contoso.test' }],
          inboundConnectors: [
            { name: 'On-premises servers', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] },
          ],
        },
      ],
    },
  });
  pf = await startPostfix({
    base: path.join(base, 'postfix'),
    host: PF_HOST,
    port: pfPort,
    hostname: PF_NAME,
    cert: mxCert.chain,
    key: mxCert.key,
    caFile: pki.rootFile,
    mailboxDomain: 'interop.test',
    users: ['user'],
    // Reverse direction: mail for contoso.test goes to Portcullis, numeric next hop, TLS mandatory.
    transports: { 'contoso.test': `smtp:[127.0.0.1]:${gw.port}` },
    // TLS is mandatory on that hop, and the certificate must name mx1.contoso.test and chain to the test CA.
    extra: [
      'smtp_tls_security_level = encrypt',
      `smtp_tls_policy_maps = inline:{ { [127.0.0.1]:${gw.port} = secure match=mx1.contoso.test } }`,
    ],
  });
});

after(async () => {
  await gw?.stop();
  await pf?.stop();
  await dns?.close();
  if (base && !process.env.KEEP_INTEROP) rmSync(base, { recursive: true, force: true });
});

async function until<T>(what: string, f: () => T | undefined | false, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > end)
      throw new Error(`timed out after ${ms} ms waiting for ${what}\n--- postfix log (tail) ---\n${tail()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const tail = (n = 30) => (pf?.log() ?? '').split('\n').slice(-n).join('\n');

/** One message into Portcullis over STARTTLS from 127.0.0.1 (the onPremises connector); its queue id. */
async function submit(from: string, to: string, body: string): Promise<string> {
  const c = await SmtpClient.connect(gw!.port);
  try {
    await c.hello();
    await c.starttls({ servername: 'mx1.contoso.test' });
    await c.expect('EHLO client.contoso.test', 250);
    const r = await c.send(from, [to], body);
    assert.equal(r.code, 250, r.text);
    return /queued as (\w+)/.exec(r.text)![1];
  } finally {
    c.write('QUIT\r\n');
    c.close();
  }
}

async function deliveryResult(queueId: string): Promise<Record<string, unknown>> {
  const e = await gw!.waitForLog((x) => x.event === 'delivery.result' && x.queueId === queueId, 30_000);
  assert.equal(e.status, 'delivered', `first attempt: ${JSON.stringify(e)}\n--- postfix log (tail) ---\n${tail()}`);
  return e;
}

/**
 * The log lines of the Postfix smtpd session that received `pfQueueId`: from its "connect from"
 * to its "<id>: client=" line (one smtpd process serves many sessions in turn).
 */
function smtpdSession(log: string, pfQueueId: string): string[] {
  const lines = log.split('\n');
  const i = lines.findIndex((l) => new RegExp(`postfix/smtpd\\[\\d+\\]: ${pfQueueId}: client=`).test(l));
  if (i < 0) return [];
  const pid = /postfix\/smtpd\[(\d+)\]/.exec(lines[i])![1];
  const own = (l: string) => l.includes(`postfix/smtpd[${pid}]: `);
  const out = [lines[i]];
  for (let j = i - 1; j >= 0; j--) {
    if (!own(lines[j])) continue;
    out.unshift(lines[j]);
    if (/: connect from /.test(lines[j])) return out;
  }
  return [];
}

interface TraceMsg {
  id: string;
  trace: { kind: string; data: Record<string, unknown> }[];
}

async function traceFor(recipient: string): Promise<TraceMsg[]> {
  const r = await gw!.cli(['trace', '--recipient', recipient, '--json', '--limit', '100']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as TraceMsg[];
}

const TLS_IN =
  /(Anonymous|Untrusted|Trusted|Verified) TLS connection established from \S+\[127\.0\.0\.1\]: (TLSv1\.[23]) with cipher (\S+)/;

test(
  "Portcullis delivers to Postfix over STARTTLS: body intact, TLS in Postfix's log and in the trace",
  { timeout: 90_000 },
  async (t) => {
    const marker = `interop-${randomUUID()}`;
    const body =
      `From: <sender@contoso.test>\r\nTo: <user@interop.test>\r\nSubject: ${marker}\r\nMessage-ID: <${marker}@contoso.test>\r\n\r\n` +
      `first line\r\n.a line that starts with a dot\r\n..two dots\r\n${marker}\r\nlast line\r\n`;
    const id = await submit('sender@contoso.test', 'user@interop.test', body);
    const res = await deliveryResult(id);
    // Postfix offers CHUNKING: the message went as one BDAT LAST chunk with MAIL and RCPT (RFC 3030),
    // and Postfix's reply to it counts the octets it took.
    const pfId = /said: 250 2\.0\.0 Ok: \d+ bytes queued as ([0-9A-Za-z]+) \(in reply to BDAT LAST\)$/.exec(
      String(res.reason),
    )?.[1];
    assert.ok(pfId, `Postfix's queue id in the delivery result: ${String(res.reason)}`);

    // It reached the Maildir with the body intact (lines starting with a dot as written, nothing lost).
    const msg = await until("the message in Postfix's mailbox", () =>
      pf!.mailbox('user').find((m) => m.includes(marker)),
    );
    assert.match(
      msg,
      new RegExp(`\\n\\nfirst line\\n\\.a line that starts with a dot\\n\\.\\.two dots\\n${marker}\\nlast line\\n$`),
    );
    assert.match(msg, /^Return-Path: <sender@contoso\.test>$/m);
    assert.match(
      msg,
      new RegExp(
        `^Received: from mx1\\.contoso\\.test \\(unknown \\[127\\.0\\.0\\.1\\]\\)\\n\\t\\(using TLSv1\\.[23] with cipher `,
        'm',
      ),
      "Postfix's own Received: header says the hop from Portcullis was TLS",
    );

    // Postfix logged the TLS handshake in the very session that received this message.
    const log = await until("Postfix's delivery log line", () => {
      const l = pf!.log();
      return (
        new RegExp(`${pfId}: to=<user@interop\\.test>, relay=virtual, .*status=sent \\(delivered to maildir\\)`).test(
          l,
        ) && l
      );
    });
    const session = smtpdSession(log, pfId!);
    assert.ok(session.length, `the smtpd session of ${pfId} in:\n${log}`);
    const tlsLine = session.find((l) => TLS_IN.test(l));
    assert.ok(tlsLine, `a TLS line in the session that received ${pfId}:\n${session.join('\n')}`);
    const [, , pfVersion, pfCipher] = TLS_IN.exec(tlsLine)!;
    t.diagnostic(`postfix: ${tlsLine.replace(/^.*?postfix\//, 'postfix/')}`);

    // The trace shows the attempt: the Postfix host found by MX, its address and port, the same TLS.
    const m = (await traceFor('user@interop.test')).find((x) => x.id === id);
    assert.ok(m, `trace --recipient user@interop.test lists ${id}`);
    const attempts = m.trace.filter((e) => e.kind === 'delivery').map((e) => e.data);
    assert.equal(attempts.length, 1, JSON.stringify(attempts));
    const a = attempts[0];
    assert.equal(a.status, 'delivered');
    assert.equal(a.agent, 'smtp');
    assert.equal(a.host, PF_NAME);
    assert.equal(a.ip, PF_HOST);
    assert.equal(a.port, pfPort);
    const tls = a.tls as { version: string; cipher: string; chainValid: boolean; names: string[] };
    assert.equal(tls.version, pfVersion, 'Portcullis and Postfix agree on the TLS version');
    if (pfVersion === 'TLSv1.3') assert.equal(tls.cipher, pfCipher, 'and on the cipher');
    assert.equal(tls.chainValid, true, JSON.stringify(tls));
    assert.ok(tls.names.includes(PF_NAME), JSON.stringify(tls.names));
    assert.equal(a.tlsAchieved, 'domainValidation');
    t.diagnostic(
      `trace: host ${String(a.host)} [${String(a.ip)}]:${String(a.port)} ${tls.version} ${tls.cipher} achieved ${String(a.tlsAchieved)}`,
    );
  },
);

test('ten messages to Postfix share a connection', { timeout: 120_000 }, async (t) => {
  const start = pf!.log().length;
  const markers: string[] = [];
  const ids: string[] = [];
  for (let i = 0; i < 10; i++) {
    const marker = `reuse-${i}-${randomUUID()}`;
    markers.push(marker);
    const id = await submit('sender@contoso.test', 'user@interop.test', `Subject: ${marker}\r\n\r\n${marker}\r\n`);
    await deliveryResult(id);
    ids.push(id);
  }
  await until('all ten in the mailbox', () => markers.every((mk) => pf!.mailbox('user').some((m) => m.includes(mk))));
  // Portcullis keeps an idle connection for connectionReuse.idleSeconds (3 s here), then QUITs:
  // the smtpd "disconnect" line then counts the transactions of that one session.
  const log = await until(
    'the pooled session to end',
    () => {
      const l = pf!.log().slice(start);
      return /disconnect from \S+\[127\.0\.0\.1\] ehlo=2 starttls=1 mail=\d+/.test(l) && l;
    },
    20_000,
  );
  const connects = (log.match(/postfix\/smtpd\[\d+\]: connect from \S+\[127\.0\.0\.1\]/g) ?? []).length;
  const perSession = [...log.matchAll(/disconnect from \S+\[127\.0\.0\.1\] ehlo=2 starttls=1 mail=(\d+)/g)].map((x) =>
    Number(x[1]),
  );
  const traces = (await traceFor('user@interop.test')).filter((m) => ids.includes(m.id));
  const reused = traces.filter((m) => m.trace.some((e) => e.kind === 'delivery' && e.data.reused === true)).length;
  t.diagnostic(
    `10 messages: ${connects} new smtpd connection(s); transactions per ended session ${JSON.stringify(perSession)}; ${reused} delivered on a reused connection`,
  );
  assert.equal(traces.length, 10);
  assert.ok(connects < 10, `fewer connections than messages: ${connects}`);
  assert.ok(connects <= 1, `sequential messages within the idle time share one connection: saw ${connects}`);
  assert.ok(reused >= 9, `the trace marks reuse: ${reused}`);
  assert.ok(
    perSession.some((n) => n >= 10),
    `one TLS session carried all ten: ${JSON.stringify(perSession)}`,
  );
});

test(
  'one transaction, two recipients: Postfix refuses one (550 5.1.1), the other is delivered, the sender gets a DSN',
  { timeout: 90_000 },
  async () => {
    const marker = `partial-${randomUUID()}`;
    const c = await SmtpClient.connect(gw!.port);
    let id: string;
    try {
      await c.hello();
      await c.starttls({ servername: 'mx1.contoso.test' });
      await c.expect('EHLO client.contoso.test', 250);
      const r = await c.send(
        'bouncer@contoso.test',
        ['user@interop.test', 'nobody@interop.test'],
        `Subject: ${marker}\r\n\r\n${marker}\r\n`,
      );
      assert.equal(r.code, 250, r.text);
      id = /queued as (\w+)/.exec(r.text)![1];
    } finally {
      c.write('QUIT\r\n');
      c.close();
    }
    const results = await until(
      'both delivery results',
      () => {
        const rs = gw!.events().filter((e) => e.event === 'delivery.result' && e.queueId === id && e.agent === 'smtp');
        return rs.length === 2 && rs;
      },
      30_000,
    );
    const by = Object.fromEntries(results.map((e) => [String(e.rcpt), e]));
    assert.equal(by['user@interop.test'].status, 'delivered', JSON.stringify(by));
    assert.equal(by['nobody@interop.test'].status, 'failed', JSON.stringify(by));
    assert.match(
      String(by['nobody@interop.test'].reason),
      /^mx\.interop\.test \[127\.0\.0\.9\] said: 550 5\.1\.1 <nobody@interop\.test>: Recipient address rejected: User unknown in virtual mailbox table \(in reply to RCPT TO\)$/,
    );
    await until("the accepted copy in Postfix's mailbox", () => pf!.mailbox('user').some((m) => m.includes(marker)));
    const dir = path.join(gw!.dataDir, 'mailboxes/contoso.test/bouncer/new');
    const dsn = await until('the DSN to the sender', () => {
      try {
        return readdirSync(dir)
          .map((f) => readFileSync(path.join(dir, f), 'utf8'))
          .find((m) => m.includes(`Subject: ${marker}`));
      } catch {
        return undefined;
      }
    });
    assert.match(dsn, /Final-Recipient: rfc822; nobody@interop\.test\r\nAction: failed\r\nStatus: 5\.1\.1/);
    assert.match(dsn, /Remote-MTA: dns; mx\.interop\.test/);
    assert.doesNotMatch(dsn, /Final-Recipient: rfc822; user@interop\.test/);
  },
);

test(
  'Postfix relays into Portcullis with mandatory TLS; the Received: header names TLS',
  { timeout: 90_000 },
  async (t) => {
    const marker = `reverse-${randomUUID()}`;
    const c = await SmtpClient.connect(pfPort, PF_HOST);
    let pfId: string;
    try {
      await c.hello('client.interop.test');
      const r = await c.send(
        'partner@interop.test',
        ['alice@contoso.test'],
        `From: <partner@interop.test>\r\nTo: <alice@contoso.test>\r\nSubject: ${marker}\r\nMessage-ID: <${marker}@interop.test>\r\n\r\n${marker}\r\n.dot line\r\n`,
      );
      assert.equal(r.code, 250, r.text);
      pfId = /queued as ([0-9A-Za-z]+)/.exec(r.text)![1];
    } finally {
      c.write('QUIT\r\n');
      c.close();
    }
    const dir = path.join(gw!.dataDir, 'mailboxes/contoso.test/alice/new');
    const msg = await until(
      "the message in Portcullis's mailbox",
      () => {
        try {
          return readdirSync(dir)
            .map((f) => readFileSync(path.join(dir, f), 'utf8'))
            .find((m) => m.includes(marker));
        } catch {
          return undefined;
        }
      },
      30_000,
    );
    assert.match(msg, new RegExp(`\\r\\n\\r\\n${marker}\\r\\n\\.dot line\\r\\n$`), 'body intact');
    const received =
      /^Received: from (\S+) \(\[(127\.0\.0\.1)\]\)\r\n\t\(using (TLSv1\.[23]) with cipher (\S+) \((\d+)\/\d+ bits\)\)\r\n(?:\t.*\r\n)*?\tby mx1\.contoso\.test \(Portcullis\) with (\S+) id (\w+)/m.exec(
        msg,
      );
    assert.ok(received, `Portcullis's Received: header with TLS facts:\n${msg.slice(0, 800)}`);
    assert.equal(received[1], PF_NAME, 'Postfix said EHLO with its myhostname');
    assert.match(received[6], /^ESMTPS/, 'protocol ESMTPS (RFC 3848)');
    t.diagnostic(`portcullis: ${received[0].replace(/\r\n\t/g, ' ')}`);

    // Postfix's side: the smtp client verified our chain and name (level secure) and delivered its queue entry over TLS.
    const log = await until(
      "Postfix's relay log line",
      () => {
        const l = pf!.log();
        return (
          new RegExp(
            `${pfId}: to=<alice@contoso\\.test>, relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${gw!.port}, .*status=(sent|deferred|bounced)`,
          ).test(l) && l
        );
      },
      30_000,
    );
    const sent = new RegExp(
      `postfix/smtp\\[(\\d+)\\]: ${pfId}: to=<alice@contoso\\.test>, relay=127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${gw!.port}, .*status=sent \\(250 .*queued as (\\w+)\\)`,
    ).exec(log);
    assert.ok(sent, `status=sent for ${pfId}:\n${tail()}`);
    const tlsOut = new RegExp(
      `postfix/smtp\\[${sent[1]}\\]: (Verified) TLS connection established to 127\\.0\\.0\\.1\\[127\\.0\\.0\\.1\\]:${gw!.port}: (TLSv1\\.[23]) with cipher (\\S+)`,
    ).exec(log);
    assert.ok(
      tlsOut,
      `a Verified TLS line (chain and name checked) from the smtp process that delivered ${pfId}:\n${tail()}`,
    );
    assert.equal(tlsOut[2], received[3], 'both sides report the same TLS version');
    assert.equal(sent[2], received[7], "Postfix's log names the queue id of the message in the mailbox");
    t.diagnostic(`postfix: ${tlsOut[0]}`);
    t.diagnostic(`postfix: ${sent[0]}`);

    // Portcullis's queue id in Postfix's log is the message in Portcullis's trace, received over TLS.
    const tr = await gw!.cli(['trace', '--queue-id', sent[2], '--json']);
    assert.equal(tr.code, 0, tr.stderr);
    const [m] = JSON.parse(tr.stdout) as { inbound: { clientIp: string; tls?: { version: string } } }[];
    assert.equal(m.inbound.clientIp, '127.0.0.1');
    assert.equal(m.inbound.tls?.version, tlsOut[2]);
  },
);

test(
  'to a Postfix without 8BITMIME: 8-bit text arrives as quoted-printable that decodes to the original; a 6,400-octet line arrives within 998',
  { timeout: 90_000 },
  async (t) => {
    await pf!.configure({ smtpd_discard_ehlo_keywords: '8bitmime' });
    await pf!.reload();
    // Pooled connections (idle 3 s here) still carry the old EHLO; wait until they are closed.
    await new Promise((r) => setTimeout(r, 4000));
    const marker = `eightbit-${randomUUID()}`;
    const text = `Grüße aus Köln, ça va?\r\n${'Straße '.repeat(800)}\r\n.dot line\r\n`;
    const id = await submit(
      'sender@contoso.test',
      'user@interop.test',
      `From: <sender@contoso.test>\r\nSubject: ${marker}\r\nMIME-Version: 1.0\r\n` +
        `Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n${text}`,
    );
    await deliveryResult(id);
    const msg = await until("the message in Postfix's mailbox", () =>
      pf!.mailbox('user').find((m) => m.includes(marker)),
    );
    assert.doesNotMatch(msg, /[^\x00-\x7f]/, 'nothing 8-bit reached Postfix');
    assert.ok(
      msg.split('\n').every((l) => l.length <= 998),
      'no line over 998 octets',
    );
    const [head, ...rest] = msg.split('\n\n');
    assert.match(head, /\nContent-Transfer-Encoding: quoted-printable\n/);
    const decoded = decodeQp(rest.join('\n\n').replace(/\n/g, '\r\n'));
    assert.equal(decoded.toString('utf8'), text, "Postfix's copy decodes to the original text");
    const attempt = (await traceFor('user@interop.test'))
      .find((m) => m.id === id)!
      .trace.filter((e) => e.kind === 'delivery')
      .at(-1)!.data;
    assert.equal(attempt.conversion, 'converted 8-bit body to quoted-printable for a peer without 8BITMIME');
    t.diagnostic(`trace: content: ${String(attempt.conversion)}`);
  },
);
