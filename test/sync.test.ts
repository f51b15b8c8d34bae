// Semaphores, mutexes, shared variables and the config object across the
// master and its workers (lib/shared/sync.ts): Netplex semantics, protected
// reverts and mutex hand-over when a worker is SIGKILLed, versions, waits.
import t from 'tap';
import { iomux, sleep, tempDir, waitFor } from './helpers';
import { makeSync } from './sync-helpers';

t.test('semaphores: create, values, FIFO waiters, destroy', async (t) => {
  const h = makeSync([{ count: 2 }]);
  t.teardown(() => h.sup.stop());
  await h.sup.start();
  const sem = await h.sup.sync.semaphore('s');
  t.equal(await sem.create(2, { protected: false }), true, 'created');
  t.equal(await sem.create(5), false, 'exists already');
  t.equal(sem.decrement(), 1);
  t.equal(sem.decrement(), 0);
  t.equal(sem.decrement(), -1, '-1 at 0 without wait, no decrement');
  t.equal(sem.get(), 0);
  t.equal(sem.increment(), 1);
  t.equal(sem.decrement(), 0);
  // two workers wait, in this order; each increment serves one, FIFO
  const a = h.run('w.1', "const s = await c.semaphore('s'); return s.decrement({ wait: true }).then(() => 'a')");
  await sleep(100);
  const b = h.run('w.2', "const s = await c.semaphore('s'); return s.decrement({ wait: true }).then(() => 'b')");
  await sleep(100);
  let first: string | null = null;
  void a.then(() => { first ??= 'a'; });
  void b.then(() => { first ??= 'b'; });
  t.equal(sem.increment(), 1);
  t.ok(await waitFor(() => first !== null, 2000));
  await sleep(100);
  t.equal(first, 'a', 'the first waiter got it');
  t.equal(sem.get(), 0, 'consumed by the waiter');
  // the increment from a worker (fast path) notifies the master
  t.same(await h.run('w.1', "const s = await c.semaphore('s'); return s.increment()"), { ok: true, v: 1 });
  t.same(await b, { ok: true, v: 'b' }, 'the second waiter on the second increment');
  t.equal(sem.get(), 0);
  // destroy answers waiters with -1
  const c = h.run('w.2', "const s = await c.semaphore('s'); return s.decrement({ wait: true })");
  await sleep(100);
  await sem.destroy();
  t.same(await c, { ok: true, v: -1 });
  t.throws(() => sem.get(), { code: 'ERR_IOMUX_SYNC_DESTROYED' });
  const again = await h.sup.sync.semaphore('s');
  t.equal(await again.create(0), true, 'a new one by that name');
});

t.test('protected semaphores: a killed worker\'s contribution is reverted', async (t) => {
  const h = makeSync([{ count: 2, restart: { initialDelay: 10 } }]);
  t.teardown(() => h.sup.stop());
  const ready = new Set<string>();
  h.sup.on('ready', (id: string) => ready.add(id));
  await h.sup.start();
  const sem = await h.sup.sync.semaphore('p');
  t.equal(await sem.create(3, { protected: true }), true);
  const plain = await h.sup.sync.semaphore('u');
  t.equal(await plain.create(3, { protected: false }), true);
  t.same(await h.run('w.1', "const p = await c.semaphore('p'); const u = await c.semaphore('u'); p.decrement(); p.decrement(); u.decrement(); return p.get()"), { ok: true, v: 1 });
  const pid = await h.pid('w.1');
  process.kill(pid, 'SIGKILL');
  t.ok(await waitFor(() => sem.get() === 3, 2000), 'two decrements given back');
  t.equal(plain.get(), 2, 'an unprotected one keeps its value');
  // increments are taken back too, clamped at 0
  t.same(await h.run('w.2', "const p = await c.semaphore('p'); p.increment(); p.increment(); return p.get()"), { ok: true, v: 5 });
  t.equal(sem.decrement(), 4);
  t.equal(sem.decrement(), 3);
  t.equal(sem.decrement(), 2);
  t.equal(sem.decrement(), 1);
  process.kill(await h.pid('w.2'), 'SIGKILL');
  t.ok(await waitFor(() => sem.get() === 0, 2000), 'reverted, clamped at 0');
  // a waiter wakes when a revert makes the value rise from 0
  t.ok(await waitFor(() => ready.has('w.3') && ready.has('w.4'), 5000), 'restarted');
  t.same(await h.run('w.3', "const p = await c.semaphore('p'); p.increment(); p.increment(); return p.decrement()"), { ok: true, v: 1 });
  t.equal(sem.decrement(), 0, 'the master takes the one left');
  const w = h.run('w.4', "const p = await c.semaphore('p'); return p.decrement({ wait: true })");
  await sleep(100);
  process.kill(await h.pid('w.3'), 'SIGKILL'); // its net contribution: +1
  // +1 reverted: value stays clamped at 0, the waiter keeps waiting
  await sleep(200);
  t.equal(sem.get(), 0);
  sem.increment();
  t.same(await w, { ok: true, v: 0 }, 'the waiter got the increment');
});

