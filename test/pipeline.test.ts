// iomux.pipeline with in-process workers: results through two stages, an early
// reply on the loopback, a throwing stage (500), timeouts (504), a full queue
// (503), a worker that dies holding a job (502), a client that hangs up
// (the worker sees ctx.interrupted), /health and /stats.
import t from 'tap';
import * as http from 'node:http';
import { existsSync, statSync } from 'node:fs';
import { iomux } from './helpers';
import { fdCount, sleep, until } from './zmq-helpers';

const P = iomux.pipeline;
type Ctx = import('../dist/pipeline').JobContext;

interface Resp { status: number; headers: http.IncomingHttpHeaders; rawHeaders: string[]; body: string }

function get(port: number, path: string): Promise<Resp> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
  });
}

const parse = (job: { query: Record<string, string> }, ctx: Ctx) => {
  const n = Number(job.query.n);
  if (!Number.isInteger(n)) return ctx.reply(400, { 'content-type': 'text/plain' }, 'bad n\n');
  return ctx.next({ n });
};
const double = (job: { n: number }, ctx: Ctx) => ctx.next({ doubled: job.n * 2 });

t.test('two stages: the result, an early reply on the loopback, /health, /stats', async (t) => {
  const srv = P.createServer({ stages: [{ name: 'parse', fn: parse, workers: 2 }, { name: 'double', fn: double, workers: 2 }], timeout: 5000 });
  await srv.listen();
  const port = srv.address().port;
  t.ok(srv.runDir !== null && existsSync(srv.runDir), 'run dir made');
  t.equal(statSync(srv.runDir!).mode & 0o777, 0o700, 'run dir is 0700');
  await until(() => srv.stages.every((s) => s.workers.size === 2), 5000, 'workers announced');

  const r = await get(port, '/x?n=21');
  t.equal(r.status, 200);
  t.same(JSON.parse(r.body), { doubled: 42 });
  const bad = await get(port, '/x?n=abc');
  t.equal(bad.status, 400, 'stage 1 answered early');
  t.equal(bad.body, 'bad n\n');
  t.equal(bad.headers['content-type'], 'text/plain', "the early reply's own headers");
  const again = await get(port, '/x?n=2');
  t.equal(again.headers['content-type'], 'application/json', 'then the result\'s headers again');

  const many = await Promise.all(Array.from({ length: 200 }, (_, i) => get(port, `/x?n=${i}`)));
  t.ok(many.every((m, i) => m.status === 200 && JSON.parse(m.body).doubled === i * 2), '200 concurrent requests, each its own result');

  const h = await get(port, '/health');
  t.equal(h.status, 200);
  t.same(JSON.parse(h.body), { status: 'ok', stages: [{ name: 'parse', workers: 2 }, { name: 'double', workers: 2 }] });
  const s = JSON.parse((await get(port, '/stats')).body);
  t.equal(s.inFlight, 0);
  t.equal(s.responses['200'], 202);
  t.equal(s.responses['400'], 1);
  t.equal(s.stages[0].completed, 203);
  t.equal(s.stages[1].completed, 202);
  t.equal(s.latencyMs.count, 203);
  t.ok(s.latencyMs.p50 > 0 && s.latencyMs.p99 >= s.latencyMs.p50 && s.latencyMs.max >= s.latencyMs.p99, 'latency percentiles');
  t.match(srv.summary(), /^requests 203, in flight 0, .*\nlatency ms p50 [0-9.]+ p90 .*\n  parse: workers 2 idle 2 queued 0 in flight 0 completed 203 /, 'summary');
  const dir = srv.runDir!;
  await srv.close();
  t.notOk(existsSync(dir), 'run dir removed at close');
});

t.test('the request reaches the first stage: GET without a body, POST with a fixed-length and a chunked body', async (t) => {
  const echo = (job: { method: string; path: string; query: Record<string, string>; headers: Record<string, string>; body: Buffer }, ctx: Ctx) =>
    ctx.reply(200, { 'content-type': 'application/json' }, { method: job.method, path: job.path, query: job.query, te: job.headers['transfer-encoding'] ?? null, body: job.body.toString('latin1') });
  const srv = P.createServer({ stages: [{ name: 'echo', fn: echo }], timeout: 5000 });
  await srv.listen();
  const port = srv.address().port;
  await until(() => srv.stages.every((s) => s.workers.size === 1), 5000, 'worker announced');
  const post = (body: string, chunked: boolean): Promise<Resp> => new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/p?a=1', method: 'POST', agent: false, headers: chunked ? {} : { 'content-length': Buffer.byteLength(body) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, rawHeaders: res.rawHeaders, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    if (chunked) {
      req.write(body.slice(0, 3));
      setTimeout(() => req.end(body.slice(3)), 20);
    } else {
      req.end(body);
    }
  });
  t.same(JSON.parse((await get(port, '/g?x=1&y=a+b')).body), { method: 'GET', path: '/g', query: { x: '1', y: 'a b' }, te: null, body: '' });
  t.same(JSON.parse((await post('hello', false)).body), { method: 'POST', path: '/p', query: { a: '1' }, te: null, body: 'hello' });
  t.same(JSON.parse((await post('chunked body', true)).body), { method: 'POST', path: '/p', query: { a: '1' }, te: 'chunked', body: 'chunked body' });
  await srv.close();
});

