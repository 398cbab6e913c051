// Write backpressure in the SMTP session (issue 8, item 3): a client that pipelines commands and
// never reads the replies must not make the gateway buffer them without bound. The session stops
// reading once MAX_UNSENT octets of replies wait unsent, and resumes when they drain — also when
// it is at the same time waiting for the store (a session both busy and backpressured resumes
// only when both are clear). Real sockets on loopback; the store is a promise the test settles.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { MAX_UNSENT, SmtpSession, type SessionDeps } from '../../../src/inbound/session.ts';
import type { Ingest } from '../../../src/ingest/ingest.ts';
import { sessionDeps } from '../../helpers/session.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Unsent replies may exceed MAX_UNSENT by what one flush hands over (16 KiB) plus one reply. */
const UNSENT_BOUND = MAX_UNSENT + 16 * 1024 + 1024;

const deps = sessionDeps;

/** A session on a loopback listener; resolves with the server side of the connection and a client that does not read. */
async function connect(d: SessionDeps): Promise<{ server: net.Socket; client: net.Socket; done: () => Promise<void> }> {
  let resolveServer!: (s: net.Socket) => void;
  const serverSide = new Promise<net.Socket>((r) => {
    resolveServer = r;
  });
  const srv = net.createServer((s) => {
    new SmtpSession(s, d, { ended() {}, closed() {} });
    resolveServer(s);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const client = net.connect({ port: (srv.address() as net.AddressInfo).port, host: '127.0.0.1' });
  client.on('error', () => {});
  const server = await serverSide;
  return {
    server,
    client,
    done: async () => {
      client.destroy();
      server.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

/** Read from the (paused) client until `done(text so far)` or `ms` pass; small replies only. */
async function readUntil(c: net.Socket, done: (s: string) => boolean, ms: number): Promise<string> {
  let text = '';
  const end = Date.now() + ms;
  for (;;) {
    for (let b = c.read() as Buffer | null; b; b = c.read() as Buffer | null) text += b.toString('latin1');
    if (done(text) || Date.now() > end) return text;
    await Promise.race([once(c, 'readable'), sleep(200)]);
  }
}

/** Read everything until `needle` was seen `n` times (or `ms` pass); returns the count and the first 200 octets. */
async function readCounting(
  c: net.Socket,
  needle: string,
  n: number,
  ms: number,
): Promise<{ seen: number; head: string }> {
  let seen = 0;
  let head = '';
  let tail = '';
  const end = Date.now() + ms;
  while (seen < n && Date.now() < end) {
    for (let b = c.read() as Buffer | null; b; b = c.read() as Buffer | null) {
      const t = tail + b.toString('latin1');
      if (head.length < 200) head += t.slice(0, 200 - head.length);
      for (let i = t.indexOf(needle); i >= 0; i = t.indexOf(needle, i + needle.length)) seen++;
      tail = t.slice(-(needle.length - 1));
    }
    if (seen < n) await Promise.race([once(c, 'readable'), sleep(200)]);
  }
  return { seen, head };
}

/** Wait (bounded) until the gateway holds more than MAX_UNSENT unsent octets (it is then backpressured), and a little longer. */
async function backpressured(server: net.Socket, maxMs = 20_000): Promise<void> {
  const end = Date.now() + maxMs;
  while (server.writableLength <= MAX_UNSENT && Date.now() < end) await sleep(50);
  await sleep(500); // were it still reading, the unsent replies would keep growing now
}

test('pipelined EHLOs from a client that never reads: reading stops at MAX_UNSENT unsent octets; every reply arrives once it reads', async () => {
  // The reproduction (EHLO is not pipelinable, so only with forbidUnauthPipelining off).
  const { server, client, done } = await connect(deps({ forbidUnauthPipelining: false }));
  try {
    const greeting = await readUntil(client, (s) => s.includes('\r\n'), 5000);
    assert.match(greeting, /^220 /);
    const n = 256 * 1024; // 2 MiB of "EHLO x\r\n"; each reply is ~100 octets
    client.write(Buffer.from('EHLO x\r\n'.repeat(n)));
    await backpressured(server);
    assert.ok(
      server.writableLength <= UNSENT_BOUND,
      `unsent replies held by the gateway: ${server.writableLength} octets (bound ${UNSENT_BOUND})`,
    );
    assert.ok(server.bytesRead < n * 8, `the gateway stopped reading (read ${server.bytesRead} of ${n * 8} octets)`);
    const r = await readCounting(client, '250 CHUNKING\r\n', n, 60_000);
    assert.equal(r.seen, n, 'one EHLO reply per EHLO, none lost');
    assert.equal(server.bytesRead, 'EHLO x\r\n'.length * n, 'and everything was read in the end');
    client.write('QUIT\r\n');
    const bye = await readUntil(client, (s) => s.includes('221 '), 5000);
    assert.match(bye, /221 2\.0\.0 /);
  } finally {
    await done();
  }
});

test('busy (waiting for the store) and backpressured at once: the session reads on only when both are clear', async () => {
  let commit!: () => void;
  const stored = new Promise<void>((r) => {
    commit = r;
  });
  const ingest: Partial<Ingest> = {
    accept: async () => {
      await stored;
      return { ok: true as const, copies: [{ queueId: 'Q1', org: 'contoso', recipients: 1 }] };
    },
  };
  const { server, client, done } = await connect(deps({}, ingest));
  try {
    await readUntil(client, (s) => s.includes('\r\n'), 5000);
    client.write('EHLO client.test\r\n');
    await readUntil(client, (s) => s.includes('250 CHUNKING\r\n'), 5000);
    client.write('MAIL FROM:<a@fabrikam.test>\r\nRCPT TO:<u@contoso.test>\r\nDATA\r\n');
    await readUntil(client, (s) => s.includes('354 '), 5000);
    // The message, then RSETs pipelined behind it (allowed: message content may start a group).
    const n = 300_000;
    client.write(Buffer.concat([Buffer.from('Subject: x\r\n\r\nhi\r\n.\r\n'), Buffer.from('RSET\r\n'.repeat(n))]));
    await sleep(1000);
    assert.equal(server.writableLength, 0, 'nothing was answered while the message is being stored');
    const readWhileBusy = server.bytesRead;
    assert.ok(readWhileBusy < 256 * 1024, `reading paused while busy (read ${readWhileBusy})`);
    await sleep(500);
    assert.equal(server.bytesRead, readWhileBusy, 'and stays paused');
    commit();
    await backpressured(server);
    assert.ok(
      server.writableLength <= UNSENT_BOUND,
      `unsent replies after the commit: ${server.writableLength} (bound ${UNSENT_BOUND})`,
    );
    assert.ok(server.bytesRead < 21 + n * 6, `reading paused again once replies piled up (read ${server.bytesRead})`);
    const r = await readCounting(client, '250 2.0.0 Reset state\r\n', n, 60_000);
    assert.match(r.head, /^250 2\.0\.0 OK queued as Q1\r\n250 2\.0\.0 Reset state\r\n/);
    assert.equal(r.seen, n, 'every RSET answered, after the 250');
  } finally {
    await done();
  }
});
