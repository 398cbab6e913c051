// Owns: the one classifier of delivery outcomes: temporary vs permanent, and the RFC 3463 code,
// decided from structured error data (errno codes, reply codes), never by matching error text.
import type { SmtpReply } from '../errors.ts';

export interface Outcome {
  status: 'delivered' | 'deferred' | 'failed';
  reply: SmtpReply;
}

const LOCAL: Record<string, { enhanced: string; temporary: boolean; what: string }> = {
  ENOSPC: { enhanced: '4.3.1', temporary: true, what: 'mail system full (no space left on device)' },
  EDQUOT: { enhanced: '4.2.2', temporary: true, what: 'mailbox full (disk quota exceeded)' },
  EACCES: { enhanced: '4.3.0', temporary: true, what: 'permission denied writing the mailbox; fix the ownership of the mailboxes folder' },
  EPERM: { enhanced: '4.3.0', temporary: true, what: 'permission denied writing the mailbox; fix the ownership of the mailboxes folder' },
  EROFS: { enhanced: '4.3.0', temporary: true, what: 'mail store is on a read-only file system' },
  EIO: { enhanced: '4.3.0', temporary: true, what: 'I/O error writing the mailbox' },
  EMFILE: { enhanced: '4.3.0', temporary: true, what: 'too many open files' },
  ENFILE: { enhanced: '4.3.0', temporary: true, what: 'too many open files in the system' },
  ENAMETOOLONG: { enhanced: '5.1.3', temporary: false, what: 'mailbox name too long for the file system' },
  ENOTDIR: { enhanced: '4.3.0', temporary: true, what: 'a file stands where a mailbox folder belongs' },
  EEXIST: { enhanced: '4.3.0', temporary: true, what: 'name collision writing the mailbox' },
};

export function classifyLocalError(e: NodeJS.ErrnoException, where: string): Outcome {
  const k = LOCAL[e.code ?? ''] ?? { enhanced: '4.3.0', temporary: true, what: `local error ${e.code ?? ''}`.trim() };
  const code = k.temporary ? 451 : 550;
  return {
    status: k.temporary ? 'deferred' : 'failed',
    reply: { code, enhanced: k.enhanced, message: `Local delivery failed: ${k.what}`, reason: `${k.what} (${e.code} at ${where})` },
  };
}
