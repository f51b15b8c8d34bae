// serveNode(): node's own http.Server on iomux sockets, driven by node's http
// client, by undici, and by raw sockets (pipelining, partial heads, resets).
import t, { type Test } from 'tap';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { join } from 'node:path';
import { Client } from 'undici';
import { NodeSocket, serveNode } from '../dist/http/node';
import { closeServer, iomux, openFds, settleFds, sleep, statsDelta, tempDir, waitFor } from './helpers';

const fdsAtStart = openFds();

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** p, or a rejection naming what did not happen within ms (a hang fails fast). */
function within<T>(p: Promise<T>, what: string, ms = 5000): Promise<T> {
  let timer: NodeJS.Timeout;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

interface Served {
  port: number;
  node: http.Server;
  server: iomux.Server;
  /** Every socket the node server was given, in order. */
  sockets: NodeSocket[];
  /** The iomux sockets underneath, in the same order. */
  raw: iomux.Socket[];
  /** How many times the node server emitted 'listening'. */
  listenings: () => number;
}

/** A node http.Server served by iomux on 127.0.0.1; torn down with the test. */
async function serve(t: Test, handler: http.RequestListener, options: http.ServerOptions = {}): Promise<Served> {
  const node = http.createServer(options, handler);
  const sockets: NodeSocket[] = [];
  const raw: iomux.Socket[] = [];
  let listenings = 0;
  node.on('listening', () => listenings++);
  node.on('connection', (s: NodeSocket) => sockets.push(s));
  const server = serveNode(node);
  server.on('connection', (s: iomux.Socket) => raw.push(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const a = server.address();
  if (a === null || typeof a === 'string') throw new Error('not a TCP server');
  t.teardown(async () => {
    node.closeAllConnections();
    await closeServer(server);
  });
  return { port: a.port, node, server, sockets, raw, listenings: () => listenings };
}

interface Reply { status: number; headers: http.IncomingHttpHeaders; body: Buffer; socket: net.Socket }

/** One request with node's http client; resolves with the whole response. */
function request(port: number, opts: http.RequestOptions & { body?: Buffer } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, ...opts }, (res) => {
      const chunks: Buffer[] = [];
      const socket = res.socket as net.Socket; // a keep-alive agent takes it back at 'end'
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks), socket }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** A raw node:net client: everything it receives until the server closes. */
function rawClient(port: number) {
  const sock = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  sock.on('data', (c: Buffer) => chunks.push(c));
  const errors: string[] = [];
  sock.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
  const closed = new Promise<void>((r) => sock.on('close', () => r()));
  return { sock, text: () => Buffer.concat(chunks).toString('latin1'), closed, errors };
}

t.test('GET: the handler sees the addresses iomux kept, at no syscall; the node server looks listening', async (t) => {
  const seen: Record<string, unknown>[] = [];
  const { port, node, server, sockets, listenings } = await serve(t, (req, res) => {
    const s = req.socket as NodeSocket;
    // the calls node's http, Express and friends make must not throw
    s.setNoDelay(true);
    s.setKeepAlive(true, 1000);
    s.setKeepAlive(true, 1000);
    s.ref();
    seen.push({
      remoteAddress: s.remoteAddress, remotePort: s.remotePort, remoteFamily: s.remoteFamily,
      localAddress: s.localAddress, localPort: s.localPort, localFamily: s.localFamily,
      address: s.address(), readyState: s.readyState, same: req.socket === res.socket,
    });
    res.setHeader('content-type', 'text/plain');
    res.end(`hello ${req.method} ${req.url}`);
  });
  t.equal(listenings(), 1, "the node server emitted 'listening' once");
  t.equal(node.listening, true, 'node server: listening');
  t.same(node.address(), server.address(), "node server's address() is the iomux listener's");

  const delta = statsDelta();
  const r = await request(port, { path: '/a?b=c', agent: false });
  t.equal(r.status, 200);
  t.equal(r.body.toString(), 'hello GET /a?b=c');
  t.equal(r.headers['content-type'], 'text/plain');
  t.equal(sockets.length, 1);
  t.ok(sockets[0] instanceof NodeSocket, 'req.socket is a NodeSocket');
  t.same(seen[0], {
    remoteAddress: '127.0.0.1', remotePort: r.socket.localPort, remoteFamily: 'IPv4',
    localAddress: '127.0.0.1', localPort: port, localFamily: 'IPv4',
    address: { address: '127.0.0.1', family: 'IPv4', port }, readyState: 'open', same: true,
  }, "the client's addresses, seen from the server");
  const d = delta();
  t.equal(d.getpeername, 0, 'no getpeername');
  t.equal(d.getsockname, 0, 'no getsockname: the local address is the listener\'s');
});

t.test('a dual-stack listener: the local address comes from iomux (one getsockname)', async (t) => {
  const node = http.createServer((req, res) => {
    const s = req.socket as NodeSocket;
    res.end(JSON.stringify([s.localAddress, s.localPort, s.remoteAddress, s.localAddress, s.localPort]));
  });
  const server = serveNode(node).listen(0);
  await once(server, 'listening');
  t.teardown(() => closeServer(server));
  const port = (server.address() as iomux.AddressInfo).port;
  const delta = statsDelta();
  const r = await request(port, { agent: false });
  const [local, localPort, remote, local2, localPort2] = JSON.parse(r.body.toString()) as [string, number, string, string, number];
  t.equal(localPort, port);
  t.ok(local === '::ffff:127.0.0.1' || local === '127.0.0.1', `local address ${local}`);
  t.equal(remote, local, 'the peer is the client, on the same loopback address');
  t.equal(local2, local, 'the same when asked twice');
  t.equal(localPort2, localPort);
  t.equal(delta().getsockname, 1, 'one getsockname for the connection, then cached');
});

t.test('a listener on a hostname: the node server listens once the lookup is done', async (t) => {
  const node = http.createServer((req, res) => res.end(req.url));
  let listenings = 0;
  node.on('listening', () => listenings++);
  const server = serveNode(node).listen(0, 'localhost');
  t.teardown(() => closeServer(server));
  await once(server, 'listening');
  t.equal(listenings, 1, "the node server's 'listening'");
  const a = node.address() as iomux.AddressInfo;
  t.same(a, server.address());
  const r = await request(a.port, { host: a.address, path: '/x', agent: false });
  t.equal(r.body.toString(), '/x');
});

t.test('POST of 8 MiB, consumed slowly: checksum intact, and the upload was paused (TCP backpressure)', async (t) => {
  const body = randomBytes(8 * 1024 * 1024);
  const { port, server } = await serve(t, (req, res) => {
    const h = createHash('sha256');
    let n = 0;
    let chunks = 0;
    req.on('data', (c: Buffer) => {
      h.update(c);
      n += c.length;
      // a slow consumer now and then
      if (++chunks % 16 === 0) {
        req.pause();
        setTimeout(() => req.resume(), 2);
      }
    });
    req.on('end', () => res.end(JSON.stringify({ n, sha: h.digest('hex') })));
  });
  let pauses = 0;
  server.on('connection', (s: iomux.Socket) => {
    const pause = s.pause.bind(s);
    s.pause = () => { pauses++; return pause(); };
  });
  const r = await within(new Promise<Reply>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', agent: false, headers: { 'content-length': body.length } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks), socket: res.socket as net.Socket }));
    });
    req.on('error', reject);
    // in pieces, as a client streaming a file would
    let off = 0;
    const more = () => {
      while (off < body.length) {
        const piece = body.subarray(off, off + 256 * 1024);
        off += piece.length;
        if (!req.write(piece)) return void req.once('drain', more);
      }
      req.end();
    };
    more();
  }), 'the upload and its answer', 15000);
  t.equal(r.status, 200);
  t.same(JSON.parse(r.body.toString()), { n: body.length, sha: sha(body) }, 'the server hashed exactly what was sent');
  t.ok(pauses > 0, `the iomux socket stopped reading while the handler lagged (${pauses} pauses)`);
});

