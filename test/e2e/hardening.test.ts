// Protocol hardening of the real process over loopback: STARTTLS command injection, pre-greeting
// traffic, greeting latency, line/size/header limits, NUL, idle and slow-drip timeouts, connection
// floods (global and per IP), PIPELINING order, the error limit and HTTP on the SMTP port.
// Every limit is probed on both sides (just inside and just outside) where the boundary is defined.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { cleanup, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { SmtpClient, type Reply } from '../helpers/smtp.ts';

const MAX_MESSAGE = 10_000;
const MAX_HEADER = 2048;
const MAX_ERRORS = 5;
const MAX_HOPS = 5;

let gwA: GatewayHandle; // limits: small message/header size, 5 errors
let gwT: GatewayHandle; // 1 s command timeout
let gwC: GatewayHandle; // 5 connections in all
let gwP: GatewayHandle; // 2 connections per IP

before(async () => {
  [gwA, gwT, gwC, gwP] = await Promise.all([
    startGateway({
      config: {
        smtp: {
          maxMessageSize: MAX_MESSAGE,
          maxHeaderSize: MAX_HEADER,
          maxErrors: MAX_ERRORS,
          maxReceivedHeaders: MAX_HOPS,
        },
      },
    }),
    startGateway({ config: { smtp: { timeouts: { command: 1 } } } }),
    startGateway({ config: { smtp: { maxConnections: 5, maxConnectionsPerIP: 100 } } }),
    startGateway({ config: { smtp: { maxConnectionsPerIP: 2 } } }),
  ]);
});
after(async () => {
  await Promise.all([cleanup(gwA), cleanup(gwT), cleanup(gwC), cleanup(gwP)]);
});

// ---------------------------------------------------------------------------------------------
// Helpers

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function mailFiles(gw: GatewayHandle, local: string): string[] {
  const dir = path.join(gw.dataDir, 'mailboxes/contoso.test', local, 'new');
  try {
    return readdirSync(dir).map((f) => path.join(dir, f));
  } catch {
    return [];
  }
}

async function waitForMail(gw: GatewayHandle, local: string, n = 1, timeoutMs = 10_000): Promise<string[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const files = mailFiles(gw, local);
    if (files.length >= n || Date.now() > until) return files;
    await sleep(25);
  }
}

/** Resolves true when the connection closed within `ms`. */
async function closesWithin(c: SmtpClient, ms: number): Promise<boolean> {
  let t: NodeJS.Timeout | undefined;
  const r = await Promise.race([
    c.closedPromise.then(() => true),
    new Promise<boolean>((res) => {
      t = setTimeout(() => res(false), ms);
    }),
  ]);
  clearTimeout(t);
  return r;
}

/** Read a reply that must exist (a closed connection fails the test with what was received). */
async function must(c: SmtpClient, timeoutMs = 5000): Promise<Reply> {
  const r = await c.read(timeoutMs);
  assert.ok(r, `connection closed; received ${JSON.stringify(c.received.slice(-300))}`);
  return r;
}

/**
 * Raw socket that writes `data` the moment the TCP connection exists (before any byte from the
 * server can have been read), and collects what the server sends until it closes, `done(text)`
 * says enough, or `timeoutMs` passes.
 */
function rawExchange(
  port: number,
  data: string,
  done: (text: string) => boolean,
  timeoutMs = 5000,
): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.setNoDelay(true);
    s.write(data);
    let text = '';
    const finish = (closed: boolean) => {
      clearTimeout(t);
      s.destroy();
      resolve({ text, closed });
    };
    const t = setTimeout(() => finish(false), timeoutMs);
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (done(text)) finish(false);
    });
    s.on('error', () => {});
    s.on('close', () => finish(true));
  });
}

async function session(gw: GatewayHandle, localAddress?: string): Promise<SmtpClient> {
  const c = await SmtpClient.connect(gw.port, '127.0.0.1', localAddress);
  await c.hello();
  return c;
}

