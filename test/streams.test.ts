// socket.toDuplex(): stream.pipeline, async iteration, and TLS both ways
// (node's TLS client over an iomux socket, and an iomux server wrapped in a
// server-side TLSSocket for node's TLS client).
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as tls from 'node:tls';
import { closeServer, collectCopies, connected, echoServer, iomux, listen, openFds, settleFds, sleep, tempDir } from './helpers';

// A chunk of 16 KiB or more is a view of the loop's slab; a Duplex that
// buffers it (consumer slower than the socket) must still see its bytes
// intact after later reads.

const sha = (b: Buffer | Buffer[]) => {
  const h = createHash('sha256');
  for (const x of Array.isArray(b) ? b : [b]) h.update(x);
  return h.digest('hex');
};

/** A Readable of `data` in chunks of random sizes (1 B .. 128 KiB). */
function chunkedReadable(data: Buffer): Readable {
  return Readable.from((function* () {
    let off = 0;
    while (off < data.length) {
      const n = Math.min(1 + Math.floor(Math.random() * 128 * 1024), data.length - off);
      yield data.subarray(off, off + n);
      off += n;
    }
  })());
}

/** A Writable that hashes what it gets; `slow` makes it take its time (backpressure). */
function hashingWritable(slow: boolean): Writable & { digest: () => string; bytes: number } {
  const h = createHash('sha256');
  const w = new Writable({
    highWaterMark: slow ? 1024 : 16 * 1024,
    write(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      w.bytes += chunk.length;
      if (slow) setTimeout(cb, Math.random() < 0.1 ? 2 : 0);
      else cb();
    },
  }) as Writable & { digest: () => string; bytes: number };
  w.bytes = 0;
  w.digest = () => h.digest('hex');
  return w;
}

async function withEcho(t: Test): Promise<[number, iomux.Server]> {
  const server = echoServer();
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  return [port, server];
}

t.test('pipeline: 4 MiB Readable -> socket.toDuplex() -> echo server -> hashing Writable', async (t) => {
  const fds = openFds();
  const [port, server] = await withEcho(t);
  const data = randomBytes(4 * 1024 * 1024);
  const sock = iomux.connect(port, '127.0.0.1');
  const closed = once(sock, 'close');
  const sink = hashingWritable(false);
  await pipeline(chunkedReadable(data), sock.toDuplex(), sink);
  t.equal(sink.bytes, data.length, 'every byte came back');
  t.equal(sink.digest(), sha(data), 'sha256 of what came back equals what was sent');
  t.equal(sock.bytesWritten, data.length);
  t.equal(sock.bytesRead, data.length);
  await closed;
  t.equal(sock.destroyed, true, 'the socket closed after the pipeline');
  t.equal(sock.toDuplex(), sock.toDuplex(), 'toDuplex() is made once');
  await closeServer(server);
  t.equal(await settleFds(fds), fds, 'no fd left open');
});

t.test('pipeline into a slow Writable: the socket is paused while the stream buffer is full', async (t) => {
  const [port] = await withEcho(t);
  const data = randomBytes(4 * 1024 * 1024);
  const sock = iomux.connect(port, '127.0.0.1');
  let pauses = 0;
  const pause = sock.pause.bind(sock);
  sock.pause = () => { pauses++; return pause(); };
  const sink = hashingWritable(true);
  await pipeline(chunkedReadable(data), sock.toDuplex(), sink);
  t.equal(sink.bytes, data.length, 'every byte came back');
  t.ok(pauses > 0, 'the Duplex paused the socket (backpressure from the Writable)');
  t.equal(sink.digest(), sha(data), 'sha256 of what came back equals what was sent');
});