t.test('Buffers pass as they are; a thrown error is a 500 naming the stage in the log', async (t) => {
  const lines: string[] = [];
  const srv = P.createServer({
    log: (l) => lines.push(l),
    stages: [
      { name: 'raw', fn: (job: { query: Record<string, string> }, ctx: Ctx) => ctx.next(Buffer.from(job.query.s ?? '')) },
      {
        name: 'upper',
        fn: (job: Buffer, ctx: Ctx) => {
          t.ok(Buffer.isBuffer(job), 'a Buffer arrives as a Buffer');
          if (job.toString() === 'boom') throw new Error('kaboom');
          return ctx.reply(201, { 'x-stage': 'upper' }, job.toString().toUpperCase());
        },
      },
    ],
  });
  await srv.listen();
  const port = srv.address().port;
  const r = await get(port, '/?s=abc');
  t.equal(r.status, 201);
  t.equal(r.headers['x-stage'], 'upper');
  t.equal(r.body, 'ABC');
  const e = await get(port, '/?s=boom');
  t.equal(e.status, 500);
  t.ok(lines.some((l) => l.includes('stage upper') && l.includes('kaboom')), 'logged with the stage name');
  t.equal(srv.stats().stages[1].errors, 1);
  await srv.close();
});

t.test('timeout: 504, and the worker is interrupted', async (t) => {
  let sawAbort = false;
  const srv = P.createServer({
    timeout: 150,
    stages: [{
      name: 'slow',
      fn: async (_job: unknown, ctx: Ctx) => {
        await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve()));
        sawAbort = ctx.interrupted;
        return ctx.reply(200, {}, 'too late');
      },
    }],
  });
  await srv.listen();
  const r = await get(srv.address().port, '/');
  t.equal(r.status, 504);
  await until(() => sawAbort, 5000, 'worker interrupted');
  await until(() => srv.stats().stages[0].inFlight === 0, 5000, 'slot freed');
  const s = srv.stats();
  t.equal(s.stages[0].timeouts, 1);
  t.equal(s.inFlight, 0);
  const again = await get(srv.address().port, '/');
  t.equal(again.status, 504, 'the worker took the next job after its interrupt');
  await srv.close();
});

t.test('maxQueued: 503 with Retry-After', async (t) => {
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => (release = r));
  const srv = P.createServer({
    maxQueued: 2,
    retryAfter: 3,
    stages: [{ name: 'gate', fn: async (_j: unknown, ctx: Ctx) => { await gate; return ctx.reply(200, {}, 'ok'); } }],
  });
  await srv.listen();
  const port = srv.address().port;
  await until(() => srv.stages[0]!.workers.size === 1, 5000, 'worker');
  const first = get(port, '/'); // taken by the only worker
  await until(() => srv.stats().stages[0].inFlight === 1, 5000, 'in flight');
  const queued = [get(port, '/'), get(port, '/')];
  await until(() => srv.stats().stages[0].queued === 2, 5000, 'queued');
  const r = await get(port, '/');
  t.equal(r.status, 503);
  t.equal(r.headers['retry-after'], '3');
  release();
  const rest = await Promise.all([first, ...queued]);
  t.same(rest.map((x) => x.status), [200, 200, 200]);
  t.equal(srv.stats().rejected, 1);
  await srv.close();
});

t.test('a worker that dies holding a job: 502 at once; others carry on', async (t) => {
  const srv = P.createServer({
    log: () => {},
    stages: [{ name: 'hang', fn: (job: { query: Record<string, string> }, ctx: Ctx) => (job.query.hang ? new Promise<never>(() => {}) : ctx.reply(200, {}, 'fine')), workers: 2 }],
    timeout: 20000,
  });
  await srv.listen();
  const port = srv.address().port;
  await until(() => srv.stages[0]!.workers.size === 2, 5000, 'workers');
  const pending = get(port, '/?hang=1');
  await until(() => srv.stats().stages[0].inFlight === 1, 5000, 'job held');
  // Which worker holds it? Kill both one after the other would lose the test's point: find it.
  const holderIdentity = srv.stages[0]!.holder.entries()[0]![1].key;
  const t0 = Date.now();
  // In-process workers connect in order; try each, stopping at the one whose death frees the job.
  for (const w of srv._workers) {
    await w.kill();
    await sleep(50);
    if (!srv.stages[0]!.workers.has(holderIdentity)) break;
  }
  const r = await pending;
  t.equal(r.status, 502);
  t.ok(Date.now() - t0 < 5000, 'no wait for the timeout');
  t.equal(srv.stats().stages[0].failed, 1);
  t.equal(srv.stats().inFlight, 0);
  await srv.close();
});

