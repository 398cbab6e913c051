// Restart-only settings (config/restart-only.ts): what a reload reports as changed, and what a worker
// started later keeps from the server's start while taking the file's other settings.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildConfig } from '../../../src/config/load.ts';
import { keepRestartOnly, restartOnlyChanges, restartOnlyOf } from '../../../src/config/restart-only.ts';

const base = {
  hostname: 'mx.contoso.test',
  organizations: [{ name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }] }],
};

test('restart-only: changes named; a later worker keeps the started queue, node and listeners, takes the rest', () => {
  const started = buildConfig({ ...base, smtp: { listen: ['127.0.0.1:2525'] } }, '/srv/a', null);
  const edited = buildConfig(
    {
      ...base,
      dataDir: '/srv/b',
      nodeId: 'other',
      smtp: { listen: ['127.0.0.1:2626'], maxConnections: 7 },
      delivery: { maxConnectionsPerDestination: 9 },
    },
    '/srv/a',
    null,
  );
  assert.deepEqual(restartOnlyChanges(started, edited), ['dataDir', 'smtp.listen', 'nodeId']);
  assert.deepEqual(restartOnlyChanges(started, started), []);
  const kept = keepRestartOnly(edited, JSON.parse(JSON.stringify(restartOnlyOf(started))));
  assert.deepEqual(restartOnlyChanges(started, kept), []);
  assert.equal(kept.dataDir, started.dataDir);
  assert.equal(kept.nodeId, started.nodeId);
  assert.deepEqual(kept.smtp.listen, ['127.0.0.1:2525']);
  assert.equal(kept.smtp.maxConnections, 7, 'reloadable settings come from the file');
  assert.equal(kept.delivery.maxConnectionsPerDestination, 9);
});
