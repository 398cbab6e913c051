// Owns: the one configuration schema and the documentation of each key: a key's `.describe()` (or
// `.meta({ description })`) text is its row in docs/configuration.md, which `npm run docs:config`
// writes (`valueType` and `defaultText` in the meta replace the type and default shown when those
// derived from the schema would be vague). A key without a description fails that script and the
// test that keeps the page current. Validation errors name the key and what is wrong; unknown keys
// are errors (typos must not silently fall back to defaults in a security product).
import { z } from 'zod';
import { isIP } from 'node:net';
import { CONNECTOR_TLS_LEVELS } from '../tls/levels.ts';
import { isDomainName, parseCidr, parseListen, parseSmartHost } from '../util/net.ts';
import { isPostgresUrl } from '../util/secret-url.ts';

export const domainName = z
  .string()
  .trim()
  .toLowerCase()
  .refine(isDomainName, { message: 'is not a valid domain name' })
  .meta({ valueType: 'domain' });

const listenAddr = z
  .string()
  .refine((s) => parseListen(s) !== null, {
    message:
      'must be "IP:port", "[IPv6]:port" or "localhost:port" (host names are not looked up), e.g. "0.0.0.0:25", ' +
      '"[::]:25" or "127.0.0.1:2525"',
  })
  .meta({ valueType: '`IP:port` / `[IPv6]:port` / `localhost:port`' });

const dnsServer = z
  .string()
  .refine(
    (s) => {
      const p = parseListen(s);
      return isIP(s) !== 0 || (p !== null && isIP(p.host) !== 0);
    },
    { message: 'must be an IP address with optional port, e.g. "127.0.0.1:5353"' },
  )
  .meta({ valueType: '`IP` or `IP:port`' });

/** delivery.initialConnectionsPerDestination when it is not set (never above maxConnectionsPerDestination). */
export const INITIAL_CONNECTIONS_PER_DESTINATION = 5;

const seconds = (def: number) => z.number().positive().max(86_400).default(def).meta({ valueType: 'seconds' });

const acceptedDomain = z.strictObject({
  domain: domainName.describe('A domain this organisation receives mail for. Each domain belongs to one organisation.'),
  type: z
    .enum(['authoritative', 'internalRelay'])
    .default('authoritative')
    .describe(
      '`authoritative`: mailboxes are here (Maildir under `dataDir/mailboxes/<domain>/<localpart>/`, folder names ' +
        'as in [operations](operations.md#addresses-and-mailbox-folders)). `internalRelay`: mailboxes are on your ' +
        "own servers; mail is accepted and forwarded through the organisation's `onPremises` outbound connector " +
        '(one must exist).',
    ),
  recipients: z
    .union([z.literal('any'), z.array(z.string().min(1).max(64).toLowerCase())])
    .default('any')
    .meta({
      description:
        'Which local parts exist, written without quotes (`john doe` for `"john doe"@domain`); compared ' +
        'case-insensitively. Others get `550 5.1.1 Recipient address rejected: user unknown`. `postmaster` is ' +
        'always accepted (RFC 5321 §4.5.1).',
      valueType: '`any` or list of local parts',
    }),
});

const cidr = z
  .string()
  .refine((s) => parseCidr(s) !== null, {
    message: 'must be an IPv4/IPv6 address or CIDR block, e.g. "192.0.2.0/24" or "2001:db8::/32"',
  })
  .meta({ valueType: 'IP / CIDR' });

/** "example.test", "*.example.test" (the domain and all subdomains) or "*" (any). */
const domainPattern = z
  .string()
  .trim()
  .toLowerCase()
  .refine((d) => d === '*' || isDomainName(d.startsWith('*.') ? d.slice(2) : d), {
    message: 'must be a domain, "*.domain" (the domain and its subdomains) or "*"',
  })
  .meta({ valueType: 'name pattern' });

const smartHost = z
  .string()
  .refine((s) => parseSmartHost(s) !== null, { message: 'must be "host", "host:port", "ip" or "ip:port"' })
  .meta({ valueType: 'host' });

const fingerprint = z
  .string()
  .refine((f) => /^[0-9a-f]{64}$/i.test(f.replace(/:/g, '')), {
    message: 'must be a SHA-256 certificate fingerprint (64 hex digits, colons allowed)',
  })
  .meta({ valueType: 'SHA-256 fingerprint' });

