'use strict';
// Small helpers shared by the benchmark runner: child bookkeeping, /proc
// readers, statistics and number formatting.

const { execFileSync } = require('child_process');
const fs = require('fs');
const net = require('net');
const path = require('path');

// ---------------------------------------------------------------------------
// Child processes: every child is tracked and killed when the runner exits.

const live = new Set();

function track(child, { group = false } = {}) {
  const entry = { child, group };
  live.add(entry);
  child.on('exit', () => live.delete(entry));
  child.on('error', () => live.delete(entry));
  return child;
}

function killEntry(entry, signal) {
  const { child, group } = entry;
  if (child.exitCode !== null || child.signalCode !== null || !child.pid) return;
  try {
    if (group) process.kill(-child.pid, signal);
    else process.kill(child.pid, signal);
  } catch (_) {
    // Already gone.
  }
}

function killAll() {
  for (const entry of live) killEntry(entry, 'SIGKILL');
  live.clear();
}

function waitExit(child, ms) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode, timedOut: false });
      return;
    }
    let timer = null;
    const done = (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, timedOut: false });
    };
    child.once('exit', done);
    if (ms != null) {
      timer = setTimeout(() => {
        child.removeListener('exit', done);
        resolve({ code: null, signal: null, timedOut: true });
      }, ms);
    }
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------
// Environment

function which(cmd) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch (_) {
      // Not here.
    }
  }
  return null;
}

function clockTicks() {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    if (n > 0) return n;
  } catch (_) {
    // Fall through to the usual Linux value.
  }
  return 100;
}

function toolVersion(cmd, args) {
  try {
    const out = execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10000 });
    return out.split('\n')[0].trim();
  } catch (err) {
    // wrk -v exits non-zero after printing its version.
    const out = String((err && err.stdout) || '') + String((err && err.stderr) || '');
    return out.split('\n')[0].trim() || null;
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------
// /proc readers

// utime + stime of a process, all threads, in clock ticks.
function readProcCpuTicks(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 of the whole line, i.e. 11 and 12 after "state".
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(rest[11]) + Number(rest[12]);
  } catch (_) {
    return null;
  }
}

// Machine-wide CPU time from /proc/stat (clock ticks, all CPUs): busy
// includes steal time, which a VM loses to its host.
function readMachineTicks() {
  try {
    const line = fs.readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith('cpu '));
    const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
    return { busy: user + nice + system + irq + softirq + (steal || 0), steal: steal || 0, idle: idle + (iowait || 0) };
  } catch (_) {
    return null;
  }
}

function readRssKb(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m ? Number(m[1]) : null;
  } catch (_) {
    return null;
  }
}

function loadAvg() {
  try {
    return fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
  } catch (_) {
    return null;
  }
}

// ---------------------------------------------------------------------------
// Statistics

function finite(xs) {
  return xs.filter((x) => typeof x === 'number' && Number.isFinite(x));
}

function median(xs) {
  const v = finite(xs).sort((a, b) => a - b);
  if (!v.length) return null;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function summarize(values) {
  const v = finite(values);
  if (!v.length) return null;
  return { median: median(v), min: Math.min(...v), max: Math.max(...v), n: v.length };
}

function diffNumbers(a, b) {
  const out = {};
  if (!a || !b) return null;
  for (const k of Object.keys(b)) {
    if (typeof b[k] === 'number' && typeof a[k] === 'number') out[k] = b[k] - a[k];
  }
  return out;
}

// Sums the numeric fields of objects (null when any object is missing).
function sumNumbers(list) {
  if (!list.length || list.some((x) => !x)) return null;
  const out = {};
  for (const x of list) for (const [k, v] of Object.entries(x)) if (typeof v === 'number') out[k] = (out[k] || 0) + v;
  return out;
}

// The sum of f(x) over the list, or null when f gives null for any of them.
function total(list, f) {
  let sum = 0;
  for (const x of list) {
    const v = f(x);
    if (v == null) return null;
    sum += v;
  }
  return sum;
}

// ---------------------------------------------------------------------------
// Formatting

// Significant digits that suit the magnitude: 151,552 / 6.52 / 0.0123.
function autoDigits(x) {
  const a = Math.abs(x);
  if (a >= 100) return 0;
  if (a >= 10) return 1;
  if (a >= 1) return 2;
  if (a >= 0.1) return 3;
  return 4;
}

function fmt(x, digits) {
  if (x == null || !Number.isFinite(x)) return '–';
  const d = digits == null ? autoDigits(x) : digits;
  return x.toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d });
}

function fmtRange(s, digits) {
  if (!s) return '–';
  const d = digits == null ? autoDigits(s.median) : digits;
  if (s.n === 1) return fmt(s.median, d);
  return `${fmt(s.median, d)} (${fmt(s.min, d)}–${fmt(s.max, d)})`;
}

function fmtRatio(x) {
  if (x == null || !Number.isFinite(x)) return '–';
  return (x >= 10 ? x.toFixed(1) : x.toFixed(2)) + '×';
}

function indent(s) {
  return s.split('\n').map((l) => '    ' + l).join('\n');
}

function writeAtomic(file, text) {
  const tmp = file + '.tmp';
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

// Compiles one C file of the suite with `cc -O2 -Wall` into outDir, named
// after the file; returns the executable's path, or why it could not be built.
function buildC(cc, source, outDir) {
  const rel = path.relative(path.join(__dirname, '..', '..'), source);
  if (!cc) return { exe: null, error: `no C compiler (cc) to build ${rel}` };
  const exe = path.join(outDir, path.basename(source, '.c'));
  try {
    execFileSync(cc, ['-O2', '-Wall', '-o', exe, source], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 60000 });
    return { exe, error: null };
  } catch (err) {
    return { exe: null, error: `building ${path.basename(source)} failed: ${String(err.stderr || err.message).trim().split('\n').slice(-3).join(' | ')}` };
  }
}

module.exports = {
  track, killEntry, killAll, waitExit, sleep, buildC,
  which, clockTicks, toolVersion, freePort,
  readProcCpuTicks, readMachineTicks, readRssKb, loadAvg,
  median, summarize, diffNumbers, sumNumbers, total,
  fmt, fmtRange, fmtRatio, indent, writeAtomic,
};
