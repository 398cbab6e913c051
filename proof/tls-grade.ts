// Issue 5 item 3: TLS grading with a tool nobody here wrote.
// Inbound: testssl.sh (the Debian package) grades the gateway's STARTTLS port with an RSA
// certificate from the test PKI (so a static-RSA key exchange would be visible), JSON output,
// and no DNS or internet: --ip/--nodns none, NXCONNECT pointed at loopback (its local capability
// probes otherwise resolve "invalid."), no --phone-out, no --update. STARTTLS command injection is
// checked by our own raw probe because testssl.sh 3.0.x has no such check.
// Outbound: a Portcullis gateway with a forced encryptionOnly connector delivers to real
// `openssl s_server` peers that offer only TLS 1.0 / 1.1, or TLS 1.2 with weak suites only; our
// client must not establish a TLS session, must defer with 4.7.5 naming the TLS failure kind
// (protocol-version / no-shared-cipher) and must send no MAIL/RCPT/DATA.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { startGateway, freePort, type GatewayHandle } from '../test/helpers/gateway.ts';
import { makePki } from '../test/helpers/pki.ts';
import { startDnsServer, type DnsServer, type Zone } from '../test/helpers/dns-server.ts';
import { SmtpClient } from '../test/helpers/smtp.ts';
import { startWeakPeer, opensslStarttlsProbe, type WeakPeer, type ClientProbe } from './lib/tls-weak-peer.ts';
import { starttlsInjectionProbe } from './lib/tls-injection-probe.ts';
import type { ProofContext, ProofModule, ProofSection } from './types.ts';
import { until } from '../test/helpers/wait.ts';

const CMD = 'npm run proof -- --only tls-grade';
const SEVERITY = ['DEBUG', 'INFO', 'OK', 'LOW', 'MEDIUM', 'HIGH', 'CRITICAL'];
const above = (sev: string, limit: string) => SEVERITY.indexOf(sev) > SEVERITY.indexOf(limit);

interface Finding {
  section: string;
  id: string;
  severity: string;
  finding: string;
}

function findBinary(names: string[]): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    for (const n of names) if (dir && existsSync(path.join(dir, n))) return path.join(dir, n);
  }
  return undefined;
}

/** Run a command in its own process group; kill the whole group (only what we started) on timeout. */
function run(
  bin: string,
  args: string[],
  opts: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<{ code: number | null; out: string; timedOut: boolean; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const p = spawn(bin, args, { cwd: opts.cwd, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let out = '';
    let timedOut = false;
    p.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    p.stderr!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const t = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-p.pid!, 'SIGKILL');
      } catch {
        /* gone */
      }
    }, opts.timeoutMs);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, out, timedOut, ms: Date.now() - t0 });
    });
    p.on('error', (e) => {
      clearTimeout(t);
      resolve({ code: -1, out: out + String(e), timedOut, ms: Date.now() - t0 });
    });
  });
}

async function relay(gw: GatewayHandle, to: string, subject: string): Promise<string> {
  const c = await SmtpClient.connect(gw.port);
  try {
    await c.hello();
    const from = 'prober@contoso.test';
    const r = await c.send(
      from,
      [to],
      `From: <${from}>\r\nTo: <${to}>\r\nSubject: ${subject}\r\nMessage-ID: <${subject}@contoso.test>\r\n\r\nSECRET BODY ${subject}\r\n`,
    );
    if (r.code !== 250) throw new Error(`relay to ${to} refused: ${r.text}`);
    return /queued as (\w+)/.exec(r.text)![1];
  } finally {
    c.close();
  }
}

interface Attempt {
  status: string;
  tlsAchieved?: string;
  tls?: { version: string; cipher: string };
  fallback?: string;
  reply: { code: number; enhanced: string; reason?: string };
}

async function traces(gw: GatewayHandle): Promise<Map<string, Attempt[]>> {
  const r = await gw.cli(['trace', '--since', '1h', '--limit', '10000', '--json']);
  if (r.code !== 0) throw new Error(`trace failed: ${r.stderr}`);
  const msgs = JSON.parse(r.stdout) as { id: string; trace: { kind: string; data: Attempt }[] }[];
  return new Map(msgs.map((m) => [m.id, m.trace.filter((t) => t.kind === 'delivery').map((t) => t.data)]));
}