const inboundConnector = z
  .strictObject({
    name: z.string().trim().min(1).max(128).describe('Shown in logs and the trace; unique within the organisation.'),
    connectorType: z.enum(['partner', 'onPremises']).describe('A partner organisation, or your own mail servers.'),
    enabled: z.boolean().default(true).describe('A disabled connector matches nothing.'),
    senderDomains: z
      .array(domainPattern)
      .default([])
      .describe(
        "The partner's domains (`x.test`, `*.x.test`, `*`). An `onPremises` connector is never identified by " +
          'them (only by its addresses or certificate): a sender domain is what anyone writes in MAIL FROM.',
      ),
    senderIPAddresses: z.array(cidr).default([]).describe("The partner's or your servers' addresses."),
    requireTls: z
      .boolean()
      .default(false)
      .describe(
        'Mail matching this connector over a plaintext session gets `530 5.7.0 Must issue a STARTTLS command first`.',
      ),
    tlsSenderCertificateName: domainPattern
      .optional()
      .describe(
        'The client certificate must carry this name (RFC 6125: SAN DNS names, CN only without SANs; one ' +
          'left-most wildcard), its chain must verify against `tls.trust` or `trustedCAs` (or the certificate be ' +
          'pinned), its extended key usage must allow client authentication (a certificate with an ' +
          'extendedKeyUsage extension must list `clientAuth` or `anyExtendedKeyUsage`; one without the extension ' +
          'is accepted), and it must not be revoked (`tls.revocation`). A serverAuth-only certificate is refused: ' +
          'some public CAs now issue only those, so such a partner needs a certificate with clientAuth (a private ' +
          'CA in `trustedCAs` will do).',
      ),
    restrictDomainsToCertificate: z
      .boolean()
      .default(false)
      .describe('A sender in `senderDomains` without that certificate gets `550 5.7.1` (anti-spoofing).'),
    restrictDomainsToIPAddresses: z
      .boolean()
      .default(false)
      .describe('A sender in `senderDomains` from another address gets `550 5.7.1`.'),
    treatMessagesAsInternal: z.boolean().default(false).describe('(`onPremises`) mark messages internal in the trace.'),
    trustedCAs: z.array(z.string().min(1)).default([]).meta({
      description: "CAs trusted for this connector's client certificates only.",
      valueType: 'list of PEM paths',
    }),
    pinnedCertificates: z
      .array(fingerprint)
      .default([])
      .describe(
        'Certificates trusted by fingerprint (the only way a self-signed certificate can satisfy ' +
          '`tlsSenderCertificateName`). Name and EKU are still checked; revocation is checked against the issuer ' +
          'the client presents, and a pinned certificate presented without its issuer (or self-signed) is its own ' +
          'trust anchor, with nothing to check.',
      ),
  })
  .superRefine((c, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message });
    if (!c.senderDomains.length && !c.senderIPAddresses.length && !c.tlsSenderCertificateName) {
      issue(
        'senderDomains',
        'a connector must be identified by senderDomains, senderIPAddresses or tlsSenderCertificateName',
      );
    }
    if (c.connectorType === 'onPremises' && !c.senderIPAddresses.length && !c.tlsSenderCertificateName) {
      issue(
        'tlsSenderCertificateName',
        'an onPremises connector identifies your own servers by tlsSenderCertificateName (preferred) or ' +
          'senderIPAddresses',
      );
    }
    if (c.restrictDomainsToCertificate && !c.tlsSenderCertificateName)
      issue(
        'restrictDomainsToCertificate',
        'needs tlsSenderCertificateName (the certificate the partner must present)',
      );
    if (c.restrictDomainsToIPAddresses && !c.senderIPAddresses.length)
      issue('restrictDomainsToIPAddresses', 'needs senderIPAddresses (the addresses the partner sends from)');
    if ((c.restrictDomainsToCertificate || c.restrictDomainsToIPAddresses) && !c.senderDomains.length)
      issue('senderDomains', "restrictions apply to senderDomains: list the partner's domains");
    if (c.treatMessagesAsInternal && c.connectorType !== 'onPremises')
      issue('treatMessagesAsInternal', 'applies to onPremises connectors only');
  });

const outboundConnector = z
  .strictObject({
    name: z
      .string()
      .trim()
      .min(1)
      .max(128)
      .describe('Shown in logs, the trace and DSNs; unique within the organisation.'),
    connectorType: z
      .enum(['partner', 'onPremises'])
      .default('partner')
      .describe('A partner organisation, or your own mail servers.'),
    enabled: z.boolean().default(true).describe('A disabled connector is skipped.'),
    recipientDomains: z
      .array(domainPattern)
      .default([])
      .describe(
        'Required unless `allAcceptedDomains` or `routeAllMessagesViaOnPremises` is set: `fabrikam.test`, ' +
          '`*.fabrikam.test` (the domain and all its subdomains) or `*` (any). For a recipient, an exact domain ' +
          'wins over a wildcard, a longer wildcard over a shorter one.',
      ),
    allAcceptedDomains: z
      .boolean()
      .default(false)
      .describe(
        "(`onPremises`) use this connector for recipients in any of the organisation's accepted domains that are " +
          'routed out (internalRelay).',
      ),
    routeAllMessagesViaOnPremises: z
      .boolean()
      .default(false)
      .describe(
        '(`onPremises`) send all internet mail of the organisation through this connector (specific partner ' +
          'connectors still win).',
      ),
    useMXRecord: z.boolean().default(true).describe("Deliver to the recipient domain's MX hosts."),
    smartHosts: z
      .array(smartHost)
      .default([])
      .describe(
        'Deliver to these instead (`host`, `host:port`, `ip`, `ip:port`, `[ipv6]:port`), in order. Requires ' +
          '`useMXRecord: false`.',
      ),
    tlsSettings: z
      .enum(CONNECTOR_TLS_LEVELS)
      .default('opportunistic')
      .describe(
        'The TLS requirement on one ordered scale. `encryptionOnly`: TLS must be used, any certificate. ' +
          '`certificateValidation`: the chain must validate to a trusted root (`tls.trust`) within its validity ' +
          'period and not be revoked (`tls.revocation`). `domainValidation`: additionally a certificate name (SAN ' +
          'DNS, else CN; RFC 6125) must match `tlsDomain`. Every forced level requires TLS 1.2 or newer with the ' +
          'modern suites (never legacy TLS). A forced level never falls back to plaintext or a weaker check: the ' +
          'message is deferred (`4.7.4` no STARTTLS, `4.7.5` protocol ' +
          'version/cipher/handshake/certificate/revocation/name) with the reason and its TLS failure kind in the ' +
          'trace, and bounced with a DSN that explains the cause in plain words when it expires.',
      ),
    tlsDomain: domainPattern
      .optional()
      .describe(
        'Required with `domainValidation`: `mx1.fabrikam.test` or `*.fabrikam.test` (any one-label host of ' +
          'fabrikam.test, or a wildcard certificate for it).',
      ),
  })
  .superRefine((c, ctx) => {
    if (!c.recipientDomains.length && !c.allAcceptedDomains && !c.routeAllMessagesViaOnPremises) {
      ctx.addIssue({
        code: 'custom',
        path: ['recipientDomains'],
        message:
          'name the recipient domains this connector is for (or set allAcceptedDomains / ' +
          'routeAllMessagesViaOnPremises)',
      });
    }
    if ((c.allAcceptedDomains || c.routeAllMessagesViaOnPremises) && c.connectorType !== 'onPremises') {
      ctx.addIssue({
        code: 'custom',
        path: [c.allAcceptedDomains ? 'allAcceptedDomains' : 'routeAllMessagesViaOnPremises'],
        message: 'applies to onPremises connectors only',
      });
    }
    if (!c.useMXRecord && !c.smartHosts.length)
      ctx.addIssue({
        code: 'custom',
        path: ['smartHosts'],
        message: 'list at least one smart host, or set useMXRecord: true',
      });
    if (c.useMXRecord && c.smartHosts.length)
      ctx.addIssue({
        code: 'custom',
        path: ['useMXRecord'],
        message: 'set useMXRecord: false when smartHosts are given (one or the other)',
      });
    if (c.tlsSettings === 'domainValidation' && !c.tlsDomain)
      ctx.addIssue({
        code: 'custom',
        path: ['tlsDomain'],
        message: 'is required with tlsSettings: domainValidation (the name the partner certificate must carry)',
      });
  });

