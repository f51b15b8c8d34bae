// The direct wake-up between workers (lib/shared/sync.ts, doorbells in
// deps/iomux/src/shm_sync.c): a release rings the process at the head of
// the queue, which completes its wait itself and tells the master; the
// master's own path stays the fallback. Exclusion under contention, and the
// give-back of a grant that raced a ring.
import { statSync } from 'node:fs';
import t from 'tap';
import { sleep, waitFor } from './helpers';
import { makeSync } from './sync-helpers';
import { LocalWaits, SyncMaster } from '../dist/shared/sync';

const statsOf = (sup: unknown): { kicks: number; took: number } => (sup as { syncMaster: { stats: { kicks: number; took: number } } }).syncMaster.stats;

t.test('a hand-off between two workers is one ring, not a trip through the master', async (t) => {
  const h = makeSync([{ count: 2 }], { sync: { doorbells: true } });
  t.teardown(() => h.sup.stop());
  await h.sup.start();
  const dir = (h.sup as unknown as { syncMaster: { bellDir(): string } }).syncMaster.bellDir();
  t.equal(statSync(dir).mode & 0o777, 0o700, 'the doorbells\' directory is 0700');
  const m = await h.sup.sync.mutex('hand');
  const sem = await h.sup.sync.semaphore('hs');
  await sem.create(0, { protected: false });
  t.same(await h.run('w.1', "st.m = await c.mutex('hand'); await st.m.lock(); return st.m.locked"), { ok: true, v: true });
  const waiting = h.run('w.2', "const m = await c.mutex('hand'); const r = await m.lock(); m.unlock(); return r");
  t.ok(await waitFor(() => m.waiters === 1, 2000), 'w.2 waits at the master');
  t.equal(statSync(`${dir}/3`).mode & 0o777, 0o600, 'its doorbell is 0600');
  const before = { ...statsOf(h.sup) };
  t.same(await h.run('w.1', 'st.m.unlock(); return true'), { ok: true, v: true });
  t.same(await waiting, { ok: true, v: { ownerDied: false } }, 'w.2 got the lock');
  const after = statsOf(h.sup);
  t.equal(after.took - before.took, 1, 'w.2 took it after a ring');
  t.equal(after.kicks - before.kicks, 0, 'the master was not asked to wake anyone');
  t.equal(m.waiters, 0, 'the master dropped the wait');
  t.notOk(m.locked);
  // a semaphore: the increment in w.1 wakes the decrement waiting in w.2
  const dec = h.run('w.2', "const s = await c.semaphore('hs'); return s.decrement({ wait: true })");
  await sleep(50);
  const b2 = { ...statsOf(h.sup) };
  t.same(await h.run('w.1', "const s = await c.semaphore('hs'); return s.increment()"), { ok: true, v: 1 });
  t.same(await dec, { ok: true, v: 0 });
  t.equal(statsOf(h.sup).took - b2.took, 1, 'one ring');
  t.equal(statsOf(h.sup).kicks - b2.kicks, 0, 'no kick');
  t.equal(sem.get(), 0);
  // a shared variable with one watcher: the set in w.1 wakes the waitFor in w.2
  const v = await h.sup.sync.sharedVar('hv');
  await v.create('a');
  const ver = v.version;
  const watch = h.run('w.2', `const v = await c.sharedVar('hv'); return v.waitFor(${ver})`);
  await sleep(100); // w.2's watch reaches the master
  const b3 = { ...statsOf(h.sup) };
  t.same(await h.run('w.1', "const v = await c.sharedVar('hv'); return v.set('b')"), { ok: true, v: ver + 1 });
  t.same(await watch, { ok: true, v: { value: 'b', version: ver + 1 } }, 'the watcher saw the new value');
  t.equal(statsOf(h.sup).took - b3.took, 1, 'one ring');
  t.equal(statsOf(h.sup).kicks - b3.kicks, 0, 'no kick');
  // two watchers: a broadcast through the master
  const w1 = h.run('w.1', `const v = await c.sharedVar('hv'); return (await v.waitFor(${ver + 1})).value`);
  const w2 = h.run('w.2', `const v = await c.sharedVar('hv'); return (await v.waitFor(${ver + 1})).value`);
  await sleep(100);
  v.set('c');
  t.same(await Promise.all([w1, w2]), [{ ok: true, v: 'c' }, { ok: true, v: 'c' }], 'both watchers saw it');
});

