// The reliability proof (issue 5): each module proves one thing and reports figures.
// `npm run proof` runs every module at full size and writes docs/reliability.md from the run;
// `npm run proof:ci` runs the reduced size (.ci/run) and fails on any loss, crash, leak or weak
// TLS finding. Modules never talk to anything but loopback and bound every loop in count and time.

export type ProofSize = 'ci' | 'full';

export interface ProofContext {
  size: ProofSize;
  /**
   * The queue store of the gateways under test (`--store`, default sqlite) and how many gateway
   * nodes share it (`--nodes`, default 1; more than one needs postgres). Modules that test one
   * store only ignore them.
   */
  store: 'sqlite' | 'postgres';
  nodes: number;
  /** A fresh folder for this module's files (removed afterwards unless KEEP_PROOF=1). */
  workDir: string;
  /** Progress lines for the console (not the report). */
  log(line: string): void;
}

export interface ProofSection {
  /** Heading in docs/reliability.md, e.g. "Load with faults". */
  title: string;
  /** The exact command that reproduces this section's figures. */
  command: string;
  /** Markdown table of figures from the actual run. */
  table: { header: string[]; rows: (string | number)[][] };
  /** Short explanations under the table (what was measured, environment caveats). */
  notes?: string[];
  /** Reasons this section fails the proof (lost messages, crashes, leaked plaintext, weak TLS…). Empty = passed. */
  failures: string[];
}

export interface ProofModule {
  name: string;
  run(ctx: ProofContext): Promise<ProofSection[]>;
}
