// iomux's ZeroMQ sockets against real libzmq (4.3.x, through the zeromq
// package), both ways, over tcp:// and ipc://.
import t from 'tap';
import { fork } from 'node:child_process';
import * as zmq from 'zeromq';
import { iomux } from './helpers';
import { TRANSPORTS, bindEndpoint, sleep, str, until } from './zmq-helpers';

const z = iomux.zmq;

type AnyIo = iomux.zmq.Socket;
type AnyLz = zmq.Socket & { lastEndpoint?: string | null; close(): void };

async function closeAll(io: AnyIo[], lz: { close(): void }[]): Promise<void> {
  for (const s of lz) s.close();
  await Promise.all(io.map((s) => s.close()));
}

for (const tr of TRANSPORTS) {
  t.test(`${tr}: PUSH -> PULL, both ways, multipart and frames over 255 bytes`, async (t) => {
    // iomux PUSH binds, libzmq PULL connects
    const push = new z.Push();
    await push.bind(bindEndpoint(tr));
    const lpull = new zmq.Pull();
    lpull.connect(push.lastEndpoint!);
    const big = Buffer.alloc(1000, 0x42);
    push.send(['head', big, '']);
    const m = await lpull.receive();
    t.same(m.map((f) => f.length), [4, 1000, 0], 'iomux PUSH -> libzmq PULL: frames intact');
    t.ok(m[1]!.equals(big));
    // libzmq PUSH binds, iomux PULL connects
    const lpush = new zmq.Push();
    await lpush.bind(bindEndpoint(tr));
    const pull = new z.Pull();
    pull.connect(lpush.lastEndpoint!);
    await lpush.send(['a', Buffer.alloc(300, 1), 'c']);
    const m2 = await pull.receive();
    t.same(m2.map((f) => f.length), [1, 300, 1], 'libzmq PUSH -> iomux PULL: frames intact');
    await closeAll([push, pull], [lpull, lpush]);
  });

  t.test(`${tr}: DEALER <-> ROUTER both ways, identities`, async (t) => {
    const router = new z.Router();
    await router.bind(bindEndpoint(tr));
    const ldealer = new zmq.Dealer({ routingId: 'lz-dealer' });
    ldealer.connect(router.lastEndpoint!);
    await ldealer.send(['hello', 'there']);
    const got = await router.receive();
    t.same(str(got), ['lz-dealer', 'hello', 'there'], 'iomux ROUTER sees the libzmq identity first');
    router.send(['lz-dealer', 'reply']);
    t.same(str(await ldealer.receive()), ['reply']);

    const lrouter = new zmq.Router();
    await lrouter.bind(bindEndpoint(tr));
    const dealer = new z.Dealer({ routingId: 'io-dealer' });
    dealer.connect(lrouter.lastEndpoint!);
    dealer.send(['x', 'y']);
    const [id, ...rest] = await lrouter.receive();
    t.equal(String(id), 'io-dealer', 'libzmq ROUTER sees the iomux identity');
    t.same(str(rest as Buffer[]), ['x', 'y']);
    await lrouter.send([id!, 'back']);
    t.same(str(await dealer.receive()), ['back']);
    await closeAll([router, dealer], [ldealer, lrouter]);
  });

  t.test(`${tr}: REQ <-> REP both ways`, async (t) => {
    const rep = new z.Rep();
    await rep.bind(bindEndpoint(tr));
    rep.on('message', (...frames: Buffer[]) => rep.send(['re', ...frames]));
    const lreq = new zmq.Request();
    lreq.connect(rep.lastEndpoint!);
    for (let i = 0; i < 3; i++) {
      await lreq.send(`q${i}`);
      t.same(str(await lreq.receive()), ['re', `q${i}`]);
    }
    const lrep = new zmq.Reply();
    await lrep.bind(bindEndpoint(tr));
    const req = new z.Req();
    req.connect(lrep.lastEndpoint!);
    for (let i = 0; i < 3; i++) {
      req.send([`r${i}`, 'two']);
      t.throws(() => req.send('again'), { code: 'EFSM' }, 'REQ alternates strictly');
      const q = await lrep.receive();
      t.same(str(q), [`r${i}`, 'two']);
      await lrep.send(['ok', ...q]);
      t.same(str(await req.receive()), ['ok', `r${i}`, 'two']);
    }
    await closeAll([rep, req], [lreq, lrep]);
  });

  t.test(`${tr}: PUB/SUB, subscriptions from both sides`, async (t) => {
    // iomux PUB, libzmq SUB subscribing
    const pub = new z.Pub();
    await pub.bind(bindEndpoint(tr));
    const lsub = new zmq.Subscriber();
    lsub.connect(pub.lastEndpoint!);
    lsub.subscribe('news');
    // Publish until the subscription has arrived (PUB drops what nobody asked for).
    let got: Buffer[] | null = null;
    const reading = lsub.receive().then((m) => { got = m; });
    while (got === null) {
      pub.send(['weather', 'x']);
      pub.send(['news.1', 'y']);
      await Promise.race([reading, sleep(20)]);
    }
    t.same(str(got!), ['news.1', 'y'], 'libzmq SUB gets only its prefix from iomux PUB');
    lsub.unsubscribe('news');
    lsub.subscribe('weather');
    let got2: Buffer[] | null = null;
    void lsub.receive().then((m) => { got2 = m; });
    await until(() => {
      pub.send(['news.2', 'z']);
      pub.send(['weather', 'w']);
      return got2 !== null;
    }, 5000, 'weather');
    t.same(str(got2!), ['weather', 'w'], 'CANCEL then SUBSCRIBE honoured');

    // libzmq PUB, iomux SUB
    const lpub = new zmq.Publisher();
    await lpub.bind(bindEndpoint(tr));
    const sub = new z.Sub();
    sub.connect(lpub.lastEndpoint!);
    sub.subscribe('b');
    const seen: string[] = [];
    sub.on('message', (topic: Buffer) => seen.push(String(topic)));
    await until(() => {
      void lpub.send(['a1']);
      void lpub.send(['b1']);
      return seen.length > 0;
    }, 5000, 'libzmq PUB to iomux SUB');
    t.ok(seen.every((s) => s === 'b1'), 'iomux SUB gets only its prefix');
    await closeAll([pub, sub], [lsub, lpub]);
  });
}

