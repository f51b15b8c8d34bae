// Standalone mode (loop.run()), in child processes: the core's wait is the
// only poll of the thread, and node's timers, immediates, promises, fs and
// node:net must keep working; the process must exit by itself at the end.
import { join } from 'node:path';
import t from 'tap';
import { fixturesDir, jsonLines, runNode } from './helpers';

const DIST = join(__dirname, '..', 'dist');
const LATE_MS = 30;

function run(code: string, opts: { timeoutMs?: number; killAfterMs?: number; killAfterOutput?: RegExp } = {}) {
  const prelude = `const iomux = require(${JSON.stringify(DIST)}); const net = require('node:net');\n`;
  return runNode(['-e', prelude + code], { timeoutMs: opts.timeoutMs ?? 15000, killAfterMs: opts.killAfterMs, killAfterOutput: opts.killAfterOutput });
}

/** Whether IOMUX_BACKEND=name loads here: true, or the reason it does not. */
async function backendAvailable(name: string): Promise<string | true> {
  const r = await runNode(['-e', `console.log(require(${JSON.stringify(DIST)}).loop.backend)`], { env: { IOMUX_BACKEND: name }, timeoutMs: 15000 });
  if (r.code === 0 && r.stdout.trim() === name) return true;
  return /is not available here[^\n]*/.exec(r.stderr)?.[0] ?? r.stderr.trim().split('\n').find((l) => /Error/.test(l)) ?? `exit code ${r.code}`;
}

// Every check of the standalone fixture, on each backend this machine has.
t.test('after loop.run(), everything keeps working and the process exits by itself', async (t) => {
  for (const backend of ['epoll', 'io_uring']) {
    const avail = await backendAvailable(backend);
    const opts = avail === true ? {} : { skip: `the ${backend} backend is not available on this machine: ${avail}` };
    t.test(`on ${backend}`, opts, async (t) => {
      const r = await runNode([join(fixturesDir, 'standalone.js'), 'all'], { env: { IOMUX_BACKEND: backend }, timeoutMs: 60000 });
      t.equal(r.timedOut, false, 'the child exits by itself');
      t.equal(r.code, 0, `exit code 0${r.stderr ? ` (stderr: ${r.stderr.slice(0, 500)})` : ''}`);
      const lines = jsonLines(r.stdout);
      const step = (name: string) => lines.find((l) => l.step === name) ?? {};
      for (const l of lines) if (l.error) t.fail(`step ${l.step}: ${l.error}`);

      t.match(step('mode'), { standalone: true, backend }, 'loop.standalone is true (on the backend asked for)');
      t.match(step('iomuxEcho'), { ok: true, nodeReply: 'from node:net' }, 'an iomux echo server works (iomux and node:net clients)');

      const nt = step('nodeTimers');
      t.ok(nt.timeout >= 29, `node setTimeout(30) after ${nt.timeout} ms (node's clock is in whole ms)`);
      t.ok(nt.timeout < 30 + LATE_MS, 'and on time');
      t.equal(nt.immediate, true, 'setImmediate runs');
      t.equal(nt.interval, 3, 'setInterval runs');

      const pt = step('promisesAndTicks');
      t.same([...(pt.order ?? [])].sort(), ['microtask', 'promise', 'tick'], 'nextTick, queueMicrotask and promises run');
      t.equal(pt.v, 42, 'async functions complete');

      t.match(step('fsRead'), { ok: true, size: true }, 'fs.readFile (promise and callback) and fs.stat work');
      t.match(step('nodeNet'), { ok: true, iomuxReply: 'from iomux' }, 'a node:net server works (node:net and iomux clients)');

      const timers: [number, number][] = step('iomuxTimers').results ?? [];
      t.equal(timers.length, 25, 'every iomux timer fired');
      for (const [ms, el] of timers) {
        t.ok(el >= ms, `iomux ${ms} ms timer: ${el.toFixed(3)} ms, never early`);
        t.ok(el < ms + LATE_MS, `iomux ${ms} ms timer: within ${LATE_MS} ms`);
      }

      const lw = step('nodeTimerAfterLongWait');
      for (const k of ['fromTimer', 'fromData']) {
        t.ok(lw[k] >= 49, `node setTimeout(50) set in an iomux callback (${k}) after a 300 ms wait of the core: ${lw[k]} ms, not early`);
        t.ok(lw[k] < 50 + LATE_MS, `(${k}) and on time`);
      }

      const w = step('waitsPerIteration');
      const d = w.delta ?? {};
      t.comment(`${w.rounds} rounds of 4 round trips: ${JSON.stringify(d)}`);
      t.ok(d.iterations > 0, 'iterations ran');
      // epoll: one epoll_wait per iteration. io_uring takes completions from
      // shared memory and enters the kernel only to block: at most one.
      t.ok(d.wait <= d.iterations * 1.1, `at most one wait per iteration (${d.wait} waits, ${d.iterations} iterations)`);
      if (backend === 'epoll') t.ok(d.wait >= d.iterations * 0.9, 'epoll: roughly one wait per iteration');
      t.ok(d.iterations <= w.rounds * 8, `no spinning: ${(d.iterations / w.rounds).toFixed(2)} iterations per round of 4 round trips`);
      t.ok(d.read + d.batch_read >= w.rounds * 8, 'every message was read (alone or in a batch)');

      t.match(step('unrefServedWhileAlive'), { reply: 'served' }, 'an unref\'d iomux server is served while node:net keeps the process alive');
      const ut = step('unrefTimerWhileAlive');
      t.ok(ut.el >= 50 && ut.el < 50 + LATE_MS, `an unref'd iomux timer fires on time while a node timer keeps the process alive (${ut.el} ms)`);

      t.match(lines.find((l) => l.done), { done: true, standalone: true }, 'every step ran');
      t.same(lines.at(-1), { exit: 0 }, 'then the process exited by itself');
    });
  }
});

