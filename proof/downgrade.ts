// Issue 5 item 4: downgrade and injection against our client.
// A loopback man in the middle (proof/lib/tls-mitm.ts) sits in front of an honest STARTTLS server
// and strips STARTTLS from EHLO, answers STARTTLS with 454 or 502, forwards the 220 with injected
// reply lines (in the same segment, or after the client started its handshake), or intercepts
// TLS with a certificate for the right name that is self-signed or from a CA we do not trust.
// Every case runs against opportunistic delivery, every forced level (encryptionOnly,
// certificateValidation, domainValidation) and a destination whose MTA-STS policy (RFC 8461,
// mode enforce, served over HTTPS on 127.0.2.253:443) names the MX hosts. Opportunistic delivery may fall back to plaintext but
// must record it in the trace; a forced level must defer and never let the message, or a single
// MAIL/RCPT/DATA command, cross the wire in cleartext. The same attacks against destinations that
// publish DANE TLSA records (lib/downgrade-dane.ts): every one deferred, nothing leaked.
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { issueCertificate } from '../src/tls/certgen.ts';
import { freePort, startGateway, type GatewayHandle } from '../test/helpers/gateway.ts';
import { makePki } from '../test/helpers/pki.ts';
import { startDnsServer, type DnsServer, type Zone } from '../test/helpers/dns-server.ts';
import { startPeer, type Peer } from '../test/helpers/peer.ts';
import { SmtpClient } from '../test/helpers/smtp.ts';
import { startStsServer, type StsServer } from '../test/helpers/sts-server.ts';
import { startMitm, type Mitm, type MitmMode } from './lib/tls-mitm.ts';
import { runDaneDowngrade } from './lib/downgrade-dane.ts';
import type { ProofContext, ProofModule, ProofSection } from './types.ts';
import { until } from '../test/helpers/wait.ts';

const CMD = 'npm run proof -- --only downgrade';

type Level = 'opportunistic' | 'encryptionOnly' | 'certificateValidation' | 'domainValidation' | 'mtaStsEnforce';
const LEVELS: { level: Level; domain: string }[] = [
  { level: 'opportunistic', domain: 'opp.test' },
  { level: 'encryptionOnly', domain: 'enc.test' },
  { level: 'certificateValidation', domain: 'cv.test' },
  { level: 'domainValidation', domain: 'dv.test' },
  // No connector: the recipient domain's MTA-STS policy (mode enforce, mx *.fabrikam.test) demands it.
  { level: 'mtaStsEnforce', domain: 'sts.test' },
];
/** Where the MTA-STS policies are served (one HTTPS server for every case's domain). */
const STS_IP = '127.0.2.253';
/** Levels that authenticate the server (a forged certificate must be refused). */
const authenticated = (l: Level) => l === 'certificateValidation' || l === 'domainValidation' || l === 'mtaStsEnforce';
const forced = (l: Level) => l !== 'opportunistic';

/** Expected outcome kinds. */
type Kind = 'tls' | 'tls-interceptor' | 'plaintext' | 'defer-4.7.4' | 'defer-4.7.5';

interface Case {
  id: string;
  label: string;
  mode: MitmMode;
  cert?: 'self' | 'untrusted' | 'good';
  /** Messages per cell sent one after the other (each waits for the previous result). */
  sequential?: number;
  expect: Record<Level, Kind>;
  /** What the trace of an opportunistic plaintext delivery must say. */
  fallback?: RegExp;
}

