// The supervisor's lifecycle: hook order on both sides, messages to a
// service, a container and '*', order per sender, admin messages, timers
// that stop at shutdown, the grace period.
import { appendFileSync } from 'node:fs';
import t from 'tap';
import { children, httpGet, makeSupervisor } from './cluster-helpers';
import { sleep, waitFor } from './helpers';

t.test('hooks run in order, master and worker side', async (t) => {
  let h: ReturnType<typeof makeSupervisor>;
  const note = (event: string, ...rest: unknown[]) => appendFileSync(h.logFile, JSON.stringify({ event, master: true, rest }) + '\n');
  h = makeSupervisor([{ count: 1 }], {
    hooks: {
      postAdd: async (s) => { await sleep(10); note('postAdd', s); },
      preStart: (s, id) => note('preStart', s, id),
      postFinish: (s, id, st) => note('postFinish', s, id, st),
      systemShutdown: async () => { await sleep(10); note('systemShutdown'); },
    },
  });
  await h.sup.start();
  t.equal((await httpGet(h.port())).body, 'web.1');
  await h.sup.stop();
  await waitFor(() => h.events().some((e) => e.event === 'postFinish'), 5000);
  const seq = h.events().map((e) => e.event);
  t.same(seq, ['postAdd', 'preStart', 'postStart', 'systemShutdown', 'preFinish', 'shutdown', 'postFinish']);
  const fin = h.events().find((e) => e.event === 'postFinish');
  t.same(fin.rest, ['web', 'web.1', { code: 0, signal: null }], 'postFinish gets the exit status');
  t.same(children(), [], 'no child process left');
});

t.test('messages: service, container id, \'*\', master; order kept per sender', async (t) => {
  const h = makeSupervisor([{ count: 2 }, { name: 'aux', count: 1, listen: [] }]);
  t.teardown(() => h.sup.stop());
  await h.sup.start();
  const got: [string, unknown[], { id: string; service: string }][] = [];
  h.sup.on('message', (name: string, args: unknown[], from: { id: string; service: string }) => got.push([name, args, from]));

  const N = 200;
  for (let k = 0; k < N; k++) t.equal(h.sup.send('web', 'ping', 'master', k), 2);
  t.ok(await waitFor(() => got.length === 2 * N, 5000), 'every pong back');
  for (const id of ['web.1', 'web.2']) {
    const ks = got.filter((g) => g[2].id === id).map((g) => g[1][1]);
    t.same(ks, Array.from({ length: N }, (_, k) => k), `${id}: in the order sent`);
  }
  t.ok(got.every((g) => g[0] === 'pong' && g[2].service === 'web'));

  got.length = 0;
  t.equal(h.sup.send('aux.1', 'ping', 'master', 'only'), 1, 'a container id');
  t.ok(await waitFor(() => got.length === 1, 5000));
  t.same(got[0], ['pong', ['aux.1', 'only'], { id: 'aux.1', service: 'aux' }]);
  t.equal(h.sup.send('nobody', 'ping'), 0, 'no such target: nobody gets it');

  // A worker broadcasts: every container (the sender too) gets it, from web.1.
  h.sup.send('web.1', 'broadcast');
  t.ok(await waitFor(() => h.events().filter((e) => e.event === 'message' && e.name === 'hello').length === 3, 5000));
  const hello = h.events().filter((e) => e.event === 'message' && e.name === 'hello');
  t.same(hello.map((e) => e.id).sort(), ['aux.1', 'web.1', 'web.2']);
  t.ok(hello.every((e) => e.args[0] === 'web.1'));

  // Worker to worker, by container id.
  got.length = 0;
  h.sup.send('web.2', 'ping', 'aux.1', 'w2w');
  t.ok(await waitFor(() => h.events().some((e) => e.id === 'aux.1' && e.name === 'pong'), 5000), 'web.2 -> aux.1');

  // Admin messages go to receiveAdminMessage.
  t.equal(h.sup.sendAdmin('*', 'reload', { level: 2 }), 3);
  t.ok(await waitFor(() => h.events().filter((e) => e.event === 'admin').length === 3, 5000));
  t.same(h.events().find((e) => e.event === 'admin').args, [{ level: 2 }]);
  t.throws(() => h.sup.send('', 'x'), TypeError);

  // Requests to the master: a registered op answers, by id; an unknown one,
  // or a handler that throws, comes back as an error.
  let count = 0;
  h.sup.handle('counter.add', (a, from) => ({ value: (count += Number(a.n)), from: from.id }));
  h.sup.handle('boom', () => { throw new Error('no such thing'); });
  t.throws(() => h.sup.handle('boom', () => 1), /exists already/);
  const called: unknown[] = [];
  h.sup.on('message', (name: string, args: unknown[]) => { if (name === 'called') called.push(args[0]); });
  h.sup.send('web.1', 'call', 'counter.add', { n: 2 });
  h.sup.send('web.2', 'call', 'counter.add', { n: 3 });
  h.sup.send('aux.1', 'call', 'nope', {});
  h.sup.send('aux.1', 'call', 'boom', {});
  t.ok(await waitFor(() => called.length === 4, 5000));
  t.same(called.filter((c: any) => c.value).map((c: any) => c.from).sort(), ['web.1', 'web.2']);
  t.equal(count, 5);
  t.ok(called.some((c: any) => c.error === 'unknown request op nope'));
  t.ok(called.some((c: any) => c.error === 'no such thing'));
});

t.test('container timers stop at shutdown; a worker past the grace is killed', async (t) => {
  const h = makeSupervisor([{ count: 1, env: { CLUSTER_MODE: 'hang-stop' } }], { grace: 300 });
  const exits: unknown[] = [];
  h.sup.on('exit', (id: string, svc: string, st: unknown) => exits.push(st));
  await h.sup.start();
  h.sup.send('web', 'tick');
  t.ok(await waitFor(() => h.events().filter((e) => e.event === 'tick').length >= 3, 5000), 'the interval runs');
  const t0 = Date.now();
  await h.sup.stop();
  const took = Date.now() - t0;
  t.same(exits, [{ code: null, signal: 'SIGKILL' }], 'killed after the grace');
  t.ok(took >= 300, `stop took ${took} ms (grace 300)`);
  const ticks = h.events().filter((e) => e.event === 'tick');
  const fin = h.events().find((e) => e.event === 'preFinish');
  t.ok(fin && ticks.every((e) => e.t <= fin.t + 5), 'no tick after preFinish began');
  t.ok(h.lines.some((l) => /still running after the 300 ms grace: killed/.test(l)), 'logged');
});
