// Owns: certificate revocation checking: OCSP (from the certificate's AIA) first, then CRLs
// (from its CRL distribution points), each response verified against the issuer (or an OCSP
// responder certificate the issuer delegated) with the signature algorithm it names
// (signature.ts: RSA, RSA-PSS, ECDSA, Ed25519, Ed448), cached until its nextUpdate. For reports, also
// every CA-issuer URL (AIA caIssuers), and a survey of a chain that may not verify.
// Promise: never throws for a bad or unreachable endpoint; returns revoked / good / unknown with
// every endpoint tried and what happened (reachable or not; answered now or from the cache), so
// callers can apply softFail or hardFail and admins can see which endpoints answered. Name
// lookups for endpoint hosts go through dns/.
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { createHash, X509Certificate } from 'node:crypto';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier, Certificate as AsnCertificate, CertificateList } from '@peculiar/asn1-x509';
import {
  BasicOCSPResponse,
  CertID,
  OCSPRequest,
  OCSPResponse,
  OCSPResponseStatus,
  Request,
  TBSRequest,
  id_pkix_ocsp_basic,
} from '@peculiar/asn1-ocsp';
import type { Resolver } from '../dns/types.ts';
import { emit } from '../events.ts';
import { dnLine } from './names.ts';
import { verifySignature } from './signature.ts';
import { issuedBy, splitPem, type TrustStore } from './trust.ts';
import { x509 } from './x509.ts';
import { errorMessage } from '../util/errors.ts';

export type RevocationMode = 'softFail' | 'hardFail' | 'off';
export type RevocationStatus = 'good' | 'revoked' | 'unknown';

export interface EndpointResult {
  kind: 'ocsp' | 'crl' | 'caIssuers';
  url: string;
  /** The endpoint answered with a valid, signed, current response (caIssuers: served a certificate). */
  ok: boolean;
  /** An HTTP answer came back, usable or not (the firewall question). */
  reachable: boolean;
  status?: RevocationStatus;
  error?: string;
  /** The answer is one we fetched earlier (at fetchedAt) and keep until its nextUpdate. */
  cached?: boolean;
  fetchedAt?: string;
  /** caIssuers: the certificate served there, and whether it is the issuer of the one checked. */
  served?: string;
  servedIsIssuer?: boolean;
}

export interface CertRevocation {
  subject: string;
  status: RevocationStatus;
  endpoints: EndpointResult[];
  revokedAt?: string;
  /** The issuer the answers were checked against (absent: none was found, nothing could be verified). */
  issuer?: string;
  /** The CA-issuer URL that issuer was fetched from, when it was not in the chain or trust store. */
  issuerUrl?: string;
}

export interface RevocationResult {
  status: RevocationStatus;
  certificates: CertRevocation[];
  /** One line for the trace / reply. */
  summary: string;
}

const SHA1 = '1.3.14.3.2.26';
const OCSP_SIGNING = '1.3.6.1.5.5.7.3.9';
const MAX_BODY = 10 * 1024 * 1024;
const SKEW_MS = 5 * 60_000;

/** Only http(s) endpoints are fetched (RFC 5280 §4.2.1.13, RFC 6960 Appendix A); others are listed. */
export const fetchable = (u: string): boolean => /^https?:\/\//i.test(u);

/** No answer at all (connection, name lookup or timeout), as opposed to an unusable answer. */
class Unreachable extends Error {}

const selfSigned = (c: X509Certificate) => issuedBy(c, c);

function parse(c: X509Certificate): AsnCertificate {
  return AsnConvert.parse(c.raw, AsnCertificate);
}

/** Every OCSP, CRL and CA-issuer URL a certificate names (any scheme; only http(s) is fetched). */
export function endpointUrls(c: X509Certificate): { ocsp: string[]; crl: string[]; caIssuers: string[] } {
  const p = new x509.X509Certificate(c.raw);
  const aia = p.getExtension(x509.AuthorityInfoAccessExtension);
  const cdp = p.getExtension(x509.CRLDistributionPointsExtension);
  return {
    ocsp: (aia?.ocsp ?? []).map((g) => String(g.value)),
    crl: (cdp?.distributionPoints ?? [])
      .flatMap((dp) => dp.distributionPoint?.fullName ?? [])
      .map((n) => n.uniformResourceIdentifier)
      .filter((u): u is string => !!u),
    caIssuers: (aia?.caIssuers ?? []).map((g) => String(g.value)),
  };
}

