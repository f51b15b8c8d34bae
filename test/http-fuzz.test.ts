// A seeded fuzz test of iomux's HTTP/1.1 request parser: 200,000 inputs,
// random and mutated from a corpus of valid requests, each parsed whole and
// split at random points. It checks that only HttpErrors escape, with a known
// status and a code; that body bytes are views inside the chunk given and
// never more than were fed or than the framing allows; that a dead parser
// stays dead; and that the split input gives exactly what the whole input
// gives. Then a few thousand mutated inputs go to a real server, which must
// answer or close every connection, and stay up.
//
// The seed is printed; IOMUX_FUZZ_SEED=<n> repeats a run, IOMUX_FUZZ_ITERATIONS
// changes its length.
import t from 'tap';
import { once } from 'node:events';
import * as net from 'node:net';
import { iomux, seededRandom, waitFor } from './helpers';

const { RequestParser, HttpError, DEFAULT_LIMITS } = iomux.http;
type Limits = iomux.http.ParserLimits;

const SEED = process.env.IOMUX_FUZZ_SEED !== undefined ? Number(process.env.IOMUX_FUZZ_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const ITERATIONS = Number(process.env.IOMUX_FUZZ_ITERATIONS ?? 200_000);
const SERVER_INPUTS = Math.min(3000, ITERATIONS);
const STATUSES = new Set([400, 408, 413, 431, 501, 505]);

t.comment(`fuzz seed ${SEED} (repeat with IOMUX_FUZZ_SEED=${SEED})`);

const { rand, int, pick, chance } = seededRandom(SEED);

// ---- the corpus: valid requests --------------------------------------------------------

const CORPUS: string[] = [
  'GET / HTTP/1.1\r\nHost: a\r\n\r\n',
  'GET /path/to?q=1&r=%20 HTTP/1.1\r\nHost: example.test:8080\r\nUser-Agent: fuzz/1.0\r\nAccept: */*\r\nAccept-Encoding: gzip, br\r\nConnection: keep-alive\r\n\r\n',
  'POST /form HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 13\r\n\r\na=1&b=2&c=333',
  'PUT /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\n\r\n',
  'POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 900150983cd24fb0\r\n\r\n',
  'GET /old HTTP/1.0\r\n\r\n',
  'GET /ka HTTP/1.0\r\nConnection: keep-alive\r\nHost: a\r\n\r\n',
  '\r\n\r\nGET /after-empty-lines HTTP/1.1\r\nHost: a\r\n\r\n',
  'GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nPOST /3 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok',
  'GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\nSet-Cookie: x\r\nSet-Cookie: y\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n',
  'OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n',
  'DELETE http://a.test/r/1 HTTP/1.1\r\nHost: a.test\r\nAuthorization: Bearer abc.def\r\nContent-Length: 0\r\n\r\n',
  'POST /e HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello',
  'GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
  'PATCH /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nxyz',
  'GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
  'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n000a\r\n0123456789\r\n1 ; a=b\r\nz\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\n\r\n',
  `GET /hdr HTTP/1.1\r\nHost: a\r\nX-Long: ${'v'.repeat(300)}\r\nX-Obs: caf\xe9\r\n\r\n`,
];
const CORPUS_BUFS = CORPUS.map((s) => Buffer.from(s, 'latin1'));

// Bytes and pieces that reach the interesting corners.
const SPECIAL_BYTES = [0x0d, 0x0a, 0x00, 0x20, 0x09, 0x3a, 0x2c, 0x3b, 0x22, 0x7f, 0x80, 0xff, 0x30, 0x66, 0x2d, 0x2b, 0x01, 0x0b, 0x0c];
const PIECES = [
  '\r\n', '\r\n\r\n', '\r', '\n', '\n\n', ' ', ':', '; ', ', ', '0', 'ffffffffffffffffff', '-1', '0x10',
  'Transfer-Encoding: chunked\r\n', 'Transfer-Encoding: chunked, identity\r\n', 'Transfer-Encoding: gzip\r\n',
  'transfer-encoding:  CHUNKED \r\n', 'Transfer-Encoding : chunked\r\n', 'Transfer-Encoding:\r\n chunked\r\n',
  'Content-Length: 5\r\n', 'Content-Length: 0\r\n', 'Content-Length: 99999999999999999999\r\n', 'Content-Length: 5, 6\r\n',
  'Content-Length: +5\r\n', 'Host: b\r\n', 'Connection: close\r\n', 'Expect: 100-continue\r\n', 'Expect: nope\r\n',
  ' folded\r\n', 'X: \x00\r\n', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'GET ', 'POST ', '5\r\nhello\r\n', '0\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: a\r\n\r\n', '__proto__: x\r\n',
];
const TOKENS = [
  'GET', 'POST', 'HEAD', 'PUT', ' ', ' ', '/', '/x', '*', 'HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'http/1.1', '\r\n', '\r\n', '\r\n',
  '\n', '\r', ':', ': ', 'Host', 'Content-Length', 'Transfer-Encoding', 'chunked', 'Connection', 'close', 'keep-alive',
  '0', '1', '5', 'a', 'ff', '10', ';', ',', 'x', '\t', '\x00', '\xff', 'Expect', '100-continue', 'Trailer',
];

/** One mutation of buf. */
function mutate(buf: Buffer): Buffer {
  const n = buf.length;
  const at = int(n + 1);
  switch (int(10)) {
    case 0: { // flip bits of a byte
      if (n === 0) return buf;
      const b = Buffer.from(buf);
      b[int(n)] ^= 1 << int(8);
      return b;
    }
    case 1: { // overwrite a byte with a special one
      if (n === 0) return buf;
      const b = Buffer.from(buf);
      b[int(n)] = pick(SPECIAL_BYTES);
      return b;
    }
    case 2: // insert a special byte
      return Buffer.concat([buf.subarray(0, at), Buffer.of(pick(SPECIAL_BYTES)), buf.subarray(at)]);
    case 3: // insert a piece
      return Buffer.concat([buf.subarray(0, at), Buffer.from(pick(PIECES), 'latin1'), buf.subarray(at)]);
    case 4: { // delete a run
      const len = 1 + int(4);
      return Buffer.concat([buf.subarray(0, at), buf.subarray(Math.min(n, at + len))]);
    }
    case 5: // truncate
      return buf.subarray(0, at);
    case 6: { // duplicate a line
      const s = buf.toString('latin1');
      const lines = s.split('\n');
      const i = int(lines.length);
      lines.splice(i, 0, lines[i]!);
      return Buffer.from(lines.join('\n'), 'latin1');
    }
    case 7: { // swap two lines
      const lines = buf.toString('latin1').split('\n');
      const i = int(lines.length);
      const j = int(lines.length);
      [lines[i], lines[j]] = [lines[j]!, lines[i]!];
      return Buffer.from(lines.join('\n'), 'latin1');
    }
    case 8: { // change a number
      const s = buf.toString('latin1');
      const digits = [...s.matchAll(/[0-9A-Fa-f]+/g)];
      if (digits.length === 0) return buf;
      const m = pick(digits);
      const repl = pick(['0', '00', '1', '7', 'ffff', '100000', '4294967296', '9007199254740993', '-3', '', ' 2']);
      return Buffer.from(s.slice(0, m.index!) + repl + s.slice(m.index! + m[0].length), 'latin1');
    }
    default: // splice in (part of) another corpus request
      return Buffer.concat([buf.subarray(0, at), pick(CORPUS_BUFS).subarray(int(40))]);
  }
}

/** A random request-like input from tokens. */
function tokenSoup(): Buffer {
  let s = '';
  const n = 1 + int(60);
  for (let i = 0; i < n; i++) s += pick(TOKENS);
  if (chance(0.5)) s += '\r\n\r\n';
  return Buffer.from(s, 'latin1');
}

function randomBytes(): Buffer {
  const b = Buffer.allocUnsafe(int(200));
  for (let i = 0; i < b.length; i++) b[i] = chance(0.5) ? pick(SPECIAL_BYTES) : int(256);
  return b;
}

/** Small limits (sometimes), so that every limit is reached now and then. */
function randomLimits(): Partial<Limits> | undefined {
  if (!chance(0.3)) return undefined;
  return {
    maxRequestLineSize: 8 + int(80),
    maxHeaderSize: 16 + int(400),
    maxHeaders: 1 + int(12),
    maxBodySize: int(40),
  };
}

function randomSplit(buf: Buffer): Buffer[] {
  if (buf.length <= 1) return [buf];
  if (chance(0.01)) {
    const bytes: Buffer[] = [];
    for (let i = 0; i < buf.length; i++) bytes.push(buf.subarray(i, i + 1));
    return bytes;
  }
  const cuts = new Set<number>();
  const k = 1 + int(6);
  for (let i = 0; i < k; i++) cuts.add(1 + int(buf.length - 1));
  const sorted = [...cuts].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of sorted) {
    out.push(buf.subarray(prev, c));
    prev = c;
  }
  out.push(buf.subarray(prev));
  return out;
}

