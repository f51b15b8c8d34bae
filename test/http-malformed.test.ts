// Malformed and smuggling requests against a real iomux HTTP server, over
// TCP (node:net as the client): for each, the exact status, "Connection:
// close", the server closing the connection, and the request handler never
// seeing the bad request -- with valid requests pipelined before a bad one
// answered first, in order.
import t from 'tap';
import { once } from 'node:events';
import * as net from 'node:net';
import { iomux, sleep, waitFor } from './helpers';

const H = 'Host: a\r\n';
const LIMITS = { maxRequestLineSize: 200, maxHeaderSize: 1024, maxHeaders: 16, maxBodySize: 64 };

/** A valid request for url, to pipeline before a bad one. */
const ok = (url: string) => `GET ${url} HTTP/1.1\r\n${H}\r\n`;
const okPost = (url: string, body: string) => `POST ${url} HTTP/1.1\r\n${H}Content-Length: ${body.length}\r\n\r\n${body}`;
const chunkedPost = (url: string, chunks: string) => `POST ${url} HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n${chunks}`;

interface Case {
  name: string;
  /** The bytes: one write, or several writes 20 ms apart. */
  send: string | string[];
  status: number;
  /** URLs of the valid requests pipelined before the bad one: each answered 200, in order. */
  before?: string[];
  /** The bad request's head was valid (its body is what is wrong): the handler saw it, but did not answer. */
  headOk?: boolean;
  /** The client half-closes after sending. */
  halfClose?: boolean;
}

