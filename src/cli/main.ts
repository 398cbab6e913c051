// Owns: the `portcullis` command line. Every command takes -c FILE (default $PORTCULLIS_CONFIG, else
// ./portcullis.yaml, else /etc/portcullis/portcullis.yaml) and works against the same dataDir while
// the server runs. Commands import what they run when they run (`await import`), so `--help`
// loads little more than commander.
// Conventions (docs/cli.md): stdout carries a command's output, log lines go to stderr (the server
// logs to stdout); reading commands create no file; errors go through the boundary in failure.ts.
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { controlRequest } from '../admin/control.ts';
import { AdminError } from '../errors.ts';
import type { SecureVersion } from 'node:tls';
import { cliConfig, configTarget, printJson, serverDataDir, withConfig, type CommonOpts } from './context.ts';
import { registerQueue } from './queue.ts';
import { registerTrace } from './trace.ts';
import { registerConnector } from './connector.ts';
import { registerAdmin } from './admin.ts';
import { registerDane } from './dane.ts';
import { registerTlsRpt } from './tlsrpt.ts';
import { registerMtaSts } from './mtasts.ts';
import { registerStore } from './store.ts';
import { registerCluster, reloadThroughStore } from './cluster.ts';
import { say, warn } from './terminal.ts';
import { exitWith, installBoundary, logTo } from './failure.ts';

let serving = false;
installBoundary(() => serving);
const debug = process.argv.includes('--debug') || process.env.PORTCULLIS_DEBUG === '1';
const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

// exitOverride before the commands, so they inherit it: usage errors reach the boundary (exit 2).
const program = new Command('portcullis')
  .description('Portcullis, a TLS-first SMTP mail gateway')
  .version(version, '-V, --version', 'print the version')
  .option('--debug', 'print stack traces of unexpected errors')
  .showHelpAfterError()
  .exitOverride();
// Before any command runs (never for --help or a usage error): the log (pino) is loaded here.
program.hook('preAction', async (_p, cmd) => {
  serving = cmd.name() === 'serve';
  const events = await import('../events.ts');
  events.setLogLevel(debug ? 'debug' : 'warn'); // commands other than serve: warnings only, on stderr
  logTo(events.emit);
});

withConfig(program.command('serve').description('run the gateway (SIGHUP reloads, SIGTERM stops)'))
  .option('--user <name>', 'started as root: the user to run as after binding (overrides runAs.user)')
  .option('--group <name>', 'with --user: the group to run as (overrides runAs.group)')
  .option('--workers <n>', 'worker processes: a number, or auto for one per core (overrides workers)')
  .action(async (o: CommonOpts & { user?: string; group?: string; workers?: string }) => {
    await (
      await import('../gateway.ts')
    ).serve({ ...configTarget(o), runAs: { user: o.user, group: o.group }, workers: o.workers });
  });