const short = (s: string, n = 90) => (s.length > n ? `${s.slice(0, n - 1)}…` : s).replace(/\|/g, '\\|');

// ---------------------------------------------------------------------------------------------
// Inbound: testssl.sh

interface Expect {
  label: string;
  ids: string[];
  want: 'not offered' | 'offered';
}
const EXPECT: Expect[] = [
  { label: 'SSLv2 not offered', ids: ['SSLv2'], want: 'not offered' },
  { label: 'SSLv3 not offered', ids: ['SSLv3'], want: 'not offered' },
  { label: 'TLS 1.0 not offered', ids: ['TLS1'], want: 'not offered' },
  { label: 'TLS 1.1 not offered', ids: ['TLS1_1'], want: 'not offered' },
  { label: 'TLS 1.2 offered', ids: ['TLS1_2'], want: 'offered' },
  { label: 'TLS 1.3 offered', ids: ['TLS1_3'], want: 'offered' },
  { label: 'no NULL suites', ids: ['cipherlist_NULL'], want: 'not offered' },
  { label: 'no anonymous (aNULL) suites', ids: ['cipherlist_aNULL'], want: 'not offered' },
  { label: 'no EXPORT suites', ids: ['cipherlist_EXPORT'], want: 'not offered' },
  { label: 'no LOW (64-bit, DES, RC2/RC4) suites', ids: ['cipherlist_LOW'], want: 'not offered' },
  { label: 'no 3DES/IDEA suites', ids: ['cipherlist_3DES_IDEA'], want: 'not offered' },
  { label: 'no obsolete CBC suites', ids: ['cipherlist_AVERAGE', 'cipherlist_OBSOLETED'], want: 'not offered' },
  { label: 'strong (AEAD) suites offered', ids: ['cipherlist_STRONG'], want: 'offered' },
  { label: 'forward secrecy offered', ids: ['PFS', 'FS'], want: 'offered' },
];

