// A throwaway Postfix instance for interop tests: its own config directory, queue, data folder,
// log file and virtual mailboxes under a folder the test owns. Never touches /etc/postfix or the
// system instance (every command runs with `-c <own config dir>`). Needs root and the Debian
// postfix package. Loopback only, and no DNS at all: numeric next hops, smtp DNS disabled, no
// reverse lookups of clients — unless `dnssecResolver` names a test resolver on loopback: then
// the instance runs in its own mount namespace whose /etc/resolv.conf names only that resolver,
// its SMTP client looks up MX, A and TLSA records with DNSSEC there (for DANE), and next hops
// may be domains.
import { execFile } from 'node:child_process';
import net from 'node:net';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';

const POSTFIX = '/usr/sbin/postfix';
const POSTCONF = '/usr/sbin/postconf';

export interface PostfixOptions {
  /** Folder for the instance (created if missing). Every folder above it must be searchable (o+x). */
  base: string;
  /** Loopback address and port of the smtpd service (e.g. 127.0.0.9). */
  host: string;
  port: number;
  /** myhostname: banner, EHLO name of its SMTP client. */
  hostname: string;
  /** smtpd certificate (chain, leaf first) and key, readable by the postfix user. */
  cert: string;
  key: string;
  /** CA file for the SMTP client (smtp_tls_CAfile). */
  caFile?: string;
  /** Virtual mailbox domain and its users (local parts); mail lands in <base>/vmail/<user>/. */
  mailboxDomain: string;
  users: string[];
  /** transport_maps entries: domain -> next hop, e.g. { 'contoso.test': 'smtp:[127.0.0.1]:2525' }. */
  transports?: Record<string, string>;
  /** relayhost for all other mail, a bracketed loopback address: e.g. '[127.0.0.1]:2525'. */
  relayhost?: string;
  /** Extra main.cf lines. */
  extra?: string[];
  /**
   * A validating test resolver on loopback port 53 (e.g. the DNSSEC rig's Unbound): the only DNS
   * this instance may use (a private /etc/resolv.conf in its own mount namespace, `trust-ad`).
   */
  dnssecResolver?: string;
}

export interface PostfixInstance {
  base: string;
  etc: string;
  logFile: string;
  host: string;
  port: number;
  /** The whole log so far. */
  log(): string;
  /** Messages delivered to <user>@mailboxDomain (Maildir new/), as text. */
  mailbox(user: string): string[];
  postconf(name: string): Promise<string>;
  /**
   * Change main.cf settings (`postconf -e`); they apply after reload(). Refuses to touch the
   * settings that keep the instance off DNS and on loopback, and re-checks them afterwards.
   */
  configure(settings: Record<string, string>): Promise<void>;
  /** `postfix reload`: new processes use the new main.cf; waits (bounded) for the reload log line. */
  reload(): Promise<void>;
  stop(): Promise<void>;
}

function run(
  file: string,
  args: string[],
  timeoutMs = 30_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const code = err
        ? typeof (err as NodeJS.ErrnoException).code === 'number'
          ? Number((err as NodeJS.ErrnoException).code)
          : -1
        : 0;
      resolve({
        code,
        stdout: String(stdout),
        stderr: String(stderr) + (err && code === -1 ? String(err.message) : ''),
      });
    });
  });
}

/** uid and gid of a system user, from /etc/passwd (no NSS lookups that could reach the network). */
export function systemUser(name: string): { uid: number; gid: number } {
  for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const f = line.split(':');
    if (f[0] === name) return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  throw new Error(`no user ${name} in /etc/passwd (is the postfix package installed?)`);
}

/**
 * Postfix commands log their errors to syslog only (there is no syslogd here, and maillog_file is
 * written by postlogd, which is not running yet); on a terminal they also print them. Re-run the
 * command under script(1) to see why it failed.
 */
