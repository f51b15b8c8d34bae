// Mutual exclusion of the cross-process mutex under a tight contended loop:
// workers (pinned to CPUs when taskset is there) each lock, check that the
// owner marker is free, set it to their id, give up a turn of the loop,
// check it is still theirs, clear it and unlock, SYNC_STRESS_N times
// (default 1500). A second holder shows as a marker that is not free or not
// ours; a lost wake-up as a lock() that waits over 1 s.
import { execFileSync } from 'node:child_process';
import t, { type Test } from 'tap';
import { makeSync, type SyncHarness } from './sync-helpers';

const N = Number(process.env.SYNC_STRESS_N || 1500);

function pin(pids: number[]): boolean {
  try {
    pids.forEach((pid, i) => execFileSync('taskset', ['-p', '-c', String(i % 2), String(pid)], { stdio: 'ignore' }));
    return true;
  } catch {
    return false;
  }
}

// strict (2 workers): every unlock is a hand-off, as in the benchmark's
// hand-off rows. The holder unlocks once the other's lock() is pending (the
// want marker) and heads the master's queue; then it waits until the other
// holds the lock before it locks again. (Going by the head alone is not
// enough: the head can still be the other's previous wait, completed by a
// ring, whose 'took' the master has not read yet.)
const body = (n: number, workers: number, strict: boolean) => `
  const m = await c.mutex('xm');
  const owner = await c.counter('xo');
  const done = await c.counter('xd');
  const want = await c.counter('xw');
  const me = m.self;
  const turn = () => new Promise((r) => setImmediate(r));
  const others = () => done.get() >= ${workers - 1};
  let maxWait = 0, handed = 0, stalls = 0; const why = [];
  try {
  for (let i = 0; i < ${n}; i++) {
    const t0 = performance.now();
    const locked = m.lock();
    if (${strict}) want.reset(me);
    const r = await locked;
    const waited = performance.now() - t0;
    if (waited > maxWait) maxWait = waited;
    if (r.ownerDied) throw new Error('ownerDied with nobody dead');
    const o = owner.get();
    if (o !== 0) throw new Error('lock ' + i + ': held by ' + o + ' too (the marker was set)');
    owner.reset(me);
    if (i % 2 === 0) await turn();
    if (owner.get() !== me) throw new Error('lock ' + i + ': another holder (marker ' + owner.get() + ')');
    if (${strict}) {
      const until = Date.now() + 1000;
      const ready = () => want.get() !== me && want.get() !== 0 && m.head !== 0 && m.head !== me;
      while (!ready() && !others() && Date.now() < until) await turn();
      if (Date.now() >= until) { stalls++; if (why.length < 5) why.push('head ' + m.head + ' waiters ' + m.waiters + ' value ' + (m.locked ? 'locked' : 'free')); }
    }
    if (${strict}) want.reset(0);
    owner.reset(0);
    m.unlock();
    if (m.waiters > 0) handed++;
    if (${strict}) {
      const until = Date.now() + 1000;
      while (!m.locked && !others() && Date.now() < until) await turn();
      if (Date.now() >= until) { stalls++; if (why.length < 5) why.push('after unlock: head ' + m.head + ' waiters ' + m.waiters); }
    } else if (m.waiters > 0) await turn(); // let the others take it
  }
  } finally { done.next(); }
  return { maxWait, handed, stalls, why }`;

async function stress(t: Test, doorbells: boolean, workers: number, strict = false): Promise<void> {
  const h: SyncHarness = makeSync([{ count: workers }], { sync: { doorbells } });
  t.teardown(() => h.sup.stop());
  await h.sup.start();
  const ids = Array.from({ length: workers }, (_, i) => `w.${i + 1}`);
  const pinned = pin(await Promise.all(ids.map((id) => h.pid(id))));
  const owner = await h.sup.sync.counter('xo');
  owner.reset(0);
  (await h.sup.sync.counter('xd')).reset(0);
  (await h.sup.sync.counter('xw')).reset(0);
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const res = await Promise.race([
    Promise.all(ids.map((id) => h.run(id, body(N, workers, strict)))),
    new Promise<null>((r) => { timer = setTimeout(() => r(null), 120000); }),
  ]);
  clearTimeout(timer);
  t.ok(res, 'no deadlock');
  if (!res) return;
  for (const [i, r] of res.entries()) {
    t.ok(r.ok, `${ids[i]} saw one holder at a time${r.ok ? '' : `: ${r.message}`}`);
    if (!r.ok) continue;
    t.ok(r.v.maxWait < 1000, `${ids[i]}: no lock() waited over 1 s (max ${r.v.maxWait.toFixed(1)} ms)`);
    t.equal(r.v.stalls, 0, `${ids[i]}: no hand-off stalled 1 s`);
    if (r.v.stalls) t.comment(r.v.why.join('; '));
  }
  const m = await h.sup.sync.mutex('xm');
  t.notOk(m.locked, 'free at the end');
  t.equal(m.waiters, 0, 'no waiter left');
  t.equal(owner.get(), 0);
  const handed = res.reduce((s, r) => s + (r.ok ? r.v.handed : 0), 0);
  t.comment(`doorbells ${doorbells}, ${workers} workers${strict ? ', strict hand-offs' : ''}${pinned ? ' pinned' : ''}: ${workers * N} locks, ${handed} unlocks with waiters, ${Date.now() - started} ms`);
}

t.test('exclusion, through the master (doorbells off), 2 workers', (t) => stress(t, false, 2));
t.test('exclusion, through the master (doorbells off), 3 workers', (t) => stress(t, false, 3));
t.test('exclusion with doorbells, 2 workers', (t) => stress(t, true, 2));
t.test('exclusion with doorbells, 3 workers', (t) => stress(t, true, 3));
t.test('strict hand-offs, through the master (doorbells off), 2 workers', (t) => stress(t, false, 2, true));
t.test('strict hand-offs with doorbells, 2 workers', (t) => stress(t, true, 2, true));
