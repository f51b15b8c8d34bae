// The reverse proxy in TCP mode: 256 MiB each way checksummed, half-close in
// both directions, failover, balancing with weights, active health checks
// taking an upstream out and bringing it back, passive health, PROXY
// protocol v1 and v2 received and sent (and malformed headers refused), an
// upstream dying mid-stream, 1,000 concurrent connections, no fd leaks.
import t, { type Test } from 'tap';
import { once } from 'node:events';
import * as net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { closeServer, collectCopies, connected, echoServer, iomux, listen, openFds, settleFds, sleep, waitFor } from './helpers';
import { encodeV1, encodeV2, parseProxyHeader } from '../dist/proxy';
import { deadPort, startProxy } from './proxy-helpers';

/** Sends data and ends; resolves to what came back. */
async function roundTrip(port: number, data: Buffer | string): Promise<Buffer> {
  const c = iomux.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const got = collectCopies(c);
  await connected(c);
  c.end(data);
  return got;
}

/** Writes `blocks` times a block (a varying counter in its first 8 bytes) with backpressure, then ends; returns the sha256. */
async function sendStream(s: iomux.Socket, block: Buffer, blocks: number): Promise<string> {
  const h = createHash('sha256');
  for (let i = 0; i < blocks; i++) {
    const b = Buffer.from(block);
    b.writeUInt32BE(i, 0);
    h.update(b);
    if (!s.write(b)) await once(s, 'drain');
  }
  s.end();
  return h.digest('hex');
}

function hashIncoming(s: iomux.Socket): Promise<{ hash: string; bytes: number }> {
  return new Promise((resolve) => {
    const h = createHash('sha256');
    let bytes = 0;
    s.on('data', (d: Buffer) => {
      h.update(d);
      bytes += d.length;
    });
    s.on('end', () => resolve({ hash: h.digest('hex'), bytes }));
  });
}

t.test('256 MiB each way through the proxy, sha256 of both streams', async (t) => {
  const block = randomBytes(1024 * 1024);
  const blocks = 256;
  let backendResult: Promise<[string, { hash: string; bytes: number }]> | null = null;
  const backend = iomux.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    const pattern = Buffer.from(block.map((x) => x ^ 0x5a));
    backendResult = Promise.all([sendStream(s, pattern, blocks), hashIncoming(s)]);
  });
  const bport = await listen(backend);
  t.teardown(() => closeServer(backend));
  const { proxy, port } = await startProxy(t, { upstreams: [`127.0.0.1:${bport}`] });
  const c = iomux.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await connected(c);
  const started = Date.now();
  const [sentHash, received] = await Promise.all([sendStream(c, block, blocks), hashIncoming(c)]);
  const [backendSent, backendReceived] = await backendResult!;
  t.equal(backendReceived.bytes, blocks * block.length, 'backend received 256 MiB');
  t.equal(backendReceived.hash, sentHash, 'client → backend sha256 matches');
  t.equal(received.bytes, blocks * block.length, 'client received 256 MiB');
  t.equal(received.hash, backendSent, 'backend → client sha256 matches');
  await waitFor(() => proxy.stats().upstreams[0]!.bytesIn > 0, 2000);
  const st = proxy.stats().upstreams[0]!;
  t.equal(st.bytesOut, blocks * block.length, 'stats: bytes out');
  t.equal(st.bytesIn, blocks * block.length, 'stats: bytes in');
  t.comment(`512 MiB relayed in ${Date.now() - started} ms`);
});

t.test('half-close, client first: the backend still answers after the client FIN', async (t) => {
  const backend = iomux.createServer({ allowHalfOpen: true }, (s) => {
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(Buffer.from(d)));
    s.on('end', () => {
      // Only after the client's FIN arrived does the answer go out.
      setTimeout(() => s.end(`got ${Buffer.concat(chunks).toString()}`), 50);
    });
  });
  const bport = await listen(backend);
  t.teardown(() => closeServer(backend));
  const { port } = await startProxy(t, { upstreams: [`127.0.0.1:${bport}`] });
  const got = await roundTrip(port, 'question');
  t.equal(got.toString(), 'got question');
});

