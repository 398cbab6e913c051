#!/usr/bin/env node
// Entry point: runs the compiled CLI, dist/cli/main.js (`npm run build`; `npm ci` builds through
// `prepare`). Never runs a stale build: when a file in src/ changed after the last build (sources
// edited, pulled or checked out), it runs the sources through tsx if tsx is installed (a dev
// dependency, so: a checkout) and otherwise exits with status 1 naming the file and the fix. An
// install without src/ runs dist/ as it is. docs/architecture.md ("Build") explains the choice.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const src = new URL('../src/', import.meta.url);
const dist = new URL('../dist/', import.meta.url);

/** Why dist/ must not be run, or null when it is current. `npm run build` (tsc -b) rewrites
 *  dist/.tsbuildinfo on every build that finds something changed, so a source file newer than it
 *  has not been compiled. */
function staleness() {
  if (!existsSync(new URL('cli/main.js', dist)))
    return 'dist/cli/main.js does not exist (the sources were never built)';
  let files;
  try {
    files = readdirSync(src, { recursive: true });
  } catch {
    return null;
  }
  let built;
  try {
    built = statSync(new URL('.tsbuildinfo', dist)).mtimeMs;
  } catch {
    return 'dist/.tsbuildinfo does not exist (dist/ was not made by `npm run build`)';
  }
  for (const f of files) {
    if (f.endsWith('.ts') && statSync(new URL(f, src)).mtimeMs > built) return `src/${f} changed after the last build`;
  }
  return null;
}

const why = staleness();
if (why === null) {
  await import('../dist/cli/main.js');
} else {
  let tsx;
  try {
    tsx = await import('tsx/esm/api');
  } catch (e) {
    if (e?.code !== 'ERR_MODULE_NOT_FOUND') throw e;
    console.error(
      `portcullis: cannot start: ${why}\n  fix: run \`npm run build\` in ${fileURLToPath(new URL('..', import.meta.url))}`,
    );
    process.exit(1);
  }
  if (process.stderr.isTTY)
    console.error(`portcullis: ${why}: running the sources through tsx (slow start; \`npm run build\` makes it fast)`);
  tsx.register();
  await import('../src/cli/main.ts');
}