t.test('mutexes: tryLock, lock waits, unlock by a non-holder throws, ownerDied', async (t) => {
  const h = makeSync([{ count: 2, restart: { initialDelay: 10 } }]);
  t.teardown(() => h.sup.stop());
  await h.sup.start();
  const m = await h.sup.sync.mutex('m');
  t.same(m.tryLock(), { ownerDied: false });
  t.equal(m.tryLock(), false, 'not re-entrant');
  t.same(await h.run('w.1', "const m = await c.mutex('m'); try { m.unlock(); } catch (e) { return e.code }"), { ok: true, v: 'ERR_IOMUX_SYNC_NOT_OWNER' });
  const got = h.run('w.1', "const m = await c.mutex('m'); st.m = m; return m.lock()");
  await sleep(100);
  m.unlock();
  t.same(await got, { ok: true, v: { ownerDied: false } }, 'the waiter holds it after unlock');
  t.throws(() => m.unlock(), { code: 'ERR_IOMUX_SYNC_NOT_OWNER' });
  // the holder dies: the next waiter gets it with ownerDied
  const next = h.run('w.2', "const m = await c.mutex('m'); return m.lock()");
  await sleep(100);
  process.kill(await h.pid('w.1'), 'SIGKILL');
  t.same(await next, { ok: true, v: { ownerDied: true } });
  // dies with nobody waiting: the next tryLock learns it
  process.kill(await h.pid('w.2'), 'SIGKILL');
  t.ok(await waitFor(() => !m.locked, 2000));
  t.same(m.tryLock(), { ownerDied: true });
  m.unlock();
  t.same(m.tryLock(), { ownerDied: false }, 'reported once');
  m.unlock();
});

