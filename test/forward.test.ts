// forward(): a TCP relay whose bytes never reach JavaScript. Client and
// backend are node:net sockets (so the iomux loop's counters are the relay's
// alone); the relay accepts with an iomux server, connects to the backend
// with iomux.connect() and joins the two with iomux.forward().
import t from 'tap';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { closeServer, iomux, listen, openFds, settleFds, sleep, statsDelta, waitFor } from './helpers';

const MiB = 1024 * 1024;
const POOL = randomBytes(MiB);
const linux = process.platform === 'linux';
const emulated = process.env.IOMUX_BACKEND === 'kqueue-emulated';

/** Promise.withResolvers(), which node 20 lacks. */
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => { resolve = r; });
  return { promise, resolve };
}

/** A node:net server on 127.0.0.1; resolves to [server, port]. */
async function netServer(onConn: (s: net.Socket) => void): Promise<[net.Server, number]> {
  const srv = net.createServer({ allowHalfOpen: true }, onConn);
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  return [srv, (srv.address() as net.AddressInfo).port];
}

function netClose(srv: net.Server): Promise<void> {
  return new Promise((resolve) => srv.close(() => resolve()));
}

/** Writes `total` bytes (POOL, repeated) with backpressure, then FIN; resolves to their sha256. */
async function sendBulk(s: net.Socket, total: number): Promise<string> {
  const h = createHash('sha256');
  for (let sent = 0; sent < total; sent += POOL.length) {
    const chunk = POOL.subarray(0, Math.min(POOL.length, total - sent));
    h.update(chunk);
    if (!s.write(chunk)) await once(s, 'drain');
  }
  s.end();
  return h.digest('hex');
}

/** Everything until 'end': [byte count, sha256]. */
function hashAll(s: net.Socket): Promise<[number, string]> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    let n = 0;
    s.on('data', (d: Buffer) => { n += d.length; h.update(d); });
    s.on('end', () => resolve([n, h.digest('hex')]));
    s.on('error', reject);
  });
}

interface Relay {
  server: iomux.Server;
  port: number;
  results: Promise<iomux.ForwardResult>[];
  pairs: [iomux.Socket, iomux.Socket][];
  closes: number;
}

/** An iomux relay to backendPort: each accepted socket is forwarded to a fresh connection. */
async function relay(backendPort: number, options: iomux.ForwardOptions = {},
  onAccept?: (client: iomux.Socket, upstream: iomux.Socket) => Promise<iomux.ForwardResult>): Promise<Relay> {
  const r: Relay = { server: undefined as unknown as iomux.Server, port: 0, results: [], pairs: [], closes: 0 };
  r.server = iomux.createServer((client) => {
    const upstream = iomux.connect(backendPort, '127.0.0.1');
    client.on('close', () => r.closes++);
    upstream.on('close', () => r.closes++);
    client.on('error', () => {});
    upstream.on('error', () => {});
    r.pairs.push([client, upstream]);
    const p = onAccept ? onAccept(client, upstream) : iomux.forward(client, upstream, options);
    // A forwarding that could not start (the backend refused, say) must fail
    // the test, not leave the client waiting.
    p.catch((err: Error) => {
      console.error('# forward() rejected:', err);
      client.destroy();
      upstream.destroy();
    });
    r.results.push(p);
  });
  r.port = await listen(r.server);
  return r;
}

t.test('64 MiB each way through the relay, checksummed; splice for the bulk', async (t) => {
  const total = 64 * MiB;
  let backendSent: Promise<string> | undefined;
  let backendGot: Promise<[number, string]> | undefined;
  const [backend, bport] = await netServer((s) => {
    backendGot = hashAll(s);
    backendSent = sendBulk(s, total);
  });
  const r = await relay(bport);
  // Half-open allowed: the client must keep sending after the backend's
  // stream (and FIN) reached it first.
  const client = net.connect({ port: r.port, host: '127.0.0.1', allowHalfOpen: true });
  client.setNoDelay(true);
  await once(client, 'connect');
  // Counted from the moment the relay forwards, so that every byte below is
  // a forwarded one (the backend starts sending at once: what reached the
  // relay before forward() was read by it, and written on, legitimately).
  t.ok(await waitFor(() => r.pairs[0]?.[0].forwarding === true, 10000), 'forwarding');
  await sleep(20);
  const delta = statsDelta();
  const start = Date.now();
  const clientGot = hashAll(client);
  const clientSent = await sendBulk(client, total);
  const [[nc, hc], [nb, hb]] = await Promise.all([clientGot, backendGot!]);
  const res = await r.results[0]!;
  const d = delta();
  t.comment(`${Date.now() - start} ms; relay syscalls: ${JSON.stringify({ splice: d.splice, read: d.read, write: d.write, writev: d.writev, wait: d.wait, pipe: d.pipe, sigmask: d.sigmask })}`);
  t.equal(nb, total, 'the backend got every byte');
  t.equal(hb, clientSent, 'client -> backend intact');
  t.equal(nc, total, 'the client got every byte');
  t.equal(hc, await backendSent!, 'backend -> client intact');
  t.same(res, { bytesAtoB: total, bytesBtoA: total, reason: 'done' });
  if (linux) {
    // Two splices (in, out) a pipe's worth at a time, each way: about 4 per 64 KiB.
    t.ok(d.splice! >= total / (64 * 1024), 'splice(2) moved the bytes');
    // Each direction copies its first 16 KiB buffer, then splices.
    t.ok(d.read! <= 8, `bulk bytes go by splice, not read() (${d.read} reads)`);
    t.ok((d.write ?? 0) + (d.writev ?? 0) <= 8, `nor write() (${(d.write ?? 0) + (d.writev ?? 0)} writes)`);
    t.equal(d.sigmask, 0, 'SIGPIPE is ignored by node: no masking');
  }
  await sleep(10);
  t.equal(r.closes, 2, 'both sockets emitted close');
  client.destroy();
  await closeServer(r.server);
  await netClose(backend);
});

