// iomux's HTTP server: drain(), the graceful close a retiring worker uses.
// Each keep-alive connection's next request is answered (Connection: close)
// before the connection closes; idle ones get idleGrace; closing half-closes
// and reads until the client's FIN, so nothing is answered with a reset.
import { once } from 'node:events';
import * as nodeHttp from 'node:http';
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import t from 'tap';
import { sleep, waitFor } from './helpers';
import { http, nextResponse, parseResponses, rawClient, serve, tryConnect, within } from './http-helpers';

interface Looper {
  /** Complete responses received. */
  responses: number;
  /** The Connection header of the last response. */
  lastConnection: string;
  /** An end or a reset while a request waited for its response, or any socket error. */
  errors: string[];
  done: Promise<void>;
}

/**
 * A client that behaves like wrk: one keep-alive connection that sends its
 * next request the moment a response is complete, until a response says
 * Connection: close. The connection ending, or an error, while a request
 * waits for its response is counted as an error, as wrk's read errors.
 */
function looper(port: number): Looper {
  const sock = net.connect(port, '127.0.0.1');
  sock.setNoDelay(true);
  const st: Looper = { responses: 0, lastConnection: '', errors: [], done: Promise.resolve() };
  let buf = Buffer.alloc(0);
  let waiting = false;
  let n = 0;
  const send = () => {
    waiting = true;
    sock.write(`GET /r${n++} HTTP/1.1\r\nHost: x\r\n\r\n`);
  };
  st.done = new Promise<void>((resolve) => {
    sock.on('connect', send);
    sock.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        const next = nextResponse(buf);
        if (next === null) return;
        const head = next.head;
        if (next.rest === null) {
          st.errors.push(`response without a length: ${JSON.stringify(head)}`);
          sock.destroy();
          return;
        }
        buf = next.rest;
        st.responses++;
        waiting = false;
        st.lastConnection = /\r\nconnection: *([^\r]*)/i.exec(head)?.[1]?.toLowerCase() ?? '';
        if (st.lastConnection === 'close') {
          sock.end();
          return;
        }
        send();
      }
    });
    sock.on('end', () => {
      if (waiting) st.errors.push(`the connection ended with a request unanswered (after ${st.responses} responses)`);
    });
    sock.on('error', (e: NodeJS.ErrnoException) => st.errors.push(e.code ?? e.message));
    sock.on('close', () => resolve());
  });
  return st;
}

t.test('drain(): clients that send the next request at once get every response, the last with Connection: close', async (t) => {
  const { server, port } = await serve(t, (req, res) => {
    res.end(`hello ${req.url}`);
  });
  const clients = Array.from({ length: 16 }, () => looper(port));
  t.ok(await waitFor(() => clients.every((c) => c.responses >= 20)), 'the clients are running');
  let closeEvents = 0;
  server.on('close', () => closeEvents++);
  const draining = server.drain();
  t.equal(server.drain(), draining, 'a second drain() returns the same promise');
  await within(Promise.all(clients.map((c) => c.done)), 5000, 'the clients to finish');
  await within(draining, 5000, 'drain() to resolve');
  for (const [i, c] of clients.entries()) {
    t.same(c.errors, [], `client ${i}: no reset, no end without a response (${c.responses} responses)`);
    t.equal(c.lastConnection, 'close', `client ${i}: the last response says Connection: close`);
  }
  t.equal(server.connectionCount, 0, 'every connection is gone');
  t.equal(closeEvents, 1, "'close' once");
  t.equal(await tryConnect(port), 'ECONNREFUSED', 'no longer accepting');
});

