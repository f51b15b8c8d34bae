'use strict';
// The scenarios of `npm run bench`, and how one run of each is measured.
//
// A "load" scenario starts a fresh server for every run (pinned to CPU 0),
// connects its generator (pinned to CPU 1), warms up, then measures one timed
// phase: units of work counted by the generator, the server's utime+stime
// from /proc/<pid>/stat, the machine's busy time from /proc/stat, the
// server's RSS and, for iomux, the change of loop.stats(). The same run with
// strace attached (shorter, untimed) counts syscalls per unit.

const path = require('path');
const { spawn } = require('child_process');
const { startServer } = require('./server');
const { httpDriver, echoDriver, startEchoClient } = require('./loadgen');
const { attach, groupCounts } = require('./strace');
const {
  track, waitExit, sleep, readProcCpuTicks, readMachineTicks, readRssKb, diffNumbers, sumNumbers, total, indent, median,
} = require('./util');

const SERVERS = path.join(__dirname, '..', 'servers');
const HTTP_SERVER = path.join(SERVERS, 'http-hello.js');
const FRAMEWORK_SERVER = path.join(SERVERS, 'http-framework.js');
const TCP_SERVER = path.join(SERVERS, 'tcp.js');
const PROXY_SERVER = path.join(SERVERS, 'proxy.js');
const TIMERS_MICRO = path.join(__dirname, '..', 'micro', 'timers.js');

// Server candidates. IOMUX_BACKEND is set for every iomux candidate, so a
// row's backend is never a default that changed underneath.
const CANDIDATES = {
  http: { id: 'http', label: 'node:http', impl: 'http', env: { IOMUX_BACKEND: null } },
  net: { id: 'net', label: 'node:net', impl: 'net', env: { IOMUX_BACKEND: null } },
  iomux: { id: 'iomux', label: 'iomux', impl: 'iomux', iomux: true, env: { IOMUX_BACKEND: 'epoll' } },
  'iomux-standalone': {
    id: 'iomux-standalone', label: 'iomux standalone', impl: 'iomux-standalone', iomux: true, standalone: true,
    env: { IOMUX_BACKEND: 'epoll' },
  },
  'iomux-uring': {
    id: 'iomux-uring', label: 'iomux io_uring', impl: 'iomux', iomux: true, uring: true,
    env: { IOMUX_BACKEND: 'io_uring' },
  },
  'iomux-http': { id: 'iomux-http', label: 'iomux http', impl: 'iomux-http', iomux: true, env: { IOMUX_BACKEND: 'epoll' } },
  'iomux-http-uring': {
    id: 'iomux-http-uring', label: 'iomux http io_uring', impl: 'iomux-http', iomux: true, uring: true,
    env: { IOMUX_BACKEND: 'io_uring' },
  },
  // The reference: servers/c_epoll.c, compiled at bench time, the same
  // application work as the JS servers in a minimal C epoll loop: the floor
  // that loopback TCP sets for any server on this machine.
  c: { id: 'c', label: 'C epoll (reference)', impl: 'c', native: true, env: {} },
};
// The proxy rows: three TCP proxies in front of the same backend.
Object.assign(CANDIDATES, {
  'proxy-net': { id: 'proxy-net', label: 'node:net proxy', impl: 'net', env: { IOMUX_BACKEND: null } },
  'proxy-iomux': { id: 'proxy-iomux', label: 'iomux proxy', impl: 'iomux', iomux: true, env: { IOMUX_BACKEND: 'epoll' } },
  // As the iomux-proxy command runs it: loop.run(), the core's wait the only poll.
  'proxy-iomux-standalone': {
    id: 'proxy-iomux-standalone', label: 'iomux proxy standalone', impl: 'iomux-standalone', iomux: true, standalone: true,
    env: { IOMUX_BACKEND: 'epoll' },
  },
  'proxy-haproxy': { id: 'proxy-haproxy', label: 'HAProxy', impl: 'haproxy', haproxy: true, env: { IOMUX_BACKEND: null } },
});
// The framework rows: the same node:http application (Express, Fastify) on
// node's sockets and, through serveNode(), on iomux's.
CANDIDATES['iomux-node'] = {
  id: 'iomux-node', label: 'iomux serveNode', impl: 'iomux-node', iomux: true, env: { IOMUX_BACKEND: 'epoll' },
};
// With --base-dist DIR, the same application on serveNode() from another
// build (its dist/ directory): two builds measured in the same rounds.
CANDIDATES['iomux-node-base'] = {
  id: 'iomux-node-base', label: 'iomux serveNode (base build)', impl: 'iomux-node', iomux: true, env: { IOMUX_BACKEND: 'epoll' },
};
const FRAMEWORK_CANDIDATES = ['http', 'iomux-node'];
const PROXY_CANDIDATES = ['proxy-net', 'proxy-iomux', 'proxy-iomux-standalone', 'proxy-haproxy'];
const TCP_CANDIDATES = ['net', 'iomux', 'iomux-standalone', 'iomux-uring'];
// The HTTP rows also compare the two full HTTP servers: node:http and iomux.http.
const HTTP_CANDIDATES = ['http', ...TCP_CANDIDATES, 'iomux-http', 'iomux-http-uring'];
// The C reference row closes the HTTP, echo and bulk tables (not idle,
// timers, timeouts or the proxies: it has no idle timeouts, no V8 heap).
const WITH_C = (ids) => [...ids, 'c'];

