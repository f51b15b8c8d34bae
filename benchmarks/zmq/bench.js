'use strict';
// bench.js -- the `zmq` scenario: ZeroMQ over loopback TCP, the two ends in
// separate processes pinned to different CPUs (receiver or server on CPU 0,
// sender or client on CPU 1).
//
// Rows: PUSH->PULL throughput with 64 B and 4 KiB messages (the sender sends
// as fast as the receiver takes them), and DEALER->ROUTER round trips of 64 B
// with 1 and 100 requests in flight (p50/p99 latency). CPU per message is
// both processes' CPU time (every thread: libzmq's I/O threads count) over
// the measured window, divided by the messages of that window.
//
// Candidates: iomux <-> iomux, zeromq.js <-> zeromq.js, C on libzmq <-> C on
// libzmq (peer.c, the floor), and iomux against the C/libzmq peer both ways.
// The round-trip rows add the machine's physical floor: two C processes
// ping-ponging over loopback TCP with blocking reads, no ZeroMQ at all
// (pingpong.c). They alternate within each round (A B C D E, B C D E A, ...).
//
// Standalone: node benchmarks/zmq/bench.js [--quick] [--rounds N] [--window MS]
const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const U = require('../lib/util');

const PEER_JS = path.join(__dirname, 'peer.js');
const PEER_C = path.join(__dirname, 'peer.c');
const PINGPONG_C = path.join(__dirname, 'pingpong.c');

const IMPLS = {
  iomux: { label: 'iomux' },
  zeromq: { label: 'zeromq.js' },
  c: { label: 'C/libzmq' },
  raw: { label: 'C raw TCP ping-pong, no zmq' },
  // Round trips only: with polling instead of sleeping between messages.
  'iomux-busy': { label: 'iomux, loop.busyPoll = 50 µs' },
  'raw-spin': { label: 'C raw TCP ping-pong, polling without sleeping' },
};
const BUSY_POLL_US = '50';

const PAIRS = [
  ['iomux', 'iomux'],
  ['zeromq', 'zeromq'],
  ['c', 'c'],
  ['iomux', 'c'],
  ['c', 'iomux'],
  ['raw', 'raw'], // the 1-in-flight round-trip row only
  ['iomux-busy', 'iomux-busy'], // the round-trip rows only
  ['raw-spin', 'raw-spin'], // the 1-in-flight round-trip row only
];

const ROWS = [
  { id: 'push-64', kind: 'tput', size: 64, title: 'PUSH->PULL 64 B' },
  { id: 'push-4k', kind: 'tput', size: 4096, title: 'PUSH->PULL 4 KiB' },
  { id: 'rtt-1', kind: 'rtt', size: 64, inflight: 1, title: 'DEALER->ROUTER 64 B, 1 in flight' },
  { id: 'rtt-100', kind: 'rtt', size: 64, inflight: 100, title: 'DEALER->ROUTER 64 B, 100 in flight' },
];

/** Compiles one of the C programs beside this file; { exe, error }. */
function buildC(workDir, source, name, libs, hint) {
  const cc = U.which('cc') || U.which('gcc') || U.which('clang');
  if (!cc) return { exe: null, error: 'no C compiler' };
  const exe = path.join(workDir, name);
  try {
    execFileSync(cc, ['-O2', '-Wall', '-o', exe, source, ...libs], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60000 });
    return { exe, error: null };
  } catch (err) {
    return { exe: null, error: `building ${path.basename(source)} failed${hint}: ${String(err.stderr || err.message).trim().split('\n').slice(-2).join(' | ')}` };
  }
}

function buildPeer(workDir) {
  return buildC(workDir, PEER_C, 'zmq-peer', ['-lzmq'], ' (apt-get install libzmq3-dev)');
}

function buildPingpong(workDir) {
  return buildC(workDir, PINGPONG_C, 'zmq-pingpong', [], '');
}

function hasZeromq() {
  try {
    require.resolve('zeromq');
    return true;
  } catch (_) {
    return false;
  }
}

function command(env, impl, args) {
  if (impl === 'c') return [env.cPeer, args];
  if (impl === 'raw' || impl === 'raw-spin') return [env.rawPeer, [args[0] === 'router' ? 'server' : 'client', ...args.slice(1)]];
  return [process.execPath, [PEER_JS, impl === 'iomux-busy' ? 'iomux' : impl, ...args]];
}

