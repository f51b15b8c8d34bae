#!/usr/bin/env node
'use strict';
// node-http-tests.js -- runs Node's own test/parallel/test-http-*.js against
// iomux.http.serveNode(): every node http.Server's listen() is routed through
// serveNode(server).listen() by this same file, preloaded with --require.
//
// Node's tests are not part of this repository. Fetch a copy of Node's test/
// folder (for Node 20: the public repository denoland/node_test holds it) and
// point --tests at it:
//
//   node scripts/node-http-tests.js --tests /path/to/test --mode stock   # baseline
//   node scripts/node-http-tests.js --tests /path/to/test --mode iomux
//
// Options: --jobs N (default 2), --timeout ms (per test, default 60000),
// --filter REGEX (test file names), --json FILE (results, with the output of
// each failure), --quiet (no list of failures). IOMUX_DIST=dir loads iomux
// from another build's dist/ (to compare two builds).
// The preloaded part routes listen() the way an application would move over:
//   IOMUX_NODE_TESTS_ROUTE=serve     serveNode(server).listen(...) (default)
//   IOMUX_NODE_TESTS_ROUTE=takeover  serveNode(server, { takeOverListen: true }), then server.listen(...)

const path = require('node:path');

if (require.main !== module) {
  preload();
  return;
}

/** The preloaded part: route node http servers' listen() through iomux. */
function preload() {
  // node:http and iomux (which loads node:http) are loaded at the first
  // listen(): tests check that node loads its http parser lazily.
  const net = require('node:net');
  const route = process.env.IOMUX_NODE_TESTS_ROUTE || 'serve';
  const originalListen = net.Server.prototype.listen;
  const routed = new WeakSet();
  net.Server.prototype.listen = function listen(...args) {
    const http = require('node:http');
    const iomux = require(process.env.IOMUX_DIST || path.join(__dirname, '..', 'dist'));
    const first = args[0];
    // Only http.Server (not https, not net), and only ports and paths: a
    // handle or an fd stays with node.
    const handleLike = first !== null && typeof first === 'object' &&
      (first._handle !== undefined || first.handle !== undefined || first.fd !== undefined);
    if (!(this instanceof http.Server) || handleLike || routed.has(this)) {
      return originalListen.apply(this, args);
    }
    if (route === 'takeover') {
      routed.add(this);
      iomux.http.serveNode(this, { takeOverListen: true });
      return this.listen(...args);
    }
    iomux.http.serveNode(this).listen(...args);
    return this;
  };
}

// ---- the runner -----------------------------------------------------------------------

const { spawn } = require('node:child_process');
const fs = require('node:fs');

function parseArgs(argv) {
  const o = { tests: null, mode: 'iomux', jobs: 2, timeout: 60000, filter: null, json: null, listFailures: true };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--tests') o.tests = next();
    else if (a === '--mode') o.mode = next();
    else if (a === '--jobs') o.jobs = Number(next());
    else if (a === '--timeout') o.timeout = Number(next());
    else if (a === '--filter') o.filter = new RegExp(next());
    else if (a === '--json') o.json = next();
    else if (a === '--quiet') o.listFailures = false;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.tests) throw new Error('--tests DIR (Node\'s test/ folder) is required');
  if (o.mode !== 'stock' && o.mode !== 'iomux') throw new Error('--mode is stock or iomux');
  if (!(Number.isInteger(o.jobs) && o.jobs > 0)) throw new Error('--jobs must be a positive integer');
  return o;
}

/** The flags a test names in its '// Flags:' comment, as Node's test runner passes them. */
function testFlags(file) {
  const src = fs.readFileSync(file, 'utf8');
  const m = /^\/\/ Flags:(.*)$/m.exec(src);
  return m ? m[1].trim().split(/\s+/).filter(Boolean) : [];
}

function runOne(file, opts, slot) {
  return new Promise((resolve) => {
    const env = { ...process.env, TEST_THREAD_ID: String(slot), NODE_SKIP_FLAG_CHECK: '1' };
    if (opts.mode === 'iomux') {
      // NODE_OPTIONS so that child processes the tests start are routed too.
      env.NODE_OPTIONS = `${env.NODE_OPTIONS ? env.NODE_OPTIONS + ' ' : ''}--require=${__filename}`;
    }
    const started = Date.now();
    const child = spawn(process.execPath, [...testFlags(file), file], {
      cwd: path.dirname(path.dirname(file)), env, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
    });
    let out = '';
    const keep = (b) => {
      out += b.toString();
      if (out.length > 20000) out = out.slice(-10000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try { process.kill(-child.pid, 'SIGKILL'); } catch { /* gone */ }
    }, opts.timeout);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const status = timedOut ? 'timeout' : code === 0 ? 'pass' : 'fail';
      resolve({ test: path.basename(file), status, code, signal, ms: Date.now() - started, output: status === 'pass' ? '' : out.slice(-3000) });
    });
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const dir = path.join(path.resolve(opts.tests), 'parallel');
  let files = fs.readdirSync(dir).filter((f) => /^test-http-.*\.js$/.test(f)).sort();
  if (opts.filter) files = files.filter((f) => opts.filter.test(f));
  const results = [];
  let next = 0;
  const worker = async (slot) => {
    while (next < files.length) {
      const f = files[next++];
      const r = await runOne(path.join(dir, f), opts, slot);
      results.push(r);
      if (r.status !== 'pass') process.stderr.write(`${r.status.toUpperCase()} ${r.test} (${r.ms} ms)\n`);
    }
  };
  await Promise.all(Array.from({ length: opts.jobs }, (_, i) => worker(i)));
  results.sort((a, b) => a.test.localeCompare(b.test));
  const pass = results.filter((r) => r.status === 'pass').length;
  console.log(`${opts.mode}: ${pass} of ${results.length} pass (${process.version})`);
  if (opts.json) fs.writeFileSync(opts.json, JSON.stringify(results, null, 1));
  if (opts.listFailures) for (const r of results) if (r.status !== 'pass') console.log(`  ${r.status} ${r.test}`);
}

main().catch((err) => {
  console.error(err.message);
  process.exit(2);
});
