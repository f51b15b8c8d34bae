// Bad input, misuse, and abusive peers.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import {
  closeServer, collect, iomux, jsonLines, listen, openFds, runNode, settleFds, sleep, tempDir, waitFor,
} from './helpers';

/** A subtest's `t` (the last overload of t.test takes only the callback). */
type TestT = Parameters<Parameters<typeof t.test>[0]>[0];

const DIST = join(__dirname, '..', 'dist');

/** A port nothing listens on (bound then released). */
async function deadPort(): Promise<number> {
  const s = net.createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

// ---- argument checking -------------------------------------------------------

t.test('invalid ports', async (t) => {
  const fds = openFds();
  t.test('listen() throws ERR_SOCKET_BAD_PORT naming the argument', async (t) => {
    const server = iomux.createServer();
    for (const bad of [-1, 65536, 1.5, NaN, Infinity]) {
      t.throws(() => server.listen(bad), { name: 'RangeError', code: 'ERR_SOCKET_BAD_PORT', message: /^options\.port should be >= 0 and < 65536/ }, `listen(${bad})`);
    }
    for (const bad of [-1, 65536, 1.5, 'abc', '12ab']) {
      t.throws(() => server.listen({ port: bad as any }), { name: 'RangeError', code: 'ERR_SOCKET_BAD_PORT', message: /^options\.port should be >= 0 and < 65536/ }, `listen({ port: ${JSON.stringify(bad)} })`);
    }
    for (const bad of [{}, [], true]) {
      t.throws(() => server.listen({ port: bad as any }), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: /^The argument 'options' is invalid/ }, `listen({ port: ${JSON.stringify(bad)} })`);
    }
    t.throws(() => server.listen({ host: 'localhost' }), { code: 'ERR_INVALID_ARG_VALUE', message: /must have the property "port" or "path"/ });
    t.throws(() => server.listen({ port: 0, signal: 'x' as any }), { code: 'ERR_INVALID_ARG_TYPE', message: /options\.signal/ });
    t.equal(server.listening, false, 'still not listening');
    // and the server is still usable
    const port = await listen(server);
    t.ok(port > 0);
    await closeServer(server);
  });

  t.test('connect() checks its port as node:net does: ERR_SOCKET_BAD_PORT, ERR_INVALID_ARG_TYPE, ERR_MISSING_ARGS', async (t) => {
    for (const bad of [-1, 65536, 1.5, NaN, Infinity]) {
      t.throws(() => iomux.connect(bad, '127.0.0.1'), { name: 'RangeError', code: 'ERR_SOCKET_BAD_PORT', message: /^Port should be >= 0 and < 65536/ }, `connect(${bad})`);
    }
    for (const bad of [-1, 65536, 1.5, 'abc', '', ' ', '0x']) {
      t.throws(() => iomux.connect({ port: bad as any, host: '127.0.0.1' }), { name: 'RangeError', code: 'ERR_SOCKET_BAD_PORT' }, `connect({ port: ${JSON.stringify(bad)} })`);
    }
    for (const bad of [{}, [], null, true]) {
      t.throws(() => iomux.connect({ port: bad as any, host: '127.0.0.1' }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /"options\.port"/ }, `connect({ port: ${JSON.stringify(bad)} })`);
    }
    t.throws(() => (iomux.connect as any)(), { name: 'TypeError', code: 'ERR_MISSING_ARGS' }, 'connect()');
    t.throws(() => iomux.connect({} as any), { name: 'TypeError', code: 'ERR_MISSING_ARGS' }, 'connect({})');
    t.throws(() => iomux.connect({ host: '127.0.0.1' } as any), { name: 'TypeError', code: 'ERR_MISSING_ARGS' });
    t.throws(() => iomux.connect({ port: 80, fd: 3 } as any), { code: 'ERR_IOMUX_UNSUPPORTED', message: /options\.fd/ }, 'an option iomux does not support is an error, never ignored');
    t.throws(() => iomux.connect({ port: 80, objectMode: true } as any), { code: 'ERR_INVALID_ARG_VALUE', message: /options\.objectMode/ });
    t.throws(() => iomux.connect({ port: 80, host: '127.0.0.1', localAddress: 'nope' }), { code: 'ERR_INVALID_IP_ADDRESS' });
    t.throws(() => iomux.connect({ port: 80, host: '127.0.0.1', autoSelectFamily: 1 as any }), { code: 'ERR_INVALID_ARG_TYPE' });
    t.throws(() => iomux.connect({ port: 80, host: '127.0.0.1', autoSelectFamilyAttemptTimeout: -1 }), { code: 'ERR_OUT_OF_RANGE' });
    t.throws(() => iomux.connect({ port: 80, lookup: 'x' as any }), { code: 'ERR_INVALID_ARG_TYPE', message: /options\.lookup/ });
    const s = new iomux.Socket();
    t.throws(() => s.connect(-1), { code: 'ERR_SOCKET_BAD_PORT' });
    t.equal(s.connecting, false, 'a rejected connect() leaves the socket unconnected');
    t.equal(s.pending, true);
    s.destroy();
  });

  t.test('connect() to port 0 is allowed, as in node, and fails asynchronously', async (t) => {
    const c = iomux.connect(0, '127.0.0.1');
    const [err] = await once(c, 'error');
    t.match(err, { syscall: 'connect' });
  });

  t.test('nothing leaks from the rejected calls', async (t) => {
    t.equal(await settleFds(fds), fds);
  });
});

