// Write backpressure in the real process (issue 8, item 3): one client pipelines megabytes of
// EHLO and never reads the replies (the reproduction: 16 MiB grew the gateway from ~118 to
// ~650 MiB). The gateway must stop reading that session instead of queueing the replies: its RSS
// stays flat, in plaintext and after STARTTLS, and every reply still arrives once the client reads.
// EHLO may not be pipelined (RFC 2920), so the gateway runs with smtp.forbidUnauthPipelining off;
// with it on the client would be cut off at the first EHLO (test/e2e/pipelining.test.ts).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { cleanup, startGateway, type GatewayHandle } from '../helpers/gateway.ts';
import { SmtpClient } from '../helpers/smtp.ts';

let gw: GatewayHandle;
before(async () => {
  gw = await startGateway({ config: { smtp: { forbidUnauthPipelining: false } } });
});
after(async () => {
  await cleanup(gw);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const N = 512 * 1024; // 4 MiB of "EHLO x\r\n"; the replies are ~170 octets each (~85 MB)
const GROWTH_BOUND_MB = 40;

function rssKb(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, 'VmRSS readable');
  return Number(m[1]);
}

/** Count `needle` in everything the (paused) socket delivers until `n` are seen or `ms` pass. */
async function drain(s: net.Socket, needle: string, n: number, ms: number): Promise<number> {
  let seen = 0;
  let tail = '';
  const end = Date.now() + ms;
  return new Promise((resolve) => {
    const t = setTimeout(
      () => {
        s.off('data', onData);
        resolve(seen);
      },
      Math.max(0, end - Date.now()),
    );
    const onData = (b: Buffer) => {
      const text = tail + b.toString('latin1');
      for (let i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + needle.length)) seen++;
      tail = text.slice(-(needle.length - 1));
      if (seen >= n) {
        clearTimeout(t);
        s.off('data', onData);
        resolve(seen);
      }
    };
    s.on('data', onData);
    s.resume();
  });
}

/** Write N pipelined EHLOs without reading; returns the gateway's RSS growth (MB) over the next seconds. */
async function flood(sock: net.Socket): Promise<number> {
  const pid = gw.proc.pid!;
  const start = rssKb(pid);
  let peak = start;
  sock.pause();
  sock.write(Buffer.from('EHLO x\r\n'.repeat(N)));
  for (let i = 0; i < 50; i++) {
    await sleep(100);
    peak = Math.max(peak, rssKb(pid));
  }
  return (peak - start) / 1024;
}

test('plaintext: 4 MiB of pipelined EHLO never read: gateway RSS grows < 40 MB; all replies arrive when the client reads', async (t) => {
  const c = await SmtpClient.connect(gw.port);
  try {
    await c.hello();
    c.sock.removeAllListeners('data');
    const growth = await flood(c.sock);
    t.diagnostic(`gateway RSS growth ${growth.toFixed(1)} MB`);
    assert.ok(growth < GROWTH_BOUND_MB, `gateway RSS grew by ${growth.toFixed(1)} MB (bound ${GROWTH_BOUND_MB} MB)`);
    assert.equal(await drain(c.sock, '250-PIPELINING\r\n', N, 120_000), N, 'one reply per EHLO');
  } finally {
    c.close();
  }
});

test('after STARTTLS: the same on the TLS socket', async (t) => {
  const c = await SmtpClient.connect(gw.port);
  try {
    await c.hello();
    const ts: tls.TLSSocket = await c.starttls({ servername: 'mx1.contoso.test' });
    ts.removeAllListeners('data');
    const growth = await flood(ts);
    t.diagnostic(`gateway RSS growth ${growth.toFixed(1)} MB`);
    assert.ok(growth < GROWTH_BOUND_MB, `gateway RSS grew by ${growth.toFixed(1)} MB (bound ${GROWTH_BOUND_MB} MB)`);
    assert.equal(await drain(ts, '250-PIPELINING\r\n', N, 120_000), N, 'one reply per EHLO');
  } finally {
    c.close();
  }
});
