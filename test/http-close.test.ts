// iomux's HTTP server: closing (graceful close(), closeAllConnections,
// closeIdleConnections, maxRequestsPerSocket), a throwing handler, and
// clients that reset mid-request or mid-response (no crash, no fd leak).
import { once } from 'node:events';
import * as nodeHttp from 'node:http';
import { performance } from 'node:perf_hooks';
import t from 'tap';
import { openFds, settleFds, sleep, waitFor } from './helpers';
import { parseResponses, rawClient, request, serve, tryConnect, within } from './http-helpers';

t.test('close(): in-flight requests finish with Connection: close, idle connections close at once, resolves after the last socket', async (t) => {
  let slowStarted!: () => void;
  let slowCount = 0;
  const started = new Promise<void>((r) => { slowStarted = r; });
  let slowEndedAt = 0;
  const { server, port, sockets } = await serve(t, async (req, res) => {
    if (req.url.startsWith('/slow')) {
      if (++slowCount === 2) slowStarted();
      await sleep(500);
      slowEndedAt = performance.now();
      res.end(`${req.url} done`);
      return;
    }
    res.end(`fast ${req.url}`);
  });
  const socketClosedAt: number[] = [];
  server.on('connection', (s) => s.on('close', () => socketClosedAt.push(performance.now())));
  let serverCloseEvents = 0;
  server.on('close', () => serverCloseEvents++);

  const idle = rawClient(port); // served once, then idle between requests
  idle.sock.write('GET /idle HTTP/1.1\r\nHost: x\r\n\r\n');
  await idle.responses(1);
  const fresh = rawClient(port); // connected, has sent nothing
  const busy = rawClient(port); // a slow request
  busy.sock.write('GET /slow1 HTTP/1.1\r\nHost: x\r\n\r\n');
  const piped = rawClient(port); // a slow request, and one pipelined behind it (answered at once, held)
  piped.sock.write('GET /slow2 HTTP/1.1\r\nHost: x\r\n\r\nGET /behind HTTP/1.1\r\nHost: x\r\n\r\n');
  const midHead = rawClient(port); // half a head when close() is called
  midHead.sock.write('GET /mid HTTP/1.1\r\n');
  await started;
  t.ok(await waitFor(() => sockets.length === 5), 'five connections');
  await sleep(10);

  const closeCalledAt = performance.now();
  let resolvedAt = 0;
  const closing = server.close();
  t.equal(server.close(), closing, 'a second close() returns the same promise');
  let cbCalledAt = 0;
  server.close(() => { cbCalledAt = performance.now(); });
  closing.then(() => { resolvedAt = performance.now(); });

  const idleEnd = await idle.waitEnd(1000);
  const freshEnd = await fresh.waitEnd(1000);
  t.ok(idleEnd - closeCalledAt < 100, `the idle keep-alive connection closed at once (${(idleEnd - closeCalledAt).toFixed(1)} ms)`);
  t.ok(freshEnd - closeCalledAt < 100, 'and the one that never sent a request');
  t.equal(parseResponses(idle.data()).length, 1, 'nothing more on the idle one');

  t.equal(await tryConnect(port), 'ECONNREFUSED', 'new connections refused while the slow request runs');
  t.equal(slowEndedAt, 0, 'the slow request is still under way');
  t.equal(resolvedAt, 0, 'close() has not resolved');
  t.equal(server.connectionCount, 3);
  midHead.sock.write('Host: x\r\n\r\n');
  await midHead.waitEnd(1000);
  const mrs = parseResponses(midHead.data());
  t.same(mrs.map((r) => r.body.toString()), ['fast /mid'], 'a request whose head was under way is answered');
  t.equal(mrs[0]!.headers.connection, 'close', 'with Connection: close');

  await busy.waitEnd(3000);
  const rs = parseResponses(busy.data());
  t.same(rs.map((r) => r.body.toString()), ['/slow1 done']);
  t.equal(rs[0]!.headers.connection, 'close', 'the in-flight response says Connection: close');
  await piped.waitEnd(3000);
  const prs = parseResponses(piped.data());
  t.same(prs.map((r) => r.body.toString()), ['/slow2 done', 'fast /behind'], 'both requests received before close() answered, in order');
  await within(closing, 2000, 'close() to resolve');
  t.ok(slowEndedAt > 0 && resolvedAt >= slowEndedAt, 'resolved after the in-flight requests finished');
  t.equal(socketClosedAt.length, 5);
  t.ok(resolvedAt >= Math.max(...socketClosedAt), 'resolved after the last socket closed');
  t.equal(server.connectionCount, 0);
  t.equal(server.listening, false);
  await sleep(5);
  t.ok(cbCalledAt >= Math.max(...socketClosedAt), 'the callback too');
  t.equal(serverCloseEvents, 1, "one 'close' event");
});

