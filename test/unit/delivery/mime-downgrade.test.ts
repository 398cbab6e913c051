import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { convertForPeer, MAX_DEPTH, OutboundContent } from '../../../src/delivery/mime-downgrade.ts';
import { dotStuff } from '../../../src/delivery/smtp-client.ts';
import { decodeQp, has8bit, hasBareCrLf, lineLengths } from '../../helpers/mime.ts';

const L = (s: string) => Buffer.from(s, 'latin1');
const ok = (data: string, to7bit = true) => {
  const r = convertForPeer(L(data), to7bit);
  assert.ok(r.kind === 'converted', r.kind === 'refused' ? r.refused : '');
  return { text: r.data.toString('latin1'), notes: r.notes, data: r.data };
};
const refused = (data: string) => {
  const r = convertForPeer(L(data), true);
  assert.ok(r.kind === 'refused', 'expected a refusal');
  return r.refused;
};

test('a 7-bit message with short lines is returned as it is (the same buffer)', () => {
  const input = L('Subject: x\r\nContent-Type: text/plain\r\n\r\nhello\r\n');
  for (const to7bit of [true, false]) {
    const r = convertForPeer(input, to7bit);
    assert.ok(r.kind === 'converted' && r.data === input && r.notes.length === 0);
  }
});

test('8-bit single-part body: quoted-printable, CTE replaced, other headers untouched', () => {
  const r = ok(
    'Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\nX-After: y\r\n\r\ncaf\xe9\r\n',
  );
  assert.equal(
    r.text,
    'Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\nX-After: y\r\n\r\ncaf=E9\r\n',
  );
  assert.deepEqual(r.notes, ['converted 8-bit body to quoted-printable for a peer without 8BITMIME']);
});

test('an empty Content-Transfer-Encoding is the default 7bit: 8-bit content is converted, not refused', () => {
  const r = ok(
    'Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: \r\n\r\ncaf\xe9\r\n',
  );
  assert.equal(
    r.text,
    'Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9\r\n',
  );
});

test('a non-MIME 8-bit message gets MIME-Version, an unknown-8bit charset (RFC 1428) and a CTE', () => {
  const r = ok('Subject: x\r\n\r\ncaf\xe9\r\n');
  assert.equal(
    r.text,
    'Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=unknown-8bit\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9\r\n',
  );
});

test('a header block that ends without an empty line gets one when fields are added', () => {
  const r = ok('Subject: x\r\ncaf\xe9 is not a header field\r\n');
  assert.equal(
    r.text,
    'Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=unknown-8bit\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9 is not a header field\r\n',
  );
});

test('the same 8-bit message to a peer with 8BITMIME is not touched', () => {
  const input = L('Subject: x\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xe9\r\n');
  const r = convertForPeer(input, false);
  assert.ok(r.kind === 'converted' && r.data === input);
});

test('binary parts become base64', () => {
  const r = ok(
    'Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\xff\r\n',
  );
  assert.match(r.text, /Content-Transfer-Encoding: base64\r\n\r\nAP8NCg==\r\n$/);
  assert.deepEqual(r.notes, ['converted the binary body to base64']);
});

test('refusals name the place: header, part header, preamble, epilogue, message/*, encoded parts, depth', () => {
  assert.equal(refused('Subject: caf\xe9\r\n\r\nx\r\n'), '8-bit octets in the "Subject" header of the message');
  const mp = (inner: string, pre = '', epi = '') =>
    `Content-Type: multipart/mixed; boundary=b\r\n\r\n${pre}--b\r\n${inner}\r\n--b--\r\n${epi}`;
  assert.equal(
    refused(mp('Content-Description: \xe9\r\n\r\nx')),
    '8-bit octets in the "Content-Description" header of MIME part 1',
  );
  assert.equal(
    refused(mp('\r\nx', 'pr\xe9amble\r\n')),
    '8-bit octets in the preamble of the message, which cannot be encoded',
  );
  assert.equal(
    refused(mp('\r\nx', '', '\xe9pilogue\r\n')),
    '8-bit octets in the epilogue of the message, which cannot be encoded',
  );
  assert.equal(
    refused(mp('Content-Type: message/delivery-status\r\n\r\nStatus: 5.0.0 \xe9')),
    '8-bit octets in MIME part 1 of type message/delivery-status, which cannot be re-encoded (RFC 2046 §5.2)',
  );
  assert.equal(
    refused(mp('Content-Transfer-Encoding: base64\r\n\r\nAAA\xe9')),
    '8-bit octets in MIME part 1, which is declared base64',
  );
  assert.equal(
    refused(mp('Content-Transfer-Encoding: x-uuencode\r\n\r\n\xe9')),
    '8-bit octets in MIME part 1, which has the unknown transfer encoding "x-uuencode"',
  );
  assert.equal(
    refused(mp('Content-Type: message/rfc822\r\n\r\nSubject: \xe9\r\n\r\nx')),
    '8-bit octets in the "Subject" header of the message attached as MIME part 1',
  );
  let deep = 'x\xe9';
  for (let i = 0; i <= MAX_DEPTH; i++)
    deep = `Content-Type: multipart/mixed; boundary=d${i}\r\n\r\n--d${i}\r\n${deep}\r\n--d${i}--`;
  assert.match(
    refused(deep),
    new RegExp(`MIME parts nested deeper than ${MAX_DEPTH} levels in MIME part (1\\.){${MAX_DEPTH - 1}}1`),
  );
});

