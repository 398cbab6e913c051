// Owns: the one canonical text form of a mailbox (RFC 5321 §4.1.2 Mailbox, with the RFC 6531
// UTF-8 extension): parsing it, formatting it, the SMTP path built from it, and the case folding of
// mailbox names, and the form policy compares domains in (policyDomain). Inbound, policy, store,
// trace, DSNs, Received:, Maildir and the SMTP client all use this form; nothing else builds or
// takes apart "local@domain" strings.
// Canonical form: the local part as a dot-atom when it is one, otherwise a quoted string in which
// only `"` and `\` are escaped; the domain with its ASCII letters lower-cased; no source route.
// Promises: parsing never throws (a refusal is an SmtpReply, `ok: false`); a parsed mailbox's `address` parses
// back to the same local part and domain; smtpPath never returns a path that is not a valid
// RFC 5321 path (it returns the reason instead).
import { domainToASCII } from 'node:url';
import { Replies, type SmtpReply } from './errors.ts';

export interface Mailbox {
  /** The canonical form ("" for the null path, "postmaster" for the bare postmaster). */
  address: string;
  /** The local part as the mailbox owner knows it: quotes removed, escapes resolved. */
  local: string;
  domain: string;
  /** True when the local part was a quoted string in the input. */
  quoted: boolean;
  /** "postmaster" without a domain (RFC 5321 §4.1.1.3). */
  bare?: boolean;
}

const ATEXT = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+$/;
// UTF-8 (RFC 6531): any non-ASCII character except the C1 controls.
const ATEXT_UTF8 = /^(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x9f])+$/;
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const LABEL_UTF8 = /^(?:[A-Za-z0-9]|[^\x00-\x9f])(?:(?:[A-Za-z0-9-]|[^\x00-\x9f]){0,61}(?:[A-Za-z0-9]|[^\x00-\x9f]))?$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
/** Longest path between the angle brackets, in octets (RFC 5321 §4.5.3.1.3: 256 with them). */
const MAX_PATH = 254;

export const isAscii = (s: string): boolean => /^[\x00-\x7f]*$/.test(s);

/**
 * A domain as policy compares it: ASCII, lower case, and a UTF-8 domain (RFC 6531) in its IDNA
 * A-label form (`bücher.test` is `xn--bcher-kva.test`, the form configuration names it by).
 * Parsing refuses a UTF-8 domain without a valid A-label form (checkDomain), so every parsed
 * domain has one; anything else keeps its own form (and matches no configured domain).
 */
export function policyDomain(d: string): string {
  if (isAscii(d)) return d.toLowerCase();
  return domainToASCII(d) || d;
}

/**
 * The value of the most specific domain in `byDomain` that `name` is or lies under (a name of
 * two labels or more: `mail.eu.contoso.test` finds `eu.contoso.test` before `contoso.test`).
 */
export function underDomain<T>(name: string, byDomain: ReadonlyMap<string, T>): T | undefined {
  for (let n = name.toLowerCase(); n.includes('.'); n = n.slice(n.indexOf('.') + 1)) {
    const v = byDomain.get(n);
    if (v !== undefined) return v;
  }
  return undefined;
}

/**
 * Why a UTF-8 domain has no A-label form that is a host name (null when it has one): IDNA maps
 * full-width and ideographic dots to `.` and digits to ASCII, so `fabrikam.test。` would be
 * `fabrikam.test.` and `１２７．０．０．１` an IP address, each escaping the rules for the domain.
 */
function idnProblem(d: string): string | null {
  const a = domainToASCII(d);
  if (!a) return `"${d}" is not a valid internationalized domain name`;
  if (IPV4.test(a) || !a.split('.').every((l) => LABEL.test(l)) || !/[a-z]/i.test(a.slice(a.lastIndexOf('.') + 1)))
    return `"${d}" is not a host name in its ASCII form (${a})`;
  return null;
}

/** An address literal "[IPv4]" or "[IPv6:…]" (RFC 5321 §4.1.3); null when valid, else the reason. */
export function checkAddressLiteral(d: string): string | null {
  if (!d.startsWith('[')) return 'not an address literal';
  if (!d.endsWith(']')) return 'unterminated address literal';
  const lit = d.slice(1, -1);
  if (IPV4.test(lit)) return null;
  // the tag is case-insensitive (RFC 5234 §2.3), and normalised lower case
  if (/^IPv6:[0-9A-Fa-f:.]+$/i.test(lit)) return null;
  return 'bad address literal';
}

function checkDomain(d: string, utf8: boolean): string | null {
  if (d.startsWith('[')) return checkAddressLiteral(d);
  if (d.length > 255) return 'domain too long';
  const re = utf8 ? LABEL_UTF8 : LABEL;
  for (const l of d.split('.')) if (!re.test(l)) return `bad domain "${d}"`;
  return utf8 && !isAscii(d) ? idnProblem(d) : null;
}

const isDotAtom = (local: string): boolean => local.split('.').every((a) => ATEXT_UTF8.test(a));

/** The local part in canonical form: as is when a dot-atom, else quoted with `"` and `\` escaped. */
export function formatLocalPart(local: string): string {
  return isDotAtom(local) ? local : `"${local.replace(/(["\\])/g, '\\$1')}"`;
}

/** ASCII letters lower-cased only: Unicode case mapping can lengthen a name or turn it into ASCII. */
const lowerAscii = (s: string): string => s.replace(/[A-Z]+/g, (m) => m.toLowerCase());

