// Owns: identifiers. Queue ids are time-ordered (sortable) and unguessable.
import { randomBytes } from 'node:crypto';

const B32 = '0123456789BCDFGHJKLMNPQRSTVWXYZ'; // no vowels: ids never spell words

function enc(n: number, len: number): string {
  let s = '';
  for (let i = 0; i < len; i++) { s = B32[n % 31] + s; n = Math.floor(n / 31); }
  return s;
}

let last = 0; let seq = 0;

/** e.g. "4K7RZQ1V2M9XJ8P3" (9 chars of time, 7 random). */
export function queueId(now = Date.now()): string {
  if (now === last) seq++; else { last = now; seq = 0; }
  const r = randomBytes(5).readUIntBE(0, 5);
  return enc(now, 9) + enc((r + seq) % 31 ** 7, 7);
}

export function sessionId(): string {
  return randomBytes(6).toString('base64url');
}