test('8-bit headers do not stop a peer that has 8BITMIME; only long lines are fixed', () => {
  const r = convertForPeer(L(`Subject: caf\xe9\r\n\r\n${'a'.repeat(1200)}\r\n`), false);
  assert.ok(r.kind === 'converted');
  assert.match(
    r.data.toString('latin1'),
    /^Subject: caf\xe9\r\nMIME-Version: 1\.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na{75}=\r\n/,
  );
  assert.deepEqual(r.notes, ['re-encoded the body as quoted-printable to keep lines within 998 octets']);
});

test('long lines: folded header, base64 broken, quoted-printable soft-broken, message/* broken with a space', () => {
  const long = (c: string) => c.repeat(1500);
  const r = ok(
    `Subject: x\r\nReferences: ${'<a@b> '.repeat(300)}\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n` +
      `--b\r\nContent-Transfer-Encoding: base64\r\n\r\n${long('QUJD')}\r\n` +
      `--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n${long('a=3D')}\r\n` +
      `--b\r\nContent-Type: message/external-body\r\n\r\n${long('e')}\r\n--b--\r\n`,
    false,
  );
  assert.deepEqual(
    lineLengths(r.text).filter((n) => n > 998),
    [],
  );
  assert.deepEqual(r.notes, ['folded 1 header line longer than 998 octets', 'broke 3 lines longer than 998 octets']);
  assert.match(r.text, /\r\n eeee/, 'continuation with a space');
});

test('the multipart digest default type is message/rfc822', () => {
  const r = ok(
    'Content-Type: multipart/digest; boundary=b\r\nContent-Transfer-Encoding: 8bit\r\n\r\n--b\r\n\r\nSubject: s\r\n\r\ncaf\xe9\r\n--b--\r\n',
  );
  assert.equal(
    r.text,
    'Content-Type: multipart/digest; boundary=b\r\nContent-Transfer-Encoding: 7bit\r\nMIME-Version: 1.0\r\n\r\n--b\r\n\r\n' +
      'Subject: s\r\nContent-Type: text/plain; charset=unknown-8bit\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9\r\n--b--\r\n',
  );
});

test('OutboundContent: the decision reads the envelope, not the data; old messages are scanned', () => {
  const long = L(`Subject: x\r\n\r\n${'a'.repeat(1200)}\r\n`);
  // Recorded at ingest: trusted as is (a wrong record proves no scan took place).
  const trusted = new OutboundContent(long, { smtputf8: false, longestLine: 20 }).forPeer(true);
  assert.ok(trusted.kind === 'ready' && trusted.data === long && trusted.conversion === undefined);
  const eight = L('Subject: x\r\n\r\ncaf\xe9\r\n');
  const seven = new OutboundContent(eight, { smtputf8: false, longestLine: 12 }).forPeer(false);
  assert.ok(seven.kind === 'ready' && seven.data === eight, 'not flagged 8-bit: sent as stored');
  // Stored before the longest line was recorded: measured.
  const old = new OutboundContent(long, { smtputf8: false }).forPeer(true);
  assert.ok(old.kind === 'ready' && old.data !== long && /re-encoded the body/.test(old.conversion ?? ''));
  const c = new OutboundContent(eight, { smtputf8: false, body: '8BITMIME', longestLine: 12 });
  const a = c.forPeer(false);
  assert.ok(
    a.kind === 'ready' && a.conversion === 'converted 8-bit body to quoted-printable for a peer without 8BITMIME',
  );
  assert.equal(c.forPeer(false), a, 'made once per kind of peer');
  const b = c.forPeer(true);
  assert.ok(b.kind === 'ready' && b.data === eight);
});

