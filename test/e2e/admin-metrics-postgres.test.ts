// /metrics and the transit-security reports (test/helpers/admin-metrics-suite.ts) on the PostgreSQL
// store, with a throwaway server (test/helpers/postgres.ts): the report counters the PostgreSQL
// store keeps as mail flows count exactly what was sent, per organisation and for the gateway.
import { test } from 'node:test';
import { adminMetricsSuite } from '../helpers/admin-metrics-suite.ts';
import { postgresMissing } from '../helpers/postgres.ts';

if (postgresMissing) test('/metrics and the reports on PostgreSQL', { skip: postgresMissing }, () => {});
else adminMetricsSuite('postgres');
