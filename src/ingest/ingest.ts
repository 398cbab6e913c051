// Owns: turning an accepted SMTP transaction into durable queue entries: one per organisation of
// its recipients (an onPremises sender's mail is all its organisation's), so that no organisation
// holds another's recipients. The only writer of new messages into the store (inbound/ never
// writes the queue itself). Records with the envelope
// what delivery must know about the content without scanning it: the longest line, and 8-bit
// content (for messages the gateway generates; inbound/ reports it for received ones), and the
// header `TLS-Required: No` (RFC 8689 §5), ignored when MAIL FROM carried REQUIRETLS (§4.1).
// Refuses a message that has passed more hops than smtp.maxReceivedHeaders (a mail loop, RFC 5321
// §6.3) before anything is stored.
// Promise: resolves with the queue ids only after the store's commit of all the copies is synced
// (one transaction: all are stored or none); on failure it returns the reply to give (554 5.4.6
// for a loop, 452 4.3.1 when storage is full, 451 4.3.0 otherwise), never throws.
import { isAscii } from 'node:buffer';
import { emit } from '../events.ts';
import { Replies, type SmtpReply } from '../errors.ts';
import type { EnvelopeParams, InboundFacts, NewEntry, NewRecipient, QueueMessage, Store } from '../store/types.ts';
import { queueId } from '../util/ids.ts';
import { longestLine } from '../util/lines.ts';
import { receivedHeader } from './received.ts';
import { errorMessage } from '../util/errors.ts';

export interface Transaction {
  /**
   * The organisation every recipient's copy is attributed to: an onPremises sender's (its own
   * outbound mail). Absent: each recipient's own organisation, one stored message per
   * organisation, so that an organisation sees and acts on its own recipients' copy only.
   */
  sendingOrg?: string;
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
  /**
   * The recipient (the original sender, for a DSN), its route and, when it is an address of an
   * organisation hosted here, that organisation (its connectors route it; default `org`).
   */
  to: { address: string; route: 'local' | 'remote'; org?: string };
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

  /** Store the messages in one transaction (all or none), then hand each to delivery. */
  private async commit(ms: readonly NewEntry['message'][]): Promise<void> {
    const entries: NewEntry[] = [];
    for (const message of ms) {
      const lease = this.handoff.reserve();
      entries.push(lease ? { message, lease } : { message });
    }
    let q: QueueMessage[];
    try {
      q =
        entries.length === 1
          ? [await this.store.enqueue(ms[0], entries[0].lease)]
          : await this.store.enqueueAll(entries);
    } catch (e) {
      for (const e of entries) if (e.lease) this.handoff.unreserve();
      throw e;
    }
    entries.forEach((e, i) => (e.lease ? this.handoff.take(q[i], e.message.data) : this.handoff.kick()));
  }

  /** Queue a message the gateway generated itself (a DSN, a TLS report): null sender, so it can never bounce. */
  async generated(g: GeneratedMessage): Promise<string> {
    const now = Date.now();
    const id = queueId(now);
    await this.commit([
      {
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
        recipients: [{ address: g.to.address, org: g.to.org ?? g.org, route: g.to.route, notify: 'NEVER' }],
      },
    ]);
    return id;
  }

  /**
   * Store the transaction durably: one message per organisation (see Transaction.sendingOrg), all
   * in one commit; the copies stored, or the reply refusing the transaction (nothing stored).
   */
  async accept(t: Transaction): Promise<{ ok: true; copies: StoredCopy[] } | { ok: false; reply: SmtpReply }> {
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
    const messageId = findMessageId(head);
    const relaxed = !t.envelope.requireTls && tlsRequiredNo(head);
    const copies: StoredCopy[] = [];
    const messages = byOrganisation(t).map(([org, recipients]) => {
      const id = queueId(now.getTime());
      copies.push({ queueId: id, org, recipients: recipients.length });
      const received = receivedHeader(t.inbound, id, recipients.length === 1 ? recipients[0].address : undefined, now);
      const data = Buffer.concat([received, ...t.chunks]);
      const longest = t.longestLine === undefined ? longestLine(data) : Math.max(t.longestLine, longestLine(received));
      return {
        id,
        org,
        receivedAt: now.getTime(),
        mailFrom: t.mailFrom,
        messageId,
        envelope: { ...t.envelope, longestLine: longest, ...(relaxed ? { tlsRequiredNo: true } : {}) },
        inbound: t.inbound,
        data,
        recipients,
      };
    });
    try {
      await this.commit(messages);
    } catch (e) {
      const code = (e as { code?: string }).code ?? '';
      emit({ event: 'internal.error', where: 'ingest.enqueue', error: `${code} ${errorMessage(e)}` });
      return { ok: false, reply: STORAGE_FULL.has(code) ? Replies.storageFull() : Replies.storageError() };
    }
    return { ok: true, copies };
  }
}

/**
 * At most this many organisations' recipients in one transaction (inbound/ refuses more with
 * 452 4.5.3, which the client sends again in another transaction, RFC 5321 §4.5.3.1.10): each
 * is a copy of the message, in memory and on disk.
 */
export const MAX_ORGANIZATIONS = 10;

/** One stored message of an accepted transaction. */
export interface StoredCopy {
  queueId: string;
  org: string;
  /** How many of the transaction's recipients it carries. */
  recipients: number;
}

/** The transaction's recipients by the organisation their copy belongs to, in the order first named. */
function byOrganisation(t: Transaction): [string, NewRecipient[]][] {
  if (t.sendingOrg !== undefined) return [[t.sendingOrg, t.recipients]];
  const first = t.recipients[0].org;
  if (t.recipients.every((r) => r.org === first)) return [[first, t.recipients]];
  const groups = new Map<string, NewRecipient[]>();
  for (const r of t.recipients) {
    const g = groups.get(r.org);
    if (g) g.push(r);
    else groups.set(r.org, [r]);
  }
  return [...groups];
}
