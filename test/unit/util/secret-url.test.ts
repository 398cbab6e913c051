import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isPostgresUrl, redactUrl } from '../../../src/util/secret-url.ts';

test('redactUrl never shows a password, wherever the URL carries it', () => {
  assert.equal(redactUrl('postgresql://app:s3cr%40t@db1:5432/mail'), 'postgresql://app:***@db1:5432/mail');
  assert.equal(
    redactUrl('postgres://app@db1/mail?password=s3cret&sslmode=require'),
    'postgres://app@db1/mail?password=***&sslmode=require',
  );
  assert.equal(
    redactUrl('postgresql://app:s3cret@/mail?host=/run/postgresql'),
    'postgresql://app:***@/mail?host=/run/postgresql',
  );
  assert.equal(redactUrl('postgresql://app@db1/mail'), 'postgresql://app@db1/mail', 'nothing to hide');
  assert.equal(redactUrl('postgresql://:s3cret@db1/mail'), 'postgresql://:***@db1/mail');
  assert.equal(redactUrl('junk app:s3cret@'), '(a store URL that cannot be parsed)');
  for (const u of ['postgresql://app:s3cret@db1/mail', 'postgres://a@b/c?sslpassword=s3cret'])
    assert.ok(!redactUrl(u).includes('s3cret'));
});

test('isPostgresUrl: postgres:// and postgresql://, Unix sockets included', () => {
  assert.ok(isPostgresUrl('postgresql://app@db1/mail'));
  assert.ok(isPostgresUrl('postgres://db1/mail'));
  assert.ok(isPostgresUrl('postgresql://app:pw@/mail?host=/run/postgresql'));
  assert.ok(!isPostgresUrl('mysql://db1/mail'));
  assert.ok(!isPostgresUrl('db1:5432'));
});
