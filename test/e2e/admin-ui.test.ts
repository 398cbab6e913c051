// The admin centre's web UI in a real browser (playwright-core driving Debian's /usr/bin/chromium;
// never a downloaded browser) against the real gateway: sign in with a token, find a message
// delivered over TLS and see its TLS facts, retry a deferred message, see the dashboard charts drawn
// from the traffic sent here, and see a hostile subject rendered as text with no dialog raised; page
// through the trace and the queue, send a test message through a connector, and check that every
// control has a label and is reached with the Tab key.
// Screenshots go to test-artifacts/admin-centre/ (docs/admin-centre.md shows copies of them).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startAdminGateway, type AdminGateway } from '../helpers/admin.ts';
import { cleanup, freePort, ROOT, tempDir } from '../helpers/gateway.ts';
import { makePki } from '../helpers/pki.ts';
import { startPeer, type Peer } from '../helpers/peer.ts';
import { sendOverTls } from '../helpers/smtp.ts';

const CHROMIUM = '/usr/bin/chromium';
const skip = !existsSync(CHROMIUM)
  ? "needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)"
  : !existsSync(path.join(ROOT, 'dist/ui/index.html'))
    ? 'needs the built UI: npm run build'
    : false;
const SHOTS = path.join(ROOT, 'test-artifacts', 'admin-centre');
const HOSTILE = '<img src=x onerror=alert(1)>';
const PEER_IP = '127.0.0.61';

let gw: AdminGateway;
let peer: Peer;
let browser: Browser;
let page: Page;
let dir: string;
let token: string;
const dialogs: string[] = [];
const ids = { tls: '', hostile: '' };
const queued = (text: string) => /queued as ([0-9A-Z]+)/.exec(text)![1];

before(async () => {
  if (skip) return;
  dir = tempDir('pc-admin-ui-');
  const pki = await makePki(dir, 'Partner');
  const cert = await pki.issue('mx.partner.test');
  const peerPort = await freePort(PEER_IP);
  peer = await startPeer({
    host: PEER_IP,
    port: peerPort,
    tls: { cert: readFileSync(cert.cert, 'utf8'), key: readFileSync(cert.key, 'utf8') },
  });
  gw = await startAdminGateway({
    queue: { retrySchedule: [3600] },
    organizations: [
      {
        name: 'contoso',
        acceptedDomains: [{ domain: 'contoso.test' }],
        inboundConnectors: [
          { name: 'Contoso servers', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] },
        ],
        outboundConnectors: [
          {
            name: 'To Partner',
            connectorType: 'partner',
            recipientDomains: ['partner.test'],
            useMXRecord: false,
            smartHosts: [`${PEER_IP}:${peerPort}`],
            tlsSettings: 'encryptionOnly',
          },
        ],
      },
    ],
  });
  token = await gw.token('ui-admin');
  // A message delivered over TLS to the partner's server, and one deferred (ENOTDIR: a file where the mailbox folder belongs) with a hostile subject.
  ids.tls = queued(
    (await sendOverTls(gw.port, 'alice@contoso.test', ['bob@partner.test'], 'Subject: quarterly figures\r\n\r\nhi\r\n'))
      .text,
  );
  const domainDir = path.join(gw.dataDir, 'mailboxes', 'contoso.test');
  mkdirSync(domainDir, { recursive: true });
  writeFileSync(path.join(domainDir, 'blocked'), 'not a folder');
  ids.hostile = queued(
    (await sendOverTls(gw.port, 'mallory@partner.test', ['blocked@contoso.test'], `Subject: ${HOSTILE}\r\n\r\nhi\r\n`))
      .text,
  );
  await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === ids.tls && e.status === 'delivered');
  await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === ids.hostile && e.status === 'deferred');

  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  // The gateway serves its self-signed development certificate: trusted for this loopback test only.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1366, height: 900 } });
  page = await context.newPage();
  page.on('dialog', (d) => {
    dialogs.push(`${d.type()}: ${d.message()}`);
    void d.dismiss();
  });
});
after(async () => {
  await browser?.close();
  await peer?.close();
  await cleanup(gw);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const base = () => `https://127.0.0.1:${gw.adminPort}`;
const shot = (name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

test('sign in with a token: a wrong one is refused, a valid one opens the dashboard', { skip }, async () => {
  await page.goto(`${base()}/`);
  await page.getByLabel('Admin token').fill('pcat_' + 'A'.repeat(43));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'not valid' }).waitFor();
  await shot('sign-in');
  await page.getByLabel('Admin token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Dashboard' }).waitFor();
  assert.match(await page.locator('header .who').innerText(), /ui-admin · all organizations/);
});

