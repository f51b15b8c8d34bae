'use strict';
// What every benchmark server shares: loading the implementation, the
// "listening" line, the stats line, and the signals.
//
// Protocol with benchmarks/run.js (stdout, one line each):
//   listening <port> <backend>      once the server listens; backend is
//                                   iomux.loop.backend, or "libuv" for node
//   {"type":"stats",...}            on SIGUSR2, and on SIGTERM before exiting:
//                                   the application's counters, memory, and
//                                   iomux.loop.stats() for iomux servers
// SIGWINCH prints the same line after two full garbage collections (when
// node runs with --expose-gc), for memory measurements.
//
// IOMUX_BENCH_DIST, when set, is the dist/ directory to load iomux from (the
// runner's snapshot of the build); otherwise the repository's dist/.

const fs = require('fs');
const path = require('path');

const IOMUX_IMPLS = ['iomux', 'iomux-standalone', 'iomux-http', 'iomux-http-standalone', 'iomux-node'];

function isIomux(impl) {
  return IOMUX_IMPLS.includes(impl);
}

// The compiled library at the repository root (dist/index.js).
function loadIomux() {
  return require(process.env.IOMUX_BENCH_DIST || path.resolve(__dirname, '..', '..', 'dist'));
}

function usage(script, impls, extra) {
  process.stderr.write(`usage: node ${path.relative(process.cwd(), script)} <${impls.join('|')}> <port>${extra ? ' ' + extra : ''}\n`);
  process.exit(2);
}

function parsePort(v) {
  const port = Number(v);
  return Number.isInteger(port) && port >= 0 && port <= 65535 ? port : null;
}

// `app` is an object of numeric counters the server updates; it goes into
// every stats line as it is. `deferAccept` listens with TCP_DEFER_ACCEPT
// (iomux's listen({ deferAccept: true })), for servers whose clients speak
// first; node:net has no such option.
function serve({ name, impl, iomux, server, port, app, deferAccept = false }) {
  const writeLine = (s) => fs.writeSync(1, s + '\n');

  function statsLine(gc) {
    if (gc && typeof global.gc === 'function') {
      global.gc();
      global.gc();
    }
    const m = process.memoryUsage();
    const out = {
      type: 'stats',
      impl,
      backend: iomux ? iomux.loop.backend : 'libuv',
      app,
      mem: { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external, arrayBuffers: m.arrayBuffers },
      loop: null,
    };
    if (iomux) {
      try {
        out.loop = iomux.loop.stats();
      } catch (err) {
        out.loopError = String(err && err.message);
      }
    }
    // 64-bit counters may come as BigInt, which JSON cannot carry.
    return JSON.stringify(out, (_k, v) => (typeof v === 'bigint' ? Number(v) : v));
  }

  let exiting = false;
  function shutdown() {
    if (exiting) return;
    exiting = true;
    writeLine(statsLine(false));
    process.exit(0);
  }
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  process.on('SIGUSR2', () => writeLine(statsLine(false)));
  process.on('SIGWINCH', () => writeLine(statsLine(true)));

  server.on('error', (err) => {
    process.stderr.write(`${name} (${impl}): server error: ${err && err.stack}\n`);
    process.exit(1);
  });

  const where = deferAccept ? [{ port, host: '127.0.0.1', deferAccept: true }] : [port, '127.0.0.1'];
  server.listen(...where, () => {
    let actual = port;
    try {
      const addr = server.address && server.address();
      if (addr && typeof addr === 'object' && addr.port) actual = addr.port;
    } catch (_) {
      // Fall back to the requested port.
    }
    writeLine(`listening ${actual} ${iomux ? iomux.loop.backend : 'libuv'}`);
  });

  if (impl === 'iomux-standalone' || impl === 'iomux-http-standalone') {
    // Hand the thread to iomux's own blocking wait, from the top level of
    // the script. Node's own loop is serviced through its backend fd, so
    // signals and the listen callback above still arrive.
    iomux.loop.run();
  }
}

module.exports = { isIomux, loadIomux, usage, parsePort, serve };
