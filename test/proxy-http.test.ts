// The reverse proxy in HTTP mode: keep-alive with pooled upstream
// connections, header rewriting (X-Forwarded-For, hop-by-hop removal),
// chunked bodies both ways, 502 when no upstream answers (after failover),
// 504 on an upstream timeout, 400 for a malformed request, an upstream dying
// mid-response, the PROXY protocol in front, no fd leaks; and the response
// parser on its own.
import t, { type Test } from 'tap';
import { once } from 'node:events';
import * as http from 'node:http';
import * as net from 'node:net';
import { collectCopies, connected, iomux, listen, openFds, settleFds, waitFor } from './helpers';
import { encodeV2, ResponseParser, type ProxyOptions, type ResponseHead } from '../dist/proxy';
import { deadPort, startProxy as startAnyProxy } from './proxy-helpers';

function startProxy(t: Test, options: Omit<ProxyOptions, 'mode'>): ReturnType<typeof startAnyProxy> {
  return startAnyProxy(t, { mode: 'http', ...options });
}

/** An iomux HTTP backend answering with the request's method, url, headers and body as JSON; counts its connections. */
async function jsonBackend(t: Test): Promise<{ port: number; connections: () => number; requests: () => number }> {
  let connections = 0;
  let requests = 0;
  const server = iomux.http.createServer(async (req, res) => {
    let body: Buffer;
    try {
      body = await req.body();
    } catch {
      return; // the proxy cut the request short (its client sent a malformed body)
    }
    requests++;
    const reply = JSON.stringify({ method: req.method, url: req.url, raw: req.rawHeaders, body: body.toString() });
    res.writeHead(200, { 'Content-Type': 'application/json', 'X-Hop': 'drop me', Connection: 'X-Hop' }).end(reply);
  });
  server.on('connection', () => connections++);
  const port = await listen(server as unknown as iomux.Server);
  t.teardown(() => server.close());
  return { port, connections: () => connections, requests: () => requests };
}

/** Sends raw bytes; resolves to everything received until the proxy closes. */
async function raw(port: number, text: string | Buffer): Promise<string> {
  const c = iomux.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  c.on('error', () => {});
  const got = collectCopies(c);
  await connected(c);
  c.write(text);
  const text2 = (await got).toString('latin1');
  c.destroy(); // half-open after the proxy's FIN: close our side too
  return text2;
}

function request(port: number, opts: http.RequestOptions, body?: string | string[]): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, ...opts }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (Array.isArray(body)) {
      for (const b of body) req.write(b);
      req.end();
    } else {
      req.end(body);
    }
  });
}

function header(rawHeaders: string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) out.push(rawHeaders[i + 1]!);
  return out;
}

