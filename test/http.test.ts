// iomux's HTTP/1.1 server (iomux.http) against real clients: node's http
// client, undici (and fetch), curl, and raw sockets for what clients do not
// show: pipelining, interim responses, HTTP/1.0, exact framing.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { rmSync, writeFileSync } from 'node:fs';
import * as nodeHttp from 'node:http';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import t, { type Test } from 'tap';
import { Client, request as undiciRequest } from 'undici';
import { sleep, statsDelta, tempDir } from './helpers';
import { curl, parseResponses, rawClient, request, serve, sha, type Req, type Res } from './http-helpers';

const IMF_FIXDATE = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$/;

t.test('GET and POST from node:http, undici and fetch; body(), text(), json()', async (t) => {
  const { port } = await serve(t, async (req, res) => {
    if (req.headers['content-type'] === 'application/json') {
      const obj = await req.json<{ n: number }>();
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ n: obj.n + 1, url: req.url }));
      return;
    }
    if (req.url === '/buffer') {
      const b = await req.body();
      res.end(`${Buffer.isBuffer(b)} ${b.length} ${sha(b)}`);
      return;
    }
    const text = await req.text();
    res.setHeader('X-Method', req.method);
    res.end(`${req.method} ${req.url} ${req.httpVersion} [${text}] ${String(req.headers['x-test'])} ${req.rawHeaders.includes('X-Test')}`);
  });

  const r1 = await request(port, { path: '/a?b=1', headers: { 'X-Test': 'yes' } });
  t.equal(r1.status, 200);
  t.equal(r1.body.toString(), 'GET /a?b=1 1.1 [] yes true', 'headers lower-cased, rawHeaders as sent');
  t.equal(r1.headers['content-length'], String(r1.body.length), 'end(text) in one call: Content-Length');
  t.equal(r1.headers['transfer-encoding'], undefined);
  t.equal(r1.headers['x-method'], 'GET');

  const r2 = await request(port, { method: 'POST', path: '/p', body: 'payload \u00e9' });
  t.equal(r2.body.toString(), 'POST /p 1.1 [payload \u00e9] undefined false', 'text() decodes UTF-8');

  const bin = randomBytes(100_000);
  const r3 = await request(port, { method: 'PUT', path: '/buffer', body: bin });
  t.equal(r3.body.toString(), `true 100000 ${sha(bin)}`, 'body() is the whole Buffer');

  const u = await undiciRequest(`http://127.0.0.1:${port}/u`, {
    method: 'POST', body: JSON.stringify({ n: 41 }), headers: { 'content-type': 'application/json' },
  });
  t.equal(u.statusCode, 200);
  t.equal(u.headers['content-type'], 'application/json');
  t.same(await u.body.json(), { n: 42, url: '/u' }, 'undici: json()');

  const f = await fetch(`http://127.0.0.1:${port}/f`, { method: 'PATCH', body: 'abc', headers: { 'x-test': 'f' } });
  t.equal(f.status, 200);
  t.equal(await f.text(), 'PATCH /f 1.1 [abc] f false', 'fetch');

  const c = await curl(['-d', 'from curl', `http://127.0.0.1:${port}/c`]);
  t.equal(c.code, 0, c.stderr);
  t.equal(c.stdout.toString(), 'POST /c 1.1 [from curl] undefined false', 'curl');
});

t.test('body(limit) rejects a body over the limit; the connection serves the next request', async (t) => {
  const errors: string[] = [];
  const { port, sockets } = await serve(t, async (req, res) => {
    try {
      const b = await req.body(1000);
      res.end(`ok ${b.length}`);
    } catch (err) {
      errors.push((err as NodeJS.ErrnoException).code!);
      res.statusCode = 413;
      res.end('too big');
    }
  });
  const agent = new nodeHttp.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const r1 = await request(port, { method: 'POST', body: randomBytes(200_000), agent });
  t.equal(r1.status, 413);
  t.same(errors, ['ERR_HTTP_BODY_TOO_LARGE']);
  const r2 = await request(port, { method: 'POST', body: 'x'.repeat(999), agent });
  t.equal(r2.status, 200);
  t.equal(r2.body.toString(), 'ok 999', 'the rest of the big body was dropped, the next request parsed');
  t.equal(sockets.length, 1, 'one connection');
});