t.test('contention: exclusion holds and no wait is lost (3 workers and the master)', async (t) => {
  const h = makeSync([{ count: 3 }], { sync: { doorbells: true } });
  t.teardown(() => h.sup.stop());
  await h.sup.start();
  const N = 150;
  const sem = await h.sup.sync.semaphore('cs');
  await sem.create(1, { protected: true });
  const cnt = await h.sup.sync.counter('cc');
  const cnt2 = await h.sup.sync.counter('cc2');
  // a non-atomic read-modify-write across a turn of the loop, under the
  // mutex (cc) and under the semaphore used as a lock (cc2)
  const body = `
    const m = await c.mutex('cm'); const s = await c.semaphore('cs');
    const a = await c.counter('cc'); const b = await c.counter('cc2');
    const turn = () => new Promise((r) => setImmediate(r));
    for (let i = 0; i < ${N}; i++) {
      await m.lock(); const x = a.get(); await turn(); a.reset(x + 1); m.unlock();
      if (await s.decrement({ wait: true }) !== 0) throw new Error('semaphore went above 1');
      const y = b.get(); await turn(); b.reset(y + 1); s.increment();
    }
    return true`;
  const before = { ...statsOf(h.sup) };
  const runs = ['w.1', 'w.2', 'w.3'].map((id) => h.run(id, body));
  const m = await h.sup.sync.mutex('cm');
  for (let i = 0; i < N; i++) {
    await m.lock();
    const x = cnt.get();
    await new Promise((r) => setImmediate(r));
    cnt.reset(x + 1);
    m.unlock();
  }
  let timer: NodeJS.Timeout | undefined;
  const res = await Promise.race([Promise.all(runs), new Promise<null>((r) => { timer = setTimeout(() => r(null), 60000); })]);
  clearTimeout(timer);
  t.ok(res, 'no deadlock');
  t.same(res, [{ ok: true, v: true }, { ok: true, v: true }, { ok: true, v: true }]);
  t.equal(cnt.get(), 4 * N, 'no update lost under the mutex');
  t.equal(cnt2.get(), 3 * N, 'no update lost under the semaphore');
  t.equal(sem.get(), 1, 'the semaphore back at 1');
  t.notOk(m.locked);
  t.equal(m.waiters, 0);
  const after = statsOf(h.sup);
  // how the waits were served varies from run to run (rings, the master's grants)
  t.comment(`waits completed after rings: ${after.took - before.took}, kicks: ${after.kicks - before.kicks}`);
});

t.test('LocalWaits: a ring completes a wait; a grant that raced it is given back', async (t) => {
  const calls: { op: string; args: Record<string, unknown>; answer(v: unknown): void; fail(e: Error): void }[] = [];
  const took: [number, number][] = [];
  const waits = new LocalWaits(
    (op, args) => new Promise((resolve, reject) => calls.push({ op, args, answer: resolve, fail: reject })),
    (slot, ticket) => took.push([slot, ticket]),
  );
  let free = 0;
  const undone: unknown[] = [];
  const take = (): number | undefined => (free > 0 ? --free : undefined);
  const p1 = waits.add('sync.wait', { slot: 4 }, 4, take, (g) => undone.push(g));
  const p2 = waits.add('sync.wait', { slot: 4 }, 4, take, (g) => undone.push(g));
  const p3 = waits.add('sync.wait', { slot: 5 }, 5, () => 'x', (g) => undone.push(g));
  t.same(calls.map((c) => c.args.t), [1, 2, 3], 'each wait is sent with its ticket');
  waits.rang();
  t.same(took, [[5, 3]], 'slot 4 has nothing free; slot 5 completes');
  t.equal(await p3, 'x');
  free = 1;
  waits.rang();
  t.same(took, [[5, 3], [4, 1]], 'FIFO within a slot: the first wait takes it');
  t.equal(await p1, 0);
  t.equal(waits.size, 1);
  // the master's answers for the completed waits: null (dropped) or a grant (given back)
  calls[2]!.answer(null);
  calls[0]!.answer(7);
  await sleep(1);
  t.same(undone, [7], 'the grant for a completed wait was given back, the null ignored');
  // the pending one completes by the master's grant; a later ring does nothing
  calls[1]!.answer(3);
  t.equal(await p2, 3);
  free = 1;
  waits.rang();
  t.equal(free, 1, 'no wait left to take anything');
  t.equal(waits.size, 0);
  // a failure (channel closed) rejects a pending wait
  const p4 = waits.add('sync.lock', { slot: 6 }, 6, () => undefined, () => {});
  calls[3]!.fail(new Error('control channel closed'));
  await t.rejects(p4, /control channel closed/);
  // a take that throws (destroyed) leaves the wait to the master's answer
  const p5 = waits.add('sync.wait', { slot: 7 }, 7, () => { throw new Error('destroyed'); }, () => {});
  waits.rang();
  calls[4]!.answer(-1);
  t.equal(await p5, -1);
});

t.test('the master: a took that overtakes its request answers the request null', async (t) => {
  const m = new SyncMaster({ slots: 4, containers: 4, valueSize: 8 });
  const id = m.allocId()!;
  const mx = await m.client.mutex('early');
  t.ok(mx.tryLock(), 'the master holds it');
  const { slot, gen } = m.request('sync.open', { kind: 'mutex', name: 'early' }, id, 'w') as { slot: number; gen: number };
  m.took(id, slot, 5); // the container took its wait 5 after a ring...
  const r = await (m.request('sync.lock', { slot, gen, t: 5 }, id, 'w') as Promise<unknown>); // ...before the master queued it
  t.equal(r, null, 'answered null, not queued');
  t.equal(mx.waiters, 0);
  t.equal(mx.head, 0, 'no stale head');
  // a request with another ticket waits as usual and gets the lock on unlock
  const p = m.request('sync.lock', { slot, gen, t: 6 }, id, 'w') as Promise<{ ownerDied: boolean }>;
  t.equal(mx.head, id, 'queued');
  mx.unlock();
  await new Promise((res) => setImmediate(res));
  t.same(await p, { ownerDied: false });
  t.ok(mx.locked);
  m.close();
});