t.test('drain(): an idle connection is kept for idleGrace, a request in it is answered; requests under way finish', async (t) => {
  const { server, port, sockets } = await serve(t, async (req, res) => {
    if (req.url === '/slow') await sleep(300);
    res.end(`done ${req.url}`);
  });
  const idle = rawClient(port); // served once, then idle
  idle.sock.write('GET /first HTTP/1.1\r\nHost: x\r\n\r\n');
  await idle.responses(1);
  const late = rawClient(port); // served once, sends its next request during the grace
  late.sock.write('GET /first HTTP/1.1\r\nHost: x\r\n\r\n');
  await late.responses(1);
  const fresh = rawClient(port); // connected, sends nothing
  const busy = rawClient(port); // a request under way
  busy.sock.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
  t.ok(await waitFor(() => sockets.length === 4), 'four connections');
  await sleep(20);

  const at = performance.now();
  const draining = server.drain({ idleGrace: 1000 });
  await sleep(150);
  t.equal(await tryConnect(port), 'ECONNREFUSED', 'not accepting while draining');
  late.sock.write('GET /second HTTP/1.1\r\nHost: x\r\n\r\n');

  const lateEnd = await late.waitEnd(2000);
  const lrs = parseResponses(late.data());
  t.same(lrs.map((r) => r.body.toString()), ['done /first', 'done /second'], 'the request sent during the grace is answered');
  t.not(lrs[0]!.headers.connection, 'close', 'the one before the drain kept the connection');
  t.equal(lrs[1]!.headers.connection, 'close', 'the one during the drain says Connection: close');
  t.ok(lateEnd - at < 900, `and the connection ends after it, before the grace is over (${(lateEnd - at).toFixed(0)} ms)`);

  const busyEnd = await busy.waitEnd(2000);
  const brs = parseResponses(busy.data());
  t.same(brs.map((r) => r.body.toString()), ['done /slow'], 'the request under way finishes');
  t.equal(brs[0]!.headers.connection, 'close', 'with Connection: close');
  t.ok(busyEnd - at < 900, `ended after its response, before the grace is over (${(busyEnd - at).toFixed(0)} ms)`);

  const idleEnd = await idle.waitEnd(3000);
  const freshEnd = await fresh.waitEnd(3000);
  t.ok(idleEnd - at >= 900 && idleEnd - at < 2500, `the idle connection closed after the grace (${(idleEnd - at).toFixed(0)} ms)`);
  t.ok(freshEnd - at >= 900 && freshEnd - at < 2500, `so did the one that sent nothing (${(freshEnd - at).toFixed(0)} ms)`);
  t.equal(parseResponses(idle.data()).length, 1, 'nothing more on the idle one');
  t.equal(fresh.data().length, 0, 'nothing on the fresh one');
  for (const c of [idle, late, fresh, busy]) {
    c.sock.end();
    await c.closed;
    t.same(c.errors, [], 'no socket error');
  }
  await within(draining, 3000, 'drain() to resolve');
  t.equal(server.connectionCount, 0);
});

t.test('drain(): the close is a half-close; what the client sends after the last response is read, not answered with a reset', async (t) => {
  const { server, port } = await serve(t, (req, res) => {
    res.end(`done ${req.url}`);
  });
  // A client that keeps its side open after the server's FIN.
  const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const errors: string[] = [];
  c.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
  const chunks: Buffer[] = [];
  c.on('data', (d: Buffer) => chunks.push(d));
  const ended = new Promise<void>((r) => c.on('end', r));
  const closed = new Promise<void>((r) => c.on('close', r));
  c.write('GET /a HTTP/1.1\r\nHost: x\r\n\r\n');
  t.ok(await waitFor(() => Buffer.concat(chunks).includes('done /a')), 'first response');
  const draining = server.drain({ idleGrace: 2000 });
  // The next request, and right behind it bytes that reach the server
  // after it has answered and closed its side.
  c.write('GET /b HTTP/1.1\r\nHost: x\r\n\r\n');
  c.write(Buffer.alloc(256 * 1024, 'x'));
  await within(ended, 2000, "the server's FIN");
  const rs = parseResponses(Buffer.concat(chunks));
  t.same(rs.map((r) => r.body.toString()), ['done /a', 'done /b'], 'both answered');
  t.equal(rs[1]!.headers.connection, 'close', 'the second with Connection: close');
  await sleep(100);
  t.equal(server.connectionCount, 1, 'the server still reads (and drops), waiting for the client to close');
  c.write(Buffer.alloc(64 * 1024, 'y'));
  await sleep(50);
  t.equal(server.connectionCount, 1, 'still');
  c.end();
  await within(closed, 2000, 'the close');
  t.same(errors, [], 'no reset');
  await within(draining, 2000, 'drain() to resolve once the client closed');
  t.equal(server.connectionCount, 0);
});

t.test('drain({ timeout }): the connections left are closed at the timeout', async (t) => {
  const { server, port } = await serve(t, () => {
    // never answers
  });
  const c = rawClient(port);
  c.sock.write('GET /never HTTP/1.1\r\nHost: x\r\n\r\n');
  t.ok(await waitFor(() => server.connectionCount === 1));
  await sleep(20);
  const at = performance.now();
  await within(server.drain({ timeout: 300 }), 2000, 'drain() to resolve');
  const took = performance.now() - at;
  t.ok(took >= 280 && took < 1500, `resolved at the timeout (${took.toFixed(0)} ms)`);
  await c.closed;
  t.equal(c.data().length, 0, 'no response');
});

