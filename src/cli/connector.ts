// Owns: `portcullis connector list|show|validate` and `portcullis tls check` (with --cert: tls.ts).
// The probing modules (DNS, SMTP client, TLS, revocation) are imported when a command runs.
// What connectors are and how one is validated is shared with the admin API (admin/ops/connectors.ts).
import type { Command } from 'commander';
import type { AnyConnector as Any } from '../admin/ops/connectors.ts';
import type { HostReport } from '../delivery/probe.ts';
import { AdminError } from '../errors.ts';
import type { TlsRequirement } from '../policy/outbound.ts';
import { CONNECTOR_TLS_LEVELS, REQUIRED_TLS_LEVELS, type TlsLevel } from '../tls/levels.ts';
import { cliConfig, printJson, withConfig, type CommonOpts } from './context.ts';
import { say } from './terminal.ts';
import { certCheck, registerTrust, type CertCheckOpts } from './tls.ts';

const ops = () => import('../admin/ops/connectors.ts');
const REQUIRED = REQUIRED_TLS_LEVELS.join(', ');
const isConnectorLevel = (l: string): l is TlsLevel => (CONNECTOR_TLS_LEVELS as readonly string[]).includes(l);

function summary(x: Any): string {
  if (x.direction === 'inbound') {
    const id = [
      x.tlsSenderCertificateName && `certificate ${x.tlsSenderCertificateName}`,
      x.senderIPAddresses.length && `IPs ${x.senderIPAddresses.join(', ')}`,
      // Sender domains identify partners only (an onPremises connector: its addresses or certificate).
      x.senderDomains.length && x.connectorType === 'partner' && `sender domains ${x.senderDomains.join(', ')}`,
    ]
      .filter(Boolean)
      .join('; ');
    const req = [
      x.requireTls && 'TLS required',
      x.restrictDomainsToCertificate && 'domains restricted to certificate',
      x.restrictDomainsToIPAddresses && 'domains restricted to IPs',
      x.treatMessagesAsInternal && 'internal',
    ]
      .filter(Boolean)
      .join(', ');
    return `${id}${req ? ` [${req}]` : ''}`;
  }
  const dest = x.smartHosts.length ? `smart hosts ${x.smartHosts.join(', ')}` : 'MX';
  const scope = [
    x.recipientDomains.length && x.recipientDomains.join(', '),
    x.allAcceptedDomains && 'all accepted domains',
    x.routeAllMessagesViaOnPremises && 'all internet mail',
  ]
    .filter(Boolean)
    .join(', ');
  return `${scope} via ${dest}; TLS ${x.tlsSettings}${x.tlsDomain ? ` (${x.tlsDomain})` : ''}`;
}

/** A mail domain as `tls check` takes it (not HOST:PORT, not an IP address). */
const isDomain = (dest: string): boolean => !/[:[\]]/.test(dest) && !/^\d+\.\d+\.\d+\.\d+$/.test(dest);

async function report(
  reports: HostReport[],
  json: boolean | undefined,
  what: string,
  more: string[] = [],
): Promise<void> {
  if (json) printJson(reports);
  else {
    const { formatReport } = await import('../delivery/probe.ts');
    say(reports.map(formatReport).join('\n\n') || `no host to check for ${what}`);
    if (more.length) say(`\n${more.join('\n')}`);
    const ok = reports.length > 0 && reports.every((r) => r.passes);
    say(
      `\n${ok ? 'PASS' : 'FAIL'}: ${reports.filter((r) => r.passes).length} of ${reports.length} host(s) meet the ` +
        `requirement`,
    );
  }
  if (!reports.length || reports.some((r) => !r.passes)) process.exitCode = 1;
}

