// Owns: one SMTP server session (RFC 5321, PIPELINING 2920, SIZE 1870, 8BITMIME 6152,
// SMTPUTF8 6531, ENHANCEDSTATUSCODES 2034, DSN 3461, CHUNKING 3030 (BDAT; not BINARYMIME),
// STARTTLS 3207, REQUIRETLS 8689: advertised and accepted only once the session is TLS-protected;
// the parameter is stored with the envelope).
// Asks policy/ for verdicts, hands complete transactions to ingest/, never writes the queue.
// Promises: every command line gets exactly one reply; the session closes only after a 221 or
// 421 (or a dead peer, or a 554 to a client that broke the RFC 2920 pipelining rules while
// smtp.forbidUnauthPipelining is on, a 521 to a BDAT line it cannot use, or a 552 to a BDAT whose
// chunk would bring the message over 1.5 times smtp.maxMessageSize: not read); bytes pipelined
// after STARTTLS are discarded and all state is reset after the handshake; memory per session is
// bounded (line limit, message limit, and
// reads pause while a command waits for the store or while more than MAX_UNSENT octets of
// replies wait for a client that does not read them); a session takes at most
// COMMANDS_PER_TURN commands per event-loop turn, so pipelining floods do not starve others.
// BDAT: a chunk's octets are read by count, never as commands, whatever the chunk's fate; a BDAT
// line that cannot be used (no readable size, a NUL, overlong, a bare ending refused) ends the
// session (521), as its chunk could not be told from commands. A chunked message has
// smtp.timeouts.data from its first BDAT to its last chunk, as a DATA message has for its data.
// A client certificate is judged once, right after the handshake (tls/client-cert.ts); while
// its revocation status is fetched (only for a certificate that could identify a connector),
// reads wait, bounded by the revocation checker's time limit.
import type { Socket } from 'node:net';
import tls from 'node:tls';
import type { Config } from '../config/load.ts';
import { emit, type TlsFacts } from '../events.ts';
import { formatReply, Replies, reply, type SmtpReply } from '../errors.ts';
import { MAX_ORGANIZATIONS, type Ingest } from '../ingest/ingest.ts';
import type { InboundPolicy } from '../policy/inbound.ts';
import type { EnvelopeParams, NewRecipient } from '../store/types.ts';
import type { X509Certificate } from 'node:crypto';
import type { ConnectorMatch } from '../policy/connectors.ts';
import { judgeClientChain, peerCertFacts, withRevocation, type ClientCertificate } from '../tls/client-cert.ts';
import { sessionFacts } from '../tls/facts.ts';
import { handshakeFailureKind } from '../tls/failures.ts';
import type { RevocationChecker } from '../tls/revocation.ts';
import { peerChain } from '../tls/trust.ts';
import type { ServerTls } from '../tls/server.ts';
import type { TrustStore } from '../tls/trust.ts';
import { sessionId } from '../util/ids.ts';
import { policyDomain } from '../mailbox.ts';
import { heloProblem, isXtext, parsePathArg, validNotify, validOrcpt } from './address.ts';
import { CommandReader } from './command-reader.ts';
import { DataDecoder } from './data-decoder.ts';
import { errorDetail } from '../util/errors.ts';

/** RFC 5321 §4.5.3.1.4 allows 512; ESMTP parameters (SIZE, DSN ORCPT/ENVID, SMTPUTF8) extend it. */
export const MAX_COMMAND_LINE = 2048;
/** Replies queued for a client that does not read them: above this, stop reading until they drain. */
export const MAX_UNSENT = 64 * 1024;
/** Replies are handed to the socket at least this often within one pipelined group. */
const FLUSH_AT = 16 * 1024;
/** Commands one session processes per event-loop turn before letting other sessions run. */
const COMMANDS_PER_TURN = 256;
/** The longest the reply to the end of the data waits for the store (RFC 5321 §4.5.3.2.6: 10 minutes). */
const STORE_WAIT_SECONDS = 600;
const FORBIDDEN = new Set(['GET', 'POST', 'HEAD', 'PUT', 'CONNECT', 'OPTIONS']);
/**
 * RFC 2920 §3.1: commands that may only end a pipelined group (QUIT is left out: the session
 * ends anyway; STARTTLS has its own rule: what follows it is discarded).
 */
const LAST_IN_GROUP = new Set(['EHLO', 'HELO', 'DATA', 'VRFY', 'EXPN', 'TURN', 'NOOP']);

export interface SessionDeps {
  config: Config;
  policy: InboundPolicy;
  tls: ServerTls | null;
  trust: TrustStore;
  /** Shared with outbound delivery (one cache of OCSP responses and CRLs). */
  revocation: RevocationChecker;
  ingest: Ingest;
}

/** What the server (admission) learns from a session. */
export interface SessionHooks {
  /** The session is over (221 or 421 sent, or the peer gone), though its socket may linger. Called once. */
  ended(): void;
  /** The socket is closed. Called once, after ended(). */
  closed(): void;
  /** The TLS handshake completed and the client certificate (if any) was judged, revocation included. */
  secured?(cert: ClientCertificate | undefined): void;
}

