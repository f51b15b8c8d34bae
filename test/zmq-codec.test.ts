// The ZMTP codec: greetings, READY, commands and frames, in every split;
// each malformed input ends in a ZmtpError with a named code.
import t from 'tap';
import { iomux } from './helpers';

const { Decoder, ZmtpError, ERRORS, encodeGreeting, encodeReady, encodeCommand, encodeMessage, encodePing,
  encodePong, encodeSubscription, encodeError, FLAG_COMMAND, FLAG_LONG, FLAG_MORE, parseReady } = iomux.zmq;

interface Seen {
  greeting: iomux.zmq.Greeting | null;
  ready: iomux.zmq.ReadyProperties | null;
  messages: Buffer[][];
  pings: [number, Buffer][];
  pongs: Buffer[];
  subs: [boolean, string][];
}

function decoder(opts?: iomux.zmq.DecoderOptions): { d: iomux.zmq.Decoder; seen: Seen } {
  const seen: Seen = { greeting: null, ready: null, messages: [], pings: [], pongs: [], subs: [] };
  const d = new Decoder({
    onGreeting: (g) => { seen.greeting = g; },
    onReady: (r) => { seen.ready = r; },
    onMessage: (f) => { seen.messages.push(f); },
    onPing: (ttl, ctx) => { seen.pings.push([ttl, ctx]); },
    onPong: (ctx) => { seen.pongs.push(ctx); },
    onSubscription: (s, topic) => { seen.subs.push([s, topic.toString()]); },
  }, opts);
  return { d, seen };
}

const HELLO = Buffer.concat([encodeGreeting(), encodeReady('PUSH', Buffer.from('id1'))]);

t.test('greeting, READY and messages, whole and split a byte at a time', async (t) => {
  const stream = Buffer.concat([
    HELLO,
    encodeMessage([Buffer.from('a'), Buffer.alloc(300, 7), Buffer.alloc(0)]),
    encodePing(15, Buffer.from('ctx')),
    encodePong(Buffer.from('p')),
    encodeCommand('SUBSCRIBE', Buffer.from('topic')),
    encodeCommand('CANCEL', Buffer.from('topic')),
    encodeCommand('UNKNOWN-LATER', Buffer.from('ignored')),
    encodeMessage([Buffer.from('last')]),
  ]);
  for (const step of [stream.length, 1, 7, 63, 65]) {
    const { d, seen } = decoder();
    for (let i = 0; i < stream.length; i += step) t.equal(d.push(stream.subarray(i, i + step)), null);
    t.same(seen.greeting, { major: 3, minor: 1, mechanism: 'NULL', asServer: false }, `greeting (step ${step})`);
    t.equal(seen.ready!.socketType, 'PUSH');
    t.equal(seen.ready!.identity.toString(), 'id1');
    t.equal(seen.messages.length, 2);
    t.same(seen.messages[0]!.map((b) => b.length), [1, 300, 0]);
    t.ok(seen.messages[0]![1]!.equals(Buffer.alloc(300, 7)));
    t.equal(seen.messages[1]![0]!.toString(), 'last');
    t.same(seen.pings.map(([ttl, c]) => [ttl, c.toString()]), [[15, 'ctx']]);
    t.same(seen.pongs.map(String), ['p']);
    t.same(seen.subs, [[true, 'topic'], [false, 'topic']]);
  }
});

t.test('a ZMTP 3.0 peer is accepted; subscriptions to it are messages', async (t) => {
  const g = encodeGreeting();
  g[11] = 0;
  const { d, seen } = decoder();
  t.equal(d.push(Buffer.concat([g, encodeReady('SUB')])), null);
  t.equal(seen.greeting!.minor, 0);
  t.equal(d.peerMinor, 0);
  const sub = encodeSubscription(true, Buffer.from('x'), 0);
  t.same([...sub], [0, 2, 1, 0x78], 'a one-frame message: 0x01 then the topic');
  const cmd = encodeSubscription(false, Buffer.from('x'), 1);
  t.equal(cmd[0], FLAG_COMMAND);
  t.equal(cmd.subarray(3, 9).toString(), 'CANCEL');
});

