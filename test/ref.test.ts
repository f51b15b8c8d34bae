// ref()/unref() as in node:net (in child processes, which must exit by
// themselves or be kept alive), and how batches meet node's own queues:
// process.nextTick and promise jobs after each batch, exceptions to
// 'uncaughtException' without losing the rest of the batch.
import { once } from 'node:events';
import * as net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { closeServer, iomux, jsonLines, listen, runNode, waitFor } from './helpers';

const DIST = join(__dirname, '..', 'dist');

/** Runs a script with `iomux` (and `net`) in scope in a child node. */
function run(code: string, opts: { timeoutMs?: number; killAfterMs?: number } = {}) {
  const prelude = `const iomux = require(${JSON.stringify(DIST)}); const net = require('node:net');\n`;
  return runNode(['-e', prelude + code], { timeoutMs: opts.timeoutMs ?? 15000, killAfterMs: opts.killAfterMs });
}

/** Asserts the child exited by itself, with code 0. */
function exitedByItself(t: { equal: Function }, r: Awaited<ReturnType<typeof run>>, what: string): void {
  t.equal(r.timedOut, false, `${what}: exits by itself`);
  t.equal(r.code, 0, `${what}: exit code 0${r.stderr ? ` (stderr: ${r.stderr.slice(0, 300)})` : ''}`);
}

/** Asserts the child was still running when it was killed at killAfterMs. */
function keptAlive(t: { equal: Function }, r: Awaited<ReturnType<typeof run>>, what: string): void {
  t.equal(r.timedOut, true, `${what}: still running when killed`);
  t.equal(r.signal, 'SIGTERM', `${what}: ended by our SIGTERM${r.stderr ? ` (stderr: ${r.stderr.slice(0, 300)})` : ''}`);
}

t.test('servers', async (t) => {
  t.test('a process with only an unref\'d iomux server exits by itself', async (t) => {
    const r = await run(`
      const s = iomux.createServer();
      s.listen(0, '127.0.0.1', () => console.log('listening', s.listening));
      s.unref();`);
    exitedByItself(t, r, 'unref after listen');
    t.match(r.stdout, /listening true/, 'it did listen');
    const r2 = await run(`
      const s = iomux.createServer().unref();
      s.listen(0, '127.0.0.1', () => console.log('listening', s.listening));`);
    exitedByItself(t, r2, 'unref before listen');
    t.match(r2.stdout, /listening true/);
  });

  t.test('a ref\'d server keeps the process alive', async (t) => {
    const r = await run(`
      const s = iomux.createServer();
      s.listen(0, '127.0.0.1', () => console.log('listening'));`, { killAfterMs: 1500 });
    keptAlive(t, r, 'listening server');
    t.match(r.stdout, /listening/);
    const r2 = await run(`
      const s = iomux.createServer().unref().ref();
      s.listen(0, '127.0.0.1', () => console.log('listening'));`, { killAfterMs: 1500 });
    keptAlive(t, r2, 'unref() then ref()');
  });

  t.test('closing the last ref\'d server lets the process exit', async (t) => {
    const r = await run(`
      const s = iomux.createServer();
      s.listen(0, '127.0.0.1', () => setTimeout(() => s.close(() => console.log('closed')), 100));`);
    exitedByItself(t, r, 'closed server');
    t.match(r.stdout, /closed/);
  });

  t.test('an unref\'d server still serves while something else keeps the process alive', async (t) => {
    const server = iomux.createServer((s) => s.on('data', (d: Buffer) => s.end(d))).unref();
    const port = await listen(server);
    const c = net.connect(port, '127.0.0.1');
    c.end('still served');
    const [d] = await once(c, 'data');
    t.equal(d.toString(), 'still served');
    await closeServer(server);
  });
});

