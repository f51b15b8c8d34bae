'use strict';
// The worker of the sync benchmark (benchmarks/micro/sync.js): on 'run'
// (what, n) it measures and answers 'done' (what, result) to the master.
const { setImmediate: tick } = require('node:timers/promises');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

function ns() {
  return process.hrtime.bigint();
}

function perOp(t0, n) {
  return Number(ns() - t0) / n;
}

async function fast(c, n) {
  const sem = await c.semaphore('bench.sem');
  const m = await c.mutex('bench.fast');
  const v = await c.sharedVar('bench.var');
  const out = {};
  for (let round = 0; round < 2; round++) { // the first round warms up
    let t0 = ns();
    for (let i = 0; i < n; i++) { sem.increment(); sem.decrement(); }
    out.semPair = perOp(t0, n);
    t0 = ns();
    for (let i = 0; i < n; i++) { m.tryLock(); m.unlock(); }
    out.mutexTry = perOp(t0, n);
    t0 = ns();
    for (let i = 0; i < n; i++) { await m.lock(); m.unlock(); }
    out.mutexLockAwait = perOp(t0, n);
    t0 = ns();
    let x;
    for (let i = 0; i < n; i++) x = v.get();
    out.varGet = perOp(t0, n);
    const k = Math.max(1000, n / 20);
    t0 = ns();
    for (let i = 0; i < k; i++) { v.set(i); x = v.get(); }
    out.varSetGet = perOp(t0, k);
    void x;
  }
  const cpu = process.cpuUsage();
  out.cpuUs = cpu.user + cpu.system;
  return out;
}

async function netplex(c, n) {
  const sem = await c.semaphore('bench.sem');
  const m = await c.mutex('bench.rpc');
  const v = await c.sharedVar('bench.var');
  const rpc = (p, what) => c.request('sync.rpc', { slot: p.slot, gen: p.gen, what });
  const out = {};
  for (let round = 0; round < 2; round++) {
    let t0 = ns();
    for (let i = 0; i < n; i++) { await rpc(sem, 'inc'); await rpc(sem, 'dec'); }
    out.semPair = perOp(t0, n);
    t0 = ns();
    for (let i = 0; i < n; i++) { await rpc(m, 'lock'); await rpc(m, 'unlock'); }
    out.mutex = perOp(t0, n);
    t0 = ns();
    for (let i = 0; i < n; i++) await rpc(v, 'get');
    out.varGet = perOp(t0, n);
  }
  return out;
}

async function lockfile(n) {
  const lf = require('proper-lockfile');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iomux-sync-bench-'));
  const file = path.join(dir, 'f');
  fs.writeFileSync(file, '');
  const out = {};
  try {
    let t0 = ns();
    for (let i = 0; i < n; i++) { lf.lockSync(file, { realpath: false }); lf.unlockSync(file, { realpath: false }); }
    out.syncPair = perOp(t0, n);
    t0 = ns();
    for (let i = 0; i < n; i++) { const release = await lf.lock(file, { realpath: false }); await release(); }
    out.asyncPair = perOp(t0, n);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

// Both workers run this loop: take the lock, wait until the other one waits
// for it, stamp the time and unlock; the taker computes unlock -> resolved.
async function handoff(c, n) {
  const m = await c.mutex('bench.handoff');
  const stamp = await c.counter('bench.stamp');
  const samples = [];
  for (let i = 0; i < n; i++) {
    await m.lock();
    const now = Number(ns() / 100n) & 0x7fffffff;
    const then = stamp.get();
    if (then !== 0) samples.push((((now - then) & 0x7fffffff) * 100) / 1000);
    const deadline = Date.now() + 2000;
    while (m.waiters === 0 && Date.now() < deadline) await tick();
    if (m.waiters === 0) { stamp.reset(0); m.unlock(); break; } // the other one finished
    stamp.reset(Number(ns() / 100n) & 0x7fffffff || 1);
    m.unlock();
    await tick();
  }
  return samples;
}

module.exports = {
  receiveMessage(c, name, args) {
    if (name !== 'run') return;
    const [what, n] = args;
    const job = what === 'fast' ? fast(c, n) : what === 'netplex' ? netplex(c, n)
      : what === 'lockfile' ? lockfile(n) : handoff(c, n);
    job.then((r) => c.send('master', 'done', what, r), (e) => c.send('master', 'done', what, { error: String(e && e.stack) }));
  },
};
