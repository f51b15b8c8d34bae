// iomux's ZeroMQ sockets among themselves: libzmq's semantics (round-robin,
// fair-queueing, ROUTER routing, REQ/REP alternation, high-water marks,
// linger), the API's forms, and reliability (a peer that stops reading,
// 1,000 connects and disconnects without a leaked fd or timer).
import t from 'tap';
import * as zmq from 'zeromq';
import * as net from 'node:net';
import { once } from 'node:events';
import { iomux } from './helpers';
import { bindEndpoint, fdCount, loopTimers, sleep, str, until } from './zmq-helpers';

const z = iomux.zmq;

t.test('PUSH round-robins over its peers; PULL fair-queues', async (t) => {
  const a = new z.Pull();
  const b = new z.Pull();
  await a.bind('tcp://127.0.0.1:*');
  await b.bind(bindEndpoint('ipc'));
  const push = new z.Push();
  let connects = 0;
  push.on('connect', () => connects++);
  push.connect(a.lastEndpoint!);
  push.connect(b.lastEndpoint!);
  await until(() => connects === 2);
  for (let i = 0; i < 10; i++) push.send(String(i));
  const fromA: string[] = [];
  const fromB: string[] = [];
  for (let i = 0; i < 5; i++) fromA.push(String((await a.receive())[0]));
  for (let i = 0; i < 5; i++) fromB.push(String((await b.receive())[0]));
  t.same([fromA, fromB], [['0', '2', '4', '6', '8'], ['1', '3', '5', '7', '9']], 'alternating');

  // Fair queueing: two PUSH peers each queue 5 before PULL reads: reads alternate.
  const pull = new z.Pull();
  await pull.bind('tcp://127.0.0.1:*');
  const p1 = new z.Push();
  const p2 = new z.Push();
  p1.connect(pull.lastEndpoint!);
  for (let i = 0; i < 5; i++) p1.send(`x${i}`);
  await sleep(50);
  p2.connect(pull.lastEndpoint!);
  for (let i = 0; i < 5; i++) p2.send(`y${i}`);
  await sleep(50);
  const order: string[] = [];
  for (let i = 0; i < 10; i++) order.push(String((await pull.receive())[0]));
  t.same(order.slice(0, 4).map((s) => s[0]).sort(), ['x', 'x', 'y', 'y'], `both peers served from the start (${order.join(' ')})`);
  await Promise.all([a, b, push, pull, p1, p2].map((s) => s.close()));
});

t.test('ROUTER routes by identity; routerMandatory raises on an unknown peer', async (t) => {
  const router = new z.Router({ routerMandatory: true });
  await router.bind('tcp://127.0.0.1:*');
  const d1 = new z.Dealer({ routingId: 'd1' });
  const d2 = new z.Dealer();
  d1.connect(router.lastEndpoint!);
  d2.connect(router.lastEndpoint!);
  d1.send('from1');
  d2.send('from2');
  const m1 = await router.receive();
  const m2 = await router.receive();
  const ids = new Map([[String(m1[1]), m1[0]!], [String(m2[1]), m2[0]!]]);
  t.equal(String(ids.get('from1')), 'd1', 'the identity the peer gave');
  t.equal(ids.get('from2')!.length, 5, 'a generated identity');
  t.equal(ids.get('from2')![0], 0, 'generated identities start with a zero byte');
  router.send([ids.get('from2')!, 'to2']);
  router.send(['d1', 'to1']);
  t.same(str(await d2.receive()), ['to2']);
  t.same(str(await d1.receive()), ['to1']);
  t.throws(() => router.send(['nobody', 'x']), { code: 'EHOSTUNREACH' });
  const lax = new z.Router();
  t.equal(lax.send(['nobody', 'x']), undefined, 'without routerMandatory: dropped silently');
  await Promise.all([router, d1, d2, lax].map((s) => s.close()));
});