test('the dashboard draws its charts from the traffic sent in this test', { skip }, async () => {
  // Report counters reach the store every 2 s: reload (bounded) until both inbound messages are counted.
  const deadline = Date.now() + 20_000;
  let n = '';
  while (Date.now() < deadline) {
    await page.goto(`${base()}/#/dashboard`);
    n = await page.locator('[data-tile="inbound-messages"]').innerText();
    if (n === '2') break;
    await page.waitForTimeout(500);
  }
  assert.equal(n, '2');
  assert.equal(await page.locator('[data-tile="outbound-delivered"]').innerText(), '1');
  const inbound = page.locator('figure[data-chart="inbound-messages"]');
  await inbound.locator('canvas').waitFor();
  assert.match(await inbound.locator('figcaption').innerText(), /TLSv1\.3 2/);
  assert.match(
    await page.locator('figure[data-chart="outbound-security"] figcaption').innerText(),
    /opportunistic-tls 0|connector-forced 1/,
  );
  assert.match(
    await page.locator('figure[data-chart="outbound-security"] figcaption').innerText(),
    /connector-forced 1/,
  );
  const box = await inbound.locator('canvas').boundingBox();
  assert.ok(box && box.width > 300 && box.height > 100, 'the chart is drawn');
  await shot('dashboard');
});

test('find the message delivered over TLS in the trace and see the TLS facts of its hops', { skip }, async () => {
  await page.getByRole('link', { name: 'Message trace' }).click();
  await page.getByLabel('Recipient', { exact: true }).fill('bob@partner.test');
  await page.getByLabel('TLS level achieved').selectOption('encryptionOnly');
  await page.getByRole('button', { name: 'Search' }).click();
  await page.getByRole('link', { name: ids.tls }).click();
  await page.getByRole('heading', { name: `Message ${ids.tls}` }).waitFor();
  const inbound = await page.locator('[data-hop="inbound"]').innerText();
  assert.match(inbound, /TLSv1\.3/);
  const delivery = await page.locator('li[data-kind="delivery"]').first().innerText();
  assert.match(delivery, /TLSv1\.3/);
  assert.match(delivery, /encryptionOnly/);
  assert.match(delivery, new RegExp(PEER_IP.replace(/\./g, '\\.')));
  await shot('message-timeline');
});

test('a hostile subject is shown as text, and no dialog is raised', { skip }, async () => {
  await page.getByRole('link', { name: 'Queue' }).click();
  const row = page.locator('tr', { hasText: ids.hostile });
  await row.waitFor();
  assert.ok((await row.innerText()).includes(HOSTILE), 'the subject as text');
  assert.equal(await page.locator('main img').count(), 0, 'no element made from it');
  await page.goto(`${base()}/#/messages/${ids.hostile}`);
  await page.locator('[data-field="subject"]').filter({ hasText: HOSTILE }).waitFor();
  assert.equal(await page.locator('main img').count(), 0);
  await page.waitForTimeout(300);
  assert.deepEqual(dialogs, []);
  await shot('hostile-subject');
});

