// Shared helpers for the tap tests.
import { once } from 'node:events';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as iomux from '../dist';

export { iomux };

/** Listens on an ephemeral port of host (default 127.0.0.1); resolves to the port. */
export async function listen(server: iomux.Server, host = '127.0.0.1'): Promise<number> {
  server.listen(0, host);
  await once(server, 'listening');
  const a = server.address();
  if (a === null || typeof a === 'string') throw new Error('not a TCP server');
  return a.port;
}

/** Resolves when the socket is connected. */
export async function connected(socket: iomux.Socket): Promise<iomux.Socket> {
  if (!socket.connecting && socket._id >= 0) return socket;
  await once(socket, 'connect');
  return socket;
}

/** Collects everything a socket receives until 'end' (or 'close'). */
export function collect(socket: iomux.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

/** Closes a server and waits for its 'close'. */
export function closeServer(server: iomux.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.close(() => resolve());
  });
}

/** A fresh directory for unix socket paths. */
export function tempDir(prefix = 'iomux-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** How many fds this process has open (Linux). */
export function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A snapshot of the loop's counters, and the difference since. */
export function statsDelta(): () => Record<string, number> {
  const before = iomux.loop.stats() as unknown as Record<string, number>;
  return () => {
    const now = iomux.loop.stats() as unknown as Record<string, number>;
    const d: Record<string, number> = {};
    for (const k of Object.keys(now)) d[k] = now[k]! - (before[k] ?? 0);
    return d;
  };
}

// ---- added for the echo / bulk / concurrency / address / streams tests ----

/** An echo server: every byte goes back; FIN after the peer's FIN. */
export function echoServer(options: iomux.ServerOptions = {}): iomux.Server {
  return iomux.createServer(options, (s) => {
    s.on('data', (d: Buffer) => s.write(d));
    s.on('end', () => s.end());
    s.on('error', () => {});
  });
}

let ipv6Loopback: Promise<boolean> | undefined;

/**
 * Whether this machine has a usable IPv6 loopback: node:net itself tries to
 * bind ::1 (checked once). False on EADDRNOTAVAIL / EAFNOSUPPORT and the like.
 * IOMUX_TEST_NO_IPV6=1 pretends there is none (to exercise the skip paths).
 */
export function hasIPv6Loopback(): Promise<boolean> {
  if (process.env.IOMUX_TEST_NO_IPV6 === '1') return Promise.resolve(false);
  ipv6Loopback ??= import('node:net').then((net) => new Promise<boolean>((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(0, '::1', () => srv.close(() => resolve(true)));
  }));
  return ipv6Loopback;
}

/** Waits up to `ms` for openFds() to come down to `target` (or below); returns the last count. */
export async function settleFds(target: number, ms = 2000): Promise<number> {
  const until = Date.now() + ms;
  let n = openFds();
  while (n > target && Date.now() < until) {
    await sleep(10);
    n = openFds();
  }
  return n;
}

// ---- added for the timers / errors / emfile / workers / ref / standalone tests ----

/** The test fixtures (plain JS scripts requiring '../../dist'). */
export const fixturesDir = join(__dirname, 'fixtures');

/** Milliseconds since `start` (a process.hrtime.bigint() reading), as a float. */
export function msSince(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e6;
}

/** Blocks the thread for ms (the kernel keeps queueing meanwhile). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Polls pred every 5 ms until it is true or ms passed; resolves to its last value. */
export async function waitFor(pred: () => boolean, ms = 2000): Promise<boolean> {
  const until = Date.now() + ms;
  while (!pred()) {
    if (Date.now() >= until) return false;
    await sleep(5);
  }
  return true;
}

/** process.env for a child node, without the test runner's NODE_OPTIONS (its loaders). */
export function childEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra };
  if (!('NODE_OPTIONS' in extra)) delete env.NODE_OPTIONS;
  return env;
}

export interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** True when the child was still running at timeoutMs and was killed. */
  timedOut: boolean;
}

/**
 * Runs `node ...args` and resolves when it exits; kills it (SIGKILL) after
 * timeoutMs. With `killAfterMs` it is sent SIGTERM at that point instead
 * (to check that it was still running); with `killAfterOutput` too, that
 * delay starts when its stdout first matches (a loaded machine may take
 * longer than killAfterMs just to start node).
 */
export function runNode(args: string[], opts: { timeoutMs?: number; killAfterMs?: number; killAfterOutput?: RegExp; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<ChildResult> {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { spawn } = require('node:child_process') as typeof import('node:child_process');
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, {
      cwd: opts.cwd ?? fixturesDir,
      env: childEnv(opts.env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '', stderr = '', timedOut = false;
    const timers: NodeJS.Timeout[] = [];
    let armed = false;
    const arm = () => {
      if (armed || opts.killAfterMs === undefined) return;
      armed = true;
      timers.push(setTimeout(() => { timedOut = true; child.kill('SIGTERM'); }, opts.killAfterMs));
    };
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (opts.killAfterOutput && opts.killAfterOutput.test(stdout)) arm();
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    if (!opts.killAfterOutput) arm();
    timers.push(setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, opts.timeoutMs ?? 20000));
    child.on('close', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

/** The JSON lines a child printed, parsed (other lines are skipped). */
export function jsonLines(text: string): any[] {
  const out: any[] = [];
  for (const line of text.split('\n')) {
    const l = line.trim();
    if (!l.startsWith('{')) continue;
    try { out.push(JSON.parse(l)); } catch { /* not ours */ }
  }
  return out;
}

/**
 * Options for a test that shows a known bug: { todo } (tap then does not run
 * it) unless IOMUX_TEST_BUGS=1, which runs it to see it fail (or pass, once fixed).
 */
export function bug(reason: string): { todo?: string } {
  return process.env.IOMUX_TEST_BUGS === '1' ? {} : { todo: `bug: ${reason}` };
}

/**
 * Like collect(), but copies each chunk as it arrives, so the result does not
 * depend on received Buffers staying intact after their 'data' event.
 */
export function collectCopies(socket: iomux.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(Buffer.from(c)));
    socket.on('error', reject);
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('close', () => resolve(Buffer.concat(chunks)));
  });
}

/**
 * A seeded pseudo-random source (mulberry32) for the fuzz tests, so that a
 * failing seed can be run again: rand() in [0, 1), int(n) in [0, n),
 * pick(array), chance(p).
 */
export function seededRandom(seed: number) {
  let state = seed >>> 0;
  const rand = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let x = state;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number): number => Math.floor(rand() * n);
  return {
    rand,
    int,
    pick: <T>(a: readonly T[]): T => a[int(a.length)]!,
    chance: (p: number): boolean => rand() < p,
  };
}
