// Owns: the one judgement of whether an established outbound connection meets a TLS requirement
// (used by delivery and by the admin probes `connector validate` and `tls check`). A violation
// names its kind of the TLS failure vocabulary (tls/failures.ts), decided from the chain result,
// the name match and the revocation status — or, for a demand with its own check (DANE), from
// that check in place of the WebPKI ones.
import type { HostDemand } from '../policy/outbound.ts';
import { atLeast } from '../tls/levels.ts';
import type { TlsFailureKind } from '../tls/failures.ts';
import { namesSatisfy } from '../tls/names.ts';
import type { RevocationChecker, RevocationMode, RevocationResult } from '../tls/revocation.ts';
import type { PeerTls } from './smtp-client.ts';

export interface TlsJudgement {
  /** Why the requirement is not met, or null when it is. */
  violation: string | null;
  /**
   * The kind of the violation; absent when there is none, or when there was no TLS session at all (the caller knows
   * why).
   */
  kind?: TlsFailureKind;
  revocation?: RevocationResult;
  /** A demand with its own check: what proved the session (e.g. "TLSA 3 1 1 matches …"). */
  proof?: string;
}

export async function judgeTls(
  tls: PeerTls | null,
  req: HostDemand,
  where: string,
  revocation: RevocationChecker,
  mode: RevocationMode,
  reportAll = false,
): Promise<TlsJudgement> {
  if (!atLeast(req.level, 'encryptionOnly') && !reportAll) return { violation: null };
  const forced = atLeast(req.level, 'encryptionOnly');
  const v = (text: string) => (forced ? `TLS required by ${req.source}: ${text}, ${where}` : null);
  if (!tls) return { violation: v('no TLS session') };
  // Required levels keep the TLS 1.2 floor and the modern suites (smtp-client never offers legacy
  // TLS under them; this holds even if a caller got that wrong).
  if (forced && tls.legacy) {
    return {
      violation: v(`legacy TLS session (${tls.version} ${tls.cipher})`),
      kind: tls.version === 'TLSv1.2' || tls.version === 'TLSv1.3' ? 'no-shared-cipher' : 'protocol-version',
    };
  }
  if (req.verify && forced) {
    // The demand's own proof replaces the WebPKI checks (DANE-EE ignores names, dates and issuer).
    const r = req.verify({ presented: tls.presented ?? [] });
    return r.ok ? { violation: null, proof: r.detail } : { violation: v(r.failure.text), kind: r.failure.kind };
  }
  if (atLeast(req.level, 'certificateValidation') && !tls.chainValid) {
    return {
      violation: v(
        `certificate not valid (${tls.chainError}), presented ${tls.subject ?? '(none)'} (SHA-256 ` +
          `${tls.fingerprint256 ?? '-'})`,
      ),
      kind: tls.chainFailure ?? 'certificate-not-trusted',
    };
  }
  if (req.level === 'domainValidation' && !namesSatisfy(tls.names ?? [], req.tlsDomain!)) {
    return {
      violation: v(
        `certificate name mismatch, expected ${req.tlsDomain}, presented ${tls.subject} ` +
          `${tls.names?.length ? `(names ${tls.names.join(', ')}) ` : ''}(SHA-256 ${tls.fingerprint256})`,
      ),
      kind: 'certificate-host-mismatch',
    };
  }
  const wantRevocation = reportAll ? tls.chainValid : atLeast(req.level, 'certificateValidation');
  if (mode === 'off' && !reportAll) return { violation: null };
  if (!wantRevocation || !tls.chain) return { violation: null };
  const r = await revocation.check(tls.chain, reportAll);
  if (atLeast(req.level, 'certificateValidation')) {
    if (r.status === 'revoked') return { violation: v(r.summary), kind: 'certificate-revoked', revocation: r };
    if (r.status === 'unknown' && mode === 'hardFail')
      return {
        violation: `TLS required by ${req.source} with tls.revocation hardFail: ${r.summary}, ${where}`,
        kind: 'revocation-unknown',
        revocation: r,
      };
  }
  return { violation: null, revocation: r };
}
