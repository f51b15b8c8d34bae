// SharedCache: the operations, their errors, named regions, fds handed to
// child processes and worker threads, TTLs, capacity, a wrong region.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { SharedCache } from '../dist';
import { fixturesDir, sleep, tempDir } from './helpers';

const small = () => SharedCache.create({ size: 1 << 20, maxEntries: 4096 });

t.test('values of each kind come back as they went in, as copies', async (t) => {
  const c = small();
  t.teardown(() => c.close());
  t.same(c.set('s', 'héllo ✓'), { evicted: false, version: 1 });
  t.equal(c.get('s'), 'héllo ✓');
  const b = Buffer.from([1, 2, 3, 250]);
  c.set('b', b);
  const got = c.get('b') as Buffer;
  t.ok(Buffer.isBuffer(got));
  t.same([...got], [1, 2, 3, 250]);
  got[0] = 99; // a copy: the stored value does not change
  t.same([...(c.get('b') as Buffer)], [1, 2, 3, 250]);
  c.set('u8', new Uint8Array([7, 8]));
  t.same([...(c.get('u8') as Buffer)], [7, 8]);
  const obj = { a: 1, list: [1, 'two', { three: 3 }], when: new Date(5), m: new Map([[1, 2]]), n: null };
  c.set('o', obj);
  t.same(c.get('o'), obj);
  c.set('num', 42.5);
  t.equal(c.get('num'), 42.5);
  c.set('empty', '');
  t.equal(c.get('empty'), '');
  c.set('emptybuf', Buffer.alloc(0));
  t.same(c.get('emptybuf'), Buffer.alloc(0));
  // Buffer keys: the same bytes are the same key
  c.set(Buffer.from('s'), 'by buffer');
  t.equal(c.get('s'), 'by buffer');
  // values larger than the io buffer (64 KiB)
  const big = Buffer.alloc(300 * 1024, 7);
  c.set('big', big);
  t.ok((c.get('big') as Buffer).equals(big));
  const bigStr = 'x'.repeat(200 * 1024);
  c.set('bigs', bigStr);
  t.equal(c.get('bigs'), bigStr);
  t.equal(c.get('absent'), undefined);
  t.equal(c.verify(), true);
});

t.test('Buffers and typed arrays inside structured values are copies, untouched by later reads', async (t) => {
  const c = small();
  t.teardown(() => c.close());
  c.set('x', { status: 200, body: Buffer.from('body of x'), u16: new Uint16Array([1, 2]) });
  c.set('y', { status: 201, body: Buffer.from('body of y, longer'), u16: new Uint16Array([3, 4, 5]) });
  const x = c.get('x') as { body: Buffer; u16: Uint16Array };
  const y = c.get('y') as { body: Buffer; u16: Uint16Array };
  t.equal(x.body.toString(), 'body of x', 'the first value after a second read');
  t.same([...x.u16], [1, 2]);
  t.equal(y.body.toString(), 'body of y, longer');
  t.same([...y.u16], [3, 4, 5]);
  const again = c.getStale('x')!.value as { body: Buffer };
  c.get('y');
  t.equal(again.body.toString(), 'body of x', 'getStale() too');
  const v = c.getWithVersion('x')!.value as { body: Buffer };
  c.get('y');
  t.equal(v.body.toString(), 'body of x', 'getWithVersion() too');
});

t.test('add, replace, delete, has, versions and compareAndSet', async (t) => {
  const c = small();
  t.teardown(() => c.close());
  t.equal(c.add('k', 'one'), true);
  t.equal(c.add('k', 'two'), false);
  t.equal(c.get('k'), 'one');
  t.equal(c.replace('nope', 'x'), false);
  t.equal(c.has('nope'), false);
  t.equal(c.replace('k', 'three'), true);
  t.equal(c.has('k'), true);
  const v = c.getWithVersion('k')!;
  t.equal(v.value, 'three');
  t.equal(c.compareAndSet('k', 'four', v.version + 1), false);
  t.equal(c.compareAndSet('k', 'four', v.version), true);
  t.equal(c.compareAndSet('k', 'five', v.version), false, 'the version moved on');
  t.equal(c.get('k'), 'four');
  t.equal(c.compareAndSet('gone', 'x', 1), false);
  t.equal(c.delete('k'), true);
  t.equal(c.delete('k'), false);
  t.equal(c.has('k'), false);
  const s = c.stats();
  t.ok(s.hits >= 3 && s.misses >= 1, 'hits and misses are counted');
});