/** A client that writes its body piece by piece, each only after the server saw the one before. */
async function stepwiseUpload(t: Test, mode: 'data' | 'iterate') {
  const pieces = ['one-', 'two-', 'three-', 'four'];
  let seen: (n: number) => void = () => {};
  const events: string[] = [];
  const { port } = await serve(t, async (req, res) => {
    let n = 0;
    const consume = async () => {
      if (mode === 'data') {
        const got: Buffer[] = [];
        req.on('data', (c: Buffer) => {
          got.push(Buffer.from(c));
          events.push(`data ${c.toString()}`);
          seen(++n);
        });
        await once(req, 'end');
        return Buffer.concat(got);
      }
      const got: Buffer[] = [];
      for await (const c of req) {
        got.push(Buffer.from(c));
        events.push(`data ${c.toString()}`);
        seen(++n);
      }
      return Buffer.concat(got);
    };
    const body = await consume();
    events.push('end');
    res.end(`${mode}: ${body.toString()}`);
  });
  const reply = new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = nodeHttp.request({ host: '127.0.0.1', port, method: 'POST', path: '/' }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    (async () => {
      for (let i = 0; i < pieces.length; i++) {
        const got = new Promise<number>((r) => { seen = r; });
        req.write(pieces[i]);
        t.equal(await got, i + 1, `the server saw piece ${i + 1} before piece ${i + 2} was sent`);
      }
      req.end();
    })().catch(reject);
  });
  const r = await reply;
  t.equal(r.status, 200);
  t.equal(r.body, `${mode}: ${pieces.join('')}`);
  t.same(events, [...pieces.map((p) => `data ${p}`), 'end'], 'the body arrived as it was sent, then end');
}

t.test('a streaming request body via data events', (t) => stepwiseUpload(t, 'data'));
t.test('a streaming request body via async iteration', (t) => stepwiseUpload(t, 'iterate'));

t.test('8 MiB uploads, checksummed: node (Content-Length), undici (chunked), curl (Expect: 100-continue)', async (t) => {
  const big = randomBytes(8 * 1024 * 1024);
  const digest = sha(big);
  const expects: (string | undefined)[] = [];
  let paused = 0;
  const { port } = await serve(t, async (req, res) => {
    expects.push(req.headers.expect as string | undefined);
    const h = createHash('sha256');
    let n = 0;
    let size = 0;
    // A slow consumer: reading stops while the body waits.
    for await (const c of req) {
      h.update(c);
      size += c.length;
      if (++n % 16 === 0) {
        paused++;
        await sleep(1);
      }
    }
    res.end(`${size} ${h.digest('hex')} ${String(req.headers['transfer-encoding'])}`);
  });

  const r1 = await request(port, { method: 'POST', body: big });
  t.equal(r1.body.toString(), `${big.length} ${digest} undefined`, 'node: Content-Length body intact');

  const u = await undiciRequest(`http://127.0.0.1:${port}/`, {
    method: 'POST',
    body: Readable.from((function* () {
      for (let off = 0; off < big.length; off += 100_000) yield big.subarray(off, off + 100_000);
    })()),
  });
  t.equal(await u.body.text(), `${big.length} ${digest} chunked`, 'undici: chunked body intact');

  const dir = tempDir('iomux-http-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'big.bin');
  writeFileSync(file, big);
  const c = await curl(['-v', '--data-binary', `@${file}`, '-H', 'Content-Type: application/octet-stream', `http://127.0.0.1:${port}/`]);
  t.equal(c.code, 0, c.stderr.slice(-500));
  t.equal(c.stdout.toString(), `${big.length} ${digest} undefined`, 'curl: body intact');
  t.equal(expects[2], '100-continue', 'curl asked for 100-continue');
  t.match(c.stderr, /< HTTP\/1\.1 100 Continue/, 'and got it');
  t.ok(paused > 0, 'the handler paused while reading');
});

t.test('a large chunked response under backpressure: write() false, then drain; complete and in order', async (t) => {
  const BLOCK = 4 * 1024;
  const BLOCKS = 2048; // 8 MiB
  const block = (i: number) => {
    const b = Buffer.alloc(BLOCK, i & 0xff);
    b.writeUInt32BE(i, 0);
    return b;
  };
  const counts = { falses: 0, drains: 0, written: 0 };
  const { port } = await serve(t, async (req, res) => {
    res.on('drain', () => counts.drains++);
    if (req.url === '/ignore') {
      // A handler that ignores write()'s false: nothing is dropped either.
      for (let i = 0; i < BLOCKS; i++) res.write(block(i));
      res.end();
      return;
    }
    for (let i = 0; i < BLOCKS; i++) {
      counts.written = i;
      if (!res.write(block(i))) {
        counts.falses++;
        await once(res, 'drain');
      }
    }
    counts.written = BLOCKS;
    res.end();
  });

  const check = (body: Buffer, what: string) => {
    t.equal(body.length, BLOCK * BLOCKS, `${what}: every byte arrived`);
    let bad = -1;
    for (let i = 0; i < BLOCKS && bad < 0; i++) {
      if (!body.subarray(i * BLOCK, (i + 1) * BLOCK).equals(block(i))) bad = i;
    }
    t.equal(bad, -1, `${what}: every block in order`);
  };

  // The client waits before reading, so that the socket's buffers fill.
  let writtenWhilePaused = -1;
  const slow = await new Promise<{ te: string | undefined; body: Buffer }>((resolve, reject) => {
    nodeHttp.get({ host: '127.0.0.1', port, path: '/' }, (res) => {
      res.pause();
      const chunks: Buffer[] = [];
      setTimeout(() => {
        writtenWhilePaused = counts.written;
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ te: res.headers['transfer-encoding'], body: Buffer.concat(chunks) }));
        res.resume();
      }, 200);
    }).on('error', reject);
  });
  t.equal(slow.te, 'chunked', 'no length known: chunked');
  t.ok(writtenWhilePaused > 0 && writtenWhilePaused < BLOCKS,
    `the handler was held back while the client did not read (${writtenWhilePaused} of ${BLOCKS} blocks written)`);
  check(slow.body, 'with drain');
  t.ok(counts.falses > 0, `write() returned false (${counts.falses} times)`);
  t.equal(counts.drains, counts.falses, "each false was followed by one 'drain'");

  const r = await request(port, { path: '/ignore' });
  check(r.body, 'ignoring false');
});