const all = (k: Kind): Record<Level, Kind> => ({
  opportunistic: k,
  encryptionOnly: k,
  certificateValidation: k,
  domainValidation: k,
  mtaStsEnforce: k,
});
const CASES: Case[] = [
  { id: 'control', label: 'control: untouched relay', mode: 'passthrough', expect: all('tls') },
  {
    id: 'resume',
    label: 'control: honest server with TLS session resumption, 3 connections in a row',
    mode: 'intercept',
    cert: 'good',
    sequential: 3,
    expect: all('tls'),
  },
  {
    id: 'strip',
    label: '(a) STARTTLS stripped from EHLO',
    mode: 'strip',
    expect: { ...all('defer-4.7.4'), opportunistic: 'plaintext' },
    fallback: /^STARTTLS not offered$/,
  },
  {
    id: 's454',
    label: '(b) STARTTLS answered 454',
    mode: 'reply454',
    expect: { ...all('defer-4.7.4'), opportunistic: 'plaintext' },
    fallback: /^STARTTLS refused: 454 /,
  },
  {
    id: 's502',
    label: '(c) STARTTLS answered 502',
    mode: 'reply502',
    expect: { ...all('defer-4.7.4'), opportunistic: 'plaintext' },
    fallback: /^STARTTLS refused: 502 /,
  },
  { id: 'inject', label: '(d) 220 + injected reply lines (same segment)', mode: 'inject', expect: all('tls') },
  {
    id: 'injectlate',
    label: "(d') 220, injected lines after the ClientHello",
    mode: 'injectSplit',
    expect: { ...all('defer-4.7.5'), opportunistic: 'plaintext' },
    fallback: /TLS handshake (with this host )?failed/,
  },
  {
    id: 'selfsigned',
    label: '(e) interception, self-signed cert for the right name',
    mode: 'intercept',
    cert: 'self',
    expect: {
      opportunistic: 'tls-interceptor',
      encryptionOnly: 'tls-interceptor',
      certificateValidation: 'defer-4.7.5',
      domainValidation: 'defer-4.7.5',
      mtaStsEnforce: 'defer-4.7.5',
    },
  },
  {
    id: 'untrustedca',
    label: "(e') interception, right name from an untrusted CA",
    mode: 'intercept',
    cert: 'untrusted',
    expect: {
      opportunistic: 'tls-interceptor',
      encryptionOnly: 'tls-interceptor',
      certificateValidation: 'defer-4.7.5',
      domainValidation: 'defer-4.7.5',
      mtaStsEnforce: 'defer-4.7.5',
    },
  },
];

const KIND_TEXT: Record<Kind, string> = {
  tls: 'delivered over TLS',
  'tls-interceptor': 'delivered over TLS to the interceptor',
  plaintext: 'delivered in plaintext',
  'defer-4.7.4': 'deferred 451 4.7.4',
  'defer-4.7.5': 'deferred 451 4.7.5',
};

interface Attempt {
  status: string;
  tlsAchieved?: string;
  fallback?: string;
  error?: string;
  tls?: {
    version: string;
    cipher: string;
    chainValid: boolean;
    chainError?: string;
    subject?: string;
    resumed?: boolean;
  };
  reply: { code: number; enhanced: string; reason?: string };
}

async function relay(gw: GatewayHandle, to: string, marker: string): Promise<string> {
  const c = await SmtpClient.connect(gw.port);
  try {
    await c.hello();
    const from = 'sender@contoso.test';
    const r = await c.send(
      from,
      [to],
      `From: <${from}>\r\nTo: <${to}>\r\nSubject: downgrade proof\r\nMessage-ID: <${marker}@contoso.test>\r\n\r\nconfidential: ${marker}\r\n`,
    );
    if (r.code !== 250) throw new Error(`relay to ${to} refused: ${r.text}`);
    return /queued as (\w+)/.exec(r.text)![1];
  } finally {
    c.close();
  }
}

