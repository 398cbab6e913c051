// Owns: the settings that take effect only when the whole server restarts (its listeners, its
// queue, its identity, its privileges, the admin centre): one list for what a reload reports as
// "changed: these take effect after a restart", and for what a worker process started later (one
// that died and was replaced) keeps from the server's start whatever the file says by then.
// Promises: a replaced worker runs on the queue, node id, data folder and listeners of the workers
// beside it, never on a second queue that an edited file (not yet restarted) names.
import type { Config } from './types.ts';

/** Environment variable with the server's restart-only settings, as JSON, for its workers. */
export const RESTART_ONLY_ENV = 'PORTCULLIS_RESTART_ONLY';

/** The restart-only settings of a configuration. */
export interface RestartOnly {
  dataDir: string;
  nodeId: string;
  store: Config['store'];
  runAs: Config['runAs'];
  admin: Config['admin'];
  smtpListen: Config['smtp']['listen'];
  maildir: Config['delivery']['maildir'];
  mtaStsHosting: Config['mtaSts']['hosting'];
}

export function restartOnlyOf(c: Config): RestartOnly {
  return {
    dataDir: c.dataDir,
    nodeId: c.nodeId,
    store: c.store,
    runAs: c.runAs,
    admin: c.admin,
    smtpListen: c.smtp.listen,
    maildir: c.delivery.maildir,
    mtaStsHosting: c.mtaSts.hosting,
  };
}

/** The names of the restart-only settings that differ between what runs and `next`. */
export function restartOnlyChanges(running: Config, next: Config): string[] {
  const a = restartOnlyOf(running);
  const b = restartOnlyOf(next);
  const same = (x: unknown, y: unknown) => JSON.stringify(x) === JSON.stringify(y);
  const names: [string, unknown, unknown][] = [
    ['dataDir', a.dataDir, b.dataDir],
    ['smtp.listen', a.smtpListen, b.smtpListen],
    ['runAs', a.runAs, b.runAs],
    ['delivery.maildir', a.maildir, b.maildir],
    ['admin', a.admin, b.admin],
    // The policy host's other settings (mode, mx, max_age) are reloaded.
    ['mtaSts.hosting.listen', a.mtaStsHosting?.listen, b.mtaStsHosting?.listen],
    ['store', a.store, b.store],
    ['nodeId', a.nodeId, b.nodeId],
  ];
  return names.filter(([, x, y]) => !same(x, y)).map(([n]) => n);
}

/**
 * `c` (the file as it is now) with the restart-only settings the server started with. The MTA-STS
 * policy host keeps the file's mode and patterns on the addresses it started with; when the file
 * no longer has one, the one started with stays.
 */
export function keepRestartOnly(c: Config, r: RestartOnly): Config {
  const hosting =
    r.mtaStsHosting && (c.mtaSts.hosting ? { ...c.mtaSts.hosting, listen: r.mtaStsHosting.listen } : r.mtaStsHosting);
  return Object.freeze({
    ...c,
    dataDir: r.dataDir,
    nodeId: r.nodeId,
    store: r.store,
    runAs: r.runAs,
    admin: r.admin,
    smtp: { ...c.smtp, listen: r.smtpListen },
    delivery: { ...c.delivery, maildir: r.maildir },
    mtaSts: { ...c.mtaSts, hosting },
  });
}
