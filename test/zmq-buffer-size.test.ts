// The zmq sockets' sendBufferSize/receiveBufferSize options (libzmq's
// ZMQ_SNDBUF/ZMQ_RCVBUF): validated, applied to every connection of both
// ends (the kernel reports twice the size asked, see buffer-size.test.ts),
// and messages flow through the small buffers in order.
import t from 'tap';
import { iomux } from './helpers';
import { bindEndpoint, TRANSPORTS, until } from './zmq-helpers';

const ASK = 32 * 1024;
const inRange = (n: number) => n >= ASK && n <= 2 * ASK;

const z = iomux.zmq;

t.test('zmq: sendBufferSize and receiveBufferSize are validated', async (t) => {
  for (const name of ['sendBufferSize', 'receiveBufferSize'] as const) {
    for (const bad of [-2, 1.5, 'x']) {
      t.throws(() => new z.Push({ [name]: bad as number }), { code: 'ERR_OUT_OF_RANGE', message: new RegExp(name) }, `${name} ${String(bad)}`);
    }
    const s = new z.Pull({ [name]: 4096 });
    t.equal(s[name], 4096);
    s.close();
    const d = new z.Pull();
    t.equal(d[name], -1, 'default: the OS default');
    d.close();
  }
});

interface WithConns { conns: Set<{ socket: iomux.Socket }> }
const socketsOf = (s: unknown) => [...(s as WithConns).conns].map((c) => c.socket);

for (const transport of TRANSPORTS) {
  t.test(`zmq over ${transport}: the buffers of both ends, and 2,000 4 KiB messages through them`, async (t) => {
    const pull = new z.Pull({ receiveBufferSize: ASK, sendBufferSize: ASK });
    await pull.bind(bindEndpoint(transport));
    const push = new z.Push({ sendBufferSize: ASK, receiveBufferSize: ASK });
    t.teardown(() => { push.close(); pull.close(); });
    let up = 0;
    push.on('connect', () => up++);
    push.connect(pull.lastEndpoint!);
    await until(() => up === 1, 5000, 'connect');
    for (const sock of [...socketsOf(push), ...socketsOf(pull)]) {
      t.ok(inRange(sock.getSendBufferSize()), `send buffer ${sock.getSendBufferSize()}`);
      t.ok(inRange(sock.getRecvBufferSize()), `receive buffer ${sock.getRecvBufferSize()}`);
    }
    const N = 2000;
    const sending = (async () => {
      for (let i = 0; i < N; i++) {
        const msg = Buffer.alloc(4096); // a frame of 4 KiB is sent by reference: one per message
        msg.writeUInt32BE(i, 0);
        const p = push.send(msg);
        if (p) await p;
      }
    })();
    for (let i = 0; i < N; i++) {
      const [m] = await pull.receive();
      if (m!.length !== 4096 || m!.readUInt32BE(0) !== i) {
        t.fail(`message ${i}: ${m!.length} bytes, number ${m!.readUInt32BE(0)}`);
        break;
      }
    }
    await sending;
    t.pass(`${N} messages in order`);
  });
}
