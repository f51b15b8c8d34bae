'use strict';
// TCP proxies in front of one backend, for the proxy rows of benchmarks/run.js:
//
//   node benchmarks/servers/proxy.js <net|iomux|iomux-standalone|haproxy> <port> <backendPort>
//
//   net      node:net, the way a proxy is written on it: for each client a
//            connection to the backend and client.pipe(upstream).pipe(client)
//   iomux    iomux.proxy.createProxy({ mode: 'tcp' }) with the backend as its one
//            upstream (no health checks)
//   iomux-standalone  the same, then loop.run(): the core's wait is the only
//            poll (what the iomux-proxy command does)
//   haproxy  HAProxy in TCP mode (mode tcp, one server, one thread), run in the
//            foreground by this script; its pid is printed as "cpupid <pid>" so
//            that the runner reads HAProxy's CPU time, not this script's
//
// The stats line (see common.js) counts connections accepted (net, iomux).

const fs = require('fs');
const os = require('os');
const path = require('path');
const net = require('net');
const { spawn, spawnSync } = require('child_process');
const { loadIomux, usage, parsePort, serve } = require('./common');

const IMPLS = ['net', 'iomux', 'iomux-standalone', 'haproxy'];
const impl = process.argv[2];
const port = parsePort(process.argv[3]);
const backendPort = parsePort(process.argv[4]);
if (!IMPLS.includes(impl) || port === null || backendPort === null) usage(__filename, IMPLS, '<backendPort>');

const app = { accepted: 0 };

if (impl === 'haproxy') {
  runHaproxy();
} else if (impl === 'net') {
  const server = net.createServer((client) => {
    app.accepted++;
    const upstream = net.connect(backendPort, '127.0.0.1');
    client.pipe(upstream).pipe(client);
    const destroyBoth = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', destroyBoth);
    upstream.on('error', destroyBoth);
  });
  serve({ name: 'proxy', impl, iomux: null, server, port, app });
} else {
  const iomux = loadIomux();
  const proxy = iomux.proxy.createProxy({ mode: 'tcp', upstreams: [`127.0.0.1:${backendPort}`] });
  proxy.on('log', (e) => {
    if (e.level === 'error') process.stderr.write(`proxy: ${e.event}: ${e.message}\n`);
  });
  // serve() wants a server with listen/address/on('error'): the proxy has them.
  serve({ name: 'proxy', impl, iomux, server: proxy, port, app });
}

function runHaproxy() {
  const bin = process.env.HAPROXY || 'haproxy';
  if (spawnSync(bin, ['-v'], { stdio: 'ignore' }).status !== 0) {
    process.stderr.write('haproxy is not installed\n');
    process.exit(3);
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iomux-bench-haproxy-'));
  const cfg = path.join(dir, 'haproxy.cfg');
  fs.writeFileSync(cfg, [
    'global',
    '  nbthread 1',
    '  maxconn 8000', // two fds a connection: within this machine's 20,000
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 60s',
    '  timeout server 60s',
    'frontend fe',
    `  bind 127.0.0.1:${port}`,
    '  default_backend be',
    'backend be',
    `  server s1 127.0.0.1:${backendPort}`,
    '',
  ].join('\n'));
  const child = spawn(bin, ['-db', '-f', cfg], { stdio: ['ignore', 'ignore', 'inherit'] });
  const cleanup = () => {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch (_) {
      // Best effort.
    }
  };
  const writeLine = (s) => fs.writeSync(1, s + '\n');
  const stats = () => writeLine(JSON.stringify({ type: 'stats', impl, backend: 'haproxy', app, mem: {}, loop: null }));
  child.on('exit', (code, signal) => {
    cleanup();
    process.stderr.write(`haproxy exited (code ${code}, signal ${signal})\n`);
    process.exit(1);
  });
  const stop = () => {
    child.removeAllListeners('exit');
    child.kill('SIGTERM');
    cleanup();
    stats();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.on('SIGUSR2', stats);
  process.on('SIGWINCH', stats);
  // Ready once it accepts.
  const started = Date.now();
  const probe = () => {
    const c = net.connect(port, '127.0.0.1', () => {
      c.destroy();
      writeLine(`cpupid ${child.pid}`);
      writeLine(`listening ${port} haproxy`);
    });
    c.on('error', () => {
      if (Date.now() - started > 10000) {
        process.stderr.write('haproxy did not start listening within 10 s\n');
        stop();
      } else {
        setTimeout(probe, 50);
      }
    });
  };
  probe();
}