// ---- Properties over generated MIME trees ----

type Cte = '' | '7bit' | '8bit' | 'binary' | 'quoted-printable' | 'base64';
type Node =
  | { kind: 'leaf'; type: string; cte: Cte; body: string }
  | {
      kind: 'multipart';
      subtype: string;
      cte: '' | '7bit' | '8bit';
      preamble: string;
      parts: Node[];
      epilogue: string | null;
      boundary?: string;
    }
  | { kind: 'message'; cte: '' | '7bit' | '8bit'; subject: string; inner: Node };

const LONG = 'y'.repeat(1200);
function tokens(eight: boolean, long: boolean) {
  const base = ['a', 'word ', ' ', '\t', '=', '.', '-', '--', 'From ', '\r\n', '\r\n.\r\n', '\r\n\r\n'];
  const t = [...base, ...(eight ? ['\xe9', '\xff\xfe', '\xc3\xa9'] : [])];
  return fc.oneof(
    { weight: 20, arbitrary: fc.constantFrom(...t) },
    { weight: long ? 1 : 0, arbitrary: fc.constant(LONG) },
  );
}
const text = (eight: boolean, long: boolean, max = 30) =>
  fc.array(tokens(eight, long), { maxLength: max }).map((a) => a.join(''));

function leafArb(eight: boolean, long: boolean): fc.Arbitrary<Node> {
  return fc
    .record({
      type: fc.constantFrom('text/plain; charset=utf-8', 'text/html', 'application/octet-stream', ''),
      cte: fc.constantFrom<Cte>('', '7bit', '8bit', 'binary', 'quoted-printable', 'base64'),
    })
    .chain(({ type, cte }) => {
      const body =
        cte === 'quoted-printable'
          ? fc
              .array(
                fc.oneof(
                  { weight: 10, arbitrary: fc.constantFrom('a', 'b c', '=3D', '=E9', '=\r\n', '\r\n', '.') },
                  { weight: long ? 1 : 0, arbitrary: fc.constant('q'.repeat(1100)) },
                ),
                { maxLength: 30 },
              )
              .map((a) => a.join(''))
          : cte === 'base64'
            ? fc.tuple(fc.uint8Array({ maxLength: 900 }), fc.boolean()).map(([b, wrap]) => {
                const s = Buffer.from(b).toString('base64');
                return wrap || !long ? (s.match(/.{1,76}/g) ?? []).join('\r\n') : s;
              })
            : text(eight, long);
      return body.map((b) => ({ kind: 'leaf' as const, type, cte, body: b }));
    });
}

function treeArb(eight: boolean, long: boolean): fc.Arbitrary<Node> {
  const ascii = text(false, long, 8);
  return fc.letrec<{ node: Node; multipart: Node; message: Node }>((tie) => ({
    node: fc.oneof({ maxDepth: 4, depthSize: 'small' }, leafArb(eight, long), tie('multipart'), tie('message')),
    multipart: fc.record({
      kind: fc.constant('multipart' as const),
      subtype: fc.constantFrom('mixed', 'alternative', 'related'),
      cte: fc.constantFrom<'' | '7bit' | '8bit'>('', '7bit', '8bit'),
      preamble: ascii,
      parts: fc.array(tie('node'), { minLength: 1, maxLength: 4 }),
      epilogue: fc.option(ascii, { nil: null }),
    }),
    message: fc.record({
      kind: fc.constant('message' as const),
      cte: fc.constantFrom<'' | '7bit' | '8bit'>('', '7bit', '8bit'),
      subject: fc.constantFrom('s', 'inner'),
      inner: tie('node'),
    }),
  })).node;
}