t.test('chunked download of 16 MiB to a slow undici reader: bounded queue, drains, intact', async (t) => {
  const data = randomBytes(16 * 1024 * 1024);
  let drains = 0;
  let maxQueued = 0;
  const { port, raw } = await serve(t, (_req, res) => {
    const sock = raw[raw.length - 1]!;
    let off = 0;
    const more = () => {
      while (off < data.length) {
        const piece = data.subarray(off, off + 64 * 1024);
        off += piece.length;
        maxQueued = Math.max(maxQueued, sock.writableLength);
        if (!res.write(piece)) {
          drains++;
          return void res.once('drain', more);
        }
      }
      res.end();
    };
    more();
  });
  const client = new Client(`http://127.0.0.1:${port}`);
  t.teardown(() => client.close());
  const { statusCode, headers, body } = await client.request({ path: '/big', method: 'GET' });
  t.equal(statusCode, 200);
  t.equal(headers['transfer-encoding'], 'chunked', 'a chunked response');
  const h = createHash('sha256');
  let n = 0;
  let chunks = 0;
  await within((async () => {
    for await (const chunk of body) {
      h.update(chunk as Buffer);
      n += (chunk as Buffer).length;
      if (++chunks % 8 === 0) await sleep(1);
    }
  })(), 'the whole download', 15000);
  t.equal(n, data.length, 'every byte');
  t.equal(h.digest('hex'), sha(data), 'sha256 matches');
  t.ok(drains > 0, `res.write() asked to wait, and 'drain' came (${drains} times)`);
  t.ok(maxQueued <= 1024 * 1024, `the iomux socket never queued more than 1 MiB (max ${maxQueued} B)`);
});

