'use strict';
// benchmarks/micro/sync.js -- the cross-process primitives (lib/shared/sync.ts)
// in a supervisor's worker: the fast path (atomics on the sync region), the
// same operations the Netplex way (one round trip to the master each),
// proper-lockfile for reference, and the contended hand-off of a mutex
// between 2 worker processes (unlock in A -> lock resolved in B: a ring of
// B's doorbell), beside its floor: the same single wake-up between two C
// processes (benchmarks/micro/sync-floor.c, built with cc when there is one).
// With 2 CPUs or more and taskset, the two workers are pinned to CPUs 0 and 1.
//
//   node benchmarks/micro/sync.js [--quick] [--rounds N]
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.join(__dirname, '..', '..');

function parse(argv) {
  const o = { quick: false, rounds: 3 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--quick') o.quick = true;
    else if (argv[i] === '--rounds') o.rounds = Number(argv[++i]);
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return o;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN;
};
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(s.length * p))] : NaN;
};

// The C floor: one-way wake-up p50/p99/max (µs) through a doorbell and
// through a socketpair, or null when it cannot be built or run.
function floor(samples) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iomux-floor-'));
  try {
    const exe = path.join(dir, 'floor');
    const core = path.join(ROOT, 'deps', 'iomux');
    execFileSync('cc', ['-O2', '-I', path.join(core, 'include'), path.join(__dirname, 'sync-floor.c'),
      path.join(core, 'src', 'shm_sync.c'), path.join(core, 'src', 'shm.c'), '-o', exe, '-lpthread'], { stdio: 'ignore' });
    return JSON.parse(execFileSync(exe, [String(samples)], { encoding: 'utf8' }));
  } catch {
    return null;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// Pins each worker (all its threads) to its own CPU; false if it cannot.
function pin(pids) {
  if (os.cpus().length < 2) return false;
  try {
    pids.forEach((pid, i) => execFileSync('taskset', ['-a', '-p', '-c', String(i), String(pid)], { stdio: 'ignore' }));
    return true;
  } catch {
    return false;
  }
}

// the floor's ringer sleeps 200 µs before each ring: the cold hand-off waits as long
const COLD_US = 200;

// A supervisor with the 2 benchmark workers (doorbells: direct wake-ups, or
// every wake-up through the master) and run(id, what, n, delayUs).
async function bench(doorbells) {
  const { cluster } = require(path.join(ROOT, 'dist'));
  const sup = cluster.createSupervisor({
    signals: false, admin: false, log: () => {}, sync: { doorbells },
    services: [{ name: 'b', worker: path.join(__dirname, '..', 'lib', 'sync-worker.js'), count: 2, listen: [] }],
  });
  const waiting = new Map();
  sup.on('message', (name, args, from) => {
    if (name !== 'done') return;
    const k = `${from.id}:${args[0]}`;
    const fn = waiting.get(k);
    waiting.delete(k);
    if (fn) fn(args[1]);
  });
  const run = (id, what, n, delayUs = 0) => new Promise((resolve, reject) => {
    waiting.set(`${id}:${what}`, (r) => (r && r.error ? reject(new Error(r.error)) : resolve(r)));
    sup.send(id, 'run', what, n, delayUs);
  });
  await sup.start();
  const pinned = pin((await sup.list())[0].containers.map((c) => c.pid).slice(0, 2));
  return { sup, run, pinned };
}

// One hand-off run of n samples each way: [hot, cold] sample arrays.
async function handoffs(run, n) {
  const [a, b] = await Promise.all([run('b.1', 'handoff', n), run('b.2', 'handoff', n)]);
  const [a2, b2] = await Promise.all([run('b.1', 'handoff', n, COLD_US), run('b.2', 'handoff', n, COLD_US)]);
  return [[...a, ...b], [...a2, ...b2]];
}

async function main(o = parse(process.argv.slice(2))) {
  const N = o.quick ? 200000 : 2000000;
  const NR = o.quick ? 2000 : 20000;
  const NL = o.quick ? 300 : 3000;
  const NH = o.quick ? 500 : 5000;
  const rounds = o.quick ? 1 : o.rounds;
  const { sup, run, pinned } = await bench(true);
  // the same hand-off with every wake-up through the master, alternated with
  // the direct one round by round
  const viaMaster = o.quick ? null : await bench(false);
  const fast = [];
  const rpc = [];
  const lf = [];
  const hand = [];
  const cold = [];
  const mHand = [];
  const mCold = [];
  const floors = [];
  try {
    const sem = await sup.sync.semaphore('bench.sem');
    await sem.create(0, { protected: true });
    const v = await sup.sync.sharedVar('bench.var');
    await v.create({ port: 8080, host: '127.0.0.1', upstreams: ['a', 'b', 'c'] });
    for (let r = 0; r < rounds; r++) {
      fast.push(await run('b.1', 'fast', N));
      rpc.push(await run('b.1', 'netplex', NR));
      lf.push(await run('b.1', 'lockfile', NL));
      const [h, c] = await handoffs(run, NH);
      hand.push(...h);
      cold.push(...c);
      if (viaMaster) {
        const [mh, mc] = await handoffs(viaMaster.run, NH);
        mHand.push(...mh);
        mCold.push(...mc);
      }
      const f = floor(NH);
      if (f) floors.push(f);
    }
  } finally {
    await sup.stop();
    if (viaMaster) await viaMaster.sup.stop();
  }
  const dist = (xs) => ({ n: xs.length, p50: pct(xs, 0.5), p99: pct(xs, 0.99), max: pct(xs, 1) });
  const m = (xs, k) => median(xs.map((x) => x[k]));
  const out = {
    rounds,
    fastNs: { semPair: m(fast, 'semPair'), mutexTry: m(fast, 'mutexTry'), mutexLockAwait: m(fast, 'mutexLockAwait'), varGet: m(fast, 'varGet'), varSetGet: m(fast, 'varSetGet') },
    netplexNs: { semPair: m(rpc, 'semPair'), mutex: m(rpc, 'mutex'), varGet: m(rpc, 'varGet') },
    netplexCpuNs: { semPair: m(rpc, 'semPairCpu'), mutex: m(rpc, 'mutexCpu'), varGet: m(rpc, 'varGetCpu') },
    lockfileNs: { syncPair: m(lf, 'syncPair'), asyncPair: m(lf, 'asyncPair') },
    handoffUs: { ...dist(hand), pinned },
    handoffColdUs: { ...dist(cold), delayUs: COLD_US },
    handoffViaMasterUs: viaMaster ? { hot: dist(mHand), cold: dist(mCold) } : null,
    // medians over the rounds of each figure
    floorUs: floors.length === 0 ? null : {
      n: floors.reduce((x, f) => x + f.samples, 0),
      bell: { p50: median(floors.map((f) => f.bell.p50)), p99: median(floors.map((f) => f.bell.p99)), max: median(floors.map((f) => f.bell.max)) },
      socketpair: { p50: median(floors.map((f) => f.socketpair.p50)), p99: median(floors.map((f) => f.socketpair.p99)), max: median(floors.map((f) => f.socketpair.max)) },
    },
  };
  // ratios of the worker's CPU time per operation (the round trip's wall
  // time is in the table too; it also counts the master's turn)
  out.ratio = {
    semPair: out.netplexCpuNs.semPair / out.fastNs.semPair,
    mutex: out.netplexCpuNs.mutex / out.fastNs.mutexTry,
    varGet: out.netplexCpuNs.varGet / out.fastNs.varGet,
  };
  return out;
}

function render(out) {
  const us = (ns) => (ns / 1000).toFixed(3);
  const f = out.fastNs;
  const n = out.netplexNs;
  const nc = out.netplexCpuNs;
  return [
    `### sync: semaphores, mutexes, shared variables across processes (median of ${out.rounds} round(s), µs per operation)`,
    '',
    'Fast path: elapsed time per operation in the fastest of 20 batches (a preempted batch is dropped). ' +
      'Round trips: CPU time of the worker per operation, and elapsed time. proper-lockfile: CPU time of the worker.',
    '',
    '| operation | fast path (atomics in the region) | Netplex way (round trip to the master), CPU / elapsed | ratio (CPU) |',
    '|---|---:|---:|---:|',
    `| semaphore increment + decrement | ${us(f.semPair)} | ${us(nc.semPair)} / ${us(n.semPair)} | ${out.ratio.semPair.toFixed(0)}x |`,
    `| mutex tryLock + unlock | ${us(f.mutexTry)} | ${us(nc.mutex)} / ${us(n.mutex)} | ${out.ratio.mutex.toFixed(0)}x |`,
    `| mutex await lock() + unlock | ${us(f.mutexLockAwait)} | | |`,
    `| shared variable get | ${us(f.varGet)} | ${us(nc.varGet)} / ${us(n.varGet)} | ${out.ratio.varGet.toFixed(0)}x |`,
    `| shared variable set + get (serialize, deserialize) | ${us(f.varSetGet)} | | |`,
    `| proper-lockfile lockSync + unlockSync | ${us(out.lockfileNs.syncPair)} | | |`,
    `| proper-lockfile await lock() + release() | ${us(out.lockfileNs.asyncPair)} | | |`,
    '',
    `Contended mutex hand-off between 2 worker processes${out.handoffUs.pinned ? ' (pinned to CPUs 0 and 1)' : ''}, µs:`,
    '',
    '| hand-off | samples | p50 | p99 | max |',
    '|---|---:|---:|---:|---:|',
    `| unlock in A -> lock() resolved in B (B's doorbell rung by A), A unlocks as soon as B waits | ${out.handoffUs.n} | ${out.handoffUs.p50.toFixed(1)} | ${out.handoffUs.p99.toFixed(1)} | ${out.handoffUs.max.toFixed(1)} |`,
    `| the same, A unlocks ${out.handoffColdUs.delayUs} µs after B waits (B asleep) | ${out.handoffColdUs.n} | ${out.handoffColdUs.p50.toFixed(1)} | ${out.handoffColdUs.p99.toFixed(1)} | ${out.handoffColdUs.max.toFixed(1)} |`,
    ...(out.handoffViaMasterUs ? [['hot', 'as soon as B waits'], ['cold', `${COLD_US} µs after B waits`]].map(([k, what]) => {
      const d = out.handoffViaMasterUs[k];
      return `| through the master (doorbells: false), A unlocks ${what} | ${d.n} | ${d.p50.toFixed(1)} | ${d.p99.toFixed(1)} | ${d.max.toFixed(1)} |`;
    }) : []),
    ...(out.floorUs ? [
      `| floor, C: one wake-up through a doorbell (poll) | ${out.floorUs.n} | ${out.floorUs.bell.p50.toFixed(1)} | ${out.floorUs.bell.p99.toFixed(1)} | ${out.floorUs.bell.max.toFixed(1)} |`,
      `| floor, C: one wake-up through a socketpair (blocking read) | ${out.floorUs.n} | ${out.floorUs.socketpair.p50.toFixed(1)} | ${out.floorUs.socketpair.p99.toFixed(1)} | ${out.floorUs.socketpair.max.toFixed(1)} |`,
    ] : []),
  ].join('\n');
}

module.exports = { main, render, parse };

if (require.main === module) {
  main().then((out) => {
    process.stdout.write(render(out) + '\n');
    process.stdout.write(JSON.stringify(out) + '\n');
  }, (e) => {
    console.error(e);
    process.exit(1);
  });
}
