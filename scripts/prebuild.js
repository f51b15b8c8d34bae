#!/usr/bin/env node
// Makes the N-API prebuilds with prebuildify, in a scratch copy of the sources
// so that the developer's build/ is left alone, and records next to each
// prebuild the C library it needs (iomux.glibc.node -> iomux.glibc.json;
// addon/load.js checks it). One JSON per prebuild, so that prebuilds made by
// different jobs (glibc and musl for one arch) merge into one directory.
//
//   node scripts/prebuild.js                 every target this machine can build
//   node scripts/prebuild.js --if-missing    only targets whose prebuilds/ dir is absent
//                                            (the prepack step: a release job that has
//                                            assembled every platform's prebuilds rebuilds none)
//   IOMUX_PREBUILD_TARGETS=linux-x64 node scripts/prebuild.js
//
// On Linux x64 the targets are linux-x64 (the host compiler) and linux-arm64
// when Debian's cross compiler aarch64-linux-gnu-gcc/g++ is on PATH. Elsewhere
// the host platform and arch. The headers are the running Node's own (its
// prefix has include/node); nothing is downloaded. N-API builds load on every
// Node version with N-API 8 or newer (Node 12.22+), so one build serves 20, 22, 24.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const ifMissing = process.argv.includes('--if-missing');

function which(cmd) {
  return (process.env.PATH || '').split(path.delimiter).some((d) => {
    try { fs.accessSync(path.join(d, cmd), fs.constants.X_OK); return true; } catch { return false; }
  });
}

function hostLibc() {
  if (process.platform !== 'linux') return '';
  return fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc';
}

/** Targets this machine can build: { name, arch, env, strip }. */
function targets() {
  const list = [{ name: `${process.platform}-${os.arch()}`, arch: os.arch(), env: {}, strip: 'strip' }];
  if (process.platform === 'linux' && os.arch() === 'x64' && hostLibc() === 'glibc') {
    if (which('aarch64-linux-gnu-gcc') && which('aarch64-linux-gnu-g++')) {
      list.push({
        name: 'linux-arm64', arch: 'arm64', strip: 'aarch64-linux-gnu-strip',
        env: { CC: 'aarch64-linux-gnu-gcc', CXX: 'aarch64-linux-gnu-g++', LINK: 'aarch64-linux-gnu-g++', AR: 'aarch64-linux-gnu-ar' },
      });
    } else {
      console.log('# linux-arm64: skipped (no aarch64-linux-gnu-gcc/g++ on PATH; apt-get install g++-aarch64-linux-gnu)');
    }
  }
  const only = process.env.IOMUX_PREBUILD_TARGETS;
  return only ? list.filter((t) => only.split(',').includes(t.name)) : list;
}

/** The highest GLIBC_ and GLIBCXX_ symbol versions an ELF file imports (readelf reads any arch). */
function elfNeeds(file) {
  const r = spawnSync('readelf', ['--dyn-syms', '-W', '-V', file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`readelf ${file}: ${r.stderr || r.error}`);
  const max = (re) => {
    const seen = [...r.stdout.matchAll(re)].map((m) => m[1]);
    return seen.sort((a, b) => {
      const x = a.split('.').map(Number); const y = b.split('.').map(Number);
      for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] || 0) !== (y[i] || 0)) return (x[i] || 0) - (y[i] || 0);
      return 0;
    }).pop() || null;
  };
  return { glibc: max(/\bGLIBC_(\d+(?:\.\d+)+)/g), glibcxx: max(/\bGLIBCXX_(\d+(?:\.\d+)+)/g) };
}

function copyTree(from, to) {
  fs.cpSync(from, to, { recursive: true, filter: (src) => !/[/\\](build|out|node_modules)$/.test(src) });
}

function main() {
  const prebuildify = path.join(path.dirname(require.resolve('prebuildify/package.json')), 'bin.js');
  const nodedir = path.resolve(path.dirname(process.execPath), '..');
  if (!fs.existsSync(path.join(nodedir, 'include', 'node', 'node_api.h'))) {
    console.error(`prebuild: no Node headers under ${nodedir}/include/node; set npm_config_nodedir`);
  }
  const todo = targets().filter((t) => !(ifMissing && fs.existsSync(path.join(root, 'prebuilds', t.name))));
  if (todo.length === 0) { console.log('# prebuilds: all present'); return 0; }

  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'iomux-prebuild-'));
  let failed = 0;
  try {
    for (const f of ['package.json', 'binding.gyp']) fs.copyFileSync(path.join(root, f), path.join(scratch, f));
    copyTree(path.join(root, 'addon'), path.join(scratch, 'addon'));
    copyTree(path.join(root, 'deps'), path.join(scratch, 'deps'));
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(scratch, 'node_modules'), 'dir');

    for (const t of todo) {
      console.log(`# prebuild ${t.name}`);
      const libcTag = process.platform === 'linux' ? ['--tag-libc'] : [];
      const args = [prebuildify, '--napi', '--strip', '--strip-bin', t.strip, '--arch', t.arch,
        '--target', process.versions.node, ...libcTag, '--cwd', scratch];
      const env = { ...process.env, ...t.env, npm_config_nodedir: process.env.npm_config_nodedir || nodedir };
      const r = spawnSync(process.execPath, args, { cwd: scratch, env, stdio: ['ignore', 'inherit', 'inherit'] });
      const dir = path.join(scratch, 'prebuilds', t.name);
      if (r.status !== 0 || !fs.existsSync(dir)) {
        console.error(`not ok - prebuild ${t.name} (prebuildify exit ${r.status})`);
        failed++;
        continue;
      }
      for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.node'))) {
        const entry = { platform: process.platform, arch: t.arch, napi: true, builtWith: `node ${process.versions.node}` };
        if (process.platform === 'linux') {
          const needs = elfNeeds(path.join(dir, file));
          entry.libc = file.includes('.musl.') ? 'musl' : 'glibc';
          if (entry.libc === 'glibc') entry.glibc = needs.glibc;
          if (needs.glibcxx) entry.glibcxx = needs.glibcxx;
        }
        fs.writeFileSync(path.join(dir, file.replace(/\.node$/, '.json')), JSON.stringify(entry, null, 2) + '\n');
        console.log(`# ${t.name}/${file}: ${JSON.stringify(entry)}`);
      }
      // Replace this flavour's files only: another libc's prebuild may sit beside them.
      const out = path.join(root, 'prebuilds', t.name);
      fs.mkdirSync(out, { recursive: true });
      for (const f of fs.readdirSync(dir)) fs.copyFileSync(path.join(dir, f), path.join(out, f));
      console.log(`ok - prebuild ${t.name}`);
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
  return failed ? 1 : 0;
}

process.exit(main());
