// serveNode(): node:http behaviours that depend on how a socket hands bytes,
// the FIN and its own state to node's http server: the order of a request's
// 'end' and the socket's, bodies read after a pause, bytesWritten,
// detached CONNECT and upgrade sockets, listen errors, takeOverListen.
import t, { type Test } from 'tap';
import { once } from 'node:events';
import * as http from 'node:http';
import * as net from 'node:net';
import { NodeSocket, serveNode, takeOverListen } from '../dist/http/node';
import { closeServer, iomux, runNode, waitFor } from './helpers';

const DIST = require.resolve('../dist');

/** A node http.Server served by iomux on 127.0.0.1; torn down with the test. */
async function serve(t: Test, node: http.Server): Promise<{ port: number; server: iomux.Server }> {
  const server = serveNode(node);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const a = server.address();
  if (a === null || typeof a === 'string') throw new Error('not a TCP server');
  t.teardown(async () => {
    node.closeAllConnections();
    await closeServer(server);
  });
  return { port: a.port, server };
}

/** A raw client that sends `data` in one write (optionally with its FIN) and collects all it receives. */
function rawExchange(port: number, data: Buffer | string, halfClose: boolean) {
  const sock = net.connect(port, '127.0.0.1');
  const chunks: Buffer[] = [];
  sock.on('data', (c: Buffer) => chunks.push(c));
  sock.on('error', () => {});
  const ended = new Promise<void>((r) => sock.on('end', () => r()));
  sock.on('connect', () => {
    if (halfClose) sock.end(data);
    else sock.write(data);
  });
  return { sock, ended, bytes: () => Buffer.concat(chunks) };
}

t.test('a POST and the FIN in one packet: the handler answers at the request\'s end, the answer arrives', async (t) => {
  for (const size of [5, 1000, 100_000]) {
    const node = http.createServer((req, res) => {
      const body: Buffer[] = [];
      req.on('data', (c: Buffer) => body.push(c));
      req.on('end', () => res.end(`got ${Buffer.concat(body).length}`));
    });
    const { port } = await serve(t, node);
    const body = Buffer.alloc(size, 'x');
    const c = rawExchange(port, Buffer.concat([Buffer.from(`POST / HTTP/1.1\r\nHost: h\r\nContent-Length: ${size}\r\n\r\n`), body]), true);
    await c.ended;
    const text = c.bytes().toString('latin1');
    t.match(text, /^HTTP\/1\.1 200 OK\r\n/, `${size} bytes: 200`);
    t.ok(text.endsWith(`got ${size}`), `${size} bytes: the whole body was read before the answer`);
    c.sock.destroy();
  }
});

t.test('an oversized chunk extension sent with the FIN gets node\'s 413', async (t) => {
  const node = http.createServer((req, res) => {
    req.on('end', () => res.end('bye'));
    req.resume();
  });
  const { port } = await serve(t, node);
  const c = rawExchange(port, 'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n' +
    `2;${'A'.repeat(20000)}=bar\r\nAA\r\n0\r\n\r\n`, true);
  await c.ended;
  t.equal(c.bytes().toString('latin1'), 'HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n\r\n');
});

t.test('the body in the head\'s packet is not dumped when the handler pauses and answers first', async (t) => {
  const size = 200_000;
  let dumpedAtFinish: boolean | undefined;
  let received = 0;
  const done = new Promise<void>((resolve) => {
    const node = http.createServer((req, res) => {
      req.once('data', (c: Buffer) => {
        received += c.length;
        req.pause();
        res.end('early');
        res.on('finish', () => {
          dumpedAtFinish = (req as unknown as { _dumped: boolean })._dumped;
          // The application goes on reading what it paused.
          req.on('data', (c2: Buffer) => { received += c2.length; });
          req.on('end', () => resolve());
          req.resume();
        });
      });
    });
    void serve(t, node).then(({ port }) => {
      rawExchange(port, Buffer.concat([Buffer.from(`POST / HTTP/1.1\r\nHost: h\r\nContent-Length: ${size}\r\n\r\n`),
        Buffer.alloc(size, 'y')]), false);
    });
  });
  await done;
  t.equal(dumpedAtFinish, false, 'node did not dump the request at the response\'s finish');
  t.equal(received, size, 'every byte of the body reached the handler');
});