t.test('shared variables: versions, waitFor, change, size limit, owner', async (t) => {
  const h = makeSync([{ count: 2 }, { name: 'o', count: 1, restart: { initialDelay: 10 } }], { sync: { valueSize: 256 } });
  t.teardown(() => h.sup.stop());
  await h.sup.start();
  const v = await h.sup.sync.sharedVar('cfg');
  t.equal(await v.create({ a: 1 }), true);
  t.equal(await v.create({ a: 2 }), false);
  t.same(v.get(), { a: 1 });
  t.equal(v.version, 1);
  t.same(await h.run('w.1', "const v = await c.sharedVar('cfg'); return [v.get(), v.version]"), { ok: true, v: [{ a: 1 }, 1] });
  const waited = h.run('w.2', "const v = await c.sharedVar('cfg'); return v.waitFor(1)");
  const changes = h.run('w.1', "const v = await c.sharedVar('cfg'); return new Promise((r) => { const seen = []; v.on('change', (x, n) => { seen.push([x, n]); if (seen.length === 2) r(seen); }); })");
  await sleep(100);
  t.equal(v.set({ a: 2, m: new Map([[1, 'x']]) }), 2);
  t.same(await waited, { ok: true, v: { value: { a: 2, m: new Map([[1, 'x']]) }, version: 2 } });
  t.same(await h.run('w.2', "const v = await c.sharedVar('cfg'); return v.set('three')"), { ok: true, v: 3 });
  const ch = await changes;
  t.same(ch.v, [[{ a: 2, m: new Map([[1, 'x']]) }, 2], ['three', 3]], "'change' events in order");
  t.equal(v.get(), 'three');
  t.throws(() => v.set('x'.repeat(300)), { code: 'ERR_IOMUX_SYNC_VALUE_TOO_LARGE', message: /limit of 256 bytes/ });
  t.equal(v.get(), 'three', 'unchanged');
  // owner: true goes away with its service's last worker
  t.same(await h.run('o.1', "const v = await c.sharedVar('mine'); return v.create(42, { owner: true })"), { ok: true, v: true });
  const mine = await h.sup.sync.sharedVar('mine');
  t.equal(mine.get(), 42);
  process.kill(await h.pid('o.1'), 'SIGKILL');
  t.ok(await waitFor(() => { try { mine.get(); return false; } catch (e: any) { return e.code === 'ERR_IOMUX_SYNC_DESTROYED'; } }, 2000), 'removed');
  t.equal(v.get(), 'three', 'an ordinary variable stays');
});

t.test('config: put/get across workers, counters', async (t) => {
  const h = makeSync([{ count: 2 }]);
  t.teardown(() => h.sup.stop());
  await h.sup.start();
  await h.sup.sync.config.counter('port').reset(8000);
  t.same(await h.run('w.1', "await c.config.put('addr', '127.0.0.1'); return c.config.counter('port').next()"), { ok: true, v: 8000 });
  t.same(await h.run('w.2', "return [await c.config.get('addr'), await c.config.counter('port').next()]"), { ok: true, v: ['127.0.0.1', 8001] });
  t.equal(await h.sup.sync.config.counter('port').next(), 8002);
  t.equal(await h.sup.sync.config.get('nothing'), undefined);
  await t.rejects(h.sup.sync.config.put('', 1), { code: 'ERR_INVALID_ARG_VALUE' });
});

t.test('the region: a foreign fd is refused, slots run out with a clear error', async (t) => {
  const { SyncMaster, SyncRegion } = iomux;
  const { openSync, closeSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const file = join(tempDir('iomux-sync-'), 'not-a-region');
  writeFileSync(file, Buffer.alloc(4096));
  const fd = openSync(file, 'r+');
  t.throws(() => SyncRegion.attach(fd), { code: 'ERR_IOMUX_SYNC_REGION', message: /magic/ });
  t.throws(() => SyncRegion.attach(-1), { name: 'TypeError', message: /fd must be/ });
  closeSync(fd);
  t.throws(() => new SyncMaster({ slots: 0 }), { name: 'RangeError', message: /sync.slots/ });
  const m = new SyncMaster({ slots: 2, containers: 2, valueSize: 8 });
  await m.client.semaphore('a');
  await m.client.mutex('b');
  await t.rejects(m.client.counter('c'), { code: 'ERR_IOMUX_SYNC_FULL', message: /sync.slots is 2/ });
  t.equal(m.allocId(), 2, 'one row for a container');
  t.equal(m.allocId(), null, 'then none');
  const v = new SyncMaster({ slots: 1, containers: 1, valueSize: 8 });
  const sv = await v.client.sharedVar('x');
  t.throws(() => sv.set('123456789'), { code: 'ERR_IOMUX_SYNC_VALUE_TOO_LARGE', message: /limit of 8 bytes/ });
  t.equal(sv.set(1), 1);
  t.equal(sv.get(), 1);
  closeSync(m.fd);
  closeSync(v.fd);
});