// ---- parsing with every invariant checked -----------------------------------------------

interface Result {
  /** Events, body runs merged, with the error's status (codes may name a violation differently per split). */
  key: string;
  heads: number;
  error: number;
  /** What broke an invariant, or null. */
  broken: string | null;
}

/**
 * Parses the pieces, each copied into its own fresh buffer (so a view kept
 * past execute() is not the test's problem, and an out-of-range view shows).
 */
function parse(pieces: Buffer[], limits: Partial<Limits> | undefined): Result {
  const maxBody = limits?.maxBodySize ?? DEFAULT_LIMITS.maxBodySize;
  const events: string[] = [];
  let body = '';
  let heads = 0;
  let broken: string | null = null;
  let current: Buffer | null = null;
  let inRequest = false;
  let kind = 0;
  let declared = 0;
  let bodyBytes = 0;
  let fed = 0;
  let delivered = 0;
  const flush = () => {
    if (body !== '') events.push(`B${JSON.stringify(body)}`);
    body = '';
  };
  const fail = (why: string) => {
    broken ??= why;
  };
  const parser = new RequestParser({
    onHead(h) {
      if (inRequest) fail('onHead inside a request');
      inRequest = true;
      heads++;
      kind = h.bodyKind;
      declared = h.contentLength;
      bodyBytes = 0;
      if (kind === 1 && !(declared > 0 && declared <= maxBody)) fail(`bad contentLength ${declared}`);
      if (kind !== 1 && declared !== 0) fail('contentLength without BODY_LENGTH');
      if (h.versionMinor !== 0 && h.versionMinor !== 1) fail(`versionMinor ${h.versionMinor}`);
      flush();
      events.push(`H${JSON.stringify([h.method, h.url, h.versionMinor, h.rawHeaders, h.headers, h.keepAlive, h.bodyKind, h.contentLength, h.expect])}`);
    },
    onBody(b) {
      if (!inRequest) fail('onBody outside a request');
      if (current === null || b.buffer !== current.buffer || b.byteOffset < current.byteOffset ||
          b.byteOffset + b.length > current.byteOffset + current.length) {
        fail('onBody bytes outside the chunk given to execute()');
      }
      if (b.length === 0) fail('an empty onBody');
      bodyBytes += b.length;
      delivered += b.length;
      if (delivered > fed) fail('more body bytes delivered than fed');
      if (kind === 1 && bodyBytes > declared) fail('more body bytes than Content-Length');
      if (kind === 2 && bodyBytes > maxBody) fail('a chunked body over maxBodySize');
      if (kind === 0) fail('a body for a request without one');
      body += b.toString('latin1');
    },
    onEnd(trailers) {
      if (!inRequest) fail('onEnd outside a request');
      inRequest = false;
      if (kind === 1 && bodyBytes !== declared) fail(`ended after ${bodyBytes} of ${declared} body bytes`);
      if (trailers !== null && kind !== 2) fail('trailers without a chunked body');
      flush();
      events.push(`E${JSON.stringify(trailers)}`);
    },
  }, limits);
  let error = 0;
  const checkError = (err: unknown, where: string) => {
    if (!(err instanceof HttpError)) {
      fail(`${where} threw a non-HttpError: ${(err as Error)?.stack ?? String(err)}`);
      return;
    }
    if (!STATUSES.has(err.status)) fail(`${where}: status ${err.status}`);
    if (typeof err.code !== 'string' || err.code === '') fail(`${where}: code ${String(err.code)}`);
    if (!parser.dead) fail(`${where}: not dead after an error`);
    error = err.status;
  };
  try {
    for (const p of pieces) {
      current = Buffer.from(p);
      fed += p.length;
      parser.execute(current);
    }
  } catch (err) {
    checkError(err, 'execute()');
  }
  if (error === 0) {
    try {
      parser.finish();
    } catch (err) {
      checkError(err, 'finish()');
    }
  }
  // Dead now, either way: more input is ignored.
  const before = events.length + heads;
  try {
    current = Buffer.from('GET / HTTP/1.1\r\nHost: a\r\n\r\n');
    parser.execute(current);
  } catch (err) {
    fail(`execute() on a dead parser threw: ${String(err)}`);
  }
  if (events.length + heads !== before || !parser.dead) fail('a dead parser parsed more');
  flush();
  if (error !== 0) events.push(`X${error}`);
  return { key: events.join('|'), heads, error, broken };
}

