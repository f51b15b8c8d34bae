#!/usr/bin/env node
// The package's install step. Uses a prebuild when one fits this system (and
// loads: tried in a child process), else says which prebuild was looked for and
// why it did not fit, and builds from source with node-gyp (a C/C++ compiler,
// make and python3 needed). `npm install --build-from-source` (or
// npm_config_build_from_source=true) always builds.
'use strict';

const { spawnSync } = require('node:child_process');
const path = require('node:path');

const root = path.join(__dirname, '..');
const { resolve } = require(path.join(root, 'addon', 'load.js'));

function say(line) { console.error(`iomux: ${line}`); }

function tryLoad(file) {
  const r = spawnSync(process.execPath, ['-e', 'require(process.argv[1])', file], { encoding: 'utf8' });
  if (r.status === 0) return null;
  return (r.stderr || '').split('\n').find((l) => /Error/.test(l)) || `exit ${r.status}`;
}

function build(reason) {
  say(`${reason}; building from source with node-gyp (needs a C/C++ compiler, make and python3)`);
  // npm puts its own node-gyp on PATH for install scripts; a local one is used when present.
  let cmd = 'node-gyp';
  let args = ['rebuild'];
  try {
    const pkg = require.resolve('node-gyp/package.json', { paths: [root] });
    const bin = require(pkg).bin;
    cmd = process.execPath;
    args = [path.join(path.dirname(pkg), typeof bin === 'string' ? bin : bin['node-gyp']), 'rebuild'];
  } catch { /* npm's node-gyp */ }
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    say(`the build from source failed (${r.error ? r.error.message : `node-gyp exit ${r.status}`}). ` +
      'Install a C/C++ compiler, make and python3 (Debian: apt-get install build-essential python3), ' +
      'or use a platform with a prebuild (linux x64/arm64 glibc and musl, darwin x64/arm64).');
    return r.status || 1;
  }
  return 0;
}

function main() {
  if (process.env.npm_config_build_from_source === 'true') return build('--build-from-source was asked for');
  const r = resolve(root);
  if (!r.file) return build(r.why);
  const failure = tryLoad(r.file);
  if (failure) return build(`${path.relative(root, r.file)} did not load: ${failure}`);
  if (r.source === 'prebuild') {
    const req = r.requirement;
    say(`using the prebuild ${path.relative(root, r.file)}` +
      (req && req.libc === 'glibc' ? ` (needs glibc ${req.glibc} or newer)` : ''));
  }
  return 0;
}

process.exit(main());