t.test('HEAD: the headers a GET would get, no body bytes; the connection stays in step', async (t) => {
  const { port } = await serve(t, (req, res) => {
    if (req.url === '/stream') {
      res.write('part one, ');
      res.end('part two');
      return;
    }
    res.setHeader('Content-Type', 'text/plain');
    res.end('hello world');
  });
  const r = await request(port, { method: 'HEAD' });
  t.equal(r.status, 200);
  t.equal(r.headers['content-length'], '11', 'Content-Length of the body a GET would get');
  t.equal(r.body.length, 0);

  const c = rawClient(port);
  t.teardown(() => c.sock.destroy());
  c.sock.write('HEAD / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /stream HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n');
  const rs = await c.responses(3, (i) => i < 2);
  t.equal(rs.length, 3, 'exactly three responses: nothing extra after the HEAD responses');
  t.equal(rs[0]!.headers['content-length'], '11');
  t.equal(rs[0]!.body.length, 0);
  t.equal(rs[1]!.headers['transfer-encoding'], 'chunked', 'HEAD of a streamed response: chunked, no chunks');
  t.equal(rs[2]!.body.toString(), 'hello world', 'the GET after them is framed right');
});

t.test('204 and 304: no body, no framing headers', async (t) => {
  const { port } = await serve(t, (req, res) => {
    if (req.url === '/204') {
      res.statusCode = 204;
      res.end('dropped');
    } else if (req.url === '/304') {
      res.writeHead(304, { ETag: '"x"' });
      res.write('dropped too');
      res.end();
    } else {
      res.end('after');
    }
  });
  const c = rawClient(port);
  t.teardown(() => c.sock.destroy());
  c.sock.write('GET /204 HTTP/1.1\r\nHost: x\r\n\r\nGET /304 HTTP/1.1\r\nHost: x\r\n\r\nGET /ok HTTP/1.1\r\nHost: x\r\n\r\n');
  const rs = await c.responses(3);
  t.same(rs.map((r) => r.status), [204, 304, 200]);
  for (const r of rs.slice(0, 2)) {
    t.equal(r.headers['content-length'], undefined, `${r.status}: no Content-Length`);
    t.equal(r.headers['transfer-encoding'], undefined, `${r.status}: no Transfer-Encoding`);
  }
  t.equal(rs[1]!.headers.etag, '"x"');
  t.equal(rs[2]!.body.toString(), 'after', 'no stray body bytes before the next response');
  const n = await request(port, { path: '/204' });
  t.equal(n.status, 204);
  t.equal(n.body.length, 0);
});

