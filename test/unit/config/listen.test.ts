// smtp.listen as sockets: which lists cannot all be bound together on Linux (checked by
// `config check` and at start), and how "[::]" is bound next to IPv4 entries.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { listenProblems, listenSockets } from '../../../src/config/listen.ts';
import { buildConfig } from '../../../src/config/load.ts';

const orgs = [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }];

test('the same address twice, in any spelling, is refused', () => {
  for (const list of [
    ['0.0.0.0:25', '0.0.0.0:25'],
    [':25', '0.0.0.0:25'],
    ['[::]:25', '[0:0::0]:25'],
    ['localhost:2525', '127.0.0.1:2525'],
    ['[::1]:25', '[0::1]:25'],
  ]) {
    const p = listenProblems(list);
    assert.equal(p.length, 1, list.join(' '));
    assert.match(p[0], /^smtp\.listen\[1\]: ".*" is the same address as ".*"; list each address once$/);
  }
});

test('a wildcard and another address of its family on the same port are refused (Linux refuses the second bind)', () => {
  assert.match(
    listenProblems(['127.0.0.1:25', '0.0.0.0:25'])[0],
    /"0\.0\.0\.0:25" already listens on every IPv4 address, including "127\.0\.0\.1:25"/,
  );
  assert.match(
    listenProblems(['[::]:25', '[::1]:25'])[0],
    /"\[::\]:25" already listens on every IPv6 address, including "\[::1\]:25"/,
  );
});

test('lists that bind together pass: other ports, other families, "[::]" beside IPv4', () => {
  for (const list of [
    ['127.0.0.1:25', '127.0.0.1:587'],
    ['127.0.0.1:25', '127.0.0.2:25'],
    ['0.0.0.0:25', '[::]:25'],
    ['[::]:25', '127.0.0.1:25'],
    ['[::1]:25', '127.0.0.1:25'],
  ]) {
    assert.deepEqual(listenProblems(list), [], list.join(' '));
  }
});

test('"[::]" takes IPv6 only when IPv4 entries share its port, dual-stack otherwise', () => {
  const only = (list: string[]) => listenSockets(list).map((s) => `${s.host}:${s.port}${s.ipv6Only ? ' v6only' : ''}`);
  assert.deepEqual(only(['0.0.0.0:25', '[::]:25']), ['0.0.0.0:25', ':::25 v6only']);
  assert.deepEqual(only(['[::]:25', '127.0.0.1:25', '[::]:587']), [':::25 v6only', '127.0.0.1:25', ':::587']);
});

test('an IPv4-mapped IPv6 address is refused with its IPv4 spelling', () => {
  assert.deepEqual(listenProblems(['[::ffff:127.0.0.1]:25']), [
    'smtp.listen[0]: "[::ffff:127.0.0.1]:25" is an IPv4 address written as IPv6; write it as "127.0.0.1:25"',
  ]);
});

test('"localhost" is 127.0.0.1, never looked up; other host names are refused', () => {
  assert.deepEqual(
    listenSockets(['localhost:2525']).map((s) => s.host),
    ['127.0.0.1'],
  );
  assert.throws(
    () => buildConfig({ organizations: orgs, smtp: { listen: ['mail.contoso.test:25'] } }, '/etc', 'x.yaml'),
    /smtp\.listen\[0\]: must be "IP:port", "\[IPv6\]:port" or "localhost:port" \(host names are not looked up\)/,
  );
});

test('the configuration refuses what cannot be bound, with the fix', () => {
  assert.throws(
    () => buildConfig({ organizations: orgs, smtp: { listen: ['0.0.0.0:25', ':25'] } }, '/etc', 'x.yaml'),
    (e: Error) =>
      /smtp\.listen\[1\]: ":25" is the same address as "0\.0\.0\.0:25"/.test(e.message) &&
      /fix: listen on each address once/.test(e.message),
  );
});

test("admin.listen may not take an SMTP listener's address; it is checked only while the admin centre is enabled", () => {
  assert.throws(
    () =>
      buildConfig(
        { organizations: orgs, smtp: { listen: ['0.0.0.0:2525'] }, admin: { listen: '127.0.0.1:2525' } },
        '/etc',
        'x.yaml',
      ),
    /admin\.listen: "127\.0\.0\.1:2525" takes the address of smtp\.listen "0\.0\.0\.0:2525"; give the admin centre another port/,
  );
  assert.throws(
    () =>
      buildConfig(
        { organizations: orgs, smtp: { listen: ['127.0.0.1:2525'] }, admin: { listen: 'localhost:2525' } },
        '/etc',
        'x.yaml',
      ),
    /admin\.listen/,
  );
  assert.equal(
    buildConfig(
      { organizations: orgs, smtp: { listen: ['127.0.0.1:2525'] }, admin: { listen: '127.0.0.1:2526' } },
      '/etc',
      'x.yaml',
    ).admin.listen,
    '127.0.0.1:2526',
  );
  assert.equal(
    buildConfig(
      {
        organizations: orgs,
        smtp: { listen: ['127.0.0.1:2525'] },
        admin: { enabled: false, listen: '127.0.0.1:2525' },
      },
      '/etc',
      'x.yaml',
    ).admin.enabled,
    false,
  );
  assert.deepEqual(
    buildConfig({ organizations: orgs }, '/etc', 'x.yaml').admin,
    { enabled: true, listen: '127.0.0.1:8443' },
    'on by default, on loopback',
  );
  assert.throws(
    () => buildConfig({ organizations: orgs, admin: { listen: 'admin.contoso.test:8443' } }, '/etc', 'x.yaml'),
    /admin\.listen: must be "IP:port"/,
  );
});
