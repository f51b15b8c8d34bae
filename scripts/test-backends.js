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
  const rc = run(npx, ['tap', ...tapArgs], backend ? { IOMUX_BACKEND: backend } : {});
  results.push([name, rc === 0 ? 'passed' : `failed (exit ${rc})`]);
}
for (const [name, what] of results) console.log(`# backend ${name}: ${what}`);
process.exit(results.some(([, what]) => what !== 'passed' && what !== 'skipped') ? 1 : 0);