/** Message text of exactly `n` octets (CRLF line endings, no line starting with "."). */
function messageOfSize(n: number, subject: string): string {
  let s = `Subject: ${subject}\r\n\r\n`;
  while (s.length + 80 <= n) s += 'x'.repeat(78) + '\r\n';
  const rest = n - s.length;
  assert.ok(rest === 0 || rest >= 2);
  if (rest) s += 'y'.repeat(rest - 2) + '\r\n';
  assert.equal(s.length, n);
  return s;
}

async function sendData(c: SmtpClient, rcpt: string, content: string): Promise<Reply> {
  await c.expect('MAIL FROM:<sender@fabrikam.test>', 250);
  await c.expect(`RCPT TO:<${rcpt}@contoso.test>`, 250);
  await c.expect('DATA', 354);
  c.write(content + '.\r\n');
  return must(c);
}

const QUEUED = /^250 2\.0\.0 OK queued as [0-9A-Z]+$/;

// ---------------------------------------------------------------------------------------------
// (a) STARTTLS command injection (CVE-2011-0411 class)

describe('STARTTLS command injection', () => {
  const cases = [
    { injected: 'RSET\r\n', name: 'RSET' },
    { injected: 'MAIL FROM:<x@y.test>\r\n', name: 'MAIL FROM' },
    {
      injected: 'EHLO evil.test\r\nMAIL FROM:<x@y.test>\r\nRCPT TO:<victim@contoso.test>\r\n',
      name: 'a whole envelope',
    },
  ];
  for (const { injected, name } of cases) {
    test(`"STARTTLS\\r\\n${name}" in one write: injected bytes get no reply after the handshake and state is reset`, async () => {
      const c = await session(gwA);
      c.write(`STARTTLS\r\n${injected}`);
      const ready = await must(c);
      assert.equal(ready.text, '220 2.0.0 Ready to start TLS');
      assert.equal(c.unread, 0, 'no plaintext reply to the injected command');
      const ts = await c.upgrade({ servername: 'mx1.contoso.test' });
      assert.ok(ts.encrypted);
      const mark = c.received.length;
      c.write('NOOP\r\n');
      const noop = await must(c);
      assert.equal(noop.text, '250 2.0.0 OK', 'the first reply after the handshake is the NOOP reply');
      await sleep(100);
      assert.equal(c.unread, 0, `nothing else pending: ${JSON.stringify(c.received.slice(mark))}`);
      assert.equal(c.received.slice(mark), '250 2.0.0 OK\r\n');
      const mail = await c.cmd('MAIL FROM:<a@fabrikam.test>');
      assert.match(mail.text, /^503 5\.5\.1 /, 'EHLO is forgotten after TLS (RFC 3207 §4.2)');
      const ehlo = await c.cmd('EHLO client.test');
      assert.equal(ehlo.code, 250);
      assert.doesNotMatch(ehlo.text, /STARTTLS/, 'STARTTLS is not offered twice');
      await c.expect('MAIL FROM:<a@fabrikam.test>', 250); // no transaction survived from before TLS
      await c.expect('QUIT', 221);
      c.close();
      const ev = await gwA.waitForLog((e) => e.event === 'session.injection' && e.bytes === injected.length, 5000);
      assert.equal(ev.ip, '127.0.0.1');
    });
  }
  test('STARTTLS pipelined behind a whole message (processed after the store commit) still discards what follows it', async () => {
    const c = await session(gwA);
    await c.expect('MAIL FROM:<sender@fabrikam.test>', 250);
    await c.expect('RCPT TO:<tls-pipe@contoso.test>', 250);
    await c.expect('DATA', 354);
    // RSET, not NOOP, before STARTTLS: NOOP must end a pipelined group (RFC 2920 §3.1).
    c.write(
      'Subject: before tls\r\n\r\nhi\r\n.\r\nRSET\r\nSTARTTLS\r\nMAIL FROM:<x@y.test>\r\nRCPT TO:<victim@contoso.test>\r\n',
    );
    assert.match((await must(c)).text, QUEUED);
    assert.equal((await must(c)).text, '250 2.0.0 Reset state');
    assert.equal((await must(c)).text, '220 2.0.0 Ready to start TLS');
    await c.upgrade({ servername: 'mx1.contoso.test' });
    const mark = c.received.length;
    assert.equal((await c.cmd('NOOP')).text, '250 2.0.0 OK');
    await sleep(100);
    assert.equal(c.received.slice(mark), '250 2.0.0 OK\r\n');
    assert.match((await c.cmd('RCPT TO:<victim@contoso.test>')).text, /^503 5\.5\.1 /, 'no transaction survived');
    c.close();
    assert.equal((await waitForMail(gwA, 'tls-pipe')).length, 1);
    await sleep(200);
    assert.deepEqual(mailFiles(gwA, 'victim'), [], 'nothing for the injected recipient');
  });
});

