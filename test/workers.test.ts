// worker_threads: every worker has its own iomux loop; terminating a worker
// with open connections closes all of them and leaks no fd.
import { once } from 'node:events';
import * as net from 'node:net';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { fixturesDir, jsonLines, openFds, runNode, settleFds, sleep, waitFor } from './helpers';

const SCRIPT = join(fixturesDir, 'iomux-worker.js');
const WORKERS = 20;
const CONNS = 3; // per worker

interface Msg { type: string; [k: string]: any }

/** p, or `fallback` if p has not settled after ms (the timer is cleared either way). */
function within<T, F>(p: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<F>((r) => { timer = setTimeout(() => r(fallback), ms); })])
    .finally(() => clearTimeout(timer));
}

function startWorker(mode: string, extra: Record<string, unknown> = {}): { worker: Worker; msgs: Msg[]; errors: Error[]; exit: Promise<number> } {
  // execArgv: [] -- the fixture is plain JS; tap's loaders would only slow
  // each worker's start-up down.
  const worker = new Worker(SCRIPT, { workerData: { mode, ...extra }, execArgv: [] });
  const msgs: Msg[] = [];
  const errors: Error[] = [];
  worker.on('message', (m: Msg) => msgs.push(m));
  worker.on('error', (e: Error) => errors.push(e));
  const exit = new Promise<number>((resolve) => worker.once('exit', resolve));
  return { worker, msgs, errors, exit };
}

t.test('warm-up: a worker that loads iomux, then exits', async (t) => {
  // Node's worker machinery opens some fds once; count from after it.
  const w = startWorker('echo');
  t.ok(await waitFor(() => w.msgs.some((m) => m.type === 'listening'), 10000));
  await w.worker.terminate();
  t.same(w.errors, []);
});

t.test(`${WORKERS} workers serving echo, terminated with connections open`, async (t) => {
  const baseline = openFds();
  const ws = Array.from({ length: WORKERS }, () => startWorker('echo'));
  t.teardown(() => Promise.all(ws.map((w) => w.worker.terminate())).then(() => {}));
  t.ok(await waitFor(() => ws.every((w) => w.msgs.some((m) => m.type === 'listening')), 20000), 'every worker listens');
  const ports = ws.map((w) => w.msgs.find((m) => m.type === 'listening')!.port as number);
  t.equal(new Set(ports).size, WORKERS, 'each on its own port');

  // Connect to each and check the echo; then keep the traffic going.
  const clients: { sock: net.Socket; got: number; closed: boolean }[] = [];
  for (const port of ports) {
    for (let k = 0; k < CONNS; k++) {
      const sock = net.connect(port, '127.0.0.1');
      const c = { sock, got: 0, closed: false };
      sock.on('error', () => {});
      sock.on('close', () => { c.closed = true; });
      clients.push(c);
    }
  }
  await Promise.all(clients.map(async (c, i) => {
    await once(c.sock, 'connect');
    const msg = `hello ${i}`;
    c.sock.write(msg);
    const [d] = await once(c.sock, 'data');
    t.equal(d.toString(), msg, `echo from worker ${Math.floor(i / CONNS)}`);
    c.sock.on('data', (b: Buffer) => { c.got += b.length; });
  }));
  let streaming = true;
  const pump = (async () => {
    while (streaming) {
      for (const c of clients) if (!c.closed) c.sock.write(Buffer.alloc(4096, 0x78));
      await sleep(2);
    }
  })();
  await sleep(100);
  t.ok(clients.every((c) => c.got > 0), 'traffic flows on every connection');

  // Terminate every worker in the middle of it.
  const codes = await Promise.all(ws.map((w) => w.worker.terminate()));
  t.same(codes, codes.map(() => 1), 'terminate() resolves with exit code 1');
  t.same(ws.flatMap((w) => w.errors), [], "no worker 'error'");

  // The workers' sockets are closed: every client sees its peer go away.
  t.ok(await waitFor(() => clients.every((c) => c.closed), 10000), `every client connection closed (${clients.filter((c) => c.closed).length}/${clients.length})`);
  streaming = false;
  await pump;
  for (const port of ports) {
    const probe = net.connect(port, '127.0.0.1');
    const [outcome] = await Promise.race([
      once(probe, 'error').then(([e]) => [(e as any).code]),
      once(probe, 'connect').then(() => ['connected']),
    ]);
    probe.destroy();
    t.equal(outcome, 'ECONNREFUSED', `port ${port} no longer listens`);
  }
  const after = await settleFds(baseline, 5000);
  t.equal(after, baseline, `fds back to the baseline (${baseline})`);
});

