// The one classifier of delivery outcomes: every failure kind, every local errno, replies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  classifyFailure,
  classifyLocalError,
  classifyRefusal,
  classifyReply,
  type FailureFacts,
} from '../../../src/delivery/classify.ts';
import type { DnsErrorKind } from '../../../src/dns/types.ts';

const c = (f: Omit<FailureFacts, 'detail'>) => {
  const o = classifyFailure({ ...f, detail: 'the detail' });
  return [o.status, o.reply.code, o.reply.enhanced];
};

test('DNS: a name that does not exist (or has no mail server) fails; every other kind defers (RFC 5321 §5.1)', () => {
  const kinds: Record<DnsErrorKind, unknown[]> = {
    nxdomain: ['failed', 550, '5.1.2'],
    nodata: ['failed', 550, '5.1.2'],
    servfail: ['deferred', 451, '4.4.3'],
    bogus: ['deferred', 451, '4.4.3'],
    timeout: ['deferred', 451, '4.4.3'],
    refused: ['deferred', 451, '4.4.3'],
    malformed: ['deferred', 451, '4.4.3'],
  };
  for (const [dnsKind, want] of Object.entries(kinds))
    assert.deepEqual(c({ kind: 'dns', dnsKind: dnsKind as DnsErrorKind }), want, dnsKind);
});

test('every failure kind has its status and enhanced code; the detail goes to the reason only', () => {
  const want: Record<FailureFacts['kind'], unknown[]> = {
    dns: ['deferred', 451, '4.4.3'],
    connect: ['deferred', 451, '4.4.1'],
    timeout: ['deferred', 451, '4.4.2'],
    closed: ['deferred', 451, '4.4.2'],
    protocol: ['deferred', 451, '4.5.0'],
    starttls: ['deferred', 451, '4.7.4'],
    tls: ['deferred', 451, '4.7.5'],
    tlsPolicy: ['deferred', 451, '4.7.5'],
    greeting: ['deferred', 451, '4.4.2'],
    ehlo: ['deferred', 451, '4.4.2'],
    mail: ['deferred', 451, '4.4.2'],
    nullMx: ['failed', 556, '5.1.10'],
    noHost: ['failed', 550, '5.1.2'],
    loopsBack: ['failed', 554, '5.4.6'],
    size: ['failed', 552, '5.3.4'],
    eightBit: ['failed', 554, '5.6.3'],
    smtputf8: ['failed', 553, '5.6.7'],
    badSender: ['failed', 553, '5.1.7'],
    badRecipient: ['failed', 553, '5.1.3'],
    requireTls: ['failed', 550, '5.7.30'],
  };
  for (const [kind, w] of Object.entries(want)) {
    assert.deepEqual(c({ kind: kind as FailureFacts['kind'] }), w, kind);
    const o = classifyFailure({ kind: kind as FailureFacts['kind'], detail: 'the detail' });
    assert.equal(o.reply.reason, 'the detail', kind);
    assert.doesNotMatch(o.reply.message, /the detail/, `${kind}: the detail is for administrators`);
  }
  assert.equal(
    classifyFailure({ kind: 'tls', detail: 'd', tlsFailure: 'protocol-version' }).reply.message,
    'TLS handshake failed: the server only supports TLS versions older than TLS 1.2',
  );
});

test('failures with a reply take its class and code; a reply that refused nothing is a protocol error, never delivered', () => {
  for (const kind of ['greeting', 'ehlo', 'mail'] as const) {
    assert.deepEqual(c({ kind, reply: { code: 554, enhanced: '5.7.1', text: 'no' } }), ['failed', 554, '5.7.1'], kind);
    assert.deepEqual(c({ kind, reply: { code: 421, text: 'busy' } }), ['deferred', 421, '4.0.0'], kind);
    assert.deepEqual(
      c({ kind, reply: { code: 250, text: 'hello' } }),
      ['deferred', 451, '4.5.0'],
      `${kind}: 250 in a refusal's place`,
    );
    assert.deepEqual(c({ kind, reply: { code: 354, text: 'go' } }), ['deferred', 451, '4.5.0'], kind);
  }
  assert.equal(classifyRefusal({ code: 252, text: 'cannot verify' }, 'd').status, 'deferred');
});

test('replies: 2xx delivered, 4xx deferred, 5xx failed; an enhanced code of another class is replaced by X.0.0', () => {
  assert.deepEqual(classifyReply({ code: 250, enhanced: '2.0.0', text: 'ok' }, 'd'), {
    status: 'delivered',
    reply: { code: 250, enhanced: '2.0.0', message: 'ok', reason: 'd' },
  });
  assert.equal(classifyReply({ code: 450, enhanced: '5.1.1', text: 'x' }, 'd').reply.enhanced, '4.0.0');
  assert.equal(classifyReply({ code: 550, text: 'x' }, 'd').reply.enhanced, '5.0.0');
  assert.equal(classifyReply({ code: 452, enhanced: '4.2.2', text: 'full' }, 'd').status, 'deferred');
});

test('local errors: temporary unless the name itself is impossible; unknown codes defer', () => {
  const e = (code: string) => Object.assign(new Error(code), { code });
  assert.deepEqual(
    [classifyLocalError(e('ENOSPC'), 'x').status, classifyLocalError(e('ENOSPC'), 'x').reply.enhanced],
    ['deferred', '4.3.1'],
  );
  assert.equal(classifyLocalError(e('EDQUOT'), 'x').reply.enhanced, '4.2.2');
  assert.deepEqual(
    [classifyLocalError(e('ENAMETOOLONG'), 'x').status, classifyLocalError(e('ENAMETOOLONG'), 'x').reply.code],
    ['failed', 550],
  );
  const unknown = classifyLocalError(e('EWEIRD'), '/m/x');
  assert.deepEqual([unknown.status, unknown.reply.enhanced], ['deferred', '4.3.0']);
  assert.match(unknown.reply.reason ?? '', /EWEIRD at \/m\/x/);
  for (const code of ['EACCES', 'EPERM', 'EROFS', 'EIO', 'EMFILE', 'ENFILE', 'ENOTDIR', 'EEXIST'])
    assert.equal(classifyLocalError(e(code), 'x').status, 'deferred', code);
});
