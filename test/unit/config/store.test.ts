// The `store` key: SQLite by default; PostgreSQL with its URL from store.url or
// PORTCULLIS_STORE_URL (the environment wins); errors never show the URL; authoritative domains
// on PostgreSQL need delivery.maildirShared.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { buildConfig } from '../../../src/config/load.ts';

const relayOnly = [
  {
    name: 'contoso',
    acceptedDomains: [{ domain: 'contoso.test', type: 'internalRelay' }],
    outboundConnectors: [
      {
        name: 'on-prem',
        connectorType: 'onPremises',
        recipientDomains: ['contoso.test'],
        useMXRecord: false,
        smartHosts: ['192.0.2.1'],
      },
    ],
  },
];
const authoritative = [
  { name: 'contoso', acceptedDomains: [{ domain: 'contoso.test' }, { domain: 'hr.contoso.test' }] },
];
const build = (input: Record<string, unknown>) => buildConfig(input, '/etc/portcullis', 'x.yaml');
const err = (input: Record<string, unknown>): string => {
  try {
    build(input);
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected the configuration to be refused');
};
const saved = process.env.PORTCULLIS_STORE_URL;
afterEach(() => {
  if (saved === undefined) delete process.env.PORTCULLIS_STORE_URL;
  else process.env.PORTCULLIS_STORE_URL = saved;
});

test('store: sqlite by default; postgres with store.url and a pool size', () => {
  delete process.env.PORTCULLIS_STORE_URL;
  assert.deepEqual(build({ organizations: relayOnly }).store, { type: 'sqlite' });
  assert.deepEqual(
    build({ organizations: relayOnly, store: { type: 'postgres', url: 'postgresql://app:pw@db1:5432/mail' } }).store,
    { type: 'postgres', url: 'postgresql://app:pw@db1:5432/mail', poolSize: 10, urlFrom: 'store.url' },
  );
  assert.equal(
    (
      build({ organizations: relayOnly, store: { type: 'postgres', url: 'postgres://db1/mail', poolSize: 3 } })
        .store as { poolSize: number }
    ).poolSize,
    3,
  );
});

test('store: PORTCULLIS_STORE_URL wins over store.url, or stands in for it', () => {
  process.env.PORTCULLIS_STORE_URL = 'postgresql://env:secret@db2/mail';
  const c = build({ organizations: relayOnly, store: { type: 'postgres', url: 'postgresql://file:pw@db1/mail' } });
  assert.deepEqual(c.store, {
    type: 'postgres',
    url: 'postgresql://env:secret@db2/mail',
    poolSize: 10,
    urlFrom: 'PORTCULLIS_STORE_URL',
  });
  assert.equal(
    (build({ organizations: relayOnly, store: { type: 'postgres' } }).store as { url: string }).url,
    'postgresql://env:secret@db2/mail',
  );
  assert.deepEqual(build({ organizations: relayOnly }).store, { type: 'sqlite' }, 'ignored for sqlite');
});

test('store errors name the key and never show the URL', () => {
  delete process.env.PORTCULLIS_STORE_URL;
  const bad = err({ organizations: relayOnly, store: { type: 'postgres', url: 'mysql://root:hunter2@db1/mail' } });
  assert.match(
    bad,
    /store\.url: must be a PostgreSQL URL, postgresql:\/\/USER@HOST:PORT\/DATABASE \(the value is not shown: it may hold a password\)/,
  );
  assert.ok(!bad.includes('hunter2'));
  assert.match(
    err({ organizations: relayOnly, store: { type: 'postgres' } }),
    /store\.url: store type postgres needs a URL: set store\.url, or PORTCULLIS_STORE_URL in the server's environment/,
  );
  assert.match(err({ organizations: relayOnly, store: { type: 'mysql' } }), /store\.type: must be sqlite or postgres/);
  const lite = err({
    organizations: relayOnly,
    store: { type: 'sqlite', url: 'postgresql://app:hunter2@db1/mail', poolSize: 4 },
  });
  assert.match(lite, /store\.url: belongs to store type postgres \(the store is sqlite\)/);
  assert.match(lite, /store\.poolSize: belongs to store type postgres/);
  assert.ok(!lite.includes('hunter2'));
  assert.match(
    err({ organizations: relayOnly, store: { type: 'postgres', url: 'postgresql://db1/mail', pool: 3 } }),
    /unknown key\(s\) "pool"/,
  );
  process.env.PORTCULLIS_STORE_URL = 'not a url with s3cret';
  const envBad = err({ organizations: relayOnly, store: { type: 'postgres' } });
  assert.match(envBad, /PORTCULLIS_STORE_URL: must be a PostgreSQL URL/);
  assert.ok(!envBad.includes('s3cret'));
});

test('authoritative domains on PostgreSQL need delivery.maildirShared: true', () => {
  delete process.env.PORTCULLIS_STORE_URL;
  const store = { type: 'postgres', url: 'postgresql://app:pw@db1/mail' };
  const e = err({ organizations: authoritative, store });
  assert.match(
    e,
    /delivery\.maildirShared: authoritative domains \(contoso\.test, hr\.contoso\.test\) are delivered to Maildir mailboxes in dataDir/,
  );
  assert.match(e, /set delivery\.maildirShared: true \(docs\/cluster\.md\), or make the domains internalRelay/);
  assert.ok(!e.includes('pw@'));
  assert.equal(
    build({ organizations: authoritative, store, delivery: { maildirShared: true } }).delivery.maildirShared,
    true,
  );
  assert.equal(build({ organizations: authoritative }).store.type, 'sqlite', 'SQLite: no such rule');
  assert.equal(build({ organizations: relayOnly, store }).store.type, 'postgres', 'relay only: nothing to share');
});
