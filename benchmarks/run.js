'use strict';
// Benchmark runner for iomux: `npm run bench` (node benchmarks/run.js).
//
// Serves the same hello-world HTTP/1.1 keep-alive application
// (benchmarks/servers/http-hello.js) on node:net, on iomux integrated in
// Node's loop, and on iomux running its own loop, and drives each with the same
// load generator (wrk if installed, else autocannon). Each server runs in its
// own process pinned to CPU 0, the generator is pinned to CPU 1.
//
// Measured per run: requests/s, total requests, the server's CPU time from
// /proc/<pid>/stat (utime + stime, clock ticks) across the load run, CPU
// microseconds per request, and the server's RSS at the end. Candidates
// alternate (A B C A B C ...) and every run starts a fresh server that is
// warmed up first. A separate, shorter run under `strace -c -f` counts the
// server's syscalls per request.
//
// Flags:
//   --quick              1 round of 2 s, short strace run (CI smoke test)
//   --rounds N           rounds (default 3)
//   --duration S         seconds per timed run (default 5)
//   --warmup S           warm-up seconds after each server start (default 1)
//   --connections N      concurrent connections (default 100)
//   --candidates a,b     subset of: net, iomux, iomux-standalone
//   --loadgen NAME       wrk or autocannon (default: wrk when installed)
//   --strace-duration S  seconds of load in the strace run (default 2)
//   --no-strace          skip the strace run
//   --no-pin             do not pin processes with taskset
//   --out DIR            where latest.md / latest.json go (default benchmarks/results)
//
// Environment: IOMUX_BENCH_AUTOCANNON=<path to autocannon.js> overrides where
// autocannon is looked for (default: the repository's node_modules).
//
// Exit code: 0 on success, 1 when a candidate that loaded failed to serve,
// 2 on a usage or environment error (no load generator, ...).

const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const net = require('net');
const os = require('os');
const path = require('path');
const readline = require('readline');

const ROOT = path.resolve(__dirname, '..');
const SERVER = path.join(__dirname, 'servers', 'http-hello.js');
const ALL_CANDIDATES = ['net', 'iomux', 'iomux-standalone'];
const BASELINE = 'net';

// ---------------------------------------------------------------------------
// Command line

