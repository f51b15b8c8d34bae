'use strict';
// bench.js -- the `stages` scenario: iomux.pipeline (prime_server's demo,
// GET /is_prime?possible_prime=N through 2 stages, parse then compute, with
// worker processes under the supervisor) against a plain iomux.http server
// doing the same work inline and the same pipeline on zeromq.js
// (zeromq-pipeline.js). Load from wrk (one thread) with a Lua script.
//
// Rows:
//   overhead  trivial work (N = 97): server CPU per request summed over every
//             process of the server (utime + stime from /proc/PID/stat of the
//             server and all its descendants, before and after the timed
//             run), and requests/s. The servers run pinned to CPU 0, wrk to
//             CPU 1; 1 worker per stage, 32 connections.
//   scaling   non-uniform work (N uniform in [0, 10^13): most N have a small
//             factor, a prime costs about 10^6 trial divisions): 1, 2 and 8
//             workers per stage; requests/s, p50 and p99. Not pinned: the
//             workers need both CPUs; 16 connections.
//   slow-share  a share (0 to 2 %) of slow jobs (a prime near 10^12) among
//             trivial ones: p50/p99 of the pipeline with 1 and 2 compute
//             workers against the inline server (a single FIFO); 8
//             connections, not pinned.
// Candidates take turns within each round (A B C, B C A, ...); medians.
//
// Standalone: node benchmarks/pipeline/bench.js [--quick] [--rounds N] [--duration S] [--rows overhead,scaling,slow-share] [--no-pin]
//   [--cands inline,pipeline-1-c16]  only these candidates
//   [--compare DIR]  each candidate also run from another build (DIR: a copy of dist/ kept next to
//                    it in the repository, e.g. dist-old), as "<cand>@B", in the same turns
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const readline = require('readline');
const U = require('../lib/util');

const SERVER = path.join(__dirname, 'server.js');
const TRIVIAL_N = 97;
const SLOW_N = 999999999989; // the largest prime below 10^12
const RANGE = 1e14;

function descendants(root) {
  const kids = new Map();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(d));
    } catch (_) { /* gone */ }
  }
  const out = [root];
  for (let i = 0; i < out.length; i++) out.push(...(kids.get(out[i]) || []));
  return out;
}

function cpuTicks(root) {
  const m = {};
  for (const pid of descendants(root)) {
    const t = U.readProcCpuTicks(pid);
    if (t !== null) m[pid] = t;
  }
  return m;
}

function cpuDelta(a, b) {
  let d = 0;
  for (const [pid, t] of Object.entries(b)) d += t - (a[pid] ?? 0);
  return d;
}

function pinned(env, cpu, cmd, args) {
  return env.pin && cpu !== null ? [env.taskset, ['-c', String(cpu), cmd, ...args]] : [cmd, args];
}

function startServer(env, args, cpu, extraEnv = {}) {
  const [cmd, argv] = pinned(env, cpu, process.execPath, [SERVER, ...args]);
  const child = U.track(spawn(cmd, argv, {
    env: { ...process.env, ...env.iomuxEnv, IOMUX_BACKEND: process.env.IOMUX_BACKEND || 'epoll', ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'], detached: true,
  }), { group: true });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d) => { stderr = (stderr + d).slice(-2000); });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${args.join(' ')}: not listening within 60 s: ${stderr}`)), 60000);
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^listening (\d+)/.exec(line);
      if (m) { clearTimeout(timer); resolve({ child, port: Number(m[1]), pid: child.pid }); }
    });
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`${args.join(' ')}: exited (${code}): ${stderr}`)); });
  });
}

async function stopServer(s) {
  if (!s) return;
  try { process.kill(-s.child.pid, 'SIGTERM'); } catch (_) { /* gone */ }
  const r = await U.waitExit(s.child, 5000);
  if (r.timedOut) { try { process.kill(-s.child.pid, 'SIGKILL'); } catch (_) { /* gone */ } }
}

// A wrk Lua script: trivial N, a share of slow N, or N uniform in [0, RANGE).
function luaScript(dir, name, mix) {
  const file = path.join(dir, `${name}.lua`);
  let body;
  if (mix.kind === 'uniform') {
    body = `math.randomseed(${mix.seed || 42})\nrequest = function()\n  return wrk.format(nil, "/is_prime?possible_prime=" .. string.format("%.0f", math.floor(math.random() * ${RANGE})))\nend\n`;
  } else {
    // Formatted in init(): wrk sets the Host header after the script loads.
    body = `math.randomseed(${mix.seed || 42})\nlocal fast, slow\ninit = function(args)\n  fast = wrk.format(nil, "/is_prime?possible_prime=${TRIVIAL_N}")\n  slow = wrk.format(nil, "/is_prime?possible_prime=${SLOW_N}")\nend\n` +
      `request = function()\n  if math.random() < ${mix.share || 0} then return slow end\n  return fast\nend\n`;
  }
  // Any non-2xx answer fails the run.
  body += 'response = function(status, headers, body)\n  if status ~= 200 then wrk.thread:stop() end\nend\n';
  fs.writeFileSync(file, body);
  return file;
}

function parseDuration(s) {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(s);
  if (!m) return null;
  return Number(m[1]) * { us: 1e-3, ms: 1, s: 1e3, m: 6e4 }[m[2]];
}

async function wrk(env, port, seconds, connections, script, cpu) {
  const [cmd, argv] = pinned(env, cpu, env.wrk, ['-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '30s', '--latency', '-s', script, `http://127.0.0.1:${port}/`]);
  const child = U.track(spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], detached: true }), { group: true });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  const r = await U.waitExit(child, (seconds + 30) * 1000);
  if (r.timedOut) throw new Error('wrk did not finish');
  const m = /(\d+) requests in/.exec(out);
  if (!m) throw new Error(`wrk: no result: ${out.slice(-300)}`);
  const lat = {};
  for (const [, p, v] of out.matchAll(/^\s+(50|90|99)%\s+(\S+)/gm)) lat[p] = parseDuration(v);
  const errs = /Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)/.exec(out);
  if (errs) throw new Error(`wrk saw errors: ${errs[0]}`);
  return { units: Number(m[1]), p50: lat['50'], p90: lat['90'], p99: lat['99'] };
}

