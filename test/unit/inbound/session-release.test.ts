// Regression test for a finding of the resource-bounds proof (proof/resources.ts, "thousands of
// recipients"): a session that ended was kept alive for 10 s by its linger timer (destroy a peer
// that never reads), with its transaction and buffers, so memory grew with the connection rate
// (~950 MB RSS under a reconnecting 3000-RCPT attack) rather than with maxConnections.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { SmtpSession } from '../../../src/inbound/session.ts';
import { sessionDeps } from '../../helpers/session.ts';
import { SmtpClient } from '../../helpers/smtp.ts';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

test('a closed session can be garbage-collected at once (no timer pins it)', async () => {
  const deps = sessionDeps();
  let ref: WeakRef<SmtpSession> | undefined;
  let ended!: () => void;
  const closed = new Promise<void>((r) => {
    ended = r;
  });
  const srv = net.createServer((s) => {
    ref = new WeakRef(new SmtpSession(s, deps, { ended() {}, closed: () => ended() }));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const c = await SmtpClient.connect((srv.address() as net.AddressInfo).port);
  await c.hello();
  await c.expect('MAIL FROM:<a@fabrikam.test>', 250);
  for (let i = 0; i < 50; i++) await c.expect(`RCPT TO:<u${i}@contoso.test>`, 250);
  await c.expect('QUIT', 221);
  await c.closedPromise;
  await closed;
  await new Promise<void>((r) => srv.close(() => r()));
  let collected = false;
  for (let i = 0; i < 20 && !collected; i++) {
    await new Promise((r) => setTimeout(r, 10));
    gc();
    collected = ref!.deref() === undefined;
  }
  assert.ok(collected, 'the session is still reachable after it closed');
});
