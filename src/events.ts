// Owns: the typed event catalogue and what it feeds. Every event goes to the structured log
// (pino: JSON lines, or one-line text at a terminal) and to the listeners that subscribed with
// onEvent (in the server: admin/metrics.ts for Prometheus, reports/ for the report counters); the
// message trace is written by store/.
// Promise: a listener that throws never disturbs emit's caller (the error is logged).
import { isatty } from 'node:tty';
import pino from 'pino';
import { errorDetail } from './util/errors.ts';

/** A client certificate as judged after the handshake (tls/client-cert.ts). */
export interface PeerCertFacts {
  subject: string;
  issuer: string;
  fingerprint256: string;
  /** The chain verifies against tls.trust. */
  verified: boolean;
  verifyError?: string;
  /** Why its extended key usage rules out client authentication. */
  ekuError?: string;
  /** Present when checked: for a certificate that could identify a connector, unless tls.revocation is off. */
  revocation?: { status: 'good' | 'revoked' | 'unknown'; summary: string };
}

export interface TlsFacts {
  version: string;
  cipher: string;
  bits: number;
  sni?: string;
  resumed?: boolean;
  peerCert?: PeerCertFacts;
}

export type Event =
  | { event: 'server.listening'; address: string }
  | { event: 'server.started'; hostname: string; dataDir: string; configFile: string | null }
  | { event: 'server.stopping'; signal: string }
  | { event: 'worker.started'; worker: number; pid: number; nodeId: string }
  | {
      event: 'worker.exited';
      worker: number;
      pid: number;
      code: number | null;
      signal: string | null;
      restartInMs?: number;
    }
  | {
      event: 'server.privileges';
      user: string;
      uid: number;
      group: string;
      gid: number;
      groups: number[];
      runs: string;
    }
  | { event: 'config.reloaded'; source: string }
  | { event: 'config.rejected'; source: string; error: string }
  | { event: 'tls.certificates.loaded'; names: string[]; source: string }
  | { event: 'tls.certificates.rejected'; error: string }
  | { event: 'tls.devcert.generated'; path: string; names: string[] }
  | {
      event: 'session.end';
      sid: string;
      ip: string;
      helo?: string;
      tls?: TlsFacts;
      messages: number;
      commands: number;
      errors: number;
      durationMs: number;
      close: string;
    }
  | { event: 'session.rejected'; ip: string; reason: string }
  | {
      event: 'session.tlsFailed';
      sid: string;
      ip: string;
      error: string;
      /** TLS failure kind (tls/failures.ts) of the handshake error. */
      kind?: string;
    }
  | { event: 'session.injection'; sid: string; ip: string; bytes: number }
  | { event: 'session.pipelining'; sid: string; ip: string; after: string; bytes: number; sample: string }
  | {
      event: 'message.accepted';
      sid: string;
      queueId: string;
      from: string;
      rcpts: number;
      size: number;
      org: string;
      /** Which of the transaction's copies (one per organisation, from 1), when it has several. */
      copy?: number;
      copies?: number;
      tls?: TlsFacts;
    }
  | { event: 'message.rejected'; sid: string; code: number; enhanced: string; reason: string }
  | {
      event: 'delivery.result';
      queueId: string;
      rcpt: string;
      status: 'delivered' | 'deferred' | 'failed';
      agent: string;
      code?: number;
      enhanced?: string;
      reason: string;
      /** The message's organisation. */
      org?: string;
      /** TLS failure kind (tls/failures.ts): why a required level failed, or why opportunistic TLS stepped down. */
      tlsFailure?: string;
      tlsResultType?: string;
      tlsVersion?: string;
      tlsCipher?: string;
      tlsLegacy?: boolean;
      /** SMTP attempts: the TLS level required and where the requirement came from, and the level achieved. */
      tlsRequired?: string;
      tlsSource?: string;
      tlsAchieved?: string;
    }
  /**
   * A next hop's concurrency window changed (delivery/window.ts): grew after successes, shrank after
   * a connection failure or a throttling reply or to a max a reload lowered, or went back to the
   * initial size after a quiet spell.
   */
  | {
      event: 'delivery.window';
      destination: string;
      window: number;
      previous: number;
      reason: 'success' | 'throttled' | 'idle' | 'limit';
      max: number;
    }
  | { event: 'dns.query'; qtype: string; outcome: string; ms: number }
  | { event: 'revocation.fetch'; kind: 'ocsp' | 'crl' | 'caIssuers'; outcome: 'ok' | 'error'; ms: number }
  /** An MTA-STS policy fetch (RFC 8461 §3.3): `ok`, or its RFC 8460 result type. */
  | {
      event: 'mtasts.fetch';
      outcome: 'ok' | 'sts-policy-fetch-error' | 'sts-policy-invalid' | 'sts-webpki-invalid';
      ms: number;
    }
  | { event: 'queue.recovered'; released: number }
  /** A delivery's outcome was not recorded: another node took the message over (fencing generation). */
  | { event: 'queue.fenced'; queueId: string; node: string; gen: number }
  /** A lease could not be renewed while its delivery runs: another node took the message over. */
  | { event: 'queue.leaseLost'; queueId: string; node: string; gen: number }
  /** `cluster drain NODE [--undo]` reached this node: it claims no new queue work (or again). */
  | { event: 'node.draining'; node: string; draining: boolean }
  /** A control request for this node from the store (`config reload --node/--all`), and the answer. */
  | { event: 'node.control'; node: string; id: number; kind: string; by: string; ok: boolean; message: string }
  | { event: 'store.opened'; store: 'sqlite' | 'postgres'; location: string; migrated: number[] }
  /** A setting of the database server weakens durability (location never carries a password). */
  | { event: 'store.warning'; location: string; setting: string; value: string; message: string }
  | { event: 'store.checkpointer.stopped'; location: string; reason: string; fallback: string }
  | { event: 'store.checkpointer.failed'; location: string; reason: string }
  /** The database connection failed outside a write (an idle pooled connection): the pool reconnects. */
  | { event: 'store.connectionError'; location: string; error: string }
  /**
   * A delivery memory (destination down, host failed, TLS step down) could not be read or written
   * in the store (delivery/memory.ts): the delivery went on without it. `suppressed`: failures not
   * logged since the last one (at most one line per kind every 10 s).
   */
  | {
      event: 'delivery.memory.failed';
      kind: string;
      operation: 'get' | 'set' | 'delete' | 'expire';
      key: string;
      error: string;
      suppressed: number;
    }
  | { event: 'trace.expired'; removed: number; finishedBefore: string; more: boolean }
  | { event: 'tlsrpt.sent'; day: string; domain: string; reportId: string; destinations: string[] }
  | {
      event: 'tlsrpt.received';
      queueId: string;
      from: string;
      organization?: string;
      reportId?: string;
      problem?: string;
    }
  | { event: 'internal.error'; where: string; error: string; stack?: string };