const mod: ProofModule = {
  name: 'downgrade',
  async run(ctx: ProofContext): Promise<ProofSection[]> {
    const repeats = ctx.size === 'full' ? 5 : 1;
    const dir = path.join(ctx.workDir, 'gw');
    mkdirSync(dir, { recursive: true });
    const pki = await makePki(ctx.workDir, 'Downgrade');
    const evil = await makePki(ctx.workDir, 'Evil');
    const good = await pki.issue('mx.fabrikam.test', { dnsNames: ['*.fabrikam.test'] });
    const untrusted = await evil.issue('intercept.fabrikam.test', { dnsNames: ['*.fabrikam.test'] });
    const self = await issueCertificate({
      subject: 'CN=mx.fabrikam.test, O=Interceptor',
      dnsNames: ['*.fabrikam.test'],
      key: 'rsa2048',
    });
    const certs = {
      good: { cert: readFileSync(good.chain, 'utf8'), key: readFileSync(good.key, 'utf8') },
      self: { cert: self.certPem, key: self.keyPem },
      untrusted: { cert: readFileSync(untrusted.chain, 'utf8'), key: readFileSync(untrusted.key, 'utf8') },
    };
    let backend: Peer | undefined;
    let dns: DnsServer | undefined;
    let gw: GatewayHandle | undefined;
    let sts: StsServer | undefined;
    const mitms = new Map<string, Mitm>();
    const key = (c: Case, l: Level) => `${c.id}/${l}`;
    const marker = /PROOF-SECRET-[a-zA-Z0-9]+-[a-zA-Z]+-\d+/;
    try {
      backend = await startPeer({
        host: '127.0.2.1',
        port: await freePort('127.0.2.1'),
        name: 'mx.fabrikam.test',
        tls: { cert: readFileSync(good.chain, 'utf8'), key: readFileSync(good.key, 'utf8') },
      });
      const zone: Zone = {};
      let port = 0;
      for (let attempt = 0; attempt < 5 && mitms.size < CASES.length * LEVELS.length; attempt++) {
        for (const m of mitms.values()) await m.close();
        mitms.clear();
        port = await freePort('127.0.2.10');
        let n = 10;
        try {
          for (const c of CASES) {
            for (const { level, domain } of LEVELS) {
              const ip = `127.0.2.${n++}`;
              const host = `mx-${c.id}-${level.toLowerCase()}.fabrikam.test`;
              mitms.set(
                key(c, level),
                await startMitm({
                  ip,
                  port,
                  mode: c.mode,
                  backend: { host: backend.host, port: backend.port },
                  marker,
                  ...(c.cert ? { cert: certs[c.cert] } : {}),
                }),
              );
              zone[host] = { A: [ip] };
              zone[`${c.id}.${domain}`] = { MX: [{ exchange: host, priority: 10 }] };
            }
          }
        } catch (e) {
          if (!/EADDRINUSE/.test(String(e)) || attempt === 4) throw e;
        }
      }
      // MTA-STS: every case's sts.test domain publishes an enforce policy naming the MX hosts.
      const stsNames = CASES.map((c) => `mta-sts.${c.id}.sts.test`);
      for (const c of CASES) {
        zone[`_mta-sts.${c.id}.sts.test`] = { TXT: ['v=STSv1; id=proof1;'] };
        zone[`mta-sts.${c.id}.sts.test`] = { A: [STS_IP] };
      }
      sts = await startStsServer(
        STS_IP,
        await pki.issue('mta-sts.sts.test', { dnsNames: stsNames }),
        'version: STSv1\r\nmode: enforce\r\nmx: *.fabrikam.test\r\nmax_age: 86400\r\n',
      );
      dns = await startDnsServer(zone);
      gw = await startGateway({
        dir,
        config: {
          dns: { servers: [dns.server] },
          tls: { trust: { system: false, caFiles: [pki.rootFile] }, revocation: 'off' },
          // No connection reuse: every message meets the man in the middle on a new connection.
          delivery: {
            port,
            timeouts: { connect: 3, greeting: 10, command: 10 },
            destinationDownSeconds: 0,
            connectionReuse: { idleSeconds: 0 },
          },
          queue: { retrySchedule: [3600], delayWarning: 0 },
          organizations: [
            {
              name: 'contoso',
              acceptedDomains: [{ domain: 'contoso.test' }],
              inboundConnectors: [
                { name: 'Local submission', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] },
              ],
              outboundConnectors: [
                { name: 'Enc', recipientDomains: ['*.enc.test'], tlsSettings: 'encryptionOnly' },
                { name: 'Certval', recipientDomains: ['*.cv.test'], tlsSettings: 'certificateValidation' },
                {
                  name: 'Domainval',
                  recipientDomains: ['*.dv.test'],
                  tlsSettings: 'domainValidation',
                  tlsDomain: '*.fabrikam.test',
                },
              ],
            },
          ],
        },
      });
      ctx.log(
        `gateway on 127.0.0.1:${gw.port}; honest server 127.0.2.1:${backend.port}; ${mitms.size} MITM peers on 127.0.2.10-${9 + mitms.size}:${port}; ${repeats} message(s) per cell`,
      );

      // Every cell's messages; each body carries a secret marker the MITM looks for on the wire.
      const queued = new Map<string, { id: string; marker: string }[]>();
      const result = (id: string) =>
        gw!.events().find((e) => e.event === 'delivery.result' && e.queueId === id && e.agent === 'smtp');
      const sequential: Promise<void>[] = [];
      for (const c of CASES) {
        for (const { level, domain } of LEVELS) {
          const list: { id: string; marker: string }[] = [];
          queued.set(key(c, level), list);
          const send = async (i: number) => {
            const m = `PROOF-SECRET-${c.id}-${level}-${i}`;
            const id = await relay(gw!, `u${i}@${c.id}.${domain}`, m);
            list.push({ id, marker: m });
            return id;
          };
          if (c.sequential) {
            sequential.push(
              (async () => {
                for (let i = 0; i < Math.max(repeats, c.sequential!); i++) {
                  const id = await send(i);
                  await until(`delivery of ${id}`, () => result(id), 30_000);
                }
              })(),
            );
          } else for (let i = 0; i < repeats; i++) await send(i);
        }
      }
      await Promise.all(sequential);
      const ids = [...queued.values()].flat().map((x) => x.id);
      await until('a delivery result for every downgrade message', () => ids.every((id) => result(id)), 90_000);
      const tr = await gw.cli(['trace', '--since', '1h', '--limit', '10000', '--json']);
      if (tr.code !== 0) throw new Error(`trace failed: ${tr.stderr}`);
      const traces = new Map(
        (JSON.parse(tr.stdout) as { id: string; trace: { kind: string; data: Attempt }[] }[]).map((m) => [
          m.id,
          m.trace.filter((t) => t.kind === 'delivery').map((t) => t.data),
        ]),
      );

      const failures: string[] = [];
      const matrix: (string | number)[][] = [];
      const perLevel = new Map(
        LEVELS.map(({ level }) => [
          level,
          {
            cases: 0,
            messages: 0,
            tls: 0,
            interceptor: 0,
            plaintext: 0,
            deferred: 0,
            leaked: 0,
            plainCommands: 0,
            interceptorRead: 0,
            unexpected: 0,
          },
        ]),
      );
      for (const c of CASES) {
        const row: (string | number)[] = [c.label];
        let tampered = 0;
        for (const { level } of LEVELS) {
          const m = mitms.get(key(c, level))!;
          const st = m.stats();
          tampered += st.tampered;
          const agg = perLevel.get(level)!;
          agg.cases++;
          const kinds: Kind[] = [];
          const notes = new Set<string>();
          for (const q of queued.get(key(c, level))!) {
            agg.messages++;
            const ev = result(q.id)!;
            const at = traces.get(q.id)?.at(-1);
            let kind: Kind | string;
            if (ev.status === 'delivered') {
              if (at?.tls) kind = c.mode === 'intercept' && c.cert !== 'good' ? 'tls-interceptor' : 'tls';
              else kind = 'plaintext';
            } else if (ev.status === 'deferred') kind = `defer-${String(ev.enhanced)}`;
            else kind = `${String(ev.status)} ${String(ev.code)} ${String(ev.enhanced)}`;
            kinds.push(kind as Kind);
            if (kind === 'tls') agg.tls++;
            else if (kind === 'tls-interceptor') agg.interceptor++;
            else if (kind === 'plaintext') agg.plaintext++;
            else if (ev.status === 'deferred') agg.deferred++;
            const want = c.expect[level];
            const where = `${c.id} × ${level} (${q.id})`;
            if (kind !== want) {
              agg.unexpected++;
              failures.push(
                `${where}: expected ${KIND_TEXT[want]}, got ${String(ev.status)} ${String(ev.code ?? '')} ${String(ev.enhanced ?? '')} ${String(ev.reason ?? '')}`,
              );
            }
            if (kind === 'plaintext') {
              if (at?.tlsAchieved !== 'none')
                failures.push(`${where}: plaintext delivery traced as achieved ${at?.tlsAchieved}`);
              if (!at?.fallback) failures.push(`${where}: plaintext delivery without a fallback note in the trace`);
              else if (c.fallback && !c.fallback.test(at.fallback))
                failures.push(`${where}: fallback note "${at.fallback}" does not match ${c.fallback}`);
              if (at?.fallback) notes.add(`trace: ${at.fallback.replace(/ \(.*$/, '').replace(/ until .*$/, '')}`);
            }
            if (kind === 'tls' || kind === 'tls-interceptor') {
              notes.add(
                `${at?.tls?.version ?? '?'}, achieved ${at?.tlsAchieved}${at?.tls?.resumed ? ', resumed' : ''}`,
              );
              if (kind === 'tls-interceptor' && at?.tls?.chainValid)
                failures.push(`${where}: the interception certificate was judged valid`);
              if (
                kind === 'tls' &&
                (level === 'domainValidation' || level === 'mtaStsEnforce') &&
                at?.tlsAchieved !== 'domainValidation'
              )
                failures.push(`${where}: achieved ${at?.tlsAchieved}`);
            }
            if (ev.status === 'deferred') {
              const reason = String(ev.reason ?? '');
              const source =
                level === 'mtaStsEnforce' ? 'TLS required by MTA-STS (policy of ' : 'TLS required by connector';
              if (!reason.startsWith(source))
                failures.push(`${where}: deferral reason does not name the TLS requirement (${source}…): ${reason}`);
              notes.add(
                /did not offer STARTTLS/.test(reason)
                  ? 'did not offer STARTTLS'
                  : /refused STARTTLS: (\d{3})/.test(reason)
                    ? `refused STARTTLS: ${/refused STARTTLS: (\d{3})/.exec(reason)![1]}`
                    : /TLS handshake with .* failed: (\S+)/.test(reason)
                      ? `TLS handshake failed: ${/failed: (\S+)/.exec(reason)![1]}`
                      : /certificate not valid \(/.test(reason)
                        ? `certificate not valid: ${/certificate not valid \((.*?)\), presented/.exec(reason)?.[1] ?? '?'}`
                        : reason.slice(0, 80),
              );
            }
          }
          // What the man in the middle saw.
          const leakedHere = st.wireMarkers.length;
          agg.leaked += leakedHere;
          agg.plainCommands += st.plainTransaction;
          if (c.cert !== 'good') agg.interceptorRead += st.interceptedMarkers.length;
          if (forced(level)) {
            if (st.plainTransaction || st.plainBodyBytes || leakedHere)
              failures.push(
                `${c.id} × ${level}: LEAK — ${st.plainTransaction} MAIL/RCPT/DATA and ${st.plainBodyBytes} message bytes in cleartext, ${leakedHere} message(s) seen on the wire`,
              );
            if (
              c.cert !== 'good' &&
              authenticated(level) &&
              (st.interceptedTransaction || st.interceptedMarkers.length)
            ) {
              failures.push(
                `${c.id} × ${level}: the interceptor read ${st.interceptedTransaction} commands / ${st.interceptedMarkers.length} message(s)`,
              );
            }
          }
          if (c.mode !== 'passthrough' && st.tampered === 0)
            failures.push(`${c.id} × ${level}: the MITM never carried out the attack (${st.connections} connections)`);
          if (c.mode === 'intercept' && st.interceptedSessions === 0)
            failures.push(
              `${c.id} × ${level}: our client never reached the interception handshake (the attack was not exercised)`,
            );
          if (c.sequential) {
            const resumed = queued.get(key(c, level))!.filter((q) => traces.get(q.id)?.at(-1)?.tls?.resumed).length;
            if (forced(level) && level !== 'encryptionOnly' && resumed)
              failures.push(
                `${c.id} × ${level}: ${resumed} delivery(ies) on a resumed session (no certificate to check)`,
              );
            if (!forced(level) && !resumed)
              failures.push(
                `${c.id} × ${level}: no connection resumed the TLS session (the control did not exercise resumption)`,
              );
          }
          const uniq = [...new Set(kinds)];
          const cell =
            uniq.map((k) => KIND_TEXT[k as Kind] ?? `UNEXPECTED ${k}`).join(' / ') +
            (repeats > 1 ? ` ×${kinds.length}` : '');
          const seen = forced(level)
            ? `; cleartext MAIL/RCPT/DATA ${st.plainTransaction}, leaked ${leakedHere}`
            : `; leaked ${leakedHere}`;
          row.push(
            `${cell} (${[...notes].join('; ')}${seen}${st.interceptedMarkers.length && c.cert !== 'good' ? `; read by interceptor ${st.interceptedMarkers.length}` : ''})`,
          );
        }
        row.splice(1, 0, c.mode === 'passthrough' || c.cert === 'good' ? 'none (control)' : tampered);
        matrix.push(row);
      }
      // The honest server: a forced level's message may reach it only over TLS.
      const forcedDomains = LEVELS.filter((l) => forced(l.level)).map((l) => l.domain);
      const plainAtBackend = backend.messages.filter(
        (m) =>
          !m.tls &&
          m.to.some(
            (t) => forcedDomains.some((d) => t.endsWith(`.${d}`)) && !/^u\d+@(selfsigned|untrustedca|resume)\./.test(t),
          ),
      );
      if (plainAtBackend.length)
        failures.push(`the honest server received ${plainAtBackend.length} forced-level message(s) without TLS`);

      const summary: (string | number)[][] = LEVELS.map(({ level }) => {
        const a = perLevel.get(level)!;
        return [
          level,
          a.cases,
          a.messages,
          a.tls,
          a.interceptor,
          a.deferred,
          a.plaintext,
          a.plainCommands,
          a.leaked,
          a.interceptorRead,
          a.unexpected,
        ];
      });
      const forcedLeaks = LEVELS.filter((l) => forced(l.level)).reduce(
        (n, l) => n + perLevel.get(l.level)!.leaked + perLevel.get(l.level)!.plainCommands,
        0,
      );
      ctx.log(
        `cases ${CASES.length} × levels ${LEVELS.length}, messages ${ids.length}, forced-level plaintext leaks ${forcedLeaks}, failures ${failures.length}`,
      );
      return [
        {
          title: 'Downgrade and injection against our client: case × level',
          command: CMD,
          table: { header: ['MITM case', 'attacks carried out', ...LEVELS.map((l) => l.level)], rows: matrix },
          notes: [
            'Each cell has its own man in the middle (proof/lib/tls-mitm.ts, its own 127.0.2.x address) in front of one honest STARTTLS server whose certificate (*.fabrikam.test) chains to a CA the gateway trusts; routing is by MX through a loopback DNS server. Forced levels come from outbound connectors (encryptionOnly, certificateValidation, domainValidation with tlsDomain *.fabrikam.test); opportunistic is the default route.',
            `mtaStsEnforce: no connector; each recipient domain publishes \`_mta-sts\` TXT and an enforce policy (mx *.fabrikam.test) served over HTTPS on ${STS_IP}:443 (${sts.requests.length} policy fetch(es)), so the policy alone demands TLS 1.2+ and a valid certificate for the MX host name.`,
            '"leaked" = messages whose secret body marker the MITM saw in cleartext on the wire; "cleartext MAIL/RCPT/DATA" = transaction commands it saw before any TLS. Both must be 0 at every forced level, in every case.',
            `Injected lines: ${JSON.stringify('250-mitm.injected.test / 250 AUTH PLAIN / 554 5.7.1 injected by the man in the middle')} after the 220 to STARTTLS. Sent in the same segment they are discarded with the rest of the plaintext buffer (delivery succeeds over TLS: had the client parsed them, its post-TLS EHLO and MAIL would have got the fake replies). Sent after the ClientHello they break the handshake: forced levels defer 4.7.5, opportunistic falls back to plaintext and says so.`,
            'Interception: encryptionOnly means "encrypted, any certificate" (no authentication by definition), so a forged certificate gets the message over TLS at that level and with opportunistic TLS; certificateValidation and domainValidation refuse it (4.7.5) and the interceptor reads nothing. This is the documented meaning of the levels, not a leak: nothing crosses the wire in cleartext.',
            'Opportunistic TLS (RFC 7435) falls back to plaintext when STARTTLS is missing, refused or broken: each such delivery is traced with tlsAchieved none and the fallback reason shown in the cell.',
          ],
          failures,
        },
        {
          title: 'Downgrade and injection: totals per TLS level',
          command: CMD,
          table: {
            header: [
              'level',
              'cases tried',
              'messages',
              'delivered over TLS',
              'delivered over TLS to an interceptor',
              'deferred 4.7.x',
              'delivered in plaintext',
              'cleartext MAIL/RCPT/DATA',
              'messages leaked in plaintext',
              'messages read by an interceptor',
              'unexpected outcomes',
            ],
            rows: summary,
          },
          notes: [
            `Leaked messages at forced levels: ${forcedLeaks} (must be 0). ${repeats} message(s) per case and level.`,
          ],
          failures: forcedLeaks ? [`${forcedLeaks} plaintext leak(s) at forced levels`] : [],
        },
        await runDaneDowngrade(ctx, CMD, repeats),
      ];
    } finally {
      await gw?.stop();
      for (const m of mitms.values()) await m.close();
      await backend?.close();
      await sts?.close();
      await dns?.close();
    }
  },
};

export default mod;