t.test('incr: atomic counters', async (t) => {
  const c = small();
  t.teardown(() => c.close());
  t.equal(c.incr('n'), 1);
  t.equal(c.incr('n', 10), 11);
  t.equal(c.incr('n', -20), -9);
  t.equal(c.get('n'), -9);
  t.equal(c.incr('m', 1, { initial: 100, ttl: 60000 }), 101);
  t.ok(c.ttl('m')! > 59000);
  c.set('str', 'abc');
  t.throws(() => c.incr('str'), { code: 'ERR_SHARED_CACHE_NOT_A_COUNTER' });
  t.throws(() => c.incr('n', 1.5), { code: 'ERR_OUT_OF_RANGE' });
  t.throws(() => c.incr('n', '1' as unknown as number), { code: 'ERR_INVALID_ARG_TYPE' });
  c.incr('big', Number.MAX_SAFE_INTEGER);
  t.throws(() => c.incr('big', 10), { code: 'ERR_OUT_OF_RANGE' }, 'past the safe integers');
});

t.test('TTLs: ms precision, getStale, ttl, expire, flushExpired', async (t) => {
  const c = SharedCache.create({ size: 1 << 20, defaultTtl: 0 });
  t.teardown(() => c.close());
  const t0 = process.hrtime.bigint(); // before the set: a lower bound on its deadline
  c.set('short', 'v', { ttl: 30 });
  c.set('forever', 'v');
  t.equal(c.ttl('forever'), Infinity);
  const left = c.ttl('short')!;
  t.ok(left >= 0 && left <= 30, `ttl ${left}`);
  while (c.get('short') !== undefined) await sleep(1);
  const took = Number(process.hrtime.bigint() - t0) / 1e6;
  t.ok(took >= 30 && took < 5000, `expired after ${took.toFixed(2)} ms, never early`);
  t.equal(c.has('short'), false);
  const stale = c.getStale('short')!;
  t.equal(stale.value, 'v');
  t.equal(stale.stale, true);
  t.ok(stale.ttl <= 0);
  t.same(c.getStale('forever'), { value: 'v', stale: false, ttl: Infinity });
  t.equal(c.ttl('short'), undefined);
  t.equal(c.expire('forever', 20), true);
  t.equal(c.expire('absent', 20), false);
  await sleep(30);
  t.equal(c.get('forever'), undefined);
  t.equal(c.expire('short', 0), false, 'an expired key cannot be revived');
  c.set('revive', 'x', { ttl: 10 });
  t.equal(c.expire('revive', 0), true);
  t.equal(c.ttl('revive'), Infinity);
  for (let i = 0; i < 100; i++) c.set(`e${i}`, 'x', { ttl: 1 });
  await sleep(5);
  const flushed = c.flushExpired(); // writes reclaim a few on their own too
  t.ok(flushed > 0 && c.stats().expirations >= 100, `${flushed} flushed`);
  t.equal(c.stats().entries, 1);
  // the default TTL applies when a write gives none
  const d = SharedCache.create({ size: 1 << 20, defaultTtl: 20 });
  d.set('a', 1);
  t.ok(d.ttl('a')! <= 20);
  d.set('b', 1, { ttl: 0 });
  t.equal(d.ttl('b'), Infinity);
  d.close();
});

t.test('keys, iteration, clear', async (t) => {
  const c = small();
  t.teardown(() => c.close());
  const want = new Map<string, unknown>();
  for (let i = 0; i < 500; i++) {
    c.set(`k${i}`, i % 2 ? `v${i}` : { i });
    want.set(`k${i}`, i % 2 ? `v${i}` : { i });
  }
  c.set('dead', 'x', { ttl: 1 });
  await sleep(3);
  t.same(new Set(c.keys()), new Set(want.keys()), 'keys() lists the live keys');
  t.ok(c.keys({ buffers: true }).every((k) => Buffer.isBuffer(k)));
  t.same(new Map([...c]), want, 'iteration gives [key, value]');
  c.clear();
  t.same(c.keys(), []);
  t.equal(c.stats().entries, 0);
  t.equal(c.verify(), true);
});

