// What the SMTP client puts on the wire for an envelope: valid RFC 5321 paths only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { DeliveryError, envelopeCommands, type Envelope } from '../../../src/delivery/smtp-client.ts';
import { parsePathArg } from '../../../src/inbound/address.ts';
import { formatMailbox } from '../../../src/mailbox.ts';

const EXT = new Map([['PIPELINING', ''], ['SIZE', '0'], ['8BITMIME', ''], ['SMTPUTF8', ''], ['DSN', '']]);
const env = (from: string, rcpts: Envelope['rcpts'], smtputf8 = false): Envelope => ({ from, rcpts, eightBit: false, smtputf8 });
const failure = (f: () => unknown): DeliveryError => {
  try { f(); } catch (e) { if (e instanceof DeliveryError) return e; throw e; }
  throw new Error('expected a DeliveryError');
};

test('quoted local parts go out quoted: no parameter injection, no broken paths', () => {
  const rcpts = ['"x> NOTIFY=NEVER ORCPT=rfc822;y"@corp.contoso.test', '"a b"@corp.contoso.test', '"a>"@corp.contoso.test', '"\\"carol\\""@contoso.test'];
  const c = envelopeCommands(env('"s x"@fabrikam.test', rcpts.map((address) => ({ address }))), EXT, 10);
  assert.equal(c.mail, 'MAIL FROM:<"s x"@fabrikam.test> SIZE=10');
  assert.deepEqual(c.rcpts, rcpts.map((a) => `RCPT TO:<${a}>`));
});

test('an address that is not a valid path is refused (553, permanent) before anything is sent', () => {
  const e = failure(() => envelopeCommands(env('a@b.test', [{ address: 'ok@c.test' }, { address: 'x> NOTIFY=NEVER ORCPT=rfc822;y@corp.contoso.test' }]), EXT, 1));
  assert.equal(e.kind, 'mail');
  assert.equal(e.reply?.code, 553);
  assert.equal(e.reply?.enhanced, '5.1.3');
  assert.match(e.message, /recipient address is not a valid RFC 5321 path/);
  assert.equal(failure(() => envelopeCommands(env('postmaster', [{ address: 'a@c.test' }]), EXT, 1)).reply?.enhanced, '5.1.7');
  // UTF-8 only when the message uses SMTPUTF8 and the server offers it.
  assert.ok(failure(() => envelopeCommands(env('a@b.test', [{ address: 'jöran@c.test' }]), EXT, 1)));
  assert.ok(failure(() => envelopeCommands(env('a@b.test', [{ address: 'jöran@c.test' }], true), new Map([['SIZE', '0']]), 1)));
  assert.equal(envelopeCommands(env('a@b.test', [{ address: 'jöran@c.test' }], true), EXT, 1).mail, 'MAIL FROM:<a@b.test> SIZE=1 SMTPUTF8');
});

const PRINTABLE = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i));
const local = (utf8: boolean) => fc.oneof(
  fc.string({ unit: fc.constantFrom(...PRINTABLE, ...(utf8 ? ['ö', '日', '😀'] : [])), maxLength: 40 }),
  fc.constantFrom('x> NOTIFY=NEVER ORCPT=rfc822;y', 'a b', 'a>', '"carol"', 'user@other.test', '\\"', ' SIZE=1', '> RCPT TO:<z@z.test'),
).filter((l) => Buffer.byteLength(l) <= 64);
const domain = fc.constantFrom('corp.contoso.test', 'Contoso.TEST', '[127.0.0.1]', '[IPv6:::1]', 'bücher.test');

test('property: the RCPT line the client sends parses back to the same address with only our parameters', () => {
  fc.assert(fc.property(fc.boolean().chain((u) => fc.tuple(fc.constant(u), local(u), domain, fc.option(fc.constantFrom('NEVER', 'SUCCESS,FAILURE')))), ([utf8, l, d, notify]) => {
    if (!utf8 && d === 'bücher.test') return;
    const address = formatMailbox(l, d);
    if (Buffer.byteLength(address) > 254) return;
    const c = envelopeCommands(env('', [{ address, ...(notify ? { notify } : {}) }], utf8), EXT, 1);
    assert.equal(c.mail, `MAIL FROM:<> SIZE=1${utf8 ? ' SMTPUTF8' : ''}`);
    const line = c.rcpts[0];
    assert.ok(line.startsWith('RCPT TO:'));
    const back = parsePathArg(line.slice('RCPT TO:'.length), { allowNull: false, utf8Allowed: utf8 });
    assert.ok(!('code' in back), `${line} refused: ${'code' in back ? back.message : ''}`);
    assert.equal(back.mailbox.address, address);
    assert.equal(back.mailbox.local, l);
    assert.deepEqual([...back.params.entries()], notify ? [['NOTIFY', notify]] : []);
  }), { numRuns: 3000, seed: 3461 });
});