// ---------------------------------------------------------------------------------------------
// (b) commands before the greeting, (c) greeting latency

test('commands sent before the greeting get "554 5.5.1" and the connection closes', async (t) => {
  // The gateway greets two event-loop turns after accept and can only see bytes that were read
  // by then; on a busy 2-CPU loopback an immediate writer still loses that race in 1-45% of the
  // connections (measured). So: every connection must take one of the two exact shapes (554 and
  // closed, nothing else; or an ordinary 220 + EHLO), and detection must actually happen. With a
  // per-connection detection rate of even 30%, P(fewer than 2 of 30) is 3e-4.
  const N = 30;
  let detected = 0;
  for (let i = 0; i < N; i++) {
    // Stop early only when the EHLO got a reply (not detected); a detected client is closed.
    const r = await rawExchange(gwA.port, 'EHLO pregreet.test\r\n', (s) => /^250 /m.test(s), 5000);
    if (r.text.startsWith('554')) {
      assert.equal(
        r.text,
        '554 5.5.1 Protocol error: client sent data before the greeting\r\n',
        'no greeting, exactly one reply',
      );
      assert.ok(r.closed, 'the server closed the connection after 554');
      detected++;
    } else {
      // The EHLO arrived after the greeting went out: then it is an ordinary client.
      assert.match(r.text, /^220 mx1\.contoso\.test ESMTP Portcullis\r\n250-mx1\.contoso\.test\r\n/);
    }
  }
  t.diagnostic(`pre-greeting traffic detected in ${detected}/${N} connections`);
  assert.ok(detected >= 2, `detected only ${detected}/${N}`);
});

test('greeting latency: median connect→220 over 20 connections is under 50 ms', async (t) => {
  const times: number[] = [];
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    const c = await SmtpClient.connect(gwA.port);
    const g = await must(c, 2000);
    times.push(performance.now() - t0);
    assert.equal(g.code, 220);
    c.write('QUIT\r\n');
    c.close();
  }
  const sorted = [...times].sort((a, b) => a - b);
  const median = (sorted[9] + sorted[10]) / 2;
  const msg = `greeting latency: median ${median.toFixed(2)} ms, min ${sorted[0].toFixed(2)} ms, max ${sorted[19].toFixed(2)} ms over 20 connections`;
  t.diagnostic(msg);
  console.log(msg);
  assert.ok(median < 50, msg);
});

// ---------------------------------------------------------------------------------------------
// (d) overlong command lines, (g) NUL in commands