function parseArgs(argv) {
  const opts = {
    quick: false,
    rounds: 3,
    duration: 5,
    warmup: 1,
    connections: 100,
    candidates: ALL_CANDIDATES.slice(),
    loadgen: null,
    strace: true,
    straceDuration: 2,
    pin: true,
    out: path.join(__dirname, 'results'),
  };
  const explicit = new Set();
  const num = (name, v, min) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) usage(`${name} expects a number >= ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) usage(`${flag} needs a value`);
      return argv[++i];
    };
    switch (flag) {
      case '--quick': opts.quick = true; break;
      case '--rounds': opts.rounds = Math.floor(num(flag, value(), 1)); explicit.add('rounds'); break;
      case '--duration': opts.duration = num(flag, value(), 1); explicit.add('duration'); break;
      case '--warmup': opts.warmup = num(flag, value(), 0); explicit.add('warmup'); break;
      case '--connections': opts.connections = Math.floor(num(flag, value(), 1)); break;
      case '--strace-duration': opts.straceDuration = num(flag, value(), 1); explicit.add('straceDuration'); break;
      case '--no-strace': opts.strace = false; break;
      case '--no-pin': opts.pin = false; break;
      case '--out': opts.out = path.resolve(value()); break;
      case '--loadgen': {
        const v = value();
        if (v !== 'wrk' && v !== 'autocannon') usage(`--loadgen must be wrk or autocannon`);
        opts.loadgen = v;
        break;
      }
      case '--candidates': {
        const list = value().split(',').map((s) => s.trim()).filter(Boolean);
        for (const c of list) if (!ALL_CANDIDATES.includes(c)) usage(`unknown candidate ${c}`);
        if (list.length === 0) usage('--candidates needs at least one name');
        opts.candidates = list;
        break;
      }
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
    if (!explicit.has('rounds')) opts.rounds = 1;
    if (!explicit.has('duration')) opts.duration = 2;
    if (!explicit.has('straceDuration')) opts.straceDuration = 1;
  }
  // Both generators take whole seconds.
  opts.duration = Math.max(1, Math.round(opts.duration));
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
// Child process bookkeeping: every child is tracked and killed on exit.

const live = new Set();

function track(child, { group = false } = {}) {
  const entry = { child, group };
  live.add(entry);
  child.on('exit', () => live.delete(entry));
  child.on('error', () => live.delete(entry));
  return child;
}

function killEntry(entry, signal) {
  const { child, group } = entry;
  if (child.exitCode !== null || child.signalCode !== null || !child.pid) return;
  try {
    if (group) process.kill(-child.pid, signal);
    else process.kill(child.pid, signal);
  } catch (_) {
    // Already gone.
  }
}

function killAll() {
  for (const entry of live) killEntry(entry, 'SIGKILL');
  live.clear();
}

process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    process.stderr.write(`\nbench: ${sig}, stopping children\n`);
    killAll();
    process.exit(130);
  });
}
process.on('uncaughtException', (err) => {
  process.stderr.write(`bench: ${err && err.stack}\n`);
  killAll();
  process.exit(1);
});
process.on('unhandledRejection', (err) => {
  process.stderr.write(`bench: ${err && err.stack}\n`);
  killAll();
  process.exit(1);
});

function waitExit(child, ms) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode, timedOut: false });
      return;
    }
    let timer = null;
    const done = (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, timedOut: false });
    };
    child.once('exit', done);
    if (ms != null) {
      timer = setTimeout(() => {
        child.removeListener('exit', done);
        resolve({ code: null, signal: null, timedOut: true });
      }, ms);
    }
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// Environment

function which(cmd) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch (_) {
      // Not here.
    }
  }
  return null;
}

function clockTicks() {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    if (n > 0) return n;
  } catch (_) {
    // Fall through to the usual Linux value.
  }
  return 100;
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

function toolVersion(cmd, args) {
  try {
    const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10000 });
    return out.split('\n')[0].trim();
  } catch (err) {
    // wrk -v exits non-zero after printing its version.
    const out = String((err && err.stdout) || '') + String((err && err.stderr) || '');
    return out.split('\n')[0].trim() || null;
  }
}

// Loads dist/ in a throwaway process (so a broken addon cannot take the
// runner down) and reports what the benchmark needs from it.
function probeIomux() {
  const script = `
    const out = { ok: false };
    try {
      const m = require(${JSON.stringify(path.join(ROOT, 'dist'))});
      out.createServer = typeof m.createServer === 'function';
      out.loop = !!m.loop;
      out.run = !!(m.loop && typeof m.loop.run === 'function');
      out.stats = !!(m.loop && typeof m.loop.stats === 'function');
      try { out.backend = m.loop && m.loop.backend != null ? String(m.loop.backend) : null; } catch (e) { out.backend = null; }
      out.version = m.version != null ? String(m.version) : null;
      out.ok = out.createServer;
      if (!out.ok) out.error = 'dist/index.js has no createServer()';
    } catch (e) {
      out.error = String(e && e.message || e).split('\\n')[0];
    }
    process.stdout.write(JSON.stringify(out));
    process.exit(0);
  `;
  if (!fs.existsSync(path.join(ROOT, 'dist', 'index.js'))) {
    return { ok: false, error: 'dist/index.js not found (build with `npx tsc -p tsconfig.json` and `npx node-gyp rebuild`)' };
  }
  try {
    const out = execFileSync(process.execPath, ['-e', script], {
      cwd: ROOT, encoding: 'utf8', timeout: 20000, stdio: ['ignore', 'pipe', 'pipe'],
    });
    return JSON.parse(out);
  } catch (err) {
    const detail = String((err && (err.stderr || err.message)) || err).trim().split('\n').slice(-3).join(' | ');
    return { ok: false, error: `loading dist/ failed: ${detail}` };
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------
// /proc readers

function readProcCpuTicks(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line, i.e. 11 and 12 after "state".
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]);
  } catch (_) {
    return null;
  }
}

// Machine-wide CPU time from /proc/stat (clock ticks, all CPUs): busy
// includes steal time, which a VM loses to its host.
function readMachineTicks() {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith('cpu '));
    const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
    return { busy: user + nice + system + irq + softirq + (steal || 0), steal: steal || 0, idle: idle + (iowait || 0) };
  } catch (_) {
    return null;
  }
}

function readRssKb(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) : null;
  } catch (_) {
    return null;
  }
}

// ---------------------------------------------------------------------------
// Servers

class Server {
  constructor(impl, child, port) {
    this.impl = impl;
    this.child = child;
    this.pid = child.pid;
    this.port = port;
    this.stderr = '';
    this.statsLines = [];
    this.statsWaiters = [];
    this.exited = false;
  }

  // The loop counters, asked for with SIGUSR2 (iomux servers with
  // IOMUX_BENCH_STATS=1 only). Resolves null when no answer comes.
  async snapshotStats(ms = 2000) {
    if (this.exited || this.impl === 'net') return null;
    const p = new Promise((resolve) => {
      const waiter = { resolve, timer: null };
      waiter.timer = setTimeout(() => {
        const i = this.statsWaiters.indexOf(waiter);
        if (i >= 0) this.statsWaiters.splice(i, 1);
        resolve(null);
      }, ms);
      this.statsWaiters.push(waiter);
    });
    try {
      process.kill(this.pid, 'SIGUSR2');
    } catch (_) {
      return null;
    }
    return p;
  }

  onStatsLine(obj) {
    const waiter = this.statsWaiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.resolve(obj);
    } else {
      this.statsLines.push(obj);
    }
  }

  // SIGTERM, then SIGKILL if the server has not exited within `ms`.
  async stop(ms = 3000) {
    const result = { code: null, signal: null, forced: false, finalStats: null };
    if (!this.exited) {
      try {
        process.kill(this.pid, 'SIGTERM');
      } catch (_) {
        // Already gone.
      }
      const r = await waitExit(this.child, ms);
      if (r.timedOut) {
        result.forced = true;
        try {
          process.kill(this.pid, 'SIGKILL');
        } catch (_) {
          // Already gone.
        }
        await waitExit(this.child, ms);
      }
    }
    // Let the stdout reader see the last line.
    await sleep(20);
    result.code = this.child.exitCode;
    result.signal = this.child.signalCode;
    result.finalStats = this.statsLines.length ? this.statsLines[this.statsLines.length - 1] : null;
    return result;
  }
}

function pinned(env, cpu, cmd, args) {
  if (env.taskset && env.pin) return [env.taskset, ['-c', String(cpu), cmd, ...args]];
  return [cmd, args];
}

async function startServer(env, impl) {
  const port = await freePort();
  const [cmd, args] = pinned(env, 0, process.execPath, [SERVER, impl, String(port)]);
  const childEnv = { ...process.env };
  if (impl !== 'net') childEnv.IOMUX_BENCH_STATS = '1';
  const child = track(spawn(cmd, args, { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] }));
  const server = new Server(impl, child, port);
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    server.stderr = (server.stderr + d).slice(-4000);
  });

  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${impl}: server did not print "listening" within 15 s`)), 15000);
    const rl = readline.createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      const m = /^listening (\d+)\s*$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
        return;
      }
      if (line.startsWith('{')) {
        try {
          server.onStatsLine(JSON.parse(line));
        } catch (_) {
          // Not a stats line.
        }
      }
    });
    child.once('exit', (code, signal) => {
      server.exited = true;
      clearTimeout(timer);
      reject(new Error(`${impl}: server exited before listening (code ${code}, signal ${signal})` +
        (server.stderr ? `\n${indent(server.stderr.trim())}` : '')));
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${impl}: could not start server: ${err.message}`));
    });
  });
  child.once('exit', () => {
    server.exited = true;
  });
  try {
    const printed = await ready;
    if (printed && printed !== port) server.port = printed;
  } catch (err) {
    await server.stop(1000);
    throw err;
  }
  return server;
}

function indent(s) {
  return s.split('\n').map((l) => '    ' + l).join('\n');
}

// ---------------------------------------------------------------------------
// Load generators
//
// The generator runs inside `bash -c '...; times'` so its CPU time (user and
// system, as the shell's children) is known after it exits, without sampling
// /proc of a short-lived process.

const TIMES_MARK = '__iomux_bench_times__';

function parseDuration(s) {
  const m = /^([\d.]+)(us|ms|s|m|h)?$/.exec(s);
  if (!m) return null;
  const v = Number(m[1]);
  const unit = m[2] || 's';
  return v * { us: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 }[unit];
}

function parseTimes(text) {
  // Two lines: the shell's own user/system time, then its children's.
  const lines = text.trim().split('\n').map((l) => l.trim()).filter(Boolean);
  const last = lines[lines.length - 1] || '';
  const secs = last.split(/\s+/).map((t) => {
    const m = /^(\d+)m([\d.,]+)s$/.exec(t);
    return m ? Number(m[1]) * 60 + Number(m[2].replace(',', '.')) : NaN;
  });
  if (secs.length !== 2 || secs.some((x) => !Number.isFinite(x))) return null;
  return secs[0] + secs[1];
}

function parseWrk(out) {
  const r = { requests: null, rps: null, durationS: null, latencyMs: {}, errors: { connect: 0, read: 0, write: 0, timeout: 0, non2xx: 0 } };
  let m = /(\d+) requests in ([\d.]+\w+),/.exec(out);
  if (m) {
    r.requests = Number(m[1]);
    r.durationS = parseDuration(m[2]);
  }
  m = /Requests\/sec:\s+([\d.]+)/.exec(out);
  if (m) r.rps = Number(m[1]);
  m = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  if (m) Object.assign(r.errors, { connect: +m[1], read: +m[2], write: +m[3], timeout: +m[4] });
  m = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  if (m) r.errors.non2xx = Number(m[1]);
  const dist = out.split('Latency Distribution')[1] || '';
  for (const p of ['50', '75', '90', '99']) {
    const lm = new RegExp(`^\\s*${p}%\\s+([\\d.]+(?:us|ms|s|m))\\s*$`, 'm').exec(dist);
    if (lm) r.latencyMs['p' + p] = parseDuration(lm[1]) * 1000;
  }
  return r;
}

function parseAutocannon(out) {
  const line = out.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('{')).pop();
  if (!line) return null;
  let j;
  try {
    j = JSON.parse(line);
  } catch (_) {
    return null;
  }
  const total = j.requests ? j.requests.total : null;
  return {
    requests: total,
    rps: total != null && j.duration ? total / j.duration : (j.requests && j.requests.average) || null,
    durationS: j.duration != null ? j.duration : null,
    latencyMs: j.latency ? { p50: j.latency.p50, p90: j.latency.p90, p99: j.latency.p99 } : {},
    errors: {
      connect: 0,
      read: j.errors || 0,
      write: 0,
      timeout: j.timeouts || 0,
      non2xx: j.non2xx || 0,
    },
  };
}

function generatorCommand(env, port, seconds) {
  const url = `http://127.0.0.1:${port}/`;
  const c = String(env.connections);
  if (env.loadgen.name === 'wrk') {
    return [env.loadgen.path, ['-t1', '-c' + c, `-d${seconds}s`, '--latency', url]];
  }
  return [process.execPath, [env.loadgen.path, '-c', c, '-d', String(seconds), '-p', '1', '-j', url]];
}

async function runLoad(env, port, seconds) {
  const [gcmd, gargs] = pinned(env, 1, ...generatorCommand(env, port, seconds));
  let cmd;
  let args;
  if (env.bash) {
    cmd = env.bash;
    args = ['-c', `"$@"; rc=$?; echo ${TIMES_MARK}; times; exit $rc`, 'bench-loadgen', gcmd, ...gargs];
  } else {
    cmd = gcmd;
    args = gargs;
  }
  const child = track(spawn(cmd, args, {
    cwd: ROOT,
    env: { ...process.env, LC_ALL: 'C' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group, so the generator dies with the shell
  }), { group: true });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  const spawnError = new Promise((resolve) => child.once('error', resolve));
  const limitMs = (seconds + 30) * 1000;
  const exit = await Promise.race([waitExit(child, limitMs), spawnError.then((e) => ({ error: e }))]);
  if (exit.error) throw new Error(`load generator failed to start: ${exit.error.message}`);
  if (exit.timedOut) {
    killEntry({ child, group: true }, 'SIGKILL');
    throw new Error(`load generator did not finish within ${limitMs / 1000} s`);
  }
  const [genOut, timesOut] = stdout.split(TIMES_MARK);
  const parsed = env.loadgen.name === 'wrk' ? parseWrk(genOut) : parseAutocannon(genOut);
  return {
    code: exit.code,
    parsed,
    genCpuS: timesOut != null ? parseTimes(timesOut) : null,
    stdout: genOut,
    stderr,
  };
}

// ---------------------------------------------------------------------------
// One timed run

async function timedRun(env, impl, round) {
  const run = { candidate: impl, round, ok: false, notes: [] };
  let server;
  try {
    server = await startServer(env, impl);
    run.port = server.port;
    if (env.warmup > 0) {
      const w = await runLoad(env, server.port, env.warmup);
      if (!w.parsed || !w.parsed.requests) {
        throw new Error(`warm-up served no requests${w.stderr ? ': ' + w.stderr.trim().split('\n').pop() : ''}`);
      }
    }
    const stats0 = await server.snapshotStats();
    const m0 = readMachineTicks();
    const cpu0 = readProcCpuTicks(server.pid);
    const t0 = process.hrtime.bigint();
    const load = await runLoad(env, server.port, env.duration);
    const cpu1 = readProcCpuTicks(server.pid);
    const m1 = readMachineTicks();
    const t1 = process.hrtime.bigint();
    run.rssKb = readRssKb(server.pid);
    const stats1 = await server.snapshotStats();
    const wallS = Number(t1 - t0) / 1e9;
    const p = load.parsed || {};
    run.requests = p.requests;
    run.rps = p.rps;
    run.durationS = p.durationS;
    run.latencyMs = p.latencyMs;
    run.errors = p.errors;
    run.wallS = wallS;
    if (cpu0 != null && cpu1 != null) {
      run.serverCpuTicks = cpu1 - cpu0;
      run.serverCpuS = run.serverCpuTicks / env.clkTck;
      run.serverCpuPct = (100 * run.serverCpuS) / wallS;
      if (run.requests > 0) run.cpuUsPerReq = (run.serverCpuS * 1e6) / run.requests;
    }
    if (load.genCpuS != null) {
      run.genCpuS = load.genCpuS;
      run.genCpuPct = (100 * load.genCpuS) / wallS;
    }
    if (stats0 && stats1) run.iomuxStats = diffStats(stats0, stats1);
    if (m0 && m1) {
      // Everything else that ran meanwhile (other processes, this runner,
      // steal), in % of one CPU: a busy machine makes the numbers noisy.
      run.machineCpuPct = (100 * (m1.busy - m0.busy)) / env.clkTck / wallS;
      run.stealPct = (100 * (m1.steal - m0.steal)) / env.clkTck / wallS;
      if (run.serverCpuPct != null && run.genCpuPct != null) {
        run.otherCpuPct = Math.max(0, run.machineCpuPct - run.serverCpuPct - run.genCpuPct);
      }
    }

    if (server.exited) throw new Error(`server died during the run${server.stderr ? ':\n' + indent(server.stderr.trim()) : ''}`);
    if (!p.requests) throw new Error(`no requests served (generator exit ${load.code})${load.stderr ? ': ' + load.stderr.trim().split('\n').pop() : ''}`);
    const e = p.errors || {};
    const hard = (e.connect || 0) + (e.read || 0) + (e.write || 0) + (e.non2xx || 0);
    if (hard > 0) throw new Error(`generator saw errors: ${JSON.stringify(e)}`);
    if (e.timeout > 0) run.notes.push(`${e.timeout} request timeouts`);
    if (run.otherCpuPct > 15) {
      run.notes.push(`other work used ${run.otherCpuPct.toFixed(0)}% of a CPU during the run` +
        (run.stealPct > 5 ? ` (${run.stealPct.toFixed(0)}% steal)` : '') + ': the machine was not idle, numbers are noisy');
    }
    if (run.genCpuPct > 90 && run.serverCpuPct < 80) {
      run.notes.push(`generator saturated its core (${run.genCpuPct.toFixed(0)}%) while the server used ${run.serverCpuPct.toFixed(0)}%: the server is not the bottleneck`);
    }
    run.ok = true;
  } catch (err) {
    run.error = err.message;
  } finally {
    if (server) {
      const s = await server.stop();
      if (s.forced) run.notes.push('server ignored SIGTERM (killed)');
      else if (s.code !== 0 && run.ok) run.notes.push(`server exited with code ${s.code} signal ${s.signal}`);
    }
  }
  return run;
}

function diffStats(a, b) {
  const out = {};
  for (const k of Object.keys(b)) {
    if (typeof b[k] === 'number' && typeof a[k] === 'number') out[k] = b[k] - a[k];
  }
  return out;
}

// ---------------------------------------------------------------------------
// Syscall counting under strace

// Parses the summary table of `strace -c`, slicing columns by the dashed rule
// under the header.
function parseStraceSummary(text) {
  const lines = text.split('\n');
  const ruleIdx = lines.findIndex((l) => /^-+( -+)+\s*$/.test(l));
  if (ruleIdx < 0) return null;
  const cols = [];
  const rule = lines[ruleIdx];
  const re = /-+/g;
  let m;
  while ((m = re.exec(rule))) cols.push([m.index, m.index + m[0].length]);
  const header = lines[ruleIdx - 1] || '';
  const names = cols.map(([s, e], i) => header.slice(s, i === cols.length - 1 ? undefined : e).trim());
  const idx = (n) => names.findIndex((x) => x === n);
  const iCalls = idx('calls');
  const iErrors = idx('errors');
  const iName = names.length - 1;
  const calls = {};
  const errors = {};
  for (let i = ruleIdx + 1; i < lines.length; i++) {
    const line = lines[i];
    if (!line.trim() || /^-+( -+)+\s*$/.test(line)) continue;
    const cell = (j) => line.slice(cols[j][0], j === cols.length - 1 ? undefined : cols[j][1] + 1).trim();
    const name = cell(iName);
    if (!name || name === 'total') continue;
    calls[name] = Number(cell(iCalls)) || 0;
    errors[name] = iErrors >= 0 ? Number(cell(iErrors)) || 0 : 0;
  }
  return { calls, errors };
}

const SYSCALL_GROUPS = {
  wait: ['epoll_wait', 'epoll_pwait', 'epoll_pwait2'],
  ctl: ['epoll_ctl'],
  accept: ['accept4', 'accept'],
  getpeername: ['getpeername'],
  read: ['read', 'readv', 'recvfrom', 'recvmsg'],
  write: ['write', 'writev', 'sendto', 'sendmsg'],
};

async function straceRun(env, impl) {
  const run = { candidate: impl, ok: false, notes: [] };
  let server;
  let strace;
  const outFile = path.join(os.tmpdir(), `iomux-bench-strace-${process.pid}-${impl}.txt`);
  try {
    server = await startServer(env, impl);
    if (env.warmup > 0) {
      // Checked as in the timed runs: attaching strace (or a signal) can wake
      // a server whose wait is stuck, which would hide the failure.
      const w = await runLoad(env, server.port, env.warmup);
      if (!w.parsed || !w.parsed.requests) throw new Error('warm-up served no requests');
    }
    const stats0 = await server.snapshotStats();
    try { fs.unlinkSync(outFile); } catch (_) { /* not there */ }
    strace = track(spawn(env.strace, ['-c', '-f', '-o', outFile, '-p', String(server.pid)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    }));
    let straceErr = '';
    strace.stderr.setEncoding('utf8');
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`strace did not attach within 10 s: ${straceErr.trim()}`)), 10000);
      strace.stderr.on('data', (d) => {
        straceErr += d;
        if (/attached/.test(straceErr)) {
          clearTimeout(timer);
          resolve();
        }
      });
      strace.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`strace exited (${code}) before attaching: ${straceErr.trim()}`));
      });
    });
    await sleep(200);
    const load = await runLoad(env, server.port, env.straceDuration);
    strace.kill('SIGINT');
    const se = await waitExit(strace, 15000);
    if (se.timedOut) {
      strace.kill('SIGKILL');
      throw new Error('strace did not detach within 15 s');
    }
    const stats1 = await server.snapshotStats();
    const summary = parseStraceSummary(fs.existsSync(outFile) ? fs.readFileSync(outFile, 'utf8') : '');
    if (!summary) throw new Error('could not parse the strace summary');
    const p = load.parsed || {};
    run.requests = p.requests || 0;
    run.connections = env.connections;
    run.syscalls = summary.calls;
    run.syscallErrors = summary.errors;
    run.total = Object.values(summary.calls).reduce((a, b) => a + b, 0);
    run.groups = {};
    for (const [g, names] of Object.entries(SYSCALL_GROUPS)) {
      run.groups[g] = names.reduce((a, n) => a + (summary.calls[n] || 0), 0);
    }
    run.acceptedOk = SYSCALL_GROUPS.accept.reduce((a, n) => a + (summary.calls[n] || 0) - (summary.errors[n] || 0), 0);
    run.perRequest = run.requests ? run.total / run.requests : null;
    run.ioPerRequest = run.requests
      ? (run.groups.wait + run.groups.ctl + run.groups.accept + run.groups.getpeername + run.groups.read + run.groups.write) / run.requests
      : null;
    if (stats0 && stats1) run.iomuxStats = diffStats(stats0, stats1);
    if (server.exited) throw new Error('server died during the strace run');
    if (!run.requests) throw new Error('no requests served under strace');
    run.ok = true;
  } catch (err) {
    run.error = err.message;
  } finally {
    if (strace && strace.exitCode === null && strace.signalCode === null) {
      strace.kill('SIGINT');
      const r = await waitExit(strace, 5000);
      if (r.timedOut) strace.kill('SIGKILL');
    }
    if (server) {
      const s = await server.stop();
      if (s.forced) run.notes.push('server ignored SIGTERM (killed)');
    }
    try { fs.unlinkSync(outFile); } catch (_) { /* not there */ }
  }
  return run;
}

