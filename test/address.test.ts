// Peer and local addresses on both ends of IPv4, IPv6 and unix connections,
// still readable after close; the loop's counters prove they cost no
// getpeername(), and that each fd is registered exactly once: one epoll_ctl on
// epoll; on io_uring and kqueue one queued change that rides with the wait, and
// no separate syscall at all.
import t, { type Test } from 'tap';
import { once } from 'node:events';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { closeServer, connected, hasIPv6Loopback, iomux, sleep, statsDelta, tempDir } from './helpers';

const BACKEND = iomux.loop.backend;
const EPOLL = BACKEND === 'epoll';

/** Unix stream sockets stop watching write readiness at their first
 * writable event that finds nothing queued (the kernel would wake them at
 * every read of the peer, see docs/backends.md): one change more each, on
 * epoll and io_uring, made by the time that event is handled. */
const DROPS_WRITE = BACKEND === 'epoll' || BACKEND === 'io_uring';

/**
 * One registration per fd, in whatever form this backend makes it, plus at
 * most `drops` write-readiness drops (unix streams).
 */
function checkRegistrations(t: Test, d: Record<string, number>, n: number, what: string, drops = 0): void {
  const max = n + (DROPS_WRITE ? drops : 0);
  const made = EPOLL ? d.ctl : d.changes;
  if (!EPOLL) t.equal(d.ctl, 0, `${BACKEND}: no registration syscall at all`);
  const form = EPOLL ? 'epoll_ctl' : `${BACKEND}: queued change`;
  if (max === n) t.equal(made, n, `${form}: exactly one per fd (${what})`);
  else t.ok(made >= n && made <= max, `${form}: one per fd (${what}) and at most ${drops} write-readiness drops: ${made}`);
}

const N = 8;

interface Pair {
  client: iomux.Socket;
  server: iomux.Socket;
}

/** Waits (polling the loop) until cond() holds. */
async function until(cond: () => boolean, what: string, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(1);
  }
}

type Where = { host: string } | { path: string };

/**
 * Opens N connections to a fresh server and checks the syscall counters of
 * the whole set-up: one epoll_ctl per fd (N accepted + N connecting + 1
 * listener), and no getpeername at all.
 */
async function openPairs(t: Test, where: Where, connectHost?: string): Promise<{ server: iomux.Server; pairs: Pair[]; port: number; delta: () => Record<string, number> }> {
  const delta = statsDelta();
  const accepted: iomux.Socket[] = [];
  const server = iomux.createServer((s) => accepted.push(s));
  if ('path' in where) server.listen(where.path);
  else server.listen(0, where.host);
  await once(server, 'listening');
  t.teardown(() => closeServer(server));
  const a = server.address();
  const port = typeof a === 'object' && a !== null ? a.port : 0;
  const clients: iomux.Socket[] = [];
  for (let i = 0; i < N; i++) {
    const c = 'path' in where ? iomux.connect(where.path) : iomux.connect(port, connectHost ?? where.host);
    clients.push(c);
    // accept in order, so that accepted[i] is the peer of clients[i]
    await connected(c);
    await until(() => accepted.length === i + 1, 'the accept');
  }
  const d = delta();
  checkRegistrations(t, d, 2 * N + 1, `${N} accepted + ${N} connected + 1 listener`, 'path' in where ? 2 * N : 0);
  t.equal(d.getpeername, 0, 'no getpeername');
  t.ok(d.accept >= N, `at least ${N} accept() calls (the last of a burst may be an EAGAIN probe)`);
  t.equal(d.listen, 1, 'one listen()');
  t.equal(d.socket, N + 1, 'one socket() per connecting client plus the listener');
  t.equal(d.connect, N, 'one connect() per client');
  return { server, pairs: clients.map((client, i) => ({ client, server: accepted[i]! })), port, delta };
}

function snapshot(s: iomux.Socket) {
  return {
    remoteAddress: s.remoteAddress,
    remotePort: s.remotePort,
    remoteFamily: s.remoteFamily,
  };
}

async function closeAll(pairs: Pair[]): Promise<void> {
  const closed = pairs.flatMap((p) => [once(p.client, 'close'), once(p.server, 'close')]);
  for (const p of pairs) {
    p.client.end();
    p.server.end();
  }
  await Promise.all(closed);
}