t.test('standalone: unref\'d handles do not keep the process alive, ref\'d ones do', async (t) => {
  const r = await run(`
    iomux.loop.run();
    const s = iomux.createServer().unref();
    s.listen(0, '127.0.0.1', () => console.log('listening'));
    iomux.loop.setTimeout(() => console.log('fired'), 5000).unref();`);
  t.equal(r.timedOut, false, 'exits by itself');
  t.equal(r.code, 0, `exit code 0 ${r.stderr.slice(0, 300)}`);
  t.match(r.stdout, /listening/);
  t.notMatch(r.stdout, /fired/);

  const r2 = await run(`
    iomux.loop.run();
    iomux.createServer().listen(0, '127.0.0.1', () => console.log('listening'));`, { killAfterMs: 300, killAfterOutput: /listening/ });
  t.equal(r2.timedOut, true, 'a ref\'d server keeps it alive');
  t.equal(r2.signal, 'SIGTERM');
  t.match(r2.stdout, /listening/);

  const r3 = await run(`
    iomux.loop.run();
    const t0 = process.hrtime.bigint();
    iomux.loop.setTimeout(() => console.log('fired', Number(process.hrtime.bigint() - t0) / 1e6), 200);`);
  t.equal(r3.timedOut, false);
  t.equal(r3.code, 0);
  const m = /fired ([\d.]+)/.exec(r3.stdout);
  t.ok(m && Number(m[1]) >= 200, `a ref'd timer keeps it alive until it fires (${m?.[1]} ms)`);
});

t.test('loop.run() from inside a callback, with a server already serving', async (t) => {
  const r = await run(`
    const server = iomux.createServer((s) => s.on('data', (d) => s.write(d)));
    server.listen(0, '127.0.0.1', () => {
      const c = net.connect(server.address().port, '127.0.0.1');
      c.once('data', (d) => {
        const before = iomux.loop.standalone;
        iomux.loop.run(); // from inside a node:net callback
        c.once('data', (d2) => {
          setTimeout(() => {
            console.log(JSON.stringify({ before, after: iomux.loop.standalone, first: String(d), second: String(d2) }));
            c.destroy();
            server.close();
          }, 20);
        });
        c.write('two');
      });
      c.write('one');
    });`);
  t.equal(r.timedOut, false, 'exits by itself');
  t.equal(r.code, 0, `exit code 0 ${r.stderr.slice(0, 300)}`);
  t.same(jsonLines(r.stdout)[0], { before: false, after: true, first: 'one', second: 'two' });
});
