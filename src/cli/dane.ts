// Owns: `portcullis dane tlsa` (the TLSA records to publish for our certificates) and
// `portcullis dane check DOMAIN` (whether the published records match the current and staged
// certificates). The work is in dane-records.ts, imported when a command runs.
import type { Command } from 'commander';
import { cliConfig, printJson, withConfig, type CommonOpts } from './context.ts';
import { say } from './terminal.ts';

interface DaneOpts extends CommonOpts {
  next?: string;
}

export function registerDane(program: Command): void {
  const d = program
    .command('dane')
    .description('DANE for our own domains: the TLSA records to publish, and whether the published ones match');

  withConfig(
    d
      .command('tlsa')
      .description(
        'the TLSA records to publish for each certificate we serve (3 1 1 current and staged next key, 2 1 1 ' +
          'issuing CA)',
      )
      .option(
        '--next <file>',
        'a staged next certificate (PEM) for the first certificate (instead of tls.certificates[0].next)',
      )
      .option('--json', 'machine-readable output'),
  ).action(async (o: DaneOpts) => {
    const c = cliConfig(o);
    const { publishRecords, formatPublish } = await import('./dane-records.ts');
    const list = publishRecords(c, o.next);
    if (o.json) return printJson(list);
    say(formatPublish(list));
  });

  withConfig(
    d
      .command('check')
      .argument('<domain>', 'one of our mail domains')
      .description(
        "look up its MX hosts' TLSA records through dns.servers and check the current and staged certificates " +
          'against them',
      )
      .option(
        '--next <file>',
        'a staged next certificate (PEM) for the first certificate (instead of tls.certificates[0].next)',
      )
      .option('--json', 'machine-readable output'),
  ).action(async (domain: string, o: DaneOpts) => {
    const c = cliConfig(o);
    const { checkDomain, formatCheck } = await import('./dane-records.ts');
    const r = await checkDomain(c, domain.toLowerCase().replace(/\.$/, ''), o.next);
    if (o.json) printJson(r);
    else say(formatCheck(r));
    if (!r.ok) process.exitCode = 1;
  });
}
