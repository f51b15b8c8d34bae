'use strict';
// The `cluster` scenario: HTTP keep-alive and churn served by 2 worker
// processes on one listener, three ways, alternating in each round:
//   iomux-cluster   an iomux supervisor: the master binds once, its workers
//                   (iomux HTTP) accept from the inherited socket, woken one
//                   per connection
//   node-cluster    node:cluster, round-robin (its default on Linux): the
//                   primary accepts and hands each connection to a worker;
//                   workers on node:http
//   reuseport x2    two plain iomux HTTP processes with SO_REUSEPORT, no
//                   master: the floor for the supervised row
// Server CPU is summed over every process of a candidate (master and
// workers, from /proc), per request (keep-alive) and per connection (churn);
// the master's share is its CPU over the workers'. The spread is how the
// connections divided between the 2 workers (accepted by the busier one /
// all), lightly loaded (2 connections, churn) and heavily (the full count).
// Then, once: a killed worker's replacement, SIGKILL to ready (accepting),
// next to Node's own start-up; and broadcasts from the master to 8 workers:
// latency until all 8 acked (p50/p99) and the rate of back-to-back ones.
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const U = require('./util');
const { runHttp } = require('./loadgen');

const SCRIPT = path.join(__dirname, '..', 'servers', 'cluster.js');
const CANDS = [
  { id: 'iomux-cluster', label: 'iomux cluster (2 workers)', procs: [['iomux-cluster', 2]] },
  { id: 'node-cluster', label: 'node:cluster RR (2 workers)', procs: [['node-cluster', 2]] },
  { id: 'reuseport', label: 'iomux reusePort x2 (no master)', procs: [['reuseport'], ['reuseport']] },
];

function childrenOf(pid) {
  const out = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const rest = st.slice(st.lastIndexOf(')') + 2).split(' ');
      if (Number(rest[1]) === pid) out.push(Number(d));
    } catch (_) { /* gone */ }
  }
  return out;
}

function start(env, mode, port, spec, spreadDir) {
  const [kind, workers] = spec;
  const args = [SCRIPT, kind, String(port), mode, ...(workers ? [String(workers)] : [])];
  const [cmd, argv] = env.pinned(0, process.execPath, args);
  const child = U.track(spawn(cmd, argv, {
    cwd: env.root, env: { ...process.env, ...env.iomuxEnv, SPREAD_DIR: spreadDir }, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
  }), { group: true });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr = (stderr + d).slice(-2000); });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${kind}: not listening within 30 s: ${stderr}`)), 30000);
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^listening (\d+) (\S+)/.exec(line);
      if (m) { clearTimeout(timer); resolve({ child, backend: m[2] }); }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${kind}: exited (${code}): ${stderr}`)); });
  });
}

function snapshot(roots) {
  const cpu = {};
  for (const r of roots) {
    cpu[r] = U.readProcCpuTicks(r);
    for (const c of childrenOf(r)) cpu[c] = U.readProcCpuTicks(c);
  }
  return cpu;
}

function spread(dir) {
  const out = {};
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.json'))) {
    try { const j = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')); out[j.pid] = j; } catch (_) { /* mid-write */ }
  }
  return out;
}

async function stopAll(procs) {
  for (const p of procs) { try { process.kill(-p.child.pid, 'SIGTERM'); } catch (_) { /* gone */ } }
  for (const p of procs) {
    const r = await U.waitExit(p.child, 5000);
    if (r.timedOut) { try { process.kill(-p.child.pid, 'SIGKILL'); } catch (_) { /* gone */ } }
  }
}