function headersOf(n: Node): string[] {
  const cte = n.cte ? [`Content-Transfer-Encoding: ${n.cte}`] : [];
  if (n.kind === 'leaf') return [...(n.type ? [`Content-Type: ${n.type}`] : []), ...cte];
  if (n.kind === 'multipart') return [`Content-Type: multipart/${n.subtype};\r\n boundary="${n.boundary}"`, ...cte];
  return ['Content-Type: message/rfc822', ...cte];
}

/** Serialise an entity; boundaries are assigned here ("_" appears in no content). */
function serialize(n: Node, top: string[], counter = { n: 0 }): string {
  if (n.kind === 'multipart') n.boundary = `=_b${counter.n++}_`;
  const head = [...top, ...headersOf(n)];
  let body: string;
  if (n.kind === 'leaf') body = n.body;
  else if (n.kind === 'message') body = serialize(n.inner, [`Subject: ${n.subject}`], counter);
  else {
    body =
      (n.preamble ? `${n.preamble}\r\n` : '') +
      n.parts.map((p) => `--${n.boundary}\r\n${serialize(p, [], counter)}\r\n`).join('') +
      `--${n.boundary}--` +
      (n.epilogue === null ? '' : `\r\n${n.epilogue}`);
  }
  return head.map((h) => `${h}\r\n`).join('') + '\r\n' + body;
}

function split(entity: string): { head: string[]; body: string } {
  if (entity.startsWith('\r\n')) return { head: [], body: entity.slice(2) };
  const i = entity.indexOf('\r\n\r\n');
  return {
    head: entity
      .slice(0, i)
      .split(/\r\n(?![ \t])/)
      .map((l) => l.replace(/\r\n(?=[ \t])/g, '')),
    body: entity.slice(i + 4),
  };
}

function decode(cte: string, body: string): Buffer {
  if (cte === 'quoted-printable') return decodeQp(body.replace(/[ \t]+(?=\r\n|$)/g, ''));
  if (cte === 'base64') return Buffer.from(body.replace(/[\r\n ]/g, ''), 'base64');
  return L(body);
}

const cteOf = (head: string[]) =>
  (head.find((h) => /^content-transfer-encoding:/i.test(h)) ?? '').replace(/^[^:]*:\s*/, '').toLowerCase();

/** Check that `out` (an entity as sent) carries the same content and structure as `orig`. */
function same(n: Node, orig: string, out: string, to7bit: boolean): void {
  const o = split(orig);
  const s = split(out);
  // Every original field is still there, in order (long ones folded); CTE may change; fields may be added.
  const keep = (h: string[]) => h.filter((l) => !/^content-transfer-encoding:/i.test(l));
  const added = new Set(['MIME-Version: 1.0', 'Content-Type: text/plain; charset=unknown-8bit']);
  assert.deepEqual(
    keep(s.head).filter((l) => !added.has(l) || keep(o.head).includes(l)),
    keep(o.head),
  );
  if (n.kind === 'leaf') {
    assert.deepEqual(decode(cteOf(s.head), s.body), decode(cteOf(o.head), o.body));
    return;
  }
  if (to7bit && /8bit/.test(cteOf(o.head)) && has8bit(orig)) assert.equal(cteOf(s.head), '7bit');
  if (n.kind === 'message') {
    same(n.inner, o.body, s.body, to7bit);
    return;
  }
  const parts = (body: string) => {
    const d = `--${n.boundary}`;
    const at = body.startsWith(d) ? 0 : body.indexOf(`\r\n${d}`) + 2;
    const pieces = body.slice(at).split(`\r\n${d}`);
    const last = pieces.pop()!;
    assert.ok(last.startsWith('--'), 'close delimiter');
    return {
      preamble: body.slice(0, Math.max(0, at - 2)),
      parts: pieces.map((p, i) => (i === 0 ? p.slice(d.length + 2) : p.slice(2))),
      epilogue: last.slice(4),
    };
  };
  const a = parts(o.body);
  const b = parts(s.body);
  const unbreak = (x: string) => x.replace(/\r\n /g, '');
  assert.equal(unbreak(b.preamble), unbreak(a.preamble));
  assert.equal(unbreak(b.epilogue), unbreak(a.epilogue));
  assert.equal(b.parts.length, n.parts.length);
  n.parts.forEach((p, i) => same(p, a.parts[i], b.parts[i], to7bit));
}

const TOP = ['From: <a@contoso.test>', 'Subject: generated'];