async function gradeInbound(ctx: ProofContext, gw: GatewayHandle): Promise<ProofSection> {
  const failures: string[] = [];
  const notes: string[] = [];
  const rows: (string | number)[][] = [];
  const bin = findBinary(['testssl', 'testssl.sh']);
  const section = (extraNotes: string[] = []): ProofSection => ({
    title: 'TLS grading of the STARTTLS port (testssl.sh)',
    command: CMD,
    table: { header: ['check', 'testssl id', 'severity', 'finding', 'verdict'], rows },
    notes: [...notes, ...extraNotes],
    failures,
  });
  if (!bin) {
    failures.push(
      'testssl.sh is not installed (Debian: apt-get install testssl.sh); the TLS grade cannot be established',
    );
    return section();
  }
  const jsonFile = path.join(ctx.workDir, 'testssl.json');
  // -p protocols, -s cipher categories, -f forward secrecy, -U vulnerabilities, -E every suite per
  // protocol (key exchange shown, so a non-forward-secret suite is named), -P server preferences.
  const args = [
    '--quiet',
    '--warnings',
    'batch',
    '--color',
    '0',
    '--nodns',
    'none',
    '--ip',
    '127.0.0.1',
    '--connect-timeout',
    '10',
    '--openssl-timeout',
    '20',
    '--starttls',
    'smtp',
    '-p',
    '-s',
    '-f',
    '-U',
    '-E',
    '-P',
    '--jsonfile-pretty',
    jsonFile,
    `127.0.0.1:${gw.port}`,
  ];
  ctx.log(`testssl: ${path.basename(bin)} ${args.join(' ')}`);
  // NXCONNECT: testssl's local "does my openssl support X" probes run `openssl s_client -connect
  // invalid.` by default, which asks the system resolver; point them at a closed loopback port.
  // About 60-90 s on an idle machine; a loaded one (other builds on the same cores) can take
  // several times that, so the bound is generous and PROOF_TESTSSL_TIMEOUT (seconds) can raise it.
  const limitS = Number(process.env.PROOF_TESTSSL_TIMEOUT ?? 600);
  const r = await run(bin, args, {
    cwd: ctx.workDir,
    env: { ...process.env, NXCONNECT: '127.0.0.1:0', TERM: 'dumb' },
    timeoutMs: limitS * 1000,
  });
  ctx.log(`testssl finished in ${(r.ms / 1000).toFixed(1)} s (exit ${r.code}${r.timedOut ? ', TIMED OUT' : ''})`);
  if (r.timedOut) {
    // Its JSON file is cut off mid-write: nothing in it can be graded.
    failures.push(`testssl.sh did not finish within ${limitS} s (raise PROOF_TESTSSL_TIMEOUT on a loaded machine)`);
    return section();
  }
  if (!existsSync(jsonFile)) {
    failures.push(`testssl.sh wrote no JSON (exit ${r.code}): ${r.out.slice(-400)}`);
    return section();
  }
  let doc: {
    version?: string;
    openssl?: string;
    scanResult?: Record<string, unknown>[];
    scanTime?: unknown;
    Invocation?: string;
  };
  try {
    doc = JSON.parse(readFileSync(jsonFile, 'utf8')) as typeof doc;
  } catch (e) {
    failures.push(
      `testssl.sh wrote JSON that does not parse (exit ${r.code}): ${e instanceof Error ? e.message : String(e)}`,
    );
    return section();
  }
  const scan = doc.scanResult?.[0] ?? {};
  const findings: Finding[] = [];
  for (const [k, v] of Object.entries(scan)) {
    if (!Array.isArray(v)) continue;
    for (const f of v as { id: string; severity: string; finding: string }[])
      findings.push({ section: k, id: f.id, severity: f.severity, finding: String(f.finding ?? '') });
  }
  const version = (doc.version ?? '?').trim().split(/\s+/)[0];
  notes.push(
    `testssl.sh ${version} with ${doc.openssl ?? 'openssl'}; scan time ${String(doc.scanTime ?? '?')} s; ${findings.length} findings. Invocation: \`NXCONNECT=127.0.0.1:0 testssl ${args.slice(0, -3).join(' ')} --jsonfile-pretty FILE 127.0.0.1:PORT\`.`,
  );
  notes.push(
    'Certificate: RSA 2048 from the per-run test PKI, so a static-RSA key exchange would appear in the per-protocol suite list and in ROBOT. Certificate trust findings (-S) are not graded: the test PKI is not a public CA.',
  );
  notes.push(
    'No DNS, no internet: target given by --ip with --nodns none, no --phone-out (no CRL/OCSP fetches), no --update; NXCONNECT=127.0.0.1:0 keeps testssl\'s local openssl capability probes from resolving "invalid.". Checked once under `strace -f -e trace=connect,sendto,sendmsg` (testssl 3.0.8, this invocation): 171 inet connects, all loopback — 125 to the gateway, 30 to 127.0.0.1:0 (NXCONNECT), 8 + 8 to openssl\'s default localhost:4433 (127.0.0.1 and ::1, refused) from option probes without -connect; nothing to port 53 (without NXCONNECT, 30 DNS queries for "invalid." went to the system resolver).',
  );
  const problems = findings.filter((f) => f.id === 'scanProblem' || f.severity === 'FATAL');
  for (const p of problems) failures.push(`testssl scan problem: ${p.id} ${p.severity} ${p.finding}`);
  if (!findings.length) failures.push('testssl.sh reported no findings');

  const used = new Set<Finding>();
  for (const e of EXPECT) {
    const f = findings.find((x) => e.ids.includes(x.id));
    if (!f) {
      rows.push([e.label, e.ids.join(' / '), '-', 'MISSING', 'FAIL']);
      failures.push(`testssl finding ${e.ids.join('/')} missing (${e.label})`);
      continue;
    }
    used.add(f);
    const text = f.finding.toLowerCase();
    const ok = e.want === 'not offered' ? /not offered/.test(text) : /^offered/.test(text) && !/not offered/.test(text);
    const sevOk = !above(f.severity, 'LOW');
    rows.push([e.label, f.id, f.severity, short(f.finding), ok && sevOk ? 'pass' : 'FAIL']);
    if (!ok) failures.push(`${e.label}: testssl ${f.id} says "${f.finding}"`);
    else if (!sevOk) failures.push(`${e.label}: testssl ${f.id} severity ${f.severity}`);
  }

  // Every suite the server accepted, per protocol (-E): forward secret, AEAD, TLS 1.2+ only.
  const suites = findings.filter((f) => /^cipher-/.test(f.id) && f.section === 'cipherTests');
  if (!suites.length) failures.push('testssl listed no accepted cipher suites (-E)');
  const nonFs: string[] = [];
  const nonAead: string[] = [];
  const oldProto: string[] = [];
  for (const s of suites) {
    used.add(s);
    const iana = s.finding.trim().split(/\s+/).at(-1) ?? '';
    const proto = /^cipher-(\w+?)_x/.exec(s.id)?.[1] ?? s.id;
    const tls13 = proto === 'tls1_3';
    if (!tls13 && proto !== 'tls1_2') oldProto.push(`${proto}:${iana}`);
    const fs = tls13 || /^TLS_(ECDHE|DHE)_/.test(iana);
    const aead = /GCM|CHACHA20|CCM/.test(iana) && !/_anon_|NULL/.test(iana);
    if (!fs) nonFs.push(iana);
    if (!aead) nonAead.push(iana);
    rows.push([
      `accepted suite (${tls13 ? 'TLS 1.3' : proto.replace('tls1_2', 'TLS 1.2')})`,
      s.id,
      s.severity,
      iana,
      fs && aead ? 'pass' : 'FAIL',
    ]);
  }
  if (nonFs.length) failures.push(`non-forward-secret suites accepted: ${nonFs.join(', ')}`);
  if (nonAead.length) failures.push(`non-AEAD (CBC/NULL/anon) suites accepted: ${nonAead.join(', ')}`);
  if (oldProto.length) failures.push(`suites accepted below TLS 1.2: ${oldProto.join(', ')}`);

  // Every other finding, with its severity; nothing above LOW anywhere, no WARN (inconclusive).
  for (const f of findings) {
    if (used.has(f)) continue;
    const bad = above(f.severity, 'LOW') || f.severity === 'WARN';
    if (f.section === 'vulnerabilities' || bad) {
      rows.push([
        f.section === 'vulnerabilities' ? 'vulnerability' : f.section,
        f.id,
        f.severity,
        short(f.finding),
        bad ? 'FAIL' : 'pass',
      ]);
    } else {
      rows.push([f.section, f.id, f.severity, short(f.finding), 'info']);
    }
    if (bad) failures.push(`testssl ${f.section}/${f.id}: ${f.severity} ${f.finding}`);
  }
  if (!findings.some((f) => f.section === 'vulnerabilities')) failures.push('testssl ran no vulnerability checks');

  // STARTTLS command injection: our own probe (testssl 3.0.x lacks --starttls-injection).
  const inj = await starttlsInjectionProbe('127.0.0.1', gw.port);
  const logged = gw.events().filter((e) => e.event === 'session.injection').length;
  rows.push([
    'STARTTLS command injection not vulnerable',
    'starttls_injection (own probe)',
    inj.vulnerable ? 'CRITICAL' : 'OK',
    short(`${inj.detail}; gateway logged session.injection ×${logged}`, 160),
    inj.vulnerable ? 'FAIL' : 'pass',
  ]);
  if (inj.vulnerable) failures.push(`STARTTLS injection: ${inj.detail}`);
  if (/^inconclusive/.test(inj.detail)) failures.push(`STARTTLS injection probe inconclusive: ${inj.detail}`);
  notes.push(
    `testssl.sh ${version} has no STARTTLS injection check (--starttls-injection arrived in 3.2), so a raw client pipelines "NOOP, NOOP, RSET" behind STARTTLS in one segment, completes the handshake and requires that nothing is answered inside TLS before its own EHLO (row "starttls_injection (own probe)").`,
  );
  notes.push(
    "Severities are testssl's own (OK/INFO/LOW/MEDIUM/HIGH/CRITICAL); the proof fails on any MEDIUM or above, on WARN (inconclusive test) and on any expectation row that is not met.",
  );
  return section();
}

