// Socket.writev(): many chunks in one call, taken by the kernel straight from
// the caller's buffers; the bytes arrive whole and in order, the chunks may be
// reused once it returns, and 'drain' follows a false return.
import t, { type Test } from 'tap';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { closeServer, connected, iomux, listen, statsDelta } from './helpers';

/** A server that hashes everything one connection sends it; resolves at its 'end'. */
async function sink(t: Test): Promise<{ port: number; done: Promise<{ bytes: number; sha: string }> }> {
  let resolveDone!: (v: { bytes: number; sha: string }) => void;
  const done = new Promise<{ bytes: number; sha: string }>((r) => { resolveDone = r; });
  const server = iomux.createServer((s) => {
    const h = createHash('sha256');
    let bytes = 0;
    s.on('data', (d: Buffer) => { h.update(d); bytes += d.length; });
    s.on('end', () => { resolveDone({ bytes, sha: h.digest('hex') }); s.end(); });
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  return { port, done };
}

/** 1,000 pieces of 0 to 9 bytes and 4 KiB frames, like ZMTP headers and bodies. */
function pieces(n: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) out.push(i % 2 === 0 ? randomBytes(i % 10) : randomBytes(4096));
  return out;
}

const sha = (bufs: Buffer[]): string => {
  const h = createHash('sha256');
  for (const b of bufs) h.update(b);
  return h.digest('hex');
};

// 5,000 pieces take more than one call into the binding (1,024 pieces each).
for (const [count, maxCalls] of [[1000, 4], [5000, 20]] as const) {
  t.test(`${count.toLocaleString('en')} pieces in one writev: in order, in few sendmsg calls`, async (t) => {
    const { port, done } = await sink(t);
    const c = new iomux.Socket();
    c.connect(port, '127.0.0.1');
    await connected(c);
    c.on('data', () => {}); // a flowing socket: write()'s fast path
    const bufs = pieces(count);
    const total = bufs.reduce((n, b) => n + b.length, 0);
    const delta = statsDelta();
    const ok = c.writev(bufs);
    const d = delta();
    // What the kernel refuses (its send buffer's size depends on the system)
    // is copied into the core's queue; the rest went in sendmsg() calls of up
    // to 256 pieces each, straight from the buffers.
    t.ok(d.writev! >= 1 && d.writev! <= maxCalls, `${count} pieces in ${d.writev} sendmsg calls (256 per call)`);
    t.ok(c.writableLength < total, `the kernel took ${total - c.writableLength} of ${total} bytes at once`);
    t.equal(ok, c.writableLength < c.writableHighWaterMark, 'false only above the high-water mark');
    if (!ok) await once(c, 'drain');
    t.equal(c.bytesWritten, total);
    c.end();
    const got = await done;
    t.equal(got.bytes, total);
    t.equal(got.sha, sha(bufs), 'the bytes arrived whole and in order');
  });
}

t.test('writev beyond what the kernel takes: the rest is copied, the chunks may be reused, drain follows', async (t) => {
  // The peer does not read until we say so: the kernel refuses part of 64 MiB.
  let peer: iomux.Socket | undefined;
  const h = createHash('sha256');
  let bytes = 0;
  let resolveEnd!: () => void;
  const ended = new Promise<void>((r) => { resolveEnd = r; });
  const server = iomux.createServer((s) => {
    peer = s;
    s.pause();
    s.on('data', (d: Buffer) => { h.update(d); bytes += d.length; });
    s.on('end', () => { resolveEnd(); s.end(); });
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  const c = new iomux.Socket();
  c.connect(port, '127.0.0.1');
  await connected(c);
  c.on('data', () => {});
  while (peer === undefined) await new Promise((r) => setImmediate(r));
  const bufs: Buffer[] = [];
  for (let i = 0; i < 1024; i++) bufs.push(Buffer.alloc(64 * 1024, i & 0xff));
  const expected = sha(bufs);
  const ok = c.writev(bufs);
  t.equal(ok, false, 'over the high-water mark: false');
  t.ok(c.writableLength > 0, `${c.writableLength} bytes queued in the core`);
  for (const b of bufs) b.fill(0xee); // reused at once: must not change what is sent
  const drained = once(c, 'drain');
  peer.resume();
  await drained;
  t.equal(c.writableLength, 0, 'drain once everything reached the kernel');
  c.end();
  await ended;
  t.equal(bytes, 64 * 1024 * 1024);
  t.equal(h.digest('hex'), expected, 'what was sent is what writev saw');
});

t.test('writev before the connection is up and without a data listener: same bytes, same order', async (t) => {
  const { port, done } = await sink(t);
  const c = new iomux.Socket();
  c.connect(port, '127.0.0.1');
  const bufs = pieces(300);
  t.equal(c.connecting, true);
  c.writev(bufs.slice(0, 150)); // waits for the connection
  await connected(c);
  c.writev(bufs.slice(150)); // not flowing: one write() per piece
  c.end();
  const got = await done;
  t.equal(got.bytes, bufs.reduce((n, b) => n + b.length, 0));
  t.equal(got.sha, sha(bufs));
});

t.test('writev with bad arguments throws a TypeError naming the argument', async (t) => {
  const { port, done } = await sink(t);
  const c = new iomux.Socket();
  c.connect(port, '127.0.0.1');
  await connected(c);
  t.throws(() => c.writev('abc' as unknown as Buffer[]), { code: 'ERR_INVALID_ARG_TYPE', message: /chunks/ });
  t.throws(() => c.writev([Buffer.from('a'), 'b' as unknown as Buffer]), { code: 'ERR_INVALID_ARG_TYPE', message: /chunks\[1\]/ });
  t.equal(c.writev([]), true, 'nothing to write');
  c.writev([Buffer.from('ok')]);
  c.end();
  const got = await done;
  t.equal(got.bytes, 2, 'nothing of the refused calls was sent');
});
