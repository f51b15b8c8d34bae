// Echo round trips over IPv4, IPv6, the dual-stack default listener and unix
// domain sockets: several sizes, string writes with encodings, write
// callbacks, and exact byte counters on both ends.
import t, { type Test } from 'tap';
import { once } from 'node:events';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  closeServer, collect, collectCopies, connected, hasIPv6Loopback, iomux, listen, sleep, tempDir,
} from './helpers';

const SIZES: [string, number][] = [['1 byte', 1], ['64 KiB', 64 * 1024], ['1 MiB', 1024 * 1024]];

interface ServerEnd {
  socket: iomux.Socket;
  closed: Promise<void>;
}

/** An echo server that hands each accepted socket (and its close) to the test. */
function trackedEchoServer(): { server: iomux.Server; accepted: ServerEnd[]; next: () => Promise<ServerEnd> } {
  const accepted: ServerEnd[] = [];
  const waiters: ((e: ServerEnd) => void)[] = [];
  const server = iomux.createServer((s) => {
    const closed = new Promise<void>((resolve) => s.on('close', () => resolve()));
    s.on('data', (d: Buffer) => s.write(d));
    s.on('end', () => s.end());
    const e = { socket: s, closed };
    accepted.push(e);
    const w = waiters.shift();
    if (w) w(e);
  });
  let taken = 0;
  const next = (): Promise<ServerEnd> => {
    const i = taken++;
    if (i < accepted.length) return Promise.resolve(accepted[i]!);
    return new Promise((resolve) => waiters.push(resolve));
  };
  return { server, accepted, next };
}

type Connector = () => iomux.Socket;

/** One round trip of `payload` in a single write; checks data, callbacks and counters on both ends. */
async function roundTrip(t: Test, connect: Connector, next: () => Promise<ServerEnd>, payload: Buffer): Promise<void> {
  const c = connect();
  const clientClosed = once(c, 'close');
  const got = collectCopies(c);
  const cbErrors: (Error | null | undefined)[] = [];
  const ret = c.write(payload, (err) => cbErrors.push(err));
  t.type(ret, 'boolean', 'write() returns a boolean');
  c.end();
  const echoed = await got;
  const srv = await next();
  t.equal(echoed.length, payload.length, 'echoed length');
  t.ok(echoed.equals(payload), 'echoed bytes equal what was sent');
  await clientClosed;
  await srv.closed;
  t.same(cbErrors, [null], 'the write callback was called once, without error');
  t.equal(c.bytesWritten, payload.length, 'client bytesWritten');
  t.equal(c.bytesRead, payload.length, 'client bytesRead');
  t.equal(srv.socket.bytesRead, payload.length, 'server bytesRead');
  t.equal(srv.socket.bytesWritten, payload.length, 'server bytesWritten');
}

function sizeTests(t: Test, connect: (port: number | string) => iomux.Socket, listenOn: (s: iomux.Server) => Promise<number | string>) {
  for (const [name, size] of SIZES) {
    t.test(name, async (t) => {
      const { server, next } = trackedEchoServer();
      const where = await listenOn(server);
      t.teardown(() => closeServer(server));
      await roundTrip(t, () => connect(where), next, randomBytes(size));
      await closeServer(server);
    });
  }
}

t.test('IPv4 127.0.0.1', async (t) => {
  sizeTests(t, (port) => iomux.connect(port as number, '127.0.0.1'), (s) => listen(s, '127.0.0.1'));
});

t.test('IPv6 ::1', async (t) => {
  if (!(await hasIPv6Loopback())) {
    t.plan(0, 'this machine has no IPv6 loopback (node:net cannot bind ::1)');
    return;
  }
  sizeTests(t, (port) => iomux.connect(port as number, '::1'), (s) => listen(s, '::1'));
});

