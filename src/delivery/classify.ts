// Owns: the one classifier of delivery outcomes: temporary vs permanent, and the RFC 3463 code,
// decided from structured error data (errno codes, reply codes, TLS failure kinds, DNS error
// kinds), never by matching error text. What a failure means for the rest of the delivery (next
// host, every recipient, remembered) is trouble.ts's.
// Promises: a failure or a refusal is never classified 'delivered'.
import type { SmtpReply } from '../errors.ts';
import { tlsFailureLabel, type TlsFailureKind } from '../tls/failures.ts';
import type { DnsErrorKind } from '../dns/types.ts';
import { REQUIRETLS_REPLY } from '../policy/outbound.ts';

export interface Outcome {
  status: 'delivered' | 'deferred' | 'failed';
  reply: SmtpReply;
}

const LOCAL: Record<string, { enhanced: string; temporary: boolean; what: string }> = {
  ENOSPC: { enhanced: '4.3.1', temporary: true, what: 'mail system full (no space left on device)' },
  EDQUOT: { enhanced: '4.2.2', temporary: true, what: 'mailbox full (disk quota exceeded)' },
  EACCES: {
    enhanced: '4.3.0',
    temporary: true,
    what: 'permission denied writing the mailbox; fix the ownership of the mailboxes folder',
  },
  EPERM: {
    enhanced: '4.3.0',
    temporary: true,
    what: 'permission denied writing the mailbox; fix the ownership of the mailboxes folder',
  },
  EROFS: { enhanced: '4.3.0', temporary: true, what: 'mail store is on a read-only file system' },
  EIO: { enhanced: '4.3.0', temporary: true, what: 'I/O error writing the mailbox' },
  EMFILE: { enhanced: '4.3.0', temporary: true, what: 'too many open files' },
  ENFILE: { enhanced: '4.3.0', temporary: true, what: 'too many open files in the system' },
  ENAMETOOLONG: { enhanced: '5.1.3', temporary: false, what: 'mailbox name too long for the file system' },
  ENOTDIR: { enhanced: '4.3.0', temporary: true, what: 'a file stands where a mailbox folder belongs' },
  EEXIST: { enhanced: '4.3.0', temporary: true, what: 'name collision writing the mailbox' },
};

export function classifyLocalError(e: NodeJS.ErrnoException, where: string): Outcome {
  const k = LOCAL[e.code ?? ''] ?? { enhanced: '4.3.0', temporary: true, what: `local error ${e.code ?? ''}`.trim() };
  const code = k.temporary ? 451 : 550;
  return {
    status: k.temporary ? 'deferred' : 'failed',
    reply: {
      code,
      enhanced: k.enhanced,
      message: `Local delivery failed: ${k.what}`,
      reason: `${k.what} (${e.code} at ${where})`,
    },
  };
}

/** Structured failure facts from the SMTP client or the resolver (see smtp-client.ts, dns/). */
export interface FailureFacts {
  kind:
    | 'dns'
    | 'connect'
    | 'timeout'
    | 'closed'
    | 'protocol'
    | 'greeting'
    | 'ehlo'
    | 'starttls'
    | 'tls'
    | 'tlsPolicy'
    | 'mail'
    | 'size'
    | 'eightBit'
    | 'smtputf8'
    | 'nullMx'
    | 'noHost'
    | 'loopsBack'
    | 'badSender'
    | 'badRecipient'
    | 'requireTls';
  /** Reply from the peer, when there was one. */
  reply?: { code: number; enhanced?: string; text: string };
  /** DNS error kind for kind "dns". */
  dnsKind?: DnsErrorKind;
  /** For kinds starttls, tls and tlsPolicy: what exactly went wrong (tls/failures.ts). */
  tlsFailure?: TlsFailureKind;
  /** Admin-facing explanation (host, what happened). */
  detail: string;
}

const TRANSPORT: Record<string, [string, string]> = {
  connect: ['4.4.1', 'No answer from host'],
  timeout: ['4.4.2', 'Bad connection: timeout'],
  closed: ['4.4.2', 'Bad connection: closed by the peer'],
  protocol: ['4.5.0', 'Protocol error from the peer'],
  starttls: ['4.7.4', 'TLS required but not available'],
  tls: ['4.7.5', 'TLS handshake failed'],
  tlsPolicy: ['4.7.5', 'TLS required but the peer did not prove the required identity'],
};

