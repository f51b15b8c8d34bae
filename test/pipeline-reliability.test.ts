// iomux.pipeline under load with things going wrong: random client hang-ups,
// timeouts and a stage that throws (every request answered exactly once, no
// request state or fd left behind), and workers killed under load (every
// request still answered: a result or a 502; none hangs).
// IOMUX_PIPELINE_SOAK_REQUESTS sets the first test's count (2000 by default;
// 10000 for the long run).
import t from 'tap';
import * as http from 'node:http';
import { iomux } from './helpers';
import { fdCount, sleep, until } from './zmq-helpers';

type Ctx = import('../dist/pipeline').JobContext;
const TOTAL = Number(process.env.IOMUX_PIPELINE_SOAK_REQUESTS ?? 2000);

function request(port: number, path: string, agent: http.Agent | false, hangUpAfter = -1): Promise<{ status: number; body: string } | 'hung up'> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', () => resolve('hung up'));
    if (hangUpAfter >= 0) setTimeout(() => req.destroy(), hangUpAfter);
  });
}

t.test(`${TOTAL} requests with random hang-ups, timeouts and throws: one response each, nothing leaked`, async (t) => {
  const fds = fdCount();
  const srv = iomux.pipeline.createServer({
    timeout: 1000,
    log: () => {},
    stages: [
      {
        name: 'first', workers: 2, concurrency: 32, // 64 slots for 32 clients: a job never waits, so only 'slow' ones time out
        fn: async (job: { query: Record<string, string> }, ctx: Ctx) => {
          const m = job.query.m;
          if (m === 'throw') throw new Error('thrown on purpose');
          if (m === 'slow' || m === 'hang') {
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, 5000);
              ctx.signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); });
            });
          }
          return ctx.next(Number(job.query.i));
        },
      },
      { name: 'second', workers: 2, fn: (i: number, ctx: Ctx) => ctx.reply(200, {}, String(i)) },
    ],
  });
  await srv.listen();
  const port = srv.address().port;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const modes = Array.from({ length: TOTAL }, () => {
    const r = rnd();
    return r < 0.05 ? 'throw' : r < 0.08 ? 'slow' : r < 0.13 ? 'hang' : 'ok';
  });
  const expect = { ok: 0, throw: 0, slow: 0, hang: 0 };
  let next = 0;
  let wrong = 0;
  const lane = async () => {
    while (next < TOTAL) {
      const i = next++;
      const m = modes[i]!;
      const r = await request(port, `/?i=${i}&m=${m}`, m === 'hang' ? false : agent, m === 'hang' ? 20 : -1);
      const good = m === 'ok' ? r !== 'hung up' && r.status === 200 && r.body === String(i)
        : m === 'throw' ? r !== 'hung up' && r.status === 500
        : m === 'slow' ? r !== 'hung up' && r.status === 504
        : r === 'hung up';
      if (good) expect[m]++;
      else wrong++;
    }
  };
  await Promise.all(Array.from({ length: 32 }, lane));
  agent.destroy();
  t.equal(wrong, 0, 'every request got the response its mode calls for');
  // The server may see a client's hang-up after the client has moved on.
  await until(() => srv.stats().inFlight === 0 && srv.stats().stages.every((s) => s.inFlight === 0 && s.queued === 0), 10000, 'requests and stages idle');
  const s = srv.stats();
  t.equal(s.inFlight, 0, 'no request state left');
  const answered = Object.values(s.responses).reduce((a, b) => a + b, 0);
  t.equal(answered, s.requests, 'exactly one outcome per request the server saw');
  // A client that hangs up 20 ms in may do so before its request reached the server.
  const unseen = TOTAL - s.requests;
  t.ok(unseen >= 0 && unseen <= expect.hang, `requests the server never saw (${unseen}) were hang-ups`);
  t.equal(s.responses['200'], expect.ok);
  t.equal(s.responses['500'], expect.throw);
  t.equal(s.responses['504'], expect.slow);
  t.equal(s.responses.interrupted, expect.hang - unseen);
  t.equal(s.stages[0]!.errors, expect.throw);
  t.ok(expect.ok > 0 && expect.throw > 0 && expect.slow > 0 && expect.hang > 0, 'every mode ran');
  await srv.close();
  await until(() => fdCount() <= fds, 5000, 'fds back');
  t.ok(fdCount() <= fds, 'no fd leaked');
});

t.test('workers killed under load: every request is answered, a result or a 502', async (t) => {
  const srv = iomux.pipeline.createServer({
    timeout: 10000,
    log: () => {},
    stages: [
      { name: 'work', workers: 4, fn: async (job: { query: Record<string, string> }, ctx: Ctx) => { await sleep(2); return ctx.next(job.query.i); } },
      { name: 'out', workers: 2, fn: (i: string, ctx: Ctx) => ctx.reply(200, {}, i) },
    ],
  });
  await srv.listen();
  const port = srv.address().port;
  await until(() => srv.stages[0]!.workers.size === 4, 5000, 'workers');
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  const results: Array<Promise<{ status: number; body: string } | 'hung up'>> = [];
  for (let i = 0; i < 400; i++) {
    results.push(request(port, `/?i=${i}`, agent));
    if (i === 100 || i === 200 || i === 300) void srv._workers[i / 100 - 1]!.kill(); // three of the four 'work' workers
    if (i % 16 === 15) await sleep(1);
  }
  const all = await Promise.all(results);
  agent.destroy();
  const statuses = new Map<number, number>();
  let bad = 0;
  all.forEach((r, i) => {
    if (r === 'hung up') return void bad++;
    statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
    if (r.status === 200 && r.body !== String(i)) bad++;
    if (r.status !== 200 && r.status !== 502) bad++;
  });
  t.equal(bad, 0, 'each a result (its own) or a 502');
  t.ok((statuses.get(200) ?? 0) > 300, `most succeed (${JSON.stringify([...statuses])})`);
  t.equal(srv.stats().inFlight, 0);
  t.equal(srv.stats().stages[0]!.workers, 1, 'the proxy counts one live worker');
  await srv.close();
});
