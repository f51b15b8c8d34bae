#!/usr/bin/env node
// strace-churn.js -- syscalls per connection and per iteration under
// connection churn, counted by strace and by the loop's own counters.
//
//   node scripts/strace-churn.js [--backend io_uring|epoll] [--connections N]
//                                [--concurrency C] [--standalone]
//
// A child process runs an iomux server that answers each request with a small
// response and closes (write + close, as HTTP with Connection: close). Once it
// listens, `strace -f -c` attaches to it; this process (not traced) then makes
// N connections, C at a time, with node:net. The server prints its loop
// counters when the last connection is served and exits. Needs strace, and
// the addon built (npx node-gyp build && npx tsc -p .).
'use strict';

const { spawn, spawnSync } = require('node:child_process');
const { mkdtempSync, readFileSync, rmSync } = require('node:fs');
const { tmpdir } = require('node:os');
const { join } = require('node:path');
const net = require('node:net');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  if (i < 0) return dflt;
  return typeof dflt === 'boolean' ? true : process.argv[i + 1];
}

if (process.argv[2] === '--server') {
  const iomux = require(join(__dirname, '..', 'dist', 'index.js'));
  const total = Number(process.argv[3]);
  const standalone = process.argv[4] === 'standalone';
  const RESP = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi');
  let before;
  let served = 0;
  const server = iomux.createServer((s) => {
    s.once('data', () => s.write(RESP, () => {
      s.destroy();
      if (++served < total) return;
      const after = iomux.loop.stats();
      const d = {};
      for (const k of Object.keys(after)) d[k] = after[k] - before[k];
      process.stdout.write(JSON.stringify({ backend: iomux.loop.backend, ...d }) + '\n');
      server.close();
    }));
  });
  server.listen(0, '127.0.0.1', () => {
    before = iomux.loop.stats();
    process.stdout.write(`READY ${server.address().port}\n`);
  });
  if (standalone) iomux.loop.run();
  return;
}

const backend = arg('--backend', 'io_uring');
const total = Number(arg('--connections', '2000'));
const concurrency = Number(arg('--concurrency', '16'));
const standalone = arg('--standalone', false);

if (spawnSync('strace', ['-V']).status !== 0) {
  console.error('strace is not installed');
  process.exit(2);
}
const dir = mkdtempSync(join(tmpdir(), 'iomux-churn-'));
const traceFile = join(dir, 'strace.txt');
const server = spawn(process.execPath,
  [__filename, '--server', String(total), standalone ? 'standalone' : 'embedded'],
  { env: { ...process.env, IOMUX_BACKEND: backend }, stdio: ['ignore', 'pipe', 'inherit'] });
let out = '';
let tracer;
server.stdout.setEncoding('utf8');
server.stdout.on('data', (chunk) => {
  out += chunk;
  const m = /^READY (\d+)$/m.exec(out);
  if (m && !tracer) start(Number(m[1]));
});

function start(port) {
  // -f with -p attaches to every thread of the process.
  tracer = spawn('strace', ['-f', '-c', '-o', traceFile, '-p', String(server.pid)],
    { stdio: 'ignore' });
  setTimeout(() => runClients(port), 500); // let strace attach to every thread
}

function runClients(port) {
  let started = 0;
  let done = 0;
  const one = () => {
    if (started >= total) return;
    started++;
    const c = net.connect(port, '127.0.0.1', () => c.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'));
    let got = 0;
    c.on('data', (d) => { got += d.length; });
    c.on('error', (e) => { console.error(`client: ${e.message}`); process.exit(1); });
    c.on('close', () => {
      if (got === 0) { console.error('client: empty response'); process.exit(1); }
      if (++done < total) one();
    });
  };
  for (let i = 0; i < concurrency; i++) one();
}

server.on('exit', () => {
  tracer.on('exit', report);
  tracer.kill('SIGINT'); // strace detaches and writes its summary
});

function report() {
  const stats = JSON.parse(out.split('\n').find((l) => l.startsWith('{')));
  const calls = {};
  const errors = {};
  for (const line of readFileSync(traceFile, 'utf8').split('\n')) {
    const p = line.trim().split(/\s+/);
    if (p.length < 5 || !/^[\d.]+$/.test(p[0]) || p[p.length - 1] === 'total') continue;
    const name = p[p.length - 1];
    calls[name] = Number(p[3]);
    errors[name] = p.length === 6 ? Number(p[4]) : 0;
  }
  rmSync(dir, { recursive: true, force: true });
  const net = ['accept4', 'read', 'recvfrom', 'write', 'sendto', 'writev', 'shutdown', 'close', 'epoll_ctl'];
  const waits = ['io_uring_enter', 'epoll_wait', 'epoll_pwait'];
  const per = (k) => (calls[k] || 0) / total;
  console.log(`${backend}, ${standalone ? 'standalone' : 'embedded in libuv'}: ` +
    `${total} connections, ${concurrency} at a time`);
  console.log(`loop: ${stats.iterations} iterations, ${stats.wait} waits, ${stats.ctl} ctl, ` +
    `${stats.submit} early submits, ${stats.changes} changes riding with the waits`);
  let sum = 0;
  for (const k of [...net, ...waits]) {
    if (!calls[k]) continue;
    sum += calls[k];
    const err = errors[k] ? ` (${errors[k]} failed: EAGAIN/EINTR)` : '';
    console.log(`  ${k.padEnd(15)} ${String(calls[k]).padStart(7)}  ${per(k).toFixed(2)} per connection${err}`);
  }
  console.log(`  ${'all of these'.padEnd(15)} ${String(sum).padStart(7)}  ${(sum / total).toFixed(2)} per connection`);
  if (calls.io_uring_enter)
    console.log(`  io_uring_enter per loop iteration: ${(calls.io_uring_enter / stats.iterations).toFixed(3)}`);
}
