// Large frames between iomux sockets: frames of 4 KiB and more go to the
// kernel by reference in long writev()s (headers and frames interleaved,
// several sendmsg() windows per flush), small frames are copied. Every
// message must arrive whole, in order, with the frames it was sent with,
// also when the receiver falls behind and the kernel refuses part of a flush.
import t from 'tap';
import { iomux, statsDelta } from './helpers';
import { bindEndpoint, sleep, TRANSPORTS } from './zmq-helpers';

const z = iomux.zmq;

/** Message i: [8-byte sequence, frame of 4 KiB to 20 KiB], or one 4 KiB frame, or a small one. */
function message(i: number): Buffer[] {
  const fill = (n: number, seed: number) => {
    const b = Buffer.allocUnsafe(n);
    for (let k = 0; k < n; k++) b[k] = (seed + k * 31) & 0xff;
    return b;
  };
  switch (i % 3) {
    case 0: {
      const seq = Buffer.alloc(8);
      seq.writeUInt32BE(i, 0);
      return [seq, fill(4096 + ((i * 977) % 16384), i)];
    }
    case 1:
      return [fill(4096, i)];
    default:
      return [fill(1 + (i % 300), i), fill(4096 * 2, i + 1), fill(3, i + 2)];
  }
}

for (const transport of TRANSPORTS) {
  t.test(`${transport}: 6,000 messages with frames of 4 to 20 KiB, sent in bursts, arrive whole and in order`, async (t) => {
    const N = 6000;
    const pull = new z.Pull({ receiveHighWaterMark: 50 });
    await pull.bind(bindEndpoint(transport));
    const push = new z.Push({ sendHighWaterMark: 200 });
    push.connect(pull.lastEndpoint!);
    t.teardown(async () => {
      await push.close();
      await pull.close();
    });

    let bad = -1;
    let got = 0;
    const received = (async () => {
      for (let i = 0; i < N; i++) {
        const msg = await pull.receive();
        const want = message(i);
        if (bad < 0 && (msg.length !== want.length || msg.some((f, k) => !f.equals(want[k]!)))) bad = i;
        got++;
        if (i % 500 === 0) await sleep(2); // the receiver falls behind now and then
      }
    })();
    // Bursts of 500 synchronous sends: each flush has hundreds of pieces.
    for (let i = 0; i < N;) {
      for (const end = Math.min(N, i + 500); i < end; i++) {
        const p = push.send(message(i));
        if (p !== undefined) await p;
      }
      await new Promise((r) => setImmediate(r));
    }
    await received;
    t.equal(got, N, 'every message');
    t.equal(bad, -1, 'each with its frames and bytes, in order');
  });
}

t.test('frames of 4 KiB and more leave by reference, headers and frames in one sendmsg()', async (t) => {
  const pull = new z.Pull();
  await pull.bind('tcp://127.0.0.1:*');
  const push = new z.Push();
  push.connect(pull.lastEndpoint!);
  t.teardown(async () => {
    await push.close();
    await pull.close();
  });
  await push.send('hello'); // the connection is up
  t.same((await pull.receive()).map(String), ['hello']);
  const before = statsDelta();
  const frames: Buffer[] = [];
  for (let i = 0; i < 100; i++) frames.push(Buffer.alloc(8192, i));
  for (const f of frames) push.send(f);
  await new Promise((r) => setImmediate(r)); // flushed at the end of the microtask
  const d = before();
  // 100 headers and 100 frames as 200 pieces of one writev: sendmsg() calls
  // (counted as writev) and no write() of a slab with copies in it.
  t.ok(d.writev! >= 1, `${d.writev} sendmsg() calls with several pieces`);
  for (let i = 0; i < 100; i++) {
    const [m] = await pull.receive();
    if (m!.length !== 8192 || !m!.every((b) => b === (i & 0xff))) {
      t.fail(`message ${i} differs`);
      return;
    }
  }
  t.pass('100 frames of 8 KiB, whole and in order');
});
