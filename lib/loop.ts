// loop.ts -- the JavaScript side of the loop: it receives each batch of event
// records in one call, turns slab ranges into Buffers, and routes every record
// to its socket, server or timer queue (timers.ts). It also keeps the count of
// handles that keep the process alive.
import {
  binding, EV_ACCEPT, EV_ACCEPT_ERROR, EV_CONNECT, EV_DATA, EV_DRAIN, EV_EOF, EV_ERROR, EV_FORWARD_END, EV_TIMEOUT,
  EV_TIMER,
} from './binding';
import { strict as assert } from 'node:assert';
import { performance } from 'node:perf_hooks';
import { errnoException, invalidArgType, outOfRange } from './errors';
import { Timer, TimerQueue, type TimerCallback } from './timers';

export { Timer, type TimerCallback };

/** What the loop calls on a connected socket. */
export interface StreamHandle {
  _onData(chunk: Buffer): void;
  _onEof(): void;
  _onDrain(): void;
  _onConnect(errno: number): void;
  _onError(errno: number, op: number): void;
  _onTimeout(): void;
}

/** What the loop calls when a forwarding ends (forward.ts): word 3 of the record, and the byte counts. */
export interface ForwardHandle {
  _onForwardEnd(reasonErrno: number, bytesAtoB: number, bytesBtoA: number): void;
}

/** What the loop calls on a listening server. */
export interface ListenerHandle {
  _onAccept(id: number, familyPort: number, w0: number, w1: number, w2: number, w3: number): void;
  _onAcceptError(errno: number): void;
}

const RECORD_WORDS = 16 * 1024; // 4096 records per batch before a mid-batch hand-over
// Reads land in a slab and are handed out as views of it or as copies. Two
// sizes: a small slab, under glibc's 128 KiB mmap threshold, whose memory
// comes from the heap and is mostly recycled, and a large one, the core's
// read cap, which the loop takes only after a read came back with READ_ROOM
// or more (a bulk flow: one 256 KiB read instead of four 64 KiB ones cuts a
// loopback receiver's reads and wake-ups per message by 2 to 3x). A batch
// with data but no such read brings the small size back, so a loop whose
// sockets are quiet never holds a large slab and a kept view pins little.
// Large slabs measured at most 0.08 page faults per 4 KiB message (not 64 per
// slab): once the first one is freed, glibc's dynamic mmap threshold rises
// above it and the next ones come from the heap (docs/zmq.md, fourth pass).
const SLAB_SMALL = 96 * 1024;
const SLAB_LARGE = 256 * 1024; // the core's default read_cap
// IOMUX_READ_ROOM in deps/iomux/include/iomux.h: a slab is kept while at least
// this much room is left above its kept views; below it the core asks for a
// new one before a busy socket reads on.
const READ_ROOM = 64 * 1024;
// Chunks at least this large are handed out as views of the slab; smaller
// ones are copied, so that a small retained chunk never pins a whole slab.
// A retained view pins at most 6 (small slab) or 4 (large) times its size.
const VIEW_MIN_SMALL = 16 * 1024;
const VIEW_MIN_LARGE = 64 * 1024;
const TIMEOUT_MAX = 2 ** 31 - 1;

// A slab is not zero-filled: only ranges the kernel just wrote are ever
// handed out. `new ArrayBuffer` would clear the whole slab first (some 6 us
// for a 256 KiB one, a seventh of the CPU of a bulk receive).
function newSlabBuffer(size: number): Buffer {
  const buf = Buffer.allocUnsafeSlow(size);
  assert(buf.byteOffset === 0 && buf.buffer.byteLength === size);
  return buf;
}

function rethrow(err: unknown): never {
  throw err;
}

export interface LoopStats {
  iterations: number;
  events: number;
  wait: number;
  ctl: number;
  accept: number;
  read: number;
  write: number;
  writev: number;
  shutdown: number;
  close: number;
  getpeername: number;
  getsockname: number;
  socket: number;
  connect: number;
  bind: number;
  listen: number;
  setsockopt: number;
  getsockopt: number;
  unlink: number;
  /** io_uring: io_uring_enter calls that only submitted (ring full within an iteration). */
  submit: number;
  /** Registrations and removals that rode with a wait instead of costing a syscall (io_uring, kqueue). */
  changes: number;
  /** forward(): splice(2) calls, the pipes they go through, and the fcntl(2) calls that size them. */
  splice: number;
  pipe: number;
  fcntl: number;
  /** forward(): signal-mask calls that keep splice(2) from raising SIGPIPE (only when SIGPIPE is not ignored). */
  sigmask: number;
  /** io_uring_enter calls that made the reads or the writes of several sockets at once (see Loop.batching). */
  batch: number;
  /** Reads and writes made that way, each of which would otherwise have been a syscall of its own. */
  batch_read: number;
  batch_write: number;
  /** Readiness events of listening sockets: wakeups by incoming connections (one per connection across processes sharing a listener). */
  accept_wakeups: number;
  /** busyPoll: windows of polling without sleeping that were opened, and those that caught a batch before they ran out. */
  busy_windows: number;
  busy_caught: number;
  /** io_uring: listener polls armed again after their connections were accepted (ride with the next wait). */
  rearm: number;
}