t.test('unix domain socket', async (t) => {
  const dir = tempDir('iomux-echo-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let n = 0;
  for (const [name, size] of SIZES) {
    t.test(name, async (t) => {
      const path = join(dir, `echo-${n++}.sock`);
      const { server, next } = trackedEchoServer();
      server.listen(path);
      await once(server, 'listening');
      t.teardown(() => closeServer(server));
      t.equal(server.address(), path, 'server.address() is the path');
      t.ok(existsSync(path), 'the socket file exists while listening');
      await roundTrip(t, () => iomux.connect(path), next, randomBytes(size));
      await closeServer(server);
      t.equal(server.address(), null, 'no address once closed');
      t.notOk(existsSync(path), 'the socket file is removed by close()');
    });
  }

  t.test('connect({ path }) and listen({ path })', async (t) => {
    const path = join(dir, 'opts.sock');
    const { server, next } = trackedEchoServer();
    server.listen({ path });
    await once(server, 'listening');
    t.teardown(() => closeServer(server));
    t.equal(server.address(), path);
    await roundTrip(t, () => iomux.connect({ path }), next, Buffer.from('over a path option'));
    await closeServer(server);
    t.notOk(existsSync(path), 'the socket file is removed by close()');
  });
});

t.test('dual-stack default listen(0) accepts a 127.0.0.1 client', async (t) => {
  const v6 = await hasIPv6Loopback();
  const { server, next } = trackedEchoServer();
  server.listen(0);
  await once(server, 'listening');
  t.teardown(() => closeServer(server));
  const a = server.address();
  if (a === null || typeof a === 'string') throw new Error('expected a TCP address');
  t.ok(a.port > 0, 'an ephemeral port was chosen');
  if (v6) t.same(a, { address: '::', family: 'IPv6', port: a.port }, 'bound to :: (dual stack)');
  else t.ok(a.address === '::' || a.address === '0.0.0.0', `bound to ${a.address} (no IPv6 loopback here)`);

  await roundTrip(t, () => iomux.connect(a.port, '127.0.0.1'), next, Buffer.from('dual stack over IPv4'));
  await closeServer(server);
});

t.test('dual-stack listener: peer address of an IPv4 client is IPv4-mapped, IPv6 clients work too', async (t) => {
  const v6 = await hasIPv6Loopback();
  const { server, next } = trackedEchoServer();
  server.listen(0);
  await once(server, 'listening');
  t.teardown(() => closeServer(server));
  const { port, address } = server.address() as iomux.AddressInfo;
  if (v6) t.equal(address, '::');

  const c4 = iomux.connect(port, '127.0.0.1');
  await connected(c4);
  const s4 = await next();
  if (address === '::') {
    t.equal(s4.socket.remoteAddress, '::ffff:127.0.0.1', 'IPv4-mapped address, as node reports it');
    t.equal(s4.socket.remoteFamily, 'IPv6');
  } else {
    t.equal(s4.socket.remoteAddress, '127.0.0.1');
    t.equal(s4.socket.remoteFamily, 'IPv4');
  }
  t.equal(s4.socket.remotePort, c4.localPort, 'remote port is the client local port');
  const got4 = collect(c4);
  c4.end('v4');
  t.equal((await got4).toString(), 'v4');

  if (v6) {
    const c6 = iomux.connect(port, '::1');
    const got6 = collect(c6);
    c6.end('v6');
    t.equal((await got6).toString(), 'v6', 'an IPv6 client of the same listener');
    const s6 = await next();
    t.equal(s6.socket.remoteAddress, '::1');
    t.equal(s6.socket.remoteFamily, 'IPv6');
  }
  await closeServer(server);
});

t.test('string writes with encodings; bytesWritten counts bytes, not characters', async (t) => {
  const { server, next } = trackedEchoServer();
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const parts: [string, BufferEncoding][] = [
    ['héllo wörld ✓ — 日本語 🎉', 'utf8'],
    ['deadbeef00ff', 'hex'],
    ['aGVsbG8gYmFzZTY0IQ==', 'base64'],
    ['ÿþýü latin1', 'latin1'],
    ['utf-16 ✓', 'utf16le'],
    ['plain ascii', 'ascii'],
    ['_-_-base64url', 'base64url'],
    // Near and past the length the core encodes itself (longer ones become Buffers).
    ['x✓'.repeat(10_000), 'utf8'],
    ['é'.repeat(30_000), 'utf8'],
    ['\u00ff\u0080'.repeat(15_000), 'latin1'],
  ];
  const expected = Buffer.concat([
    ...parts.map(([s, enc]) => Buffer.from(s, enc)),
    Buffer.from('no encoding: utf8 ✓'),
    Buffer.from([0, 1, 2, 255]),
    Buffer.from('fin €', 'utf8'),
  ]);
  const c = iomux.connect(port, '127.0.0.1');
  const got = collect(c);
  const order: number[] = [];
  parts.forEach(([s, enc], i) => c.write(s, enc, (err) => {
    t.equal(err ?? null, null, `callback ${i} without error`);
    order.push(i);
  }));
  c.write('no encoding: utf8 ✓', (err) => { t.equal(err ?? null, null); order.push(parts.length); });
  c.write(new Uint8Array([0, 1, 2, 255]), () => order.push(parts.length + 1));
  c.end('fin €', 'utf8');
  const echoed = await got;
  t.ok(echoed.equals(expected), 'the bytes of every encoding came back, in order');
  t.same(order, [...Array(parts.length + 2).keys()], 'every write callback was called, in order');
  t.equal(c.bytesWritten, expected.length, 'bytesWritten is the byte length');
  t.equal(c.bytesRead, expected.length, 'bytesRead');
  const srv = await next();
  await srv.closed;
  t.equal(srv.socket.bytesRead, expected.length);
  t.equal(srv.socket.bytesWritten, expected.length);
  await closeServer(server);
});

t.test('setEncoding: a multi-byte character split across packets is decoded whole', async (t) => {
  const euro = Buffer.from('€', 'utf8'); // 3 bytes
  const server = iomux.createServer(async (s) => {
    s.write(euro.subarray(0, 1));
    await sleep(30);
    s.write(euro.subarray(1, 2));
    await sleep(30);
    s.end(Buffer.concat([euro.subarray(2), Buffer.from('uro')]));
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = iomux.connect(port, '127.0.0.1');
  c.setEncoding('utf8');
  const closed = once(c, 'close');
  const chunks: unknown[] = [];
  c.on('data', (d) => chunks.push(d));
  await once(c, 'end');
  t.ok(chunks.every((x) => typeof x === 'string'), 'data events carry strings');
  t.equal(chunks.join(''), '€uro');
  t.notOk(chunks.some((x) => (x as string).includes('\ufffd')), 'no replacement character');
  t.equal(c.bytesRead, 6);
  await closed;
  await closeServer(server);
});

t.test("pause() holds data and 'end' until resume()", async (t) => {
  const payload = randomBytes(200 * 1024);
  const server = iomux.createServer((s) => {
    s.end(payload);
    s.resume();
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = iomux.connect(port, '127.0.0.1');
  c.pause();
  t.equal(c.isPaused(), true);
  const events: string[] = [];
  const chunks: Buffer[] = [];
  c.on('data', (d: Buffer) => { events.push('data'); chunks.push(Buffer.from(d)); });
  c.on('end', () => events.push('end'));
  const closed = once(c, 'close');
  await connected(c);
  await sleep(100); // time enough for everything (and the FIN) to arrive
  t.same(events, [], "no 'data' and no 'end' while paused");
  c.resume();
  await closed;
  t.equal(events[events.length - 1], 'end', "'end' after all the data");
  t.ok(events.length >= 2);
  t.ok(Buffer.concat(chunks).equals(payload), 'all the data, intact');
  t.equal(c.bytesRead, payload.length);
});

t.test('many writes before connect, several chunk sizes, one connection', async (t) => {
  const { server, next } = trackedEchoServer();
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = iomux.connect(port, '127.0.0.1');
  const got = collectCopies(c);
  const pieces = [1, 2, 3, 100, 4096, 16383, 16384, 16385, 65535, 65536, 65537, 300000].map((n) => randomBytes(n));
  let cbs = 0;
  for (const p of pieces) c.write(p, (err) => { if (!err) cbs++; });
  c.end();
  const all = Buffer.concat(pieces);
  const echoed = await got;
  t.equal(echoed.length, all.length);
  t.ok(echoed.equals(all), 'every piece came back in order, intact');
  t.equal(cbs, pieces.length, 'every write callback was called without error');
  const srv = await next();
  await srv.closed;
  t.equal(c.bytesWritten, all.length);
  t.equal(c.bytesRead, all.length);
  t.equal(srv.socket.bytesRead, all.length);
  t.equal(srv.socket.bytesWritten, all.length);
  await closeServer(server);
});

// Received Buffers of 16 KiB and more are views of the loop's slab (lib/loop.ts);
// its comments promise that a retained view stays valid (it pins the slab).

async function tcpPair(t: Test): Promise<[iomux.Socket, iomux.Socket]> {
  let accepted: iomux.Socket | undefined;
  const server = iomux.createServer((s) => { accepted = s; });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = iomux.connect(port, '127.0.0.1');
  await connected(c);
  while (accepted === undefined) await sleep(1);
  const s = accepted;
  t.teardown(() => { c.destroy(); s.destroy(); return closeServer(server); });
  return [c, s];
}

async function unixPair(t: Test): Promise<[iomux.Socket, iomux.Socket]> {
  const dir = tempDir('iomux-echo-');
  let accepted: iomux.Socket | undefined;
  const server = iomux.createServer((s) => { accepted = s; });
  server.listen(join(dir, 'keep.sock'));
  await once(server, 'listening');
  t.teardown(async () => { await closeServer(server); rmSync(dir, { recursive: true, force: true }); });
  const c = iomux.connect(join(dir, 'keep.sock'));
  await connected(c);
  while (accepted === undefined) await sleep(1);
  const s = accepted;
  t.teardown(() => { c.destroy(); s.destroy(); });
  return [c, s];
}

for (const [kind, pair] of [['127.0.0.1', tcpPair], ['unix', unixPair]] as const) {
  // A chunk of 16 KiB or more is a view of the slab: later reads must land
  // elsewhere while the application keeps it.
  t.test(`${kind}: a kept 32 KiB chunk is not overwritten by later reads`, async (t) => {
    const [c, s] = await pair(t);
    const got: Buffer[] = [];
    let wake: (() => void) | undefined;
    c.on('data', (d: Buffer) => { got.push(d); wake?.(); });
    const until = async (n: number) => {
      while (got.reduce((sum, b) => sum + b.length, 0) < n) await new Promise<void>((r) => { wake = r; });
    };
    const a = Buffer.alloc(32 * 1024, 'a');
    s.write(a);
    await until(a.length);
    const first = got.slice();
    const firstCopies = first.map((b) => Buffer.from(b));
    t.ok(firstCopies.every((b) => b.equals(a.subarray(0, b.length))), 'the first chunk was right when delivered');
    s.write('0123456789'); // a batch with no large chunk in it
    await until(a.length + 10);
    const b = Buffer.alloc(32 * 1024, 'b');
    s.write(b);
    await until(a.length + 10 + b.length);
    t.equal(Buffer.concat(got.slice(first.length)).toString('latin1'), '0123456789' + b.toString('latin1'),
      'later bytes right when delivered');
    t.ok(first.every((x, i) => x.equals(firstCopies[i]!)), 'the kept chunk still holds its bytes');
    t.equal(Buffer.concat(got).length, a.length + 10 + b.length);
  });
}

// A bulk flow gets the large slab (reads up to the core's 256 KiB cap), a
// batch of small reads brings the small one back; views kept from either
// stay intact across the switches.
t.test('kept chunks survive the switches between the small and the large slab', async (t) => {
  const [c, s] = await tcpPair(t);
  const got: Buffer[] = [];
  let wake: (() => void) | undefined;
  c.on('data', (d: Buffer) => { got.push(d); wake?.(); });
  let total = 0;
  const until = async (n: number) => {
    while (got.reduce((sum, b) => sum + b.length, 0) < n) await new Promise<void>((r) => { wake = r; });
  };
  const sent: Buffer[] = [];
  const send = async (b: Buffer) => {
    sent.push(b);
    s.write(b);
    total += b.length;
    await until(total);
  };
  let largest = 0;
  for (let round = 0; round < 6; round++) {
    await send(randomBytes(2 * 1024 * 1024));
    await send(Buffer.from(`small ${round}`));
    await send(randomBytes(20 * 1024));
  }
  const copies = got.map((b) => Buffer.from(b));
  for (const b of got) largest = Math.max(largest, b.length);
  t.ok(largest > 96 * 1024, `a bulk read larger than the small slab (${largest} bytes)`);
  t.ok(largest <= 256 * 1024, `no read above the core's cap (${largest} bytes)`);
  t.ok(Buffer.concat(got).equals(Buffer.concat(sent)), 'every byte in order');
  // Later reads, into whichever slab, must not touch what was kept.
  await send(randomBytes(2 * 1024 * 1024));
  t.ok(got.slice(0, copies.length).every((b, i) => b.equals(copies[i]!)), 'every kept chunk still holds its bytes');
});

t.test('write() then destroy() in the same handler still sends the bytes (as node:net does)', async (t) => {
  const server = iomux.createServer((s) => {
    s.on('data', () => {
      s.write('HELLO\n');
      s.destroy();
    });
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  for (let i = 0; i < 20; i++) {
    const c = iomux.connect(port, '127.0.0.1');
    const got = collectCopies(c);
    c.write('hi');
    t.equal((await got).toString(), 'HELLO\n', `round ${i}`);
  }
});

t.test('destroySoon() ends, then closes once flushed', async (t) => {
  const server = iomux.createServer((s) => s.on('data', () => s.destroySoon()).on('end', () => {}));
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = iomux.connect(port, '127.0.0.1');
  const closed = new Promise<boolean>((r) => server.once('connection', (s: iomux.Socket) => s.on('close', () => r(s.writableFinished))));
  const got = collectCopies(c);
  c.write('x');
  await got;
  t.equal(await closed, true, 'the server socket closed after finishing');
});