// Worker processes unless said otherwise; "16 jobs/worker": the stages'
// `concurrency` (and the zeromq.js workers' slots) at 16 instead of 1.
const C16 = { IOMUX_BENCH_CONCURRENCY: '16' };
const CANDS = {
  inline: { label: 'iomux.http inline (1 process, one FIFO)', args: ['inline'] },
  'pipeline-1': { label: 'iomux.pipeline, 1 worker/stage', args: ['pipeline', '1'] },
  'pipeline-1-c16': { label: 'iomux.pipeline, 1 worker/stage, 16 jobs/worker', args: ['pipeline', '1'], env: C16 },
  'pipeline-inproc-c16': { label: 'iomux.pipeline, in-process workers, 16 jobs/worker', args: ['pipeline', '1'], env: { ...C16, IOMUX_BENCH_WORKERS: 'inprocess' } },
  'pipeline-2': { label: 'iomux.pipeline, 2 workers/stage', args: ['pipeline', '2'] },
  'pipeline-8': { label: 'iomux.pipeline, 8 workers/stage', args: ['pipeline', '8'] },
  'zeromq-1': { label: 'zeromq.js pipeline, 1 worker/stage', args: ['zeromq', '1'] },
  'zeromq-1-c16': { label: 'zeromq.js pipeline, 1 worker/stage, 16 jobs/worker', args: ['zeromq', '1'], env: C16 },
};

// One row: start every candidate (pinned or not), warm each, then timed runs in turns.
async function runRow(env, row, log) {
  const servers = {};
  const results = {};
  try {
    for (const id of row.cands) {
      servers[id] = await startServer(env, CANDS[id].args, row.pin ? 0 : null, CANDS[id].env);
      results[id] = [];
    }
    for (const v of row.variants) {
      v.script = luaScript(env.dir, `${row.id}-${v.id}`, v.mix);
      for (const id of row.cands) await wrk(env, servers[id].port, env.warmup, row.connections, v.script, row.pin ? 1 : null);
    }
    for (let round = 1; round <= env.rounds; round++) {
      const shift = (round - 1) % row.cands.length;
      const order = [...row.cands.slice(shift), ...row.cands.slice(0, shift)];
      for (const v of row.variants) {
        for (const id of order) {
          const s = servers[id];
          const c0 = cpuTicks(s.pid);
          const m0 = U.readMachineTicks();
          const t0 = process.hrtime.bigint();
          const r = await wrk(env, s.port, env.duration, row.connections, v.script, row.pin ? 1 : null);
          const el = Number(process.hrtime.bigint() - t0) / 1e9;
          const c1 = cpuTicks(s.pid);
          const m1 = U.readMachineTicks();
          const cpuS = cpuDelta(c0, c1) / env.clkTck;
          // The whole machine's busy CPU (all CPUs, in % of one): server + wrk + everything else running.
          const busyPct = m0 && m1 ? ((m1.busy - m0.busy) / env.clkTck / el) * 100 : null;
          const res = {
            variant: v.id, cand: id, round, rate: r.units / env.duration, cpuUs: (cpuS / r.units) * 1e6, cpuPct: (cpuS / el) * 100, busyPct,
            p50: r.p50, p90: r.p90, p99: r.p99, units: r.units,
          };
          results[id].push(res);
          log(`bench:   stages ${row.id} ${v.id} round ${round}/${env.rounds} ${CANDS[id].label}: ${U.fmt(res.rate, 0)} req/s, ` +
            `${U.fmt(res.cpuUs, 1)} µs CPU/req (${U.fmt(res.cpuPct, 0)}% CPU), p50 ${U.fmt(res.p50, 2)} ms, p99 ${U.fmt(res.p99, 2)} ms`);
        }
      }
    }
  } finally {
    for (const s of Object.values(servers)) await stopServer(s);
  }
  return results;
}