/** The thread's iomux loop. Every socket, server and timer of the thread lives on it. */
export class Loop {
  /** @internal */ readonly _streams: (StreamHandle | undefined)[] = [];
  /** @internal */ readonly _listeners: (ListenerHandle | undefined)[] = [];
  /** @internal forwardings, by the id of their first socket */
  readonly _forwards: (ForwardHandle | undefined)[] = [];
  /** @internal */ readonly _timers = new TimerQueue(this);
  private readonly records = new Int32Array(RECORD_WORDS);
  private slabBuf = newSlabBuffer(SLAB_SMALL);
  private slab = this.slabBuf.buffer as ArrayBuffer;
  private slabLarge = false;
  private viewMin = VIEW_MIN_SMALL;
  /** End of the last range of this slab handed out as a view: the core never writes below it. */
  private slabKept = 0;
  private refs = 0;
  private isStandalone = false;
  /** performance.now() as first read in the batch being dispatched; -1 when not read yet or outside a batch. */
  private batchNow = -1;
  private inBatch = false;
  private busyPollUs = 0;

  constructor() {
    binding.init(this.records, this.slab, (count) => this.dispatch(count));
    const env = process.env.IOMUX_BUSY_POLL;
    if (env !== undefined && env !== '') {
      if (!/^[0-9]+$/.test(env) || Number(env) > 100_000)
        throw outOfRange('IOMUX_BUSY_POLL', 'an integer from 0 to 100000 (microseconds)', env);
      this.busyPoll = Number(env);
    }
  }

  /** The kernel interface in use: 'epoll', 'io_uring' or 'kqueue'. */
  get backend(): string {
    return binding.backend();
  }

  /**
   * Whether the reads of many sockets, and the writes that end a batch of
   * events, go to the kernel together in one call (Linux io_uring, whatever
   * the backend) instead of a syscall each. IOMUX_BATCH=0 turns it off.
   */
  get batching(): boolean {
    return binding.batching();
  }

  /**
   * Microseconds the loop keeps polling, without sleeping, before it lets
   * the thread sleep; 0 (the default) sleeps at once. A peer that answers
   * within the window is served without a sleep and a wake-up, which cuts
   * request-response latency and, on VMs where a wake-up is dear, CPU per
   * message too; the price is a core kept busy for the window after every
   * batch, so it suits a process with a core to itself. Set it from the
   * environment with IOMUX_BUSY_POLL=50. At most 100,000 (100 ms).
   */
  get busyPoll(): number {
    return this.busyPollUs;
  }

  set busyPoll(usecs: number) {
    if (typeof usecs !== 'number' || !Number.isInteger(usecs) || usecs < 0 || usecs > 100_000)
      throw outOfRange('busyPoll', 'an integer from 0 to 100000 (microseconds)', usecs);
    this.busyPollUs = usecs;
    binding.setBusyPoll(usecs);
  }

  /** True once run() switched this thread to the standalone wait. */
  get standalone(): boolean {
    return this.isStandalone;
  }

  /** Iterations, kernel events delivered, and every syscall the core issued, by kind. */
  stats(): LoopStats {
    return binding.stats() as unknown as LoopStats;
  }

  /**
   * Switches this thread to standalone mode: the core's blocking wait becomes
   * the only poll, with libuv's own fd folded into it, so Node's timers,
   * promises and fs keep working. There is no switching back.
   */
  run(): void {
    if (this.isStandalone) return;
    const rc = binding.runStandalone();
    if (typeof rc === 'number' && rc < 0) throw errnoException(-rc, 'epoll_ctl');
    this.isStandalone = true;
  }

  // Extra arguments are read from `arguments`, so that the common call with
  // none allocates no array.
  setTimeout<A extends unknown[]>(cb: (...args: A) => void, ms?: number, ...args: A): Timer;
  setTimeout(cb: TimerCallback, ms?: number): Timer {
    return this.newTimer(cb, ms, arguments.length > 2 ? Array.prototype.slice.call(arguments, 2) : undefined, false);
  }

  setInterval<A extends unknown[]>(cb: (...args: A) => void, ms?: number, ...args: A): Timer;
  setInterval(cb: TimerCallback, ms?: number): Timer {
    return this.newTimer(cb, ms, arguments.length > 2 ? Array.prototype.slice.call(arguments, 2) : undefined, true);
  }

  clearTimeout(timer: Timer | undefined | null): void {
    if (timer instanceof Timer) this._timers.clear(timer);
  }

  clearInterval(timer: Timer | undefined | null): void {
    this.clearTimeout(timer);
  }

