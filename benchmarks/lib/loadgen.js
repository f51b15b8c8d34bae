'use strict';
// Load generators, all pinned to the generator CPU:
//   - HTTP: wrk (preferred) or autocannon, run under `bash -c '...; times'`
//     so the generator's CPU time is known after it exits; the rows that
//     check every response use benchmarks/clients/http_check.c (compiled at
//     bench time) the same way;
//   - TCP: benchmarks/clients/echo_client.c, compiled at bench time, driven
//     over stdin/stdout ("go SECONDS" per phase), reporting its own CPU time.

const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');
const readline = require('readline');
const { track, killEntry, waitExit } = require('./util');

const TIMES_MARK = '__iomux_bench_times__';
const PIPELINE_LUA = path.join(__dirname, '..', 'clients', 'pipeline.lua');
const HTTP_CHECK_C = path.join(__dirname, '..', 'clients', 'http_check.c');
const ECHO_CLIENT_C = path.join(__dirname, '..', 'clients', 'echo_client.c');

function parseDuration(s) {
  const m = /^([\d.]+)(us|ms|s|m|h)?$/.exec(s);
  if (!m) return null;
  const v = Number(m[1]);
  const unit = m[2] || 's';
  return v * { us: 1e-6, ms: 1e-3, s: 1, m: 60, h: 3600 }[unit];
}

function parseTimes(text) {
  // Two lines: the shell's own user/system time, then its children's.
  const lines = text.trim().split('\n').map((l) => l.trim()).filter(Boolean);
  const last = lines[lines.length - 1] || '';
  const secs = last.split(/\s+/).map((t) => {
    const m = /^(\d+)m([\d.,]+)s$/.exec(t);
    return m ? Number(m[1]) * 60 + Number(m[2].replace(',', '.')) : NaN;
  });
  if (secs.length !== 2 || secs.some((x) => !Number.isFinite(x))) return null;
  return secs[0] + secs[1];
}

function parseWrk(out) {
  const r = { units: null, durationS: null, latencyMs: {}, errors: { connect: 0, read: 0, write: 0, timeout: 0, non2xx: 0 } };
  let m = /(\d+) requests in ([\d.]+\w+),/.exec(out);
  if (m) {
    r.units = Number(m[1]);
    r.durationS = parseDuration(m[2]);
  }
  m = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  if (m) Object.assign(r.errors, { connect: +m[1], read: +m[2], write: +m[3], timeout: +m[4] });
  m = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  if (m) r.errors.non2xx = Number(m[1]);
  const dist = out.split('Latency Distribution')[1] || '';
  for (const p of ['50', '75', '90', '99']) {
    const lm = new RegExp(`^\\s*${p}%\\s+([\\d.]+(?:us|ms|s|m))\\s*$`, 'm').exec(dist);
    // wrk prints 0 for percentiles it could not compute (with pipelining).
    if (lm && parseDuration(lm[1]) > 0) r.latencyMs['p' + p] = parseDuration(lm[1]) * 1000;
  }
  return r;
}

function parseAutocannon(out) {
  const line = out.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('{')).pop();
  if (!line) return null;
  let j;
  try {
    j = JSON.parse(line);
  } catch (_) {
    return null;
  }
  const total = j.requests ? j.requests.total : null;
  // clients/http_check.c: every response compared with what its request asked for.
  const checked = j.checked != null ? {
    checked: j.checked, mismatches: j.mismatches, firstMismatch: j.firstMismatch || null,
  } : null;
  return {
    checked,
    units: total,
    durationS: j.duration != null ? j.duration : null,
    latencyMs: j.latency ? { p50: j.latency.p50, p90: j.latency.p90, p99: j.latency.p99 } : {},
    // autocannon's whole latency histogram summary (percentiles, mean,
    // stddev, max), kept in latest.json.
    latencyHistogram: j.latency || null,
    errors: {
      connect: 0,
      read: j.errors || 0,
      write: 0,
      timeout: j.timeouts || 0,
      non2xx: j.non2xx || 0,
    },
  };
}