t.test('keep-alive: node Agent and undici reuse one connection for many requests', async (t) => {
  const { port, sockets } = await serve(t, (req, res) => res.end(`#${req.url}`));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const clientPorts = new Set<number>();
  for (let i = 0; i < 10; i++) {
    const r = await request(port, { path: `/${i}`, agent });
    t.equal(r.body.toString(), `#/${i}`);
    t.equal(r.headers.connection, 'keep-alive');
    clientPorts.add(r.socket.localPort!);
  }
  t.equal(sockets.length, 1, 'the node server saw 1 connection for 10 node:http requests');
  t.equal(clientPorts.size, 1, 'the client used one socket');

  const client = new Client(`http://127.0.0.1:${port}`);
  t.teardown(() => client.close());
  for (let i = 0; i < 10; i++) {
    const { body } = await client.request({ path: `/u${i}`, method: 'GET' });
    t.equal(await body.text(), `#/u${i}`);
  }
  t.equal(sockets.length, 2, 'one more connection for 10 undici requests');
});

t.test('pipelining: undici with pipelining 3, and three requests in one write from a raw socket', async (t) => {
  let order = 0;
  const { port, sockets } = await serve(t, (req, res) => {
    const n = ++order;
    // the first answers last: responses must still come in request order
    const delay = req.url === '/slow' ? 30 : 0;
    setTimeout(() => res.end(`${req.url} ${n}`), delay);
  });
  const client = new Client(`http://127.0.0.1:${port}`, { pipelining: 3 });
  t.teardown(() => client.close());
  const replies = await Promise.all(['/slow', '/b', '/c'].map(async (path) => {
    const { body } = await client.request({ path, method: 'GET' });
    return body.text();
  }));
  t.same(replies, ['/slow 1', '/b 2', '/c 3'], 'undici: in order');
  t.equal(sockets.length, 1, 'over one connection');

  const c = rawClient(port);
  await once(c.sock, 'connect');
  c.sock.write(
    'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n' +
    'POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello' +
    'GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  await within(c.closed, 'the server closing after the last response');
  const text = c.text();
  const bodies = [...text.matchAll(/\r\n\r\n([^\r]*?)(?=HTTP\/1\.1 |$)/g)].map((m) => m[1]);
  t.same(bodies, ['/slow 4', '/p 5', '/last 6'], 'three responses, in request order');
  t.equal(text.match(/HTTP\/1\.1 200 OK/g)?.length, 3);
  t.match(text, /Connection: close/, 'the last one closes');
  t.same(c.errors, []);
  t.equal(sockets.length, 2);
});

t.test('timeouts: server.setTimeout, keepAliveTimeout and headersTimeout', async (t) => {
  t.test('server.setTimeout(ms, cb): an idle request times out, cb gets the socket', async (t) => {
    const { port, node } = await serve(t, () => { /* never answers */ });
    const timedOut: unknown[] = [];
    node.setTimeout(150, (s: NodeSocket) => {
      timedOut.push(s);
      s.destroy();
    });
    const start = Date.now();
    const err = await request(port, { agent: false }).then(() => null, (e: NodeJS.ErrnoException) => e);
    const took = Date.now() - start;
    t.equal(err?.code, 'ECONNRESET', 'the client saw the server hang up');
    t.equal(timedOut.length, 1);
    t.ok(timedOut[0] instanceof NodeSocket);
    t.ok(took >= 140, `not before the timeout (${took} ms)`);
  });

  t.test('socket.setTimeout(ms) again with the same ms restarts the idle time, with or without a write just before', async (t) => {
    let socket: NodeSocket | null = null;
    const { port, node } = await serve(t, (req) => { socket = req.socket as NodeSocket; });
    node.on('timeout', () => { /* a listener: node leaves the timed-out socket open */ });
    const c = rawClient(port);
    c.sock.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor(() => socket !== null);
    const s = socket as unknown as NodeSocket;
    const fired: number[] = [];
    s.on('timeout', () => fired.push(Date.now()));
    // No I/O between the two calls: the second one must push the deadline back.
    s.setTimeout(300);
    await sleep(200);
    const second = Date.now();
    s.setTimeout(300);
    await waitFor(() => fired.length === 1, 3000);
    t.ok(fired[0]! - second >= 290, `the second call restarted it (${fired[0]! - second} ms after it)`);
    // A write, then the same value again at once (what node's http does after a
    // response): the idle time runs from the write.
    await sleep(100);
    s.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
    const wrote = Date.now();
    s.setTimeout(300);
    await waitFor(() => fired.length === 2, 3000);
    t.ok(fired[1]! - wrote >= 290, `not before the idle time after the write (${fired[1]! - wrote} ms)`);
    t.ok(fired[1]! - wrote < 2000, 'and then it fired');
    await waitFor(() => c.text().includes('200 OK'));
    c.sock.destroy();
  });

  t.test('keepAliveTimeout: an idle keep-alive connection is closed by the server', async (t) => {
    const { port, node, sockets } = await serve(t, (_req, res) => res.end('ok'));
    node.keepAliveTimeout = 50; // node adds 1 s of margin to the socket timeout
    const c = rawClient(port);
    c.sock.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    const start = Date.now();
    await waitFor(() => c.text().endsWith('ok'), 5000);
    t.match(c.text(), /Keep-Alive: timeout=0/i, 'advertised');
    await within(c.closed, 'the server closing the idle connection');
    const took = Date.now() - start;
    t.ok(took >= 900, `the connection stayed open for the keep-alive time (${took} ms)`);
    t.ok(took < 8000, 'and was then closed by the server');
    t.equal(sockets[0]!.destroyed, true);
    t.equal(sockets[0]!.timeout, 1050, "node set the socket's timeout");
  });

  t.test('headersTimeout: a head that never completes gets 408', async (t) => {
    const { port } = await serve(t, (_req, res) => res.end('ok'),
      { headersTimeout: 200, requestTimeout: 400, connectionsCheckingInterval: 25 } as http.ServerOptions);
    const c = rawClient(port);
    const start = Date.now();
    c.sock.write('GET / HTTP/1.1\r\nHost: x\r\n'); // no empty line
    await within(c.closed, 'the 408 and close');
    const took = Date.now() - start;
    t.match(c.text(), /^HTTP\/1\.1 408 Request Timeout/, "node's connection checks ran: 408");
    t.ok(took >= 180, `after headersTimeout (${took} ms)`);
  });
});

t.test('closing: node close() / closeIdleConnections() / closeAllConnections(), and the iomux server', async (t) => {
  t.test('node server close(): stops iomux accepting, closes idle connections, waits for the busy one', async (t) => {
    let release!: () => void;
    const held = new Promise<void>((r) => { release = r; });
    const { port, node, server, sockets } = await serve(t, (req, res) => {
      if (req.url === '/hold') void held.then(() => res.end('late'));
      else res.end('quick');
    });
    const agent = new http.Agent({ keepAlive: true });
    t.teardown(() => agent.destroy());
    await request(port, { agent }); // leaves one idle keep-alive connection
    const busy = request(port, { path: '/hold', agent: false });
    await waitFor(() => sockets.length === 2);
    const events: string[] = [];
    node.on('close', () => events.push('node close'));
    server.on('close', () => events.push('iomux close'));
    let closeErr: unknown = 'not called';
    node.close((err) => { closeErr = err; });
    t.equal(node.listening, false);
    t.equal(server.listening, false, 'the iomux server stopped listening');
    const refused = await new Promise<string>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.on('connect', () => { s.destroy(); resolve('connected'); });
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    t.equal(refused, 'ECONNREFUSED', 'new connections are refused');
    await waitFor(() => sockets[0]!.destroyed);
    t.equal(sockets[0]!.destroyed, true, 'the idle connection was closed');
    t.equal(sockets[1]!.destroyed, false, 'the busy one was not');
    await sleep(20);
    t.same(events, [], "no 'close' while a request is in flight");
    release();
    t.equal((await within(busy, 'the busy response')).body.toString(), 'late', 'the busy request completed');
    await waitFor(() => events.length === 2);
    t.same(events.sort(), ['iomux close', 'node close']);
    t.equal(closeErr, undefined, "node's close callback: no error");
  });

  t.test('closeIdleConnections() and closeAllConnections()', async (t) => {
    const { port, node, sockets } = await serve(t, (req, res) => {
      if (req.url !== '/hold') res.end('ok');
      // '/hold' never answers
    });
    const agent = new http.Agent({ keepAlive: true });
    t.teardown(() => agent.destroy());
    await request(port, { agent });
    const busy = request(port, { path: '/hold', agent: false }).then(() => 'answered', (e: NodeJS.ErrnoException) => e.code);
    await waitFor(() => sockets.length === 2);
    await sleep(10);
    node.closeIdleConnections();
    await waitFor(() => sockets[0]!.destroyed);
    t.equal(sockets[0]!.destroyed, true, 'the idle one closed');
    await sleep(20);
    t.equal(sockets[1]!.destroyed, false, 'the busy one stayed');
    node.closeAllConnections();
    t.equal(await within(busy, 'the reset'), 'ECONNRESET', 'closeAllConnections() closed the busy one');
    t.equal(sockets[1]!.destroyed, true);
  });

  t.test('iomux server close() closes the node server too', async (t) => {
    const { port, node, server, sockets } = await serve(t, (_req, res) => res.end('ok'));
    const agent = new http.Agent({ keepAlive: true });
    t.teardown(() => agent.destroy());
    await request(port, { agent });
    const nodeClosed = once(node, 'close');
    await within(new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve()))), "the iomux server's 'close'");
    await within(nodeClosed, "the node server's 'close'");
    t.equal(node.listening, false);
    t.equal(sockets[0]!.destroyed, true, 'the idle keep-alive connection was closed');
  });

  t.test('one node server on two iomux listeners (TCP and unix): node close() stops both', async (t) => {
    const dir = tempDir('iomux-http-node-');
    t.teardown(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, 'http.sock');
    const node = http.createServer((req, res) => res.end(`${(req.socket as NodeSocket).remoteFamily} ${req.url}`));
    let listenings = 0;
    node.on('listening', () => listenings++);
    const tcp = serveNode(node).listen(0, '127.0.0.1');
    t.equal(node.listening, true, 'the node server listens from the listen() call on, as with node');
    t.same(node.address(), tcp.address());
    const unix = serveNode(node).listen(path);
    await Promise.all([once(tcp, 'listening'), once(unix, 'listening')]);
    t.teardown(() => Promise.all([closeServer(tcp), closeServer(unix)]));
    t.equal(listenings, 1, "'listening' once, for the first");
    const port = (tcp.address() as iomux.AddressInfo).port;
    t.same(node.address(), tcp.address(), 'address(): the first listener');
    t.equal((await request(port, { path: '/t', agent: false })).body.toString(), 'IPv4 /t');
    t.equal((await request(0, { socketPath: path, path: '/u', agent: false })).body.toString(), 'unix /u');
    const closed = once(node, 'close');
    node.close();
    t.equal(tcp.listening, false, 'the TCP listener stopped');
    t.equal(unix.listening, false, 'the unix listener stopped');
    await within(closed, "the node server's 'close'");
  });

  t.test("the node server's maxConnections: connections beyond it are dropped", async (t) => {
    const { port, node, sockets } = await serve(t, (_req, res) => res.end('ok'));
    node.maxConnections = 1;
    const drops: { remoteAddress?: string; localPort?: number }[] = [];
    node.on('drop', (d: { remoteAddress?: string; localPort?: number }) => drops.push(d));
    const agent = new http.Agent({ keepAlive: true });
    t.teardown(() => agent.destroy());
    t.equal((await request(port, { agent })).body.toString(), 'ok');
    const second = rawClient(port);
    second.sock.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await within(second.closed, 'the dropped connection closing');
    t.equal(second.text(), '', 'the second connection got nothing');
    t.equal(drops.length, 1, "'drop'");
    t.same(drops[0] && [drops[0].remoteAddress, drops[0].localPort], ['127.0.0.1', port]);
    t.equal(sockets.length, 1, 'the node server never saw it');
  });
});