t.test('bad arguments give errors that name them', async (t) => {
  const c = small();
  t.teardown(() => c.close());
  t.throws(() => c.get(5 as unknown as string), { code: 'ERR_INVALID_ARG_TYPE', message: /"key"/ });
  t.throws(() => c.get(''), { code: 'ERR_INVALID_ARG_VALUE' });
  t.throws(() => c.set('k'.repeat(4097), 'v'), { code: 'ERR_INVALID_ARG_VALUE', message: /too long/ });
  t.throws(() => c.set('é'.repeat(2049), 'v'), { code: 'ERR_INVALID_ARG_VALUE', message: /too long/ }, 'counted in bytes');
  t.doesNotThrow(() => c.set('k'.repeat(4096), 'v'), 'the longest key');
  t.throws(() => c.set(Buffer.alloc(4097), 'v'), { code: 'ERR_INVALID_ARG_VALUE' });
  t.throws(() => c.set('k', undefined), { code: 'ERR_INVALID_ARG_TYPE', message: /"value"/ });
  t.throws(() => c.set('k', () => 1), { code: 'ERR_INVALID_ARG_VALUE', message: /serialized/ });
  t.throws(() => c.set('k', Buffer.alloc(2 << 20)), { code: 'ERR_OUT_OF_RANGE', message: /"value"/ });
  for (const ttl of [-1, 1.5, NaN, Infinity, 2 ** 41]) {
    t.throws(() => c.set('k', 'v', { ttl }), { code: 'ERR_OUT_OF_RANGE', message: /options.ttl/ }, `ttl ${ttl}`);
  }
  t.throws(() => c.set('k', 'v', { ttl: '5' as unknown as number }), { code: 'ERR_INVALID_ARG_TYPE' });
  t.throws(() => c.expire('k', -5), { code: 'ERR_OUT_OF_RANGE', message: /"ttl"/ });
  t.throws(() => c.compareAndSet('k', 'v', 0), { code: 'ERR_OUT_OF_RANGE', message: /"version"/ });
  t.throws(() => SharedCache.create({ size: 1000 }), { code: 'ERR_OUT_OF_RANGE', message: /options.size/ });
  t.throws(() => SharedCache.create({ size: 1 << 20, maxEntries: 0 }), { code: 'ERR_OUT_OF_RANGE' });
  t.throws(() => SharedCache.create({ size: 1 << 20, maxEntries: 1 << 20 }), { code: 'ERR_OUT_OF_RANGE' });
  t.throws(() => SharedCache.create({ evict: 'no' as unknown as boolean }), { code: 'ERR_INVALID_ARG_TYPE' });
  t.throws(() => SharedCache.create('a/b'), { code: 'ERR_INVALID_ARG_VALUE', message: /"?name/ });
  t.throws(() => SharedCache.fromFd(-1), { code: 'ERR_OUT_OF_RANGE' });
  t.throws(() => SharedCache.open(`absent-${process.pid}`), { code: 'ENOENT', syscall: 'shm_open' });
  const d = small();
  d.close();
  t.throws(() => d.get('k'), { code: 'ERR_SHARED_CACHE_CLOSED' });
  t.equal(d.fd, -1);
  t.equal(c.verify(), true);
});

t.test('out of space: refused with evict: false, evicted otherwise', async (t) => {
  const r = SharedCache.create({ size: 256 * 1024, maxEntries: 1000, evict: false });
  t.teardown(() => r.close());
  const v = Buffer.alloc(4000, 1);
  let i = 0;
  let err: (Error & { code?: string }) | undefined;
  try {
    for (; i < 1000; i++) r.set(`k${i}`, v);
  } catch (e) {
    err = e as Error & { code?: string };
  }
  t.equal(err?.code, 'ERR_SHARED_CACHE_FULL');
  t.ok(i > 10);
  t.ok((r.get('k0') as Buffer).equals(v), 'earlier entries are intact');
  t.throws(() => r.set('k0', Buffer.alloc(12000)), { code: 'ERR_SHARED_CACHE_FULL' });
  t.ok((r.get('k0') as Buffer).equals(v), 'a refused overwrite keeps the old value');
  t.equal(r.verify(), true);
  t.equal(r.stats().evictions, 0);

  const e = SharedCache.create({ size: 256 * 1024, maxEntries: 1000 });
  t.teardown(() => e.close());
  let evicted = 0;
  for (i = 0; i < 300; i++) {
    if (e.set(`k${i}`, v).evicted) evicted++;
    e.get('k1'); // a hot key
  }
  t.ok(evicted > 100, `${evicted} sets reported evictions`);
  t.equal(e.stats().evictions >= evicted, true);
  t.ok(e.get('k1') !== undefined, 'the hot key survived');
  t.ok(e.get('k299') !== undefined, 'the newest is there');
  t.equal(e.verify(), true);
  const n = SharedCache.create({ size: 1 << 20, maxEntries: 20 });
  for (i = 0; i < 100; i++) n.set(`k${i}`, i);
  t.equal(n.stats().entries, 20, 'bounded in entries');
  n.close();
});

t.test('named regions: create, open from another mapping, 0600, unlink', async (t) => {
  const name = `tap-${process.pid}-${Date.now()}`;
  const a = SharedCache.create(name, { size: 1 << 20 });
  t.teardown(() => {
    a.close();
    SharedCache.unlink(name);
  });
  t.equal(a.name, name);
  t.throws(() => SharedCache.create(name, { size: 1 << 20 }), { code: 'EEXIST' });
  if (process.platform === 'linux') {
    const st = fs.statSync(`/dev/shm/iomux-${process.getuid!()}-${name}`);
    t.equal(st.mode & 0o777, 0o600);
  }
  a.set('hello', 'world');
  const b = SharedCache.open(name);
  t.equal(b.get('hello'), 'world');
  t.equal(b.size, a.size);
  b.set('back', 1);
  t.equal(a.get('back'), 1);
  b.close();
  t.equal(SharedCache.unlink(name), true);
  t.equal(SharedCache.unlink(name), false);
  t.throws(() => SharedCache.open(name), { code: 'ENOENT' });
  t.equal(a.get('hello'), 'world', 'a mapping outlives the name');
  a.close();
  t.throws(() => a.get('hello'), { code: 'ERR_SHARED_CACHE_CLOSED' });
});

t.test('a region of another layout, size or kind is refused clearly', { skip: process.platform !== 'linux' && 'needs /proc/self/fd' }, async (t) => {
  const c = small();
  t.teardown(() => c.close());
  const fd = fs.openSync(`/proc/self/fd/${c.fd}`, 'r+');
  t.teardown(() => fs.closeSync(fd));
  const word = Buffer.alloc(8);
  fs.readSync(fd, word, 0, 8, 0);
  fs.writeSync(fd, Buffer.from('NOTACACH'), 0, 8, 0);
  t.throws(() => SharedCache.fromFd(c.fd), { code: 'ERR_SHARED_CACHE_INVALID', message: /magic/ });
  fs.writeSync(fd, word, 0, 8, 0);
  const layout = Buffer.alloc(4);
  fs.readSync(fd, layout, 0, 4, 8);
  fs.writeSync(fd, Buffer.from([99, 0, 0, 0]), 0, 4, 8);
  t.throws(() => SharedCache.fromFd(c.fd), { code: 'ERR_SHARED_CACHE_INVALID', message: /layout version 99/ });
  fs.writeSync(fd, layout, 0, 4, 8);
  const d = SharedCache.fromFd(c.fd);
  t.equal(d.verify(), true, 'restored, it attaches');
  d.close();
  // a plain file
  const dir = tempDir();
  const f = fs.openSync(join(dir, 'junk'), 'w+', 0o600);
  fs.writeSync(f, Buffer.alloc(512 * 1024, 0x41));
  t.throws(() => SharedCache.fromFd(f), { code: 'ERR_SHARED_CACHE_INVALID', message: /not an iomux shared cache/ });
  fs.closeSync(f);
  fs.rmSync(dir, { recursive: true });
});

t.test('a child process attaches through an inherited fd', async (t) => {
  const c = small();
  t.teardown(() => c.close());
  c.set('from-parent', { n: 1 });
  const code = `
    const { SharedCache } = require(${JSON.stringify(join(__dirname, '..', 'dist'))});
    const c = SharedCache.fromFd(3);
    c.set('from-child', c.get('from-parent').n + 1);
    c.incr('hits', 5);
  `;
  const child = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'inherit', 'inherit', c.fd] });
  const [exitCode] = await once(child, 'exit');
  t.equal(exitCode, 0);
  t.equal(c.get('from-child'), 2);
  t.equal(c.get('hits'), 5);
});