type Level = 'debug' | 'info' | 'warn' | 'error';

/** The level of each event that is not `info`; a function where the event's fields decide. */
const levels: { [K in Event['event']]?: Level | ((e: Extract<Event, { event: K }>) => Level) } = {
  'dns.query': 'debug',
  'delivery.window': 'debug',
  'revocation.fetch': 'debug',
  'mtasts.fetch': 'debug',
  'config.rejected': 'error',
  'tls.certificates.rejected': 'error',
  'tls.devcert.generated': 'warn',
  'session.injection': 'warn',
  'session.pipelining': 'warn',
  'store.warning': 'warn',
  'store.checkpointer.stopped': 'warn',
  'store.checkpointer.failed': 'warn',
  'store.connectionError': 'warn',
  'delivery.memory.failed': 'warn',
  'queue.fenced': 'warn',
  'queue.leaseLost': 'warn',
  'internal.error': 'error',
  // A worker that ends with the server (SIGTERM, status 0) is no news; one that died is.
  'worker.exited': (e) => (e.restartInMs === undefined && e.code === 0 ? 'info' : 'warn'),
};

export type LogFormat = 'auto' | 'json' | 'text';

// Log lines go to stderr (CLI commands: stdout carries their output) unless the server sends them
// to stdout; `auto` writes one-line text at a terminal and JSON lines anywhere else.
const out = { fd: 2 as 1 | 2, format: 'auto' as LogFormat, level: 'info' };
const streams = new Map<number, pino.DestinationStream>();
// A worker process (workers: N) names itself on each line; the supervisor sets the variable.
const BASE = {
  svc: 'portcullis',
  ...(process.env.PORTCULLIS_WORKER ? { worker: Number(process.env.PORTCULLIS_WORKER) } : {}),
};
let logger = build();

function build(): pino.Logger {
  const dest = streams.get(out.fd) ?? pino.destination({ dest: out.fd });
  streams.set(out.fd, dest);
  const text = out.format === 'text' || (out.format === 'auto' && isatty(out.fd));
  return pino(
    { base: BASE, timestamp: pino.stdTimeFunctions.isoTime, level: out.level },
    text ? { write: (line: string) => dest.write(formatText(line)) } : dest,
  );
}

export function setLogLevel(level: string): void {
  out.level = level;
  logger.level = level;
}

/** Where log lines go (1 stdout, 2 stderr) and in which format. */
export function setLogOutput(o: { fd?: 1 | 2; format?: LogFormat }): void {
  if ((o.fd ?? out.fd) === out.fd && (o.format ?? out.format) === out.format) return;
  Object.assign(out, o);
  logger = build();
}

/** Send log lines to a different destination (tests). */
export function setLogDestination(dest: pino.DestinationStream): void {
  logger = pino({ base: { svc: 'portcullis' }, timestamp: pino.stdTimeFunctions.isoTime, level: out.level }, dest);
}

const LEVEL_NAMES: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO',
  40: 'WARN',
  50: 'ERROR',
  60: 'FATAL',
};

/** One JSON log line as `TIME LEVEL event [message] key=value …`, for people at a terminal. */
export function formatText(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { time, level, svc: _svc, event, msg, ...rest } = o;
  const head = [String(time), (LEVEL_NAMES[level as number] ?? String(level)).padEnd(5), String(event ?? msg)];
  if (event !== undefined && msg !== event) head.push(String(msg));
  const value = (v: unknown) => (typeof v === 'string' && /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v));
  return `${[...head, ...Object.entries(rest).map(([k, v]) => `${k}=${value(v)}`)].join(' ')}\n`;
}

type Listener = (e: Event) => void;
const listeners = new Set<Listener>();

/** Receive every event emitted from now on; returns the function that ends the subscription. */
export function onEvent(l: Listener): () => void {
  listeners.add(l);
  return () => {
    listeners.delete(l);
  };
}

export function emit(e: Event, msg?: string): void {
  const l = levels[e.event] as Level | ((e: Event) => Level) | undefined;
  const level = typeof l === 'function' ? l(e) : (l ?? 'info');
  logger[level](e, msg ?? e.event);
  for (const l of listeners) {
    try {
      l(e);
    } catch (err) {
      logger.error(
        { event: 'internal.error', where: `event listener (${e.event})`, error: errorDetail(err) },
        'internal.error',
      );
    }
  }
}

/** Human-readable warning that is not an event of the catalogue (start-up guidance). */
export function notice(msg: string, fields: Record<string, unknown> = {}): void {
  logger.warn(fields, msg);
}