t.test('timers', async (t) => {
  t.test('an unref\'d iomux timer does not keep the process alive', async (t) => {
    const r = await run(`
      const x = iomux.loop.setTimeout(() => console.log('fired'), 3000);
      x.unref();
      console.log('hasRef', x.hasRef());`);
    exitedByItself(t, r, 'unref\'d timer');
    t.match(r.stdout, /hasRef false/);
    t.notMatch(r.stdout, /fired/, 'it never fired');
  });

  t.test('a ref\'d iomux timer keeps the process alive until it fires', async (t) => {
    const r = await run(`
      const start = process.hrtime.bigint();
      iomux.loop.setTimeout(() => {
        console.log(JSON.stringify({ fired: Number(process.hrtime.bigint() - start) / 1e6 }));
      }, 300);`);
    exitedByItself(t, r, 'ref\'d timer');
    const fired = jsonLines(r.stdout).find((l) => 'fired' in l);
    t.ok(fired, 'it fired before the process exited');
    t.ok(fired?.fired >= 300, `after ${fired?.fired} ms`);
  });

  t.test('unref() then ref() keeps it alive; an interval keeps it alive until cleared', async (t) => {
    const r = await run(`
      const x = iomux.loop.setTimeout(() => console.log('fired'), 200).unref().ref();
      let n = 0;
      const iv = iomux.loop.setInterval(() => { if (++n === 5) { iomux.loop.clearInterval(iv); console.log('interval', n); } }, 20);`);
    exitedByItself(t, r, 're-ref\'d timer');
    t.match(r.stdout, /fired/);
    t.match(r.stdout, /interval 5/);
  });

  t.test('a cleared timer, and a refreshed one', async (t) => {
    const r = await run(`
      const a = iomux.loop.setTimeout(() => console.log('a fired'), 5000);
      iomux.loop.clearTimeout(a);
      let n = 0;
      const b = iomux.loop.setTimeout(() => { console.log('b', ++n); if (n < 3) b.refresh(); }, 30);`);
    exitedByItself(t, r, 'cleared + refreshed');
    t.notMatch(r.stdout, /a fired/);
    t.match(r.stdout, /b 1\nb 2\nb 3\n/, 'a refresh()ed timer keeps it alive again');
  });
});

t.test('client sockets', async (t) => {
  const peer = net.createServer((s) => {
    s.on('error', () => {});
    s.resume();
  });
  peer.listen(0, '127.0.0.1');
  await once(peer, 'listening');
  const port = (peer.address() as net.AddressInfo).port;
  const conns: net.Socket[] = [];
  peer.on('connection', (s) => conns.push(s));
  t.teardown(() => new Promise<void>((r) => { peer.close(() => r()); for (const s of conns) s.destroy(); }));

  t.test('an unref\'d connected client does not keep the process alive', async (t) => {
    const before = conns.length;
    const r = await run(`
      const c = iomux.connect(${port}, '127.0.0.1', () => { c.write('hi'); c.unref(); console.log('connected'); });
      c.on('close', () => console.log('closed'));`);
    exitedByItself(t, r, 'unref\'d client');
    t.match(r.stdout, /connected/);
    t.notMatch(r.stdout, /closed/, 'it was open when the process exited');
    t.equal(conns.length, before + 1, 'the peer saw the connection');
    const r2 = await run(`
      const c = new iomux.Socket().unref();
      c.connect(${port}, '127.0.0.1', () => console.log('connected'));`);
    exitedByItself(t, r2, 'unref\'d before connect');
  });

  t.test('a ref\'d client keeps it alive', async (t) => {
    const r = await run(`
      const c = iomux.connect(${port}, '127.0.0.1', () => console.log('connected'));`, { killAfterMs: 1500 });
    keptAlive(t, r, 'ref\'d client');
    t.match(r.stdout, /connected/);
    const r2 = await run(`
      const c = iomux.connect(${port}, '127.0.0.1', () => { console.log('connected'); setTimeout(() => c.end(), 50); });
      c.resume();
      c.on('close', () => console.log('closed'));`);
    exitedByItself(t, r2, 'client that ends');
    t.match(r2.stdout, /closed/);
  });
});

// ---- batches and node's queues (in this process) -----------------------------