// The generator's command for `seconds` of HTTP load.
// opts: { connections, pipeline (requests per write), close (Connection: close),
// check (clients/http_check.c: GET /users/<n>, every response checked) }
function httpCommand(env, port, seconds, opts) {
  if (opts.check) {
    if (!env.httpCheck) throw new Error('the checking client (clients/http_check.c) is not built');
    return [env.httpCheck, ['127.0.0.1', String(port), String(opts.connections), String(seconds)]];
  }
  const url = `http://127.0.0.1:${port}/`;
  const c = String(opts.connections);
  if (env.loadgen.name === 'wrk') {
    const args = ['-t1', '-c' + c, `-d${seconds}s`, '--latency'];
    if (opts.close) args.push('-H', 'Connection: close');
    if (opts.pipeline > 1) args.push('-s', PIPELINE_LUA, url, '--', String(opts.pipeline));
    else args.push(url);
    return [env.loadgen.path, args];
  }
  const args = [env.loadgen.path, '-c', c, '-d', String(seconds), '-p', String(opts.pipeline || 1), '-j'];
  if (opts.close) args.push('-H', 'Connection=close');
  args.push(url);
  return [process.execPath, args];
}

// Runs the HTTP generator for `seconds` and parses its output.
async function runHttp(env, port, seconds, opts) {
  const [gcmd, gargs] = env.pinned(1, ...httpCommand(env, port, seconds, opts));
  let cmd;
  let args;
  if (env.bash) {
    cmd = env.bash;
    args = ['-c', `"$@"; rc=$?; echo ${TIMES_MARK}; times; exit $rc`, 'bench-loadgen', gcmd, ...gargs];
  } else {
    cmd = gcmd;
    args = gargs;
  }
  const child = track(spawn(cmd, args, {
    cwd: env.root,
    env: { ...process.env, LC_ALL: 'C' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true, // its own process group, so the generator dies with the shell
  }), { group: true });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  const spawnError = new Promise((resolve) => child.once('error', resolve));
  const limitMs = (seconds + 30) * 1000;
  const exit = await Promise.race([waitExit(child, limitMs), spawnError.then((e) => ({ error: e }))]);
  if (exit.error) throw new Error(`load generator failed to start: ${exit.error.message}`);
  if (exit.timedOut) {
    killEntry({ child, group: true }, 'SIGKILL');
    throw new Error(`load generator did not finish within ${limitMs / 1000} s`);
  }
  const [genOut, timesOut] = stdout.split(TIMES_MARK);
  const parsed = (env.loadgen.name === 'wrk' && !opts.check ? parseWrk(genOut) : parseAutocannon(genOut)) || { units: null, errors: {} };
  parsed.exitCode = exit.code;
  parsed.genCpuS = timesOut != null ? parseTimes(timesOut) : null;
  parsed.stderr = stderr;
  if (opts.check && exit.code !== 0) {
    // http_check exits 1 on a closed connection or a missing response.
    throw new Error(`the checking client failed (exit ${exit.code})` +
      (stderr.trim() ? ': ' + stderr.trim().split('\n').pop() : ''));
  }
  if (!parsed.units) {
    throw new Error(`the generator counted no requests (exit ${exit.code})` +
      (stderr.trim() ? ': ' + stderr.trim().split('\n').pop() : ''));
  }
  const e = parsed.errors || {};
  const hard = (e.connect || 0) + (e.read || 0) + (e.write || 0) + (e.non2xx || 0);
  if (hard > 0) throw new Error(`the generator saw errors: ${JSON.stringify(e)}`);
  if (opts.check) {
    const c = parsed.checked;
    if (!c) throw new Error('the checking client reported no check counts');
    if (c.mismatches > 0) throw new Error(`${c.mismatches} responses were wrong, first: ${JSON.stringify(c.firstMismatch)}`);
    if (c.checked !== parsed.units) throw new Error(`${parsed.units} responses counted, ${c.checked} checked`);
  }
  return parsed;
}

// A driver is what a scenario's run talks to: warm(s), timed(s), close().
function httpDriver(env, server, opts) {
  return {
    warm: (s) => runHttp(env, server.port, s, opts),
    timed: (s) => runHttp(env, server.port, s, opts),
    close: async () => {},
  };
}

// ---------------------------------------------------------------------------
// The C client

class EchoClient {
  constructor(child) {
    this.child = child;
    this.lines = [];
    this.waiters = [];
    this.stderr = '';
    this.exited = false;
  }

  onLine(obj) {
    const w = this.waiters.shift();
    if (w) w.resolve(obj);
    else this.lines.push(obj);
  }

  next(ms, what) {
    if (this.lines.length) return Promise.resolve(this.lines.shift());
    return new Promise((resolve, reject) => {
      const w = {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`echo_client: no ${what} within ${ms / 1000} s${this.stderr ? ': ' + this.stderr.trim() : ''}`));
      }, ms);
      this.waiters.push(w);
    });
  }

  failAll(err) {
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  // Idle mode: opens k more connections, each carrying one exchange first
  // when `exchange` is 'echo' (one byte and its echo) or 'http' (one
  // keep-alive GET and its response); resolves with the client's line.
  async open(k, exchange = null) {
    if (this.exited) throw new Error(`echo_client exited: ${this.stderr.trim()}`);
    this.child.stdin.write(exchange ? `open ${k} ${exchange}\n` : `open ${k}\n`);
    const r = await this.next(60000, '"opened" line');
    if (!r || r.event !== 'opened') throw new Error(`echo_client: unexpected line ${JSON.stringify(r)}`);
    return r;
  }

  // One phase of traffic; resolves with the client's result line.
  async go(seconds) {
    if (this.exited) throw new Error(`echo_client exited: ${this.stderr.trim()}`);
    this.child.stdin.write(`go ${seconds}\n`);
    const r = await this.next((seconds + 20) * 1000, 'result');
    if (!r || r.event !== 'result') throw new Error(`echo_client: unexpected line ${JSON.stringify(r)}`);
    return r;
  }

  async close() {
    if (!this.exited) {
      try {
        this.child.stdin.end('quit\n');
      } catch (_) {
        // Gone already.
      }
      const r = await waitExit(this.child, 10000);
      if (r.timedOut) this.child.kill('SIGKILL');
    }
  }
}

