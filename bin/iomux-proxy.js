#!/usr/bin/env node
// iomux-proxy -- the command-line face of iomux's load-balancing reverse proxy.
// A thin layer over dist/proxy: arguments and a JSON config file become
// createProxy() options; SIGTERM/SIGINT drain, SIGUSR2 prints the statistics.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const iomux = require(path.join(__dirname, '..', 'dist'));
const { createProxy, parseHostPort, ProxyConfigError } = require(path.join(__dirname, '..', 'dist', 'proxy'));

const USAGE = `Usage: iomux-proxy --listen HOST:PORT --upstream HOST:PORT[@WEIGHT][,...] [options]

  --listen HOST:PORT         where to accept clients (default 0.0.0.0:8080)
  --upstream LIST            upstreams, comma-separated; repeatable ([v6]:port for IPv6)
  --mode tcp|http            relay bytes (default) or proxy HTTP/1.1 with pooled upstream connections
  --balance round-robin|least-connections
  --accept-proxy any|v1|v2   expect a PROXY protocol header from each client
  --send-proxy v1|v2         send a PROXY protocol header to the upstreams
  --health-interval MS       active health checks every MS (off by default)
  --health-path PATH         HTTP health check: GET PATH expects 2xx/3xx (else a TCP connect)
  --health-timeout MS        per check (default 2000)
  --connect-timeout MS       per upstream connect before failing over (default 5000)
  --response-timeout MS      HTTP: upstream silence before 504 (default 30000)
  --idle-timeout MS          TCP: cut relays idle this long (default: never)
  --drain-deadline MS        on SIGTERM/SIGINT, let connections finish this long (default 30000)
  --stats HOST:PORT          serve the statistics as JSON over HTTP
  --config FILE              a JSON file of options (flags given on the command line win)
  --quiet                    log only warnings and errors
  --defer-accept             accept a client once its first bytes came (TCP_DEFER_ACCEPT,
                             Linux): for HTTP mode and other protocols whose client speaks first
  --integrated               run inside Node's own event loop instead of the core's
                             wait (standalone, the default: this process's traffic is
                             all iomux sockets, so each batch costs one wait, not two)
  --help

Signals: SIGTERM, SIGINT drain and exit; SIGUSR2 prints the statistics as one JSON line.`;

function fail(message) {
  process.stderr.write(`iomux-proxy: ${message}\n`);
  process.exit(2);
}

function number(flag, v) {
  if (!/^\d+$/.test(v)) fail(`${flag} wants a number of ms, got ${JSON.stringify(v)}`);
  return Number(v);
}

function version(flag, v) {
  if (v === 'v1' || v === '1') return 1;
  if (v === 'v2' || v === '2') return 2;
  if (flag === '--accept-proxy' && v === 'any') return true;
  fail(`${flag} wants ${flag === '--accept-proxy' ? 'any, ' : ''}v1 or v2, got ${JSON.stringify(v)}`);
}

function parseArgs(argv) {
  const flags = {};
  const upstreams = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--help' || arg === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    if (arg === '--quiet') {
      flags.quiet = true;
      continue;
    }
    if (arg === '--defer-accept') {
      flags.deferAccept = true;
      continue;
    }
    if (arg === '--integrated') {
      flags.integrated = true;
      continue;
    }
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    let value = eq > 0 ? arg.slice(eq + 1) : undefined;
    if (!name.startsWith('--')) fail(`unexpected argument ${JSON.stringify(arg)} (see --help)`);
    if (value === undefined) {
      if (i + 1 >= argv.length) fail(`${name} wants a value`);
      value = argv[++i];
    }
    switch (name) {
      case '--listen': flags.listen = value; break;
      case '--upstream': upstreams.push(...value.split(',').filter((s) => s.trim() !== '')); break;
      case '--mode': flags.mode = value; break;
      case '--balance': flags.balance = value; break;
      case '--accept-proxy': flags.acceptProxy = version(name, value); break;
      case '--send-proxy': flags.sendProxy = version(name, value); break;
      case '--health-interval': flags.healthInterval = number(name, value); break;
      case '--health-path': flags.healthPath = value; break;
      case '--health-timeout': flags.healthTimeout = number(name, value); break;
      case '--connect-timeout': flags.connectTimeout = number(name, value); break;
      case '--response-timeout': flags.responseTimeout = number(name, value); break;
      case '--idle-timeout': flags.idleTimeout = number(name, value); break;
      case '--drain-deadline': flags.drainDeadline = number(name, value); break;
      case '--stats': flags.stats = value; break;
      case '--config': flags.config = value; break;
      default: fail(`unknown option ${name} (see --help)`);
    }
  }
  if (upstreams.length > 0) flags.upstreams = upstreams;
  return flags;
}

