// Starts the real `portcullis serve` process with a generated config in a temp folder.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(ROOT, 'bin/portcullis.js');

export function tempDir(prefix = 'pc-test-'): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

export interface GatewayHandle {
  dir: string;
  dataDir: string;
  configFile: string;
  host: string;
  port: number;
  proc: ChildProcess;
  logs: string[];
  /** Parsed JSON log lines. */
  events(): Record<string, unknown>[];
  waitForLog(pred: (e: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  writeConfig(cfg: Record<string, unknown>): void;
  stop(): Promise<void>;
  kill9(): Promise<void>;
  restart(): Promise<void>;
  cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }>;
}

export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => {
      stdout += d;
    });
    p.stderr.on('data', (d) => {
      stderr += d;
    });
    p.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

export interface StartOptions {
  /**
   * Config object; `smtp.listen`, `dataDir` and `hostname` are filled in when absent, and
   * `runAs: root` when the tests run as root (a real configuration must say who to run as).
   */
  config?: Record<string, unknown>;
  host?: string;
  dir?: string;
  /** Port to listen on (default: a free one). */
  port?: number;
  /** Command prefix for the server process, e.g. to start it in a network namespace. */
  wrap?: string[];
  /** Extra `serve` arguments (e.g. --user). */
  args?: string[];
}

/** `runAs: root` for configurations of tests that run as root (CI does). */
export const asRoot = (): Record<string, unknown> => (process.getuid?.() === 0 ? { runAs: 'root' } : {});

export const defaultOrgs = [
  { name: 'contoso', acceptedDomains: [{ domain: 'contoso.test', type: 'authoritative', recipients: 'any' }] },
];

export async function startGateway(opts: StartOptions = {}): Promise<GatewayHandle> {
  const dir = opts.dir ?? tempDir();
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? (await freePort(host));
  const configFile = path.join(dir, 'portcullis.yaml');
  const base = opts.config ?? {};
  const full = (cfg: Record<string, unknown>) => ({
    hostname: 'mx1.contoso.test',
    dataDir: path.join(dir, 'data'),
    organizations: defaultOrgs,
    ...asRoot(),
    // Tests that want the admin centre give it a free port (admin.listen); the others leave 8443 alone.
    admin: { enabled: false },
    ...cfg,
    smtp: { listen: [`${host}:${port}`], ...((cfg.smtp as object) ?? {}) },
  });
  writeFileSync(configFile, YAML.stringify(full(base)));
  const logs: string[] = [];
  const waiters: { pred: (e: Record<string, unknown>) => boolean; resolve: (e: Record<string, unknown>) => void }[] =
    [];
  const h: GatewayHandle = {
    dir,
    dataDir: path.join(dir, 'data'),
    configFile,
    host,
    port,
    proc: undefined as unknown as ChildProcess,
    logs,
    events: () =>
      logs.flatMap((l) => {
        try {
          return [JSON.parse(l) as Record<string, unknown>];
        } catch {
          return [];
        }
      }),
    waitForLog(pred, timeoutMs = 15_000) {
      const hit = h.events().find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const t = setTimeout(
          () => reject(new Error(`timed out waiting for log line; last lines:\n${logs.slice(-10).join('\n')}`)),
          timeoutMs,
        );
        waiters.push({
          pred,
          resolve: (e) => {
            clearTimeout(t);
            resolve(e);
          },
        });
      });
    },
    writeConfig(cfg) {
      writeFileSync(configFile, YAML.stringify(full(cfg)));
    },
    async stop() {
      if (h.proc.exitCode !== null || h.proc.signalCode !== null) return;
      const done = new Promise((r) => h.proc.once('exit', r));
      h.proc.kill('SIGTERM');
      const t = setTimeout(() => h.proc.kill('SIGKILL'), 15_000);
      await done;
      clearTimeout(t);
    },
    async kill9() {
      if (h.proc.exitCode !== null || h.proc.signalCode !== null) return;
      const done = new Promise((r) => h.proc.once('exit', r));
      h.proc.kill('SIGKILL');
      await done;
    },
    async restart() {
      await launch();
    },
    cli: (args) => runCli([...args, '-c', configFile]),
  };
  const launch = async () => {
    const before = logs.length;
    const [cmd, ...args] = [
      ...(opts.wrap ?? []),
      process.execPath,
      BIN,
      'serve',
      '-c',
      configFile,
      ...(opts.args ?? []),
    ];
    const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env } });
    h.proc = proc;
    let partial = '';
    const onLine = (line: string) => {
      logs.push(line);
      let e: Record<string, unknown>;
      try {
        e = JSON.parse(line);
      } catch {
        return;
      }
      for (let i = waiters.length - 1; i >= 0; i--)
        if (waiters[i].pred(e)) {
          waiters[i].resolve(e);
          waiters.splice(i, 1);
        }
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
      logs.push(`[stderr] ${d.toString()}`);
    });
    const started = new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`gateway did not start:\n${logs.slice(before).join('\n')}`)), 30_000);
      waiters.push({
        pred: (e) => e.event === 'server.started',
        resolve: () => {
          clearTimeout(t);
          resolve();
        },
      });
      proc.once('exit', (code) => {
        clearTimeout(t);
        reject(new Error(`gateway exited with ${code}:\n${logs.slice(before).join('\n')}`));
      });
    });
    await started;
  };
  await launch();
  return h;
}

export function cleanup(h: GatewayHandle | undefined): Promise<void> {
  if (!h) return Promise.resolve();
  return h.stop().then(() => rmSync(h.dir, { recursive: true, force: true }));
}
