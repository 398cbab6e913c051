// Owns: parsing of MAIL FROM / RCPT TO arguments: the path (RFC 5321 §4.1.2) and ESMTP parameters.
// Promise: returns a verdict (SmtpReply) on any malformed input; never throws.
import { Replies, type SmtpReply } from '../errors.ts';

export interface Mailbox {
  /** Normalised "local@domain" (domain lower-cased); "" for the null path. */
  address: string;
  local: string;
  domain: string;
  /** True when the local part was a quoted string. */
  quoted: boolean;
  /** "postmaster" without a domain (RFC 5321 §4.1.1.3). */
  bare?: boolean;
}

export interface ParsedArg {
  mailbox: Mailbox;
  params: Map<string, string | true>;
}

const ATEXT = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$/;
const ATEXT_UTF8 = /^(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])+$/;
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const LABEL_UTF8 = /^(?:[A-Za-z0-9]|[^\x00-\x7f])(?:(?:[A-Za-z0-9-]|[^\x00-\x7f]){0,61}(?:[A-Za-z0-9]|[^\x00-\x7f]))?$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export const isAscii = (s: string): boolean => /^[\x00-\x7f]*$/.test(s);

function checkDomain(d: string, utf8: boolean): string | null {
  if (d.startsWith('[')) {
    if (!d.endsWith(']')) return 'unterminated address literal';
    const lit = d.slice(1, -1);
    if (IPV4.test(lit)) return null;
    if (/^IPv6:[0-9A-Fa-f:.]+$/i.test(lit)) return null; // the tag is case-insensitive (RFC 5234 §2.3), and normalised lower case
    return 'bad address literal';
  }
  if (d.length > 255) return 'domain too long';
  const labels = d.split('.');
  const re = utf8 ? LABEL_UTF8 : LABEL;
  for (const l of labels) if (!re.test(l)) return `bad domain "${d}"`;
  return null;
}

/** Split "<...>" from the rest, honouring quoted strings; returns [inner, rest] or an error. */
function splitPath(arg: string): [string, string] | string {
  if (!arg.startsWith('<')) return 'the address must be enclosed in <>';
  let inQuote = false;
  for (let i = 1; i < arg.length; i++) {
    const c = arg[i];
    if (inQuote) {
      if (c === '\\') i++;
      else if (c === '"') inQuote = false;
    } else if (c === '"') inQuote = true;
    else if (c === '>') return [arg.slice(1, i), arg.slice(i + 1)];
  }
  return 'missing closing >';
}

export function parseMailbox(inner: string, utf8Allowed: boolean): Mailbox | SmtpReply {
  if (inner.length > 254) return Replies.pathTooLong();
  let s = inner;
  // Source route "@a,@b:user@d": accepted and ignored (RFC 5321 §4.1.2, §C).
  if (s.startsWith('@')) {
    const colon = s.indexOf(':');
    if (colon < 0) return Replies.badAddress('bad source route');
    s = s.slice(colon + 1);
  }
  if (!isAscii(s) && !utf8Allowed) return Replies.nonAsciiNeedsSmtputf8();
  let local: string; let rest: string; let quoted = false;
  if (s.startsWith('"')) {
    let i = 1; let out = '';
    for (; i < s.length; i++) {
      const c = s[i];
      if (c === '\\') { if (i + 1 >= s.length) break; out += s[++i]; continue; }
      if (c === '"') break;
      if (c < ' ' && c !== '\t') return Replies.badAddress('control character in quoted local part');
      out += c;
    }
    if (s[i] !== '"') return Replies.badAddress('unterminated quoted string');
    local = out; quoted = true; rest = s.slice(i + 1);
    if (rest !== '' && !rest.startsWith('@')) return Replies.badAddress('text after quoted local part');
    rest = rest.slice(1);
  } else {
    const at = s.lastIndexOf('@');
    if (at < 0) {
      if (s.toLowerCase() === 'postmaster') return { address: 'postmaster', local: 'postmaster', domain: '', quoted: false, bare: true };
      return Replies.badAddress('missing @domain');
    }
    local = s.slice(0, at); rest = s.slice(at + 1);
    const re = utf8Allowed ? ATEXT_UTF8 : ATEXT;
    if (!local || local.split('.').some((atom) => !re.test(atom))) return Replies.badAddress(`bad local part "${local}"`);
  }
  if (Buffer.byteLength(local) > 64) return Replies.pathTooLong();
  if (!rest) return Replies.badAddress('missing domain');
  const derr = checkDomain(rest, utf8Allowed);
  if (derr) return Replies.badAddress(derr);
  // ASCII letters only: Unicode case mapping can lengthen a U-label past its limits ("İ" becomes
  // two code units) or turn it into a different, ASCII name (KELVIN SIGN becomes "k").
  const domain = rest.replace(/[A-Z]+/g, (m) => m.toLowerCase());
  const needsQuote = quoted && !local.split('.').every((a) => a !== '' && ATEXT_UTF8.test(a));
  const shown = needsQuote ? `"${local.replace(/(["\\])/g, '\\$1')}"` : local;
  return { address: `${shown}@${domain}`, local, domain, quoted };
}

