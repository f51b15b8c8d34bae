// The Netplex timer example (a protected semaphore elects the worker that
// runs a periodic job) and workers SIGKILLed in a loop while they hold a
// mutex, have decremented a protected semaphore and are writing a shared
// variable. SYNC_KILLS sets the number of kills (20 by default; the
// documented run used 200).
import { readFileSync, existsSync } from 'node:fs';
import t from 'tap';
import { sleep, waitFor } from './helpers';
import { makeSync } from './sync-helpers';

const FAST_RESTART = { initialDelay: 1, maxDelay: 1, maxCrashes: 1000000, window: 1000 };

t.test('timer example: one job runner at a time, takeover on exit and on SIGKILL', async (t) => {
  const h = makeSync([{ count: 3, restart: FAST_RESTART, env: { SYNC_MODE: 'timer' } }]);
  const log = h.logFile;
  t.teardown(() => h.sup.stop());
  await h.sup.start();
  const events = (): { event: string; pid: number; t: number }[] =>
    existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
  const starts = () => events().filter((e) => e.event === 'start');
  t.ok(await waitFor(() => starts().length === 1, 5000), 'one worker took the job');
  await sleep(200);
  t.equal(starts().length, 1, 'and only one');
  const kills = new Map<number, number>();
  // a clean exit: the owner gives the semaphore back and broadcasts 'release'
  const first = starts()[0]!.pid;
  process.kill(first, 'SIGTERM');
  t.ok(await waitFor(() => starts().length === 2, 5000), 'another took over after a clean exit');
  t.ok(events().some((e) => e.event === 'stop' && e.pid === first), 'the first one stopped its job');
  // SIGKILL: the master reverts the owner's decrement and the next waiter starts
  const latencies: number[] = [];
  for (let i = 0; i < 3; i++) {
    const n = starts().length;
    const owner = starts()[n - 1]!.pid;
    await sleep(100);
    // the others waiting: the workers restarted after earlier kills are up
    let up = 0;
    for (let j = 0; j < 100 && up < 3; j++) {
      up = (await h.sup.list())[0]!.containers.filter((c) => c.state === 'ready').length;
      if (up < 3) await sleep(50);
    }
    const killedAt = Date.now();
    kills.set(owner, killedAt);
    process.kill(owner, 'SIGKILL');
    t.ok(await waitFor(() => starts().length === n + 1, 3000), `takeover ${i + 1}`);
    latencies.push(starts()[n]!.t - killedAt);
  }
  t.ok(latencies.every((l) => l < 1000), `takeover within 1 s of the SIGKILL: ${latencies.join(', ')} ms`);
  await sleep(200);
  // never two at once: each owner's interval [start, stop or death] is
  // disjoint from the others, and every tick lies within its owner's
  const evs = events();
  const intervals = evs.filter((e) => e.event === 'start').map((s) => {
    const stop = evs.find((e) => e.event === 'stop' && e.pid === s.pid && e.t >= s.t);
    return { pid: s.pid, from: s.t, to: stop ? stop.t : kills.get(s.pid) ?? Infinity };
  });
  for (let i = 1; i < intervals.length; i++) {
    t.ok(intervals[i]!.from >= intervals[i - 1]!.to, `runner ${i + 1} started after runner ${i} ended`);
  }
  const outside = evs.filter((e) => e.event === 'tick' && !intervals.some((iv) => iv.pid === e.pid && e.t >= iv.from && e.t <= iv.to));
  t.same(outside, [], 'no tick outside its runner\'s interval');
  t.ok(evs.filter((e) => e.event === 'tick').length > 10, 'the job ran');
});