function main() {
  const flags = parseArgs(process.argv.slice(2));
  let file = {};
  if (flags.config !== undefined) {
    try {
      file = JSON.parse(fs.readFileSync(flags.config, 'utf8'));
    } catch (err) {
      fail(`cannot read the config file ${flags.config}: ${err.message}`);
    }
    if (file === null || typeof file !== 'object' || Array.isArray(file)) fail(`${flags.config} must hold a JSON object`);
  }
  const {
    listen: fileListen, stats: fileStats, drainDeadline: fileDeadline, quiet: fileQuiet, integrated: fileIntegrated,
    deferAccept: fileDeferAccept, ...fileOptions
  } = file;
  const options = { ...fileOptions };
  for (const k of ['mode', 'balance', 'acceptProxy', 'sendProxy', 'connectTimeout', 'responseTimeout', 'idleTimeout', 'upstreams']) {
    if (flags[k] !== undefined) options[k] = flags[k];
  }
  if (flags.healthInterval !== undefined || flags.healthPath !== undefined || flags.healthTimeout !== undefined) {
    const h = { ...(typeof options.health === 'object' && options.health !== null ? options.health : {}) };
    if (flags.healthInterval !== undefined) h.interval = flags.healthInterval;
    if (flags.healthTimeout !== undefined) h.timeout = flags.healthTimeout;
    if (flags.healthPath !== undefined) {
      h.path = flags.healthPath;
      h.type = 'http';
    }
    options.health = h;
  }
  if (options.upstreams === undefined) fail('no upstreams: give --upstream HOST:PORT[,...] (or "upstreams" in the config file)');
  const listenText = flags.listen ?? fileListen ?? '0.0.0.0:8080';
  const statsText = flags.stats ?? fileStats;
  const deadline = flags.drainDeadline ?? fileDeadline ?? 30000;
  const quiet = flags.quiet ?? fileQuiet === true;
  const integrated = flags.integrated ?? fileIntegrated === true;
  const deferAccept = flags.deferAccept ?? fileDeferAccept === true;

  let proxy;
  let listen;
  try {
    listen = parseHostPort(listenText, '--listen');
    proxy = createProxy(options);
  } catch (err) {
    fail(err instanceof ProxyConfigError || err.code ? err.message : String(err));
  }

  proxy.on('log', (e) => {
    if (quiet && e.level === 'info') return;
    process.stderr.write(`${new Date().toISOString()} ${e.level} ${e.event}: ${e.message}\n`);
  });
  proxy.on('error', (err) => fail(`${listenText}: ${err.message}`));
  proxy.listen({ port: listen.port, host: listen.host, deferAccept }, () => {
    const a = proxy.address();
    const where = typeof a === 'string' ? a : `${a.address}:${a.port}`;
    const names = proxy.upstreams.map((u) => `${u.name}${u.weight !== 1 ? `@${u.weight}` : ''}`).join(', ');
    process.stderr.write(`${new Date().toISOString()} info listening: ${proxy.options.mode} proxy on ${where} -> ${names} (${proxy.options.balance})\n`);
  });

  let statsServer = null;
  if (statsText !== undefined) {
    let at;
    try {
      at = parseHostPort(statsText, '--stats');
    } catch (err) {
      fail(err.message);
    }
    statsServer = iomux.http.createServer((req, res) => {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { 'Content-Type': 'text/plain', Allow: 'GET, HEAD' }).end('405 Method Not Allowed\n');
        return;
      }
      const body = `${JSON.stringify(proxy.stats())}\n`;
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' }).end(body);
    });
    statsServer.on('error', (err) => fail(`--stats ${statsText}: ${err.message}`));
    statsServer.listen(at.port, at.host, () => {
      const a = statsServer.address();
      process.stderr.write(`${new Date().toISOString()} info stats: http://${a.address}:${a.port}/\n`);
    });
  }

  process.on('SIGUSR2', () => {
    process.stdout.write(`${JSON.stringify(proxy.stats())}\n`);
  });

  let stopping = false;
  const stop = (signal) => {
    if (stopping) {
      process.stderr.write(`${new Date().toISOString()} warn ${signal}: second signal, exiting now\n`);
      process.exit(1);
    }
    stopping = true;
    process.stderr.write(`${new Date().toISOString()} info ${signal}: draining (deadline ${deadline} ms)\n`);
    const stats = statsServer !== null ? statsServer.close() : Promise.resolve();
    Promise.all([proxy.close({ deadline }), stats]).then(() => {
      process.stderr.write(`${new Date().toISOString()} info drained: exiting\n`);
      // Nothing else should hold the loop; exit explicitly so that a stray
      // handle cannot keep a drained proxy alive past its deadline.
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  // Standalone: the core's wait becomes the only poll of this thread, with
  // libuv's fd in it, so signals and Node's timers still arrive.
  if (!integrated) iomux.loop.run();
}

main();
