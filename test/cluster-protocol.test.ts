// The control channel's framing: round trips, any split of the bytes,
// growth (a longer header is skipped), and violations refused.
import t from 'tap';
import { serialize } from 'node:v8';
import { iomux } from './helpers';

const { encodeFrame, FrameDecoder, FrameType, HEADER_SIZE, MAX_PAYLOAD } = iomux.cluster;

t.test('round trip, whole and byte by byte', async (t) => {
  const bodies = [undefined, 1, 'x', { a: [1, 2, { b: new Map([[1, 2]]) }] }, Buffer.from('bytes'), new Date(5), 2n ** 70n];
  const bytes = Buffer.concat(bodies.map((b, i) => encodeFrame(FrameType.MESSAGE, b, i, 0)));
  const whole = new FrameDecoder().push(bytes);
  t.equal(whole.length, bodies.length);
  whole.forEach((f, i) => {
    t.equal(f.type, FrameType.MESSAGE);
    t.equal(f.id, i);
    t.same(f.body, bodies[i]);
  });
  const d = new FrameDecoder();
  const one: unknown[] = [];
  for (let i = 0; i < bytes.length; i++) for (const f of d.push(bytes.subarray(i, i + 1))) one.push(f.body);
  t.same(one, bodies, 'the same frames from single bytes');
  t.equal(d.buffered, 0);
});

t.test('a longer header (a later version\'s extra fields) is skipped', async (t) => {
  const payload = serialize({ hello: 1 });
  const f = Buffer.alloc(HEADER_SIZE + 4 + payload.length);
  f.writeUInt32BE(payload.length, 0);
  f[4] = 1;
  f[5] = HEADER_SIZE + 4;
  f[6] = 99; // an unknown type: delivered, the receiver decides
  f.writeUInt32BE(7, 8);
  f.writeUInt32BE(0xdeadbeef, 12);
  payload.copy(f, HEADER_SIZE + 4);
  const [frame] = new FrameDecoder().push(f);
  t.same(frame, { type: 99, flags: 0, id: 7, body: { hello: 1 } });
});

t.test('violations: version, header length, size, payload', async (t) => {
  const good = encodeFrame(FrameType.READY, { x: 1 });
  const bad = (mut: (b: Buffer) => void): Buffer => { const b = Buffer.from(good); mut(b); return b; };
  t.throws(() => new FrameDecoder().push(bad((b) => { b[4] = 2; })), { code: 'ERR_IOMUX_CLUSTER_PROTOCOL' }, 'version 2');
  t.throws(() => new FrameDecoder().push(bad((b) => { b[5] = 8; })), { code: 'ERR_IOMUX_CLUSTER_PROTOCOL' }, 'short header');
  t.throws(() => new FrameDecoder().push(bad((b) => { b.writeUInt32BE(MAX_PAYLOAD + 1, 0); })), { code: 'ERR_IOMUX_CLUSTER_PROTOCOL' }, 'too large');
  t.throws(() => new FrameDecoder().push(bad((b) => { b.fill(0xff, HEADER_SIZE); })), { code: 'ERR_IOMUX_CLUSTER_PROTOCOL' }, 'garbage payload');
  t.throws(() => encodeFrame(FrameType.MESSAGE, Buffer.alloc(MAX_PAYLOAD + 1)), RangeError);
});

t.test('a large frame in 64 KiB chunks', async (t) => {
  const big = Buffer.alloc(8 * 1024 * 1024, 7);
  const bytes = encodeFrame(FrameType.MESSAGE, { big });
  const d = new FrameDecoder();
  const got: unknown[] = [];
  for (let i = 0; i < bytes.length; i += 65536) got.push(...d.push(bytes.subarray(i, i + 65536)));
  t.equal(got.length, 1);
  t.ok(Buffer.from((got[0] as { body: { big: Uint8Array } }).body.big).equals(big));
});

t.test('a channel whose peer breaks the framing closes with the error; nothing throws', async (t) => {
  const { binding } = await import('../dist/binding');
  const { Channel, adoptSocket } = await import('../dist/cluster/channel');
  const net = await import('node:net');
  const pair = binding.socketpair();
  if (typeof pair === 'number') throw new Error(`socketpair: ${pair}`);
  const ch = new Channel(adoptSocket(pair[0]));
  const peer = new net.Socket({ fd: pair[1], readable: true, writable: true });
  peer.on('error', () => {});
  const pending = ch.request('anything');
  const closed = new Promise<Error | undefined>((r) => ch.once('close', r));
  peer.write(Buffer.from([0, 0, 0, 4, 9, 12, 1, 0, 0, 0, 0, 0, 1, 2, 3, 4])); // version 9
  const err = await closed;
  t.match(err, { code: 'ERR_IOMUX_CLUSTER_PROTOCOL', message: /frame version 9/ });
  await t.rejects(pending, /frame version 9/, 'the request under way fails with it');
  t.equal(ch.send(FrameType.MESSAGE, 1), false, 'no more sends');
  peer.destroy();
});