t.test('the copy path (read/send through a buffer), 8 MiB each way', async (t) => {
  const total = 8 * MiB;
  let backendSent: Promise<string> | undefined;
  let backendGot: Promise<[number, string]> | undefined;
  const [backend, bport] = await netServer((s) => {
    backendGot = hashAll(s);
    backendSent = sendBulk(s, total);
  });
  const r = await relay(bport, { copy: true, highWaterMark: 32 * 1024 });
  const delta = statsDelta();
  const client = net.connect({ port: r.port, host: '127.0.0.1', allowHalfOpen: true });
  await once(client, 'connect');
  const clientGot = hashAll(client);
  const clientSent = await sendBulk(client, total);
  const [[nc, hc], [nb, hb]] = await Promise.all([clientGot, backendGot!]);
  const res = await r.results[0]!;
  const d = delta();
  t.equal(nb, total);
  t.equal(hb, clientSent);
  t.equal(nc, total);
  t.equal(hc, await backendSent!);
  t.same(res, { bytesAtoB: total, bytesBtoA: total, reason: 'done' });
  t.equal(d.splice, 0, 'no splice');
  t.ok(d.read! > 0, 'read() did the work');
  client.destroy();
  await closeServer(r.server);
  await netClose(backend);
});

t.test('half-close, each direction first', async (t) => {
  for (const clientFirst of [true, false]) {
    const [backend, bport] = await netServer((s) => {
      let got = '';
      s.setEncoding('utf8');
      s.on('data', (d: string) => { got += d; });
      if (clientFirst) {
        s.on('end', () => s.end(`world after ${got}`));
      } else {
        s.end('first');
        s.on('end', () => s.destroy());
        s.on('close', () => backendGot.resolve(got));
      }
    });
    const backendGot = deferred<string>();
    const r = await relay(bport);
    const client = net.connect({ port: r.port, host: '127.0.0.1', allowHalfOpen: true });
    await once(client, 'connect');
    let got = '';
    client.setEncoding('utf8');
    client.on('data', (d: string) => { got += d; });
    if (clientFirst) {
      client.end('hello');
      await once(client, 'end');
      t.equal(got, 'world after hello', 'the client FIN reached the backend; the answer came after it');
    } else {
      await once(client, 'end');
      t.equal(got, 'first', 'the backend FIN reached the client');
      await sleep(20);
      client.end('later'); // the client -> backend direction still flows
      t.equal(await backendGot.promise, 'later');
    }
    const res = await r.results[0]!;
    t.equal(res.reason, 'done');
    t.equal(res.bytesAtoB, clientFirst ? 5 : 5);
    client.destroy();
    await closeServer(r.server);
    await netClose(backend);
  }
});

t.test('a reset on either side resets the other; no fd is left', async (t) => {
  for (const side of ['backend', 'client'] as const) {
    let backendSock: net.Socket | undefined;
    const backendErr = deferred<string>();
    const [backend, bport] = await netServer((s) => {
      backendSock = s;
      s.on('error', (e: NodeJS.ErrnoException) => backendErr.resolve(e.code ?? 'error'));
      s.on('close', () => backendErr.resolve('close'));
      s.write('ready');
    });
    const r = await relay(bport);
    const fds0 = openFds();
    const client = net.connect(r.port, '127.0.0.1');
    const clientErr = deferred<string>();
    client.on('error', (e: NodeJS.ErrnoException) => clientErr.resolve(e.code ?? 'error'));
    client.on('close', () => clientErr.resolve('close'));
    await once(client, 'data'); // 'ready': the forwarding is up
    client.write('x'.repeat(1000));
    await sleep(20);
    if (side === 'backend') backendSock!.resetAndDestroy();
    else client.resetAndDestroy();
    const res = await r.results[0]!;
    t.equal(res.reason, side === 'backend' ? 'resetB' : 'resetA');
    t.match((res.error as NodeJS.ErrnoException | undefined)?.code, /ECONNRESET|EPIPE/);
    if (side === 'backend') t.equal(await clientErr.promise, 'ECONNRESET', 'the client sees the reset');
    else t.equal(await backendErr.promise, 'ECONNRESET', 'the backend sees the reset');
    await sleep(10);
    t.equal(r.closes, 2);
    client.destroy();
    await closeServer(r.server);
    await netClose(backend);
    t.ok(await settleFds(fds0) <= fds0, 'no fd leaked');
  }
});

