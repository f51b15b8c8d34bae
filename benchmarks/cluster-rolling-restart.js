'use strict';
// Rolling restarts under wrk: a supervisor (this process) runs 2 workers of
// benchmarks/servers/cluster-worker.js (iomux HTTP hello world) on one
// listener; wrk loads it while every worker is replaced twice. Prints, per
// run, wrk's requests, non-2xx responses and socket errors (connect, read,
// write, timeout): a rolling restart must lose nothing, so all but the
// requests should be 0.
//
//   node benchmarks/cluster-rolling-restart.js [--mode keepalive|close|both]
//       [--runs 3] [--seconds 8] [--connections 16] [--workers 2]
//       [--server-cpu 0 --client-cpu 1]
//
// --mode close adds -H 'Connection: close' to wrk (a new connection per
// request). With --server-cpu/--client-cpu the workers and wrk are pinned
// (taskset) to those CPUs. Needs wrk on PATH. Exits 1 if any run counted an
// error or a non-2xx response.
const { spawn, spawnSync } = require('child_process');
const path = require('path');
const dist = process.env.IOMUX_BENCH_DIST || path.resolve(__dirname, '..', 'dist');
const { cluster } = require(dist);

function parseArgs(argv) {
  const o = { mode: 'both', runs: 3, seconds: 8, connections: 16, workers: 2, serverCpu: null, clientCpu: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = argv[i + 1];
    const num = () => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new Error(`${a} needs an integer >= 0, got ${JSON.stringify(v)}`);
      i++;
      return n;
    };
    if (a === '--mode') {
      if (!['keepalive', 'close', 'both'].includes(v)) throw new Error(`--mode must be keepalive, close or both, got ${JSON.stringify(v)}`);
      o.mode = v;
      i++;
    } else if (a === '--runs') o.runs = num();
    else if (a === '--seconds') o.seconds = num();
    else if (a === '--connections') o.connections = num();
    else if (a === '--workers') o.workers = num();
    else if (a === '--server-cpu') o.serverCpu = num();
    else if (a === '--client-cpu') o.clientCpu = num();
    else throw new Error(`unknown argument ${a}`);
  }
  if (o.seconds < 4) throw new Error('--seconds must be at least 4 (two restarts happen during the run)');
  return o;
}

/** wrk's summary: requests, non-2xx/3xx, socket errors. */
function parseWrk(out) {
  const m = /(\d+) requests in/.exec(out);
  if (!m) throw new Error(`wrk printed no request count:\n${out}`);
  const s = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const n = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return {
    requests: Number(m[1]),
    non2xx: n ? Number(n[1]) : 0,
    connect: s ? Number(s[1]) : 0,
    read: s ? Number(s[2]) : 0,
    write: s ? Number(s[3]) : 0,
    timeout: s ? Number(s[4]) : 0,
  };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function oneRun(o, mode) {
  const worker = path.join(__dirname, 'servers', 'cluster-worker.js');
  const sup = cluster.createSupervisor({
    admin: false,
    signals: false,
    log: () => {},
    services: [{ name: 'web', worker, count: o.workers, listen: [{ port: 0, host: '127.0.0.1' }], env: { BENCH_CLOSE: '0' } }],
  });
  if (o.serverCpu !== null) spawnSync('taskset', ['-pc', String(o.serverCpu), String(process.pid)], { stdio: 'ignore' });
  await sup.start();
  const port = Number(sup.addresses('web')[0].split(':').pop());
  if (o.serverCpu !== null) {
    for (const s of await sup.list()) for (const c of s.containers) spawnSync('taskset', ['-pc', String(o.serverCpu), String(c.pid)], { stdio: 'ignore' });
  }
  const wrkArgs = ['-t1', `-c${o.connections}`, `-d${o.seconds}s`];
  if (mode === 'close') wrkArgs.push('-H', 'Connection: close');
  wrkArgs.push(`http://127.0.0.1:${port}/`);
  const cmd = o.clientCpu !== null ? ['taskset', ['-c', String(o.clientCpu), 'wrk', ...wrkArgs]] : ['wrk', wrkArgs];
  const wrk = spawn(cmd[0], cmd[1], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  wrk.stdout.on('data', (d) => { out += d; });
  const done = new Promise((resolve, reject) => {
    wrk.on('error', reject);
    wrk.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`wrk exited with ${code}:\n${out}`))));
  });
  const restarts = [];
  const start = Date.now();
  // Two rolling restarts of every worker, well inside the run.
  for (const at of [0.2, 0.55]) {
    await sleep(Math.max(0, start + at * o.seconds * 1000 - Date.now()));
    const s = Date.now();
    await sup.restart('web');
    restarts.push(Date.now() - s);
  }
  await done;
  await sup.stop();
  const r = parseWrk(out);
  return { mode, ...r, restartMs: restarts };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const modes = o.mode === 'both' ? ['keepalive', 'close'] : [o.mode];
  const results = [];
  console.log(`rolling restart x2 of ${o.workers} workers under wrk -t1 -c${o.connections} -d${o.seconds}s, ${o.runs} run(s) per mode, backend ${require(dist).loop.backend}`);
  for (let i = 0; i < o.runs; i++) {
    for (const mode of modes) {
      const r = await oneRun(o, mode);
      results.push(r);
      console.log(`${mode.padEnd(9)} run ${i + 1}: ${r.requests} requests, non-2xx ${r.non2xx}, socket errors: connect ${r.connect}, ` +
        `read ${r.read}, write ${r.write}, timeout ${r.timeout}; restarts took ${r.restartMs.join(', ')} ms`);
    }
  }
  const bad = results.filter((r) => r.non2xx + r.connect + r.read + r.write + r.timeout > 0);
  console.log(JSON.stringify({ results }, null, 0));
  if (bad.length) {
    console.log(`FAIL: ${bad.length} of ${results.length} runs counted errors or non-2xx responses`);
    process.exit(1);
  }
  console.log(`OK: ${results.length} runs, 0 errors, 0 non-2xx`);
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(2);
});