const organization = z.strictObject({
  name: z
    .string()
    .trim()
    .min(1)
    .max(64)
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'may contain letters, digits, ".", "_" and "-" only')
    .meta({ description: 'Letters, digits, `.`, `_`, `-`; unique.', valueType: 'name' }),
  acceptedDomains: z.array(acceptedDomain).min(1, 'needs at least one accepted domain'),
  inboundConnectors: z.array(inboundConnector).default([]),
  outboundConnectors: z.array(outboundConnector).default([]),
});

const certPair = z.strictObject({
  cert: z.string().min(1),
  key: z.string().min(1),
  next: z
    .strictObject({ cert: z.string().min(1), key: z.string().min(1) })
    .optional()
    .meta({
      description:
        'A staged next certificate and key (PEM paths) for this one, not served yet: `portcullis dane tlsa` ' +
        'prints its TLSA record beside the current one and `portcullis dane check` says whether the published ' +
        'records match it, so that the records can be published before the rotation (DANE senders must never see ' +
        'a key their TLSA records do not name).',
      valueType: '`{cert, key}` PEM paths',
    }),
});

/** A user or group: a name (letters, digits, ".", "_", "-") or a numeric id. */
const accountName = z
  .string()
  .trim()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_][A-Za-z0-9._-]*$/, 'must be a user or group name, or a numeric id');

/** `root` (deliberately), or the unprivileged user (and group) to run as after binding. */
export const runAsSchema = z.union(
  [
    z.literal('root'),
    z.strictObject({
      user: accountName.meta({
        description: 'The user to become after binding. Must exist (`getent passwd`).',
        valueType: 'user name or uid',
      }),
      group: accountName
        .optional()
        .meta({ description: 'Its group.', valueType: 'group name or gid', defaultText: "the user's primary group" }),
    }),
  ],
  { error: 'must be root, or {user: NAME, group: NAME} (for example {user: portcullis, group: portcullis})' },
);

/** Maildir file modes: owner read/write, optionally group; never others, never execute. */
export const MAILDIR_MODES = ['0600', '0640', '0660'] as const;

const maildirOptions = z
  .strictObject({
    group: accountName.optional().meta({
      description:
        'Group of every folder and file created in `dataDir/mailboxes/`, for an IMAP server (Dovecot) that runs ' +
        'as another user of this group. The service user must be a member: started as root with `runAs`, ' +
        'Portcullis joins it when dropping root; started unprivileged (systemd `User=`), add it with `adduser ' +
        'portcullis GROUP`. Needs `mode` `"0640"` or `"0660"`. Folders are not setgid: each gets the group ' +
        'explicitly (the systemd unit forbids setgid files with `RestrictSUIDSGID=`).',
      valueType: 'group name or id',
      defaultText: "— (the service user's group)",
    }),
    mode: z
      .enum(MAILDIR_MODES, {
        error: 'must be "0600" (private), "0640" (group may read) or "0660" (group may read and write), in quotes',
      })
      .default('0600')
      .meta({
        description:
          'Mode of the message files Portcullis writes into Maildir mailboxes; the folders it creates get the ' +
          'matching mode with `x` wherever `r` is given (`0700`, `0750`, `0770`). The default keeps mailboxes ' +
          'private to the service user. `"0660"` lets a group read and write them: what an IMAP server running as ' +
          'another user needs to keep flags (it renames files). Set exactly, whatever the umask. Changing it ' +
          'takes effect after a restart and applies to new folders and files (see install.md for existing ones).',
        valueType: '`"0600"` `"0640"` `"0660"` (in quotes)',
        defaultText: '`"0600"`',
      }),
  })
  .superRefine((m, ctx) => {
    if (m.group !== undefined && m.mode === '0600')
      ctx.addIssue({
        code: 'custom',
        path: ['mode'],
        message:
          `gives group "${m.group}" no rights: use "0640" (read) or "0660" (read and write, what an IMAP ` +
          `server needs for flags)`,
      });
  });

/**
 * Where the queue and trace live: SQLite in dataDir (one node), or PostgreSQL (config/store.ts
 * resolves the URL). One object, so that each key has its row in docs/configuration.md; `url` and
 * `poolSize` belong to `postgres` only.
 */
const storeSchema = z
  .strictObject({
    type: z
      .enum(['sqlite', 'postgres'], { error: 'must be sqlite or postgres' })
      .default('sqlite')
      .describe(
        '`sqlite`: the embedded default for one machine, `dataDir/queue.sqlite`. `postgres`: a PostgreSQL ' +
          'database (see [Running a cluster](cluster.md)). Changing it takes effect after a restart; `portcullis ' +
          'store copy` moves a SQLite queue into PostgreSQL.',
      ),
    // The message never repeats the value: it may hold a password.
    url: z
      .string()
      .refine(isPostgresUrl, {
        message:
          'must be a PostgreSQL URL, postgresql://USER@HOST:PORT/DATABASE (the value is not shown: it may hold ' +
          'a password)',
      })
      .optional()
      .meta({
        description:
          'With `type: postgres`: the database, as PostgreSQL clients write it (`postgres://` too). Query ' +
          'parameters of the driver work (`?sslmode=require`, `?host=/run/postgresql` for a Unix socket: ' +
          '`postgresql://portcullis@/mail?host=/run/postgresql`). May be left out when `PORTCULLIS_STORE_URL` is set.',
        valueType: '`postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE`',
      }),
    poolSize: z
      .number()
      .int()
      .min(2)
      .max(200)
      .optional()
      .meta({
        description:
          'With `type: postgres`: connections to PostgreSQL per process. One carries the grouped writes at a time; ' +
          'the others serve reads (queue lookups, the CLI).',
        valueType: 'count, 2 to 200',
        defaultText: '`10`',
      }),
  })
  .superRefine((s, ctx) => {
    if (s.type !== 'sqlite') return;
    for (const k of ['url', 'poolSize'] as const) {
      if (s[k] !== undefined)
        ctx.addIssue({
          code: 'custom',
          path: [k],
          message: 'belongs to store type postgres (the store is sqlite): remove it, or set store.type: postgres',
        });
    }
  });