t.test('an idempotent stage runs the job of a worker that died again on another worker', async (t) => {
  let calls = 0;
  const srv = P.createServer({
    log: () => {},
    stages: [{ name: 'retry', idempotent: true, workers: 2, fn: (_j: unknown, ctx: Ctx) => (++calls === 1 ? new Promise<never>(() => {}) : ctx.reply(200, {}, `call ${calls}`)) }],
  });
  await srv.listen();
  const port = srv.address().port;
  await until(() => srv.stages[0]!.workers.size === 2, 5000, 'workers');
  const pending = get(port, '/');
  await until(() => srv.stats().stages[0].inFlight === 1, 5000, 'job held');
  // A third worker joins; then both first ones die, the holder among them.
  const fn = (_j: unknown, ctx: Ctx) => ctx.reply(200, {}, `call ${++calls} on the new worker`);
  const spare = P.runWorker({ stage: 'retry', stageIndex: 0, fn, endpoints: srv.workerEndpoints(0) });
  await until(() => srv.stages[0]!.workers.size === 3, 5000, 'spare announced');
  await Promise.all(srv._workers.map((w) => w.kill()));
  const r = await pending;
  t.equal(r.status, 200);
  t.equal(r.body, 'call 2 on the new worker', 'run again on another worker');
  // Once, or twice when the first retry went to the other dying worker.
  const retried = srv.stats().stages[0].retried;
  t.ok(retried === 1 || retried === 2, `retried ${retried}`);
  t.equal(srv.stats().stages[0].failed, 0);
  await spare.close();
  await srv.close();
});

t.test('a client that hangs up interrupts its job', async (t) => {
  let interrupted = false;
  let finish: () => void = () => {};
  const srv = P.createServer({
    stages: [{
      name: 'long',
      fn: async (_j: unknown, ctx: Ctx) => {
        await new Promise<void>((r) => {
          finish = r;
          ctx.signal.addEventListener('abort', () => {
            interrupted = true;
          });
        });
        return ctx.reply(200, {}, 'done');
      },
    }],
  });
  await srv.listen();
  const port = srv.address().port;
  const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false });
  req.on('error', () => {});
  await until(() => srv.stats().stages[0].inFlight === 1, 5000, 'job running');
  req.destroy();
  await until(() => interrupted, 5000, 'worker saw the interrupt');
  t.equal(srv.stats().stages[0].interrupts, 1);
  t.equal(srv.stats().inFlight, 0);
  t.equal(srv.stats().responses.interrupted, 1);
  finish();
  await until(() => srv.stats().stages[0].inFlight === 0, 5000, 'slot back');
  t.equal(srv.stats().unknownReplies, 0, 'an interrupted job sends no reply');
  await srv.close();
});

t.test('each reply goes out with its own headers, as given, whether or not they repeat the last ones', async (t) => {
  const shared = { 'x-a': '1', 'x-b': '2' };
  const byCase: Record<string, () => Record<string, string | number | string[]>> = {
    same: () => ({ 'x-a': '1', 'x-b': '2' }),
    order: () => ({ 'x-b': '2', 'x-a': '1' }),
    ones: () => ({ 'x-a': '1', 'x-b': '1' }),
    swapped: () => ({ 'x-b': '1', 'x-a': '1' }),
    number: () => ({ 'x-a': '1', 'x-b': 2 }),
    value: () => ({ 'x-a': '1', 'x-b': '3' }),
    fewer: () => ({ 'x-a': '1' }),
    more: () => ({ 'x-a': '1', 'x-b': '2', 'x-c': '4' }),
    list: () => ({ 'x-a': ['1', '5'], 'x-b': '2' }),
    mutated: () => {
      shared['x-b'] = shared['x-b'] === '2' ? '6' : '2';
      return shared;
    },
  };
  const srv = P.createServer({
    stages: [{ name: 'h', fn: (job: { query: Record<string, string> }, ctx: Ctx) => ctx.reply(200, byCase[job.query.c!]!(), job.query.c) }],
  });
  await srv.listen();
  const port = srv.address().port;
  const own = (r: Resp): string[] => {
    const out: string[] = [];
    for (let i = 0; i < r.rawHeaders.length; i += 2) if (r.rawHeaders[i]!.startsWith('x-')) out.push(`${r.rawHeaders[i]}=${r.rawHeaders[i + 1]}`);
    return out;
  };
  const want: Record<string, string[]> = {
    same: ['x-a=1', 'x-b=2'], order: ['x-b=2', 'x-a=1'], ones: ['x-a=1', 'x-b=1'], swapped: ['x-b=1', 'x-a=1'], number: ['x-a=1', 'x-b=2'], value: ['x-a=1', 'x-b=3'],
    fewer: ['x-a=1'], more: ['x-a=1', 'x-b=2', 'x-c=4'], list: ['x-a=1', 'x-a=5', 'x-b=2'],
  };
  for (const c of ['same', 'same', 'order', 'same', 'ones', 'swapped', 'ones', 'number', 'same', 'value', 'fewer', 'same', 'more', 'list', 'list', 'same']) {
    const r = await get(port, `/?c=${c}`);
    t.same(own(r), want[c], `${c}: its own headers, in its order`);
  }
  for (const b of ['6', '2', '6']) t.same(own(await get(port, '/?c=mutated')), ['x-a=1', `x-b=${b}`], 'the same object, changed between replies');
  await srv.close();
});

