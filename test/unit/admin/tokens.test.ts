// Admin API bearer tokens (admin/tokens.ts) against a real SQLite store: the secret is shown once
// and only its hash is kept; malformed, unknown and revoked tokens authenticate nobody.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { authenticate, createToken, tokenHash } from '../../../src/admin/tokens.ts';
import { SqliteStore } from '../../../src/store/sqlite/index.ts';

test('a token authenticates by its secret until revoked; the store keeps only the hash', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-tokens-'));
  const store = new SqliteStore(dir);
  try {
    const { token, secret } = await createToken(store, { name: 'contoso-ops', org: 'contoso', by: 'alice' });
    assert.match(secret, /^pcat_[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(await authenticate(store, `Bearer ${secret}`), token);
    assert.deepEqual(
      await authenticate(store, `bearer  ${secret}`),
      token,
      'the scheme is case-insensitive (RFC 7235)',
    );
    for (const h of [
      undefined,
      '',
      secret,
      `Basic ${secret}`,
      `Bearer ${secret}x`,
      `Bearer ${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}`,
      `Bearer ${secret} extra`,
    ]) {
      assert.equal(await authenticate(store, h), null, String(h));
    }
    await assert.rejects(
      createToken(store, { name: 'contoso-ops', org: null, by: 'bob' }),
      /a token named "contoso-ops" exists already/,
    );
    await assert.rejects(
      createToken(store, { name: 'bad name', org: null, by: 'bob' }),
      /token name "bad name" is not allowed/,
    );
    await store.revokeToken(token.id);
    assert.equal(await authenticate(store, `Bearer ${secret}`), null, 'revoked');
    const again = await createToken(store, { name: 'contoso-ops', org: null, by: 'bob' });
    assert.notEqual(again.secret, secret);
    await store.close();
    const files = readdirSync(dir).filter((f) => f.startsWith('queue.sqlite'));
    const bytes = Buffer.concat(files.map((f) => readFileSync(path.join(dir, f))));
    assert.ok(!bytes.includes(secret) && !bytes.includes(again.secret), 'no secret in the database files');
    assert.ok(bytes.includes(tokenHash(again.secret)), 'its hash is');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
