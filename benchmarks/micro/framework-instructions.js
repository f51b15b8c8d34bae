'use strict';
// User-space instructions per request of the "express" and "fastify" rows'
// application (benchmarks/servers/http-framework.js), counted by callgrind:
// deterministic to a fraction of a percent, so two builds (or node:http and
// serveNode) can be compared on a machine too busy for CPU time to mean much.
// Kernel time (the syscalls) is not counted: this measures the JavaScript and
// native user-space work only.
//
//   node benchmarks/micro/framework-instructions.js <express|fastify> <http|iomux-node> [--dist DIR] [--requests N]
//
// The server runs under `valgrind --tool=callgrind` twice: once answering 300
// requests, once 300 + N (default 5000); autocannon's command line (10
// connections, GET /users/42) sends them. The difference of the two totals over N is the
// figure: start-up and shutdown cancel out (the JIT's warm-up does not
// entirely: compare figures taken with the same N). --dist loads iomux from
// another build's dist/ (default: this checkout's). How many requests iomux
// handles per batch changes the count a little, so two figures compare best
// when taken one after the other. Takes a minute or more per run.

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..', '..');
const SERVER = path.join(ROOT, 'benchmarks', 'servers', 'http-framework.js');
const BASE = 300;
const AUTOCANNON = path.join(path.dirname(require.resolve('autocannon/package.json')), 'autocannon.js');

function usage(msg) {
  process.stderr.write(`framework-instructions: ${msg}\n` +
    'usage: node benchmarks/micro/framework-instructions.js <express|fastify> <http|iomux-node> [--dist DIR] [--requests N]\n');
  process.exit(2);
}

const args = process.argv.slice(2);
const framework = args[0];
const impl = args[1];
if (!['express', 'fastify'].includes(framework)) usage(`unknown application ${JSON.stringify(framework)}`);
if (!['http', 'iomux-node'].includes(impl)) usage(`unknown server ${JSON.stringify(impl)}`);
let dist = path.join(ROOT, 'dist');
let requests = 5000;
for (let i = 2; i < args.length; i++) {
  if (args[i] === '--dist') dist = path.resolve(args[++i] ?? usage('--dist needs a directory'));
  else if (args[i] === '--requests') {
    requests = Number(args[++i]);
    if (!Number.isInteger(requests) || requests < 100) usage('--requests expects an integer >= 100');
  } else usage(`unknown argument ${args[i]}`);
}
if (impl === 'iomux-node' && !fs.existsSync(path.join(dist, 'http', 'node.js'))) usage(`no built iomux dist/ at ${dist}`);
if (spawnSync('valgrind', ['--version']).status !== 0) usage('valgrind is not installed (apt-get install valgrind)');

/** Total instructions of one server run that answers `count` requests. */
async function run(count, dir) {
  const out = path.join(dir, `callgrind.${count}.out`);
  const child = spawn('valgrind', ['--tool=callgrind', '--cache-sim=no', '--branch-sim=no', `--callgrind-out-file=${out}`,
    process.execPath, SERVER, impl, '0', framework], {
    cwd: ROOT, env: { ...process.env, IOMUX_BENCH_DIST: dist, IOMUX_BACKEND: 'epoll' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const port = await new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      const m = /^listening (\d+)/m.exec(stdout);
      if (m) { clearInterval(timer); resolve(Number(m[1])); }
      if (child.exitCode !== null) { clearInterval(timer); reject(new Error(`the server exited: ${stderr.slice(-2000)}`)); }
    }, 200);
  });
  // autocannon's command line in a process of its own, so that the timing of
  // the requests (and with it how many iomux handles per batch) does not
  // depend on this process.
  const load = spawnSync(process.execPath, [AUTOCANNON, '--json', '-c', '10', '-a', String(count), `http://127.0.0.1:${port}/users/42`],
    { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  let result = null;
  try {
    result = JSON.parse(load.stdout);
  } catch (_) {
    // reported below
  }
  if (result === null || result.non2xx || result.errors || result['2xx'] !== count) {
    child.kill('SIGKILL');
    throw new Error(`expected ${count} answers of 200, got ${result && result['2xx']} (${load.stderr.slice(-500)})`);
  }
  child.kill('SIGTERM');
  await exited;
  const m = /Collected : (\d+)/.exec(stderr);
  if (!m) throw new Error(`no instruction count from callgrind: ${stderr.slice(-2000)}`);
  const served = /"requests":(\d+)/.exec(stdout);
  if (!served || Number(served[1]) !== count) throw new Error(`the server counted ${served && served[1]} requests, not ${count}`);
  return Number(m[1]);
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iomux-callgrind-'));
  try {
    const base = await run(BASE, dir);
    const full = await run(BASE + requests, dir);
    const per = (full - base) / requests;
    console.log(JSON.stringify({ framework, impl, dist: impl === 'http' ? null : dist, requests, base, full, instructionsPerRequest: Math.round(per) }));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`framework-instructions: ${err && err.stack}\n`);
  process.exit(1);
});
