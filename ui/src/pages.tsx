// The admin centre's pages, each over the admin API: dashboard charts, message trace and one
// message's timeline, queue actions, connectors with validation and a test message, certificates
// with the rotation readiness check, the TLS reports and the audit log. Values are rendered as
// text only.
import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import { api, qs, when } from './api.ts';
import { Chart, type Series } from './chart.tsx';

type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Load from the API; re-load when `deps` change or `reload()` is called. */
function useApi<T = Any>(
  path: string | null,
  deps: unknown[] = [],
): { data: T | null; error: string; reload: () => void } {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState('');
  const [n, setN] = useState(0);
  useEffect(() => {
    if (!path) return;
    let live = true;
    setError('');
    api<T>('GET', path).then(
      (d) => {
        if (live) setData(d);
      },
      (e: Error) => {
        if (live) setError(e.message);
      },
    );
    return () => {
      live = false;
    };
  }, [path, n, ...deps]);
  return { data, error, reload: () => setN((x) => x + 1) };
}

const Problem = ({ text }: { text: string }) =>
  text ? (
    <p class="error" role="alert">
      {text}
    </p>
  ) : null;
const Section = ({ title, children }: { title: string; children: ComponentChildren }) => (
  <section>
    <h2>{title}</h2>
    {children}
  </section>
);
const pct = (x: number) => `${(x * 100).toFixed(1)} %`;