t.test('host: a non-string option is ERR_INVALID_ARG_TYPE; a positional non-string host is ignored, as node does', async (t) => {
  for (const bad of [123, {}, [], true]) {
    t.throws(() => iomux.connect({ port: 80, host: bad as any }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /"options\.host"/ });
    t.throws(() => iomux.createServer().listen({ port: 0, host: bad as any }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /"options\.host"/ });
  }
  // A hostname that cannot resolve fails asynchronously, with a 'lookup' event first.
  const c = iomux.connect({ port: 80, host: 'no such host.invalid' });
  const lookups: unknown[] = [];
  c.on('lookup', (err: Error | null) => lookups.push(err && (err as any).code));
  const [err] = await once(c, 'error');
  t.match(err, { syscall: 'getaddrinfo' });
  t.equal(lookups.length, 1, "one 'lookup' event, with the error");
});

t.test('unix socket paths', async (t) => {
  const dir = tempDir('iomux-err-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  t.test('an overlong path is rejected synchronously', async (t) => {
    const long = join(dir, 'p'.repeat(120));
    t.throws(() => iomux.createServer().listen(long), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: /'path'.*107 bytes/ });
    t.throws(() => iomux.createServer().listen({ path: long }), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: /'options\.path'/ });
    t.throws(() => iomux.connect(long), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: /'path'/ });
    t.throws(() => iomux.connect({ path: long }), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE', message: /'options\.path'/ });
    // multi-byte characters count in bytes, not characters
    const wide = join(dir, '\u00e9'.repeat(60));
    t.ok(Buffer.byteLength(wide) > 107 && wide.length <= 107);
    t.throws(() => iomux.connect(wide), { code: 'ERR_INVALID_ARG_VALUE' });
    t.throws(() => iomux.connect({ path: 42 as any }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /"options\.path"/ });
  });

  t.test('a path of exactly 107 bytes works', async (t) => {
    const sub = join(dir, 'd');
    mkdirSync(sub);
    const path = join(sub, 'x'.repeat(107 - sub.length - 1));
    t.equal(Buffer.byteLength(path), 107);
    t.throws(() => iomux.connect(path + 'y'), { code: 'ERR_INVALID_ARG_VALUE' }, '108 bytes is one too many');
    const server = iomux.createServer((s) => s.on('data', (d: Buffer) => s.end(d)));
    server.listen(path);
    await once(server, 'listening');
    t.equal(server.address(), path);
    const c = iomux.connect(path);
    const got = collect(c);
    c.write('unix ok');
    t.equal((await got).toString(), 'unix ok');
    await closeServer(server);
  });
});

