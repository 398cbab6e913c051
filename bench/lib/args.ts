// Command-line numbers of the benchmarks: one rule for all of them.

/** `--name`'s value as an integer in min..max, or an error that says so (with what was given). */
export function intArg(name: string, v: string | undefined, min: number, max: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max)
    throw new Error(`--${name} must be an integer in ${min}..${max} (got ${v})`);
  return n;
}
