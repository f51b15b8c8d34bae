// What a crash gets: restart after a backoff that doubles, a service that
// keeps crashing is marked failed; globalExceptionHandler; workers SIGKILLed
// in a loop under load: the service keeps answering, no fd leak, no zombie.
import autocannon from 'autocannon';
import t from 'tap';
import { children, httpGet, makeSupervisor } from './cluster-helpers';
import { openFds, settleFds, sleep, waitFor } from './helpers';

t.test('a crash loop backs off and ends in failed', async (t) => {
  const h = makeSupervisor([{
    count: 1, env: { CLUSTER_MODE: 'crash-start' },
    restart: { initialDelay: 50, maxDelay: 400, resetAfter: 10000, maxCrashes: 4, window: 60000 },
  }]);
  const starts: number[] = [];
  h.sup.on('exit', () => starts.push(Date.now()));
  const failed = new Promise((r) => h.sup.once('failed', r));
  await h.sup.start();
  t.equal(await failed, 'web', 'the service is reported failed');
  await sleep(600); // nothing more is started
  const restarts = h.lines.filter((l) => /restart \d+ in/.test(l));
  t.same(restarts.map((l) => Number(/in (\d+) ms/.exec(l)![1])), [50, 100, 200, 400], 'the delay doubles up to maxDelay');
  t.ok(restarts.every((l) => /web worker web\.\d+ \(pid \d+\) exited with code 1/.test(l)), 'service, id, pid, exit code logged');
  t.equal(starts.length, 5, '4 restarts, then no more');
  for (let i = 1; i < starts.length; i++) {
    t.ok(starts[i]! - starts[i - 1]! >= [50, 100, 200, 400][i - 1]!, `gap ${i}: ${starts[i]! - starts[i - 1]!} ms`);
  }
  t.ok(h.lines.some((l) => /service web FAILED/.test(l)));
  const list = await h.sup.list();
  t.equal(list[0]!.failed, true);
  t.equal(list[0]!.containers.length, 0);
  await h.sup.stop();
  t.same(children(), []);
});

t.test('globalExceptionHandler: true keeps the worker, false lets it die and restart', async (t) => {
  const h = makeSupervisor([
    { name: 'keep', count: 1, listen: [], env: { CLUSTER_MODE: 'throw-keep' } },
    { name: 'die', count: 1, listen: [], restart: { initialDelay: 10 } },
  ]);
  t.teardown(() => h.sup.stop());
  const exits: [string, unknown][] = [];
  h.sup.on('exit', (id: string, _s: string, st: unknown) => exits.push([id, st]));
  await h.sup.start();
  h.sup.send('*', 'throw');
  t.ok(await waitFor(() => exits.length === 1, 5000));
  t.same(exits, [['die.1', { code: 1, signal: null }]]);
  t.ok(await waitFor(() => h.events().some((e) => e.event === 'postStart' && e.id === 'die.2'), 5000), 'restarted');
  t.equal(h.events().filter((e) => e.event === 'exception').length, 2, 'both handlers ran');
  const list = await h.sup.list();
  t.same(list.map((s) => s.containers.map((c) => c.id)), [['keep.1'], ['die.2']]);
});

t.test('SIGKILL in a loop under load: still answering, no fd leak, no zombie', async (t) => {
  const fds0 = openFds();
  const h = makeSupervisor([{ count: 2, restart: { initialDelay: 20, maxDelay: 100, maxCrashes: 1000 } }]);
  await h.sup.start();
  const port = h.port();
  const KILLS = Number(process.env.CLUSTER_KILLS ?? 8);
  const load = autocannon({ url: `http://127.0.0.1:${port}/`, connections: 8, duration: Math.max(3, KILLS * 0.35) + 1 });
  for (let i = 0; i < KILLS; i++) {
    await sleep(300);
    const list = await h.sup.list();
    const ready = list[0]!.containers.filter((c) => c.state === 'ready');
    if (ready.length) process.kill(ready[i % ready.length]!.pid, 'SIGKILL');
  }
  const r = await load;
  t.comment(`load: ${r.requests.total} requests, ${r['2xx']} 2xx, ${r.errors} errors (${r.resets ?? 0} resets) across ${KILLS} kills`);
  t.ok(r['2xx'] > 100, 'served throughout');
  t.equal(r.non2xx, 0);
  t.ok(await waitFor(() => h.sup.listenerCount('exit') >= 0 && children().filter((c) => c.state !== 'Z').length === 2, 5000), 'back to 2 workers');
  t.equal((await httpGet(port)).status, 200, 'answering after the kills');
  const kills = h.lines.filter((l) => /exited with signal SIGKILL; restart/.test(l)).length;
  t.ok(kills >= KILLS - 1, `${kills} kills logged and restarted`);
  await h.sup.stop();
  t.same(children(), [], 'no child and no zombie left');
  t.equal(await settleFds(fds0), fds0, 'the master leaks no fd');
});

t.test('connections queued while no worker runs are served by the replacement, not lost', async (t) => {
  const h = makeSupervisor([{ count: 1, restart: { initialDelay: 300 } }]);
  await h.sup.start();
  t.teardown(() => h.sup.stop());
  const port = h.port();
  const [c] = (await h.sup.list())[0]!.containers;
  const exited = new Promise((r) => h.sup.once('exit', r));
  process.kill(c!.pid, 'SIGKILL');
  await exited;
  // No worker for the next 300 ms (the backoff): the master's copy of the
  // listening socket keeps its queue, and these wait in it.
  const t0 = Date.now();
  const answers = await Promise.all(Array.from({ length: 5 }, () => httpGet(port)));
  t.same(answers.map((a) => a.status), [200, 200, 200, 200, 200], 'every queued connection answered');
  t.ok(answers.every((a) => a.body === 'web.2'), 'by the replacement');
  t.ok(Date.now() - t0 >= 250, `they waited for it (${Date.now() - t0} ms)`);
});

t.test('a worker that runs out of memory is logged and restarted', async (t) => {
  const h = makeSupervisor([{ count: 1, listen: [], execArgv: ['--max-old-space-size=24'], restart: { initialDelay: 10 } }]);
  await h.sup.start();
  t.teardown(() => h.sup.stop());
  const exit = new Promise<{ code: number | null; signal: string | null }>((r) => h.sup.once('exit', (_id: string, _s: string, st: any) => r(st)));
  h.sup.send('web', 'oom');
  const st = await exit;
  t.ok(st.signal === 'SIGABRT' || st.signal === 'SIGTRAP' || (st.code !== null && st.code !== 0), `died: ${JSON.stringify(st)}`);
  t.ok(await waitFor(() => h.events().some((e) => e.event === 'postStart' && e.id === 'web.2'), 10000), 'restarted');
  t.ok(h.lines.some((l) => /web worker web\.1 \(pid \d+\) exited with (signal|code) .*; restart 1 in 10 ms/.test(l)), 'logged with the restart count');
});