const config = program.command('config').description('check or reload the configuration');
withConfig(
  config
    .command('check')
    .description('validate the configuration file and the files it names')
    .option('--json', 'machine-readable output'),
).action(async (o: CommonOpts) => {
  const c = cliConfig(o);
  const [{ TrustStore }, { ServerTls }, { certificateFileWarnings }, { checkService, formatProblems }] =
    await Promise.all([
      import('../tls/trust.ts'),
      import('../tls/server.ts'),
      import('../tls/inspect.ts'),
      import('../service/checks.ts'),
    ]);
  new TrustStore(c.tls.trust.system, c.tls.trust.caFiles);
  if (c.tls.certificates.length) new ServerTls(c.tls.certificates, c.tls.minVersion as SecureVersion);
  const service = checkService(c);
  if (service.problems.length)
    throw new AdminError(`serve would refuse to start:\n${formatProblems(service.problems)}`);
  const domains = c.organizations.flatMap((org) => org.acceptedDomains.map((d) => d.domain));
  const warnings = c.tls.certificates.flatMap((p) => certificateFileWarnings(p.cert).map((w) => `${p.cert}: ${w}`));
  const store = (await import('../store/open.ts')).describeStore(c);
  if (c.store.type === 'sqlite' && process.env.PORTCULLIS_STORE_URL)
    warnings.push(
      'PORTCULLIS_STORE_URL is set but ignored: the store is sqlite (set store: {type: postgres} to use it)',
    );
  if (o.json)
    return printJson({
      ok: true,
      file: c.source,
      organizations: c.organizations.map((x) => x.name),
      domains,
      runsAs: service.runs,
      store,
      warnings,
    });
  say(
    `configuration OK${c.source ? ` (${c.source})` : ' (embedded defaults)'}: ${c.organizations.length} ` +
      `organization(s), accepted domains ${domains.join(', ')}; listening on ${c.smtp.listen.join(', ')}; runs as ` +
      `${service.runs}; store ${store}`,
  );
  for (const w of warnings) say(`WARNING ${w}`);
});
withConfig(
  config
    .command('reload')
    .description('make the running server re-read its configuration and certificates')
    .option('--node <id>', 'ask this node of the cluster instead, through the store (from any node)')
    .option('--all', 'ask every live node of the cluster, through the store'),
).action(async (o: CommonOpts & { node?: string; all?: boolean }) => {
  if (o.node || o.all) {
    if (!(await reloadThroughStore(cliConfig(o), o))) process.exitCode = 1;
    return;
  }
  const dataDir = serverDataDir(o);
  const r = await controlRequest(dataDir, { cmd: 'reload' });
  if (!r)
    throw new AdminError(
      `no running server found for dataDir ${dataDir}`,
      'start it with `portcullis serve`, or pass the same -c FILE it runs with',
      1,
    );
  (r.ok ? say : warn)(r.message);
  if (!r.ok) process.exitCode = 1;
});

const cert = program.command('cert').description('certificates');
withConfig(
  cert
    .command('info')
    .description('what a partner needs to configure forced TLS with us, per certificate')
    .option('--json', 'machine-readable output'),
).action(async (o: CommonOpts) => {
  const c = cliConfig(o);
  const [{ TrustStore }, { inspectCertificateFile }, { devCertificatePaths }, { gatewayCertificateFiles }] =
    await Promise.all([
      import('../tls/trust.ts'),
      import('../tls/inspect.ts'),
      import('../tls/devcert.ts'),
      import('../admin/ops/certificates.ts'),
    ]);
  const trust = new TrustStore(c.tls.trust.system, c.tls.trust.caFiles);
  const files = gatewayCertificateFiles(c);
  if (!files.length) {
    throw new AdminError(
      `no certificate configured (tls.certificates is empty) and no development certificate at ` +
        `${devCertificatePaths(c.dataDir).cert} yet`,
      'set tls.certificates to your certificate and key; without them the server generates a self-signed ' +
        'development certificate there when it starts',
      1,
    );
  }
  const infos = files.map((f) => inspectCertificateFile(f.file, trust));
  if (o.json) return printJson(infos);
  for (const i of infos) {
    say(`certificate          ${i.file}`);
    say(`  subject            ${i.subject}`);
    say(`  names (SAN)        ${i.sanNames.join(', ') || '(none)'}`);
    say(`  organization       ${i.organization ?? '-'}`);
    say(`  organizational unit ${i.organizationalUnit ?? '-'}`);
    say(`  issuer             ${i.issuer}`);
    say(`  root CA            ${i.root ?? `(not found: ${i.chainError})`}`);
    say(`  chain              ${i.chain.join('  ->  ')}${i.chainValid ? '  (valid)' : `  (INVALID: ${i.chainError})`}`);
    say(`  key                ${i.keyType} ${i.keyStrength}`);
    say(`  signature          ${i.signatureAlgorithm}`);
    say(`  valid              ${i.validFrom} to ${i.validTo} (${i.daysLeft} days left)`);
    say(`  SHA-256            ${i.fingerprintSha256}`);
    say(`  serial             ${i.serialNumber}`);
    say(`  CRL                ${i.crlUrls.join(', ') || '(none)'}`);
    say(`  OCSP               ${i.ocspUrls.join(', ') || '(none)'}`);
    for (const w of i.warnings) say(`  WARNING            ${w}`);
  }
});

registerQueue(program);
registerTrace(program);
registerConnector(program);
registerDane(program);
registerTlsRpt(program);
registerMtaSts(program);
registerAdmin(program);
registerStore(program);
registerCluster(program);

program.parseAsync(process.argv).catch((e: unknown) => exitWith(e, serving));