t.test('XPUB and XSUB against libzmq: subscriptions as messages', async (t) => {
  const xpub = new z.XPub();
  await xpub.bind('tcp://127.0.0.1:*');
  const lsub = new zmq.Subscriber();
  lsub.connect(xpub.lastEndpoint!);
  lsub.subscribe('abc');
  const [sub] = await xpub.receive();
  t.same([...sub!], [1, 0x61, 0x62, 0x63], 'iomux XPUB receives the libzmq SUB subscription');
  xpub.send(['abc1', 'x']);
  t.same(str(await lsub.receive()), ['abc1', 'x'], 'and publishes to it');
  lsub.unsubscribe('abc');
  const [cancel] = await xpub.receive();
  t.same([...cancel!], [0, 0x61, 0x62, 0x63], 'the cancel too');

  const lxpub = new zmq.XPublisher();
  await lxpub.bind('tcp://127.0.0.1:*');
  const xsub = new z.XSub();
  xsub.connect(lxpub.lastEndpoint!);
  await new Promise((r) => xsub.once('connect', r));
  xsub.send(Buffer.from([1, 0x71]));
  const [lsubMsg] = await lxpub.receive();
  t.same([...lsubMsg!], [1, 0x71], 'libzmq XPUB receives the iomux XSUB subscription');
  await lxpub.send(['q1', 'y']);
  t.same(str(await xsub.receive()), ['q1', 'y']);
  await closeAll([xpub, xsub], [lsub, lxpub]);
});

t.test('10,000 messages in order, both directions', async (t) => {
  const pull = new z.Pull();
  await pull.bind('tcp://127.0.0.1:*');
  const lpush = new zmq.Push();
  lpush.connect(pull.lastEndpoint!);
  const N = 10_000;
  const sending = (async () => {
    for (let i = 0; i < N; i++) await lpush.send(String(i));
  })();
  let bad = 0;
  for (let i = 0; i < N; i++) if (String((await pull.receive())[0]) !== String(i)) bad++;
  await sending;
  t.equal(bad, 0, 'libzmq -> iomux in order');

  const lpull = new zmq.Pull();
  await lpull.bind('tcp://127.0.0.1:*');
  const push = new z.Push();
  push.connect(lpull.lastEndpoint!);
  let waited = 0;
  const sending2 = (async () => {
    for (let i = 0; i < N; i++) {
      const p = push.send(String(i));
      if (p !== undefined) {
        waited++;
        await p;
      }
    }
  })();
  let bad2 = 0;
  for (let i = 0; i < N; i++) if (String((await lpull.receive())[0]) !== String(i)) bad2++;
  await sending2;
  t.equal(bad2, 0, `iomux -> libzmq in order (${waited} sends waited for the high-water mark)`);
  await closeAll([pull, push], [lpush, lpull]);
});