t.test('bad options name the field', async (t) => {
  t.throws(() => P.createServer({ stages: [] }), /options\.stages/);
  t.throws(() => P.createServer({ stages: [{ name: 'a b' }] }), /stages\[0\]\.name/);
  t.throws(() => P.createServer({ stages: [{ name: 'a' }], timeout: -1 }), /options\.timeout/);
});

t.test('a reply for an unknown or expired id is counted and dropped; no fd left behind', async (t) => {
  const fds = fdCount();
  const srv = P.createServer({ stages: [{ name: 'echo', fn: (_j: unknown, ctx: Ctx) => ctx.reply(200, {}, 'ok') }] });
  await srv.listen();
  const push = new iomux.zmq.Push();
  push.connect(srv.endpoints.loopback);
  await push.send(Buffer.from('Y-2000:\x0ano-such-id\0\0\0\x02{}stray', 'latin1'));
  await until(() => srv.stats().unknownReplies === 1, 5000, 'counted');
  t.equal((await get(srv.address().port, '/')).body, 'ok', 'the server goes on');
  await push.close();
  await srv.close();
  await until(() => fdCount() <= fds, 5000, 'fds back');
  t.ok(fdCount() <= fds, 'no fd leaked');
});

t.test('the pending table: ids find their request, stale and malformed ids find nothing, arrival order, nothing kept after delete', async (t) => {
  const { PendingTable } = require('../dist/pipeline/server') as typeof import('../dist/pipeline/server');
  type Entry = { id: string; slot: number; prevAll: Entry | null; nextAll: Entry | null };
  const table = new PendingTable() as unknown as {
    reserve(): number; add(p: Entry): void; get(id: string): Entry | undefined; getAt(b: Buffer, start: number, end?: number): Entry | undefined; delete(p: Entry): void; size: number; oldest: Entry | null;
  };
  let seq = 0;
  const make = (): Entry => {
    const slot = table.reserve();
    const p: Entry = { id: `p.t.${(seq++).toString(36)}.${slot.toString(36)}`, slot, prevAll: null, nextAll: null };
    table.add(p);
    return p;
  };
  const all = Array.from({ length: 40 }, make); // slots 0..39: two base-36 digits from 36 on
  t.equal(table.size, 40);
  t.ok(all.every((p) => table.get(p.id) === p), 'each id finds its request');
  t.ok(all.every((p) => table.getAt(Buffer.from(`Jh${p.id}`), 2) === p), 'and the same id read in a frame');
  t.ok(all.every((p) => table.getAt(Buffer.from(`Jh\x01${p.id}{"n":1}`, 'latin1'), 3, 3 + p.id.length) === p), 'and read between its start and end, with data after it');
  t.equal(table.getAt(Buffer.from(`Jh\x01${all[3]!.id}1`, 'latin1'), 3, 4 + all[3]!.id.length), undefined, 'not with the byte after its end');
  t.equal(all[37]!.id.endsWith('.11'), true, 'slot 37 is "11" in base 36');
  for (const bad of ['', '.', 'x', 'p.t.0.', 'p.t.0.0.', 'p.t.1.0', 'p.t.0.A', 'p.t.0.-1', 'p.t.0.zzzzzzzzzzzzzz', 'p.t.0.14', 'p.t.0.00', 'p.t.0.0x']) {
    t.equal(table.get(bad), undefined, `nothing for ${JSON.stringify(bad)}`);
    t.equal(table.getAt(Buffer.from(`Jh${bad}`, 'latin1'), 2), undefined, `nothing for ${JSON.stringify(bad)} in a frame`);
  }
  t.equal(table.getAt(Buffer.from(`Jh${all[5]!.id}\u00ff`, 'latin1'), 2), undefined, 'nothing for an id with a byte more');
  t.equal(table.getAt(Buffer.from(`Jh${all[5]!.id}`, 'latin1'), 3), undefined, 'nothing for an id with a byte less');
  const [a, b, c] = all;
  table.delete(b!);
  t.equal(table.get(b!.id), undefined, 'deleted');
  t.equal(b!.prevAll, null);
  t.equal(b!.nextAll, null, 'a deleted request points at no other');
  t.equal(a!.nextAll, c, 'its neighbours are linked');
  table.delete(b!); // twice: nothing
  t.equal(table.size, 39);
  const d = make();
  t.equal(d.slot, b!.slot, 'the slot is reused');
  t.equal(table.get(b!.id), undefined, "the old id does not find the slot's new request");
  t.equal(table.get(d.id), d);
  table.delete(a!);
  t.equal(table.oldest, c, 'the oldest is next in arrival order');
  for (let p = table.oldest; p !== null; p = table.oldest) table.delete(p);
  t.equal(table.size, 0);
  t.equal(table.oldest, null);
});

