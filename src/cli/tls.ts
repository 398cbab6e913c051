// Owns: `portcullis tls check --cert FILE` (a certificate before it is served or trusted) and
// `portcullis tls trust list` (what this node trusts). `tls check DESTINATION` is in connector.ts.
// The certificate modules are imported when a command runs.
import type { Command } from 'commander';
import type { Config } from '../config/load.ts';
import type { formatRevocation } from '../delivery/probe.ts';
import type { CertCheck } from '../tls/cert-check.ts';
import type { RevocationChecker } from '../tls/revocation.ts';
import type { TrustStore } from '../tls/trust.ts';
import { cliConfig, printJson, withConfig, type CommonOpts } from './context.ts';

export interface CertCheckOpts {
  cert: string;
  chain?: string;
  name?: string;
  json?: boolean;
}

function formatCertCheck(r: CertCheck, revocationLines: typeof formatRevocation): string {
  const i = r.info;
  const line = (label: string, value: string) => `  ${label.padEnd(13)}${value}`;
  const L = [
    `certificate ${i.file}`,
    line('subject', i.subject),
    line(
      'names (SAN)',
      (i.sanNames.join(', ') || '(none)') +
        (r.nameMatch ? `; covers ${r.nameMatch.required}: ${r.nameMatch.ok ? 'yes' : 'NO'}` : ''),
    ),
    line('issuer', i.issuer),
    line(
      'chain',
      i.chain.join('  ->  ') + (i.chainValid ? '  (valid, root in our trust store)' : `  (INVALID: ${i.chainError})`),
    ),
    ...i.certificates.map((c) =>
      line(
        c.role,
        `${c.subject}: key ${c.keyType} ${c.keyStrength}, signature ${c.signatureAlgorithm}, valid ${c.validFrom} ` +
          `to ${c.validTo}`,
      ),
    ),
    line('valid', `${i.validFrom} to ${i.validTo} (${i.daysLeft} days left)`),
    line('SHA-256', i.fingerprintSha256),
  ];
  L.push('  endpoints, tried from this node:');
  L.push(
    ...(r.revocation.certificates.length
      ? revocationLines(r.revocation, '  ')
      : ['  (no certificate to check: self-signed or a trust anchor)']),
  );
  for (const p of r.problems)
    L.push(line(p.level === 'fail' ? 'FAIL' : 'WARNING', `${p.certificate ? `${p.certificate}: ` : ''}${p.text}`));
  const fails = r.problems.filter((p) => p.level === 'fail').length;
  L.push(
    '',
    r.passes
      ? 'PASS: the certificate can be served and validated'
      : `FAIL: ${fails} problem(s) to fix before this certificate is served`,
  );
  return L.join('\n');
}

/** `tls check --cert FILE [--chain FILE] [--name HOST]`: no SMTP, only the certificate and its endpoints. */
export async function certCheck(
  tools: { trust: TrustStore; revocation: RevocationChecker },
  o: CertCheckOpts,
): Promise<void> {
  const [{ checkCertificate }, { formatRevocation }] = await Promise.all([
    import('../tls/cert-check.ts'),
    import('../delivery/probe.ts'),
  ]);
  const r = await checkCertificate({
    file: o.cert,
    ...(o.chain ? { chainFile: o.chain } : {}),
    ...(o.name ? { name: o.name } : {}),
    trust: tools.trust,
    revocation: tools.revocation,
  });
  if (o.json) printJson(r);
  else console.log(formatCertCheck(r, formatRevocation));
  if (!r.passes) process.exitCode = 1;
}

async function trustList(c: Config, now = Date.now()) {
  const [{ readCaFile, systemRoots }, { describeCa }] = await Promise.all([
    import('../tls/trust.ts'),
    import('../admin/ops/certificates.ts'),
  ]);
  const files = (list: readonly string[], key: string) =>
    list.map((file) => ({ file, certificates: readCaFile(file, key).map((x) => describeCa(x, now)) }));
  return {
    system: { enabled: c.tls.trust.system, certificates: c.tls.trust.system ? systemRoots().length : 0 },
    caFiles: files(c.tls.trust.caFiles, 'tls.trust.caFiles'),
    connectors: c.organizations
      .flatMap((o) => o.inboundConnectors)
      .filter((x) => x.trustedCAs.length || x.pinnedCertificates.length)
      .map((x) => ({
        organization: x.organization,
        connector: x.name,
        trustedCAs: files(x.trustedCAs, `the trustedCAs of connector "${x.name}"`),
        pinnedCertificates: x.pinnedCertificates,
      })),
  };
}

export function registerTrust(t: Command): void {
  const trust = t.command('trust').description('the certificates this node trusts');
  withConfig(
    trust
      .command('list')
      .description("system roots, tls.trust.caFiles and each inbound connector's trustedCAs and pinned certificates")
      .option('--json', 'machine-readable output'),
  ).action(async (o: CommonOpts) => {
    const l = await trustList(cliConfig(o));
    if (o.json) return printJson(l);
    const files = (fs: typeof l.caFiles, indent: string) =>
      fs.flatMap((f) => [
        `${indent}CA file ${f.file}: ${f.certificates.length} certificate(s)`,
        ...f.certificates.flatMap((x) => [
          `${indent}  ${x.subject}`,
          `${indent}    SHA-256 ${x.fingerprintSha256}, valid ${x.validFrom} to ${x.validTo}`,
          ...x.warnings.map((w) => `${indent}    WARNING ${w}`),
        ]),
      ]);
    console.log(
      [
        'trust store (tls.trust), used for partner certificates in both directions:',
        `  system roots: ` +
          (l.system.enabled
            ? `${l.system.certificates} certificates (the list shipped with Node.js)`
            : 'not used (tls.trust.system: false)'),
        ...(l.caFiles.length ? files(l.caFiles, '  ') : ['  no CA files (tls.trust.caFiles)']),
        ...l.connectors.flatMap((x) => [
          `inbound connector "${x.connector}" (organization ${x.organization}), for its client certificates only:`,
          ...files(x.trustedCAs, '  '),
          ...x.pinnedCertificates.map((p) => `  pinned certificate SHA-256 ${p}`),
        ]),
      ].join('\n'),
    );
  });
}