t.test('a worker with only unref\'d iomux handles exits by itself', async (t) => {
  const baseline = openFds();
  const w = startWorker('unref');
  t.teardown(() => w.worker.terminate().then(() => {}));
  let code: number | null = null;
  void w.exit.then((c) => { code = c; });
  t.ok(await waitFor(() => code !== null, 10000), 'it exits');
  t.equal(code, 0, 'with code 0 (not terminated)');
  const ready = w.msgs.find((m) => m.type === 'ready');
  t.match(ready, { echoed: 'ping', listening: true, clientOpen: true, timerRef: false }, 'its server, connection and timer were open when it let go');
  t.notOk(w.msgs.some((m) => m.type === 'timer fired'), 'the unref\'d timer did not fire');
  t.same(w.errors, []);
  t.equal(await settleFds(baseline, 5000), baseline, 'fds back to the baseline');
});

t.test('a worker with a ref\'d iomux server stays alive', async (t) => {
  const baseline = openFds();
  const w = startWorker('ref');
  let exited = false;
  void w.exit.then(() => { exited = true; });
  t.ok(await waitFor(() => w.msgs.some((m) => m.type === 'listening'), 10000));
  await sleep(300);
  t.equal(exited, false, 'still running after 300 ms');
  t.equal(await w.worker.terminate(), 1);
  t.equal(await settleFds(baseline, 5000), baseline, 'fds back to the baseline');
});

t.test('workers in standalone mode (blocked in the core\'s own wait) terminate promptly', async (t) => {
  const baseline = openFds();
  const ws = Array.from({ length: 5 }, () => startWorker('echo', { standalone: true }));
  t.teardown(() => Promise.all(ws.map((w) => w.worker.terminate())).then(() => {}));
  t.ok(await waitFor(() => ws.every((w) => w.msgs.some((m) => m.type === 'listening')), 10000), 'every worker listens');
  const clients: net.Socket[] = [];
  for (const w of ws) {
    const m = w.msgs.find((x) => x.type === 'listening')!;
    t.equal(m.standalone, true, 'the worker is in standalone mode');
    const c = net.connect(m.port, '127.0.0.1');
    c.on('error', () => {});
    clients.push(c);
    c.write('standalone echo');
    const [d] = await once(c, 'data');
    t.equal(d.toString(), 'standalone echo');
  }
  await sleep(50); // every worker is idle now, blocked in its wait
  const codes = await Promise.all(ws.map((w) => within(w.worker.terminate(), 5000, 'hung')));
  t.same(codes, ws.map(() => 1), 'terminate() resolves for each');
  t.ok(await waitFor(() => clients.every((c) => c.destroyed || c.readableEnded), 5000), 'their connections are closed');
  for (const c of clients) c.destroy();
  t.equal(await settleFds(baseline, 5000), baseline, 'fds back to the baseline');
});

// A worker used to be able to abort the whole process when terminated inside
// an iomux batch (a failing napi call turned into a FATAL ERROR).
t.test('workers terminated in the middle of iomux batches, many times: the process survives', async (t) => {
  // In a child: the failure mode is an abort of the whole process.
  const r = await runNode([join(fixturesDir, 'worker-terminate-stress.js'), '20'], { timeoutMs: 60000 });
  t.equal(r.timedOut, false, 'the child finished');
  t.equal(r.signal, null, `no signal (stderr: ${r.stderr.slice(0, 400)})`);
  t.equal(r.code, 0, 'exit code 0');
  const res = jsonLines(r.stdout).find((l) => l.done);
  t.match(res, { done: true, rounds: 20 }, 'every round ran');
  t.equal(res?.fdsAfter, res?.fdsBefore, 'no fd leaked');
});