function start(env, cpu, impl, args) {
  const [cmd, argv] = command(env, impl, args);
  const [c2, a2] = env.pin ? [env.taskset, ['-c', String(cpu), cmd, ...argv]] : [cmd, argv];
  // iomux peers run on the epoll backend, as the suite's "iomux" candidate does
  // (IOMUX_ZMQ_BACKEND picks another one).
  const extra = impl === 'iomux' || impl === 'iomux-busy'
    ? { ...env.iomuxEnv, IOMUX_BACKEND: process.env.IOMUX_ZMQ_BACKEND || 'epoll', ...(impl === 'iomux-busy' ? { IOMUX_BUSY_POLL: BUSY_POLL_US } : {}) }
    : impl === 'raw-spin' ? { PINGPONG_POLL: '1' } : {};
  const child = U.track(spawn(c2, a2, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...extra } }));
  const lines = [];
  const waiters = [];
  let buf = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      lines.push(line);
      for (const w of waiters.splice(0)) w();
    }
  });
  child.stderr.on('data', (d) => { stderr += d; });
  child.on('exit', () => { for (const w of waiters.splice(0)) w(); });
  const next = async (ms) => {
    const end = Date.now() + ms;
    while (lines.length === 0) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${impl} peer exited: ${stderr.trim().split('\n').slice(-2).join(' | ')}`);
      if (Date.now() > end) throw new Error(`${impl} peer: no output within ${ms} ms ${stderr.trim().slice(-200)}`);
      await new Promise((r) => { waiters.push(r); setTimeout(r, 50); });
    }
    return lines.shift();
  };
  return { child, next };
}

/** Seconds a process has spent runnable but waiting for a CPU (/proc/PID/schedstat), or null. */
function readRunqWait(pid) {
  try {
    return Number(fs.readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e9;
  } catch (_) {
    return null;
  }
}

/**
 * For the log: how much of the window each end of a throughput run waited
 * for a CPU (other load on its pinned core), when either waited over 10%;
 * STARVED over 50%, where the rate says nothing about the peers.
 */
function runqNote(recv, send) {
  const r = recv ?? 0;
  const s = send ?? 0;
  if (r <= 0.1 && s <= 0.1) return '';
  return `; ${r > 0.5 || s > 0.5 ? 'STARVED: ' : ''}waited for a CPU ${Math.round(r * 100)}% (receiver), ${Math.round(s * 100)}% (sender) of the window`;
}

function parseEndpoint(line) {
  if (line.startsWith('endpoint ')) return line.slice(9);
  return JSON.parse(line).endpoint;
}

async function runOne(env, row, [a, b]) {
  const warm = env.warmupMs;
  const win = env.windowMs;
  const procs = [];
  try {
    if (row.kind === 'tput') {
      const recv = start(env, 0, b, ['pull', 'tcp://127.0.0.1:*', String(warm), String(win)]);
      procs.push(recv);
      const ep = parseEndpoint(await recv.next(10000));
      const send = start(env, 1, a, ['push', ep, String(row.size)]);
      procs.push(send);
      // The sender's CPU over (about) the receiver's window, from /proc.
      const tStart = Date.now();
      await U.sleep(warm + 200);
      const ticks0 = U.readProcCpuTicks(send.child.pid);
      const q0 = readRunqWait(send.child.pid);
      const w0 = Date.now();
      const r = JSON.parse(await recv.next(warm + win + 15000 - (Date.now() - tStart)));
      const ticks1 = U.readProcCpuTicks(send.child.pid);
      const q1 = readRunqWait(send.child.pid);
      const sendCpuRate = ticks0 != null && ticks1 != null ? (ticks1 - ticks0) / env.clkTck / ((Date.now() - w0) / 1e3) : null;
      const rate = r.messages / r.wall;
      const recvCpuRate = r.cpu / r.wall;
      return {
        ok: true, rate, recvCpuUs: (recvCpuRate / rate) * 1e6, sendCpuUs: sendCpuRate == null ? null : (sendCpuRate / rate) * 1e6,
        cpuUs: sendCpuRate == null ? null : ((recvCpuRate + sendCpuRate) / rate) * 1e6,
        // Shares of the window each end spent waiting for a CPU (load from other processes on its core).
        recvRunq: r.runqWait == null ? null : r.runqWait / r.wall,
        sendRunq: q0 == null || q1 == null ? null : (q1 - q0) / ((Date.now() - w0) / 1e3),
      };
    }
    const server = start(env, 0, b, ['router', 'tcp://127.0.0.1:*', String(warm), String(win)]);
    procs.push(server);
    const ep = parseEndpoint(await server.next(10000));
    const client = start(env, 1, a, ['dealer', ep, String(row.size), String(row.inflight), String(warm), String(win)]);
    procs.push(client);
    const c = JSON.parse(await client.next(warm + win + 20000));
    let s = null;
    try {
      s = JSON.parse(await server.next(3000));
    } catch (_) {
      // The server's window had not ended (it began at its first message).
    }
    const rate = c.messages / c.wall;
    const clientCpuRate = c.cpu / c.wall;
    const serverCpuRate = s ? s.cpu / s.wall : null;
    return {
      ok: true, rate, p50: c.p50, p99: c.p99,
      sendCpuUs: (clientCpuRate / rate) * 1e6,
      recvCpuUs: serverCpuRate == null ? null : (serverCpuRate / rate) * 1e6,
      cpuUs: serverCpuRate == null ? null : ((clientCpuRate + serverCpuRate) / rate) * 1e6,
    };
  } catch (err) {
    return { ok: false, error: String(err.message || err) };
  } finally {
    for (const p of procs) {
      try {
        p.child.kill('SIGKILL');
      } catch (_) {
        // gone
      }
    }
    await Promise.all(procs.map((p) => U.waitExit(p.child, 2000)));
  }
}

function pairLabel([a, b], kind) {
  if (a === 'raw' || a === 'raw-spin') return IMPLS[a].label;
  if (a === 'iomux-busy') return `${IMPLS[a].label}: ${kind === 'tput' ? 'PUSH -> PULL' : 'DEALER -> ROUTER'}`;
  const r = kind === 'tput' ? ['PUSH', 'PULL'] : ['DEALER', 'ROUTER'];
  return `${IMPLS[a].label} ${r[0]} -> ${IMPLS[b].label} ${r[1]}`;
}

async function run(opts) {
  const log = opts.log || ((s) => process.stderr.write(s + '\n'));
  const taskset = U.which('taskset');
  const nproc = os.cpus().length;
  const env = {
    pin: opts.pin !== false && !!taskset && nproc >= 2,
    taskset,
    clkTck: U.clockTicks(),
    warmupMs: opts.quick ? 300 : 500,
    windowMs: opts.windowMs || (opts.quick ? 1000 : 2000),
    iomuxEnv: opts.iomuxEnv || {},
    cPeer: null,
    rawPeer: null,
  };
  const rounds = opts.rounds || (opts.quick ? 1 : 3);
  const workDir = opts.workDir || fs.mkdtempSync(path.join(os.tmpdir(), 'iomux-zmq-bench-'));
  const built = buildPeer(workDir);
  env.cPeer = built.exe;
  const rawBuilt = buildPingpong(workDir);
  env.rawPeer = rawBuilt.exe;
  const failures = [];
  const skipped = [];
  const zq = hasZeromq();
  const pairs = PAIRS.filter((p) => !opts.pairs || opts.pairs.includes(p.join('>'))).filter(([a, b]) => {
    const why = [a, b].includes('c') && !env.cPeer ? built.error : (a === 'raw' || a === 'raw-spin') && !env.rawPeer ? rawBuilt.error
      : [a, b].includes('zeromq') && !zq ? 'the zeromq package is not installed' : null;
    if (why) skipped.push(`${pairLabel([a, b], 'tput')}: ${why}`);
    return !why;
  });
  for (const s of skipped) log(`bench: zmq: skipped ${s}`);
  const results = {};
  const rows = ROWS.filter((r) => !opts.rows || opts.rows.includes(r.id));
  for (const row of rows) {
    results[row.id] = {};
    const rowPairs = pairsOf(pairs, row);
    for (const p of rowPairs) results[row.id][p.join('>')] = [];
    for (let round = 1; round <= rounds; round++) {
      const shift = (round - 1) % rowPairs.length;
      const order = [...rowPairs.slice(shift), ...rowPairs.slice(0, shift)];
      for (const p of order) {
        const r = await runOne(env, row, p);
        results[row.id][p.join('>')].push(r);
        if (!r.ok) failures.push(`zmq/${row.id}/${p.join('>')}: ${r.error}`);
        log(`bench:   zmq ${row.id} round ${round}/${rounds} ${pairLabel(p, row.kind)}: ` + (r.ok
          ? `${U.fmt(r.rate, 0)} msg/s, ${U.fmt(r.cpuUs, 2)} µs CPU/msg (send ${U.fmt(r.sendCpuUs, 2)}, recv ${U.fmt(r.recvCpuUs, 2)})` +
            (r.p50 != null ? `, p50 ${U.fmt(r.p50, 1)} µs, p99 ${U.fmt(r.p99, 1)} µs` : '') +
            runqNote(r.recvRunq, r.sendRunq)
          : `FAILED: ${r.error}`));
      }
    }
  }
  const summary = summarize(results, pairs, rows);
  const markdown = render(summary, pairs, env, rounds, skipped, rows);
  return { results, summary, markdown, failures, skipped, config: { rounds, warmupMs: env.warmupMs, windowMs: env.windowMs, pinned: env.pin } };
}

/**
 * The raw ping-pong floor has no PUSH/PULL, and it answers one message at a
 * time (no batching): the 1-in-flight round-trip row only.
 */
function pairsOf(pairs, row) {
  if (row.kind === 'tput') return pairs.filter(([a]) => !['raw', 'raw-spin', 'iomux-busy'].includes(a));
  return row.inflight === 1 ? pairs : pairs.filter(([a]) => a !== 'raw' && a !== 'raw-spin');
}

function summarize(results, pairs, rows) {
  const out = {};
  for (const row of rows) {
    out[row.id] = {};
    for (const p of pairsOf(pairs, row)) {
      const rs = results[row.id][p.join('>')].filter((r) => r.ok);
      const med = (k) => U.median(rs.map((r) => r[k]).filter((x) => x != null));
      out[row.id][p.join('>')] = { rate: med('rate'), cpuUs: med('cpuUs'), sendCpuUs: med('sendCpuUs'), recvCpuUs: med('recvCpuUs'), p50: med('p50'), p99: med('p99'), n: rs.length };
    }
  }
  return out;
}

function ratio(a, b) {
  return a != null && b != null && b > 0 ? a / b : null;
}

function render(summary, pairs, env, rounds, skipped, rows) {
  const L = [];
  L.push('### zmq: ZeroMQ over loopback TCP (ZMTP 3.1)');
  L.push('');
  L.push(`Two processes, ${env.pin ? 'pinned (receiver/server CPU 0, sender/client CPU 1)' : 'not pinned'}; ${rounds} round(s) of ${env.windowMs} ms after ${env.warmupMs} ms warm-up; medians. ` +
    'CPU/msg is both processes\' CPU time (all threads) over the window per message. ' +
    `iomux on the ${process.env.IOMUX_ZMQ_BACKEND || 'epoll'} backend.`);
  L.push('');
  for (const row of rows) {
    L.push(`**${row.title}**`);
    L.push('');
    L.push(row.kind === 'tput'
      ? '| candidate | msg/s | CPU µs/msg | sender µs | receiver µs |\n|---|---:|---:|---:|---:|'
      : '| candidate | round trips/s | CPU µs/rt | client µs | server µs | p50 µs | p99 µs |\n|---|---:|---:|---:|---:|---:|---:|');
    for (const p of pairsOf(pairs, row)) {
      const s = summary[row.id][p.join('>')];
      const base = `| ${pairLabel(p, row.kind)} | ${U.fmt(s.rate, 0)} | ${U.fmt(s.cpuUs, 2)} | ${U.fmt(s.sendCpuUs, 2)} | ${U.fmt(s.recvCpuUs, 2)} |`;
      L.push(row.kind === 'tput' ? base : `${base} ${U.fmt(s.p50, 1)} | ${U.fmt(s.p99, 1)} |`);
    }
    L.push('');
  }
  // Targets.
  const get = (row, pair) => summary[row] && summary[row][pair];
  const lines = [];
  for (const row of rows) {
    const io = get(row.id, 'iomux>iomux');
    const js = get(row.id, 'zeromq>zeromq');
    const c = get(row.id, 'c>c');
    if (!io) continue;
    const parts = [];
    if (js) {
      const r = ratio(io.rate, js.rate);
      const cr = ratio(io.cpuUs, js.cpuUs);
      if (row.kind === 'tput') {
        parts.push(`throughput ${U.fmt(r, 1)}x zeromq.js (target >= 5x: ${r != null && r >= 5 ? 'met' : 'not met'})`);
        parts.push(`CPU/msg ${U.fmt(cr, 2)}x zeromq.js (target <= 0.2x: ${cr != null && cr <= 0.2 ? 'met' : 'not met'})`);
      } else {
        parts.push(`round trips ${U.fmt(r, 1)}x zeromq.js (target >= 4x: ${r != null && r >= 4 ? 'met' : 'not met'})`);
      }
    }
    const raw = row.kind === 'rtt' ? get(row.id, 'raw>raw') : null;
    if (raw && raw.rate != null) {
      parts.push(`round trips ${U.fmt(ratio(io.rate, raw.rate), 2)}x the physical floor (C raw TCP ping-pong, ${U.fmt(raw.rate, 0)}/s, p50 ${U.fmt(raw.p50, 1)} µs, p99 ${U.fmt(raw.p99, 1)} µs)` +
        (js && js.rate != null ? `; 4x zeromq.js would be ${U.fmt(4 * js.rate, 0)}/s = ${U.fmt(ratio(4 * js.rate, raw.rate), 2)}x that floor` : ''));
    }
    if (c) {
      const f = ratio(io.cpuUs, c.cpuUs);
      parts.push(`CPU/msg ${U.fmt(f, 2)}x the C/libzmq floor (target <= 1.5x: ${f != null && f <= 1.5 ? 'met' : 'not met'})`);
    }
    lines.push(`- ${row.title}: ${parts.join('; ')}`);
    const busy = row.kind === 'rtt' ? get(row.id, 'iomux-busy>iomux-busy') : null;
    if (busy && busy.rate != null) {
      const b = [];
      if (js) {
        const r = ratio(busy.rate, js.rate);
        b.push(`round trips ${U.fmt(r, 1)}x zeromq.js (target >= 4x: ${r != null && r >= 4 ? 'met' : 'not met'})`);
      }
      if (c) b.push(`CPU/rt ${U.fmt(ratio(busy.cpuUs, c.cpuUs), 2)}x the C/libzmq floor`);
      const spin = get(row.id, 'raw-spin>raw-spin');
      if (spin && spin.rate != null) b.push(`${U.fmt(ratio(busy.rate, spin.rate), 2)}x C raw TCP polling without sleeping (${U.fmt(spin.rate, 0)}/s)`);
      lines.push(`- ${row.title}, with loop.busyPoll = ${BUSY_POLL_US} µs: ${b.join('; ')}`);
    }
  }
  if (lines.length) {
    L.push('Targets (iomux <-> iomux):');
    L.push('');
    L.push(...lines);
    L.push('');
  }
  for (const s of skipped) L.push(`Skipped: ${s}`);
  return L.join('\n');
}

module.exports = { run, ROWS, PAIRS };

if (require.main === module) {
  const argv = process.argv.slice(2);
  const opts = { quick: argv.includes('--quick') };
  const ri = argv.indexOf('--rounds');
  if (ri >= 0) opts.rounds = Number(argv[ri + 1]);
  const wi = argv.indexOf('--window');
  if (wi >= 0) opts.windowMs = Number(argv[wi + 1]);
  if (argv.includes('--no-pin')) opts.pin = false;
  const oi = argv.indexOf('--rows');
  if (oi >= 0) opts.rows = argv[oi + 1].split(',');
  const pi = argv.indexOf('--pairs');
  if (pi >= 0) opts.pairs = argv[pi + 1].split(',');
  run(opts).then((r) => {
    process.stdout.write('\n' + r.markdown + '\n');
    if (r.failures.length) {
      for (const f of r.failures) process.stderr.write(`bench: ${f}\n`);
      process.exitCode = 1;
    }
    U.killAll();
  }, (err) => {
    process.stderr.write(String(err.stack || err) + '\n');
    U.killAll();
    process.exit(1);
  });
}
