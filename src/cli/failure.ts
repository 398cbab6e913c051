// Owns: the command line's one error boundary. Whatever reaches the top of a command or escapes it
// (uncaught exception, unhandled rejection, a broken stdout pipe) ends here: one paragraph on
// stderr naming the cause and the fix, and the exit status of docs/cli.md.
// Promise: no stack trace unless asked for (--debug or PORTCULLIS_DEBUG=1); an unexpected error
// says where its details are. A closed stdout (`| head`) ends the command quietly with status 0.
// Loads nothing heavy (it is installed before any command): the log comes as the emit() that
// main.ts hands over once a command runs.
import { CommanderError } from 'commander';
import { DnsError } from '../dns/types.ts';
import { AdminError } from '../errors.ts';
import type { emit as Emit } from '../events.ts';
import { warn } from './terminal.ts';

let emit: typeof Emit | undefined;

/** The log that unexpected errors while serving go to (events.ts, loaded when a command runs). */
export function logTo(e: typeof Emit): void {
  emit = e;
}

export interface Failure {
  text: string;
  exitCode: number;
  unexpected: boolean;
}

type SystemError = NodeJS.ErrnoException & { address?: string; port?: number };

const failure = (cause: string, fix: string, exitCode = 1): Failure => ({
  text: `${cause}\n  fix: ${fix}`,
  exitCode,
  unexpected: false,
});

function bindFailure(e: SystemError): Failure | undefined {
  if (e.port === undefined) return undefined; // a Unix socket: see fileFailure
  const where = `${e.address?.includes(':') ? `[${e.address}]` : e.address}:${e.port}`;
  switch (e.code) {
    case 'EADDRINUSE':
      return failure(
        `cannot listen on ${where}: the address is already in use by another program (another mail server, or ` +
          `another Portcullis with its own dataDir)`,
        'stop that program (`ss -ltnp` names it), or change smtp.listen',
      );
    case 'EADDRNOTAVAIL':
      return failure(
        `cannot listen on ${where}: ${e.address} is not an address of this machine`,
        'in smtp.listen, use an address this machine has (`ip -brief address`), "0.0.0.0:PORT" for every IPv4 ' +
          'address or "[::]:PORT" for every IPv6 address',
      );
    case 'EACCES':
      return e.port < 1024
        ? failure(
            `cannot listen on ${where}: permission denied; ports below 1024 need the CAP_NET_BIND_SERVICE capability`,
            'grant it (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE) or run as root, or listen on a port of ' +
              '1024 or more',
          )
        : failure(
            `cannot listen on ${where}: permission denied`,
            'check the security policy (SELinux, AppArmor) for this port, or change smtp.listen',
          );
    default:
      return undefined;
  }
}

function fileFailure(e: SystemError): Failure | undefined {
  const file = e.path ?? e.address;
  if (!file) return undefined;
  switch (e.code) {
    case 'ENOENT':
      return failure(
        `${file}: no such file or directory`,
        'check the path in the configuration or on the command line',
        2,
      );
    case 'EACCES':
    case 'EPERM':
      return failure(
        `permission denied: ${e.syscall ?? 'access'} ${file}`,
        'run as the user that owns dataDir (the service user), or give that user the file (chown)',
      );
    case 'ENOSPC':
      return failure(`no space left on the device of ${file}`, 'free disk space');
    case 'EROFS':
      return failure(`${file} is on a read-only file system`, 'put dataDir on a writable file system');
    case 'EEXIST':
    case 'ENOTDIR':
      return failure(
        `${file}: a file stands where a folder belongs`,
        'move the file away, or correct the path (dataDir)',
      );
    default:
      return undefined;
  }
}

function queueFailure(code: string, message: string): Failure | undefined {
  const queue = 'the queue database (dataDir/queue.sqlite)';
  switch (
    code.split('_').slice(0, 2).join('_') // SQLITE_READONLY_DBMOVED -> SQLITE_READONLY
  ) {
    case 'SQLITE_NOTADB':
    case 'SQLITE_CORRUPT':
      return failure(`${queue} is damaged: ${message}`, 'restore it from a backup (docs/operations.md, "The queue")');
    case 'SQLITE_CANTOPEN':
    case 'SQLITE_READONLY':
    case 'SQLITE_PERM':
      return failure(
        `cannot use ${queue}: ${message}`,
        'run as the user that owns dataDir (the service user), or as root',
      );
    case 'SQLITE_BUSY':
      return failure(`${queue} stayed locked by another process for 10 s: ${message}`, 'try again');
    default:
      return undefined;
  }
}

function dnsFailure(e: DnsError): Failure {
  if (e.kind === 'nxdomain')
    return failure(`${e.qname} does not exist in DNS (${e.message})`, `check the spelling of ${e.qname}`);
  if (e.kind === 'nodata')
    return failure(`${e.qname} has no ${e.qtype} record in DNS (${e.message})`, `check the spelling of ${e.qname}`);
  return failure(
    `DNS lookup failed, the answer is unknown (${e.message})`,
    'check that the servers in dns.servers (or in /etc/resolv.conf when dns.servers is empty) are reachable and ' +
      'answer for this name (`dig @SERVER NAME TYPE`), then try again',
  );
}

/** The paragraph and exit status for an error that reached the top of a command. */
export function describeFailure(e: unknown): Failure {
  if (e instanceof AdminError) return { text: e.message, exitCode: e.exitCode, unexpected: false };
  if (e instanceof DnsError) return dnsFailure(e);
  const sys = e as SystemError;
  if (e instanceof Error && typeof sys.code === 'string') {
    const known = bindFailure(sys) ?? fileFailure(sys);
    if (known) return known;
    const queue = queueFailure(sys.code, e.message);
    if (queue) return queue;
    if (sys.syscall || sys.code.startsWith('SQLITE_')) return { text: e.message, exitCode: 1, unexpected: true };
  }
  return { text: `unexpected error: ${e instanceof Error ? e.message : String(e)}`, exitCode: 1, unexpected: true };
}

const debugging = (): boolean => process.argv.includes('--debug') || process.env.PORTCULLIS_DEBUG === '1';

/**
 * Print the paragraph and exit. While serving, an unexpected error is also logged (event
 * internal.error, with the stack) so the details survive in the server's log.
 */
export function exitWith(e: unknown, serving: boolean): never {
  if (e instanceof CommanderError) process.exit(e.exitCode === 0 ? 0 : 2); // commander printed it
  const f = describeFailure(e);
  let text = f.text;
  const stack = e instanceof Error ? e.stack : undefined;
  if (f.unexpected && serving && emit) {
    emit({
      event: 'internal.error',
      where: 'process',
      error: e instanceof Error ? e.message : String(e),
      ...(stack ? { stack } : {}),
    });
  }
  if (debugging()) text += stack ? `\n${stack}` : '';
  else if (f.unexpected)
    text += serving
      ? '\n  details: in the log (event internal.error, with the stack)'
      : '\n  details: run the command again with --debug';
  warn(`portcullis: ${text}`);
  process.exit(f.exitCode);
}

/** Route escaped errors and a closed stdout to the boundary. */
export function installBoundary(serving: () => boolean): void {
  process.stdout.on('error', (e: NodeJS.ErrnoException) =>
    e.code === 'EPIPE' ? process.exit(0) : exitWith(e, serving()),
  );
  process.on('uncaughtException', (e) => exitWith(e, serving()));
  process.on('unhandledRejection', (e) => exitWith(e, serving()));
}
