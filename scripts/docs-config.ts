// Owns: the key tables of docs/configuration.md, generated from the configuration schema
// (src/config/schema.ts): every key's type, default and meaning (its description there).
// `npm run docs:config` rewrites the tables in place; everything outside the marker comments
// (prose, walkthroughs, examples) is kept as written. Promises: it writes nothing and fails,
// naming every such key, when a key has no description, and fails naming the marker when the
// page's markers are broken; test/unit/config/docs-config.test.ts fails when the page is stale.
//
// A table is `<!-- config-keys SECTION -->` … `<!-- /config-keys -->`. SECTION is a key path
// (`smtp`, `organizations[].inboundConnectors[]`) or `*`; each key goes to the table of the
// longest SECTION it lies under, `*` taking every key no other table claims. Keys are shown in
// full, or relative to a SECTION that ends in `[]` (one item of a list).
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { configSchema } from '../src/config/schema.ts';

export const DOC_FILE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../docs/configuration.md');

interface JsonSchema {
  type?: string;
  description?: string;
  valueType?: string;
  defaultText?: string;
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchema[];
  items?: JsonSchema;
  properties?: Record<string, JsonSchema>;
  required?: string[];
}

export interface KeyRow {
  key: string;
  type: string;
  default: string;
  meaning: string;
}

const isObject = (s: JsonSchema) => s.type === 'object' && !!s.properties;
const code = (v: unknown) =>
  `\`${Array.isArray(v) ? `[${v.map((x) => JSON.stringify(x)).join(', ')}]` : typeof v === 'string' ? v : JSON.stringify(v)}\``;

function plural(label: string): string {
  if (!/^[A-Za-z0-9 -]+$/.test(label)) return label;
  return label.endsWith('ss') ? `${label}es` : label.endsWith('s') ? label : `${label}s`;
}

function typeLabel(s: JsonSchema): string {
  if (s.valueType) return s.valueType;
  if (s.enum) return s.enum.map((v) => `\`${String(v)}\``).join(' ');
  if (s.const !== undefined) return `\`${String(s.const)}\``;
  if (s.anyOf) return s.anyOf.map(typeLabel).join(' or ');
  if (s.type === 'array') return s.items ? `list of ${plural(typeLabel(s.items))}` : 'list';
  return (
    ({ string: 'text', integer: 'integer', number: 'number', boolean: 'boolean' } as Record<string, string>)[
      s.type ?? ''
    ] ?? 'value'
  );
}

/** A readable size for round defaults: seconds as hours or days, bytes as KiB or MiB. */
function unitNote(s: JsonSchema, v: unknown): string {
  if (typeof v !== 'number' || v <= 0) return '';
  if (s.valueType === 'seconds' && v >= 86_400 && v % 86_400 === 0)
    return ` (${v / 86_400} day${v === 86_400 ? '' : 's'})`;
  if (s.valueType === 'seconds' && v >= 3600 && v % 3600 === 0) return ` (${v / 3600} h)`;
  if (s.valueType === 'bytes' && v >= 1 << 20 && v % (1 << 20) === 0) return ` (${v / (1 << 20)} MiB)`;
  if (s.valueType === 'bytes' && v >= 1024 && v % 1024 === 0) return ` (${v / 1024} KiB)`;
  return '';
}

function defaultLabel(s: JsonSchema, required: boolean): string {
  if (s.defaultText) return s.defaultText;
  if (s.default !== undefined) return `${code(s.default)}${unitNote(s, s.default)}`;
  return required ? 'required' : '—';
}

/**
 * One row per documented key, in schema order. A key with a description is one row (a list of
 * objects too, e.g. `tls.certificates`); a key that takes one of several forms, one of them an
 * object (`runAs`: `root` or `{user, group}`), is followed by that object's keys; an object or a
 * list of objects without one is opened and its keys are listed; any other key without one is an
 * error. Throws naming every such key.
 */