test('property: converted trees keep structure and content; 7-bit, CRLF only, lines <= 998; input untouched', () => {
  fc.assert(
    fc.property(treeArb(true, true), fc.boolean(), (tree, to7bit) => {
      const orig = serialize(tree, TOP);
      const input = L(orig);
      const copy = Buffer.from(input);
      const r = convertForPeer(input, to7bit);
      assert.ok(r.kind === 'converted', r.kind === 'refused' ? r.refused : '');
      assert.deepEqual(input, copy, 'the input is never modified');
      const out = r.data.toString('latin1');
      if (to7bit) assert.equal(has8bit(out), false);
      assert.equal(hasBareCrLf(out), false);
      assert.deepEqual(
        lineLengths(out).filter((x) => x > 998),
        [],
      );
      same(tree, orig, out, to7bit);
      // Dot-stuffing of the converted data is still exact: only the terminator ends it.
      const wire = Buffer.concat(dotStuff(r.data)).toString('latin1');
      assert.equal(wire.indexOf('\r\n.\r\n'), wire.length - 5);
      assert.equal(wire.slice(0, -3).replace(/(^|\r\n)\./g, '$1'), out.endsWith('\r\n') ? out : `${out}\r\n`);
    }),
    { numRuns: 300, seed: 998 },
  );
});

test('property: a 7-bit tree without long lines is sent as it is', () => {
  fc.assert(
    fc.property(treeArb(false, false), fc.boolean(), (tree, to7bit) => {
      const input = L(serialize(tree, TOP));
      const r = convertForPeer(input, to7bit);
      assert.ok(r.kind === 'converted' && r.data === input && r.notes.length === 0);
    }),
    { numRuns: 300, seed: 7 },
  );
});

test('property: an 8-bit header anywhere is refused, naming it; with 8BITMIME it is sent', () => {
  fc.assert(
    fc.property(treeArb(true, false), fc.nat(), (tree, pick) => {
      const leaves: Node[] = [];
      const walk = (n: Node) => {
        if (n.kind === 'leaf') leaves.push(n);
        else if (n.kind === 'message') walk(n.inner);
        else n.parts.forEach(walk);
      };
      walk(tree);
      const victim = leaves[pick % leaves.length] as Extract<Node, { kind: 'leaf' }>;
      victim.type = `${victim.type || 'text/plain'}; name="caf\xe9"`;
      const input = L(serialize(tree, TOP));
      const r = convertForPeer(input, true);
      assert.ok(r.kind === 'refused');
      assert.match(r.refused, /^8-bit octets in the "Content-Type" header of /);
      assert.ok(convertForPeer(input, false).kind === 'converted');
    }),
    { numRuns: 200, seed: 3463 },
  );
});

test('property: any input (MIME-shaped garbage) converts or is refused, never throws; the promises hold', () => {
  const soup = fc
    .array(
      fc.constantFrom(
        'Content-Type: multipart/mixed; boundary=b\r\n',
        'Content-Type: message/rfc822\r\n',
        'Content-Type: multipart/digest; boundary="b"\r\n',
        'Content-Transfer-Encoding: 8bit\r\n',
        'Content-Transfer-Encoding: base64\r\n',
        'Content-Transfer-Encoding: quoted-printable\r\n',
        'Content-Transfer-Encoding: binary\r\n',
        'X: y\r\n',
        ' folded\r\n',
        '\r\n',
        '--b\r\n',
        '--b--\r\n',
        '--b',
        'text',
        '\xe9',
        '=',
        ' ',
        '.\r\n',
        'z'.repeat(1000),
        'Content-Type: text/plain; boundary=\r\n',
        '(',
        '"',
        ':',
      ),
      { maxLength: 60 },
    )
    .map((a) => L(a.join('')));
  fc.assert(
    fc.property(soup, fc.boolean(), (input, to7bit) => {
      const r = convertForPeer(input, to7bit);
      if (r.kind === 'refused') {
        assert.ok(to7bit, 'nothing is refused for a peer with 8BITMIME');
        return;
      }
      assert.deepEqual(
        lineLengths(r.data).filter((n) => n > 998),
        [],
      );
      if (to7bit) assert.equal(has8bit(r.data), false);
      assert.equal(hasBareCrLf(r.data), false);
    }),
    { numRuns: 3000, seed: 2046 },
  );
});