t.test('async iteration: for await (const chunk of socket)', async (t) => {
  const data = randomBytes(1024 * 1024 + 7);
  const server = iomux.createServer((s) => {
    s.end(data);
    s.resume();
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const sock = iomux.connect(port, '127.0.0.1');
  const h = createHash('sha256');
  let n = 0;
  let chunks = 0;
  let notBuffers = 0;
  for await (const chunk of sock) {
    if (!Buffer.isBuffer(chunk)) notBuffers++;
    h.update(chunk as Buffer);
    n += (chunk as Buffer).length;
    chunks++;
    if (chunks % 3 === 0) await sleep(1); // a slow consumer now and then
  }
  t.equal(notBuffers, 0, 'every chunk is a Buffer');
  t.ok(chunks > 1, 'several chunks');
  t.equal(n, data.length, 'every byte arrived');
  t.equal(h.digest('hex'), sha(data), 'sha256 matches');
  t.equal(sock.readableEnded, true);
});

t.test('async iteration of socket.toDuplex(), both directions over a unix socket', async (t) => {
  const dir = tempDir('iomux-streams-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'it.sock');
  const server = echoServer();
  server.listen(path);
  await once(server, 'listening');
  t.teardown(() => closeServer(server));
  const sock = iomux.connect(path);
  const d = sock.toDuplex();
  const data = randomBytes(512 * 1024);
  d.end(data);
  const got: Buffer[] = [];
  for await (const chunk of d) got.push(Buffer.from(chunk as Buffer));
  t.equal(sha(got), sha(data), 'the echo came back intact');
  t.equal(Buffer.concat(got).length, data.length);
});

t.test('breaking out of for await destroys the socket; the server sees it go', async (t) => {
  let serverSide: iomux.Socket | undefined;
  let resolveServerClosed!: () => void;
  const serverClosed = new Promise<void>((r) => { resolveServerClosed = r; });
  const server = iomux.createServer((s) => {
    serverSide = s;
    s.on('error', () => {});
    s.on('close', () => resolveServerClosed());
    // far more than the client will read
    const more = () => {
      while (!s.destroyed && s.write(Buffer.alloc(8192, 1)));
    };
    s.on('drain', more);
    more();
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const sock = iomux.connect(port, '127.0.0.1');
  const events: string[] = [];
  sock.on('error', (e: Error) => events.push(`error:${e.name}`));
  const clientClosed = new Promise<void>((resolve) => sock.on('close', (hadError: boolean) => {
    events.push(`close(${hadError})`);
    resolve();
  }));
  let n = 0;
  for await (const chunk of sock) {
    n += (chunk as Buffer).length;
    if (n >= 64 * 1024) break;
  }
  t.ok(n >= 64 * 1024, 'read until the break');
  await clientClosed;
  t.equal(sock.destroyed, true, 'break destroyed the socket');
  t.same(events, ['error:AbortError', 'close(true)'], "as node: the break destroys with an AbortError, then 'close'");
  await serverClosed;
  t.equal(serverSide!.destroyed, true, 'the server side closed too');
});

// ---- TLS -------------------------------------------------------------------------

interface Pem { key: Buffer; cert: Buffer }

let pem: Pem | string | undefined;

/** A throw-away self-signed certificate for CN=localhost, or why there is none. */
function selfSigned(): Pem | string {
  if (pem !== undefined) return pem;
  const probe = spawnSync('openssl', ['version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) {
    pem = `openssl is not available (${probe.error?.message ?? `exit ${probe.status}`}): cannot make a test certificate`;
    return pem;
  }
  const dir = tempDir('iomux-tls-');
  try {
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost',
      '-days', '1', '-keyout', key, '-out', cert], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`openssl req failed: ${r.stderr}`);
    pem = { key: readFileSync(key), cert: readFileSync(cert) };
    return pem;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

t.test('TLS client: tls.connect({ socket: sock.toDuplex() }) against node tls.createServer', async (t) => {
  const p = selfSigned();
  if (typeof p === 'string') {
    t.plan(0, p);
    return;
  }
  const fromClient = randomBytes(1024 * 1024);
  const fromServer = randomBytes(768 * 1024);
  let serverGot: Promise<Buffer> | undefined;
  const server = tls.createServer({ key: p.key, cert: p.cert }, (ts) => {
    const chunks: Buffer[] = [];
    serverGot = new Promise((resolve, reject) => {
      ts.on('data', (c: Buffer) => chunks.push(c));
      ts.on('end', () => resolve(Buffer.concat(chunks)));
      ts.on('error', reject);
    });
    ts.end(fromServer);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as { port: number }).port;

  const sock = iomux.connect(port, '127.0.0.1');
  await connected(sock);
  const sockClosed = once(sock, 'close');
  const ts = tls.connect({ socket: sock.toDuplex(), servername: 'localhost', ca: p.cert });
  await once(ts, 'secureConnect');
  t.equal(ts.authorized, true, 'the certificate checked out (CN=localhost, our CA)');
  t.ok(ts.getProtocol(), `negotiated ${ts.getProtocol()}`);
  const clientGot: Buffer[] = [];
  ts.on('data', (c: Buffer) => clientGot.push(c));
  const ended = once(ts, 'end');
  ts.end(fromClient);
  await ended;
  t.equal(sha(clientGot), sha(fromServer), 'the client got what the TLS server sent');
  t.equal(sha(await serverGot!), sha(fromClient), 'the TLS server got what the client sent');
  await sockClosed;
  t.ok(sock.bytesWritten > fromClient.length, 'the iomux socket carried the (larger) TLS records');
  t.ok(sock.bytesRead > fromServer.length);
});

const greeting = Buffer.from('hello from the iomux TLS server\n');

/** An iomux server whose connections are wrapped in server-side TLSSockets that greet, then echo. */
async function tlsEchoServer(t: Test, p: Pem, options: iomux.ServerOptions) {
  const state = { secured: 0, errors: [] as string[], sockets: [] as iomux.Socket[] };
  const server = iomux.createServer(options, (sock) => {
    state.sockets.push(sock);
    const ts = new tls.TLSSocket(sock.toDuplex(), { isServer: true, key: p.key, cert: p.cert });
    ts.on('secure', () => {
      state.secured++;
      ts.write(greeting);
    });
    ts.on('data', (d: Buffer) => ts.write(d)); // echo
    ts.on('end', () => ts.end());
    ts.on('error', (e: Error) => state.errors.push(e.message));
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  return { port, state };
}

function tlsClient(port: number, p: Pem) {
  const client = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: p.cert });
  const got: Buffer[] = [];
  client.on('data', (c: Buffer) => got.push(c));
  const errors: string[] = [];
  client.on('error', (e: Error) => errors.push(e.message));
  const closed = new Promise<void>((r) => client.on('close', () => r()));
  const received = () => Buffer.concat(got);
  return { client, received, errors, closed };
}

t.test('TLS server on iomux: new tls.TLSSocket(sock.toDuplex(), { isServer: true }) for node tls.connect', async (t) => {
  const p = selfSigned();
  if (typeof p === 'string') {
    t.plan(0, p);
    return;
  }
  const { port, state } = await tlsEchoServer(t, p, {});
  const { client, received, errors, closed } = tlsClient(port, p);
  await once(client, 'secureConnect');
  t.equal(client.authorized, true, 'node verified the iomux server certificate');
  const payload = randomBytes(2 * 1024 * 1024);
  client.write(payload);
  // both ways at once: wait for the whole echo before ending
  while (received().length < greeting.length + payload.length) await once(client, 'data');
  const all = received();
  t.equal(all.subarray(0, greeting.length).toString(), greeting.toString(), 'the greeting came first');
  t.equal(all.length, greeting.length + payload.length, 'exactly the echo came back');
  t.equal(sha(all.subarray(greeting.length)), sha(payload), 'the echo came back intact through TLS');
  client.end();
  await closed;
  t.equal(state.secured, 1, "the server TLSSocket emitted 'secure'");
  t.same(errors, [], 'no client error');
  t.same(state.errors, [], 'no server error');
  await sleep(20);
  t.equal(state.sockets[0]!.destroyed, true, 'the iomux socket closed');
  t.ok(state.sockets[0]!.bytesRead > payload.length, 'the iomux socket carried the TLS records');
});

// A client that end()s right after its last write: the TLS layer answers after
// the socket has read the FIN, so the socket must not end its own write side on
// that FIN (allowHalfOpen: true; TLS sends its own close_notify). With the
// default allowHalfOpen: false the tail of the echo would be lost, exactly as
// with a node net.Socket wrapped in a Duplex under a TLSSocket.
t.test('TLS server on iomux (allowHalfOpen): the client half-closes and still gets the whole echo', async (t) => {
  const p = selfSigned();
  if (typeof p === 'string') {
    t.plan(0, p);
    return;
  }
  const { port, state } = await tlsEchoServer(t, p, { allowHalfOpen: true });
  const { client, received, errors, closed } = tlsClient(port, p);
  await once(client, 'secureConnect');
  const payload = randomBytes(2 * 1024 * 1024);
  client.end(payload);
  await closed;
  const all = received();
  t.equal(all.length, greeting.length + payload.length, 'the whole echo came back after the client ended');
  t.equal(sha(all.subarray(greeting.length)), sha(payload), 'intact');
  t.same(errors, []);
  t.same(state.errors, []);
});
