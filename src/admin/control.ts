// Owns: the local control socket (dataDir/control.sock, mode 0660: the service user, its group and
// root may use it): JSON line requests from the CLI to the running server (reload, kick, status).
// Client and server halves live here. It doubles as the single-instance guard: a second server on
// the same dataDir is refused.
import net from 'node:net';
import { chmodSync, existsSync, unlinkSync } from 'node:fs';
import path from 'node:path';
import { AdminError } from '../errors.ts';

export interface ControlRequest {
  cmd: 'reload' | 'kick' | 'status';
}
export interface ControlResponse {
  ok: boolean;
  message: string;
  data?: Record<string, unknown>;
}

export const controlPath = (dataDir: string): string => path.join(dataDir, 'control.sock');

/** Ask the running server; null when no server listens on this dataDir. */
export function controlRequest(
  dataDir: string,
  req: ControlRequest,
  timeoutMs = 15_000,
): Promise<ControlResponse | null> {
  return new Promise((resolve) => {
    const p = controlPath(dataDir);
    if (!existsSync(p)) {
      resolve(null);
      return;
    }
    const s = net.connect(p);
    let buf = '';
    const done = (v: ControlResponse | null) => {
      s.destroy();
      clearTimeout(t);
      resolve(v);
    };
    const t = setTimeout(() => done({ ok: false, message: 'the server did not answer in time' }), timeoutMs);
    s.on('connect', () => s.write(JSON.stringify(req) + '\n'));
    s.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        try {
          done(JSON.parse(buf.slice(0, nl)) as ControlResponse);
        } catch {
          done({ ok: false, message: 'bad answer from server' });
        }
      }
    });
    s.on('error', () => done(null));
  });
}

/** Refuse when a server already answers on this dataDir's control socket (checked before binding ports too). */
export async function assertNoServer(dataDir: string): Promise<void> {
  const p = controlPath(dataDir);
  if (existsSync(p) && (await controlRequest(dataDir, { cmd: 'status' }, 2000))) throw serverInUse(dataDir);
}

const serverInUse = (dataDir: string) =>
  new AdminError(
    `another Portcullis server is already running on ${dataDir} (its control socket ${controlPath(dataDir)} answers)`,
    'stop the other server first, or give this one another dataDir',
    1,
  );

/** Listen on dataDir/control.sock; an AdminError (exit 1) when another server answers there. */
export async function startControlServer(
  dataDir: string,
  handle: (r: ControlRequest) => Promise<ControlResponse>,
): Promise<net.Server> {
  const p = controlPath(dataDir);
  if (existsSync(p)) {
    await assertNoServer(dataDir);
    unlinkSync(p); // stale socket of a process that died
  }
  const srv = net.createServer((c) => {
    let buf = '';
    c.on('error', () => {});
    c.on('data', (d) => {
      buf += d.toString();
      if (buf.length > 65_536) {
        c.destroy();
        return;
      }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      let req: ControlRequest;
      try {
        req = JSON.parse(buf.slice(0, nl)) as ControlRequest;
      } catch {
        c.end(JSON.stringify({ ok: false, message: 'bad request' }) + '\n');
        return;
      }
      handle(req).then(
        (r) => c.end(JSON.stringify(r) + '\n'),
        (e) => c.end(JSON.stringify({ ok: false, message: String(e) }) + '\n'),
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    // started at the same instant
    srv.once('error', (e: NodeJS.ErrnoException) => reject(e.code === 'EADDRINUSE' ? serverInUse(dataDir) : e));
    srv.listen(p, () => resolve());
  });
  chmodSync(p, 0o660);
  return srv;
}