t.test('half-close, backend first: the client still sends after the backend FIN', async (t) => {
  let backendGot: Promise<Buffer> | null = null;
  const backend = iomux.createServer({ allowHalfOpen: true }, (s) => {
    backendGot = collectCopies(s);
    s.end('hello, then FIN');
  });
  const bport = await listen(backend);
  t.teardown(() => closeServer(backend));
  const { port } = await startProxy(t, { upstreams: [`127.0.0.1:${bport}`] });
  const c = iomux.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const chunks: Buffer[] = [];
  c.on('data', (d: Buffer) => chunks.push(Buffer.from(d)));
  await once(c, 'end');
  t.equal(Buffer.concat(chunks).toString(), 'hello, then FIN');
  c.end('late reply');
  await once(c, 'close');
  await waitFor(() => backendGot !== null);
  t.equal((await backendGot!).toString(), 'late reply', 'the backend got the bytes sent after its FIN');
});

t.test('failover: one upstream down, every connection goes to the other', async (t) => {
  const backend = echoServer({ allowHalfOpen: true });
  const bport = await listen(backend);
  t.teardown(() => closeServer(backend));
  const dead = await deadPort();
  const { proxy, port } = await startProxy(t, { upstreams: [`127.0.0.1:${dead}`, `127.0.0.1:${bport}`], passive: { failures: 0 } });
  const results = await Promise.all(Array.from({ length: 20 }, (_, i) => roundTrip(port, `msg ${i}`)));
  t.same(results.map(String), Array.from({ length: 20 }, (_, i) => `msg ${i}`), 'no client saw an error');
  const [d, live] = proxy.stats().upstreams;
  t.ok(d!.failures.connect >= 1, 'the dead upstream was tried');
  t.equal(live!.connections.total, 20, 'all 20 went to the live one');
});

t.test('passive health: connect failures take an upstream out for a cool-down', async (t) => {
  const backend = echoServer({ allowHalfOpen: true });
  const bport = await listen(backend);
  t.teardown(() => closeServer(backend));
  const dead = await deadPort();
  const { proxy, port, logs } = await startProxy(t, {
    upstreams: [`127.0.0.1:${dead}`, `127.0.0.1:${bport}`], passive: { failures: 2, cooldown: 60000 },
  });
  for (let i = 0; i < 10; i++) t.equal((await roundTrip(port, 'x')).toString(), 'x');
  const d = proxy.stats().upstreams[0]!;
  t.equal(d.state, 'down', 'taken out');
  t.equal(d.failures.connect, 2, 'no more attempts once down');
  t.ok(logs.some((l) => l.event === 'upstream-down' && l.upstream === `127.0.0.1:${dead}`), 'a log line says so');
});

t.test('round-robin honours weights; least-connections spreads concurrent load', async (t) => {
  const counts = [0, 0];
  const servers = [0, 1].map((i) => iomux.createServer({ allowHalfOpen: true }, (s) => {
    counts[i]!++;
    s.on('data', (d: Buffer) => s.write(d));
    s.on('end', () => s.end());
  }));
  const ports = [await listen(servers[0]!), await listen(servers[1]!)];
  t.teardown(() => Promise.all(servers.map(closeServer)));
  const rr = await startProxy(t, { upstreams: [{ host: '127.0.0.1', port: ports[0]!, weight: 3 }, `127.0.0.1:${ports[1]}`] });
  for (let i = 0; i < 40; i++) await roundTrip(rr.port, 'x');
  t.same(counts, [30, 10], 'weights 3:1');

  counts[0] = counts[1] = 0;
  const lc = await startProxy(t, { balance: 'least-connections', upstreams: [`127.0.0.1:${ports[0]}`, `127.0.0.1:${ports[1]}`] });
  // Long-lived connections: each new one goes where fewer are open.
  const held: iomux.Socket[] = [];
  for (let i = 0; i < 10; i++) {
    const c = iomux.connect(lc.port, '127.0.0.1');
    await connected(c);
    c.write('hi');
    await once(c, 'data');
    held.push(c);
  }
  t.same(counts, [5, 5], 'least-connections: 5 and 5');
  for (const c of held) c.end();
});