t.test('SIGKILL while holding the mutex, a protected decrement and a shared variable write', async (t) => {
  const kills = Number(process.env.SYNC_KILLS ?? 20);
  const h = makeSync([{ count: 1, restart: FAST_RESTART }]);
  t.teardown(() => h.sup.stop());
  let ready: string | null = null;
  h.sup.on('ready', (id: string) => { ready = id; });
  await h.sup.start();
  const sync = h.sup.sync;
  const sem = await sync.semaphore('crash.sem');
  await sem.create(5, { protected: true });
  const m = await sync.mutex('crash.m');
  const v = await sync.sharedVar('crash.v');
  await v.create({ i: -1, fill: [] });
  const check = (x: any): boolean => Array.isArray(x.fill) && x.fill.every((y: number) => y === x.i);
  let torn = 0;
  let reads = 0;
  const fromKill: number[] = [];
  const fromExit: number[] = [];
  let exitedAt = 0;
  let beforeExit = 0;
  h.sup.on('exit', () => { exitedAt = Date.now(); });
  let notDied = 0;
  for (let k = 0; k < kills; k++) {
    if (!(await waitFor(() => ready !== null, 10000))) break;
    const id = ready!;
    ready = null;
    // the child locks, takes 2 from the semaphore, then writes the variable
    // without pause; the master waits for the mutex meanwhile
    const r = await h.run(id, `
      const m = await c.mutex('crash.m'); const s = await c.semaphore('crash.sem'); const v = await c.sharedVar('crash.v');
      await m.lock(); s.decrement(); s.decrement();
      let i = ${k * 1000000};
      const spin = () => { const end = Date.now() + 5; while (Date.now() < end) { i++; v.set({ i, fill: new Array(200).fill(i) }); } setImmediate(spin); };
      setImmediate(spin);
      return process.pid`);
    if (!r.ok) { t.fail(`child: ${r.message}`); break; }
    t.equal(sem.get(), 3, 'the child took 2');
    const locked = m.lock();
    await sleep(Math.random() * 20);
    for (let j = 0; j < 50; j++) { reads++; if (!check(v.get())) torn++; }
    exitedAt = 0;
    process.kill(r.v, 'SIGKILL');
    const died = Date.now();
    // the master learns of the death when the child's main thread is gone
    // (its life lock), usually before the exit (SIGCHLD), which comes once
    // the kernel has torn the whole process down; the exit is the fallback
    // (polled every millisecond: a busy poll would take the CPU the dying process needs)
    while (sem.get() !== 5 && Date.now() - died < 2000) await sleep(1);
    const back = Date.now();
    fromKill.push(back - died);
    if (exitedAt) fromExit.push(Math.max(0, back - exitedAt));
    else beforeExit++;
    const res = await Promise.race([locked, sleep(2000).then(() => null)]);
    if (!res || !res.ownerDied) notDied++;
    for (let j = 0; j < 50; j++) { reads++; if (!check(v.get())) torn++; }
    v.set({ i: -1, fill: [] }); // the writer lock was released
    m.unlock();
  }
  const sorted = [...fromKill].sort((a, b) => a - b);
  const q = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
  t.ok(fromExit.every((x) => x <= 100), `semaphore back before the exit was seen ${beforeExit} times of ${fromKill.length}, ` +
    `else within 100 ms of it (worst ${fromExit.length ? Math.max(...fromExit) : 0} ms)`);
  t.ok(fromKill.every((x) => x < 1000), `and within 1 s of every kill: p50 ${q(0.5)} ms, p99 ${q(0.99)} ms, max ${q(1)} ms over ${fromKill.length} kills`);
  // The 100 ms target from the kill is a speed figure: it is reported here
  // (and by `SYNC_KILLS=200 npx tap test/sync-crash.test.ts`), not asserted,
  // since the dying thread may wait for a CPU on a loaded machine.
  t.comment(`recovery from the kill: p50 ${q(0.5)} ms, p99 ${q(0.99)} ms, max ${q(1)} ms over ${fromKill.length} kills`);
  t.equal(notDied, 0, 'the mutex passed to the waiter with ownerDied each time');
  t.equal(torn, 0, `no torn value in ${reads} reads`);
  t.equal(sem.get(), 5);
});