const ROWS = [
  {
    id: 'overhead', pin: true, connections: 32,
    cands: ['inline', 'pipeline-1', 'zeromq-1', 'pipeline-1-c16', 'zeromq-1-c16', 'pipeline-inproc-c16'], variants: [{ id: 'trivial', mix: { kind: 'fixed', share: 0 } }] },
  { id: 'scaling', pin: false, connections: 16, cands: ['pipeline-1', 'pipeline-2', 'pipeline-8'], variants: [{ id: 'uniform', mix: { kind: 'uniform' } }] },
  {
    id: 'slow-share', pin: false, connections: 8, cands: ['inline', 'pipeline-1', 'pipeline-2'],
    variants: [0, 0.002, 0.005, 0.01, 0.02].map((share) => ({ id: `slow ${share * 100}%`, mix: { kind: 'fixed', share } })),
  },
];

function med(rs, key) {
  return U.median(rs.map((r) => r[key]).filter((x) => x != null && Number.isFinite(x)));
}

function summarize(all) {
  const out = {};
  for (const [rowId, res] of Object.entries(all)) {
    out[rowId] = {};
    for (const [cand, rs] of Object.entries(res)) {
      for (const v of [...new Set(rs.map((r) => r.variant))]) {
        const x = rs.filter((r) => r.variant === v);
        (out[rowId][v] ??= {})[cand] = {
          rate: med(x, 'rate'), cpuUs: med(x, 'cpuUs'), cpuPct: med(x, 'cpuPct'), busyPct: med(x, 'busyPct'), p50: med(x, 'p50'), p99: med(x, 'p99'), rounds: x.length,
        };
      }
    }
  }
  return out;
}

function targets(s) {
  const t = [];
  const o = s.overhead && s.overhead.trivial;
  for (const [p, z, how] of [['pipeline-1', 'zeromq-1', '1 job/worker'], ['pipeline-1-c16', 'zeromq-1-c16', '16 jobs/worker']]) {
    if (o && o.inline && o[p]) {
      const r = o[p].cpuUs / o.inline.cpuUs;
      t.push({ target: `overhead of two stages <= 3x the inline server's CPU per request (${how})`, value: `${U.fmt(r, 2)}x`, met: r <= 3 });
    }
    if (o && o[z] && o[p]) {
      const r = o[p].rate / o[z].rate;
      t.push({ target: `>= 3x the requests/s of the zeromq.js pipeline (${how})`, value: `${U.fmt(r, 2)}x`, met: r >= 3 });
    }
  }
  const sc = s.scaling && s.scaling.uniform;
  if (sc && sc['pipeline-1'] && sc['pipeline-2']) {
    const r = sc['pipeline-2'].rate / sc['pipeline-1'].rate;
    t.push({ target: 'non-uniform work: 2 workers/stage >= 1.7x the throughput of 1', value: `${U.fmt(r, 2)}x`, met: r >= 1.7 });
  }
  const ss = s['slow-share'];
  if (ss) {
    const vs = Object.keys(ss);
    const first = ss[vs[0]];
    const last = ss[vs[vs.length - 1]];
    if (first && last && first.inline && last.inline && first['pipeline-2'] && last['pipeline-2']) {
      const gi = last.inline.p99 / first.inline.p99;
      const gp = last['pipeline-2'].p99 / first['pipeline-2'].p99;
      t.push({ target: `p99 from ${vs[0]} to ${vs[vs.length - 1]} slow jobs grows less than a single FIFO's`, value: `pipeline ${U.fmt(gp, 1)}x, single FIFO ${U.fmt(gi, 1)}x`, met: gp < gi });
    }
  }
  return t;
}