// Starts the client and waits until all its connections are up.
async function startEchoClient(env, mode, port, connections, size) {
  const args = [mode, '127.0.0.1', String(port), String(connections)];
  if (mode !== 'idle') args.push(String(size));
  const [cmd, argv] = env.pinned(1, env.echoClient, args);
  const child = track(spawn(cmd, argv, { cwd: env.root, stdio: ['pipe', 'pipe', 'pipe'] }));
  const client = new EchoClient(child);
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    client.stderr = (client.stderr + d).slice(-2000);
  });
  child.stdin.on('error', () => {});
  const rl = readline.createInterface({ input: child.stdout });
  rl.on('line', (line) => {
    try {
      client.onLine(JSON.parse(line));
    } catch (_) {
      // Not JSON.
    }
  });
  child.once('exit', (code, signal) => {
    client.exited = true;
    client.failAll(new Error(`echo_client exited (code ${code}, signal ${signal})${client.stderr ? ': ' + client.stderr.trim() : ''}`));
  });
  const first = await client.next(60000, '"connected" line');
  if (!first || first.event !== 'connected') throw new Error(`echo_client: unexpected line ${JSON.stringify(first)}`);
  client.connected = first;
  return client;
}

// Driver over the C client: units are round trips (echo) or bytes (bulk).
async function echoDriver(env, server, mode, connections, size) {
  const client = await startEchoClient(env, mode, server.port, connections, size);
  const toResult = (r) => ({
    units: mode === 'bulk' ? r.bytes : r.roundTrips,
    durationS: r.seconds,
    genCpuS: r.clientCpuS,
    latencyMs: r.latencyUs ? { p50: r.latencyUs.p50 / 1000, p99: r.latencyUs.p99 / 1000 } : {},
    errors: { protocol: r.errors || 0 },
    raw: r,
  });
  return {
    connectMs: client.connected.connectMs,
    warm: async (s) => toResult(await client.go(s)),
    timed: async (s) => {
      const r = toResult(await client.go(s));
      if (r.errors.protocol) throw new Error(`echo_client saw ${r.errors.protocol} replies longer than the ping`);
      if (!r.units) throw new Error('echo_client counted no traffic');
      return r;
    },
    close: () => client.close(),
  };
}

module.exports = {
  parseWrk, parseAutocannon, parseTimes, runHttp, httpDriver,
  ECHO_CLIENT_C, HTTP_CHECK_C, startEchoClient, echoDriver,
};