// One candidate, one load mode: CPU per unit, master share, spread.
async function measure(env, cand, mode, seconds, connections) {
  const spreadDir = fs.mkdtempSync(path.join(os.tmpdir(), 'iomux-bench-spread-'));
  const port = await U.freePort();
  const procs = [];
  try {
    for (const spec of cand.procs) procs.push(await start(env, mode, port, spec, spreadDir));
    const close = mode === 'close';
    // Two seconds at least: node:cluster's workers take longer than a
    // second to reach their pace here.
    await runHttp(env, port, Math.max(2, env.warmup), { connections, close, pipeline: 1 });
    const roots = procs.map((p) => p.child.pid);
    const c0 = snapshot(roots);
    const s0 = spread(spreadDir);
    const r = await runHttp(env, port, seconds, { connections, close, pipeline: 1 });
    await U.sleep(150); // the spread files are written every 100 ms
    const c1 = snapshot(roots);
    const s1 = spread(spreadDir);
    let total = 0;
    let master = 0;
    for (const [pid, t] of Object.entries(c1)) {
      const d = (t - (c0[pid] ?? t)) / env.clkTck;
      total += d;
      if (cand.procs.length === 1 && Number(pid) === roots[0]) master = d;
    }
    const key = close ? 'accepted' : 'requests';
    const per = Object.values(s1).map((w) => w[key] - ((s0[w.pid] || {})[key] || 0)).filter((x) => x >= 0);
    const sum = per.reduce((a, b) => a + b, 0);
    return {
      ok: true, units: r.units, rate: r.units / seconds, cpuUsPerUnit: (total / r.units) * 1e6,
      masterShare: cand.procs.length === 1 ? master / Math.max(1e-9, total - master) : null,
      busiestShare: sum ? Math.max(...per) / sum : null, perWorker: per, backend: procs[0].backend,
    };
  } catch (err) {
    return { ok: false, error: err.message };
  } finally {
    await stopAll(procs);
    fs.rmSync(spreadDir, { recursive: true, force: true });
  }
}

async function runOnce(env, mode, args) {
  const [cmd, argv] = env.pinned(0, process.execPath, [SCRIPT, mode, ...args.map(String)]);
  const child = U.track(spawn(cmd, argv, { cwd: env.root, env: { ...process.env, ...env.iomuxEnv }, stdio: ['ignore', 'pipe', 'pipe'], detached: true }), { group: true });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  child.stderr.setEncoding('utf8').on('data', (d) => { err = (err + d).slice(-2000); });
  const r = await U.waitExit(child, 120000);
  if (r.timedOut) { try { process.kill(-child.pid, 'SIGKILL'); } catch (_) { /* gone */ } }
  const line = out.split('\n').find((l) => l.startsWith('{'));
  if (!line) return { ok: false, error: `${mode}: no result (exit ${r.code}): ${err.trim().split('\n').pop() || ''}` };
  return { ok: true, ...JSON.parse(line) };
}

const med = (xs) => U.median(xs.filter((x) => x != null && Number.isFinite(x)));