/** Certificates in a CA-issuer answer: DER, PEM or a PKCS#7 certs-only bundle (RFC 5280 §4.2.2.1). */
function certificatesIn(body: Buffer): X509Certificate[] {
  const text = body.toString('latin1');
  if (text.includes('-----BEGIN CERTIFICATE-----')) return splitPem(text).map((p) => new X509Certificate(p));
  try {
    return [new X509Certificate(body)];
  } catch {
    /* not one DER certificate: try PKCS#7 */
  }
  return new x509.X509Certificates(body).map((c) => new X509Certificate(Buffer.from(c.rawData)));
}

function summarize(certificates: CertRevocation[]): RevocationResult {
  const revoked = certificates.find((c) => c.status === 'revoked');
  const unknown = certificates.find((c) => c.status === 'unknown');
  const status: RevocationStatus = revoked ? 'revoked' : unknown ? 'unknown' : 'good';
  const where = (c: CertRevocation) =>
    c.endpoints
      .filter((e) => e.kind !== 'caIssuers')
      .map((e) => `${e.kind.toUpperCase()} ${e.url}: ${e.ok ? e.status : `unreachable (${e.error})`}`)
      .join('; ') || 'no CRL or OCSP endpoints';
  const summary = revoked
    ? `certificate ${revoked.subject} is REVOKED${revoked.revokedAt ? ` since ${revoked.revokedAt}` : ''} ` +
      `(${where(revoked)})`
    : unknown
      ? `revocation status of ${unknown.subject} unknown (${where(unknown)})`
      : 'not revoked (' + certificates.map(where).join('; ') + ')';
  return { status, certificates, summary };
}

export function certId(leaf: X509Certificate, issuer: X509Certificate): CertID {
  const i = parse(issuer).tbsCertificate;
  const l = parse(leaf).tbsCertificate;
  const sha1 = (b: ArrayBuffer) => createHash('sha1').update(Buffer.from(b)).digest();
  return new CertID({
    hashAlgorithm: new AlgorithmIdentifier({ algorithm: SHA1, parameters: null }),
    issuerNameHash: new OctetString(sha1(AsnConvert.serialize(i.subject))),
    issuerKeyHash: new OctetString(sha1(i.subjectPublicKeyInfo.subjectPublicKey)),
    serialNumber: l.serialNumber,
  });
}

export function ocspRequest(leaf: X509Certificate, issuer: X509Certificate): Buffer {
  const req = new OCSPRequest({
    tbsRequest: new TBSRequest({ requestList: [new Request({ reqCert: certId(leaf, issuer) })] }),
  });
  return Buffer.from(AsnConvert.serialize(req));
}

const same = (a: ArrayBuffer | OctetString, b: ArrayBuffer | OctetString) =>
  Buffer.from(a instanceof OctetString ? a.buffer : a).equals(Buffer.from(b instanceof OctetString ? b.buffer : b));

/** Interpret a DER OCSP response for `leaf`; throws an Error with the reason when unusable. */
export function readOcspResponse(
  der: Buffer,
  leaf: X509Certificate,
  issuer: X509Certificate,
  now = Date.now(),
): { status: RevocationStatus; nextUpdate?: Date; revokedAt?: Date } {
  const resp = AsnConvert.parse(der, OCSPResponse);
  if (resp.responseStatus !== OCSPResponseStatus.successful)
    throw new Error(
      `responder status ${(OCSPResponseStatus[resp.responseStatus] as string | undefined) ?? resp.responseStatus}`,
    );
  if (!resp.responseBytes || resp.responseBytes.responseType !== id_pkix_ocsp_basic)
    throw new Error('not a basic OCSP response');
  const basic = AsnConvert.parse(resp.responseBytes.response.buffer, BasicOCSPResponse);
  // The signed bytes as received (re-encoding a parsed structure need not give them back).
  const tbs = basic.tbsResponseDataRaw ?? AsnConvert.serialize(basic.tbsResponseData);
  const signedBy = (c: X509Certificate) => verifySignature(basic.signatureAlgorithm, tbs, basic.signature, c);
  // The signer: the issuer itself, or a responder certificate it issued for OCSP signing (RFC 6960 §4.2.2.2).
  if (!signedBy(issuer)) {
    const delegated = (basic.certs ?? [])
      .map((c) => new X509Certificate(Buffer.from(AsnConvert.serialize(c))))
      .find(
        (c) =>
          issuedBy(c, issuer) &&
          new x509.X509Certificate(c.raw).getExtension(x509.ExtendedKeyUsageExtension)?.usages.includes(OCSP_SIGNING),
      );
    if (!delegated || !signedBy(delegated))
      throw new Error('response signature does not verify against the issuer or a delegated responder');
  }
  const id = certId(leaf, issuer);
  const single = basic.tbsResponseData.responses.find(
    (r) => same(r.certID.serialNumber, id.serialNumber) && same(r.certID.issuerKeyHash, id.issuerKeyHash),
  );
  if (!single) throw new Error('response does not cover this certificate');
  if (single.thisUpdate.getTime() > now + SKEW_MS) throw new Error('response is not yet valid');
  if (single.nextUpdate && single.nextUpdate.getTime() < now - SKEW_MS)
    throw new Error(`response expired at ${single.nextUpdate.toISOString()}`);
  const s = single.certStatus;
  const status: RevocationStatus = s.revoked ? 'revoked' : s.good !== undefined ? 'good' : 'unknown';
  return {
    status,
    ...(single.nextUpdate ? { nextUpdate: single.nextUpdate } : {}),
    ...(s.revoked ? { revokedAt: s.revoked.revocationTime } : {}),
  };
}

