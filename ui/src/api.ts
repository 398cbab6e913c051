// The admin API as the UI calls it: the token (kept for this browser tab only, in sessionStorage)
// as a bearer header, JSON in and out, and API errors as exceptions carrying the server's words.

const KEY = 'portcullis.token';

export const getToken = (): string | null => sessionStorage.getItem(KEY);
export const setToken = (t: string | null): void => {
  if (t) sessionStorage.setItem(KEY, t);
  else sessionStorage.removeItem(KEY);
};

export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function api<T = any>(method: string, path: string, body?: unknown): Promise<T> {
  const token = getToken();
  const res = await fetch(path, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    cache: 'no-store',
  });
  const text = await res.text();
  let json: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!res.ok) throw new ApiFailure(res.status, json?.message ?? `${res.status} ${res.statusText}`, json?.field);
  return json as T;
}

/** A query string from the set fields of an object. */
export function qs(o: Record<string, string | number | undefined | null>): string {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(o)) if (v !== undefined && v !== null && v !== '') p.set(k, String(v));
  const s = p.toString();
  return s ? `?${s}` : '';
}

export const when = (t: string | number | undefined | null): string =>
  t === undefined || t === null
    ? ''
    : new Date(t)
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d{3}Z$/, 'Z');
