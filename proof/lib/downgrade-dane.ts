// Downgrade against DANE destinations (issue 10): the destination's zone is DNSSEC-signed (the
// NSD+Unbound rig of test/helpers/dnssec.ts) and publishes TLSA 3 1 1 for the honest server's key;
// no connector demands anything, so every protection comes from DANE. A man in the middle per
// case (proof/lib/tls-mitm.ts) strips STARTTLS, answers it 454/502, breaks the handshake with
// injected lines, or intercepts TLS with a self-signed certificate or one from a CA we trust for
// the right name (DANE-EE must refuse both: only the published key counts). Nothing may cross the
// wire in cleartext and the interceptor may read nothing; the untouched relay is the control.
import { mkdirSync, readFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import path from 'node:path';
import { issueCertificate } from '../../src/tls/certgen.ts';
import { tlsaRecord } from '../../src/tls/dane.ts';
import { startDnssecRig, type DnssecRig, type Rrs } from '../../test/helpers/dnssec.ts';
import { freePort, startGateway, type GatewayHandle } from '../../test/helpers/gateway.ts';
import { makePki } from '../../test/helpers/pki.ts';
import { startPeer, type Peer } from '../../test/helpers/peer.ts';
import { SmtpClient } from '../../test/helpers/smtp.ts';
import { until } from '../../test/helpers/wait.ts';
import type { ProofContext, ProofSection } from '../types.ts';
import { startMitm, type Mitm, type MitmMode } from './tls-mitm.ts';

interface DaneCase {
  id: string;
  label: string;
  mode: MitmMode;
  cert?: 'self' | 'trusted';
  expect: 'dane' | '4.7.4' | '4.7.5';
}

const CASES: DaneCase[] = [
  { id: 'control', label: 'control: untouched relay', mode: 'passthrough', expect: 'dane' },
  { id: 'strip', label: '(a) STARTTLS stripped from EHLO', mode: 'strip', expect: '4.7.4' },
  { id: 's454', label: '(b) STARTTLS answered 454', mode: 'reply454', expect: '4.7.4' },
  { id: 's502', label: '(c) STARTTLS answered 502', mode: 'reply502', expect: '4.7.4' },
  { id: 'injectlate', label: "(d') 220, injected lines after the ClientHello", mode: 'injectSplit', expect: '4.7.5' },
  {
    id: 'selfsigned',
    label: '(e) interception, self-signed certificate for the right name',
    mode: 'intercept',
    cert: 'self',
    expect: '4.7.5',
  },
  {
    id: 'trustedca',
    label: "(e'') interception, right name from a CA in our trust store",
    mode: 'intercept',
    cert: 'trusted',
    expect: '4.7.5',
  },
];

export async function runDaneDowngrade(ctx: ProofContext, command: string, repeats: number): Promise<ProofSection> {
  const dir = path.join(ctx.workDir, 'dane');
  mkdirSync(dir, { recursive: true });
  const pki = await makePki(dir, 'DaneDowngrade');
  const honest = await pki.issue('mx.woodgrove.test', { dnsNames: ['*.woodgrove.test'] });
  const forged = await pki.issue('intercept.woodgrove.test', { dnsNames: ['*.woodgrove.test'] });
  const self = await issueCertificate({
    subject: 'CN=mx.woodgrove.test, O=Interceptor',
    dnsNames: ['*.woodgrove.test'],
    key: 'rsa2048',
  });
  const certs = {
    self: { cert: self.certPem, key: self.keyPem },
    trusted: { cert: readFileSync(forged.chain, 'utf8'), key: readFileSync(forged.key, 'utf8') },
  };
  const marker = /PROOF-SECRET-[a-zA-Z0-9]+-dane-\d+/;
  let backend: Peer | undefined;
  let rig: DnssecRig | undefined;
  let gw: GatewayHandle | undefined;
  const mitms = new Map<string, Mitm>();
  try {
    backend = await startPeer({
      host: '127.0.3.1',
      port: await freePort('127.0.3.1'),
      name: 'mx.woodgrove.test',
      tls: { cert: readFileSync(honest.chain, 'utf8'), key: readFileSync(honest.key, 'utf8') },
    });
    const port = await freePort('127.0.3.10');
    const key = tlsaRecord(new X509Certificate(honest.issued.certPem), 3, 1, 1);
    const records: Record<string, Rrs> = {};
    let n = 10;
    for (const c of CASES) {
      const ip = `127.0.3.${n++}`;
      const host = `mx-${c.id}.woodgrove.test`;
      mitms.set(
        c.id,
        await startMitm({
          ip,
          port,
          mode: c.mode,
          backend: { host: backend.host, port: backend.port },
          marker,
          ...(c.cert ? { cert: certs[c.cert] } : {}),
        }),
      );
      records[`${c.id}.woodgrove.test`] = { MX: [{ exchange: host, priority: 10 }] };
      records[host] = { A: [ip] };
      records[`_${port}._tcp.${host}`] = { TLSA: [key] };
    }
    rig = await startDnssecRig({
      base: path.join(dir, 'dns'),
      authorityHost: '127.0.3.53',
      resolverHost: '127.0.3.54',
      zones: { 'woodgrove.test': 'secure' },
      records,
    });
    mkdirSync(path.join(dir, 'gw'));
    gw = await startGateway({
      dir: path.join(dir, 'gw'),
      config: {
        dns: { servers: [rig.server] },
        tls: { trust: { system: false, caFiles: [pki.rootFile] }, revocation: 'off' },
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
          },
        ],
      },
    });
    ctx.log(
      `DANE: ${mitms.size} MITM peers on 127.0.3.10-${9 + mitms.size}:${port}, signed zone woodgrove.test via Unbound ${rig.server}`,
    );
    const queued = new Map<string, { id: string; marker: string }[]>();
    for (const c of CASES) {
      const list: { id: string; marker: string }[] = [];
      queued.set(c.id, list);
      for (let i = 0; i < repeats; i++) {
        const m = `PROOF-SECRET-${c.id}-dane-${i}`;
        const cl = await SmtpClient.connect(gw.port);
        try {
          await cl.hello();
          const r = await cl.send(
            'sender@contoso.test',
            [`u${i}@${c.id}.woodgrove.test`],
            `From: <sender@contoso.test>\r\nTo: <u${i}@${c.id}.woodgrove.test>\r\nSubject: DANE downgrade proof\r\n\r\nconfidential: ${m}\r\n`,
          );
          if (r.code !== 250) throw new Error(`relay refused: ${r.text}`);
          list.push({ id: /queued as (\w+)/.exec(r.text)![1], marker: m });
        } finally {
          cl.close();
        }
      }
    }
    const result = (id: string) =>
      gw!.events().find((e) => e.event === 'delivery.result' && e.queueId === id && e.agent === 'smtp');
    const ids = [...queued.values()].flat().map((x) => x.id);
    await until('a delivery result for every DANE downgrade message', () => ids.every((id) => result(id)), 90_000);
    const failures: string[] = [];
    const rows: (string | number)[][] = [];
    let leaks = 0;
    for (const c of CASES) {
      const st = mitms.get(c.id)!.stats();
      const outcomes = new Set<string>();
      for (const q of queued.get(c.id)!) {
        const ev = result(q.id)!;
        const got =
          ev.status === 'delivered'
            ? ev.tlsAchieved === 'dane'
              ? 'dane'
              : `delivered (${String(ev.tlsAchieved)})`
            : ev.status === 'deferred'
              ? String(ev.enhanced)
              : `${String(ev.status)} ${String(ev.enhanced)}`;
        outcomes.add(
          got === 'dane'
            ? 'delivered, DANE-authenticated'
            : got.startsWith('4.')
              ? `deferred ${got} (${String(ev.tlsFailure)})`
              : got,
        );
        if (got !== c.expect)
          failures.push(`DANE ${c.id} (${q.id}): expected ${c.expect}, got ${got}: ${String(ev.reason)}`);
        if (ev.status === 'deferred' && !String(ev.reason).startsWith('TLS required by DANE (TLSA 3 1 1 at '))
          failures.push(`DANE ${c.id}: the deferral does not name DANE: ${String(ev.reason)}`);
      }
      const leaked =
        st.wireMarkers.length + st.plainTransaction + st.interceptedMarkers.length + st.interceptedTransaction;
      leaks += leaked;
      if (leaked)
        failures.push(
          `DANE ${c.id}: LEAK — ${st.plainTransaction} cleartext MAIL/RCPT/DATA, ${st.wireMarkers.length} message(s) on the wire, ${st.interceptedTransaction} commands and ${st.interceptedMarkers.length} message(s) read by the interceptor`,
        );
      if (c.mode !== 'passthrough' && st.tampered === 0)
        failures.push(`DANE ${c.id}: the MITM never carried out the attack`);
      rows.push([
        c.label,
        c.mode === 'passthrough' ? 'none (control)' : st.tampered,
        [...outcomes].join(' / '),
        st.plainTransaction,
        st.wireMarkers.length,
        st.interceptedMarkers.length,
      ]);
    }
    ctx.log(`DANE: cases ${CASES.length}, messages ${ids.length}, leaks ${leaks}, failures ${failures.length}`);
    return {
      title: 'Downgrade against DANE destinations (no connector)',
      command,
      table: {
        header: [
          'MITM case',
          'attacks carried out',
          'outcome',
          'cleartext MAIL/RCPT/DATA',
          'messages leaked in plaintext',
          'messages read by an interceptor',
        ],
        rows,
      },
      notes: [
        "The destination zone woodgrove.test is DNSSEC-signed (NSD, ldns-signzone) and validated by Unbound from a test trust anchor; it publishes TLSA 3 1 1 of the honest server's key at _PORT._tcp of each MX host. No outbound connector applies: the TLS demand comes from DANE alone.",
        'The "CA in our trust store" interceptor holds a certificate for the right name from the CA the gateway trusts (tls.trust): WebPKI validation would accept it; DANE-EE refuses it because its key is not the published one.',
        `${repeats} message(s) per case; leaks in total: ${leaks} (must be 0).`,
      ],
      failures,
    };
  } finally {
    await gw?.stop();
    for (const m of mitms.values()) await m.close();
    await backend?.close();
    await rig?.stop();
  }
}
