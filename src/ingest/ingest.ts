// Owns: turning an accepted SMTP transaction into a durable queue entry. The only writer of new
// messages into the store (inbound/ never writes the queue itself). Records with the envelope
// what delivery must know about the content without scanning it: the longest line, and 8-bit
// content (for messages the gateway generates; inbound/ reports it for received ones), and the
// header `TLS-Required: No` (RFC 8689 §5), ignored when MAIL FROM carried REQUIRETLS (§4.1).
// Refuses a message that has passed more hops than smtp.maxReceivedHeaders (a mail loop, RFC 5321
// §6.3) before anything is stored.
// Promise: resolves with the queue id only after the store's commit is synced; on failure it
// returns the reply to give (554 5.4.6 for a loop, 452 4.3.1 when storage is full, 451 4.3.0
// otherwise), never throws.
import { isAscii } from 'node:buffer';
import { emit } from '../events.ts';
import { Replies, type SmtpReply } from '../errors.ts';
import type { EnvelopeParams, InboundFacts, NewRecipient, QueueMessage, Store } from '../store/types.ts';
import { queueId } from '../util/ids.ts';
import { longestLine } from '../util/lines.ts';
import { receivedHeader } from './received.ts';
import { errorMessage } from '../util/errors.ts';

export interface Transaction {
  org: string;
  mailFrom: string;
  envelope: EnvelopeParams;
  recipients: NewRecipient[];
  inbound: InboundFacts;
  /** Message data as decoded (CRLF line endings, dot-stuffing removed). */
  chunks: Buffer[];
  /** Longest line of `chunks` (CRLF excluded) when the decoder measured it; else it is measured here. */
  longestLine?: number;
}

/** Message-ID from the header block (first occurrence, unfolded). */
export function findMessageId(head: string): string | undefined {
  const m = /(?:^|\r\n)message-id:[ \t]*((?:[^\r\n]|\r\n[ \t])*)/i.exec(head);
  return m
    ? m[1]
        .replace(/\r\n[ \t]+/g, ' ')
        .trim()
        .slice(0, 998) || undefined
    : undefined;
}

/** RFC 8689 §5: the header block says `TLS-Required: No` (the only value the RFC defines). */
export function tlsRequiredNo(head: string): boolean {
  const m = /(?:^|\r\n)tls-required:[ \t]*((?:[^\r\n]|\r\n[ \t])*)/i.exec(head);
  return (
    !!m &&
    m[1]
      .replace(/\r\n[ \t]+/g, ' ')
      .trim()
      .toLowerCase() === 'no'
  );
}

/**
 * The header section (up to the empty line). Its size is bounded: the DATA decoder refuses a
 * message whose header section exceeds smtp.maxHeaderSize before it gets here. Only the header's
 * bytes become a string (the body, usually in the same chunk, is not converted).
 */
export function headerText(chunks: Buffer[]): string {
  let s = '';
  for (const c of chunks) {
    // An empty line that starts in the chunks before: their last 3 characters and c's first 3.
    const from = Math.max(0, s.length - 3);
    const seam = (s.slice(from) + c.toString('latin1', 0, Math.min(3, c.length))).indexOf('\r\n\r\n');
    if (seam >= 0) return (s + c.toString('latin1', 0, 3)).slice(0, from + seam + 2);
    const end = c.indexOf(EMPTY_LINE);
    if (end >= 0) return s + c.toString('latin1', 0, end + 2);
    s += c.toString('latin1');
  }
  return s;
}
const EMPTY_LINE = Buffer.from('\r\n\r\n');

/** The number of Received: fields in a header section (RFC 5322 §3.6.7; continuation lines start with WSP). */
export function receivedCount(head: string): number {
  return head.match(/(?:^|\r\n)received[ \t]*:/gi)?.length ?? 0;
}

// PostgreSQL 53100: disk_full.
const STORAGE_FULL = new Set(['SQLITE_FULL', 'ENOSPC', 'EDQUOT', '53100']);

export interface GeneratedMessage {
  org: string;
  /** The recipient (the original sender, for a DSN) and its route. */
  to: { address: string; route: 'local' | 'remote' };
  data: Buffer;
  messageId: string;
  /** Our hostname, for the trace. */
  host: string;
  /** Queue id of the message this one reports on (or what the message is, e.g. "tlsrpt"). */
  regarding: string;
  /** What generated it, for the trace (default `dsn:<regarding>`). */
  source?: string;
  /** Envelope flags: a DSN of a REQUIRETLS message is sent with REQUIRETLS (RFC 8689 §5). */
  envelope?: Pick<EnvelopeParams, 'requireTls' | 'tlsRequiredNo' | 'tlsReport'>;
}

