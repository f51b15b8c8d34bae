// Rolling restart under load: every worker replaced, new ones ready before
// old ones retire, and the load generator sees no failed request and no
// socket error: autocannon, and a client that sends each request the moment
// the previous response is complete and counts a connection ending under a
// request as an error, as wrk does. Duration: CLUSTER_LOAD_SECONDS (4).
import autocannon from 'autocannon';
import { performance } from 'node:perf_hooks';
import t from 'tap';
import { children, makeSupervisor, wrkLike } from './cluster-helpers';
import { sleep } from './helpers';
import { parseResponses, rawClient } from './http-helpers';

const SECONDS = Number(process.env.CLUSTER_LOAD_SECONDS ?? 4);

for (const connHeader of ['keep-alive', 'close']) {
  t.test(`rolling restart twice under load (${connHeader}): 0 failed, 0 errors`, async (t) => {
    const h = makeSupervisor([{ count: 2 }]);
    await h.sup.start();
    const port = h.port();
    const load = autocannon({
      url: `http://127.0.0.1:${port}/`, connections: 16, duration: SECONDS,
      headers: connHeader === 'close' ? { connection: 'close' } : {},
    });
    await sleep(SECONDS * 150);
    const t0 = Date.now();
    await h.sup.restart('web');
    const first = Date.now() - t0;
    await sleep(SECONDS * 100);
    await h.sup.restart('web');
    const r = await load;
    t.comment(`${r.requests.total} requests in ${SECONDS} s, ${r['2xx']} 2xx, non2xx ${r.non2xx}, errors ${r.errors}, ` +
      `timeouts ${r.timeouts}, resets ${r.resets ?? 0}; a rolling restart of 2 workers took ${first} ms`);
    t.ok(r['2xx'] > 100, 'load ran');
    t.equal(r.non2xx, 0, 'no failed request');
    t.equal(r.errors, 0, 'no socket error');
    t.equal(r.timeouts, 0, 'no timeout');
    const list = await h.sup.list();
    t.same(list[0]!.containers.map((c) => c.id).sort(), ['web.5', 'web.6'], 'every worker replaced twice');
    const ev = h.events();
    // Each new worker's postStart comes before the preFinish of the one it replaces.
    for (const [fresh, old] of [['web.3', 'web.1'], ['web.4', 'web.2'], ['web.5', 'web.3'], ['web.6', 'web.4']]) {
      const a = ev.findIndex((e) => e.event === 'postStart' && e.id === fresh);
      const b = ev.findIndex((e) => e.event === 'preFinish' && e.id === old);
      t.ok(a >= 0 && b > a, `${fresh} started before ${old} retired`);
    }
    await h.sup.stop();
    t.same(children(), []);
  });
}

for (const mode of ['iomux', 'node-http']) {
  t.test(`rolling restart twice under a wrk-like keep-alive client (${mode === 'iomux' ? 'iomux.http' : 'node:http via serveNode'}): every request answered, no connection ends under a request`, async (t) => {
    const h = makeSupervisor([{ count: 2, env: { CLUSTER_MODE: mode === 'iomux' ? '' : mode } }]);
    await h.sup.start();
    const load = wrkLike(h.port(), 16);
    await sleep(SECONDS * 150);
    await h.sup.restart('web');
    await sleep(SECONDS * 100);
    await h.sup.restart('web');
    await sleep(SECONDS * 150);
    const r = await load.stop();
    t.comment(`${r.requests} requests on ${r.connects} connections, non2xx ${r.non2xx}, errors ${r.errors.length}`);
    t.ok(r.requests > 100, 'load ran');
    t.ok(r.connects > 16, 'the retiring workers closed their connections (the client reconnected)');
    t.equal(r.non2xx, 0, 'no failed request');
    t.same(r.errors.slice(0, 5), [], `no reset, no connection ended under a request (${r.errors.length} errors)`);
    const list = await h.sup.list();
    t.same(list[0]!.containers.map((c) => c.id).sort(), ['web.5', 'web.6'], 'every worker replaced twice');
    await h.sup.stop();
    t.same(children(), []);
  });
}

t.test('a stopping worker keeps an idle keep-alive connection for the idleGrace option, and answers a request sent in it', async (t) => {
  const h = makeSupervisor([{ count: 1 }], { idleGrace: 1200 });
  await h.sup.start();
  const port = h.port();
  const idle = rawClient(port);
  idle.sock.write('GET /1 HTTP/1.1\r\nHost: x\r\n\r\n');
  await idle.responses(1);
  const late = rawClient(port);
  late.sock.write('GET /1 HTTP/1.1\r\nHost: x\r\n\r\n');
  await late.responses(1);
  const at = performance.now();
  const stopping = h.sup.stop();
  await sleep(600);
  late.sock.write('GET /2 HTTP/1.1\r\nHost: x\r\n\r\n');
  await late.waitEnd(3000);
  const lrs = parseResponses(late.data());
  t.equal(lrs.length, 2, 'the request sent 600 ms into the stop is answered');
  t.equal(lrs[1]!.headers.connection, 'close', 'with Connection: close');
  const idleEnd = await idle.waitEnd(5000);
  t.ok(idleEnd - at >= 1100, `the idle connection was kept for the idle grace (${(idleEnd - at).toFixed(0)} ms)`);
  for (const c of [idle, late]) {
    c.sock.end();
    await c.closed;
    t.same(c.errors, [], 'no socket error');
  }
  await stopping;
  t.same(children(), []);
});
