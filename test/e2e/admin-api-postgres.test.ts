// The admin API suite (test/helpers/admin-api-suite.ts) on the PostgreSQL store, with a throwaway
// server (test/helpers/postgres.ts): the authorization table, tenant isolation, the queue actions,
// the CLI's --json answers and the rest, as on SQLite.
import { test } from 'node:test';
import { adminApiSuite } from '../helpers/admin-api-suite.ts';
import { postgresMissing } from '../helpers/postgres.ts';

if (postgresMissing) test('the admin API on PostgreSQL', { skip: postgresMissing }, () => {});
else adminApiSuite('postgres');
