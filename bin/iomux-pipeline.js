#!/usr/bin/env node
'use strict';
// iomux-pipeline demo [--port P] [--workers K] [--inprocess]
// iomux-pipeline demo --simulate N [--workers K] [--concurrency C] [--inprocess]
// iomux-pipeline worker --stage NAME --module FILE [--export NAME] [--concurrency C]
//                       (--connect DIRECTORY_EP | --index I --proxy EP --loopback EP [--next EP])
const { parseArgs } = require('node:util');
const path = require('node:path');

const USAGE = `usage:
  iomux-pipeline demo [--port 8002] [--workers K] [--inprocess]
  iomux-pipeline demo --simulate N [--workers K] [--concurrency 64] [--inprocess]
  iomux-pipeline worker --stage NAME --module FILE [--export NAME] [--concurrency C]
                        (--connect DIRECTORY_EP | --index I --proxy EP --loopback EP [--next EP])`;

function fail(msg) {
  console.error(`iomux-pipeline: ${msg}\n${USAGE}`);
  process.exit(2);
}

function int(v, name, min) {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) fail(`--${name} must be an integer >= ${min}, got ${v}`);
  return n;
}

async function demo(argv) {
  let v;
  try {
    ({ values: v } = parseArgs({ args: argv, options: {
      port: { type: 'string' }, workers: { type: 'string' }, simulate: { type: 'string' },
      concurrency: { type: 'string' }, inprocess: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
    } }));
  } catch (e) { fail(e.message); }
  if (v.help) { console.log(USAGE); return; }
  const { pipeline } = require('../dist');
  const demoMod = require('../dist/pipeline/demo');
  const workers = int(v.workers, 'workers', 1) ?? 1;
  const mode = v.inprocess ? 'inprocess' : 'cluster';
  if (v.simulate !== undefined) {
    const n = int(v.simulate, 'simulate', 1);
    const srv = await demoMod.startDemo({ port: 0, workers, mode });
    const r = await demoMod.simulate(srv.address().port, n, int(v.concurrency, 'concurrency', 1) ?? 64);
    console.log(`${n} requests, ${workers} worker(s) per stage (${mode}): ${r.primes} primes, ${r.errors} errors, ${(r.ms / 1000).toFixed(3)} s, ${Math.round(n / (r.ms / 1000))} req/s`);
    console.log(srv.summary());
    await srv.close();
    process.exit(r.errors === 0 ? 0 : 1);
  }
  const srv = await demoMod.startDemo({ port: int(v.port, 'port', 0) ?? 8002, workers, mode });
  const a = srv.address();
  console.error(`iomux-pipeline demo: http://${a.address}:${a.port}/is_prime?possible_prime=N, ${workers} worker(s) per stage (${mode}); pid ${process.pid}`);
  process.on('SIGUSR2', () => console.error(srv.summary()));
  const stop = async () => {
    console.error('iomux-pipeline demo: draining');
    await srv.close();
    process.exit(0);
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  void pipeline;
}

async function worker(argv) {
  let v;
  try {
    ({ values: v } = parseArgs({ args: argv, options: {
      stage: { type: 'string' }, index: { type: 'string' }, module: { type: 'string' }, export: { type: 'string' }, connect: { type: 'string' },
      proxy: { type: 'string' }, loopback: { type: 'string' }, next: { type: 'string' }, concurrency: { type: 'string' },
    } }));
  } catch (e) { fail(e.message); }
  const need = v.connect !== undefined ? ['stage', 'module'] : ['stage', 'index', 'module', 'proxy', 'loopback'];
  for (const k of need) if (v[k] === undefined) fail(`--${k} is required`);
  const { pipeline } = require('../dist');
  const { loadStageFunction } = require('../dist/pipeline/worker-main');
  const fn = loadStageFunction(path.resolve(v.module), v.export ?? 'default');
  const h = v.connect !== undefined ? await pipeline.connectWorker({
    stage: v.stage, connect: v.connect, fn, concurrency: int(v.concurrency, 'concurrency', 1) ?? 1,
  }) : pipeline.runWorker({
    stage: v.stage, stageIndex: int(v.index, 'index', 0), fn, concurrency: int(v.concurrency, 'concurrency', 1) ?? 1,
    endpoints: { proxy: v.proxy, loopback: v.loopback, ...(v.next !== undefined ? { next: v.next } : {}) },
  });
  const stop = async () => { await h.close(); process.exit(0); };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
  console.error(`iomux-pipeline worker: stage ${v.stage}, pid ${process.pid}`);
}

const [cmd, ...rest] = process.argv.slice(2);
const run = cmd === 'demo' ? demo : cmd === 'worker' ? worker : null;
if (run === null) {
  if (cmd === '-h' || cmd === '--help') { console.log(USAGE); process.exit(0); }
  fail(cmd === undefined ? 'a command is required' : `unknown command ${cmd}`);
}
run(rest).catch((e) => {
  console.error('iomux-pipeline:', e && e.stack ? e.stack : e);
  process.exit(1);
});