const CASES: Case[] = [
  // ---- smuggling: framing ambiguities --------------------------------------------------
  { name: 'Content-Length and Transfer-Encoding', send: `POST /bad HTTP/1.1\r\n${H}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: 'Transfer-Encoding then Content-Length', send: `POST /bad HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: 'lower-case transfer-encoding with CL', send: `POST /bad HTTP/1.1\r\n${H}content-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: 'TE in odd case and whitespace, with CL', send: `POST /bad HTTP/1.1\r\n${H}Content-Length: 4\r\nTRANSFER-encoding: \t CHUNKED \t\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: 'Transfer-Encoding: chunked, identity', send: `POST /bad HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: 'Transfer-Encoding: chunked twice', send: `POST /bad HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: 'Transfer-Encoding: xchunked', send: `POST /bad HTTP/1.1\r\n${H}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`, status: 501 },
  { name: 'Transfer-Encoding: gzip (unknown coding)', send: `POST /bad HTTP/1.1\r\n${H}Transfer-Encoding: gzip\r\n\r\n`, status: 501 },
  { name: 'Transfer-Encoding: gzip, chunked', send: `POST /bad HTTP/1.1\r\n${H}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`, status: 501 },
  { name: 'Transfer-Encoding: "chunked" (quoted)', send: `POST /bad HTTP/1.1\r\n${H}Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: 'Transfer-Encoding obs-folded: " chunked"', send: `POST /bad HTTP/1.1\r\n${H}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: 'Transfer-Encoding with a space before the colon', send: `POST /bad HTTP/1.1\r\n${H}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: 'Transfer-Encoding in HTTP/1.0', send: 'POST /bad HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', status: 400 },
  { name: 'two Content-Lengths that differ', send: `POST /bad HTTP/1.1\r\n${H}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd`, status: 400 },
  { name: 'a Content-Length list that differs', send: `POST /bad HTTP/1.1\r\n${H}Content-Length: 3, 4\r\n\r\nabcd`, status: 400 },
  { name: 'Content-Length with a sign', send: `POST /bad HTTP/1.1\r\n${H}Content-Length: +3\r\n\r\nabc`, status: 400 },
  { name: 'Content-Length negative', send: `POST /bad HTTP/1.1\r\n${H}Content-Length: -3\r\n\r\nabc`, status: 400 },
  { name: 'Content-Length in hex', send: `POST /bad HTTP/1.1\r\n${H}Content-Length: 0x3\r\n\r\nabc`, status: 400 },
  { name: 'Content-Length with a space inside', send: `POST /bad HTTP/1.1\r\n${H}Content-Length: 1 2\r\n\r\nabcdefghijkl`, status: 400 },
  { name: 'Content-Length empty', send: `POST /bad HTTP/1.1\r\n${H}Content-Length:\r\n\r\n`, status: 400 },

  // ---- chunked bodies (the head is fine: the handler sees the request) ---------------------------
  { name: 'chunk size overflow', send: chunkedPost('/bad', 'fffffffffffffffff\r\nabc\r\n0\r\n\r\n'), status: 400, headOk: true },
  { name: 'negative chunk size', send: chunkedPost('/bad', '-1\r\nabc\r\n0\r\n\r\n'), status: 400, headOk: true },
  { name: 'chunk size with an invalid char', send: chunkedPost('/bad', '3g\r\nabc\r\n0\r\n\r\n'), status: 400, headOk: true },
  { name: 'chunk size with a 0x prefix', send: chunkedPost('/bad', '0x3\r\nabc\r\n0\r\n\r\n'), status: 400, headOk: true },
  { name: 'chunk size with whitespace and no extension', send: chunkedPost('/bad', '3 \r\nabc\r\n0\r\n\r\n'), status: 400, headOk: true },
  { name: 'chunk data not followed by CRLF', send: chunkedPost('/bad', '3\r\nabcd\r\n0\r\n\r\n'), status: 400, headOk: true },
  { name: 'chunked with bare LF line ends', send: chunkedPost('/bad', '3\nabc\n0\n\n'), status: 400, headOk: true },
  { name: 'a bare CR in a chunk extension', send: chunkedPost('/bad', '3;a\rb\r\nabc\r\n0\r\n\r\n'), status: 400, headOk: true },
  { name: 'obs-fold in the trailers', send: chunkedPost('/bad', '3\r\nabc\r\n0\r\nX: a\r\n b\r\n\r\n'), status: 400, headOk: true },
  { name: 'a chunked body over maxBodySize', send: chunkedPost('/bad', `40\r\n${'x'.repeat(64)}\r\n1\r\ny\r\n0\r\n\r\n`), status: 413, headOk: true },

  // ---- line ends, control bytes, field syntax -----------------------------------------------
  { name: 'bare LF line ends', send: 'GET /bad HTTP/1.1\nHost: a\n\n', status: 400 },
  { name: 'bare LF line ends, split over writes', send: ['GET /bad HTTP/1.1\nHo', 'st: a\n', '\n'], status: 400 },
  { name: 'a bare CR in a value', send: `GET /bad HTTP/1.1\r\n${H}X: a\rb\r\n\r\n`, status: 400 },
  { name: 'a bare CR ending the request line', send: `GET /bad HTTP/1.1\r\r\n${H}\r\n`, status: 400 },
  { name: 'NUL in a value', send: `GET /bad HTTP/1.1\r\n${H}X: a\x00b\r\n\r\n`, status: 400 },
  { name: 'NUL in a name', send: `GET /bad HTTP/1.1\r\n${H}X\x00Y: a\r\n\r\n`, status: 400 },
  { name: 'DEL in a value', send: `GET /bad HTTP/1.1\r\n${H}X: a\x7f\r\n\r\n`, status: 400 },
  { name: 'a space before the colon', send: `GET /bad HTTP/1.1\r\n${H}X-A : b\r\n\r\n`, status: 400 },
  { name: 'a tab before the colon', send: `GET /bad HTTP/1.1\r\n${H}X-A\t: b\r\n\r\n`, status: 400 },
  { name: 'an empty header name', send: `GET /bad HTTP/1.1\r\n${H}: b\r\n\r\n`, status: 400 },
  { name: 'a field line without a colon', send: `GET /bad HTTP/1.1\r\n${H}X-A b\r\n\r\n`, status: 400 },
  { name: 'an obs-fold continuation line', send: `GET /bad HTTP/1.1\r\n${H}X-A: b\r\n  c\r\n\r\n`, status: 400 },
  { name: 'an obs-fold right after the request line', send: `GET /bad HTTP/1.1\r\n ${H}\r\n`, status: 400 },
  { name: 'an obs-fold split over writes', send: [`GET /bad HTTP/1.1\r\n${H}X-A: b\r\n`, ' c\r\n\r\n'], status: 400 },
  { name: 'a high byte in a name', send: `GET /bad HTTP/1.1\r\n${H}X\xc3\xa9: b\r\n\r\n`, status: 400 },

  // ---- the request line ------------------------------------------------------------------
  { name: 'invalid method chars', send: `G@T /bad HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'a method with a NUL', send: `GET\x00 /bad HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'lower-case http/1.1', send: `GET /bad http/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'HTTP/2.0', send: `GET /bad HTTP/2.0\r\n${H}\r\n`, status: 505 },
  { name: 'HTTP/3.1', send: `GET /bad HTTP/3.1\r\n${H}\r\n`, status: 505 },
  { name: 'HTTP/1.1 extra', send: `GET /bad HTTP/1.1 extra\r\n${H}\r\n`, status: 400 },
  { name: 'HTTP/1.1 with a trailing space', send: `GET /bad HTTP/1.1 \r\n${H}\r\n`, status: 400 },
  { name: 'HTTP/11', send: `GET /bad HTTP/11\r\n${H}\r\n`, status: 400 },
  { name: 'no version', send: `GET /bad\r\n${H}\r\n`, status: 400 },
  { name: 'two spaces after the method', send: `GET  /bad HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'a URL with a space', send: `GET /bad path HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'a URL with a control char', send: `GET /bad\x01 HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'a URL with a tab', send: `GET /bad\tx HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'a URL with a high byte', send: `GET /bad\xff HTTP/1.1\r\n${H}\r\n`, status: 400 },
  { name: 'whitespace before the method', send: ` GET /bad HTTP/1.1\r\n${H}\r\n`, status: 400 },

  // ---- Host ------------------------------------------------------------------------------
  { name: 'no Host in HTTP/1.1', send: 'GET /bad HTTP/1.1\r\nX: y\r\n\r\n', status: 400 },
  { name: 'two Hosts', send: `GET /bad HTTP/1.1\r\n${H}Host: b\r\n\r\n`, status: 400 },

  // ---- limits ----------------------------------------------------------------------------
  { name: 'a request line over the limit', send: `GET /bad${'a'.repeat(200)} HTTP/1.1\r\n${H}\r\n`, status: 431 },
  { name: 'a request line over the limit, no end yet', send: `GET /bad${'a'.repeat(300)}`, status: 431 },
  { name: 'a head over the limit', send: `GET /bad HTTP/1.1\r\n${H}${'X-Pad: 0123456789012345678901234567890123456789\r\n'.repeat(15)}X: ${'y'.repeat(400)}\r\n\r\n`, status: 431 },
  { name: 'a head over the limit, in small writes', send: Array.from({ length: 12 }, (_, i) => (i === 0 ? `GET /bad HTTP/1.1\r\n${H}` : `X-${i}: ${'z'.repeat(100)}\r\n`)), status: 431 },
  { name: 'too many headers', send: `GET /bad HTTP/1.1\r\n${H}${Array.from({ length: 16 }, (_, i) => `X-${i}: ${i}\r\n`).join('')}\r\n`, status: 431 },
  { name: 'a Content-Length over maxBodySize', send: `POST /bad HTTP/1.1\r\n${H}Content-Length: 65\r\n\r\n${'b'.repeat(65)}`, status: 413 },
  { name: 'a Content-Length of 20 digits', send: `POST /bad HTTP/1.1\r\n${H}Content-Length: 18446744073709551617\r\n\r\n`, status: 413 },

  // ---- cut short -------------------------------------------------------------------------
  { name: 'a head cut short by the client\'s FIN', send: `GET /bad HTTP/1.1\r\n${H}`, status: 400, halfClose: true },
  { name: 'a body cut short by the client\'s FIN', send: `POST /bad HTTP/1.1\r\n${H}Content-Length: 10\r\n\r\nabc`, status: 400, headOk: true, halfClose: true },

  // ---- valid requests pipelined before the bad one -----------------------------------------
  { name: 'a GET, then CL+TE', before: ['/ok1'], send: ok('/ok1') + `POST /bad HTTP/1.1\r\n${H}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, status: 400 },
  { name: 'a POST with a body, then HTTP/2.0', before: ['/ok1'], send: okPost('/ok1', 'hello') + `GET /bad HTTP/2.0\r\n${H}\r\n`, status: 505 },
  { name: 'a chunked POST, then an obs-fold', before: ['/ok1'], send: chunkedPost('/ok1', '2\r\nhi\r\n0\r\n\r\n') + `GET /bad HTTP/1.1\r\n${H}X: a\r\n b\r\n\r\n`, status: 400 },
  { name: 'two GETs, then too many headers', before: ['/ok1', '/ok2'], send: ok('/ok1') + ok('/ok2') + `GET /bad HTTP/1.1\r\n${H}${'X: 1\r\n'.repeat(16)}\r\n`, status: 431 },
  { name: 'a slow GET, then a bare LF (the error waits its turn)', before: ['/slow1'], send: ok('/slow1') + 'GET /bad HTTP/1.1\nHost: a\n\n', status: 400 },
  { name: 'two slow GETs, then a Transfer-Encoding: gzip', before: ['/slow1', '/slow2'], send: ok('/slow1') + ok('/slow2') + `POST /bad HTTP/1.1\r\n${H}Transfer-Encoding: gzip\r\n\r\n`, status: 501 },
  { name: 'a GET, then a bad chunk size', before: ['/ok1'], send: ok('/ok1') + chunkedPost('/bad', 'zz\r\n'), status: 400, headOk: true },
  { name: 'a slow GET, then a chunked body over the limit', before: ['/slow1'], send: ok('/slow1') + chunkedPost('/bad', `41\r\n${'x'.repeat(65)}\r\n0\r\n\r\n`), status: 413, headOk: true },
  { name: 'a GET, then Expect: 100-continue with a Content-Length over the limit (no 100 first)', before: ['/ok1'], send: ok('/ok1') + `POST /bad HTTP/1.1\r\n${H}Expect: 100-continue\r\nContent-Length: 65\r\n\r\n`, status: 413 },
  { name: 'a GET, then the bad request in a later write', before: ['/ok1'], send: [ok('/ok1'), `GET /bad HTTP/1.1\r\n${H}Content-Length: 1\r\nContent-Length: 2\r\n\r\n`], status: 400 },
];

interface Parsed {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Splits a response stream into responses (bodies by Content-Length); throws on anything else. */
function parseResponses(buf: Buffer): Parsed[] {
  const s = buf.toString('latin1');
  const out: Parsed[] = [];
  let pos = 0;
  while (pos < s.length) {
    const end = s.indexOf('\r\n\r\n', pos);
    if (end < 0) throw new Error(`an incomplete response: ${JSON.stringify(s.slice(pos))}`);
    const lines = s.slice(pos, end).split('\r\n');
    const m = /^HTTP\/1\.1 (\d{3}) /.exec(lines[0]!);
    if (m === null) throw new Error(`not a status line: ${JSON.stringify(lines[0])}`);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
    }
    const len = Number(headers['content-length'] ?? 'NaN');
    if (!Number.isInteger(len)) throw new Error('a response without Content-Length');
    out.push({ status: Number(m[1]), headers, body: s.slice(end + 4, end + 4 + len) });
    pos = end + 4 + len;
  }
  return out;
}

interface Outcome {
  received: Buffer;
  /** The server's FIN arrived. */
  ended: boolean;
  /** The connection closed (both ways), within the time given. */
  closed: boolean;
  error: string | null;
}

async function talk(port: number, c: Case): Promise<Outcome> {
  const sock = net.connect(port, '127.0.0.1');
  const got: Buffer[] = [];
  let ended = false;
  let error: string | null = null;
  sock.on('data', (d) => got.push(d));
  sock.on('end', () => {
    ended = true;
  });
  sock.on('error', (e: NodeJS.ErrnoException) => {
    error = e.code ?? e.message;
  });
  const closed = new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 5000);
    sock.on('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
  await once(sock, 'connect');
  const pieces = typeof c.send === 'string' ? [c.send] : c.send;
  for (let i = 0; i < pieces.length; i++) {
    if (i > 0) await sleep(20);
    if (!sock.destroyed) sock.write(Buffer.from(pieces[i]!, 'latin1'));
  }
  if (c.halfClose) sock.end();
  // Without a half-close the client keeps its side open: the close is the server's doing.
  const wasClosed = await closed;
  sock.destroy();
  return { received: Buffer.concat(got), ended, closed: wasClosed, error };
}

t.test('malformed and smuggling requests: status, Connection: close, closed, handler not called', async (t) => {
  t.ok(CASES.length >= 30, `${CASES.length} cases`);
  const calls: string[] = [];
  const server = iomux.http.createServer(LIMITS, async (req, res) => {
    calls.push(req.url);
    try {
      await req.body();
    } catch {
      calls.push(`${req.url} aborted`);
      return; // the connection answers for a request whose body failed
    }
    if (req.url.startsWith('/slow')) await sleep(30);
    res.end(`ok ${req.url}`);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  t.teardown(() => {
    server.closeAllConnections();
    return server.close();
  });

  for (const c of CASES) {
    await t.test(c.name, async (t) => {
      calls.length = 0;
      const o = await talk(port, c);
      const before = c.before ?? [];
      let rs: Parsed[];
      try {
        rs = parseResponses(o.received);
      } catch (err) {
        t.fail(String(err), { received: o.received.toString('latin1') });
        return;
      }
      t.same(rs.map((r) => r.status), [...before.map(() => 200), c.status], `responses: ${before.map(() => '200, ').join('')}${c.status}`);
      t.same(rs.slice(0, before.length).map((r) => r.body), before.map((u) => `ok ${u}`), 'the valid requests answered first, in order');
      const last = rs[rs.length - 1];
      t.equal(last?.headers.connection, 'close', 'the error response says Connection: close');
      t.ok(o.ended, 'the server sent its FIN after the error response');
      t.ok(o.closed, 'the connection closed');
      t.equal(o.error, null, 'no reset');
      const want = c.headOk ? [...before, '/bad', '/bad aborted'] : before;
      t.same(calls, want, c.headOk ? 'the handler saw the bad request\'s head, its body failed' : 'the handler never saw the bad request');
    });
  }
  t.ok(await waitFor(() => server.connectionCount === 0, 5000), 'no connection left open on the server');
});

t.test('the error responses of a server with the default limits', async (t) => {
  let called = 0;
  const server = iomux.http.createServer((_req, res) => {
    called++;
    res.end('ok');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  t.teardown(() => {
    server.closeAllConnections();
    return server.close();
  });
  const big = (n: number) => 'x'.repeat(n);
  const cases: Case[] = [
    { name: 'a request line just over 8 KiB', send: `GET /${big(8 * 1024)} HTTP/1.1\r\n${H}\r\n`, status: 431 },
    { name: 'a head just over 16 KiB', send: `GET / HTTP/1.1\r\n${H}X: ${big(16 * 1024)}\r\n\r\n`, status: 431 },
    { name: '101 headers', send: `GET / HTTP/1.1\r\n${H}${'X: 1\r\n'.repeat(100)}\r\n`, status: 431 },
    { name: 'a Content-Length over 16 MiB', send: `POST / HTTP/1.1\r\n${H}Content-Length: ${16 * 1024 * 1024 + 1}\r\n\r\n`, status: 413 },
  ];
  for (const c of cases) {
    const o = await talk(port, c);
    const rs = parseResponses(o.received);
    t.same(rs.map((r) => r.status), [c.status], `${c.name}: ${c.status}`);
    t.equal(rs[0]?.headers.connection, 'close', `${c.name}: Connection: close`);
    t.ok(o.ended && o.closed, `${c.name}: closed`);
  }
  t.equal(called, 0, 'the handler was never called');
  // Just under the limits is fine.
  const o = await talk(port, { name: '', send: `GET /${big(8 * 1024 - 16)} HTTP/1.1\r\n${H}Connection: close\r\n\r\n`, status: 200 });
  t.same(parseResponses(o.received).map((r) => r.status), [200], 'a request line just under 8 KiB: 200');
  t.equal(called, 1);
});