t.test("the holder table: a job's worker by the request's slot, stale and unknown ids, a reused slot, a job handed out twice", async (t) => {
  const { HolderTable, idSlot, idSlotAt } = require('../dist/pipeline/server') as typeof import('../dist/pipeline/server');
  type W = { key: string };
  const table = new HolderTable() as unknown as {
    set(id: string, w: W): void; get(id: string): W | undefined; take(id: string, from?: W): W | undefined; takeAt(b: Buffer, start: number, from?: W, end?: number): W | undefined; entries(): Array<[string, W]>; size: number;
  };
  const a: W = { key: 'a' };
  const b: W = { key: 'b' };
  t.equal(idSlot('p.t.0.11', 100), 37);
  t.equal(idSlot('p.t.0.11', 37), -1, 'a slot not below the limit');
  for (const bad of ['', '.', 'p.t.0.x!', 'p.t.0.', 'p.t.0.A', 'p.t.0.-1', 'p.t.0.zzzzzzzzzzzzzz']) t.equal(idSlot(bad, 1000), -1, `no slot in ${JSON.stringify(bad)}`);
  for (const id of ['p.t.0.11', '11', 'p.t.0.0', 'p.t.0.z', 'p.t.0.zz', '', '.', 'p.t.0.x!', 'p.t.0.', 'p.t.0.A']) {
    t.equal(idSlotAt(Buffer.from(`Y-2001:${id}`), 7, 1296), idSlot(id, 1296), `the same slot in a frame: ${JSON.stringify(id)}`);
    t.equal(idSlotAt(Buffer.from(`Jj\x01${id}[1]`), 3, 1296, 3 + Buffer.byteLength(id)), idSlot(id, 1296), `and between a start and an end: ${JSON.stringify(id)}`);
  }
  table.set('p.t.0.0', a);
  table.set('p.t.1.1', b);
  table.set('p.t.2.11', a); // slot 37: the table grows
  t.equal(table.size, 3);
  t.equal(table.get('p.t.0.0'), a);
  t.equal(table.get('p.t.1.1'), b);
  t.equal(table.get('p.t.2.11'), a);
  for (const unknown of ['p.t.9.0', 'p.t.0.2', 'p.t.0.zz', 'junk', '', 'p.t.0.00']) t.equal(table.get(unknown), undefined, `nothing for ${JSON.stringify(unknown)}`);
  t.equal(table.take('p.t.1.1', a), undefined, 'another worker cannot end the job');
  t.equal(table.get('p.t.1.1'), b, 'still held');
  t.equal(table.take('p.t.1.1', b), b);
  t.equal(table.take('p.t.1.1'), undefined, 'taken once');
  t.equal(table.size, 2);
  // Slot 0's request was answered but its job is still on worker a; the slot's next request holds worker b.
  table.set('p.t.3.0', b);
  t.equal(table.size, 3);
  t.equal(table.get('p.t.0.0'), a, 'the stale job keeps its holder');
  t.equal(table.get('p.t.3.0'), b, "the slot's new job has its own");
  t.same(table.entries().map(([id, w]) => `${id}=${w.key}`).sort(), ['p.t.0.0=a', 'p.t.2.11=a', 'p.t.3.0=b']);
  t.equal(table.takeAt(Buffer.from('Jvp.t.0.0'), 2, b), undefined, 'not from another worker');
  t.equal(table.takeAt(Buffer.from('Jvp.t.0.0'), 2, a), a, 'the stale job ends (its id read in a frame)');
  t.equal(table.get('p.t.3.0'), b);
  t.equal(table.takeAt(Buffer.from('Y-2001:p.t.3.0'), 7, a), undefined);
  t.equal(table.takeAt(Buffer.from('Y-2001:p.t.3.00'), 7), undefined, 'not with a byte more');
  t.equal(table.takeAt(Buffer.from('Y-2001:\x07p.t.3.0\0\0\0\x02{}'), 8, b, 8 + 6), undefined, 'not with a byte less');
  t.equal(table.takeAt(Buffer.from('Y-2001:\x07p.t.3.0\0\0\0\x02{}'), 8, b, 8 + 7), b, 'the spilled job found from a frame, the id between its start and end');
  t.equal(table.get('p.t.3.0'), undefined);
  // A job handed out again (a peer sending it twice) gets the new holder, counted once.
  table.set('p.t.2.11', b);
  t.equal(table.size, 1);
  t.equal(table.get('p.t.2.11'), b);
  t.equal(table.take('p.t.2.11'), b);
  t.equal(table.size, 0);
  t.same(table.entries(), []);
});

