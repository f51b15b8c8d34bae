// load.js -- finds the native addon for this system and says why when none fits.
//
// Order: a local build (build/Release, made by node-gyp on this machine), then
// a prebuild from prebuilds/<platform>-<arch>/ chosen by node-gyp-build's rules
// (platform, arch, libc tag, N-API). A prebuild's C library requirement is
// recorded next to it (iomux.glibc.node: iomux.glibc.json) by scripts/prebuild.js; it is checked
// here before the .node file is opened, so a system with an older glibc, or
// with musl, gets an error that names both sides instead of a dlopen symbol
// error. Plain CommonJS: scripts/install.js uses it before TypeScript is built.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const os = require('node:os');

/** The C library of the running process: { libc: 'glibc', glibc: '2.36' } or { libc: 'musl' }. */
function runtimeLibc() {
  if (process.platform !== 'linux') return { libc: '' };
  let glibc;
  try {
    if (process.report && 'excludeNetwork' in process.report) process.report.excludeNetwork = true;
    glibc = process.report.getReport().header.glibcVersionRuntime;
  } catch {
    glibc = undefined;
  }
  if (glibc) return { libc: 'glibc', glibc: String(glibc) };
  return { libc: 'musl' };
}

function compareVersions(a, b) {
  const x = String(a).split('.').map(Number);
  const y = String(b).split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] || 0) - (y[i] || 0);
    if (d) return d < 0 ? -1 : 1;
  }
  return 0;
}

/** What node-gyp-build looks for on this system, as words. */
function wanted(libc) {
  const arch = process.env.npm_config_arch || os.arch();
  const platform = process.env.npm_config_platform || os.platform();
  return `prebuilds/${platform}-${arch}/iomux${libc.libc ? '[.' + libc.libc + ']' : ''}.node ` +
    `(N-API, node ${process.versions.node}, ${platform} ${arch}` +
    (libc.libc === 'glibc' ? `, glibc ${libc.glibc})` : libc.libc ? `, ${libc.libc})` : ')');
}

/** The recorded requirement of one prebuild file, or null when none was recorded. */
function requirement(file) {
  try {
    return JSON.parse(fs.readFileSync(file.replace(/\.node$/, '.json'), 'utf8'));
  } catch {
    return null;
  }
}

/**
 * Why a prebuild with requirement `req` cannot load on a system with C library
 * `libc`, or null when it fits. Exported for tests.
 */
function unfit(req, libc) {
  if (!req || !req.libc || process.platform !== 'linux') return null;
  if (req.libc === 'glibc') {
    if (libc.libc !== 'glibc') {
      return `it is built for glibc ${req.glibc} or newer, and this system's C library is not glibc ` +
        `(${libc.libc}; a musl build is tagged .musl.)`;
    }
    if (req.glibc && compareVersions(libc.glibc, req.glibc) < 0) {
      return `it needs glibc ${req.glibc} or newer, and this system has glibc ${libc.glibc}`;
    }
    return null;
  }
  if (req.libc === 'musl' && libc.libc !== 'musl') {
    return `it is built for musl, and this system's C library is ${libc.libc} ${libc.glibc || ''}`.trim();
  }
  return null;
}

/**
 * Resolves the addon under package root `root`:
 * { file, source: 'build' | 'prebuild', requirement } or { file: null, why }.
 */
function resolve(root, libc) {
  const local = path.join(root, 'build', 'Release', 'iomux.node');
  if (fs.existsSync(local)) return { file: local, source: 'build', requirement: null };
  libc = libc || runtimeLibc();
  let file;
  try {
    const ngb = require('node-gyp-build');
    file = ngb.resolve(root);
  } catch (err) {
    const dir = path.join(root, 'prebuilds');
    const have = fs.existsSync(dir)
      ? fs.readdirSync(dir).map((d) => {
        const sub = path.join(dir, d);
        const files = fs.statSync(sub).isDirectory() ? fs.readdirSync(sub).filter((f) => f.endsWith('.node')) : [];
        return `${d}/{${files.join(',')}}`;
      }).join(' ')
      : '';
    return {
      file: null,
      why: `no prebuild fits: looked for ${wanted(libc)}; ` +
        (have ? `the package has ${have}` : 'the package has no prebuilds/ directory') +
        (err && /No native build/.test(err.message) ? '' : ` (${err.message.split('\n')[0]})`),
    };
  }
  const req = requirement(file);
  const why = unfit(req, libc);
  if (why) {
    return { file: null, why: `the prebuild ${path.relative(root, file)} does not fit: ${why}` };
  }
  return { file, source: 'prebuild', requirement: req };
}

/** Loads the addon, or throws an Error that says what was looked for and why it did not fit. */
function load(root) {
  const r = resolve(root);
  if (!r.file) {
    const err = new Error(`iomux: cannot load the native addon: ${r.why}. ` +
      'Build it from source with `npm rebuild iomux --build-from-source` ' +
      '(needs a C/C++ compiler, make and python3).');
    err.code = 'IOMUX_NO_ADDON';
    throw err;
  }
  try {
    return require(r.file);
  } catch (cause) {
    const err = new Error(`iomux: the native addon ${path.relative(root, r.file)} (${r.source}) ` +
      `failed to load: ${cause.message.split('\n')[0]}` +
      (r.source === 'prebuild' ? '. Build it from source with `npm rebuild iomux --build-from-source`.' : ''));
    err.code = 'IOMUX_ADDON_LOAD';
    err.cause = cause;
    throw err;
  }
}

module.exports = { load, resolve, unfit, runtimeLibc, compareVersions, requirement };
