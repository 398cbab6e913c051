// Owns: durable file writes (write, fsync file, rename, fsync directory).
import { closeSync, fsyncSync, openSync, renameSync, writeSync } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import path from 'node:path';

export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Atomically replace `file` with `data`, durable once this returns. */
export function writeFileDurable(file: string, data: string | Buffer, mode = 0o644): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  fsyncDir(path.dirname(file));
}

/**
 * Async variant: write `chunks` to `tmp`, fsync, rename to `final`, fsync the target directory.
 * `mode` is set exactly (whatever the umask) and `gid` given to the file before it is renamed.
 */
export async function writeChunksDurable(
  tmp: string,
  final: string,
  chunks: readonly Buffer[],
  perm: { mode?: number; gid?: number } = {},
): Promise<void> {
  const fh = await open(tmp, 'wx', perm.mode ?? 0o600);
  try {
    if (perm.gid !== undefined) await fh.chown(-1, perm.gid);
    if (perm.mode !== undefined) await fh.chmod(perm.mode);
    await fh.writev(chunks as Buffer[]);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, final);
  const dh = await open(path.dirname(final), 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
