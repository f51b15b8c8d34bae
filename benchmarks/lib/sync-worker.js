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

// Elapsed wall time per operation, ns (the hand-off and the round trips).
function perOp(t0, n) {
  return Number(ns() - t0) / n;
}

// CPU time per operation, ns: does not count the time this process was
// preempted on a loaded machine. cpu0 = process.cpuUsage() at the start.
function cpuOp(cpu0, n) {
  const d = process.cpuUsage(cpu0);
  return ((d.user + d.system) * 1000) / n;
}

// The fast paths take tens of nanoseconds: process CPU time is too coarse
// (and counts V8's helper threads), so each is timed in 20 batches and the
// fastest batch counts: a batch preempted on the loaded machine is dropped.
const BATCHES = 20;

function best(n, fn) {
  const per = Math.max(1, Math.floor(n / BATCHES));
  let min = Infinity;
  for (let b = 0; b < BATCHES; b++) {
    const t0 = ns();
    fn(per);
    min = Math.min(min, perOp(t0, per));
  }
  return min;
}

async function bestAsync(n, fn) {
  const per = Math.max(1, Math.floor(n / BATCHES));
  let min = Infinity;
  for (let b = 0; b < BATCHES; b++) {
    const t0 = ns();
    await fn(per);
    min = Math.min(min, perOp(t0, per));
  }
  return min;
}

async function fast(c, n) {
  const sem = await c.semaphore('bench.sem');
  const m = await c.mutex('bench.fast');
  const v = await c.sharedVar('bench.var');
  const out = {};
  let x;
  for (let round = 0; round < 2; round++) { // the first round warms up
    out.semPair = best(n, (k) => { for (let i = 0; i < k; i++) { sem.increment(); sem.decrement(); } });
    out.mutexTry = best(n, (k) => { for (let i = 0; i < k; i++) { m.tryLock(); m.unlock(); } });
    out.mutexLockAwait = await bestAsync(n, async (k) => { for (let i = 0; i < k; i++) { await m.lock(); m.unlock(); } });
    out.varGet = best(n, (k) => { for (let i = 0; i < k; i++) x = v.get(); });
    out.varSetGet = best(Math.max(BATCHES * 100, n / 20), (k) => { for (let i = 0; i < k; i++) { v.set(i); x = v.get(); } });
  }
  void x;
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
    let c0 = process.cpuUsage();
    for (let i = 0; i < n; i++) { await rpc(sem, 'inc'); await rpc(sem, 'dec'); }
    out.semPair = perOp(t0, n);
    out.semPairCpu = cpuOp(c0, n);
    t0 = ns();
    c0 = process.cpuUsage();
    for (let i = 0; i < n; i++) { await rpc(m, 'lock'); await rpc(m, 'unlock'); }
    out.mutex = perOp(t0, n);
    out.mutexCpu = cpuOp(c0, n);
    t0 = ns();
    c0 = process.cpuUsage();
    for (let i = 0; i < n; i++) await rpc(v, 'get');
    out.varGet = perOp(t0, n);
    out.varGetCpu = cpuOp(c0, n);
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
    let t0 = process.cpuUsage();
    for (let i = 0; i < n; i++) { lf.lockSync(file, { realpath: false }); lf.unlockSync(file, { realpath: false }); }
    out.syncPair = cpuOp(t0, n);
    t0 = process.cpuUsage();
    for (let i = 0; i < n; i++) { const release = await lf.lock(file, { realpath: false }); await release(); }
    out.asyncPair = cpuOp(t0, n);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

// Both workers run this loop: take the lock, wait until the other one waits
// for it, stamp the time and unlock; the taker computes unlock -> resolved.
// With delayUs, the holder spins that long once the other one waits, so that
// the other one has gone to sleep in its event loop when the unlock comes.
async function handoff(c, n, delayUs = 0) {
  const m = await c.mutex('bench.handoff');
  const stamp = await c.counter('bench.stamp');
  const stamper = await c.counter('bench.stamper');
  const want = await c.counter('bench.want');
  const samples = [];
  for (let i = 0; i < n; i++) {
    const locked = m.lock();
    want.reset(m.self); // this process's lock() is registered: a ring reaches it
    await locked;
    const now = Number(ns() / 100n) & 0x7fffffff;
    const then = stamp.get();
    // a sample when the lock came from the other process (not when this one
    // took it back on the fast path before the other one woke)
    if (then !== 0 && stamper.get() !== m.self) samples.push((((now - then) & 0x7fffffff) * 100) / 1000);
    // until the other process's lock() is queued at the master, so that the
    // unlock rings it (the head of the queue can still be this process's own
    // wait a moment after a ring completed it, or the other's previous one:
    // a ring then still reaches the other's new lock())
    const other = () => want.get() !== m.self && want.get() !== 0 && m.head !== 0 && m.head !== m.self;
    // (other() is read once per turn: the head can read as the other's
    // previous wait, then 0 once the master has its 'took', then its new
    // wait; reading it a second time after the loop saw it could give up a
    // turn the other one is waiting for)
    const deadline = Date.now() + 2000;
    let ready = other();
    while (!ready && Date.now() < deadline) {
      await tick();
      ready = other();
    }
    if (!ready) { stamp.reset(0); m.unlock(); break; } // the other one finished
    if (delayUs > 0) {
      const until = ns() + BigInt(delayUs * 1000);
      while (ns() < until);
    }
    want.reset(0);
    stamper.reset(m.self);
    stamp.reset(Number(ns() / 100n) & 0x7fffffff || 1);
    m.unlock();
    // no barging: lock() again once the other one has it (it holds it until
    // this one queues), so that every unlock is a hand-off
    const until = Date.now() + 2000;
    while (!m.locked && Date.now() < until) await tick();
  }
  return samples;
}

module.exports = {
  receiveMessage(c, name, args) {
    if (name !== 'run') return;
    const [what, n, delayUs] = args;
    const job = what === 'fast' ? fast(c, n) : what === 'netplex' ? netplex(c, n)
      : what === 'lockfile' ? lockfile(n) : handoff(c, n, delayUs);
    job.then((r) => c.send('master', 'done', what, r), (e) => c.send('master', 'done', what, { error: String(e && e.stack) }));
  },
};