t.test('a misbehaving peer cannot add slots or crash the front end', async (t) => {
  const srv = P.createServer({ stages: [{ name: 'echo', fn: (_j: unknown, ctx: Ctx) => ctx.reply(200, {}, 'ok') }] });
  await srv.listen();
  await until(() => srv.stages[0]!.workers.size === 1, 5000, 'worker');
  const rogue = new iomux.zmq.Dealer();
  rogue.connect(srv.endpoints.stages[0]!.proxy);
  await rogue.send(['R', '1']);
  await rogue.send(['R', '1000']);
  for (let i = 0; i < 5; i++) await rogue.send(['D', `stray${i}`]);
  await rogue.send(['D']);
  await rogue.send(['X', 'junk', 'more']);
  const junk = new iomux.zmq.Push();
  junk.connect(srv.endpoints.loopback);
  const latin1 = (x: string): Buffer => Buffer.from(x, 'latin1');
  await junk.send(['Y']);
  await junk.send(latin1('Y-2x0:\x02id\0\0\0\x02{}b'));
  await junk.send(latin1('Y-20:\x02id\0\0\0\x02{}b'));
  await junk.send(['Y-2000', '{}', 'b']);
  await junk.send(latin1('Y-2000:'));
  await junk.send(latin1('Y-2000:\x09id\0\0\0\x02{}'));
  await junk.send(latin1('Y-2000:\x02id\0\0\0\x09{}b'));
  await junk.send(latin1('Y-2000:\x02id\0\0'));
  await junk.send([latin1('Y-2000:\x02id\0\0\0\x02{}'), 'b', 'c']);
  await junk.send(latin1('Ye9999:\x02id\0\0\0\x09{bad jsonb'));
  const intake = new iomux.zmq.Push();
  intake.connect(srv.endpoints.stages[0]!.intake);
  await intake.send(['Jvunknown-id', 'not v8']);
  await intake.send(['J', 'unknown-id', 'v', 'not v8']);
  await intake.send(['Jv', 'unknown-id', 'x']);
  await intake.send(['Jvunknown-id']);
  await intake.send(['Jv\x0aunknown-id', 'not v8']);
  await intake.send(['Jv\x0aunknown-id']);
  await intake.send(['Jv\x0bunknown-id']);
  await intake.send(['Jv\x0aunknown-id', 'a', 'b']);
  await until(() => srv.stages[0]!.workers.size === 2, 5000, 'rogue counted as a worker');
  await sleep(50);
  t.equal(srv.stats().stages[0].idle, 2, 'one slot each: a repeated READY and stray DONEs add none');
  t.equal(srv.stats().unknownReplies, 1, 'the well-formed reply for an unknown id is counted');
  await Promise.all([rogue.close(), junk.close(), intake.close()]);
  await until(() => srv.stages[0]!.workers.size === 1, 5000, 'rogue gone');
  t.equal((await get(srv.address().port, '/')).body, 'ok', 'still serving');
  await srv.close();
});

