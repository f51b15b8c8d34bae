// Batched reads and writes: many sockets busy at once, every byte back in
// order; the counters say the batches happened; IOMUX_BATCH=0 turns them off.
import t from 'tap';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { closeServer, echoServer, iomux, listen, runNode, statsDelta } from './helpers';

const linux = process.platform === 'linux';
const backend = iomux.loop.backend;

t.test('loop.batching: on where the kernel has io_uring, off with IOMUX_BATCH=0', async (t) => {
  t.type(iomux.loop.batching, 'boolean');
  // The io_uring backend needs a newer kernel than batching does.
  if (backend === 'io_uring') t.equal(iomux.loop.batching, true, 'on with the io_uring backend');
  if (!linux) t.equal(iomux.loop.batching, false, 'off without io_uring');
  const script = "const m = require(process.argv[1]); process.stdout.write(JSON.stringify(m.loop.batching))";
  const dist = require.resolve('../dist');
  const off = await runNode(['-e', script, dist], { env: { IOMUX_BATCH: '0' } });
  t.equal(off.code, 0, off.stderr);
  t.equal(off.stdout, 'false', 'IOMUX_BATCH=0: off');
  const on = await runNode(['-e', script, dist], { env: { IOMUX_BATCH: '' } });
  t.equal(on.stdout, JSON.stringify(iomux.loop.batching), 'unset: as in this process');
});

t.test('64 clients at once, messages of 1 B to 12 KiB: every byte echoed in order', async (t) => {
  const CLIENTS = 64;
  const server = echoServer();
  const port = await listen(server);
  const delta = statsDelta();
  const runs = Array.from({ length: CLIENTS }, async (_, i) => {
    // Sizes around the 2 KiB slab region a batched read gets, both sides.
    const chunks: Buffer[] = [];
    for (let k = 0; k < 40; k++) chunks.push(randomBytes(1 + ((i * 977 + k * 1543) % 12288)));
    const sent = Buffer.concat(chunks);
    const c = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      c.once('connect', resolve);
      c.once('error', reject);
    });
    const got: Buffer[] = [];
    let n = 0;
    const done = new Promise<void>((resolve, reject) => {
      c.on('data', (d: Buffer) => {
        got.push(d);
        n += d.length;
        if (n >= sent.length) resolve();
      });
      c.once('error', reject);
    });
    // One message per echo, so that many sockets are readable at once.
    let at = 0;
    for (const chunk of chunks) {
      c.write(chunk);
      at += chunk.length;
      while (n < at) await new Promise((r) => setImmediate(r));
    }
    await done;
    c.destroy();
    const back = Buffer.concat(got);
    return back.length === sent.length &&
      createHash('sha256').update(back).digest('hex') === createHash('sha256').update(sent).digest('hex');
  });
  const ok = await Promise.all(runs);
  t.equal(ok.filter(Boolean).length, CLIENTS, 'every client got its bytes back, in order');
  const d = delta();
  t.comment(`reads ${d.read} + ${d.batch_read} batched, writes ${d.write! + d.writev!} + ${d.batch_write} batched, ` +
    `in ${d.batch} batched calls`);
  if (iomux.loop.batching) {
    t.ok(d.batch! > 0, 'batched calls were made');
    t.ok(d.batch_read! > 0 && d.batch_write! > 0, 'of reads and of writes');
    t.ok(d.batch_read! + d.batch_write! >= 2 * d.batch!, 'two or more in each');
  } else {
    t.equal(d.batch, 0, 'no batched call');
    t.equal(d.batch_read! + d.batch_write!, 0);
  }
  await closeServer(server);
});