t.test('pipelined requests in one packet are all answered, in order', async (t) => {
  const node = http.createServer((req, res) => res.end(`<${req.url}>`));
  const { port } = await serve(t, node);
  const c = rawExchange(port, 'GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n' +
    'POST /3 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcGET /4 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n', false);
  await c.ended;
  const bodies = c.bytes().toString('latin1').match(/<\/\d>/g);
  t.same(bodies, ['</1>', '</2>', '</3>', '</4>']);
});

t.test('bytesWritten counts the bytes still queued in the socket, and ends equal to what the client received', async (t) => {
  let queuedView = 0, written = 0, atFinish = 0;
  const node = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    const chunk = Buffer.alloc(1024, '7');
    for (let i = 0; i < 1536; i++) res.write(chunk);
    written = 1536 * 1024;
    queuedView = req.socket.bytesWritten;
    res.on('finish', () => { atFinish = req.socket.bytesWritten; });
    res.end('done\n');
  });
  const { port } = await serve(t, node);
  const c = rawExchange(port, 'GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n', false);
  await c.ended;
  t.ok(queuedView >= written, `right after the writes: ${queuedView} >= ${written} (queued bytes count)`);
  await waitFor(() => atFinish > 0);
  t.equal(atFinish, c.bytes().length, 'at finish: exactly the bytes the client received');
});

t.test('CONNECT: the socket comes detached, and server.close(cb) still calls back', async (t) => {
  const node = http.createServer(() => t.fail('no request'));
  const counts: Record<string, number> = {};
  node.on('connect', (req: http.IncomingMessage, socket: NodeSocket, head: Buffer) => {
    for (const e of ['close', 'drain', 'data', 'end', 'error', 'timeout']) counts[e] = socket.listenerCount(e);
    socket.removeAllListeners('close');
    socket.write('HTTP/1.1 200 Connection established\r\n\r\n');
    let data = head.toString();
    socket.on('data', (b: Buffer) => { data += b.toString(); });
    socket.on('end', () => socket.end(data));
  });
  const { port } = await serve(t, node);
  const c = rawExchange(port, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nHead', false);
  await waitFor(() => c.bytes().length > 0);
  c.sock.end('Body');
  await c.ended;
  t.same(counts, { close: 0, drain: 0, data: 0, end: 1, error: 0, timeout: 0 }, 'as a detached net.Socket');
  t.equal(c.bytes().toString(), 'HTTP/1.1 200 Connection established\r\n\r\nHeadBody', 'tunnel echoed the head and the body');
  const closed = new Promise<void>((resolve) => node.close(() => resolve()));
  await closed;
  t.pass('node server.close(cb) called back once the tunnel closed');
});

t.test('an upgraded socket nobody reads still sees the FIN and can answer it', async (t) => {
  const node = http.createServer();
  node.on('upgrade', (req: http.IncomingMessage, socket: NodeSocket) => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\nhead');
    socket.on('end', () => socket.end('bye'));
  });
  const { port } = await serve(t, node);
  const c = rawExchange(port, 'GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n', false);
  await waitFor(() => c.bytes().includes('head'));
  // Only the FIN: bytes nobody reads would hold 'end' back, as on a net.Socket.
  c.sock.end();
  await c.ended;
  t.ok(c.bytes().toString().endsWith('headbye'), 'the server ended its side after the FIN');
});

t.test('a half-closed upgraded socket does not keep the process alive after server.close()', async (t) => {
  const script = `
    const http = require('node:http');
    const { http: ih } = require(${JSON.stringify(DIST)});
    const node = http.createServer();
    node.on('upgrade', (req, socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\\r\\nConnection: Upgrade\\r\\nUpgrade: x\\r\\n\\r\\n');
    });
    ih.serveNode(node).listen(0, '127.0.0.1', function () {
      const req = http.get({ port: this.address().port, host: '127.0.0.1', headers: { Connection: 'Upgrade', Upgrade: 'x' } });
      req.on('upgrade', (res, socket) => {
        socket.destroy();
        node.close();
        console.log('closed');
      });
    });
  `;
  const r = await runNode(['-e', script], { timeoutMs: 10000 });
  t.equal(r.timedOut, false, 'the process exited by itself');
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.trim(), 'closed');
});

