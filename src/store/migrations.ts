// Owns: what a schema migration is, and the report of which are applied, for both backends
// (`portcullis store migrate --status`). Each backend keeps its own list (store/*/schema.ts);
// version N is the N-th entry. Migrations are applied at start; the command applies on demand.
export interface Migration {
  /** What it changes, for the status report. */
  name: string;
  sql: string;
}

export interface MigrationState {
  version: number;
  name: string;
  applied: boolean;
  /** When it was applied, where the backend records it (PostgreSQL). */
  appliedAt?: string;
}

export interface MigrationStatus {
  store: 'sqlite' | 'postgres';
  /** The queue file, or the URL without its password. */
  location: string;
  /** Versions applied by a newer Portcullis than this one (this one refuses to start on them). */
  unknown: number[];
  migrations: MigrationState[];
}
