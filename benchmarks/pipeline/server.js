'use strict';
// Servers of the `stages` benchmark (benchmarks/pipeline/bench.js): the demo's
// GET /is_prime?possible_prime=N answered three ways, with the same code for
// the work (the demo's parse() and compute()).
//
//   node server.js pipeline <K>      iomux.pipeline, 2 stages (parse, compute),
//                                    K worker processes per stage (supervisor
//                                    services); proxies and loopback in this process
//   node server.js inline            one iomux.http process doing parse and
//                                    compute inline: one process, one FIFO
//   node server.js zeromq <K>        the same 2-stage pipeline on zeromq.js
//                                    (zeromq-pipeline.js): iomux.http in front,
//                                    PULL intake + ROUTER per stage, DEALER
//                                    workers as K child processes per stage,
//                                    PULL loopback
//
// Prints "listening <port>" once every worker is connected, then runs until
// SIGTERM; every process of the server is this one or a descendant.
const path = require('path');

const dist = process.env.IOMUX_BENCH_DIST || path.resolve(__dirname, '..', '..', 'dist');
const [mode, arg] = process.argv.slice(2);
// Jobs each worker takes at once (IOMUX_BENCH_CONCURRENCY, 1).
const C = Number(process.env.IOMUX_BENCH_CONCURRENCY) || 1;

async function waitWorkers(getStats, want) {
  for (let i = 0; i < 600; i++) {
    const s = getStats();
    if (s.every((w) => w >= want)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('workers did not connect within 30 s');
}

async function main() {
  if (mode === 'pipeline') {
    const k = Number(arg);
    const { pipeline } = require(dist);
    const demo = path.join(dist, 'pipeline', 'demo.js');
    // IOMUX_BENCH_WORKERS=inprocess: the workers in this process (the pipeline's default).
    const inproc = (name) => (process.env.IOMUX_BENCH_WORKERS === 'inprocess' ? { fn: require(demo)[name] } : {});
    const srv = pipeline.createServer({
      stages: [
        { name: 'parse', module: demo, export: 'parse', workers: k, concurrency: C, ...inproc('parse') },
        { name: 'compute', module: demo, export: 'compute', workers: k, concurrency: C, ...inproc('compute') },
      ],
      workers: process.env.IOMUX_BENCH_WORKERS === 'inprocess' ? 'inprocess' : 'cluster',
      timeout: 120000,
      maxQueued: 100000,
      log: () => {},
    });
    await srv.listen(0, '127.0.0.1');
    await waitWorkers(() => srv.stats().stages.map((s) => s.workers), k);
    process.stdout.write(`listening ${srv.address().port}\n`);
    process.once('SIGTERM', () => srv.close().then(() => process.exit(0)));
    process.on('SIGUSR2', () => process.stderr.write(srv.summary() + '\n'));
  } else if (mode === 'inline') {
    const { http } = require(dist);
    const { parse, compute } = require(path.join(dist, 'pipeline', 'demo.js'));
    const ctx = {
      id: '', stage: '', signal: new AbortController().signal, interrupted: false,
      next: (data) => ({ kind: 'next', data }),
      reply: (status, headers, body) => ({ kind: 'reply', status, headers, body }),
    };
    const srv = http.createServer((req, res) => {
      const url = req.url;
      const q = url.indexOf('?');
      const job = { path: q < 0 ? url : url.slice(0, q), query: Object.fromEntries(new URLSearchParams(q < 0 ? '' : url.slice(q + 1))) };
      let out = parse(job, ctx);
      if (out.kind === 'next') out = compute(out.data, ctx);
      res.writeHead(out.status, out.headers);
      res.end(out.body);
    });
    srv.listen(0, '127.0.0.1', () => process.stdout.write(`listening ${srv.address().port}\n`));
    process.once('SIGTERM', () => srv.close().then(() => process.exit(0)));
  } else if (mode === 'zeromq') {
    const { startZeromqPipeline } = require('./zeromq-pipeline');
    const srv = await startZeromqPipeline(Number(arg));
    process.stdout.write(`listening ${srv.port}\n`);
    process.once('SIGTERM', () => srv.close().then(() => process.exit(0)));
  } else if (mode === 'zeromq-worker') {
    require('./zeromq-pipeline').runZeromqWorker(JSON.parse(arg));
  } else {
    process.stderr.write('usage: node server.js pipeline <K> | inline | zeromq <K>\n');
    process.exit(2);
  }
}

main().catch((e) => {
  process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