t.test('listen errors reach the node server; the listen callback runs with this = the node server', async (t) => {
  const first = http.createServer();
  const { port, server: s1 } = await serve(t, first);
  const second = http.createServer();
  const s2 = serveNode(second);
  const iomuxErrors: Error[] = [];
  s2.on('error', (e: Error) => iomuxErrors.push(e));
  const [err] = await new Promise<[NodeJS.ErrnoException]>((resolve) => {
    second.once('error', (e: NodeJS.ErrnoException) => resolve([e]));
    s2.listen(port, '127.0.0.1', () => t.fail('must not listen'));
  });
  t.equal(err.code, 'EADDRINUSE');
  t.equal(err.syscall, 'listen');
  t.equal(err.port, port);
  t.equal(iomuxErrors.length, 1, "the iomux server's own listener hears it too");
  t.equal(second.listening, false);

  // Without an 'error' listener on the node server, the process fails as node's listen() would.
  const script = `
    const http = require('node:http');
    const { http: ih } = require(${JSON.stringify(DIST)});
    ih.serveNode(http.createServer()).listen(${port}, '127.0.0.1');
  `;
  const r = await runNode(['-e', script], { timeoutMs: 10000 });
  t.not(r.code, 0, 'the child failed');
  t.match(r.stderr, /EADDRINUSE/, 'with EADDRINUSE');

  const third = http.createServer();
  const s3 = serveNode(third);
  const self = await new Promise<unknown>((resolve) => {
    s3.listen(0, '127.0.0.1', function (this: unknown) { resolve(this); });
  });
  t.equal(self, third, 'this in the listen callback');
  await closeServer(s3);
  await closeServer(s1);
});

t.test('takeOverListen: the node server\'s own listen() listens through iomux', async (t) => {
  t.throws(() => serveNode(http.createServer(), { takeOverListen: 'yes' as never }), { code: 'ERR_INVALID_ARG_TYPE' });

  const node = http.createServer((req, res) => res.end(req.socket instanceof NodeSocket ? 'iomux' : 'node'));
  const server = serveNode(node, { takeOverListen: true });
  const self = await new Promise<unknown>((resolve) => {
    const ret = node.listen(0, '127.0.0.1', function (this: unknown) { resolve(this); });
    t.equal(ret, node, 'listen() returns the node server');
  });
  t.equal(self, node, 'this in the callback');
  t.equal(server.listening, true, 'the iomux server listens');
  t.same(node.address(), server.address());
  const port = (node.address() as net.AddressInfo).port;
  const res = await fetch(`http://127.0.0.1:${port}/`);
  t.equal(await res.text(), 'iomux');
  await new Promise<void>((resolve) => node.close(() => resolve()));
  t.equal(server.listening, false, 'node close() stopped the iomux listener');

  // Listening again after close, as node allows.
  await new Promise<void>((resolve) => node.listen(0, '127.0.0.1', () => resolve()));
  t.equal(server.listening, true, 'listens again');
  await new Promise<void>((resolve) => node.close(() => resolve()));
});

t.test('takeOverListen(): every node http server listens through iomux until restored', async (t) => {
  const restore = takeOverListen();
  t.teardown(restore);
  t.throws(() => takeOverListen(), /already in effect/);
  const node = http.createServer((req, res) => res.end(req.socket instanceof NodeSocket ? 'iomux' : 'node'));
  await new Promise<void>((resolve) => node.listen(0, '127.0.0.1', () => resolve()));
  const port = (node.address() as net.AddressInfo).port;
  t.equal(await (await fetch(`http://127.0.0.1:${port}/`)).text(), 'iomux');
  await new Promise<void>((resolve) => node.close(() => resolve()));
  // A net server is not an http server: node's own.
  const plain = net.createServer();
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', () => resolve()));
  t.ok((plain as unknown as { _handle: { constructor: { name: string } } })._handle.constructor.name === 'TCP', 'net.Server keeps node\'s listener');
  plain.close();
  restore();
  const after = http.createServer((req, res) => res.end(req.socket instanceof NodeSocket ? 'iomux' : 'node'));
  await new Promise<void>((resolve) => after.listen(0, '127.0.0.1', () => resolve()));
  const port2 = (after.address() as net.AddressInfo).port;
  t.equal(await (await fetch(`http://127.0.0.1:${port2}/`, { headers: { connection: 'close' } })).text(), 'node', 'restored');
  after.closeAllConnections();
  await new Promise<void>((resolve) => after.close(() => resolve()));
});