interface Txn {
  mailFrom: string;
  senderDomain: string;
  match?: ConnectorMatch;
  envelope: EnvelopeParams;
  recipients: NewRecipient[];
  seen: Set<string>;
  /** A recipient was refused for a per-message limit (see overshoot). */
  overshot?: boolean;
  /** The data comes in BDAT chunks (RFC 3030: DATA may not follow in this transaction), until then. */
  chunked?: { deadline: number };
}

/** The organisation all of the transaction's mail belongs to: its onPremises sender's (Transaction.sendingOrg). */
function sendingOrg(t: Txn): string | undefined {
  return t.match?.connector.connectorType === 'onPremises' ? t.match.connector.organization : undefined;
}

/** The BDAT chunk being read: `left` of its `size` octets still to come. */
interface Chunk {
  size: number;
  left: number;
  last: boolean;
  /** Read and discarded, then answered with this (no transaction, or a failed one). */
  discard: SmtpReply | null;
}

type Mode = 'greeting' | 'command' | 'data' | 'chunk' | 'tls' | 'closing';

export class SmtpSession {
  readonly id = sessionId();
  private sock: Socket;
  private mode: Mode = 'greeting';
  private readonly reader = new CommandReader(MAX_COMMAND_LINE);
  private decoder: DataDecoder | null = null;
  private chunk: Chunk | null = null;
  /** A BDAT of the transaction failed: chunks still pipelined behind it are discarded, up to LAST. */
  private chunkFailed = false;
  private busy = false;
  /** Reading is paused until the client reads the replies queued for it (MAX_UNSENT). */
  private blocked = false;
  /** Paused until the next event-loop turn (COMMANDS_PER_TURN). */
  private yielded = false;
  /** Admission withdrawn while a transaction was being stored: sent once it is answered. */
  private refusal: SmtpReply | null = null;
  private ended = false;
  private out = '';
  private helo: string | null = null;
  private esmtp = false;
  private txn: Txn | null = null;
  private tlsFacts: TlsFacts | undefined;
  private clientCert: ClientCertificate | undefined;
  private deadline: NodeJS.Timeout | undefined;
  private linger: NodeJS.Timeout | undefined;
  private readonly started = Date.now();
  private counts = { messages: 0, commands: 0, errors: 0 };
  private closeReason = 'client closed';
  private readonly onData = (c: Buffer) => this.receive(c);

