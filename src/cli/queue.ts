// Owns: `portcullis queue list|show|retry|bounce|delete` (works against the dataDir while the server runs,
// and from any node of a cluster: actions are written to the store, which every node reads).
// `queue list` pages (--limit, --after the last queue id of the previous page), as the admin API does.
// Events are rendered by trace.ts (one renderer for `trace` and `queue`).
import type { Command } from 'commander';
import { controlRequest } from '../admin/control.ts';
import { AdminError } from '../errors.ts';
import {
  isOpen as open,
  lastAttempts,
  queueAction,
  queueEntryJson,
  queueList,
  refusalText,
  type QueueAction,
} from '../admin/ops/queue.ts';
import { nodeUp, type QueueMessage, type TraceEvent } from '../store/types.ts';
import { peerCertVerdict } from '../tls/facts.ts';
import { isoSeconds as iso } from '../util/time.ts';
import { administrator, cliConfig, cliStore, printJson, withConfig, type CommonOpts } from './context.ts';
import { say, warn } from './terminal.ts';
import { attemptCause, describeEvent } from './trace.ts';

function lastError(m: QueueMessage): string {
  if (!m.lastError) return '';
  try {
    const r = JSON.parse(m.lastError) as { code: number; enhanced: string; message: string };
    return `${r.code} ${r.enhanced} ${r.message}`;
  } catch {
    return m.lastError;
  }
}

/** Why the open recipients wait, grouped: "a@x, b@x: connector "…", host h [ip]:port: 451 4.7.5 …". */
function waitReasons(m: QueueMessage, events: TraceEvent[]): string[] {
  const last = lastAttempts(events);
  const groups = new Map<string, string[]>();
  for (const r of m.recipients.filter((x) => open(x.status))) {
    const e = last.get(r.idx);
    if (!e) continue;
    const cause = attemptCause(e);
    groups.set(cause, [...(groups.get(cause) ?? []), r.address]);
  }
  return [...groups].map(([cause, rcpts]) => `${rcpts.join(', ')}: ${cause}`);
}

/** Whether a server runs on this machine (it was asked to look now), and how many nodes share the store. */
interface Running {
  here: boolean;
  live: number;
}