t.test('REQ/REP: envelopes and strict alternation', async (t) => {
  const rep = new z.Rep();
  await rep.bind('tcp://127.0.0.1:*');
  t.throws(() => rep.send('x'), { code: 'EFSM' }, 'REP cannot send before a request');
  const req = new z.Req();
  req.connect(rep.lastEndpoint!);
  req.send(['a', 'b']);
  t.throws(() => req.send('c'), { code: 'EFSM' });
  t.same(str(await rep.receive()), ['a', 'b'], 'REP sees the body, not the envelope');
  rep.send('answer');
  t.same(str(await req.receive()), ['answer']);
  // Through a ROUTER, the envelope is visible: identity, empty delimiter, body.
  const router = new z.Router();
  await router.bind('tcp://127.0.0.1:*');
  const req2 = new z.Req({ routingId: 'client' });
  req2.connect(router.lastEndpoint!);
  req2.send('q');
  t.same(str(await router.receive()), ['client', '', 'q']);
  router.send(['client', '', 'r']);
  t.same(str(await req2.receive()), ['r']);
  await Promise.all([rep, req, router, req2].map((s) => s.close()));
});

t.test("on('message'), async iteration, and the event forms", async (t) => {
  const pull = new z.Pull();
  await pull.bind('tcp://127.0.0.1:*');
  const push = new z.Push();
  push.connect(pull.lastEndpoint!);
  const seen: string[][] = [];
  const done = new Promise<void>((resolve) => {
    pull.on('message', (...frames: Buffer[]) => {
      seen.push(str(frames));
      if (seen.length === 3) resolve();
    });
  });
  push.send(['1', 'a']);
  push.send('2');
  push.send([Buffer.from('3'), new Uint8Array([0x62])]);
  await done;
  t.same(seen, [['1', 'a'], ['2'], ['3', 'b']]);
  pull.removeAllListeners('message');
  push.send('it1');
  push.send('it2');
  const got: string[] = [];
  for await (const m of pull) {
    got.push(String(m[0]));
    if (got.length === 2) break;
  }
  t.same(got, ['it1', 'it2']);
  t.throws(() => push.send([]), { code: 'ERR_INVALID_ARG_VALUE' });
  t.throws(() => push.send(42 as unknown as string), { code: 'ERR_INVALID_ARG_TYPE' });
  await t.rejects(push.receive(), { code: 'ENOTSUP' });
  t.throws(() => pull.send('x'), { code: 'ENOTSUP' });
  t.throws(() => push.connect('udp://x:1'), { code: 'ERR_ZMQ_ENDPOINT' });
  t.throws(() => push.connect('tcp://127.0.0.1:*'), { code: 'ERR_ZMQ_ENDPOINT' });
  await Promise.all([pull, push].map((s) => s.close()));
  await t.rejects(pull.receive(), { code: 'EBADF' });
});