describe('command line limits', () => {
  test('a 3000-octet command line gets 500 5.5.2 and the session still works', async () => {
    const c = await session(gwA);
    const r = await c.cmd(`NOOP ${'x'.repeat(3000)}`);
    assert.equal(r.text, '500 5.5.2 Line too long (the limit is 2048 octets)');
    assert.equal((await c.cmd('NOOP')).text, '250 2.0.0 OK');
    await c.expect('MAIL FROM:<a@fabrikam.test>', 250);
    c.close();
  });

  test('overlong line pipelined with the next command in one write: one 500, then the NOOP reply', async () => {
    const c = await session(gwA);
    c.write(`MAIL FROM:<${'a'.repeat(5000)}@fabrikam.test>\r\nNOOP\r\n`);
    assert.equal((await must(c)).text, '500 5.5.2 Line too long (the limit is 2048 octets)');
    assert.equal((await must(c)).text, '250 2.0.0 OK');
    await sleep(50);
    assert.equal(c.unread, 0);
    assert.equal((await c.cmd('NOOP')).text, '250 2.0.0 OK');
    c.close();
  });

  test('overlong line arriving in many segments is reported once; the line after it is read', async () => {
    const c = await session(gwA);
    c.sock.setNoDelay(true);
    for (let i = 0; i < 6; i++) {
      c.write('y'.repeat(1000));
      await sleep(20);
    }
    c.write('\r\n');
    assert.equal((await must(c)).text, '500 5.5.2 Line too long (the limit is 2048 octets)');
    assert.equal((await c.cmd('NOOP')).text, '250 2.0.0 OK');
    assert.equal(c.unread, 0);
    c.close();
  });

  test('overlong line ended by a bare CR (a line end in normalize mode): one 500, then the next command is answered', async () => {
    // Same framing rule for every line length: "NOOP<CR>" after a short line is a command, so it
    // must be after a long one too (every command line gets exactly one reply).
    for (const [len, how] of [
      [3000, 'one write'],
      [2049, 'one write'],
      [3000, 'split at the CR'],
    ] as const) {
      const c = await session(gwA);
      const long = `NOOP ${'w'.repeat(len - 5)}`;
      if (how === 'one write') c.write(`${long}\rNOOP\r\n`);
      else {
        c.sock.setNoDelay(true);
        c.write(`${long}\r`);
        await sleep(30);
        c.write('NOOP\r\n');
      }
      assert.equal((await must(c, 3000)).code, 500, `${len} ${how}`);
      const next = await c.read(3000).catch(() => null);
      assert.equal(
        next?.text,
        '250 2.0.0 OK',
        `${len} ${how}: the NOOP after the bare CR got ${JSON.stringify(c.received.slice(-200))}`,
      );
      assert.equal((await c.cmd('NOOP')).text, '250 2.0.0 OK');
      c.close();
    }
  });

  test('boundary: a 2048-octet line is accepted, a 2049-octet line is not', async () => {
    const c = await session(gwA);
    const at = `NOOP ${'z'.repeat(2048 - 5)}`;
    assert.equal(at.length, 2048);
    assert.equal((await c.cmd(at)).text, '250 2.0.0 OK');
    assert.equal((await c.cmd(at + 'z')).code, 500);
    assert.equal((await c.cmd('NOOP')).text, '250 2.0.0 OK');
    c.close();
  });

  test('NUL in a command line gets 500 5.5.2 and is not executed', async () => {
    const c = await session(gwA);
    assert.equal((await c.cmd('NOOP\x00')).text, '500 5.5.2 NUL character is not allowed in commands');
    assert.equal((await c.cmd('MAIL FROM:<a\x00b@fabrikam.test>')).code, 500);
    // The MAIL above was not executed: a clean MAIL is not "nested".
    await c.expect('MAIL FROM:<a@fabrikam.test>', 250);
    assert.equal(
      (await c.cmd('RCPT TO:<nul\x00@contoso.test>')).text,
      '500 5.5.2 NUL character is not allowed in commands',
    );
    assert.equal((await c.cmd('NOOP')).text, '250 2.0.0 OK');
    c.close();
  });
});

// ---------------------------------------------------------------------------------------------
// (e) message size, (f) header size