/** Is the CRL in `der` signed by `issuer` (RFC 5280 §5.1: both algorithm fields the same, the signature valid)? */
export function crlSignedBy(der: Buffer, issuer: X509Certificate): boolean {
  try {
    const list = AsnConvert.parse(der, CertificateList);
    if (!list.tbsCertListRaw || !list.signatureAlgorithm.isEqual(list.tbsCertList.signature)) return false;
    return verifySignature(list.signatureAlgorithm, list.tbsCertListRaw, list.signature, issuer);
  } catch {
    return false;
  }
}

interface Checked {
  rev: CertRevocation;
  issuer?: X509Certificate;
  fetchedIssuer: boolean;
}

export class RevocationChecker {
  private readonly crlCache = new Map<string, { until: number; crl: x509.X509Crl; fetchedAt: number }>();
  private readonly ocspCache = new Map<
    string,
    { until: number; status: RevocationStatus; revokedAt?: Date; fetchedAt: number }
  >();

  constructor(
    private readonly resolver: () => Resolver,
    private readonly timeoutMs = 5000,
  ) {}

  /**
   * HTTP(S) GET/POST through our resolver; bounded in size and in time: the whole exchange (name
   * lookup, connect, answer) must finish within timeoutMs, so a responder that trickles its
   * answer cannot hold a delivery or an SMTP session. No answer at all: Unreachable.
   */
  private async fetch(url: string, kind: EndpointResult['kind'], body?: Buffer): Promise<Buffer> {
    const t0 = performance.now();
    let outcome: 'ok' | 'error' = 'error';
    try {
      const b = await this.request(url, body);
      outcome = 'ok';
      return b;
    } finally {
      emit({ event: 'revocation.fetch', kind, outcome, ms: performance.now() - t0 });
    }
  }