export function registerQueue(program: Command): void {
  const q = program.command('queue').description('inspect and act on the mail queue');

  withConfig(
    q
      .command('list')
      .description('messages waiting in the queue, and why they wait')
      .option('--json', 'machine-readable output')
      .option('--all', 'include delivered/failed/deleted (done) messages')
      .option('--limit <n>', 'at most this many messages (a page)', '1000')
      .option('--after <id>', 'the page after this queue id (the last message of the previous page)'),
  ).action(async (o: CommonOpts & { all?: boolean; limit: string; after?: string }) => {
    const limit = Number(o.limit);
    if (!Number.isInteger(limit) || limit < 1)
      throw new AdminError(`--limit ${o.limit} is not a positive whole number`, 'e.g. --limit 100');
    const store = await cliStore(cliConfig(o));
    let page;
    try {
      page = await queueList(store, {
        ...(o.all ? { states: ['incoming', 'active', 'deferred', 'held', 'done'] } : {}),
        limit,
        ...(o.after !== undefined ? { after: o.after } : {}),
      });
    } finally {
      await store.close();
    }
    const { messages: msgs, traces } = page;
    if (o.json) return printJson(msgs.map((m, i) => queueEntryJson(m, traces[i])));
    if (!msgs.length) {
      say('queue is empty');
      return;
    }
    say('QUEUE ID          STATE     RECEIVED              SIZE  FROM -> RECIPIENTS');
    msgs.forEach((m, i) => {
      say(
        `${m.id.padEnd(17)} ${m.state.padEnd(9)} ${iso(m.receivedAt)} ${String(m.size).padStart(6)}  ` +
          `<${m.mailFrom}> -> ${m.recipients.map((r) => `${r.address} (${r.status})`).join(', ')}`,
      );
      const pad = ''.padEnd(18);
      if (m.state === 'deferred') say(`${pad}next attempt ${iso(m.nextAttemptAt)}, after ${m.attempts} attempt(s)`);
      const reasons = waitReasons(m, traces[i]);
      for (const r of reasons) say(`${pad}${r}`);
      if (m.state === 'deferred' && !reasons.length && m.lastError) say(`${pad}last error: ${lastError(m)}`);
    });
    say(`${msgs.length} message(s)`);
    if (msgs.length === limit)
      say(`next page: portcullis queue list ${o.all ? '--all ' : ''}--limit ${limit} --after ${msgs[limit - 1].id}`);
  });

  withConfig(
    q
      .command('show')
      .argument('<id>', 'queue id')
      .description('one message: envelope, inbound TLS facts, recipients, and its history (every attempt)')
      .option('--json', 'machine-readable output'),
  ).action(async (id: string, o: CommonOpts) => {
    const store = await cliStore(cliConfig(o));
    const m = await store.get(id);
    const trace = m ? await store.trace(id) : [];
    await store.close();
    if (!m) {
      warn(`no message ${id} in the queue`);
      process.exitCode = 1;
      return;
    }
    if (o.json) return printJson({ ...m, trace });
    const t = m.inbound.tls;
    say(
      `queue id:     ${m.id}\norganization: ${m.org}\nstate:        ${m.state}\nreceived:     ` +
        `${iso(m.receivedAt)} from [${m.inbound.clientIp}] helo ${m.inbound.helo} with ${m.inbound.protocol}`,
    );
    say(
      `tls:          ` +
        (!t
          ? 'none (plaintext)'
          : `${t.version} ${t.cipher} (${t.bits} bits)` +
            (!t.peerCert
              ? '; no client certificate'
              : `; client certificate ${t.peerCert.subject} (${peerCertVerdict(t.peerCert)})` +
                (t.peerCert.revocation ? `; revocation: ${t.peerCert.revocation.summary}` : ''))),
    );
    say(
      `sender:       <${m.mailFrom}>\nmessage-id:   ${m.messageId ?? '(none)'}\nsize:         ${m.size} bytes ` +
        `(sha256 ${m.sha256})`,
    );
    say(
      `dsn:          ret=${m.envelope.ret ?? '-'} envid=${m.envelope.envid ?? '-'} body=${m.envelope.body ?? '-'} ` +
        `smtputf8=${m.envelope.smtputf8}`,
    );
    for (const r of m.recipients)
      say(
        `recipient:    ${r.address} [${r.route}] ${r.status} after ${r.attempts} ` +
          `attempt(s)${r.lastReply ? `: ${r.lastReply.code} ${r.lastReply.enhanced} ${r.lastReply.message}` : ''}`,
      );
    if (m.state === 'deferred') say(`next attempt: ${iso(m.nextAttemptAt)}`);
    say(trace.length ? 'history:' : 'history:      no delivery attempt yet');
    for (const e of trace) say(describeEvent(e, m));
  });

  /** retry, bounce and delete: the shared action (admin/ops/queue.ts), then tell what it did. */
  const act =
    (
      action: QueueAction,
      done: (
        id: string,
        by: string,
        recipients: number | undefined,
        c: ReturnType<typeof cliConfig>,
        running: Running,
      ) => string,
    ) =>
    async (id: string, o: CommonOpts) => {
      const c = cliConfig(o);
      const store = await cliStore(c, 'write');
      const by = administrator();
      const r = await queueAction(store, action, id, by);
      // Other nodes sharing the store (a cluster) pick due work up by themselves.
      const now = Date.now();
      const live =
        r.ok && action !== 'delete'
          ? (await store.nodes(now)).filter((n) => nodeUp(n, c.queue.leaseSeconds, now)).length
          : 0;
      await store.close();
      if (!r.ok) {
        warn(refusalText(action, id, r.why));
        process.exitCode = 1;
        return;
      }
      const here = action === 'delete' ? true : !!(await controlRequest(c.dataDir, { cmd: 'kick' }));
      say(done(id, by, r.recipients, c, { here, live }));
    };
  const noServer = (running: Running, what: string) =>
    running.here
      ? ''
      : running.live
        ? ` (no server runs here: the ${running.live} live node(s) of the cluster pick it up within seconds)`
        : ` (no running server: ${what} when the server starts)`;

  withConfig(q.command('retry').argument('<id>', 'queue id').description('attempt delivery now')).action(
    act('retry', (id, _by, _n, _c, running) => `message ${id} is due now${noServer(running, 'it will be attempted')}`),
  );

  withConfig(
    q
      .command('bounce')
      .argument('<id>', 'queue id')
      .description(
        'return a message to its sender now: its open recipients fail with a DSN (unless NOTIFY declines); its ' +
          'trace is kept',
      ),
  ).action(
    act(
      'bounce',
      (id, by, n, _c, running) =>
        `message ${id} will be returned to its sender for ${n} recipient(s), as asked by ` +
        `${by}${noServer(running, 'it is returned')}`,
    ),
  );

  withConfig(
    q
      .command('delete')
      .argument('<id>', 'queue id')
      .description(
        'take a message out of the queue without delivering it (no bounce); its trace is kept for trace.retentionDays',
      ),
  ).action(
    act(
      'delete',
      (id, by, n, c) =>
        `message ${id} deleted by ${by}: ${n} recipient(s) will not get it; its trace is kept for ` +
        `${c.trace.retentionDays} days (trace.retentionDays)`,
    ),
  );
}
