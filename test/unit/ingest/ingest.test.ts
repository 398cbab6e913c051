import { test } from 'node:test';
import assert from 'node:assert/strict';
import { headerText, Ingest, type Handoff } from '../../../src/ingest/ingest.ts';
import type { NewEntry, NewMessage, QueueMessage, Store } from '../../../src/store/types.ts';
import { longestLine } from '../../../src/util/lines.ts';

/** A store seam that keeps what ingest enqueues. */
function capture(maxReceivedHeaders = 100): { ingest: Ingest; stored: NewMessage[]; commits: string[][] } {
  const stored: NewMessage[] = [];
  const commits: string[][] = [];
  const store = {
    enqueue: async (m: NewMessage) => {
      stored.push(m);
      commits.push([m.id]);
      return { id: m.id } as QueueMessage;
    },
    enqueueAll: async (ms: NewEntry[]) => {
      stored.push(...ms.map((e) => e.message));
      commits.push(ms.map((e) => e.message.id));
      return ms.map((e) => ({ id: e.message.id }) as QueueMessage);
    },
  } as unknown as Store;
  const handoff: Handoff = { reserve: () => undefined, take: () => {}, kick: () => {}, unreserve: () => {} };
  return { ingest: new Ingest(store, handoff, () => ({ maxReceivedHeaders })), stored, commits };
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
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false },
    recipients: rcpt,
    inbound,
    chunks: [Buffer.from('Subject: s\r\n\r\nhi\r\n')],
    longestLine: 1500,
  });
  assert.equal(stored[0].envelope.longestLine, 1500);
  await ingest.accept({
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
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false },
    recipients: rcpt,
    inbound,
    chunks: chunks('TLS-Required: No\r\n'),
  });
  await ingest.accept({
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false },
    recipients: rcpt,
    inbound,
    chunks: chunks('tls-required:\r\n  no\r\n'),
  });
  await ingest.accept({
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false, requireTls: true },
    recipients: rcpt,
    inbound,
    chunks: chunks('TLS-Required: No\r\n'),
  });
  await ingest.accept({
    mailFrom: 'a@x.test',
    envelope: { smtputf8: false },
    recipients: rcpt,
    inbound,
    chunks: chunks('TLS-Required: Yes\r\n'),
  });
  await ingest.accept({
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

test("recipients of several organisations: one message per organisation, in one commit; an onPremises sender's stays one", async () => {
  const { ingest, stored, commits } = capture();
  const recipients = [
    { address: 'a@contoso.test', org: 'contoso', route: 'local' as const },
    { address: 'b@tailspin.test', org: 'tailspin', route: 'local' as const },
    { address: 'c@contoso.test', org: 'contoso', route: 'local' as const, notify: 'NEVER' },
  ];
  const t = {
    mailFrom: 'x@internet.test',
    envelope: { smtputf8: false },
    recipients,
    inbound,
    chunks: [Buffer.from('Message-ID: <m1@internet.test>\r\nSubject: s\r\n\r\nhi\r\n')],
  };
  const r = await ingest.accept(t);
  assert.ok(r.ok);
  assert.deepEqual(
    r.copies.map((c) => [c.org, c.recipients]),
    [
      ['contoso', 2],
      ['tailspin', 1],
    ],
  );
  assert.deepEqual(commits, [r.copies.map((c) => c.queueId)], 'both copies in one commit');
  assert.notEqual(r.copies[0].queueId, r.copies[1].queueId);
  assert.deepEqual(
    stored.map((m) => [m.id, m.org, m.recipients.map((x) => x.address), m.messageId]),
    [
      [r.copies[0].queueId, 'contoso', ['a@contoso.test', 'c@contoso.test'], '<m1@internet.test>'],
      [r.copies[1].queueId, 'tailspin', ['b@tailspin.test'], '<m1@internet.test>'],
    ],
  );
  assert.equal(stored[0].recipients[1].notify, 'NEVER', 'recipient parameters are kept');
  // Each copy's Received: field names its own queue id, and only its own recipient.
  const received = stored.map((m) => m.data.toString('latin1').split('\r\n\r\n')[0]);
  assert.match(received[0], new RegExp(`id ${r.copies[0].queueId}\\r\\n\\t;`));
  assert.doesNotMatch(received[0], /for </, 'two recipients: no "for" clause');
  assert.match(received[1], new RegExp(`id ${r.copies[1].queueId}\\s+for <b@tailspin\\.test>`));
  assert.doesNotMatch(received[1], /contoso\.test>/);
  stored.length = 0;
  const own = await ingest.accept({ ...t, sendingOrg: 'contoso' });
  assert.ok(own.ok);
  assert.deepEqual(
    own.copies.map((c) => [c.org, c.recipients]),
    [['contoso', 3]],
    "an onPremises sender's mail is its organisation's, whoever it is for",
  );
  assert.equal(stored.length, 1);
});

test('a failed commit of several copies hands none to delivery and gives every reservation back', async () => {
  const events: string[] = [];
  const store = {
    enqueueAll: async () => {
      throw Object.assign(new Error('disk full'), { code: 'SQLITE_FULL' });
    },
  } as unknown as Store;
  const handoff: Handoff = {
    reserve: () => (events.push('reserve'), { owner: 'w', ms: 1000 }),
    take: () => events.push('take'),
    kick: () => events.push('kick'),
    unreserve: () => events.push('unreserve'),
  };
  const ingest = new Ingest(store, handoff, () => ({ maxReceivedHeaders: 100 }));
  const r = await ingest.accept({
    mailFrom: 'x@internet.test',
    envelope: { smtputf8: false },
    recipients: [
      { address: 'a@contoso.test', org: 'contoso', route: 'local' },
      { address: 'b@tailspin.test', org: 'tailspin', route: 'local' },
    ],
    inbound,
    chunks: [Buffer.from('Subject: s\r\n\r\nhi\r\n')],
  });
  assert.ok(!r.ok && r.reply.code === 452 && r.reply.enhanced === '4.3.1', JSON.stringify(r));
  assert.deepEqual(events, ['reserve', 'reserve', 'unreserve', 'unreserve']);
});