t.test('an incompatible peer, or one asking for PLAIN, is dropped with a named error', async (t) => {
  const open: { close(): unknown }[] = [];
  t.teardown(async () => { for (const s of open) await s.close(); });
  const a = new z.Push();
  open.push(a);
  await a.bind('tcp://127.0.0.1:*');
  const b = new z.Push();
  open.push(b);
  const errs: string[] = [];
  a.on('error', (e: Error & { code: string }) => errs.push(e.code));
  b.connect(a.lastEndpoint!);
  await until(() => errs.length > 0);
  t.equal(errs[0], 'ERR_ZMTP_SOCKET_TYPE');
  const plain = new zmq.Pull({ plainServer: true });
  open.push(plain);
  await plain.bind('tcp://127.0.0.1:*');
  const c = new z.Push({ reconnectInterval: -1 });
  open.push(c);
  const errs2: string[] = [];
  c.on('error', (e: Error & { code: string }) => errs2.push(e.code));
  c.connect(plain.lastEndpoint!);
  await until(() => errs2.length > 0);
  t.equal(errs2[0], 'ERR_ZMTP_HANDSHAKE', 'libzmq closes at once: a handshake error');
  // A peer whose greeting asks for PLAIN (libzmq closes before sending it all; this one does not).
  const server = net.createServer((s) => {
    const g = z.encodeGreeting();
    g.fill(0, 12, 32);
    g.write('PLAIN', 12);
    s.on('error', () => {});
    s.resume();
    s.write(g);
  });
  server.listen(0, '127.0.0.1');
  open.push(server);
  await once(server, 'listening');
  const d = new z.Push({ reconnectInterval: -1 });
  open.push(d);
  const errs3: string[] = [];
  d.on('error', (e: Error & { code: string }) => errs3.push(e.code));
  d.connect(`tcp://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
  await until(() => errs3.length > 0);
  t.equal(errs3[0], 'ERR_ZMTP_MECHANISM');
});

t.test('high-water marks: PUSH waits, PUB drops, memory stays bounded when the peer stops reading', async (t) => {
  // A PULL that never reads: it pauses at its receive mark, the kernel buffers fill, PUSH waits.
  const pull = new z.Pull({ receiveHighWaterMark: 50 });
  await pull.bind('tcp://127.0.0.1:*');
  const push = new z.Push({ sendHighWaterMark: 50 });
  push.connect(pull.lastEndpoint!);
  await once(push, 'connect');
  const msg = Buffer.alloc(4096, 1);
  let accepted = 0;
  let pending: Promise<void> | undefined;
  for (let round = 0; round < 200 && pending === undefined; round++) {
    for (let i = 0; i < 100 && pending === undefined; i++) {
      pending = push.send(msg);
      if (pending === undefined) accepted++;
    }
    await sleep(1);
  }
  t.ok(pending !== undefined, `send() returned a promise after ${accepted} messages`);
  await sleep(200);
  t.ok(accepted * msg.length < 48 * 1048576, `bounded: ${(accepted * 4 / 1024).toFixed(1)} MiB accepted (kernel buffers + the marks)`);
  let resolved = false;
  void pending!.then(() => { resolved = true; });
  t.notOk(resolved, 'still waiting while nobody reads');
  // Reading resumes the flow; the waiting send completes.
  for (let i = 0; i < accepted + 1; i++) await pull.receive();
  t.ok(resolved, 'the waiting send went through once the peer read');

  // PUB: never waits; a slow subscriber's queue stays at its mark.
  const pub = new z.Pub({ sendHighWaterMark: 100 });
  await pub.bind('tcp://127.0.0.1:*');
  const sub = new z.Sub({ receiveHighWaterMark: 100 });
  sub.subscribe();
  sub.connect(pub.lastEndpoint!);
  await until(() => {
    pub.send('probe');
    return (sub as unknown as { inboxCount: number }).inboxCount > 0;
  });
  global.gc?.();
  const rss0 = process.memoryUsage().rss;
  let waited = 0;
  for (let i = 0; i < 20_000; i++) if (pub.send(msg) !== undefined) waited++;
  t.equal(waited, 0, 'PUB never waits');
  await sleep(100);
  const grown = (process.memoryUsage().rss - rss0) / 1048576;
  t.ok(grown < 48, `RSS grew ${grown.toFixed(1)} MiB while publishing 78 MiB to a subscriber that does not read`);
  await Promise.all([pull, push, pub, sub].map((s) => s.close()));
});

t.test('linger: close() delivers what was queued; linger 0 does not wait', async (t) => {
  const pull = new z.Pull();
  await pull.bind('tcp://127.0.0.1:*');
  const push = new z.Push({ linger: -1 });
  push.connect(pull.lastEndpoint!);
  await until(() => (push as unknown as { pipes: { live: boolean }[] }).pipes[0]?.live === true);
  for (let i = 0; i < 1000; i++) push.send(String(i));
  await push.close();
  let n = 0;
  for (let i = 0; i < 1000; i++) if (String((await pull.receive())[0]) === String(i)) n++;
  t.equal(n, 1000, 'all 1000 queued messages arrived after close()');
  const p0 = new z.Push(); // linger 0, a peer that never comes
  p0.connect('tcp://127.0.0.1:9');
  p0.send('lost');
  const t0 = Date.now();
  await p0.close();
  t.ok(Date.now() - t0 < 500, 'closed at once');
  await pull.close();
});

t.test('reconnect backoff: the delay doubles up to reconnectIntervalMax', async (t) => {
  // A port nobody listens on: count connect(2) calls over the same time.
  const server = new z.Pull();
  await server.bind('tcp://127.0.0.1:*');
  const ep = server.lastEndpoint!;
  await server.close();
  const attempts = async (opts: iomux.zmq.SocketOptions) => {
    const s = new z.Push(opts);
    const before = iomux.loop.stats().connect;
    s.connect(ep);
    await sleep(700);
    const n = iomux.loop.stats().connect - before;
    await s.close();
    return n;
  };
  const flat = await attempts({ reconnectInterval: 20 });
  const backoff = await attempts({ reconnectInterval: 20, reconnectIntervalMax: 320 });
  const never = await attempts({ reconnectInterval: -1 });
  t.ok(flat >= 10, `a fixed 20 ms interval: ${flat} attempts in 700 ms`);
  t.ok(backoff <= 8 && backoff >= 3, `20, 40, 80, 160, 320, 320 ms: ${backoff} attempts`);
  t.equal(never, 1, 'reconnectInterval -1: one attempt only');
});

t.test('1,000 connects and disconnects: no fd or timer leak', async (t) => {
  const pull = new z.Pull({ heartbeatInterval: 1000 });
  await pull.bind('tcp://127.0.0.1:*');
  const stats0 = iomux.loop.stats();
  const fds0 = fdCount();
  const timers0 = loopTimers();
  const N = 1000;
  for (let i = 0; i < N; i += 10) {
    await Promise.all(Array.from({ length: 10 }, async (_, k) => {
      const push = new z.Push({ heartbeatInterval: 1000 });
      push.connect(pull.lastEndpoint!);
      push.send(String(i + k));
      await until(() => (push as unknown as { pipes: { live: boolean; queue: { length: number } }[] }).pipes[0]!.queue.length === 0
        && (push as unknown as { pipes: { live: boolean }[] }).pipes[0]!.live);
      await push.close();
    }));
  }
  let got = 0;
  while (got < N) {
    await pull.receive();
    got++;
  }
  await until(() => fdCount() === fds0, 5000, `fds back to ${fds0} (now ${fdCount()})`);
  await until(() => loopTimers() === timers0, 5000, `timers back to ${timers0} (now ${loopTimers()})`);
  const stats1 = iomux.loop.stats();
  // accept4 calls: one per connection, plus the one that finds the queue empty.
  t.ok(stats1.accept - stats0.accept >= N, `${N} accepted (${stats1.accept - stats0.accept} accept4 calls)`);
  t.ok(stats1.close - stats0.close >= 2 * N, `every socket closed (${stats1.close - stats0.close} closes)`);
  t.equal(fdCount(), fds0, 'no fd leaked');
  t.equal(loopTimers(), timers0, 'no timer leaked');
  await pull.close();
});

t.test('output slabs: none on a connection that never sends, dropped when idle, allocated again on demand', async (t) => {
  type Conn = { slab: Buffer };
  const conns = (s: object): Conn[] => [...(s as unknown as { conns: Set<Conn> }).conns];
  const timers0 = loopTimers();
  const pull = new z.Pull();
  await pull.bind('tcp://127.0.0.1:*');
  const N = 50;
  const pushes = Array.from({ length: N }, () => new z.Push());
  const big = Buffer.alloc(5000, 7);
  const sendAll = (round: number): void => {
    pushes.forEach((p, i) => {
      p.send([`${round}:${i}`, big]);
      p.send(`${round}:${i}:small`);
    });
  };
  let connects = 0;
  for (const p of pushes) {
    p.on('connect', () => connects++);
    p.connect(pull.lastEndpoint!);
  }
  await until(() => connects === N);
  const receiveAll = async (round: number): Promise<void> => {
    const seen = new Set<string>();
    let bad = 0;
    for (let k = 0; k < 2 * N; k++) {
      const m = await pull.receive();
      if (m.length === 2 ? !m[1]!.equals(big) : m.length !== 1) bad++;
      seen.add(String(m[0]));
    }
    t.equal(bad, 0, `round ${round}: every message has its frames intact`);
    t.equal(seen.size, 2 * N, `round ${round}: every message once`);
    t.ok(pushes.every((_, i) => seen.has(`${round}:${i}`) && seen.has(`${round}:${i}:small`)), `round ${round}: from every peer`);
  };
  sendAll(1);
  t.ok(pushes.every((p) => conns(p).every((c) => c.slab.length > 0)), 'each sender got a slab');
  await receiveAll(1);
  const accepted = conns(pull);
  t.equal(accepted.length, N, 'the PULL has a connection per peer');
  t.ok(accepted.every((c) => c.slab.length === 0), 'no output slab on the receiving side');
  await until(() => pushes.every((p) => conns(p).every((c) => c.slab.length === 0)), 5000, 'idle slabs dropped');
  t.pass('idle senders dropped their slabs');
  sendAll(2);
  await receiveAll(2);
  t.ok(accepted.every((c) => c.slab.length === 0), 'still no slab on the receiving side');
  await Promise.all(pushes.map((p) => p.close()));
  await pull.close();
  await until(() => loopTimers() === timers0, 5000, `timers back to ${timers0} (now ${loopTimers()})`);
  t.equal(loopTimers(), timers0, 'the sweep timer went with the last slab');
});
