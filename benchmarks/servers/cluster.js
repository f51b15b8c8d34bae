'use strict';
// Servers of the `cluster` benchmark (benchmarks/lib/cluster.js).
//
//   node cluster.js iomux-cluster <port> <keepalive|close> <workers>
//       an iomux supervisor; its workers (cluster-worker.js) answer on the
//       listener the master bound once
//   node cluster.js node-cluster <port> <keepalive|close> <workers>
//       node:cluster (round-robin: the primary accepts, hands each
//       connection to a worker); workers answer with node:http
//   node cluster.js reuseport <port> <keepalive|close>
//       one plain iomux HTTP process with SO_REUSEPORT (the runner starts two)
//   node cluster.js broadcast <workers> <count>
//       an iomux supervisor with that many workers; prints the latency of
//       broadcasts to all of them, then the rate of pipelined ones
//   node cluster.js restart <workers> <kills>
//       an iomux supervisor; kills a worker <kills> times and prints how
//       long until its replacement reports ready (accepting)
//
// Prints "listening <port> <backend>" once every worker accepts, then runs
// until SIGTERM; the master's pid is this process, its workers its children.
const cluster = require('cluster');
const http = require('http');
const path = require('path');
const { spawnSync } = require('child_process');
const iomuxPath = process.env.IOMUX_BENCH_DIST || path.resolve(__dirname, '..', '..', 'dist');
const { countSpread } = require('./cluster-spread');

const [mode, a1, a2, a3] = process.argv.slice(2);
const WORKER = path.join(__dirname, 'cluster-worker.js');

function hello(close) {
  return (req, res) => {
    res.setHeader('Content-Type', 'text/plain');
    if (close) res.setHeader('Connection', 'close');
    res.end('Hello World!');
  };
}

async function main() {
  if (mode === 'iomux-cluster') {
    const { cluster: c } = require(iomuxPath);
    const sup = c.createSupervisor({
      admin: false, log: () => {},
      services: [{ name: 'web', worker: WORKER, count: Number(a3), listen: [{ port: Number(a1), host: '127.0.0.1' }],
        env: { BENCH_CLOSE: a2 === 'close' ? '1' : '0' } }],
    });
    await sup.start();
    console.log(`listening ${a1} ${require(iomuxPath).loop.backend}`);
    return;
  }
  if (mode === 'node-cluster') {
    if (cluster.isPrimary) {
      cluster.schedulingPolicy = cluster.SCHED_RR;
      let up = 0;
      for (let i = 0; i < Number(a3); i++) cluster.fork().on('listening', () => { if (++up === Number(a3)) console.log(`listening ${a1} libuv`); });
      process.on('SIGTERM', () => { for (const w of Object.values(cluster.workers)) w.kill(); process.exit(0); });
      return;
    }
    const counts = countSpread();
    const s = http.createServer((req, res) => { counts.requests++; hello(a2 === 'close')(req, res); });
    s.on('connection', () => { counts.accepted++; });
    s.keepAliveTimeout = 60000;
    s.listen(Number(a1), '127.0.0.1');
    return;
  }
  if (mode === 'reuseport') {
    const iomux = require(iomuxPath);
    const counts = countSpread();
    const s = iomux.http.createServer((req, res) => { counts.requests++; hello(a2 === 'close')(req, res); });
    s.on('connection', () => { counts.accepted++; });
    s.listen({ port: Number(a1), host: '127.0.0.1', reusePort: true }, () => console.log(`listening ${a1} ${iomux.loop.backend}`));
    return;
  }
  if (mode === 'broadcast') {
    const { cluster: c } = require(iomuxPath);
    const n = Number(a1);
    const count = Number(a2);
    const sup = c.createSupervisor({ admin: false, log: () => {}, services: [{ name: 'b', worker: WORKER, count: n }] });
    await sup.start();
    let acks = 0;
    let wake = null;
    sup.on('message', (name) => { if (name === 'ack' && ++acks && wake) wake(); });
    const until = (k) => new Promise((r) => { wake = () => { if (acks >= k) { wake = null; r(); } }; wake(); });
    // Latency: one broadcast at a time, until every worker acked it.
    const lat = [];
    for (let i = 0; i < count; i++) {
      const t0 = process.hrtime.bigint();
      const base = acks;
      sup.send('*', 'bench', i);
      await until(base + n);
      lat.push(Number(process.hrtime.bigint() - t0) / 1e3);
    }
    lat.sort((x, y) => x - y);
    // Rate: `count` broadcasts sent back to back.
    const t1 = process.hrtime.bigint();
    const base = acks;
    for (let i = 0; i < count; i++) sup.send('*', 'bench', i);
    await until(base + n * count);
    const s = Number(process.hrtime.bigint() - t1) / 1e9;
    console.log(JSON.stringify({
      type: 'broadcast', workers: n, count, p50us: lat[Math.floor(lat.length * 0.5)], p99us: lat[Math.floor(lat.length * 0.99)],
      broadcastsPerS: count / s, deliveriesPerS: (count * n) / s,
    }));
    await sup.stop();
    process.exit(0);
  }
  if (mode === 'restart') {
    const { cluster: c } = require(iomuxPath);
    const n = Number(a1);
    const kills = Number(a2);
    const sup = c.createSupervisor({ admin: false, log: () => {}, services: [{ name: 'web', worker: WORKER, count: n,
      listen: [{ port: 0, host: '127.0.0.1' }], restart: { initialDelay: 0, maxCrashes: 1000 } }] });
    await sup.start();
    const out = [];
    for (let i = 0; i < kills; i++) {
      const list = await sup.list();
      const victim = list[0].containers.find((x) => x.state === 'ready');
      const ready = new Promise((r) => sup.once('ready', r));
      const exited = new Promise((r) => sup.once('exit', r));
      const t0 = process.hrtime.bigint();
      process.kill(victim.pid, 'SIGKILL');
      await exited;
      const tExit = Number(process.hrtime.bigint() - t0) / 1e6;
      await ready;
      out.push({ exitMs: tExit, readyMs: Number(process.hrtime.bigint() - t0) / 1e6 });
      await new Promise((r) => setTimeout(r, 100));
    }
    // Node's own start-up, for comparison: an empty script, and one that loads iomux.
    const bare = [];
    const withIomux = [];
    for (let i = 0; i < 5; i++) {
      let t = process.hrtime.bigint();
      spawnSync(process.execPath, ['-e', '0']);
      bare.push(Number(process.hrtime.bigint() - t) / 1e6);
      t = process.hrtime.bigint();
      spawnSync(process.execPath, ['-e', `require(${JSON.stringify(iomuxPath)})`]);
      withIomux.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    const med = (xs) => xs.slice().sort((x, y) => x - y)[Math.floor(xs.length / 2)];
    console.log(JSON.stringify({
      type: 'restart', kills, exitMs: med(out.map((o) => o.exitMs)), readyMs: med(out.map((o) => o.readyMs)),
      readyMsMax: Math.max(...out.map((o) => o.readyMs)), nodeStartMs: med(bare), nodeIomuxStartMs: med(withIomux),
    }));
    await sup.stop();
    process.exit(0);
  }
  console.error('usage: see the comment at the top of cluster.js');
  process.exit(2);
}

main().catch((e) => { console.error(e); process.exit(1); });
