// Many connections at once, half-close in both directions with node's event
// order, connection and listen errors, and no fd left behind by any of it.
import t, { type Test } from 'tap';
import { once } from 'node:events';
import { existsSync, rmSync } from 'node:fs';
import { constants } from 'node:os';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import {
  closeServer, collectCopies, connected, hasIPv6Loopback, iomux, listen, openFds, settleFds, sleep, tempDir,
} from './helpers';

/**
 * A test that also checks the process holds no more fds at its end than at
 * its start. fn may return a reason to skip (a missing machine feature).
 */
function fdTest(name: string, fn: (t: Test) => Promise<void | string>): void {
  t.test(name, async (t) => {
    const before = openFds();
    const skip = await fn(t);
    if (typeof skip === 'string') {
      t.plan(0, skip);
      return;
    }
    t.equal(await settleFds(before), before, `open fds back to ${before} (no leak)`);
  });
}

/** Resolves when cond() holds, polling the loop every few ms (fails the test after `ms`). */
async function until(cond: () => boolean, what: string, ms = 20000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** Records the events of a socket, in order. */
function track(s: iomux.Socket, log: string[], prefix: string): void {
  for (const ev of ['connect', 'end', 'finish', 'close', 'error'] as const) {
    s.on(ev, (arg?: unknown) => log.push(ev === 'close' ? `${prefix}close(${arg})` : `${prefix}${ev}`));
  }
}

fdTest('1,000 concurrent connections, all open before any finishes, each echoes its own message', async (t) => {
  const N = 1000;
  const accepted: iomux.Socket[] = [];
  let serverCloses = 0;
  let firstEndSeen = false;
  const server = iomux.createServer((s) => {
    accepted.push(s);
    s.on('data', (d: Buffer) => s.write(d));
    s.on('end', () => { firstEndSeen = true; s.end(); });
    s.on('close', () => serverCloses++);
  });
  server.listen({ port: 0, host: '127.0.0.1', backlog: 2048 });
  await once(server, 'listening');
  t.teardown(() => closeServer(server));
  const port = (server.address() as iomux.AddressInfo).port;
  const fdsBefore = openFds();

  const clients = Array.from({ length: N }, () => iomux.connect(port, '127.0.0.1'));
  await Promise.all(clients.map((c) => connected(c)));
  await until(() => accepted.length === N, 'every connection to be accepted');

  // Everything is open at once: 2N sockets, none finished.
  t.equal(accepted.length, N, 'the server accepted every connection');
  t.ok(openFds() - fdsBefore >= 2 * N, `at least ${2 * N} more fds are open`);
  const [, count] = await new Promise<[Error | null, number]>((r) => server.getConnections((e, n) => r([e, n])));
  t.equal(count, N, 'getConnections() counts them all');
  t.notOk(firstEndSeen, 'no connection finished yet');
  t.equal(serverCloses, 0, 'no server-side socket closed yet');
  t.ok(clients.every((c) => c.readyState === 'open'), 'every client is open');
  const localPorts = new Set(clients.map((c) => c.localPort));
  t.equal(localPorts.size, N, 'every client has its own local port');

  const results = clients.map((c) => collectCopies(c));
  const closed = clients.map((c) => once(c, 'close'));
  const messages = clients.map((_, i) => `client ${i} says ${'x'.repeat(i % 97)} ${i}\n`);
  clients.forEach((c, i) => c.end(messages[i]));
  const got = (await Promise.all(results)).map((b) => b.toString());
  const wrong = got.map((g, i) => (g === messages[i] ? -1 : i)).filter((i) => i >= 0);
  t.same(wrong, [], 'every client got exactly its own message back');
  await Promise.all(closed);
  await until(() => serverCloses === N, 'every server-side socket to close');

  const serverClosed = once(server, 'close');
  server.close();
  await serverClosed;
  t.equal(server.listening, false);
});

fdTest("half-close (a): the client end()s, the server (allowHalfOpen) keeps writing, the client still receives", async (t) => {
  const tail = randomBytes(3 * 1024 * 1024);
  const log: string[] = [];
  let serverSide: iomux.Socket | undefined;
  let serverGot = '';
  const server = iomux.createServer({ allowHalfOpen: true }, (s) => {
    serverSide = s;
    track(s, log, 'server:');
    s.setEncoding('utf8');
    s.on('data', (d: string) => { serverGot += d; });
    s.on('end', async () => {
      t.equal(s.readyState, 'writeOnly', "server: writeOnly after the client's FIN");
      for (let i = 0; i < 5; i++) {
        t.equal(s.write(`after-end-${i};`), true, 'server can still write after end');
        await sleep(5);
      }
      // and a lot more, with backpressure
      for (let off = 0; off < tail.length; off += 100000) {
        if (!s.write(tail.subarray(off, off + 100000))) await once(s, 'drain');
      }
      s.end('bye');
    });
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));

  const c = iomux.connect(port, '127.0.0.1');
  track(c, log, 'client:');
  await connected(c);
  t.equal(c.allowHalfOpen, false, 'the client is not half-open');
  const got = collectCopies(c);
  const closed = once(c, 'close');
  c.end('from client');
  t.equal(c.readyState, 'readOnly', 'client: readOnly after end()');
  log.push('client:end() called');
  const expected = Buffer.concat([Buffer.from('after-end-0;after-end-1;after-end-2;after-end-3;after-end-4;'), tail, Buffer.from('bye')]);
  const received = await got;
  t.equal(received.length, expected.length);
  t.ok(received.equals(expected), 'everything the server wrote after the client ended arrived (3 MiB and more)');
  await closed;
  await until(() => log.includes('server:close(false)'), 'the server side to close');

  t.equal(serverGot, 'from client');
  t.equal(serverSide!.allowHalfOpen, true, 'accepted sockets inherit allowHalfOpen');
  const client = log.filter((e) => e.startsWith('client:'));
  t.same(client, ['client:connect', 'client:end() called', 'client:finish', 'client:end', 'client:close(false)'],
    'client events: finish, then end, then close (as node)');
  const srv = log.filter((e) => e.startsWith('server:'));
  t.same(srv, ['server:end', 'server:finish', 'server:close(false)'], 'server events: end, finish, close');
  t.ok(log.indexOf('server:end') > log.indexOf('client:end() called'));
  t.equal(c.bytesWritten, 'from client'.length);
  t.equal(c.bytesRead, expected.length);
  t.equal(c.destroyed, true);
  t.equal(c.readyState, 'closed');
  await closeServer(server);
});

fdTest('half-close (b): the server end()s, the client (allowHalfOpen) keeps sending, the server still receives', async (t) => {
  const log: string[] = [];
  let serverGot: Promise<Buffer> | undefined;
  let serverClosed: Promise<unknown> | undefined;
  const server = iomux.createServer((s) => {
    track(s, log, 'server:');
    serverGot = collectCopies(s);
    serverClosed = once(s, 'close');
    s.end('server done');
    log.push('server:end() called');
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));

  const c = iomux.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  t.equal(c.allowHalfOpen, true);
  track(c, log, 'client:');
  const fromServer = collectCopies(c);
  const clientClosed = once(c, 'close');
  c.on('end', async () => {
    t.equal(c.readyState, 'writeOnly', "client: writeOnly after the server's FIN");
    for (let i = 0; i < 5; i++) {
      c.write(`late-${i};`);
      await sleep(5);
    }
    c.end('last');
  });
  t.equal((await fromServer).toString(), 'server done');
  await until(() => serverGot !== undefined, 'the connection');
  t.equal((await serverGot!).toString(), 'late-0;late-1;late-2;late-3;late-4;last',
    'the server received everything the client sent after the server ended');
  await clientClosed;
  await serverClosed;

  const client = log.filter((e) => e.startsWith('client:'));
  t.same(client, ['client:connect', 'client:end', 'client:finish', 'client:close(false)'],
    'client events: end, finish, close');
  const srv = log.filter((e) => e.startsWith('server:'));
  t.same(srv, ['server:end() called', 'server:finish', 'server:end', 'server:close(false)'],
    'server events: finish, end, close');
  t.equal(c.bytesWritten, 'late-0;'.length * 5 + 4);
  t.equal(c.bytesRead, 'server done'.length);
  await closeServer(server);
});

fdTest("'end' then 'close', once each, when both sides end at once", async (t) => {
  const log: string[] = [];
  const server = iomux.createServer((s) => {
    track(s, log, 'server:');
    s.resume();
    s.end('s');
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = iomux.connect(port, '127.0.0.1');
  track(c, log, 'client:');
  c.resume();
  const closed = once(c, 'close');
  c.end('c');
  await closed;
  await until(() => log.includes('server:close(false)'), 'the server side to close');
  for (const side of ['client:', 'server:']) {
    const ev = log.filter((e) => e.startsWith(side) && !e.endsWith('connect'));
    t.same(ev.slice().sort(), [`${side}close(false)`, `${side}end`, `${side}finish`], `${side} end, finish and close once each`);
    t.equal(ev[ev.length - 1], `${side}close(false)`, `${side} close comes last`);
  }
  await closeServer(server);
});

fdTest("server.close() stops accepting at once, and 'close' waits for the open connections", async (t) => {
  const accepted: iomux.Socket[] = [];
  const server = iomux.createServer((s) => {
    accepted.push(s);
    s.on('data', (d: Buffer) => s.write(d));
    s.on('end', () => s.end());
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = iomux.connect(port, '127.0.0.1');
  await connected(c);
  await until(() => accepted.length === 1, 'the accept');
  let closed = false;
  server.close(() => { closed = true; });
  t.equal(server.listening, false, 'not listening right after close()');
  t.equal(server.address(), null);
  // a new connection is refused: the listener is gone
  const late = iomux.connect(port, '127.0.0.1');
  const [lateErr] = await once(late, 'error');
  t.equal(lateErr.code, 'ECONNREFUSED', 'new connections are refused');
  await sleep(20);
  t.equal(closed, false, "no 'close' while a connection is open");
  // the open connection still works
  const got = collectCopies(c);
  c.end('still served');
  t.equal((await got).toString(), 'still served');
  await until(() => closed, "the server's 'close'");
  t.pass("'close' came once the last connection closed");
});

async function refusedTest(t: Test, host: string): Promise<void> {
  const s = iomux.createServer();
  const port = await listen(s, host);
  await closeServer(s);
  const log: string[] = [];
  const c = iomux.connect(port, host);
  track(c, log, '');
  const errored = once(c, 'error');
  const closed = new Promise<boolean>((resolve) => c.on('close', resolve));
  const [err] = await errored;
  const hadError = await closed;
  t.equal(err.code, 'ECONNREFUSED');
  t.equal(err.errno, -constants.errno.ECONNREFUSED, 'errno is negative, as node reports it');
  t.ok(err.errno < 0);
  t.equal(err.syscall, 'connect');
  t.equal(err.address, host);
  t.equal(err.port, port);
  t.match(err.message, /ECONNREFUSED/);
  t.equal(hadError, true, "'close' says there was an error");
  t.same(log, ['error', 'close(true)'], "no 'connect', one 'error', one 'close'");
  t.equal(c.destroyed, true);
  t.equal(c.errored, err, 'socket.errored keeps the error');
}

fdTest('ECONNREFUSED on a closed port (127.0.0.1)', (t) => refusedTest(t, '127.0.0.1'));

fdTest('ECONNREFUSED on a closed port (::1)', async (t) => {
  if (!(await hasIPv6Loopback())) return 'this machine has no IPv6 loopback (node:net cannot bind ::1)';
  await refusedTest(t, '::1');
});

fdTest('ECONNREFUSED many times in a row leaks nothing', async (t) => {
  const s = iomux.createServer();
  const port = await listen(s);
  await closeServer(s);
  const codes = await Promise.all(Array.from({ length: 200 }, () => {
    const c = iomux.connect(port, '127.0.0.1');
    return new Promise<string>((resolve) => {
      let code = '';
      c.on('error', (e: NodeJS.ErrnoException) => { code = e.code ?? ''; });
      c.on('close', () => resolve(code));
    });
  }));
  t.same(new Set(codes), new Set(['ECONNREFUSED']), 'every attempt was refused');
});

fdTest('EADDRINUSE when a second server listens on the same port', async (t) => {
  const s1 = iomux.createServer((s) => {
    s.on('data', (d: Buffer) => s.write(d));
    s.on('end', () => s.end());
  });
  const port = await listen(s1);
  t.teardown(() => closeServer(s1));
  const s2 = iomux.createServer();
  let listening = false;
  s2.on('listening', () => { listening = true; });
  s2.listen(port, '127.0.0.1');
  const [err] = await once(s2, 'error');
  t.equal(err.code, 'EADDRINUSE');
  t.equal(err.errno, -constants.errno.EADDRINUSE, 'errno is negative, as node reports it');
  t.equal(err.syscall, 'listen');
  t.equal(err.address, '127.0.0.1');
  t.equal(err.port, port);
  t.equal(s2.listening, false);
  t.equal(s2.address(), null);
  await sleep(10);
  t.equal(listening, false, "no 'listening' for the failed server");

  // listen({ port }) with the options form fails the same way
  const s3 = iomux.createServer();
  s3.listen({ port, host: '127.0.0.1' });
  const [err3] = await once(s3, 'error');
  t.equal(err3.code, 'EADDRINUSE');
  t.equal(err3.syscall, 'listen');

  // the first server is unharmed
  const c = iomux.connect(port, '127.0.0.1');
  const got = collectCopies(c);
  const cClosed = once(c, 'close');
  c.end('still here');
  t.equal((await got).toString(), 'still here', 'the first server still serves');
  await cClosed;

  // once the first one is gone, the port can be taken
  await closeServer(s1);
  const s4 = iomux.createServer();
  s4.listen(port, '127.0.0.1');
  await once(s4, 'listening');
  t.equal((s4.address() as iomux.AddressInfo).port, port, 'the port is free again after close');
  await closeServer(s4);
});

fdTest('EADDRINUSE on a unix path in use; the failure does not remove the path', async (t) => {
  const dir = tempDir('iomux-conc-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'busy.sock');
  const s1 = iomux.createServer((s) => s.end('hi from s1'));
  s1.listen(path);
  await once(s1, 'listening');
  t.teardown(() => closeServer(s1));
  const s2 = iomux.createServer();
  s2.listen(path);
  const [err] = await once(s2, 'error');
  t.equal(err.code, 'EADDRINUSE');
  t.equal(err.syscall, 'listen');
  t.equal(err.address, path);
  t.equal(s2.listening, false);
  t.ok(existsSync(path), "the first server's socket file is still there");
  const c = iomux.connect(path);
  t.equal((await collectCopies(c)).toString(), 'hi from s1', 'the first server still accepts');
  await closeServer(s1);
  t.notOk(existsSync(path));
});
