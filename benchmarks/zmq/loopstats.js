'use strict';
// Preload for benchmarks/zmq/peer.js (node -r ./benchmarks/zmq/loopstats.js
// benchmarks/zmq/peer.js iomux ...): samples loop.stats() and the process's CPU
// time every 500 ms and, at exit (or SIGINT), prints to stderr the per-second
// rates of CPU milliseconds, reads, writes, writevs, waits, iterations,
// events and minor page faults (minflt, from /proc/self/stat) over the samples
// between the first and the last (warm-up and tail dropped), and the RSS at
// exit. Divide by the message rate for syscalls or faults per message.
const fs = require('fs');
const path = require('path');
const { loop } = require(process.env.IOMUX_BENCH_DIST || path.join(__dirname, '..', '..', 'dist'));

const KEYS = ['read', 'write', 'writev', 'wait', 'iterations', 'events', 'minflt'];
// Field 10 of /proc/self/stat; the command name (field 2) may hold spaces.
const minflt = () => {
  try {
    const st = fs.readFileSync('/proc/self/stat', 'latin1');
    return Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[7]);
  } catch {
    return 0;
  }
};
const samples = [];
let prev = null;
setInterval(() => {
  const st = { ...loop.stats(), minflt: minflt() };
  const c = process.cpuUsage();
  const cur = { t: performance.now() / 1e3, cpu: (c.user + c.system) / 1e3, st };
  if (prev) {
    const d = { dt: cur.t - prev.t, cpu: cur.cpu - prev.cpu };
    for (const k of KEYS) d[k] = st[k] - prev.st[k];
    samples.push(d);
  }
  prev = cur;
}, 500).unref();

process.on('exit', () => {
  const w = samples.slice(1, -1);
  if (w.length === 0) return;
  const sum = {};
  for (const s of w) for (const k in s) sum[k] = (sum[k] || 0) + s[k];
  const out = { role: process.argv[3] };
  for (const k of ['cpu', ...KEYS]) out[`${k}/s`] = Math.round(sum[k] / sum.dt);
  out.rssKiB = Math.round(process.memoryUsage.rss() / 1024);
  process.stderr.write(JSON.stringify(out) + '\n');
});
process.on('SIGINT', () => process.exit(0));