test(
  'page through the message trace and the queue with the labelled buttons, from the keyboard',
  { skip },
  async () => {
    // Eleven more messages held in the queue (the mailbox folder is still blocked): 12 queued, 11 from this sender.
    for (let i = 0; i < 11; i++)
      await sendOverTls(gw.port, 'pager@partner.test', ['blocked@contoso.test'], `Subject: page ${i}\r\n\r\nhi\r\n`);
    await gw.waitForLog(
      () => gw.events().filter((e) => e.event === 'delivery.result' && e.status === 'deferred').length >= 12,
    );
    await page.getByRole('link', { name: 'Message trace' }).click();
    await page.getByLabel('Sender').fill('pager@partner.test');
    await page.getByLabel('Sender').press('Enter');
    await page.getByLabel('Rows per page').selectOption('10');
    const rows = page.locator('table[aria-label="messages found"] tbody tr');
    const label = page.locator('[data-pager="messages"]');
    await label.filter({ hasText: 'messages 1–10' }).waitFor();
    assert.equal(await rows.count(), 10);
    const previous = page.getByRole('button', { name: 'Previous page of messages' });
    const next = page.getByRole('button', { name: 'Next page of messages' });
    assert.equal(await previous.isDisabled(), true, 'no page before the first');
    const firstPage = await rows.allInnerTexts();
    await next.focus();
    await page.keyboard.press('Enter');
    await label.filter({ hasText: 'messages 11–11' }).waitFor();
    assert.equal(await rows.count(), 1);
    assert.ok(!firstPage.includes((await rows.allInnerTexts())[0]), 'another message on the second page');
    assert.equal(await next.isDisabled(), true, 'no page after the last');
    await previous.focus();
    await page.keyboard.press('Space');
    await label.filter({ hasText: 'messages 1–10' }).waitFor();
    assert.deepEqual(await rows.allInnerTexts(), firstPage);
    await shot('trace-paging');

    await page.getByRole('link', { name: 'Queue' }).click();
    await page.getByLabel('Rows per page').selectOption('10');
    const queued = page.locator('table[aria-label="queued messages"] tbody tr');
    await page.locator('[data-pager="queued messages"]').filter({ hasText: 'queued messages 1–10' }).waitFor();
    await page.getByRole('button', { name: 'Next page of queued messages' }).click();
    await page.locator('[data-pager="queued messages"]').filter({ hasText: 'queued messages 11–12' }).waitFor();
    assert.equal(await queued.count(), 2);
    await page.getByRole('button', { name: 'Previous page of queued messages' }).click();
    await page.locator('[data-pager="queued messages"]').filter({ hasText: 'queued messages 1–10' }).waitFor();
  },
);

test('retry a deferred message from the queue page: it is delivered', { skip }, async () => {
  rmSync(path.join(gw.dataDir, 'mailboxes', 'contoso.test', 'blocked'));
  await page.getByRole('link', { name: 'Queue' }).click();
  await page.getByRole('button', { name: `Retry ${ids.hostile}` }).click();
  await page
    .getByRole('status')
    .filter({ hasText: `${ids.hostile}: due now` })
    .waitFor();
  await gw.waitForLog((e) => e.event === 'delivery.result' && e.queueId === ids.hostile && e.status === 'delivered');
  await page.getByRole('link', { name: 'Audit log' }).click();
  await page
    .locator('tr', { hasText: 'queue.retry' })
    .filter({ hasText: `message ${ids.hostile}` })
    .waitFor();
  await shot('audit-log');
  for (const [link, name] of [
    ['Certificates', 'certificates'],
    ['TLS reports', 'tls-reports'],
  ] as const) {
    await page.getByRole('link', { name: link }).click();
    await page.getByRole('heading', { name: link }).waitFor();
    await page.waitForLoadState('networkidle');
    await shot(name);
  }
  assert.deepEqual(dialogs, []);
});