t.test('write() of a non-buffer throws TypeError ERR_INVALID_ARG_TYPE', async (t) => {
  const server = iomux.createServer((s) => s.on('data', (d: Buffer) => s.end(d)));
  const port = await listen(server);
  const c = iomux.connect(port, '127.0.0.1');
  await once(c, 'connect');
  for (const bad of [42, {}, null, [1, 2], true]) {
    t.throws(() => c.write(bad as any), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /"chunk"/ }, `write(${JSON.stringify(bad)})`);
  }
  t.throws(() => c.write('x', 'utf8', 'cb' as any), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /"cb"/ });
  t.throws(() => c.end(42 as any), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
  t.equal(c.writableEnded, false, 'the rejected end() did not end the socket');
  t.equal(c.bytesWritten, 0, 'nothing was written');
  const got = collect(c);
  c.write('still works');
  t.equal((await got).toString(), 'still works');
  await closeServer(server);
});

// ---- misuse --------------------------------------------------------------------

t.test('write after end: the error goes to the callback and to the error event; earlier data arrives', async (t) => {
  const payload = randomBytes(4 * 1024 * 1024);
  let received!: Promise<Buffer>;
  const server = iomux.createServer((s) => {
    received = collect(s);
  });
  const port = await listen(server);
  const c = iomux.connect(port, '127.0.0.1');
  await once(c, 'connect');
  c.write(payload);
  c.end();
  const errors: Error[] = [];
  c.on('error', (e: Error) => errors.push(e));
  let ret: boolean | undefined;
  const cbErr = await new Promise<Error | null | undefined>((resolve) => {
    ret = c.write('too late', resolve);
  });
  t.equal(ret, false, 'write() returns false');
  t.match(cbErr, { code: 'ERR_STREAM_WRITE_AFTER_END', message: 'write after end' }, 'the callback gets the error');
  await waitFor(() => errors.length > 0, 1000);
  t.equal(errors.length, 1, "one 'error' event");
  t.equal(errors[0], cbErr, 'the same error');
  // The error does not cost the data written before end().
  t.ok(await waitFor(() => received !== undefined, 2000));
  const got = await received;
  t.equal(got.length, payload.length, 'every byte written before end() arrived');
  t.ok(got.equals(payload), 'intact and in order');
  // And a write after end without a callback still reports to 'error'.
  c.write('again');
  await waitFor(() => errors.length === 2, 1000);
  t.equal(errors.length, 2);
  t.equal((errors[1] as any).code, 'ERR_STREAM_WRITE_AFTER_END');
  await closeServer(server);
});

t.test('destroy() twice is a no-op: one close', async (t) => {
  let serverSide!: iomux.Socket;
  const server = iomux.createServer((s) => { serverSide = s; });
  const port = await listen(server);
  const c = iomux.connect(port, '127.0.0.1');
  await once(c, 'connect');
  await waitFor(() => serverSide !== undefined);
  const counts = { client: 0, server: 0, clientErr: 0, serverErr: 0 };
  c.on('close', () => counts.client++);
  c.on('error', () => counts.clientErr++);
  serverSide.on('close', () => counts.server++);
  serverSide.on('error', () => counts.serverErr++);
  t.equal(c.destroy(), c);
  c.destroy();
  c.destroy(new Error('late'));
  serverSide.destroy(new Error('mine'));
  serverSide.destroy(new Error('again'));
  serverSide.destroy();
  await sleep(50);
  t.same(counts, { client: 1, server: 1, clientErr: 0, serverErr: 1 });
  t.equal(serverSide.errored?.message, 'mine', 'the first error is kept');
  t.equal(c.errored, null);
  // a socket that never connected
  const never = new iomux.Socket();
  let n = 0;
  never.on('close', () => n++);
  never.destroy();
  never.destroy();
  await sleep(10);
  t.equal(n, 1);
  await closeServer(server);
});

