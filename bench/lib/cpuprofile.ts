// Summarise a V8 .cpuprofile (as written by `node --cpu-prof`): self time per function and per
// source area, so the benchmark can print where the gateway spends its CPU.
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface HotSpot {
  name: string;
  selfMs: number;
  pct: number;
}
export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  functions: HotSpot[];
  areas: HotSpot[];
}

/** Where a frame belongs: our modules by folder, node internals by subsystem, packages by name. */
function area(url: string, fn: string): string {
  if (!url) return fn.startsWith('(') ? fn : '(native/builtin)';
  const u = url.replace(/^file:\/\//, '');
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(u);
  if (pkg) return `pkg ${pkg[1]}`;
  const src = /\/(?:src|dist)\/(.+?)\.[jt]s$/.exec(u); // dist/x.js is the compiled src/x.ts
  if (src) return `src/${src[1]}.ts`;
  const internal = /^node:internal\/(?:[^/]+\/)?([^/]+?)(?:\.js)?$/.exec(u) ?? /^node:(.+)$/.exec(u);
  if (internal) return `node:${/^node:internal\/([^/]+)/.exec(u)?.[1] ?? internal[1]}`;
  return path.basename(u);
}

export function summarizeProfile(file: string, top = 20): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as Profile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++)
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  const fns = new Map<string, number>();
  const areas = new Map<string, number>();
  let total = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const n = byId.get(id)!;
    const { functionName, url, lineNumber } = n.callFrame;
    if (functionName === '(idle)') {
      idle += us;
      continue;
    }
    total += us;
    // Our code runs compiled (dist/x.js): line numbers refer to generated code, so name the source file only.
    const file = (
      url.includes('/node_modules/') ? url : url.replace(/^file:\/\/.*?\/dist\/(.+)\.js$/, 'src/$1.ts')
    ).replace(/^file:\/\/.*?\/(src|node_modules)\//, '$1/');
    const where = !url ? '' : /^src\//.test(file) ? file : `${file}:${lineNumber + 1}`;
    const key = `${functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
    fns.set(key, (fns.get(key) ?? 0) + us);
    const a = area(url, functionName);
    areas.set(a, (areas.get(a) ?? 0) + us);
  }
  const rank = (m: Map<string, number>): HotSpot[] =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, selfMs: Math.round(us / 100) / 10, pct: Math.round((us / total) * 1000) / 10 }));
  return {
    totalMs: Math.round(total / 1000),
    idleMs: Math.round(idle / 1000),
    functions: rank(fns),
    areas: rank(areas),
  };
}