/** Where new messages go after their commit: a local worker that can take them right away. */
export interface Handoff {
  /** A lease to store the message under when the worker has room now; undefined otherwise. */
  reserve(): { owner: string; ms: number } | undefined;
  /** The message was committed leased to the worker: deliver it (data in memory). */
  take(m: QueueMessage, data: Buffer): void;
  /** The message was committed unleased: the worker should look at the queue. */
  kick(): void;
  /** The commit failed: give the reservation back. */
  unreserve(): void;
}

/** The limits ingest applies, read for each message (configuration reloads). */
export interface IngestLimits {
  /** smtp.maxReceivedHeaders: more Received: fields than this is a mail loop (RFC 5321 §6.3). */
  maxReceivedHeaders: number;
}

export class Ingest {
  constructor(
    private readonly store: Store,
    private readonly handoff: Handoff,
    private readonly limits: () => IngestLimits,
  ) {}

  private async commit(m: Parameters<Store['enqueue']>[0]): Promise<void> {
    const lease = this.handoff.reserve();
    let q: QueueMessage;
    try {
      q = await this.store.enqueue(m, lease);
    } catch (e) {
      if (lease) this.handoff.unreserve();
      throw e;
    }
    if (lease) this.handoff.take(q, m.data);
    else this.handoff.kick();
  }

  /** Queue a message the gateway generated itself (a DSN, a TLS report): null sender, so it can never bounce. */
  async generated(g: GeneratedMessage): Promise<string> {
    const now = Date.now();
    const id = queueId(now);
    await this.commit({
      id,
      org: g.org,
      receivedAt: now,
      mailFrom: '',
      messageId: g.messageId,
      // A DSN returns the original message, which may be 8-bit or have long lines: measure it (rare).
      envelope: {
        smtputf8: false,
        longestLine: longestLine(g.data),
        ...(isAscii(g.data) ? {} : { body: '8BITMIME' as const }),
        ...g.envelope,
      },
      inbound: {
        sessionId: g.source ?? `dsn:${g.regarding}`,
        clientIp: '',
        clientPort: 0,
        helo: '',
        protocol: 'local',
        receivedBy: g.host,
      },
      data: g.data,
      recipients: [{ address: g.to.address, org: g.org, route: g.to.route, notify: 'NEVER' }],
    });
    return id;
  }

  /** Store the transaction durably: its queue id, or the reply refusing it (storage failed). */
  async accept(t: Transaction): Promise<{ ok: true; queueId: string } | { ok: false; reply: SmtpReply }> {
    const head = headerText(t.chunks);
    // RFC 5321 §6.3: servers MUST detect and stop loops; counting Received: fields is the usual way.
    const hops = receivedCount(head);
    const maxHops = this.limits().maxReceivedHeaders;
    if (hops > maxHops) {
      const reply = Replies.tooManyHops(hops, maxHops);
      emit({
        event: 'message.rejected',
        sid: t.inbound.sessionId,
        code: reply.code,
        enhanced: reply.enhanced,
        reason: reply.message,
      });
      return { ok: false, reply };
    }
    const now = new Date();
    const id = queueId(now.getTime());
    const rcpt = t.recipients.length === 1 ? t.recipients[0].address : undefined;
    const received = receivedHeader(t.inbound, id, rcpt, now);
    const data = Buffer.concat([received, ...t.chunks]);
    const longest = t.longestLine === undefined ? longestLine(data) : Math.max(t.longestLine, longestLine(received));
    const relaxed = !t.envelope.requireTls && tlsRequiredNo(head);
    try {
      await this.commit({
        id,
        org: t.org,
        receivedAt: now.getTime(),
        mailFrom: t.mailFrom,
        messageId: findMessageId(head),
        envelope: { ...t.envelope, longestLine: longest, ...(relaxed ? { tlsRequiredNo: true } : {}) },
        inbound: t.inbound,
        data,
        recipients: t.recipients,
      });
    } catch (e) {
      const code = (e as { code?: string }).code ?? '';
      emit({ event: 'internal.error', where: 'ingest.enqueue', error: `${code} ${errorMessage(e)}` });
      return { ok: false, reply: STORAGE_FULL.has(code) ? Replies.storageFull() : Replies.storageError() };
    }
    return { ok: true, queueId: id };
  }
}