t.test('close() with no connections resolves at once; listen() again serves', async (t) => {
  const { server } = await serve(t, (req, res) => res.end('again'));
  const t0 = performance.now();
  await within(server.close(), 1000, 'close()');
  t.ok(performance.now() - t0 < 100);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  t.equal((await request(port)).body.toString(), 'again');
});

t.test('closeAllConnections(): requests under way are cut; close() then resolves promptly', async (t) => {
  const resStates: [boolean, boolean][] = [];
  let inHandler!: () => void;
  const entered = new Promise<void>((r) => { inHandler = r; });
  const { server, port } = await serve(t, (req, res) => {
    res.write('partial');
    res.on('close', () => resStates.push([res.destroyed, res.writableFinished]));
    inHandler(); // never ends
  });
  const failed = new Promise<string>((resolve) => {
    nodeHttp.get({ host: '127.0.0.1', port, agent: false }, (res) => {
      res.on('data', () => {});
      res.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      res.on('end', () => resolve('ended normally'));
    }).on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
  await entered;
  const closing = server.close();
  await sleep(20);
  t.equal(server.connectionCount, 1, 'close() alone waits for the busy connection');
  const t0 = performance.now();
  server.closeAllConnections();
  await within(closing, 1000, 'close() after closeAllConnections()');
  t.ok(performance.now() - t0 < 200, 'resolved promptly');
  t.equal(await failed, 'ECONNRESET', 'the client saw its response cut');
  t.same(resStates, [[true, false]], "the response emitted 'close', destroyed, never finished");
});

t.test('closeIdleConnections(): only idle ones; the busy one goes on, keep-alive', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((r) => { release = r; });
  const { server, port } = await serve(t, async (req, res) => {
    if (req.url === '/wait') await gate;
    res.end(req.url);
  });
  const idle = rawClient(port);
  idle.sock.write('GET /a HTTP/1.1\r\nHost: x\r\n\r\n');
  await idle.responses(1);
  const busy = rawClient(port);
  t.teardown(() => busy.sock.destroy());
  busy.sock.write('GET /wait HTTP/1.1\r\nHost: x\r\n\r\n');
  await waitFor(() => server.connectionCount === 2);
  await sleep(10);
  server.closeIdleConnections();
  await idle.waitEnd(1000);
  release();
  const [r] = await busy.responses(1);
  t.equal(r!.body.toString(), '/wait');
  t.equal(r!.headers.connection, undefined, 'still keep-alive');
  busy.sock.write('GET /b HTTP/1.1\r\nHost: x\r\n\r\n');
  const rs = await busy.responses(2);
  t.equal(rs[1]!.body.toString(), '/b', 'and serves the next request');
});

t.test('maxRequestsPerSocket', async (t) => {
  const { port, sockets } = await serve(t, (req, res) => res.end(req.url), { maxRequestsPerSocket: 3 });
  const c = rawClient(port);
  let batch = '';
  for (let i = 0; i < 5; i++) batch += `GET /${i} HTTP/1.1\r\nHost: x\r\n\r\n`;
  c.sock.write(batch);
  await c.waitEnd();
  const rs = parseResponses(c.data());
  t.same(rs.map((r) => r.body.toString()), ['/0', '/1', '/2'], 'three answered, the rest dropped');
  t.same(rs.map((r) => r.headers.connection), [undefined, undefined, 'close'], 'the third says close');

  const agent = new nodeHttp.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const before = sockets.length;
  for (let i = 0; i < 7; i++) t.equal((await request(port, { path: `/n${i}`, agent })).body.toString(), `/n${i}`);
  t.equal(sockets.length - before, 3, 'node: 7 requests over 3 connections');
});

t.test('a throwing handler: uncaughtException, and the connection keeps serving', async (t) => {
  const { port, sockets } = await serve(t, (req, res) => {
    res.end(`ok ${req.url}`);
    if (req.url.startsWith('/throw')) throw new Error(`boom ${req.url}`);
  });
  const agent = new nodeHttp.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());

  let caught = new Promise<Error>((r) => process.once('uncaughtException', r));
  const r1 = await request(port, { path: '/throw1', agent });
  t.equal(r1.body.toString(), 'ok /throw1');
  t.equal((await within(caught, 2000, 'uncaughtException')).message, 'boom /throw1');
  const r2 = await request(port, { path: '/after', agent });
  t.equal(r2.body.toString(), 'ok /after');
  t.equal(sockets.length, 1, 'on the same connection');

  // In the middle of a pipelined batch: the batch is still parsed and answered.
  caught = new Promise<Error>((r) => process.once('uncaughtException', r));
  const c = rawClient(port);
  t.teardown(() => c.sock.destroy());
  c.sock.write('GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /throw2 HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n');
  const rs = await c.responses(3);
  t.same(rs.map((r) => r.body.toString()), ['ok /a', 'ok /throw2', 'ok /b']);
  t.equal((await within(caught, 2000, 'uncaughtException')).message, 'boom /throw2');
});

