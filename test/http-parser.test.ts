// Unit tests of iomux's HTTP/1.1 request parser (RequestParser), driven
// directly: the same result for every split of the input (heads, bodies,
// trailers, pipelined requests), chunked bodies with extensions and trailers,
// Content-Length bodies, empty lines before a request, keep-alive rules,
// limits, header joining, and handlers that close the parser mid-request.
import t, { type Test } from 'tap';
import { iomux } from './helpers';

const { RequestParser, HttpError, DEFAULT_LIMITS } = iomux.http;
type Limits = Partial<iomux.http.ParserLimits>;
type Head = iomux.http.RequestHead;

/** What a parse produced: heads (summarised), body bytes (runs merged), ends, and the error if any. */
type Event =
  | { head: Omit<Head, 'headers'> & { headers: Record<string, string | string[]> } }
  | { body: string }
  | { end: string[] | null }
  | { error: number; code: string }
  | { finishError: number; code: string };

interface Outcome {
  events: Event[];
  heads: Head[];
}

/**
 * Feeds pieces to a fresh parser, each through one scratch buffer that is
 * overwritten after every execute() (as a reused read buffer would be), so a
 * parser that kept a view of an earlier chunk would see garbage. finish()
 * is called at the end when `finish` is true.
 */
function parse(pieces: Buffer[], limits?: Limits, finish = true): Outcome {
  const events: Event[] = [];
  const heads: Head[] = [];
  let current: Buffer | null = null;
  const parser = new RequestParser({
    onHead(h) {
      heads.push(h);
      events.push({ head: { ...h, headers: { ...h.headers } } });
    },
    onBody(b) {
      if (current === null || b.buffer !== current.buffer || b.byteOffset < current.byteOffset ||
          b.byteOffset + b.length > current.byteOffset + current.length) {
        throw new Error('onBody was given bytes outside the chunk passed to execute()');
      }
      const s = b.toString('latin1');
      const last = events[events.length - 1];
      if (last !== undefined && 'body' in last) last.body += s;
      else events.push({ body: s });
    },
    onEnd(trailers) {
      events.push({ end: trailers === null ? null : [...trailers] });
    },
  }, limits);
  const scratch = Buffer.alloc(Math.max(1, ...pieces.map((p) => p.length)));
  try {
    for (const p of pieces) {
      p.copy(scratch);
      current = scratch.subarray(0, p.length);
      parser.execute(current);
      scratch.fill(0x58); // 'X'
    }
  } catch (err) {
    if (!(err instanceof HttpError)) throw err;
    events.push({ error: err.status, code: err.code });
    return { events, heads };
  }
  if (finish) {
    try {
      parser.finish();
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      events.push({ finishError: err.status, code: err.code });
    }
  }
  return { events, heads };
}

const whole = (s: string | Buffer, limits?: Limits) => parse([typeof s === 'string' ? Buffer.from(s, 'latin1') : s], limits);

/** The outcome with error codes dropped (a split can name the same violation differently; the status is what counts). */
function statusOnly(o: Outcome): string {
  return JSON.stringify(o.events.map((e) => ('error' in e ? { error: e.error } : 'finishError' in e ? { finishError: e.finishError } : e)));
}

/**
 * Checks that every two-piece split, the byte-at-a-time feed and a few
 * three-piece splits give what the whole input gives. Returns that outcome.
 */
function sameForEverySplit(tt: Test, input: string, limits?: Limits, exact = true): Outcome {
  const buf = Buffer.from(input, 'latin1');
  const ref = parse([buf], limits);
  const want = exact ? JSON.stringify(ref.events) : statusOnly(ref);
  const key = (o: Outcome) => (exact ? JSON.stringify(o.events) : statusOnly(o));
  let bad: string | null = null;
  for (let i = 1; i < buf.length && bad === null; i++) {
    if (key(parse([buf.subarray(0, i), buf.subarray(i)], limits)) !== want) bad = `split at ${i}`;
  }
  if (bad === null) {
    const bytes: Buffer[] = [];
    for (let i = 0; i < buf.length; i++) bytes.push(buf.subarray(i, i + 1));
    if (key(parse(bytes, limits)) !== want) bad = 'a byte at a time';
  }
  for (let i = 1; i < buf.length && bad === null; i += 7) {
    for (let j = i + 1; j < buf.length && bad === null; j += 5) {
      if (key(parse([buf.subarray(0, i), buf.subarray(i, j), buf.subarray(j)], limits)) !== want) bad = `split at ${i} and ${j}`;
    }
  }
  tt.equal(bad, null, `every split gives the same result as the whole input (${input.length} bytes)`);
  return ref;
}

