// Owns: what every CLI command shares: the -c option, loading the config, opening the store.
// The configuration and store modules (zod, yaml, SQLite) are loaded by withConfig()'s preAction
// hook, only when a command that takes -c runs: `--help` and usage errors load none of them.
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/load.ts';
import type { Store } from '../store/types.ts';

interface Runtime {
  config: typeof import('../config/load.ts');
  sqlite: typeof import('../store/sqlite/index.ts');
  parseYaml: typeof import('yaml').parse;
}
let runtime: Runtime | undefined;

async function loadRuntime(): Promise<void> {
  const [config, sqlite, yaml] = await Promise.all([import('../config/load.ts'), import('../store/sqlite/index.ts'), import('yaml')]);
  runtime ??= { config, sqlite, parseYaml: yaml.parse };
}

function rt(): Runtime {
  if (!runtime) throw new Error('a command that reads the configuration must be declared with withConfig()');
  return runtime;
}

export interface CommonOpts { config?: string; json?: boolean }

export function withConfig(cmd: Command): Command {
  return cmd.option('-c, --config <file>', 'configuration file (default ./portcullis.yaml or $PORTCULLIS_CONFIG)').hook('preAction', loadRuntime);
}

export function configTarget(o: CommonOpts): { configFile: string; allowDefaults: boolean } {
  const explicit = o.config ?? process.env.PORTCULLIS_CONFIG;
  return { configFile: explicit || rt().config.defaultConfigPath(), allowDefaults: !explicit };
}

export function cliConfig(o: CommonOpts): Config {
  const t = configTarget(o);
  return rt().config.loadConfig(t.configFile, t.allowDefaults);
}

export function cliStore(c: Config): Store {
  return new (rt().sqlite.SqliteStore)(c.dataDir);
}

export function printJson(v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 2) + '\n');
}

/**
 * The dataDir of the server that runs with this config file, even when the file is now invalid
 * (so `config reload` can still reach the server and report its refusal).
 */
export function serverDataDir(o: CommonOpts): string {
  try { return cliConfig(o).dataDir; } catch { /* fall through: best-effort read */ }
  const t = configTarget(o);
  const abs = path.resolve(t.configFile);
  try {
    const doc = rt().parseYaml(readFileSync(abs, 'utf8')) as { dataDir?: unknown } | null;
    return path.resolve(path.dirname(abs), typeof doc?.dataDir === 'string' ? doc.dataDir : String(rt().config.embeddedDefaults.dataDir));
  } catch {
    return path.resolve(String(rt().config.embeddedDefaults.dataDir));
  }
}