describe('size limits', () => {
  test(`EHLO advertises SIZE ${MAX_MESSAGE}; MAIL SIZE= above it gets 552 5.3.4, at it 250`, async () => {
    const c = await SmtpClient.connect(gwA.port);
    const ehlo = await c.hello();
    assert.match(ehlo.text, new RegExp(`^250-SIZE ${MAX_MESSAGE}$`, 'm'));
    const over = await c.cmd(`MAIL FROM:<a@fabrikam.test> SIZE=${MAX_MESSAGE + 1}`);
    assert.equal(over.text, '552 5.3.4 Message size exceeds fixed maximum message size');
    const huge = await c.cmd('MAIL FROM:<a@fabrikam.test> SIZE=999999999999999');
    assert.match(huge.text, /^552 5\.3\.4 /);
    await c.expect(`MAIL FROM:<a@fabrikam.test> SIZE=${MAX_MESSAGE}`, 250);
    c.close();
  });

  test('a message body bigger than maxMessageSize gets 552 5.3.4; the session continues; the limit itself is accepted', async () => {
    const c = await session(gwA);
    const big = await sendData(c, 'big-refused', messageOfSize(2 * MAX_MESSAGE, 'too big'));
    assert.equal(big.text, '552 5.3.4 Message size exceeds fixed maximum message size');
    assert.equal((await c.cmd('RSET')).text, '250 2.0.0 Reset state');
    assert.equal((await c.cmd('NOOP')).text, '250 2.0.0 OK');
    const one = await sendData(c, 'big-refused', messageOfSize(MAX_MESSAGE + 1, 'one over'));
    assert.match(one.text, /^552 5\.3\.4 /);
    const at = await sendData(c, 'big-at-limit', messageOfSize(MAX_MESSAGE, 'at limit'));
    assert.match(at.text, QUEUED);
    await c.expect('QUIT', 221);
    c.close();
    const files = await waitForMail(gwA, 'big-at-limit');
    assert.equal(files.length, 1);
    assert.ok(readFileSync(files[0], 'latin1').endsWith(messageOfSize(MAX_MESSAGE, 'at limit')));
    await sleep(200);
    assert.deepEqual(mailFiles(gwA, 'big-refused'), [], 'nothing of the refused messages was delivered');
  });

  test(`a header block larger than maxHeaderSize (${MAX_HEADER}) gets 552 5.3.4; a smaller one is accepted`, async () => {
    const c = await session(gwA);
    let head = 'Subject: many headers\r\n';
    for (let i = 0; head.length <= MAX_HEADER + 500; i++) head += `X-Filler-${i}: ${'h'.repeat(40)}\r\n`;
    const r = await sendData(c, 'hdr-refused', `${head}\r\nsmall body\r\n`);
    assert.equal(r.text, `552 5.3.4 Message header size exceeds the limit of ${MAX_HEADER} octets`);
    const one = await sendData(c, 'hdr-refused', `Subject: x\r\nX-Long: ${'L'.repeat(3000)}\r\n\r\nbody\r\n`);
    assert.match(one.text, /^552 5\.3\.4 /, 'one long header line counts too');
    assert.equal((await c.cmd('NOOP')).text, '250 2.0.0 OK');
    // Well under the header limit, with a body far bigger than it.
    const okHead = `Subject: fine\r\nX-Pad: ${'p'.repeat(1200)}\r\n`;
    const ok = await sendData(c, 'hdr-ok', `${okHead}\r\n` + `${'c'.repeat(78)}\r\n`.repeat(60));
    assert.match(ok.text, QUEUED);
    c.close();
    assert.equal((await waitForMail(gwA, 'hdr-ok')).length, 1);
    assert.deepEqual(mailFiles(gwA, 'hdr-refused'), []);
  });

  test(`mail loop: more than smtp.maxReceivedHeaders (${MAX_HOPS}) Received: fields gets 554 5.4.6 after the data, never queued; at the limit it is accepted`, async () => {
    const c = await session(gwA);
    const hops = (n: number) =>
      Array.from(
        { length: n },
        (_, i) =>
          `Received: from h${i}.fabrikam.test\r\n\tby h${i + 1}.fabrikam.test; Tue, 1 Dec 2026 10:00:00 +0000\r\n`,
      ).join('');
    const r = await sendData(c, 'loop-refused', `${hops(MAX_HOPS + 1)}Subject: loop\r\n\r\nbody\r\n`);
    assert.equal(
      r.text,
      `554 5.4.6 Too many hops (mail loop?): ${MAX_HOPS + 1} Received: header fields, at most ${MAX_HOPS} allowed`,
    );
    assert.equal((await c.cmd('NOOP')).text, '250 2.0.0 OK', 'the session continues');
    const ok = await sendData(c, 'loop-ok', `${hops(MAX_HOPS)}Subject: not a loop\r\n\r\n${hops(3)}\r\n`);
    assert.match(ok.text, QUEUED, 'Received lines in the body do not count');
    c.close();
    assert.equal((await waitForMail(gwA, 'loop-ok')).length, 1);
    assert.deepEqual(mailFiles(gwA, 'loop-refused'), []);
    await gwA.waitForLog((e) => e.event === 'message.rejected' && e.enhanced === '5.4.6');
  });
});