t.test(`${ITERATIONS} inputs: invariants, and the same result however split`, { timeout: 240_000 }, async (t) => {
  // The corpus itself parses without error.
  for (let i = 0; i < CORPUS_BUFS.length; i++) {
    const r = parse([CORPUS_BUFS[i]!], undefined);
    t.equal(r.error, 0, `corpus ${i} is valid`);
    t.equal(r.broken, null, `corpus ${i}: invariants`);
    t.ok(r.heads >= 1, `corpus ${i}: has a request`);
  }

  let failures = 0;
  const kinds = { corpus: 0, mutated: 0, soup: 0, bytes: 0 };
  const outcomes = new Map<number, number>();
  const report = (i: number, input: Buffer, pieces: Buffer[], limits: unknown, what: string) => {
    failures++;
    if (failures <= 5) {
      t.fail(`iteration ${i} (seed ${SEED}): ${what}`, {
        input: input.toString('latin1'),
        split: pieces.map((p) => p.length),
        limits,
      });
    }
  };
  for (let i = 0; i < ITERATIONS; i++) {
    let input: Buffer;
    const r = rand();
    if (r < 0.05) {
      input = pick(CORPUS_BUFS);
      kinds.corpus++;
    } else if (r < 0.85) {
      input = pick(CORPUS_BUFS);
      const n = 1 + int(chance(0.2) ? 8 : 3);
      for (let j = 0; j < n; j++) input = mutate(input);
      kinds.mutated++;
    } else if (r < 0.95) {
      input = tokenSoup();
      kinds.soup++;
    } else {
      input = randomBytes();
      kinds.bytes++;
    }
    const limits = r < 0.05 ? undefined : randomLimits();
    const whole = parse([input], limits);
    if (whole.broken !== null) report(i, input, [input], limits, whole.broken);
    const pieces = randomSplit(input);
    const split = parse(pieces, limits);
    if (split.broken !== null) report(i, input, pieces, limits, split.broken);
    if (split.key !== whole.key) report(i, input, pieces, limits, `split differs:\n  whole ${whole.key}\n  split ${split.key}`);
    if (r < 0.05 && (whole.error !== 0 || whole.heads === 0)) report(i, input, pieces, limits, 'a corpus request failed');
    outcomes.set(whole.error, (outcomes.get(whole.error) ?? 0) + 1);
  }
  t.equal(failures, 0, 'no invariant broken, every split gave the whole input\'s result');
  t.comment(`inputs: ${JSON.stringify(kinds)}; outcomes by status: ${JSON.stringify(Object.fromEntries([...outcomes].sort((a, b) => a[0] - b[0])))}`);
  // The generator must reach both valid requests and each kind of rejection.
  for (const s of [0, 400, 413, 431, 501, 505]) t.ok((outcomes.get(s) ?? 0) > 0, `some inputs ended with ${s === 0 ? 'no error' : s}`);
});