// Timer micro-benchmark candidates (one process each, no server).
const TIMER_CANDIDATES = {
  node: { id: 'node', label: 'node setTimeout', kind: 'node', env: { IOMUX_BACKEND: null } },
  iomux: { id: 'iomux', label: 'iomux loop.setTimeout', kind: 'iomux', iomux: true, env: { IOMUX_BACKEND: 'epoll' } },
};

// Units: `scale` base units make one displayed unit (bytes per GB, ...);
// cpuScale turns CPU seconds per displayed unit into the displayed CPU unit.
const UNITS = {
  req: { one: 'req', rate: 'req/s', cpu: 'µs/req', scale: 1, cpuScale: 1e6, sys: 'request', sysPlural: 'requests', sysScale: 1 },
  conn: { one: 'conn', rate: 'conn/s', cpu: 'µs/conn', scale: 1, cpuScale: 1e6, sys: 'connection', sysPlural: 'connections', sysScale: 1 },
  msg: { one: 'msg', rate: 'msg/s', cpu: 'µs/msg', scale: 1, cpuScale: 1e6, sys: 'message', sysPlural: 'messages', sysScale: 1 },
  gb: { one: 'GB', rate: 'GB/s', cpu: 's/GB', scale: 1e9, cpuScale: 1, sys: '64 KiB', sysPlural: '64 KiB chunks', sysScale: 65536 },
};

// How a candidate's server starts: `node <script> <impl> <port> <mode>`, or
// for the C reference `c_epoll <kind> <port> <mode>` (env.cServer, built at
// the start of the run).
function serverSpec(cand, env, script, kind, mode) {
  if (cand.native) {
    if (!env.cServer) throw new Error('the C reference server was not built');
    return { exe: env.cServer, impl: kind, args: [mode] };
  }
  return { script, impl: cand.impl, args: [mode] };
}

// The idle rows: servers holding many connections that stay open and quiet,
// memory per connection. Real idle connections have carried traffic (a
// keep-alive client between requests, a pooled upstream), so the main rows
// make every connection carry one exchange before the reading; the silent
// row keeps the figure for connections that never sent a byte.
const GC_POLICY = 'every candidate runs with `--expose-gc` and its reading is taken after two full `global.gc()` ' +
  '(HAProxy: none, it has no GC); no other memory flag (`--max-semi-space-size` and the like) for either';