// ---------------------------------------------------------------------------------------------
// Outbound: weak openssl s_server peers under a forced encryptionOnly connector

interface WeakSpec {
  id: string;
  label: string;
  sslArgs: string[];
  control: string[];
  modern?: boolean;
  kind?: string;
}
const WEAK: WeakSpec[] = [
  {
    id: 'tls10',
    label: 'TLS 1.0 only',
    sslArgs: ['-tls1', '-cipher', 'DEFAULT@SECLEVEL=0'],
    control: ['-tls1', '-cipher', 'DEFAULT@SECLEVEL=0'],
    kind: 'protocol-version',
  },
  {
    id: 'tls11',
    label: 'TLS 1.1 only',
    sslArgs: ['-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0'],
    control: ['-tls1_1', '-cipher', 'DEFAULT@SECLEVEL=0'],
    kind: 'protocol-version',
  },
  {
    id: 'rsacbc',
    label: 'TLS 1.2, static RSA + CBC only (AES128-SHA)',
    sslArgs: ['-tls1_2', '-cipher', 'AES128-SHA'],
    control: ['-tls1_2', '-cipher', 'AES128-SHA'],
    kind: 'no-shared-cipher',
  },
  {
    id: 'rsagcm',
    label: 'TLS 1.2, static RSA (no forward secrecy) only (AES128-GCM-SHA256)',
    sslArgs: ['-tls1_2', '-cipher', 'AES128-GCM-SHA256'],
    control: ['-tls1_2', '-cipher', 'AES128-GCM-SHA256'],
    kind: 'no-shared-cipher',
  },
  {
    id: 'ecdhecbc',
    label: 'TLS 1.2, ECDHE + CBC/SHA-1 only (ECDHE-RSA-AES128-SHA)',
    sslArgs: ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-SHA'],
    control: ['-tls1_2', '-cipher', 'ECDHE-RSA-AES128-SHA'],
    kind: 'no-shared-cipher',
  },
  {
    id: 'null',
    label: 'TLS 1.2, NULL encryption only (NULL-SHA256)',
    sslArgs: ['-tls1_2', '-cipher', 'NULL-SHA256@SECLEVEL=0'],
    control: ['-tls1_2', '-cipher', 'NULL-SHA256@SECLEVEL=0'],
    kind: 'no-shared-cipher',
  },
  {
    id: 'anon',
    label: 'TLS 1.2, anonymous DH only (ADH-AES128-GCM-SHA256)',
    sslArgs: ['-tls1_2', '-cipher', 'ADH-AES128-GCM-SHA256@SECLEVEL=0'],
    control: ['-tls1_2', '-cipher', 'ADH-AES128-GCM-SHA256@SECLEVEL=0'],
    kind: 'no-shared-cipher',
  },
  { id: 'modern', label: 'control: default s_server (TLS 1.3)', sslArgs: [], control: [], modern: true },
];