  private request(url: string, body?: Buffer): Promise<Buffer> {
    const u = new URL(url);
    const lib = u.protocol === 'https:' ? https : http;
    const lookup: net.LookupFunction = (host, opts, cb) => {
      if (net.isIP(host)) {
        (cb as (e: Error | null, a: string, f: number) => void)(null, host, net.isIP(host));
        return;
      }
      this.resolver()
        .addresses(host)
        .then(
          (r) => {
            const a = r.records[0];
            if ((opts as { all?: boolean }).all)
              (cb as unknown as (e: null, a: { address: string; family: number }[]) => void)(
                null,
                r.records.map((x) => ({ address: x, family: net.isIP(x) })),
              );
            else (cb as (e: Error | null, a: string, f: number) => void)(null, a, net.isIP(a));
          },
          (e: Error) => (cb as (e: Error, a: string, f: number) => void)(e, '', 4),
        );
    };
    return new Promise((resolve, reject) => {
      let answered = false;
      const req = lib.request(
        u,
        {
          method: body ? 'POST' : 'GET',
          lookup,
          timeout: this.timeoutMs,
          agent: false,
          headers: body ? { 'content-type': 'application/ocsp-request', 'content-length': body.length } : {},
        },
        (res) => {
          answered = true;
          if ((res.statusCode ?? 0) >= 300) {
            res.resume();
            reject(new Error(`HTTP ${res.statusCode}`));
            return;
          }
          const parts: Buffer[] = [];
          let n = 0;
          res.on('data', (d: Buffer) => {
            n += d.length;
            if (n > MAX_BODY) {
              req.destroy(new Error('response too large'));
              return;
            }
            parts.push(d);
          });
          res.on('end', () => resolve(Buffer.concat(parts)));
          res.on('error', reject);
        },
      );
      const deadline = setTimeout(
        () => req.destroy(new Error(`no complete answer within ${this.timeoutMs} ms`)),
        this.timeoutMs,
      );
      req.on('close', () => clearTimeout(deadline));
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', (e: NodeJS.ErrnoException) => {
        const text = e.code ? `${e.code} ${e.message}` : e.message;
        reject(answered ? new Error(text) : new Unreachable(text));
      });
      req.end(body);
    });
  }

  private failed(kind: EndpointResult['kind'], url: string, e: unknown): EndpointResult {
    return { kind, url, ok: false, reachable: !(e instanceof Unreachable), error: errorMessage(e) };
  }

  private async viaOcsp(
    url: string,
    leaf: X509Certificate,
    issuer: X509Certificate,
  ): Promise<EndpointResult & { revokedAt?: Date }> {
    const key = `${url}|${issuer.fingerprint256}|${leaf.serialNumber}`;
    const hit = this.ocspCache.get(key);
    if (hit && hit.until > Date.now()) {
      return {
        kind: 'ocsp',
        url,
        ok: true,
        reachable: true,
        status: hit.status,
        cached: true,
        fetchedAt: new Date(hit.fetchedAt).toISOString(),
        ...(hit.revokedAt ? { revokedAt: hit.revokedAt } : {}),
      };
    }
    try {
      const r = readOcspResponse(await this.fetch(url, 'ocsp', ocspRequest(leaf, issuer)), leaf, issuer);
      const until = r.nextUpdate ? r.nextUpdate.getTime() : Date.now() + 3_600_000;
      this.ocspCache.set(key, {
        until,
        status: r.status,
        fetchedAt: Date.now(),
        ...(r.revokedAt ? { revokedAt: r.revokedAt } : {}),
      });
      return {
        kind: 'ocsp',
        url,
        ok: true,
        reachable: true,
        status: r.status,
        ...(r.revokedAt ? { revokedAt: r.revokedAt } : {}),
      };
    } catch (e) {
      return this.failed('ocsp', url, e);
    }
  }

  private async viaCrl(
    url: string,
    leaf: X509Certificate,
    issuer: X509Certificate,
  ): Promise<EndpointResult & { revokedAt?: Date }> {
    try {
      let entry = this.crlCache.get(url);
      const cached = !!entry && entry.until > Date.now();
      if (!entry || !cached) {
        const crl = new x509.X509Crl(await this.fetch(url, 'crl'));
        if (!crlSignedBy(Buffer.from(crl.rawData), issuer))
          throw new Error('CRL signature does not verify against the issuer');
        if (crl.thisUpdate.getTime() > Date.now() + SKEW_MS) throw new Error('CRL is not yet valid');
        if (crl.nextUpdate && crl.nextUpdate.getTime() < Date.now() - SKEW_MS)
          throw new Error(`CRL expired at ${crl.nextUpdate.toISOString()}`);
        entry = {
          until: crl.nextUpdate ? crl.nextUpdate.getTime() : Date.now() + 3_600_000,
          crl,
          fetchedAt: Date.now(),
        };
        this.crlCache.set(url, entry);
      }
      const hit = entry.crl.findRevoked(new x509.X509Certificate(leaf.raw));
      return {
        kind: 'crl',
        url,
        ok: true,
        reachable: true,
        status: hit ? 'revoked' : 'good',
        ...(hit ? { revokedAt: hit.revocationDate } : {}),
        ...(cached ? { cached: true, fetchedAt: new Date(entry.fetchedAt).toISOString() } : {}),
      };
    } catch (e) {
      return this.failed('crl', url, e);
    }
  }

  /** Fetch a CA-issuer URL; returns what it served and, when it is the issuer of `cert`, that certificate. */
  private async viaCaIssuers(
    url: string,
    cert: X509Certificate,
  ): Promise<{ result: EndpointResult; issuer?: X509Certificate }> {
    try {
      const certs = certificatesIn(await this.fetch(url, 'caIssuers'));
      if (!certs.length) throw new Error('the answer holds no certificate');
      const issuer = certs.find((c) => issuedBy(cert, c));
      return {
        result: {
          kind: 'caIssuers',
          url,
          ok: true,
          reachable: true,
          served: dnLine((issuer ?? certs[0]).subject),
          servedIsIssuer: !!issuer,
        },
        ...(issuer ? { issuer } : {}),
      };
    } catch (e) {
      return { result: this.failed('caIssuers', url, e) };
    }
  }

  /** Without the issuer nothing can be verified: only whether the endpoint answers at all. */
  private async reachOnly(kind: 'ocsp' | 'crl', url: string): Promise<EndpointResult> {
    const why =
      'without the issuer certificate (not in the chain, the trust store or at a CA-issuer URL) its answer ' +
      'cannot be checked';
    try {
      await this.fetch(url, kind);
      return { kind, url, ok: false, reachable: true, error: `answered, but ${why}` };
    } catch (e) {
      const r = this.failed(kind, url, e);
      return r.reachable ? { ...r, error: `${r.error}; ${why}` } : r;
    }
  }

  private async inspect(cert: X509Certificate, issuerIn: X509Certificate | undefined, all: boolean): Promise<Checked> {
    const urls = endpointUrls(cert);
    const notTried = (kind: EndpointResult['kind'], url: string): EndpointResult => ({
      kind,
      url,
      ok: false,
      reachable: false,
      error: 'not tried: only http and https URLs are fetched',
    });
    let issuer = issuerIn;
    let issuerUrl: string | undefined;
    const issuerEndpoints: EndpointResult[] = [];
    if (all) {
      for (const url of urls.caIssuers) {
        if (!fetchable(url)) {
          issuerEndpoints.push(notTried('caIssuers', url));
          continue;
        }
        const r = await this.viaCaIssuers(url, cert);
        issuerEndpoints.push(r.result);
        if (!issuer && r.issuer) {
          issuer = r.issuer;
          issuerUrl = url;
        }
      }
    }
    const endpoints: EndpointResult[] = [];
    let decided: (EndpointResult & { revokedAt?: Date }) | undefined;
    const attempt = async (kind: 'ocsp' | 'crl', url: string) => {
      if (!fetchable(url)) {
        if (all) endpoints.push(notTried(kind, url));
        return undefined;
      }
      const r = !issuer
        ? await this.reachOnly(kind, url)
        : kind === 'ocsp'
          ? await this.viaOcsp(url, cert, issuer)
          : await this.viaCrl(url, cert, issuer);
      endpoints.push(r);
      return r;
    };
    for (const url of urls.ocsp) {
      const r = await attempt('ocsp', url);
      if (r?.ok && r.status !== 'unknown') {
        decided ??= r;
        if (!all) break;
      }
    }
    if (!decided || all) {
      for (const url of urls.crl) {
        const r = await attempt('crl', url);
        if (r?.ok) {
          decided ??= r;
          if (!all) break;
        }
      }
    }
    if (endpoints.some((e) => e.status === 'revoked')) decided = endpoints.find((e) => e.status === 'revoked');
    const rev: CertRevocation = {
      subject: dnLine(cert.subject),
      status: decided?.status ?? 'unknown',
      endpoints: [...endpoints, ...issuerEndpoints],
      ...(decided?.revokedAt ? { revokedAt: decided.revokedAt.toISOString() } : {}),
      ...(issuer ? { issuer: dnLine(issuer.subject) } : {}),
      ...(issuerUrl ? { issuerUrl } : {}),
    };
    return { rev, ...(issuer ? { issuer } : {}), fetchedIssuer: !!issuerUrl };
  }

  /**
   * Check one certificate against its issuer. `all`: try every endpoint, CA-issuer URLs too (for
   * reports); without an issuer, endpoints are only tried for reachability.
   */
  async checkOne(cert: X509Certificate, issuer: X509Certificate | undefined, all = false): Promise<CertRevocation> {
    return (await this.inspect(cert, issuer, all)).rev;
  }

  /** Check every certificate of a verified chain (leaf first, root last; the root is not checked). */
  async check(chain: readonly X509Certificate[], all = false): Promise<RevocationResult> {
    const certificates: CertRevocation[] = [];
    for (let i = 0; i + 1 < chain.length; i++) certificates.push(await this.checkOne(chain[i], chain[i + 1], all));
    return summarize(certificates);
  }

  /**
   * For reports (tls check), also of a chain that does not verify: every certificate as presented
   * (leaf first) with every endpoint tried. The issuer of each is a presented certificate that
   * issued it, else one in the trust store, else one served at its CA-issuer URLs (which is then
   * surveyed too). Trust anchors and self-signed certificates are not checked.
   */
  async survey(presented: readonly X509Certificate[], trust: TrustStore): Promise<RevocationResult> {
    const todo = [...presented];
    const seen = new Set<string>();
    const certificates: CertRevocation[] = [];
    for (let i = 0; i < todo.length && i < 10; i++) {
      const c = todo[i];
      if (seen.has(c.fingerprint256) || trust.isTrusted(c) || selfSigned(c)) continue;
      seen.add(c.fingerprint256);
      const known = todo.find((x) => x !== c && issuedBy(c, x)) ?? trust.issuerOf(c);
      const r = await this.inspect(c, known, true);
      certificates.push(r.rev);
      if (r.fetchedIssuer && r.issuer) todo.push(r.issuer);
    }
    return summarize(certificates);
  }
}
