// Owns: the one outcome type for SMTP (what the peer sees + what the admin sees) and the
// catalogue of replies the gateway itself issues. Every reply carries an RFC 3463 enhanced code.

export interface SmtpReply {
  /** Three-digit basic reply code (RFC 5321 §4.2). */
  code: number;
  /** Enhanced status code (RFC 3463), e.g. "5.7.1". */
  enhanced: string;
  /** Text the peer sees. Never contains configuration secrets. */
  message: string;
  /** What the administrator sees in logs and the message trace (defaults to message). */
  reason?: string;
}

export function reply(code: number, enhanced: string, message: string, reason?: string): SmtpReply {
  return reason === undefined ? { code, enhanced, message } : { code, enhanced, message, reason };
}

/**
 * Reply text as it may go out: printable ASCII (RFC 5321 §4.2 textstring); every other character
 * becomes "?", except non-ASCII characters (not the C1 controls) when the transaction uses
 * SMTPUTF8 (RFC 6531).
 */
function replyText(text: string, utf8 = false): string {
  return text.replace(utf8 ? /[^\x20-\x7e\u00a0-\uffff]/g : /[^\x20-\x7e]/g, '?');
}

/** RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets, its CRLF included. */
const MAX_REPLY_LINE = 512;

/** `text` within `room` octets: cut, with "...", when longer (a client's text echoed back can be). */
function fit(text: string, room: number): string {
  if (text.length * 3 <= room || Buffer.byteLength(text) <= room) return text;
  let cut = text.slice(0, room - 3);
  while (Buffer.byteLength(cut) > room - 3) cut = cut.slice(0, -1);
  return `${cut}...`;
}

/** Serialise a reply, multi-line when message contains newlines (RFC 5321 §4.2.1), each line within 512 octets. */
export function formatReply(r: SmtpReply, utf8 = false): string {
  const lines = r.message.split('\n');
  let out = '';
  for (let i = 0; i < lines.length; i++) {
    const sep = i === lines.length - 1 ? ' ' : '-';
    const head = `${r.code}${sep}${r.enhanced} `;
    out += `${head}${fit(replyText(lines[i], utf8), MAX_REPLY_LINE - head.length - 2)}\r\n`;
  }
  return out;
}

