// Owns: `portcullis queue list|show|retry|delete` (works against the dataDir while the server runs).
import type { Command } from 'commander';
import { controlRequest } from '../admin/control.ts';
import type { QueueMessage } from '../store/types.ts';
import { peerCertVerdict } from '../tls/facts.ts';
import { cliConfig, cliStore, printJson, withConfig, type CommonOpts } from './context.ts';
import { say, warn } from './terminal.ts';

const iso = (t: number) => new Date(t).toISOString().replace('.000Z', 'Z');

function lastError(m: QueueMessage): string {
  if (!m.lastError) return '';
  try { const r = JSON.parse(m.lastError) as { code: number; enhanced: string; message: string }; return `${r.code} ${r.enhanced} ${r.message}`; } catch { return m.lastError; }
}

export function registerQueue(program: Command): void {
  const q = program.command('queue').description('inspect and act on the mail queue');

  withConfig(q.command('list').description('messages waiting in the queue').option('--json', 'machine-readable output')
    .option('--all', 'include delivered/failed (done) messages'))
    .action(async (o: CommonOpts & { all?: boolean }) => {
      const store = cliStore(cliConfig(o));
      const msgs = await store.list(o.all ? { states: ['incoming', 'active', 'deferred', 'held', 'done'] } : {});
      await store.close();
      if (o.json) return printJson(msgs);
      if (!msgs.length) { say('queue is empty'); return; }
      say('QUEUE ID          STATE     RECEIVED              SIZE  FROM -> RECIPIENTS');
      for (const m of msgs) {
        say(`${m.id.padEnd(17)} ${m.state.padEnd(9)} ${iso(m.receivedAt)} ${String(m.size).padStart(6)}  <${m.mailFrom}> -> ${m.recipients.map((r) => `${r.address} (${r.status})`).join(', ')}`);
        if (m.state === 'deferred') say(`${''.padEnd(18)}next attempt ${iso(m.nextAttemptAt)}; last error: ${lastError(m)}`);
      }
      say(`${msgs.length} message(s)`);
    });

  withConfig(q.command('show').argument('<id>', 'queue id').description('one message: envelope, inbound TLS facts, recipients, attempts')
    .option('--json', 'machine-readable output'))
    .action(async (id: string, o: CommonOpts) => {
      const store = cliStore(cliConfig(o));
      const m = await store.get(id);
      const trace = m ? await store.trace(id) : [];
      await store.close();
      if (!m) { warn(`no message ${id} in the queue`); process.exitCode = 1; return; }
      if (o.json) return printJson({ ...m, trace });
      const t = m.inbound.tls;
      say(`queue id:     ${m.id}\norganization: ${m.org}\nstate:        ${m.state}\nreceived:     ${iso(m.receivedAt)} from [${m.inbound.clientIp}] helo ${m.inbound.helo} with ${m.inbound.protocol}`);
      say(`tls:          ${t ? `${t.version} ${t.cipher} (${t.bits} bits)${t.peerCert ? `; client certificate ${t.peerCert.subject} (${peerCertVerdict(t.peerCert)})${t.peerCert.revocation ? `; revocation: ${t.peerCert.revocation.summary}` : ''}` : '; no client certificate'}` : 'none (plaintext)'}`);
      say(`sender:       <${m.mailFrom}>\nmessage-id:   ${m.messageId ?? '(none)'}\nsize:         ${m.size} bytes (sha256 ${m.sha256})`);
      say(`dsn:          ret=${m.envelope.ret ?? '-'} envid=${m.envelope.envid ?? '-'} body=${m.envelope.body ?? '-'} smtputf8=${m.envelope.smtputf8}`);
      for (const r of m.recipients) say(`recipient:    ${r.address} [${r.route}] ${r.status} after ${r.attempts} attempt(s)${r.lastReply ? `: ${r.lastReply.code} ${r.lastReply.enhanced} ${r.lastReply.message}` : ''}`);
      for (const e of trace) say(`event:        ${iso(e.ts)} ${e.kind} ${JSON.stringify(e.data)}`);
    });

  withConfig(q.command('retry').argument('<id>', 'queue id').description('attempt delivery now'))
    .action(async (id: string, o: CommonOpts) => {
      const c = cliConfig(o);
      const store = cliStore(c, 'write');
      const ok = await store.retryNow(id);
      await store.close();
      if (!ok) { warn(`no deferred message ${id} (it may be delivered already or in delivery now)`); process.exitCode = 1; return; }
      const r = await controlRequest(c.dataDir, { cmd: 'kick' });
      say(`message ${id} is due now${r ? '' : ' (no running server: it will be attempted when the server starts)'}`);
    });

  withConfig(q.command('delete').argument('<id>', 'queue id').description('remove a message from the queue without delivering it'))
    .action(async (id: string, o: CommonOpts) => {
      const store = cliStore(cliConfig(o), 'write');
      const ok = await store.remove(id);
      await store.close();
      if (!ok) { warn(`no message ${id} in the queue`); process.exitCode = 1; return; }
      say(`message ${id} deleted`);
    });
}
