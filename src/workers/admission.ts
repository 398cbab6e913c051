// Owns: connection admission across worker processes. The supervisor keeps the one Admission
// (inbound/admission.ts: global, per-IP and reserved counts, the addresses that proved a
// certificate); each worker asks it over IPC before greeting (WorkerAdmission, an AdmissionGate).
// Promises: the limits hold across all workers as in one process; a slot is counted until its
// session ends or its worker dies (the supervisor then releases all of that worker's slots); a
// worker that cannot reach the supervisor refuses with 421 4.7.0 rather than admit uncounted (and
// exits: workers/worker.ts).
import { Admission, type AdmissionGate, type Identification, type Limits, type Slot } from '../inbound/admission.ts';
import { Replies, type SmtpReply } from '../errors.ts';
import type { ToSupervisor, ToWorker, Verdict } from './protocol.ts';

type RemoteSlot = Slot & { readonly id: number };

/** Worker side: asks the supervisor; answers arrive through onMessage. */
export class WorkerAdmission implements AdmissionGate {
  private next = 1;
  private readonly waiting = new Map<number, (v: Verdict) => void>();

  constructor(private readonly send: (m: ToSupervisor) => boolean) {}

  admit(ip: string, smtp: Limits, who: Identification): Promise<Slot | SmtpReply> {
    const id = this.next++;
    const limits = {
      maxConnections: smtp.maxConnections,
      maxConnectionsPerIP: smtp.maxConnectionsPerIP,
      reservedConnections: smtp.reservedConnections,
    };
    return new Promise((resolve) => {
      this.waiting.set(id, (v) => {
        const slot: RemoteSlot = { id, ip, reserved: false, provisional: false, released: false };
        resolve('reply' in v ? v.reply : Object.assign(slot, v));
      });
      const sent = this.send({
        t: 'admit',
        id,
        ip,
        limits,
        identifiesClients: who.identifiesClients,
        identifiesAddress: who.identifiesClients && who.identifiesAddress(ip),
      });
      if (!sent) this.settle(id, { reply: Replies.tooManyConnections() });
    });
  }

  identified(slot: Slot): void {
    if (slot.released) return;
    slot.provisional = false;
    slot.reserved = true;
    this.send({ t: 'identified', id: (slot as RemoteSlot).id });
  }

  release(slot: Slot): void {
    if (slot.released) return;
    slot.released = true;
    this.send({ t: 'release', id: (slot as RemoteSlot).id });
  }

  onMessage(m: ToWorker): void {
    if (m.t === 'admitted') this.settle(m.id, m.verdict);
  }

  private settle(id: number, v: Verdict): void {
    const done = this.waiting.get(id);
    this.waiting.delete(id);
    done?.(v);
  }
}

/** Supervisor side: one Admission; the slots of each worker, so a dead worker's are released. */
export class SharedAdmission {
  private readonly admission = new Admission();
  private readonly slots = new Map<number, Map<number, Slot>>();

  get sessions(): number {
    return this.admission.sessions;
  }

  /** The sessions `worker` holds (admitted, not yet ended). */
  sessionsOf(worker: number): number {
    return this.slots.get(worker)?.size ?? 0;
  }

  /** Handle an admission message of `worker`; the answer to send back, if any. */
  handle(worker: number, m: ToSupervisor): ToWorker | undefined {
    let mine = this.slots.get(worker);
    if (!mine) this.slots.set(worker, (mine = new Map()));
    if (m.t === 'admit') {
      const v = this.admission.admit(m.ip, m.limits, {
        identifiesClients: m.identifiesClients,
        identifiesAddress: () => m.identifiesAddress,
      });
      if ('code' in v) return { t: 'admitted', id: m.id, verdict: { reply: v } };
      mine.set(m.id, v);
      return { t: 'admitted', id: m.id, verdict: { reserved: v.reserved, provisional: v.provisional } };
    }
    const slot = mine.get((m as { id: number }).id);
    if (!slot) return undefined;
    if (m.t === 'identified') this.admission.identified(slot);
    if (m.t === 'release') {
      this.admission.release(slot);
      mine.delete(m.id);
    }
    return undefined;
  }

  /** The worker died: its sessions died with it. */
  forget(worker: number): void {
    for (const slot of this.slots.get(worker)?.values() ?? []) this.admission.release(slot);
    this.slots.delete(worker);
  }
}
