'use strict';
// Raw TCP servers used by benchmarks/run.js, one application per mode, the
// same code on every implementation:
//
//   node benchmarks/servers/tcp.js <net|iomux|iomux-standalone> <port> <mode>
//
//   echo      writes every chunk back (64-byte ping-pong, idle connections)
//   sink      consumes and counts bytes (bulk transfer)
//   timeout   echo, and socket.setTimeout(IOMUX_BENCH_IDLE_MS, default 60 s)
//             on every socket, so every read and write refreshes an idle
//             timeout (a 'timeout' destroys the socket; none is expected)
//
// The stats line (see common.js) counts connections accepted and open, bytes
// received, and timeouts.

const { isIomux, loadIomux, usage, parsePort, serve } = require('./common');

const IMPLS = ['net', 'iomux', 'iomux-standalone'];
const MODES = ['echo', 'sink', 'timeout'];
const impl = process.argv[2];
const port = parsePort(process.argv[3]);
const mode = process.argv[4];
if (!IMPLS.includes(impl) || port === null || !MODES.includes(mode)) usage(__filename, IMPLS, `<${MODES.join('|')}>`);

const IDLE_MS = Number(process.env.IOMUX_BENCH_IDLE_MS) || 60000;
const app = { accepted: 0, open: 0, bytes: 0, timeouts: 0 };

function onClose() {
  app.open--;
}

function onTimeout() {
  app.timeouts++;
  this.destroy();
}

let onConnection;
if (mode === 'sink') {
  onConnection = (sock) => {
    app.accepted++;
    app.open++;
    sock.on('data', (chunk) => {
      app.bytes += chunk.length;
    });
    sock.on('end', () => sock.end());
    sock.on('error', () => sock.destroy());
    sock.on('close', onClose);
  };
} else {
  const withTimeout = mode === 'timeout';
  onConnection = (sock) => {
    app.accepted++;
    app.open++;
    if (withTimeout) sock.setTimeout(IDLE_MS, onTimeout);
    sock.on('data', (chunk) => {
      app.bytes += chunk.length;
      sock.write(chunk);
    });
    sock.on('end', () => sock.end());
    sock.on('error', () => sock.destroy());
    sock.on('close', onClose);
  };
}

let iomux = null;
let server;
if (impl === 'net') {
  server = require('net').createServer(onConnection);
} else if (isIomux(impl)) {
  iomux = loadIomux();
  server = iomux.createServer(onConnection);
}

serve({ name: 'tcp', impl, iomux, server, port, app });