t.test('active health checks: a stopped backend is taken out, and back when restarted on its port', async (t) => {
  const a = echoServer({ allowHalfOpen: true });
  const b = echoServer({ allowHalfOpen: true });
  const aport = await listen(a);
  const bport = await listen(b);
  t.teardown(() => closeServer(b));
  const { proxy, port, logs } = await startProxy(t, {
    upstreams: [`127.0.0.1:${aport}`, `127.0.0.1:${bport}`],
    health: { interval: 100, timeout: 500, fall: 1, rise: 1 },
    passive: { failures: 0 },
  });
  const aName = `127.0.0.1:${aport}`;
  await closeServer(a);
  const down = await waitFor(() => proxy.stats().upstreams[0]!.state === 'down', 5000);
  t.ok(down, 'marked down by the checks');
  t.ok(logs.some((l) => l.event === 'upstream-down' && l.upstream === aName), 'upstream-down logged');
  const before = proxy.stats().upstreams[0]!.connections.total;
  for (let i = 0; i < 6; i++) t.equal((await roundTrip(port, 'y')).toString(), 'y');
  t.equal(proxy.stats().upstreams[0]!.connections.total, before, 'no client connection tried the down upstream');

  const a2 = echoServer({ allowHalfOpen: true });
  a2.listen(aport, '127.0.0.1');
  await once(a2, 'listening');
  t.teardown(() => closeServer(a2));
  const up = await waitFor(() => proxy.stats().upstreams[0]!.state === 'up', 5000);
  t.ok(up, 'back up after the restart');
  t.ok(logs.some((l) => l.event === 'upstream-up' && l.upstream === aName), 'upstream-up logged');
  const totalBefore = proxy.stats().upstreams[0]!.connections.total;
  for (let i = 0; i < 6; i++) await roundTrip(port, 'z');
  t.ok(proxy.stats().upstreams[0]!.connections.total > totalBefore, 'it gets traffic again');
});

t.test('HTTP health check: GET /health expecting 2xx/3xx', async (t) => {
  let healthy = true;
  const backend = iomux.http.createServer((req, res) => {
    if (req.url === '/health') res.writeHead(healthy ? 204 : 503).end();
    else res.end('ok');
  });
  const bport = await listen(backend as unknown as iomux.Server);
  t.teardown(() => backend.close());
  const { proxy } = await startProxy(t, {
    upstreams: [`127.0.0.1:${bport}`], health: { type: 'http', path: '/health', interval: 80, fall: 2, rise: 2 },
  });
  await sleep(300);
  t.equal(proxy.stats().upstreams[0]!.state, 'up');
  healthy = false;
  t.ok(await waitFor(() => proxy.stats().upstreams[0]!.state === 'down', 3000), '503 takes it out');
  t.match(proxy.stats().upstreams[0]!.reason, /status 503/);
  healthy = true;
  t.ok(await waitFor(() => proxy.stats().upstreams[0]!.state === 'up', 3000), '204 brings it back');
});

/** A backend that reads a PROXY header and answers with what it said, as JSON. */
async function proxyAwareBackend(t: Test): Promise<number> {
  const backend = iomux.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    void collectCopies(s).then((buf) => {
      try {
        const r = parseProxyHeader(buf);
        if (!r.done) throw new Error('incomplete header');
        const h = r.header;
        s.end(JSON.stringify({
          version: h.version, command: h.command, src: h.sourceAddress, sport: h.sourcePort,
          dst: h.destinationAddress, dport: h.destinationPort, rest: buf.subarray(r.consumed).toString(),
        }));
      } catch (err) {
        s.end(JSON.stringify({ error: (err as Error).message }));
      }
    });
  });
  const port = await listen(backend);
  t.teardown(() => closeServer(backend));
  return port;
}