async function tcpCase(t: Test, host: string, family: 'IPv4' | 'IPv6', connectHost?: string): Promise<void> {
  const { server, pairs, port, delta } = await openPairs(t, { host }, connectHost);
  const local = pairs.map((p) => ({ client: p.client.address(), server: p.server.address() }));
  for (const [i, p] of pairs.entries()) {
    const l = local[i]!;
    t.same(l.server, { address: host, family, port }, `server side ${i}: local address is the listener's`);
    t.equal(p.client.localAddress, host);
    t.equal(p.client.localFamily, family);
    t.ok(p.client.localPort! > 0 && p.client.localPort !== port, 'client has an ephemeral local port');
    // server side: its peer is the client's local end
    t.equal(p.server.remoteAddress, p.client.localAddress, 'server.remoteAddress === client.localAddress');
    t.equal(p.server.remotePort, p.client.localPort, 'server.remotePort === client.localPort');
    t.equal(p.server.remoteFamily, family);
    // and vice versa
    t.equal(p.client.remoteAddress, p.server.localAddress, 'client.remoteAddress === server.localAddress');
    t.equal(p.client.remotePort, p.server.localPort, 'client.remotePort === server.localPort');
    t.equal(p.client.remotePort, port);
    t.equal(p.client.remoteFamily, family);
  }
  const before = pairs.map((p) => [snapshot(p.client), snapshot(p.server)]);
  const getsockname = delta().getsockname;
  // cached: reading again costs nothing
  for (const p of pairs) void [p.client.localAddress, p.client.localPort, p.server.localAddress, p.server.localPort];
  t.equal(delta().getsockname, getsockname, 'local addresses are cached after the first getsockname');
  t.equal(getsockname, 1 + 2 * N, 'one getsockname for the listener and one per socket');

  await closeAll(pairs);
  const after = pairs.map((p) => [snapshot(p.client), snapshot(p.server)]);
  t.same(after, before, 'peer addresses are still there after close');
  t.ok(pairs.every((p) => p.client.destroyed && p.server.destroyed));
  t.same(pairs.map((p) => p.client.localPort), local.map((l) => (l.client as iomux.AddressInfo).port),
    'cached local ports are still there after close');
  await closeServer(server);
  const d = delta();
  t.equal(d.ctl, EPOLL ? 2 * N + 1 : 0, 'closing costs no registration syscall');
  t.equal(d.getpeername, 0, 'still no getpeername');
  t.equal(d.close, 2 * N + 1, 'one close() per fd');
}

t.test('IPv4: peer and local addresses on both sides, also after close', (t) => tcpCase(t, '127.0.0.1', 'IPv4'));

t.test('IPv6: peer and local addresses on both sides, also after close', async (t) => {
  if (!(await hasIPv6Loopback())) {
    t.plan(0, 'this machine has no IPv6 loopback (node:net cannot bind ::1)');
    return;
  }
  await tcpCase(t, '::1', 'IPv6');
});

