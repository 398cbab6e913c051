import { test } from 'node:test';
import assert from 'node:assert/strict';
import { headerText, Ingest, type Handoff } from '../../../src/ingest/ingest.ts';
import type { NewMessage, QueueMessage, Store } from '../../../src/store/types.ts';
import { longestLine } from '../../../src/util/lines.ts';

/** A store seam that keeps what ingest enqueues. */
function capture(maxReceivedHeaders = 100): { ingest: Ingest; stored: NewMessage[] } {
  const stored: NewMessage[] = [];
  const store = {
    enqueue: async (m: NewMessage) => {
      stored.push(m);
      return { id: m.id } as QueueMessage;
    },
  } as unknown as Store;
  const handoff: Handoff = { reserve: () => undefined, take: () => {}, kick: () => {}, unreserve: () => {} };
  return { ingest: new Ingest(store, handoff, () => ({ maxReceivedHeaders })), stored };
}

const inbound = {
  sessionId: 's',
  clientIp: '127.0.0.1',
  clientPort: 1,
  helo: 'client.test',
  protocol: 'ESMTP',
  receivedBy: 'mx1.contoso.test',
};
const rcpt = [{ address: 'b@contoso.test', org: 'contoso', route: 'local' as const }];

test('accept records the longest line: the decoder measure, or the Received header when longer', async () => {
  const { ingest, stored } = capture();
  await ingest.accept({
    org: 'contoso',
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false },
    recipients: rcpt,
    inbound,
    chunks: [Buffer.from('Subject: s\r\n\r\nhi\r\n')],
    longestLine: 1500,
  });
  assert.equal(stored[0].envelope.longestLine, 1500);
  await ingest.accept({
    org: 'contoso',
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false },
    recipients: rcpt,
    inbound,
    chunks: [Buffer.from('S: s\r\n\r\nhi\r\n')],
    longestLine: 4,
  });
  assert.equal(
    stored[1].envelope.longestLine,
    longestLine(stored[1].data),
    'the Received header line is longer than the data lines',
  );
  assert.ok(stored[1].envelope.longestLine! > 4);
});

test('accept measures the data itself when no measure is given', async () => {
  const { ingest, stored } = capture();
  await ingest.accept({
    org: 'contoso',
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false },
    recipients: rcpt,
    inbound,
    chunks: [Buffer.from(`Subject: s\r\n\r\n${'x'.repeat(2000)}\r\n`)],
  });
  assert.equal(stored[0].envelope.longestLine, 2000);
});

test('a generated message (DSN) returning 8-bit content is recorded as 8-bit, with its longest line', async () => {
  const { ingest, stored } = capture();
  const g = {
    org: 'contoso',
    to: { address: 'a@contoso.test', route: 'local' as const },
    messageId: '<m@x>',
    host: 'mx1.contoso.test',
    regarding: 'Q1',
  };
  await ingest.generated({ ...g, data: Buffer.from(`Subject: DSN\r\n\r\nGrüße\r\n${'y'.repeat(1200)}\r\n`) });
  assert.equal(stored[0].envelope.body, '8BITMIME');
  assert.equal(stored[0].envelope.longestLine, 1200);
  await ingest.generated({ ...g, data: Buffer.from('Subject: DSN\r\n\r\nplain\r\n') });
  assert.equal(stored[1].envelope.body, undefined);
  assert.equal(stored[1].envelope.longestLine, 12);
});

test('mail loops (RFC 5321 §6.3): more Received: fields than smtp.maxReceivedHeaders is refused 554 5.4.6, never queued', async () => {
  const { ingest, stored } = capture(3);
  const received = (n: number) =>
    Array.from(
      { length: n },
      (_, i) => `Received: from hop${i}.test\r\n\tby mx.test; Tue, 1 Dec 2026 10:00:00 +0000\r\n`,
    ).join('');
  const send = (head: string, body = 'hi\r\n') =>
    ingest.accept({
      org: 'contoso',
      mailFrom: 'a@x.test',
      envelope: { smtputf8: false },
      recipients: rcpt,
      inbound,
      chunks: [Buffer.from(`${head}Subject: s\r\n\r\n${body}`)],
    });
  const at = await send(received(3));
  assert.equal(at.ok, true, 'at the limit: accepted');
  const over = await send(received(4));
  assert.equal(over.ok, false);
  assert.ok(!over.ok && over.reply.code === 554 && over.reply.enhanced === '5.4.6');
  assert.ok(
    !over.ok &&
      /^Too many hops \(mail loop\?\): 4 Received: header fields, at most 3 allowed$/.test(over.reply.message),
    !over.ok ? over.reply.message : '',
  );
  assert.equal(stored.length, 1, 'the refused message was not queued');
  // Only the header section counts: Received lines in the body, or a case-different field name split across chunks.
  assert.equal((await send(received(2), received(10))).ok, true, 'Received: lines in the body do not count');
  const split = Buffer.from(`${received(4)}Subject: s\r\n\r\nhi\r\n`);
  const r = await ingest.accept({
    org: 'contoso',
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false },
    recipients: rcpt,
    inbound,
    chunks: [split.subarray(0, 30), split.subarray(30, 100), split.subarray(100)],
  });
  assert.equal(r.ok, false, 'counted across chunk boundaries');
  assert.equal(
    (await send(received(4).replace(/Received:/g, 'RECEIVED:'))).ok,
    false,
    'field names are case-insensitive',
  );
  assert.equal(
    (await send('X-Received: x\r\nX-Received: x\r\nX-Received: x\r\nX-Received: x\r\n')).ok,
    true,
    'other fields ending in "Received" do not count',
  );
});