  constructor(
    socket: Socket,
    private readonly deps: SessionDeps,
    private readonly hooks: SessionHooks,
  ) {
    this.sock = socket;
    this.clientIp = (socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    socket.setNoDelay(true);
    socket.on('data', this.onData);
    socket.on('error', () => {
      this.closeReason = 'network error';
    });
    socket.once('close', () => this.closed());
    this.arm(deps.config.smtp.timeouts.command);
    // Greet after two event-loop turns (microseconds, not an artificial delay): any bytes already
    // read by then were sent before the greeting existed — a protocol violation by the client.
    setImmediate(() => setImmediate(() => this.greet()));
  }

  private get host(): string {
    return this.deps.config.hostname;
  }
  /**
   * Taken from the raw socket at connect: after STARTTLS `sock` is the TLS socket, whose address is gone once closed.
   */
  private readonly clientIp: string;

  private greet(): void {
    if (this.mode !== 'greeting') return;
    // RFC 5321 §3.1: the session starts with the server's greeting; a client that talked first
    // gets 554 and the session closes (§3.1's 554 greeting would wait for QUIT).
    if (this.reader.pending > 0) {
      this.closeReason = 'pregreet';
      this.reader.take();
      this.send(Replies.pregreet());
      this.close();
      return;
    }
    this.mode = 'command';
    this.out += `220 ${this.host} ESMTP Portcullis\r\n`;
    this.flush();
  }

  /**
   * Deadline for the current phase: a command line, the DATA phase or the TLS handshake
   * (RFC 5321 §4.5.3.2.7: at least 5 minutes for the next command; 421 then, as §3.8 allows).
   */
  private arm(seconds: number): void {
    clearTimeout(this.deadline);
    this.deadline = setTimeout(() => {
      if (this.mode === 'closing') return;
      this.closeReason = `timeout in ${this.mode}`;
      // In a TLS handshake the socket is TLS's: a cleartext reply would land in the handshake.
      if (this.mode !== 'tls') this.send(Replies.timeout(this.host));
      this.close();
    }, seconds * 1000);
    this.deadline.unref();
  }

  private receive(chunk: Buffer): void {
    if (this.mode === 'closing' || this.mode === 'tls') return;
    const direct = !this.busy && !this.blocked && !this.yielded && this.reader.pending === 0;
    if (direct && this.mode === 'data') this.feedData(chunk);
    else if (direct && this.mode === 'chunk') this.feedChunk(chunk);
    else this.reader.push(chunk);
    if (this.mode !== 'greeting') this.pump();
  }

  private send(r: SmtpReply, error = r.code >= 400): void {
    if (error) this.counts.errors++;
    // UTF-8 in reply text only inside a transaction that uses SMTPUTF8 (RFC 6531).
    this.out += formatReply(r, this.txn?.envelope.smtputf8 ?? false);
  }

  /** Hand queued replies to the socket; past MAX_UNSENT unsent octets, stop reading until they drain. */
  private flush(): void {
    if (this.out && !this.sock.destroyed) this.sock.write(this.out);
    this.out = '';
    if (this.blocked || this.mode === 'closing' || this.sock.writableLength <= MAX_UNSENT) return;
    this.blocked = true;
    const sock = this.sock;
    const drained = () => {
      sock.off('drain', drained);
      sock.off('close', drained);
      if (this.sock !== sock) return; // STARTTLS replaced the socket (and cleared `blocked`)
      this.blocked = false;
      this.flow();
    };
    sock.on('drain', drained);
    sock.on('close', drained);
    this.flow();
  }

  /**
   * Read only while the session can act on what it reads: not while a command waits for the
   * store (busy), nor while the client leaves our replies unread (blocked), nor for the rest of
   * an event-loop turn in which it had its share (yielded). Pipelined input then stays in the
   * kernel (TCP flow control), not in our memory.
   */
  private flow(): void {
    if (this.mode === 'closing' || this.mode === 'tls') return;
    if (this.busy || this.blocked || this.yielded) {
      this.sock.pause();
      return;
    }
    this.sock.resume();
    if (this.mode !== 'greeting') this.pump();
  }

  /** The mode now; a method, so that a check after a call that may change it is not narrowed away. */
  private currentMode(): Mode {
    return this.mode;
  }

  /** Process buffered commands (up to COMMANDS_PER_TURN); replies to a pipelined group go out together. */
  private pump(): void {
    let turn = 0;
    while (
      !this.busy &&
      !this.blocked &&
      !this.yielded &&
      (this.mode === 'command' || this.mode === 'data' || this.mode === 'chunk')
    ) {
      if (++turn > COMMANDS_PER_TURN) {
        this.yieldTurn();
        break;
      }
      if (this.mode === 'data' || this.mode === 'chunk') {
        const rest = this.reader.take();
        if (!rest.length || !(this.mode === 'data' ? this.feedData(rest) : this.feedChunk(rest))) break;
        continue;
      }
      const line = this.reader.next();
      if (!line) break;
      this.counts.commands++;
      this.arm(this.deps.config.smtp.timeouts.command);
      // A BDAT line refused as a line would leave its chunk to be read as commands: the session ends.
      if (
        (line.kind === 'tooLong' && /^BDAT /i.test(line.head)) ||
        (line.kind === 'line' &&
          (line.nul || (line.bare && this.deps.config.smtp.bareLineEndings === 'reject')) &&
          /^BDAT(?: |$)/i.test(line.text))
      )
        return this.unusableBdat();
      if (line.kind === 'tooLong') {
        this.send(Replies.lineTooLong(MAX_COMMAND_LINE));
      } else if (line.nul) {
        this.send(Replies.nulInCommand());
      }
      // RFC 5321 §2.3.8: only CRLF ends a line; bare endings are refused or normalised (config).
      else if (line.bare && this.deps.config.smtp.bareLineEndings === 'reject') {
        this.send(Replies.bareLineEnding());
      } else if (this.pipeliningViolation(line.text)) return;
      else {
        const r = this.command(line.text);
        if (r) this.wait(r);
      }
      // RFC 5321 §3.8 closes only after QUIT, a 421 shutdown or a timeout; closing after too many
      // errors (421, as Postfix does) goes beyond it on purpose. command() may have left command
      // mode (DATA, STARTTLS, QUIT): read the mode afresh.
      if (this.counts.errors >= this.deps.config.smtp.maxErrors && this.currentMode() === 'command') {
        this.closeReason = 'too many errors';
        this.send(Replies.tooManyErrors(this.host));
        this.close();
        return;
      }
      if (this.out.length >= FLUSH_AT) this.flush();
    }
    this.flush();
  }

  /** Let other sessions run; go on with what is buffered in the next turn. */
  private yieldTurn(): void {
    this.yielded = true;
    this.flow();
    setImmediate(() => {
      this.yielded = false;
      this.flow();
    });
  }

  /**
   * smtp.forbidUnauthPipelining (as Postfix's smtpd_forbid_unauth_pipelining): input already
   * waiting behind a command that must end a pipelined group (RFC 2920 §3.1; for DATA that is
   * message content sent before our 354), or behind any command before EHLO negotiated
   * PIPELINING, gets 554 5.5.0 instead of the command's reply, and the session closes.
   * Returns true when it did so.
   */
  private pipeliningViolation(text: string): boolean {
    // Received but not yet processed: in the reader, or in the socket's buffer while reads are paused.
    if (!this.deps.config.smtp.forbidUnauthPipelining || (this.reader.pending === 0 && this.sock.readableLength === 0))
      return false;
    const sp = text.indexOf(' ');
    const verb = (sp < 0 ? text : text.slice(0, sp)).toUpperCase();
    if (verb === 'QUIT' || verb === 'STARTTLS') return false;
    let what: string;
    if (verb === 'DATA') what = 'message content sent before the 354 reply';
    else if (LAST_IN_GROUP.has(verb)) what = `command sent before the reply to ${verb}`;
    else if (!this.esmtp) what = 'commands pipelined without EHLO (PIPELINING not negotiated)';
    else return false;
    const bytes = this.reader.pending + this.sock.readableLength;
    const sample = this.reader.take().subarray(0, 100);
    emit(
      {
        event: 'session.pipelining',
        sid: this.id,
        ip: this.clientIp,
        after: verb,
        bytes,
        sample: JSON.stringify(sample.toString('latin1')),
      },
      `improper command pipelining after ${verb}`,
    );
    this.closeReason = 'improper pipelining';
    this.send(Replies.pipeliningViolation(what));
    this.close();
    return true;
  }

  /**
   * The end of the data: the transaction's reply waits for the store. The client's command timer
   * is not the bound meanwhile (a slow store made the session answer 421 and close while the message
   * was being stored, and the client sent it again): STORE_WAIT_SECONDS is (RFC 5321 §4.5.3.2.6: the
   * client waits 10 minutes for this reply); the command timer runs again once the reply is out.
   */
  private store(): void {
    this.arm(STORE_WAIT_SECONDS);
    this.wait(
      this.endData().finally(() => {
        if (this.mode !== 'closing') this.arm(this.deps.config.smtp.timeouts.command);
      }),
    );
  }

  private wait(p: Promise<void>): void {
    this.busy = true;
    this.flow();
    this.flush();
    p.catch((e) => {
      emit({ event: 'internal.error', where: 'session', error: errorDetail(e) });
      this.send(Replies.storageError());
    }).finally(() => {
      this.busy = false;
      if (this.mode === 'closing') return;
      if (this.refusal) {
        this.refuse(this.refusal);
        return;
      }
      this.flow();
    });
  }

  /** Feed DATA bytes; returns true when the data phase ended (and schedules its completion). */
  private feedData(chunk: Buffer): boolean {
    const dec = this.decoder!;
    const end = dec.feed(chunk);
    if (end < 0) return false;
    if (end < chunk.length) this.reader.push(chunk.subarray(end));
    this.mode = 'command';
    this.store();
    return true;
  }

  /** Feed a BDAT chunk's octets; returns true when the chunk is complete (and answered or being stored). */
  private feedChunk(buf: Buffer): boolean {
    const c = this.chunk!;
    const n = Math.min(c.left, buf.length);
    if (!c.discard && n > 0) this.decoder!.feed(n === buf.length ? buf : buf.subarray(0, n));
    c.left -= n;
    if (n < buf.length) this.reader.push(buf.subarray(n));
    if (c.left > 0) return false;
    this.chunkDone();
    return true;
  }

  /**
   * A chunk was read in full. RFC 3030 §2: a chunk other than the last gets 250 once read; the
   * last one gets the transaction's reply (endData); a failed chunk fails the transaction, and
   * the chunks the client had pipelined behind it up to its LAST are read and discarded (also §2).
   */
  private chunkDone(): void {
    const c = this.chunk!;
    this.chunk = null;
    this.mode = 'command';
    this.arm(this.deps.config.smtp.timeouts.command);
    if (c.discard) {
      if (this.txn)
        emit({
          event: 'message.rejected',
          sid: this.id,
          code: c.discard.code,
          enhanced: c.discard.enhanced,
          reason: `BDAT: ${c.discard.message}`,
        });
      this.txn = null;
      this.decoder = null;
      this.chunkFailed = !c.last;
      this.send(c.discard);
      return;
    }
    if (!c.last) {
      // Between chunks: the command timeout, within what is left of the message's data timeout.
      this.arm(Math.min(this.deps.config.smtp.timeouts.command, (this.txn!.chunked!.deadline - Date.now()) / 1000));
      return this.send(Replies.chunkReceived(c.size));
    }
    this.decoder!.finish();
    this.store();
  }

  /** A BDAT line that cannot be used: 521 and close (its chunk could not be told from commands). */
  private unusableBdat(): void {
    this.closeReason = 'unusable BDAT';
    this.send(Replies.unusableBdat(this.host));
    this.close();
  }

  /** BDAT <size> [LAST] (RFC 3030): the chunk's octets follow the command line at once. */
  private bdat(arg: string): void {
    const m = /^(\d{1,15})( +LAST)? *$/i.exec(arg);
    if (!m) return this.unusableBdat();
    const size = Number(m[1]);
    const smtp = this.deps.config.smtp;
    const t = this.txn;
    // Far over the limit: reading the chunk to discard it could take the whole data timeout.
    const total = (t?.chunked && this.decoder ? this.decoder.size : 0) + size;
    if (total > 1.5 * smtp.maxMessageSize) {
      if (t)
        emit({ event: 'message.rejected', sid: this.id, code: 552, enhanced: '5.3.4', reason: 'BDAT: far too large' });
      this.resetTxn();
      this.closeReason = 'BDAT far over the size limit';
      this.send(Replies.chunkFarTooLarge(this.host, total, smtp.maxMessageSize));
      return this.close();
    }
    let discard: SmtpReply | null = null;
    if (this.chunkFailed) discard = Replies.chunkAfterFailure();
    // CHUNKING is an extension (RFC 3030 §2): not offered after HELO, so not taken there.
    else if (!this.esmtp) discard = Replies.badSequence('BDAT needs EHLO (CHUNKING is an SMTP extension)');
    else if (!t) discard = Replies.badSequence('send MAIL first');
    else if (!t.recipients.length) discard = Replies.noValidRecipients();
    else {
      if (!t.chunked) {
        t.chunked = { deadline: Date.now() + smtp.timeouts.data * 1000 };
        this.decoder = new DataDecoder(smtp.maxMessageSize, smtp.maxHeaderSize, false);
      }
      // Over the maximum with this chunk: 552 once it is read (RFC 1870 §6.3), keeping none of it.
      if (this.decoder!.size + size > smtp.maxMessageSize) discard = Replies.sizeExceeded();
    }
    this.chunk = { size, left: size, last: !!m[2], discard };
    this.mode = 'chunk';
    this.arm(t?.chunked ? (t.chunked.deadline - Date.now()) / 1000 : smtp.timeouts.data);
    if (size === 0) this.chunkDone();
  }

  private command(text: string): Promise<void> | void {
    const sp = text.indexOf(' ');
    const verb = (sp < 0 ? text : text.slice(0, sp)).toUpperCase();
    const arg = sp < 0 ? '' : text.slice(sp + 1);
    switch (verb) {
      case 'EHLO':
        return this.ehlo(arg, true);
      case 'HELO':
        return this.ehlo(arg, false);
      case 'MAIL':
        return this.mail(arg);
      case 'RCPT':
        return this.rcpt(arg);
      case 'DATA':
        return this.data(arg);
      case 'RSET':
        this.resetTxn();
        return this.send(Replies.reset()); // RFC 5321 §4.1.1.5
      case 'NOOP':
        return this.send(Replies.ok());
      // QUIT: 221, then close (RFC 5321 §4.1.1.10).
      case 'QUIT':
        this.closeReason = 'quit';
        this.send(Replies.bye(this.host));
        return this.close();
      case 'VRFY':
        return this.send(Replies.cannotVrfy()); // 252, not a verdict: RFC 5321 §7.3
      case 'EXPN':
        return this.send(Replies.expnDisabled());
      case 'HELP':
        return this.send(Replies.help());
      case 'STARTTLS':
        return this.starttls(arg);
      case 'BDAT':
        return this.bdat(arg);
      case 'AUTH':
      case 'TURN':
      case 'ETRN':
      case 'ATRN':
      case 'BURL':
        return this.send(Replies.notImplemented(verb));
      default:
        // HTTP sent to an SMTP port (cross-protocol requests): 421 and close, on purpose beyond
        // RFC 5321 §3.8 (which answers unknown commands with 500 and keeps the session).
        if (FORBIDDEN.has(verb)) {
          this.closeReason = 'HTTP command';
          this.send(reply(421, '4.7.0', `${this.host} Protocol error: this is an SMTP server`));
          return this.close();
        }
        return this.send(Replies.unknownCommand());
    }
  }

  private ehlo(arg: string, extended: boolean): void {
    const name = arg.trim();
    const bad = heloProblem(name);
    // RFC 5321 §4.1.4: a refused EHLO leaves the state as it was; an accepted one resets it like RSET.
    if (bad) {
      this.send(Replies.syntax(`${extended ? 'EHLO' : 'HELO'}: ${bad}`));
      return;
    }
    this.helo = name;
    this.esmtp = extended;
    this.resetTxn();
    if (!extended) {
      this.out += `250 ${this.host}\r\n`;
      return;
    } // no extension list to HELO (RFC 5321 §3.2)
    const ext = [
      'PIPELINING',
      `SIZE ${this.deps.config.smtp.maxMessageSize}`,
      '8BITMIME',
      'SMTPUTF8',
      'ENHANCEDSTATUSCODES',
      'DSN',
      'CHUNKING',
    ];
    if (this.deps.tls && !this.tlsFacts) ext.push('STARTTLS'); // never again after TLS (RFC 3207 §4.2)
    if (this.tlsFacts) ext.push('REQUIRETLS'); // RFC 8689 §3: only over TLS
    this.out += `250-${this.host}\r\n` + ext.map((e, i) => `250${i === ext.length - 1 ? ' ' : '-'}${e}\r\n`).join('');
  }

  /** No transaction (RSET, EHLO, HELO): its chunks so far, if any, are dropped. */
  private resetTxn(): void {
    this.txn = null;
    this.decoder = null;
    this.chunkFailed = false;
  }

  /** MAIL (RFC 5321 §3.3, §4.1.1.2); out of order is 503 and the state stays (§4.1.4). */
  private mail(arg: string): void {
    if (!this.helo) return this.send(Replies.badSequence('send EHLO or HELO first'));
    if (this.txn) return this.send(Replies.badSequence('nested MAIL command'));
    if (!/^FROM:/i.test(arg)) return this.send(Replies.syntax('use MAIL FROM:<address>'));
    const p = parsePathArg(arg.slice(5), { allowNull: true, utf8Allowed: false });
    if (!p.ok) return this.send(p.reply);
    const envelope: EnvelopeParams = { smtputf8: false };
    for (const [k, v] of p.params) {
      switch (k) {
        case 'SIZE':
          if (v === true || !/^\d{1,15}$/.test(v)) return this.send(Replies.paramInvalid('SIZE'));
          // Declared size over our maximum: 552 (RFC 1870 §6.1).
          if (Number(v) > this.deps.config.smtp.maxMessageSize) return this.send(Replies.sizeExceeded());
          break;
        case 'BODY': {
          // RFC 6152 §2
          const b = v === true ? '' : v.toUpperCase();
          if (b !== '7BIT' && b !== '8BITMIME') return this.send(Replies.paramInvalid('BODY'));
          envelope.body = b;
          break;
        }
        case 'SMTPUTF8': // RFC 6531 §3.4; after HELO not offered: 555 (RFC 5321 §4.1.1.11)
          if (!this.esmtp) return this.send(Replies.paramUnsupported('SMTPUTF8'));
          if (v !== true) return this.send(Replies.paramInvalid('SMTPUTF8'));
          envelope.smtputf8 = true;
          break;
        case 'RET': {
          // RFC 3461 §4.3
          const r = v === true ? '' : v.toUpperCase();
          if (r !== 'FULL' && r !== 'HDRS') return this.send(Replies.paramInvalid('RET'));
          envelope.ret = r;
          break;
        }
        case 'REQUIRETLS':
          // RFC 8689 §3: not advertised (so not accepted) before STARTTLS.
          if (!this.tlsFacts || !this.esmtp) return this.send(Replies.paramUnsupported('REQUIRETLS'));
          if (v !== true) return this.send(Replies.paramInvalid('REQUIRETLS'));
          envelope.requireTls = true;
          break;
        case 'ENVID': // RFC 3461 §4.4
          if (v === true || v.length > 100 || !isXtext(v)) return this.send(Replies.paramInvalid('ENVID'));
          envelope.envid = v;
          break;
        default:
          return this.send(Replies.paramUnsupported(k)); // 555: RFC 5321 §4.1.1.11
      }
    }
    if (!this.esmtp && p.params.size) return this.send(Replies.paramUnsupported('parameters require EHLO'));
    // Connectors name domains in ASCII: a UTF-8 sender domain is matched in its A-label form, so
    // `bücher.test` is held to the rules of `xn--bcher-kva.test` (anti-spoofing, requireTls).
    const senderDomain = policyDomain(p.mailbox.domain);
    const v = this.deps.policy.mailFrom({
      clientIp: this.clientIp,
      tls: !!this.tlsFacts,
      clientCert: this.clientCert,
      senderDomain,
    });
    if (!v.ok) {
      emit({
        event: 'message.rejected',
        sid: this.id,
        code: v.reply.code,
        enhanced: v.reply.enhanced,
        reason: `MAIL <${p.mailbox.address}>: ${v.reply.reason ?? v.reply.message}`,
      });
      return this.send(v.reply);
    }
    this.chunkFailed = false;
    this.txn = {
      mailFrom: p.mailbox.address,
      senderDomain,
      envelope,
      recipients: [],
      seen: new Set(),
      ...(v.match ? { match: v.match } : {}),
    };
    this.send(Replies.senderOk());
  }

  /** RCPT (RFC 5321 §3.3, §4.1.1.3): 503 without MAIL; NOTIFY and ORCPT are RFC 3461 §4.1, §4.2. */
  private rcpt(arg: string): void {
    const t = this.txn;
    if (!t) return this.send(Replies.badSequence('send MAIL first'));
    // RFC 3030 §2: the chunks follow all MAIL and RCPT replies.
    if (t.chunked) return this.send(Replies.badSequence('RCPT after BDAT'));
    if (!/^TO:/i.test(arg)) return this.send(Replies.syntax('use RCPT TO:<address>'));
    const p = parsePathArg(arg.slice(3), { allowNull: false, utf8Allowed: t.envelope.smtputf8 });
    if (!p.ok) return this.send(p.reply);
    let notify: string | undefined;
    let orcpt: string | undefined;
    for (const [k, v] of p.params) {
      if (k === 'NOTIFY' && v !== true && validNotify(v)) notify = v.toUpperCase();
      else if (k === 'ORCPT' && v !== true && validOrcpt(v)) orcpt = v;
      else if (k === 'NOTIFY' || k === 'ORCPT') return this.send(Replies.paramInvalid(k));
      else return this.send(Replies.paramUnsupported(k));
    }
    if (!this.esmtp && p.params.size) return this.send(Replies.paramUnsupported('parameters require EHLO'));
    // RFC 5321 §4.5.3.1.10: past the recipient limit, 452 (the client retries the rest later).
    if (t.recipients.length >= this.deps.config.smtp.maxRecipients)
      return this.overshoot(t, Replies.tooManyRecipients(this.deps.config.smtp.maxRecipients));
    const v = this.deps.policy.recipient(p.mailbox, {
      clientIp: this.clientIp,
      tls: !!this.tlsFacts,
      clientCert: this.clientCert,
      senderDomain: t.senderDomain,
      ...(t.match ? { match: t.match } : {}),
    });
    if (!v.ok) {
      emit({
        event: 'message.rejected',
        sid: this.id,
        code: v.reply.code,
        enhanced: v.reply.enhanced,
        reason: `RCPT <${p.mailbox.address}>: ${v.reply.reason ?? v.reply.message}`,
      });
      return this.send(v.reply);
    }
    const key = v.address.toLowerCase();
    // Each organisation's recipients are stored as a message of their own (ingest.ts): a
    // transaction spanning many would multiply its size in memory and on disk.
    if (!t.seen.has(key) && sendingOrg(t) === undefined && !t.recipients.some((r) => r.org === v.org)) {
      const orgs = new Set(t.recipients.map((r) => r.org)).size;
      if (orgs >= MAX_ORGANIZATIONS) return this.overshoot(t, Replies.tooManyOrganizations(MAX_ORGANIZATIONS));
    }
    if (!t.seen.has(key)) {
      t.seen.add(key);
      t.recipients.push({
        address: v.address,
        org: v.org,
        route: v.route,
        ...(notify ? { notify } : {}),
        ...(orcpt ? { orcpt } : {}),
      });
    }
    this.send(Replies.recipientOk());
  }

  /**
   * A recipient past a per-message limit: 452, which the client answers by sending the rest in
   * another transaction (RFC 5321 §4.5.3.1.10). Only the first of a transaction counts towards
   * smtp.maxErrors: a long recipient list is not a misbehaving client (as Postfix's overshoot).
   */
  private overshoot(t: Txn, r: SmtpReply): void {
    this.send(r, !t.overshot);
    t.overshot = true;
  }

  /** DATA (RFC 5321 §3.3, §4.1.1.4): 503 without MAIL, 554 without a recipient, else 354. */
  private data(arg: string): void {
    if (!this.txn) return this.send(Replies.badSequence('send MAIL first'));
    if (this.txn.chunked) return this.send(Replies.badSequence('DATA cannot follow BDAT in a transaction (RFC 3030)'));
    if (!this.txn.recipients.length) return this.send(Replies.noValidRecipients());
    if (arg.trim()) return this.send(Replies.syntax('DATA takes no argument'));
    const smtp = this.deps.config.smtp;
    this.decoder = new DataDecoder(smtp.maxMessageSize, smtp.maxHeaderSize);
    this.mode = 'data';
    this.arm(smtp.timeouts.data);
    this.send(Replies.startData());
  }

  /**
   * The end of data (RFC 5321 §4.1.1.4): one reply for the whole transaction — 250 only once
   * the message is stored (§4.2.5: the 250 takes responsibility for it), else a failure reply.
   */
  private async endData(): Promise<void> {
    const d = this.decoder!.result();
    const t = this.txn!;
    this.decoder = null;
    this.txn = null;
    const smtp = this.deps.config.smtp;
    let bad: SmtpReply | null = null;
    if (d.sizeExceeded)
      bad = Replies.sizeExceeded(); // 552 after the data: RFC 1870 §6.3
    else if (d.headerExceeded) bad = Replies.headerTooLarge(smtp.maxHeaderSize);
    else if (d.nul) bad = Replies.nulInData();
    else if (d.bare && smtp.bareLineEndings === 'reject') bad = Replies.bareInData();
    else if (d.eightBit && t.envelope.body !== '8BITMIME') {
      // 8-bit data without BODY=8BITMIME (RFC 6152 §2) is accepted (as Postfix does) and
      // recorded as 8-bit.
      t.envelope.body = '8BITMIME';
    }
    if (bad) {
      emit({ event: 'message.rejected', sid: this.id, code: bad.code, enhanced: bad.enhanced, reason: bad.message });
      this.send(bad);
      return;
    }
    const owner = sendingOrg(t);
    const r = await this.deps.ingest.accept({
      // Attribution: an identified on-premises sender's organisation, else each recipient's own.
      ...(owner !== undefined ? { sendingOrg: owner } : {}),
      mailFrom: t.mailFrom,
      envelope: t.envelope,
      recipients: t.recipients,
      chunks: d.chunks,
      longestLine: d.longestLine,
      inbound: {
        sessionId: this.id,
        clientIp: this.clientIp,
        clientPort: this.sock.remotePort ?? 0,
        helo: this.helo ?? '',
        // RFC 3848 / RFC 6531 §3.7.3 protocol names.
        protocol: `${t.envelope.smtputf8 ? 'UTF8SMTP' : this.esmtp ? 'ESMTP' : 'SMTP'}${this.tlsFacts ? 'S' : ''}`,
        receivedBy: this.host,
        ...(this.tlsFacts ? { tls: this.tlsFacts } : {}),
        ...(t.match
          ? {
              connector: { name: t.match.connector.name, organization: t.match.connector.organization, by: t.match.by },
            }
          : {}),
        ...(t.match?.connector.treatMessagesAsInternal ? { internal: true } : {}),
      },
    });
    if (r.ok) {
      this.counts.messages++;
      const several = r.copies.length > 1;
      r.copies.forEach((c, i) =>
        emit({
          event: 'message.accepted',
          sid: this.id,
          queueId: c.queueId,
          from: t.mailFrom,
          rcpts: c.recipients,
          size: d.size,
          org: c.org,
          ...(several ? { copy: i + 1, copies: r.copies.length } : {}),
          ...(this.tlsFacts ? { tls: this.tlsFacts } : {}),
        }),
      );
      this.send(Replies.queued(r.copies.map((c) => c.queueId).join(' ')));
    } else {
      this.send(r.reply);
    }
  }

  /** STARTTLS (RFC 3207 §4): 220, then the handshake. */
  private starttls(arg: string): void {
    if (!this.deps.tls) return this.send(Replies.notImplemented('STARTTLS'));
    if (this.tlsFacts) return this.send(Replies.tlsAlready());
    if (arg.trim()) return this.send(Replies.syntax('STARTTLS takes no argument'));
    // Bytes pipelined behind STARTTLS were sent in plaintext: dropped, so that nothing said before
    // TLS acts after it (RFC 3207 §4.2: the session starts afresh after the handshake).
    const injected = this.reader.take();
    if (injected.length)
      emit(
        { event: 'session.injection', sid: this.id, ip: this.clientIp, bytes: injected.length },
        'discarded commands pipelined after STARTTLS',
      );
    this.send(Replies.readyTls());
    this.flush();
    this.mode = 'tls';
    this.arm(this.deps.config.smtp.timeouts.tlsHandshake);
    const raw = this.sock;
    raw.removeListener('data', this.onData);
    const serverTls = this.deps.tls;
    const ts = new tls.TLSSocket(raw, {
      isServer: true,
      secureContext: serverTls.contextFor(),
      SNICallback: serverTls.sniCallback,
      requestCert: true,
      rejectUnauthorized: false,
    });
    ts.once('secure', () => {
      this.sock = ts;
      const sni = (ts as unknown as { servername?: string | false }).servername;
      this.tlsFacts = sessionFacts(ts, sni || undefined);
      // RFC 3207 §4.2: forget everything learned before TLS.
      this.helo = null;
      this.esmtp = false;
      this.resetTxn();
      this.reader.take();
      this.mode = 'command';
      this.blocked = false; // what waited on the plaintext socket was read: the client did the handshake
      this.arm(this.deps.config.smtp.timeouts.command);
      ts.on('data', this.onData);
      this.judgeClient(peerChain(ts));
    });
    ts.on('error', (e) => {
      if (this.mode === 'tls') {
        this.closeReason = 'tls handshake failed';
        emit({
          event: 'session.tlsFailed',
          sid: this.id,
          ip: this.clientIp,
          error: e.message,
          kind: handshakeFailureKind((e as NodeJS.ErrnoException).code),
        });
      } else this.closeReason = 'network error';
      ts.destroy();
    });
    ts.once('close', () => raw.destroy());
  }

  /** Judge the client certificate; reads wait while its revocation status is fetched. */
  private judgeClient(chain: readonly X509Certificate[]): void {
    const d = this.deps;
    const j = judgeClientChain(chain, d.trust, d.policy.connectors.anchors, d.config.tls.revocation);
    if (!j) {
      this.hooks.secured?.(undefined);
      return;
    }
    this.setClientCert(j.cert);
    if (!j.check) {
      this.hooks.secured?.(j.cert);
      return;
    }
    this.wait(
      withRevocation(j.cert, j.check, d.revocation).then((c) => {
        this.setClientCert(c);
        this.hooks.secured?.(c);
      }),
    );
  }

  private setClientCert(c: ClientCertificate): void {
    this.clientCert = c;
    if (this.tlsFacts) this.tlsFacts = { ...this.tlsFacts, peerCert: peerCertFacts(c) };
  }

  /** End the session after what was queued for sending. */
  private close(): void {
    this.mode = 'closing';
    clearTimeout(this.deadline);
    this.flush();
    this.end();
    this.sock.end();
    // A peer that never reads must not pin the socket. Cleared once closed: a pending timer would
    // keep the whole session (transaction, buffers) alive for 10 s after every connection.
    this.linger = setTimeout(() => this.sock.destroy(), 10_000);
    this.linger.unref();
  }

  /** The session is over for admission: called once, whether it ends with a reply or the peer leaves. */
  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.hooks.ended();
  }

