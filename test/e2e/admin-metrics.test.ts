// /metrics and the transit-security reports after real traffic on the SQLite store. The suite is
// test/helpers/admin-metrics-suite.ts (admin-metrics-postgres.test.ts runs it on PostgreSQL).
import { adminMetricsSuite } from '../helpers/admin-metrics-suite.ts';

adminMetricsSuite('sqlite');