async function runCluster(env, opts, log) {
  const rounds = opts.rounds;
  const seconds = opts.duration;
  const rows = [];
  const failures = [];
  const results = { keepalive: {}, close: {}, light: {} };
  for (const c of CANDS) for (const k of Object.keys(results)) results[k][c.id] = [];
  for (let round = 1; round <= rounds; round++) {
    const shift = (round - 1) % CANDS.length;
    const order = [...CANDS.slice(shift), ...CANDS.slice(0, shift)];
    for (const [key, mode, conns] of [['keepalive', 'keepalive', opts.connections], ['close', 'close', opts.connections], ['light', 'close', 2]]) {
      for (const c of order) {
        const t = Date.now();
        const r = await measure(env, c, mode, seconds, conns);
        results[key][c.id].push(r);
        if (!r.ok) failures.push(`cluster/${key}/${c.id}: ${r.error.split('\n')[0]}`);
        log(`bench:   cluster ${key} round ${round}/${rounds} ${c.id}: ` + (r.ok
          ? `${U.fmt(r.rate)} /s, ${U.fmt(r.cpuUsPerUnit)} CPU us per ${mode === 'close' ? 'connection' : 'request'}` +
            `${r.masterShare != null ? `, master ${U.fmt(r.masterShare * 100, 2)}% of workers` : ''}, busiest worker ${U.fmt((r.busiestShare || 0) * 100, 0)}% (${r.perWorker.join('/')})`
          : `FAILED: ${r.error}`) + ` [${((Date.now() - t) / 1000).toFixed(1)} s]`);
      }
    }
  }
  const restart = await runOnce(env, 'restart', [2, opts.quick ? 3 : 10]);
  if (!restart.ok) failures.push(`cluster/restart: ${restart.error}`);
  else log(`bench:   cluster restart: SIGKILL to replacement ready ${U.fmt(restart.readyMs)} ms (max ${U.fmt(restart.readyMsMax)}), exit seen after ${U.fmt(restart.exitMs, 2)} ms; node start-up ${U.fmt(restart.nodeStartMs)} ms, with iomux loaded ${U.fmt(restart.nodeIomuxStartMs)} ms`);
  const bc = await runOnce(env, 'broadcast', [8, opts.quick ? 300 : 3000]);
  if (!bc.ok) failures.push(`cluster/broadcast: ${bc.error}`);
  else log(`bench:   cluster broadcast to 8: p50 ${U.fmt(bc.p50us)} us, p99 ${U.fmt(bc.p99us)} us until all acked; ${U.fmt(bc.broadcastsPerS)} broadcasts/s = ${U.fmt(bc.deliveriesPerS)} deliveries/s`);

  const summary = {};
  for (const key of Object.keys(results)) {
    summary[key] = {};
    for (const c of CANDS) {
      const ok = results[key][c.id].filter((r) => r.ok);
      summary[key][c.id] = {
        rate: med(ok.map((r) => r.rate)), cpuUs: med(ok.map((r) => r.cpuUsPerUnit)),
        masterShare: med(ok.map((r) => r.masterShare)), busiest: med(ok.map((r) => r.busiestShare)),
      };
    }
  }
  const ratio = (key, a, b) => summary[key][a].cpuUs / summary[key][b].cpuUs;
  const pct = (x) => (x == null || !Number.isFinite(x) ? '-' : `${U.fmt(x * 100, 2)}%`);
  rows.push('## cluster: 2 workers on one listener', '',
    `Server CPU summed over master and workers (from /proc), medians of ${rounds} round(s) of ${seconds} s, ${opts.connections} connections` +
    `${env.loadgen ? `, ${env.loadgen.name}` : ''}; busiest: the share of requests (keep-alive) or connections (churn) the busier worker took.`, '',
    '| candidate | keep-alive req/s | CPU us/req | master/workers | busiest | churn conn/s | CPU us/conn | master/workers | busiest | light churn busiest |',
    '|---|---|---|---|---|---|---|---|---|---|');
  for (const c of CANDS) {
    const k = summary.keepalive[c.id];
    const cl = summary.close[c.id];
    rows.push(`| ${c.label} | ${U.fmt(k.rate)} | ${U.fmt(k.cpuUs)} | ${pct(k.masterShare)} | ${pct(k.busiest)} | ${U.fmt(cl.rate)} | ${U.fmt(cl.cpuUs)} | ${pct(cl.masterShare)} | ${pct(cl.busiest)} | ${pct(summary.light[c.id].busiest)} |`);
  }
  rows.push('', `iomux cluster / node:cluster CPU: ${U.fmt(ratio('keepalive', 'iomux-cluster', 'node-cluster'), 2)}x per request (target <= 0.65), ` +
    `${U.fmt(ratio('close', 'iomux-cluster', 'node-cluster'), 2)}x per connection (target <= 0.50). ` +
    `iomux cluster / reusePort x2: ${U.fmt(ratio('keepalive', 'iomux-cluster', 'reuseport'), 2)}x, ${U.fmt(ratio('close', 'iomux-cluster', 'reuseport'), 2)}x.`);
  if (restart.ok) {
    rows.push('', `Killed worker (SIGKILL) to its replacement ready and accepting: median ${U.fmt(restart.readyMs)} ms, max ${U.fmt(restart.readyMsMax)} ms over ${restart.kills} kills ` +
      `(restart backoff 0, the exit seen after ${U.fmt(restart.exitMs, 2)} ms); Node's own start-up, measured right after: ${U.fmt(restart.nodeStartMs)} ms for an empty script, ` +
      `${U.fmt(restart.nodeIomuxStartMs)} ms loading iomux (target: replacement within 150 ms plus Node's start-up).`);
  }
  if (bc.ok) {
    rows.push('', `Broadcast from the master to 8 workers, until all 8 acked: p50 ${U.fmt(bc.p50us)} us, p99 ${U.fmt(bc.p99us)} us; ` +
      `back to back: ${U.fmt(bc.broadcastsPerS)} broadcasts/s, ${U.fmt(bc.deliveriesPerS)} messages delivered/s.`);
  }
  return { markdown: rows.join('\n'), json: { summary, results, restart, broadcast: bc }, failures };
}

module.exports = { runCluster };
