// Owns: the one judgement of whether an established outbound connection meets a TLS requirement
// (used by delivery and by the admin probes `connector validate` and `tls check`).
import { levelRank, type TlsRequirement } from '../policy/outbound.ts';
import { namesSatisfy } from '../tls/names.ts';
import type { RevocationChecker, RevocationMode, RevocationResult } from '../tls/revocation.ts';
import type { PeerTls } from './smtp-client.ts';

export interface TlsJudgement {
  /** Why the requirement is not met, or null when it is. */
  violation: string | null;
  revocation?: RevocationResult;
}

export async function judgeTls(tls: PeerTls | null, req: TlsRequirement, where: string, revocation: RevocationChecker, mode: RevocationMode, reportAll = false): Promise<TlsJudgement> {
  if (levelRank(req.level) < levelRank('encryptionOnly') && !reportAll) return { violation: null };
  const forced = levelRank(req.level) >= levelRank('encryptionOnly');
  const v = (text: string) => (forced ? `TLS required by ${req.source}: ${text}, ${where}` : null);
  if (!tls) return { violation: v('no TLS session') };
  if (levelRank(req.level) >= levelRank('certificateValidation') && !tls.chainValid) {
    return { violation: v(`certificate not valid (${tls.chainError}), presented ${tls.subject ?? '(none)'} (SHA-256 ${tls.fingerprint256 ?? '-'})`) };
  }
  if (req.level === 'domainValidation' && !namesSatisfy(tls.names ?? [], req.tlsDomain!)) {
    return { violation: v(`certificate name mismatch, expected ${req.tlsDomain}, presented ${tls.subject} ${tls.names?.length ? `(names ${tls.names.join(', ')}) ` : ''}(SHA-256 ${tls.fingerprint256})`) };
  }
  const wantRevocation = reportAll ? tls.chainValid : levelRank(req.level) >= levelRank('certificateValidation');
  if (mode === 'off' && !reportAll) return { violation: null };
  if (!wantRevocation || !tls.chain) return { violation: null };
  const r = await revocation.check(tls.chain, reportAll);
  if (levelRank(req.level) >= levelRank('certificateValidation')) {
    if (r.status === 'revoked') return { violation: v(r.summary), revocation: r };
    if (r.status === 'unknown' && mode === 'hardFail') return { violation: `TLS required by ${req.source} with tls.revocation hardFail: ${r.summary}, ${where}`, revocation: r };
  }
  return { violation: null, revocation: r };
}
