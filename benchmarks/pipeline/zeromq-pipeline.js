'use strict';
// The baseline of the `stages` benchmark: iomux.pipeline's topology and
// messages built on zeromq.js (the `zeromq` package) instead of iomux.zmq.
//
//   iomux.http front end -> stage proxy (PULL intake, ROUTER backend, FIFO of
//   free worker slots) <-> DEALER workers -> next stage's intake ... -> PULL
//   loopback in the front end
//
// Benchmark-only: no timeouts, interrupts, retries or health; the work and
// the frames are iomux.pipeline's (its codec and the demo's functions).
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const zmq = require('zeromq');

const dist = process.env.IOMUX_BENCH_DIST || path.resolve(__dirname, '..', '..', 'dist');
const codec = require(path.join(dist, 'pipeline', 'codec.js'));

// zeromq.js allows one send in flight per socket: queue the rest.
function sender(sock) {
  const q = [];
  let busy = false;
  const pump = async () => {
    busy = true;
    while (q.length > 0) {
      try {
        await sock.send(q.shift());
      } catch (_) {
        return; // closed
      }
    }
    busy = false;
  };
  return (frames) => {
    q.push(frames);
    if (!busy) void pump();
  };
}

async function receiveAll(sock, onMessage) {
  try {
    for await (const frames of sock) onMessage(frames);
  } catch (_) {
    // closed
  }
}

function stageProxy(index, front) {
  const intake = new zmq.Pull();
  const backend = new zmq.Router();
  const send = sender(backend);
  const idle = [];
  const queue = [];
  let head = 0;
  const workers = new Set();
  const dispatch = () => {
    while (head < queue.length && idle.length > 0) {
      const job = queue[head];
      queue[head++] = undefined;
      send([idle.shift(), ...job]);
    }
    if (head > 1024 && head * 2 > queue.length) {
      queue.splice(0, head);
      head = 0;
    }
  };
  const p = {
    index, intake, backend, workers,
    enqueue(frames) {
      queue.push(frames);
      dispatch();
    },
    start() {
      void receiveAll(intake, (f) => {
        if ((f.length === 1 || f.length === 2) && codec.jobIdEnd(f[0]) > 0) p.enqueue(f);
      });
      void receiveAll(backend, ([identity, type, a]) => {
        if (type.equals(codec.READY)) {
          workers.add(identity.toString('latin1'));
          for (let i = Number(a.toString()); i > 0; i--) idle.push(identity);
          front.onWorker();
        } else if (type.equals(codec.DONE)) {
          idle.push(identity);
        }
        dispatch();
      });
    },
  };
  return p;
}

async function startZeromqPipeline(k) {
  const { http } = require(dist);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'iomux-bench-zmqjs-'));
  fs.chmodSync(dir, 0o700);
  const ep = (name) => `ipc://${path.join(dir, `${name}.sock`)}`;
  const pending = new Map();
  let seq = 0;
  let onReady = null;
  const front = { onWorker: () => onReady && onReady() };
  const stages = [stageProxy(0, front), stageProxy(1, front)];
  const loopback = new zmq.Pull();
  await loopback.bind(ep('loopback'));
  for (const s of stages) {
    await s.backend.bind(ep(`${s.index}-proxy`));
    await s.intake.bind(ep(`${s.index}-intake`));
    s.start();
  }
  void receiveAll(loopback, (f) => {
    if (f.length > 2 || codec.replyStatus(f[0]) < 0) return;
    const at = codec.replyIdStart(f[0]);
    const hEnd = codec.replyHeadersEnd(f[0], at);
    if (hEnd < 0) return;
    const id = codec.replyId(f[0]);
    const res = pending.get(id);
    if (res === undefined) return;
    pending.delete(id);
    res.writeHead(codec.replyStatus(f[0]), JSON.parse(f[0].toString('utf8', at + 1 + f[0][at] + 4, hEnd)));
    res.end(f.length === 2 ? f[1] : f[0].subarray(hEnd));
  });
  const server = http.createServer((req, res) => {
    const id = (seq++).toString(36);
    pending.set(id, res);
    req.body().then((body) => {
      const url = req.url;
      const q = url.indexOf('?');
      const job = {
        method: req.method, url, path: q < 0 ? url : url.slice(0, q),
        query: Object.fromEntries(new URLSearchParams(q < 0 ? '' : url.slice(q + 1))), headers: req.headers, body,
      };
      stages[0].enqueue(codec.jobFrames(id, job));
    });
  });
  const children = [];
  const demo = path.join(dist, 'pipeline', 'demo.js');
  for (const s of stages) {
    for (let i = 0; i < k; i++) {
      const spec = {
        stageIndex: s.index, module: demo, export: s.index === 0 ? 'parse' : 'compute',
        proxy: ep(`${s.index}-proxy`), loopback: ep('loopback'), ...(s.index === 0 ? { next: ep('1-intake') } : {}),
      };
      children.push(spawn(process.execPath, [path.join(__dirname, 'server.js'), 'zeromq-worker', JSON.stringify(spec)], { stdio: ['ignore', 'inherit', 'inherit'] }));
    }
  }
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('zeromq.js workers did not connect within 30 s')), 30000);
    onReady = () => {
      if (stages.every((s) => s.workers.size >= k)) {
        clearTimeout(timer);
        resolve();
      }
    };
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    async close() {
      for (const c of children) c.kill('SIGTERM');
      await server.close();
      loopback.close();
      for (const s of stages) {
        s.intake.close();
        s.backend.close();
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

function runZeromqWorker(spec) {
  const mod = require(spec.module);
  const fn = mod[spec.export];
  const dealer = new zmq.Dealer();
  const loopback = new zmq.Push();
  const next = spec.next ? new zmq.Push() : null;
  const toDealer = sender(dealer);
  const toLoopback = sender(loopback);
  const toNext = next ? sender(next) : null;
  dealer.connect(spec.proxy);
  loopback.connect(spec.loopback);
  if (next) next.connect(spec.next);
  const ctx = {
    id: '', stage: '', signal: new AbortController().signal, interrupted: false,
    next: (data) => ({ kind: 'next', data }),
    reply: (status, headers = {}, body) => ({ kind: 'reply', status, headers, body }),
  };
  // Slots: IOMUX_BENCH_CONCURRENCY (1), as the iomux workers' concurrency.
  toDealer([codec.READY, Buffer.from(String(Number(process.env.IOMUX_BENCH_CONCURRENCY) || 1))]);
  void receiveAll(dealer, (f) => {
    const idEnd = f.length <= 2 ? codec.jobIdEnd(f[0]) : -1;
    if (idEnd < 0) return;
    const out = fn(codec.decodeJob(f[0], f[1]), ctx);
    const id = f[0].subarray(3, idEnd);
    if (out.kind === 'next') {
      toNext(codec.jobFrames(id, out.data));
    } else {
      toLoopback(codec.replyFrames(codec.replyMeta(codec.FLAG_NONE, out.status, spec.stageIndex), id,
        Buffer.from(JSON.stringify(out.headers)), out.body));
    }
    toDealer([codec.DONE, id]);
  });
  process.once('SIGTERM', () => process.exit(0));
}

module.exports = { startZeromqPipeline, runZeromqWorker };
