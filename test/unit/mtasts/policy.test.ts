// MTA-STS text formats (RFC 8461 §3.1, §3.2) and MX pattern matching (§4.1).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatStsPolicy, mxPatternMatches, parseStsPolicy, parseStsRecord } from '../../../src/mtasts/policy.ts';

test('TXT record: v=STSv1 first, one id of 1 to 32 letters and digits, other records and unknown fields ignored', () => {
  assert.deepEqual(parseStsRecord(['v=STSv1; id=20160831085700Z;']), { ok: true, value: { id: '20160831085700Z' } });
  assert.deepEqual(parseStsRecord(['v=spf1 -all', 'v=STSv1;id=abc; ext=1']), { ok: true, value: { id: 'abc' } });
  assert.deepEqual(parseStsRecord(['v=STSv1; id=x;']).ok, true);
  for (const [txts, why] of [
    [[], /no TXT record starting with "v=STSv1"/],
    [['id=abc; v=STSv1'], /no TXT record/],
    [['v=STSv10; id=abc'], /no TXT record/],
    [['v=STSv1; id=a', 'v=STSv1; id=b'], /2 TXT records start with "v=STSv1"/],
    [['v=STSv1'], /no id field/],
    [['v=STSv1; id=has-dash'], /not 1 to 32 letters and digits/],
    [['v=STSv1; id=' + 'a'.repeat(33)], /not 1 to 32/],
    [['v=STSv1; id='], /malformed field/],
    [['v=STSv1; id=a b'], /malformed field/],
  ] as [string[], RegExp][]) {
    const r = parseStsRecord(txts);
    assert.equal(r.ok, false, JSON.stringify(txts));
    assert.match((r as { error: string }).error, why);
  }
});

test('policy: the RFC 8461 §3.2 example parses; CRLF or LF; unknown keys ignored; mx lower-cased', () => {
  const text =
    'version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n';
  assert.deepEqual(parseStsPolicy(text), {
    ok: true,
    value: { mode: 'enforce', mx: ['mail.example.com', '*.example.net', 'backupmx.example.com'], maxAge: 604800 },
  });
  assert.deepEqual(parseStsPolicy('version: STSv1\nmode: testing\nmx: MX.Example.COM.\nfoo: bar\nmax_age:86400'), {
    ok: true,
    value: { mode: 'testing', mx: ['mx.example.com'], maxAge: 86400 },
  });
  assert.deepEqual(parseStsPolicy('version: STSv1\nmode: none\nmax_age: 0\n'), {
    ok: true,
    value: { mode: 'none', mx: [], maxAge: 0 },
  });
  const p = { mode: 'enforce' as const, mx: ['mx1.contoso.test', '*.contoso.test'], maxAge: 86400 };
  assert.deepEqual(parseStsPolicy(formatStsPolicy(p)), { ok: true, value: p });
});

test('policy: missing, repeated or invalid fields are sts-policy-invalid with the reason', () => {
  const cases: [string, RegExp][] = [
    ['mode: enforce\nmx: a.test\nmax_age: 1\n', /no version field/],
    ['version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n', /version "STSv2" is not STSv1/],
    ['version: STSv1\nmx: a.test\nmax_age: 1\n', /no mode field/],
    ['version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n', /mode "strict"/],
    ['version: STSv1\nmode: enforce\nmode: testing\nmx: a.test\nmax_age: 1\n', /mode appears more than once/],
    ['version: STSv1\nmode: enforce\nmx: a.test\n', /no max_age field/],
    ['version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n', /max_age "-1"/],
    ['version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557601\n', /max_age "31557601"/],
    ['version: STSv1\nmode: enforce\nmax_age: 60\n', /mode enforce needs at least one mx/],
    ['version: STSv1\nmode: enforce\nmx: a.*.test\nmax_age: 60\n', /mx "a\.\*\.test"/],
    ['version: STSv1\nmode: enforce\nmx: *\nmax_age: 60\n', /mx "\*"/],
    ['<html>not a policy</html>', /line 1 is not "key: value"/],
  ];
  for (const [text, why] of cases) {
    const r = parseStsPolicy(text);
    assert.equal(r.ok, false, text);
    assert.match((r as { error: string }).error, why, text);
  }
});

test('mx patterns: exact names, and "*." covering exactly one left-most label (§4.1)', () => {
  assert.equal(mxPatternMatches('mail.example.com', 'MAIL.example.com.'), true);
  assert.equal(mxPatternMatches('mail.example.com', 'mail2.example.com'), false);
  assert.equal(mxPatternMatches('*.example.com', 'mx1.example.com'), true);
  assert.equal(mxPatternMatches('*.example.com', 'example.com'), false);
  assert.equal(mxPatternMatches('*.example.com', 'a.b.example.com'), false);
  assert.equal(mxPatternMatches('*.example.com', 'mx1.example.com.evil.test'), false);
  assert.equal(mxPatternMatches('*.example.com', 'mx1.notexample.com'), false);
});
