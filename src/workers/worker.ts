// Owns: the worker side of `workers: N`: a gateway started with the supervisor's sockets (its SMTP
// connections handed over one by one), its node id (`nodeId/wN`) and admission through the
// supervisor, answering the supervisor's commands (reload, kick, status) over IPC. SIGTERM stops
// it gracefully; SIGHUP and SIGINT are the supervisor's to pass on (a terminal's ^C reaches the
// whole process group). When the supervisor's channel closes (it died, kill -9 included) the
// worker exits at once, as a single process killed with it would: everything it answered 250 to
// is stored; its leases go back to the queue when a new supervisor starts.
import net from 'node:net';
import type { ControlResponse } from '../admin/control.ts';
import type { AdmissionGate } from '../inbound/admission.ts';
import { WorkerAdmission } from './admission.ts';
import { workerTotal, type Command, type ToSupervisor, type ToWorker } from './protocol.ts';

/** What the worker needs of the gateway (gateway.ts implements it). */
export interface WorkerGateway {
  start(): Promise<void>;
  control(cmd: Command, source: string): Promise<ControlResponse>;
  /** An SMTP connection the supervisor accepted. */
  connection(socket: net.Socket): void;
  stop(signal: string): Promise<void>;
}

/** What the gateway needs of its supervisor. */
export interface WorkerRole {
  n: number;
  /** The number of workers (N). */
  of: number;
  admission: AdmissionGate;
  /** Reload every worker (the admin centre runs in worker 1 only). */
  reloadAll(source: string): Promise<ControlResponse>;
}

const send = (m: ToSupervisor): boolean => {
  if (!process.connected || !process.send) return false;
  process.send(m);
  return true;
};

export async function runWorker(n: number, make: (role: WorkerRole) => WorkerGateway): Promise<void> {
  const admission = new WorkerAdmission(send);
  const calls = new Map<number, (r: ControlResponse) => void>();
  let next = 1;
  const reloadAll = (source: string) =>
    new Promise<ControlResponse>((resolve) => {
      const id = next++;
      calls.set(id, resolve);
      if (send({ t: 'call', id, cmd: 'reload', source })) return;
      calls.delete(id);
      resolve({ ok: false, message: 'the supervisor is not running' });
    });
  const gw = make({ n, of: workerTotal(), admission, reloadAll });
  process.on('message', (m: ToWorker, handle: unknown) => {
    if (m.t === 'conn') {
      if (handle instanceof net.Socket) gw.connection(handle);
    } else if (m.t === 'admitted') admission.onMessage(m);
    else if (m.t === 'answer') {
      calls.get(m.id)?.(m.res);
      calls.delete(m.id);
    } else void gw.control(m.cmd, m.source).then((res) => send({ t: 'answer', id: m.id, res }));
  });
  let stopping = false;
  let started = false;
  const stop = (why: string) => {
    if (!started) process.exit(1); // nothing to finish yet
    if (stopping) return;
    stopping = true;
    send({ t: 'stopping' });
    void gw.stop(why).then(() => process.exit(0));
  };
  process.on('SIGHUP', () => {});
  process.on('SIGINT', () => {});
  process.on('SIGTERM', () => stop('SIGTERM'));
  // The supervisor died (kill -9): end at once, as if killed with it. A graceful stop would keep
  // deliveries (and their leases) running while a new supervisor starts, returns every lease of
  // the queue and starts new workers: two deliveries of one message.
  process.on('disconnect', () => process.exit(1));
  // The channel may have closed before the listener existed, or its end may go unnoticed: the
  // parent's pid is checked too (a dead parent's children are adopted by another process).
  const parent = process.ppid;
  if (!process.connected) process.exit(1);
  setInterval(() => {
    if (process.ppid !== parent || !process.connected) process.exit(1);
  }, 1000).unref();
  await gw.start();
  started = true;
  send({ t: 'started' });
}
