// The reply catalogue: every reply the gateway issues is printable ASCII with an enhanced code,
// and nothing else reaches a session that did not ask for SMTPUTF8.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { formatReply, Replies, reply } from '../../src/errors.ts';
import { ROOT } from '../helpers/gateway.ts';

const PRINTABLE = /^[\x20-\x7e]*$/;

test('every entry of the reply catalogue is printable ASCII with a matching enhanced code', () => {
  const entries = Object.entries(Replies) as [string, (...a: unknown[]) => ReturnType<typeof reply>][];
  assert.ok(entries.length > 30);
  for (const [name, make] of entries) {
    for (const sample of ['mx1.contoso.test', 512]) {
      const r = make(...Array<unknown>(make.length).fill(sample));
      assert.ok(PRINTABLE.test(r.message), `${name}: ${JSON.stringify(r.message)}`);
      assert.match(r.enhanced, /^[245]\.\d{1,3}\.\d{1,3}$/, name);
      assert.equal(r.enhanced[0], r.code < 400 ? '2' : String(r.code)[0], name); // 354 carries a 2.x.x code
      assert.ok(PRINTABLE.test(formatReply(r).replace(/\r\n/g, '')), name);
    }
  }
});

test('replies built anywhere in src/ are written in ASCII', () => {
  const files: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith('.ts')) files.push(p);
    }
  };
  walk(path.join(ROOT, 'src'));
  const offenders = files.flatMap((f) =>
    readFileSync(f, 'utf8')
      .split('\n')
      .map((l, i) => ({ where: `${path.relative(ROOT, f)}:${i + 1}`, l }))
      .filter(({ l }) => /\breply\(\s*\d/.test(l) && !/^[\x00-\x7f]*$/.test(l.replace(/\/\/.*$/, ''))),
  );
  assert.deepEqual(
    offenders.map((o) => o.where),
    [],
  );
});

test('formatReply: other text is escaped as "?" unless the transaction uses SMTPUTF8', () => {
  const r = reply(550, '5.1.1', 'no mailbox jöran@bücher.test \x1b[2J\r(x)');
  assert.equal(formatReply(r), '550 5.1.1 no mailbox j?ran@b?cher.test ?[2J?(x)\r\n');
  assert.equal(
    formatReply(r, true),
    '550 5.1.1 no mailbox jöran@bücher.test ?[2J?(x)\r\n',
    'UTF-8 stays, controls never do',
  );
  assert.equal(
    formatReply(reply(250, '2.0.0', 'a\nb\u0085c')),
    '250-2.0.0 a\r\n250 2.0.0 b?c\r\n',
    'newlines make lines; NEL is a C1 control',
  );
});

test('formatReply: every line within 512 octets with its CRLF (RFC 5321 §4.5.3.1.5), a long echo cut with "..."', () => {
  const long = Replies.syntax(`bad parameter "${'X'.repeat(2000)}"`);
  const out = formatReply(long);
  assert.equal(Buffer.byteLength(out), 512);
  assert.ok(out.endsWith('...\r\n'));
  assert.ok(out.startsWith('501 5.5.4 Syntax error'), out.slice(0, 30));
  const utf8 = formatReply(reply(550, '5.1.1', `${'é'.repeat(400)}\n${'ü'.repeat(10)}`), true);
  for (const line of utf8.split('\r\n').filter(Boolean))
    assert.ok(Buffer.byteLength(line) + 2 <= 512, line.slice(0, 20));
  assert.equal(formatReply(Replies.ok()), '250 2.0.0 OK\r\n', 'short replies unchanged');
});
