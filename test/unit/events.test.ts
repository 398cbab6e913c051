// The one-line text log for terminals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatText } from '../../src/events.ts';

test('an event becomes TIME LEVEL event key=value, quoting only what needs it', () => {
  const line = JSON.stringify({
    level: 30,
    time: '2026-11-27T15:00:00.000Z',
    svc: 'portcullis',
    event: 'server.listening',
    address: '127.0.0.1:2525',
    msg: 'server.listening',
  });
  assert.equal(formatText(line), '2026-11-27T15:00:00.000Z INFO  server.listening address=127.0.0.1:2525\n');
  const warn = JSON.stringify({
    level: 40,
    time: 't',
    svc: 'portcullis',
    event: 'tls.devcert.generated',
    names: ['a', 'b'],
    path: '/x y',
    msg: 'NO CERTIFICATE CONFIGURED',
  });
  assert.equal(
    formatText(warn),
    't WARN  tls.devcert.generated NO CERTIFICATE CONFIGURED names=["a","b"] path="/x y"\n',
  );
});

test('a notice without event shows its message; a multi-line value stays on one line', () => {
  assert.equal(
    formatText(JSON.stringify({ level: 40, time: 't', msg: 'no configuration file' })),
    't WARN  no configuration file\n',
  );
  const err = formatText(
    JSON.stringify({
      level: 50,
      time: 't',
      event: 'internal.error',
      stack: 'Error: x\n    at f (a.ts:1:1)',
      msg: 'internal.error',
    }),
  );
  assert.equal(err.split('\n').length, 2);
  assert.doesNotMatch(err, /^\s+at /m);
});
