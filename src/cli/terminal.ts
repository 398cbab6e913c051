// Owns: writing human-readable CLI output to a terminal. Much of what the CLI shows comes from
// outside (HELO names, addresses, Message-IDs, peer replies, certificate fields): control
// characters in it must not drive the admin's terminal (colours, titles, clearing the screen,
// hiding text) or reorder what is shown.
// Promise: what `say` / `warn` write contains no C0 or C1 control character, DEL, or bidirectional
// or line-separator formatting character, except the line breaks of the output itself; each such
// character is shown as a visible escape (\x1b, \u202e). JSON output (--json) does not go through here.

// C0 (but LF, see below), DEL, C1; Unicode bidirectional controls and the line/paragraph separators.
const UNSAFE = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

const visible = (c: string): string => {
  const n = c.charCodeAt(0);
  return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
};

/** Text made safe to show: line feeds kept (the output's own lines), every unsafe character escaped. */
export function terminalSafe(text: string): string {
  return text.replace(UNSAFE, visible);
}

/** console.log for human-readable output. */
export function say(text: string): void {
  process.stdout.write(`${terminalSafe(text)}\n`);
}

/** console.error for human-readable output. */
export function warn(text: string): void {
  process.stderr.write(`${terminalSafe(text)}\n`);
}
