#!/usr/bin/env node
// Runs the tap suite once per event backend this machine has, forcing each
// with IOMUX_BACKEND: on Linux epoll, io_uring (when the kernel allows it) and
// kqueue over the emulation (test/kqemu: built here first); elsewhere the
// default (kqueue). Arguments go to tap. Exits non-zero when any run failed.
//
//   node scripts/test-backends.js                 every backend
//   IOMUX_BACKENDS=epoll,kqueue-emulated node scripts/test-backends.js
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const tapArgs = process.argv.slice(2);
const linux = process.platform === 'linux';
const wanted = process.env.IOMUX_BACKENDS
  ? process.env.IOMUX_BACKENDS.split(',').map((s) => s.trim()).filter(Boolean)
  : linux ? ['epoll', 'io_uring', 'kqueue-emulated'] : [''];

function run(cmd, args, env) {
  const r = spawnSync(cmd, args, { cwd: root, env: { ...process.env, ...env }, stdio: 'inherit' });
  return r.status === null ? 1 : r.status;
}

/** Why this backend cannot be loaded here, or null when it can. */
function unavailable(backend) {
  const r = spawnSync(process.execPath, ['-e', "require('./dist')"], {
    cwd: root, env: { ...process.env, IOMUX_BACKEND: backend }, encoding: 'utf8',
  });
  if (r.status === 0) return null;
  const line = (r.stderr || '').split('\n').find((l) => l.includes('iomux:'));
  return line ? line.replace(/^.*?iomux: /, '') : `exit ${r.status}`;
}

const npx = process.platform === 'win32' ? 'npx.cmd' : 'npx';

// On the kqueue emulation the suite leaves out the files whose subject sits
// well above the event backend and whose cost is processes, load or parsing,
// not socket paths: the supervisor and its primitives, the pipeline, the
// shared cache's stress runs, libzmq interop, node:http on iomux sockets
// (serveNode), the HTTP parser's fuzzing, memory per idle connection, the
// proxy's command line and the examples. The socket, HTTP, proxy, zmq and
// cache API files still run there. Those left out run on epoll and io_uring
// (and on the real kqueue, on macOS).
const ABOVE_THE_BACKEND = [
  /^cluster-/, /^sync/, /^pipeline/, /^shared-cache-(stress|http)/,
  /^zmq-(interop|fuzz)/, /^http-node/, /^http-fuzz/, /^idle-memory/, /^proxy-cli/, /^examples/,
];

/** The tap arguments for one backend: the emulation's subset when no files were named. */
function tapArgsFor(backend) {
  if (backend !== 'kqueue-emulated' || tapArgs.some((a) => !a.startsWith('-'))) return tapArgs;
  const files = fs.readdirSync(path.join(root, 'test'))
    .filter((f) => f.endsWith('.test.ts') && !ABOVE_THE_BACKEND.some((re) => re.test(f)))
    .map((f) => path.join('test', f));
  return [...tapArgs, ...files];
}
const results = [];
for (const backend of wanted) {
  const name = backend || 'default';
  if (backend === 'kqueue-emulated') {
    console.log('# building the kqueue-emulation test addon (test/kqemu)');
    if (run(npx, ['node-gyp', 'configure', '-C', 'test/kqemu'], {}) !== 0 ||
        run(npx, ['node-gyp', 'build', '-C', 'test/kqemu'], {}) !== 0) {
      results.push([name, 'build failed']);
      continue;
    }
  }
  const why = backend ? unavailable(backend) : null;
  if (why) {
    // A backend this kernel does not have is not a failure; say so.
    console.log(`# backend ${name}: skipped (${why})`);
    results.push([name, 'skipped']);
    continue;
  }
  console.log(`# backend ${name}: the tap suite`);
  const rc = run(npx, ['tap', ...tapArgsFor(backend)], backend ? { IOMUX_BACKEND: backend } : {});
  results.push([name, rc === 0 ? 'passed' : `failed (exit ${rc})`]);
}
for (const [name, what] of results) console.log(`# backend ${name}: ${what}`);
process.exit(results.some(([, what]) => what !== 'passed' && what !== 'skipped') ? 1 : 0);