t.test('listen() on a listening server throws ERR_SERVER_ALREADY_LISTEN', async (t) => {
  const server = iomux.createServer();
  await listen(server);
  t.throws(() => server.listen(0), { code: 'ERR_SERVER_ALREADY_LISTEN' });
  t.throws(() => server.listen({ port: 0 }), { code: 'ERR_SERVER_ALREADY_LISTEN' });
  await closeServer(server);
  // also while a hostname lookup is under way
  const s2 = iomux.createServer();
  s2.listen(0, 'localhost');
  t.throws(() => s2.listen(0), { code: 'ERR_SERVER_ALREADY_LISTEN' });
  await once(s2, 'listening');
  await closeServer(s2);
});

t.test('server.close(cb) on a server that is not listening gives ERR_SERVER_NOT_RUNNING', async (t) => {
  const server = iomux.createServer();
  const e1 = await new Promise<Error | undefined>((r) => server.close(r));
  t.match(e1, { code: 'ERR_SERVER_NOT_RUNNING' });
  await listen(server);
  const e2 = await new Promise<Error | undefined>((r) => server.close(r));
  t.equal(e2, undefined, 'a listening server closes cleanly');
  const e3 = await new Promise<Error | undefined>((r) => server.close(r));
  t.match(e3, { code: 'ERR_SERVER_NOT_RUNNING' }, 'and a second close() reports it');
  t.doesNotThrow(() => server.close('cb' as any), 'a callback that is not a function is ignored, as node does');
});

// ---- abusive peers (node:net clients) --------------------------------------------

/** Runs one abusive-peer case and checks that fds come back to where they were. */
async function noLeak(t: TestT, fn: () => Promise<void>): Promise<void> {
  const before = openFds();
  await fn();
  const after = await settleFds(before, 3000);
  t.equal(after, before, 'no fd leaked');
}

