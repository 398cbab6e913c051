// Owns: how the CLI shows a point in time: ISO 8601 in UTC, to the second ("2026-11-27T15:00:00Z").
export const isoSeconds = (t: number | Date): string => new Date(t).toISOString().replace(/\.\d{3}Z$/, 'Z');