// ---------------------------------------------------------------------------------------------
// (h) timeouts

describe('timeouts (smtp.timeouts.command = 1 s)', () => {
  test('an idle client gets "421 4.4.2" after about a second and is disconnected', async () => {
    const c = await SmtpClient.connect(gwT.port);
    const t0 = Date.now();
    assert.equal((await must(c)).code, 220);
    const r = await must(c, 5000);
    const waited = Date.now() - t0;
    assert.equal(r.text, '421 4.4.2 mx1.contoso.test Error: timeout exceeded');
    assert.ok(waited >= 800 && waited < 3000, `timed out after ${waited} ms`);
    assert.ok(await closesWithin(c, 3000), 'disconnected');
  });

  test('a slow-drip client (one byte every 300 ms, never a whole line) gets 421 4.4.2 within a few seconds', async () => {
    const c = await SmtpClient.connect(gwT.port);
    c.sock.setNoDelay(true);
    assert.equal((await must(c)).code, 220);
    const t0 = Date.now();
    const drip = 'NOOPNOOPNOOPNOOPNOOP';
    // Poll what arrived (a timed-out read() would leave a waiter behind that eats the reply).
    for (let i = 0; i < drip.length && !c.closed && !c.received.includes('\r\n421 '); i++) {
      c.write(drip[i]);
      await sleep(300);
    }
    const elapsed = Date.now() - t0;
    assert.equal(
      c.received,
      '220 mx1.contoso.test ESMTP Portcullis\r\n421 4.4.2 mx1.contoso.test Error: timeout exceeded\r\n',
      `after dripping for ${elapsed} ms`,
    );
    assert.ok(elapsed < 3000, `took ${elapsed} ms`);
    assert.ok(await closesWithin(c, 3000), 'disconnected');
  });

  test('control: a client sending a command every 600 ms stays connected past the timeout', async () => {
    const c = await session(gwT);
    for (let i = 0; i < 4; i++) {
      await sleep(600);
      assert.equal((await c.cmd('NOOP', 2000)).text, '250 2.0.0 OK');
    }
    assert.equal(c.closed, false);
    c.close();
  });
});

// ---------------------------------------------------------------------------------------------
// (i) connection floods