t.test('the contents outlive the worker processes: the parent holds the region', async (t) => {
  const c = small();
  t.teardown(() => c.close());
  const run = async (code: string): Promise<number> => {
    const child = spawn(process.execPath, ['-e', `
      const { SharedCache } = require(${JSON.stringify(join(__dirname, '..', 'dist'))});
      const c = SharedCache.fromFd(3);
      ${code}
    `], { stdio: ['ignore', 'inherit', 'inherit', c.fd] });
    const [exitCode] = await once(child, 'exit');
    return exitCode as number;
  };
  // a generation of workers fills the cache and exits; the next finds it warm
  t.equal(await run(`for (let i = 0; i < 100; i++) c.set('w' + i, { gen: 1, i }); c.incr('gens');`), 0);
  t.equal(await run(`
    for (let i = 0; i < 100; i++) if (c.get('w' + i).i !== i) process.exit(2);
    c.incr('gens');`), 0, 'the second generation read every entry of the first');
  t.equal(c.get('gens'), 2);
  t.equal(c.stats().entries, 101);
});

t.test('worker threads attach with fromFd(cache.fd)', async (t) => {
  const c = small();
  t.teardown(() => c.close());
  c.set('from-main', 'hi');
  const N = 2000;
  const workers = [1, 2].map((id) => new Worker(join(fixturesDir, 'shm-worker.js'), { workerData: { fd: c.fd, n: N, id }, execArgv: [] }));
  const msgs = workers.map((w) => once(w, 'message'));
  const exits = workers.map((w) => once(w, 'exit'));
  for (let i = 0; i < N; i++) c.incr('threads', 1);
  for (const m of await Promise.all(msgs)) t.same(m[0], { got: 'hi' });
  await Promise.all(exits);
  t.equal(c.get('threads'), 3 * N, 'no increment lost across threads');
  t.same(c.get('from-worker-2'), { id: 2, list: [1, 2, 3] });
  t.equal(c.verify(), true);
});
