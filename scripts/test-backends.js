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

// Files whose subject is processes, not sockets: the supervisor, the
// crash-proof primitives, the shared cache's stress runs, the pipeline, the
// proxy's command line and the examples. Their cost is forks, kills and
// waits, and the socket paths they take are the ones the rest of the suite
// covers on every backend, so they run once: on the backend the loop picks by
// default (io_uring where the kernel allows it, else epoll). That keeps CI
// inside its time.
const PROCESS_LEVEL = [
  /^cluster-/, /^sync/, /^pipeline/, /^shared-cache-(stress|http)/, /^proxy-cli/, /^examples/,
];

// On the kqueue emulation the suite also leaves out the files whose subject
// sits well above the event backend and whose cost is load or parsing: libzmq
// interop, node:http on iomux sockets (serveNode), the HTTP parser's fuzzing
// and memory per idle connection. The socket, HTTP, proxy, zmq and cache API
// files still run there. Those left out run on the Linux backends as above
// (and on the real kqueue, on macOS).
const ABOVE_THE_BACKEND = [
  ...PROCESS_LEVEL, /^zmq-(interop|fuzz)/, /^http-node/, /^http-fuzz/, /^idle-memory/,
];

/** The backend the loop picks when none is forced. */
function defaultBackend() {
  const r = spawnSync(process.execPath, ['-e', "process.stdout.write(require('./dist').loop.backend)"], {
    cwd: root, env: { ...process.env, IOMUX_BACKEND: '' }, encoding: 'utf8',
  });
  return r.status === 0 ? r.stdout.trim() : '';
}

/** The tap arguments for one backend: when no files were named, the subset that backend runs. */
function tapArgsFor(backend, byDefault) {
  if (tapArgs.some((a) => !a.startsWith('-'))) return tapArgs;
  // The process-level files are left out only when this run also covers the
  // default backend (IOMUX_BACKENDS=epoll alone runs them on epoll).
  const leftOut = backend === 'kqueue-emulated' ? ABOVE_THE_BACKEND
    : backend && byDefault && backend !== byDefault && wanted.includes(byDefault) ? PROCESS_LEVEL : [];
  if (!leftOut.length) return tapArgs;
  const files = fs.readdirSync(path.join(root, 'test'))
    .filter((f) => f.endsWith('.test.ts') && !leftOut.some((re) => re.test(f)))
    .map((f) => path.join('test', f));
  console.log(`# backend ${backend}: ${files.length} files; the default backend (${byDefault || 'unknown'}) runs every file`);
  return [...tapArgs, ...files];
}
const byDefault = linux ? defaultBackend() : '';
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
  const rc = run(npx, ['tap', ...tapArgsFor(backend, byDefault)], backend ? { IOMUX_BACKEND: backend } : {});
  results.push([name, rc === 0 ? 'passed' : `failed (exit ${rc})`]);
}
for (const [name, what] of results) console.log(`# backend ${name}: ${what}`);
process.exit(results.some(([, what]) => what !== 'passed' && what !== 'skipped') ? 1 : 0);