/** The canonical form of a mailbox from its parts. */
export function formatMailbox(local: string, domain: string): string {
  return `${formatLocalPart(local)}@${lowerAscii(domain)}`;
}

/** A quoted local part (RFC 5321 qtextSMTP / quoted-pairSMTP, RFC 6531 UTF-8): [content, rest] or the reason. */
function readQuoted(s: string): [string, string] | string {
  let out = '';
  for (let i = 1; i < s.length; i++) {
    const c = s[i];
    const code = c.charCodeAt(0);
    if (c === '"') return [out, s.slice(i + 1)];
    if (c === '\\') {
      const n = s.charCodeAt(i + 1);
      if (!(n >= 0x20 && n <= 0x7e))
        return i + 1 >= s.length ? 'unterminated quoted string' : 'bad escape in quoted local part';
      out += s[++i];
      continue;
    }
    if (code < 0x20 || code === 0x7f || (code >= 0x80 && code <= 0x9f)) return 'control character in quoted local part';
    out += c;
  }
  return 'unterminated quoted string';
}

/** A parse result: the mailbox, or the refusal to send (an SmtpReply with its enhanced code). */
export type MailboxResult = { ok: true; mailbox: Mailbox } | { ok: false; reply: SmtpReply };

const refuse = (reply: SmtpReply): MailboxResult => ({ ok: false, reply });

/** Parse a mailbox (the text between "<" and ">", source route allowed) into its canonical form. */
export function parseMailbox(inner: string, utf8Allowed: boolean): MailboxResult {
  if (Buffer.byteLength(inner) > MAX_PATH) return refuse(Replies.pathTooLong());
  let s = inner;
  // Source route "@a,@b:user@d": accepted and ignored (RFC 5321 §4.1.2, §C).
  if (s.startsWith('@')) {
    const colon = s.indexOf(':');
    if (colon < 0) return refuse(Replies.badAddress('bad source route'));
    s = s.slice(colon + 1);
  }
  if (!isAscii(s) && !utf8Allowed) return refuse(Replies.nonAsciiNeedsSmtputf8());
  let local: string;
  let rest: string;
  let quoted = false;
  if (s.startsWith('"')) {
    const q = readQuoted(s);
    if (typeof q === 'string') return refuse(Replies.badAddress(q));
    [local, rest] = q;
    quoted = true;
    if (rest !== '' && !rest.startsWith('@')) return refuse(Replies.badAddress('text after quoted local part'));
    rest = rest.slice(1);
  } else {
    const at = s.lastIndexOf('@');
    if (at < 0) {
      if (s.toLowerCase() === 'postmaster')
        return {
          ok: true,
          mailbox: { address: 'postmaster', local: 'postmaster', domain: '', quoted: false, bare: true },
        };
      return refuse(Replies.badAddress('missing @domain'));
    }
    local = s.slice(0, at);
    rest = s.slice(at + 1);
    const re = utf8Allowed ? ATEXT_UTF8 : ATEXT;
    if (!local || local.split('.').some((atom) => !re.test(atom)))
      return refuse(Replies.badAddress(`bad local part "${local}"`));
  }
  if (Buffer.byteLength(local) > 64) return refuse(Replies.pathTooLong());
  if (!rest) return refuse(Replies.badAddress('missing domain'));
  const derr = checkDomain(rest, utf8Allowed);
  if (derr) return refuse(Replies.badAddress(derr));
  const domain = lowerAscii(rest);
  return { ok: true, mailbox: { address: formatMailbox(local, domain), local, domain, quoted } };
}

/**
 * A stored address (canonical form) back into its parts. Refuses anything that is not exactly the
 * canonical form of a mailbox, so what comes out is what the canonical form means.
 */
export function parseAddress(address: string, utf8Allowed: boolean): MailboxResult {
  if (address === '') return { ok: true, mailbox: { address: '', local: '', domain: '', quoted: false } };
  const r = parseMailbox(address, utf8Allowed);
  if (r.ok && r.mailbox.address !== address)
    return refuse(Replies.badAddress(`not in canonical form (that is ${r.mailbox.address})`));
  return r;
}

/**
 * The path to send in MAIL FROM (`role` "sender") or RCPT TO ("recipient"): "<" + canonical form +
 * ">", or why the stored address cannot be sent as a valid RFC 5321 path. UTF-8 only when the
 * transaction uses SMTPUTF8; the bare postmaster only as a recipient; the null path only as sender.
 */
export function smtpPath(
  address: string,
  role: 'sender' | 'recipient',
  utf8: boolean,
): { ok: true; path: string } | { ok: false; problem: string } {
  if (address === '')
    return role === 'sender' ? { ok: true, path: '<>' } : { ok: false, problem: 'the null path is not a recipient' };
  const r = parseAddress(address, utf8);
  if (!r.ok) return { ok: false, problem: r.reply.message };
  if (r.mailbox.bare && role === 'sender')
    return { ok: false, problem: '<postmaster> without a domain is only valid as a recipient' };
  return { ok: true, path: `<${r.mailbox.address}>` };
}

/**
 * Case folding for mailbox names (mailbox names are case-insensitive here): Unicode lower case,
 * except where that would turn a non-ASCII character into ASCII (KELVIN SIGN would become "k",
 * and so reach another, ASCII, mailbox).
 */
export function foldCase(s: string): string {
  let out = '';
  for (const ch of s) {
    const l = ch.toLowerCase();
    out += ch > '\x7f' && isAscii(l) ? ch : l;
  }
  return out;
}
