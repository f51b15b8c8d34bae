'use strict';
// Hello-world HTTP/1.1 keep-alive responder used by benchmarks/run.js.
//
//   node benchmarks/servers/http-hello.js <net|iomux|iomux-standalone> <port>
//
// The application logic is the same for every implementation: count the
// request terminators "\r\n\r\n" in the incoming bytes (a terminator may be
// split across chunks) and answer each one with a fixed, preallocated
// response. Nothing else about HTTP is parsed; the point is to measure the
// socket layer, not a parser.
//
// Prints "listening <port>" once ready. Exits cleanly on SIGTERM; with
// IOMUX_BENCH_STATS=1 an iomux server first prints the loop's syscall
// counters (iomux.loop.stats()) as one JSON line on stdout; SIGUSR2 prints
// the same line without exiting.

const path = require('path');

const IMPLS = ['net', 'iomux', 'iomux-standalone'];
const impl = process.argv[2];
const port = Number(process.argv[3]);

if (!IMPLS.includes(impl) || !Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`usage: node ${path.relative(process.cwd(), __filename)} <${IMPLS.join('|')}> <port>\n`);
  process.exit(2);
}

const RESPONSE = Buffer.from(
  'HTTP/1.1 200 OK\r\nContent-Length: 12\r\nContent-Type: text/plain\r\n\r\nHello World!',
  'latin1'
);

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

// Per-connection handler. `matched` is how many bytes of "\r\n\r\n" the end
// of the previous chunk matched (0..3), so a split terminator still counts.
function onConnection(sock) {
  let matched = 0;
  sock.on('data', (chunk) => {
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
    if (n > 0) sock.write(responsesFor(n));
  });
  sock.on('end', () => sock.end());
  sock.on('error', () => sock.destroy());
}

// The compiled library at the repository root (dist/index.js).
function loadIomux() {
  return require(path.resolve(__dirname, '..', '..', 'dist'));
}

let iomux = null;
let server;

if (impl === 'net') {
  const net = require('net');
  server = net.createServer(onConnection);
} else {
  iomux = loadIomux();
  server = iomux.createServer(onConnection);
}

const wantStats = iomux !== null && process.env.IOMUX_BENCH_STATS === '1';

// One JSON line of iomux.loop.stats(), written synchronously so it is on
// stdout even when the process exits right after.
function printStats() {
  let line;
  try {
    // 64-bit counters may come as BigInt, which JSON cannot carry.
    line = JSON.stringify(iomux.loop.stats(), (_k, v) => (typeof v === 'bigint' ? Number(v) : v));
  } catch (err) {
    line = JSON.stringify({ error: String(err && err.message) });
  }
  require('fs').writeSync(1, line + '\n');
}

let exiting = false;
function shutdown() {
  if (exiting) return;
  exiting = true;
  if (wantStats) printStats();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
// A snapshot without exiting: the runner diffs two of them around a run.
if (wantStats) process.on('SIGUSR2', printStats);

server.on('error', (err) => {
  process.stderr.write(`http-hello (${impl}): server error: ${err && err.stack}\n`);
  process.exit(1);
});

server.listen(port, '127.0.0.1', () => {
  let actual = port;
  try {
    const addr = server.address && server.address();
    if (addr && typeof addr === 'object' && addr.port) actual = addr.port;
  } catch (_) {
    // address() is optional for the benchmark: fall back to the requested port.
  }
  require('fs').writeSync(1, `listening ${actual}\n`);
});

if (impl === 'iomux-standalone') {
  // Hand the thread to iomux's own blocking wait, from the top level of the
  // script (not from inside a callback). Node's own loop is serviced through
  // its backend fd, so signals and the listen callback above still arrive.
  iomux.loop.run();
}
