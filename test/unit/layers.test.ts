// The module layout holds: imports point one way (no cycles, type imports included), the leaves
// import no layer above them, policy/ decides without inbound/, and the CLI reaches the store
// only through store/open.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

const SRC = path.resolve(import.meta.dirname, '../../src');

function imports(): Map<string, string[]> {
  const files = readdirSync(SRC, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts'));
  const graph = new Map<string, string[]>();
  for (const f of files) {
    const text = readFileSync(path.join(SRC, f), 'utf8');
    const deps = [...text.matchAll(/^(?:import|export)\b[^;]*?\bfrom\s+'(\.[^']+)'|^import\s+'(\.[^']+)'/gm)].map((m) =>
      path.normalize(path.join(path.dirname(f), m[1] ?? m[2])),
    );
    graph.set(path.normalize(f), deps);
  }
  return graph;
}

const graph = imports();
const layer = (f: string) => (f.includes(path.sep) ? f.slice(0, f.indexOf(path.sep)) : f);

test('no import cycles', () => {
  const state = new Map<string, 'open' | 'done'>();
  const cycles: string[] = [];
  const visit = (f: string, trail: string[]) => {
    state.set(f, 'open');
    for (const d of graph.get(f) ?? []) {
      if (state.get(d) === 'open') cycles.push([...trail.slice(trail.indexOf(d)), d].join(' -> '));
      else if (!state.has(d)) visit(d, [...trail, d]);
    }
    state.set(f, 'done');
  };
  for (const f of graph.keys()) if (!state.has(f)) visit(f, [f]);
  assert.deepEqual(cycles, []);
});

test('leaves import no layer above them; policy/ does not import inbound/; the CLI opens the store through store/open.ts', () => {
  const LEAVES = new Set(['config', 'tls', 'dns', 'util', 'errors.ts', 'events.ts', 'mailbox.ts']);
  const problems: string[] = [];
  for (const [f, deps] of graph) {
    for (const d of deps) {
      if (LEAVES.has(layer(f)) && !LEAVES.has(layer(d))) problems.push(`${f} imports ${d}`);
      if (layer(f) === 'policy' && layer(d) === 'inbound') problems.push(`${f} imports ${d}`);
      if (layer(f) === 'cli' && layer(d) === 'store' && !['store/open.ts', 'store/types.ts'].includes(d))
        problems.push(`${f} imports ${d}`);
    }
  }
  assert.deepEqual(problems, []);
});
