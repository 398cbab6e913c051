// Owns: the admin API's bearer tokens: making one (a 32-byte random secret, shown once), the hash
// the store keeps instead of it, and finding the token a request's Authorization header names.
// Tokens are global (every organisation) or limited to one organisation.
// Promise: the secret itself is never stored or logged; a header that is malformed, unknown or
// names a revoked token authenticates nobody, and all of these look the same to the caller.
import { createHash, randomBytes } from 'node:crypto';
import { AdminError } from '../errors.ts';
import type { AdminToken, Store } from '../store/types.ts';

/** Recognisable in logs and by secret scanners. */
export const TOKEN_PREFIX = 'pcat_';
const TOKEN_RE = /^pcat_[A-Za-z0-9_-]{43}$/;
export const TOKEN_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/;

/** SHA-256 of the secret, hex: enough for 256 random bits (no password stretching needed). */
export const tokenHash = (secret: string): string => createHash('sha256').update(secret, 'utf8').digest('hex');

export interface NewToken {
  token: AdminToken;
  secret: string;
}

/** Make and store a token; the secret is returned once and never again. */
export async function createToken(
  store: Store,
  o: { name: string; org: string | null; by: string; now?: number },
): Promise<NewToken> {
  if (!TOKEN_NAME_RE.test(o.name))
    throw new AdminError(
      `token name "${o.name}" is not allowed`,
      'use 1 to 64 letters, digits, ".", "_", "@" and "-", starting with a letter or digit',
    );
  if ((await store.tokens()).some((t) => t.name === o.name && t.revokedAt === undefined)) {
    throw new AdminError(
      `a token named "${o.name}" exists already`,
      'choose another name, or revoke that token first (`portcullis admin token revoke NAME`)',
    );
  }
  const secret = TOKEN_PREFIX + randomBytes(32).toString('base64url');
  const token: AdminToken = {
    id: randomBytes(6).toString('hex'),
    name: o.name,
    org: o.org,
    createdAt: o.now ?? Date.now(),
    createdBy: o.by,
  };
  await store.createToken({ ...token, hash: tokenHash(secret) });
  return { token, secret };
}

/** The active token an `Authorization: Bearer …` header names, or null. */
export async function authenticate(store: Store, header: string | undefined): Promise<AdminToken | null> {
  const m = /^Bearer +(\S+)$/i.exec(header ?? '');
  if (!m || !TOKEN_RE.test(m[1])) return null;
  return store.tokenByHash(tokenHash(m[1]));
}