t.test('keep-alive timeout: off while a request runs, so a slow handler is not cut off; on again after', async (t) => {
  const node = http.createServer((req, res) => {
    if (req.url === '/slow') setTimeout(() => res.end('slow'), 1500);
    else res.end('quick');
  });
  // Node arms keepAliveTimeout + 1 s after each response, and turns it off at the next request.
  node.keepAliveTimeout = 100;
  const { port } = await serve(t, node);
  const sock = net.connect(port, '127.0.0.1');
  let got = '';
  sock.on('data', (d: Buffer) => { got += d.toString('latin1'); });
  const closed = new Promise<number>((resolve) => sock.on('close', () => resolve(Date.now())));
  await once(sock, 'connect');
  sock.write('GET /quick HTTP/1.1\r\nHost: h\r\n\r\n');
  await waitFor(() => got.includes('quick'));
  sock.write('GET /slow HTTP/1.1\r\nHost: h\r\n\r\n');
  const answered = await new Promise<number>((resolve, reject) => {
    const timer = setInterval(() => {
      if (got.includes('slow')) { clearInterval(timer); resolve(Date.now()); }
      if (sock.destroyed) { clearInterval(timer); reject(new Error(`closed before the slow answer: ${JSON.stringify(got)}`)); }
    }, 10);
  });
  t.ok(got.endsWith('slow'), 'the slow request was answered on the same connection');
  const closedAt = await closed;
  t.ok(closedAt - answered >= 900 && closedAt - answered < 5000,
    `then the idle connection was closed by the keep-alive timeout (${closedAt - answered} ms after the answer)`);
});

t.test('req.socket is a net.Socket: instanceof, its members, and its events in node\'s order', async (t) => {
  const seen: Record<string, unknown>[] = [];
  const events: string[] = [];
  const node = http.createServer((req, res) => {
    const s = req.socket;
    seen.push({
      isNetSocket: s instanceof net.Socket, isNodeSocket: s instanceof NodeSocket, readyState: s.readyState,
      bufferSize: s.bufferSize, bytesReadPositive: s.bytesRead > 0, pending: s.pending, connecting: s.connecting,
      setTimeoutReturns: s.setTimeout(1000) === s,
    });
    if (req.url === '/reset') {
      s.on('close', (hadError: boolean) => events.push(`close ${hadError}`));
      s.resetAndDestroy();
      return;
    }
    if (req.url === '/error') {
      s.on('error', (e: Error) => events.push(`error ${e.message}`));
      s.on('close', (hadError: boolean) => events.push(`close ${hadError}`));
      s.destroy(new Error('boom'));
      return;
    }
    res.end('ok');
  });
  const { port } = await serve(t, node);
  const ok = rawExchange(port, 'GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n', false);
  await ok.ended;
  t.match(ok.bytes().toString(), /\r\n\r\nok$/);
  t.same(seen[0], {
    isNetSocket: true, isNodeSocket: true, readyState: 'open', bufferSize: 0, bytesReadPositive: true,
    pending: false, connecting: false, setTimeoutReturns: true,
  });
  const reset = rawExchange(port, 'GET /reset HTTP/1.1\r\nHost: h\r\n\r\n', false);
  await new Promise<void>((resolve) => reset.sock.on('close', () => resolve()));
  const errored = rawExchange(port, 'GET /error HTTP/1.1\r\nHost: h\r\n\r\n', false);
  await new Promise<void>((resolve) => errored.sock.on('close', () => resolve()));
  await waitFor(() => events.length >= 3);
  t.same(events, ['close false', 'error boom', 'close true'], "'close' once per socket, after 'error'");
});