export function registerConnector(program: Command): void {
  const c = program.command('connector').description('inbound and outbound connectors');

  withConfig(
    c.command('list').description('every connector of every organization').option('--json', 'machine-readable output'),
  ).action(async (o: CommonOpts) => {
    const list = (await ops()).allConnectors(cliConfig(o));
    if (o.json) return printJson(list);
    if (!list.length) {
      say('no connectors configured');
      return;
    }
    for (const x of list)
      say(
        `${x.organization.padEnd(12)} ${x.direction.padEnd(8)} ${x.connectorType.padEnd(10)} ` +
          `${x.enabled ? 'enabled ' : 'disabled'} "${x.name}": ${summary(x)}`,
      );
  });

  withConfig(
    c
      .command('show')
      .argument('<name>')
      .option('--org <organization>', 'when names repeat across organizations')
      .option('--json', 'machine-readable output')
      .description('one connector with every setting'),
  ).action(async (name: string, o: CommonOpts & { org?: string }) => {
    const hits = (await ops()).findConnectors(cliConfig(o), name, o.org);
    if (o.json) return printJson(hits);
    for (const x of hits) {
      say(`${x.direction} connector "${x.name}" (organization ${x.organization})`);
      for (const [k, v] of Object.entries(x))
        if (!['name', 'organization', 'direction'].includes(k))
          say(`  ${k}: ${Array.isArray(v) ? (v.length ? v.join(', ') : '(none)') : String(v)}`);
    }
  });

  withConfig(
    c
      .command('validate')
      .argument('<name>')
      .description(
        'connect to each smart host or MX of an outbound connector and report whether its tlsSettings would pass',
      )
      .option('--org <organization>', 'when names repeat across organizations')
      .option(
        '--recipient <address>',
        'recipient whose domain picks the MX hosts (MX connectors); with --send, where the test message goes',
      )
      .option('--send', 'also send a test message to --recipient')
      .option('--json', 'machine-readable output'),
  ).action(async (name: string, o: CommonOpts & { org?: string; recipient?: string; send?: boolean }) => {
    const cfg = cliConfig(o);
    const { findConnectors, probeTools, validateConnector } = await ops();
    const hits = findConnectors(cfg, name, o.org);
    const x = hits.find((h) => h.direction === 'outbound') ?? hits[0];
    const options = {
      ...(o.recipient !== undefined ? { recipient: o.recipient } : {}),
      ...(o.send ? { send: true } : {}),
    };
    await report(await validateConnector(cfg, await probeTools(cfg), x, options), o.json, `connector "${x.name}"`);
  });

  const t = program.command('tls').description('TLS inspection');
  withConfig(
    t
      .command('check')
      .argument('[destination]', 'HOST[:PORT] or a mail DOMAIN (its MX hosts)')
      .description(
        'connect, STARTTLS, and report version, cipher, chain, root trust, names and every CRL/OCSP/CA-issuer ' +
          'endpoint; with --cert, check a certificate file instead',
      )
      .option('--level <level>', `TLS level to judge against (${REQUIRED})`, 'certificateValidation')
      .option('--tls-domain <name>', 'certificate name required at domainValidation')
      .option('--cert <file>', 'check this certificate (PEM, leaf first) before it is served: no SMTP')
      .option('--chain <file>', 'with --cert: the intermediates, when not in the certificate file')
      .option('--name <host>', 'with --cert: a name the certificate must cover')
      .option('--json', 'machine-readable output'),
  ).action(
    async (
      dest: string | undefined,
      o: CommonOpts & Partial<CertCheckOpts> & { level: string; tlsDomain?: string },
    ) => {
      const cfg = cliConfig(o);
      if (o.cert && dest)
        throw new AdminError(
          'give a DESTINATION or --cert FILE, not both',
          'tls check HOST[:PORT] checks a server; tls check --cert FILE checks a certificate file',
        );
      if (o.cert) return certCheck(await (await ops()).probeTools(cfg), { ...o, cert: o.cert });
      if (!dest)
        throw new AdminError(
          'tls check needs a DESTINATION or --cert FILE',
          'for example `portcullis tls check mx1.fabrikam.test:25` or `portcullis tls check --cert new-cert.pem`',
        );
      if (o.chain || o.name)
        throw new AdminError(
          '--chain and --name go with --cert',
          'use --tls-domain to require a name of a DESTINATION',
        );
      if (!isConnectorLevel(o.level))
        throw new AdminError(`--level ${o.level} is not a TLS level`, `use one of ${REQUIRED}`);
      if (o.level === 'domainValidation' && !o.tlsDomain)
        throw new AdminError('--level domainValidation needs --tls-domain', 'name the certificate name to require');
      const requirement: TlsRequirement = {
        level: o.level,
        source: '`tls check`',
        ...(o.tlsDomain ? { tlsDomain: o.tlsDomain } : {}),
      };
      const { probeAll, probeTargets, probeTools } = await ops();
      const t = await probeTools(cfg);
      const reports = await probeAll(cfg, t, await probeTargets(t, dest, cfg.delivery.port), requirement);
      // A mail domain (not HOST:PORT, not an address): its MTA-STS policy and each MX host's
      // verdict, and its TLS-RPT record (in --json on each host, beside the MTA-STS verdict).
      if (!isDomain(dest)) return report(reports, o.json, dest);
      const domain = dest.toLowerCase().replace(/\.$/, '');
      const [sts, rpt] = await Promise.all([import('../mtasts/check.ts'), import('../tlsrpt/check.ts')]);
      const [check, tlsRpt] = await Promise.all([
        sts.checkSts(domain, t.resolver, t.trust),
        rpt.checkTlsRpt(domain, t.resolver),
      ]);
      const hosts = reports.map((r) => ({ ...r, mtaSts: sts.stsHostVerdict(check, r.host, r), tlsRpt }));
      await report(hosts, o.json, dest, [
        ...sts.formatStsCheck(
          check,
          hosts.map((h) => ({
            host: h.host,
            ...(h.ip ? { ip: h.ip } : {}),
            ...(h.mtaSts ? { verdict: h.mtaSts } : {}),
          })),
        ),
        ...rpt.formatTlsRptCheck(tlsRpt),
      ]);
    },
  );
  registerTrust(t);
}
