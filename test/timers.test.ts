// iomux timers (loop.setTimeout / setInterval / Timer) and socket idle
// timeouts (socket.setTimeout).
import { once } from 'node:events';
import * as net from 'node:net';
import t from 'tap';
import {
  closeServer, iomux, listen, msSince, sleep, sleepSync, statsDelta, waitFor,
} from './helpers';

const { loop } = iomux;
type Timer = iomux.Timer;
/** A subtest's `t` (the last overload of t.test takes only the callback). */
type TestT = Parameters<Parameters<typeof t.test>[0]>[0];

// Lateness bound: generous, for a shared 2-core machine. Earliness is
// asserted strictly everywhere.
const LATE_MS = 30;

/** Every timer a test creates, cleared at its end (so a lost one cannot keep the process alive). */
function tracker(tt: TestT): (timer: Timer) => Timer {
  const all: Timer[] = [];
  tt.teardown(() => {
    for (const x of all) loop.clearTimeout(x);
  });
  return (timer: Timer) => {
    all.push(timer);
    return timer;
  };
}


t.test('timers', async (t) => {
  t.test('different delays fire in deadline order', async (t) => {
    const keep = tracker(t);
    const order: number[] = [];
    const done = new Promise<void>((resolve) => {
      for (const ms of [40, 10, 30, 1, 20]) {
        keep(loop.setTimeout(() => {
          order.push(ms);
          if (order.length === 5) resolve();
        }, ms));
      }
    });
    await done;
    t.same(order, [1, 10, 20, 30, 40]);
  });

  t.test('equal delays fire in creation order', async (t) => {
    const keep = tracker(t);
    const order: number[] = [];
    await new Promise<void>((resolve) => {
      for (let i = 0; i < 20; i++) {
        keep(loop.setTimeout(() => {
          order.push(i);
          if (order.length === 20) resolve();
        }, 15));
      }
    });
    t.same(order, Array.from({ length: 20 }, (_, i) => i));
  });

  t.test('timers expiring in one batch fire by deadline, then creation order', async (t) => {
    const keep = tracker(t);
    const order: string[] = [];
    const spec: [string, number][] = [['c5', 5], ['a1', 1], ['e5', 5], ['b3', 3], ['d3', 3], ['f5', 5]];
    const done = new Promise<void>((resolve) => {
      for (const [name, ms] of spec) {
        keep(loop.setTimeout(() => {
          order.push(name);
          if (order.length === spec.length) resolve();
        }, ms));
      }
    });
    sleepSync(20); // all six are due before the loop looks again
    await done;
    t.same(order, ['a1', 'b3', 'd3', 'c5', 'e5', 'f5']);
  });

  t.test('clearTimeout before it fires: it never fires', async (t) => {
    const keep = tracker(t);
    let fired = 0;
    const x = keep(loop.setTimeout(() => fired++, 10));
    const y = keep(loop.setTimeout(() => fired++, 1));
    loop.clearTimeout(x);
    y.close(); // the same thing
    loop.clearTimeout(x); // twice: harmless
    loop.clearTimeout(undefined);
    loop.clearTimeout(null);
    await sleep(60);
    t.equal(fired, 0);
  });

  t.test('clearTimeout inside a timer callback cancels a timer due in the same batch', async (t) => {
    const keep = tracker(t);
    const fired: string[] = [];
    let b: Timer;
    keep(loop.setTimeout(() => {
      fired.push('a');
      loop.clearTimeout(b);
    }, 5));
    b = keep(loop.setTimeout(() => fired.push('b'), 5));
    keep(loop.setTimeout(() => fired.push('c'), 5));
    sleepSync(20); // a, b and c expire together
    await sleep(50);
    t.same(fired, ['a', 'c']);
  });

  t.test('setInterval repeats, clearInterval (inside the callback) stops it', async (t) => {
    const keep = tracker(t);
    const start = process.hrtime.bigint();
    const at: number[] = [];
    await new Promise<void>((resolve) => {
      const iv = keep(loop.setInterval(() => {
        at.push(msSince(start));
        if (at.length === 4) {
          loop.clearInterval(iv);
          resolve();
        }
      }, 10));
    });
    t.ok(at[3]! >= 40, `fourth run no earlier than 4 x 10 ms (was ${at[3]!.toFixed(2)} ms)`);
    await sleep(60);
    t.equal(at.length, 4, 'no run after clearInterval');
  });

  t.test('clearInterval from outside stops it', async (t) => {
    const keep = tracker(t);
    let n = 0;
    const iv = keep(loop.setInterval(() => n++, 5));
    t.ok(await waitFor(() => n >= 3, 2000), 'it repeats');
    loop.clearInterval(iv);
    const seen = n;
    await sleep(50);
    t.equal(n, seen, 'no run after clearInterval');
  });

  t.test('refresh() postpones a pending timer', async (t) => {
    const keep = tracker(t);
    const start = process.hrtime.bigint();
    let refreshedAt = 0;
    let firedAt = 0;
    const x = keep(loop.setTimeout(() => { firedAt = msSince(start); }, 50));
    await sleep(25);
    t.equal(firedAt, 0);
    refreshedAt = msSince(start);
    t.equal(x.refresh(), x, 'refresh() returns the timer');
    await waitFor(() => firedAt > 0, 2000);
    t.ok(firedAt - refreshedAt >= 50, `fired ${(firedAt - refreshedAt).toFixed(2)} ms after the refresh (>= 50)`);
    t.ok(firedAt - refreshedAt < 50 + LATE_MS, 'and not much later');
  });

  t.test('refresh() re-arms a timer that already fired', async (t) => {
    const keep = tracker(t);
    let n = 0;
    const x = keep(loop.setTimeout(() => n++, 5));
    t.ok(await waitFor(() => n === 1));
    const start = process.hrtime.bigint();
    let again = 0;
    x.refresh();
    await waitFor(() => n === 2 && (again ||= msSince(start)) > 0);
    t.equal(n, 2);
    t.ok(again >= 5, 'not early');
    await sleep(30);
    t.equal(n, 2, 'a one-shot timer runs once per refresh');
  });

  t.test('refresh() after clearTimeout() does nothing, as in node', async (t) => {
      const keep = tracker(t);
      let fired = 0;
      const x = keep(loop.setTimeout(() => fired++, 10));
      loop.clearTimeout(x);
      x.refresh();
      const iv = keep(loop.setInterval(() => fired++, 10));
      loop.clearInterval(iv);
      iv.refresh();
      await sleep(60);
      t.equal(fired, 0, 'neither fires');
    });

  t.test('arguments are passed to the callback', async (t) => {
    const keep = tracker(t);
    const obj = { k: 1 };
    const got = await new Promise<unknown[]>((resolve) => {
      keep(loop.setTimeout((...a: unknown[]) => resolve(a), 1, 'x', 42, obj));
    });
    t.same(got, ['x', 42, obj]);
    t.equal(got[2], obj, 'the same object');
    const got2 = await new Promise<unknown[]>((resolve) => {
      const iv = keep(loop.setInterval((...a: unknown[]) => {
        loop.clearInterval(iv);
        resolve(a);
      }, 1, 'y', null));
    });
    t.same(got2, ['y', null]);
    const none = await new Promise<number>((resolve) => {
      keep(loop.setTimeout((...a: unknown[]) => resolve(a.length), 1));
    });
    t.equal(none, 0, 'no arguments when none were given');
  });

  t.test('a timer never fires early, and fires within a few ms', async (t) => {
    const delays = [1, 5, 10, 25, 50];
    // One at a time.
    for (const ms of delays) {
      for (let i = 0; i < 4; i++) {
        const start = process.hrtime.bigint();
        const el = await new Promise<number>((resolve) => {
          loop.setTimeout(() => resolve(msSince(start)), ms);
        });
        t.ok(el >= ms, `${ms} ms timer: ${el.toFixed(3)} ms elapsed, never early`);
        t.ok(el < ms + LATE_MS, `${ms} ms timer: within ${LATE_MS} ms of its deadline`);
      }
    }
    // All at once.
    const all = await Promise.all(delays.flatMap((ms) => Array.from({ length: 4 }, () => {
      const start = process.hrtime.bigint();
      return new Promise<[number, number]>((resolve) => {
        loop.setTimeout(() => resolve([ms, msSince(start)]), ms);
      });
    })));
    for (const [ms, el] of all) {
      t.ok(el >= ms, `concurrent ${ms} ms timer: ${el.toFixed(3)} ms, never early`);
      t.ok(el < ms + LATE_MS, `concurrent ${ms} ms timer: within ${LATE_MS} ms`);
    }
    // An interval is never early either, measured from each run to the next
    // (it is re-armed when it fires, before its callback runs).
    const runs: bigint[] = [];
    await new Promise<void>((resolve) => {
      const iv = loop.setInterval(() => {
        runs.push(process.hrtime.bigint());
        if (runs.length === 6) {
          loop.clearInterval(iv);
          resolve();
        }
      }, 10);
    });
    for (let i = 1; i < runs.length; i++) {
      const gap = Number(runs[i]! - runs[i - 1]!) / 1e6;
      t.ok(gap >= 9.9, `interval gap ${gap.toFixed(3)} ms (10 ms interval)`);
    }
  });

  t.test('invalid callback throws TypeError ERR_INVALID_ARG_TYPE', async (t) => {
    for (const bad of [undefined, null, 'cb', 42, {}]) {
      t.throws(() => loop.setTimeout(bad as any, 10), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /"callback"/ });
      t.throws(() => loop.setInterval(bad as any, 10), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /"callback"/ });
    }
  });

  t.test('ref()/unref()/hasRef()', async (t) => {
    const keep = tracker(t);
    const x = keep(loop.setTimeout(() => {}, 1000));
    t.equal(x.hasRef(), true);
    t.equal(x.unref(), x);
    t.equal(x.hasRef(), false);
    t.equal(x.ref(), x);
    t.equal(x.hasRef(), true);
  });

  t.test('schedule and cancel stay in JavaScript: the core alarm moves only for an earlier deadline', async (t) => {
    const keep = tracker(t);
    const late = keep(loop.setTimeout(() => {}, 10000));
    const before = loop._timers.alarmCalls;
    for (let i = 0; i < 10000; i++) loop.clearTimeout(loop.setTimeout(() => {}, 1000));
    const calls = loop._timers.alarmCalls - before;
    t.ok(calls <= 1, `10,000 schedule-and-cancel pairs made ${calls} call(s) into the core`);

    // The alarm left at the cleared timers' deadline finds nothing due, and
    // an earlier timer still pulls it in.
    let fired = 0;
    const start = process.hrtime.bigint();
    let el = 0;
    keep(loop.setTimeout(() => { fired++; el = msSince(start); }, 20));
    t.ok(await waitFor(() => fired === 1, 2000), 'the earlier timer fired');
    t.ok(el >= 20 && el < 20 + LATE_MS, `after ${el.toFixed(2)} ms (20 ms timer)`);
    loop.clearTimeout(late);
  });

  t.test('clearing the nearest timer leaves later ones on time', async (t) => {
    const keep = tracker(t);
    const start = process.hrtime.bigint();
    const got: [string, number][] = [];
    const a = keep(loop.setTimeout(() => got.push(['a', msSince(start)]), 5));
    keep(loop.setTimeout(() => got.push(['b', msSince(start)]), 30));
    keep(loop.setTimeout(() => got.push(['c', msSince(start)]), 30));
    loop.clearTimeout(a);
    t.ok(await waitFor(() => got.length === 2, 2000));
    await sleep(20);
    t.same(got.map((g) => g[0]), ['b', 'c'], 'only the others, in order');
    for (const [name, el] of got) t.ok(el >= 30 && el < 30 + LATE_MS, `${name} after ${el.toFixed(2)} ms`);
  });

  // ---- timers that expire in the same batch as a timer whose callback
  // starts, re-arms or refreshes a timer ------------------------------------

  t.test('a timer due in the same batch still fires when another callback starts a timer', async (t) => {
    const keep = tracker(t);
    const fired: string[] = [];
    keep(loop.setTimeout(() => {
      fired.push('a');
      keep(loop.setTimeout(() => fired.push('c'), 10));
    }, 5));
    keep(loop.setTimeout(() => fired.push('b'), 5));
    sleepSync(20); // a and b expire in one batch
    await sleep(80);
    t.same(fired, ['a', 'b', 'c']);
  });

  t.test('a timeout due in the same batch as an interval still fires', async (t) => {
    const keep = tracker(t);
    const fired: string[] = [];
    const iv = keep(loop.setInterval(() => {
      fired.push('iv');
      if (fired.filter((f) => f === 'iv').length === 2) loop.clearInterval(iv);
    }, 5));
    keep(loop.setTimeout(() => fired.push('to'), 5));
    sleepSync(20); // both expire in one batch; the interval re-arms first
    await sleep(80);
    t.same(fired, ['iv', 'to', 'iv']);
  });

  t.test('refresh() of a timer due in the same batch postpones it', async (t) => {
    const keep = tracker(t);
    let refreshedAt = 0n;
    let bAt = 0n;
    let b: Timer;
    keep(loop.setTimeout(() => {
      refreshedAt = process.hrtime.bigint();
      b.refresh();
    }, 5));
    b = keep(loop.setTimeout(() => { bAt = process.hrtime.bigint(); }, 30));
    sleepSync(40); // both expire in one batch
    await waitFor(() => bAt !== 0n, 2000);
    const gap = Number(bAt - refreshedAt) / 1e6;
    t.ok(gap >= 30, `b fired ${gap.toFixed(3)} ms after its refresh (>= 30)`);
  });
});

