// Owns: `portcullis admin token create|list|revoke`: the bearer tokens of the admin centre (its
// API, web UI and /metrics). Works against the dataDir while the server runs; token changes are
// written to the audit log with the operating-system user who made them.
// Promise: a token's secret is printed once, by `create`, and is not stored: only its hash is.
import type { Command } from 'commander';
import { AdminError } from '../errors.ts';
import type { AdminToken } from '../store/types.ts';
import { isoSeconds as iso } from '../util/time.ts';
import { administrator, cliConfig, cliStore, printJson, withConfig, type CommonOpts } from './context.ts';
import { say } from './terminal.ts';

const scope = (t: AdminToken) => (t.org === null ? 'global (every organization)' : `organization ${t.org}`);

export function registerAdmin(program: Command): void {
  const token = program
    .command('admin')
    .description('the admin centre (HTTPS API, web UI, metrics)')
    .command('token')
    .description('bearer tokens of the admin centre');

  withConfig(
    token
      .command('create')
      .description('make a token; its secret is printed once and only its hash is kept')
      .requiredOption('--name <name>', 'a name for the token (who or what uses it), unique among active tokens')
      .option('--org <organization>', 'limit the token to this organization (default: global, every organization)')
      .option('--json', 'machine-readable output'),
  ).action(async (o: CommonOpts & { name: string; org?: string }) => {
    const c = cliConfig(o);
    if (o.org !== undefined && !c.organizations.some((x) => x.name === o.org)) {
      throw new AdminError(
        `no organization named "${o.org}"`,
        `use one of: ${c.organizations.map((x) => x.name).join(', ')}`,
      );
    }
    const { createToken } = await import('../admin/tokens.ts');
    const store = await cliStore(c, 'write');
    const by = administrator();
    try {
      const { token: t, secret } = await createToken(store, { name: o.name, org: o.org ?? null, by });
      await store.appendAudit({
        ts: t.createdAt,
        actor: by,
        org: null,
        action: 'token.create',
        target: `token ${t.id} "${t.name}"`,
        ...(t.org ? { targetOrg: t.org } : {}),
        result: 'ok',
      });
      if (o.json) return printJson({ ...t, token: secret });
      say(`token "${t.name}" (id ${t.id}), ${scope(t)}:`);
      process.stdout.write(`${secret}\n`);
      say(
        `Keep it now: it is not shown again. Send it as "Authorization: Bearer <token>" to the admin centre ` +
          `(admin.listen ${c.admin.listen}), or paste it into the web UI's sign-in.`,
      );
    } finally {
      await store.close();
    }
  });

  withConfig(
    token
      .command('list')
      .description('every token (never the secrets), revoked ones included')
      .option('--json', 'machine-readable output'),
  ).action(async (o: CommonOpts) => {
    const store = await cliStore(cliConfig(o));
    const all = await store.tokens();
    await store.close();
    if (o.json) return printJson(all);
    if (!all.length) {
      say('no tokens: make one with `portcullis admin token create --name NAME`');
      return;
    }
    say('ID            NAME                 SCOPE                          CREATED               BY        STATE');
    for (const t of all) {
      say(
        `${t.id.padEnd(13)} ${t.name.padEnd(20)} ${scope(t).padEnd(30)} ${iso(t.createdAt)}  ` +
          `${t.createdBy.padEnd(9)} ${t.revokedAt === undefined ? 'active' : `revoked ${iso(t.revokedAt)}`}`,
      );
    }
  });

  withConfig(
    token
      .command('revoke')
      .argument('<token>', 'the name or id of an active token')
      .description('revoke a token: the next request with it is refused'),
  ).action(async (key: string, o: CommonOpts) => {
    const store = await cliStore(cliConfig(o), 'write');
    const by = administrator();
    try {
      const t = await store.revokeToken(key);
      if (!t)
        throw new AdminError(`no active token named or numbered "${key}"`, 'see `portcullis admin token list`', 1);
      await store.appendAudit({
        ts: t.revokedAt ?? Date.now(),
        actor: by,
        org: null,
        action: 'token.revoke',
        target: `token ${t.id} "${t.name}"`,
        ...(t.org ? { targetOrg: t.org } : {}),
        result: 'ok',
      });
      say(`token "${t.name}" (id ${t.id}, ${scope(t)}) revoked`);
    } finally {
      await store.close();
    }
  });
}