async function gradeOutbound(
  ctx: ProofContext,
  gw: GatewayHandle,
  peers: Map<string, WeakPeer>,
  controls: Map<string, ClientProbe>,
): Promise<ProofSection> {
  const failures: string[] = [];
  const rows: (string | number)[][] = [];
  const repeats = ctx.size === 'full' ? 3 : 1;
  const sessionsBefore = new Map([...peers].map(([id, p]) => [id, p.sessions()]));
  const ids = new Map<string, string[]>();
  for (const w of WEAK) {
    const list: string[] = [];
    // s_server serves one connection at a time: the control (which never answers SMTP) gets one message.
    for (let i = 0; i < (w.modern ? 1 : repeats); i++)
      list.push(await relay(gw, `u${i}@${w.id}.weak.test`, `weak-${w.id}-${i}`));
    ids.set(w.id, list);
  }
  const all = [...ids.values()].flat();
  const result = (id: string) =>
    gw.events().find((e) => e.event === 'delivery.result' && e.queueId === id && e.agent === 'smtp');
  await until('a delivery result for every weak-peer message', () => all.every((id) => result(id)), 60_000);
  // The control's s_server never answers SMTP, so our client waits out its command timeout there.
  const tr = await traces(gw);
  for (const w of WEAK) {
    const p = peers.get(w.id)!;
    const c = controls.get(w.id)!;
    const newSessions = p.sessions() - sessionsBefore.get(w.id)!;
    const outcomes = ids.get(w.id)!.map((id) => ({ ev: result(id)!, at: tr.get(id)?.[0] }));
    const o = outcomes[0];
    const reason = String(o.ev.reason ?? '');
    // The TLS failure kind, and the raw OpenSSL code kept in the detail.
    const handshakeErr = `${String(o.ev.tlsFailure ?? '?')} (${(/detail: (\S+)/.exec(reason)?.[1] ?? reason).trim()})`;
    const outcome = outcomes.map((x) =>
      `${String(x.ev.status)} ${String(x.ev.code ?? '')} ${String(x.ev.enhanced ?? '')}`.trim(),
    );
    const uniq = [...new Set(outcome)].join('; ');
    rows.push([
      w.label,
      `\`${['s_server', ...w.sslArgs].join(' ')}\``,
      c.ok
        ? `handshake ${c.protocol} ${c.cipher}`
        : `FAILED (${short(c.output.split('\n').find((l) => /error/i.test(l)) ?? '', 60)})`,
      newSessions,
      `${uniq} × ${outcomes.length}`,
      w.modern
        ? `TLS session; s_server received our EHLO: ${/EHLO /.test(p.output()) ? 'yes' : 'NO'} (it never answers SMTP: ${short(reason, 60)})`
        : short(handshakeErr, 80),
      p.stats.plainTransaction.length,
      p.stats.plainBodyBytes,
    ]);
    if (!c.ok)
      failures.push(
        `${w.id}: the permissive openssl s_client control could not handshake with the weak peer, so the peer proves nothing: ${c.output.slice(-300)}`,
      );
    if (p.stats.plainTransaction.length || p.stats.plainBodyBytes)
      failures.push(
        `${w.id}: our client sent ${p.stats.plainTransaction.join(', ')} / ${p.stats.plainBodyBytes} body bytes in plaintext`,
      );
    if (p.stats.starttls < (w.modern ? 1 : repeats))
      failures.push(`${w.id}: our client issued STARTTLS ${p.stats.starttls} times for ${repeats} messages`);
    if (w.modern) {
      if (newSessions < 1)
        failures.push(
          `control: our client established no TLS session with a modern s_server (${newSessions}); the negative results would prove nothing`,
        );
      if (!/EHLO /.test(p.output()))
        failures.push('control: our client did not speak SMTP inside the TLS session with the modern s_server');
      continue;
    }
    if (newSessions !== 0) failures.push(`${w.id}: s_server completed ${newSessions} TLS session(s) with our client`);
    for (const x of outcomes) {
      if (x.ev.status !== 'deferred' || x.ev.code !== 451 || x.ev.enhanced !== '4.7.5')
        failures.push(
          `${w.id}: expected deferred 451 4.7.5, got ${String(x.ev.status)} ${String(x.ev.code)} ${String(x.ev.enhanced)} ${String(x.ev.reason)}`,
        );
      if (!/^TLS required by connector "To Weak": TLS handshake with .* failed/.test(String(x.ev.reason)))
        failures.push(`${w.id}: unexpected reason ${String(x.ev.reason)}`);
      if (x.ev.tlsFailure !== w.kind)
        failures.push(`${w.id}: expected TLS failure kind ${w.kind}, got ${String(x.ev.tlsFailure)}`);
      if (x.at?.tls || (x.at && x.at.tlsAchieved !== 'none'))
        failures.push(
          `${w.id}: the trace records a TLS session (${JSON.stringify(x.at.tls)}, achieved ${x.at.tlsAchieved})`,
        );
    }
    if (p.stats.relayedBytes === 0)
      failures.push(`${w.id}: no TLS bytes reached s_server (the handshake was never attempted)`);
  }
  return {
    title: 'TLS grading of our client: weak peers under a forced connector (openssl s_server)',
    command: CMD,
    table: {
      header: [
        'peer offers',
        'server',
        'permissive s_client control',
        'TLS sessions with our client',
        'our outcome',
        'handshake error / TLS',
        'MAIL/RCPT/DATA in plaintext',
        'body bytes in plaintext',
      ],
      rows,
    },
    notes: [
      `Each peer is a real \`openssl s_server\` (${spawnSync('openssl', ['version']).stdout?.toString().trim() ?? 'openssl'}) behind a small SMTP front that answers greeting/EHLO (offering STARTTLS) in plaintext and, after its 220 to STARTTLS, relays the raw TCP stream to s_server; the front would accept MAIL/RCPT/DATA in plaintext if a client sent them (counted as leaks).`,
      'The gateway delivers through an outbound connector with `tlsSettings: encryptionOnly` (any certificate, but TLS is mandatory, TLS 1.2 or newer); each message must be deferred with 451 4.7.5 naming the failed handshake and its TLS failure kind (`protocol-version` for the TLS 1.0/1.1 peers, `no-shared-cipher` for the others; the raw OpenSSL code in brackets), s_server must complete no TLS session with our client (it prints "CIPHER is" per session), and nothing may be sent in plaintext.',
      'Controls: `openssl s_client -starttls smtp` with the same permissive settings completes a handshake with every weak peer through the same front (so the peer really offers what it says); a default s_server (TLS 1.3) does get a TLS session and an EHLO from our client (so a refusal is not a harness artefact). 3DES is not in the list because this OpenSSL build has no 3DES suite to offer.',
      `${repeats} message(s) per weak peer, 1 to the control (s_server serves one connection at a time and never answers SMTP, so that message ends in a timeout, 451 4.4.2).`,
    ],
    failures,
  };
}