export const configSchema = z.strictObject({
  hostname: domainName.optional().meta({
    description:
      'Name in the SMTP banner, EHLO reply and `Received:` headers. Set it to the name your MX record points at.',
    defaultText: "the machine's host name",
  }),
  dataDir: z
    .string()
    .min(1)
    .default('./data')
    .meta({
      description:
        'Queue database (`queue.sqlite`), mailboxes (`mailboxes/`), generated certificates (`certs/`), the control ' +
        'socket (`control.sock`). Changing it takes effect after a restart. Must belong to (or be writable by) ' +
        'the user the server runs as, and not be writable by every user: checked at start and by `config check` ' +
        '(see [Running as a service](#running-as-a-service)). Usual: `/var/lib/portcullis`, `0750 ' +
        'portcullis:portcullis`.',
      valueType: 'path',
    }),
  runAs: runAsSchema.optional().meta({
    description:
      'Who the server runs as after binding its ports: `root` to stay root (deliberately), or the user (and ' +
      'group) to become. Changing it takes effect after a restart.',
    valueType: '`root` or `{user, group}`',
  }),
  store: storeSchema.prefault({}),
  nodeId: z
    .string()
    .trim()
    .min(1)
    .max(200)
    .optional()
    .meta({
      description:
        "This node's name in a cluster (several nodes on one PostgreSQL store): it owns the leases of the messages " +
        'the node delivers and its heartbeat row (`portcullis cluster status`). Must differ between nodes and ' +
        'stay the same across restarts of one node: at start a node returns the leases its previous run left to ' +
        'the queue. Changing it takes effect after a restart.',
      defaultText: 'host name `:` dataDir',
    }),
  workers: z
    .union([z.literal('auto'), z.number().int().min(1).max(64)])
    .default(1)
    .meta({
      description:
        'Worker processes: `1` runs one process, as always; `N` (or `auto`, the number of CPU cores) starts a ' +
        'supervisor that binds the listeners, drops privileges and runs N workers sharing them, each running ' +
        'sessions, ingest and delivery as a node of the store (`nodeId/wN`). The supervisor restarts a worker ' +
        'that dies and passes reload and stop to all; it owns the control socket and the connection counts. ' +
        '`serve --workers N` overrides it. Changing it takes effect after a restart.',
      valueType: '`auto` or 1–64',
    }),
  log: z
    .strictObject({
      level: z
        .enum(['debug', 'info', 'warn', 'error'])
        .default('info')
        .describe("Log level of the server's log (stdout)."),
      format: z
        .enum(['auto', 'json', 'text'])
        .default('auto')
        .describe(
          '`json`: one JSON object per line (for journald, files, log shippers). `text`: one readable line per ' +
            'event, `TIME LEVEL event key=value …`. `auto`: `text` when stdout is a terminal, `json` otherwise.',
        ),
    })
    .prefault({}),
  smtp: z
    .strictObject({
      listen: z
        .array(listenAddr)
        .min(1)
        .default(['127.0.0.1:2525'])
        .describe('Addresses to listen on. Changing it takes effect after a restart. See below.'),
      maxMessageSize: z
        .number()
        .int()
        .min(1024)
        .max(2 ** 31 - 1)
        .default(36_700_160)
        .meta({
          description:
            'Largest message accepted; advertised with `SIZE`. A larger `SIZE=` on MAIL gets `552 5.3.4` at once; ' +
            'larger data gets `552 5.3.4` after the terminator.',
          valueType: 'bytes',
        }),
      maxHeaderSize: z.number().int().min(1024).default(102_400).meta({
        description: 'Largest header block; larger gets `552 5.3.4 Message header size exceeds the limit`.',
        valueType: 'bytes',
      }),
      maxReceivedHeaders: z
        .number()
        .int()
        .min(1)
        .max(100_000)
        .default(100)
        .describe(
          'Mail loop detection (RFC 5321 §6.3): a message whose header section already has more `Received:` ' +
            'fields than this is refused after the data with `554 5.4.6 Too many hops (mail loop?)` and never ' +
            'queued. 100: §6.3 says servers counting `Received:` fields "SHOULD use a large rejection threshold, ' +
            'normally at least 100" (Postfix\'s `hopcount_limit` is 50).',
        ),
      maxRecipients: z
        .number()
        .int()
        .min(1)
        .max(100_000)
        .default(500)
        .describe('Recipients per message; more get `452 4.5.3` (the client sends the rest in another transaction).'),
      maxConnections: z
        .number()
        .int()
        .min(1)
        .max(1_000_000)
        .default(1000)
        .describe(
          'Concurrent SMTP sessions. Above it a new connection gets `421 4.7.0 Too many connections, try again ' +
            'later` and is closed. A session counts until it ends (`221` or `421` sent, or the client gone), not ' +
            'until the client closes its socket.',
        ),
      maxConnectionsPerIP: z
        .number()
        .int()
        .min(1)
        .default(50)
        .describe(
          'Concurrent sessions from one client address; above it `421 4.7.0 Too many connections from your address`.',
        ),
      /**
       * Sessions only connector-identified clients may use; absent: 10% of maxConnections (see inbound/admission.ts).
       */
      reservedConnections: z
        .number()
        .int()
        .min(0)
        .optional()
        .meta({
          description:
            'Part of `maxConnections` that only clients an inbound connector identifies may use, so a connection ' +
            'flood cannot lock out partners and your own servers. Clients no connector identifies get at most ' +
            '`maxConnections − reservedConnections` sessions; identified clients may use all of `maxConnections` ' +
            '(`maxConnectionsPerIP` applies to everyone). Identified means: the client address is in an enabled ' +
            "connector's `senderIPAddresses`, or the session presented a client certificate satisfying a " +
            "connector's `tlsSenderCertificateName` (it then counts in the reserve from the handshake on). A " +
            'certificate is only seen after STARTTLS, so when the general capacity is full, an address from which ' +
            "a connector's certificate was proven in the last 24 hours is admitted provisionally and must present " +
            'that certificate within 10 s (else `421 4.7.0 Too many connections, try again later`). Must be less ' +
            'than `maxConnections`; `0` reserves nothing. Without any connector that names addresses or a ' +
            'certificate nothing is reserved.',
          defaultText: '10% of `maxConnections`, at least 1',
        }),
      maxErrors: z
        .number()
        .int()
        .min(1)
        .default(20)
        .describe('Error replies in one session before it is closed with `421 4.7.0 … too many errors`.'),
      bareLineEndings: z
        .enum(['normalize', 'reject'])
        .default('normalize')
        .describe(
          'Bare CR or LF (not part of CRLF) in commands or message data. `normalize` turns each into CRLF; ' +
            '`reject` refuses the command (`500 5.5.2`) or the message (`550 5.6.0`). Either way only ' +
            '`<CRLF>.<CRLF>` ends a message, so SMTP smuggling cannot split a message here or downstream.',
        ),
      forbidUnauthPipelining: z
        .boolean()
        .default(true)
        .describe(
          "Refuse clients that break the command pipelining rules of RFC 2920 (Postfix's " +
            '`smtpd_forbid_unauth_pipelining`): input already waiting behind a command that must end a pipelined ' +
            'group — `EHLO`, `HELO`, `DATA` (message content sent before the `354`), `VRFY`, `EXPN`, `TURN`, ' +
            '`NOOP` — or behind any command before `EHLO` negotiated `PIPELINING` (after `HELO`, or before any ' +
            "`EHLO`) gets `554 5.5.0 Protocol error: … (RFC 2920)` instead of the command's reply, and the " +
            'connection is closed (log `session.pipelining` with the first 100 octets of the unexpected input). ' +
            'Correct clients never trip it: `MAIL`, `RCPT`, `RSET` and message content followed by the next ' +
            'commands may be pipelined; `QUIT` with anything behind it just ends the session; bytes behind ' +
            '`STARTTLS` are discarded as before. Spam software and SMTP smuggling attempts (a second transaction ' +
            'with its `DATA` and content in the same packet) are cut off.',
        ),
      timeouts: z
        .strictObject({
          command: seconds(300).describe(
            'Time allowed to complete each command line (also the idle timeout). Slow-drip clients that never ' +
              'finish a line are cut off: `421 4.4.2`.',
          ),
          data: seconds(600).describe(
            'Time allowed for the whole DATA phase; for a message sent in BDAT chunks, from its first BDAT to ' +
              'the end of its last chunk.',
          ),
          tlsHandshake: seconds(30).describe('Time allowed for the TLS handshake after STARTTLS.'),
        })
        .prefault({}),
    })
    .superRefine((s, ctx) => {
      if (s.reservedConnections !== undefined && s.reservedConnections >= s.maxConnections) {
        ctx.addIssue({
          code: 'custom',
          path: ['reservedConnections'],
          message:
            `must be less than smtp.maxConnections (${s.maxConnections}): the rest is the capacity for all ` +
            `other clients`,
        });
      }
    })
    .prefault({}),
  tls: z
    .strictObject({
      certificates: z
        .array(certPair)
        .default([])
        .meta({
          description:
            "Server certificates. The first is the default; the others are chosen when the client's SNI name " +
            'matches one of their names. `cert` may hold the chain (leaf first). With none configured, a ' +
            'self-signed development certificate is generated in `dataDir/certs/` with a loud warning. Files are ' +
            'watched: a changed certificate is loaded for new connections without a restart; a broken one is ' +
            'refused and the previous one keeps serving. `next: {cert, key}` stages the next certificate of a ' +
            'pair, not served: `portcullis dane tlsa` prints its TLSA record and `portcullis dane check` says ' +
            'whether the published records match it, so the records can be published before the rotation.',
          valueType: 'list of `{cert, key, next}` PEM paths (`next` optional)',
        }),
      minVersion: z
        .string()
        .default('TLSv1.2')
        .refine((v) => v === 'TLSv1.2' || v === 'TLSv1.3', {
          message: 'must be TLSv1.2 or TLSv1.3; Portcullis never accepts anything older than TLS 1.2',
        })
        .meta({
          description: 'Lowest TLS version offered. Anything older is a configuration error.',
          valueType: '`TLSv1.2` `TLSv1.3`',
        }),
      revocation: z
        .enum(['softFail', 'hardFail', 'off'])
        .default('softFail')
        .describe(
          'Revocation checking, in both directions: outbound, of partner certificates at `certificateValidation` ' +
            "and above; inbound, of every client certificate that could satisfy an inbound connector's " +
            '`tlsSenderCertificateName` (partner identification, `restrictDomainsToCertificate`, `onPremises` ' +
            "relay). OCSP from the certificate's AIA first, then its CRL distribution points; responses " +
            'signature-checked and cached until their next update (one cache for both directions); endpoint hosts ' +
            'resolved through `dns.servers`; each request must complete within 5 s. A revoked certificate always ' +
            'fails (outbound: deferred; inbound: it identifies no connector). `softFail`: unreachable endpoints ' +
            'are recorded and the certificate passes; `hardFail`: only a confirmed *good* status passes (outbound ' +
            'the message is deferred, inbound the certificate identifies no connector). A certificate (leaf or ' +
            'intermediate) that names no CRL or OCSP endpoint at all has status *unknown* too, so `hardFail` ' +
            'refuses such chains. `off`: no check. Inbound, the status and its summary are in the session log, ' +
            'the trace and the `Received:` header; nothing is fetched for sessions without a client certificate, ' +
            "for certificates that match no connector's name or chain, or when no connector uses " +
            '`tlsSenderCertificateName`.',
        ),
      trust: z
        .strictObject({
          system: z
            .boolean()
            .default(true)
            .describe(
              "Trust the public roots shipped with Node.js (Mozilla's list) when verifying client certificates " +
                'and inspecting chains.',
            ),
          caFiles: z.array(z.string().min(1)).default([]).meta({
            description: "Additional trusted CAs (for example a partner's private CA).",
            valueType: 'list of PEM paths',
          }),
        })
        .prefault({}),
    })
    .prefault({}),
  dns: z
    .strictObject({
      servers: z
        .array(dnsServer)
        .default([])
        .describe(
          'Every name lookup the gateway makes (MX, A, AAAA, TXT, TLSA, PTR) goes to these servers, never ' +
            'anywhere else. Empty: the `nameserver` lines of `/etc/resolv.conf`. Use a validating resolver ' +
            '(Unbound, BIND) on the same host for DNSSEC: the gateway reads its AD bit (see `dns.dnssec`). ' +
            'Queries go over UDP (EDNS0), over TCP when truncated; answers are cached per their TTL (at most a ' +
            'day), NXDOMAIN/NODATA for the smaller of the TTL and the MINIMUM field of the SOA record that comes ' +
            'with them (RFC 2308 §5; at most 3 hours, not at all when no SOA came); failures are not cached.',
        ),
      dnssec: z
        .boolean()
        .default(true)
        .describe(
          'Read the DNSSEC status of every answer. `true`: queries set the DO and AD bits, and an answer (or an ' +
            'NXDOMAIN/NODATA) counts as *secure* when the server set the AD bit: any server in `dns.servers`, but ' +
            'from `/etc/resolv.conf` only a loopback one (`127.0.0.0/8`, `::1`), since an AD bit that crossed a ' +
            'network can be forged. Everything else is *insecure*. `false`: nothing is ever secure, so DANE is ' +
            'off. See below.',
        ),
    })
    .prefault({}),
  dane: z
    .strictObject({
      enabled: z
        .boolean()
        .default(true)
        .describe(
          'DANE for outbound SMTP (RFC 7672): for a destination whose MX records (or, without MX, address ' +
            'records) and MX host addresses are DNSSEC-secure, look up `_25._tcp.<mx host>` TLSA records (the ' +
            'port is `delivery.port`) through `dns.servers`. Usable records (DANE-TA, DANE-EE) make TLS 1.2+ ' +
            'mandatory and the certificate must match one of them; only unusable records make TLS mandatory ' +
            'without authentication; a TLSA lookup that fails or is bogus defers the host (it is not contacted); ' +
            'an insecure zone gets MTA-STS or opportunistic TLS. Needs a validating resolver in `dns.servers` ' +
            '(see `dns.dnssec`): without one no answer is secure and DANE is off in effect. Never applied to ' +
            'smart hosts. `false`: no TLSA lookups.',
        ),
    })
    .prefault({}),
  delivery: z
    .strictObject({
      port: z
        .number()
        .int()
        .min(1)
        .max(65535)
        .default(25)
        .meta({ description: 'Port of MX hosts (smart hosts may name their own).', valueType: 'port' }),
      heloName: domainName.optional().meta({ description: 'Name sent in EHLO.', defaultText: '`hostname`' }),
      sourceAddresses: z
        .array(z.string().refine((a) => isIP(a) !== 0, { message: 'must be an IP address of this machine' }))
        .default([])
        .meta({ description: 'Local addresses to connect from (one per family).', valueType: 'list of IP addresses' }),
      maxConnectionsPerDestination: z
        .number()
        .int()
        .min(1)
        .max(1000)
        .default(20)
        .describe(
          "Concurrent connections to one next hop (a domain's MX set, or a connector's smart hosts): the most its " +
            'concurrency window may grow to (see `initialConnectionsPerDestination`). Holds for the whole gateway: ' +
            'with `workers: N` each worker gets its share of this and of the initial window (shares sum to the ' +
            'setting, each at least 1: with more workers than the setting, one per worker). A worker delivers ' +
            "what it accepted itself, so mail from one busy session gets that worker's share.",
        ),
      initialConnectionsPerDestination: z
        .number()
        .int()
        .min(1)
        .max(1000)
        .optional()
        .meta({
          description:
            'The concurrency window a next hop starts with: at most this many deliveries to it at once, each on ' +
            "its own connection. The window grows by one after a window's worth of successful deliveries made " +
            'while messages had to wait more than a second for a connection, at most one step every 10 s, up to ' +
            '`maxConnectionsPerDestination`; it shrinks by one at a failed or lost connection or a throttling ' +
            'reply (`421`, `4.7.x`), never below 1, and returns to this value after a minute without deliveries. A ' +
            'message that finds the window full waits for a connection to come free instead of opening another ' +
            '(after 60 s it is deferred with `4.4.5`). Must not exceed `maxConnectionsPerDestination`.',
          defaultText: `\`${INITIAL_CONNECTIONS_PER_DESTINATION}\` (at most \`maxConnectionsPerDestination\`)`,
        }),
      connectionReuse: z
        .strictObject({
          idleSeconds: z.number().min(0).max(600).default(10).meta({
            description: 'How long an idle connection is kept for the next message to the same host (0 = no reuse).',
            valueType: 'seconds',
          }),
          maxMessages: z
            .number()
            .int()
            .min(1)
            .max(100_000)
            .default(1000)
            .describe('Messages per connection before it is closed.'),
        })
        .prefault({}),
      maildir: maildirOptions.prefault({}),
      maildirShared: z
        .boolean()
        .default(false)
        .describe(
          'Says that `dataDir/mailboxes/` is on storage every node shares (NFS, CephFS, a cluster file system). ' +
            'Required with `store.type: postgres` when an organisation has `authoritative` domains: with a shared ' +
            'queue any node may deliver any message, so every node must write into the same mailboxes. Without it ' +
            'such a configuration is refused at start and by `config check` (the error names the domains and this ' +
            'key). Not needed when every domain is `internalRelay`.',
        ),
      tlsFallbackSeconds: z
        .number()
        .min(0)
        .default(3600)
        .meta({
          description:
            'After a failed TLS handshake with an address under **opportunistic** TLS, go straight to the step that ' +
            'worked (legacy TLS, else plaintext) with that address for this long (the step is recorded in the ' +
            'trace). `0`: nothing is remembered; every delivery starts with TLS 1.2+ and steps down within the ' +
            'attempt. Never applies to a forced level. Remembered in the store, for every node sharing it.',
          valueType: 'seconds',
        }),
      opportunisticLegacyTls: z
        .boolean()
        .default(true)
        .describe(
          'Under **opportunistic** TLS, when a server refuses our TLS 1.2+ handshake for its protocol version or ' +
            'its cipher suites (`protocol-version`, `no-shared-cipher`), try once more with TLS 1.0/1.1 and older ' +
            'suites before falling back to plaintext. `false`: such a server gets plaintext at once. Never ' +
            'applies to a forced level, nor to the inbound server.',
        ),
      destinationDownSeconds: z
        .number()
        .min(0)
        .default(60)
        .meta({
          description:
            'A next hop whose every host failed to connect (or to set up a session: greeting, EHLO, STARTTLS, TLS) ' +
            "in a window's worth of deliveries in a row (the initial window's at least: five with the default, one " +
            'with `initialConnectionsPerDestination: 1`), none delivered between, is not tried again for this long; ' +
            'messages for it are deferred at ' +
            'once. One refusal among deliveries that succeed only shrinks the window. DNS failures alone never ' +
            'mark it down. Hosts that failed are also tried last on the next attempt. Remembered in the store: every ' +
            'node (and process) sharing it knows.',
          valueType: 'seconds',
        }),
      timeouts: z
        .strictObject({
          connect: seconds(30).describe('TCP connect.'),
          greeting: seconds(300).describe('Wait for the `220` greeting (RFC 5321 §4.5.3.2).'),
          command: seconds(300).describe(
            'Wait for the replies to MAIL, RCPT and the other commands (RFC 5321 §4.5.3.2).',
          ),
          dataInit: seconds(120).describe('Wait for the `354` after DATA (RFC 5321 §4.5.3.2.4, "DATA initiation").'),
          dataBlock: seconds(180).describe(
            'Sending the message data: each write (64 KiB) must be taken by the server within this long (RFC 5321 ' +
              '§4.5.3.2.5, "data block"), so a slow link that keeps making progress never times out and a server ' +
              'that stops reading does. (This key used to be the wait for the `354`, which is now `dataInit`.)',
          ),
          dataEnd: seconds(600).describe(
            'Wait for the reply after the final dot has been sent (RFC 5321 §4.5.3.2.6, "DATA termination"); the ' +
              'time the data takes to send does not count.',
          ),
        })
        .prefault({}),
    })
    .superRefine((d, ctx) => {
      if (
        d.initialConnectionsPerDestination !== undefined &&
        d.initialConnectionsPerDestination > d.maxConnectionsPerDestination
      )
        ctx.addIssue({
          code: 'custom',
          path: ['initialConnectionsPerDestination'],
          message:
            `must not exceed delivery.maxConnectionsPerDestination (${d.maxConnectionsPerDestination}); lower it, ` +
            'or raise maxConnectionsPerDestination',
        });
    })
    .prefault({}),
  mtaSts: z
    .strictObject({
      enabled: z
        .boolean()
        .default(true)
        .describe(
          'MTA-STS (RFC 8461) for mail to the internet: before delivering to a domain by its MX records, look up ' +
            '`_mta-sts.<domain>` TXT through `dns.servers` and fetch its policy from ' +
            '`https://mta-sts.<domain>/.well-known/mta-sts.txt` (port 443; the certificate must be valid for that ' +
            'name and chain to `tls.trust`; no redirects; at most 64 KB; 10 s to connect, 30 s in all). The ' +
            'policy is cached in the queue database for its `max_age`, refetched when the TXT `id` changes or ' +
            'half-way to expiry, and a cached policy stays in force when a fetch fails. `enforce`: only MX hosts ' +
            "matching the policy's `mx` patterns are used, each with TLS 1.2+ and a certificate valid for the MX " +
            'host name, else the message is deferred (`4.7.5`). `testing`: mail is delivered as before and what ' +
            "enforce would have refused is recorded in the trace. `false`: no lookups. A connector's stricter " +
            '`tlsSettings` still apply.',
        ),
      hosting: z
        .strictObject({
          listen: z
            .array(listenAddr)
            .min(1)
            .describe(
              'Set `mtaSts.hosting` to serve the MTA-STS policy of every accepted domain at ' +
                '`https://mta-sts.<domain>/.well-known/mta-sts.txt`, on these addresses (e.g. `["0.0.0.0:443"]`; ' +
                '`mta-sts.<domain>` of each accepted domain must point here), with the certificate of ' +
                '`tls.certificates` whose names cover `mta-sts.<domain>` (chosen by SNI; the first certificate ' +
                'otherwise). `portcullis mta-sts records` prints the DNS records to publish. Changing the ' +
                'addresses takes effect after a restart; the other settings on reload.',
            ),
          mode: z
            .enum(['enforce', 'testing', 'none'])
            .default('testing')
            .describe(
              'The policy mode published for every accepted domain. Start with `testing` (and TLS-RPT), then ' +
                '`enforce`; `none` withdraws a policy (RFC 8461 §8.3).',
            ),
          mx: z
            .array(
              domainPattern.refine((p) => p !== '*', {
                message: 'must be a host name or "*.domain" (one label); "*" is not an MTA-STS pattern',
              }),
            )
            .min(1)
            .optional()
            .meta({
              description:
                'The `mx` patterns published (`mx1.example.com`, or `*.example.com` for one label). Every MX host ' +
                'of your accepted domains must match one, and its certificate must carry that host name.',
              defaultText: '`[hostname]`',
              valueType: 'list of host names',
            }),
          maxAgeSeconds: z
            .number()
            .int()
            .min(86_400)
            .max(31_557_600)
            .default(604_800)
            .meta({
              description:
                'The `max_age` published: how long senders cache the policy (at least a day; RFC 8461 §3.2 allows ' +
                'up to a year, and recommends weeks).',
              valueType: 'seconds',
            }),
        })
        .optional(),
    })
    .prefault({}),
  queue: z
    .strictObject({
      delayWarning: z
        .number()
        .min(0)
        .default(14_400)
        .meta({
          description:
            'When a message has waited this long with recipients still deferred, the sender gets one "Delayed Mail" ' +
            'notice (RFC 3464, `Action: delayed`), unless NOTIFY excludes DELAY. 0 disables.',
          valueType: 'seconds',
        }),
      retrySchedule: z
        .array(z.number().positive())
        .min(1)
        .default([60, 300, 900, 1800, 3600, 7200, 14_400])
        .meta({
          description:
            'Wait before each retry of a temporarily failed delivery; the last value repeats. The first retries ' +
            "come sooner than the 30 minutes of RFC 5321 §4.5.4.1, as Postfix's `minimal_backoff_time` does (see " +
            'docs/architecture.md, "Retries and giving up").',
          valueType: 'list of seconds',
        }),
      messageExpiration: z
        .number()
        .positive()
        .default(432_000)
        .meta({
          description:
            'After this a message still failing temporarily fails permanently (`5.4.7`) and the sender gets a DSN ' +
            'that explains the last failure. 5 days: RFC 5321 §4.5.4.1 says the give-up time "generally needs to ' +
            'be at least 4-5 days", and Postfix\'s `maximal_queue_lifetime` is 5 days.',
          valueType: 'seconds',
        }),
      leaseSeconds: z
        .number()
        .int()
        .min(5)
        .default(300)
        .meta({
          description:
            'How long a node holds a message it delivers before another node (or, after a restart, the same one) ' +
            'may take it over. A live node renews its leases every third of this while their deliveries run, with ' +
            'its heartbeat; a node that dies leaves leases that expire within this time, and other nodes take its ' +
            'work over (see [Running a cluster](cluster.md#several-nodes)).',
          valueType: 'seconds',
        }),
      concurrency: z
        .number()
        .int()
        .min(1)
        .max(1000)
        .default(100)
        .describe(
          'Messages in delivery at the same time, waiting for a connection to their next hop included (each holds ' +
            'its data in memory). A message accepted while all are taken is delivered through the queue.',
        ),
    })
    .prefault({}),
  trace: z
    .strictObject({
      retentionDays: z
        .number()
        .positive()
        .max(3650)
        .default(30)
        .meta({
          description:
            'How long a finished message (delivered, failed, or deleted with `portcullis queue delete`) keeps its ' +
            'envelope, recipients and delivery history for `portcullis trace`, counted from when it finished. The ' +
            'server forgets older ones at start and every hour, at most 50,000 per run (more follow a minute ' +
            'later), oldest first; it logs `trace.expired` with how many. Messages still in the queue are never ' +
            'forgotten, however old. Message contents are never kept after a message is finished.',
          valueType: 'days (fractions allowed, at most 3650)',
        }),
    })
    .prefault({}),
  tlsRpt: z
    .strictObject({
      enabled: z
        .boolean()
        .default(true)
        .describe(
          'SMTP TLS Reporting (RFC 8460), sending side: count, per recipient domain and UTC day, the TLS sessions ' +
            'delivery makes with its MX hosts (successes, and failures by result type), and once a day (shortly ' +
            'after midnight UTC, and on `portcullis tlsrpt send`) send each domain that publishes a `_smtp._tls` ' +
            'TXT record its aggregate report for the day before: by mail (`mailto:`, through our own queue) or ' +
            'HTTPS POST (`https:`). `false`: nothing is counted or sent.',
        ),
      organizationName: z
        .string()
        .min(1)
        .max(200)
        .optional()
        .meta({ description: 'The `organization-name` of our reports.', defaultText: '`hostname`' }),
      contactInfo: z.string().min(1).max(200).optional().meta({
        description: 'The `contact-info` of our reports (an address or URL where report recipients reach us).',
        defaultText: '`postmaster@` `hostname`',
      }),
      receive: z
        .array(z.string().regex(/^[^@\s]+@[^@\s]+$/, 'must be an address like tlsrpt@example.com'))
        .default([])
        .meta({
          description:
            'Addresses (in an accepted domain) that receive TLS reports from others: mail to them is not put in a ' +
            'mailbox but parsed (gzip or plain JSON, RFC 8460), stored, and shown by `portcullis tlsrpt ' +
            'received`. A report that cannot be read is kept and flagged with the reason. Publish them in the ' +
            '`_smtp._tls` TXT record of your domains (`v=TLSRPTv1; rua=mailto:tlsrpt@example.com`).',
          valueType: 'list of addresses',
        }),
    })
    .prefault({}),
  admin: z
    .strictObject({
      enabled: z
        .boolean()
        .default(true)
        .describe(
          'Run the admin centre: the HTTPS API (`/api/v1/…`, OpenAPI document at `/api/openapi.json`), the web UI ' +
            '(`/`) and Prometheus metrics (`/metrics`), all behind bearer tokens made with `portcullis admin ' +
            'token create` (see [admin-centre.md](admin-centre.md)). Changing it takes effect after a restart.',
        ),
      listen: listenAddr
        .default('127.0.0.1:8443')
        .describe(
          "Address of the admin centre's HTTPS listener, bound with the SMTP listeners before privileges are " +
            "dropped (so a port below 1024 works). It serves the gateway's certificates (`tls.certificates`, or " +
            'the development certificate), reloaded with them. Keep it on a loopback or management address: ' +
            'tokens protect it, but it need not face the internet. Must differ from every `smtp.listen` address. ' +
            'Changing it takes effect after a restart.',
        ),
    })
    .prefault({}),
  organizations: z.array(organization).min(1, 'needs at least one organization'),
});

export type ConfigInput = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
