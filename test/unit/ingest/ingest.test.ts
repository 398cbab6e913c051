import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ingest, type Handoff } from '../../../src/ingest/ingest.ts';
import type { NewMessage, QueueMessage, Store } from '../../../src/store/types.ts';
import { longestLine } from '../../../src/util/lines.ts';

/** A store seam that keeps what ingest enqueues. */
function capture(): { ingest: Ingest; stored: NewMessage[] } {
  const stored: NewMessage[] = [];
  const store = { enqueue: async (m: NewMessage) => { stored.push(m); return { id: m.id } as QueueMessage; } } as unknown as Store;
  const handoff: Handoff = { reserve: () => undefined, take: () => {}, kick: () => {}, unreserve: () => {} };
  return { ingest: new Ingest(store, handoff), stored };
}

const inbound = { sessionId: 's', clientIp: '127.0.0.1', clientPort: 1, helo: 'client.test', protocol: 'ESMTP', receivedBy: 'mx1.contoso.test' };
const rcpt = [{ address: 'b@contoso.test', org: 'contoso', route: 'local' as const }];

test('accept records the longest line: the decoder measure, or the Received header when longer', async () => {
  const { ingest, stored } = capture();
  await ingest.accept({ org: 'contoso', mailFrom: 'a@x.test', envelope: { smtputf8: false }, recipients: rcpt, inbound, chunks: [Buffer.from('Subject: s\r\n\r\nhi\r\n')], longestLine: 1500 });
  assert.equal(stored[0].envelope.longestLine, 1500);
  await ingest.accept({ org: 'contoso', mailFrom: 'a@x.test', envelope: { smtputf8: false }, recipients: rcpt, inbound, chunks: [Buffer.from('S: s\r\n\r\nhi\r\n')], longestLine: 4 });
  assert.equal(stored[1].envelope.longestLine, longestLine(stored[1].data), 'the Received header line is longer than the data lines');
  assert.ok(stored[1].envelope.longestLine! > 4);
});

test('accept measures the data itself when no measure is given', async () => {
  const { ingest, stored } = capture();
  await ingest.accept({ org: 'contoso', mailFrom: 'a@x.test', envelope: { smtputf8: false }, recipients: rcpt, inbound, chunks: [Buffer.from(`Subject: s\r\n\r\n${'x'.repeat(2000)}\r\n`)] });
  assert.equal(stored[0].envelope.longestLine, 2000);
});

test('a generated message (DSN) returning 8-bit content is recorded as 8-bit, with its longest line', async () => {
  const { ingest, stored } = capture();
  const g = { org: 'contoso', to: { address: 'a@contoso.test', route: 'local' as const }, messageId: '<m@x>', host: 'mx1.contoso.test', regarding: 'Q1' };
  await ingest.generated({ ...g, data: Buffer.from(`Subject: DSN\r\n\r\nGrüße\r\n${'y'.repeat(1200)}\r\n`) });
  assert.equal(stored[0].envelope.body, '8BITMIME');
  assert.equal(stored[0].envelope.longestLine, 1200);
  await ingest.generated({ ...g, data: Buffer.from('Subject: DSN\r\n\r\nplain\r\n') });
  assert.equal(stored[1].envelope.body, undefined);
  assert.equal(stored[1].envelope.longestLine, 12);
});

test('TLS-Required: No is recorded with the envelope, unless MAIL FROM carried REQUIRETLS (RFC 8689 §4.1)', async () => {
  const { ingest, stored } = capture();
  const chunks = (h: string) => [Buffer.from(`Subject: s\r\n${h}\r\nhi\r\n`)];
  await ingest.accept({ org: 'contoso', mailFrom: 'a@x.test', envelope: { smtputf8: false }, recipients: rcpt, inbound, chunks: chunks('TLS-Required: No\r\n') });
  await ingest.accept({ org: 'contoso', mailFrom: 'a@x.test', envelope: { smtputf8: false }, recipients: rcpt, inbound, chunks: chunks('tls-required:\r\n  no\r\n') });
  await ingest.accept({ org: 'contoso', mailFrom: 'a@x.test', envelope: { smtputf8: false, requireTls: true }, recipients: rcpt, inbound, chunks: chunks('TLS-Required: No\r\n') });
  await ingest.accept({ org: 'contoso', mailFrom: 'a@x.test', envelope: { smtputf8: false }, recipients: rcpt, inbound, chunks: chunks('TLS-Required: Yes\r\n') });
  await ingest.accept({ org: 'contoso', mailFrom: 'a@x.test', envelope: { smtputf8: false }, recipients: rcpt, inbound, chunks: [Buffer.from('Subject: s\r\n\r\nTLS-Required: No\r\n')] });
  assert.deepEqual(stored.map((m) => m.envelope.tlsRequiredNo), [true, true, undefined, undefined, undefined]);
  assert.equal(stored[2].envelope.requireTls, true);
});
