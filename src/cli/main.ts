// Owns: the `portcullis` command line. Every command takes -c FILE (default ./portcullis.yaml or
// $PORTCULLIS_CONFIG) and works against the same dataDir while the server runs. Commands import
// what they run when they run (`await import`), so `--help` loads little more than commander.
import { Command } from 'commander';
import { controlRequest } from '../admin/control.ts';
import { AdminError } from '../errors.ts';
import type { SecureVersion } from 'node:tls';
import { cliConfig, configTarget, printJson, serverDataDir, withConfig, type CommonOpts } from './context.ts';
import { registerQueue } from './queue.ts';
import { registerTrace } from './trace.ts';
import { registerConnector } from './connector.ts';

const program = new Command('portcullis').description('Portcullis, a TLS-first SMTP mail gateway').showHelpAfterError();

withConfig(program.command('serve').description('run the gateway (SIGHUP reloads, SIGTERM stops)'))
  .action(async (o: CommonOpts) => { await (await import('../gateway.ts')).serve(configTarget(o)); });

const config = program.command('config').description('check or reload the configuration');
withConfig(config.command('check').description('validate the configuration file and the files it names').option('--json', 'machine-readable output'))
  .action(async (o: CommonOpts) => {
    const c = cliConfig(o);
    const [{ TrustStore }, { ServerTls }] = await Promise.all([import('../tls/trust.ts'), import('../tls/server.ts')]);
    new TrustStore(c.tls.trust.system, c.tls.trust.caFiles);
    if (c.tls.certificates.length) new ServerTls(c.tls.certificates, c.tls.minVersion as SecureVersion);
    const domains = c.organizations.flatMap((org) => org.acceptedDomains.map((d) => d.domain));
    if (o.json) return printJson({ ok: true, file: c.source, organizations: c.organizations.map((x) => x.name), domains });
    console.log(`configuration OK${c.source ? ` (${c.source})` : ' (embedded defaults)'}: ${c.organizations.length} organization(s), accepted domains ${domains.join(', ')}; listening on ${c.smtp.listen.join(', ')}`);
  });
withConfig(config.command('reload').description('make the running server re-read its configuration and certificates'))
  .action(async (o: CommonOpts) => {
    const dataDir = serverDataDir(o);
    const r = await controlRequest(dataDir, { cmd: 'reload' });
    if (!r) throw new AdminError(`no running server found for dataDir ${dataDir}`, 'start it with `portcullis serve`, or pass the same -c FILE it runs with');
    (r.ok ? console.log : console.error)(r.message);
    if (!r.ok) process.exitCode = 1;
  });

const cert = program.command('cert').description('certificates');
withConfig(cert.command('info').description('what a partner needs to configure forced TLS with us, per certificate').option('--json', 'machine-readable output'))
  .action(async (o: CommonOpts) => {
    const c = cliConfig(o);
    const [{ TrustStore }, { inspectCertificateFile }, { ensureDevCertificate }] = await Promise.all([
      import('../tls/trust.ts'), import('../tls/inspect.ts'), import('../tls/devcert.ts')]);
    const trust = new TrustStore(c.tls.trust.system, c.tls.trust.caFiles);
    const files = c.tls.certificates.length ? c.tls.certificates.map((p) => p.cert) : [(await ensureDevCertificate(c.dataDir, c.hostname)).cert];
    const infos = files.map((f) => inspectCertificateFile(f, trust));
    if (o.json) return printJson(infos);
    for (const i of infos) {
      console.log(`certificate          ${i.file}`);
      console.log(`  subject            ${i.subject}`);
      console.log(`  names (SAN)        ${i.sanNames.join(', ') || '(none)'}`);
      console.log(`  organization       ${i.organization ?? '-'}`);
      console.log(`  organizational unit ${i.organizationalUnit ?? '-'}`);
      console.log(`  issuer             ${i.issuer}`);
      console.log(`  root CA            ${i.root ?? `(not found: ${i.chainError})`}`);
      console.log(`  chain              ${i.chain.join('  ->  ')}${i.chainValid ? '  (valid)' : `  (INVALID: ${i.chainError})`}`);
      console.log(`  key                ${i.keyType} ${i.keyStrength}`);
      console.log(`  signature          ${i.signatureAlgorithm}`);
      console.log(`  valid              ${i.validFrom} to ${i.validTo} (${i.daysLeft} days left)`);
      console.log(`  SHA-256            ${i.fingerprintSha256}`);
      console.log(`  serial             ${i.serialNumber}`);
      console.log(`  CRL                ${i.crlUrls.join(', ') || '(none)'}`);
      console.log(`  OCSP               ${i.ocspUrls.join(', ') || '(none)'}`);
      for (const w of i.warnings) console.log(`  WARNING            ${w}`);
    }
  });

registerQueue(program);
registerTrace(program);
registerConnector(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  const err = e as Error;
  console.error(err instanceof AdminError ? `portcullis: ${err.message}` : `portcullis: ${err.stack ?? err}`);
  process.exit(err instanceof AdminError ? 2 : 1);
});