// ---- socket idle timeouts ----------------------------------------------------

/** An iomux server whose connections are handed to `onConn`; a node:net client connected to it. */
async function pair(t: TestT, onConn: (s: iomux.Socket) => void): Promise<{ server: iomux.Server; client: net.Socket }> {
  const server = iomux.createServer((s) => {
    s.on('error', () => {});
    onConn(s);
  });
  const port = await listen(server);
  const client = net.connect(port, '127.0.0.1');
  client.on('error', () => {});
  await once(client, 'connect');
  t.teardown(async () => {
    client.destroy();
    await closeServer(server);
  });
  return { server, client };
}

t.test('socket idle timeouts', async (t) => {
  t.test('setTimeout(ms) emits timeout no earlier than ms after the last activity', async (t) => {
    for (const ms of [20, 50, 100]) {
      let setAt = 0n;
      const fired = new Promise<number>((resolve) => {
        void pair(t, (s) => {
          setAt = process.hrtime.bigint();
          s.setTimeout(ms);
          s.on('timeout', () => resolve(msSince(setAt)));
        });
      });
      const el = await fired;
      t.ok(el >= ms, `${ms} ms idle timeout after ${el.toFixed(3)} ms (never early)`);
      t.ok(el < ms + LATE_MS, `${ms} ms idle timeout within ${LATE_MS} ms`);
    }
  });

  t.test('the callback form, on the client side, after a write', async (t) => {
    const server = iomux.createServer((s) => {
      s.on('error', () => {});
      s.resume();
    });
    const port = await listen(server);
    const c = iomux.connect(port, '127.0.0.1');
    c.on('error', () => {});
    await once(c, 'connect');
    const wroteAt = process.hrtime.bigint();
    c.write('x');
    const el = await new Promise<number>((resolve) => c.setTimeout(40, () => resolve(msSince(wroteAt))));
    t.ok(el >= 40, `timeout ${el.toFixed(3)} ms after the write`);
    t.ok(el < 40 + LATE_MS);
    t.equal(c.timeout, 40);
    t.equal(c.destroyed, false, "'timeout' does not close the socket");
    c.destroy();
    await closeServer(server);
  });

  t.test('a timeout fires once per idle period; new activity re-arms it', async (t) => {
    let count = 0;
    let sock!: iomux.Socket;
    const { client } = await pair(t, (s) => {
      sock = s;
      s.setTimeout(30);
      s.on('timeout', () => count++);
      s.resume();
    });
    t.ok(await waitFor(() => count === 1, 2000), 'first timeout');
    await sleep(120);
    t.equal(count, 1, 'only once while idle');
    const sentAt = process.hrtime.bigint();
    client.write('wake');
    let secondAt = 0;
    t.ok(await waitFor(() => count === 2 && (secondAt ||= msSince(sentAt)) > 0, 2000), 'again after activity');
    t.ok(secondAt >= 30, `second timeout ${secondAt.toFixed(3)} ms after the data was sent`);
    t.equal(sock.destroyed, false);
  });

  t.test('incoming data every ms/3 postpones the timeout', async (t) => {
    const ms = 150;
    let timeouts = 0;
    let timedOutAt = 0n;
    let got = 0;
    const { client } = await pair(t, (s) => {
      s.setTimeout(ms);
      s.on('timeout', () => {
        timeouts++;
        timedOutAt = process.hrtime.bigint();
      });
      s.on('data', (d: Buffer) => { got += d.length; });
    });
    let lastSend = 0n;
    for (let i = 0; i < 12; i++) { // 12 x 50 ms = 600 ms, four times the timeout
      lastSend = process.hrtime.bigint();
      client.write('.');
      await sleep(ms / 3);
    }
    t.equal(timeouts, 0, 'no timeout while data keeps arriving');
    t.ok(await waitFor(() => timeouts === 1, 2000), 'a timeout once the data stops');
    t.equal(got, 12);
    const after = Number(timedOutAt - lastSend) / 1e6;
    t.ok(after >= ms, `timeout ${after.toFixed(3)} ms after the last data was sent (>= ${ms})`);
    t.ok(after < ms + LATE_MS, 'and not much later');
  });

  t.test('outgoing writes every ms/3 postpone the timeout too', async (t) => {
    const ms = 120;
    let timeouts = 0;
    let sock!: iomux.Socket;
    const { client } = await pair(t, (s) => {
      sock = s;
      s.setTimeout(ms);
      s.on('timeout', () => timeouts++);
    });
    client.resume();
    let lastWrite = 0n;
    for (let i = 0; i < 12; i++) {
      lastWrite = process.hrtime.bigint();
      sock.write('.');
      await sleep(ms / 3);
    }
    t.equal(timeouts, 0, 'no timeout while writing');
    let at = 0;
    t.ok(await waitFor(() => timeouts === 1 && (at ||= msSince(lastWrite)) > 0, 2000));
    t.ok(at >= ms, `timeout ${at.toFixed(3)} ms after the last write`);
  });

  t.test('setTimeout(0) disables it', async (t) => {
    let timeouts = 0;
    let cbCalls = 0;
    let sock!: iomux.Socket;
    await pair(t, (s) => {
      sock = s;
      s.on('timeout', () => timeouts++);
      const cb = () => cbCalls++;
      s.setTimeout(30, cb);
      s.setTimeout(0, cb); // disables, and removes that listener
    });
    await sleep(150);
    t.equal(timeouts, 0);
    t.equal(cbCalls, 0);
    t.equal(sock.timeout, undefined);
    // and it can be enabled again
    sock.setTimeout(20);
    t.ok(await waitFor(() => timeouts === 1, 2000), 're-enabled');
  });

  t.test('idle timeouts on 1,000 busy sockets cost no syscall beyond the I/O', async (t) => {
    const N = 1000, ROUNDS = 5;
    const sockets: iomux.Socket[] = [];
    let timeouts = 0;
    const server = iomux.createServer((s) => {
      sockets.push(s);
      s.on('error', () => {});
      s.setTimeout(5000);
      s.on('timeout', () => timeouts++);
      s.on('data', (d: Buffer) => s.write(d));
    });
    const port = await listen(server);
    const clients: net.Socket[] = [];
    t.teardown(async () => {
      for (const c of clients) c.destroy();
      await closeServer(server);
    });
    for (let i = 0; i < N; i += 100) {
      const batch: Promise<unknown>[] = [];
      for (let j = i; j < Math.min(N, i + 100); j++) {
        const c = net.connect(port, '127.0.0.1');
        c.on('error', () => {});
        clients.push(c);
        batch.push(once(c, 'connect'));
      }
      await Promise.all(batch);
    }
    t.ok(await waitFor(() => sockets.length === N, 5000), `${N} connections accepted`);
    t.ok(sockets.every((s) => s.timeout === 5000));

    const delta = statsDelta();
    for (let r = 0; r < ROUNDS; r++) {
      await Promise.all(clients.map((c, i) => new Promise<void>((resolve) => {
        const msg = `r${r}c${i};`;
        let got = '';
        const onData = (d: Buffer) => {
          got += d.toString();
          if (got.length >= msg.length) {
            c.off('data', onData);
            resolve();
          }
        };
        c.on('data', onData);
        c.write(msg);
      })));
    }
    const d = delta();
    t.comment(JSON.stringify(d));
    t.equal(timeouts, 0);
    const reads = d.read! + d.batch_read!;
    const writes = d.write! + d.writev! + d.batch_write!;
    t.ok(reads >= N * ROUNDS, `every message was read (${reads} reads, ${d.batch_read} of them in batches)`);
    t.ok(writes >= N * ROUNDS, `every echo was written (${writes} writes, ${d.batch_write} of them in batches)`);
    const io = new Set(['iterations', 'events', 'wait', 'read', 'write', 'writev', 'batch', 'batch_read', 'batch_write']);
    for (const [k, v] of Object.entries(d)) {
      if (!io.has(k)) t.equal(v, 0, `no ${k} syscall`);
    }
    t.ok(d.wait! <= d.iterations!, 'one wait per iteration at most');
  });

  t.test('invalid ms throws, naming the argument', async (t) => {
    const s = new iomux.Socket();
    for (const bad of [-1, NaN, Infinity, -Infinity, 2 ** 32]) {
      t.throws(() => s.setTimeout(bad), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /"msecs"/ }, `setTimeout(${bad})`);
    }
    for (const bad of ['100', null, undefined, {}, 10n]) {
      t.throws(() => s.setTimeout(bad as any), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /"msecs"/ }, `setTimeout(${String(bad)})`);
    }
    t.throws(() => s.setTimeout(10, 'cb' as any), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /"callback"/ });
    t.throws(() => iomux.connect({ port: 1, host: '127.0.0.1', timeout: -5 }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /"options\.timeout"/ });
    t.equal(s.timeout, undefined, 'a rejected value changes nothing');
    s.destroy();
  });
});