// ---- through a real server ------------------------------------------------------------------

interface Exchange {
  received: Buffer;
  closed: boolean;
  error: string | null;
}

/** Sends pieces (then FIN) and collects the answer until the server closes; gives up after ms. */
function exchange(port: number, pieces: Buffer[], ms: number): Promise<Exchange> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    let error: string | null = null;
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ received: Buffer.concat(got), closed, error });
    };
    const timer = setTimeout(() => finish(false), ms);
    sock.on('data', (d) => got.push(d));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      // A reset (the server closed with our bytes unread) is a close too.
      error = e.code ?? e.message;
    });
    sock.on('close', () => finish(true));
    sock.on('connect', async () => {
      for (const p of pieces) {
        if (sock.destroyed) return;
        sock.write(p);
        if (pieces.length > 1) await new Promise((r) => setImmediate(r));
      }
      if (!sock.destroyed) sock.end();
    });
  });
}

/** Splits the server's bytes into responses; null if they are not a sequence of well-formed responses. */
function responses(buf: Buffer): { status: number; headers: string }[] | null {
  const s = buf.toString('latin1');
  const out: { status: number; headers: string }[] = [];
  let pos = 0;
  while (pos < s.length) {
    const end = s.indexOf('\r\n\r\n', pos);
    if (end < 0) return null;
    const head = s.slice(pos, end);
    const m = /^HTTP\/1\.[01] (\d{3}) [^\r\n]*/.exec(head);
    if (m === null) return null;
    const status = Number(m[1]);
    const headers = head.slice(m[0].length).toLowerCase();
    pos = end + 4;
    const cl = /\r\ncontent-length: (\d+)/.exec(headers);
    const noBody = status < 200 || status === 204 || status === 304 || headers.includes('\r\nx-method: head');
    if (!noBody) {
      if (cl === null) return null;
      pos += Number(cl[1]);
      if (pos > s.length) return null;
    }
    out.push({ status, headers });
  }
  return out;
}

