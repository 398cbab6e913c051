// Owns: the text formats of MTA-STS (RFC 8461): the `_mta-sts` TXT record (§3.1), the policy
// file (§3.2), writing a policy (for hosting), and matching an MX host name against the policy's
// `mx` patterns (§4.1). Pure functions, no I/O.
// Promise: parsing never throws: a record or policy that does not follow the RFC is an `error`
// result naming what is wrong (a policy error is reported as `sts-policy-invalid`).

export type StsMode = 'enforce' | 'testing' | 'none';

export interface StsRecord {
  id: string;
}

export interface StsPolicy {
  mode: StsMode;
  /** MX patterns: `mx.example.com` or `*.example.com` (one left-most label), lower case. */
  mx: string[];
  /** Seconds the policy may be cached (0 to 31557600). */
  maxAge: number;
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

/** Longest max_age the RFC allows (§3.2: "up to 31557600", one year). */
export const MAX_AGE_LIMIT = 31_557_600;

/**
 * The `_mta-sts.<domain>` TXT records (§3.1): those that do not start with `v=STSv1` are
 * discarded; exactly one must remain, with an `id` of 1 to 32 letters and digits. Fields are
 * `key=value` separated by `;` with optional spaces; unknown fields are ignored.
 */
export function parseStsRecord(txts: readonly string[]): Parsed<StsRecord> {
  const ours = txts.filter((t) => /^v=STSv1\s*(;|$)/.test(t));
  if (!ours.length) return { ok: false, error: 'no TXT record starting with "v=STSv1"' };
  if (ours.length > 1)
    return { ok: false, error: `${ours.length} TXT records start with "v=STSv1" (exactly one is allowed)` };
  const fields = new Map<string, string>();
  for (const part of ours[0].split(';')) {
    const f = part.trim();
    if (!f) continue;
    const m = /^([A-Za-z0-9_.-]+)=([\x21-\x3a\x3c\x3e-\x7e]+)$/.exec(f);
    if (!m) return { ok: false, error: `malformed field "${f.slice(0, 60)}"` };
    if (!fields.has(m[1])) fields.set(m[1], m[2]);
  }
  const id = fields.get('id');
  if (id === undefined) return { ok: false, error: 'the record has no id field' };
  if (!/^[A-Za-z0-9]{1,32}$/.test(id))
    return { ok: false, error: `id "${id.slice(0, 40)}" is not 1 to 32 letters and digits` };
  return { ok: true, value: { id } };
}

const PATTERN = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * The policy file (§3.2): `key: value` lines ending in CRLF or LF. `version: STSv1`, `mode`
 * (enforce, testing, none) and `max_age` are required, `mx` at least once unless the mode is
 * none; each of version, mode and max_age at most once; unknown keys are ignored (§3.2: "other
 * fields ... MUST be ignored").
 */
export function parseStsPolicy(text: string): Parsed<StsPolicy> {
  const seen = new Map<string, string>();
  const mx: string[] = [];
  const lines = text.split(/\r?\n/);
  if (lines.at(-1) === '') lines.pop();
  for (const [i, raw] of lines.entries()) {
    const m = /^([A-Za-z0-9_.-]+):[ \t]*(.*?)[ \t]*$/.exec(raw);
    if (!m) return { ok: false, error: `line ${i + 1} is not "key: value": ${JSON.stringify(raw.slice(0, 60))}` };
    const [, key, value] = m;
    if (key === 'mx') {
      const p = value.toLowerCase().replace(/\.$/, '');
      if (!PATTERN.test(p))
        return { ok: false, error: `mx "${value.slice(0, 80)}" is not a host name or "*." pattern` };
      mx.push(p);
      continue;
    }
    if (key !== 'version' && key !== 'mode' && key !== 'max_age') continue;
    if (seen.has(key)) return { ok: false, error: `${key} appears more than once` };
    seen.set(key, value);
  }
  if (seen.get('version') !== 'STSv1')
    return {
      ok: false,
      error: seen.has('version') ? `version "${seen.get('version')}" is not STSv1` : 'no version field',
    };
  const mode = seen.get('mode');
  if (mode !== 'enforce' && mode !== 'testing' && mode !== 'none')
    return {
      ok: false,
      error: mode === undefined ? 'no mode field' : `mode "${mode.slice(0, 20)}" is not enforce, testing or none`,
    };
  const age = seen.get('max_age');
  if (age === undefined) return { ok: false, error: 'no max_age field' };
  if (!/^\d{1,10}$/.test(age) || Number(age) > MAX_AGE_LIMIT)
    return { ok: false, error: `max_age "${age.slice(0, 20)}" is not a number of seconds from 0 to ${MAX_AGE_LIMIT}` };
  if (mode !== 'none' && !mx.length) return { ok: false, error: `mode ${mode} needs at least one mx field` };
  return { ok: true, value: { mode, mx, maxAge: Number(age) } };
}

/** The policy file for `policy` (CRLF lines, as §3.2 shows it). */
export function formatStsPolicy(p: StsPolicy): string {
  return ['version: STSv1', `mode: ${p.mode}`, ...p.mx.map((m) => `mx: ${m}`), `max_age: ${p.maxAge}`, ''].join('\r\n');
}

/**
 * Does MX host `host` match `pattern` (§4.1)? Exact names compare case-insensitively; a pattern
 * `*.example.com` matches exactly one more label on the left (`mx.example.com`, not
 * `example.com` nor `a.b.example.com`).
 */
export function mxPatternMatches(pattern: string, host: string): boolean {
  const h = host.toLowerCase().replace(/\.$/, '');
  const p = pattern.toLowerCase().replace(/\.$/, '');
  if (!p.startsWith('*.')) return p === h;
  const dot = h.indexOf('.');
  return dot > 0 && h.slice(dot + 1) === p.slice(2);
}

/** The first pattern of `policy` that `host` matches, if any. */
export const matchingPattern = (policy: StsPolicy, host: string): string | undefined =>
  policy.mx.find((p) => mxPatternMatches(p, host));