t.test('job data between stages: plain values as JSON, the rest through v8.serialize, the HTTP request as its own kind', async (t) => {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const codec = require('../dist/pipeline/codec') as typeof import('../dist/pipeline/codec');
  const round = (v: unknown): [string, unknown] => {
    const frames = codec.jobFrames('id.1', v);
    t.equal(codec.jobId(frames[0]!), 'id.1');
    return [frames[0]!.toString('latin1', 0, 2), codec.decodeJob(frames[0]!, frames[1])];
  };
  for (const v of [{ n: 97 }, [1, 'a', null, true, { b: [2.5] }], 'text \u{1F600}', 'caf\u00e9', 0, {}, 'x'.repeat(5000), { s: '\u00e9'.repeat(3000) }]) {
    const [kind, back] = round(v);
    t.equal(kind, 'Jj', `${JSON.stringify(v)} as JSON`);
    t.same(back, v);
  }
  const cycle: Record<string, unknown> = { a: 1 };
  cycle.self = cycle;
  for (const v of [new Date(5), new Map([[1, 2]]), { x: undefined }, [1, , 3], -0, Number.NaN, 10n, cycle, Array.from({ length: 100 }, (_, i) => i)]) {
    const [kind, back] = round(v);
    t.equal(kind, 'Jv', 'kept exact by v8.serialize');
    if (v === cycle) t.equal((back as typeof cycle).self, back);
    else t.same(back, v);
  }
  t.equal(round(-0)[1], -0);
  t.equal(Object.is(round(-0)[1], -0), true, '-0 stays -0');
  const raw = ['Host', 'h', 'X-List', '1', 'x-list', '2', 'Cookie', 'a=1', 'cookie', 'b=2', 'Set-Cookie', 'c=3', 'X-Latin', 'caf\u00e9 \u00ff', '__proto__', 'p'];
  for (const b of [Buffer.from([0, 1, 255]), Buffer.alloc(0), Buffer.alloc(5000, 7)]) {
    const frames = codec.jobFrames(Buffer.from('id.2'), b);
    t.equal(frames.length, b.length >= codec.INLINE_MAX ? 2 : 1, `a Buffer of ${b.length} bytes: its own frame only when large`);
    t.equal(frames[0]!.toString('latin1', 0, 2), 'Jb');
    t.same(codec.decodeJob(frames[0]!, frames[1]), b);
  }
  t.equal(codec.jobFrames('id.3', new Map([[1, 'x'.repeat(5000)]])).length, 2, 'large v8 data in a frame of its own');
  t.throws(() => codec.jobFrames('i'.repeat(256), 1), /an id of 256 bytes/);
  const f = codec.httpJobFrame('k1.x.3.0', 'POST', '/a/b?x=1&y=%20z&x=2', raw, Buffer.from([0, 1, 255]));
  t.equal(f.toString('latin1', 0, 2), 'Jh');
  t.equal(codec.jobId(f), 'k1.x.3.0', 'the id after its length byte');
  t.equal(codec.jobIdEnd(f), 3 + 8);
  const job = codec.decodeJob(f) as Record<string, unknown>;
  t.same(job, {
    method: 'POST', url: '/a/b?x=1&y=%20z&x=2', path: '/a/b', query: { x: '2', y: ' z' },
    headers: { host: 'h', 'x-list': '1, 2', cookie: 'a=1; b=2', 'set-cookie': ['c=3'], 'x-latin': 'caf\u00e9 \u00ff', ['__proto__']: 'p' },
    body: Buffer.from([0, 1, 255]),
  });
  // The headers as lib/http's req.headers joins the same raw lines, in a plain object.
  const { joinHeaders } = require('../dist/http/parser') as typeof import('../dist/http/parser');
  t.same(Object.entries(job.headers as object), Object.entries(joinHeaders(raw)), 'joined as lib/http joins them');
  t.equal(Object.getPrototypeOf(job.headers), Object.prototype, 'a plain object');
  t.equal(Object.getOwnPropertyDescriptor(job.headers, '__proto__')?.value, 'p', 'a field named __proto__ is just a field');
  t.same(codec.decodeJob(codec.httpJobFrame('', 'GET', '/', [], Buffer.alloc(0))), { method: 'GET', url: '/', path: '/', query: {}, headers: {}, body: Buffer.alloc(0) });
  for (const [url, rawH] of [['/long', ['X-Long', 'v'.repeat(300)]], ['/caf\u00e9', ['H', 'v']], ['/', ['H', '\u00e9']], ['/', ['\u00ff', 'v']]] as Array<[string, string[]]>) {
    const got = codec.decodeJob(codec.httpJobFrame('i', 'GET', url, rawH, Buffer.from('b'))) as { url: string; headers: Record<string, string>; body: Buffer };
    t.same([got.url, Object.entries(got.headers), got.body.toString()], [url, Object.entries(joinHeaders(rawH)), 'b'], `the head as given: ${url} ${rawH[0]!.slice(0, 8)}`);
  }
  const big = codec.httpJobFrame('i', 'PUT', '/\u00e9', [], Buffer.alloc(5000, 1));
  t.same((codec.decodeJob(big) as { body: Buffer }).body, Buffer.alloc(5000, 1), 'a large body, in the one frame');
  t.equal((codec.decodeJob(big) as { url: string }).url, '/\u00e9', 'a URL in UTF-8');
  t.throws(() => codec.decodeJob(f.subarray(0, 14)), /truncated HTTP job/);
  t.throws(() => codec.decodeJob(Buffer.concat([Buffer.from('Jh\x01i'), Buffer.from('\0\0\0\x0aGET\n/\nHost')])), /malformed HTTP job/);
  // Heads scanned by hand: well-formed exactly when split('\n') gives method, URL and name-value pairs.
  for (const head of ['GET', 'GET\n/', 'GET\n/\n', 'GET\n/\nH', 'GET\n/\nH\n', 'GET\n/\nH\nv', 'GET\n/\nH\nv\n', 'GET\n/\n\n', 'GET\n/\nH\nv\nh\nw', '\n', 'GET\n/\nH\nv\nX']) {
    const n = Buffer.byteLength(head);
    const frame = Buffer.concat([Buffer.from('Jh\x01i'), Buffer.from([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]), Buffer.from(head)]);
    const parts = head.split('\n');
    if (parts.length >= 2 && parts.length % 2 === 0) {
      const got = codec.decodeJob(frame) as { method: string; url: string; headers: Record<string, unknown> };
      t.same([got.method, got.url], parts.slice(0, 2), `${JSON.stringify(head)}: method and URL`);
      t.same(Object.entries(got.headers), Object.entries(joinHeaders(parts.slice(2))), `${JSON.stringify(head)}: headers`);
    } else {
      t.throws(() => codec.decodeJob(frame), /malformed HTTP job/, `${JSON.stringify(head)}: malformed`);
    }
  }
  t.throws(() => codec.decodeJob(Buffer.from('Jx\x01i[1]')), /unknown job data kind/);
  t.throws(() => codec.decodeJob(Buffer.from('Jj\x09i[1]')), /malformed job frame/, 'an id longer than the frame');
  t.throws(() => codec.decodeJob(Buffer.from('?j\x01i[1]')), /malformed job frame/);
  t.equal(codec.jobIdEnd(Buffer.from('Jj')), -1, 'too short for a job');
  t.same(codec.decodeJob(Buffer.from('Jj\x01i'), Buffer.from('[1]')), [1], 'the data in a second frame');
  // A reply: flag, status, stage index, id, headers and body in one frame (a large body in a second).
  const meta = codec.replyMeta(codec.FLAG_ERROR, 503, 12);
  const [m, ...more] = codec.replyFrames(meta, Buffer.from('id:2'), Buffer.from('{"a":"b"}'), 'caf\u00e9');
  t.equal(more.length, 0);
  t.equal(m!.toString('latin1', 0, 8), 'Ye50312:');
  t.equal(codec.replyStatus(m!), 503);
  t.equal(codec.replyStage(m!), 12);
  t.equal(codec.replyId(m!), 'id:2');
  const at = codec.replyIdStart(m!);
  t.equal(at, 8, "the id's length byte follows the colon");
  t.equal(m![at], 4);
  const hEnd = codec.replyHeadersEnd(m!, at);
  t.equal(m!.toString('utf8', at + 1 + 4 + 4, hEnd), '{"a":"b"}', 'the headers after their length');
  t.equal(m!.toString('utf8', hEnd), 'caf\u00e9', 'then the body');
  t.equal(codec.replyHeadersEnd(m!.subarray(0, hEnd - 1), at), -1, 'cut short');
  t.equal(codec.replyHeadersEnd(m!.subarray(0, at + 3), at), -1, 'cut short in the id');
  t.equal(codec.replyHeadersEnd(m!.subarray(0, at), at), -1, 'cut short before the id');
  const [r0] = codec.replyFrames(codec.replyMeta(codec.FLAG_NONE, 200, 0), Buffer.alloc(0), Buffer.alloc(0), undefined);
  t.equal(codec.replyId(r0!), '', 'an empty id');
  t.equal(codec.replyHeadersEnd(r0!, codec.replyIdStart(r0!)), r0!.length, 'no headers, no body');
  for (const [body, want] of [[{ x: [1] }, '{"x":[1]}'], [new Uint8Array([104, 105]), 'hi'], [null, '']] as Array<[unknown, string]>) {
    const [r] = codec.replyFrames(meta, Buffer.from('i'), Buffer.from('{}'), body);
    t.equal(r!.toString('utf8', codec.replyHeadersEnd(r!, codec.replyIdStart(r!))), want, `a body of ${JSON.stringify(want)}`);
  }
  const large = codec.replyFrames(meta, Buffer.from('i'), Buffer.from('{}'), 'z'.repeat(5000));
  t.equal(large.length, 2, 'a large body in a frame of its own');
  t.equal(codec.replyHeadersEnd(large[0]!, codec.replyIdStart(large[0]!)), large[0]!.length);
  t.equal(large[1]!.toString(), 'z'.repeat(5000));
  for (const bad of ['', 'Y', 'Y-200:', 'Y-200', 'Y-2000', 'X-2000:a', 'Y-2a00:a', 'Y-200x:a', 'Y-20012345678:a']) t.equal(codec.replyStatus(Buffer.from(bad)), -1, `not a reply head: ${JSON.stringify(bad)}`);
  // The query as URLSearchParams gives it, on the hand-split path and the other.
  for (const q of ['a=1&b=2', 'a=1&a=2&b', '&&a&', 'a=', '=x', 'a=b=c', '__proto__=1&x=2', 'a=%41+b&a%3D=1', '', '&', 'é=ü&1=2&0=3']) {
    const got = codec.parseQuery(q);
    t.same(Object.entries(got), Object.entries(Object.fromEntries(new URLSearchParams(q))), `query ${JSON.stringify(q)}`);
    t.equal(Object.getPrototypeOf(got), Object.prototype, `query ${JSON.stringify(q)}: a plain object`);
  }
});

