// docs/configuration.md's key tables are generated from src/config/schema.ts (npm run docs:config):
// the checked-in page must be current, and every key must have a description.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { configSchema } from '../../../src/config/schema.ts';
import { configKeyRows, DOC_FILE, renderConfigPage } from '../../../scripts/docs-config.ts';

test('docs/configuration.md is what `npm run docs:config` generates from the schema', () => {
  const page = readFileSync(DOC_FILE, 'utf8');
  const fresh = renderConfigPage(page);
  if (fresh === page) return;
  const a = page.split('\n');
  const b = fresh.split('\n');
  const i = a.findIndex((l, n) => l !== b[n]);
  assert.fail(
    `docs/configuration.md is stale: run \`npm run docs:config\` and commit the page.\n  line ${i + 1} is:\n    ${a[i]}\n  generated:\n    ${b[i]}`,
  );
});

test('every configuration key has a description and appears in one table, with its schema default', () => {
  const rows = configKeyRows();
  const page = renderConfigPage(readFileSync(DOC_FILE, 'utf8'));
  const keys = rows.map((r) => r.key);
  assert.equal(new Set(keys).size, keys.length);
  for (const k of [
    'hostname',
    'log.level',
    'smtp.timeouts.command',
    'tls.certificates',
    'tls.trust.caFiles',
    'queue.retrySchedule',
    'organizations[].acceptedDomains[].recipients',
    'organizations[].inboundConnectors[].tlsSenderCertificateName',
    'organizations[].outboundConnectors[].tlsDomain',
  ])
    assert.ok(keys.includes(k), `${k} is listed`);
  // A key is shown relative to a list-item section (connectors) and in full elsewhere; either way once.
  for (const r of rows) {
    const shown = r.key.replace(/^organizations\[\]\.(inbound|outbound)Connectors\[\]\./, '');
    assert.ok(page.includes(`| \`${shown}\` | ${r.type.replace(/\|/g, '\\|')} |`), `${r.key} has a row`);
  }
  const row = (k: string) => rows.find((r) => r.key === k)!;
  assert.equal(row('smtp.maxMessageSize').default, '`36700160` (35 MiB)');
  assert.equal(row('queue.messageExpiration').default, '`432000` (5 days)');
  assert.equal(row('smtp.listen').default, '`["127.0.0.1:2525"]`');
  assert.equal(row('dataDir').default, '`./data`');
  assert.equal(row('organizations[].name').default, 'required');
  assert.equal(row('organizations[].inboundConnectors[].tlsSenderCertificateName').default, '—');
  assert.equal(row('tls.revocation').type, '`softFail` `hardFail` `off`');
  assert.equal(row('delivery.timeouts.connect').type, 'seconds');
  // A key of several forms, one an object (runAs: root or {user, group}): its row, then the object's keys.
  assert.deepEqual(
    keys.filter((k) => k.startsWith('runAs')),
    ['runAs', 'runAs.user', 'runAs.group'],
  );
  assert.equal(row('runAs').type, '`root` or `{user, group}`');
  assert.equal(row('runAs.user').default, 'required');
  assert.equal(row('runAs.group').default, "the user's primary group");
  // A defaultText replaces the derived default (YAML needs the quotes).
  assert.equal(row('delivery.maildir.mode').default, '`"0600"`');
  for (const k of [
    'log.format',
    'smtp.reservedConnections',
    'smtp.forbidUnauthPipelining',
    'dns.dnssec',
    'delivery.opportunisticLegacyTls',
    'delivery.maildir.group',
    'trace.retentionDays',
  ])
    assert.ok(keys.includes(k), `${k} is listed`);
  assert.ok(configSchema.shape.smtp.unwrap().shape.maxErrors.description, 'descriptions live on the schema');
});

test('a key without a description fails generation, naming the key and the fix', () => {
  const schema = z.strictObject({
    described: z.number().default(1).describe('Has a text.'),
    trace: z.strictObject({ retentionDays: z.number().default(30) }).prefault({}),
    items: z.array(z.strictObject({ name: z.string(), port: z.number().describe('Port.') })).default([]),
  });
  assert.throws(
    () => configKeyRows(schema),
    (e: Error) => {
      assert.match(e.message, /without a description: trace\.retentionDays, items\[\]\.name\n/);
      assert.match(e.message, /fix: give each one a \.describe/);
      return true;
    },
  );
});

test('the tables are replaced between their markers only; a key no table claims goes to the "*" table', () => {
  const schema = z.strictObject({
    top: z.string().optional().describe('Top.'),
    smtp: z.strictObject({ a: z.boolean().default(true).describe('A | B.') }).prefault({}),
    runAs: z.string().min(1).describe('User to run as.'),
  });
  const page = [
    '# T',
    'prose 1',
    '<!-- config-keys * -->',
    '| old |',
    '<!-- /config-keys -->',
    'prose 2',
    '<!-- config-keys smtp -->',
    '<!-- /config-keys -->',
    'prose 3',
  ].join('\n');
  assert.equal(
    renderConfigPage(page, schema),
    [
      '# T',
      'prose 1',
      '<!-- config-keys * -->',
      '| key | type | default | meaning |',
      '|---|---|---|---|',
      '| `top` | text | — | Top. |',
      '| `runAs` | text | required | User to run as. |',
      '<!-- /config-keys -->',
      'prose 2',
      '<!-- config-keys smtp -->',
      '| key | type | default | meaning |',
      '|---|---|---|---|',
      '| `smtp.a` | boolean | `true` | A \\| B. |',
      '<!-- /config-keys -->',
      'prose 3',
    ].join('\n'),
  );
  assert.throws(
    () => renderConfigPage('<!-- config-keys smtp -->\n<!-- /config-keys -->', schema),
    /no table for: top, runAs/,
  );
  assert.throws(() => renderConfigPage('<!-- config-keys * -->\nx', schema), /is not closed/);
  assert.throws(
    () =>
      renderConfigPage(
        '<!-- config-keys * -->\n<!-- /config-keys -->\n<!-- config-keys dns -->\n<!-- /config-keys -->',
        schema,
      ),
    /no configuration key belongs in the table <!-- config-keys dns -->/,
  );
});