function idleScenarios(cfg) {
  const n = cfg.idleConnections;
  const np = cfg.idleProxyConnections;
  const count = (k) => k.toLocaleString('en-US');
  const idle = (o) => ({
    kind: 'idle',
    group: o.group || 'tcp',
    cClient: true, // the C client opens and holds the connections
    notes: [],
    ...o,
    describe: () => `C client opens ${count(o.idle.connections)} connections in batches of 500${o.to}; ` + o.exchangeText +
      ', each batch complete before the next opens. RSS, V8 heap and external memory are read before the first batch ' +
      'and 500 ms after the last; per connection is the difference over the count. ' + GC_POLICY +
      '. Client and server each stay under the 20,000-descriptor limit',
  });
  return [
    idle({
      id: 'idle',
      title: `${count(n)} idle connections after one echo each: server memory per connection`,
      shortTitle: `${count(n)} idle conns, after traffic`,
      candidates: ['net', 'iomux', 'iomux-uring'],
      baselines: ['net'],
      server: (cand) => ({ script: TCP_SERVER, impl: cand.impl, args: ['echo'] }),
      idle: { connections: n, exchange: 'echo' },
      to: ' to the echo server',
      exchangeText: 'each new connection sends one byte and reads the echo, then stays open and silent',
    }),
    idle({
      id: 'idle-silent',
      title: `${count(n)} idle connections that never sent a byte: server memory per connection`,
      shortTitle: `${count(n)} idle conns, silent`,
      candidates: ['net', 'iomux', 'iomux-uring'],
      baselines: ['net'],
      server: (cand) => ({ script: TCP_SERVER, impl: cand.impl, args: ['echo'] }),
      idle: { connections: n, exchange: null },
      to: ' to the echo server',
      exchangeText: 'no byte is ever sent (the runner waits until the server counts each batch as open)',
    }),
    idle({
      id: 'idle-http',
      title: `${count(n)} idle keep-alive HTTP connections after one request each: server memory per connection`,
      shortTitle: `${count(n)} idle HTTP keep-alive conns`,
      group: 'http',
      candidates: ['http', 'iomux-http', 'iomux-http-uring'],
      baselines: ['http'],
      server: (cand) => ({ script: HTTP_SERVER, impl: cand.impl, args: ['idle'] }),
      idle: { connections: n, exchange: 'http' },
      to: ' to the hello-world HTTP server (keep-alive timeout 10 minutes on both servers)',
      exchangeText: 'each new connection sends one keep-alive `GET /` and reads the whole response, then stays open and silent',
    }),
    idle({
      id: 'idle-proxy',
      title: `${count(np)} idle proxied connections after one echo each: proxy memory per client connection (with its upstream)`,
      shortTitle: `${count(np)} idle proxied conns`,
      candidates: ['proxy-net', 'proxy-iomux', 'proxy-haproxy'],
      baselines: ['proxy-haproxy', 'proxy-net'],
      server: (cand) => ({ script: PROXY_SERVER, impl: cand.impl, args: [] }),
      idle: { connections: np, exchange: 'echo', backend: true },
      to: ' to the TCP proxy (CPU 0), which opens one upstream connection for each to the iomux echo server (CPU 1)',
      exchangeText: 'each new connection sends one byte through the proxy and reads the echo, then stays open and silent ' +
        '(the proxy holds the client connection and its upstream connection); HAProxy\'s RSS is read from /proc',
    }),
  ];
}

