'use strict';
// The comparison suite of iomux: `npm run bench` (node benchmarks/run.js).
//
// Scenarios (--only picks some, by id):
//   keepalive  HTTP/1.1 keep-alive hello world, 100 connections (wrk)
//   pipeline   the same with 16 pipelined requests per write (wrk + Lua)
//   churn      one request per connection, Connection: close; the server
//              reads remoteAddress on every connection
//   express    an Express app (JSON route with a route parameter) on node:http
//              and on iomux.http.serveNode(), every response checked
//   fastify    the same with Fastify
//   echo       TCP echo, 64-byte ping-pong on 100 connections (C client)
//   bulk       one connection streaming 64 KiB writes, the server consumes
//   proxy      keep-alive hello world through a TCP proxy: node:net, iomux, HAProxy
//   proxy-bulk 64 KiB writes through the same proxies
//   idle       15,000 idle connections after one echo each: server RSS per connection
//   idle-silent   the same connections, never a byte sent
//   idle-http  15,000 idle keep-alive HTTP connections after one request each
//   idle-proxy 5,000 idle connections through a TCP proxy, each with its upstream
//   timers     1,000,000 timer schedule-and-cancel pairs, iomux vs node
//   timeouts   15,000 sockets with an idle timeout refreshed on every read
//   cache      SharedCache get/set against lmdb, Redis (ioredis) and a Map,
//              from 1 and 2 processes (benchmarks/micro/cache.js; its own
//              table after the others, in latest.md, and "cache" in latest.json)
//   sync       semaphores, mutexes and shared variables across worker
//              processes: the fast path, the Netplex way (a round trip to the
//              master), proper-lockfile, a contended hand-off
//              (benchmarks/micro/sync.js; "sync" in latest.json)
//   cluster    HTTP keep-alive and churn on 2 worker processes: an iomux
//              supervisor vs node:cluster vs 2 iomux processes with
//              reusePort; CPU over master and workers, the spread across
//              workers, a killed worker's replacement time, broadcasts to 8
//              workers (benchmarks/lib/cluster.js)
//   zmq        ZeroMQ: PUSH->PULL throughput (64 B, 4 KiB) and DEALER->ROUTER
//              round trips (1 and 100 in flight): iomux.zmq, zeromq.js and a
//              C program on libzmq, and iomux against libzmq both ways
//              (benchmarks/zmq/bench.js; it also runs on its own)
//   stages     iomux.pipeline (prime_server's demo, 2 stages of worker
//              processes): its own CPU per request against an iomux.http
//              server doing the work inline and the same pipeline on
//              zeromq.js; 1, 2 and 8 workers per stage on non-uniform work;
//              p99 as the share of slow jobs grows, against a single FIFO
//              (benchmarks/pipeline/bench.js; it also runs on its own)
//
// Candidates: node:http (HTTP rows), node:net, iomux (integrated in Node's
// loop, IOMUX_BACKEND=epoll), iomux standalone (loop.run()), iomux with
// IOMUX_BACKEND=io_uring when that backend loads, and "C epoll (reference)"
// (servers/c_epoll.c, compiled at bench time; HTTP, echo and bulk rows): the
// floor that loopback TCP sets for any server on the machine. Every server
// runs in its own process pinned to CPU 0, the load generator on CPU 1;
// candidates alternate within a scenario for --rounds rounds; medians and
// min-max.
//
// Flags:
//   --quick                  CI smoke run: 1 round of 1 s per row, 2,000 idle
//                            connections, 100k timer pairs (about 2 minutes)
//   --only a,b               scenarios to run (ids above; default all)
//   --candidates a,b         subset of: http, net, iomux, iomux-standalone, iomux-uring,
//                            iomux-http, iomux-http-uring, iomux-node, c
//   --rounds N               rounds per candidate (default 3); the order
//                            rotates each round: A B C, B C A, C A B
//   --duration S             seconds measured per candidate and round (default 3)
//   --phases N               load rows: the measured seconds come in N phases
//                            of whole seconds, and within a round the
//                            candidates take turns phase by phase, their
//                            servers all started and warmed up first
//                            (default 3: A B C A B C A B C, one second each)
//   --warmup S               warm-up seconds per server start (default 1)
//   --connections N          connections for HTTP and echo (default 100)
//   --pipeline N             requests per write in "pipeline" (default 16)
//   --idle-connections N     connections in "idle", "idle-silent", "idle-http" (default 15000)
//   --idle-proxy-connections N  client connections in "idle-proxy" (default 5000;
//                            the proxy holds two descriptors for each)
//   --timeout-connections N  connections in "timeouts" (default 15000)
//   --timer-pairs N          pairs in "timers" (default 1000000)
//   --loadgen NAME           wrk or autocannon (default: wrk when installed);
//                            autocannon's JSON latency histograms land in latest.json
//   --strace-duration S      seconds of load in the strace runs (default 1)
//   --no-strace              skip the strace runs
//   --no-pin                 do not pin processes with taskset
//   --out DIR                where latest.{md,json,svg} go (default benchmarks/results)
//   --base-dist DIR          express and fastify rows: also run serveNode() from
//                            another built checkout's dist/ ("iomux serveNode
//                            (base build)"), in the same rounds, to compare two builds
//   --list                   print the scenario ids and exit
//
// The iomux build (dist/ and build/Release/iomux.node) is copied into
// benchmarks/.work/ at start, so a rebuild while the suite runs cannot mix
// two builds in one report.
//
// Exit code: 0 when every selected scenario ran, 1 when a run failed (or
// iomux does not load), 2 on a usage or environment error.