t.test('peer resets never crash the process', async (t) => {
  const aborted: string[] = [];
  const clientErrors: string[] = [];
  const piece = randomBytes(64 * 1024);
  const { port, node, sockets } = await serve(t, (req, res) => {
    if (req.url === '/upload') {
      req.on('error', (e: NodeJS.ErrnoException) => aborted.push(`req error ${e.code}`));
      req.on('aborted', () => aborted.push('aborted'));
      req.resume();
      return;
    }
    // an endless response: the client's reset is what stops it
    res.on('close', () => aborted.push(`res close finished=${res.writableFinished}`));
    const more = () => {
      while (!res.destroyed) if (!res.write(piece)) return void res.once('drain', more);
    };
    more();
  });
  node.on('clientError', (e: NodeJS.ErrnoException, s: NodeSocket) => {
    clientErrors.push(e.code ?? e.message);
    s.destroy();
  });

  // a reset in the middle of a request body
  const a = rawClient(port);
  await once(a.sock, 'connect');
  a.sock.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${1024 * 1024}\r\n\r\n`);
  a.sock.write(randomBytes(100 * 1024));
  await waitFor(() => sockets.length === 1 && sockets[0]!.bytesRead > 50 * 1024);
  a.sock.resetAndDestroy();
  await waitFor(() => sockets[0]!.destroyed);
  t.equal(sockets[0]!.destroyed, true, 'the server side closed');
  await waitFor(() => aborted.length >= 2);
  t.ok(aborted.includes('aborted'), "the request was 'aborted'");

  // a reset while the server is writing a large response
  const b = rawClient(port);
  b.sock.pause(); // read nothing: the server's writes back up
  b.sock.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor(() => sockets.length === 2 && sockets[1]!.bytesWritten > 0);
  await sleep(20);
  b.sock.resetAndDestroy();
  await waitFor(() => sockets[1]!.destroyed);
  t.equal(sockets[1]!.destroyed, true, 'the server side closed');
  await waitFor(() => aborted.some((x) => x.startsWith('res close')));
  t.ok(aborted.includes('res close finished=false'), "the response emitted 'close' unfinished");

  // without any 'clientError' listener either
  node.removeAllListeners('clientError');
  const c = rawClient(port);
  await once(c.sock, 'connect');
  c.sock.write('POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc');
  await waitFor(() => sockets.length === 3);
  await sleep(10);
  c.sock.resetAndDestroy();
  await waitFor(() => sockets[2]!.destroyed);
  t.equal(sockets[2]!.destroyed, true);
  await sleep(20);
  t.pass('no crash');
  t.ok(clientErrors.every((c) => c === 'ECONNRESET' || c === 'EPIPE'), `client errors: ${clientErrors.join(', ')}`);
});

t.test("'upgrade': the socket is handed over with the bytes after the head", async (t) => {
  const { port, node, sockets } = await serve(t, (_req, res) => res.end('no'));
  node.on('upgrade', (req: http.IncomingMessage, socket: NodeSocket, head: Buffer) => {
    if (req.url === '/careless') {
      // no 'error' listener: a reset from the peer must still not crash the process
      socket.on('data', () => {});
      return;
    }
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n');
    socket.write(head);
    socket.on('data', (d: Buffer) => socket.write(d));
    socket.on('end', () => socket.end());
  });
  const c = rawClient(port);
  c.sock.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nfirst;');
  await waitFor(() => c.text().endsWith('first;'));
  c.sock.end('second');
  await within(c.closed, 'the echo closing');
  t.match(c.text(), /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  t.ok(c.text().endsWith('\r\n\r\nfirst;second'), 'echoed after the switch');

  const d = rawClient(port);
  d.sock.write('GET /careless HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n');
  await waitFor(() => sockets.length === 2 && sockets[1]!.listenerCount('error') === 0);
  t.equal(sockets[1]!.listenerCount('error'), 0, "the upgraded socket has no 'error' listener");
  d.sock.resetAndDestroy();
  await waitFor(() => sockets[1]!.destroyed);
  t.equal(sockets[1]!.destroyed, true, 'closed by the reset, without an uncaught error');
  await sleep(10);
});

t.test('no fd left open', async (t) => {
  t.equal(await settleFds(fdsAtStart), fdsAtStart, `back to ${fdsAtStart} fds`);
});
