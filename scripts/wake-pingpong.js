#!/usr/bin/env node
// wake-pingpong.js -- what one wake-up of a Node process costs: a 64 B echo
// ping-pong, one message in flight, between two processes pinned to CPUs 0
// (server) and 1 (client), on iomux Sockets in Node's loop or on node:net.
// The server sleeps between messages, so each message is one wake-up of it.
//
//   node scripts/wake-pingpong.js [--impl iomux|net] [--count N] [--strace]
//                                 [--standalone]
//
// Prints the server's CPU per wake-up (user and system, process.cpuUsage()
// from its first message to the client's close). --strace runs the server
// under `strace -f -c` and adds the system calls per wake-up (CPU figures
// are then inflated by the tracing). IOMUX_BACKEND picks the backend as
// usual; --standalone runs the iomux server with loop.run(). Needs taskset (and strace for --strace), and the built package.
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const SIZE = 64;
const [, self, role, ...rest] = process.argv;

function load(impl) {
  return impl === 'net' ? require('net') : require(path.join(__dirname, '..'));
}

function server(impl, standalone) {
  const lib = load(impl);
  if (standalone) lib.loop.run();
  const srv = lib.createServer((s) => {
    s.setNoDelay(true);
    let got = 0;
    let wakes = 0;
    let c0 = null;
    s.on('data', (d) => {
      if (!c0) c0 = process.cpuUsage();
      wakes++;
      got += d.length;
      for (; got >= SIZE; got -= SIZE) s.write(Buffer.alloc(SIZE));
    });
    s.on('error', () => {});
    s.on('close', () => {
      const c = process.cpuUsage(c0);
      process.stderr.write(JSON.stringify({ wakes, user: c.user, system: c.system }) + '\n');
      srv.close();
    });
  });
  srv.listen(0, '127.0.0.1', () => process.stdout.write(srv.address().port + '\n'));
}

function client(impl, port, count) {
  const lib = load(impl);
  const s = lib.connect(port, '127.0.0.1');
  s.setNoDelay(true);
  const msg = Buffer.alloc(SIZE);
  let n = 0;
  let got = 0;
  s.on('connect', () => s.write(msg));
  s.on('data', (d) => {
    for (got += d.length; got >= SIZE; got -= SIZE) {
      if (++n === count) {
        s.destroy();
        return;
      }
      s.write(msg);
    }
  });
}

async function main() {
  const argv = process.argv.slice(2);
  const arg = (name, dflt) => {
    const i = argv.indexOf(name);
    return i < 0 ? dflt : argv[i + 1];
  };
  const impl = arg('--impl', 'iomux');
  const count = Number(arg('--count', '20000'));
  const traced = argv.includes('--strace');
  const standalone = argv.includes('--standalone');
  if (standalone && impl !== 'iomux') throw new Error('--standalone needs --impl iomux');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wake-'));
  const traceFile = path.join(dir, 'strace.txt');
  const serverCmd = ['-c', '0', ...(traced ? ['strace', '-f', '-c', '-o', traceFile] : []),
    process.execPath, self, 'server', impl, ...(standalone ? ['standalone'] : [])];
  const srv = spawn('taskset', serverCmd, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  srv.stderr.on('data', (d) => (err += d));
  const port = await new Promise((resolve, reject) => {
    let out = '';
    srv.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(Number(out.trim()));
    });
    srv.on('exit', () => reject(new Error('server exited: ' + err)));
  });
  const cli = spawn('taskset', ['-c', '1', process.execPath, self, 'client', impl, String(port), String(count)],
    { stdio: 'inherit' });
  await new Promise((resolve) => srv.on('exit', resolve));
  cli.kill();
  const line = err.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error('no result from the server: ' + err);
  const r = JSON.parse(line);
  const out = {
    impl,
    backend: impl === 'net' ? 'libuv' : process.env.IOMUX_BACKEND || 'default',
    mode: impl === 'net' ? 'libuv' : standalone ? 'standalone' : 'embedded',
    wakes: r.wakes,
    userUsPerWake: +(r.user / r.wakes).toFixed(1),
    systemUsPerWake: +(r.system / r.wakes).toFixed(1),
  };
  if (traced) {
    // `strace -c` rows: % time, seconds, usecs/call, calls, [errors,] syscall.
    const calls = {};
    for (const l of fs.readFileSync(traceFile, 'utf8').split('\n')) {
      const f = l.trim().split(/\s+/);
      if (f.length < 5 || !/^\d/.test(f[0]) || f[f.length - 1] === 'total') continue;
      const name = f[f.length - 1];
      if (!/^(epoll|io_uring|read|write|send|recv|timerfd|eventfd)/.test(name)) continue;
      if (Number(f[3]) < r.wakes / 100) continue;
      calls[name] = +(Number(f[3]) / r.wakes).toFixed(2);
      if (f.length === 6 && Number(f[4]) > 0) calls[name + ' errors'] = +(Number(f[4]) / r.wakes).toFixed(2);
    }
    out.syscallsPerWake = calls;
  }
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(JSON.stringify(out));
}

if (role === 'server') server(rest[0], rest[1] === 'standalone');
else if (role === 'client') client(rest[0], Number(rest[1]), Number(rest[2]));
else main().catch((e) => {
  console.error(e.message);
  process.exit(1);
});