for (const version of [1, 2] as const) {
  t.test(`PROXY protocol v${version}: received from the client, sent to the upstream`, async (t) => {
    const bport = await proxyAwareBackend(t);
    const { port } = await startProxy(t, {
      acceptProxy: true, upstreams: [{ host: '127.0.0.1', port: bport, sendProxy: version }],
    });
    const info = {
      family: 'tcp4' as const, sourceAddress: '203.0.113.7', sourcePort: 4242,
      destinationAddress: '198.51.100.1', destinationPort: 443,
    };
    const header = version === 1 ? encodeV1(info) : encodeV2(info);
    const got = JSON.parse((await roundTrip(port, Buffer.concat([header, Buffer.from('payload')]))).toString());
    t.same(got, {
      version, command: 'proxy', src: '203.0.113.7', sport: 4242, dst: '198.51.100.1', dport: 443, rest: 'payload',
    }, 'the backend sees the original client');

    // Without a header from the client, the proxy describes the real peer.
    const { port: port2 } = await startProxy(t, { upstreams: [{ host: '127.0.0.1', port: bport, sendProxy: version }] });
    const c = iomux.connect({ port: port2, host: '127.0.0.1', allowHalfOpen: true });
    const body = collectCopies(c);
    await connected(c);
    const localPort = c.localPort;
    c.end('x');
    const got2 = JSON.parse((await body).toString());
    t.equal(got2.src, '127.0.0.1');
    t.equal(got2.sport, localPort, 'the client port as the proxy saw it');
    t.equal(got2.dport, port2, 'the destination is the proxy');
    t.equal(got2.rest, 'x');
  });
}

t.test('malformed PROXY headers: that connection is closed with a log line, others unaffected', async (t) => {
  const backend = echoServer({ allowHalfOpen: true });
  const bport = await listen(backend);
  t.teardown(() => closeServer(backend));
  const { proxy, port, logs } = await startProxy(t, { acceptProxy: true, upstreams: [`127.0.0.1:${bport}`] });
  const good = iomux.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const goodBody = collectCopies(good);
  await connected(good);
  good.write(encodeV1({ family: 'tcp4', sourceAddress: '10.0.0.1', sourcePort: 1, destinationAddress: '10.0.0.2', destinationPort: 2 }));
  const bad = [
    'PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n',
    'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
    'PROXY TCP4 1.2.3.4\r\n',
    Buffer.concat([encodeV2({ family: 'tcp4', sourceAddress: '1.2.3.4', sourcePort: 1, destinationAddress: '5.6.7.8', destinationPort: 2 }).subarray(0, 13), Buffer.from([0x99, 0, 0])]),
  ];
  for (const b of bad) {
    const got = await roundTrip(port, b);
    t.equal(got.length, 0, `closed without an answer: ${JSON.stringify(b.toString('latin1').slice(0, 24))}`);
  }
  t.equal(logs.filter((l) => l.event === 'proxy-header').length, bad.length, 'one log line each');
  t.equal(proxy.stats().errors.proxyHeader, bad.length);
  t.equal(proxy.stats().upstreams[0]!.connections.total, 1, 'only the good connection reached the upstream');
  good.end('still fine');
  t.equal((await goodBody).toString(), 'still fine', 'the good connection was unaffected');
});

