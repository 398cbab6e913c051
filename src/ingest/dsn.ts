// Owns: building delivery status notifications (RFC 3464 multipart/report, RFC 3461 semantics)
// with a plain-words explanation for the sender. For a message sent with REQUIRETLS only the
// original's header block is returned (RFC 8689 §5).
import { randomBytes } from 'node:crypto';
import type { SmtpReply } from '../errors.ts';
import type { EnvelopeParams } from '../store/types.ts';
import { rfc5322Date } from './received.ts';

export interface DsnRecipient {
  address: string;
  orcpt?: string;
  action: 'failed' | 'delayed' | 'delivered' | 'relayed';
  reply: SmtpReply;
  remoteMta?: string;
  /** Plain words: what happened, including whether TLS was used or required. */
  explanation: string;
  lastAttempt?: number;
}

export interface DsnInput {
  reportingMta: string;
  queueId: string;
  originalFrom: string;
  envelope: EnvelopeParams;
  arrival: number;
  recipients: DsnRecipient[];
  /** The original message data (as queued). */
  original: Buffer;
  willRetryUntil?: number;
}

/** Does the recipient's NOTIFY ask for this kind of notice? (RFC 3461 §4.1; absent NOTIFY: failures and delays) */
export function wantsNotice(notify: string | undefined, kind: 'failed' | 'delayed' | 'success'): boolean {
  if (!notify) return kind !== 'success';
  const n = notify.toUpperCase().split(',');
  if (n.includes('NEVER')) return false;
  return n.includes(kind === 'failed' ? 'FAILURE' : kind === 'delayed' ? 'DELAY' : 'SUCCESS');
}

const decodeXtext = (s: string) =>
  s.replace(/\+([0-9A-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));

function headerBlock(data: Buffer): Buffer {
  const end = data.indexOf('\r\n\r\n');
  return end >= 0 ? data.subarray(0, end + 2) : data;
}

export function buildDsn(d: DsnInput): { data: Buffer; messageId: string } {
  const boundary = `=_portcullis_${randomBytes(9).toString('base64url')}`;
  const messageId = `<${d.queueId}.${randomBytes(4).toString('hex')}@${d.reportingMta}>`;
  const delayed = d.recipients.every((r) => r.action === 'delayed');
  const success = d.recipients.every((r) => r.action === 'delivered' || r.action === 'relayed');
  const subject = success
    ? 'Successful Mail Delivery Report'
    : delayed
      ? 'Delayed Mail (still being retried)'
      : 'Undelivered Mail Returned to Sender';
  const human = [
    `This is the mail system at ${d.reportingMta}.`,
    '',
    success
      ? 'Your message was successfully delivered to the recipients below (as you asked to be told).'
      : delayed
        ? 'Your message could not be delivered yet to the recipients below. It is still being retried; you do not ' +
          'need to send it again.'
        : 'I am sorry to have to tell you that your message could not be delivered to the recipients below. It ' +
          'has been returned.',
    '',
    ...d.recipients.flatMap((r) => [`<${r.address}>:`, `    ${r.explanation}`, '']),
    ...(delayed && d.willRetryUntil
      ? [`Delivery will be retried until ${rfc5322Date(new Date(d.willRetryUntil))}.`, '']
      : []),
    `Queue id: ${d.queueId}`,
  ].join('\r\n');
  const perMessage = [
    `Reporting-MTA: dns; ${d.reportingMta}`,
    `X-Portcullis-Queue-ID: ${d.queueId}`,
    ...(d.envelope.envid ? [`Original-Envelope-Id: ${decodeXtext(d.envelope.envid)}`] : []),
    `Arrival-Date: ${rfc5322Date(new Date(d.arrival))}`,
  ];
  const perRecipient = d.recipients.map((r) =>
    [
      ...(r.orcpt ? [`Original-Recipient: ${r.orcpt.replace(/;/, '; ')}`] : []),
      `Final-Recipient: rfc822; ${r.address}`,
      `Action: ${r.action}`,
      `Status: ${r.reply.enhanced}`, // the RFC 3463 code
      ...(r.remoteMta ? [`Remote-MTA: dns; ${r.remoteMta}`] : []),
      `Diagnostic-Code: smtp; ${r.reply.code} ${r.reply.enhanced} ${r.reply.message}`.replace(/[\r\n]+/g, ' '),
      ...(r.lastAttempt ? [`Last-Attempt-Date: ${rfc5322Date(new Date(r.lastAttempt))}`] : []),
      ...(r.action === 'delayed' && d.willRetryUntil
        ? [`Will-Retry-Until: ${rfc5322Date(new Date(d.willRetryUntil))}`]
        : []),
    ].join('\r\n'),
  );
  // RFC 3461 §4.3: RET=FULL asks for the entire message "in any 'failed' DSN"; "If a DSN contains
  // no indications of delivery failure, only the headers of the message SHOULD be returned"
  // (success and delay notices, whatever RET says). RFC 8689 §5: a REQUIRETLS message's content
  // never travels in a DSN (headers only).
  const headersOnly =
    d.envelope.ret === 'HDRS' || !d.recipients.some((r) => r.action === 'failed') || d.envelope.requireTls === true;
  const head = [
    `From: Mail Delivery System <MAILER-DAEMON@${d.reportingMta}>`,
    `To: <${d.originalFrom}>`,
    `Subject: ${subject}`,
    `Date: ${rfc5322Date(new Date())}`,
    `Message-ID: ${messageId}`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    'This is a MIME-encapsulated message.',
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=utf-8',
    'Content-Description: Notification',
    '',
    human,
    '',
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    'Content-Description: Delivery report',
    '',
    perMessage.join('\r\n'),
    '',
    perRecipient.join('\r\n\r\n'),
    '',
    `--${boundary}`,
    `Content-Type: ${headersOnly ? 'text/rfc822-headers' : 'message/rfc822'}`,
    `Content-Description: ${success ? 'Delivered message' : 'Undelivered message'}${headersOnly ? ' headers' : ''}`,
    '',
    '',
  ].join('\r\n');
  const original = headersOnly ? headerBlock(d.original) : d.original;
  const tail = `${original.length && original.subarray(-2).toString() !== '\r\n' ? '\r\n' : ''}\r\n--${boundary}--\r\n`;
  return { data: Buffer.concat([Buffer.from(head), original, Buffer.from(tail)]), messageId };
}