const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const U = require('./lib/util');
const {
  CANDIDATES, TIMER_CANDIDATES, scenarios, loadRun, openLoad, measureLoad, closeLoad, idleRun, microRun,
} = require('./lib/scenarios');
const { ECHO_CLIENT_C, HTTP_CHECK_C } = require('./lib/loadgen');
const { C_SERVER_C } = require('./lib/server');
const { summarizeScenario, renderMarkdown, renderSvg } = require('./lib/report');

const ROOT = path.resolve(__dirname, '..');
const SCENARIO_IDS = ['keepalive', 'pipeline', 'churn', 'express', 'fastify', 'echo', 'bulk', 'proxy', 'proxy-bulk', 'idle', 'idle-silent',
  'idle-http', 'idle-proxy', 'timers', 'timeouts', 'cache', 'cluster', 'zmq', 'sync', 'stages'];
const { runCluster } = require('./lib/cluster');

// ---------------------------------------------------------------------------
// Command line

function parseArgs(argv) {
  const opts = {
    quick: false,
    only: SCENARIO_IDS.slice(),
    candidates: Object.keys(CANDIDATES),
    rounds: 3,
    duration: 3,
    phases: 3,
    warmup: 1,
    connections: 100,
    pipeline: 16,
    idleConnections: 15000,
    idleProxyConnections: 5000,
    timeoutConnections: 15000,
    timerPairs: 1000000,
    echoSize: 64,
    loadgen: null,
    strace: true,
    straceDuration: 1,
    pin: true,
    out: path.join(__dirname, 'results'),
    baseDist: null,
  };
  const explicit = new Set();
  const num = (name, v, min) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) usage(`${name} expects a number >= ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  const list = (v, allowed, what) => {
    const xs = v.split(',').map((s) => s.trim()).filter(Boolean);
    for (const x of xs) if (!allowed.includes(x)) usage(`unknown ${what} ${x} (one of ${allowed.join(', ')})`);
    if (!xs.length) usage(`--${what}s needs at least one name`);
    return xs;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) usage(`${flag} needs a value`);
      return argv[++i];
    };
    const set = (key, v) => {
      opts[key] = v;
      explicit.add(key);
    };
    switch (flag) {
      case '--quick': opts.quick = true; break;
      case '--only': opts.only = list(value(), SCENARIO_IDS, 'scenario'); break;
      case '--candidates': opts.candidates = list(value(), Object.keys(CANDIDATES), 'candidate'); break;
      case '--rounds': set('rounds', Math.floor(num(flag, value(), 1))); break;
      case '--duration': set('duration', num(flag, value(), 1)); break;
      case '--phases': set('phases', Math.floor(num(flag, value(), 1))); break;
      case '--warmup': set('warmup', num(flag, value(), 0)); break;
      case '--connections': set('connections', Math.floor(num(flag, value(), 1))); break;
      case '--pipeline': set('pipeline', Math.floor(num(flag, value(), 1))); break;
      case '--idle-connections': set('idleConnections', Math.floor(num(flag, value(), 1))); break;
      case '--idle-proxy-connections': set('idleProxyConnections', Math.floor(num(flag, value(), 1))); break;
      case '--timeout-connections': set('timeoutConnections', Math.floor(num(flag, value(), 1))); break;
      case '--timer-pairs': set('timerPairs', Math.floor(num(flag, value(), 1))); break;
      case '--strace-duration': set('straceDuration', num(flag, value(), 1)); break;
      case '--no-strace': opts.strace = false; break;
      case '--no-pin': opts.pin = false; break;
      case '--out': opts.out = path.resolve(value()); break;
      case '--base-dist': {
        opts.baseDist = path.resolve(value());
        if (!fs.existsSync(path.join(opts.baseDist, 'http', 'node.js'))) usage(`--base-dist: no built iomux dist/ at ${opts.baseDist}`);
        break;
      }
      case '--loadgen': {
        const v = value();
        if (v !== 'wrk' && v !== 'autocannon') usage('--loadgen must be wrk or autocannon');
        opts.loadgen = v;
        break;
      }
      case '--list':
        process.stdout.write(SCENARIO_IDS.join('\n') + '\n');
        process.exit(0);
        break;
      case '-h':
      case '--help':
        process.stdout.write(helpText());
        process.exit(0);
        break;
      default:
        usage(`unknown argument ${a}`);
    }
  }
  if (opts.quick) {
    const q = { rounds: 1, duration: 1, phases: 1, warmup: 1, idleConnections: 2000, idleProxyConnections: 1000, timeoutConnections: 2000, timerPairs: 100000, straceDuration: 1 };
    for (const [k, v] of Object.entries(q)) if (!explicit.has(k)) opts[k] = v;
  }
  // The generators take whole seconds.
  opts.duration = Math.max(1, Math.round(opts.duration));
  // The load rows measure `phases` phases of `phaseS` seconds per candidate and round.
  opts.phases = Math.min(opts.phases, opts.duration);
  opts.phaseS = Math.max(1, Math.round(opts.duration / opts.phases));
  opts.straceDuration = Math.max(1, Math.round(opts.straceDuration));
  opts.warmup = Math.round(opts.warmup);
  return opts;
}

// The comment block at the top of this file.
function helpText() {
  const lines = fs.readFileSync(__filename, 'utf8').split('\n');
  const start = lines.findIndex((l) => l.startsWith('//'));
  const out = [];
  for (let i = start; i < lines.length && lines[i].startsWith('//'); i++) out.push(lines[i].slice(3));
  return out.join('\n') + '\n';
}

function usage(msg) {
  process.stderr.write(`bench: ${msg}\n(see node benchmarks/run.js --help)\n`);
  process.exit(2);
}

// ---------------------------------------------------------------------------
// Children die with the runner.

process.on('exit', () => {
  U.killAll();
  removeWorkDir();
});
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    process.stderr.write(`\nbench: ${sig}, stopping children\n`);
    U.killAll();
    process.exit(130);
  });
}
process.on('uncaughtException', (err) => {
  process.stderr.write(`bench: ${err && err.stack}\n`);
  U.killAll();
  process.exit(1);
});
process.on('unhandledRejection', (err) => {
  process.stderr.write(`bench: ${err && err.stack}\n`);
  U.killAll();
  process.exit(1);
});

// ---------------------------------------------------------------------------
// Environment

let workDir = null;

function removeWorkDir() {
  if (!workDir) return;
  try {
    fs.rmSync(workDir, { recursive: true, force: true });
  } catch (_) {
    // Best effort.
  }
  workDir = null;
}

function findAutocannon() {
  const override = process.env.IOMUX_BENCH_AUTOCANNON;
  if (override) return fs.existsSync(override) ? path.resolve(override) : null;
  try {
    const pkgPath = require.resolve('autocannon/package.json', { paths: [ROOT] });
    const pkg = JSON.parse(fs.readFileSync(pkgPath, 'utf8'));
    const bin = typeof pkg.bin === 'string' ? pkg.bin : pkg.bin && pkg.bin.autocannon;
    const p = path.join(path.dirname(pkgPath), bin || 'autocannon.js');
    return fs.existsSync(p) ? p : null;
  } catch (_) {
    return null;
  }
}

// Finds haproxy, or installs it (apt-get, as root); null when it runs, else why not.
function ensureHaproxy(log) {
  const runs = () => spawnSync('haproxy', ['-v'], { stdio: 'ignore' }).status === 0;
  if (runs()) return null;
  if (typeof process.getuid !== 'function' || process.getuid() !== 0 ||
      spawnSync('apt-get', ['--version'], { stdio: 'ignore' }).status !== 0) {
    return 'haproxy is not installed (apt-get install haproxy)';
  }
  log('bench: installing haproxy (apt-get install haproxy)');
  const install = () => spawnSync('apt-get', ['install', '-y', '-q', 'haproxy'],
    { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } }).status === 0;
  if (!install()) {
    spawnSync('apt-get', ['update', '-q'], { stdio: 'ignore' });
    install();
  }
  // The package starts a system service; the benchmark runs its own.
  spawnSync('sh', ['-c', 'command -v service >/dev/null && service haproxy stop'], { stdio: 'ignore' });
  return runs() ? null : 'haproxy could not be installed';
}

// Copies dist/ and the addon into the work dir (inside the repository, so
// addon/load.js's require('node-gyp-build') still resolves to node_modules/).
function snapshotIomux(dir) {
  const dist = path.join(ROOT, 'dist');
  if (!fs.existsSync(path.join(dist, 'index.js'))) {
    return { error: 'dist/index.js not found (build with `npx tsc -p .` and `npx node-gyp build`)' };
  }
  const snap = path.join(dir, 'iomux');
  fs.mkdirSync(path.join(snap, 'dist'), { recursive: true });
  fs.cpSync(dist, path.join(snap, 'dist'), { recursive: true, filter: (f) => !/\.(map|d\.ts)$/.test(f) });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(snap, 'package.json'));
  // dist/binding.js loads the addon through addon/load.js.
  fs.mkdirSync(path.join(snap, 'addon'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'addon', 'load.js'), path.join(snap, 'addon', 'load.js'));
  let copied = false;
  for (const sub of ['build/Release', 'build/Debug']) {
    const src = path.join(ROOT, sub);
    if (!fs.existsSync(src)) continue;
    const nodes = fs.readdirSync(src).filter((f) => f.endsWith('.node'));
    if (!nodes.length) continue;
    fs.mkdirSync(path.join(snap, sub), { recursive: true });
    for (const f of nodes) fs.copyFileSync(path.join(src, f), path.join(snap, sub, f));
    copied = true;
    break;
  }
  if (!copied && fs.existsSync(path.join(ROOT, 'prebuilds'))) {
    fs.cpSync(path.join(ROOT, 'prebuilds'), path.join(snap, 'prebuilds'), { recursive: true });
    copied = true;
  }
  if (!copied) return { error: 'no compiled addon in build/Release (build with `npx node-gyp build`)' };
  return { dist: path.join(snap, 'dist') };
}

// Loads the snapshot in a throwaway process with IOMUX_BACKEND=<backend>.
function probeBackend(distDir, backend) {
  const script = `
    const m = require(${JSON.stringify(distDir)});
    if (typeof m.createServer !== 'function') throw new Error('dist/index.js has no createServer()');
    process.stdout.write(JSON.stringify({
      backend: String(m.loop.backend),
      batching: m.loop.batching === true,
      run: typeof m.loop.run === 'function',
      stats: typeof m.loop.stats === 'function',
    }));
  `;
  const r = spawnSync(process.execPath, ['-e', script], {
    cwd: ROOT, encoding: 'utf8', timeout: 20000, env: { ...process.env, IOMUX_BACKEND: backend },
  });
  if (r.status === 0) {
    try {
      return { ok: true, ...JSON.parse(r.stdout) };
    } catch (_) {
      // Fall through.
    }
  }
  const msg = String(r.stderr || r.error || '').split('\n').find((l) => /Error/.test(l)) || `exit ${r.status}`;
  return { ok: false, error: msg.trim().replace(/^\S*Error: /, '') };
}

// ---------------------------------------------------------------------------
// Main

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const started = Date.now();
  if (process.platform !== 'linux') usage('the benchmark reads /proc and needs Linux');
  const log = (s) => process.stderr.write(s + '\n');

  const nproc = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  const taskset = U.which('taskset');
  const pin = opts.pin && !!taskset && nproc >= 2;
  const env = {
    root: ROOT,
    pin,
    pinned: (cpu, cmd, args) => (pin ? [taskset, ['-c', String(cpu), cmd, ...args]] : [cmd, args]),
    bash: U.which('bash'),
    strace: opts.strace ? U.which('strace') : null,
    clkTck: U.clockTicks(),
    duration: opts.duration,
    warmup: opts.warmup,
    straceDuration: opts.straceDuration,
    straceWarmup: opts.quick ? 0 : 1,
    loadgen: null,
    iomuxEnv: {},
    echoClient: null,
    cServer: null,
  };
  if (!taskset && opts.pin) log('bench: taskset not found: processes are not pinned');
  if (taskset && opts.pin && nproc < 2) log('bench: fewer than 2 CPUs: processes are not pinned');

  const selected = scenarios(opts).filter((sc) => opts.only.includes(sc.id));
  const wantCluster = opts.only.includes('cluster');
  const needHttp = wantCluster || selected.some((sc) => sc.group === 'http' || sc.id === 'proxy');
  const needC = selected.some((sc) => sc.group === 'tcp' || sc.cClient);
  // The C reference server, when a selected scenario has it as a candidate.
  const needCServer = opts.candidates.includes('c') && selected.some((sc) => sc.candidates.includes('c'));
  // The checking HTTP client of the framework rows (clients/http_check.c).
  const needCheck = selected.some((sc) => sc.checkClient);

  // HTTP load generator.
  const wrk = U.which('wrk');
  const autocannon = findAutocannon();
  if (needHttp) {
    if (opts.loadgen === 'wrk' && !wrk) usage('--loadgen wrk: wrk is not installed (apt-get install wrk)');
    if (opts.loadgen === 'autocannon' && !autocannon) usage('--loadgen autocannon: autocannon not found (npm install)');
    if ((opts.loadgen || (wrk ? 'wrk' : 'autocannon')) === 'wrk' && wrk) {
      const v = U.toolVersion(wrk, ['-v']);
      const m = v && /(\d+\.\d+(?:\.\d+)?)/.exec(v);
      env.loadgen = { name: 'wrk', path: wrk, version: m ? `wrk ${m[1]}` : v };
    } else if (autocannon) {
      let version = null;
      try {
        version = 'autocannon ' + JSON.parse(fs.readFileSync(path.join(path.dirname(autocannon), 'package.json'), 'utf8')).version;
      } catch (_) {
        // Unknown version.
      }
      env.loadgen = { name: 'autocannon', path: autocannon, version };
      if (!opts.loadgen) log('bench: wrk not installed: using autocannon (apt-get install wrk for the usual generator)');
    } else {
      usage('no HTTP load generator: install wrk (apt-get install wrk) or run npm install for autocannon');
    }
  }

  fs.mkdirSync(path.join(__dirname, '.work'), { recursive: true });
  workDir = fs.mkdtempSync(path.join(__dirname, '.work', 'run-'));

  // The C compiler, for the C client and the C reference server. Without
  // the client the TCP rows fail; without the server its rows are skipped.
  const cc = needC || needCServer || needCheck ? U.which('cc') || U.which('gcc') || U.which('clang') : null;
  let ccError = null;
  if (needC) {
    const built = U.buildC(cc, ECHO_CLIENT_C, workDir);
    env.echoClient = built.exe;
    ccError = built.error;
    if (ccError) log(`bench: ${ccError}`);
  }
  if (needCheck) {
    const built = U.buildC(cc, HTTP_CHECK_C, workDir);
    env.httpCheck = built.exe;
    env.httpCheckError = built.error;
    if (built.error) log(`bench: ${built.error}`);
  }
  let cServerError = null;
  if (needCServer) {
    const built = U.buildC(cc, C_SERVER_C, workDir);
    env.cServer = built.exe;
    cServerError = built.error;
    if (cServerError) log(`bench: C reference server not available: ${cServerError}`);
  }

  // The iomux build, and which backends load.
  const snap = snapshotIomux(workDir);
  const backends = {};
  let iomuxError = snap.error || null;
  let probe = null;
  if (!iomuxError) {
    env.iomuxEnv = { IOMUX_BENCH_DIST: snap.dist };
    env.baseDist = opts.baseDist;
    probe = probeBackend(snap.dist, 'epoll');
    backends.epoll = probe.ok ? true : probe.error;
    if (!probe.ok) iomuxError = `iomux does not load with IOMUX_BACKEND=epoll: ${probe.error}`;
    const uring = probeBackend(snap.dist, 'io_uring');
    backends.io_uring = uring.ok ? true : uring.error;
    // Batched reads and writes (io_uring, whatever the backend): a property
    // of the kernel, reported with the backends.
    backends['batched I/O'] = probe.ok && probe.batching === true;
    log(`bench: iomux backends: epoll ${backends.epoll === true ? 'yes' : 'no'}, io_uring ${uring.ok ? 'yes' : `no (${uring.error})`}, ` +
      `batched I/O ${backends['batched I/O'] ? 'yes' : 'no'}`);
  }
  if (iomuxError) log(`bench: iomux not available: ${iomuxError}`);

  log(`bench: ${[...selected.map((s) => s.id), ...(wantCluster ? ['cluster'] : [])].join(', ')}; ${opts.rounds} round(s) x ${opts.phases} x ${opts.phaseS} s, warm-up ${opts.warmup} s` +
    `${env.loadgen ? `, ${env.loadgen.name}` : ''}, ${pin ? 'pinned (server CPU 0, generator CPU 1)' : 'not pinned'}` +
    `${opts.strace && !env.strace ? '; strace not installed: no syscall counts' : ''}`);

  // HAProxy, for the proxy rows: installed from the Debian package when absent.
  let haproxyError = null;
  if (selected.some((sc) => sc.candidates.some((id) => CANDIDATES[id] && CANDIDATES[id].haproxy && opts.candidates.includes(id)))) {
    haproxyError = ensureHaproxy(log);
  }

  const failures = [];
  const reportScenarios = [];
  for (const sc of selected) {
    const table = sc.kind === 'micro' ? TIMER_CANDIDATES : CANDIDATES;
    const cands = [];
    const skipped = [];
    for (const id of sc.candidates) {
      const c = table[id];
      if (sc.kind !== 'micro' && !opts.candidates.includes(id)) continue;
      if (sc.kind === 'micro' && id === 'iomux' && !opts.candidates.some((x) => x.startsWith('iomux'))) continue;
      if (sc.kind === 'micro' && id === 'node' && !opts.candidates.includes('net')) continue;
      if (c.iomux && iomuxError) {
        skipped.push({ id, label: c.label, reason: iomuxError });
        failures.push(`${sc.id}/${id}: ${iomuxError}`);
      } else if (c.haproxy && haproxyError) {
        skipped.push({ id, label: c.label, reason: haproxyError });
      } else if (c.native && cServerError) {
        skipped.push({ id, label: c.label, reason: cServerError });
      } else if (c.uring && backends.io_uring !== true) {
        skipped.push({ id, label: c.label, reason: `io_uring backend not available: ${backends.io_uring || 'not probed'}` });
      } else if (c.standalone && probe && !probe.run) {
        skipped.push({ id, label: c.label, reason: 'iomux.loop.run() is missing' });
        failures.push(`${sc.id}/${id}: loop.run() missing`);
      } else {
        cands.push({ ...c });
      }
    }
    const entry = {
      id: sc.id,
      title: sc.title,
      shortTitle: sc.shortTitle,
      kind: sc.kind,
      unit: sc.unit || null,
      baselines: sc.baselines,
      description: sc.describe(env),
      candidates: cands,
      skipped,
      notes: sc.notes.slice(),
      runs: [],
      strace: null,
    };
    reportScenarios.push(entry);
    const clientError = (sc.group === 'tcp' || sc.cClient) ? ccError : sc.checkClient ? env.httpCheckError : null;
    if (clientError) {
      failures.push(`${sc.id}: ${clientError}`);
      entry.notes.push(`Not run: ${clientError}`);
      log(`bench: ${sc.id}: not run: ${clientError}`);
      entry.summary = summarizeScenario(entry);
      continue;
    }
    log(`bench: == ${sc.id}: ${sc.title}`);
    for (let round = 1; round <= opts.rounds; round++) {
      // Each round starts one candidate later (A B C, B C A, C A B, ...), so
      // no candidate always runs right after the same one (after a churn
      // run the kernel holds tens of thousands of TIME_WAIT sockets).
      const shift = (round - 1) % Math.max(1, cands.length);
      const order = [...cands.slice(shift), ...cands.slice(0, shift)];
      const done = (c, r, t) => {
        entry.runs.push(r);
        if (r.backend && !c.backend) c.backend = r.backend;
        log(`bench:   ${sc.id} round ${round}/${opts.rounds} ${c.id}: ${describeRun(sc, r)} [${((Date.now() - t) / 1000).toFixed(1)} s]`);
        if (!r.ok) failures.push(`${sc.id}/${c.id} round ${round}: ${r.error.split('\n')[0]}`);
      };
      if (sc.kind === 'load') {
        // Every candidate's server up and warm first, then the timed phases
        // in turns (A B C A B C ...): a drift of the machine's speed over
        // the round then weighs on every candidate alike.
        const t = Date.now();
        const open = [];
        for (const c of order) open.push(await openLoad(env, sc, c, round));
        for (let k = 0; k < opts.phases; k++) {
          for (const h of open) await measureLoad(env, h, opts.phaseS);
        }
        for (let i = 0; i < open.length; i++) done(order[i], await closeLoad(env, open[i]), t);
        continue;
      }
      for (const c of order) {
        const t = Date.now();
        const r = sc.kind === 'idle' ? await idleRun(env, sc, c, round, opts) : await microRun(env, sc, c, round, opts);
        done(c, r, t);
      }
    }
    if (sc.kind === 'load' && opts.strace) {
      entry.strace = { duration: opts.straceDuration, runs: [] };
      if (!env.strace) {
        entry.strace.skipped = 'strace is not installed (apt-get install strace)';
      } else {
        for (const c of cands) {
          const r = await loadRun(env, sc, c, 0, { strace: true });
          entry.strace.runs.push(r);
          if (r.ok) {
            log(`bench:   ${sc.id} strace ${c.id}: ${U.fmt(r.groups.total / r.sysUnits, 2)} syscalls per ${sc.unit.sys} ` +
              `(${U.fmt(r.sysUnits, 0)} traced)`);
          } else {
            log(`bench:   ${sc.id} strace ${c.id}: FAILED: ${r.error}`);
            failures.push(`${sc.id}/${c.id} strace: ${r.error.split('\n')[0]}`);
          }
        }
      }
    }
    entry.summary = summarizeScenario(entry);
  }

  // The multi-process scenario has its own runner and table.
  let cluster = null;
  if (wantCluster) {
    log('bench: == cluster: HTTP on 2 worker processes: iomux supervisor, node:cluster, reusePort x2');
    if (iomuxError) {
      failures.push(`cluster: ${iomuxError}`);
    } else {
      cluster = await runCluster(env, opts, log);
      failures.push(...cluster.failures);
    }
  }

  // The zmq scenario has its own runner (peer processes of three kinds).
  let zmqResult = null;
  if (opts.only.includes('zmq')) {
    log('bench: == zmq: ZeroMQ, iomux.zmq against zeromq.js and C/libzmq');
    try {
      zmqResult = await require('./zmq/bench').run({
        quick: opts.quick, rounds: opts.rounds, pin: opts.pin, workDir, log,
        iomuxEnv: iomuxError ? {} : env.iomuxEnv,
        windowMs: opts.quick ? 1000 : Math.max(1000, opts.duration * 1000),
      });
      failures.push(...zmqResult.failures);
    } catch (err) {
      failures.push(`zmq: ${err.message}`);
      log(`bench: zmq: FAILED: ${err.stack || err}`);
    }
  }

  // The pipeline scenario has its own runner (a server of several processes).
  let stagesResult = null;
  if (opts.only.includes('stages')) {
    log('bench: == stages: iomux.pipeline against inline iomux.http and a zeromq.js pipeline');
    if (iomuxError) {
      failures.push(`stages: ${iomuxError}`);
    } else {
      try {
        stagesResult = await require('./pipeline/bench').run({
          quick: opts.quick, rounds: opts.rounds, duration: opts.quick ? 1 : opts.duration, pin: opts.pin, log, iomuxEnv: env.iomuxEnv,
        });
        failures.push(...stagesResult.failures);
      } catch (err) {
        failures.push(`stages: ${err.message}`);
        log(`bench: stages: FAILED: ${err.stack || err}`);
      }
    }
  }

  const report = {
    startedAt: new Date(started).toISOString(),
    finishedAt: new Date().toISOString(),
    elapsedS: (Date.now() - started) / 1000,
    machine: {
      cpu: os.cpus()[0] ? os.cpus()[0].model.trim() : 'unknown',
      nproc,
      memGiB: Math.round(os.totalmem() / 2 ** 30),
      kernel: os.release(),
      node: process.version,
      clkTck: env.clkTck,
      backends,
      iomuxBackend: probe && probe.ok ? probe.backend : null,
      loadAvgStart: null,
      loadAvgEnd: U.loadAvg(),
    },
    config: {
      quick: opts.quick,
      scenarios: selected.map((s) => s.id),
      rounds: opts.rounds,
      duration: opts.duration,
      phases: opts.phases,
      phaseS: opts.phaseS,
      warmup: opts.warmup,
      connections: opts.connections,
      pipeline: opts.pipeline,
      echoSize: opts.echoSize,
      idleConnections: opts.idleConnections,
      idleProxyConnections: opts.idleProxyConnections,
      timeoutConnections: opts.timeoutConnections,
      timerPairs: opts.timerPairs,
      loadgen: env.loadgen ? env.loadgen.name : null,
      loadgenVersion: env.loadgen ? env.loadgen.version : null,
      loadgenThreads: env.loadgen && env.loadgen.name === 'wrk' ? 1 : null,
      strace: opts.strace && !!env.strace,
      straceDuration: opts.straceDuration,
      pinned: pin,
    },
    scenarios: reportScenarios,
    cluster: cluster ? cluster.json : null,
    zmq: zmqResult ? { config: zmqResult.config, summary: zmqResult.summary, skipped: zmqResult.skipped } : null,
    stages: stagesResult ? { config: stagesResult.config, summary: stagesResult.summary, targets: stagesResult.targets } : null,
    failures,
  };
  report.machine.loadAvgStart = startLoad;

  // The shared-memory cache: no server, its own runner and table.
  let cacheMd = '';
  if (opts.only.includes('cache')) {
    const cacheBench = require('./micro/cache');
    log('bench: == cache: SharedCache against lmdb, Redis and a Map');
    try {
      const out = await cacheBench.main({
        duration: opts.quick ? 300 : opts.duration * 1000, rounds: opts.rounds, json: null, pin: opts.pin, quick: opts.quick,
      });
      report.cache = out;
      cacheMd = cacheBench.render(out);
      report.finishedAt = new Date().toISOString();
      report.elapsedS = (Date.now() - started) / 1000;
    } catch (e) {
      failures.push(`cache: ${e.message.split('\n')[0]}`);
      log(`bench:   cache FAILED: ${e.message}`);
    }
  }

  // The cross-process primitives: no server, its own runner and table.
  let syncMd = '';
  if (opts.only.includes('sync')) {
    const syncBench = require('./micro/sync');
    log('bench: == sync: semaphores, mutexes, shared variables across processes');
    try {
      const out = await syncBench.main({ quick: opts.quick, rounds: opts.rounds });
      report.sync = out;
      syncMd = syncBench.render(out);
      report.finishedAt = new Date().toISOString();
      report.elapsedS = (Date.now() - started) / 1000;
    } catch (e) {
      failures.push(`sync: ${e.message.split('\n')[0]}`);
      log(`bench:   sync FAILED: ${e.message}`);
    }
  }

  const md = renderMarkdown(report) + (cacheMd ? '\n\n' + cacheMd : '') + (syncMd ? '\n\n' + syncMd : '') + (cluster ? `\n\n${cluster.markdown}\n` : '')
    + (zmqResult ? '\n\n' + zmqResult.markdown : '') + (stagesResult ? '\n\n' + stagesResult.markdown : '');
  const svg = renderSvg(report);
  process.stdout.write('\n' + md + '\n');
  fs.mkdirSync(opts.out, { recursive: true });
  U.writeAtomic(path.join(opts.out, 'latest.md'), md + '\n');
  U.writeAtomic(path.join(opts.out, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  U.writeAtomic(path.join(opts.out, 'latest.svg'), svg);
  log(`bench: wrote ${path.relative(process.cwd(), path.join(opts.out, 'latest.md'))}, latest.json and latest.svg ` +
    `in ${report.elapsedS.toFixed(1)} s`);
  if (failures.length) {
    log(`bench: ${failures.length} failure(s):`);
    for (const f of failures) log(`bench:   ${f}`);
    return 1;
  }
  return 0;
}

function describeRun(sc, r) {
  if (!r.ok) return `FAILED: ${r.error}`;
  if (sc.kind === 'load') {
    return `${U.fmt(r.rate)} ${sc.unit.rate}, ${U.fmt(r.cpuPerUnit)} ${sc.unit.cpu}, server ${U.fmt(r.serverCpuPct, 0)}% CPU, ` +
      `generator ${U.fmt(r.genCpuPct, 0)}%, other ${U.fmt(r.otherCpuPct, 0)}%` + (r.notes.length ? ` (${r.notes.join('; ')})` : '');
  }
  if (sc.kind === 'idle') {
    return `${U.fmt(r.kibPerConn, 2)} KiB/conn RSS, heap ${U.fmt(r.heapBytesPerConn, 0)} B/conn, RSS ${U.fmt(r.rssKb / 1024, 1)} MiB`;
  }
  return `${U.fmt(r.cpuNsPerPair, 0)} CPU ns/pair, ${U.fmt(r.nsPerPair, 0)} wall ns/pair` +
    (r.syscalls != null ? `, ${r.syscalls} syscalls` : '');
}

const startLoad = U.loadAvg();

main().then((code) => {
  U.killAll();
  process.exitCode = code;
});
