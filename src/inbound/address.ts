// Owns: parsing of MAIL FROM / RCPT TO arguments (the path, RFC 5321 §4.1.2, and ESMTP
// parameters) and of the HELO/EHLO argument (§4.1.1.1). The mailbox itself, and its canonical
// form, belong to ../mailbox.ts.
// Promise: returns a verdict (`ok: false` with an SmtpReply) on any malformed input; never throws.
import { Replies, type SmtpReply } from '../errors.ts';
import { checkAddressLiteral, parseMailbox, type Mailbox } from '../mailbox.ts';

export { isAscii, parseMailbox, type Mailbox } from '../mailbox.ts';

export interface ParsedArg {
  mailbox: Mailbox;
  params: Map<string, string | true>;
}

/** The parsed path and parameters, or the reply refusing them. */
export type PathArgResult = ({ ok: true } & ParsedArg) | { ok: false; reply: SmtpReply };

const refuse = (reply: SmtpReply): PathArgResult => ({ ok: false, reply });

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

/** Parse the text after "MAIL FROM:" (allowNull: the reverse path) or "RCPT TO:". */
export function parsePathArg(arg: string, opts: { allowNull: boolean; utf8Allowed: boolean }): PathArgResult {
  const t = arg.replace(/^\s+/, '');
  const sp = splitPath(t);
  if (typeof sp === 'string') return refuse(Replies.syntax(sp));
  const [inner, tail] = sp;
  const params = new Map<string, string | true>();
  if (tail.trim()) {
    if (!/^\s/.test(tail)) return refuse(Replies.syntax('parameters must be separated from the address by a space'));
    for (const tok of tail.trim().split(/\s+/)) {
      const eq = tok.indexOf('=');
      const key = (eq < 0 ? tok : tok.slice(0, eq)).toUpperCase();
      if (!/^[A-Z0-9][A-Z0-9-]*$/.test(key)) return refuse(Replies.syntax(`bad parameter "${tok}"`));
      if (params.has(key)) return refuse(Replies.syntax(`parameter ${key} given twice`));
      params.set(key, eq < 0 ? true : tok.slice(eq + 1));
    }
  }
  // SMTPUTF8 on MAIL allows UTF-8 in this very path.
  const utf8 = opts.utf8Allowed || params.has('SMTPUTF8');
  if (inner === '') {
    if (!opts.allowNull) return refuse(Replies.badAddress('the null path <> is not a valid recipient'));
    return { ok: true, mailbox: { address: '', local: '', domain: '', quoted: false }, params };
  }
  const mb = parseMailbox(inner, utf8);
  if (!mb.ok) return mb;
  if (mb.mailbox.bare && opts.allowNull)
    return refuse(Replies.badAddress('<postmaster> without a domain is only valid as a recipient'));
  return { ok: true, mailbox: mb.mailbox, params };
}

const HELO_LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/**
 * The HELO/EHLO argument (RFC 5321 §4.1.1.1): a domain or an address literal; null when acceptable,
 * else what is wrong. ASCII only (it comes before SMTPUTF8). Like Postfix, underscores are accepted
 * (common in Windows host names), and so are single-label names and one trailing dot.
 */
export function heloProblem(arg: string): string | null {
  const name = arg.trim();
  if (!name) return 'a domain name or address literal is required';
  if (/\s/.test(name)) return 'only one domain name or address literal is allowed';
  if (name.length > 255) return 'the name is longer than 255 characters';
  if (name.startsWith('['))
    return checkAddressLiteral(name) && 'not a valid address literal ([192.0.2.1] or [IPv6:2001:db8::1])';
  const labels = (name.endsWith('.') ? name.slice(0, -1) : name).split('.');
  if (!labels.every((l) => HELO_LABEL.test(l)))
    return 'not a valid domain name (letters, digits, hyphens and dots) or address literal';
  return null;
}

const XTEXT = /^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$/;
export const isXtext = (s: string): boolean => XTEXT.test(s);

/** RCPT NOTIFY (RFC 3461 §4.1). */
export function validNotify(v: string): boolean {
  const parts = v.toUpperCase().split(',');
  if (parts.includes('NEVER')) return parts.length === 1;
  return (
    parts.length > 0 &&
    parts.every((p) => p === 'SUCCESS' || p === 'FAILURE' || p === 'DELAY') &&
    new Set(parts).size === parts.length
  );
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