t.test('a simple GET: the head, field by field', async (t) => {
  const o = whole('GET /a/b?c=d HTTP/1.1\r\nHost: example.test\r\nUser-Agent: x/1\r\nAccept:  */*  \r\n\r\n');
  t.equal(o.heads.length, 1);
  const h = o.heads[0]!;
  t.equal(h.method, 'GET');
  t.equal(h.url, '/a/b?c=d');
  t.equal(h.versionMinor, 1);
  t.same(h.rawHeaders, ['Host', 'example.test', 'User-Agent', 'x/1', 'Accept', '*/*'], 'names as sent, values trimmed of OWS');
  t.same({ ...h.headers }, { host: 'example.test', 'user-agent': 'x/1', accept: '*/*' });
  t.equal(Object.getPrototypeOf(h.headers), null, 'headers has no prototype');
  t.equal(h.keepAlive, true, 'HTTP/1.1 is keep-alive by default');
  t.equal(h.bodyKind, 0);
  t.equal(h.contentLength, 0);
  t.equal(h.expect, undefined);
  t.same(o.events.slice(1), [{ end: null }], 'the request ends at once: no body');
});

t.test('HttpError and DEFAULT_LIMITS', async (t) => {
  const e = new HttpError(431, 'HTTP_X', 'msg');
  t.ok(e instanceof Error);
  t.equal(e.name, 'HttpError');
  t.equal(e.status, 431);
  t.equal(e.code, 'HTTP_X');
  t.equal(e.message, 'msg');
  t.ok(Object.isFrozen(DEFAULT_LIMITS));
  for (const k of ['maxRequestLineSize', 'maxHeaderSize', 'maxHeaders', 'maxBodySize'] as const) {
    t.ok(Number.isInteger(DEFAULT_LIMITS[k]) && DEFAULT_LIMITS[k] > 0, `${k} has a finite positive default`);
  }
  t.ok(DEFAULT_LIMITS.maxHeaderSize >= DEFAULT_LIMITS.maxRequestLineSize);
});

// ---- every split gives the same result ---------------------------------------------------

