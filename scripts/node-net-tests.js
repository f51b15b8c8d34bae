'use strict';
// Runs Node's own test/parallel/test-net-*.js files against iomux: a preload
// makes require('net') return a copy of node:net whose createServer,
// createConnection, connect, Socket and Server are iomux's. Node's tests are
// not part of this repository: point --tests at a checkout of Node's test/
// folder (the version matching the runtime, e.g. v20.11.1's).
//
//   node scripts/node-net-tests.js --tests DIR [--impl iomux|stock] [--timeout MS]
//        [--jobs N] [--filter SUBSTRING] [--json FILE] [--verbose]
//
// Tests that reach into node's internals are skipped: those using _handle,
// --expose-internals or internal/ modules, cluster, or private (underscore)
// functions of net. The report lists pass, fail and hang (killed after
// --timeout ms), with the first lines of each failure's output.
//
// The shim is this file itself, preloaded with --require (NODE_OPTIONS, so
// that child processes the tests spawn get it too) and selected by
// IOMUX_NET_SHIM.

const path = require('node:path');

if (process.env.IOMUX_NET_SHIM) {
  installShim(process.env.IOMUX_NET_SHIM);
} else if (require.main === module) {
  process.nextTick(main);
}

function installShim(distDir) {
  const Module = require('node:module');
  const realNet = require('node:net');
  const iomux = require(distDir);
  const copy = Object.assign({}, realNet, {
    createServer: iomux.createServer,
    createConnection: iomux.createConnection,
    connect: iomux.connect,
    Socket: iomux.Socket,
    Server: iomux.Server,
  });
  const load = Module._load;
  Module._load = function (request, parent, isMain) {
    if (request === 'net' || request === 'node:net') return copy;
    return load.call(this, request, parent, isMain);
  };
}

const SKIP = [
  [/_handle/, '_handle'],
  [/--expose[-_]internals|require\(['"]internal\//, 'internals'],
  [/\bcluster\b/, 'cluster'],
  [/\bnet\._\w+|\b(socket|server|client|s|c|conn)\._[a-z]\w*\(/, 'private function'],
];

function parseArgs(argv) {
  const o = { tests: null, impl: 'iomux', timeout: 20000, jobs: 2, filter: '', json: null, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const v = () => argv[++i];
    if (a === '--tests') o.tests = v();
    else if (a === '--impl') o.impl = v();
    else if (a === '--timeout') o.timeout = Number(v());
    else if (a === '--jobs') o.jobs = Number(v());
    else if (a === '--filter') o.filter = v();
    else if (a === '--json') o.json = v();
    else if (a === '--verbose') o.verbose = true;
    else {
      console.error(`unknown argument ${a}`);
      process.exit(2);
    }
  }
  if (!o.tests || !['iomux', 'stock'].includes(o.impl)) {
    console.error('usage: node scripts/node-net-tests.js --tests NODE_TEST_DIR [--impl iomux|stock] [--timeout MS] [--jobs N] [--filter S] [--json FILE]');
    process.exit(2);
  }
  return o;
}

function runOne(file, o) {
  const fs = require('node:fs');
  const { spawn } = require('node:child_process');
  const src = fs.readFileSync(file, 'utf8');
  for (const [re, why] of SKIP) if (re.test(src)) return Promise.resolve({ file, result: 'skip', why });
  const flags = [];
  const m = /^\/\/ Flags: (.*)$/m.exec(src);
  if (m) flags.push(...m[1].trim().split(/\s+/));
  const env = { ...process.env };
  if (o.impl === 'iomux') {
    env.IOMUX_NET_SHIM = path.resolve(__dirname, '..', 'dist');
    env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? ''} --require ${__filename}`.trim();
  }
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...flags, file], { cwd: path.dirname(file), env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { if (out.length < 20000) out += d; });
    child.stderr.on('data', (d) => { if (out.length < 20000) out += d; });
    let hung = false;
    const timer = setTimeout(() => { hung = true; child.kill('SIGKILL'); }, o.timeout);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const result = hung ? 'hang' : code === 0 ? 'pass' : 'fail';
      resolve({ file, result, code, signal, out });
    });
  });
}

async function main() {
  const fs = require('node:fs');
  const o = parseArgs(process.argv.slice(2));
  const dir = path.resolve(o.tests, 'parallel');
  const files = fs.readdirSync(dir).filter((f) => /^test-net-.*\.js$/.test(f) && f.includes(o.filter)).sort()
    .map((f) => path.join(dir, f));
  const results = [];
  let next = 0;
  async function worker() {
    while (next < files.length) {
      const r = await runOne(files[next++], o);
      results.push(r);
      if (o.verbose) console.log(`${r.result.padEnd(4)} ${path.basename(r.file)}${r.why ? ` (${r.why})` : ''}`);
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, o.jobs) }, worker));
  results.sort((a, b) => a.file.localeCompare(b.file));
  const count = (k) => results.filter((r) => r.result === k).length;
  for (const r of results) {
    if (r.result === 'fail' || r.result === 'hang') {
      const lines = r.out.split('\n').filter((l) => /Error|assert|expected|actual|Mismatched|at .*test-net/.test(l)).slice(0, 4);
      console.log(`${r.result.toUpperCase()} ${path.basename(r.file)}\n    ${lines.join('\n    ')}`);
    }
  }
  console.log(`\n${o.impl}: ${files.length} files, ${count('skip')} skipped, ${count('pass')} pass, ${count('fail')} fail, ${count('hang')} hang`);
  if (o.json) {
    fs.writeFileSync(o.json, JSON.stringify(results.map(({ file, result, why, code, signal }) =>
      ({ test: path.basename(file), result, why, code, signal })), null, 1));
  }
}
