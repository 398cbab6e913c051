// Owns: turning a caught value (`catch (e)`: anything may be thrown) into text. One definition, so
// every message names the cause the same way and nothing prints "undefined".
// Promise: never throws, whatever was thrown.

/** The message of an Error, or the thrown value as text. For messages shown to administrators. */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The stack of an Error (message included), or the thrown value as text. For internal-error logs only. */
export function errorDetail(e: unknown): string {
  return e instanceof Error ? (e.stack ?? e.message) : String(e);
}