t.test('a stage that returns neither ctx.next nor ctx.reply (undefined, a number, a thenable that throws): 500, logged, and the worker goes on', async (t) => {
  const lines: string[] = [];
  const srv = P.createServer({
    log: (l) => lines.push(l),
    stages: [{
      name: 'odd',
      fn: (job: { query: Record<string, string> }, ctx: Ctx) => {
        const q = job.query.r;
        if (q === 'undefined') return undefined as never;
        if (q === 'number') return 5 as never;
        if (q === 'thenable') return { then: () => { throw new Error('bad thenable'); } } as never;
        if (q === 'async') return Promise.resolve(ctx.reply(202, {}, 'later'));
        return ctx.reply(200, {}, 'ok');
      },
    }],
  });
  await srv.listen();
  const port = srv.address().port;
  for (const r of ['undefined', 'number', 'thenable']) {
    const res = await get(port, `/?r=${r}`);
    t.equal(res.status, 500, `${r}: 500`);
  }
  t.equal(lines.filter((l) => l.includes('must return ctx.next')).length, 2, 'undefined and a number are named');
  t.ok(lines.some((l) => l.includes('bad thenable')), 'the thenable\'s error is logged');
  t.equal((await get(port, '/?r=async')).status, 202, 'a promise of an outcome');
  t.equal((await get(port, '/')).body, 'ok', 'the worker goes on');
  await until(() => srv.stats().stages[0].inFlight === 0 && srv.stats().stages[0].idle === 1, 5000, 'the slot is back');
  t.equal(srv.stats().stages[0].completed, 5);
  await srv.close();
});
