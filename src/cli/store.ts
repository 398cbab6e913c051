// Owns: `portcullis store migrate [--status]` (schema versions of the configured store) and
// `portcullis store copy` (a single-node SQLite queue into PostgreSQL), and how the CLI names a
// store: the queue file, or the URL without its password (never printed otherwise).
// The store modules (SQLite, the PostgreSQL driver) are loaded when a command runs, through
// store/open.ts.
import type { Command } from 'commander';
import type { Config } from '../config/load.ts';
import { STORE_URL_ENV } from '../config/store.ts';
import { AdminError } from '../errors.ts';
import type { MigrationStatus } from '../store/open.ts';
import { isPostgresUrl, redactUrl } from '../util/secret-url.ts';
import { cliConfig, printJson, withConfig, type CommonOpts } from './context.ts';
import { say, warn } from './terminal.ts';

const store = () => import('../store/open.ts');

function printStatus(s: MigrationStatus): void {
  say(`store        ${s.store} ${s.location}`);
  for (const m of s.migrations)
    say(
      `migration ${String(m.version).padEnd(3)}` +
        (m.applied ? `applied${m.appliedAt ? ` ${m.appliedAt}` : ''}` : 'PENDING') +
        `  ${m.name}`,
    );
  if (s.unknown.length)
    say(
      `WARNING      versions ${s.unknown.join(', ')} were applied by a newer Portcullis: this version refuses to ` +
        `start on this store`,
    );
  const pending = s.migrations.filter((m) => !m.applied).length;
  say(
    pending
      ? `${pending} migration(s) pending: the server applies them when it starts (or run \`portcullis store migrate\`)`
      : 'schema up to date',
  );
}

/** `postgres:postgresql://…`, or the URL itself. */
function targetUrl(to: string | undefined, c: () => Config): string {
  if (to === undefined) {
    const cfg = c();
    if (cfg.store.type !== 'postgres') {
      throw new AdminError(
        "no target: --to is not given and the configuration's store is not PostgreSQL",
        `pass --to postgres:URL, or -c FILE with store: {type: postgres} (its url, or ${STORE_URL_ENV}, is used)`,
        2,
      );
    }
    return cfg.store.url;
  }
  const url = to.replace(/^postgres:(?=postgres(ql)?:\/\/)/, '');
  if (!isPostgresUrl(url)) {
    throw new AdminError(
      '--to must be postgres:URL with a PostgreSQL URL (postgres:postgresql://USER@HOST:PORT/DATABASE)',
      `give the URL, or leave --to out to use the configured store (a password on the command line is visible to ` +
        `other users: prefer ${STORE_URL_ENV} or the config file)`,
      2,
    );
  }
  return url;
}

export function registerStore(program: Command): void {
  const st = program
    .command('store')
    .description('the queue store: schema migrations, copying a SQLite queue into PostgreSQL');

  withConfig(
    st
      .command('migrate')
      .description('apply pending schema migrations to the configured store (the server also does at start)')
      .option('--status', 'only show which migrations are applied and which are pending (changes nothing)')
      .option('--json', 'machine-readable output'),
  ).action(async (o: CommonOpts & { status?: boolean }) => {
    const c = cliConfig(o);
    const { migrateStore, storeMigrationStatus } = await store();
    const before = await storeMigrationStatus(c);
    if (o.status) {
      if (o.json) return printJson(before);
      return printStatus(before);
    }
    const after = await migrateStore(c);
    const applied = after.migrations
      .filter((m) => m.applied && !before.migrations[m.version - 1].applied)
      .map((m) => m.version);
    if (o.json) return printJson({ ...after, appliedNow: applied });
    say(applied.length ? `applied migration(s) ${applied.join(', ')}` : 'nothing to apply');
    printStatus(after);
  });

  withConfig(
    st
      .command('copy')
      .description(
        'copy a single-node SQLite queue and its trace history into PostgreSQL (idempotent, resumable; the source ' +
          'server must be stopped)',
      )
      .requiredOption('--from <sqlite:PATH>', 'the SQLite queue: sqlite:DATADIR (or sqlite:DATADIR/queue.sqlite)')
      .option(
        '--to <postgres:URL>',
        `the PostgreSQL store (default: the configured store, store.url or ${STORE_URL_ENV})`,
      )
      .option('--batch <n>', 'messages per transaction', '500')
      .option('--json', 'machine-readable output'),
  ).action(async (o: CommonOpts & { from: string; to?: string; batch: string }) => {
    if (!o.from.startsWith('sqlite:') || o.from.length === 'sqlite:'.length) {
      throw new AdminError(
        `--from must be sqlite:PATH, not "${o.from}"`,
        'give the dataDir of the single-node server, e.g. --from sqlite:/var/lib/portcullis',
        2,
      );
    }
    const batchSize = Number(o.batch);
    if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 10_000)
      throw new AdminError(`--batch ${o.batch} is not a number from 1 to 10000`, 'use the default (500)', 2);
    const { copyIntoPostgres, queueFile, sourceDataDir } = await store();
    const dataDir = sourceDataDir(o.from.slice('sqlite:'.length));
    const url = targetUrl(o.to, () => cliConfig(o));
    const counts = await copyIntoPostgres(dataDir, url, batchSize);
    const to = redactUrl(url);
    if (o.json) return printJson({ from: queueFile(dataDir), to, ...counts });
    say(
      `copied ${counts.messages} message(s) (${counts.bodies} still queued, with their data), ` +
        `${counts.recipients} recipient(s) and ${counts.events} trace event(s) from ${queueFile(dataDir)} to ${to}`,
    );
    if (counts.tokens || counts.auditEntries || counts.reportCounts) {
      say(
        `and ${counts.tokens} admin API token(s), ${counts.auditEntries} audit log ` +
          `entr${counts.auditEntries === 1 ? 'y' : 'ies'} and ${counts.reportCounts} report counter(s)`,
      );
    }
    if (counts.tlsSessions || counts.tlsReportsSent || counts.tlsReportsReceived || counts.stsPolicies) {
      say(
        `and ${counts.tlsSessions} TLS-RPT session counter(s), ${counts.tlsReportsSent} TLS report(s) sent, ` +
          `${counts.tlsReportsReceived} TLS report(s) received and ${counts.stsPolicies} cached MTA-STS ` +
          `polic${counts.stsPolicies === 1 ? 'y' : 'ies'}`,
      );
    }
    if (counts.present)
      say(`${counts.present} message(s) were there already (an earlier copy) and were left as they are`);
    if (counts.differ.length) {
      warn(
        `WARNING ${counts.differ.length} of them changed in the SQLite queue after they were copied ` +
          `(${counts.differ.slice(0, 5).join(', ')}${counts.differ.length > 5 ? ', …' : ''}): PostgreSQL keeps ` +
          `its copy; check them with \`portcullis queue show ID\``,
      );
    }
    say(`${counts.source} message(s) in the source, ${counts.messages + counts.present} in PostgreSQL from it`);
  });
}
