'use strict';
// idle-memory.js -- a PULL's memory with many quiet peers, and after a bulk flow:
//   node --expose-gc benchmarks/zmq/idle-memory.js [DIST] [N]
// N PUSH peers (default 10,000, in a child process) each send one 4 KiB
// message and stay connected and silent; then one more peer streams 64 MiB
// and stops. Prints the receiver's RSS and external memory after full GCs:
// before, with the quiet peers, and after the bulk flow; and the senders'
// process's (clientIdle), measured 2.5 s after their one message, when idle
// connections have dropped their output slabs. DIST: the iomux
// dist/ to load (default this checkout's), for A/B between builds.
const path = require('path');
const { fork } = require('child_process');
const dist = path.resolve(process.argv[2] || path.join(__dirname, '..', '..', 'dist'));
const N = Number(process.argv[3] || 10000);
if (process.argv[4] === 'client') {
  const z = require(dist).zmq;
  const socks = [];
  process.on('message', async (m) => {
    if (m.cmd === 'open') {
      for (let i = 0; i < N; i++) {
        const s = new z.Push();
        s.connect(m.ep);
        s.send(Buffer.alloc(4096, i & 0xff));
        socks.push(s);
        if (i % 500 === 499) await new Promise((r) => setTimeout(r, 20));
      }
      process.send({ done: 'open' });
    } else if (m.cmd === 'mem') {
      for (let i = 0; i < 3; i++) { global.gc(); await new Promise((r) => setTimeout(r, 100)); }
      const u = process.memoryUsage();
      process.send({ done: 'mem', rssMiB: +(u.rss / 2 ** 20).toFixed(1), extMiB: +((u.external + u.arrayBuffers) / 2 ** 20).toFixed(2) });
    } else if (m.cmd === 'bulk') {
      const s = new z.Push();
      s.connect(m.ep);
      const b = Buffer.alloc(4096);
      for (let i = 0; i < 16384; i++) { const p = s.send(b); if (p) await p; }
      socks.push(s);
      process.send({ done: 'bulk' });
    }
  });
  return;
}
const iomux = require(dist);
const z = iomux.zmq;
(async () => {
  const pull = new z.Pull();
  await pull.bind('tcp://127.0.0.1:0');
  let got = 0;
  pull.on('message', () => { got++; });
  const child = fork(__filename, [dist, String(N), 'client'], { execArgv: ['--expose-gc'] });
  const ask = (cmd) => new Promise((r) => { child.once('message', r); child.send({ cmd, ep: pull.lastEndpoint }); });
  const until = async (n) => { while (got < n) await new Promise((r) => setTimeout(r, 20)); };
  const settle = async () => { for (let i = 0; i < 3; i++) { global.gc(); await new Promise((r) => setTimeout(r, 100)); } };
  const mem = () => { const m = process.memoryUsage(); return { rssMiB: +(m.rss / 2 ** 20).toFixed(1), extMiB: +((m.external + m.arrayBuffers) / 2 ** 20).toFixed(2) }; };
  await settle();
  const m0 = mem();
  await ask('open');
  await until(N);
  await settle();
  const m1 = mem();
  await new Promise((r) => setTimeout(r, 2500));
  const { rssMiB, extMiB } = await ask('mem');
  const clientIdle = { rssMiB, extMiB };
  await ask('bulk');
  await until(N + 16384);
  await settle();
  const m2 = mem();
  console.log(JSON.stringify({ dist, N, before: m0, afterIdle: m1, afterBulk: m2, clientIdle, perConnKiB: +(((m1.rssMiB - m0.rssMiB) * 1024) / N).toFixed(2) }));
  child.kill();
  process.exit(0);
})();
