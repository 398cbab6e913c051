// The admin centre's HTTPS API against the real gateway, on either store (test/e2e/admin-api.test.ts
// runs it on SQLite, admin-api-postgres.test.ts on a throwaway PostgreSQL): authorization over every
// route of the OpenAPI document × {no token, revoked, organization A, organization B, global};
// tenant isolation (B can neither read nor act on A's messages, connectors, certificates, reports;
// a guessed id is a 404 worded like one that does not exist); input validation (400 naming the
// field); the audit log of every mutating call; queue actions that keep the trace; the answers of
// the CLI's --json; test sends through a connector.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { startAdminGateway, type AdminGateway } from './admin.ts';
import { cleanup, freePort, tempDir } from './gateway.ts';
import { makePki } from './pki.ts';
import { startPeer, type Peer } from './peer.ts';
import { sendOverTls } from './smtp.ts';
import { startPostgres, type PgInstance } from './postgres.ts';

export function adminApiSuite(store: 'sqlite' | 'postgres'): void {
  let pg: PgInstance | undefined;
  let storeConfig: Record<string, unknown> = {};
  let gw: AdminGateway;
  let pkiDir: string;
  let tailspin: Peer;
  const TAILSPIN_IP = '127.0.0.63';
  const tok = { none: null as string | null, revoked: '', a: '', b: '', global: '' };
  type Who = keyof typeof tok;
  const WHO: Who[] = ['none', 'revoked', 'a', 'b', 'global'];
  const ids = { delivered: '', deferred: [] as string[], fabrikam: '', contosoCa: '', gatewayCert: '' };
  const queued = (text: string) => /queued as ([0-9A-Z]+)/.exec(text)![1];

  before(async () => {
    if (store === 'postgres') {
      pg = await startPostgres();
      // One node: its dataDir's mailboxes are all there is, so they count as shared.
      storeConfig = {
        store: { type: 'postgres', url: await pg.createDatabase('admin'), poolSize: 4 },
        delivery: { maildirShared: true },
      };
    }
    pkiDir = tempDir('pc-admin-pki-');
    const pki = await makePki(pkiDir, 'Partner');
    const closed = await freePort('127.0.0.1');
    const tailspinCert = await pki.issue('mx.tailspin.test');
    tailspin = await startPeer({
      host: TAILSPIN_IP,
      port: await freePort(TAILSPIN_IP),
      tls: { cert: readFileSync(tailspinCert.cert, 'utf8'), key: readFileSync(tailspinCert.key, 'utf8') },
    });
    gw = await startAdminGateway({
      ...storeConfig,
      queue: { retrySchedule: [3600] },
      tlsRpt: { receive: ['tlsrpt@contoso.test'] },
      organizations: [
        {
          name: 'contoso',
          acceptedDomains: [{ domain: 'contoso.test' }],
          inboundConnectors: [
            {
              name: 'From Partner',
              connectorType: 'partner',
              senderDomains: ['partner.test'],
              requireTls: true,
              tlsSenderCertificateName: 'mail.partner.test',
              trustedCAs: [pki.rootFile],
            },
          ],
          outboundConnectors: [
            {
              name: 'To Partner',
              connectorType: 'partner',
              recipientDomains: ['partner.test'],
              useMXRecord: false,
              smartHosts: [`127.0.0.1:${closed}`],
              tlsSettings: 'encryptionOnly',
            },
            {
              name: 'To Tailspin',
              connectorType: 'partner',
              recipientDomains: ['tailspin.test', '*.tailspin.test'],
              useMXRecord: false,
              smartHosts: [`${TAILSPIN_IP}:${tailspin.port}`],
              tlsSettings: 'encryptionOnly',
            },
          ],
        },
        {
          name: 'fabrikam',
          acceptedDomains: [{ domain: 'fabrikam.test' }],
          outboundConnectors: [
            {
              name: 'To Northwind',
              connectorType: 'partner',
              recipientDomains: ['northwind.test'],
              useMXRecord: false,
              smartHosts: [`127.0.0.1:${closed}`],
              tlsSettings: 'encryptionOnly',
            },
          ],
        },
      ],
    });
    tok.global = await gw.token('ops');
    tok.a = await gw.token('contoso-admin', 'contoso');
    tok.b = await gw.token('fabrikam-admin', 'fabrikam');
    tok.revoked = await gw.token('old-ops');
    assert.equal((await gw.cli(['admin', 'token', 'revoke', 'old-ops'])).code, 0);

    // A file where the mailbox folder belongs defers local delivery (ENOTDIR): queued messages to act on.
    const domainDir = path.join(gw.dataDir, 'mailboxes', 'contoso.test');
    mkdirSync(domainDir, { recursive: true });
    writeFileSync(path.join(domainDir, 'blocked'), 'not a folder');
    for (let i = 0; i < 3; i++) {
      const r = await sendOverTls(
        gw.port,
        'sender@partner.test',
        ['blocked@contoso.test'],
        `Subject: stuck ${i}\r\nMessage-ID: <stuck${i}@partner.test>\r\n\r\nhi\r\n`,
      );
      ids.deferred.push(queued(r.text));
    }
    ids.delivered = queued(
      (await sendOverTls(gw.port, 'sender@partner.test', ['alice@contoso.test'], 'Subject: hello\r\n\r\nhi\r\n')).text,
    );
    ids.fabrikam = queued(
      (await sendOverTls(gw.port, 'sender@partner.test', ['bob@fabrikam.test'], 'Subject: for fabrikam\r\n\r\nhi\r\n'))
        .text,
    );
    for (const id of [...ids.deferred, ids.delivered, ids.fabrikam]) {
      await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === id);
    }
    const certs = (await gw.api('GET', '/api/v1/certificates', { token: tok.global })).json.items as {
      id: string;
      role: string;
      org?: string;
    }[];
    ids.contosoCa = certs.find((c) => c.org === 'contoso')!.id;
    ids.gatewayCert = certs.find((c) => c.role === 'server')!.id;
  });
  after(async () => {
    await cleanup(gw);
    await tailspin?.close();
    await pg?.destroy();
    rmSync(pkiDir, { recursive: true, force: true });
  });

  /** Expected status per caller; A's objects are the ones named in the path. */
  type Row = { method: string; route: string; path: () => string; body?: unknown; expect: Record<Who, number> };
  const ok = (status = 200, bStatus = 404): Record<Who, number> => ({
    none: 401,
    revoked: 401,
    a: status,
    b: bStatus,
    global: status,
  });
  const globalOnly = (status = 200): Record<Who, number> => ({
    none: 401,
    revoked: 401,
    a: 403,
    b: 403,
    global: status,
  });

  // Every route of the OpenAPI document, with an object of organization A (contoso) where it takes one.
  // Queue actions on a delivered message are refused (409) for those allowed to see it: the table checks
  // who may act without changing anything; the actions themselves are tested below.
  const TABLE: Row[] = [
    { method: 'get', route: '/api/v1/me', path: () => '/api/v1/me', expect: ok(200, 200) },
    { method: 'get', route: '/api/v1/status', path: () => '/api/v1/status', expect: ok(200, 200) },
    { method: 'post', route: '/api/v1/config/reload', path: () => '/api/v1/config/reload', expect: globalOnly() },
    { method: 'get', route: '/api/v1/audit', path: () => '/api/v1/audit?org=contoso', expect: ok() },
    { method: 'get', route: '/metrics', path: () => '/metrics', expect: globalOnly() },
    { method: 'get', route: '/api/v1/messages', path: () => '/api/v1/messages?org=contoso', expect: ok() },
    { method: 'get', route: '/api/v1/messages/{id}', path: () => `/api/v1/messages/${ids.delivered}`, expect: ok() },
    { method: 'get', route: '/api/v1/queue', path: () => '/api/v1/queue?org=contoso', expect: ok() },
    {
      method: 'post',
      route: '/api/v1/queue/{id}/retry',
      path: () => `/api/v1/queue/${ids.delivered}/retry`,
      expect: ok(409),
    },
    {
      method: 'post',
      route: '/api/v1/queue/{id}/bounce',
      path: () => `/api/v1/queue/${ids.delivered}/bounce`,
      expect: ok(409),
    },
    { method: 'delete', route: '/api/v1/queue/{id}', path: () => `/api/v1/queue/${ids.delivered}`, expect: ok(409) },
    { method: 'get', route: '/api/v1/connectors', path: () => '/api/v1/connectors?org=contoso', expect: ok() },
    {
      method: 'get',
      route: '/api/v1/connectors/{org}/{name}',
      path: () => '/api/v1/connectors/contoso/To%20Partner',
      expect: ok(),
    },
    {
      method: 'post',
      route: '/api/v1/connectors/{org}/{name}/validate',
      path: () => '/api/v1/connectors/contoso/To%20Partner/validate',
      body: {},
      expect: ok(),
    },
    {
      method: 'post',
      route: '/api/v1/connectors/{org}/{name}/test-send',
      path: () => '/api/v1/connectors/contoso/To%20Partner/test-send',
      body: {},
      expect: ok(),
    },
    { method: 'get', route: '/api/v1/certificates', path: () => '/api/v1/certificates?org=contoso', expect: ok() },
    {
      method: 'get',
      route: '/api/v1/certificates/{id}',
      path: () => `/api/v1/certificates/${ids.contosoCa}`,
      expect: ok(),
    },
    {
      method: 'get',
      route: '/api/v1/certificates/{id}/readiness',
      path: () => `/api/v1/certificates/${ids.gatewayCert}/readiness`,
      expect: ok(200, 200),
    },
    {
      method: 'get',
      route: '/api/v1/reports/inbound',
      path: () => '/api/v1/reports/inbound?org=contoso',
      expect: ok(),
    },
    {
      method: 'get',
      route: '/api/v1/reports/inbound/peers',
      path: () => '/api/v1/reports/inbound/peers?org=contoso',
      expect: ok(),
    },
    {
      method: 'get',
      route: '/api/v1/reports/outbound',
      path: () => '/api/v1/reports/outbound?org=contoso',
      expect: ok(),
    },
    {
      method: 'get',
      route: '/api/v1/reports/outbound/tls-failures',
      path: () => '/api/v1/reports/outbound/tls-failures?org=contoso',
      expect: ok(),
    },
    { method: 'get', route: '/api/v1/tlsrpt/received', path: () => '/api/v1/tlsrpt/received', expect: ok(200, 200) },
    {
      method: 'get',
      route: '/api/v1/reports/outbound/plaintext-domains',
      path: () => '/api/v1/reports/outbound/plaintext-domains?org=contoso',
      expect: ok(),
    },
  ];

  test('the OpenAPI document lists exactly the routes the server answers, each with its parameters', async () => {
    const doc = (await gw.api('GET', '/api/openapi.json')).json as {
      openapi: string;
      paths: Record<string, Record<string, { parameters: { name: string; in: string }[]; security: unknown[] }>>;
    };
    assert.match(doc.openapi, /^3\./);
    const documented = Object.entries(doc.paths)
      .flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m} ${p}`))
      .sort();
    assert.deepEqual(
      documented,
      TABLE.map((r) => `${r.method} ${r.route}`).sort(),
      'the table covers every documented route, and nothing else is documented',
    );
    for (const [p, ops] of Object.entries(doc.paths)) {
      for (const op of Object.values(ops)) {
        const inPath = [...p.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
        assert.deepEqual(
          op.parameters.filter((x) => x.in === 'path').map((x) => x.name),
          inPath,
          `${p}: path parameters`,
        );
        assert.deepEqual(op.security, [{ bearer: [] }]);
      }
    }
    assert.ok(doc.paths['/api/v1/messages'].get.parameters.some((x) => x.name === 'tlsLevel' && x.in === 'query'));
    // A documented route exists (it does not answer "no such resource"); an undocumented one does not.
    for (const r of TABLE) {
      const res = await gw.api(r.method.toUpperCase(), r.path(), {
        token: tok.global,
        ...(r.body ? { body: r.body } : {}),
      });
      assert.notEqual(res.json?.message?.startsWith('no such resource'), true, `${r.method} ${r.route} is served`);
    }
    const none = await gw.api('GET', '/api/v1/nothing-here', { token: tok.global });
    assert.equal(none.status, 404);
    assert.match(none.json.message, /^no such resource: GET \/api\/v1\/nothing-here$/);
  });

  test('authorization: every route × {no token, revoked token, organization A, organization B, global}', async () => {
    const failures: string[] = [];
    for (const r of TABLE) {
      for (const who of WHO) {
        const res = await gw.api(r.method.toUpperCase(), r.path(), {
          token: tok[who],
          ...(r.body ? { body: r.body } : {}),
        });
        if (res.status !== r.expect[who])
          failures.push(
            `${r.method.toUpperCase()} ${r.path()} as ${who}: ${res.status}, expected ${r.expect[who]} (${res.text.slice(0, 160)})`,
          );
        if (res.status === 401) {
          assert.equal(res.headers['www-authenticate'], 'Bearer realm="portcullis"');
          assert.match(res.json.message, /a valid bearer token is needed/);
        }
      }
      // The router decodes the path (`/%61pi/v1/…` is `/api/v1/…`): the same route, the same token needed.
      const encoded = r.path().replace(/^\/(.)/, (_m, c: string) => `/%${c.charCodeAt(0).toString(16)}`);
      const res = await gw.api(r.method.toUpperCase(), encoded, {
        token: tok.none,
        ...(r.body ? { body: r.body } : {}),
      });
      if (res.status !== 401) failures.push(`${r.method.toUpperCase()} ${encoded} without a token: ${res.status}`);
    }
    assert.deepEqual(failures, []);
  });

  test("isolation: organization B neither reads nor acts on A's objects; a guessed id answers as one that does not exist", async () => {
    const as = (who: Who, method: string, p: string, body?: unknown) =>
      gw.api(method, p, { token: tok[who], ...(body ? { body } : {}) });
    const a = ids.deferred[0];
    // Same status and same words for A's message and for an id nobody has.
    for (const [method, p] of [
      ['GET', '/api/v1/messages/ID'],
      ['POST', '/api/v1/queue/ID/retry'],
      ['POST', '/api/v1/queue/ID/bounce'],
      ['DELETE', '/api/v1/queue/ID'],
    ]) {
      const theirs = await as('b', method, p.replace('ID', a));
      const nobodys = await as('b', method, p.replace('ID', 'ZZZZZZZZZZZZ'));
      assert.equal(theirs.status, 404, `${method} ${p}`);
      assert.equal(
        theirs.json.message.replace(a, 'ID'),
        nobodys.json.message.replace('ZZZZZZZZZZZZ', 'ID'),
        `${method} ${p}: worded alike`,
      );
    }
    assert.equal(
      (await gw.api('GET', `/api/v1/messages/${a}`, { token: tok.a })).json.state,
      'deferred',
      "B's attempts changed nothing",
    );
    // A's queue id as B's paging cursor: the same answer as an id nobody has.
    const cursor = await as('b', 'GET', `/api/v1/queue?after=${a}`);
    const noCursor = await as('b', 'GET', '/api/v1/queue?after=ZZZZZZZZZZZZ');
    assert.deepEqual(
      [cursor.status, cursor.json.message?.replace(a, 'ID')],
      [noCursor.status, noCursor.json.message?.replace('ZZZZZZZZZZZZ', 'ID')],
      'a cursor of another organization is as unknown as one nobody has',
    );
    const bList = (await as('b', 'GET', '/api/v1/messages')).json.items as { org: string; id: string }[];
    assert.deepEqual([...new Set(bList.map((m) => m.org))], ['fabrikam']);
    assert.ok(bList.some((m) => m.id === ids.fabrikam));
    assert.deepEqual(
      [...new Set(((await as('b', 'GET', '/api/v1/queue')).json.items as { org: string }[]).map((m) => m.org))].filter(
        (o) => o !== 'fabrikam',
      ),
      [],
    );
    assert.deepEqual(
      ((await as('b', 'GET', '/api/v1/connectors')).json.items as { organization: string; name: string }[]).map(
        (x) => `${x.organization}/${x.name}`,
      ),
      ['fabrikam/To Northwind'],
    );
    const bCerts = (await as('b', 'GET', '/api/v1/certificates')).json.items as { scope: string; org?: string }[];
    assert.ok(
      bCerts.every((c) => c.scope === 'gateway'),
      "only the gateway's own certificate, not contoso's trust material",
    );
    assert.equal((await as('b', 'GET', `/api/v1/certificates/${ids.contosoCa}`)).status, 404);
    assert.equal(
      (await as('b', 'GET', '/api/v1/connectors/contoso/To%20Partner')).json.message,
      (await as('b', 'GET', '/api/v1/connectors/contoso/Nothing')).json.message.replace('Nothing', 'To Partner'),
    );
    assert.equal((await as('b', 'GET', '/api/v1/reports/inbound?org=contoso')).status, 404);
    assert.equal(
      (await as('b', 'GET', '/api/v1/reports/inbound?org=northwind')).json.message,
      (await as('b', 'GET', '/api/v1/reports/inbound?org=contoso')).json.message.replace('contoso', 'northwind'),
    );
    const bReport = (await as('b', 'GET', '/api/v1/reports/inbound')).json as {
      org: string;
      messages: { total: number };
    };
    assert.equal(bReport.org, 'fabrikam', "an organization token's reports are its own");
    const aAudit = (await as('b', 'GET', '/api/v1/audit')).json.entries as { org: string | null; targetOrg?: string }[];
    assert.ok(
      aAudit.every((e) => e.org === 'fabrikam' || e.targetOrg === 'fabrikam'),
      JSON.stringify(aAudit.slice(0, 3)),
    );
  });

  test('one transaction for recipients of two organizations: each organization sees its own copy, with its own recipients', async () => {
    const r = await sendOverTls(
      gw.port,
      'sender@partner.test',
      ['alice@contoso.test', 'bob@fabrikam.test'],
      'Subject: for both\r\n\r\nhi\r\n',
    );
    const m = /^250 2\.0\.0 OK queued as ([0-9A-Z]+) ([0-9A-Z]+)$/.exec(r.text);
    assert.ok(r.code === 250 && m, r.text);
    const [, a, b] = m;
    const view = async (who: Who, id: string) => {
      const x = await gw.api('GET', `/api/v1/messages/${id}`, { token: tok[who] });
      return x.status === 200
        ? [x.json.org, (x.json.recipients as { address: string }[]).map((y) => y.address)]
        : x.status;
    };
    assert.deepEqual(await view('a', a), ['contoso', ['alice@contoso.test']]);
    assert.deepEqual(await view('b', b), ['fabrikam', ['bob@fabrikam.test']]);
    assert.equal(await view('a', b), 404, "contoso's token does not see fabrikam's copy");
    assert.equal(await view('b', a), 404, "fabrikam's token does not see contoso's copy");
    assert.equal((await gw.api('DELETE', `/api/v1/queue/${b}`, { token: tok.a })).status, 404);
  });

  test('the API answers as the CLI does with --json: trace, queue, connectors, received TLS reports', async () => {
    const cli = async (args: string[]) => {
      const r = await gw.cli([...args, '--json']);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      return JSON.parse(r.stdout) as unknown;
    };
    const json = (x: unknown) => JSON.parse(JSON.stringify(x)) as unknown;
    // One message: the trace entry of the CLI is the API's answer without what the API adds (subject, timeline).
    const [traced] = (await cli(['trace', '--queue-id', ids.delivered])) as Record<string, unknown>[];
    const { subject, timeline, ...msg } = (await gw.api('GET', `/api/v1/messages/${ids.delivered}`, { token: tok.a }))
      .json as Record<string, unknown>;
    assert.equal(typeof subject === 'string' || subject === null, true);
    assert.equal((timeline as unknown[]).length, (traced.trace as unknown[]).length);
    assert.deepEqual(msg, json(traced));
    // A search: the same messages, in the same order, with the same filters.
    const found = (await cli(['trace', '--recipient', 'blocked@contoso.test', '--limit', '10'])) as { id: string }[];
    const listed = (await gw.api('GET', '/api/v1/messages?recipient=blocked@contoso.test&limit=10', { token: tok.a }))
      .json.items as { id: string }[];
    assert.deepEqual(
      listed.map((m) => m.id),
      found.map((m) => m.id),
    );
    // The queue: each entry as `queue list --json` (the API adds the subject).
    const queue = (await cli(['queue', 'list'])) as { id: string }[];
    const apiQueue = (await gw.api('GET', '/api/v1/queue', { token: tok.global })).json.items as Record<
      string,
      unknown
    >[];
    assert.deepEqual(
      apiQueue.map(({ subject: _s, ...rest }) => rest),
      json(queue),
    );
    assert.deepEqual(
      (await gw.api('GET', '/api/v1/connectors', { token: tok.global })).json.items,
      json(await cli(['connector', 'list'])),
    );
    const received = (await cli(['tlsrpt', 'received'])) as Record<string, unknown>;
    const apiReceived = (await gw.api('GET', '/api/v1/tlsrpt/received', { token: tok.global })).json;
    assert.deepEqual(apiReceived, json(received));
  });

  test("queue actions: retry, bounce now and delete act on A's queued messages, keep the trace, and are audited", async () => {
    const [r1, r2, r3] = ids.deferred;
    const retry = await gw.api('POST', `/api/v1/queue/${r1}/retry`, { token: tok.a });
    assert.equal(retry.status, 200, retry.text);
    await gw.waitForLog(
      (e) =>
        e.event === 'delivery.result' &&
        e.queueId === r1 &&
        e.status === 'deferred' &&
        gw.events().filter((x) => x.event === 'delivery.result' && x.queueId === r1).length >= 2,
    );

    const bounce = await gw.api('POST', `/api/v1/queue/${r2}/bounce`, { token: tok.a });
    assert.equal(bounce.status, 200, bounce.text);
    await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === r2 && e.status === 'failed');

    const del = await gw.api('DELETE', `/api/v1/queue/${r3}`, { token: tok.global });
    assert.equal(del.status, 200, del.text);
    assert.equal(del.json.recipients, 1);
    const after = await gw.api('GET', `/api/v1/messages/${r3}`, { token: tok.a });
    assert.equal(after.status, 200);
    assert.equal(after.json.state, 'done');
    assert.equal(after.json.recipients[0].status, 'deleted');
    assert.ok(
      after.json.timeline.some(
        (e: { kind: string; data: { by?: string } }) => e.kind === 'deleted' && e.data.by === 'token "ops"',
      ),
      JSON.stringify(after.json.timeline),
    );
    assert.ok(
      after.json.timeline.some((e: { kind: string }) => e.kind === 'delivery'),
      'the earlier attempts stay',
    );
    const again = await gw.api('DELETE', `/api/v1/queue/${r3}`, { token: tok.global });
    assert.equal(again.status, 409);
    assert.match(again.json.message, /is no longer in the queue/);

    const audit = (await gw.api('GET', '/api/v1/audit?action=queue.delete', { token: tok.global })).json.entries as {
      actor: string;
      target: string;
      targetOrg: string;
      result: string;
      status: number;
    }[];
    assert.deepEqual(
      audit.filter((e) => e.target === `message ${r3}`).map((e) => [e.actor, e.targetOrg, e.result, e.status]),
      [
        ['ops', 'contoso', 'refused', 409],
        ['ops', 'contoso', 'ok', 200],
      ],
    );
    const retries = (await gw.api('GET', '/api/v1/audit?action=queue.retry', { token: tok.a })).json.entries as {
      actor: string;
      target?: string;
      result: string;
    }[];
    assert.ok(retries.some((e) => e.actor === 'contoso-admin' && e.target === `message ${r1}` && e.result === 'ok'));
    const anonymous = (await gw.api('GET', '/api/v1/audit?action=queue.retry', { token: tok.global })).json.entries as {
      actor: string;
      result: string;
      status: number;
    }[];
    assert.ok(
      anonymous.some((e) => e.actor === '(no valid token)' && e.result === 'refused' && e.status === 401),
      'refused calls are audited too',
    );
  });

  test('validation: bad input is a 400 that names the field', async () => {
    const cases: [string, string, string, unknown?][] = [
      ['GET', '/api/v1/messages?limit=abc', 'limit'],
      ['GET', '/api/v1/messages?limit=100000', 'limit'],
      ['GET', '/api/v1/messages?sendr=x@y.test', 'sendr'],
      ['GET', '/api/v1/messages?status=lost', 'status'],
      ['GET', '/api/v1/messages?tlsLevel=superb', 'tlsLevel'],
      ['GET', '/api/v1/messages?tlsLevel=', 'tlsLevel'],
      ['GET', '/api/v1/messages/not%20an%20id', 'id'],
      ['GET', '/api/v1/queue?state=done', 'state.0'],
      ['GET', '/api/v1/certificates/abc', 'id'],
      ['GET', '/api/v1/reports/inbound?granularity=week', 'granularity'],
      ['GET', '/api/v1/reports/inbound?from=2026-01-02T00:00Z&until=2026-01-01T00:00Z', 'from'],
      ['GET', '/api/v1/reports/outbound?from=60d&granularity=hour', 'granularity'],
      ['POST', '/api/v1/connectors/contoso/To%20Partner/validate', 'dryRun', { dryRun: true }],
      ['POST', '/api/v1/connectors/contoso/To%20Partner/validate', 'send', { send: 'yes please' }],
      ['POST', '/api/v1/connectors/contoso/To%20Partner/test-send', 'to', { to: 'x@partner.test' }],
    ];
    for (const [method, p, field, body] of cases) {
      const r = await gw.api(method, p, { token: tok.global, ...(body ? { body } : {}) });
      assert.equal(r.status, 400, `${method} ${p}: ${r.text}`);
      assert.equal(r.json.field, field, `${method} ${p}: ${r.text}`);
      assert.ok(r.json.message.includes(`"${field}"`), r.json.message);
    }
    // Every TLS level a delivery can achieve is a filter (the trace records opportunistic and dane too).
    for (const level of [
      'none',
      'opportunistic',
      'encryptionOnly',
      'certificateValidation',
      'domainValidation',
      'dane',
    ]) {
      const r = await gw.api('GET', `/api/v1/messages?tlsLevel=${level}`, { token: tok.global });
      assert.equal(r.status, 200, `tlsLevel=${level}: ${r.text}`);
    }
    const since = await gw.api('GET', '/api/v1/messages?since=yesterday', { token: tok.global });
    assert.equal(since.status, 400);
    assert.match(since.json.message, /since "yesterday" is not a time/);
    const badJson = await gw.api('POST', '/api/v1/config/reload', {
      token: tok.global,
      headers: { 'content-type': 'application/json' },
      body: undefined,
    });
    assert.ok(
      badJson.status === 200 || badJson.status === 400,
      'an empty JSON body is refused or ignored, never a 500',
    );
    for (const r of [since, badJson]) assert.doesNotMatch(r.text, /at \S+ \(|node_modules|\.ts:\d+/, 'no stack trace');
  });

  test('connector validation reports an unreachable smart host as a failed check, not an error', async () => {
    const r = await gw.api('POST', '/api/v1/connectors/contoso/To%20Partner/validate', { token: tok.a, body: {} });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.passes, false);
    assert.equal(r.json.hosts[0].connected, false);
    const inbound = await gw.api('POST', '/api/v1/connectors/contoso/From%20Partner/validate', {
      token: tok.a,
      body: {},
    });
    assert.equal(inbound.status, 400);
    assert.match(inbound.json.message, /is an inbound connector/);
  });

  test('test send: one message through the connector with the TLS facts of the host; only to its domains; limited; audited', async () => {
    const send = (who: Who, connector: string, body: unknown) =>
      gw.api('POST', `/api/v1/connectors/contoso/${encodeURIComponent(connector)}/test-send`, {
        token: tok[who],
        body,
      });
    // Not a domain the connector serves: refused before anything is sent, naming the rule.
    for (const recipient of ['victim@elsewhere.test', 'x@tailspin.test.evil.test', 'not an address']) {
      const r = await send('a', 'To Tailspin', { recipient });
      assert.equal(r.status, 400, r.text);
      assert.match(r.json.message, /not in a domain connector "To Tailspin" serves|is not a valid address/);
    }
    const viaValidate = await gw.api('POST', '/api/v1/connectors/contoso/To%20Tailspin/validate', {
      token: tok.a,
      body: { recipient: 'victim@elsewhere.test', send: true },
    });
    assert.equal(viaValidate.status, 400, 'validate with send follows the same rule');
    assert.equal(tailspin.messages.length, 0);

    const ok = await send('a', 'To Tailspin', { recipient: 'ops@mail.tailspin.test' });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.sent, true);
    assert.equal(ok.json.recipient, 'ops@mail.tailspin.test');
    assert.equal(ok.json.via.ip, TAILSPIN_IP);
    assert.equal(ok.json.via.tls.version, 'TLSv1.3');
    assert.equal(ok.json.via.requirement.level, 'encryptionOnly');
    assert.match(ok.json.via.testMessage, /^250/);
    assert.deepEqual(
      tailspin.messages.map((m) => [m.to, m.tls?.version]),
      [[['ops@mail.tailspin.test'], 'TLSv1.3']],
    );

    // At most one per connector per minute; a refused one sends nothing.
    const again = await send('global', 'To Tailspin', {});
    assert.equal(again.status, 429, again.text);
    assert.ok(Number(again.headers['retry-after']) > 0 && Number(again.headers['retry-after']) <= 60);
    assert.match(again.json.message, /less than 60 s ago: try again in \d+ s/);
    assert.equal(tailspin.messages.length, 1);
    // A host that takes nothing uses up nothing: the unreachable connector can be tried again at once.
    for (let i = 0; i < 2; i++) {
      const r = await send('a', 'To Partner', {});
      assert.equal(r.status, 200, r.text);
      assert.equal(r.json.sent, false);
      assert.equal(r.json.recipient, 'postmaster@partner.test');
      assert.equal(r.json.hosts[0].connected, false);
    }
    assert.equal((await send('a', 'From Partner', {})).status, 400, 'inbound connectors send nothing');

    const audit = (await gw.api('GET', '/api/v1/audit?action=connector.testSend', { token: tok.a })).json.entries as {
      actor: string;
      target: string;
      result: string;
      status: number;
      detail: string;
    }[];
    const tail = audit.filter((e) => e.target === 'connector "To Tailspin"').reverse();
    assert.deepEqual(
      tail.slice(-2).map((e) => [e.actor, e.result, e.status]),
      [
        ['contoso-admin', 'ok', 200],
        ['ops', 'refused', 429],
      ],
    );
    assert.match(
      tail.at(-2)!.detail,
      /^sent to ops@mail\.tailspin\.test via 127\.0\.0\.63 \[127\.0\.0\.63\]:\d+ over TLSv1\.3: 250/,
    );
  });

  test('certificates: facts as `cert info`, days left, and rotation readiness of the served certificate', async () => {
    const c = (await gw.api('GET', `/api/v1/certificates/${ids.gatewayCert}`, { token: tok.a })).json;
    assert.equal(c.facts.subject, c.subject);
    assert.ok(c.daysLeft > 300, String(c.daysLeft));
    const cli = JSON.parse((await gw.cli(['cert', 'info', '--json'])).stdout) as {
      fingerprintSha256: string;
      sanNames: string[];
    }[];
    assert.equal(cli[0].fingerprintSha256, c.facts.fingerprintSha256);
    assert.deepEqual(cli[0].sanNames, c.facts.sanNames);
    const ready = (await gw.api('GET', `/api/v1/certificates/${ids.gatewayCert}/readiness`, { token: tok.global }))
      .json;
    assert.equal(ready.ready, false, 'a self-signed development certificate does not chain to a trusted root');
    assert.ok(ready.current.problems.length > 0);
    assert.equal(ready.next.staged, false);
    const ca = await gw.api('GET', `/api/v1/certificates/${ids.contosoCa}/readiness`, { token: tok.a });
    assert.equal(ca.status, 400);
    assert.match(ca.json.message, /applies to the gateway's own certificates/);
  });

  test("status: this node, the cluster as the store's heartbeats show it, and the queue depth for global tokens only", async () => {
    const g = (await gw.api('GET', '/api/v1/status', { token: tok.global })).json;
    assert.equal(typeof g.nodeId, 'string');
    assert.deepEqual(
      g.cluster,
      { mode: store === 'postgres' ? 'shared store' : 'single node', store, nodes: 1 },
      "this node's heartbeat is in the store",
    );
    assert.deepEqual(Object.keys(g.queue).sort(), ['active', 'deferred', 'held', 'incoming']);
    assert.ok(g.queue.deferred >= 1, JSON.stringify(g.queue)); // the stuck messages that earlier tests left queued
    const a = (await gw.api('GET', '/api/v1/status', { token: tok.a })).json;
    assert.equal(a.queue, undefined);
    assert.deepEqual(a.cluster, g.cluster);
  });

  test('config reload through the API: applied, or refused with the reason while the running configuration stays', async () => {
    const good = await gw.api('POST', '/api/v1/config/reload', { token: tok.global });
    assert.equal(good.status, 200);
    assert.match(good.json.message, /configuration reloaded/);
    const text = (await import('node:fs')).readFileSync(gw.configFile, 'utf8');
    writeFileSync(gw.configFile, `${text}\nbogusKey: 1\n`);
    try {
      const bad = await gw.api('POST', '/api/v1/config/reload', { token: tok.global });
      assert.equal(bad.status, 409);
      assert.match(bad.json.message, /configuration refused, the running one stays in force/);
      assert.match(bad.json.message, /bogusKey/);
      assert.equal((await gw.api('GET', '/api/v1/me', { token: tok.a })).status, 200, 'still serving');
      writeFileSync(gw.configFile, text.replace(`127.0.0.1:${gw.adminPort}`, '127.0.0.1:1'));
      const moved = await gw.api('POST', '/api/v1/config/reload', { token: tok.global });
      assert.equal(moved.status, 200);
      assert.match(
        moved.json.message,
        /\(admin changed: these take effect after a restart\)/,
        'the admin listener stays where it is until a restart',
      );
    } finally {
      writeFileSync(gw.configFile, text);
    }
  });

  test('every answer carries a CSP without inline scripts and no-store for API data', async () => {
    for (const p of ['/', '/api/openapi.json', '/api/v1/me']) {
      const r = await gw.api('GET', p, { token: tok.global });
      assert.match(String(r.headers['content-security-policy']), /script-src 'self';/);
      assert.doesNotMatch(String(r.headers['content-security-policy']), /unsafe-inline|unsafe-eval/);
      assert.equal(r.headers['x-content-type-options'], 'nosniff');
    }
    assert.equal((await gw.api('GET', '/api/v1/me', { token: tok.global })).headers['cache-control'], 'no-store');
  });

  test('received TLS-RPT reports: a global token sees every policy domain and the unreadable reports, an organization token its own domains only', async () => {
    const report = (domain: string, id: string) =>
      JSON.stringify({
        'organization-name': 'Partner Reports',
        'date-range': { 'start-datetime': '2026-12-01T00:00:00Z', 'end-datetime': '2026-12-01T23:59:59Z' },
        'contact-info': 'tlsrpt@partner.test',
        'report-id': id,
        policies: [
          {
            policy: { 'policy-type': 'no-policy-found', 'policy-domain': domain },
            summary: { 'total-successful-session-count': 5, 'total-failure-session-count': 1 },
            'failure-details': [{ 'result-type': 'certificate-expired', 'failed-session-count': 1 }],
          },
        ],
      });
    const mail = (body: string) =>
      `From: <reports@partner.test>\r\nSubject: Report\r\nMIME-Version: 1.0\r\nContent-Type: application/tlsrpt+json\r\n\r\n${body}\r\n`;
    for (const body of [mail(report('contoso.test', 'r1')), mail(report('fabrikam.test', 'r2')), mail('{not json')]) {
      const r = await sendOverTls(gw.port, 'reports@partner.test', ['tlsrpt@contoso.test'], body);
      assert.equal(r.code, 250, r.text);
    }
    await gw.waitForLog(() => gw.events().filter((e) => e.event === 'tlsrpt.received').length >= 3);
    type Received = {
      reports: number;
      summary: { policyDomain: string; successful: number; failed: number; failures: Record<string, number> }[];
      flagged: { problem: string }[];
    };
    const all = (await gw.api('GET', '/api/v1/tlsrpt/received', { token: tok.global })).json as Received;
    assert.deepEqual(
      all.summary.map((x) => [x.policyDomain, x.successful, x.failed, x.failures]),
      [
        ['contoso.test', 5, 1, { 'certificate-expired': 1 }],
        ['fabrikam.test', 5, 1, { 'certificate-expired': 1 }],
      ],
    );
    assert.equal(all.flagged.length, 1);
    assert.match(all.flagged[0].problem, /not JSON/);
    const b = (await gw.api('GET', '/api/v1/tlsrpt/received', { token: tok.b })).json as Received;
    assert.deepEqual(
      b.summary.map((x) => x.policyDomain),
      ['fabrikam.test'],
    );
    assert.deepEqual(b.flagged, [], 'unreadable reports name no domain: global tokens only');
    assert.equal(all.reports, 3, 'the gateway: every report received, the unreadable one included');
    assert.equal(b.reports, 1, "an organization: the reports about its domains, not the gateway's count");
    const a = (await gw.api('GET', '/api/v1/tlsrpt/received', { token: tok.a })).json as Received;
    assert.deepEqual(
      a.summary.map((x) => x.policyDomain),
      ['contoso.test'],
    );
  });
}