function scenarios(cfg) {
  const http = (id, title, shortTitle, opts) => ({
    id,
    title,
    shortTitle,
    kind: 'load',
    group: 'http',
    candidates: WITH_C(HTTP_CANDIDATES),
    baselines: ['net', 'http'],
    unit: opts.close ? UNITS.conn : UNITS.req,
    server: (cand, env) => serverSpec(cand, env, HTTP_SERVER, 'http', opts.close ? 'close' : 'keepalive'),
    driver: (env, server) => httpDriver(env, server, { connections: cfg.connections, pipeline: opts.pipeline || 1, close: !!opts.close }),
    // Server-side count of units, for the strace run's per-unit numbers.
    serverUnits: (d) => (opts.close ? d.accepted : d.requests),
    describe: (env) => `${env.loadgen.version || env.loadgen.name}, ${cfg.connections} connections, ` +
      `pipelining ${opts.pipeline || 1}${opts.close ? ', `Connection: close` (one request per connection)' : ''}`,
    notes: opts.notes || [],
  });
  const framework = (id, name) => ({
    id,
    title: `${name}: a JSON route with a route parameter, on node:http and on serveNode()`,
    shortTitle: `${name} JSON route`,
    kind: 'load',
    group: 'http',
    candidates: cfg.baseDist ? [...FRAMEWORK_CANDIDATES, 'iomux-node-base'] : FRAMEWORK_CANDIDATES,
    baselines: ['http'],
    unit: UNITS.req,
    server: (cand) => ({ script: FRAMEWORK_SERVER, impl: cand.impl, args: [id] }),
    driver: (env, server) => httpDriver(env, server, { connections: cfg.connections, pipeline: 1, close: false, check: true }),
    serverUnits: (d) => d.requests,
    checkClient: true,
    describe: () => `C client (benchmarks/clients/http_check.c, epoll, one thread), ${cfg.connections} connections, keep-alive: ` +
      'GET /users/<n> for 16 values of n in turn, and every response parsed and checked (status 200, the JSON of its own n); ' +
      'a wrong or missing response, or a closed connection, fails the run. The client is written in C so that the server, ' +
      'not the client, saturates (check the generator column)',
    notes: [`benchmarks/servers/http-framework.js: the same ${name} application; "iomux serveNode" runs it unchanged with ` +
      '`serveNode(server, { takeOverListen: true })`, so its server\'s own listen() goes through iomux.'],
  });
  return [
    http('keepalive', 'HTTP/1.1 keep-alive hello world', 'HTTP keep-alive', {}),
    http('pipeline', `HTTP/1.1 keep-alive, ${cfg.pipeline} pipelined requests per write`, `HTTP pipelined ×${cfg.pipeline}`, {
      pipeline: cfg.pipeline,
      notes: ['wrk\'s latency percentiles are not meaningful with pipelining (it times batches) and are left out when it prints 0.'],
    }),
    http('churn', 'Connection churn: one request per connection, `Connection: close`', 'Connection churn', {
      close: true,
      notes: [
        'Every server reads `socket.remoteAddress` on each connection (as a logger would) and answers with ' +
        '`socket.write(response)` then `socket.destroy()` (the request was read whole, so the close sends a FIN); ' +
        'node:http closes on its own after a `Connection: close` response (with a `shutdown` first).',
        'The iomux servers listen with `deferAccept: true` (TCP_DEFER_ACCEPT: a connection is accepted with its request, ' +
        'read at once, so it costs one wakeup, not two), and so does the C reference; node:net and node:http have no such option. ' +
        'It matters in this row only: the other HTTP rows accept each connection once.',
        'In the strace window wrk keeps 100 connections open; those accepted but not yet closed when the window ends make ' +
        'the per-connection shutdown and close counts read a few percent under 1.',
      ],
    }),
    framework('express', 'Express'),
    framework('fastify', 'Fastify'),
    {
      id: 'echo',
      title: `TCP echo: ${cfg.echoSize}-byte ping-pong`,
      shortTitle: `TCP echo ${cfg.echoSize} B`,
      kind: 'load',
      group: 'tcp',
      candidates: WITH_C(TCP_CANDIDATES),
      baselines: ['net'],
      unit: UNITS.msg,
      server: (cand, env) => serverSpec(cand, env, TCP_SERVER, 'tcp', 'echo'),
      driver: (env, server) => echoDriver(env, server, 'echo', cfg.connections, cfg.echoSize),
      serverUnits: (d) => d.bytes / cfg.echoSize,
      describe: () => `C client (benchmarks/clients/echo_client.c, epoll, one thread), ${cfg.connections} connections, ` +
        `each sends ${cfg.echoSize} B and waits for the echo. The client is written in C so that it is not the bottleneck: ` +
        'its user-space cost is a read and a write per round trip, but loopback TCP costs the kernel about as much on the ' +
        'client\'s side as on the server\'s, so check its CPU % (generator column)',
      notes: [],
    },
    {
      id: 'bulk',
      title: 'Bulk: one connection streaming 64 KiB writes, server consumes',
      shortTitle: 'Bulk 64 KiB writes',
      kind: 'load',
      group: 'tcp',
      candidates: WITH_C(TCP_CANDIDATES),
      baselines: ['net'],
      unit: UNITS.gb,
      server: (cand, env) => serverSpec(cand, env, TCP_SERVER, 'tcp', 'sink'),
      driver: (env, server) => echoDriver(env, server, 'bulk', 1, 65536),
      serverUnits: (d) => d.bytes,
      describe: () => 'C client, 1 connection writing 64 KiB chunks as fast as the server reads; the server counts bytes. ' +
        'GB = 10⁹ bytes',
      notes: [],
    },
    {
      id: 'proxy',
      title: 'Proxy: HTTP/1.1 keep-alive hello world through a TCP proxy',
      shortTitle: 'Proxy keep-alive',
      kind: 'load',
      group: 'proxy',
      candidates: PROXY_CANDIDATES,
      baselines: ['proxy-net', 'proxy-haproxy'],
      unit: UNITS.req,
      backend: { script: HTTP_SERVER, impl: 'iomux', args: ['keepalive'] },
      server: (cand) => ({ script: PROXY_SERVER, impl: cand.impl, args: [] }),
      driver: (env, server) => httpDriver(env, server, { connections: cfg.connections, pipeline: 1, close: false }),
      describe: (env) => `${env.loadgen.version || env.loadgen.name}, ${cfg.connections} connections through the proxy (CPU 0) ` +
        'to the iomux hello-world server (benchmarks/servers/http-hello.js, on the generator\'s CPU 1); CPU per request is the proxy\'s',
      notes: ['node:net proxy: `client.pipe(upstream).pipe(client)` per connection. iomux proxy: `iomux.proxy.createProxy({ mode: ' +
        '\'tcp\' })` inside Node\'s loop; iomux proxy standalone: the same, then `loop.run()`, as the `iomux-proxy` command ' +
        'runs. HAProxy: `mode tcp`, one thread (benchmarks/servers/proxy.js writes its configuration).'],
    },
    {
      id: 'proxy-bulk',
      title: 'Proxy: one connection streaming 64 KiB writes through a TCP proxy',
      shortTitle: 'Proxy bulk',
      kind: 'load',
      group: 'proxy',
      candidates: PROXY_CANDIDATES,
      baselines: ['proxy-net', 'proxy-haproxy'],
      unit: UNITS.gb,
      cClient: true,
      backend: { script: TCP_SERVER, impl: 'iomux', args: ['sink'] },
      server: (cand) => ({ script: PROXY_SERVER, impl: cand.impl, args: [] }),
      driver: (env, server) => echoDriver(env, server, 'bulk', 1, 65536),
      describe: () => 'C client, 1 connection writing 64 KiB chunks through the proxy (CPU 0) to the iomux sink server ' +
        '(on the generator\'s CPU 1); CPU per GB is the proxy\'s. GB = 10⁹ bytes',
      notes: [],
    },
    ...idleScenarios(cfg),
    {
      id: 'timers',
      title: `Timers: ${cfg.timerPairs.toLocaleString('en-US')} schedule-and-cancel pairs`,
      shortTitle: 'Timer set+clear pairs',
      kind: 'micro',
      group: 'timers',
      candidates: ['node', 'iomux'],
      baselines: ['node'],
      describe: () => 'one process per run (pinned to CPU 0): `clearTimeout(setTimeout(fn, 1000))` against ' +
        '`loop.clearTimeout(loop.setTimeout(fn, 1000))`, one pair at a time, after a warm-up; one unrelated timer stays armed',
      notes: [],
    },
    {
      id: 'timeouts',
      title: `Idle timeouts: ${cfg.timeoutConnections.toLocaleString('en-US')} sockets, setTimeout refreshed on every read`,
      shortTitle: `Idle timeouts, ${cfg.timeoutConnections.toLocaleString('en-US')} sockets`,
      kind: 'load',
      group: 'tcp',
      candidates: TCP_CANDIDATES,
      baselines: ['net'],
      unit: UNITS.msg,
      server: (cand) => ({ script: TCP_SERVER, impl: cand.impl, args: ['timeout'] }),
      driver: (env, server) => echoDriver(env, server, 'echo', cfg.timeoutConnections, cfg.echoSize),
      serverUnits: (d) => d.bytes / cfg.echoSize,
      describe: () => `C client, ${cfg.timeoutConnections.toLocaleString('en-US')} connections in ${cfg.echoSize}-byte ping-pong; ` +
        'the echo server calls `socket.setTimeout(60000)` on each socket, so every read and write refreshes an idle timeout',
      notes: [],
    },
  ];
}

