// Owns: server-side TLS contexts: one per configured certificate, chosen by SNI name, the first as
// default; hot reload on file change or on demand without restart (existing sessions keep the
// context they started with). Promise: a failed reload keeps serving the previous certificates.
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { constants, randomBytes, X509Certificate, createPrivateKey } from 'node:crypto';
import path from 'node:path';
import tls from 'node:tls';
import { AdminError } from '../errors.ts';
import { emit } from '../events.ts';
import { certificateFileWarnings } from './inspect.ts';
import { CIPHERS, ECDH_CURVES } from './policy-constants.ts';
import { errorMessage } from '../util/errors.ts';

export interface CertPair {
  cert: string;
  key: string;
}

interface Loaded {
  ctx: tls.SecureContext;
  x509: X509Certificate;
  certPem: string;
  keyPem: string;
}

export class ServerTls {
  private loaded: Loaded[] = [];
  private watchers: FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** Why the last reload was refused (for the operator's reply to `config reload`). */
  lastError: string | undefined;
  /** Shared across reloads so resumption survives a certificate rotation. */
  private readonly ticketKeys = randomBytes(48);

  constructor(
    private pairs: readonly CertPair[],
    private minVersion: tls.SecureVersion,
  ) {
    this.loaded = this.build();
    emit({ event: 'tls.certificates.loaded', names: this.names(), source: 'start' });
  }

  private build(): Loaded[] {
    return this.pairs.map((pair) => {
      let certPem: string;
      let keyPem: string;
      try {
        certPem = readFileSync(pair.cert, 'utf8');
        keyPem = readFileSync(pair.key, 'utf8');
      } catch (e) {
        throw new AdminError(
          `cannot read certificate or key (${pair.cert}, ${pair.key}): ${errorMessage(e)}`,
          'check tls.certificates paths and file permissions',
        );
      }
      let x: X509Certificate;
      try {
        x = new X509Certificate(certPem);
        if (!x.checkPrivateKey(createPrivateKey(keyPem))) {
          throw new Error('the private key does not belong to the certificate');
        }
      } catch (e) {
        throw new AdminError(
          `certificate ${pair.cert} with key ${pair.key} is unusable: ${errorMessage(e)}`,
          'install the matching certificate and key (PEM), certificate first then intermediates',
        );
      }
      const ctx = this.context(pair, certPem, keyPem);
      return { ctx, x509: x, certPem, keyPem };
    });
  }

  /** OpenSSL's refusal ("ca md too weak", "ee key too small") explained by the certificate checks. */
  private context(pair: CertPair, certPem: string, keyPem: string): tls.SecureContext {
    try {
      return tls.createSecureContext({
        cert: certPem,
        key: keyPem,
        minVersion: this.minVersion,
        maxVersion: 'TLSv1.3',
        ciphers: CIPHERS,
        honorCipherOrder: true,
        ecdhCurve: ECDH_CURVES,
        ticketKeys: this.ticketKeys,
        sessionTimeout: 7200,
        // Required for resumption: with requestCert, OpenSSL fails any resumption attempt with
        // "session id context uninitialized" when no context is set (tls.Server sets one itself).
        sessionIdContext: 'portcullis-smtp',
        // No client-initiated renegotiation (TLS 1.2): each one costs the server a full handshake
        // (a cheap DoS lever) and SMTP never needs it; OpenSSL answers with a no_renegotiation alert.
        secureOptions: constants.SSL_OP_NO_RENEGOTIATION,
      });
    } catch (e) {
      const why = certificateFileWarnings(pair.cert);
      throw new AdminError(
        `certificate ${pair.cert} is unusable: ${errorMessage(e)}${why.length ? ` (${why.join('; ')})` : ''}`,
        'install a certificate signed with SHA-256 or better, with an RSA key of at least 2048 bits or an EC ' +
          'P-256/P-384 key',
      );
    }
  }

  names(): string[] {
    return this.loaded.map((l) => l.x509.subjectAltName ?? l.x509.subject);
  }

  /** The default certificate and key, presented as our client certificate on outbound TLS. */
  clientIdentity(): { cert: string; key: string } {
    return { cert: this.loaded[0].certPem, key: this.loaded[0].keyPem };
  }

  certificates(): X509Certificate[] {
    return this.loaded.map((l) => l.x509);
  }

  /** Context for a new session (SNI name may be absent). */
  contextFor(servername?: string): tls.SecureContext {
    if (servername && this.loaded.length > 1) {
      const hit = this.loaded.find((l) => l.x509.checkHost(servername) !== undefined);
      if (hit) return hit.ctx;
    }
    return this.loaded[0].ctx;
  }

  readonly sniCallback = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void => {
    cb(null, this.contextFor(servername));
  };

  /** Re-read the files; keep the old contexts when anything is wrong. Returns success. */
  reload(source: string, pairs?: readonly CertPair[], minVersion?: tls.SecureVersion): boolean {
    const prevPairs = this.pairs;
    const prevMin = this.minVersion;
    if (pairs) this.pairs = pairs;
    if (minVersion) this.minVersion = minVersion;
    try {
      this.loaded = this.build();
      emit({ event: 'tls.certificates.loaded', names: this.names(), source });
      if (pairs) this.watch();
      return true;
    } catch (e) {
      this.pairs = prevPairs;
      this.minVersion = prevMin;
      this.lastError = errorMessage(e);
      emit(
        { event: 'tls.certificates.rejected', error: errorMessage(e) },
        'certificate reload failed; still serving the previous certificates',
      );
      return false;
    }
  }

  /** Watch the certificate folders (files are often replaced by rename). */
  watch(): void {
    this.unwatch();
    const files = new Set(this.pairs.flatMap((p) => [p.cert, p.key]));
    const dirs = new Set([...files].map((f) => path.dirname(f)));
    for (const dir of dirs) {
      try {
        const w = watch(dir, { persistent: false }, (_ev, name) => {
          if (name && files.has(path.join(dir, name.toString()))) this.schedule();
        });
        w.on('error', () => {
          /* folder removed: the next SIGHUP reload re-establishes the watch */
        });
        this.watchers.push(w);
      } catch {
        /* unwatchable folder: SIGHUP still reloads */
      }
    }
  }

  private schedule(): void {
    clearTimeout(this.timer);
    // Debounce: certificate and key are usually written one after the other.
    this.timer = setTimeout(() => this.reload('file change'), 250);
    this.timer.unref();
  }

  unwatch(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    clearTimeout(this.timer);
  }
}
