// Owns: the messages between the supervisor and its worker processes (the fork IPC channel), and
// the role a worker process learns from its environment. Types and constants only.
import type { ControlResponse } from '../admin/control.ts';
import type { Limits } from '../inbound/admission.ts';
import type { SmtpReply } from '../errors.ts';

/** Environment variable naming the worker (1…N); absent in a single process and in the supervisor. */
export const WORKER_ENV = 'PORTCULLIS_WORKER';
/** Environment variable with the number of workers N, set with WORKER_ENV. */
export const WORKERS_ENV = 'PORTCULLIS_WORKERS';

/** What either side asks the other to do: the control socket's commands. */
export type Command = 'reload' | 'kick' | 'status';

export type Verdict = { reply: SmtpReply } | { reserved: boolean; provisional: boolean };

/** Supervisor → worker. */
export type ToWorker =
  | { t: 'call'; id: number; cmd: Command; source: string }
  | { t: 'answer'; id: number; res: ControlResponse }
  | { t: 'admitted'; id: number; verdict: Verdict }
  /** A connection the supervisor accepted: the socket is the message's handle. */
  | { t: 'conn' };

/** Worker → supervisor. */
export type ToSupervisor =
  | { t: 'started' }
  /** The worker stops (SIGTERM): it takes no more connections. */
  | { t: 'stopping' }
  | { t: 'call'; id: number; cmd: Command; source: string }
  | { t: 'answer'; id: number; res: ControlResponse }
  | {
      t: 'admit';
      id: number;
      ip: string;
      limits: Limits;
      identifiesClients: boolean;
      identifiesAddress: boolean;
    }
  | { t: 'identified'; id: number }
  | { t: 'release'; id: number };

/** This process's worker number, or undefined when it is not a worker. */
export function workerNumber(): number | undefined {
  const n = Number(process.env[WORKER_ENV]);
  return Number.isInteger(n) && n > 0 ? n : undefined;
}

/** The number of workers of this worker's gateway (1 when it is not a worker). */
export function workerTotal(): number {
  const n = Number(process.env[WORKERS_ENV]);
  return workerNumber() !== undefined && Number.isInteger(n) && n > 0 ? n : 1;
}

/**
 * Worker `n` of `of`'s share of a limit that holds for the whole gateway: the shares sum to
 * `total` (the first `total mod of` workers take one more), except that each is at least 1.
 */
export function shareOf(total: number, n: number, of: number): number {
  return Math.max(1, Math.floor(total / of) + (n <= total % of ? 1 : 0));
}

/** A worker's node id in the store: the configured nodeId and its number. */
export const workerNodeId = (nodeId: string, n: number): string => `${nodeId}/w${n}`;
