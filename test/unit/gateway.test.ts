// A start that fails part-way (the second of two listeners cannot bind) releases what it opened:
// the first listener, the control socket and the queue, so a retry in the same process works.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import YAML from 'yaml';
import { Gateway } from '../../src/gateway.ts';
import { asRoot, freePort, tempDir } from '../helpers/gateway.ts';

const HOST = '127.0.0.81';
const bindable = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, HOST, () => s.close(() => resolve(true)));
  });

test('listener 2 of 2 fails: listener 1, control socket and store are released; the retry starts', async () => {
  const dir = tempDir();
  const [free, busy] = [await freePort(HOST), await freePort(HOST)];
  const blocker = net.createServer();
  await new Promise<void>((r) => blocker.listen(busy, HOST, r));
  const configFile = path.join(dir, 'portcullis.yaml');
  const dataDir = path.join(dir, 'data');
  writeFileSync(
    configFile,
    YAML.stringify({
      ...asRoot(),
      hostname: 'mx1.contoso.test',
      dataDir,
      smtp: { listen: [`${HOST}:${free}`, `${HOST}:${busy}`] },
      organizations: [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }],
    }),
  );
  try {
    await assert.rejects(new Gateway({ configFile, allowDefaults: false }).start(), { code: 'EADDRINUSE', port: busy });
    assert.ok(await bindable(free), `the first listener ${HOST}:${free} was closed`);
    assert.equal(existsSync(path.join(dataDir, 'control.sock')), false, 'the control socket was removed');
    assert.equal(
      existsSync(path.join(dataDir, 'queue.sqlite-wal')),
      false,
      'the queue was closed (its WAL file removed)',
    );

    await new Promise((r) => blocker.close(r));
    const gw = new Gateway({ configFile, allowDefaults: false });
    await gw.start();
    await gw.stop('test');
  } finally {
    blocker.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