export function configKeyRows(schema: z.ZodType = configSchema): KeyRow[] {
  const rows: KeyRow[] = [];
  const missing: string[] = [];
  const walk = (obj: JsonSchema, prefix: string) => {
    for (const [name, s] of Object.entries(obj.properties ?? {})) {
      const key = prefix ? `${prefix}.${name}` : name;
      if (s.description) {
        rows.push({
          key,
          type: typeLabel(s),
          default: defaultLabel(s, !!obj.required?.includes(name)),
          meaning: s.description,
        });
        for (const form of s.anyOf ?? []) if (isObject(form)) walk(form, key);
      } else if (isObject(s)) {
        walk(s, key);
      } else if (s.type === 'array' && s.items && isObject(s.items)) {
        walk(s.items, `${key}[]`);
      } else {
        missing.push(key);
      }
    }
  };
  walk(z.toJSONSchema(schema, { io: 'input' }) as JsonSchema, '');
  if (missing.length) {
    throw new Error(
      `configuration key(s) without a description: ${missing.join(', ')}\n` +
        "  fix: give each one a .describe('…') (or .meta({ description })) in src/config/schema.ts: the text is its row in docs/configuration.md",
    );
  }
  return rows;
}

const cell = (t: string) => t.replace(/\s*\n\s*/g, ' ').replace(/\|/g, '\\|');
const BEGIN = /^<!-- config-keys (\S+) -->$/;
const END = '<!-- /config-keys -->';

/** Whether `key` lies under `section`: `organizations` holds `organizations[].name`, not `organizationsX`. */
function under(key: string, section: string): boolean {
  return section === '*' || key === section || (key.startsWith(section) && /^[.[]/.test(key.slice(section.length)));
}

function renderTable(rows: KeyRow[], section: string): string[] {
  const shown = (k: string) => (section.endsWith('[]') ? k.slice(section.length + 1) : k);
  return [
    '| key | type | default | meaning |',
    '|---|---|---|---|',
    ...rows.map((r) => `| \`${shown(r.key)}\` | ${cell(r.type)} | ${cell(r.default)} | ${cell(r.meaning)} |`),
  ];
}

/** `page` with every marked table regenerated from `schema`; throws when markers are broken or a table would be empty. */
export function renderConfigPage(page: string, schema: z.ZodType = configSchema): string {
  const rows = configKeyRows(schema);
  const lines = page.split('\n');
  const sections: { section: string; begin: number; end: number }[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = BEGIN.exec(lines[i].trim());
    if (lines[i].trim() === END)
      throw new Error(`docs/configuration.md line ${i + 1}: ${END} without a matching <!-- config-keys SECTION -->`);
    if (!m) continue;
    const end = lines.findIndex((l, j) => j > i && (l.trim() === END || BEGIN.test(l.trim())));
    if (end < 0 || lines[end].trim() !== END)
      throw new Error(`docs/configuration.md line ${i + 1}: <!-- config-keys ${m[1]} --> is not closed by ${END}`);
    if (sections.some((s) => s.section === m[1]))
      throw new Error(`docs/configuration.md line ${i + 1}: a second table for section ${m[1]}`);
    sections.push({ section: m[1], begin: i, end });
    i = end;
  }
  if (!sections.length) throw new Error('docs/configuration.md has no <!-- config-keys SECTION --> markers');
  const rank = (s: { section: string }) => (s.section === '*' ? -1 : s.section.length);
  const home = (key: string) =>
    sections
      .filter((s) => under(key, s.section))
      .reduce<(typeof sections)[number] | undefined>(
        (best, s) => (!best || rank(s) > rank(best) ? s : best),
        undefined,
      );
  const unplaced = rows.filter((r) => !home(r.key)).map((r) => r.key);
  if (unplaced.length)
    throw new Error(
      `docs/configuration.md has no table for: ${unplaced.join(', ')} (add a <!-- config-keys * --> table, or one for their section)`,
    );
  const out: string[] = [];
  let at = 0;
  for (const s of sections) {
    const mine = rows.filter((r) => home(r.key) === s);
    if (!mine.length)
      throw new Error(
        `docs/configuration.md: no configuration key belongs in the table <!-- config-keys ${s.section} -->`,
      );
    out.push(...lines.slice(at, s.begin + 1), ...renderTable(mine, s.section));
    at = s.end;
  }
  out.push(...lines.slice(at));
  return out.join('\n');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const before = readFileSync(DOC_FILE, 'utf8');
    const after = renderConfigPage(before);
    if (after !== before) writeFileSync(DOC_FILE, after);
    console.log(
      `docs/configuration.md ${after === before ? 'is up to date' : 'key tables rewritten from src/config/schema.ts'} (${configKeyRows().length} keys)`,
    );
  } catch (e) {
    console.error(`docs:config: ${(e as Error).message}`);
    process.exit(1);
  }
}