describe('connection limits', () => {
  test('maxConnections 5: 20 more connections get "421 4.7.0" and are closed; held sessions keep working; afterwards mail flows', async () => {
    const held: SmtpClient[] = [];
    for (let i = 0; i < 5; i++) held.push(await session(gwC));
    const extra = await Promise.all(Array.from({ length: 20 }, () => SmtpClient.connect(gwC.port)));
    const replies = await Promise.all(extra.map((c) => c.read(5000)));
    for (const r of replies) assert.equal(r?.text, '421 4.7.0 Too many connections, try again later');
    const closed = await Promise.all(extra.map((c) => closesWithin(c, 3000)));
    assert.equal(closed.filter(Boolean).length, 20, 'every refused connection was closed');
    for (const c of extra) c.close();
    for (const c of held) assert.equal((await c.cmd('NOOP')).text, '250 2.0.0 OK', 'held sessions are unaffected');
    for (const c of held) {
      c.write('QUIT\r\n');
      c.close();
    }
    // The slots come back as the server notices the closes (bounded wait).
    let c: SmtpClient | null = null;
    const until = Date.now() + 5000;
    while (!c && Date.now() < until) {
      const x = await SmtpClient.connect(gwC.port);
      const g = await x.read(2000);
      if (g?.code === 220) c = x;
      else {
        x.close();
        await sleep(50);
      }
    }
    assert.ok(c, 'a new connection is admitted after the held ones closed');
    await c.expect('EHLO client.test', 250);
    const r = await sendData(c, 'after-flood', 'Subject: after flood\r\n\r\nhello\r\n');
    assert.match(r.text, QUEUED);
    await c.expect('QUIT', 221);
    c.close();
    assert.equal((await waitForMail(gwC, 'after-flood')).length, 1);
    assert.ok(gwC.events().filter((e) => e.event === 'session.rejected').length >= 20);
  });

  test('maxConnectionsPerIP 2: the 3rd from 127.0.0.1 gets 421 4.7.0, 127.0.0.2 still gets 220', async () => {
    const a1 = await session(gwP, '127.0.0.1');
    const a2 = await session(gwP, '127.0.0.1');
    const a3 = await SmtpClient.connect(gwP.port, '127.0.0.1', '127.0.0.1');
    assert.equal((await a3.read(5000))?.text, '421 4.7.0 Too many connections from your address, try again later');
    assert.ok(await closesWithin(a3, 3000), '3rd connection closed');
    const b1 = await SmtpClient.connect(gwP.port, '127.0.0.1', '127.0.0.2');
    assert.equal(b1.sock.localAddress, '127.0.0.2');
    const g = await must(b1);
    assert.equal(g.code, 220, g.text);
    await b1.expect('EHLO other.test', 250);
    const b2 = await session(gwP, '127.0.0.2');
    const b3 = await SmtpClient.connect(gwP.port, '127.0.0.1', '127.0.0.2');
    assert.match((await b3.read(5000))?.text ?? 'closed', /^421 4\.7\.0 /, '127.0.0.2 has its own limit of 2');
    // Closing one 127.0.0.1 session frees exactly that address's slot.
    a1.close();
    let again: SmtpClient | null = null;
    const until = Date.now() + 5000;
    while (!again && Date.now() < until) {
      const x = await SmtpClient.connect(gwP.port, '127.0.0.1', '127.0.0.1');
      const r = await x.read(2000);
      if (r?.code === 220) again = x;
      else {
        x.close();
        await sleep(50);
      }
    }
    assert.ok(again, '127.0.0.1 admitted again after one of its sessions closed');
    const rej = gwP.events().filter((e) => e.event === 'session.rejected');
    assert.ok(rej.some((e) => e.ip === '127.0.0.1') && rej.some((e) => e.ip === '127.0.0.2'));
    for (const c of [a2, a3, b1, b2, b3, again]) c.close();
  });
});

// ---------------------------------------------------------------------------------------------
// (j) PIPELINING

describe('PIPELINING', () => {
  test('MAIL, RCPT, RCPT, DATA in one write get their 4 replies in order; the message is accepted', async () => {
    const c = await SmtpClient.connect(gwA.port);
    const ehlo = await c.hello();
    assert.match(ehlo.text, /^250-PIPELINING$/m);
    c.write('MAIL FROM:<p@fabrikam.test>\r\nRCPT TO:<pipe1@contoso.test>\r\nRCPT TO:<pipe2@contoso.test>\r\nDATA\r\n');
    const got = [];
    for (let i = 0; i < 4; i++) got.push((await must(c)).text);
    assert.deepEqual(got, [
      '250 2.1.0 Sender OK',
      '250 2.1.5 Recipient OK',
      '250 2.1.5 Recipient OK',
      '354 2.0.0 Start mail input; end with <CRLF>.<CRLF>',
    ]);
    c.write('Subject: pipelined\r\n\r\nbody\r\n.\r\n');
    assert.match((await must(c)).text, QUEUED);
    await c.expect('QUIT', 221);
    c.close();
    assert.equal((await waitForMail(gwA, 'pipe1')).length, 1);
    assert.equal((await waitForMail(gwA, 'pipe2')).length, 1);
  });

  test('a refused recipient inside a pipelined group keeps the order; message content and the next group (RSET, QUIT) in one write after the 354', async () => {
    const c = await session(gwA);
    c.write(
      'MAIL FROM:<p@fabrikam.test>\r\nRCPT TO:<pipe3@contoso.test>\r\nRCPT TO:<x@other.test>\r\nRCPT TO:<pipe4@contoso.test>\r\nDATA\r\n',
    );
    const got: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await c.read(5000);
      if (!r) break;
      got.push(r.text.slice(0, 9));
    }
    // Message content may start a group (RFC 2920 §3.1).
    c.write('Subject: p2\r\n\r\nb\r\n.\r\nRSET\r\nQUIT\r\n');
    for (let i = 0; i < 3; i++) {
      const r = await c.read(5000);
      if (!r) break;
      got.push(r.text.slice(0, 9));
    }
    assert.deepEqual(got, [
      '250 2.1.0',
      '250 2.1.5',
      '550 5.7.1',
      '250 2.1.5',
      '354 2.0.0',
      '250 2.0.0',
      '250 2.0.0',
      '221 2.0.0',
    ]);
    assert.ok(await closesWithin(c, 3000));
    assert.equal((await waitForMail(gwA, 'pipe4')).length, 1);
  });
});