/** Parse the text after "MAIL FROM:" or "RCPT TO:". */
export function parsePathArg(arg: string, opts: { allowNull: boolean; utf8Allowed: boolean }): ParsedArg | SmtpReply {
  const t = arg.replace(/^\s+/, '');
  const sp = splitPath(t);
  if (typeof sp === 'string') return Replies.syntax(sp);
  const [inner, tail] = sp;
  const params = new Map<string, string | true>();
  if (tail.trim()) {
    if (!/^\s/.test(tail)) return Replies.syntax('parameters must be separated from the address by a space');
    for (const tok of tail.trim().split(/\s+/)) {
      const eq = tok.indexOf('=');
      const key = (eq < 0 ? tok : tok.slice(0, eq)).toUpperCase();
      if (!/^[A-Z0-9][A-Z0-9-]*$/.test(key)) return Replies.syntax(`bad parameter "${tok}"`);
      if (params.has(key)) return Replies.syntax(`parameter ${key} given twice`);
      params.set(key, eq < 0 ? true : tok.slice(eq + 1));
    }
  }
  // SMTPUTF8 on MAIL allows UTF-8 in this very path.
  const utf8 = opts.utf8Allowed || params.has('SMTPUTF8');
  if (inner === '') {
    if (!opts.allowNull) return Replies.badAddress('the null path <> is not a valid recipient');
    return { mailbox: { address: '', local: '', domain: '', quoted: false }, params };
  }
  const mb = parseMailbox(inner, utf8);
  if ('code' in mb) return mb;
  return { mailbox: mb, params };
}

const XTEXT = /^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$/;
export const isXtext = (s: string): boolean => XTEXT.test(s);

/** RCPT NOTIFY (RFC 3461 §4.1). */
export function validNotify(v: string): boolean {
  const parts = v.toUpperCase().split(',');
  if (parts.includes('NEVER')) return parts.length === 1;
  return parts.length > 0 && parts.every((p) => p === 'SUCCESS' || p === 'FAILURE' || p === 'DELAY') && new Set(parts).size === parts.length;
}

/** RCPT ORCPT "addr-type;xtext" (RFC 3461 §4.2). */
export function validOrcpt(v: string): boolean {
  const semi = v.indexOf(';');
  if (semi <= 0) return false;
  const type = v.slice(0, semi);
  if (!/^[A-Za-z0-9][A-Za-z0-9-]*$/.test(type)) return false;
  const value = v.slice(semi + 1);
  if (type.toLowerCase() === 'utf-8') return value.length > 0 && value.length <= 500;
  return value.length > 0 && value.length <= 500 && isXtext(value);
}