t.test('frames over 16 MiB, both directions', async (t) => {
  const big = Buffer.alloc(17 * 1024 * 1024 + 5);
  for (let i = 0; i < big.length; i += 4096) big[i] = i & 0xff;
  const pull = new z.Pull();
  await pull.bind('tcp://127.0.0.1:*');
  const lpush = new zmq.Push();
  lpush.connect(pull.lastEndpoint!);
  await lpush.send(['small', big]);
  const m = await pull.receive();
  t.equal(m[1]!.length, big.length);
  t.ok(m[1]!.equals(big), 'libzmq -> iomux: 17 MiB frame intact');

  const lpull = new zmq.Pull();
  await lpull.bind('tcp://127.0.0.1:*');
  const push = new z.Push();
  push.connect(lpull.lastEndpoint!);
  push.send([big, 'tail']);
  const m2 = await lpull.receive();
  t.ok(m2[0]!.equals(big), 'iomux -> libzmq: 17 MiB frame intact');
  t.equal(String(m2[1]), 'tail');
  await closeAll([pull, push], [lpush, lpull]);
});

t.test('reconnect after the libzmq peer restarts', async (t) => {
  let lpull = new zmq.Pull();
  await lpull.bind('tcp://127.0.0.1:*');
  const ep = lpull.lastEndpoint!;
  const push = new z.Push({ reconnectInterval: 20, reconnectIntervalMax: 200 });
  let connects = 0;
  let disconnects = 0;
  push.on('connect', () => connects++);
  push.on('disconnect', () => disconnects++);
  push.connect(ep);
  push.send('before');
  t.same(str(await lpull.receive()), ['before']);
  lpull.close();
  await until(() => disconnects === 1, 5000, 'disconnect');
  await sleep(100); // a few failed attempts, with backoff
  lpull = new zmq.Pull();
  await lpull.bind(ep);
  push.send('after'); // waits in the pipe until the peer is back
  t.same(str(await lpull.receive()), ['after'], 'message sent while the peer was away arrives');
  t.equal(connects, 2, 'connected twice');
  await closeAll([push], [lpull]);
});

t.test('heartbeats keep an idle libzmq connection alive', async (t) => {
  const lrouter = new zmq.Router({ heartbeatInterval: 50, heartbeatTimeout: 200, heartbeatTimeToLive: 300 });
  await lrouter.bind('tcp://127.0.0.1:*');
  const dealer = new z.Dealer({ routingId: 'hb', heartbeatInterval: 50, heartbeatTimeout: 200 });
  let disconnects = 0;
  dealer.on('disconnect', () => disconnects++);
  dealer.connect(lrouter.lastEndpoint!);
  dealer.send('one');
  await lrouter.receive();
  await sleep(1200); // idle, both sides pinging
  t.equal(disconnects, 0, 'no disconnect while idle with heartbeats');
  dealer.send('two');
  t.same(str((await lrouter.receive()).slice(1)), ['two'], 'the same connection still carries messages');
  await closeAll([dealer], [lrouter]);
});

t.test('heartbeats time out a libzmq peer that stopped (SIGSTOP)', async (t) => {
  const child = fork(require.resolve('./fixtures/zmq-peer.js'), [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const ep = await new Promise<string>((resolve) => child.once('message', (m) => resolve(String(m))));
  const push = new z.Push({ heartbeatInterval: 50, heartbeatTimeout: 250, reconnectInterval: -1 });
  const errors: string[] = [];
  push.on('error', (e: Error & { code: string }) => errors.push(e.code));
  let connected = false;
  let disconnected = false;
  push.on('connect', () => { connected = true; });
  push.on('disconnect', () => { disconnected = true; });
  push.connect(ep);
  await until(() => connected, 5000, 'connect');
  await sleep(300);
  t.notOk(disconnected, 'alive while the peer answers');
  child.kill('SIGSTOP');
  const t0 = Date.now();
  await until(() => disconnected, 5000, 'heartbeat timeout');
  t.ok(Date.now() - t0 < 2000, `dropped ${Date.now() - t0} ms after the peer stopped`);
  t.same(errors, ['ERR_ZMTP_HEARTBEAT_TIMEOUT'], "'error' names the timeout");
  child.kill('SIGKILL');
  await push.close();
});
