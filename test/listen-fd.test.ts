// server.listen({ fd }): adopting a listening socket made elsewhere, the
// refusals, and several processes on one listener woken one per connection.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { binding } from '../dist/binding';
import { childEnv, closeServer, fixturesDir, iomux, openFds, settleFds, sleep, waitFor } from './helpers';

function listenSocket(): number {
  const fd = binding.listenSocket('127.0.0.1', 0, 4, 64, 0);
  if (fd < 0) throw new Error(`listenSocket: ${-fd}`);
  return fd;
}

function get(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(port, '127.0.0.1');
    let out = '';
    c.setEncoding('utf8');
    c.on('data', (d) => { out += d; });
    c.on('end', () => resolve(out));
    c.on('error', reject);
  });
}

t.test('adopts a listening socket: accepts, address(), close() closes the fd', async (t) => {
  const fd = listenSocket();
  const server = iomux.createServer((s) => s.end('adopted'));
  server.listen({ fd });
  await once(server, 'listening');
  const a = server.address();
  t.ok(a && typeof a === 'object' && a.port > 0 && a.address === '127.0.0.1', 'address() of the adopted socket');
  t.equal(await get((a as iomux.AddressInfo).port), 'adopted');
  await closeServer(server);
  t.throws(() => closeSync(fd), { code: 'EBADF' }, 'the server closed the fd');
});

t.test('refusals: bad fd values throw, the wrong kind of fd emits an error', async (t) => {
  const server = iomux.createServer();
  // As node's: only a number >= 0 is a descriptor; anything else is an
  // options object with neither port nor path.
  t.throws(() => server.listen({ fd: -1 }), { code: 'ERR_INVALID_ARG_VALUE' });
  t.throws(() => server.listen({ fd: '3' as unknown as number }), { code: 'ERR_INVALID_ARG_VALUE' });
  t.throws(() => server.listen({ fd: 1.5 }), { code: 'ERR_OUT_OF_RANGE' });
  const before = openFds();
  const file = openSync(__filename, 'r');
  for (const [fd, code] of [[file, 'ENOTSOCK'], [2 ** 30, 'EBADF']] as const) {
    const s = iomux.createServer();
    s.listen({ fd });
    const [err] = await once(s, 'error');
    t.equal(err.code, code, `fd ${fd === file ? 'of a file' : 'not open'}: ${code}`);
    t.equal(err.syscall, 'listen');
    t.notOk(s.listening);
  }
  // A TCP socket that does not listen: EINVAL, and the fd stays the caller's.
  const c = net.createServer((s) => s.resume()).listen(0, '127.0.0.1');
  await once(c, 'listening');
  const client = net.connect((c.address() as net.AddressInfo).port, '127.0.0.1');
  await once(client, 'connect');
  const cfd = (client as unknown as { _handle: { fd: number } })._handle.fd;
  const s = iomux.createServer();
  s.listen({ fd: cfd });
  const [err] = await once(s, 'error');
  t.equal(err.code, 'EINVAL', 'a connected socket is refused');
  client.write('still mine');
  client.destroy();
  await new Promise((r) => c.close(r));
  closeSync(file);
  t.equal(await settleFds(before), before, 'no fd leaked');
});

interface Child { proc: ChildProcess; lines: any[] }

function startChild(fd: number, standalone: boolean): Child {
  const proc = spawn(process.execPath, [join(fixturesDir, 'shared-listener.js'), ...(standalone ? ['standalone'] : [])], {
    stdio: ['pipe', 'pipe', 'inherit', fd], env: childEnv(),
  });
  const lines: any[] = [];
  let buf = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
    }
  });
  return { proc, lines };
}

for (const standalone of [false, true]) {
  const mode = standalone ? 'standalone' : 'embedded in libuv';
  t.test(`4 processes on one listener (${mode}): each connection wakes one`, async (t) => {
    const fd = listenSocket();
    const children = Array.from({ length: 4 }, () => startChild(fd, standalone));
    t.teardown(() => children.forEach((c) => c.proc.kill('SIGKILL')));
    t.ok(await waitFor(() => children.every((c) => c.lines.some((l) => l.ready)), 20000), 'all adopted the socket');
    closeSync(fd); // the children hold it now
    const addr = children[0]!.lines.find((l) => l.ready).address as iomux.AddressInfo;
    const CONNS = 3;
    for (let i = 0; i < CONNS; i++) {
      await sleep(100); // every child asleep again
      t.equal(await get(addr.port), 'hi');
    }
    await sleep(100);
    for (const c of children) c.proc.stdin!.write('q\n');
    t.ok(await waitFor(() => children.every((c) => c.lines.some((l) => l.wakeups !== undefined)), 10000));
    const reports = children.map((c) => c.lines.find((l) => l.wakeups !== undefined));
    const wakeups = reports.reduce((n, r) => n + r.wakeups, 0);
    const accepted = reports.reduce((n, r) => n + r.accepted, 0);
    t.equal(accepted, CONNS, 'every connection accepted once');
    t.comment(`backend ${iomux.loop.backend}, ${mode}: ${wakeups} wakeups for ${CONNS} connections`);
    // An epoll set inside libuv's epoll set passes an exclusive wakeup on
    // (see iomux_listen in deps/iomux/include/iomux.h): only io_uring, or
    // epoll's standalone wait, keeps it to one process. kqueue has no
    // exclusive wakeup at all.
    const backend = iomux.loop.backend;
    if (backend === 'io_uring' || (standalone && backend === 'epoll')) t.equal(wakeups, CONNS, 'one wakeup per connection');
    else t.ok(wakeups >= CONNS, 'at least one wakeup per connection');
    await Promise.all(children.map((c) => c.proc.exitCode !== null ? null : once(c.proc, 'exit')));
  });
}
