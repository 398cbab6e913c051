// Delivery status notifications: RFC 3464 structure (RFC 3462 multipart/report), RFC 3461 semantics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildDsn, wantsNotice, type DsnInput, type DsnRecipient } from '../../../src/ingest/dsn.ts';

const original = Buffer.from(
  'From: <alice@contoso.test>\r\nSubject: quarterly numbers\r\nMessage-ID: <m1@contoso.test>\r\n\r\nthe body text\r\n',
);
const rcpt = (o: Partial<DsnRecipient> = {}): DsnRecipient => ({
  address: 'bob@fabrikam.test',
  action: 'failed',
  explanation: 'The server said no.',
  reply: { code: 550, enhanced: '5.1.1', message: 'User unknown' },
  remoteMta: 'mx.fabrikam.test',
  lastAttempt: Date.UTC(2024, 0, 2, 3, 4, 5),
  ...o,
});
const input = (o: Partial<DsnInput> = {}): DsnInput => ({
  reportingMta: 'gw.contoso.test',
  queueId: 'Q123',
  originalFrom: 'alice@contoso.test',
  envelope: { smtputf8: false },
  arrival: Date.UTC(2024, 0, 1, 0, 0, 0),
  recipients: [rcpt()],
  original,
  ...o,
});

/** The message split into its header, and the body parts between the boundary delimiters. */
function parse(data: Buffer) {
  const text = data.toString('utf8');
  const headEnd = text.indexOf('\r\n\r\n');
  const head = text.slice(0, headEnd);
  const boundary = /boundary="([^"]+)"/.exec(head)![1];
  const body = text.slice(headEnd + 4);
  const chunks = body.split(`\r\n--${boundary}`);
  assert.ok(body.includes(`--${boundary}\r\n`), 'first delimiter');
  assert.ok(text.endsWith(`\r\n--${boundary}--\r\n`), 'close delimiter at the end (RFC 2046 §5.1.1)');
  const parts = chunks.slice(1, -1).map((p) => {
    const s = p.replace(/^\r\n/, '');
    const i = s.indexOf('\r\n\r\n');
    return { headers: s.slice(0, i), body: s.slice(i + 4) };
  });
  return { head, boundary, parts };
}
const field = (block: string, name: string) => new RegExp(`^${name}: (.*)$`, 'm').exec(block)?.[1];