test('send a test message through a connector and see the TLS facts of the host that took it', { skip }, async () => {
  const before = peer.messages.length;
  await page.getByRole('link', { name: 'Connectors' }).click();
  await page.getByRole('heading', { name: 'Connectors' }).waitFor();
  assert.equal(
    await page.getByLabel('Test recipient for To Partner').getAttribute('placeholder'),
    'postmaster@partner.test',
  );
  await page.getByLabel('Test recipient for To Partner').fill('helpdesk@partner.test');
  await page.getByRole('button', { name: 'Send a test message through To Partner' }).click();
  const result = page.locator('[data-test-send="To Partner"]');
  await result.filter({ hasText: 'SENT' }).waitFor();
  const text = await result.innerText();
  assert.match(text, new RegExp(`SENT to helpdesk@partner\\.test via ${PEER_IP.replace(/\./g, '\\.')}`));
  assert.match(text, /TLSv1\.3/);
  assert.match(text, /reply 250/);
  assert.equal(peer.messages.length, before + 1);
  assert.deepEqual(peer.messages.at(-1)!.to, ['helpdesk@partner.test']);
  await shot('connectors');
  await page.getByLabel('Test recipient for To Partner').fill('someone@elsewhere.test');
  await page.getByRole('button', { name: 'Send a test message through To Partner' }).click();
  await result.filter({ hasText: 'not in a domain connector "To Partner" serves' }).waitFor();
  assert.equal(peer.messages.length, before + 1, "nothing sent outside the connector's domains");
});

test('every control has a label and the Tab key reaches each of them, on every page', { skip }, async () => {
  const problems: string[] = [];
  const loaded: Record<string, string> = {
    dashboard: 'figure canvas',
    trace: 'table',
    queue: 'table',
    connectors: 'table',
    certificates: 'table',
    reports: 'table',
    audit: 'table',
    messages: 'ol.timeline',
  };
  for (const route of Object.keys(loaded).map((r) => (r === 'messages' ? `messages/${ids.tls}` : r))) {
    await page.goto(`${base()}/#/${route}`);
    await page.reload();
    await page
      .locator(`main ${loaded[route.split('/')[0]]}`)
      .first()
      .waitFor();
    await page.waitForLoadState('networkidle');
    // Labels: form fields by a <label> (or aria-label), buttons and links by their text (or aria-label).
    // (Run in the page: the test's own TypeScript has no DOM types, so these are given as text.)
    const unlabelled = (await page.evaluate(
      `[...document.querySelectorAll('input, select, textarea')]
        .filter((e) => !e.labels?.length && !e.getAttribute('aria-label'))
        .concat([...document.querySelectorAll('button, a')]
          .filter((e) => !e.textContent.trim() && !e.getAttribute('aria-label')))
        .map((e) => e.outerHTML.slice(0, 120))`,
    )) as string[];
    for (const x of unlabelled) problems.push(`${route}: no label: ${x}`);
    // Tab order: from the top of the page, Tab reaches every enabled control.
    const total = (await page.evaluate(
      `(() => {
        const els = [...document.querySelectorAll(
          'a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea')];
        els.forEach((e, i) => e.setAttribute('data-kb', String(i)));
        document.activeElement?.blur();
        return els.length;
      })()`,
    )) as number;
    const reached = new Set<string>();
    for (let i = 0; i < total + 3; i++) {
      await page.keyboard.press('Tab');
      const k = (await page.evaluate(`document.activeElement?.getAttribute('data-kb') ?? null`)) as string | null;
      if (k !== null) reached.add(k);
    }
    const missed = (await page.evaluate(
      `[...document.querySelectorAll('[data-kb]')]
        .filter((e) => !${JSON.stringify([...reached])}.includes(e.getAttribute('data-kb')))
        .map((e) => e.outerHTML.slice(0, 120))`,
    )) as string[];
    for (const x of missed) problems.push(`${route}: not reached with Tab: ${x}`);
    assert.ok(total >= 8, `${route}: the navigation and the page's controls (${total})`);
  }
  assert.deepEqual(problems, []);
});
