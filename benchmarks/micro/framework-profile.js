'use strict';
// Where a framework app's CPU goes, by file group: runs
// benchmarks/servers/http-framework.js under `node --cpu-prof` (pinned to
// CPU 0), loads it with autocannon (pinned to CPU 1, 10 connections,
// GET /users/42, every response checked by its status), and sums the
// profile's self time by the file each function lives in:
//
//   node benchmarks/micro/framework-profile.js <express|fastify> <http|iomux-node>
//        [--seconds N] [--dist DIR] [--top N]
//
// Prints µs of self time per request for each group (express/*, node:_http_*,
// node:internal/streams/*, iomux's dist/*, GC, ...) and the top functions.
// Sampling profiles add overhead of their own: compare groups and servers
// measured the same way, not these figures with the bench's.

const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const args = process.argv.slice(2);
const framework = args[0];
const impl = args[1];
if (!['express', 'fastify'].includes(framework) || !['http', 'iomux-node'].includes(impl)) {
  process.stderr.write('usage: node benchmarks/micro/framework-profile.js <express|fastify> <http|iomux-node> [--seconds N] [--dist DIR] [--top N]\n');
  process.exit(2);
}
function opt(name, def) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
}
const seconds = Number(opt('--seconds', '8'));
const dist = opt('--dist', null);
const top = Number(opt('--top', '25'));
const root = path.resolve(__dirname, '..', '..');
const haveTaskset = spawnSync('taskset', ['-c', '0', 'true']).status === 0;
const pin = (cpu, argv) => (haveTaskset ? ['taskset', ['-c', String(cpu), ...argv]] : [argv[0], argv.slice(1)]);

function group(url, fn) {
  if (url === '') {
    if (fn === '(garbage collector)') return 'gc';
    if (fn === '(program)') return '(program: native, outside JS)';
    if (fn === '(idle)') return '(idle)';
    return 'native builtins';
  }
  let m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (m) return m[1] === 'express' || m[1] === 'fastify' ? `${m[1]}/*` : `deps of the app (${m[1]}...)`;
  if (url.startsWith('node:_http_')) return 'node:_http_*';
  if (url.startsWith('node:internal/streams/')) return 'node:internal/streams/*';
  if (url.startsWith('node:')) return url;
  if (url.includes('/dist/')) return 'iomux dist/*';
  return url;
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iomux-prof-'));
  const env = { ...process.env };
  if (dist) env.IOMUX_BENCH_DIST = path.resolve(dist);
  const [cmd, argv] = pin(0, [process.execPath, '--cpu-prof', '--cpu-prof-dir', dir,
    path.join(root, 'benchmarks/servers/http-framework.js'), impl, '0', framework]);
  const server = spawn(cmd, argv, { env, stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    let buf = '';
    server.stdout.on('data', (d) => {
      buf += d;
      const m = /listening (\d+)/.exec(buf);
      if (m) resolve(Number(m[1]));
    });
    server.on('exit', (c) => reject(new Error(`server exited (${c})`)));
  });
  const url = `http://127.0.0.1:${port}/users/42`;
  const ac = path.join(root, 'node_modules/.bin/autocannon');
  const run = (secs) => {
    const [c, a] = pin(1, [ac, '-j', '-c', '10', '-d', String(secs), url]);
    const r = spawnSync(c, a, { encoding: 'utf8' });
    const j = JSON.parse(r.stdout);
    if (j.non2xx || j.errors) throw new Error(`bad responses: ${j.non2xx} non-2xx, ${j.errors} errors`);
    return j.requests.total;
  };
  // Warm up, then count only the samples taken during the measured run
  // (the profile's clock is the monotonic clock hrtime reads).
  const lines = [];
  let out = '';
  server.stdout.on('data', (d) => {
    out += d;
    let i;
    while ((i = out.indexOf('\n')) >= 0) {
      lines.push(out.slice(0, i));
      out = out.slice(i + 1);
    }
  });
  const statsNow = async () => {
    const n = lines.length;
    server.kill('SIGUSR2');
    while (lines.length === n) await new Promise((r) => setTimeout(r, 20));
    return JSON.parse(lines[lines.length - 1]);
  };
  run(2);
  const before = await statsNow();
  const t0 = Number(process.hrtime.bigint() / 1000n);
  run(seconds);
  const t1 = Number(process.hrtime.bigint() / 1000n);
  const after = await statsNow();
  await new Promise((resolve) => {
    server.on('exit', resolve);
    server.kill('SIGTERM');
  });
  const requests = after.app.requests - before.app.requests;
  const file = fs.readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
  const prof = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
  fs.rmSync(dir, { recursive: true, force: true });
  const dt = new Map();
  let ts = prof.startTime;
  for (let i = 0; i < prof.samples.length; i++) {
    ts += prof.timeDeltas[i];
    if (ts < t0 || ts > t1) continue;
    dt.set(prof.samples[i], (dt.get(prof.samples[i]) || 0) + prof.timeDeltas[i]);
  }
  const groups = new Map();
  const fns = new Map();
  let total = 0;
  for (const n of prof.nodes) {
    const t = dt.get(n.id) || 0;
    if (t === 0) continue;
    const cf = n.callFrame;
    const g = group(cf.url, cf.functionName);
    if (g === '(idle)') continue;
    total += t;
    groups.set(g, (groups.get(g) || 0) + t);
    const key = `${cf.functionName || '(anonymous)'} ${cf.url.replace(/^.*node_modules\//, '').replace(/^.*\/dist\//, 'dist/')}:${cf.lineNumber + 1}`;
    fns.set(key, (fns.get(key) || 0) + t);
  }
  const us = (t) => (t / requests).toFixed(2).padStart(7);
  process.stdout.write(`${framework} on ${impl}: ${requests} requests, ${(total / 1e6).toFixed(2)} s busy in the measured run (sampled), ${us(total)} µs/request\n\n`);
  for (const [g, t] of [...groups].sort((a, b) => b[1] - a[1])) {
    process.stdout.write(`${us(t)} µs  ${(100 * t / total).toFixed(1).padStart(5)}%  ${g}\n`);
  }
  process.stdout.write('\ntop functions (self):\n');
  for (const [f, t] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(`${us(t)} µs  ${(100 * t / total).toFixed(1).padStart(5)}%  ${f}\n`);
  }
}

main().catch((err) => {
  process.stderr.write(`${err.stack}\n`);
  process.exit(1);
});