test('multipart/report with report-type=delivery-status: notification, delivery-status, original (RFC 3464 §2, RFC 3462)', () => {
  const { head, parts } = parse(buildDsn(input()).data);
  assert.match(field(head, 'Content-Type') ?? '', /^multipart\/report; report-type=delivery-status; boundary="/);
  assert.equal(field(head, 'From'), 'Mail Delivery System <MAILER-DAEMON@gw.contoso.test>');
  assert.equal(field(head, 'To'), '<alice@contoso.test>');
  assert.equal(field(head, 'Auto-Submitted'), 'auto-replied', 'RFC 3834: no auto-reply loops');
  assert.equal(field(head, 'Subject'), 'Undelivered Mail Returned to Sender');
  assert.match(field(head, 'Message-ID') ?? '', /^<Q123\.[0-9a-f]{8}@gw\.contoso\.test>$/);
  assert.deepEqual(
    parts.map((p) => field(p.headers, 'Content-Type')),
    ['text/plain; charset=utf-8', 'message/delivery-status', 'message/rfc822'],
  );
  assert.match(parts[0].body, /<bob@fabrikam\.test>:\r\n {4}The server said no\./);
  assert.match(parts[0].body, /Queue id: Q123/);
  assert.equal(
    parts[2].body.replace(/\r\n$/, ''),
    original.toString().replace(/\r\n$/, ''),
    'the whole original by default',
  );
});

test('per-message and per-recipient fields (RFC 3464 §2.2, §2.3), blocks separated by a blank line', () => {
  const d = buildDsn(
    input({
      envelope: { smtputf8: false, envid: 'abc+2Bdef+3D1' },
      recipients: [
        rcpt({ orcpt: 'rfc822;bob@fabrikam.test' }),
        rcpt({
          address: 'carol@fabrikam.test',
          remoteMta: undefined,
          lastAttempt: undefined,
          reply: { code: 554, enhanced: '5.7.1', message: 'Policy\r\nrefusal' },
        }),
      ],
    }),
  );
  const status = parse(d.data).parts[1].body;
  const [perMessage, ...perRecipient] = status.replace(/\r\n$/, '').split('\r\n\r\n');
  assert.equal(field(perMessage, 'Reporting-MTA'), 'dns; gw.contoso.test');
  assert.equal(field(perMessage, 'Original-Envelope-Id'), 'abc+def=1', 'ENVID xtext decoded (RFC 3461 §4.4)');
  assert.equal(field(perMessage, 'Arrival-Date'), 'Mon, 01 Jan 2024 00:00:00 +0000');
  assert.equal(perRecipient.length, 2);
  const [bob, carol] = perRecipient;
  assert.equal(
    field(bob, 'Original-Recipient'),
    'rfc822; bob@fabrikam.test',
    'ORCPT as given, addr-type and address (RFC 3464 §2.3.1)',
  );
  assert.equal(field(bob, 'Final-Recipient'), 'rfc822; bob@fabrikam.test');
  assert.equal(field(bob, 'Action'), 'failed');
  assert.equal(field(bob, 'Status'), '5.1.1');
  assert.equal(field(bob, 'Remote-MTA'), 'dns; mx.fabrikam.test');
  assert.equal(field(bob, 'Diagnostic-Code'), 'smtp; 550 5.1.1 User unknown');
  assert.equal(field(bob, 'Last-Attempt-Date'), 'Tue, 02 Jan 2024 03:04:05 +0000');
  assert.equal(field(carol, 'Original-Recipient'), undefined);
  assert.equal(field(carol, 'Remote-MTA'), undefined);
  assert.equal(field(carol, 'Diagnostic-Code'), 'smtp; 554 5.7.1 Policy refusal', 'no line break can end the field');
  assert.ok(
    bob.split('\r\n').every((l) => /^[A-Za-z-]+: /.test(l)),
    'only fields in a block',
  );
});

test('RET=HDRS: only the headers of the original, as text/rfc822-headers (RFC 3461 §4.3, RFC 3462 §3)', () => {
  const { parts } = parse(buildDsn(input({ envelope: { smtputf8: false, ret: 'HDRS' } })).data);
  assert.equal(field(parts[2].headers, 'Content-Type'), 'text/rfc822-headers');
  assert.match(parts[2].body, /Subject: quarterly numbers/);
  assert.doesNotMatch(parts[2].body, /the body text/);
});

test('delay warnings: Action delayed, Will-Retry-Until, headers only; success notices: headers only', () => {
  const until = Date.UTC(2024, 0, 3, 0, 0, 0);
  const delayed = parse(
    buildDsn(
      input({
        recipients: [rcpt({ action: 'delayed', reply: { code: 451, enhanced: '4.4.1', message: 'No answer' } })],
        willRetryUntil: until,
      }),
    ).data,
  );
  assert.equal(field(delayed.head, 'Subject'), 'Delayed Mail (still being retried)');
  assert.equal(field(delayed.parts[1].body, 'Action'), 'delayed');
  assert.equal(field(delayed.parts[1].body, 'Will-Retry-Until'), 'Wed, 03 Jan 2024 00:00:00 +0000');
  assert.equal(field(delayed.parts[2].headers, 'Content-Type'), 'text/rfc822-headers');
  assert.match(delayed.parts[0].body, /Delivery will be retried until Wed, 03 Jan 2024/);
  const relayed = parse(
    buildDsn(
      input({ recipients: [rcpt({ action: 'relayed', reply: { code: 250, enhanced: '2.0.0', message: 'ok' } })] }),
    ).data,
  );
  assert.equal(field(relayed.head, 'Subject'), 'Successful Mail Delivery Report');
  assert.equal(field(relayed.parts[1].body, 'Action'), 'relayed');
  assert.equal(field(relayed.parts[1].body, 'Will-Retry-Until'), undefined);
  assert.equal(field(relayed.parts[2].headers, 'Content-Type'), 'text/rfc822-headers');
});

test('RET=FULL returns the whole message only in a notice that reports a failure; success and delay notices carry the headers (RFC 3461 §4.3)', () => {
  const FULL = { smtputf8: false, ret: 'FULL' as const };
  const ok = rcpt({ action: 'delivered', reply: { code: 250, enhanced: '2.0.0', message: 'ok' } });
  const later = rcpt({ action: 'delayed', reply: { code: 451, enhanced: '4.4.1', message: 'No answer' } });
  const kind = (recipients: DsnRecipient[]) => {
    const p = parse(buildDsn(input({ envelope: FULL, recipients })).data).parts[2];
    return [field(p.headers, 'Content-Type'), p.body.includes('the body text')];
  };
  assert.deepEqual(kind([ok]), ['text/rfc822-headers', false], 'success notice');
  assert.deepEqual(kind([later]), ['text/rfc822-headers', false], 'delay notice');
  assert.deepEqual(kind([ok, later]), ['text/rfc822-headers', false], 'delivered and delayed: no failure in it');
  assert.deepEqual(kind([rcpt()]), ['message/rfc822', true], 'failure notice');
  assert.deepEqual(kind([ok, rcpt()]), ['message/rfc822', true], 'a failure among successes');
  const noRet = parse(buildDsn(input({ recipients: [ok, later] })).data).parts[2];
  assert.equal(field(noRet.headers, 'Content-Type'), 'text/rfc822-headers', 'without RET as well');
});

test('an original without a final CRLF still ends its part properly', () => {
  const { parts } = parse(buildDsn(input({ original: Buffer.from('Subject: x\r\n\r\nno newline') })).data);
  assert.equal(parts[2].body, 'Subject: x\r\n\r\nno newline\r\n', 'a CRLF added, then the delimiter with its own CRLF');
});

test('NOTIFY (RFC 3461 §4.1): absent means failures and delays; NEVER means nothing; SUCCESS only when asked', () => {
  assert.deepEqual(
    ['failed', 'delayed', 'success'].map((k) => wantsNotice(undefined, k as 'failed')),
    [true, true, false],
  );
  assert.deepEqual(
    ['failed', 'delayed', 'success'].map((k) => wantsNotice('NEVER', k as 'failed')),
    [false, false, false],
  );
  assert.deepEqual(
    ['failed', 'delayed', 'success'].map((k) => wantsNotice('success,FAILURE', k as 'failed')),
    [true, false, true],
  );
  assert.deepEqual(
    ['failed', 'delayed', 'success'].map((k) => wantsNotice('DELAY', k as 'failed')),
    [false, true, false],
  );
});

test('REQUIRETLS: the DSN returns only the headers, whatever RET says (RFC 8689 §5)', () => {
  const { parts } = parse(buildDsn(input({ envelope: { smtputf8: false, ret: 'FULL', requireTls: true } })).data);
  assert.equal(field(parts[2].headers, 'Content-Type'), 'text/rfc822-headers');
  assert.doesNotMatch(parts[2].body, /the body text/);
});