// ---------------------------------------------------------------------------
// One measured run of a load scenario, in three steps so that the runner can
// interleave candidates: openLoad() starts the server (and a proxy row's
// backend) and warms it up; measureLoad() times one phase of load and keeps
// its raw counters; closeLoad() folds the phases into the run's figures and
// stops the processes. loadRun() does the three in a row.

// Starts a candidate and warms it up. Never throws: a failure is left in
// run.error, and closeLoad() still cleans up.
async function openLoad(env, sc, cand, round, { strace = false } = {}) {
  const h = {
    run: { scenario: sc.id, candidate: cand.id, round, strace, ok: false, notes: [] },
    sc, cand, strace, server: null, backend: null, driver: null, phases: [],
  };
  try {
    const spec = sc.server(cand, env);
    if (sc.backend) {
      // The proxy rows: the backend shares the generator's CPU; the proxy is
      // what is measured, on the server CPU.
      h.backend = await startServer(env, {
        label: `${sc.id}/backend`, ...sc.backend, cpu: 1, extraEnv: { IOMUX_BACKEND: 'epoll', ...env.iomuxEnv },
      });
      spec.args = [...(spec.args || []), String(h.backend.port)];
    }
    const dist = cand.id === 'iomux-node-base' ? { IOMUX_BENCH_DIST: env.baseDist } : {};
    h.server = await startServer(env, { label: `${sc.id}/${cand.id}`, ...spec, extraEnv: { ...cand.env, ...env.iomuxEnv, ...dist } });
    h.run.backend = h.server.backend;
    h.driver = await sc.driver(env, h.server);
    if (h.driver.connectMs != null) h.run.connectMs = h.driver.connectMs;
    const warm = strace ? env.straceWarmup : env.warmup;
    if (warm > 0) await h.driver.warm(warm);
  } catch (err) {
    h.run.error = err.message;
  }
  return h;
}