t.test('idle timeout: no byte either way ends it, both peers reset', async (t) => {
  const [backend, bport] = await netServer((s) => {
    s.on('error', () => {});
    s.on('data', (d) => s.write(d));
  });
  const r = await relay(bport, { idleTimeout: 100 });
  const client = net.connect(r.port, '127.0.0.1');
  const clientErr = deferred<string>();
  client.on('error', (e: NodeJS.ErrnoException) => clientErr.resolve(e.code ?? 'error'));
  client.on('close', () => clientErr.resolve('close'));
  await once(client, 'connect');
  let last = 0;
  for (let i = 0; i < 5; i++) { // traffic every 40 ms keeps it alive
    client.write('k');
    last = Date.now();
    await sleep(40);
  }
  const res = await r.results[0]!;
  const waited = Date.now() - last;
  t.equal(res.reason, 'timeout');
  t.equal((res.error as NodeJS.ErrnoException).code, 'ETIMEDOUT');
  t.equal(res.bytesAtoB, 5);
  t.equal(res.bytesBtoA, 5);
  t.ok(waited >= 95, `ended ${waited} ms after the last byte (idle 100 ms)`);
  t.equal(await clientErr.promise, 'ECONNRESET');
  await closeServer(r.server);
  await netClose(backend);
});

t.test('bytes read before forward() go first; the sockets are the core\'s', async (t) => {
  const backendGot = deferred<string>();
  const [backend, bport] = await netServer((s) => {
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => { got += d; });
    s.on('end', () => { backendGot.resolve(got); s.end(); });
  });
  let refused: unknown;
  const r = await relay(bport, {}, async (client, upstream) => {
    // A relay that looks at the first chunk before it decides, as a proxy
    // reading a request line would.
    const [first] = (await once(client, 'data')) as [Buffer];
    client.pause();
    await sleep(30); // more arrives meanwhile: kept in the socket (pendingChunks)
    upstream.write(first);
    const p = iomux.forward(client, upstream);
    await sleep(0);
    try { client.write('no'); } catch (e) { refused = e; }
    return p;
  });
  const client = net.connect(r.port, '127.0.0.1');
  await once(client, 'connect');
  client.write('HEAD|');
  await sleep(10);
  client.write('second|');
  client.write('third|');
  await sleep(60);
  client.end('after');
  t.equal(await backendGot.promise, 'HEAD|second|third|after', 'in order, nothing lost');
  const res = await r.results[0]!;
  t.equal(res.reason, 'done');
  t.equal(res.bytesAtoB, 'second|third|after'.length, 'what forward() moved');
  t.equal((refused as { code?: string } | undefined)?.code, 'ERR_IOMUX_FORWARDING');
  client.destroy();
  await closeServer(r.server);
  await netClose(backend);
});

t.test('200 concurrent forwarded connections', async (t) => {
  const N = 200, SIZE = 64 * 1024;
  const [backend, bport] = await netServer((s) => {
    s.on('data', (d) => s.write(d));
    s.on('end', () => s.end());
    s.on('error', () => {});
  });
  const r = await relay(bport);
  const fds0 = openFds();
  const one = async (i: number): Promise<boolean> => {
    const c = net.connect(r.port, '127.0.0.1');
    await once(c, 'connect');
    const payload = Buffer.alloc(SIZE, i & 0xff);
    const got = hashAll(c);
    c.end(payload);
    const [n, h] = await got;
    c.destroy();
    return n === SIZE && h === createHash('sha256').update(payload).digest('hex');
  };
  const ok = await Promise.all(Array.from({ length: N }, (_, i) => one(i)));
  t.equal(ok.filter(Boolean).length, N, 'every connection echoed intact');
  const results = await Promise.all(r.results);
  t.equal(results.length, N);
  t.equal(results.filter((x) => x.reason === 'done' && x.bytesAtoB === SIZE && x.bytesBtoA === SIZE).length, N);
  await sleep(10);
  t.equal(r.closes, 2 * N);
  await closeServer(r.server);
  await netClose(backend);
  t.ok(await settleFds(fds0) <= fds0, 'no fd leaked');
});

t.test('argument checks', async (t) => {
  const s = new iomux.Socket();
  await t.rejects(iomux.forward(s, s), { code: 'ERR_INVALID_ARG_VALUE' });
  await t.rejects(iomux.forward(s, {} as iomux.Socket), { code: 'ERR_INVALID_ARG_TYPE' });
  await t.rejects(iomux.forward(s, new iomux.Socket(), { idleTimeout: -1 }), { code: 'ERR_OUT_OF_RANGE' });
  await t.rejects(iomux.forward(s, new iomux.Socket()), { code: 'ERR_STREAM_DESTROYED' });
  t.comment(emulated ? 'kqueue emulated' : `backend ${iomux.loop.backend}`);
});