t.test('an upstream reset mid-stream closes the client side; no fd leak', async (t) => {
  const before = openFds();
  // node:net can reset (SO_LINGER 0), as a crashing upstream's kernel would.
  const backend = net.createServer((s) => {
    s.on('error', () => {});
    s.write(Buffer.alloc(100000, 1));
    setTimeout(() => s.resetAndDestroy(), 30);
  });
  backend.listen(0, '127.0.0.1');
  await once(backend, 'listening');
  const bport = (backend.address() as net.AddressInfo).port;
  const { proxy, port, logs } = await startProxy(t, { upstreams: [`127.0.0.1:${bport}`], passive: { failures: 0 } });
  for (let i = 0; i < 5; i++) {
    const c = iomux.connect({ port, host: '127.0.0.1' });
    let error: (Error & { code?: string }) | undefined;
    c.on('error', (err: Error) => { error = err; });
    let got = 0;
    c.on('data', (d: Buffer) => { got += d.length; });
    const closed = new Promise((resolve) => c.once('close', resolve));
    await connected(c);
    c.write('keep writing');
    await closed;
    t.equal(got, 100000, 'the bytes before the failure arrived, then the close');
    // The core's forwarding resets the client's side too (SO_LINGER 0).
    t.equal(error?.code, 'ECONNRESET', 'the client saw the reset');
  }
  await waitFor(() => proxy.stats().upstreams[0]!.failures.reset === 5);
  t.equal(proxy.stats().upstreams[0]!.failures.reset, 5, 'counted as resets');
  t.ok(logs.some((l) => l.event === 'upstream-reset'), 'logged');
  await proxy.close({ deadline: 0 });
  await new Promise<void>((r) => backend.close(() => r()));
  t.equal(await settleFds(before), before, 'fds back to where they were');
});

t.test('1,000 concurrent proxied connections, all correct', async (t) => {
  const backend = echoServer({ allowHalfOpen: true });
  const bport = await listen(backend);
  t.teardown(() => closeServer(backend));
  const b2 = echoServer({ allowHalfOpen: true });
  const bport2 = await listen(b2);
  t.teardown(() => closeServer(b2));
  const before = openFds();
  const { proxy, port } = await startProxy(t, { upstreams: [`127.0.0.1:${bport}`, `127.0.0.1:${bport2}`], balance: 'least-connections' });
  const N = 1000;
  const sockets = Array.from({ length: N }, () => iomux.connect({ port, host: '127.0.0.1', allowHalfOpen: true }));
  const bodies = sockets.map((s) => collectCopies(s));
  await Promise.all(sockets.map((s) => connected(s)));
  // Everyone connected and holding on: then every one talks.
  await waitFor(() => proxy.stats().clients.active === N, 10000);
  t.equal(proxy.stats().clients.active, N, 'all open at once');
  sockets.forEach((s, i) => s.end(`connection ${i} `.repeat(20)));
  const got = await Promise.all(bodies);
  let ok = 0;
  got.forEach((g, i) => { if (g.toString() === `connection ${i} `.repeat(20)) ok++; });
  t.equal(ok, N, 'every connection got its own bytes back');
  const ups = proxy.stats().upstreams;
  t.equal(ups[0]!.connections.total + ups[1]!.connections.total, N);
  t.ok(Math.abs(ups[0]!.connections.total - ups[1]!.connections.total) < N / 4, 'spread over both');
  await proxy.close({ deadline: 1000 });
  t.equal(await settleFds(before), before, 'no fd leak');
});

t.test('drain: close({ deadline }) lets a relay finish, then cuts what is left', async (t) => {
  const backend = iomux.createServer({ allowHalfOpen: true }, (s) => {
    s.on('data', () => {});
    s.on('end', () => setTimeout(() => s.end('slow answer'), 200));
  });
  const bport = await listen(backend);
  t.teardown(() => closeServer(backend));
  const { proxy, port } = await startProxy(t, { upstreams: [`127.0.0.1:${bport}`] });
  const c = iomux.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const body = collectCopies(c);
  await connected(c);
  c.end('q');
  await sleep(50);
  const stuck = iomux.connect({ port, host: '127.0.0.1' });
  stuck.on('error', () => {});
  const stuckClosed = new Promise((r) => stuck.on('close', r));
  await connected(stuck);
  await waitFor(() => proxy.stats().clients.active === 2);
  const started = Date.now();
  const closed = proxy.close({ deadline: 600 });
  t.equal((await body).toString(), 'slow answer', 'the relay under way finished');
  const late = iomux.connect({ port, host: '127.0.0.1' });
  late.on('error', () => {});
  await new Promise((r) => late.on('close', r));
  t.ok(late.errored !== null, 'new connections are refused');
  await closed;
  const took = Date.now() - started;
  t.ok(took >= 550 && took < 3000, `the held connection was cut at the deadline (${took} ms)`);
  await stuckClosed;
  t.pass('the held connection is closed');
});