// One timed phase of `seconds` on an opened candidate. A failure ends the run
// (run.error); later phases are skipped.
async function measureLoad(env, h, seconds) {
  if (h.run.error) return;
  const { server, backend, driver } = h;
  let tracer = null;
  try {
    const s0 = await server.snapshot();
    if (h.strace) tracer = await attach(env, server.cpuPid, `${h.sc.id}-${h.cand.id}`);
    const m0 = readMachineTicks();
    const cpu0 = readProcCpuTicks(server.cpuPid);
    const b0 = backend ? readProcCpuTicks(backend.cpuPid) : null;
    const t0 = process.hrtime.bigint();
    const r = await driver.timed(seconds);
    const cpu1 = readProcCpuTicks(server.cpuPid);
    const b1 = backend ? readProcCpuTicks(backend.cpuPid) : null;
    const m1 = readMachineTicks();
    const t1 = process.hrtime.bigint();
    const p = { r, wallS: Number(t1 - t0) / 1e9, rssKb: readRssKb(server.cpuPid) };
    if (cpu0 != null && cpu1 != null) p.cpuTicks = cpu1 - cpu0;
    if (b0 != null && b1 != null) p.backendTicks = b1 - b0;
    if (m0 && m1) p.machine = { busy: m1.busy - m0.busy, steal: m1.steal - m0.steal };
    if (tracer) {
      const summary = await tracer.detach();
      tracer = null;
      p.syscalls = summary.calls;
      p.syscallErrors = summary.errors;
    }
    const s1 = await server.snapshot();
    if (server.exited) throw new Error(`server died during the run: ${server.describeExit()}`);
    if (s0 && s1) {
      p.appDelta = diffNumbers(s0.app, s1.app);
      if (s0.loop && s1.loop) p.loopDelta = diffNumbers(s0.loop, s1.loop);
    }
    h.phases.push(p);
  } catch (err) {
    h.run.error = err.message;
  } finally {
    if (tracer) await tracer.abort();
  }
}

// Folds the timed phases into the run's figures, then stops the processes.
async function closeLoad(env, h) {
  const { run, sc, phases } = h;
  try {
    if (!run.error && !phases.length) run.error = 'no timed phase ran';
    if (!run.error) summarizePhases(env, sc, run, phases);
  } catch (err) {
    run.error = err.message;
  }
  if (h.driver) {
    try {
      await h.driver.close();
    } catch (_) {
      // The run already failed or is over.
    }
  }
  if (h.server) {
    const s = await h.server.stop();
    if (s.forced) run.notes.push('server ignored SIGTERM (killed)');
    else if (s.code !== 0 && run.ok) run.notes.push(`server exited with code ${s.code} signal ${s.signal}`);
  }
  if (h.backend) await h.backend.stop();
  return run;
}

