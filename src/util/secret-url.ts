// Owns: showing a database URL without its secret. Every place that prints or logs a store URL
// (start-up, errors, `config check`, `store` commands) goes through redactUrl.
// Promise: the result never contains the password, whether it is in the userinfo
// (postgresql://user:PASSWORD@host/db) or in a query parameter (?password=PASSWORD); a URL that
// cannot be parsed is not echoed at all.

const NO_HOST = '__no_host__';

/** Parsed as the pg driver does: "user@/db?host=/run/postgresql" (a Unix socket) has an empty host. */
function parse(url: string): URL | null {
  try {
    return new URL(url);
  } catch {
    /* maybe an empty host */
  }
  try {
    return new URL(url.replace('@/', `@${NO_HOST}/`));
  } catch {
    return null;
  }
}

/** postgresql://user:PASSWORD@host/db -> postgresql://user:***@host/db */
export function redactUrl(url: string): string {
  const u = parse(url);
  if (!u) return '(a store URL that cannot be parsed)';
  if (u.password) u.password = '***';
  for (const k of [...u.searchParams.keys()])
    if (/^(password|sslpassword|passfile|sslkey)$/i.test(k)) u.searchParams.set(k, '***');
  return u
    .toString()
    .replace(/%2A%2A%2A/g, '***')
    .replace(`@${NO_HOST}/`, '@/');
}

/** Is `s` a URL PostgreSQL clients accept (postgres:// or postgresql://)? */
export function isPostgresUrl(s: string): boolean {
  return /^postgres(ql)?:$/.test(parse(s)?.protocol ?? '');
}