t.test('close() during drain() closes the idle connections at once; drain() after close() returns its promise', async (t) => {
  const { server, port } = await serve(t, (req, res) => {
    res.end('ok');
  });
  const c = rawClient(port);
  c.sock.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await c.responses(1);
  const draining = server.drain({ idleGrace: 10_000 });
  await sleep(50);
  t.equal(server.connectionCount, 1, 'idle, within the grace');
  const at = performance.now();
  const closing = server.close();
  t.equal(closing, draining, 'close() returns the same promise');
  t.equal(server.drain(), draining, 'and so does drain()');
  const end = await c.waitEnd(2000);
  t.ok(end - at < 500, 'the idle connection closed at once');
  c.sock.end();
  await within(closing, 3000, 'close() to resolve');
});

t.test('drain() options are checked', async (t) => {
  const { server } = await serve(t, (req, res) => {
    res.end('ok');
  });
  const s = server as unknown as { drain(o?: unknown): Promise<void> };
  t.throws(() => s.drain('x'), { code: 'ERR_INVALID_ARG_TYPE', message: /options/ });
  t.throws(() => s.drain(null), { code: 'ERR_INVALID_ARG_TYPE' });
  t.throws(() => s.drain({ idleGrace: 0 }), { code: 'ERR_INVALID_ARG_VALUE', message: /options\.idleGrace/ });
  t.throws(() => s.drain({ idleGrace: 'a' }), { code: 'ERR_INVALID_ARG_VALUE', message: /options\.idleGrace/ });
  t.throws(() => s.drain({ timeout: -1 }), { code: 'ERR_INVALID_ARG_VALUE', message: /options\.timeout/ });
  t.throws(() => s.drain({ timeout: Infinity }), { code: 'ERR_INVALID_ARG_VALUE', message: /options\.timeout/ });
  t.ok(server.listening, 'a rejected call changes nothing');
});

t.test('serveNode(): drain() on the last iomux server drains the node server the same way', async (t) => {
  const node = nodeHttp.createServer((req, res) => {
    res.end(`hello ${req.url}`);
  });
  const server = http.serveNode(node);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  t.teardown(() => {
    node.closeAllConnections();
    server.close();
  });
  const clients = Array.from({ length: 8 }, () => looper(port));
  t.ok(await waitFor(() => clients.every((c) => c.responses >= 20)), 'the clients are running');
  const idle = rawClient(port); // served once, then idle
  idle.sock.write('GET /first HTTP/1.1\r\nHost: x\r\n\r\n');
  await idle.responses(1);
  const fresh = rawClient(port); // connected, sends nothing: node counts it as a request under way
  t.ok(await waitFor(() => (server as unknown as { connections: number }).connections >= 10), 'ten connections');
  let nodeClosed = false;
  node.on('close', () => { nodeClosed = true; });
  const at = performance.now();
  const draining = server.drain({ idleGrace: 300, timeout: 1500 });
  t.equal(server.drain(), draining, 'a second drain() returns the same promise');
  await within(Promise.all(clients.map((c) => c.done)), 5000, 'the clients to finish');
  for (const [i, c] of clients.entries()) {
    t.same(c.errors, [], `client ${i}: no reset, no end without a response (${c.responses} responses)`);
    t.equal(c.lastConnection, 'close', `client ${i}: the last response says Connection: close`);
  }
  const idleEnd = await idle.waitEnd(3000);
  t.ok(idleEnd - at >= 250 && idleEnd - at < 1400, `the idle connection closed after the grace (${(idleEnd - at).toFixed(0)} ms)`);
  const freshEnd = await fresh.waitEnd(3000);
  t.ok(freshEnd - at >= 1400, `the one that sent nothing at the timeout (${(freshEnd - at).toFixed(0)} ms)`);
  await within(draining, 3000, 'drain() to resolve');
  t.ok(await waitFor(() => nodeClosed), "the node server's 'close'");
  t.equal(node.listenerCount('request'), 1, 'the Connection: close listener is gone');
  t.equal(await tryConnect(port), 'ECONNREFUSED', 'no longer accepting');
});
