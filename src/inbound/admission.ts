// Owns: connection admission — how many sessions run in all, per client address, and in the
// capacity reserved for clients an inbound connector identifies (policy/ says who that is).
// Rules: a client no connector identifies is admitted while fewer than maxConnections −
// reservedConnections such sessions run (and fewer than maxConnections in all). An identified
// client — its address in a connector's senderIPAddresses, or an address from which a connector's
// client certificate was proven within PROVEN_TTL_MS — is admitted while fewer than
// maxConnections run. maxConnectionsPerIP applies to everyone. A session admitted only because
// its address proved a certificate before is provisional: it must prove it again (STARTTLS with
// that certificate) within PROBATION_MS, else the server refuses it (421 4.7.0).
// Promises: a session counts from admission until it ends (release is idempotent: no count drops
// twice or goes negative); the memory of proven addresses is bounded (MAX_PROVEN entries).
// With worker processes the counts live in the supervisor (workers/admission.ts), behind the same
// AdmissionGate: one Admission for all workers, so the limits hold across them.
import type { Config } from '../config/load.ts';
import { Replies, type SmtpReply } from '../errors.ts';

/** How long a provisional session has to prove its certificate. */
export const PROBATION_MS = 10_000;
/** How long an address that proved a connector's certificate keeps access to the reserve. */
export const PROVEN_TTL_MS = 24 * 3600_000;
export const MAX_PROVEN = 4096;

export interface Slot {
  readonly ip: string;
  /** Counted in the reserved capacity (an identified client) rather than the general one. */
  reserved: boolean;
  /** Admitted on an address that proved a certificate before; must prove it again. */
  provisional: boolean;
  released: boolean;
}

export type Limits = Pick<Config['smtp'], 'maxConnections' | 'maxConnectionsPerIP' | 'reservedConnections'>;

/** The effective reserve: the configured number, else 10% of maxConnections (at least 1 when maxConnections > 1). */
export function reservedConnections(smtp: Limits): number {
  return (
    smtp.reservedConnections ?? Math.min(smtp.maxConnections - 1, Math.max(1, Math.floor(smtp.maxConnections / 10)))
  );
}

/** What admission asks policy/ about a client (see InboundConnectors). */
export interface Identification {
  /** Some connector can identify clients at all; else nothing is reserved. */
  readonly identifiesClients: boolean;
  identifiesAddress(ip: string): boolean;
}

/** Where sessions are counted: this process (Admission) or, with workers, the supervisor. */
export interface AdmissionGate {
  admit(ip: string, smtp: Limits, who: Identification): Slot | SmtpReply | Promise<Slot | SmtpReply>;
  identified(slot: Slot): void;
  release(slot: Slot): void;
}

export class Admission implements AdmissionGate {
  private open = 0;
  private unidentified = 0;
  private readonly perIp = new Map<string, number>();
  /** Address → expiry (ms) of its last proven certificate; insertion order = age. */
  private readonly proven = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Sessions counted now. */
  get sessions(): number {
    return this.open;
  }

  /** A slot for a new connection from `ip`, or the reply that refuses it. */
  admit(ip: string, smtp: Limits, who: Identification): Slot | SmtpReply {
    const mine = this.perIp.get(ip) ?? 0;
    if (mine >= smtp.maxConnectionsPerIP) return Replies.tooManyConnectionsFromIp();
    if (this.open >= smtp.maxConnections) return Replies.tooManyConnections();
    const reserve = who.identifiesClients ? reservedConnections(smtp) : 0;
    let slot: Slot;
    if (reserve > 0 && who.identifiesAddress(ip)) slot = { ip, reserved: true, provisional: false, released: false };
    else if (this.unidentified < smtp.maxConnections - reserve)
      slot = { ip, reserved: false, provisional: false, released: false };
    else if (reserve > 0 && this.isProven(ip)) slot = { ip, reserved: true, provisional: true, released: false };
    else return Replies.tooManyConnections();
    this.open++;
    if (!slot.reserved) this.unidentified++;
    this.perIp.set(ip, mine + 1);
    return slot;
  }

  /** The session proved a connector's client certificate: it counts as identified; its address is remembered. */
  identified(slot: Slot): void {
    if (slot.released) return;
    slot.provisional = false;
    if (!slot.reserved) {
      slot.reserved = true;
      this.unidentified--;
    }
    this.proven.delete(slot.ip);
    this.proven.set(slot.ip, this.now() + PROVEN_TTL_MS);
    if (this.proven.size > MAX_PROVEN) this.proven.delete(this.proven.keys().next().value!);
  }

  /** The session ended. Idempotent. */
  release(slot: Slot): void {
    if (slot.released) return;
    slot.released = true;
    this.open--;
    if (!slot.reserved) this.unidentified--;
    const n = (this.perIp.get(slot.ip) ?? 1) - 1;
    if (n <= 0) this.perIp.delete(slot.ip);
    else this.perIp.set(slot.ip, n);
  }

  private isProven(ip: string): boolean {
    const until = this.proven.get(ip);
    if (until === undefined) return false;
    if (until > this.now()) return true;
    this.proven.delete(ip);
    return false;
  }
}
