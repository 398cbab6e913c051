// Owns: the typed event catalogue. Every event goes to the structured log (pino, JSON lines);
// the message trace is written by store/, metrics later hook the same emit().
import pino from 'pino';

export interface TlsFacts {
  version: string;
  cipher: string;
  bits: number;
  sni?: string;
  resumed?: boolean;
  peerCert?: { subject: string; issuer: string; fingerprint256: string; verified: boolean; verifyError?: string };
}

export type Event =
  | { event: 'server.listening'; address: string }
  | { event: 'server.started'; hostname: string; dataDir: string; configFile: string | null }
  | { event: 'server.stopping'; signal: string }
  | { event: 'config.reloaded'; source: string }
  | { event: 'config.rejected'; source: string; error: string }
  | { event: 'tls.certificates.loaded'; names: string[]; source: string }
  | { event: 'tls.certificates.rejected'; error: string }
  | { event: 'tls.devcert.generated'; path: string; names: string[] }
  | { event: 'session.end'; sid: string; ip: string; helo?: string; tls?: TlsFacts; messages: number; commands: number; errors: number; durationMs: number; close: string }
  | { event: 'session.rejected'; ip: string; reason: string }
  | { event: 'session.tlsFailed'; sid: string; ip: string; error: string }
  | { event: 'session.injection'; sid: string; ip: string; bytes: number }
  | { event: 'session.pipelining'; sid: string; ip: string; after: string; bytes: number; sample: string }
  | { event: 'message.accepted'; sid: string; queueId: string; from: string; rcpts: number; size: number; org: string; tls?: TlsFacts }
  | { event: 'message.rejected'; sid: string; code: number; enhanced: string; reason: string }
  | { event: 'delivery.result'; queueId: string; rcpt: string; status: 'delivered' | 'deferred' | 'failed'; agent: string; code?: number; enhanced?: string; reason: string }
  | { event: 'queue.recovered'; released: number }
  | { event: 'internal.error'; where: string; error: string };

type Level = 'debug' | 'info' | 'warn' | 'error';

const levels: Partial<Record<Event['event'], Level>> = {
  'config.rejected': 'error',
  'tls.certificates.rejected': 'error',
  'tls.devcert.generated': 'warn',
  'session.injection': 'warn',
  'session.pipelining': 'warn',
  'internal.error': 'error',
};

let logger = pino({ base: { svc: 'portcullis' }, timestamp: pino.stdTimeFunctions.isoTime });

export function setLogLevel(level: string): void {
  logger.level = level;
}

/** Send log lines to a different destination (tests). */
export function setLogDestination(dest: pino.DestinationStream): void {
  logger = pino({ base: { svc: 'portcullis' }, timestamp: pino.stdTimeFunctions.isoTime }, dest);
}

export function emit(e: Event, msg?: string): void {
  const level = levels[e.event] ?? 'info';
  logger[level](e, msg ?? e.event);
}

/** Human-readable warning that is not an event of the catalogue (start-up guidance). */
export function notice(msg: string, fields: Record<string, unknown> = {}): void {
  logger.warn(fields, msg);
}