async function explainFailure(args: string[]): Promise<string> {
  if (!existsSync('/usr/bin/script')) return '(install util-linux script(1) to see the reason)';
  const cmd = [POSTFIX, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = await run('/usr/bin/script', ['-qec', cmd, '/dev/null'], 30_000);
  return (r.stdout + r.stderr).trim();
}

/** main.cf settings that configure() must not change. */
const GUARDED = [
  'smtp_dns_support_level',
  'smtpd_peername_lookup',
  'smtp_host_lookup',
  'lmtp_host_lookup',
  'inet_interfaces',
  'inet_protocols',
  'queue_directory',
  'data_directory',
  'maillog_file',
  'transport_maps',
  'relayhost',
];

async function checkNoDns(inst: PostfixInstance, testDns = false): Promise<void> {
  const dns = await inst.postconf('smtp_dns_support_level');
  const rdns = await inst.postconf('smtpd_peername_lookup');
  if (dns !== (testDns ? 'dnssec' : 'disabled') || rdns !== 'no')
    throw new Error(`refusing Postfix config with smtp_dns_support_level=${dns} smtpd_peername_lookup=${rdns}`);
}

export async function startPostfix(o: PostfixOptions): Promise<PostfixInstance> {
  if (process.getuid?.() !== 0) throw new Error('the throwaway Postfix instance must be started as root');
  if (!existsSync(POSTFIX)) throw new Error('postfix is not installed (apt-get install postfix)');
  if (!o.host.startsWith('127.')) throw new Error(`Postfix must listen on loopback, not ${o.host}`);
  const testDns = o.dnssecResolver !== undefined;
  if (testDns && !/^127\.\d+\.\d+\.\d+$/.test(o.dnssecResolver!))
    throw new Error(`the test resolver must be on loopback, not ${o.dnssecResolver}`);
  for (const hop of Object.values(o.transports ?? {})) {
    if (!testDns && !/^smtp:\[127\.\d+\.\d+\.\d+\]:\d+$/.test(hop))
      throw new Error(`next hop ${hop} must be a bracketed loopback address (no DNS)`);
  }
  if (o.relayhost !== undefined && !/^\[127\.\d+\.\d+\.\d+\]:\d+$/.test(o.relayhost))
    throw new Error(`relayhost ${o.relayhost} must be a bracketed loopback address (no DNS)`);
  // The postfix user reads the certificates and writes below base: every folder above must be searchable.
  for (let d = path.dirname(path.resolve(o.base)); ; d = path.dirname(d)) {
    if (existsSync(d) && !(statSync(d).mode & 0o001))
      throw new Error(`${d} is not searchable by others (o+x): the postfix user cannot reach ${o.base}`);
    if (d === path.dirname(d)) break;
  }
  const etc = path.join(o.base, 'etc');
  const spool = path.join(o.base, 'spool');
  const data = path.join(o.base, 'data');
  const vmail = path.join(o.base, 'vmail');
  const logFile = path.join(o.base, 'postfix.log');
  const pf = systemUser('postfix');
  const nobody = systemUser('nobody');
  mkdirSync(o.base, { recursive: true });
  for (const d of [o.base, etc, spool, data, vmail]) {
    mkdirSync(d, { recursive: true });
    chmodSync(d, 0o755);
  }
  chownSync(data, pf.uid, pf.gid);
  chownSync(vmail, nobody.uid, nobody.gid);

  const map = (m: Record<string, string>) =>
    `inline:{ ${Object.entries(m)
      .map(([k, v]) => `{ ${k} = ${v} }`)
      .join(', ')} }`;
  const main = [
    'compatibility_level = 3.6',
    `queue_directory = ${spool}`,
    `data_directory = ${data}`,
    'meta_directory = /etc/postfix',
    'mail_owner = postfix',
    'setgid_group = postdrop',
    `myhostname = ${o.hostname}`,
    `mydomain = ${o.mailboxDomain}`,
    'myorigin = $mydomain',
    'append_dot_mydomain = no',
    'smtpd_banner = $myhostname ESMTP',
    'biff = no',
    // inet_interfaces must name addresses configured on an interface (127.0.0.9 is not, though the
    // kernel routes all of 127/8 to lo); the smtpd service binds its own address in master.cf.
    'inet_interfaces = loopback-only',
    'inet_protocols = ipv4',
    'mynetworks = 127.0.0.0/8',
    'mydestination =',
    'local_recipient_maps =',
    'local_transport = error:5.1.1 local delivery disabled',
    'alias_maps =',
    'alias_database =',
    `virtual_mailbox_domains = ${o.mailboxDomain}`,
    `virtual_mailbox_base = ${vmail}`,
    `virtual_mailbox_maps = ${map(Object.fromEntries(o.users.map((u) => [`${u}@${o.mailboxDomain}`, `${u}/`])))}`,
    `virtual_uid_maps = static:${nobody.uid}`,
    `virtual_gid_maps = static:${nobody.gid}`,
    'virtual_minimum_uid = 1',
    ...(o.transports ? [`transport_maps = ${map(o.transports)}`] : []),
    ...(o.relayhost ? [`relayhost = ${o.relayhost}`] : []),
    // No DNS anywhere, or only the test resolver (with DNSSEC, for DANE).
    `smtp_dns_support_level = ${testDns ? 'dnssec' : 'disabled'}`,
    `smtp_host_lookup = ${testDns ? 'dns' : 'native'}`,
    'lmtp_host_lookup = native',
    'smtpd_peername_lookup = no',
    // Inbound TLS: offered, logged.
    `smtpd_tls_cert_file = ${o.cert}`,
    `smtpd_tls_key_file = ${o.key}`,
    'smtpd_tls_security_level = may',
    'smtpd_tls_protocols = >=TLSv1.2',
    'smtpd_tls_mandatory_protocols = >=TLSv1.2',
    'smtpd_tls_loglevel = 1',
    'smtpd_tls_received_header = yes',
    // Outbound TLS: logged; the level is set by the test (extra).
    ...(o.caFile ? [`smtp_tls_CAfile = ${o.caFile}`] : []),
    'smtp_tls_protocols = >=TLSv1.2',
    'smtp_tls_mandatory_protocols = >=TLSv1.2',
    'smtp_tls_loglevel = 1',
    'notify_classes = resource, software',
    `maillog_file = ${logFile}`,
    `maillog_file_prefixes = ${o.base}`,
    ...(o.extra ?? []),
  ];
  writeFileSync(path.join(etc, 'main.cf'), main.join('\n') + '\n');
  const master = [
    '# service type private unpriv chroot wakeup maxproc command',
    `${o.host}:${o.port} inet n - n - - smtpd`,
    'cleanup unix n - n - 0 cleanup',
    'qmgr unix n - n 300 1 qmgr',
    'tlsmgr unix - - n 1000? 1 tlsmgr',
    'rewrite unix - - n - - trivial-rewrite',
    'bounce unix - - n - 0 bounce',
    'defer unix - - n - 0 bounce',
    'trace unix - - n - 0 bounce',
    'verify unix - - n - 1 verify',
    'flush unix n - n 1000? 0 flush',
    'proxymap unix - - n - - proxymap',
    'proxywrite unix - - n - 1 proxymap',
    'smtp unix - - n - - smtp',
    'relay unix - - n - - smtp',
    'showq unix n - n - - showq',
    'error unix - - n - - error',
    'retry unix - - n - - error',
    'discard unix - - n - - discard',
    'anvil unix - - n - 1 anvil',
    'scache unix - - n - 1 scache',
    'virtual unix - n n - - virtual',
    'postlog unix-dgram n - n - 1 postlogd',
  ];
  writeFileSync(path.join(etc, 'master.cf'), master.join('\n') + '\n');

  const inst: PostfixInstance = {
    base: o.base,
    etc,
    logFile,
    host: o.host,
    port: o.port,
    log: () => {
      try {
        return readFileSync(logFile, 'utf8');
      } catch {
        return '';
      }
    },
    mailbox(user) {
      const dir = path.join(vmail, user, 'new');
      try {
        return readdirSync(dir)
          .sort()
          .map((f) => readFileSync(path.join(dir, f), 'utf8'));
      } catch {
        return [];
      }
    },
    async postconf(name) {
      const r = await run(POSTCONF, ['-c', etc, '-h', name]);
      if (r.code !== 0) throw new Error(`postconf ${name} failed: ${r.stderr}`);
      return r.stdout.trim();
    },
    async configure(settings) {
      for (const [k, v] of Object.entries(settings)) {
        if (GUARDED.includes(k)) throw new Error(`configure: ${k} is fixed by the helper (no DNS, loopback only)`);
        if (/[\r\n]/.test(k + v)) throw new Error(`configure: ${k} must be one line`);
        const r = await run(POSTCONF, ['-c', etc, '-e', `${k} = ${v}`]);
        if (r.code !== 0) throw new Error(`postconf -e ${k} failed: ${r.stderr}`);
      }
      await checkNoDns(inst, testDns);
    },
    async reload() {
      const before = (inst.log().match(/postfix\/master\[\d+\]: reload /g) ?? []).length;
      const r = await run(POSTFIX, ['-c', etc, 'reload']);
      if (r.code !== 0)
        throw new Error(
          `postfix -c ${etc} reload failed (${r.code}): ${r.stdout}${r.stderr}\n${await explainFailure(['-c', etc, 'reload'])}`,
        );
      const end = Date.now() + 15_000;
      while ((inst.log().match(/postfix\/master\[\d+\]: reload /g) ?? []).length <= before) {
        if (Date.now() > end)
          throw new Error(
            `no reload line in ${logFile} after postfix reload:\n${inst.log().split('\n').slice(-20).join('\n')}`,
          );
        await new Promise((res) => setTimeout(res, 100));
      }
    },
    async stop() {
      if ((await run(POSTFIX, ['-c', etc, 'status'])).code !== 0) return;
      await run(POSTFIX, ['-c', etc, 'stop']);
      const end = Date.now() + 15_000;
      while ((await run(POSTFIX, ['-c', etc, 'status'])).code === 0) {
        if (Date.now() > end) {
          // master(8) did not go away: end it (and with it its children) by its own pid.
          const pid = Number(readFileSync(path.join(spool, 'pid/master.pid'), 'utf8').trim());
          if (pid > 1) process.kill(pid, 'SIGKILL');
          return;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };

  // The harness stays off the network: refuse a configuration that turned DNS back on.
  await checkNoDns(inst, testDns);

  // With a test resolver, master and every child see a resolv.conf naming only it (their own mount namespace).
  const resolvConf = path.join(o.base, 'resolv.conf');
  if (testDns)
    writeFileSync(resolvConf, `nameserver ${o.dnssecResolver}\noptions edns0 trust-ad attempts:1 timeout:2\n`);
  const inNamespace = (args: string[]): [string, string[]] =>
    testDns
      ? [
          '/usr/bin/unshare',
          [
            '--mount',
            '--propagation',
            'private',
            '/bin/sh',
            '-c',
            `mount --bind "$0" /etc/resolv.conf && exec "$@"`,
            resolvConf,
            POSTFIX,
            ...args,
          ],
        ]
      : [POSTFIX, args];

  // check creates the queue subfolders with the right owners.
  for (const cmd of ['check', 'start']) {
    const r = await run(...inNamespace(['-c', etc, cmd]));
    if (r.code !== 0) {
      throw new Error(
        `postfix -c ${etc} ${cmd} failed (${r.code}): ${r.stdout}${r.stderr}\n${await explainFailure(['-c', etc, cmd])}\n${inst.log()}`,
      );
    }
  }
  // Bounded wait until smtpd accepts connections (master binds the port before it returns, but be sure).
  const end = Date.now() + 15_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: o.host, port: o.port });
      const t = setTimeout(() => {
        s.destroy();
        resolve(false);
      }, 2000);
      s.once('data', (d) => {
        clearTimeout(t);
        s.end('QUIT\r\n');
        resolve(d.toString().startsWith('220'));
      });
      s.once('error', () => {
        clearTimeout(t);
        resolve(false);
      });
    });
    if (ok) break;
    if (Date.now() > end) {
      await inst.stop();
      throw new Error(`Postfix does not answer on ${o.host}:${o.port}:\n${inst.log()}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return inst;
}