function Table({
  head,
  rows,
  label,
  empty = 'nothing to show',
}: {
  head: string[];
  rows: ComponentChildren[][];
  label: string;
  empty?: string;
}) {
  if (!rows.length) return <p class="empty">{empty}</p>;
  return (
    <table aria-label={label}>
      <thead>
        <tr>
          {head.map((h) => (
            <th scope="col">{h}</th>
          ))}
        </tr>
      </thead>
      <tbody>
        {rows.map((r) => (
          <tr>
            {r.map((c) => (
              <td>{c}</td>
            ))}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

const PAGE_SIZES = [10, 25, 50, 100, 200];

/** Paging over a listing of the API (limit, offset; `more` when a next page exists). */
function usePaging(initial = 50) {
  const [offset, setOffset] = useState(0);
  const [limit, setLimit] = useState(initial);
  return { offset, limit, setOffset, setLimit: (n: number) => (setLimit(n), setOffset(0)) };
}

/** Previous / next page buttons and the page size, labelled for screen readers and keyboard use. */
function Pager({
  what,
  paging,
  count,
  more,
}: {
  what: string;
  paging: ReturnType<typeof usePaging>;
  count: number;
  more: boolean;
}) {
  const { offset, limit } = paging;
  return (
    <nav class="pager" aria-label={`Pages of ${what}`}>
      <button
        type="button"
        disabled={offset === 0}
        onClick={() => paging.setOffset(Math.max(0, offset - limit))}
        aria-label={`Previous page of ${what}`}
      >
        ‹ Previous
      </button>
      <span data-pager={what}>
        {count ? `${what} ${offset + 1}–${offset + count}` : offset ? `no more ${what}` : ''}
      </span>
      <button
        type="button"
        disabled={!more}
        onClick={() => paging.setOffset(offset + limit)}
        aria-label={`Next page of ${what}`}
      >
        Next ›
      </button>
      <label class="inline">
        Rows per page{' '}
        <select value={String(limit)} onChange={(e) => paging.setLimit(Number((e.target as HTMLSelectElement).value))}>
          {PAGE_SIZES.map((n) => (
            <option value={String(n)}>{n}</option>
          ))}
        </select>
      </label>
    </nav>
  );
}

const RANGES = [
  ['24h', 'Last 24 hours'],
  ['7d', 'Last 7 days'],
  ['30d', 'Last 30 days'],
] as const;

function RangePicker({ value, onChange }: { value: string; onChange: (v: string) => void }) {
  return (
    <label class="inline">
      Range{' '}
      <select value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value)}>
        {RANGES.map(([v, l]) => (
          <option value={v}>{l}</option>
        ))}
      </select>
    </label>
  );
}

export function DashboardPage({ orgs, global }: { orgs: string[]; global: boolean }) {
  const [range, setRange] = useState('24h');
  const [org, setOrg] = useState('');
  const q = qs({ from: range, org: org || undefined });
  const inbound = useApi(`/api/v1/reports/inbound${q}`);
  const outbound = useApi(`/api/v1/reports/outbound${q}`);
  const i = inbound.data;
  const o = outbound.data;
  return (
    <>
      <h1>Dashboard</h1>
      <div class="controls">
        <RangePicker value={range} onChange={setRange} />
        {global && (
          <label class="inline">
            Organization{' '}
            <select value={org} onChange={(e) => setOrg((e.target as HTMLSelectElement).value)}>
              <option value="">whole gateway</option>
              {orgs.map((x) => (
                <option value={x}>{x}</option>
              ))}
            </select>
          </label>
        )}
      </div>
      <Problem text={inbound.error || outbound.error} />
      {i && o && (
        <>
          <div class="tiles">
            <div class="tile">
              <span class="n" data-tile="inbound-messages">
                {i.messages.total}
              </span>{' '}
              inbound messages
            </div>
            <div class="tile">
              <span class="n" data-tile="plaintext-share">
                {pct(i.messages.plaintextShare)}
              </span>{' '}
              of them in plaintext
            </div>
            <div class="tile">
              <span class="n" data-tile="outbound-delivered">
                {o.delivered.total}
              </span>{' '}
              outbound deliveries
            </div>
            <div class="tile">
              <span class="n" data-tile="tls-deferred">
                {o.undelivered.tlsDeferred + o.undelivered.tlsFailed}
              </span>{' '}
              deferred or bounced for TLS
            </div>
          </div>
          <Chart id="inbound-messages" title="Inbound messages by TLS version" series={i.messages.series as Series} />
          <Chart id="inbound-sessions" title="Inbound sessions by TLS version" series={i.sessions.series as Series} />
          <Chart
            id="outbound-security"
            title="Outbound messages by how they were secured"
            series={o.delivered.series as Series}
          />
          <Section title="Inbound messages by TLS version and cipher">
            <Table
              label="inbound by TLS version and cipher"
              head={['TLS version', 'cipher', 'messages']}
              rows={i.messages.byVersionAndCipher.map((r: Any) => [
                r.tlsVersion === 'none' ? 'plaintext' : r.tlsVersion,
                r.cipher || '–',
                r.count,
              ])}
            />
          </Section>
          <Section title="Outbound messages by security">
            <Table
              label="outbound by security"
              head={['secured by', 'messages']}
              rows={o.delivered.bySecurity.map((r: Any) => [r.security, r.count])}
            />
          </Section>
        </>
      )}
    </>
  );
}

const STATUSES = ['', 'pending', 'delivered', 'deferred', 'failed', 'deleted'];
// The TLS levels a delivery can achieve (src/tls/levels.ts TLS_LEVELS).
const LEVELS = ['', 'none', 'opportunistic', 'encryptionOnly', 'certificateValidation', 'domainValidation', 'dane'];

function Field({
  id,
  label,
  value,
  onInput,
}: {
  id: string;
  label: string;
  value: string;
  onInput: (v: string) => void;
}) {
  return (
    <label for={id}>
      {label}
      <input
        id={id}
        name={id}
        type="text"
        value={value}
        onInput={(e) => onInput((e.target as HTMLInputElement).value)}
      />
    </label>
  );
}

function Select({
  id,
  label,
  value,
  options,
  onChange,
}: {
  id: string;
  label: string;
  value: string;
  options: readonly string[];
  onChange: (v: string) => void;
}) {
  return (
    <label for={id}>
      {label}
      <select id={id} name={id} value={value} onChange={(e) => onChange((e.target as HTMLSelectElement).value)}>
        {options.map((x) => (
          <option value={x}>{x || 'any'}</option>
        ))}
      </select>
    </label>
  );
}

const recipients = (m: Any) => m.recipients.map((r: Any) => `${r.address} (${r.status})`).join(', ');

export function TracePage() {
  const [f, setF] = useState({
    sender: '',
    recipient: '',
    messageId: '',
    queueId: '',
    since: '',
    until: '',
    status: '',
    tlsLevel: '',
    connector: '',
  });
  const [filters, setFilters] = useState<Record<string, string>>({});
  const paging = usePaging();
  const res = useApi(`/api/v1/messages${qs({ ...filters, limit: paging.limit, offset: paging.offset })}`);
  const set = (k: keyof typeof f) => (v: string) => setF({ ...f, [k]: v });
  const search = (e: Event) => {
    e.preventDefault();
    setFilters({ ...f });
    paging.setOffset(0);
  };
  return (
    <>
      <h1>Message trace</h1>
      <form class="search" onSubmit={search} aria-label="Search the message trace">
        <Field id="sender" label="Sender" value={f.sender} onInput={set('sender')} />
        <Field id="recipient" label="Recipient" value={f.recipient} onInput={set('recipient')} />
        <Field id="messageId" label="Message-ID" value={f.messageId} onInput={set('messageId')} />
        <Field id="queueId" label="Queue id" value={f.queueId} onInput={set('queueId')} />
        <Field id="since" label="Since (2h, 1d, ISO time)" value={f.since} onInput={set('since')} />
        <Field id="until" label="Until (2h, 1d, ISO time)" value={f.until} onInput={set('until')} />
        <Select id="status" label="Recipient status" value={f.status} options={STATUSES} onChange={set('status')} />
        <Select
          id="tlsLevel"
          label="TLS level achieved"
          value={f.tlsLevel}
          options={LEVELS}
          onChange={set('tlsLevel')}
        />
        <Field id="connector" label="Connector" value={f.connector} onInput={set('connector')} />
        <button type="submit">Search</button>
      </form>
      <Problem text={res.error} />
      {res.data && <Pager what="messages" paging={paging} count={res.data.items.length} more={res.data.more} />}
      {res.data && (
        <Table
          label="messages found"
          empty="no message matches"
          head={['received', 'queue id', 'from', 'subject', 'recipients', 'inbound TLS']}
          rows={res.data.items.map((m: Any) => [
            when(m.receivedAt),
            <a href={`#/messages/${m.id}`}>{m.id}</a>,
            m.mailFrom || '<>',
            m.subject ?? '',
            recipients(m),
            m.inboundTls ? `${m.inboundTls.version} ${m.inboundTls.cipher}` : 'plaintext',
          ])}
        />
      )}
    </>
  );
}

/** The facts of an event as a definition list (text only). */
function Facts({ data }: { data: Record<string, unknown> }) {
  const entries = Object.entries(data).filter(([, v]) => v !== undefined && v !== null && v !== '');
  return (
    <dl class="facts">
      {entries.map(([k, v]) => (
        <>
          <dt>{k}</dt>
          <dd>{typeof v === 'object' ? <Facts data={v as Record<string, unknown>} /> : String(v)}</dd>
        </>
      ))}
    </dl>
  );
}

export function MessagePage({ id }: { id: string }) {
  const res = useApi(`/api/v1/messages/${encodeURIComponent(id)}`);
  const m = res.data;
  return (
    <>
      <h1>Message {id}</h1>
      <Problem text={res.error} />
      {m && (
        <>
          <Section title="Envelope">
            <dl class="facts">
              <dt>subject</dt>
              <dd data-field="subject">{m.subject ?? '(not kept once delivered)'}</dd>
              <dt>from</dt>
              <dd>{m.mailFrom || '<>'}</dd>
              <dt>Message-ID</dt>
              <dd>{m.messageId ?? ''}</dd>
              <dt>organization</dt>
              <dd>{m.org}</dd>
              <dt>state</dt>
              <dd>{m.state}</dd>
              <dt>received</dt>
              <dd>
                {when(m.receivedAt)} from {m.inbound.clientIp} (HELO {m.inbound.helo})
              </dd>
              <dt>recipients</dt>
              <dd>{recipients(m)}</dd>
            </dl>
          </Section>
          <Section title="Inbound hop">
            <div data-hop="inbound">{m.inbound.tls ? <Facts data={m.inbound.tls} /> : <p>plaintext (no TLS)</p>}</div>
          </Section>
          <Section title="Timeline">
            <ol class="timeline">
              {m.timeline.map((e: Any) => (
                <li data-kind={e.kind}>
                  <strong>
                    {when(e.ts)} {e.kind}
                  </strong>
                  <Facts data={e.data} />
                </li>
              ))}
            </ol>
          </Section>
        </>
      )}
    </>
  );
}

export function QueuePage() {
  const paging = usePaging();
  const res = useApi(`/api/v1/queue${qs({ limit: paging.limit, offset: paging.offset })}`);
  const [note, setNote] = useState('');
  const act = async (id: string, action: 'retry' | 'bounce' | 'delete') => {
    if (action !== 'retry' && !confirm(`${action === 'delete' ? 'Delete' : 'Bounce'} message ${id}?`)) return;
    try {
      const r = await api(
        action === 'delete' ? 'DELETE' : 'POST',
        action === 'delete' ? `/api/v1/queue/${id}` : `/api/v1/queue/${id}/${action}`,
      );
      setNote(`${id}: ${r.message}`);
    } catch (e) {
      setNote(`${id}: ${(e as Error).message}`);
    }
    res.reload();
  };
  return (
    <>
      <h1>Queue</h1>
      <p role="status" class="note">
        {note}
      </p>
      <Problem text={res.error} />
      {res.data && <Pager what="queued messages" paging={paging} count={res.data.items.length} more={res.data.more} />}
      {res.data && (
        <Table
          label="queued messages"
          empty="the queue is empty"
          head={['queue id', 'state', 'from', 'subject', 'recipients', 'last attempt', 'actions']}
          rows={res.data.items.map((m: Any) => [
            <a href={`#/messages/${m.id}`}>{m.id}</a>,
            m.state,
            m.mailFrom || '<>',
            m.subject ?? '',
            recipients(m),
            m.recipients
              .map((r: Any) =>
                r.lastAttempt?.reply
                  ? `${r.lastAttempt.reply.code} ${r.lastAttempt.reply.enhanced ?? ''} ` +
                    (r.lastAttempt.reply.message ?? r.lastAttempt.reply.reason ?? '')
                  : '',
              )
              .join('; '),
            <span class="actions">
              <button type="button" onClick={() => act(m.id, 'retry')} aria-label={`Retry ${m.id}`}>
                Retry
              </button>
              <button type="button" onClick={() => act(m.id, 'bounce')} aria-label={`Bounce ${m.id}`}>
                Bounce
              </button>
              <button type="button" class="danger" onClick={() => act(m.id, 'delete')} aria-label={`Delete ${m.id}`}>
                Delete
              </button>
            </span>,
          ])}
        />
      )}
    </>
  );
}

/** The TLS facts of a host's session, in words: "TLSv1.3 TLS_AES_256_GCM_SHA384, chain valid". */
const tlsFacts = (h: Any) =>
  h.tls
    ? `${h.tls.version} ${h.tls.cipher}, certificate ${h.tls.subject ?? ''} ` +
      `(${h.tls.chainValid ? 'chain valid' : `chain not valid: ${h.tls.chainError ?? ''}`})`
    : 'no TLS';

/** One host of a validation: "host:port passes (TLS facts)" or why it fails. */
const validated = (h: Any) =>
  `${h.host}:${h.port} ${h.passes ? `passes (${tlsFacts(h)})` : (h.reason ?? h.error ?? 'fails')}`;

function TestSend({ x }: { x: Any }) {
  const [recipient, setRecipient] = useState('');
  const [r, setR] = useState<Any>(null);
  const id = `test-${x.organization}-${x.name}`.replace(/[^A-Za-z0-9_-]/g, '-');
  const first = x.recipientDomains.find((d: string) => !d.startsWith('*'));
  const send = async (e: Event) => {
    e.preventDefault();
    setR({ running: true });
    try {
      const path = `/api/v1/connectors/${encodeURIComponent(x.organization)}/${encodeURIComponent(x.name)}/test-send`;
      setR(await api('POST', path, recipient.trim() ? { recipient: recipient.trim() } : {}));
    } catch (err) {
      setR({ error: (err as Error).message });
    }
  };
  return (
    <form class="test-send" onSubmit={send} aria-label={`Test message through ${x.name}`}>
      <label for={id}>
        Test recipient for {x.name}
        <input
          id={id}
          name={id}
          type="email"
          value={recipient}
          placeholder={first ? `postmaster@${first}` : 'user@domain'}
          onInput={(e) => setRecipient((e.target as HTMLInputElement).value)}
        />
      </label>
      <button type="submit" aria-label={`Send a test message through ${x.name}`}>
        Send test message
      </button>{' '}
      <span role="status" data-test-send={x.name}>
        {r?.running ? (
          'sending…'
        ) : r?.error ? (
          <span class="error">{r.error}</span>
        ) : r ? (
          r.sent ? (
            <span class="ok">
              SENT to {r.recipient} via {r.via.host} [{r.via.ip}]:{r.via.port}, {tlsFacts(r.via)}; reply{' '}
              {r.via.testMessage}
            </span>
          ) : (
            <span class="error">
              NOT SENT to {r.recipient}:{' '}
              {r.hosts.map((h: Any) => `${h.host}:${h.port} ${h.reason ?? h.error ?? 'refused'}`).join('; ') ||
                'no host to try'}
            </span>
          )
        ) : null}
      </span>
    </form>
  );
}

export function ConnectorsPage() {
  const res = useApi('/api/v1/connectors');
  const [results, setResults] = useState<Record<string, Any>>({});
  const validate = async (x: Any) => {
    const key = `${x.organization}/${x.name}`;
    setResults((r) => ({ ...r, [key]: { running: true } }));
    try {
      const v = await api(
        'POST',
        `/api/v1/connectors/${encodeURIComponent(x.organization)}/${encodeURIComponent(x.name)}/validate`,
        {},
      );
      setResults((r) => ({ ...r, [key]: v }));
    } catch (e) {
      setResults((r) => ({ ...r, [key]: { error: (e as Error).message } }));
    }
  };
  return (
    <>
      <h1>Connectors</h1>
      <p class="hint">
        A test message goes only to an address in a domain the connector serves (by default its postmaster), at most one
        per connector per minute; it is in the audit log.
      </p>
      <Problem text={res.error} />
      {res.data && (
        <Table
          label="connectors"
          empty="no connectors configured"
          head={['organization', 'direction', 'name', 'type', 'TLS', 'validation', 'test message']}
          rows={res.data.items.map((x: Any) => {
            const r = results[`${x.organization}/${x.name}`];
            return [
              x.organization,
              x.direction,
              x.name,
              x.connectorType,
              x.direction === 'outbound' ? x.tlsSettings : x.requireTls ? 'required' : 'optional',
              x.direction === 'outbound' ? (
                <span>
                  <button type="button" onClick={() => validate(x)} aria-label={`Validate ${x.name}`}>
                    Validate
                  </button>{' '}
                  <span role="status">
                    {r?.running ? (
                      'checking…'
                    ) : r?.error ? (
                      <span class="error">{r.error}</span>
                    ) : r ? (
                      <span class={r.passes ? 'ok' : 'error'}>
                        {r.passes ? 'PASS' : 'FAIL'}: {r.hosts.map(validated).join('; ')}
                      </span>
                    ) : null}
                  </span>
                </span>
              ) : (
                'checked by the sending partner'
              ),
              x.direction === 'outbound' ? <TestSend x={x} /> : '',
            ];
          })}
        />
      )}
    </>
  );
}

export function CertificatesPage() {
  const res = useApi('/api/v1/certificates');
  const [checks, setChecks] = useState<Record<string, Any>>({});
  const check = async (id: string) => {
    setChecks((c) => ({ ...c, [id]: { running: true } }));
    try {
      const r = await api('GET', `/api/v1/certificates/${id}/readiness`);
      setChecks((c) => ({ ...c, [id]: r }));
    } catch (e) {
      setChecks((c) => ({ ...c, [id]: { error: (e as Error).message } }));
    }
  };
  return (
    <>
      <h1>Certificates</h1>
      <Problem text={res.error} />
      {res.data && (
        <Table
          label="certificates"
          empty="no certificates"
          head={['subject', 'role', 'where', 'expires', 'days left', 'warnings', 'rotation readiness']}
          rows={res.data.items.map((c: Any) => {
            const r = checks[c.id];
            return [
              c.subject,
              c.role === 'server' ? 'gateway certificate' : `trusted CA (${c.org})`,
              c.source,
              when(c.validTo),
              <span class={c.daysLeft < 30 ? 'error' : ''}>{c.daysLeft}</span>,
              c.warnings.join('; '),
              c.role === 'server' ? (
                <span>
                  <button
                    type="button"
                    onClick={() => check(c.id)}
                    aria-label={`Check rotation readiness of ${c.subject}`}
                  >
                    Check readiness
                  </button>{' '}
                  {r?.running ? (
                    'checking…'
                  ) : r?.error ? (
                    <span class="error">{r.error}</span>
                  ) : r ? (
                    <span class={r.ready ? 'ok' : 'error'}>
                      {r.ready ? 'ready' : 'not ready'}:{' '}
                      {r.current.problems.map((p: Any) => p.text).join('; ') || 'no problems'}; next certificate:{' '}
                      {r.next.staged ? 'staged' : 'none staged'}
                    </span>
                  ) : null}
                </span>
              ) : (
                ''
              ),
            ];
          })}
        />
      )}
    </>
  );
}

export function ReportsPage() {
  const [range, setRange] = useState('7d');
  const q = qs({ from: range, limit: 100 });
  const failures = useApi(`/api/v1/reports/outbound/tls-failures${q}`);
  const plain = useApi(`/api/v1/reports/outbound/plaintext-domains${q}`);
  const peers = useApi(`/api/v1/reports/inbound/peers${q}`);
  const received = useApi('/api/v1/tlsrpt/received');
  return (
    <>
      <h1>TLS reports</h1>
      <div class="controls">
        <RangePicker value={range} onChange={setRange} />
      </div>
      <Problem text={failures.error || plain.error || peers.error} />
      <Section title="Deferred or bounced because required TLS failed">
        {failures.data && (
          <Table
            label="TLS failures by domain"
            empty="none in this range"
            head={['recipient domain', 'required by', 'failure', 'result type (RFC 8460)', 'deferred', 'bounced']}
            rows={failures.data.rows.map((r: Any) => [
              r.domain,
              r.requirement,
              r.label,
              r.resultType,
              r.deferred,
              r.failed,
            ])}
          />
        )}
      </Section>
      <Section title="Recipient domains that took mail only in plaintext">
        {plain.data && (
          <Table
            label="plaintext-only domains"
            empty="none in this range"
            head={['recipient domain', 'messages']}
            rows={plain.data.domains.map((d: Any) => [d.domain, d.messages])}
          />
        )}
      </Section>
      <Section title={`Clients still on plaintext${peers.data?.oldestTls ? ` or ${peers.data.oldestTls}` : ''}`}>
        {peers.data && (
          <Table
            label="clients on plaintext or the oldest TLS"
            empty="none in this range"
            head={['address', 'HELO name', 'TLS', 'sessions']}
            rows={peers.data.peers.map((p: Any) => [
              p.ip,
              p.helo,
              p.tlsVersion === 'none' ? 'plaintext' : p.tlsVersion,
              p.sessions,
            ])}
          />
        )}
      </Section>
      <Section title="TLS-RPT reports received (RFC 8460)">
        {received.data && (
          <Table
            label="TLS-RPT reports received"
            empty="no TLS reports received (tlsRpt.receive)"
            head={['reporting organization', 'policy domain', 'policy', 'reports', 'successful', 'failed', 'failures']}
            rows={received.data.summary.map((x: Any) => [
              x.organization,
              x.policyDomain,
              x.policyType,
              x.reports,
              x.successful,
              x.failed,
              Object.entries(x.failures)
                .map(([k, n]) => `${k} ${String(n)}`)
                .join(', '),
            ])}
          />
        )}
        {received.data?.flagged.length > 0 && (
          <Table
            label="unreadable TLS-RPT reports"
            head={['received', 'from', 'problem']}
            rows={received.data.flagged.map((f: Any) => [f.receivedAt, f.from, f.problem])}
          />
        )}
      </Section>
    </>
  );
}

export function AuditPage() {
  const paging = usePaging();
  const res = useApi(`/api/v1/audit${qs({ limit: paging.limit, offset: paging.offset })}`);
  return (
    <>
      <h1>Audit log</h1>
      <Problem text={res.error} />
      {res.data && <Pager what="audit entries" paging={paging} count={res.data.entries.length} more={res.data.more} />}
      {res.data && (
        <Table
          label="audit log"
          empty="no entries"
          head={['time', 'who', 'action', 'target', 'result', 'detail']}
          rows={res.data.entries.map((e: Any) => [
            when(e.ts),
            `${e.actor}${e.org ? ` (${e.org})` : ''}`,
            e.action,
            e.target ?? '',
            `${e.result}${e.status ? ` (${e.status})` : ''}`,
            e.detail ?? '',
          ])}
        />
      )}
    </>
  );
}
