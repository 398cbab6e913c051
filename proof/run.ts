// Runs the proof modules, writes docs/reliability.md (full size) and exits non-zero on any failure.
// Usage: node --import tsx proof/run.ts [--size ci|full] [--only name,name] [--no-write]
//        [--store sqlite|postgres] [--nodes N] (the faults module: N gateway nodes on one store)
//        [--update-doc] (full size with --only/--store: replace those sections of docs/reliability.md,
//        or add them, and leave the rest as the last whole run wrote it)
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ProofModule, ProofSection, ProofSize } from './types.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/**
 * The modules in order. The full proof runs faults three times: on SQLite (one node), with three
 * nodes on one PostgreSQL, and against `workers: 2` (faults-workers); with --only or --store, each module runs once, on the store given.
 */
const MODULES: { name: string; store?: 'postgres'; nodes?: number }[] = [
  { name: 'faults' },
  { name: 'faults', store: 'postgres', nodes: 3 },
  { name: 'faults-workers' },
  { name: 'fuzz' },
  { name: 'tls-grade' },
  { name: 'downgrade' },
  { name: 'resources' },
];

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

/** A section as the document shows it: title, command, table, notes, failures. */
function sectionText(s: ProofSection): string[] {
  return [
    `## ${s.title}`,
    '',
    `Command: \`${s.command}\``,
    '',
    table(s),
    '',
    ...(s.notes ?? []).map((n) => `- ${n}`),
    ...(s.failures.length ? ['', `**FAILED:** ${s.failures.join('; ')}`] : []),
    '',
  ];
}

/**
 * Replace the given sections in docs/reliability.md (same title), or add them at the end; each
 * says when it was generated, since the document's header dates the last whole run.
 */
function updateDoc(sections: ProofSection[], started: Date): void {
  const file = path.join(ROOT, 'docs/reliability.md');
  let doc = readFileSync(file, 'utf8');
  for (const s of sections) {
    const text = sectionText(s);
    text.splice(2, 0, `Generated on its own on ${started.toISOString()} (\`--update-doc\`).`, '');
    const block = text.join('\n');
    const at = doc.indexOf(`\n## ${s.title}\n`);
    if (at < 0) {
      doc = `${doc.trimEnd()}\n\n${block}`;
      continue;
    }
    const next = doc.indexOf('\n## ', at + 1);
    doc = `${doc.slice(0, at + 1)}${block}${next < 0 ? '' : doc.slice(next)}`;
  }
  writeFileSync(file, `${doc.trimEnd()}\n`);
  console.log(`updated ${sections.length} section(s) of docs/reliability.md`);
}

function table(s: ProofSection): string {
  const h = s.table.header;
  return [
    `| ${h.join(' | ')} |`,
    `|${h.map(() => '---').join('|')}|`,
    ...s.table.rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}

async function main(): Promise<void> {
  const size = (arg('size') ?? 'full') as ProofSize;
  const only = arg('only')?.split(',');
  const given = arg('store') !== undefined || arg('nodes') !== undefined;
  const store = (arg('store') ?? 'sqlite') as 'sqlite' | 'postgres';
  const nodes = Number(arg('nodes') ?? 1);
  if (store !== 'sqlite' && store !== 'postgres') throw new Error('--store must be sqlite or postgres');
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 5) throw new Error('--nodes must be 1 to 5');
  if (nodes > 1 && store !== 'postgres') throw new Error('--nodes above 1 needs --store postgres (a shared store)');
  const sections: ProofSection[] = [];
  const started = new Date();
  for (const m of MODULES) {
    const name = m.name;
    if (only && !only.includes(name)) continue;
    if (m.store && (only || given)) continue;
    const run = m.store ? { store: m.store, nodes: m.nodes ?? 1 } : { store, nodes };
    const mod = (await import(`./${name}.ts`)).default as ProofModule;
    const workDir = mkdtempSync(path.join(os.tmpdir(), `proof-${name}-`));
    const t0 = Date.now();
    console.log(`== proof: ${name} (${size}${run.store === 'postgres' ? `, ${run.nodes} node(s) on PostgreSQL` : ''})`);
    try {
      sections.push(...(await mod.run({ size, ...run, workDir, log: (l) => console.log(`   ${name}: ${l}`) })));
    } catch (e) {
      sections.push({
        title: name,
        command: `npm run proof -- --only ${name}${run.store === 'postgres' ? ` --store postgres --nodes ${run.nodes}` : ''}`,
        table: { header: ['error'], rows: [[String((e as Error)?.message ?? e)]] },
        failures: [`module ${name} crashed: ${(e as Error)?.stack ?? e}`],
      });
    } finally {
      if (process.env.KEEP_PROOF !== '1') rmSync(workDir, { recursive: true, force: true });
    }
    console.log(`== proof: ${name} done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  if (size === 'full' && process.argv.includes('--update-doc') && (only || given)) updateDoc(sections, started);
  const failed = sections.filter((s) => s.failures.length);
  for (const s of failed) for (const f of s.failures) console.log(`!! ${s.title}: ${f}`);
  if (size === 'full' && !process.argv.includes('--no-write') && !only && !given) {
    const doc = [
      '# Reliability and security proof',
      '',
      `Generated by \`npm run proof\` on ${started.toISOString()} (${os.cpus().length} cores, ${os.cpus()[0]?.model ?? 'unknown CPU'}, Node ${process.version}). ` +
        'Every figure below comes from that run; each section names the command that reproduces it. `npm run proof:ci` runs the same modules at a reduced size in CI and fails on any loss, crash, leak or weak TLS finding.',
      '',
      ...sections.flatMap(sectionText),
    ].join('\n');
    writeFileSync(path.join(ROOT, 'docs/reliability.md'), doc);
    console.log('wrote docs/reliability.md');
  }
  console.log(`proof: ${sections.length - failed.length} passed, ${failed.length} failed`);
  process.exitCode = failed.length ? 1 : 0;
}

void main();