t.test('process.nextTick and promise jobs run after each batch, before the next iteration', async (t) => {
  const log: string[] = [];
  let iterAtData1 = -1;
  const its: Record<string, number> = {};
  const server = iomux.createServer((s) => {
    s.on('data', (d: Buffer) => {
      const msg = d.toString();
      log.push(`data:${msg}`);
      if (msg === 'one') {
        iterAtData1 = iomux.loop.stats().iterations;
        process.nextTick(() => {
          log.push('tick');
          its.tick = iomux.loop.stats().iterations;
          s.write('ack'); // the client sends 'two' only once this ran
        });
        queueMicrotask(() => {
          log.push('microtask');
          its.microtask = iomux.loop.stats().iterations;
        });
        void Promise.resolve().then(() => {
          log.push('promise');
          its.promise = iomux.loop.stats().iterations;
        });
        (async () => {
          await null;
          await null;
          log.push('async');
        })();
      } else {
        s.end();
      }
    });
  });
  const port = await listen(server);
  const c = iomux.connect(port, '127.0.0.1');
  c.on('data', () => c.write('two'));
  await once(c, 'connect');
  c.write('one');
  t.ok(await waitFor(() => log.includes('data:two'), 3000), 'the tick ran and the exchange completed');
  t.same(log, ['data:one', 'tick', 'microtask', 'promise', 'async', 'data:two'], 'nextTick, then promise jobs, before the next batch');
  t.same(its, { tick: iterAtData1, microtask: iterAtData1, promise: iterAtData1 }, 'all within the same iteration as the batch');
  c.destroy();
  await closeServer(server);
});

t.test('...and after each batch of timers', async (t) => {
  const log: string[] = [];
  await new Promise<void>((resolve) => {
    iomux.loop.setTimeout(() => {
      log.push('timer1');
      process.nextTick(() => log.push('tick1'));
      void Promise.resolve().then(() => log.push('promise1'));
    }, 5);
    iomux.loop.setTimeout(() => {
      log.push('timer2');
      resolve();
    }, 25);
  });
  t.same(log, ['timer1', 'tick1', 'promise1', 'timer2']);
});

t.test('an exception in a data handler goes to uncaughtException; the rest of the batch still gets its data', async (t) => {
  const r = await run(`
    const sleepSync = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    const caught = [];
    process.on('uncaughtException', (e) => caught.push(e.message));
    const got = [];
    let threw = false;
    const accepted = [];
    const server = iomux.createServer((s) => {
      accepted.push(s);
      s.on('data', (d) => {
        got.push({ msg: d.toString(), it: iomux.loop.stats().iterations });
        if (!threw) { threw = true; throw new Error('boom in data'); }
      });
    });
    server.listen(0, '127.0.0.1', () => {
      const port = server.address().port;
      const clients = [0, 1, 2, 3].map(() => iomux.connect(port, '127.0.0.1'));
      const ready = setInterval(() => {
        if (accepted.length < 4 || clients.some((c) => c.connecting)) return;
        clearInterval(ready);
        clients.forEach((c, i) => c.write('msg' + i));
        sleepSync(50); // all four are readable before the loop looks again
        setTimeout(() => {
          console.log(JSON.stringify({ got, caught }));
          clients.forEach((c) => c.destroy());
          server.close();
        }, 200);
      }, 5);
    });`);
  exitedByItself(t, r, 'child');
  const res = jsonLines(r.stdout)[0];
  t.ok(res, 'the child reported');
  t.same(res?.caught, ['boom in data'], 'the exception reached uncaughtException, once');
  t.same(res?.got.map((g: any) => g.msg).sort(), ['msg0', 'msg1', 'msg2', 'msg3'], 'every socket got its data');
  t.equal(new Set(res?.got.map((g: any) => g.it)).size, 1, 'all in the same iteration (one batch)');
});

t.test('...and in a timer callback: the other timers of the batch still fire', async (t) => {
  const r = await run(`
    const caught = [];
    process.on('uncaughtException', (e) => caught.push(e.message));
    const fired = [];
    iomux.loop.setTimeout(() => { fired.push('a'); throw new Error('boom in timer'); }, 5);
    iomux.loop.setTimeout(() => fired.push('b'), 5);
    iomux.loop.setTimeout(() => fired.push('c'), 5);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    process.on('exit', () => console.log(JSON.stringify({ fired, caught })));`);
  exitedByItself(t, r, 'child');
  t.same(jsonLines(r.stdout)[0], { fired: ['a', 'b', 'c'], caught: ['boom in timer'] });
});

t.test('without an uncaughtException handler, a throwing data handler kills the process (as in node:net)', async (t) => {
  const r = await run(`
    const server = iomux.createServer((s) => s.on('data', () => { throw new Error('boom unhandled'); }));
    server.listen(0, '127.0.0.1', () => iomux.connect(server.address().port, '127.0.0.1').end('x'));`);
  t.equal(r.timedOut, false);
  t.not(r.code, 0, 'non-zero exit');
  t.match(r.stderr, /boom unhandled/);
});
