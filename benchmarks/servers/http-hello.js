'use strict';
// Hello-world HTTP/1.1 responder used by benchmarks/run.js.
//
//   node benchmarks/servers/http-hello.js <net|iomux|iomux-standalone|http|iomux-http|iomux-http-standalone> <port> [keepalive|close|idle]
//
// net, iomux and iomux-standalone run the same code: count the request
// terminators "\r\n\r\n" in the incoming bytes (a terminator may be split
// across chunks, and pipelined requests arrive several per chunk) and answer
// each with a fixed, preallocated response, all of a chunk's responses in one
// write. Nothing else about HTTP is parsed: the point is the socket layer,
// not a parser. `http` is node:http with the same response bytes (no Date
// header), the reference for "what you would use otherwise". iomux-http is
// iomux's own HTTP server (iomux.http) with the same handler as node:http:
// a full parse of every request, the same response headers.
//
// keepalive (default): connections stay open. close: every response carries
// "Connection: close" and the server closes the connection after it
// (socket.write(response) then socket.destroy(); node:http ends it on its own).
// idle: keep-alive with a keep-alive timeout of 10 minutes on node:http and
// iomux.http (both default to 5 s), for connections held idle.
//
// Every server reads socket.remoteAddress on each new connection, as a
// logger would. The stats line (see common.js) counts connections accepted
// and requests answered.

const { isIomux, loadIomux, usage, parsePort, serve } = require('./common');

const IMPLS = ['net', 'iomux', 'iomux-standalone', 'http', 'iomux-http', 'iomux-http-standalone'];
const impl = process.argv[2];
const port = parsePort(process.argv[3]);
const mode = process.argv[4] || 'keepalive';
if (!IMPLS.includes(impl) || port === null || !['keepalive', 'close', 'idle'].includes(mode)) {
  usage(__filename, IMPLS, '[keepalive|close|idle]');
}
const IDLE_KEEPALIVE_MS = 10 * 60 * 1000;
const close = mode === 'close';

const BODY = 'Hello World!';
const RESPONSE = Buffer.from(
  'HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n' +
  (close ? 'Connection: close\r\n' : '') + '\r\n' + BODY,
  'latin1'
);

const app = { accepted: 0, requests: 0, addressChars: 0 };

// Pipelined batches: the concatenation of n responses, built once per n.
const MAX_CACHED_BATCH = 64;
const batches = [Buffer.alloc(0), RESPONSE];
function responsesFor(n) {
  if (n < batches.length) return batches[n];
  if (n > MAX_CACHED_BATCH) return Buffer.concat(new Array(n).fill(RESPONSE));
  while (batches.length <= n) batches.push(Buffer.concat([batches[batches.length - 1], RESPONSE]));
  return batches[n];
}

const CR = 13;
const LF = 10;

function logConnection(sock) {
  app.accepted++;
  // What a connection logger reads. node:net asks the kernel (getpeername)
  // the first time; iomux kept it from accept4().
  const addr = sock.remoteAddress;
  app.addressChars += addr ? addr.length : 0;
}

// Per-connection handler for net and iomux. `matched` is how many bytes of
// "\r\n\r\n" the end of the previous chunk matched (0..3).
function onConnection(sock) {
  logConnection(sock);
  let matched = 0;
  let done = false;
  sock.on('data', (chunk) => {
    if (done) return;
    let n = 0;
    let m = matched;
    for (let i = 0, len = chunk.length; i < len; i++) {
      const b = chunk[i];
      // Expected byte at position m of "\r\n\r\n": CR for even m, LF for odd.
      if (b === ((m & 1) === 0 ? CR : LF)) {
        if (++m === 4) {
          n++;
          m = 0;
        }
      } else {
        // Mismatch: the only prefix of the pattern that can end here is "\r".
        m = b === CR ? 1 : 0;
      }
    }
    matched = m;
    if (n === 0) return;
    if (close) {
      // One answer, then close: the request was read whole, so the close
      // sends a FIN after the response (no half-close round trip).
      done = true;
      app.requests++;
      sock.write(RESPONSE);
      sock.destroy();
      return;
    }
    app.requests += n;
    sock.write(responsesFor(n));
  });
  sock.on('end', () => sock.end());
  sock.on('error', () => sock.destroy());
}

let iomux = null;
let server;

if (impl === 'http' || impl === 'iomux-http' || impl === 'iomux-http-standalone') {
  let http = require('http');
  if (impl !== 'http') {
    iomux = loadIomux();
    http = iomux.http;
  }
  const headers = { 'Content-Length': '12', 'Content-Type': 'text/plain' };
  if (close) headers.Connection = 'close';
  const options = mode === 'idle' && impl !== 'http' ? { keepAliveTimeout: IDLE_KEEPALIVE_MS } : {};
  server = http.createServer(options, (req, res) => {
    app.requests++;
    res.sendDate = false;
    res.writeHead(200, headers);
    res.end(BODY);
  });
  if (mode === 'idle' && impl === 'http') server.keepAliveTimeout = IDLE_KEEPALIVE_MS;
  server.on('connection', (sock) => {
    logConnection(sock);
    sock.on('error', () => sock.destroy());
  });
} else if (impl === 'net') {
  server = require('net').createServer(onConnection);
} else if (isIomux(impl)) {
  iomux = loadIomux();
  server = iomux.createServer(onConnection);
}

// HTTP clients speak first: the iomux servers listen with deferAccept, so a
// connection is accepted with its request and costs one wakeup (the C
// reference does the same). node:net and node:http cannot ask for it.
// IOMUX_BENCH_DEFER_ACCEPT=0 turns it off, to measure what it saves.
const deferAccept = iomux !== null && process.env.IOMUX_BENCH_DEFER_ACCEPT !== '0';
serve({ name: 'http-hello', impl, iomux, server, port, app, deferAccept });