const SPLIT_CORPUS: [string, string][] = [
  ['GET', 'GET / HTTP/1.1\r\nHost: a\r\n\r\n'],
  ['GET, many headers', 'GET /x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nCookie: a=1\r\nCookie: b=2\r\nSet-Cookie: s=1\r\nSet-Cookie: t=2\r\nX-A: 1\r\nx-a: 2\r\n\r\n'],
  ['POST with Content-Length', 'POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world'],
  ['chunked, extensions and trailers',
    'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n' +
    '5;name=value\r\nhello\r\n6 ; q="a b"\r\n world\r\nA;x\r\n0123456789\r\n0;last\r\nX-Sum: abc\r\nX-Two:  2 \r\n\r\n'],
  ['leading empty lines, and between pipelined requests', '\r\n\r\nGET /1 HTTP/1.1\r\nHost: a\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n'],
  ['pipelined: GET, POST with a body, chunked, HTTP/1.0',
    'GET /1 HTTP/1.1\r\nHost: a\r\n\r\n' +
    'POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc' +
    'PUT /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n' +
    'GET /4 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n'],
  ['body bytes that look like a head', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 31\r\n\r\nGET /evil HTTP/1.1\r\nHost: a\r\n\r\n'],
  ['CRLF split inside the chunk-data terminator', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n\r\r\n1\r\n\n\r\n0\r\n\r\n'],
];

for (const [name, input] of SPLIT_CORPUS) {
  t.test(`every split: ${name}`, async (t) => {
    const o = sameForEverySplit(t, input);
    t.notOk(o.events.some((e) => 'error' in e || 'finishError' in e), 'no error');
    t.ok(o.heads.length >= 1);
  });
}

t.test('every split: the parsed values of the chunked request', async (t) => {
  const o = sameForEverySplit(t, SPLIT_CORPUS[3]![1]);
  const h = o.heads[0]!;
  t.equal(h.bodyKind, 2, 'chunked');
  t.equal(h.contentLength, 0);
  t.same(o.events.slice(1), [{ body: 'hello world0123456789' }, { end: ['X-Sum', 'abc', 'X-Two', '2'] }]);
});

t.test('every split: pipelined requests come out in order', async (t) => {
  const o = sameForEverySplit(t, SPLIT_CORPUS[5]![1]);
  t.same(o.heads.map((h) => [h.method, h.url, h.versionMinor, h.keepAlive]), [
    ['GET', '/1', 1, true], ['POST', '/2', 1, true], ['PUT', '/3', 1, true], ['GET', '/4', 0, true],
  ]);
  t.same(o.events.filter((e) => !('head' in e)), [{ end: null }, { body: 'abc' }, { end: null }, { body: 'xyz' }, { end: null }, { end: null }]);
});

t.test('every split: a body that looks like a request is a body', async (t) => {
  const o = sameForEverySplit(t, SPLIT_CORPUS[6]![1]);
  t.equal(o.heads.length, 1);
  t.same(o.events.slice(1), [{ body: 'GET /evil HTTP/1.1\r\nHost: a\r\n\r\n' }, { end: null }]);
});

t.test('every split: a chunk whose data is CR, then one whose data is LF', async (t) => {
  const o = sameForEverySplit(t, SPLIT_CORPUS[7]![1]);
  t.same(o.events.slice(1), [{ body: '\r\n' }, { end: null }]);
});

t.test('every split: errors come out the same (status and the events before)', async (t) => {
  const cases: [string, string, number, Limits?][] = [
    ['505 and a bare LF further on: the bare LF wins', 'GET / HTTP/2.0\r\nHost: a\nX: y\r\n\r\n', 400],
    ['505 alone', 'GET / HTTP/2.0\r\nHost: a\r\n\r\n', 505],
    ['a valid request, then CL+TE', 'GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n', 400],
    ['too many headers with a bare LF later', 'GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\nD: 4\r\n\r\n', 400, { maxHeaders: 1 }],
    ['too many headers', 'GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n', 431, { maxHeaders: 2 }],
    ['a head over the limit, a bare LF past the limit', `GET / HTTP/1.1\r\nHost: a\r\nX: ${'x'.repeat(80)}\nY: 1\r\n\r\n`, 431, { maxHeaderSize: 64 }],
    ['a head over the limit, a bare LF within it', `GET / HTTP/1.1\r\nHost: a\nX: ${'x'.repeat(80)}\r\n\r\n`, 400, { maxHeaderSize: 64 }],
    ['a request line over the limit, ending in a bare LF', `GET /${'a'.repeat(40)} HTTP/1.1\nHost: a\r\n\r\n`, 431, { maxRequestLineSize: 32 }],
    ['a bad chunk size after good chunks', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n2x\r\ncd\r\n0\r\n\r\n', 400],
    ['a chunked body over the limit', 'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n4\r\nefgh\r\n0\r\n\r\n', 413, { maxBodySize: 6 }],
    ['a trailer section over the limit', `POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ${'x'.repeat(40)}\r\nY: ${'y'.repeat(40)}\r\n\r\n`, 431, { maxHeaderSize: 80 }],
    ['the connection ends mid-head', 'GET / HTTP/1.1\r\nHost: a\r\n', 400],
    ['the connection ends mid-body', 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc', 400],
  ];
  for (const [name, input, status, limits] of cases) {
    const o = sameForEverySplit(t, input, limits, false);
    const last = o.events[o.events.length - 1]!;
    const got = 'error' in last ? last.error : 'finishError' in last ? last.finishError : 0;
    t.equal(got, status, `${name}: ${status}`);
  }
});

// ---- heads ----------------------------------------------------------------------------

t.test('empty lines before a request line are skipped; a lone LF is not an empty line', async (t) => {
  t.equal(whole('\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n').heads.length, 1);
  t.same(whole('\nGET / HTTP/1.1\r\nHost: a\r\n\r\n').events, [{ error: 400, code: 'HTTP_BARE_LF' }]);
  t.same(whole('\r\n\r\n').events, [], 'only empty lines: nothing, and no error at the end');
  t.same(whole('\r\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n').events.map((e) => ('error' in e ? e.error : 0)), [400], 'CR CR LF is no empty line');
});

t.test('keep-alive: the version default and the Connection header', async (t) => {
  const ka = (s: string) => whole(s).heads[0]!.keepAlive;
  t.equal(ka('GET / HTTP/1.0\r\n\r\n'), false, 'HTTP/1.0: close by default');
  t.equal(ka('GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n'), true, 'HTTP/1.0 with keep-alive');
  t.equal(ka('GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n'), true, 'case-insensitive');
  t.equal(ka('GET / HTTP/1.0\r\nConnection: foo, keep-alive\r\n\r\n'), true, 'as one element of a list');
  t.equal(ka('GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n'), false, 'close wins');
  t.equal(ka('GET / HTTP/1.1\r\nHost: a\r\n\r\n'), true);
  t.equal(ka('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'), false);
  t.equal(ka('GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nConnection: CLOSE\r\n\r\n'), false, 'in a second Connection header');
  t.equal(ka('GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n'), true, 'closed is not close');
  const h = whole('GET / HTTP/1.0\r\n\r\n').heads[0]!;
  t.equal(h.versionMinor, 0);
  t.same({ ...h.headers }, {}, 'HTTP/1.0 needs no Host');
});

t.test('header joining: cookie with "; ", set-cookie as an array, others with ", "', async (t) => {
  const h = whole('GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\ncookie: b=2\r\nSet-Cookie: s=1\r\nset-cookie: t=2\r\n' +
    'Accept: text/html\r\nACCEPT: text/plain\r\nSet-Cookie: u=3\r\nX-Empty:\r\nX-Empty: \r\nVia: 1\r\n\r\n').heads[0]!;
  t.equal(h.headers.cookie, 'a=1; b=2');
  t.same(h.headers['set-cookie'], ['s=1', 't=2', 'u=3']);
  t.equal(h.headers.accept, 'text/html, text/plain');
  t.equal(h.headers['x-empty'], ', ', 'empty values are kept and joined');
  t.equal(h.headers.via, '1');
  t.same(whole('GET / HTTP/1.1\r\nHost: a\r\nSet-Cookie: one\r\n\r\n').heads[0]!.headers['set-cookie'], ['one'], 'a single set-cookie is an array too');
  t.same(h.rawHeaders.slice(0, 4), ['Host', 'a', 'Cookie', 'a=1'], 'rawHeaders keep every field, in order');
  t.equal(h.rawHeaders.length, 2 * 11);
});

t.test('a header named __proto__ (or constructor) is an ordinary header', async (t) => {
  const o = whole('GET / HTTP/1.1\r\nHost: a\r\n__proto__: {"polluted":1}\r\n__proto__: again\r\nconstructor: c\r\nhasOwnProperty: h\r\ntoString: s\r\n\r\n');
  const h = o.heads[0]!;
  t.equal(Object.getPrototypeOf(h.headers), null, 'the prototype is still null');
  t.equal(Object.getOwnPropertyDescriptor(h.headers, '__proto__')?.value, '{"polluted":1}, again', 'an own property, joined');
  t.equal(h.headers.constructor, 'c');
  t.equal(h.headers.hasownproperty, 'h');
  t.equal(h.headers.tostring, 's');
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype untouched');
  t.same(Object.keys(h.headers).sort(), ['__proto__', 'constructor', 'hasownproperty', 'host', 'tostring']);
});

t.test('field values: OWS trimmed, obs-text kept, inner whitespace kept', async (t) => {
  const h = whole(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\nX-A:\t a  b \t\r\nX-B: caf\xe9\xa0\r\nX-C:\r\n\r\n', 'latin1')).heads[0]!;
  t.equal(h.headers['x-a'], 'a  b');
  t.equal(h.headers['x-b'], 'caf\xe9\xa0', 'obs-text (latin1) kept, 0xA0 is not whitespace');
  t.equal(h.headers['x-c'], '');
});

t.test('the request target and method: any token and any visible ASCII target', async (t) => {
  const h = whole("M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n").heads[0]!;
  t.equal(h.method, 'M-SEARCH');
  t.equal(h.url, '*');
  const h2 = whole("GET http://a.test:8/x?y=%20&z=[1]#f HTTP/1.1\r\nHost: a\r\n\r\n").heads[0]!;
  t.equal(h2.url, 'http://a.test:8/x?y=%20&z=[1]#f');
});

t.test('Expect is lower-cased', async (t) => {
  t.equal(whole('POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n').heads[0]!.expect, '100-continue');
});

// ---- bodies ----------------------------------------------------------------------------

t.test('Content-Length: the body, exactly, and the next request after it', async (t) => {
  const o = whole('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\nHost: a\r\n\r\n');
  t.equal(o.heads[0]!.bodyKind, 1);
  t.equal(o.heads[0]!.contentLength, 5);
  t.same(o.events.filter((e) => !('head' in e)), [{ body: 'hello' }, { end: null }, { end: null }]);
  t.equal(o.heads[1]!.url, '/2');
});

t.test('Content-Length forms: 0, a list of equal values, leading zeros', async (t) => {
  const cl = (v: string) => {
    const o = whole(`POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ${v}\r\n\r\nabcdefgh`);
    const err = o.events.find((e) => 'error' in e) as { error: number } | undefined;
    return err !== undefined ? err.error : o.heads[0]!.contentLength;
  };
  t.equal(cl('0'), 0);
  t.equal(whole('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n').heads[0]!.bodyKind, 0, 'length 0: no body');
  t.equal(cl('3, 3'), 3);
  t.equal(cl('3,3 , 3'), 3);
  t.equal(cl('0000000000000000000000003'), 3, 'leading zeros past 15 digits are still a small number');
  t.equal(cl('3, 4'), 400);
  t.equal(cl('3,'), 400);
  t.equal(cl('+3'), 400);
  t.equal(cl('3.0'), 400);
  t.equal(cl('1e3'), 400);
  t.equal(cl('99999999999999999999'), 413, 'more digits than a safe integer: 413');
  const two = whole('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab');
  t.same(two.events.slice(1), [{ body: 'ab' }, { end: null }], 'two equal Content-Length headers are one');
  t.same(whole('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc').events,
    [{ error: 400, code: 'HTTP_CONFLICTING_CONTENT_LENGTH' }]);
  const inf = whole('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n', { maxBodySize: Infinity });
  t.same(inf.events, [{ error: 413, code: 'HTTP_BODY_TOO_LARGE' }], 'an unsafe integer is refused even with no body limit');
});

t.test('chunked: sizes in any case, leading zeros, extensions, and trailers', async (t) => {
  const o = whole('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n' +
    'a\r\n0123456789\r\nA;ext\r\n0123456789\r\n00000000000000000000001;a=b;c="d;e"\r\nz\r\n0\r\n\r\n');
  t.same(o.events.slice(1), [{ body: '01234567890123456789z' }, { end: null }], 'no trailer section: null');
  const tr = whole('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: 1\r\nb:2\r\n\r\n');
  t.same(tr.events.slice(1), [{ end: ['A', '1', 'b', '2'] }]);
  const bad = (chunks: string, limits?: Limits) => {
    const r = whole(`POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${chunks}`, limits);
    const e = r.events[r.events.length - 1]!;
    return 'error' in e ? e.error : 'finishError' in e ? `finish ${e.finishError}` : 'ok';
  };
  t.equal(bad('5 \r\nhello\r\n0\r\n\r\n'), 400, 'whitespace after the size without an extension');
  t.equal(bad('5 ;x\r\nhello\r\n0\r\n\r\n'), 'ok', 'whitespace before an extension');
  t.equal(bad('fffffffffffffffff\r\n'), 400, 'a size that overflows');
  t.equal(bad('fffffffffffff\r\n'), 413, 'a size that fits but is over the limit');
  t.equal(bad('-1\r\n'), 400);
  t.equal(bad('0x5\r\nhello\r\n0\r\n\r\n'), 400);
  t.equal(bad('\r\n'), 400, 'an empty size');
  t.equal(bad('5\r\nhelloXX0\r\n\r\n'), 400, 'data not followed by CRLF');
  t.equal(bad('5\r\nhello\n0\r\n\r\n'), 400, 'data followed by a bare LF');
  t.equal(bad('5\nhello\r\n0\r\n\r\n'), 400, 'a size line ending in a bare LF');
  t.equal(bad('5;a\rb\r\nhello\r\n0\r\n\r\n'), 400, 'a bare CR in an extension');
  t.equal(bad('5;a\x00\r\nhello\r\n0\r\n\r\n'), 400, 'NUL in an extension');
  t.equal(bad(`5;${'x'.repeat(5000)}\r\nhello\r\n0\r\n\r\n`), 400, 'a size line over 4 KiB');
  t.equal(bad('0\r\nX : 1\r\n\r\n'), 400, 'a bad trailer');
  t.equal(bad('0\r\n X: 1\r\n\r\n'), 400, 'obs-fold in the trailers');
  t.equal(bad('0\r\nX: 1\n\r\n'), 400, 'a trailer line ending in a bare LF');
  t.equal(bad('0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n', { maxHeaders: 2 }), 431, 'more trailer fields than maxHeaders');
  t.equal(bad(`0\r\nA: ${'x'.repeat(100)}\r\n\r\n`, { maxHeaderSize: 64 }), 431, 'a trailer line over maxHeaderSize');
  t.equal(bad('5\r\nhel'), 'finish 400', 'cut short');
});

t.test('body pieces are views of the chunks given, never copies', async (t) => {
  const data = Buffer.from('POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd');
  const got: Buffer[] = [];
  const p = new RequestParser({ onHead() {}, onBody: (b) => got.push(b), onEnd() {} });
  p.execute(data);
  t.equal(got.length, 1);
  t.equal(got[0]!.buffer, data.buffer);
  t.equal(got[0]!.byteOffset, data.byteOffset + data.length - 4);
});

// ---- limits ----------------------------------------------------------------------------

t.test('limits: exactly at each limit passes, one past fails, however the bytes come', async (t) => {
  // maxRequestLineSize: the request line without its CRLF.
  const line = (n: number) => `GET /${'a'.repeat(n - 'GET / HTTP/1.1'.length)} HTTP/1.1`;
  t.equal(line(40).length, 40);
  const lim = { maxRequestLineSize: 40 };
  t.equal(sameForEverySplit(t, `${line(40)}\r\nHost: a\r\n\r\n`, lim).heads.length, 1, 'a request line at the limit');
  t.same(sameForEverySplit(t, `${line(41)}\r\nHost: a\r\n\r\n`, lim).events, [{ error: 431, code: 'HTTP_HEADERS_TOO_LARGE' }], 'one byte over');

  // maxHeaderSize: the head from the request line up to (without) the final empty line's CRLF CRLF.
  const head = (n: number) => {
    const start = 'GET / HTTP/1.1\r\nHost: a\r\nX: ';
    return start + 'v'.repeat(n - start.length);
  };
  const hl = { maxHeaderSize: 60 };
  t.equal(sameForEverySplit(t, `${head(60)}\r\n\r\n`, hl).heads.length, 1, 'a head at the limit');
  t.same(sameForEverySplit(t, `${head(61)}\r\n\r\n`, hl).events, [{ error: 431, code: 'HTTP_HEADERS_TOO_LARGE' }], 'one byte over');
  t.same(whole(`${head(61)}`, hl).events, [{ error: 431, code: 'HTTP_HEADERS_TOO_LARGE' }], 'over, with no end in sight: 431 at once');
  t.same(whole(`${head(60)}\r\n\r`, hl).events, [{ finishError: 400, code: 'HTTP_INCOMPLETE' }], 'at the limit, all but the last LF: waits');

  // maxHeaders
  const fields = (n: number) => `GET / HTTP/1.1\r\nHost: a\r\n${Array.from({ length: n - 1 }, (_, i) => `X-${i}: ${i}\r\n`).join('')}\r\n`;
  t.equal(sameForEverySplit(t, fields(5), { maxHeaders: 5 }).heads.length, 1, 'fields at the limit');
  t.equal((sameForEverySplit(t, fields(6), { maxHeaders: 5 }).events[0] as { error: number }).error, 431, 'one more: 431');

  // maxBodySize, Content-Length and chunked
  const post = (n: number) => `POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ${n}\r\n\r\n${'b'.repeat(n)}`;
  t.same(sameForEverySplit(t, post(8), { maxBodySize: 8 }).events.slice(1), [{ body: 'bbbbbbbb' }, { end: null }]);
  t.same(whole(post(9), { maxBodySize: 8 }).events, [{ error: 413, code: 'HTTP_BODY_TOO_LARGE' }], 'over: 413 before any body byte');
  const chunked = (sizes: number[]) => `POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${
    sizes.map((n) => `${n.toString(16)}\r\n${'c'.repeat(n)}\r\n`).join('')}0\r\n\r\n`;
  t.same(sameForEverySplit(t, chunked([3, 5]), { maxBodySize: 8 }).events.slice(1), [{ body: 'cccccccc' }, { end: null }]);
  const over = sameForEverySplit(t, chunked([3, 6]), { maxBodySize: 8 });
  t.same(over.events.slice(1), [{ body: 'ccc' }, { error: 413, code: 'HTTP_BODY_TOO_LARGE' }], '413 at the chunk that passes the limit');
  t.same(whole(post(0), { maxBodySize: 0 }).events.slice(1), [{ end: null }], 'maxBodySize 0 still takes empty bodies');

  // The defaults apply when nothing is given.
  const big = `GET / HTTP/1.1\r\nHost: a\r\nX: ${'v'.repeat(DEFAULT_LIMITS.maxHeaderSize)}\r\n\r\n`;
  t.equal((whole(big).events[0] as { error: number }).error, 431, 'the default head limit');
  const longLine = `GET /${'a'.repeat(DEFAULT_LIMITS.maxRequestLineSize)} HTTP/1.1\r\nHost: a\r\n\r\n`;
  t.equal((whole(longLine).events[0] as { error: number }).error, 431, 'the default request-line limit');
  const many = `GET / HTTP/1.1\r\nHost: a\r\n${'X: 1\r\n'.repeat(DEFAULT_LIMITS.maxHeaders)}\r\n`;
  t.equal((whole(many).events[0] as { error: number }).error, 431, 'the default field-count limit');
});

t.test('a head of the largest allowed size, one byte at a time', async (t) => {
  const limit = DEFAULT_LIMITS.maxHeaderSize;
  const start = 'GET / HTTP/1.1\r\nHost: a\r\n';
  let h = start;
  let i = 0;
  while (h.length < limit - 500) h += `X-${i++}: ${'v'.repeat(400)}\r\n`;
  h += `Y: ${'w'.repeat(limit - h.length - 3)}`;
  t.equal(h.length, limit);
  const buf = Buffer.from(`${h}\r\n\r\n`, 'latin1');
  const bytes: Buffer[] = [];
  for (let j = 0; j < buf.length; j++) bytes.push(buf.subarray(j, j + 1));
  const o = parse(bytes);
  t.equal(o.heads.length, 1);
  t.equal(o.heads[0]!.headers.y, 'w'.repeat(limit - h.lastIndexOf('Y: ') - 3));
  t.same(parse(bytes).events, whole(buf).events, 'the same as all at once');
});

// ---- state and lifecycle -------------------------------------------------------------------

t.test('idle, inHead, dead; finish() between requests and mid-request', async (t) => {
  const p = new RequestParser({ onHead() {}, onBody() {}, onEnd() {} });
  t.ok(p.idle);
  t.notOk(p.inHead);
  p.execute(Buffer.from('GET / HTTP/1.1\r\n'));
  t.notOk(p.idle);
  t.ok(p.inHead);
  p.execute(Buffer.from('Host: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\na'));
  t.notOk(p.idle, 'in a body');
  t.notOk(p.inHead);
  p.execute(Buffer.from('b'));
  t.ok(p.idle);
  t.equal(p.requests, 2);
  p.finish();
  t.ok(p.dead, 'finish() between requests: dead, no error');
  p.execute(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n'));
  t.equal(p.requests, 2, 'a dead parser parses nothing');

  const q = new RequestParser({ onHead() {}, onBody() {}, onEnd() {} });
  q.execute(Buffer.from('GET / HT'));
  t.throws(() => q.finish(), { status: 400, code: 'HTTP_INCOMPLETE' });
  t.ok(q.dead);
  t.doesNotThrow(() => q.finish(), 'a second finish() is no error');

  const r = new RequestParser({ onHead() {}, onBody() {}, onEnd() {} });
  t.throws(() => r.execute(Buffer.from('GET / HTTP/1.1\r\nHost a\r\n\r\n')), { status: 400, code: 'HTTP_INVALID_HEADER' });
  t.ok(r.dead, 'dead after an error');
  t.doesNotThrow(() => r.execute(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n')), 'and ignores what follows');
});

t.test('a handler that closes the parser stops it, in onHead, onBody and onEnd', async (t) => {
  const input = Buffer.from('POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /2 HTTP/1.1\r\nHost: a\r\n\r\n');
  for (const where of ['onHead', 'onBody', 'onEnd'] as const) {
    const seen: string[] = [];
    const p: InstanceType<typeof RequestParser> = new RequestParser({
      onHead(h) {
        seen.push(`head ${h.url}`);
        if (where === 'onHead') p.close();
      },
      onBody(b) {
        seen.push(`body ${b.toString()}`);
        if (where === 'onBody') p.close();
      },
      onEnd() {
        seen.push('end');
        if (where === 'onEnd') p.close();
      },
    });
    p.execute(input);
    const want = { onHead: ['head /1'], onBody: ['head /1', 'body abc'], onEnd: ['head /1', 'body abc', 'end'] }[where];
    t.same(seen, want, `closed in ${where}: nothing after`);
    t.ok(p.dead);
  }
  // onBody closing mid-chunked-body, too
  const seen: string[] = [];
  const p: InstanceType<typeof RequestParser> = new RequestParser({
    onHead() { seen.push('head'); },
    onBody() { seen.push('body'); p.close(); },
    onEnd() { seen.push('end'); },
  });
  p.execute(Buffer.from('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n'));
  t.same(seen, ['head', 'body']);
});

t.test('an exception from a handler leaves the parser dead and propagates', async (t) => {
  const boom = new Error('boom');
  const p = new RequestParser({ onHead() { throw boom; }, onBody() {}, onEnd() {} });
  t.throws(() => p.execute(Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n')), boom);
  t.ok(p.dead);
});

// ---- malformed heads (the status; the server tests check what goes on the wire) ---------------

t.test('malformed heads and framing: the status of each', async (t) => {
  const H = 'Host: a\r\n';
  const cases: [string, string, number][] = [
    ['CL and TE', `POST / HTTP/1.1\r\n${H}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n`, 400],
    ['TE and CL, CL 0', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n`, 400],
    ['TE chunked, identity', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n`, 400],
    ['TE chunked twice', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n`, 400],
    ['TE empty', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: \r\n\r\n`, 400],
    ['TE not a token', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: "chunked"\r\n\r\n`, 400],
    ['TE xchunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n`, 501],
    ['TE gzip, chunked', `POST / HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n`, 501],
    ['TE in HTTP/1.0', 'POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n', 400],
    ['obs-fold', `GET / HTTP/1.1\r\n${H}X: a\r\n b\r\n\r\n`, 400],
    ['obs-fold with a tab', `GET / HTTP/1.1\r\n${H}X: a\r\n\tb\r\n\r\n`, 400],
    ['space before colon', `GET / HTTP/1.1\r\n${H}X : a\r\n\r\n`, 400],
    ['empty name', `GET / HTTP/1.1\r\n${H}: a\r\n\r\n`, 400],
    ['no colon', `GET / HTTP/1.1\r\n${H}X a\r\n\r\n`, 400],
    ['NUL in a value', `GET / HTTP/1.1\r\n${H}X: a\x00b\r\n\r\n`, 400],
    ['NUL in a name', `GET / HTTP/1.1\r\n${H}X\x00Y: a\r\n\r\n`, 400],
    ['DEL in a value', `GET / HTTP/1.1\r\n${H}X: a\x7f\r\n\r\n`, 400],
    ['a high byte in a name', `GET / HTTP/1.1\r\n${H}X\xe9: a\r\n\r\n`, 400],
    ['bare CR in a value', `GET / HTTP/1.1\r\n${H}X: a\rb\r\n\r\n`, 400],
    ['bare CR ending a field line', `GET / HTTP/1.1\r\n${H}X: a\r\r\n\r\n`, 400],
    ['bare LF line ends', 'GET / HTTP/1.1\nHost: a\n\n', 400],
    ['missing Host', 'GET / HTTP/1.1\r\n\r\n', 400],
    ['two Hosts', `GET / HTTP/1.1\r\n${H}${H}\r\n`, 400],
    ['two Hosts in HTTP/1.0', `GET / HTTP/1.0\r\n${H}${H}\r\n`, 400],
    ['method with a bad char', `GE(T / HTTP/1.1\r\n${H}\r\n`, 400],
    ['lowercase version', `GET / http/1.1\r\n${H}\r\n`, 400],
    ['HTTP/2.0', `GET / HTTP/2.0\r\n${H}\r\n`, 505],
    ['HTTP/1.2', `GET / HTTP/1.2\r\n${H}\r\n`, 505],
    ['HTTP/0.9', 'GET / HTTP/0.9\r\n\r\n', 505],
    ['HTTP/1.10', `GET / HTTP/1.10\r\n${H}\r\n`, 400],
    ['junk after the version', `GET / HTTP/1.1 x\r\n${H}\r\n`, 400],
    ['two spaces', `GET  / HTTP/1.1\r\n${H}\r\n`, 400],
    ['a space in the target', `GET /a b HTTP/1.1\r\n${H}\r\n`, 400],
    ['a control char in the target', `GET /a\x01 HTTP/1.1\r\n${H}\r\n`, 400],
    ['a high byte in the target', `GET /\xff HTTP/1.1\r\n${H}\r\n`, 400],
    ['a tab as separator', `GET\t/ HTTP/1.1\r\n${H}\r\n`, 400],
    ['no target', `GET HTTP/1.1\r\n${H}\r\n`, 400],
    ['whitespace before the method', ` GET / HTTP/1.1\r\n${H}\r\n`, 400],
  ];
  for (const [name, input, status] of cases) {
    const o = whole(Buffer.from(input, 'latin1'));
    t.equal(o.heads.length, 0, `${name}: no head`);
    const e = o.events[o.events.length - 1] as { error?: number; code?: string };
    t.equal(e.error, status, `${name}: ${status}`);
    t.type(e.code, 'string');
  }
});