t.test('a client reset mid-response: no crash, the response closes, no fd leak', async (t) => {
  const states: { destroyed: boolean; finished: boolean; writes: number }[] = [];
  const { server, port } = await serve(t, async (req, res) => {
    const block = Buffer.alloc(64 * 1024, 120);
    let writes = 0;
    const closed = new Promise<void>((r) => res.once('close', r));
    while (!res.destroyed && writes < 4096) { // at most 256 MiB
      writes++;
      if (!res.write(block)) await Promise.race([once(res, 'drain'), closed]);
    }
    await closed;
    states.push({ destroyed: res.destroyed, finished: res.writableFinished, writes });
    res.end('after close: ignored'); // must not throw
  });
  const fdsBefore = openFds();
  for (let i = 0; i < 10; i++) {
    const c = rawClient(port);
    c.sock.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
    await c.until((s) => s.length > 200_000);
    c.sock.resetAndDestroy();
    await c.closed;
  }
  t.ok(await waitFor(() => states.length === 10 && server.connectionCount === 0), 'every response closed, every connection gone');
  t.ok(states.every((s) => s.destroyed && !s.finished && s.writes < 4096), 'destroyed mid-way, not finished');
  t.ok((await settleFds(fdsBefore)) <= fdsBefore, 'no fd leaked');
  t.equal((await request(port, { path: '/small', agent: false, method: 'HEAD' })).status, 200, 'the server still serves');
});

t.test('a client reset mid-request body, and with responses waiting in a pipeline', async (t) => {
  const seen: string[] = [];
  const { server, port } = await serve(t, async (req, res) => {
    res.on('close', () => seen.push(`close ${req.url} destroyed=${res.destroyed}`));
    if (req.url === '/upload') {
      try {
        await req.body();
        seen.push('body resolved');
      } catch (err) {
        seen.push(`body rejected aborted=${req.aborted}`);
        t.ok(err instanceof Error);
      }
      return;
    }
    if (req.url === '/slow') await Promise.race([once(res, 'close'), sleep(3000)]);
    res.end(req.url); // /slow: after the reset, ignored, no throw
    ended++;
  });
  let ended = 0;
  const fdsBefore = openFds();

  const up = rawClient(port);
  up.sock.write(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n${'x'.repeat(100_000)}`);
  await waitFor(() => server.connectionCount === 1);
  await sleep(30);
  up.sock.resetAndDestroy();
  t.ok(await waitFor(() => seen.length === 2), 'the handler saw the abort');
  t.same(seen.sort(), ['body rejected aborted=true', 'close /upload destroyed=true']);

  seen.length = 0;
  const pipe = rawClient(port);
  pipe.sock.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n');
  t.ok(await waitFor(() => ended === 2), '/b and /c have answered, held behind /slow');
  pipe.sock.resetAndDestroy();
  t.ok(await waitFor(() => seen.length === 3 && ended === 3));
  t.same(seen.sort(), ['close /b destroyed=true', 'close /c destroyed=true', 'close /slow destroyed=true'],
    'every waiting response closed, destroyed');
  t.equal(pipe.data().length, 0, 'nothing was sent out of order');
  t.ok(await waitFor(() => server.connectionCount === 0));
  t.ok((await settleFds(fdsBefore)) <= fdsBefore, 'no fd leaked');
});