t.test('long frames: 8-byte sizes, and a frame over 16 MiB gathered in pieces', async (t) => {
  const big = Buffer.alloc(17 * 1024 * 1024, 3);
  big[big.length - 1] = 9;
  const enc = encodeMessage([big]);
  t.equal(enc[0], FLAG_LONG);
  const { d, seen } = decoder();
  d.push(HELLO);
  for (let i = 0; i < enc.length; i += 65536) t.equal(d.push(enc.subarray(i, i + 65536)), null);
  t.equal(seen.messages.length, 1);
  t.equal(seen.messages[0]![0]!.length, big.length);
  t.equal(seen.messages[0]![0]![big.length - 1], 9);
});

t.test('long frames of 4 KiB and more lying whole in a chunk are views of it; split ones are gathered', async (t) => {
  const a = Buffer.alloc(4096, 1);
  const b = Buffer.alloc(5000, 2);
  b[4999] = 8;
  const small = Buffer.alloc(300, 5);
  const stream = Buffer.concat([encodeMessage([a]), encodeMessage([small, b, a]), encodeMessage([Buffer.alloc(4095, 4)])]);
  for (const step of [stream.length, 4100, 4105, 1000, 1]) {
    const { d, seen } = decoder();
    d.push(HELLO);
    const copy = Buffer.from(stream);
    for (let i = 0; i < copy.length; i += step) t.equal(d.push(copy.subarray(i, i + step)), null);
    t.equal(seen.messages.length, 3, `three messages (step ${step})`);
    t.ok(seen.messages[0]![0]!.equals(a));
    t.same(seen.messages[1]!.map((f) => f.length), [300, 5000, 4096]);
    t.ok(seen.messages[1]![0]!.equals(small) && seen.messages[1]![1]!.equals(b) && seen.messages[1]![2]!.equals(a));
    t.ok(seen.messages[2]![0]!.equals(Buffer.alloc(4095, 4)));
    const viewed = seen.messages[0]![0]!.buffer === copy.buffer;
    // Whole in one chunk: a view of it (zero-copy); a frame under 4 KiB or split: its own copy.
    t.equal(viewed, step === stream.length || step === 4105, `the 4 KiB frame is a view exactly when it lay whole in a chunk (step ${step})`);
    t.not(seen.messages[2]![0]!.buffer, copy.buffer, 'a frame under 4 KiB is copied');
  }
});

t.test('split frames of 4 to 16 KiB, gathered, stay whole while all are kept', async (t) => {
  // Sizes that do not divide the pool, odd splits, two decoders interleaved:
  // each gathered frame must own its bytes (no slice may overlap another).
  const sizes = [4096, 5000, 16384, 4097, 12345, 16385, 8191];
  const frames = Array.from({ length: 60 }, (_, i) => {
    const f = Buffer.allocUnsafe(sizes[i % sizes.length]!);
    for (let k = 0; k < f.length; k++) f[k] = (i * 31 + k * 7) & 0xff;
    return f;
  });
  const stream = Buffer.concat(frames.map((f) => encodeMessage([f])));
  const a = decoder();
  const b = decoder();
  a.d.push(HELLO);
  b.d.push(HELLO);
  for (let i = 0; i < stream.length; i += 3001) {
    t.equal(a.d.push(Buffer.from(stream.subarray(i, i + 3001))), null);
    t.equal(b.d.push(Buffer.from(stream.subarray(i, i + 3001))), null);
  }
  for (const { seen } of [a, b]) {
    t.equal(seen.messages.length, frames.length, 'every message');
    const bad = seen.messages.filter((m, i) => m.length !== 1 || !m[0]!.equals(frames[i]!)).length;
    t.equal(bad, 0, 'every kept frame holds its own bytes');
  }
});

function expectError(t: Tap.Test, input: Buffer, code: string, name: string, opts?: iomux.zmq.DecoderOptions): void {
  for (const step of [input.length, 1]) {
    const { d } = decoder(opts);
    let err: iomux.zmq.ZmtpError | null = null;
    for (let i = 0; i < input.length && err === null; i += step) err = d.push(input.subarray(i, i + step));
    t.ok(err instanceof ZmtpError, `${name}: a ZmtpError (step ${step})`);
    t.equal(err?.code, code, `${name}: ${code}`);
    t.equal(d.push(Buffer.from([0])), err, `${name}: dead after it`);
  }
}
declare namespace Tap { type Test = typeof t; }