/** Map a reply to an outcome: 2xx delivered, 4xx deferred, 5xx failed; enhanced defaults to X.0.0. */
export function classifyReply(r: { code: number; enhanced?: string; text: string }, detail: string): Outcome {
  const cls = Math.floor(r.code / 100);
  const enhanced = r.enhanced && r.enhanced[0] === String(cls) ? r.enhanced : `${cls === 2 ? 2 : cls}.0.0`;
  const status = cls === 2 ? 'delivered' : cls === 4 ? 'deferred' : 'failed';
  return { status, reply: { code: r.code, enhanced, message: r.text, reason: detail } };
}

/**
 * A reply where the peer refused a step (greeting, EHLO/HELO, MAIL, RCPT, DATA): 4xx deferred, 5xx
 * failed. Any other code in that place is a protocol error (RFC 5321 §4.2: the step did not
 * succeed) and defers: a refusal is never read as "delivered".
 */
export function classifyRefusal(r: { code: number; enhanced?: string; text: string }, detail: string): Outcome {
  if (r.code >= 400 && r.code < 600) return classifyReply(r, detail);
  return {
    status: 'deferred',
    reply: { code: 451, enhanced: '4.5.0', message: 'Protocol error from the peer', reason: detail },
  };
}

/** The one classifier for remote delivery failures. */
export function classifyFailure(f: FailureFacts): Outcome {
  switch (f.kind) {
    case 'dns':
      if (f.dnsKind === 'nxdomain' || f.dnsKind === 'nodata') {
        return {
          status: 'failed',
          reply: {
            code: 550,
            enhanced: '5.1.2',
            message: 'Recipient domain has no mail server (DNS)',
            reason: f.detail,
          },
        };
      }
      return {
        status: 'deferred',
        reply: { code: 451, enhanced: '4.4.3', message: 'DNS lookup failed, will retry', reason: f.detail },
      };
    case 'nullMx':
      return {
        status: 'failed',
        reply: {
          code: 556,
          enhanced: '5.1.10',
          message: 'Recipient domain does not accept mail (null MX, RFC 7505)',
          reason: f.detail,
        },
      };
    case 'loopsBack': // RFC 5321 §5.1: "MUST be returned as undeliverable"; RFC 3463 X.4.6 routing loop
      return {
        status: 'failed',
        reply: {
          code: 554,
          enhanced: '5.4.6',
          message: 'Mail for this domain loops back to this gateway (it is listed as the mail server of the domain)',
          reason: f.detail,
        },
      };
    case 'noHost':
      return {
        status: 'failed',
        reply: {
          code: 550,
          enhanced: '5.1.2',
          message: 'Recipient domain has no usable mail server address',
          reason: f.detail,
        },
      };
    case 'size':
      return {
        status: 'failed',
        reply: {
          code: 552,
          enhanced: '5.3.4',
          message: 'Message too big for the destination server',
          reason: f.detail,
        },
      };
    case 'eightBit':
      return {
        status: 'failed',
        reply: {
          code: 554,
          enhanced: '5.6.3',
          message:
            'The destination does not accept 8-bit data (no 8BITMIME) and the message cannot be converted to 7 bit',
          reason: f.detail,
        },
      };
    case 'smtputf8':
      return {
        status: 'failed',
        reply: {
          code: 553,
          enhanced: '5.6.7',
          message: 'The destination does not support internationalized addresses (SMTPUTF8)',
          reason: f.detail,
        },
      };
    case 'requireTls':
      // RFC 8689 §4.2.1: not sent, returned to the sender with 5.7.30.
      return { status: 'failed', reply: { ...REQUIRETLS_REPLY, reason: f.detail } };
    case 'badSender':
      return {
        status: 'failed',
        reply: { code: 553, enhanced: '5.1.7', message: 'Bad sender address syntax', reason: f.detail },
      };
    case 'badRecipient':
      return {
        status: 'failed',
        reply: { code: 553, enhanced: '5.1.3', message: 'Bad recipient address syntax', reason: f.detail },
      };
    case 'greeting':
    case 'ehlo':
    case 'mail':
      if (f.reply) return classifyRefusal(f.reply, f.detail);
      return {
        status: 'deferred',
        reply: { code: 451, enhanced: '4.4.2', message: 'Bad connection', reason: f.detail },
      };
    default: {
      const [enhanced, message] = TRANSPORT[f.kind] ?? ['4.4.0', 'Delivery failed'];
      return {
        status: 'deferred',
        reply: {
          code: 451,
          enhanced,
          message: f.tlsFailure ? `${message}: ${tlsFailureLabel(f.tlsFailure)}` : message,
          reason: f.detail,
        },
      };
    }
  }
}
