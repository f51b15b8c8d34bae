// Rolling restart under load: every worker replaced, new ones ready before
// old ones retire, and the load generator sees no failed request and no
// socket error. Duration: CLUSTER_LOAD_SECONDS (4).
import autocannon from 'autocannon';
import t from 'tap';
import { children, makeSupervisor } from './cluster-helpers';
import { sleep } from './helpers';

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
