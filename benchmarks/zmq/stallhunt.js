'use strict';
// stallhunt.js -- many short iomux PUSH->PULL runs, each end pinned (PULL on
// CPU 0, PUSH on CPU 1), looking for a run that crawls or hangs:
//   [IOMUX_BACKEND=epoll|io_uring] [WARM=200] [WIN=600] [THRESH=msg/s] \
//     node benchmarks/zmq/stallhunt.js RUNS [SIZE]
// Both peers preload stalldiag.js. A run under THRESH msg/s (default 150,000
// for 4 KiB, 1,000,000 for smaller), or without a result, prints each end's
// /proc wchan and kernel stack (root only) and their DIAG dumps.
const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');
const RUNS = +process.argv[2] || 20, SIZE = +(process.argv[3] || 4096);
const WARM = +(process.env.WARM || 200), WIN = +(process.env.WIN || 600);
const peer = path.join(__dirname, 'peer.js');
const pre = ['-r', path.join(__dirname, 'stalldiag.js')];
function start(cpu, args) {
  const p = spawn('taskset', ['-c', String(cpu), process.execPath, ...pre, peer, 'iomux', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  p.out = ''; p.err = ''; live.add(p); p.on('exit', () => live.delete(p));
  p.stdout.on('data', (d) => { p.out += d; });
  p.stderr.on('data', (d) => { p.err += d; });
  return p;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
function procinfo(pid) {
  const r = {};
  try {
    r.wchan = fs.readFileSync(`/proc/${pid}/wchan`, 'utf8');
    r.tasks = fs.readdirSync(`/proc/${pid}/task`).map((t) => {
      let st = '';
      try { st = fs.readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8').split(') ')[1].slice(0, 1); } catch {}
      let w = ''; try { w = fs.readFileSync(`/proc/${pid}/task/${t}/wchan`, 'utf8'); } catch {}
      return `${t}:${st}:${w}`;
    }).join(' ');
    try { r.stack = fs.readFileSync(`/proc/${pid}/stack`, 'utf8'); } catch (e) { r.stack = String(e.code); }
  } catch (e) { r.err = String(e); }
  return r;
}
const live = new Set();
process.on('SIGTERM', () => { for (const p of live) p.kill('SIGKILL'); process.exit(1); });
(async () => {
  const rates = [];
  for (let i = 0; i < RUNS; i++) {
    const pull = start(0, ['pull', 'tcp://127.0.0.1:0', String(WARM), String(WIN)]);
    let t = Date.now();
    while (!pull.out.includes('\n') && Date.now() - t < 10000) await sleep(10);
    if (!pull.out.includes('\n')) { console.log(`run ${i}: pull did not start`, pull.err); pull.kill('SIGKILL'); continue; }
    const ep = JSON.parse(pull.out.split('\n')[0]).endpoint;
    const push = start(1, ['push', ep, String(SIZE)]);
    t = Date.now();
    const limit = WARM + WIN + 4000;
    let prevMsgs = -1; let slowDumped = false;
    while (pull.out.split('\n').length < 3 && Date.now() - t < limit) await sleep(20);
    const lines = pull.out.trim().split('\n');
    let res = null;
    if (lines.length >= 2) { res = JSON.parse(lines[1]); }
    const rate = res ? res.messages / res.wall : 0;
    rates.push(Math.round(rate));
    const slow = !res || rate < +(process.env.THRESH || (SIZE > 1024 ? 150000 : 1000000));
    if (slow) {
      console.log(`run ${i}: SLOW rate=${Math.round(rate)} res=${JSON.stringify(res)}`);
      for (const [n, p] of [['pull', pull], ['push', push]]) {
        console.log(n, p.pid, JSON.stringify(procinfo(p.pid)));
        if (p.exitCode === null) p.kill('SIGUSR2');
      }
      await sleep(400);
      for (const [n, p] of [['pull', pull], ['push', push]]) {
        for (const p2 of [procinfo(p.pid)]) console.log(n, 'again', JSON.stringify(p2));
        console.log(n, 'stderr:', p.err.slice(-6000));
      }
    } else console.log(`run ${i}: ${Math.round(rate)} msg/s cpu/msg recv ${(res.cpu / res.messages * 1e6).toFixed(2)}`);
    pull.kill('SIGKILL'); push.kill('SIGKILL');
    await sleep(50);
  }
  console.log('rates', rates.join(' '));
})();