/** Replies the SMTP server issues on its own (policy verdicts bring their own). */
export const Replies = {
  ok: () => reply(250, '2.0.0', 'OK'),
  senderOk: () => reply(250, '2.1.0', 'Sender OK'),
  recipientOk: () => reply(250, '2.1.5', 'Recipient OK'),
  reset: () => reply(250, '2.0.0', 'Reset state'),
  startData: () => reply(354, '2.0.0', 'Start mail input; end with <CRLF>.<CRLF>'),
  readyTls: () => reply(220, '2.0.0', 'Ready to start TLS'),
  bye: (host: string) => reply(221, '2.0.0', `${host} closing connection`),
  help: () =>
    reply(214, '2.0.0', 'See RFC 5321; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT STARTTLS VRFY HELP'),
  /** A BDAT chunk other than the last one, read in full (RFC 3030 §2). */
  chunkReceived: (octets: number) => reply(250, '2.0.0', `${octets} octets received`),
  /**
   * A BDAT line that cannot be used (no readable size, a NUL, overlong, a bare line ending refused):
   * its chunk could not be told from commands, so the session ends. 521 as Postfix: permanent, so
   * that the sending MTA does not try the same broken command again and again.
   */
  unusableBdat: (host: string) =>
    reply(
      521,
      '5.5.4',
      `${host} Unusable BDAT command (use BDAT <size> [LAST]): closing, as its chunk cannot be told from commands`,
    ),
  /**
   * A BDAT chunk declaring more than 1.5 times the size limit, counting the message so far: not
   * read (it could take the whole data timeout), so the session ends after the reply.
   */
  chunkFarTooLarge: (host: string, total: number, max: number) =>
    reply(
      552,
      '5.3.4',
      `${host} Message size exceeds fixed maximum message size: this BDAT would bring it to ${total} octets, ` +
        `over 1.5 times the maximum of ${max}; closing`,
    ),
  /** A chunk after a failed one, still in the client's pipeline (RFC 3030 §2: read and discarded). */
  chunkAfterFailure: () =>
    reply(503, '5.5.1', 'Bad sequence of commands: an earlier BDAT of this transaction failed; chunk discarded'),
  cannotVrfy: () => reply(252, '2.5.0', 'Cannot VRFY user, but will accept message and attempt delivery'),
  /**
   * EXPN is disabled (no list is ever expanded to a client): RFC 5321 §7.3 says a server that
   * disables VRFY or EXPN "MUST return a 252 response", not a code that reads as a verdict
   * (Postfix answers 502 "command not recognized"; 252 discloses no more than 502 does).
   */
  expnDisabled: () => reply(252, '2.5.0', 'Cannot EXPN list, but will accept message and attempt delivery'),
  notImplemented: (cmd: string) => reply(502, '5.5.1', `${cmd} is not implemented`),
  unknownCommand: () => reply(500, '5.5.2', 'Command not recognized'),
  lineTooLong: (max: number) => reply(500, '5.5.2', `Line too long (the limit is ${max} octets)`),
  bareLineEnding: () => reply(500, '5.5.2', 'Bare CR or LF is not allowed; end command lines with CRLF'),
  nulInCommand: () => reply(500, '5.5.2', 'NUL character is not allowed in commands'),
  syntax: (what: string) => reply(501, '5.5.4', `Syntax error: ${what}`),
  badSequence: (what: string) => reply(503, '5.5.1', `Bad sequence of commands: ${what}`),
  tlsAlready: () => reply(503, '5.5.1', 'TLS is already active'),
  paramUnsupported: (p: string) => reply(555, '5.5.4', `Unsupported parameter: ${p}`),
  paramInvalid: (p: string) => reply(501, '5.5.4', `Invalid value for parameter ${p}`),
  pathTooLong: () => reply(501, '5.1.3', 'Address too long (RFC 5321 section 4.5.3.1 limits)'),
  badAddress: (why: string) => reply(501, '5.1.3', `Bad address syntax: ${why}`),
  nonAsciiNeedsSmtputf8: () => reply(553, '5.6.7', 'Non-ASCII address requires the SMTPUTF8 parameter'),
  tooManyRecipients: (max: number) => reply(452, '4.5.3', `Too many recipients (at most ${max} per message)`),
  tooManyOrganizations: (max: number) =>
    reply(452, '4.5.3', `Too many recipients: at most ${max} organisations per message; send the rest in another`),
  sizeExceeded: () => reply(552, '5.3.4', 'Message size exceeds fixed maximum message size'),
  headerTooLarge: (max: number) => reply(552, '5.3.4', `Message header size exceeds the limit of ${max} octets`),
  bareInData: () => reply(550, '5.6.0', 'Message contains bare CR or LF; lines must end with CRLF'),
  nulInData: () => reply(554, '5.6.0', 'Message contains NUL characters'),
  noValidRecipients: () => reply(554, '5.5.1', 'No valid recipients'),
  /** smtp.maxReceivedHeaders exceeded: a mail loop (RFC 5321 §6.3; RFC 3463 X.4.6 routing loop detected). */
  tooManyHops: (count: number, max: number) =>
    reply(554, '5.4.6', `Too many hops (mail loop?): ${count} Received: header fields, at most ${max} allowed`),
  queued: (id: string) => reply(250, '2.0.0', `OK queued as ${id}`),
  storageFull: () => reply(452, '4.3.1', 'Insufficient system storage, try again later'),
  storageError: () => reply(451, '4.3.0', 'Local error in processing, try again later'),
  pregreet: () => reply(554, '5.5.1', 'Protocol error: client sent data before the greeting'),
  /** smtp.forbidUnauthPipelining; 5.5.0 as Postfix's "554 5.5.0 Error: SMTP protocol synchronization". */
  pipeliningViolation: (what: string) => reply(554, '5.5.0', `Protocol error: ${what} (RFC 2920)`),
  tooManyConnections: () => reply(421, '4.7.0', 'Too many connections, try again later'),
  tooManyConnectionsFromIp: () => reply(421, '4.7.0', 'Too many connections from your address, try again later'),
  timeout: (host: string) => reply(421, '4.4.2', `${host} Error: timeout exceeded`),
  tooManyErrors: (host: string) => reply(421, '4.7.0', `${host} Error: too many errors`),
  shuttingDown: (host: string) => reply(421, '4.3.2', `${host} Service shutting down, try again later`),
  /** "Bounce now" (admin centre, `queue bounce`): the recipients the message had not reached yet, in its DSN. */
  returnedByAdministrator: () =>
    reply(550, '5.3.0', 'The message was returned to its sender by the mail administrator before it was delivered'),
  /** Remote delivery: no connection of the destination's concurrency window came free in time. */
  destinationBusy: (destination: string, window: number, seconds: number) =>
    reply(
      451,
      '4.4.5',
      'Destination busy, will retry',
      `no connection to ${destination} came free within ${seconds} s: its concurrency window allows ${window} at ` +
        'once and they were all in use',
    ),
} as const;

/**
 * An error for administrators: names the cause and the fix. `exitCode` is the CLI's exit status:
 * 2 when the configuration or the command line is wrong (the default), 1 when the operation failed.
 */
export class AdminError extends Error {
  constructor(
    message: string,
    readonly fix?: string,
    readonly exitCode: 1 | 2 = 2,
  ) {
    super(fix ? `${message}\n  fix: ${fix}` : message);
    this.name = 'AdminError';
  }
}
