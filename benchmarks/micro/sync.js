'use strict';
// benchmarks/micro/sync.js -- the cross-process primitives (lib/shared/sync.ts)
// in a supervisor's worker: the fast path (atomics on the sync region), the
// same operations the Netplex way (one round trip to the master each),
// proper-lockfile for reference, and the contended hand-off of a mutex
// between 2 worker processes (unlock in A -> lock resolved in B).
//
//   node benchmarks/micro/sync.js [--quick] [--rounds N]
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

async function main(o = parse(process.argv.slice(2))) {
  const { cluster } = require(path.join(ROOT, 'dist'));
  const sup = cluster.createSupervisor({
    signals: false, admin: false, log: () => {},
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
  const run = (id, what, n) => new Promise((resolve, reject) => {
    waiting.set(`${id}:${what}`, (r) => (r && r.error ? reject(new Error(r.error)) : resolve(r)));
    sup.send(id, 'run', what, n);
  });
  const N = o.quick ? 200000 : 2000000;
  const NR = o.quick ? 2000 : 20000;
  const NL = o.quick ? 300 : 3000;
  const NH = o.quick ? 500 : 5000;
  const rounds = o.quick ? 1 : o.rounds;
  await sup.start();
  const fast = [];
  const rpc = [];
  const lf = [];
  const hand = [];
  try {
    const sem = await sup.sync.semaphore('bench.sem');
    await sem.create(0, { protected: true });
    const v = await sup.sync.sharedVar('bench.var');
    await v.create({ port: 8080, host: '127.0.0.1', upstreams: ['a', 'b', 'c'] });
    for (let r = 0; r < rounds; r++) {
      fast.push(await run('b.1', 'fast', N));
      rpc.push(await run('b.1', 'netplex', NR));
      lf.push(await run('b.1', 'lockfile', NL));
      const [a, b] = await Promise.all([run('b.1', 'handoff', NH), run('b.2', 'handoff', NH)]);
      hand.push(...a, ...b);
    }
  } finally {
    await sup.stop();
  }
  const m = (xs, k) => median(xs.map((x) => x[k]));
  const out = {
    rounds,
    fastNs: { semPair: m(fast, 'semPair'), mutexTry: m(fast, 'mutexTry'), mutexLockAwait: m(fast, 'mutexLockAwait'), varGet: m(fast, 'varGet'), varSetGet: m(fast, 'varSetGet') },
    netplexNs: { semPair: m(rpc, 'semPair'), mutex: m(rpc, 'mutex'), varGet: m(rpc, 'varGet') },
    netplexCpuNs: { semPair: m(rpc, 'semPairCpu'), mutex: m(rpc, 'mutexCpu'), varGet: m(rpc, 'varGetCpu') },
    lockfileNs: { syncPair: m(lf, 'syncPair'), asyncPair: m(lf, 'asyncPair') },
    handoffUs: { n: hand.length, p50: pct(hand, 0.5), p99: pct(hand, 0.99), max: pct(hand, 1) },
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
    `Contended mutex hand-off between 2 worker processes (unlock in A -> lock() resolved in B), ${out.handoffUs.n} samples: ` +
      `p50 ${out.handoffUs.p50.toFixed(1)} µs, p99 ${out.handoffUs.p99.toFixed(1)} µs, max ${out.handoffUs.max.toFixed(1)} µs.`,
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