// ---------------------------------------------------------------------------------------------
// (k) error limit, (l) HTTP

describe(`error limit (smtp.maxErrors = ${MAX_ERRORS})`, () => {
  test('unknown commands: the 5th error is followed by 421 4.7.0 and the connection closes; 4 are tolerated', async () => {
    const c = await session(gwA);
    for (let i = 1; i < MAX_ERRORS; i++)
      assert.equal((await c.cmd(`XYZZY${i}`)).text, '500 5.5.2 Command not recognized');
    assert.equal((await c.cmd('NOOP')).text, '250 2.0.0 OK', `${MAX_ERRORS - 1} errors are tolerated`);
    assert.equal((await c.cmd('XYZZY5')).text, '500 5.5.2 Command not recognized');
    assert.equal((await must(c)).text, '421 4.7.0 mx1.contoso.test Error: too many errors');
    assert.ok(await closesWithin(c, 3000), 'connection closed');
  });

  test('pipelined: 8 unknown commands in one write get exactly 5 × 500 then 421, nothing more', async () => {
    const c = await session(gwA);
    const mark = c.received.length;
    c.write(Array.from({ length: 8 }, (_, i) => `BOGUS${i}\r\n`).join(''));
    assert.ok(await closesWithin(c, 3000), 'connection closed');
    assert.equal(
      c.received.slice(mark),
      '500 5.5.2 Command not recognized\r\n'.repeat(5) + '421 4.7.0 mx1.contoso.test Error: too many errors\r\n',
    );
  });

  test('relay attempts count as errors too', async () => {
    const c = await session(gwA);
    await c.expect('MAIL FROM:<spam@evil.test>', 250);
    for (let i = 0; i < MAX_ERRORS - 1; i++)
      assert.match((await c.cmd(`RCPT TO:<user${i}@other.test>`)).text, /^550 5\.7\.1 /);
    assert.match((await c.cmd('RCPT TO:<user@relay.test>')).text, /^550 5\.7\.1 /);
    assert.match((await must(c)).text, /^421 4\.7\.0 /);
    assert.ok(await closesWithin(c, 3000), 'connection closed');
  });
});

describe('HTTP on the SMTP port', () => {
  for (const line of ['GET / HTTP/1.1', 'POST /submit HTTP/1.1', 'CONNECT mx.example.test:25 HTTP/1.1']) {
    test(`"${line}" gets 421 and the connection closes`, async () => {
      const c = await session(gwA);
      const mark = c.received.length;
      c.write(`${line}\r\nHost: mx1.contoso.test\r\nUser-Agent: test\r\n\r\n`);
      const r = await must(c);
      assert.equal(r.text, '421 4.7.0 mx1.contoso.test Protocol error: this is an SMTP server');
      assert.ok(await closesWithin(c, 3000), 'connection closed');
      assert.equal(c.received.slice(mark), `${r.text}\r\n`, 'the header lines after the request line got no replies');
    });
  }
});