function render(s, t, env) {
  const lines = ['## Pipeline stages (iomux.pipeline, prime_server\'s demo)', '',
    `${env.rounds} round(s) of ${env.duration} s per candidate and variant, medians; wrk 1 thread; ` +
    `${env.pin ? 'overhead row: servers (all their processes) on CPU 0, wrk on CPU 1' : 'not pinned'}. CPU per request: utime+stime of the server and every descendant. ` +
    '"Machine busy %": all CPUs, in % of one (200 = both busy): when it is well above server + wrk, other work was running and throughput and latency are not the server\'s alone.', ''];
  for (const [rowId, vars] of Object.entries(s)) {
    lines.push(`### ${rowId}`, '', '| variant | candidate | req/s | server CPU µs/req | server CPU % | machine busy % | p50 ms | p99 ms |',
      '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const [v, cands] of Object.entries(vars)) {
      for (const [c, x] of Object.entries(cands)) {
        lines.push(`| ${v} | ${CANDS[c].label} | ${U.fmt(x.rate, 0)} | ${U.fmt(x.cpuUs, 1)} | ${U.fmt(x.cpuPct, 0)} | ${U.fmt(x.busyPct, 0)} | ${U.fmt(x.p50, 2)} | ${U.fmt(x.p99, 2)} |`);
      }
    }
    lines.push('');
  }
  lines.push('| target | measured | verdict |', '| --- | --- | --- |');
  for (const x of t) lines.push(`| ${x.target} | ${x.value} | ${x.met ? '**met**' : 'not met'} |`);
  return lines.join('\n');
}

async function run(opts = {}) {
  const log = opts.log || ((l) => process.stderr.write(l + '\n'));
  const taskset = U.which('taskset');
  const env = {
    wrk: U.which('wrk'), taskset, pin: opts.pin !== false && !!taskset && os.cpus().length >= 2,
    clkTck: U.clockTicks(), rounds: opts.rounds || (opts.quick ? 1 : 3), duration: opts.duration || (opts.quick ? 1 : 3),
    warmup: 1, iomuxEnv: opts.iomuxEnv || {}, dir: fs.mkdtempSync(path.join(os.tmpdir(), 'iomux-bench-stages-')),
  };
  const failures = [];
  if (!env.wrk) return { failures: ['stages: wrk is not installed (apt-get install wrk)'], markdown: '', summary: null, targets: [] };
  let hasZeromq = true;
  try { require.resolve('zeromq'); } catch (_) { hasZeromq = false; }
  const all = {};
  try {
    for (const row of ROWS) {
      if (opts.rows && !opts.rows.includes(row.id)) continue;
      const r = { ...row, cands: row.cands.filter((c) => (hasZeromq || !c.startsWith('zeromq')) && (!opts.cands || opts.cands.includes(c))) };
      if (opts.compare) {
        const dir = path.resolve(opts.compare);
        for (const c of [...r.cands]) {
          CANDS[`${c}@B`] = { ...CANDS[c], label: `${CANDS[c].label} [${path.basename(dir)}]`, env: { ...CANDS[c].env, IOMUX_BENCH_DIST: dir } };
          r.cands.push(`${c}@B`);
        }
      }
      // --quick (CI): the first and last variants only.
      if (opts.quick && r.variants.length > 2) r.variants = [r.variants[0], r.variants[r.variants.length - 1]];
      try {
        all[row.id] = await runRow(env, r, log);
      } catch (err) {
        failures.push(`stages/${row.id}: ${err.message.split('\n')[0]}`);
        log(`bench:   stages ${row.id} FAILED: ${err.stack || err}`);
      }
    }
  } finally {
    fs.rmSync(env.dir, { recursive: true, force: true });
  }
  const summary = summarize(all);
  const t = targets(summary);
  return { results: all, summary, targets: t, markdown: render(summary, t, env), failures, config: { rounds: env.rounds, duration: env.duration, pinned: env.pin } };
}

module.exports = { run, ROWS };

if (require.main === module) {
  const a = process.argv.slice(2);
  const val = (name) => { const i = a.indexOf(name); return i >= 0 ? a[i + 1] : undefined; };
  run({
    quick: a.includes('--quick'), rounds: Number(val('--rounds')) || undefined, duration: Number(val('--duration')) || undefined,
    rows: val('--rows') ? val('--rows').split(',') : undefined, pin: !a.includes('--no-pin'),
    cands: val('--cands') ? val('--cands').split(',') : undefined, compare: val('--compare'),
  }).then((r) => {
    process.stdout.write(r.markdown + '\n');
    if (r.failures.length) { process.stderr.write(r.failures.join('\n') + '\n'); process.exitCode = 1; }
  }, (e) => { process.stderr.write(`${e.stack || e}\n`); process.exitCode = 1; });
}
