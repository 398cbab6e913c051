// Rotation readiness (admin/ops/certificates.ts) of a gateway certificate with and without a staged
// successor (tls.certificates[].next): the staged one is checked as the served one is.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { certificateInventory, rotationReadiness } from '../../../src/admin/ops/certificates.ts';
import type { Config } from '../../../src/config/load.ts';
import { RevocationChecker } from '../../../src/tls/revocation.ts';
import { TrustStore } from '../../../src/tls/trust.ts';
import { makePki } from '../../helpers/pki.ts';

test('rotation readiness: a staged next certificate is named and checked like the served one', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pc-rotation-'));
  try {
    const pki = await makePki(dir, 'Contoso');
    const other = await makePki(dir, 'Elsewhere');
    const current = await pki.issue('mx.contoso.test');
    const next = await other.issue('mx2.contoso.test');
    const config = (certificates: unknown[]) =>
      ({ tls: { certificates }, organizations: [], dataDir: dir }) as unknown as Config;
    const trust = new TrustStore(false, [pki.rootFile]);
    const tools = {
      trust,
      revocation: new RevocationChecker(() => {
        throw new Error('no lookups in this test');
      }),
    };

    const [plain] = certificateInventory(config([{ cert: current.cert, key: current.key }]), trust);
    const none = await rotationReadiness(plain, tools);
    assert.equal(none.next.staged, false);

    const [staged] = certificateInventory(
      config([{ cert: current.cert, key: current.key, next: { cert: next.cert, key: next.key } }]),
      trust,
    );
    assert.equal(staged.next, next.cert);
    const r = await rotationReadiness(staged, tools);
    assert.ok(r.next.staged);
    assert.equal(r.next.file, next.cert);
    assert.equal(r.next.check.passes, false, 'issued under a root the gateway does not trust');
    assert.ok(r.next.check.problems.length > 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