t.test('chunked bodies both ways, with trailers', async (t) => {
  const { port } = await serve(t, (req, res) => {
    const h = createHash('sha256');
    res.setHeader('Trailer', 'X-Got-Sum, X-Client-Sum');
    req.on('data', (c: Buffer) => {
      h.update(c);
      res.write(c); // echoed as it comes: chunked
    });
    req.on('end', () => {
      res.addTrailers({ 'X-Got-Sum': h.digest('hex'), 'X-Client-Sum': req.trailers['x-sum'] ?? 'none' });
      res.end();
    });
  });

  const pieces = [randomBytes(10), randomBytes(70_000), randomBytes(1), randomBytes(300_000)];
  const all = Buffer.concat(pieces);
  const reply = await new Promise<{ te?: string; body: Buffer; trailers: NodeJS.Dict<string> }>((resolve, reject) => {
    const req = nodeHttp.request({ host: '127.0.0.1', port, method: 'POST', headers: { Trailer: 'X-Sum' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ te: res.headers['transfer-encoding'], body: Buffer.concat(chunks), trailers: res.trailers }));
    });
    req.on('error', reject);
    for (const p of pieces) req.write(p);
    req.addTrailers({ 'X-Sum': sha(all) });
    req.end();
  });
  t.equal(reply.te, 'chunked');
  t.ok(reply.body.equals(all), 'the body came back whole');
  t.equal(reply.trailers['x-got-sum'], sha(all), "the response's trailer: what the server received");
  t.equal(reply.trailers['x-client-sum'], sha(all), "the request's trailer reached the handler");

  // The exact bytes, from a raw socket: chunk extensions, trailers both ways.
  const c = rawClient(port);
  t.teardown(() => c.sock.destroy());
  c.sock.write('POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: abc\r\n\r\n');
  const [r] = await c.responses(1);
  t.equal(r!.headers['transfer-encoding'], 'chunked');
  t.equal(r!.body.toString(), 'hello world');
  t.same(r!.trailers, { 'x-got-sum': sha('hello world'), 'x-client-sum': 'abc' });
});

t.test('Expect: 100-continue', async (t) => {
  const order: string[] = [];
  const { server, port } = await serve(t, async (req, res) => {
    order.push(`request ${req.url}`);
    res.end(`got ${await req.text()}`);
  });

  t.test('100 Continue goes out before the body is sent, the final response after', async (t) => {
    const c = rawClient(port);
    t.teardown(() => c.sock.destroy());
    c.sock.write('POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n');
    await c.until((s) => s.includes('\r\n\r\n'));
    t.equal(c.text(), 'HTTP/1.1 100 Continue\r\n\r\n', 'the interim response alone');
    await sleep(30);
    t.equal(c.text(), 'HTTP/1.1 100 Continue\r\n\r\n', 'nothing more until the body is sent');
    c.sock.write('hello');
    const rs = await c.responses(1);
    t.same(rs.map((r) => r.status), [100, 200], '100 first, then the final response');
    t.equal(rs[1]!.body.toString(), 'got hello');
    t.equal(rs[1]!.headers.connection, undefined, 'keep-alive');
    c.sock.write('GET /next HTTP/1.1\r\nHost: x\r\n\r\n');
    const rs2 = await c.responses(2);
    t.equal(rs2[2]!.body.toString(), 'got ', 'the connection goes on');
  });

  t.test('curl with a small body and Expect forced', async (t) => {
    const r = await curl(['-v', '-H', 'Expect: 100-continue', '--data-binary', 'small', `http://127.0.0.1:${port}/curl`]);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout.toString(), 'got small');
    t.match(r.stderr, /< HTTP\/1\.1 100 Continue[\s\S]*< HTTP\/1\.1 200 OK/);
  });

  t.test("'checkContinue': the application decides", async (t) => {
    const checked: string[] = [];
    const onCheck = (req: Req, res: Res) => {
      checked.push(req.url);
      if (req.url === '/deny') {
        res.writeHead(417);
        res.end('no');
        return;
      }
      res.writeContinue();
      server.emit('request', req, res);
    };
    server.on('checkContinue', onCheck);
    t.teardown(() => { server.removeListener('checkContinue', onCheck); });
    order.length = 0;

    const ok = rawClient(port);
    t.teardown(() => ok.sock.destroy());
    ok.sock.write('PUT /ok HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n');
    await ok.until((s) => s.includes('\r\n\r\n'));
    t.equal(ok.text(), 'HTTP/1.1 100 Continue\r\n\r\n');
    ok.sock.write('abc');
    const rs = await ok.responses(1);
    t.equal(rs[1]!.body.toString(), 'got abc');

    const deny = rawClient(port);
    t.teardown(() => deny.sock.destroy());
    deny.sock.write('PUT /deny HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n');
    const [d] = await deny.responses(1);
    t.equal(d!.status, 417, 'a final status without 100 Continue');
    t.equal(d!.headers.connection, 'close', 'and the connection closes: the client may or may not send the body');
    await deny.waitEnd();
    t.same(checked, ['/ok', '/deny']);
    t.same(order, ['request /ok'], "'request' only for the one let through");
  });

  t.test('an expectation other than 100-continue: 417', async (t) => {
    const c = rawClient(port);
    t.teardown(() => c.sock.destroy());
    c.sock.write('POST / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\nContent-Length: 0\r\n\r\n');
    const [r] = await c.responses(1);
    t.equal(r!.status, 417);
  });
});