const mod: ProofModule = {
  name: 'tls-grade',
  async run(ctx: ProofContext): Promise<ProofSection[]> {
    const dir = path.join(ctx.workDir, 'gw');
    mkdirSync(dir, { recursive: true });
    const pki = await makePki(ctx.workDir, 'Grade');
    const serverCert = await pki.issue('mx1.contoso.test', { key: 'rsa2048' });
    const weakCert = await pki.issue('weak.fabrikam.test', { key: 'rsa2048', dnsNames: ['*.weak-peers.test'] });
    const peers = new Map<string, WeakPeer>();
    const controls = new Map<string, ClientProbe>();
    let dns: DnsServer | undefined;
    let gw: GatewayHandle | undefined;
    try {
      // Weak peers on 127.0.3.x, one shared port (delivery.port is global to the gateway).
      const zone: Zone = {};
      let port = 0;
      for (let attempt = 0; attempt < 5 && peers.size < WEAK.length; attempt++) {
        for (const p of peers.values()) await p.close();
        peers.clear();
        port = await freePort('127.0.3.1');
        try {
          for (const [i, w] of WEAK.entries()) {
            const ip = `127.0.3.${i + 1}`;
            peers.set(
              w.id,
              await startWeakPeer({
                ip,
                port,
                name: `mx-${w.id}.weak-peers.test`,
                cert: weakCert.cert,
                key: weakCert.key,
                sslArgs: w.sslArgs,
              }),
            );
            zone[`mx-${w.id}.weak-peers.test`] = { A: [ip] };
            zone[`${w.id}.weak.test`] = { MX: [{ exchange: `mx-${w.id}.weak-peers.test`, priority: 10 }] };
          }
        } catch (e) {
          if (!/EADDRINUSE/.test(String(e)) || attempt === 4) throw e;
        }
      }
      for (const w of WEAK) {
        const p = peers.get(w.id)!;
        controls.set(w.id, await opensslStarttlsProbe(p.ip, p.port, w.control));
      }
      ctx.log(
        `weak peers on 127.0.3.1-${WEAK.length}:${port}; controls: ${[...controls].map(([k, v]) => `${k}=${v.ok ? `${v.protocol}/${v.cipher}` : 'FAILED'}`).join(' ')}`,
      );
      dns = await startDnsServer(zone);
      gw = await startGateway({
        dir,
        config: {
          dns: { servers: [dns.server] },
          tls: {
            certificates: [{ cert: serverCert.cert, key: serverCert.key }],
            trust: { system: false, caFiles: [pki.rootFile] },
            revocation: 'off',
          },
          delivery: { port, timeouts: { connect: 3, greeting: 5, command: 5 }, destinationDownSeconds: 0 },
          queue: { retrySchedule: [3600], delayWarning: 0 },
          organizations: [
            {
              name: 'contoso',
              acceptedDomains: [{ domain: 'contoso.test' }],
              inboundConnectors: [
                { name: 'Local submission', connectorType: 'onPremises', senderIPAddresses: ['127.0.0.1/32'] },
              ],
              outboundConnectors: [
                { name: 'To Weak', recipientDomains: ['*.weak.test'], tlsSettings: 'encryptionOnly' },
              ],
            },
          ],
        },
      });
      ctx.log(`gateway on 127.0.0.1:${gw.port}`);
      const inbound = await gradeInbound(ctx, gw);
      const outbound = await gradeOutbound(ctx, gw, peers, controls);
      return [inbound, outbound];
    } finally {
      await gw?.stop();
      for (const p of peers.values()) await p.close();
      await dns?.close();
    }
  },
};

export default mod;