// ---------------------------------------------------------------------------
// Reporting

function median(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function summarize(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x));
  if (!v.length) return null;
  return { median: median(v), min: Math.min(...v), max: Math.max(...v), n: v.length };
}

function fmt(x, digits = 0) {
  if (x == null || !Number.isFinite(x)) return '–';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function fmtRange(s, digits = 0) {
  if (!s) return '–';
  if (s.n === 1) return fmt(s.median, digits);
  return `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})`;
}

function buildSummary(candidates, runs) {
  const out = {};
  for (const c of candidates) {
    const ok = runs.filter((r) => r.candidate === c && r.ok);
    out[c] = {
      runs: runs.filter((r) => r.candidate === c).length,
      okRuns: ok.length,
      rps: summarize(ok.map((r) => r.rps)),
      requests: summarize(ok.map((r) => r.requests)),
      cpuUsPerReq: summarize(ok.map((r) => r.cpuUsPerReq)),
      serverCpuPct: summarize(ok.map((r) => r.serverCpuPct)),
      genCpuPct: summarize(ok.map((r) => r.genCpuPct)),
      otherCpuPct: summarize(ok.map((r) => r.otherCpuPct)),
      rssKb: summarize(ok.map((r) => r.rssKb)),
      p50Ms: summarize(ok.map((r) => r.latencyMs && r.latencyMs.p50)),
      p99Ms: summarize(ok.map((r) => r.latencyMs && r.latencyMs.p99)),
    };
  }
  const base = out[BASELINE] && out[BASELINE].cpuUsPerReq && out[BASELINE].cpuUsPerReq.median;
  const baseRps = out[BASELINE] && out[BASELINE].rps && out[BASELINE].rps.median;
  for (const c of candidates) {
    const s = out[c];
    s.cpuVsNet = base && s.cpuUsPerReq ? s.cpuUsPerReq.median / base : null;
    s.rpsVsNet = baseRps && s.rps ? s.rps.median / baseRps : null;
  }
  return out;
}

function renderMarkdown(report) {
  const { machine, config, summary, candidates, skipped, runs, strace } = report;
  const L = [];
  L.push('# iomux benchmark: HTTP/1.1 hello world, keep-alive');
  L.push('');
  L.push(`${report.finishedAt} · ${machine.cpu} · ${machine.nproc} CPUs · Linux ${machine.kernel} · Node ${machine.node}` +
    (machine.iomuxBackend ? ` · iomux backend ${machine.iomuxBackend}` : ''));
  L.push('');
  L.push(`Load: ${config.loadgen}${config.loadgenVersion ? ` (${config.loadgenVersion})` : ''}, ` +
    `${config.connections} connections, pipelining ${config.pipelining}, ` +
    `${config.rounds} round(s) of ${config.duration} s after a ${config.warmup} s warm-up per server start; ` +
    `candidates alternate. ` +
    (config.pinned ? 'Server pinned to CPU 0, generator to CPU 1.' : 'Processes not pinned (no taskset, or fewer than 2 CPUs, or --no-pin).'));
  L.push('');
  L.push('| candidate | req/s median (min–max) | server CPU µs/req | CPU/req vs net | server CPU % | generator CPU % | other CPU % | RSS MiB | p50 ms | p99 ms | runs ok |');
  L.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const c of candidates) {
    const s = summary[c];
    const rss = s.rssKb ? { ...s.rssKb, median: s.rssKb.median / 1024, min: s.rssKb.min / 1024, max: s.rssKb.max / 1024 } : null;
    L.push(`| ${c} | ${fmtRange(s.rps)} | ${fmtRange(s.cpuUsPerReq, 2)} | ${s.cpuVsNet != null ? s.cpuVsNet.toFixed(2) + '×' : '–'} | ` +
      `${fmtRange(s.serverCpuPct)} | ${fmtRange(s.genCpuPct)} | ${fmtRange(s.otherCpuPct)} | ${fmtRange(rss, 1)} | ${fmt(s.p50Ms && s.p50Ms.median, 2)} | ${fmt(s.p99Ms && s.p99Ms.median, 2)} | ${s.okRuns}/${s.runs} |`);
  }
  for (const s of skipped) L.push(`| ${s.candidate} | skipped: ${s.reason.replace(/\|/g, '\\|')} | | | | | | | | | |`);
  L.push('');

  const notes = [];
  for (const r of runs) {
    if (r.error) notes.push(`- ${r.candidate} round ${r.round}: FAILED: ${r.error.split('\n')[0]}`);
    for (const n of r.notes) notes.push(`- ${r.candidate} round ${r.round}: ${n}`);
  }
  for (const c of candidates) {
    const g = summary[c].genCpuPct;
    if (g && g.median >= 95) {
      notes.push(`- ${c}: the generator ran at ${fmt(g.median)}% of its core (median): its req/s is a lower bound; ` +
        'CPU µs/req is the better comparison');
    }
  }
  if (notes.length) {
    L.push('Notes:');
    L.push('');
    L.push(...notes);
    L.push('');
  }

  const withStats = candidates.filter((c) => runs.some((r) => r.candidate === c && r.ok && r.iomuxStats));
  if (withStats.length) {
    L.push('iomux.loop.stats() over the timed runs (medians; per request, then totals for per-connection counters):');
    L.push('');
    L.push('| candidate | iterations/req | events/req | wait/req | read/req | write+writev/req | ctl | accept | getpeername | close |');
    L.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const c of withStats) {
      const rs = runs.filter((r) => r.candidate === c && r.ok && r.iomuxStats && r.requests);
      const val = (r, k) => (k === 'write+writev'
        ? (r.iomuxStats.write != null || r.iomuxStats.writev != null ? (r.iomuxStats.write || 0) + (r.iomuxStats.writev || 0) : null)
        : (r.iomuxStats[k] != null ? r.iomuxStats[k] : null));
      const per = (k) => median(rs.map((r) => (val(r, k) != null ? val(r, k) / r.requests : null)));
      const tot = (k) => median(rs.map((r) => val(r, k)));
      L.push(`| ${c} | ${['iterations', 'events', 'wait', 'read', 'write+writev'].map((k) => fmt(per(k), 3)).join(' | ')} | ` +
        `${['ctl', 'accept', 'getpeername', 'close'].map((k) => fmt(tot(k))).join(' | ')} |`);
    }
    L.push('');
    L.push(`Each timed run opens ${config.expectedConnections} connections after the warm-up.`);
    L.push('');
  }

  if (strace) {
    L.push(`## Syscalls (strace -c -f, ${strace.duration} s of load, ${strace.connections} connections; separate run, not timed)`);
    L.push('');
    if (strace.skipped) {
      L.push(`Skipped: ${strace.skipped}`);
    } else {
      L.push('| candidate | requests | accepted (accept ok) | epoll_wait/pwait | epoll_ctl | accept4 | getpeername | read/readv/recvfrom | write/writev/sendto | all syscalls | syscalls/req | I/O+epoll syscalls/req |');
      L.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
      for (const r of strace.runs) {
        if (!r.ok) {
          L.push(`| ${r.candidate} | FAILED: ${String(r.error).split('\n')[0].replace(/\|/g, '\\|')} | | | | | | | | | | |`);
          continue;
        }
        const g = r.groups;
        L.push(`| ${r.candidate} | ${fmt(r.requests)} | ${fmt(r.acceptedOk)} | ${fmt(g.wait)} | ${fmt(g.ctl)} | ${fmt(g.accept)} | ${fmt(g.getpeername)} | ` +
          `${fmt(g.read)} | ${fmt(g.write)} | ${fmt(r.total)} | ${fmt(r.perRequest, 2)} | ${fmt(r.ioPerRequest, 2)} |`);
      }
      L.push('');
      L.push(`The generator opens ${strace.connections} connections` +
        (config.loadgen === 'wrk' ? ' (wrk also opens and closes one extra connection at startup, so accepted = connections + 1)' : '') +
        `; a server that registers each socket with epoll once shows epoll_ctl ≈ accepted ` +
        `(a few more for listeners and the loop's own fds; node:net also removes the probe connection's fd). ` +
        `"all syscalls" includes every thread of the process (futex, mmap, ... from V8 and libuv).`);
      const iomuxRows = strace.runs.filter((r) => r.ok && r.iomuxStats);
      if (iomuxRows.length) {
        L.push('');
        L.push('iomux\'s own counters over the same window: ' + iomuxRows.map((r) => {
          const s = r.iomuxStats;
          return `${r.candidate}: wait ${s.wait}, ctl ${s.ctl}, accept ${s.accept}, read ${s.read}, write ${s.write}, writev ${s.writev}, getpeername ${s.getpeername}`;
        }).join('; ') + '.');
      }
    }
    L.push('');
  }

  L.push('Method: server CPU is utime+stime from /proc/<pid>/stat read just before and right after each load run ' +
    `(clock ticks of 1/${machine.clkTck} s, so ±${(1000 / machine.clkTck).toFixed(0)} ms per reading: under 1% of a 5 s run at full load, ` +
    'coarser for --quick). CPU µs/req = that delta / requests. Generator CPU is the load generator\'s user+system time ' +
    '(bash `times`). "Other CPU" is the machine\'s busy time from /proc/stat (steal included) minus server and generator: ' +
    'well above 0 means something else competed for the CPUs. RSS is VmRSS at the end of the load run. ' +
    'A run is flagged when the generator used more than 90% of its core while the server used less than 80% of its own.');
  L.push('');
  return L.join('\n');
}