  private newTimer(cb: TimerCallback, ms: number | undefined, args: unknown[] | undefined, repeat: boolean): Timer {
    if (typeof cb !== 'function') throw invalidArgType('callback', 'of type function', cb);
    let after = Number(ms);
    if (!(after >= 1 && after <= TIMEOUT_MAX)) after = 1;
    const timer = new Timer(this._timers, cb, Math.trunc(after), args, repeat);
    this._timers.arm(timer);
    return timer;
  }

  /**
   * @internal performance.now(), read at most once per batch: what a batch
   * does happens at one instant as far as millisecond deadlines go.
   */
  _now(): number {
    if (!this.inBatch) return performance.now();
    if (this.batchNow < 0) this.batchNow = performance.now();
    return this.batchNow;
  }

  /**
   * @internal Whether a batch of events is being dispatched: writes made now
   * reach the kernel together when it ends, corked or not.
   */
  get _inBatch(): boolean {
    return this.inBatch;
  }

  /** @internal One more handle keeps the process alive. */
  _ref(): void {
    if (this.refs++ === 0) binding.setRef(true);
  }

  /** @internal */
  _unref(): void {
    if (--this.refs === 0) binding.setRef(false);
  }

  private newSlab(large: boolean): void {
    this.slabKept = 0;
    this.slabLarge = large;
    this.viewMin = large ? VIEW_MIN_LARGE : VIEW_MIN_SMALL;
    this.slabBuf = newSlabBuffer(large ? SLAB_LARGE : SLAB_SMALL);
    this.slab = this.slabBuf.buffer as ArrayBuffer;
    binding.setSlab(this.slab, 0);
  }

  // One call per batch. Each record is handled on its own: an exception
  // thrown by one handler goes to 'uncaughtException' after the batch and
  // never loses the records behind it.
  private dispatch(count: number): number {
    const rec = this.records;
    let kept = this.slabKept;
    const viewMin = this.viewMin;
    let data = false, bulk = false;
    this.inBatch = true;
    this.batchNow = -1;
    for (let i = 0; i < count; i++) {
      const o = i << 2;
      const id = rec[o + 1]!;
      try {
        switch (rec[o]) {
          case EV_DATA: {
            const s = this._streams[id];
            if (s === undefined) break;
            const off = rec[o + 2]!, len = rec[o + 3]!;
            data = true;
            if (len >= READ_ROOM) bulk = true;
            let chunk: Buffer;
            if (len >= viewMin) {
              chunk = Buffer.from(this.slab, off, len);
              kept = off + len;
            } else {
              chunk = Buffer.allocUnsafe(len);
              // TypedArray set from a view: about half of Buffer#copy's cost
              // (no argument checks) for the small chunks that take this path.
              chunk.set(new Uint8Array(this.slab, off, len));
            }
            s._onData(chunk);
            break;
          }
          case EV_ACCEPT: {
            const a = o + 4;
            i++; // the peer's address fills the next record
            const l = this._listeners[rec[o + 2]!];
            if (l === undefined) binding.close(id);
            else l._onAccept(id, rec[o + 3]!, rec[a]!, rec[a + 1]!, rec[a + 2]!, rec[a + 3]!);
            break;
          }
          case EV_EOF:
            this._streams[id]?._onEof();
            break;
          case EV_DRAIN:
            this._streams[id]?._onDrain();
            break;
          case EV_CONNECT:
            this._streams[id]?._onConnect(rec[o + 2]!);
            break;
          case EV_ERROR:
            this._streams[id]?._onError(rec[o + 2]!, rec[o + 3]!);
            break;
          case EV_TIMEOUT:
            this._streams[id]?._onTimeout();
            break;
          case EV_TIMER:
            this._timers.onAlarm(id, rec[o + 2]!);
            break;
          case EV_ACCEPT_ERROR:
            this._listeners[id]?._onAcceptError(rec[o + 2]!);
            break;
          case EV_FORWARD_END: {
            const c = o + 4;
            i++; // the byte counts (two uint64s as uint32 halves) fill the next record
            const f = this._forwards[id];
            if (f === undefined) break;
            this._forwards[id] = undefined;
            f._onForwardEnd(rec[o + 3]!, (rec[c]! >>> 0) + (rec[c + 1]! >>> 0) * 2 ** 32,
              (rec[c + 2]! >>> 0) + (rec[c + 3]! >>> 0) * 2 ** 32);
            break;
          }
        }
      } catch (err) {
        if (process.env.IOMUX_DEBUG) console.error("dispatch error", err);
        process.nextTick(rethrow, err);
      }
    }
    this.inBatch = false;
    // Views handed out in this batch or an earlier one stay intact: reads go
    // above them, and once too little room is left, into a new slab.
    if (data && bulk !== this.slabLarge) {
      this.newSlab(bulk);
      return 0;
    }
    if (kept === 0) return 0;
    if (this.slab.byteLength - kept >= READ_ROOM) {
      this.slabKept = kept;
      return kept;
    }
    this.newSlab(this.slabLarge);
    return 0;
  }
}

/** This thread's loop. */
export const loop = new Loop();
