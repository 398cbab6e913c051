// The admin centre's HTTPS API against the real gateway on the SQLite store. The suite is
// test/helpers/admin-api-suite.ts (admin-api-postgres.test.ts runs it on PostgreSQL): authorization
// over every route of the OpenAPI document × {no token, revoked, organization A, organization B,
// global}; tenant isolation; input validation; the audit log; queue actions; the CLI's --json.
import { adminApiSuite } from '../helpers/admin-api-suite.ts';

adminApiSuite('sqlite');