// ---------------------------------------------------------------------------
// Main

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const started = Date.now();

  if (process.platform !== 'linux') usage('the benchmark reads /proc and needs Linux');

  const nproc = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  const taskset = which('taskset');
  const env = {
    pin: opts.pin && !!taskset && nproc >= 2,
    taskset,
    bash: which('bash'),
    strace: opts.strace ? which('strace') : null,
    clkTck: clockTicks(),
    connections: opts.connections,
    duration: opts.duration,
    warmup: opts.warmup,
    straceDuration: opts.straceDuration,
    loadgen: null,
  };

  const wrk = which('wrk');
  const autocannon = findAutocannon();
  if (opts.loadgen === 'wrk' && !wrk) usage('--loadgen wrk: wrk is not installed');
  if (opts.loadgen === 'autocannon' && !autocannon) usage('--loadgen autocannon: autocannon not found (npm install)');
  if ((opts.loadgen || (wrk ? 'wrk' : 'autocannon')) === 'wrk' && wrk) {
    const v = toolVersion(wrk, ['-v']);
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
  } else {
    process.stderr.write('bench: no load generator: install wrk (apt-get install wrk) or run npm install for autocannon\n');
    process.exit(2);
  }

  const log = (s) => process.stderr.write(s + '\n');
  log(`bench: ${env.loadgen.name}, ${opts.rounds} round(s) x ${opts.duration} s, warm-up ${opts.warmup} s, ` +
    `${opts.connections} connections, ${env.pin ? 'pinned (server CPU 0, generator CPU 1)' : 'not pinned'}`);
  if (!taskset && opts.pin) log('bench: taskset not found: processes are not pinned');
  if (taskset && opts.pin && nproc < 2) log('bench: fewer than 2 CPUs: processes are not pinned');
  if (!env.bash) log('bench: bash not found: generator CPU time is not measured');

  // Which candidates can run.
  const wanted = opts.candidates;
  const skipped = [];
  let probe = null;
  if (wanted.some((c) => c !== 'net')) {
    probe = probeIomux();
    if (!probe.ok) log(`bench: iomux not available: ${probe.error}`);
  }
  const candidates = [];
  for (const c of wanted) {
    if (c === 'net') {
      candidates.push(c);
    } else if (!probe || !probe.ok) {
      skipped.push({ candidate: c, reason: probe ? probe.error : 'not probed' });
      log(`bench: skipping ${c}`);
    } else if (c === 'iomux-standalone' && !probe.run) {
      skipped.push({ candidate: c, reason: 'iomux.loop.run() is missing' });
      log(`bench: skipping ${c}: iomux.loop.run() is missing`);
    } else {
      candidates.push(c);
    }
  }
  if (!candidates.length) usage('no candidate can run');

  // Timed rounds, alternating candidates.
  const runs = [];
  for (let round = 1; round <= opts.rounds; round++) {
    for (const c of candidates) {
      log(`bench: round ${round}/${opts.rounds} ${c} ...`);
      const r = await timedRun(env, c, round);
      runs.push(r);
      if (r.ok) {
        log(`bench:   ${fmt(r.rps)} req/s, ${fmt(r.cpuUsPerReq, 2)} µs CPU/req, server ${fmt(r.serverCpuPct)}% CPU, ` +
          `generator ${fmt(r.genCpuPct)}% CPU, RSS ${fmt(r.rssKb / 1024, 1)} MiB`);
      } else {
        log(`bench:   FAILED: ${r.error}`);
      }
      for (const n of r.notes) log(`bench:   note: ${n}`);
    }
  }

  // The syscall run.
  let strace = null;
  if (opts.strace) {
    strace = { duration: opts.straceDuration, connections: opts.connections, runs: [] };
    if (!env.strace) {
      strace.skipped = 'strace is not installed';
      log('bench: strace not installed: skipping the syscall run');
    } else {
      for (const c of candidates) {
        log(`bench: strace ${c} ...`);
        const r = await straceRun(env, c);
        strace.runs.push(r);
        if (r.ok) log(`bench:   ${fmt(r.requests)} requests, ${fmt(r.perRequest, 2)} syscalls/req, epoll_ctl ${r.groups.ctl}, accepted ${r.acceptedOk}`);
        else log(`bench:   FAILED: ${r.error}`);
      }
    }
  }

  const summary = buildSummary(candidates, runs);
  const report = {
    startedAt: new Date(started).toISOString(),
    finishedAt: new Date().toISOString(),
    elapsedS: (Date.now() - started) / 1000,
    machine: {
      cpu: os.cpus()[0] ? os.cpus()[0].model : 'unknown',
      nproc,
      kernel: os.release(),
      node: process.version,
      clkTck: env.clkTck,
      iomuxBackend: probe && probe.ok ? probe.backend : null,
      iomuxVersion: probe && probe.ok ? probe.version : null,
    },
    config: {
      loadgen: env.loadgen.name,
      loadgenVersion: env.loadgen.version,
      connections: opts.connections,
      pipelining: 1,
      threads: env.loadgen.name === 'wrk' ? 1 : null,
      expectedConnections: opts.connections + (env.loadgen.name === 'wrk' ? 1 : 0),
      rounds: opts.rounds,
      duration: opts.duration,
      warmup: opts.warmup,
      pinned: env.pin,
      quick: opts.quick,
    },
    candidates,
    skipped,
    summary,
    runs,
    strace,
  };

  const md = renderMarkdown(report);
  process.stdout.write('\n' + md + '\n');
  fs.mkdirSync(opts.out, { recursive: true });
  writeAtomic(path.join(opts.out, 'latest.md'), md + '\n');
  writeAtomic(path.join(opts.out, 'latest.json'), JSON.stringify(report, null, 2) + '\n');
  log(`bench: wrote ${path.relative(process.cwd(), path.join(opts.out, 'latest.md'))} and latest.json in ${report.elapsedS.toFixed(1)} s`);

  const failedTimed = runs.filter((r) => !r.ok);
  const failedStrace = strace ? strace.runs.filter((r) => !r.ok) : [];
  if (failedTimed.length || failedStrace.length) {
    log(`bench: ${failedTimed.length + failedStrace.length} run(s) failed`);
    return 1;
  }
  return 0;
}

function writeAtomic(file, text) {
  const tmp = file + '.tmp';
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

main().then((code) => {
  killAll();
  process.exitCode = code;
});