test('TLS-Required: No is recorded with the envelope, unless MAIL FROM carried REQUIRETLS (RFC 8689 §4.1)', async () => {
  const { ingest, stored } = capture();
  const chunks = (h: string) => [Buffer.from(`Subject: s\r\n${h}\r\nhi\r\n`)];
  await ingest.accept({
    org: 'contoso',
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false },
    recipients: rcpt,
    inbound,
    chunks: chunks('TLS-Required: No\r\n'),
  });
  await ingest.accept({
    org: 'contoso',
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false },
    recipients: rcpt,
    inbound,
    chunks: chunks('tls-required:\r\n  no\r\n'),
  });
  await ingest.accept({
    org: 'contoso',
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false, requireTls: true },
    recipients: rcpt,
    inbound,
    chunks: chunks('TLS-Required: No\r\n'),
  });
  await ingest.accept({
    org: 'contoso',
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false },
    recipients: rcpt,
    inbound,
    chunks: chunks('TLS-Required: Yes\r\n'),
  });
  await ingest.accept({
    org: 'contoso',
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false },
    recipients: rcpt,
    inbound,
    chunks: [Buffer.from('Subject: s\r\n\r\nTLS-Required: No\r\n')],
  });
  assert.deepEqual(
    stored.map((m) => m.envelope.tlsRequiredNo),
    [true, true, undefined, undefined, undefined],
  );
  assert.equal(stored[2].envelope.requireTls, true);
});

test('a store failure is a 4xx reply, never an exception: a full disk (SQLite or PostgreSQL) 452 4.3.1, anything else 451 4.3.0', async () => {
  const failing = (code: string) => {
    const store = {
      enqueue: async () => {
        throw Object.assign(new Error(`store failed (${code})`), { code });
      },
    } as unknown as Store;
    return new Ingest(store, { reserve: () => undefined, take: () => {}, kick: () => {}, unreserve: () => {} }, () => ({
      maxReceivedHeaders: 100,
    }));
  };
  const t = {
    org: 'contoso',
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false },
    recipients: rcpt,
    inbound,
    chunks: [Buffer.from('Subject: s\r\n\r\nhi\r\n')],
  };
  for (const [code, reply] of [
    ['SQLITE_FULL', '452 4.3.1'],
    ['53100', '452 4.3.1'],
    ['ECONNREFUSED', '451 4.3.0'],
    ['57P01', '451 4.3.0'],
    ['SQLITE_IOERR', '451 4.3.0'],
  ]) {
    const r = await failing(code).accept(t);
    assert.ok(!r.ok, code);
    assert.equal(`${r.reply.code} ${r.reply.enhanced}`, reply, code);
  }
});

test('the header section is found wherever the chunks split it, its empty line across a seam too', () => {
  const whole = 'Subject: x\r\nMessage-ID:\r\n <a@b>\r\n\r\nbody\r\n\r\nmore\r\n';
  const head = 'Subject: x\r\nMessage-ID:\r\n <a@b>\r\n';
  const b = Buffer.from(whole, 'latin1');
  for (let i = 0; i <= b.length; i++)
    for (let j = i; j <= b.length; j++) {
      const chunks = [b.subarray(0, i), b.subarray(i, j), b.subarray(j)];
      assert.equal(headerText(chunks), head, `split at ${i} and ${j}`);
    }
  // No empty line: the whole message is its header section.
  assert.equal(headerText([Buffer.from('Subject: x\r\n')]), 'Subject: x\r\n');
  assert.equal(headerText([Buffer.from('Subject: x\r\n'), Buffer.from('\r'), Buffer.from('\nbody')]), 'Subject: x\r\n');
});
