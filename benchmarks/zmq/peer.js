'use strict';
// peer.js -- the Node ends of the zmq benchmark, on iomux.zmq or on the
// zeromq package (libzmq behind a binding), with the arguments and output of
// peer.c:
//   node peer.js IMPL pull   BIND_EP  WARMUP_MS WINDOW_MS
//   node peer.js IMPL push   CONN_EP  SIZE
//   node peer.js IMPL router BIND_EP  WARMUP_MS WINDOW_MS
//   node peer.js IMPL dealer CONN_EP  SIZE INFLIGHT WARMUP_MS WINDOW_MS
// IMPL is iomux or zeromq. CPU is process.cpuUsage(): every thread.
const path = require('path');

const [impl, role, ep, ...rest] = process.argv.slice(2);
const nums = rest.map(Number);
const now = () => Number(process.hrtime.bigint()) / 1e9;
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
// Nanoseconds this process spent runnable but waiting for a CPU
// (/proc/self/schedstat, field 2); null where there is none.
const runqWait = () => {
  try {
    return Number(require('fs').readFileSync('/proc/self/schedstat', 'utf8').split(' ')[1]);
  } catch {
    return null;
  }
};
// ZMQ_BENCH_SNDBUF / ZMQ_BENCH_RCVBUF (bytes): the sockets' sendBufferSize and
// receiveBufferSize (libzmq's ZMQ_SNDBUF/ZMQ_RCVBUF) on both libraries; unset,
// the kernel's autotuned defaults. Set for a comparison, give every candidate
// the same.
const sockOpts = {};
if (process.env.ZMQ_BENCH_SNDBUF) sockOpts.sendBufferSize = Number(process.env.ZMQ_BENCH_SNDBUF);
if (process.env.ZMQ_BENCH_RCVBUF) sockOpts.receiveBufferSize = Number(process.env.ZMQ_BENCH_RCVBUF);

function loadIomux() {
  return require(process.env.IOMUX_BENCH_DIST || path.join(__dirname, '..', '..', 'dist')).zmq;
}

/** A window: warm-up after the first message, then WINDOW ms measured. */
function windowCounter(warmMs, winMs, onDone) {
  let state = 0;
  let t0 = 0;
  let t1 = 0;
  let c0 = 0;
  let w0 = 0;
  let q0 = null;
  let count = 0;
  return function tick() {
    count++;
    if ((count & 63) !== 0 && state !== 0) return;
    const t = now();
    if (state === 0) {
      state = 1;
      t0 = t + warmMs / 1e3;
      t1 = t0 + winMs / 1e3;
    } else if (state === 1 && t >= t0) {
      state = 2;
      count = 0;
      c0 = cpu();
      q0 = runqWait();
      w0 = t;
    } else if (state === 2 && t >= t1) {
      state = 3;
      const q1 = runqWait();
      // runqWait: seconds of the window spent waiting for a CPU (a starved run, not a slow one).
      onDone({ messages: count, wall: t - w0, cpu: cpu() - c0, runqWait: q0 === null || q1 === null ? null : (q1 - q0) / 1e9 });
    }
  };
}

async function main() {
  if (impl === 'iomux') {
    const zmq = loadIomux();
    if (role === 'pull') {
      const s = new zmq.Pull(sockOpts);
      await s.bind(ep);
      out({ endpoint: s.lastEndpoint });
      const tick = windowCounter(nums[0], nums[1], (r) => { out(r); process.exit(0); });
      s.on('message', tick);
    } else if (role === 'push') {
      const s = new zmq.Push(sockOpts);
      s.connect(ep);
      const buf = Buffer.alloc(nums[0]);
      for (;;) {
        for (let i = 0; i < 1000; i++) {
          const p = s.send(buf);
          if (p !== undefined) await p;
        }
        await new Promise(setImmediate);
      }
    } else if (role === 'router') {
      const s = new zmq.Router(sockOpts);
      await s.bind(ep);
      out({ endpoint: s.lastEndpoint });
      const tick = windowCounter(nums[0], nums[1], out);
      s.on('message', (id, body) => {
        s.send([id, body]);
        tick();
      });
    } else if (role === 'dealer') {
      const [size, inflight, warm, win] = nums;
      const s = new zmq.Dealer(sockOpts);
      s.connect(ep);
      runDealer((buf) => s.send(buf), (cb) => s.on('message', cb), size, inflight, warm, win);
    }
    return;
  }
  const zmq = require('zeromq');
  if (role === 'pull') {
    const s = new zmq.Pull(sockOpts);
    await s.bind(ep);
    out({ endpoint: s.lastEndpoint });
    const tick = windowCounter(nums[0], nums[1], (r) => { out(r); process.exit(0); });
    for await (const _ of s) tick(); // eslint-disable-line no-unused-vars
  } else if (role === 'push') {
    const s = new zmq.Push(sockOpts);
    s.connect(ep);
    const buf = Buffer.alloc(nums[0]);
    for (;;) await s.send(buf);
  } else if (role === 'router') {
    const s = new zmq.Router(sockOpts);
    await s.bind(ep);
    out({ endpoint: s.lastEndpoint });
    const tick = windowCounter(nums[0], nums[1], out);
    for await (const [id, body] of s) {
      await s.send([id, body]);
      tick();
    }
  } else if (role === 'dealer') {
    const [size, inflight, warm, win] = nums;
    const s = new zmq.Dealer(sockOpts);
    s.connect(ep);
    // zeromq.js allows one pending send: sends are chained.
    let chain = Promise.resolve();
    const send = (buf) => { chain = chain.then(() => s.send(buf)); };
    runDealer(send, async (cb) => { for await (const [m] of s) cb(m); }, size, inflight, warm, win);
  }
}

function runDealer(send, onMessage, size, inflight, warmMs, winMs) {
  size = Math.max(8, size);
  const lat = [];
  let state = 0;
  let t0 = 0;
  let t1 = 0;
  let c0 = 0;
  let w0 = 0;
  let count = 0;
  const stamp = (t) => {
    const b = Buffer.allocUnsafe(size);
    b.fill(0, 8);
    b.writeDoubleLE(t, 0);
    return b;
  };
  onMessage((m) => {
    const t = now();
    if (state === 1) {
      count++;
      if (lat.length < 1 << 20) lat.push(t - m.readDoubleLE(0));
      if (t >= t1) {
        state = 2;
        const wall = t - w0;
        const c = cpu() - c0;
        lat.sort((a, b) => a - b);
        out({ messages: count, wall, cpu: c, p50: lat[lat.length >> 1] * 1e6, p99: lat[Math.floor(lat.length * 0.99)] * 1e6 });
        // Keep the traffic going until killed: the server's window ends after ours.
      }
    } else if (state === 0 && t >= t0) {
      state = 1;
      c0 = cpu();
      w0 = t;
    }
    send(stamp(t));
  });
  t0 = now() + warmMs / 1e3;
  t1 = t0 + winMs / 1e3;
  for (let i = 0; i < inflight; i++) send(stamp(now()));
}

main().catch((err) => {
  process.stderr.write(`peer: ${err.stack || err}\n`);
  process.exit(1);
});