function summarizePhases(env, sc, run, phases) {
  const rs = phases.map((p) => p.r);
  const wallS = total(phases, (p) => p.wallS);
  run.phases = phases.length;
  run.units = total(rs, (r) => r.units);
  run.durationS = total(phases, (p) => p.r.durationS || p.wallS);
  run.wallS = wallS;
  run.rssKb = phases[phases.length - 1].rssKb;
  // Latency percentiles do not add up: the median phase's stand for the run.
  const mid = (f) => median(rs.map(f));
  run.latencyMs = { p50: mid((r) => r.latencyMs && r.latencyMs.p50), p99: mid((r) => r.latencyMs && r.latencyMs.p99) };
  const hist = rs.filter((r) => r.latencyHistogram);
  if (hist.length) run.latencyHistogram = hist[hist.length - 1].latencyHistogram;
  run.errors = sumNumbers(rs.map((r) => r.errors || {}));
  if (run.errors && run.errors.timeout > 0) run.notes.push(`${run.errors.timeout} request timeouts`);
  run.appDelta = sumNumbers(phases.map((p) => p.appDelta));
  run.loopDelta = sumNumbers(phases.map((p) => p.loopDelta));
  if (!run.loopDelta) delete run.loopDelta;
  if (run.appDelta) run.serverUnits = sc.serverUnits ? sc.serverUnits(run.appDelta) : null;
  if (run.strace) {
    run.syscalls = sumNumbers(phases.map((p) => p.syscalls));
    run.syscallErrors = sumNumbers(phases.map((p) => p.syscallErrors));
    run.groups = groupCounts(run.syscalls);
    // Per unit from the server's own count over the same window.
    const units = run.serverUnits || run.units;
    run.sysUnits = units / sc.unit.sysScale;
    run.ok = true;
    return;
  }
  const u = sc.unit;
  run.rate = run.units / u.scale / run.durationS;
  const cpuTicks = total(phases, (p) => p.cpuTicks);
  if (cpuTicks != null) {
    run.serverCpuS = cpuTicks / env.clkTck;
    run.serverCpuPct = (100 * run.serverCpuS) / wallS;
    run.cpuPerUnit = (run.serverCpuS * u.cpuScale) / (run.units / u.scale);
  }
  const genCpuS = total(rs, (r) => r.genCpuS);
  if (genCpuS != null) {
    run.genCpuS = genCpuS;
    run.genCpuPct = (100 * run.genCpuS) / wallS;
    run.genCpuPerUnit = (run.genCpuS * u.cpuScale) / (run.units / u.scale);
  }
  const machine = sumNumbers(phases.map((p) => p.machine));
  if (machine) {
    // Everything else that ran meanwhile (other processes, this runner,
    // steal), in % of one CPU: a busy machine makes the numbers noisy.
    run.machineCpuPct = (100 * machine.busy) / env.clkTck / wallS;
    run.stealPct = (100 * machine.steal) / env.clkTck / wallS;
    // A proxy row's backend is part of the set-up, not other work.
    const backendTicks = total(phases, (p) => p.backendTicks);
    const backendPct = backendTicks != null ? (100 * backendTicks) / env.clkTck / wallS : 0;
    if (backendTicks != null) run.backendCpuPct = backendPct;
    if (run.serverCpuPct != null && run.genCpuPct != null) {
      run.otherCpuPct = Math.max(0, run.machineCpuPct - run.serverCpuPct - run.genCpuPct - backendPct);
    }
  }
  if (run.otherCpuPct > 15) {
    run.notes.push(`other work used ${run.otherCpuPct.toFixed(0)}% of a CPU` +
      (run.stealPct > 5 ? ` (${run.stealPct.toFixed(0)}% steal)` : ''));
  }
  // The generator saturated its core and the server had room left: the
  // generator set the pace, and the throughput is a lower bound.
  if (run.genCpuPct >= 90 && run.serverCpuPct <= run.genCpuPct - 5) {
    run.genBound = true;
    run.notes.push(`generator saturated its core (${run.genCpuPct.toFixed(0)}%) while the server used ` +
      `${run.serverCpuPct.toFixed(0)}%: the generator, not the server, set the pace`);
  }
  run.ok = true;
}

async function loadRun(env, sc, cand, round, { strace = false } = {}) {
  const h = await openLoad(env, sc, cand, round, { strace });
  await measureLoad(env, h, strace ? env.straceDuration : env.duration);
  return closeLoad(env, h);
}

// ---------------------------------------------------------------------------
// One run of the idle-connections scenario

