'use strict';
// One benchmark server process (benchmarks/servers/*.js, or the C
// reference servers/c_epoll.c), pinned to the server CPU, and its stats
// lines (see servers/common.js).

const { spawn } = require('child_process');
const path = require('path');
const readline = require('readline');
const { track, waitExit, sleep, freePort, indent } = require('./util');

class BenchServer {
  constructor(label, child, port) {
    this.label = label;
    this.child = child;
    this.pid = child.pid;
    // The process whose CPU time and memory are measured: the server itself,
    // or one it runs (a "cpupid <pid>" line: HAProxy under its wrapper).
    this.cpuPid = child.pid;
    this.port = port;
    this.backend = null;
    this.stderr = '';
    this.statsLines = [];
    this.statsWaiters = [];
    this.exited = false;
  }

  // One stats line, asked for with SIGUSR2 (SIGWINCH: after a full GC).
  // Resolves null when no answer comes within `ms`.
  async snapshot({ gc = false, ms = 5000 } = {}) {
    if (this.exited) return null;
    const p = new Promise((resolve) => {
      const waiter = { resolve, timer: null };
      waiter.timer = setTimeout(() => {
        const i = this.statsWaiters.indexOf(waiter);
        if (i >= 0) this.statsWaiters.splice(i, 1);
        resolve(null);
      }, ms);
      this.statsWaiters.push(waiter);
    });
    try {
      process.kill(this.pid, gc ? 'SIGWINCH' : 'SIGUSR2');
    } catch (_) {
      return null;
    }
    return p;
  }

  onStatsLine(obj) {
    const waiter = this.statsWaiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.resolve(obj);
    } else {
      this.statsLines.push(obj);
    }
  }

  describeExit() {
    return `code ${this.child.exitCode}, signal ${this.child.signalCode}` +
      (this.stderr.trim() ? `:\n${indent(this.stderr.trim())}` : '');
  }

  // SIGTERM, then SIGKILL if the server has not exited within `ms`.
  async stop(ms = 3000) {
    const result = { code: null, signal: null, forced: false };
    if (!this.exited) {
      try {
        process.kill(this.pid, 'SIGTERM');
      } catch (_) {
        // Already gone.
      }
      const r = await waitExit(this.child, ms);
      if (r.timedOut) {
        result.forced = true;
        try {
          process.kill(this.pid, 'SIGKILL');
        } catch (_) {
          // Already gone.
        }
        await waitExit(this.child, ms);
      }
    }
    await sleep(10);
    result.code = this.child.exitCode;
    result.signal = this.child.signalCode;
    return result;
  }
}

// The C reference server, compiled at the start of a run (util.buildC).
const C_SERVER_C = path.join(__dirname, '..', 'servers', 'c_epoll.c');

// Starts `node [nodeArgs] script impl port ...args` (or, with `exe`, the
// executable: `exe impl port ...args`) on the server CPU (or on `cpu`) and
// waits for its "listening <port> <backend>" line.
async function startServer(env, { label, script, exe, impl, args = [], nodeArgs = [], extraEnv = {}, cpu = 0 }) {
  const port = await freePort();
  const [cmd, argv] = exe
    ? env.pinned(cpu, exe, [impl, String(port), ...args])
    : env.pinned(cpu, process.execPath, [...nodeArgs, script, impl, String(port), ...args]);
  const childEnv = { ...process.env, ...extraEnv };
  for (const [k, v] of Object.entries(extraEnv)) if (v == null) delete childEnv[k];
  const child = track(spawn(cmd, argv, { cwd: env.root, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] }));
  const server = new BenchServer(label, child, port);
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    server.stderr = (server.stderr + d).slice(-4000);
  });
  child.once('exit', () => {
    server.exited = true;
  });
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${label}: server did not print "listening" within 15 s`)), 15000);
    const rl = readline.createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      const cp = /^cpupid (\d+)\s*$/.exec(line);
      if (cp) {
        server.cpuPid = Number(cp[1]);
        return;
      }
      const m = /^listening (\d+)(?: (\S+))?\s*$/.exec(line);
      if (m) {
        clearTimeout(timer);
        server.backend = m[2] || null;
        resolve(Number(m[1]));
        return;
      }
      if (line.startsWith('{')) {
        try {
          server.onStatsLine(JSON.parse(line));
        } catch (_) {
          // Not a stats line.
        }
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${label}: server exited before listening (code ${code}, signal ${signal})` +
        (server.stderr ? `\n${indent(server.stderr.trim())}` : '')));
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${label}: could not start server: ${err.message}`));
    });
  });
  try {
    const printed = await ready;
    if (printed && printed !== port) server.port = printed;
  } catch (err) {
    await server.stop(1000);
    throw err;
  }
  return server;
}

module.exports = { BenchServer, startServer, C_SERVER_C };
