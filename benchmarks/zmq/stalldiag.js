'use strict';
// stalldiag.js -- preload for benchmarks/zmq/peer.js (iomux peers) used by
// stallhunt.js: records the process's zmq sockets, samples loop.stats() and
// the messages received/sent every 100 ms, and writes a JSON dump of the
// state (the samples, each pipe's queues, each connection's blocked/unflushed
// state, its socket's flags and the core's queued bytes) to stderr as a line
// starting with DIAG on SIGUSR2, and by itself (AUTO-DUMP, at most 3 times)
// when fewer than DIAG_MIN (300) messages moved in 100 ms after the first;
// at exit, the process's run-queue wait (SCHED) and its last 3 s of samples
// (RING).
const path = require('path');
const dist = process.env.IOMUX_BENCH_DIST || path.join(__dirname, '..', '..', 'dist');
const iomux = require(dist);
const zs = require(path.join(dist, 'zmq', 'socket.js'));
const socks = [];
for (const k of ['bind', 'connect']) {
  const orig = zs.Socket.prototype[k];
  zs.Socket.prototype[k] = function (...a) { if (!socks.includes(this)) socks.push(this); return orig.apply(this, a); };
}
let msgs = 0;
const origOn = zs.Socket.prototype.on;
zs.Socket.prototype.on = function (ev, fn) {
  if (ev === 'message') return origOn.call(this, ev, (...f) => { msgs++; fn(...f); });
  return origOn.call(this, ev, fn);
};
const origSend = zs.Socket.prototype.send;
let sends = 0;
zs.Socket.prototype.send = function (m) { sends++; return origSend.call(this, m); };
const ring = [];
let dumps = 0;
let last = null;
setInterval(() => {
  const cur = msgs + sends;
  if (sched0 === null && cur > 0) sched0 = sched();
  if (last !== null && cur > 0 && cur - last < +(process.env.DIAG_MIN || 300) && dumps < 3) {
    dumps++;
    process.stderr.write(`AUTO-DUMP t=${Math.round(performance.now())} delta=${cur - last}\n`);
    process.emit('SIGUSR2');
  }
  last = cur;
  ring.push({ t: Math.round(performance.now()), msgs, sends, st: iomux.loop.stats() });
  if (ring.length > 30) ring.shift();
}, 100).unref();
function conn(c) {
  if (!c) return null;
  const s = c.socket;
  const b = require(path.join(dist, 'binding.js')).binding;
  const q = s._id >= 0 ? b.queued(s._id) : null;
  return { coreQueued: q, ready: c.ready, blocked: c.blocked, closed: c.closed, unflushed: c.unflushed, isDirty: c.isDirty,
    sockId: s._id, flags: s._flags?.toString(2), writableLength: s.writableLength, queuedEstimate: s.queuedEstimate,
    paused: s.isPaused?.(), readStopped: s.readStopped, destroyed: s.destroyed, connecting: s.connecting };
}
// How long the process ran and how long it waited, runnable, for a CPU
// (/proc/self/schedstat, ns), and its context switches: a crawling run whose
// process waited on the run queue more than it ran was starved, not stuck.
function sched() {
  const fs = require('fs');
  try {
    const [run, wait, slices] = fs.readFileSync('/proc/self/schedstat', 'utf8').trim().split(' ').map(Number);
    const st = fs.readFileSync('/proc/self/status', 'utf8');
    const cs = (k) => Number((st.match(new RegExp(`${k}:\\s+(\\d+)`)) || [])[1]);
    return { runMs: Math.round(run / 1e6), runqWaitMs: Math.round(wait / 1e6), slices, voluntary: cs('voluntary_ctxt_switches'), involuntary: cs('nonvoluntary_ctxt_switches') };
  } catch {
    return null;
  }
}
let sched0 = null;
process.on('exit', () => {
  const s1 = sched();
  process.stderr.write('SCHED ' + JSON.stringify({ role: process.argv[3], atFirstMessage: sched0, atExit: s1 }) + '\n');
  // The receiver exits at its window's end: its last samples go with it.
  process.stderr.write('RING ' + JSON.stringify(ring.map((r) => ({ t: r.t, msgs: r.msgs, sends: r.sends, read: r.st.read, wait: r.st.wait, it: r.st.iterations, ev: r.st.events }))) + '\n');
});
process.on('SIGUSR2', () => {
  const out = { pid: process.pid, role: process.argv[3], msgs, sends, sched: sched(), stats: iomux.loop.stats(),
    ring: ring.map((r) => ({ t: r.t, msgs: r.msgs, sends: r.sends, read: r.st.read, write: r.st.write, writev: r.st.writev, wait: r.st.wait, it: r.st.iterations, ev: r.st.events })),
    socks: socks.map((s) => ({ type: s.constructor.name, waiters: s.waiters?.length, inboxCount: s.inboxCount, conns: s.conns?.size,
      dialers: [...(s.dialers?.values() ?? [])].map((d) => ({ ivl: d.ivl, timer: !!d.timer, conn: !!d.conn })),
      pipes: s.pipes.map((p) => ({ ep: p.endpoint, out: p.outbound, q: p.queue.length, inbox: p.inbox.length, paused: p.paused, dead: p.dead, live: p.live, conn: conn(p.conn) })) })) };
  process.stderr.write('DIAG ' + JSON.stringify(out) + '\n');
});