async function idleRun(env, sc, cand, round) {
  const run = { scenario: sc.id, candidate: cand.id, round, ok: false, notes: [] };
  const n = sc.idle.connections;
  const exchange = sc.idle.exchange;
  let server = null;
  let backend = null;
  let client = null;
  try {
    const spec = sc.server(cand, env);
    if (sc.idle.backend) {
      // The proxy's upstream: the iomux echo server on the generator's CPU.
      backend = await startServer(env, {
        label: `${sc.id}/backend`, script: TCP_SERVER, impl: 'iomux', args: ['echo'], cpu: 1,
        extraEnv: { IOMUX_BACKEND: 'epoll', ...env.iomuxEnv },
      });
      spec.args = [String(backend.port), ...spec.args];
    }
    server = await startServer(env, {
      label: `${sc.id}/${cand.id}`,
      ...spec,
      nodeArgs: ['--expose-gc'],
      extraEnv: { ...cand.env, ...env.iomuxEnv },
    });
    run.backend = server.backend;
    client = await startEchoClient(env, 'idle', server.port, n);
    await sleep(200);
    // The server's memory: its own stats line (after two full GCs), or for a
    // process it runs (HAProxy) /proc's RSS.
    const memory = async () => {
      const s = await server.snapshot({ gc: true });
      if (!s) throw new Error('no stats from the server');
      if (s.mem && s.mem.rss == null) {
        const kb = readRssKb(server.cpuPid);
        if (kb == null) throw new Error(`no RSS for pid ${server.cpuPid}`);
        s.mem = { rss: kb * 1024 };
      }
      return s;
    };
    const s0 = await memory();
    const cpu0 = readProcCpuTicks(server.cpuPid);
    const t0 = process.hrtime.bigint();
    // Batches of 500, each accepted by the server before the next: the
    // accept queue (backlog 511) never overflows. With an exchange the
    // client's own wait for every answer proves it; silent connections are
    // counted by the server.
    let opened = 0;
    let connectMs = 0;
    const deadline = Date.now() + 120000;
    while (opened < n) {
      const k = Math.min(500, n - opened);
      const r = await client.open(k, exchange);
      opened = r.connections;
      connectMs += r.connectMs;
      while (!exchange) {
        const s = await server.snapshot();
        const open = s && s.app ? s.app.open : 0;
        if (open >= opened) break;
        if (server.exited) throw new Error(`server died: ${server.describeExit()}`);
        if (Date.now() > deadline) throw new Error(`the server accepted ${open} of ${opened} connections in time`);
        await sleep(5);
      }
    }
    const cpu1 = readProcCpuTicks(server.cpuPid);
    const t1 = process.hrtime.bigint();
    run.connectMs = connectMs;
    // Settling: deferred frees, timers and pools reach their resting state.
    await sleep(500);
    const s1 = await memory();
    if (server.exited) throw new Error(`server died: ${server.describeExit()}`);
    run.connections = n;
    run.exchange = exchange;
    run.acceptS = Number(t1 - t0) / 1e9;
    run.rssBefore = s0.mem.rss;
    run.rssAfter = s1.mem.rss;
    run.rssKb = s1.mem.rss / 1024;
    run.kibPerConn = (s1.mem.rss - s0.mem.rss) / 1024 / n;
    if (s1.mem.heapUsed != null) {
      run.heapBytesPerConn = (s1.mem.heapUsed - s0.mem.heapUsed) / n;
      run.externalBytesPerConn = ((s1.mem.external - s0.mem.external)) / n;
    }
    if (cpu0 != null && cpu1 != null) run.acceptCpuUsPerConn = ((cpu1 - cpu0) / env.clkTck) * 1e6 / n;
    if (s0.loop && s1.loop) run.loopDelta = diffNumbers(s0.loop, s1.loop);
    run.ok = true;
  } catch (err) {
    run.error = err.message;
  } finally {
    if (client) await client.close().catch(() => {});
    for (const p of [server, backend]) {
      if (!p) continue;
      const s = await p.stop();
      if (s.forced) run.notes.push(`${p === server ? 'server' : 'backend'} ignored SIGTERM (killed)`);
    }
  }
  return run;
}

// ---------------------------------------------------------------------------
// One run of the timer micro-benchmark

async function microRun(env, sc, cand, round, cfg) {
  const run = { scenario: sc.id, candidate: cand.id, round, ok: false, notes: [] };
  try {
    const [cmd, argv] = env.pinned(0, process.execPath, [TIMERS_MICRO, cand.kind, String(cfg.timerPairs)]);
    const childEnv = { ...process.env, ...cand.env, ...env.iomuxEnv };
    for (const [k, v] of Object.entries(cand.env)) if (v == null) delete childEnv[k];
    const child = track(spawn(cmd, argv, { cwd: env.root, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] }));
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err = (err + d).slice(-2000); });
    const m0 = readMachineTicks();
    const t0 = process.hrtime.bigint();
    const r = await waitExit(child, 120000);
    const t1 = process.hrtime.bigint();
    const m1 = readMachineTicks();
    if (r.timedOut) {
      child.kill('SIGKILL');
      throw new Error('the timer benchmark did not finish within 120 s');
    }
    if (r.code !== 0) throw new Error(`exit code ${r.code}, signal ${r.signal}${err ? ':\n' + indent(err.trim()) : ''}`);
    const j = JSON.parse(out.trim().split('\n').pop());
    run.backend = j.backend;
    run.units = j.pairs;
    run.nsPerPair = j.nsPerPair;
    run.cpuNsPerPair = (j.cpuS * 1e9) / j.pairs;
    run.syscalls = j.syscalls;
    run.loopDelta = j.loopDelta || null;
    const wallS = Number(t1 - t0) / 1e9;
    if (m0 && m1) {
      run.machineCpuPct = (100 * (m1.busy - m0.busy)) / env.clkTck / wallS;
      // The benchmark process keeps one CPU busy for most of the window.
      run.otherCpuPct = Math.max(0, run.machineCpuPct - 100);
    }
    run.ok = true;
  } catch (e) {
    run.error = e.message;
  }
  return run;
}

module.exports = {
  CANDIDATES, TIMER_CANDIDATES, UNITS, scenarios, loadRun, openLoad, measureLoad, closeLoad, idleRun, microRun,
};
