'use strict';
// Syscall counting: `strace -c -f -p <server pid>` around a separate,
// shorter load run (strace slows the server down a lot, so nothing is timed
// while it is attached).

const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { track, waitExit, sleep } = require('./util');

// Parses the summary table of `strace -c`, slicing columns by the dashed rule
// under the header.
function parseStraceSummary(text) {
  const lines = text.split('\n');
  const ruleIdx = lines.findIndex((l) => /^-+( -+)+\s*$/.test(l));
  if (ruleIdx < 0) return null;
  const cols = [];
  const rule = lines[ruleIdx];
  const re = /-+/g;
  let m;
  while ((m = re.exec(rule))) cols.push([m.index, m.index + m[0].length]);
  const header = lines[ruleIdx - 1] || '';
  const names = cols.map(([s, e], i) => header.slice(s, i === cols.length - 1 ? undefined : e).trim());
  const idx = (n) => names.findIndex((x) => x === n);
  const iCalls = idx('calls');
  const iErrors = idx('errors');
  const iName = names.length - 1;
  const calls = {};
  const errors = {};
  for (let i = ruleIdx + 1; i < lines.length; i++) {
    const line = lines[i];
    if (!line.trim() || /^-+( -+)+\s*$/.test(line)) continue;
    const cell = (j) => line.slice(cols[j][0], j === cols.length - 1 ? undefined : cols[j][1] + 1).trim();
    const name = cell(iName);
    if (!name || name === 'total') continue;
    calls[name] = Number(cell(iCalls)) || 0;
    errors[name] = iErrors >= 0 ? Number(cell(iErrors)) || 0 : 0;
  }
  return { calls, errors };
}

// The columns of the syscall tables. "other" is everything else: futex,
// mmap, madvise, ... of V8's and libuv's threads, timerfd. io_uring_enter
// goes with the waits: it is the wait of the io_uring backend, and under any
// backend also the call that makes a batch of reads or writes (loop.stats()
// tells those apart).
const GROUPS = {
  wait: ['epoll_wait', 'epoll_pwait', 'epoll_pwait2', 'io_uring_enter'],
  ctl: ['epoll_ctl'],
  accept: ['accept4', 'accept'],
  getpeername: ['getpeername'],
  read: ['read', 'readv', 'recvfrom', 'recvmsg'],
  write: ['write', 'writev', 'sendto', 'sendmsg'],
  shutdown: ['shutdown'],
  close: ['close'],
  sockopt: ['setsockopt', 'getsockopt', 'getsockname'],
};
const GROUP_NAMES = Object.keys(GROUPS);

function groupCounts(calls) {
  const out = {};
  let known = 0;
  for (const [g, names] of Object.entries(GROUPS)) {
    out[g] = names.reduce((a, n) => a + (calls[n] || 0), 0);
    known += out[g];
  }
  const total = Object.values(calls).reduce((a, b) => a + b, 0);
  out.other = total - known;
  out.total = total;
  return out;
}

// Attaches to `pid` (all threads); resolves once strace says so.
async function attach(env, pid, tag) {
  const outFile = path.join(os.tmpdir(), `iomux-bench-strace-${process.pid}-${tag}.txt`);
  try { fs.unlinkSync(outFile); } catch (_) { /* not there */ }
  const child = track(spawn(env.strace, ['-c', '-f', '-o', outFile, '-p', String(pid)], {
    stdio: ['ignore', 'ignore', 'pipe'],
  }));
  let err = '';
  child.stderr.setEncoding('utf8');
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`strace did not attach within 10 s: ${err.trim()}`)), 10000);
    child.stderr.on('data', (d) => {
      err += d;
      if (/attached/.test(err)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`strace exited (${code}) before attaching: ${err.trim()}`));
    });
  });
  // Threads are attached one by one after the first message.
  await sleep(200);
  return {
    async detach() {
      child.kill('SIGINT');
      const r = await waitExit(child, 15000);
      if (r.timedOut) {
        child.kill('SIGKILL');
        throw new Error('strace did not detach within 15 s');
      }
      const text = fs.existsSync(outFile) ? fs.readFileSync(outFile, 'utf8') : '';
      try { fs.unlinkSync(outFile); } catch (_) { /* not there */ }
      const summary = parseStraceSummary(text);
      if (!summary) throw new Error('could not parse the strace summary');
      return summary;
    },
    async abort() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGINT');
        const r = await waitExit(child, 5000);
        if (r.timedOut) child.kill('SIGKILL');
      }
      try { fs.unlinkSync(outFile); } catch (_) { /* not there */ }
    },
  };
}

module.exports = { parseStraceSummary, groupCounts, GROUP_NAMES, attach };
