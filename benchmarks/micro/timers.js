'use strict';
// Timer micro-benchmark used by benchmarks/run.js (scenario "timers"):
//
//   node benchmarks/micro/timers.js <node|iomux> <pairs>
//
// Schedules and cancels `pairs` timeouts of 1 s, one pair at a time:
//   node:  clearTimeout(setTimeout(fn, 1000))
//   iomux: iomux.loop.clearTimeout(iomux.loop.setTimeout(fn, 1000))
// after a warm-up of min(pairs, 100k) pairs (so the JIT has settled), and
// prints one JSON line: wall ns per pair, CPU time, and for iomux the change
// of loop.stats() over the timed pairs (every syscall the core made).
//
// One unrelated 10 s timer stays armed on the same clock during the run, as
// in a live server: without it node would create and drop its per-duration
// timer list on every pair, and iomux would toggle its loop's ref each time.

const path = require('path');

const kind = process.argv[2];
const pairs = Math.floor(Number(process.argv[3]));
if (!['node', 'iomux'].includes(kind) || !(pairs > 0)) {
  process.stderr.write('usage: node benchmarks/micro/timers.js <node|iomux> <pairs>\n');
  process.exit(2);
}

function noop() {}

let set;
let clear;
let iomux = null;
if (kind === 'node') {
  set = setTimeout;
  clear = clearTimeout;
} else {
  iomux = require(process.env.IOMUX_BENCH_DIST || path.resolve(__dirname, '..', '..', 'dist'));
  const loop = iomux.loop;
  set = (fn, ms) => loop.setTimeout(fn, ms);
  clear = (t) => loop.clearTimeout(t);
}

function run(n) {
  for (let i = 0; i < n; i++) clear(set(noop, 1000));
}

const keeper = set(noop, 10000);
run(Math.min(pairs, 100000));

const stats0 = iomux ? iomux.loop.stats() : null;
const cpu0 = process.cpuUsage();
const t0 = process.hrtime.bigint();
run(pairs);
const t1 = process.hrtime.bigint();
const cpu = process.cpuUsage(cpu0);
const stats1 = iomux ? iomux.loop.stats() : null;
clear(keeper);

const out = {
  kind,
  pairs,
  backend: iomux ? iomux.loop.backend : 'libuv',
  wallNs: Number(t1 - t0),
  nsPerPair: Number(t1 - t0) / pairs,
  cpuS: (cpu.user + cpu.system) / 1e6,
  syscalls: null,
};
if (stats0 && stats1) {
  let sys = 0;
  const delta = {};
  for (const k of Object.keys(stats1)) {
    const d = Number(stats1[k]) - Number(stats0[k]);
    delta[k] = d;
    if (k !== 'iterations' && k !== 'events') sys += d;
  }
  out.loopDelta = delta;
  out.syscalls = sys;
}
process.stdout.write(JSON.stringify(out) + '\n');