t.test('malformed greetings', async (t) => {
  const g = () => encodeGreeting();
  expectError(t, Buffer.from('GET / HTTP/1.1\r\n\r\n'), ERRORS.SIGNATURE, 'not 0xFF');
  const noTail = g(); noTail[9] = 0x01;
  expectError(t, noTail, ERRORS.SIGNATURE, 'no 0x7F');
  const v2 = g(); v2[10] = 2;
  expectError(t, v2, ERRORS.VERSION, 'version 2');
  const plain = g(); plain.fill(0, 12, 32); plain.write('PLAIN', 12);
  expectError(t, plain, ERRORS.MECHANISM, 'PLAIN');
  const curve = g(); curve.fill(0, 12, 32); curve.write('CURVE', 12);
  expectError(t, curve, ERRORS.MECHANISM, 'CURVE');
  const junkMech = g(); junkMech[20] = 1;
  expectError(t, junkMech, ERRORS.MECHANISM, 'NULL with junk padding');
  const srv = g(); srv[32] = 7;
  expectError(t, srv, ERRORS.AS_SERVER, 'as-server 7');
});

t.test('malformed frames and commands', async (t) => {
  const after = (b: Buffer) => Buffer.concat([HELLO, b]);
  expectError(t, after(Buffer.from([0x08, 0])), ERRORS.FLAGS, 'reserved flag');
  expectError(t, after(Buffer.from([FLAG_COMMAND | FLAG_MORE, 1, 1])), ERRORS.FLAGS, 'command with MORE');
  expectError(t, after(Buffer.concat([Buffer.from([FLAG_MORE, 1, 0x61]), encodePing(0)])), ERRORS.FLAGS, 'command inside a message');
  expectError(t, Buffer.concat([encodeGreeting(), encodeMessage([Buffer.from('x')])]), ERRORS.HANDSHAKE, 'message before READY');
  expectError(t, Buffer.concat([encodeGreeting(), encodePing(0)]), ERRORS.UNEXPECTED, 'PING before READY');
  expectError(t, after(encodeReady('PUSH')), ERRORS.UNEXPECTED, 'second READY');
  expectError(t, after(Buffer.from([FLAG_COMMAND, 0])), ERRORS.COMMAND, 'empty command');
  expectError(t, after(Buffer.from([FLAG_COMMAND, 2, 5, 0x41])), ERRORS.COMMAND, 'name longer than the command');
  expectError(t, after(encodeCommand('PING', Buffer.from([0]))), ERRORS.COMMAND, 'PING without a TTL');
  expectError(t, after(encodeCommand('PING', Buffer.alloc(19))), ERRORS.COMMAND, 'PING context over 16 bytes');
  expectError(t, after(encodeError('go away')), ERRORS.PEER_ERROR, 'ERROR from the peer');
  const huge = Buffer.from([FLAG_LONG, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  expectError(t, after(huge), ERRORS.TOO_LARGE, '2^64-1 bytes');
  expectError(t, after(encodeMessage([Buffer.alloc(100), Buffer.alloc(100)])), ERRORS.TOO_LARGE, 'over maxMessageSize', { maxMessageSize: 150 });
  expectError(t, Buffer.concat([encodeGreeting(), Buffer.from([FLAG_COMMAND | FLAG_LONG, 0, 0, 0, 0, 0x10, 0, 0, 0])]), ERRORS.TOO_LARGE, '256 MiB handshake command');
});

t.test('READY properties', async (t) => {
  const r = parseReady(encodeReady('ROUTER', Buffer.from('me')).subarray(2 + 6));
  t.equal(r.socketType, 'ROUTER');
  t.equal(r.identity.toString(), 'me');
  const prop = (name: string, value: string) => {
    const v = Buffer.from(value);
    const b = Buffer.alloc(1 + name.length + 4 + v.length);
    b[0] = name.length; b.write(name, 1); b.writeUInt32BE(v.length, 1 + name.length); v.copy(b, 5 + name.length);
    return b;
  };
  const cases: [Buffer, string][] = [
    [Buffer.alloc(0), ERRORS.PROPERTY],
    [prop('Identity', 'x'), ERRORS.PROPERTY],
    [prop('Socket-Type', 'BANANA'), ERRORS.SOCKET_TYPE],
    [prop('Socket-Type', 'PUSH').subarray(0, 10), ERRORS.PROPERTY],
    [Buffer.concat([prop('Socket-Type', 'PUSH'), Buffer.from([0])]), ERRORS.PROPERTY],
  ];
  for (const [data, code] of cases) {
    t.throws(() => parseReady(data), { code }, code);
  }
  t.equal(parseReady(Buffer.concat([prop('socket-type', 'PUB'), prop('X-Other', 'y')])).socketType, 'PUB', 'names are case-insensitive, unknown ones kept');
});