t.test('abusive peers', async (t) => {
  // warm-up: node:net and iomux both open whatever they open once
  await noLeak(t, async () => {
    const server = iomux.createServer((s) => s.on('data', (d: Buffer) => s.end(d)));
    const port = await listen(server);
    const c = net.connect(port, '127.0.0.1');
    c.resume();
    c.end('warm');
    await once(c, 'close');
    await closeServer(server);
  });

  t.test('RST while the server writes 10 MiB', async (t) => {
    await noLeak(t, async () => {
      let sock!: iomux.Socket;
      const errors: any[] = [];
      let closes = 0;
      const server = iomux.createServer((s) => {
        sock = s;
        s.on('error', (e) => errors.push(e));
        s.on('close', () => closes++);
        t.equal(s.write(Buffer.alloc(10 * 1024 * 1024, 0x61)), false, 'the write is queued');
      });
      const port = await listen(server);
      const c = net.connect(port, '127.0.0.1');
      c.on('error', () => {});
      await once(c, 'data');
      c.resetAndDestroy();
      t.ok(await waitFor(() => closes === 1, 5000), "the iomux socket gets 'close'");
      t.equal(sock.destroyed, true);
      t.equal(errors.length, 1, "one 'error'");
      t.match(errors[0], { code: /^(ECONNRESET|EPIPE)$/ });
      t.equal(sock.errored, errors[0], 'socket.errored keeps it');
      t.equal(sock.writableLength, 0, 'the queue is gone');
      await closeServer(server);
      await sleep(20);
      t.equal(closes, 1, "exactly one 'close'");
    });
  });

  t.test('FIN in the middle of a message', async (t) => {
    await noLeak(t, async () => {
      const message = randomBytes(512 * 1024);
      const half = message.subarray(0, 256 * 1024 + 17);
      let sock!: iomux.Socket;
      let received!: Promise<Buffer>;
      const events: string[] = [];
      const server = iomux.createServer((s) => {
        sock = s;
        received = collect(s);
        s.on('end', () => events.push('end'));
        s.on('close', (hadError: boolean) => events.push(`close:${hadError}`));
      });
      const port = await listen(server);
      const c = net.connect(port, '127.0.0.1');
      c.on('error', () => {});
      c.resume();
      await once(c, 'connect');
      c.end(half);
      await once(c, 'close');
      t.ok(await waitFor(() => events.includes('close:false'), 3000), "the iomux socket gets 'close'");
      t.same(events, ['end', 'close:false'], "'end' then 'close', no error");
      const got = await received;
      t.ok(got.equals(half), 'the half message arrived, every byte');
      t.equal(sock.destroyed, true);
      await closeServer(server);
    });
  });

  t.test('peers that connect and close at once', async (t) => {
    await noLeak(t, async () => {
      let conns = 0, closes = 0;
      const server = iomux.createServer((s) => {
        conns++;
        s.on('error', () => {});
        s.on('close', () => closes++);
      });
      const port = await listen(server);
      const clients: Promise<unknown>[] = [];
      for (let i = 0; i < 60; i++) {
        const c = net.connect(port, '127.0.0.1');
        c.on('error', () => {});
        if (i % 3 === 0) c.on('connect', () => c.destroy()); // FIN
        else if (i % 3 === 1) c.on('connect', () => c.resetAndDestroy()); // RST
        else c.end(); // FIN as soon as connected
        clients.push(once(c, 'close'));
      }
      await Promise.all(clients);
      t.ok(await waitFor(() => conns === 60 && closes === 60, 5000), `every connection accepted and closed (${conns}/${closes})`);
      const open = await new Promise<number>((r) => server.getConnections((_e, n) => r(n)));
      t.equal(open, 0, 'the server counts none open');
      await closeServer(server);
    });
  });

  t.test('1 MiB of random bytes, then RST', async (t) => {
    await noLeak(t, async () => {
      const junk = randomBytes(1024 * 1024);
      const chunks: Buffer[] = [];
      let closed = false;
      let sock!: iomux.Socket;
      const server = iomux.createServer((s) => {
        sock = s;
        s.on('error', () => {});
        s.on('data', (d: Buffer) => chunks.push(Buffer.from(d)));
        s.on('close', () => { closed = true; });
      });
      const port = await listen(server);
      const c = net.connect(port, '127.0.0.1');
      c.on('error', () => {});
      await once(c, 'connect');
      c.write(junk, () => c.resetAndDestroy());
      t.ok(await waitFor(() => closed, 5000), "the iomux socket gets 'close'");
      const got = Buffer.concat(chunks);
      t.ok(got.length <= junk.length, `${got.length} bytes received`);
      t.ok(got.equals(junk.subarray(0, got.length)), 'what arrived is an intact prefix');
      t.equal(sock.destroyed, true);
      await closeServer(server);
    });
  });
});

t.test('a peer reset without an error listener does not crash the process', async (t) => {
  for (const mode of ['write', 'read']) {
    const r = await runNode([join(__dirname, 'fixtures', 'reset-no-error-listener.js'), mode], { timeoutMs: 20000 });
    t.equal(r.timedOut, false, `${mode}: the child finished`);
    t.equal(r.code, 0, `${mode}: the child exits 0${r.stderr ? ` (stderr: ${r.stderr.slice(0, 500)})` : ''}`);
    const lines = jsonLines(r.stdout);
    const c = lines.find((l) => l.mode === mode);
    t.ok(c, `${mode}: the socket reported`);
    t.equal(c?.errorListeners, 0, 'it had no error listener');
    t.equal(c?.closed, true, "it got 'close'");
    t.equal(c?.hadError, true, "'close' says it had an error");
    t.match(c?.errored, { code: /^(ECONNRESET|EPIPE)$/ }, 'socket.errored has the reset');
    t.same(lines.at(-1), { exit: 0, cases: 1 });
  }
});

t.test('for contrast: a local error without an error listener is thrown, as in node:net', async (t) => {
  const port = await deadPort();
  const r = await runNode(['-e', `require(${JSON.stringify(DIST)}).connect(${port}, '127.0.0.1')`], { timeoutMs: 20000 });
  t.equal(r.timedOut, false);
  t.not(r.code, 0, 'the child dies');
  t.match(r.stderr, /ECONNREFUSED/, 'of the ECONNREFUSED');
});