t.test('pipelining: 10 requests in one write, handlers finishing out of order, responses in request order', async (t) => {
  const finished: number[] = [];
  const finishEvents: number[] = [];
  const { port, sockets } = await serve(t, async (req, res) => {
    const i = Number(req.url.slice(1));
    res.on('finish', () => finishEvents.push(i));
    const body = await req.text();
    if (i % 3 === 0) await sleep((10 - i) * 10); // the early ones finish last
    else if (i % 3 === 1) await new Promise((r) => setImmediate(r));
    finished.push(i);
    res.setHeader('X-I', String(i));
    if (i === 4) {
      res.write('four, ');
      await sleep(5);
      res.end('in pieces');
    } else {
      res.end(`r${i}:${body}`);
    }
  });
  let batch = '';
  for (let i = 0; i < 10; i++) {
    const close = i === 9 ? 'Connection: close\r\n' : '';
    batch += i % 2 === 0
      ? `POST /${i} HTTP/1.1\r\nHost: x\r\n${close}Content-Length: ${`b${i}`.length}\r\n\r\nb${i}`
      : `GET /${i} HTTP/1.1\r\nHost: x\r\n${close}\r\n`;
  }
  const c = rawClient(port);
  c.sock.write(batch);
  await c.waitEnd();
  const rs = parseResponses(c.data());
  t.equal(rs.length, 10);
  t.same(rs.map((r) => r.headers['x-i']), ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'], 'in request order');
  t.same(rs.map((r) => r.body.toString()), [
    'r0:b0', 'r1:', 'r2:b2', 'r3:', 'four, in pieces', 'r5:', 'r6:b6', 'r7:', 'r8:b8', 'r9:',
  ]);
  t.equal(rs[4]!.headers['transfer-encoding'], 'chunked');
  t.equal(rs[9]!.headers.connection, 'close', 'the last asked to close');
  t.notSame(finished, [...finished].sort((a, b) => a - b), `the handlers did finish out of order (${finished.join(',')})`);
  t.same(finishEvents, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "'finish' in request order: a held response finishes when it goes out");
  t.equal(sockets.length, 1);
});

t.test('pipelining: a held response past the high-water mark gets false, then drain when its turn comes', async (t) => {
  const BLOCK = 8 * 1024;
  const stats = { falses: 0, drains: 0, falseWhileHeld: false };
  let firstDone = false;
  const { port } = await serve(t, async (req, res) => {
    if (req.url === '/slow') {
      await sleep(100);
      firstDone = true;
      res.end('slow');
      return;
    }
    res.on('drain', () => stats.drains++);
    for (let i = 0; i < 32; i++) {
      if (!res.write(Buffer.alloc(BLOCK, 65 + (i % 26)))) {
        stats.falses++;
        if (!firstDone) stats.falseWhileHeld = true;
        await once(res, 'drain');
      }
    }
    res.end();
  });
  const c = rawClient(port);
  t.teardown(() => c.sock.destroy());
  c.sock.write('GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /big HTTP/1.1\r\nHost: x\r\n\r\n');
  const rs = await c.responses(2);
  t.equal(rs[0]!.body.toString(), 'slow', 'the slow one first');
  const expected = Buffer.concat(Array.from({ length: 32 }, (_, i) => Buffer.alloc(BLOCK, 65 + (i % 26))));
  t.ok(rs[1]!.body.equals(expected), 'the held one complete and in order');
  t.ok(stats.falseWhileHeld, 'write() returned false while held behind the slow one');
  t.equal(stats.drains, stats.falses);
});

t.test('pipelining: past maxPipelinedRequests reading pauses, and every request is still answered', async (t) => {
  const { port } = await serve(t, async (req, res) => {
    await sleep(3);
    res.end(req.url);
  }, { maxPipelinedRequests: 2 });
  const c = rawClient(port);
  t.teardown(() => c.sock.destroy());
  let batch = '';
  for (let i = 0; i < 12; i++) batch += `GET /${i} HTTP/1.1\r\nHost: x\r\n\r\n`;
  c.sock.write(batch);
  const rs = await c.responses(12);
  t.same(rs.map((r) => r.body.toString()), Array.from({ length: 12 }, (_, i) => `/${i}`));
});

t.test('Connection: close', async (t) => {
  const { port } = await serve(t, (req, res) => res.end(`hi ${req.url}`));
  const r = await request(port, { headers: { Connection: 'close' } });
  t.equal(r.headers.connection, 'close');
  t.equal(r.body.toString(), 'hi /');

  const c = rawClient(port);
  c.sock.write('GET /1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n');
  await c.waitEnd();
  const rs = parseResponses(c.data());
  t.equal(rs.length, 1, 'nothing after the request that asked to close');
  t.equal(rs[0]!.body.toString(), 'hi /1');
  t.equal(rs[0]!.headers.connection, 'close');

  // The handler may ask for it too.
  const { port: port2 } = await serve(t, (req, res) => {
    res.setHeader('Connection', 'close');
    res.end('bye');
  });
  const c2 = rawClient(port2);
  c2.sock.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await c2.waitEnd();
  const [r2] = parseResponses(c2.data());
  t.equal(r2!.headers.connection, 'close');
  t.equal(r2!.body.toString(), 'bye');
});

t.test('HTTP/1.0', async (t) => {
  const { port } = await serve(t, (req, res) => {
    if (req.url === '/stream') {
      res.write('no ');
      res.end('length');
      return;
    }
    res.end(`v${req.httpVersion} ${req.url}`);
  });

  t.test('without keep-alive: closed after the response', async (t) => {
    const c = rawClient(port);
    c.sock.write('GET /a HTTP/1.0\r\n\r\n');
    await c.waitEnd();
    const rs = parseResponses(c.data());
    t.equal(rs.length, 1);
    t.match(rs[0]!.statusLine, /^HTTP\/1\.0 200 /);
    t.equal(rs[0]!.headers.connection, 'close');
    t.equal(rs[0]!.body.toString(), 'v1.0 /a');
  });

  t.test('with keep-alive: Content-Length, Connection: keep-alive, the connection reused', async (t) => {
    const c = rawClient(port);
    t.teardown(() => c.sock.destroy());
    c.sock.write('GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    const [r1] = await c.responses(1);
    t.equal(r1!.headers.connection, 'keep-alive');
    t.equal(r1!.headers['content-length'], '7');
    t.equal(r1!.body.toString(), 'v1.0 /1');
    c.sock.write('GET /2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    const rs = await c.responses(2);
    t.equal(rs[1]!.body.toString(), 'v1.0 /2');
    c.sock.write('GET /3 HTTP/1.0\r\n\r\n');
    await c.waitEnd();
    const all = parseResponses(c.data());
    t.equal(all.length, 3);
    t.equal(all[2]!.headers.connection, 'close', 'a request without keep-alive ends it');
  });

  t.test('a body of unknown length: no chunked in 1.0, the close delimits it', async (t) => {
    const c = rawClient(port);
    c.sock.write('GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n');
    await c.waitEnd();
    const [r] = parseResponses(c.data());
    t.equal(r!.headers['transfer-encoding'], undefined);
    t.equal(r!.headers['content-length'], undefined);
    t.equal(r!.headers.connection, 'close');
    t.equal(r!.body.toString(), 'no length');
  });

  t.test('curl speaking 1.0', async (t) => {
    const r = await curl(['--http1.0', `http://127.0.0.1:${port}/curl`]);
    t.equal(r.code, 0, r.stderr);
    t.equal(r.stdout.toString(), 'v1.0 /curl');
  });
});

t.test('the Date header: IMF-fixdate, made at most once a second', async (t) => {
  const { port } = await serve(t, (req, res) => {
    if (req.url === '/nodate') res.sendDate = false;
    if (req.url === '/own') res.setHeader('Date', 'Thu, 01 Jan 1970 00:00:00 GMT');
    res.end('d');
  });
  const c = rawClient(port);
  t.teardown(() => c.sock.destroy());
  c.sock.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
  await c.responses(1); // warm: the connection is up

  // Count the formatting of dates while 200 responses go out.
  const proto = Date.prototype;
  const real = proto.toUTCString;
  let formatted = 0;
  proto.toUTCString = function (this: Date) {
    formatted++;
    return real.call(this);
  };
  let startMs: number, endMs: number;
  let rs;
  try {
    startMs = Date.now();
    let batch = '';
    for (let i = 0; i < 200; i++) batch += 'GET / HTTP/1.1\r\nHost: x\r\n\r\n';
    c.sock.write(batch);
    rs = (await c.responses(201)).slice(1);
    endMs = Date.now();
  } finally {
    proto.toUTCString = real;
  }
  const seconds = Math.floor(endMs / 1000) - Math.floor(startMs / 1000) + 1;
  t.ok(formatted <= seconds, `${formatted} Date header(s) made for 200 responses over ${seconds} second(s)`);
  const dates = rs.map((r) => r.headers.date!);
  for (const d of new Set(dates)) {
    t.match(d, IMF_FIXDATE, 'IMF-fixdate');
    const ms = Date.parse(d);
    t.ok(ms >= Math.floor(startMs / 1000) * 1000 && ms <= endMs, 'the current time, to the second');
  }
  t.ok(new Set(dates).size <= seconds, 'one value per second');

  // In the next second it is a new one.
  await sleep(1000 - (Date.now() % 1000) + 5);
  const now = new Date();
  const r = await request(port);
  t.equal(r.headers.date, now.toUTCString(), 'a new second, a new Date');
  t.not(r.headers.date, dates[dates.length - 1]);

  t.equal((await request(port, { path: '/nodate' })).headers.date, undefined, 'sendDate = false');
  const own = await request(port, { path: '/own' });
  t.equal(own.rawHeaders.filter((h) => h.toLowerCase() === 'date').length, 1, 'one Date header');
  t.equal(own.headers.date, 'Thu, 01 Jan 1970 00:00:00 GMT', "the handler's own Date is kept");
});

t.test('keep-alive: many requests over one connection (node Agent, undici Client, curl)', async (t) => {
  const { port, sockets } = await serve(t, (req, res) => res.end(req.url));
  const agent = new nodeHttp.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 20; i++) {
    const r = await request(port, { path: `/n${i}`, agent });
    t.equal(r.body.toString(), `/n${i}`);
  }
  t.equal(sockets.length, 1, 'node: 1 connection for 20 requests');

  const client = new Client(`http://127.0.0.1:${port}`, { pipelining: 1 });
  t.teardown(() => client.close());
  for (let i = 0; i < 20; i++) {
    const r = await client.request({ path: `/u${i}`, method: 'GET' });
    t.equal(await r.body.text(), `/u${i}`);
  }
  t.equal(sockets.length, 2, 'undici: 1 more connection for 20 requests');

  const urls = Array.from({ length: 5 }, (_, i) => `http://127.0.0.1:${port}/c${i}`);
  const r = await curl(['-w', ' %{num_connects}', ...urls]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.toString(), '/c0 1/c1 0/c2 0/c3 0/c4 0', 'curl: one connect, then reuse');
  t.equal(sockets.length, 3);
});

t.test('req.remoteAddress and remotePort come without a syscall', async (t) => {
  const seen: unknown[] = [];
  const { port } = await serve(t, (req, res) => {
    seen.push([req.remoteAddress, req.remotePort]);
    res.end();
  });
  const delta = statsDelta();
  const r = await request(port, { agent: false });
  t.same(seen, [['127.0.0.1', r.socket.localPort]]);
  t.equal(delta().getpeername, 0, 'no getpeername');
});