t.test('unix: peer and local addresses on both sides, also after close', async (t) => {
  const dir = tempDir('iomux-addr-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'addr.sock');
  const { server, pairs, delta } = await openPairs(t, { path });
  t.equal(server.address(), path);
  for (const [i, p] of pairs.entries()) {
    t.equal(p.client.remoteFamily, 'unix', `client ${i}: remoteFamily unix`);
    t.equal(p.server.remoteFamily, 'unix', `server ${i}: remoteFamily unix`);
    t.equal(p.client.remotePort, undefined, 'no port on a unix socket');
    t.equal(p.server.remotePort, undefined);
    t.equal(p.client.localPort, undefined);
    t.equal(p.server.localPort, undefined);
    t.equal(p.client.remoteAddress, path, 'the client peer is the path it connected to');
    t.equal(p.server.localAddress, path, "the accepted socket's local address is the path");
    t.equal(p.client.remoteAddress, p.server.localAddress, 'client.remoteAddress === server.localAddress');
    t.equal(p.server.remoteAddress, '', 'the accepted socket sees an unnamed peer');
    t.equal(p.server.remoteAddress, p.client.localAddress, 'server.remoteAddress === client.localAddress (unnamed)');
    t.equal(p.client.localFamily, 'unix');
  }
  const before = pairs.map((p) => [snapshot(p.client), snapshot(p.server)]);
  await closeAll(pairs);
  t.same(pairs.map((p) => [snapshot(p.client), snapshot(p.server)]), before, 'peer addresses are still there after close');
  await closeServer(server);
  const d = delta();
  // A connecting client's first writable event is its connect's: each has
  // dropped write readiness by now; an accepted socket once its
  // registration's writable event was handled.
  if (EPOLL) t.ok(d.ctl >= 3 * N + 1 && d.ctl <= 4 * N + 1, `closing costs no registration syscall (${d.ctl} epoll_ctl: one per fd and the write-readiness drops)`);
  else t.equal(d.ctl, 0, 'closing costs no registration syscall');
  t.equal(d.getpeername, 0, 'no getpeername');
  t.equal(d.unlink, 1, 'the path was unlinked once, by close()');
  t.equal(d.close, 2 * N + 1, 'one close() per fd');
});

t.test('dual-stack listener: an IPv4 client is seen as IPv4-mapped, and knows its peer as 127.0.0.1', async (t) => {
  if (!(await hasIPv6Loopback())) {
    t.plan(0, 'this machine has no IPv6 loopback: there is no dual-stack listener');
    return;
  }
  const delta = statsDelta();
  let accepted: iomux.Socket | undefined;
  const server = iomux.createServer((s) => { accepted = s; });
  server.listen(0);
  await once(server, 'listening');
  t.teardown(() => closeServer(server));
  const port = (server.address() as iomux.AddressInfo).port;
  const c = iomux.connect(port, '127.0.0.1');
  await connected(c);
  await until(() => accepted !== undefined, 'the accept');
  const s = accepted!;
  t.equal(s.remoteAddress, '::ffff:127.0.0.1');
  t.equal(s.remoteFamily, 'IPv6');
  t.equal(s.remotePort, c.localPort);
  t.equal(s.localAddress, '::ffff:127.0.0.1');
  t.equal(s.localPort, port);
  t.equal(c.remoteAddress, '127.0.0.1');
  t.equal(c.remoteFamily, 'IPv4');
  t.equal(c.remotePort, port);
  t.equal(c.localAddress, '127.0.0.1');
  await closeAll([{ client: c, server: s }]);
  t.equal(s.remoteAddress, '::ffff:127.0.0.1', 'still there after close');
  t.equal(c.remotePort, port);
  await closeServer(server);
  if (EPOLL) t.equal(delta().ctl, 3);
  else t.equal(delta().ctl, 0);
  t.equal(delta().getpeername, 0);
});

t.test('a non-canonical IP literal: remoteAddress is what the kernel would report (as node), not the text given', async (t) => {
  if (!(await hasIPv6Loopback())) {
    t.plan(0, 'this machine has no IPv6 loopback (node:net cannot bind ::1)');
    return;
  }
  let accepted: iomux.Socket | undefined;
  const server = iomux.createServer((s) => { accepted = s; });
  server.listen(0, '::1');
  await once(server, 'listening');
  t.teardown(() => closeServer(server));
  const port = (server.address() as iomux.AddressInfo).port;
  const c = iomux.connect(port, '0:0:0:0:0:0:0:1');
  await connected(c);
  await until(() => accepted !== undefined, 'the accept');
  t.equal(accepted!.localAddress, '::1');
  t.equal(c.remoteAddress, accepted!.localAddress, 'client.remoteAddress === server.localAddress');
  t.equal(c.remoteFamily, 'IPv6');
  await closeAll([{ client: c, server: accepted! }]);
  await closeServer(server);
});

t.test('connect by hostname: the peer address is the resolved address that was connected to', async (t) => {
  let accepted: iomux.Socket | undefined;
  const server = iomux.createServer((s) => { accepted = s; });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => closeServer(server));
  const port = (server.address() as iomux.AddressInfo).port;
  const c = iomux.connect(port, 'localhost');
  c.on('error', (e: Error) => t.error(e));
  await connected(c);
  await until(() => accepted !== undefined, 'the accept');
  t.equal(c.remoteAddress, '127.0.0.1', 'not the name: the address');
  t.equal(c.remoteFamily, 'IPv4');
  t.equal(c.remotePort, port);
  t.equal(c.remoteAddress, accepted!.localAddress);
  t.equal(accepted!.remotePort, c.localPort);
  await closeAll([{ client: c, server: accepted! }]);
  await closeServer(server);
});

t.test("an unnamed unix client socket's local address is '' (never stray bytes)", async (t) => {
  const dir = tempDir('iomux-addr-');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'unnamed.sock');
  const server = iomux.createServer((s) => s.resume());
  server.listen(path);
  await once(server, 'listening');
  t.teardown(() => closeServer(server));
  const seen = new Set<string>();
  for (let i = 0; i < 50; i++) {
    const c = iomux.connect(path);
    await connected(c);
    t.equal(c.localFamily, 'unix');
    seen.add(JSON.stringify(c.localAddress));
    const closed = once(c, 'close');
    c.destroy();
    await closed;
  }
  t.same([...seen], ['""'], "every client's localAddress was ''");
  await closeServer(server);
});

t.test('no getpeername was ever issued by this process', async (t) => {
  t.equal(iomux.loop.stats().getpeername, 0);
  t.ok(['epoll', 'io_uring', 'kqueue'].includes(iomux.loop.backend), `backend ${iomux.loop.backend}`);
});
