// Owns: `portcullis mta-sts records`: what to publish so that senders apply our MTA-STS policy
// (RFC 8461) and send us TLS reports (RFC 8460): the policy served by mtaSts.hosting, the
// `_mta-sts` and `_smtp._tls` TXT records of each accepted domain, the name `mta-sts.<domain>`
// must resolve to, and whether a certificate of tls.certificates covers that name. The hosting
// and certificate modules are imported when the command runs.
import type { Command } from 'commander';
import { AdminError } from '../errors.ts';
import { cliConfig, printJson, withConfig, type CommonOpts } from './context.ts';
import { say } from './terminal.ts';

interface RecordsOpts extends CommonOpts {
  rua?: string[];
}

export function registerMtaSts(program: Command): void {
  const cmd = program.command('mta-sts').description('MTA-STS (RFC 8461) for our own domains');
  withConfig(
    cmd
      .command('records')
      .description('the policy we serve and the DNS records to publish for each accepted domain')
      .option('--rua <uri...>', 'where TLS reports should go, for _smtp._tls (default mailto:tlsrpt@<domain>)')
      .option('--json', 'machine-readable output'),
  ).action(async (o: RecordsOpts) => {
    const c = cliConfig(o);
    const h = c.mtaSts.hosting;
    if (!h)
      throw new AdminError(
        'mtaSts.hosting is not configured: this server serves no MTA-STS policy',
        'set mtaSts.hosting (listen, mode, mx) in the configuration, restart the server, then publish the records ' +
          'this command prints',
      );
    const rua = o.rua ?? [];
    const bad = rua.find((u) => !/^(mailto:[^\s,;!]+@[^\s,;!]+|https:\/\/[^\s,;!]+)$/.test(u));
    if (bad)
      throw new AdminError(`--rua "${bad}" is not a mailto: or https: URI`, 'e.g. --rua mailto:tlsrpt@example.com', 2);
    const [{ hostingRecords }, { readPemFile }] = await Promise.all([
      import('../mtasts/host.ts'),
      import('../tls/trust.ts'),
    ]);
    const r = hostingRecords(c, h, rua);
    const certs = c.tls.certificates.map((p, i) => ({
      index: i,
      file: p.cert,
      leaf: readPemFile(p.cert, 'fix tls.certificates')[0],
    }));
    const coverage = (name: string) => certs.find((x) => x.leaf.checkHost(name) !== undefined);
    const domains = r.domains.map((d) => {
      const hit = coverage(d.policyHost);
      return { ...d, certificate: hit ? { index: hit.index, file: hit.file } : null };
    });
    if (o.json) return printJson({ listen: h.listen, mode: h.mode, policy: r.policy, id: r.id, domains });
    say(
      `MTA-STS policy (mode ${h.mode}, id ${r.id}), served on ${h.listen.join(', ')} at ` +
        `https://mta-sts.<domain>/.well-known/mta-sts.txt:`,
    );
    for (const l of r.policy.trimEnd().split('\r\n')) say(`  ${l}`);
    for (const d of domains) {
      say('');
      say(`${d.domain}`);
      say(`  ${`${d.stsName}.`.padEnd(40)} IN TXT "${d.stsTxt}"`);
      say(`  ${`${d.tlsRptName}.`.padEnd(40)} IN TXT "${d.tlsRptTxt}"`);
      say(`  ${d.policyHost.padEnd(41)} must resolve to this server (A/AAAA or CNAME), port 443`);
      say(
        d.certificate
          ? `  certificate                               tls.certificates[${d.certificate.index}] ` +
              `(${d.certificate.file}) covers ${d.policyHost}`
          : `  WARNING no certificate in tls.certificates covers ${d.policyHost}: senders will refuse the policy ` +
              `(sts-webpki-invalid); add one from a public CA with that name`,
      );
    }
    if (h.mode === 'enforce')
      say(
        '\nmode enforce: every MX host of these domains must match an mx line and present a valid certificate for ' +
          'its name, or senders defer mail to you.',
      );
  });
}