t.test('keep-alive through the proxy over pooled upstream connections', async (t) => {
  const a = await jsonBackend(t);
  const b = await jsonBackend(t);
  const { proxy, port } = await startProxy(t, { upstreams: [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`] });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 3 });
  t.teardown(() => agent.destroy());
  const N = 60;
  const results = await Promise.all(Array.from({ length: N }, (_, i) => request(port, {
    agent, method: 'POST', path: `/r/${i}`,
    headers: {
      'X-Forwarded-For': '192.0.2.1', 'X-Secret': 'hop', Connection: 'keep-alive, X-Secret',
      'Keep-Alive': 'timeout=5', TE: 'trailers', 'Proxy-Connection': 'keep-alive',
    },
  }, `body ${i}`)));
  for (let i = 0; i < N; i++) {
    const r = results[i]!;
    const j = JSON.parse(r.body);
    if (r.status !== 200 || j.url !== `/r/${i}` || j.body !== `body ${i}`) {
      t.fail(`request ${i}: ${r.status} ${r.body}`);
      return;
    }
  }
  t.pass(`${N} requests answered correctly`);
  const j = JSON.parse(results[0]!.body);
  t.same(header(j.raw, 'x-forwarded-for'), ['192.0.2.1, 127.0.0.1'], 'X-Forwarded-For appended');
  t.same(header(j.raw, 'x-forwarded-proto'), ['http']);
  for (const h of ['x-secret', 'keep-alive', 'te', 'proxy-connection', 'connection']) t.same(header(j.raw, h), [], `${h} removed`);
  const upstreamConnections = a.connections() + b.connections();
  t.ok(upstreamConnections < N / 4, `${upstreamConnections} upstream connections for ${N} requests`);
  t.ok(a.connections() > 0 && b.connections() > 0, 'both upstreams used');
  const st = proxy.stats();
  t.equal(st.requests, N);
  t.equal(st.upstreams[0]!.requests.total + st.upstreams[1]!.requests.total, N);
});

t.test('chunked bodies both ways, trailers kept', async (t) => {
  let seen: { te: string[]; cl: string[]; body: string; trailers: string[] } | null = null;
  const server = iomux.http.createServer(async (req, res) => {
    const body = (await req.body()).toString();
    seen = { te: header(req.rawHeaders, 'transfer-encoding'), cl: header(req.rawHeaders, 'content-length'), body, trailers: req.rawTrailers };
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    for (let i = 0; i < 5; i++) res.write(`part ${i};`);
    res.end();
  });
  const bport = await listen(server as unknown as iomux.Server);
  t.teardown(() => server.close());
  const { port } = await startProxy(t, { upstreams: [`127.0.0.1:${bport}`] });
  const r = await request(port, { method: 'PUT', path: '/up', agent: false }, ['one,', 'two,', 'three']);
  t.equal(r.status, 200);
  t.equal(r.headers['transfer-encoding'], 'chunked', 'chunked to the client');
  t.equal(r.body, 'part 0;part 1;part 2;part 3;part 4;');
  t.same(seen!.te, ['chunked'], 'chunked to the upstream');
  t.same(seen!.cl, []);
  t.equal(seen!.body, 'one,two,three');

  // Trailers, byte by byte: the parsers give the same result however the bytes are split.
  const reqText = 'POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\nX-Sum: 42\r\n\r\n';
  const c = iomux.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const got = collectCopies(c);
  await connected(c);
  for (const byte of Buffer.from(reqText)) c.write(Buffer.from([byte]));
  const text = (await got).toString();
  c.destroy();
  t.match(text, /^HTTP\/1\.1 200 OK\r\n/);
  t.match(text, /Connection: close\r\n/i, 'Connection: close as the client asked');
  t.equal(seen!.body, 'abc');
  t.same(seen!.trailers, ['X-Sum', '42'], 'request trailers forwarded');
});

t.test('502 when no upstream can be reached, after trying each', async (t) => {
  const d1 = await deadPort();
  const d2 = await deadPort();
  const { proxy, port, logs } = await startProxy(t, { upstreams: [`127.0.0.1:${d1}`, `127.0.0.1:${d2}`] });
  const r = await request(port, { path: '/', agent: false });
  t.equal(r.status, 502);
  t.match(r.body, /no upstream could be reached/);
  const st = proxy.stats();
  t.equal(st.upstreams[0]!.failures.connect + st.upstreams[1]!.failures.connect, 2, 'both were tried');
  t.ok(logs.some((l) => l.event === 'no-upstream'));
});

t.test('failover: one upstream down, no client sees an error', async (t) => {
  const a = await jsonBackend(t);
  const dead = await deadPort();
  const { port } = await startProxy(t, { upstreams: [`127.0.0.1:${dead}`, `127.0.0.1:${a.port}`], passive: { failures: 0 } });
  const rs = await Promise.all(Array.from({ length: 20 }, (_, i) => request(port, { path: `/${i}`, agent: false })));
  t.same(rs.map((r) => r.status), Array(20).fill(200));
});

t.test('malformed request: 400, one log line, the connection closed, others unaffected', async (t) => {
  const a = await jsonBackend(t);
  const { proxy, port, logs } = await startProxy(t, { upstreams: [`127.0.0.1:${a.port}`] });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  t.equal((await request(port, { path: '/before', agent })).status, 200);
  const bad = [
    ['GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n', 400],
    ['GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n', 400],
    ['GET / HTTP/1.1\r\n\r\n', 400],
    [`GET /${'a'.repeat(10000)} HTTP/1.1\r\nHost: x\r\n\r\n`, 431],
    ['POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 400],
  ] as const;
  for (const [text, status] of bad) {
    const got = await raw(port, text);
    t.match(got, new RegExp(`^HTTP/1\\.1 ${status} `), `${status} for ${JSON.stringify(text.slice(0, 40))}`);
    t.match(got, /Connection: close/);
  }
  t.equal(logs.filter((l) => l.event === 'bad-request').length, bad.length, 'one log line each');
  t.equal(proxy.stats().errors.badRequest, bad.length);
  t.equal((await request(port, { path: '/after', agent })).status, 200, 'the keep-alive client is unaffected');
  t.equal(a.requests(), 2, 'no malformed request reached the upstream whole');
});

t.test('upstream dying mid-response: the client connection is closed, nothing leaks', async (t) => {
  const before = openFds();
  const backend = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => {
      s.write('HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n');
      s.write(Buffer.alloc(1000, 120));
      setTimeout(() => s.resetAndDestroy(), 20);
    });
  });
  backend.listen(0, '127.0.0.1');
  await once(backend, 'listening');
  const bport = (backend.address() as net.AddressInfo).port;
  const { proxy, port, logs } = await startProxy(t, { upstreams: [`127.0.0.1:${bport}`], passive: { failures: 0 } });
  for (let i = 0; i < 5; i++) {
    const got = await raw(port, 'GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
    const body = got.slice(got.indexOf('\r\n\r\n') + 4);
    t.ok(got.startsWith('HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n'), 'the head went out');
    t.equal(body.length, 1000, 'then the close: the client sees a truncated body, never a complete one');
  }
  t.equal(proxy.stats().upstreams[0]!.failures.reset, 5);
  t.ok(logs.some((l) => l.event === 'upstream-reset' && /middle of a response/.test(l.message)));

  // A 502 for a failure before the head.
  const early = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => s.resetAndDestroy());
  });
  early.listen(0, '127.0.0.1');
  await once(early, 'listening');
  const { proxy: proxy2, port: port2 } = await startProxy(t, { upstreams: [`127.0.0.1:${(early.address() as net.AddressInfo).port}`] });
  t.match(await raw(port2, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi'), /^HTTP\/1\.1 502 /);
  t.match(await raw(port2, 'HTTP/1.1 200 garbage\r\n\r\n'), /^HTTP\/1\.1 400 /);

  await proxy.close({ deadline: 0 });
  await proxy2.close({ deadline: 0 });
  await new Promise<void>((r) => backend.close(() => r()));
  await new Promise<void>((r) => early.close(() => r()));
  t.equal(await settleFds(before), before, 'fds back to where they were');
});

t.test('504 when the upstream does not answer in time; 502 for an invalid response', async (t) => {
  const silent = net.createServer((s) => s.on('error', () => {}));
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  t.teardown(() => { silent.close(); });
  const { proxy, port } = await startProxy(t, { upstreams: [`127.0.0.1:${(silent.address() as net.AddressInfo).port}`], responseTimeout: 300 });
  const started = Date.now();
  const r = await request(port, { path: '/', agent: false });
  t.equal(r.status, 504);
  t.ok(Date.now() - started >= 290, 'after the timeout');
  t.equal(proxy.stats().upstreams[0]!.failures.timeout, 1);

  const liar = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => s.end('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n'));
  });
  liar.listen(0, '127.0.0.1');
  await once(liar, 'listening');
  t.teardown(() => { liar.close(); });
  const { proxy: p2, port: port2 } = await startProxy(t, { upstreams: [`127.0.0.1:${(liar.address() as net.AddressInfo).port}`] });
  t.equal((await request(port2, { path: '/', agent: false })).status, 502, 'TE with Content-Length: 502');
  t.equal(p2.stats().upstreams[0]!.failures.protocol, 1);

  const hoppy = net.createServer((s) => {
    s.on('error', () => {});
    s.once('data', () => s.end('HTTP/1.1 200 OK\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=1\r\n' +
      'Upgrade: h2c\r\nX-Kept: yes\r\n\r\nclose-delimited'));
  });
  hoppy.listen(0, '127.0.0.1');
  await once(hoppy, 'listening');
  t.teardown(() => { hoppy.close(); });
  const { port: port3 } = await startProxy(t, { upstreams: [`127.0.0.1:${(hoppy.address() as net.AddressInfo).port}`] });
  const r3 = await request(port3, { path: '/', agent: false });
  t.equal(r3.body, 'close-delimited', 'a close-delimited body, re-framed');
  t.equal(r3.headers['transfer-encoding'], 'chunked', 'as chunked for an HTTP/1.1 client');
  t.equal(r3.headers['x-kept'], 'yes');
  for (const h of ['x-hop', 'keep-alive', 'upgrade']) t.equal(r3.headers[h], undefined, `response ${h} removed`);
});

t.test('PROXY protocol in front of HTTP mode: X-Forwarded-For names the original client', async (t) => {
  const a = await jsonBackend(t);
  const { port } = await startProxy(t, { acceptProxy: 2, upstreams: [`127.0.0.1:${a.port}`] });
  const pp = encodeV2({ family: 'tcp6', sourceAddress: '2001:db8::7', sourcePort: 5555, destinationAddress: '2001:db8::1', destinationPort: 80 });
  const got = await raw(port, Buffer.concat([pp, Buffer.from('GET /p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')]));
  const j = JSON.parse(got.slice(got.indexOf('\r\n\r\n') + 4));
  t.same(header(j.raw, 'x-forwarded-for'), ['2001:db8::7']);
  t.equal(await raw(port, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n'), '', 'no header: closed without a word');
});

t.test('drain: a request under way completes, idle keep-alive connections close', async (t) => {
  const server = iomux.http.createServer((req, res) => {
    setTimeout(() => res.end('slow'), 300);
  });
  const bport = await listen(server as unknown as iomux.Server);
  t.teardown(() => server.close());
  const { proxy, port } = await startProxy(t, { upstreams: [`127.0.0.1:${bport}`] });
  const pending = request(port, { path: '/slow', agent: false });
  await waitFor(() => proxy.stats().upstreams[0]!.requests.active === 1);
  const closed = proxy.close({ deadline: 5000 });
  const r = await pending;
  t.equal(r.status, 200);
  t.equal(r.body, 'slow');
  t.equal(r.headers.connection, 'close', 'with Connection: close');
  await closed;
  t.pass('closed once the request was done');
});

// ---- the response parser --------------------------------------------------------------

function parseAll(chunks: Buffer[], method = 'GET'): { heads: ResponseHead[]; body: string; trailers: string[] | null; ended: boolean } {
  const out = { heads: [] as ResponseHead[], body: '', trailers: null as string[] | null, ended: false };
  const p = new ResponseParser({
    onHead: (h) => out.heads.push(h),
    onBody: (b) => { out.body += b.toString('latin1'); },
    onEnd: (tr) => { out.trailers = tr; out.ended = true; },
  });
  p.expect(method);
  for (const c of chunks) p.execute(c);
  if (!out.ended) p.finish();
  return out;
}

function bytewise(s: string): Buffer[] {
  return [...Buffer.from(s, 'latin1')].map((b) => Buffer.from([b]));
}

t.test('Upgrade: a 101 joins client and upstream (bytes both ways, early bytes kept); a refused one closes', async (t) => {
  // A node:http backend that switches /echo to an echo protocol, greeting in
  // the same write as its 101 head, and refuses /no.
  const backend = http.createServer((_req, res) => res.end('plain'));
  let upgradeHeaders: http.IncomingHttpHeaders | null = null;
  backend.on('upgrade', (req: http.IncomingMessage, sock: net.Socket, head: Buffer) => {
    upgradeHeaders = req.headers;
    if (req.url === '/no') {
      sock.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno');
      return;
    }
    sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nhello;');
    if (head.length > 0) sock.write(head);
    sock.pipe(sock);
  });
  backend.listen(0, '127.0.0.1');
  await once(backend, 'listening');
  t.teardown(() => backend.close());
  const bport = (backend.address() as net.AddressInfo).port;
  const before = openFds();
  const { proxy, port } = await startProxy(t, { upstreams: [`127.0.0.1:${bport}`] });

  const c = iomux.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  c.on('error', () => {});
  const got = collectCopies(c);
  await connected(c);
  // Early bytes in the same write as the request: they belong to the new protocol.
  c.write('GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\nearly;');
  let received = '';
  c.on('data', (d: Buffer) => { received += d.toString('latin1'); });
  const ok = await waitFor(() => received.includes('hello;early;'), 5000);
  t.ok(ok, 'the 101, the greeting, then the early bytes echoed');
  if (!ok) t.comment(JSON.stringify(received));
  t.match(received, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
  t.match(received, /\r\nUpgrade: echo\r\n/i);
  t.match(received, /\r\nConnection: upgrade\r\n/i);
  t.equal(upgradeHeaders!.upgrade, 'echo', 'the upstream got Upgrade');
  t.match(String(upgradeHeaders!.connection), /upgrade/i, 'and Connection: upgrade');
  // Then a megabyte each way, through the core.
  const big = Buffer.alloc(1 << 20);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7 + 3) & 0xff;
  const start = received.length;
  c.write(big);
  c.end();
  const all = await got;
  const echoed = all.subarray(Buffer.byteLength(received.slice(0, start), 'latin1'));
  t.equal(Buffer.compare(echoed, big), 0, '1 MiB echoed intact, then the FIN');
  c.destroy();
  await waitFor(() => proxy.stats().upstreams[0]!.requests.upgraded === 1, 2000);
  t.equal(proxy.stats().upstreams[0]!.requests.upgraded, 1, 'counted as upgraded');

  // Refused: relayed as it came, then the client connection closes.
  const refused = await raw(port, 'GET /no HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n');
  t.match(refused, /^HTTP\/1\.1 403 Forbidden\r\n/);
  t.match(refused, /\r\nConnection: close\r\n\r\nno$/);
  // Not asked for: a 101 is an invalid response (502).
  const plain = await request(port, { path: '/', headers: { Connection: 'keep-alive' } });
  t.equal(plain.status, 200, 'plain requests still work');
  await proxy.close();
  t.equal(await settleFds(before), before, 'fds back to where they were');
});

t.test('ResponseParser', async (t) => {
  const chunked = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n00006\r\n world\r\n0\r\nX-T: 1\r\n\r\n';
  for (const chunks of [[Buffer.from(chunked)], bytewise(chunked)]) {
    const r = parseAll(chunks);
    t.equal(r.body, 'hello world');
    t.same(r.trailers, ['X-T', '1']);
    t.equal(r.heads[0]!.bodyKind, 'chunked');
  }
  const info = parseAll([Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n')]);
  t.same(info.heads.map((h) => h.status), [100, 204], 'a 1xx, then the final response; 204 has no body');
  t.equal(info.ended, true);
  const head = parseAll([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n')], 'HEAD');
  t.equal(head.ended, true, 'a response to HEAD has no body');
  const close = parseAll([Buffer.from('HTTP/1.0 200 OK\r\n\r\nuntil'), Buffer.from(' the close')]);
  t.equal(close.body, 'until the close');
  t.equal(close.heads[0]!.keepAlive, false);
  const bad: [string, string][] = [
    ['HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n', 'HTTP_TE_WITH_CONTENT_LENGTH'],
    ['HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n', 'HTTP_CONFLICTING_CONTENT_LENGTH'],
    ['HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n', 'HTTP_INVALID_CONTENT_LENGTH'],
    ['HTTP/1.1 200 OK\nContent-Length: 1\n\n', 'HTTP_BARE_LF'],
    ['HTTP/2 200 OK\r\n\r\n', 'HTTP_INVALID_STATUS_LINE'],
    ['HTTP/1.1 200 OK\r\n Folded: x\r\n\r\n', 'HTTP_OBS_FOLD'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n', 'HTTP_INVALID_CHUNK_SIZE'],
    ['HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab', 'HTTP_UNEXPECTED_DATA'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n', 'HTTP_INVALID_CHUNK'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n', 'HTTP_BARE_LF'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000\r\n', 'HTTP_INVALID_CHUNK_SIZE'],
    ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nBad Trailer\r\n\r\n', 'HTTP_INVALID_TRAILER'],
    ['HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab', 'HTTP_INCOMPLETE_RESPONSE'],
  ];
  for (const [text, code] of bad) {
    for (const chunks of [[Buffer.from(text, 'latin1')], bytewise(text)]) {
      let err: unknown = null;
      try {
        parseAll(chunks);
      } catch (e) {
        err = e;
      }
      t.match(err, { code, status: 502 }, `${code} (${chunks.length > 1 ? 'byte by byte' : 'whole'})`);
    }
  }
});
