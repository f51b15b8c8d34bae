// addon/load.js: which native addon is chosen, and the words used when none fits.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, arch } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const loader = require('../addon/load.js');
const root = join(__dirname, '..');
const built = join(root, 'build', 'Release', 'iomux.node');
const glibc236 = { libc: 'glibc', glibc: '2.36' };

t.test('version comparison is numeric, part by part', async (t) => {
  t.equal(loader.compareVersions('2.9', '2.10'), -1);
  t.equal(loader.compareVersions('2.32', '2.32'), 0);
  t.equal(loader.compareVersions('2.36', '2.4'), 1);
  t.equal(loader.compareVersions('2.17.1', '2.17'), 1);
});

t.test('a libc requirement is checked against the running C library', { skip: process.platform !== 'linux' && 'Linux only' }, async (t) => {
  t.equal(loader.unfit({ libc: 'glibc', glibc: '2.32' }, glibc236), null, 'older glibc needed: fits');
  t.equal(loader.unfit({ libc: 'glibc', glibc: '2.36' }, glibc236), null, 'the same glibc: fits');
  t.match(loader.unfit({ libc: 'glibc', glibc: '2.38' }, glibc236), 'needs glibc 2.38 or newer, and this system has glibc 2.36');
  t.match(loader.unfit({ libc: 'glibc', glibc: '2.17' }, { libc: 'musl' }), /not glibc \(musl/);
  t.match(loader.unfit({ libc: 'musl' }, glibc236), /built for musl, and this system's C library is glibc 2.36/);
  t.equal(loader.unfit(null, glibc236), null, 'no recorded requirement: node-gyp-build decides');
  const here = loader.runtimeLibc();
  t.ok(here.libc === 'musl' || /^\d+\.\d+/.test(here.glibc), `this system: ${JSON.stringify(here)}`);
});

/** A package directory holding only a prebuild of this machine's addon and its manifest. */
function fakePackage(t: Test, manifest: object | null) {
  const dir = mkdtempSync(join(tmpdir(), 'iomux-load-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'iomux' }));
  const pre = join(dir, 'prebuilds', `${process.platform}-${arch()}`);
  mkdirSync(pre, { recursive: true });
  const tag = process.platform === 'linux' ? '.glibc' : '';
  copyFileSync(built, join(pre, `iomux${tag}.node`));
  if (manifest) writeFileSync(join(pre, `iomux${tag}.json`), JSON.stringify(manifest));
  return dir;
}

t.test('a fitting prebuild is chosen and loads', async (t) => {
  // The kqueue emulation exists only in test/kqemu's build: the plain addon
  // this test loads refuses IOMUX_BACKEND=kqueue-emulated, so it loads with
  // the default backend when the suite runs on the emulation.
  const backend = process.env.IOMUX_BACKEND;
  if (backend === 'kqueue-emulated') {
    delete process.env.IOMUX_BACKEND;
    t.teardown(() => { process.env.IOMUX_BACKEND = backend; });
  }
  const dir = fakePackage(t, { libc: 'glibc', glibc: '2.2.5' });
  const r = loader.resolve(dir);
  t.equal(r.source, 'prebuild');
  t.match(r.file, /prebuilds/);
  const addon = loader.load(dir);
  t.type(addon.backend, 'function', 'the loaded addon has its function table');
});

t.test('a prebuild for a newer glibc is refused with words, not a symbol error', { skip: process.platform !== 'linux' && 'Linux only' }, async (t) => {
  const dir = fakePackage(t, { libc: 'glibc', glibc: '99.1' });
  t.throws(() => loader.load(dir), {
    code: 'IOMUX_NO_ADDON',
    message: /prebuilds\/linux-\w+\/iomux\.glibc\.node does not fit: it needs glibc 99\.1 or newer, and this system has glibc [\d.]+\. Build it from source with `npm rebuild iomux --build-from-source`/,
  });
});

t.test('no prebuild for this platform: the error names what was looked for and what there is', async (t) => {
  const dir = fakePackage(t, null);
  const other = join(dir, 'prebuilds', 'sunos-sparc');
  mkdirSync(other);
  writeFileSync(join(other, 'iomux.node'), '');
  rmSync(join(dir, 'prebuilds', `${process.platform}-${arch()}`), { recursive: true });
  t.throws(() => loader.load(dir), {
    code: 'IOMUX_NO_ADDON',
    message: new RegExp(`no prebuild fits: looked for prebuilds/${process.platform}-${arch()}/iomux.*N-API, node ${process.versions.node}.*the package has sunos-sparc/\\{iomux.node\\}`),
  });
});

t.test('a local build wins over prebuilds', async (t) => {
  const r = loader.resolve(root);
  t.equal(r.source, 'build');
  t.equal(r.file, built);
});