t.test(`${SERVER_INPUTS} mutated inputs through a server: it answers or closes, and stays up`, { timeout: 240_000 }, async (t) => {
  let handled = 0;
  const server = iomux.http.createServer({
    maxHeaderSize: 2048, maxRequestLineSize: 1024, maxHeaders: 32, maxBodySize: 4096, keepAliveTimeout: 5000,
  }, async (req, res) => {
    handled++;
    try {
      await req.body();
    } catch {
      return; // the request failed; the connection answers for it
    }
    res.setHeader('x-method', req.method);
    res.end('ok\n');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  t.teardown(() => {
    server.closeAllConnections();
    return server.close();
  });

  const inputs: Buffer[][] = [];
  for (let i = 0; i < SERVER_INPUTS; i++) {
    let input: Buffer = pick(CORPUS_BUFS);
    const n = int(4);
    for (let j = 0; j < n; j++) input = mutate(input);
    inputs.push(chance(0.3) ? randomSplit(input) : [input]);
  }

  let unanswered = 0;
  let malformed = 0;
  let badError = 0;
  let answered = 0;
  const statuses = new Map<number, number>();
  let next = 0;
  const worker = async () => {
    while (next < inputs.length) {
      const i = next++;
      const x = await exchange(port, inputs[i]!, 10_000);
      if (!x.closed) {
        unanswered++;
        if (unanswered <= 3) t.fail(`input ${i} (seed ${SEED}): neither answered nor closed in 10 s`, { input: Buffer.concat(inputs[i]!).toString('latin1') });
        continue;
      }
      if (x.received.length === 0) continue;
      const rs = responses(x.received);
      if (rs === null) {
        // A reset may cut a response short; without one, the bytes must parse.
        if (x.error === null) {
          malformed++;
          if (malformed <= 3) t.fail(`input ${i} (seed ${SEED}): not a sequence of responses`, { received: x.received.toString('latin1') });
        }
        continue;
      }
      answered++;
      for (let k = 0; k < rs.length; k++) {
        const r = rs[k]!;
        statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        if (STATUSES.has(r.status) && (!r.headers.includes('\r\nconnection: close') || k !== rs.length - 1)) {
          badError++;
          if (badError <= 3) t.fail(`input ${i} (seed ${SEED}): an error response without Connection: close, or not last`, { received: x.received.toString('latin1') });
        }
      }
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  t.equal(unanswered, 0, 'every connection was answered or closed');
  t.equal(malformed, 0, 'what the server sent was well-formed responses');
  t.equal(badError, 0, 'error responses say Connection: close and are the last');
  t.ok(answered > 0 && handled > 0, `the server answered (${answered} connections, ${handled} requests handled)`);
  t.comment(`response statuses: ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}`);
  t.ok(server.listening, 'the server is still listening');
  t.ok(await waitFor(() => server.connectionCount === 0, 5000), 'every server-side connection closed');
  // And it still serves.
  const last = await exchange(port, [Buffer.from('GET /still-up HTTP/1.1\r\nHost: a\r\n\r\n')], 5000);
  t.match(last.received.toString('latin1'), /^HTTP\/1\.1 200 /, 'a valid request still gets 200');
});
