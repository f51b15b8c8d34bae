// node:net compatibility: writes that meet a closed socket never crash the
// process, liveness as node's (what keeps a process alive), Socket as a real
// stream.Duplex, and the connect/listen options node has.
import { once } from 'node:events';
import { statSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { Duplex, PassThrough, Readable, Writable } from 'node:stream';
import t from 'tap';
import { closeServer, iomux, listen, runNode, sleep, tempDir, waitFor } from './helpers';

const DIST = join(__dirname, '..', 'dist');

/** Runs a script in a child process with `iomux` in scope; resolves with its result. */
function child(body: string, timeoutMs = 10000): ReturnType<typeof runNode> {
  return runNode(['-e', `const iomux = require(${JSON.stringify(DIST)});\n${body}`], { timeoutMs });
}

// ---- 1. a write after the peer's close never raises an uncaught error ---------------

t.test('a write after the peer closed, with no error listener anywhere, never crashes the process', async (t) => {
  // The server answers the client's FIN 50 ms later, as in the common style;
  // by then the client is gone. Every way to write, end or cork is tried.
  const r = await child(`
    const results = {};
    const server = iomux.createServer((s) => {
      s.on('data', () => {});
      s.on('end', () => setTimeout(() => {
        s.cork();
        s.write('bye', (err) => { results.write = err && err.code; });
        s.uncork();
        s.write(Buffer.from('again'));
        s.end('last', () => { results.endCb = true; });
        s.write('after end', (err) => { results.afterEnd = err && err.code; });
        setTimeout(() => { console.log(JSON.stringify(results)); server.close(); }, 50);
      }, 50));
    });
    server.listen(0, '127.0.0.1', () => {
      const c = iomux.connect(server.address().port, '127.0.0.1', () => c.end());
      c.resume();
    });
  `);
  t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr.slice(0, 300)})`);
  const res = JSON.parse(r.stdout.trim().split('\n').pop() || '{}');
  t.match(res.write, /^(EPIPE|ERR_STREAM_DESTROYED|ERR_STREAM_WRITE_AFTER_END)$/, 'the write callback got the error');
  t.match(res.afterEnd, /^(EPIPE|ERR_STREAM_DESTROYED|ERR_STREAM_WRITE_AFTER_END)$/);
});

t.test('writes after a peer reset, after destroy() and after end(): errors go to callbacks, nothing is thrown', async (t) => {
  const r = await child(`
    const out = [];
    const server = iomux.createServer((s) => {
      s.on('data', () => {});
      // the client resets; the server keeps writing without an error listener
      const iv = setInterval(() => {
        const ok = s.write(Buffer.alloc(1024), (err) => { if (err && !out.includes('reset:' + err.code)) out.push('reset:' + err.code); });
        if (s.destroyed) { clearInterval(iv); done(); }
      }, 5);
    });
    function done() {
      const d = new iomux.Socket();
      d.destroy();
      d.write('x', (err) => out.push('destroyed:' + err.code));
      d.end(() => {});
      d.cork(); d.uncork();
      d.end('y', (err) => out.push('endDestroyed:' + (err && err.code)));
      setTimeout(() => { console.log(JSON.stringify(out)); server.close(); }, 50);
    }
    server.listen(0, '127.0.0.1', () => {
      const c = iomux.connect(server.address().port, '127.0.0.1', () => setTimeout(() => c.resetAndDestroy(), 20));
    });
  `);
  t.equal(r.code, 0, `exit 0 (stderr: ${r.stderr.slice(0, 300)})`);
  const out: string[] = JSON.parse(r.stdout.trim().split('\n').pop() || '[]');
  t.ok(out.some((x) => x.startsWith('reset:')), `the writing side saw the reset in a callback: ${out}`);
  t.ok(out.includes('destroyed:ERR_STREAM_DESTROYED'), 'write after destroy: ERR_STREAM_DESTROYED to the callback');
  t.ok(out.includes('endDestroyed:ERR_STREAM_DESTROYED'), 'end(cb) after destroy: the error to the callback');
});

t.test('write after the peer FIN (allowHalfOpen false): EPIPE to the callback and to an error listener', async (t) => {
  const server = iomux.createServer((s) => s.end());
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = iomux.connect(port, '127.0.0.1');
  const errors: string[] = [];
  c.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code!));
  await once(c, 'connect');
  c.end();
  const cbErr = await new Promise<NodeJS.ErrnoException | null | undefined>((r) => {
    c.on('end', () => t.equal(c.write('late', r), false, 'write() returns false'));
  });
  t.equal(cbErr?.code, 'EPIPE');
  await waitFor(() => errors.length > 0, 1000);
  t.same(errors, ['EPIPE']);
});

// ---- 2. liveness ---------------------------------------------------------------------

t.test('an unread socket still sees the FIN and does not keep the process alive', async (t) => {
  // The server side is unref'd: only the client could keep the process
  // alive. It reads ahead (up to its high-water mark) and the FIN, and then
  // holds nothing: a timer resumes it later, and it ends at once.
  const r = await child(`
    const server = iomux.createServer((s) => { s.unref(); s.end(Buffer.alloc(4096, 1)); });
    server.listen(0, '127.0.0.1', () => {
      server.unref();
      const c = iomux.connect(server.address().port, '127.0.0.1');
      c.on('connect', () => console.log('connected'));
      setTimeout(() => {
        console.log('bytesRead ' + c.bytesRead);
        c.on('end', () => console.log('end'));
        c.resume();
      }, 300);
    });
  `, 8000);
  t.equal(r.timedOut, false, 'the process exited by itself');
  t.equal(r.code, 0);
  t.match(r.stdout, /connected\nbytesRead 4096\nend/, 'read ahead before anyone consumed; the FIN was seen');
  // And with nothing scheduled at all, the unread socket does not hold the process.
  const r2 = await child(`
    const server = iomux.createServer((s) => { s.unref(); s.end('x'); });
    server.listen(0, '127.0.0.1', () => { server.unref(); iomux.connect(server.address().port, '127.0.0.1'); });
  `, 8000);
  t.equal(r2.timedOut, false, 'exits without a consumer');
});

t.test('a paused connected socket does not keep the process alive', async (t) => {
  const r = await child(`
    const server = iomux.createServer((s) => s.unref());
    server.listen(0, '127.0.0.1', () => {
      server.unref();
      const c = iomux.connect(server.address().port, '127.0.0.1').pause();
      c.on('connect', () => console.log('connected'));
    });
  `, 8000);
  t.equal(r.timedOut, false, 'the process exited by itself');
  t.equal(r.code, 0);
  t.match(r.stdout, /connected/);
});

t.test("end() before the connection is up brings 'finish' and 'close'", async (t) => {
  const server = iomux.createServer((s) => s.resume());
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = iomux.connect(port, '127.0.0.1');
  const events: string[] = [];
  c.on('finish', () => events.push('finish'));
  c.on('end', () => events.push('end'));
  c.end();
  c.resume();
  await once(c, 'close');
  t.same(events.sort(), ['end', 'finish']);
});

t.test('end() before a hostname lookup finished also finishes', async (t) => {
  const server = iomux.createServer((s) => s.resume());
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = iomux.connect({ port, host: 'localhost', family: 4 });
  const fin = once(c, 'finish');
  c.end('x');
  c.resume();
  await fin;
  await once(c, 'close');
  t.pass('finish and close');
});

// ---- 3. Socket is a stream.Duplex ------------------------------------------------------

t.test('Socket is a stream.Duplex: instanceof, readable/writable, read() and readable, bufferSize, socket.server', async (t) => {
  let serverSide!: iomux.Socket;
  const server = iomux.createServer((s) => {
    serverSide = s;
    s.end('hello duplex');
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = iomux.connect(port, '127.0.0.1');
  t.ok(c instanceof Duplex, 'instanceof Duplex');
  t.ok(c instanceof Readable && c instanceof Writable, 'instanceof Readable and Writable');
  t.equal(c.toDuplex(), c, 'toDuplex() is the socket itself');
  t.equal(c.readable, true);
  t.equal(c.writable, true);
  await once(c, 'connect');
  t.equal(c.bufferSize, 0);
  const closed = once(c, 'close');
  const chunks: Buffer[] = [];
  c.on('readable', () => {
    let chunk: Buffer | null;
    while ((chunk = c.read()) !== null) chunks.push(chunk);
  });
  await once(c, 'end');
  t.equal(Buffer.concat(chunks).toString(), 'hello duplex', "read() in 'readable'");
  t.equal(serverSide.server, server, 'socket.server is the server that accepted it');
  t.equal(c.server, null, 'a client socket has no server');
  await closed;
  t.equal(c.readable, false);
  t.equal(c.writable, false);
});

t.test('pipe() both ways, and Socket() without new', async (t) => {
  const server = iomux.createServer((s) => s.pipe(s));
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = (iomux.Socket as unknown as () => iomux.Socket)();
  t.ok(c instanceof iomux.Socket);
  c.connect(port, '127.0.0.1');
  const src = new PassThrough();
  src.pipe(c);
  const sink = new PassThrough();
  c.pipe(sink);
  const data = Buffer.alloc(300 * 1024, 7);
  src.end(data);
  const got: Buffer[] = [];
  sink.on('data', (d: Buffer) => got.push(d));
  await once(sink, 'end');
  t.equal(Buffer.concat(got).length, data.length, 'piped there and back');
  const s2 = (iomux.Server as unknown as () => iomux.Server)();
  t.ok(s2 instanceof iomux.Server, 'Server() without new');
});

t.test('a socket that flows into a data listener stays light: no stream state is made', async (t) => {
  const server = iomux.createServer((s) => s.on('data', (d: Buffer) => s.write(d)));
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = iomux.connect(port, '127.0.0.1');
  c.on('data', () => {});
  await once(c, 'connect');
  c.write('x');
  await sleep(20);
  t.equal(Object.getOwnPropertyDescriptor(c, '_readableState'), undefined, 'no own _readableState');
  c.setEncoding('utf8');
  t.ok(Object.getOwnPropertyDescriptor(c, '_readableState'), 'setEncoding() made it');
  c.destroy();
});

// ---- 4. options --------------------------------------------------------------------------

t.test("lookup option and 'lookup' event; localAddress/localPort", async (t) => {
  const server = iomux.createServer((s) => s.end(`${s.remoteAddress}:${s.remotePort}`));
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const lookups: unknown[] = [];
  const c = iomux.connect({
    port, host: 'my-service', autoSelectFamily: false,
    lookup: (host: string, _o: unknown, cb: (e: Error | null, a: string, f: number) => void) => {
      lookups.push(host);
      setImmediate(cb, null, '127.0.0.1', 4);
    },
    localAddress: '127.0.0.1',
  } as iomux.ConnectOptions);
  const ev: unknown[] = [];
  c.on('lookup', (...a: unknown[]) => ev.push(a));
  let text = '';
  let local = '';
  c.on('connect', () => { local = `${c.localAddress}:${c.localPort}`; });
  c.setEncoding('utf8').on('data', (d: string) => { text += d; });
  await once(c, 'end');
  t.same(lookups, ['my-service']);
  t.same(ev, [[null, '127.0.0.1', 4, 'my-service']]);
  t.equal(text, local, 'the server saw the bound local address');
});

t.test('autoSelectFamily: a failing first address gives way to the next', async (t) => {
  const server = iomux.createServer((s) => s.end('ok'));
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const dead = net.createServer();
  await new Promise<void>((r) => dead.listen(0, '127.0.0.2', r));
  await new Promise<void>((r) => dead.close(() => r()));
  const c = iomux.connect({
    port, host: 'two-addresses', autoSelectFamily: true, autoSelectFamilyAttemptTimeout: 50,
    lookup: (_h: string, o: { all?: boolean }, cb: (e: Error | null, a: unknown) => void) => {
      t.equal(o.all, true, 'all addresses asked for');
      cb(null, [{ address: '127.0.0.3', family: 4 }, { address: '127.0.0.1', family: 4 }]);
    },
  } as iomux.ConnectOptions);
  let text = '';
  c.setEncoding('utf8').on('data', (d: string) => { text += d; });
  c.on('error', (e) => t.fail(String(e)));
  await once(c, 'end');
  t.equal(text, 'ok');
  t.equal(c.remoteAddress, '127.0.0.1');
});

t.test('signal: aborting destroys a connecting socket and closes a listening server', async (t) => {
  const ac = new AbortController();
  const c = iomux.connect({ port: 9, host: '127.0.0.1', signal: ac.signal } as iomux.ConnectOptions);
  ac.abort();
  const [err] = await once(c, 'error');
  t.equal(err.name, 'AbortError');
  const server = iomux.createServer();
  const ac2 = new AbortController();
  server.listen({ port: 0, host: '127.0.0.1', signal: ac2.signal });
  await once(server, 'listening');
  ac2.abort();
  await once(server, 'close');
  t.equal(server.listening, false);
});

t.test('onread: reads land in the given buffer', async (t) => {
  const server = iomux.createServer((s) => s.end('0123456789'));
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const buf = Buffer.alloc(4);
  const seen: string[] = [];
  const c = iomux.connect({
    port, host: '127.0.0.1',
    onread: { buffer: buf, callback: (n: number, b: Uint8Array) => { seen.push(Buffer.from(b.subarray(0, n)).toString()); } },
  } as iomux.ConnectOptions);
  await once(c, 'end');
  t.equal(seen.join(''), '0123456789');
  t.ok(seen.every((s) => s.length <= 4), 'never more than the buffer holds');
});

t.test('resetAndDestroy(): the peer sees ECONNRESET', async (t) => {
  const server = iomux.createServer((s) => s.resetAndDestroy());
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = net.connect(port, '127.0.0.1');
  const [err] = await once(c, 'error');
  t.equal(err.code, 'ECONNRESET');
});

t.test('a closed socket connects again', async (t) => {
  const server = iomux.createServer((s) => s.end('hi'));
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = new iomux.Socket();
  for (let i = 0; i < 2; i++) {
    let text = '';
    c.connect(port, '127.0.0.1');
    c.setEncoding('utf8');
    const onData = (d: string): void => { text += d; };
    c.on('data', onData);
    await once(c, 'close');
    c.off('data', onData);
    t.equal(text, 'hi', `round ${i}`);
  }
});

t.test('listen({ path, readableAll, writableAll }) opens the socket file to everyone', async (t) => {
  const dir = tempDir('iomux-compat-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 's.sock');
  const server = iomux.createServer();
  server.listen({ path, readableAll: true, writableAll: true });
  await once(server, 'listening');
  const mode = statSync(path).mode;
  t.ok(mode & 0o004 && mode & 0o002, `mode ${mode.toString(8)}`);
  await closeServer(server);
});

t.test("close() right after listen(): no 'listening'", async (t) => {
  const server = iomux.createServer();
  server.on('listening', () => t.fail('listening after close'));
  server.listen(0);
  server.close();
  await once(server, 'close');
  await sleep(20);
  t.pass();
});

t.test("'drop' carries both ends' addresses", async (t) => {
  const server = iomux.createServer(() => {});
  server.maxConnections = 1;
  const port = await listen(server);
  const a = net.connect(port, '127.0.0.1');
  await once(a, 'connect');
  await sleep(20);
  const b = net.connect(port, '127.0.0.1');
  b.on('error', () => {});
  const [data] = await once(server, 'drop');
  t.match(data, { localAddress: '127.0.0.1', localPort: port, remoteAddress: '127.0.0.1', remoteFamily: 'IPv4' });
  a.destroy();
  b.destroy();
  await closeServer(server);
});

t.test('onread: a callback that pauses stops delivery until resume(); the end still comes', async (t) => {
  const message = Buffer.from('0123456789abcdefghij');
  const server = iomux.createServer((s) => s.end(message));
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const buf = Buffer.alloc(8);
  const got: Buffer[] = [];
  let paused = false;
  const c = iomux.connect({
    port, host: '127.0.0.1',
    onread: {
      buffer: buf,
      callback(this: iomux.Socket, n: number) {
        t.equal(paused, false, 'nothing delivered while paused');
        got.push(Buffer.from(buf.subarray(0, n)));
        paused = true;
        this.pause();
        setTimeout(() => { paused = false; this.resume(); }, 10);
      },
    },
  } as iomux.ConnectOptions);
  await once(c, 'end');
  t.same(Buffer.concat(got), message);
});

t.test('autoSelectFamily: when every address fails, one AggregateError with each attempt', async (t) => {
  const dead = net.createServer();
  await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
  const port = (dead.address() as net.AddressInfo).port;
  await new Promise<void>((r) => dead.close(() => r()));
  const c = iomux.connect({
    port, host: 'nowhere', autoSelectFamilyAttemptTimeout: 100,
    lookup: (_h: string, _o: unknown, cb: (e: Error | null, a: unknown) => void) => {
      cb(null, [{ address: '127.0.0.1', family: 4 }, { address: '127.0.0.2', family: 4 }]);
    },
  } as iomux.ConnectOptions);
  const [err] = await once(c, 'error');
  t.equal(err.constructor.name, 'AggregateError');
  t.equal(err.errors.length, 2);
  t.same(c.autoSelectFamilyAttemptedAddresses, [`127.0.0.1:${port}`, `127.0.0.2:${port}`]);
});

t.test("the FIN is answered without allowHalfOpen, whether or not the user listens to 'end'", async (t) => {
  t.equal(new iomux.Socket({ allowHalfOpen: false }).listenerCount('end'), 1, "one 'end' listener of its own, as node's");
  for (const mode of ['none', 'listener', 'removed'] as const) {
    const server = iomux.createServer((s) => {
      s.resume();
      if (mode !== 'none') {
        const f = (): void => {};
        s.on('end', f);
        if (mode === 'removed') s.off('end', f);
      }
    });
    const port = await listen(server);
    const c = iomux.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    c.resume();
    await once(c, 'connect');
    c.end();
    await once(c, 'end'); // the server answered our FIN with its own
    t.pass(`server ${mode}: FIN answered`);
    c.destroy();
    await closeServer(server);
  }
});
