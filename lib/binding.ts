// binding.ts -- the native binding's function table, loaded once.
import * as path from 'node:path';

export interface Binding {
  init(records: Int32Array, slab: ArrayBuffer, dispatch: (count: number) => number): void;
  setSlab(slab: ArrayBuffer, pos: number): void;
  write(id: number, data: Uint8Array, notify: boolean): number;
  writev(id: number, notify: boolean, ...chunks: Uint8Array[]): number;
  writeString(id: number, text: string, latin1: boolean, notify: boolean): number;
  queued(id: number): number;
  shutdown(id: number): number;
  close(id: number): number;
  setReading(id: number, on: boolean): number;
  cork(id: number, on: boolean): number;
  setTimeout(id: number, ms: number): number;
  setNoDelay(id: number, on: boolean): number;
  setKeepAlive(id: number, on: boolean, delaySeconds: number): number;
  /** SO_SNDBUF (send) or SO_RCVBUF: 0 or -errno. */
  setBufferSize(id: number, send: boolean, bytes: number): number;
  /** The size the kernel reports, or -errno. */
  getBufferSize(id: number, send: boolean): number;
  listen(host: string, port: number, family: number, backlog: number, flags: number): number;
  listenUnix(path: string, backlog: number): number;
  listenFd(fd: number): number;
  listenSocket(host: string, port: number, family: number, backlog: number, flags: number): number;
  listenSocketUnix(path: string, backlog: number): number;
  adopt(fd: number): number;
  socketpair(): [number, number] | number;
  peerCred(id: number): [number, number, number] | number;
  fdLocalAddress(fd: number): [string, number, number] | number;
  connect(host: string, port: number, family: number): number;
  connectUnix(path: string): number;
  connectFrom(host: string, port: number, family: number, localHost: string, localPort: number): number;
  reset(id: number): number;
  localAddress(id: number): [string, number, number] | number;
  ntop6(w0: number, w1: number, w2: number, w3: number): string;
  timerStart(ms: number, out: Int32Array): number;
  timerRestart(id: number, gen: number, ms: number): number;
  timerStop(id: number, gen: number): number;
  setRef(on: boolean): void;
  runStandalone(): number | undefined;
  setBusyPoll(usecs: number): void;
  stats(): Record<string, number>;
  backend(): string;
  batching(): boolean;
  /** [bytes the core holds for its sockets, bytes in its pools, bytes in use from malloc or -1]: memory tests. */
  memory(): [number, number, number];
  forward(a: number, b: number, idleMs: number, highWater: number, flags: number): number;
  SharedCacheHandle: SharedCacheHandleClass;
  /** The sync region (deps/iomux/src/shm_sync.c): mappings as external ArrayBuffers. */
  syncRegion: {
    create(nslots: number, rows: number, valueCap: number): [number, ArrayBuffer];
    attach(fd: number): ArrayBuffer;
    /** Binds this process's doorbell at path; fn(rings) on each wake. The close function, or -errno. */
    bellOpen(path: string, fn: (rings: number) => void): (() => void) | number;
    /** Rings the doorbell at path: 0 or -errno (-ENOENT/-ECONNREFUSED: nobody there; -EAGAIN: its queue is full). */
    bellRing(path: string, slot: number): number;
    /** Makes row's life lock fresh (master, before handing the row out): 0 or -errno. */
    lifeInit(region: ArrayBuffer, row: number): number;
    /** Holds row's life lock until this thread dies (a container's main thread): 0 or -errno. */
    lifeHold(region: ArrayBuffer, row: number): number;
    /** A thread waits for row's holder to die, then fn(token, 1) (or a negative errno): 0 or -errno. */
    lifeWatch(region: ArrayBuffer, row: number, token: number, fn: (token: number, result: number) => void): number;
  };
}

/** The native shared-memory cache (addon/shm_binding.cc); lib/shared/cache.ts wraps it. */
export interface SharedCacheHandle {
  setIo(io: ArrayBuffer): void;
  get(klen: number, stale: boolean, target?: Uint8Array): number;
  put(mode: number, klen: number, value: Uint8Array | null, vlen: number, type: number, ttl: number, version: number): number;
  del(klen: number): number;
  incr(klen: number, by: number, initial: number, ttl: number): number;
  ttl(klen: number): number;
  expire(klen: number, ttl: number): number;
  clear(): number;
  flushExpired(max: number): number;
  keys(cursor: number): number;
  stats(): Record<string, number>;
  verify(): string | null;
  config(): [number, number, number, boolean] | undefined;
  fd(): number;
  close(): void;
  fast(): { get(klen: number): number; put(klen: number, value: Uint8Array, ttl: number): number };
}

export interface SharedCacheHandleClass {
  new (fd: number, create: boolean, size: number, maxEntries: number, defaultTtl: number, evict: boolean): SharedCacheHandle;
  fdNew(name: string | null, create: boolean): number;
  unlink(name: string): number;
  closeFd(fd: number): number;
}

// addon/load.js: a local build, else the prebuild that fits this system
// (platform, arch, N-API, libc and its version), else an error saying what
// was looked for and why it did not fit.
const root = path.join(__dirname, '..');
// eslint-disable-next-line @typescript-eslint/no-var-requires
const { load } = require(path.join(root, 'addon', 'load.js')) as { load: (dir: string) => unknown };

// Test hook: IOMUX_BACKEND=kqueue-emulated loads the test build whose kqueue
// backend runs over an emulated kqueue (Linux only; test/kqemu/binding.gyp,
// `npm run build:kqemu`), so the suites can run on kqueue here. Never loaded
// otherwise.
export const binding = (process.env.IOMUX_BACKEND === 'kqueue-emulated'
  ? require(path.join(root, 'test', 'kqemu', 'build', 'Release', 'iomux_kqemu.node'))
  : load(root)) as Binding;

// Event record types and constants shared with deps/iomux/include/iomux.h.
export const EV_ACCEPT = 1;
export const EV_DATA = 2;
export const EV_EOF = 3;
export const EV_DRAIN = 4;
export const EV_CONNECT = 5;
export const EV_ERROR = 6;
export const EV_TIMEOUT = 7;
export const EV_TIMER = 8;
export const EV_ACCEPT_ERROR = 9;
export const EV_FORWARD_END = 11; // its byte counts fill the next record (12)

export const FORWARD_COPY = 1;
export const FORWARD_REASONS = ['done', 'resetA', 'resetB', 'error', 'timeout', 'closed'] as const;

export const AF_UNIX = 1;
export const AF_INET = 4;
export const AF_INET6 = 6;

export const OP_NAMES = ['', 'read', 'write', 'connect', 'accept', 'shutdown'];

export const LISTEN_REUSEPORT = 1;
export const LISTEN_V6ONLY = 2;
export const LISTEN_DEFER_ACCEPT = 4;
