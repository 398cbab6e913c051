// Owns: what every CLI command shares: the -c option, loading the config, opening the store.
// The configuration and store modules (zod, yaml, SQLite) are loaded by withConfig()'s preAction
// hook, only when a command that takes -c runs: `--help` and usage errors load none of them.
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Config } from '../config/load.ts';
import type { Store } from '../store/types.ts';

interface Runtime {
  config: typeof import('../config/load.ts');
  store: typeof import('../store/open.ts');
  parseYaml: typeof import('yaml').parse;
}
let runtime: Runtime | undefined;

async function loadRuntime(): Promise<void> {
  const [config, store, yaml] = await Promise.all([
    import('../config/load.ts'),
    import('../store/open.ts'),
    import('yaml'),
  ]);
  runtime ??= { config, store, parseYaml: yaml.parse };
}

function rt(): Runtime {
  if (!runtime) throw new Error('a command that reads the configuration must be declared with withConfig()');
  return runtime;
}

export interface CommonOpts {
  config?: string;
  json?: boolean;
}

export function withConfig(cmd: Command): Command {
  return cmd
    .option(
      '-c, --config <file>',
      'configuration file (default $PORTCULLIS_CONFIG, else ./portcullis.yaml, else /etc/portcullis/portcullis.yaml)',
    )
    .hook('preAction', loadRuntime);
}

export function configTarget(o: CommonOpts): { configFile: string; allowDefaults: boolean } {
  const explicit = o.config ?? process.env.PORTCULLIS_CONFIG;
  return { configFile: explicit || rt().config.defaultConfigPath(), allowDefaults: !explicit };
}

export function cliConfig(o: CommonOpts): Config {
  const t = configTarget(o);
  return rt().config.loadConfig(t.configFile, t.allowDefaults);
}

/** The queue of the server that runs with this config: read-only unless `write`; never created here. */
export function cliStore(c: Config, mode: 'read' | 'write' = 'read'): Promise<Store> {
  return rt().store.openStore(c, mode === 'read' ? { readonly: true } : { existing: true });
}

export function printJson(v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n');
}

/**
 * The dataDir of the server that runs with this config file, even when the file is now invalid
 * (so `config reload` can still reach the server and report its refusal).
 */
export function serverDataDir(o: CommonOpts): string {
  try {
    return cliConfig(o).dataDir;
  } catch {
    /* fall through: best-effort read */
  }
  const t = configTarget(o);
  const abs = path.resolve(t.configFile);
  try {
    const doc = rt().parseYaml(readFileSync(abs, 'utf8')) as { dataDir?: unknown } | null;
    return path.resolve(
      path.dirname(abs),
      typeof doc?.dataDir === 'string' ? doc.dataDir : String(rt().config.embeddedDefaults.dataDir),
    );
  } catch {
    return path.resolve(String(rt().config.embeddedDefaults.dataDir));
  }
}

/** Who runs this command, for the trace and the audit log ("deleted by administrator …"). */
export function administrator(): string {
  let user: string;
  try {
    user = os.userInfo().username;
  } catch {
    user = process.env.USER ?? `uid ${process.getuid?.() ?? '?'}`;
  }
  const sudo = process.env.SUDO_USER;
  return sudo && sudo !== user ? `${sudo} (as ${user} via sudo)` : user;
}
