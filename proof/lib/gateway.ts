// A lean launcher for the real `portcullis serve` process, for long proof runs: unlike
// test/helpers/gateway.ts it keeps no full log in memory (a 100,000-message run logs hundreds of
// thousands of lines), only counters of the events the proof reports and the last lines for errors.
// With `workers: N` the process it starts is the supervisor; the workers' lifetimes (worker.started,
// worker.exited) are recorded as epochs too, and killWorker() SIGKILLs one of them.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, writeFileSync, type WriteStream } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { asRoot, BIN, runCli } from '../../test/helpers/gateway.ts';
import { onAbort } from './cleanup.ts';

export interface ProofGateway {
  configFile: string;
  dataDir: string;
  host: string;
  port: number;
  proc: ChildProcess | undefined;
  /** Pids of processes killed with SIGKILL, and when (ms epoch). */
  kills: { pid: number; at: number }[];
  /** Process lifetimes: [started, ended) with how they ended. */
  epochs: { pid: number; start: number; end: number | null; how: 'SIGKILL' | 'SIGTERM' | 'exit' | null }[];
  /** internal.error events by `where` (the part before the first space). */
  internalErrors: Map<string, number>;
  /** Samples of internal.error lines (at most 20). */
  internalErrorSamples: string[];
  recovered: number;
  /** With workers: the pid of each worker as last started. */
  workers: Map<number, number>;
  tail: string[];
  running(): boolean;
  start(): Promise<void>;
  kill9(): Promise<void>;
  /** SIGKILL worker n (workers: N); its supervisor restarts it. False when it does not run. */
  killWorker(n: number): boolean;
  stop(): Promise<void>;
  writeConfig(cfg: Record<string, unknown>): void;
  /** Flush and close the log file (after the last stop). */
  closeLog(): Promise<void>;
  cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

export function proofGateway(o: {
  dir: string;
  dataDir: string;
  host: string;
  port: number;
  config: Record<string, unknown>;
}): ProofGateway {
  const configFile = path.join(o.dir, 'portcullis.yaml');
  const full = (cfg: Record<string, unknown>) => ({
    hostname: 'mx1.contoso.test',
    ...asRoot(),
    admin: { enabled: false },
    ...cfg,
    dataDir: o.dataDir,
    smtp: { ...((cfg.smtp as object) ?? {}), listen: [`${o.host}:${o.port}`] },
  });
  writeFileSync(configFile, YAML.stringify(full(o.config)));
  let startedWaiter: (() => void) | undefined;
  // A supervisor is started when all its workers are: each loads the whole program.
  const startS = Number(o.config.workers ?? 1) > 1 ? 90 : 30;
  type Epoch = ProofGateway['epochs'][number];
  const workerEpochs = new Map<number, Epoch>();
  /** A worker started or exited: its own epoch, which ends at the latest with its supervisor's. */
  const onWorker = (line: string, sup: Epoch) => {
    const e = JSON.parse(line) as { event: string; worker: number; pid: number; signal?: string | null };
    if (e.event === 'worker.started') {
      g.workers.set(e.worker, e.pid);
      const ep: Epoch = { pid: e.pid, start: Date.now(), end: null, how: null };
      workerEpochs.set(e.pid, ep);
      g.epochs.push(ep);
      const supEnd = () => {
        if (ep.end !== null) return;
        ep.end = sup.end ?? Date.now();
        ep.how = sup.how; // it exits with its supervisor
      };
      g.proc?.once('exit', supEnd);
    } else if (e.event === 'worker.exited') {
      const ep = workerEpochs.get(e.pid);
      if (ep && ep.end === null) {
        ep.end = Date.now();
        ep.how = e.signal === 'SIGKILL' ? 'SIGKILL' : e.signal === 'SIGTERM' ? 'SIGTERM' : 'exit';
      }
    }
  };
  // The full log goes to a file next to the config (kept with KEEP_PROOF=1), not into memory.
  let logFile: WriteStream | undefined;
  const g: ProofGateway = {
    configFile,
    dataDir: o.dataDir,
    host: o.host,
    port: o.port,
    proc: undefined,
    kills: [],
    epochs: [],
    internalErrors: new Map(),
    internalErrorSamples: [],
    recovered: 0,
    workers: new Map(),
    tail: [],
    running: () => !!g.proc && g.proc.exitCode === null && g.proc.signalCode === null,
    async start() {
      if (g.running()) throw new Error('gateway already running');
      const proc = spawn(process.execPath, [BIN, 'serve', '-c', configFile], { stdio: ['ignore', 'pipe', 'pipe'] });
      logFile ??= createWriteStream(path.join(o.dir, 'gateway.log'), { flags: 'a' });
      proc.stdout!.pipe(logFile, { end: false });
      g.proc = proc;
      const dispose = onAbort(() => proc.kill('SIGKILL'));
      proc.once('exit', dispose);
      const epoch = {
        pid: proc.pid ?? -1,
        start: Date.now(),
        end: null as number | null,
        how: null as 'SIGKILL' | 'SIGTERM' | 'exit' | null,
      };
      g.epochs.push(epoch);
      proc.once('exit', (_code, sig) => {
        epoch.end = Date.now();
        epoch.how = sig === 'SIGKILL' ? 'SIGKILL' : sig === 'SIGTERM' ? 'SIGTERM' : 'exit';
      });
      let partial = '';
      const onLine = (line: string) => {
        g.tail.push(line);
        if (g.tail.length > 60) g.tail.shift();
        if (line.includes('"event":"internal.error"')) {
          let where = 'unknown';
          try {
            where = String((JSON.parse(line) as { where?: string }).where ?? 'unknown').split(' ')[0];
          } catch {
            /* keep unknown */
          }
          g.internalErrors.set(where, (g.internalErrors.get(where) ?? 0) + 1);
          if (g.internalErrorSamples.length < 20) g.internalErrorSamples.push(line.slice(0, 600));
        } else if (line.includes('"event":"queue.recovered"')) g.recovered++;
        else if (line.includes('"event":"worker.')) onWorker(line, epoch);
        else if (line.includes('"event":"server.started"')) startedWaiter?.();
      };
      proc.stdout!.on('data', (d: Buffer) => {
        partial += d.toString();
        let nl: number;
        while ((nl = partial.indexOf('\n')) >= 0) {
          onLine(partial.slice(0, nl));
          partial = partial.slice(nl + 1);
        }
      });
      proc.stderr!.on('data', (d: Buffer) => {
        g.tail.push(`[stderr] ${d.toString().slice(0, 2000)}`);
      });
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => {
          proc.kill('SIGKILL');
          reject(new Error(`gateway did not start within ${startS} s:\n${g.tail.slice(-15).join('\n')}`));
        }, startS * 1000);
        const onExit = (code: number | null) => {
          clearTimeout(t);
          reject(new Error(`gateway exited with ${code} at start-up:\n${g.tail.slice(-15).join('\n')}`));
        };
        proc.once('exit', onExit);
        startedWaiter = () => {
          clearTimeout(t);
          proc.off('exit', onExit);
          startedWaiter = undefined;
          resolve();
        };
      });
    },
    killWorker(n) {
      const pid = g.workers.get(n);
      if (pid === undefined || !g.running()) return false;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        return false;
      }
      g.kills.push({ pid, at: Date.now() });
      return true;
    },
    async kill9() {
      const p = g.proc;
      if (!p || !g.running()) return;
      const done = new Promise((r) => p.once('exit', r));
      g.kills.push({ pid: p.pid ?? -1, at: Date.now() });
      p.kill('SIGKILL');
      await done;
      // Its workers exit when they see it gone: wait for them (bounded), so nothing writes on.
      for (let i = 0; i < 100 && [...g.workers.values()].some(alive); i++) await new Promise((r) => setTimeout(r, 100));
    },
    async stop() {
      const p = g.proc;
      if (!p || !g.running()) return;
      const done = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
      await done;
      clearTimeout(t);
    },
    async closeLog() {
      await new Promise<void>((r) => (logFile ? logFile.end(() => r()) : r()));
      logFile = undefined;
    },
    writeConfig(cfg) {
      writeFileSync(configFile, YAML.stringify(full(cfg)));
    },
    cli: (args) => runCli([...args, '-c', configFile]),
  };
  return g;
}
