// Owns: the smallest SMTP receiver a test can hold open on a socket: greeting, EHLO with PIPELINING,
// 250 to everything else, 354 for DATA, 221 for QUIT. What happens at the end of each message is the
// test's: it is handed the message text and answers when it chooses (e.g. later than a lease, or
// only when the test releases it). No TLS, no limits: only for peers inside one test.
import type net from 'node:net';

/** Speak SMTP on `s` as `name`; `onMessage(text, reply)` decides the reply to each end of data. */
export function tinySmtp(
  s: net.Socket,
  name: string,
  onMessage: (text: string, reply: (line: string) => void) => void,
): void {
  let buf = '';
  let inData = false;
  s.on('error', () => {});
  s.write(`220 ${name} ESMTP\r\n`);
  s.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    for (;;) {
      if (inData) {
        const i = buf.indexOf('\r\n.\r\n');
        if (i < 0) return;
        const text = buf.slice(0, i);
        buf = buf.slice(i + 5);
        inData = false;
        onMessage(text, (line) => {
          if (!s.destroyed) s.write(`${line}\r\n`);
        });
        continue;
      }
      const nl = buf.indexOf('\r\n');
      if (nl < 0) return;
      const verb = buf.slice(0, nl).split(' ')[0].toUpperCase();
      buf = buf.slice(nl + 2);
      if (verb === 'EHLO') s.write(`250-${name}\r\n250 PIPELINING\r\n`);
      else if (verb === 'DATA') {
        inData = true;
        s.write('354 go ahead\r\n');
      } else if (verb === 'QUIT') {
        s.end('221 bye\r\n');
        return;
      } else s.write('250 2.0.0 Ok\r\n');
    }
  });
}
