// A seeded fuzzer of the ZMTP decoder: malformed greetings and frames
// (truncated, oversized lengths, wrong flags, commands out of order, random
// bytes, mutations of valid streams), each fed whole and split at random.
// Only ZmtpErrors may come out, the decoder stays dead after one, and the heap
// stays flat. Then a few hundred of those inputs go to a real PULL socket,
// which must survive them and still take a good message.
//
// IOMUX_ZMQ_FUZZ_ITERATIONS sets the count (default 20,000; the long run is
// 200,000); IOMUX_FUZZ_SEED repeats a run.
import t from 'tap';
import * as net from 'node:net';
import { once } from 'node:events';
import { iomux, seededRandom } from './helpers';

const { Decoder, ZmtpError, encodeGreeting, encodeReady, encodeMessage, encodeCommand, encodePing, encodeSubscription } = iomux.zmq;

const SEED = process.env.IOMUX_FUZZ_SEED !== undefined ? Number(process.env.IOMUX_FUZZ_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const ITERATIONS = Number(process.env.IOMUX_ZMQ_FUZZ_ITERATIONS ?? 20_000);
t.comment(`zmq fuzz seed ${SEED}, ${ITERATIONS} cases (repeat with IOMUX_FUZZ_SEED=${SEED})`);

const { int, chance } = seededRandom(SEED);

function randomBytes(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = int(256);
  return b;
}

const TYPES = ['PUSH', 'PULL', 'PUB', 'SUB', 'REQ', 'REP', 'DEALER', 'ROUTER'] as const;

function validStream(): Buffer {
  const parts: Buffer[] = [encodeGreeting(), encodeReady(TYPES[int(TYPES.length)]!, chance(0.5) ? randomBytes(int(8)) : undefined)];
  const n = int(6);
  for (let i = 0; i < n; i++) {
    switch (int(4)) {
      case 0: parts.push(encodeMessage(Array.from({ length: 1 + int(3) }, () => randomBytes(chance(0.1) ? 256 + int(600) : int(40))))); break;
      case 1: parts.push(encodePing(int(100), randomBytes(int(17)))); break;
      case 2: parts.push(encodeSubscription(chance(0.5), randomBytes(int(10)), 1)); break;
      default: parts.push(encodeCommand('PONG', randomBytes(int(5))));
    }
  }
  return Buffer.concat(parts);
}

/** A malformed (or at least suspicious) input. */
function caseInput(): Buffer {
  const kind = int(8);
  if (kind === 0) return randomBytes(int(200)); // noise
  if (kind === 1) { // a greeting with one byte changed
    const g = encodeGreeting();
    g[int(64)] = int(256);
    return Buffer.concat([g, encodeReady('PUSH')]);
  }
  if (kind === 2) { // truncated valid stream
    const s = validStream();
    return s.subarray(0, int(s.length));
  }
  if (kind === 3) { // frames with random flags and lengths after a good handshake
    const parts = [encodeGreeting(), encodeReady('PULL')];
    for (let i = 0; i < 1 + int(4); i++) {
      const flags = chance(0.5) ? int(256) : int(8);
      const long = (flags & 2) !== 0;
      const head = Buffer.alloc(long ? 9 : 2);
      head[0] = flags;
      if (long) {
        head.writeUInt32BE(chance(0.5) ? int(2 ** 32) : 0, 1);
        head.writeUInt32BE(int(2 ** 32), 5);
      } else head[1] = int(256);
      parts.push(head, randomBytes(int(64)));
    }
    return Buffer.concat(parts);
  }
  if (kind === 4) { // commands out of order
    const cmds = [encodeReady('DEALER'), encodePing(1), encodeCommand('ERROR', Buffer.from([3, 0x61, 0x62, 0x63])),
      encodeCommand('SUBSCRIBE', Buffer.from('x')), encodeMessage([Buffer.from('m')]), encodeCommand('HELLO', randomBytes(int(20)))];
    const parts = [encodeGreeting()];
    for (let i = 0; i < 1 + int(4); i++) parts.push(cmds[int(cmds.length)]!);
    return Buffer.concat(parts);
  }
  if (kind === 5) { // READY with broken properties
    const body = randomBytes(int(40));
    return Buffer.concat([encodeGreeting(), encodeCommand('READY', chance(0.5) ? body : Buffer.concat([Buffer.from([11]), Buffer.from('Socket-Type'), body]))]);
  }
  // valid stream with mutations
  const s = validStream();
  for (let i = 0; i < 1 + int(4); i++) s[64 + int(Math.max(1, s.length - 64))] = int(256);
  return s;
}

const noop = () => {};
const handler = { onGreeting: noop, onReady: noop, onMessage: noop, onPing: noop, onPong: noop, onSubscription: noop };

t.test(`${ITERATIONS} malformed inputs: only ZmtpErrors, dead after one, heap flat`, async (t) => {
  let errors = 0;
  let others = 0;
  let heapAtTenth = 0;
  for (let i = 0; i < ITERATIONS; i++) {
    if (i === Math.floor(ITERATIONS / 10)) {
      global.gc?.();
      heapAtTenth = process.memoryUsage().heapUsed;
    }
    const input = caseInput();
    const d = new Decoder(handler, { maxMessageSize: chance(0.5) ? 1024 : -1 });
    let err: unknown = null;
    try {
      let pos = 0;
      while (pos < input.length && err === null) {
        const n = chance(0.3) ? input.length - pos : 1 + int(input.length - pos);
        err = d.push(input.subarray(pos, pos + n));
        pos += n;
      }
    } catch (e) {
      others++;
      if (others < 5) t.fail(`a throw escaped: ${String(e)} on ${input.toString('hex').slice(0, 200)}`);
    }
    if (err !== null) {
      errors++;
      if (!(err instanceof ZmtpError) || !/^ERR_ZMTP_/.test(err.code)) t.fail(`bad error ${String(err)}`);
      if (d.push(Buffer.from([1, 2, 3])) !== err) t.fail('decoder not dead after an error');
    }
  }
  global.gc?.();
  const heapEnd = process.memoryUsage().heapUsed;
  t.equal(others, 0, 'no throw escaped');
  t.ok(errors > ITERATIONS / 2, `most inputs were rejected (${errors})`);
  t.comment(`heap at 10%: ${(heapAtTenth / 1048576).toFixed(1)} MiB, at the end: ${(heapEnd / 1048576).toFixed(1)} MiB`);
  t.ok(heapEnd < heapAtTenth + 32 * 1048576, 'heap flat (within 32 MiB of its size at 10% of the run)');
});

t.test('a real PULL socket survives malformed peers and still takes a good one', async (t) => {
  const pull = new iomux.zmq.Pull();
  const errors: string[] = [];
  pull.on('error', (e: Error & { code: string }) => errors.push(e.code));
  await pull.bind('tcp://127.0.0.1:*');
  const port = Number(pull.lastEndpoint!.split(':').pop());
  const n = Math.min(300, ITERATIONS);
  for (let i = 0; i < n; i += 20) {
    await Promise.all(Array.from({ length: 20 }, async () => {
      const c = net.connect(port, '127.0.0.1');
      c.on('error', noop);
      c.resume();
      await once(c, 'connect');
      c.end(caseInput());
      await once(c, 'close');
    }));
  }
  t.ok(errors.length > 0 && errors.every((c) => c.startsWith('ERR_ZMTP_')), `'error' events name the violation (${errors.length})`);
  const push = new iomux.zmq.Push();
  push.connect(pull.lastEndpoint!);
  push.send('still here');
  // Fuzzed peers may have sent good messages too: read until ours.
  let got = '';
  while (got !== 'still here') got = String((await pull.receive())[0]);
  t.pass('a good peer is served after the malformed ones');
  await push.close();
  await pull.close();
});