  /**
   * Admission withdrawn (a reserved slot whose client did not prove its certificate): send `r`
   * (a 421) and close — after the reply to a transaction being stored, never instead of it.
   * Ignored during a TLS handshake: its end brings the certificate, judged by hooks.secured.
   */
  refuse(r: SmtpReply): void {
    if (this.mode === 'closing' || this.mode === 'tls') return;
    if (this.busy) {
      this.refusal = r;
      return;
    }
    this.closeReason = 'admission withdrawn';
    this.send(r);
    this.close();
  }

  /** Server shutdown: tell the client, then close. */
  shutdown(): void {
    if (this.mode === 'closing') return;
    // Let the transaction's data finish (DATA, or BDAT chunks); close follows via the stop timeout.
    if (this.busy || this.mode === 'data' || this.mode === 'chunk' || this.txn?.chunked) return;
    this.closeReason = 'server shutdown';
    this.send(Replies.shuttingDown(this.host));
    this.close();
  }

  private closed(): void {
    clearTimeout(this.deadline);
    clearTimeout(this.linger);
    if (this.mode !== 'closing') this.mode = 'closing';
    emit({
      event: 'session.end',
      sid: this.id,
      ip: this.clientIp,
      ...(this.helo ? { helo: this.helo } : {}),
      ...(this.tlsFacts ? { tls: this.tlsFacts } : {}),
      ...this.counts,
      durationMs: Date.now() - this.started,
      close: this.closeReason,
    });
    this.end();
    this.hooks.closed();
  }
}
