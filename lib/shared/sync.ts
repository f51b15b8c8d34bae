// sync.ts -- cross-process primitives over the sync region
// (deps/iomux/src/shm_sync.c): semaphores with Netplex's semantics (protected
// ones reverted when a process dies), mutexes that pass on with ownerDied,
// versioned shared variables, atomic counters and the config object.
//
// The uncontended path of every operation is a few 32-bit Atomics on the
// mapped region: no syscall, no message. Only waiting, wake-ups and crash
// recovery go to the master (SyncMaster), over the supervisor's control
// channel. See docs/sync.md.
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deserialize, serialize } from 'node:v8';
import { binding } from '../binding';

// ---- the region -----------------------------------------------------------

/** Words of one slot (16 int32 = 64 bytes). */
const W_KIND = 0; // 0 free, else Kind
const W_FLAGS = 1; // F_*
const W_VALUE = 2; // semaphore value, mutex holder id, variable version, counter value
const W_WAITERS = 3; // waiters (or watchers) queued at the master: a releaser then notifies it
const W_GEN = 4; // bumped when the slot is destroyed
const W_WLOCK = 5; // shared variable: the writer's id while it writes
const W_LEN0 = 6; // shared variable: bytes in buffer 0 (W_LEN0 + 1: buffer 1)
const W_DIED = 8; // mutex: 1 once a holder died with nobody waiting
const W_HEAD = 9; // id of the process whose wait is first in the master's queue (0: none)
const SLOT_WORDS = 16;

const F_PROTECTED = 1;
const F_CREATED = 2;

export const enum Kind { Semaphore = 1, Mutex = 2, Var = 3, Counter = 4 }
const KIND_NAMES: Record<string, Kind> = { sem: Kind.Semaphore, mutex: Kind.Mutex, var: Kind.Var, counter: Kind.Counter };

/** Id of the master in the region's holder words; a container's is its ledger row + 1. */
export const MASTER_ID = 1;

export interface SyncRegionOptions {
  /** Named primitives at once (default 256). */
  slots?: number;
  /** Containers alive at once, plus one for the master (default 256). */
  containers?: number;
  /** Largest serialized value of a shared variable, bytes (default 4096). */
  valueSize?: number;
  /**
   * Direct wake-ups between workers through their doorbells (default
   * true); false: every wake-up goes through the master.
   */
  doorbells?: boolean;
}

/** A mapping of the sync region. */
export class SyncRegion {
  readonly i32: Int32Array;
  readonly u8: Uint8Array;
  readonly nslots: number;
  readonly rows: number;
  readonly valueCap: number;
  private readonly slotBase: number;
  private readonly ledgerBase: number;
  private readonly valueBase: number;

  constructor(readonly fd: number, readonly ab: ArrayBuffer) {
    this.i32 = new Int32Array(ab);
    this.u8 = new Uint8Array(ab);
    const h = this.i32;
    this.nslots = h[3]!;
    this.rows = h[4]!;
    this.valueCap = h[5]!;
    this.slotBase = h[6]! >> 2;
    this.ledgerBase = h[7]! >> 2;
    this.valueBase = h[8]!;
  }

  static create(opts: SyncRegionOptions = {}): SyncRegion {
    const slots = opts.slots ?? 256;
    const rows = opts.containers ?? 256;
    const valueSize = opts.valueSize ?? 4096;
    for (const [k, v] of [['slots', slots], ['containers', rows], ['valueSize', valueSize]] as const) {
      if (!Number.isInteger(v) || v <= 0) throw new RangeError(`sync.${k} must be a positive integer, got ${v}`);
    }
    const [fd, ab] = binding.syncRegion.create(slots, rows, (valueSize + 7) & ~7);
    return new SyncRegion(fd, ab);
  }

  static attach(fd: number): SyncRegion {
    if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`fd must be a non-negative integer, got ${String(fd)}`);
    return new SyncRegion(fd, binding.syncRegion.attach(fd));
  }

  /** Index of a slot's first word in i32. */
  word(slot: number): number {
    return this.slotBase + slot * SLOT_WORDS;
  }

  ledger(row: number, slot: number): number {
    return this.ledgerBase + row * this.nslots + slot;
  }

  valueOffset(slot: number, buf: number): number {
    return this.valueBase + (slot * 2 + buf) * this.valueCap;
  }
}

// ---- errors ---------------------------------------------------------------

export interface SyncError extends Error {
  code: string;
}

function syncError(code: string, message: string, Ctor: ErrorConstructor = Error): SyncError {
  const e = new Ctor(message) as SyncError;
  e.code = code;
  return e;
}

function checkName(name: unknown): string {
  if (typeof name !== 'string' || name === '' || name.length > 200) {
    throw syncError('ERR_INVALID_ARG_VALUE', 'name must be a non-empty string of at most 200 characters', TypeError);
  }
  return name;
}

// ---- life locks -----------------------------------------------------------

/** The watches of this thread's master (lifeWatch's one callback per env). */
const lifeWatches = new Map<number, (result: number) => void>();
let lifeSeq = 0;

function onLife(token: number, result: number): void {
  const fn = lifeWatches.get(token);
  lifeWatches.delete(token);
  fn?.(result);
}

/**
 * A container's main thread takes its row's life lock for good (its death
 * releases it, which the master watches): true if it holds it now.
 */
export function holdLife(region: SyncRegion, id: number): boolean {
  return binding.syncRegion.lifeHold(region.ab, id - 1) === 0;
}

// ---- doorbells -------------------------------------------------------------

const EAGAIN = 11;

/**
 * The doorbells of one region: process id's bell is the unix datagram socket
 * dir/id (dir is the master's, mode 0700; each bell 0600). ring(id, slot)
 * wakes that process's loop once; false when nobody listens there.
 */
export function bellRinger(dir: string): (id: number, slot: number) => boolean {
  const paths: string[] = [];
  return (id, slot) => {
    const p = (paths[id] ??= join(dir, String(id)));
    const rc = binding.syncRegion.bellRing(p, slot);
    // a full queue: the process has rings to read and will retry its waits
    return rc === 0 || rc === -EAGAIN;
  };
}

/**
 * Binds process id's doorbell in dir; each wake retries waits.rang(). The
 * close function, or null when the bell cannot be bound (the process then
 * waits for the master's answers only).
 */
export function openBell(dir: string, id: number, waits: LocalWaits): (() => void) | null {
  const r = binding.syncRegion.bellOpen(join(dir, String(id)), () => waits.rang());
  return typeof r === 'function' ? r : null;
}

// ---- who talks to the master ----------------------------------------------

/** The process's side: its id and ledger row, and the way to the master. */
export interface SyncPeer {
  readonly region: SyncRegion;
  readonly id: number;
  /** A request to the master (control channel, or a direct call in the master). */
  call(op: string, args: Record<string, unknown>): Promise<any>;
  /** Tells the master that slot changed while it had waiters (one-way). */
  kick(slot: number): void;
  /**
   * Rings the doorbell of process id (the head of slot's queue): the direct
   * wake-up. False when it cannot (no doorbells, nobody listening there):
   * the caller then kicks the master.
   */
  ring?(id: number, slot: number): boolean;
  /** This process's waits that a ring can complete (a process with a doorbell). */
  readonly waits?: LocalWaits;
}

/**
 * The waits of a process that has a doorbell. Each wait is also queued at
 * the master (with a ticket), which publishes the head of each queue in the
 * slot; a releaser rings the head's doorbell directly, and the woken process
 * retries its waits on the region itself. Whichever completes a wait first
 * wins: a ring's success is reported to the master ('took', one-way) which
 * drops the ticket; a grant from the master for a wait already completed by
 * a ring is given back (undo).
 */
export class LocalWaits {
  private seq = 0;
  private readonly list: LocalWait[] = [];

  constructor(
    private readonly call: (op: string, args: Record<string, unknown>) => Promise<unknown>,
    private readonly took: (slot: number, ticket: number) => void,
  ) {}

  get size(): number {
    return this.list.length;
  }

  add<T>(op: string, args: Record<string, unknown>, slot: number, take: () => T | undefined, undo: (granted: unknown) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.seq = this.seq >= 0x7fffffff ? 1 : this.seq + 1;
      const w: LocalWait = { t: this.seq, slot, done: false, take, undo, resolve: resolve as (v: unknown) => void };
      this.list.push(w);
      this.call(op, { ...args, t: w.t }).then((r) => {
        if (w.done) {
          // completed by a ring: null means the master dropped the ticket
          if (r !== null && r !== undefined) w.undo(r);
          return;
        }
        this.finish(w);
        resolve(r as T);
      }, (e: unknown) => {
        if (w.done) return;
        this.finish(w);
        reject(e);
      });
    });
  }

  private retrying = false;

  /** rang() in a microtask (once however often it is asked). */
  soon(): void {
    if (this.retrying) return;
    this.retrying = true;
    queueMicrotask(() => {
      this.retrying = false;
      this.rang();
    });
  }

  /** A ring came: retry every wait, FIFO per slot, on the region. */
  rang(): void {
    if (this.list.length === 0) return;
    let blocked: Set<number> | null = null;
    for (const w of this.list.slice()) {
      if (w.done || blocked?.has(w.slot)) continue;
      let r: unknown;
      try {
        r = w.take();
      } catch {
        r = undefined; // destroyed: the master's answer settles it
      }
      if (r === undefined) {
        (blocked ??= new Set()).add(w.slot);
        continue;
      }
      this.finish(w);
      this.took(w.slot, w.t);
      w.resolve(r);
    }
  }

  private finish(w: LocalWait): void {
    w.done = true;
    const i = this.list.indexOf(w);
    if (i >= 0) this.list.splice(i, 1);
  }
}

interface LocalWait {
  t: number;
  slot: number;
  done: boolean;
  take(): unknown;
  undo(granted: unknown): void;
  resolve(v: unknown): void;
}

interface SlotInfo {
  slot: number;
  gen: number;
}

abstract class Primitive {
  protected readonly w: number;
  protected readonly a: Int32Array;

  constructor(protected readonly peer: SyncPeer, readonly name: string, protected readonly slot: number, protected readonly gen: number) {
    this.a = peer.region.i32;
    this.w = peer.region.word(slot);
  }

  // The generation and the flags change only under the master's create and
  // destroy: a plain read is enough (the atomics that follow order the rest).
  protected live(): void {
    if (this.a[this.w + W_GEN] !== this.gen) {
      throw syncError('ERR_IOMUX_SYNC_DESTROYED', `${this.name} was destroyed`);
    }
  }

  /**
   * After a release (increment, unlock) that others may wait for: rings the
   * process at the head of the queue, or kicks the master (the head is the
   * master or this process, there are no doorbells, or the ring failed). The
   * release's atomic comes first; the master publishes the head before it
   * re-checks the value, so one of the two sees the other.
   */
  protected wake(): void {
    const a = this.a;
    const w = this.w;
    if (Atomics.load(a, w + W_WAITERS) <= 0) return;
    const head = Atomics.load(a, w + W_HEAD);
    const peer = this.peer;
    if (head === peer.id && peer.waits) {
      // this process heads the queue: retry its own waits (if it has none on
      // this slot, the head is its wait that a ring completed: the master
      // serves the rest when it hears of that)
      peer.waits.soon();
      return;
    }
    if (head > MASTER_ID && head !== peer.id && peer.ring?.(head, this.slot)) return;
    peer.kick(this.slot);
  }
}

// ---- semaphores -----------------------------------------------------------

export interface SemaphoreCreateOptions {
  /** Reverted when a process dies: its increments minus its successful decrements (default true, as in Netplex). */
  protected?: boolean;
}

/**
 * A named semaphore (Netplex semantics). increment/decrement/get are atomics
 * on the region; decrement({ wait: true }) waits at the master, FIFO, one
 * waiter served per increment.
 */
export class Semaphore extends Primitive {
  /** Creates it with initial (>= 0); false if it exists (was created before). */
  create(initial = 0, opts: SemaphoreCreateOptions = {}): Promise<boolean> {
    if (!Number.isInteger(initial) || initial < 0 || initial > 0x7fffffff) {
      throw syncError('ERR_OUT_OF_RANGE', `initial must be an integer from 0 to 2147483647, got ${initial}`, RangeError);
    }
    return this.peer.call('sync.create', { slot: this.slot, gen: this.gen, initial, protected: opts.protected !== false });
  }

  /** Adds 1; returns the new value. */
  increment(): number {
    this.live();
    const a = this.a;
    const w = this.w;
    const v = Atomics.add(a, w + W_VALUE, 1) + 1;
    if (a[w + W_FLAGS]! & F_PROTECTED) {
      Atomics.add(a, this.peer.region.ledger(this.peer.id - 1, this.slot), 1);
    }
    this.wake();
    return v;
  }

  /** The non-waiting decrement: the new value, or undefined at 0. */
  private take(): number | undefined {
    this.live();
    const a = this.a;
    const w = this.w;
    for (;;) {
      const v = Atomics.load(a, w + W_VALUE);
      if (v <= 0) return undefined;
      if (Atomics.compareExchange(a, w + W_VALUE, v, v - 1) === v) {
        if (a[w + W_FLAGS]! & F_PROTECTED) {
          Atomics.add(a, this.peer.region.ledger(this.peer.id - 1, this.slot), -1);
        }
        return v - 1;
      }
    }
  }

  /**
   * Subtracts 1 and returns the new value. At 0: -1 without waiting, or
   * with { wait: true } a promise of the new value once a decrement
   * succeeded (-1 if the semaphore is destroyed meanwhile).
   */
  decrement(opts: { wait: true }): Promise<number>;
  decrement(opts?: { wait?: false }): number;
  decrement(opts?: { wait?: boolean }): number | Promise<number>;
  decrement(opts?: { wait?: boolean }): number | Promise<number> {
    const v = this.take();
    if (v !== undefined) return opts?.wait ? Promise.resolve(v) : v;
    if (!opts?.wait) return -1;
    const args = { slot: this.slot, gen: this.gen };
    const waits = this.peer.waits;
    if (!waits) return this.peer.call('sync.wait', args);
    return waits.add('sync.wait', args, this.slot, () => this.take(), (granted) => {
      // a decrement the master made for a wait a ring had completed: give it back
      if (typeof granted === 'number' && granted >= 0) {
        try { this.increment(); } catch { /* destroyed meanwhile */ }
      }
    });
  }

  get(): number {
    this.live();
    return Atomics.load(this.a, this.w + W_VALUE);
  }

  /** Removes it; waiters get -1. */
  destroy(): Promise<void> {
    return this.peer.call('sync.destroy', { slot: this.slot, gen: this.gen });
  }
}

// ---- mutexes --------------------------------------------------------------

export interface LockResult {
  /** The previous holder died holding the lock: check the state it protected. */
  ownerDied: boolean;
}

const NOT_DIED: LockResult = Object.freeze({ ownerDied: false });
const DIED: LockResult = Object.freeze({ ownerDied: true });

/** A named mutex held by one process at a time (not re-entrant). */
export class Mutex extends Primitive {
  /** The lock now, or false if someone holds it. */
  tryLock(): LockResult | false {
    this.live();
    if (Atomics.compareExchange(this.a, this.w + W_VALUE, 0, this.peer.id) !== 0) return false;
    // W_DIED is set only while the mutex is free: a plain read, then the exchange if set
    if (this.a[this.w + W_DIED] === 0) return NOT_DIED;
    return Atomics.exchange(this.a, this.w + W_DIED, 0) === 1 ? DIED : NOT_DIED;
  }

  /** Resolves once this process holds the lock (waiters are served FIFO). */
  lock(): Promise<LockResult> {
    const r = this.tryLock();
    if (r) return Promise.resolve(r);
    const args = { slot: this.slot, gen: this.gen };
    const waits = this.peer.waits;
    if (!waits) return this.peer.call('sync.lock', args);
    return waits.add<LockResult>('sync.lock', args, this.slot, () => this.tryLock() || undefined, (granted) => {
      // the master passed the lock to a wait a ring had completed: pass it on
      if (!granted || typeof granted !== 'object' || Atomics.load(this.a, this.w + W_VALUE) !== this.peer.id) return;
      if ((granted as LockResult).ownerDied) Atomics.store(this.a, this.w + W_DIED, 1);
      if (Atomics.compareExchange(this.a, this.w + W_VALUE, this.peer.id, 0) === this.peer.id) this.wake();
    });
  }

  /** Releases it; throws ERR_IOMUX_SYNC_NOT_OWNER if this process does not hold it. */
  unlock(): void {
    this.live();
    const a = this.a;
    const w = this.w;
    if (Atomics.compareExchange(a, w + W_VALUE, this.peer.id, 0) !== this.peer.id) {
      throw syncError('ERR_IOMUX_SYNC_NOT_OWNER', `unlock of mutex ${this.name}, which this process does not hold`);
    }
    this.wake();
  }

  /** Processes waiting for it at the master (lock() calls not yet served). */
  get waiters(): number {
    return Atomics.load(this.a, this.w + W_WAITERS);
  }

  /** @internal The id of the process whose lock() heads the master's queue (0: none). */
  get head(): number {
    return Atomics.load(this.a, this.w + W_HEAD);
  }

  /** @internal This process's id in the region. */
  get self(): number {
    return this.peer.id;
  }

  /** True if some process holds it. */
  get locked(): boolean {
    return Atomics.load(this.a, this.w + W_VALUE) !== 0;
  }
}

// ---- shared variables -----------------------------------------------------

export interface SharedVarCreateOptions {
  /** Removed when the creating service's last worker finishes. */
  owner?: boolean;
}

const SPIN_LIMIT_MS = 1000;

/**
 * A named, versioned value (anything v8.serialize takes), kept in a double
 * buffer: set() writes the buffer readers are not using and then publishes
 * the new version, so a writer that dies mid-set leaves the previous value
 * intact. get() returns the same object while the version is unchanged.
 * Events: 'change' (value, version), once someone listens.
 */
export class SharedVar extends Primitive {
  private readonly events = new EventEmitter();
  private cachedVersion = -1;
  private cached: unknown = undefined;
  private watching = false;

  /** Creates it with value; false if it exists. */
  create(value: unknown, opts: SharedVarCreateOptions = {}): Promise<boolean> {
    const bytes = this.encode(value);
    return this.peer.call('sync.create', { slot: this.slot, gen: this.gen, value: bytes, owner: opts.owner === true });
  }

  /** The version of the current value (0 before the first set). */
  get version(): number {
    this.live();
    return Atomics.load(this.a, this.w + W_VALUE);
  }

  /** The current value (undefined before the first set). */
  get(): unknown {
    this.live();
    const a = this.a;
    const w = this.w;
    let v = Atomics.load(a, w + W_VALUE);
    if (v === this.cachedVersion) return this.cached;
    const r = this.peer.region;
    const deadline = Date.now() + SPIN_LIMIT_MS;
    for (;;) {
      if (v === 0) return undefined;
      const buf = v & 1;
      const len = Atomics.load(a, w + W_LEN0 + buf);
      const off = r.valueOffset(this.slot, buf);
      const copy = len > 0 && len <= r.valueCap ? r.u8.slice(off, off + len) : null;
      const again = Atomics.load(a, w + W_VALUE);
      if (again === v && copy) {
        this.cached = deserialize(copy);
        this.cachedVersion = v;
        return this.cached;
      }
      if (Date.now() > deadline) throw syncError('ERR_IOMUX_SYNC_BUSY', `shared variable ${this.name}: no stable value for ${SPIN_LIMIT_MS} ms`);
      v = again;
    }
  }

  /** Stores value (a new version); returns the version. */
  set(value: unknown): number {
    this.live();
    return this.store(this.encode(value));
  }

  private encode(value: unknown): Buffer {
    const bytes = serialize(value);
    const cap = this.peer.region.valueCap;
    if (bytes.length > cap) {
      throw syncError('ERR_IOMUX_SYNC_VALUE_TOO_LARGE',
        `shared variable ${this.name}: the value serializes to ${bytes.length} bytes, over the limit of ${cap} bytes (sync.valueSize)`, RangeError);
    }
    return bytes;
  }

  /** @internal the write: under the writer lock, into the idle buffer, then publish. */
  store(bytes: Uint8Array): number {
    const a = this.a;
    const w = this.w;
    const id = this.peer.id;
    const deadline = Date.now() + SPIN_LIMIT_MS;
    while (Atomics.compareExchange(a, w + W_WLOCK, 0, id) !== 0) {
      // another writer is copying (microseconds), or died and the master clears it
      if (Date.now() > deadline) throw syncError('ERR_IOMUX_SYNC_BUSY', `shared variable ${this.name}: writer lock busy for ${SPIN_LIMIT_MS} ms`);
    }
    const v = Atomics.load(a, w + W_VALUE) + 1;
    const buf = v & 1;
    const r = this.peer.region;
    r.u8.set(bytes, r.valueOffset(this.slot, buf));
    Atomics.store(a, w + W_LEN0 + buf, bytes.length);
    Atomics.store(a, w + W_VALUE, v);
    Atomics.store(a, w + W_WLOCK, 0);
    const n = Atomics.load(a, w + W_WAITERS);
    if (n === 1) this.wake(); // one watcher: its doorbell
    else if (n > 1) this.peer.kick(this.slot); // a broadcast: the master answers them all
    return v;
  }

  /** Resolves with the first value whose version is above version. */
  async waitFor(version: number): Promise<{ value: unknown; version: number }> {
    for (;;) {
      this.live();
      const now = Atomics.load(this.a, this.w + W_VALUE);
      if (now > version) {
        const value = this.get();
        return { value, version: this.cachedVersion };
      }
      const args = { slot: this.slot, gen: this.gen, version };
      const waits = this.peer.waits;
      if (!waits) await this.peer.call('sync.watch', args);
      else {
        await waits.add('sync.watch', args, this.slot, () => {
          this.live();
          const now = Atomics.load(this.a, this.w + W_VALUE);
          return now > version ? now : undefined;
        }, () => { /* a watch takes nothing */ });
      }
    }
  }

  on(event: 'change', fn: (value: unknown, version: number) => void): this {
    this.events.on(event, fn);
    if (!this.watching) {
      this.watching = true;
      void this.watch(Atomics.load(this.a, this.w + W_VALUE));
    }
    return this;
  }

  off(event: 'change', fn: (value: unknown, version: number) => void): this {
    this.events.off(event, fn);
    return this;
  }

  private async watch(from: number): Promise<void> {
    let seen = from;
    while (this.events.listenerCount('change') > 0) {
      let r: { value: unknown; version: number };
      try {
        r = await this.waitFor(seen);
      } catch {
        break; // destroyed, or the master went away
      }
      seen = r.version;
      this.events.emit('change', r.value, r.version);
    }
    this.watching = false;
  }

  /** Removes it. */
  destroy(): Promise<void> {
    return this.peer.call('sync.destroy', { slot: this.slot, gen: this.gen });
  }
}

// ---- counters and the config object --------------------------------------

/** An atomic counter: next() returns start, start + 1, ... across all processes. */
export class Counter extends Primitive {
  next(): number {
    this.live();
    return Atomics.add(this.a, this.w + W_VALUE, 1);
  }

  get(): number {
    this.live();
    return Atomics.load(this.a, this.w + W_VALUE);
  }

  /** Sets the value the next next() returns. */
  reset(start: number): void {
    this.live();
    Atomics.store(this.a, this.w + W_VALUE, start | 0);
  }
}

/**
 * The shared config object (mio.c's DistributedObjects): put/get of
 * structured values by key, and counters. Each key is a shared variable
 * named 'config:' + key.
 */
export class Config {
  private readonly vars = new Map<string, Promise<SharedVar>>();
  private readonly counters = new Map<string, Promise<Counter>>();

  constructor(private readonly sync: SyncClient) {}

  /** The shared variable behind key (for its version, waitFor and 'change'). */
  var(key: string): Promise<SharedVar> {
    checkName(key);
    let p = this.vars.get(key);
    if (!p) {
      p = this.sync.sharedVar(`config:${key}`);
      this.vars.set(key, p);
    }
    return p;
  }

  async put(key: string, value: unknown): Promise<void> {
    (await this.var(key)).set(value);
  }

  async get(key: string): Promise<unknown> {
    return (await this.var(key)).get();
  }

  /** counter(name).next(): the next number of that counter (start it with reset()). */
  counter(name: string): { next(): Promise<number>; reset(start: number): Promise<void>; open(): Promise<Counter> } {
    checkName(name);
    let p = this.counters.get(name);
    if (!p) {
      p = this.sync.counter(name);
      this.counters.set(name, p);
    }
    const c = p;
    return {
      next: async () => (await c).next(),
      reset: async (start: number) => (await c).reset(start),
      open: () => c,
    };
  }
}

/** The operations any process (container or master) has: handles by name. */
export class SyncClient {
  readonly config: Config;

  constructor(readonly peer: SyncPeer) {
    this.config = new Config(this);
  }

  private async open(kind: string, name: string): Promise<SlotInfo> {
    checkName(name);
    return this.peer.call('sync.open', { kind, name }) as Promise<SlotInfo>;
  }

  async semaphore(name: string): Promise<Semaphore> {
    const s = await this.open('sem', name);
    return new Semaphore(this.peer, name, s.slot, s.gen);
  }

  async mutex(name: string): Promise<Mutex> {
    const s = await this.open('mutex', name);
    return new Mutex(this.peer, name, s.slot, s.gen);
  }

  async sharedVar(name: string): Promise<SharedVar> {
    const s = await this.open('var', name);
    return new SharedVar(this.peer, name, s.slot, s.gen);
  }

  async counter(name: string): Promise<Counter> {
    const s = await this.open('counter', name);
    return new Counter(this.peer, name, s.slot, s.gen);
  }
}

// ---- the master -----------------------------------------------------------

function ticket(t: unknown): number | undefined {
  return typeof t === 'number' && Number.isInteger(t) && t > 0 ? t : undefined;
}

interface Waiter {
  id: number;
  resolve(v: unknown): void;
  version?: number;
  /** The waiter's ticket (a process with a doorbell), for 'took'. */
  t?: number;
}

interface Entry {
  key: string;
  slot: number;
  kind: Kind;
  gen: number;
  ownerService: string | null;
  queue: Waiter[];
}

/**
 * The master's side: the directory of names, the queues of waiters, the
 * wake-ups, and the recovery when a container dies (revert its protected
 * semaphore contributions, pass its mutexes on, release its writer locks).
 */
export class SyncMaster {
  readonly region: SyncRegion;
  readonly client: SyncClient;
  private readonly byKey = new Map<string, Entry>();
  private readonly bySlot: (Entry | undefined)[];
  private readonly freeSlots: number[] = [];
  private readonly freeRows: number[] = [];
  private bells: string | null = null;
  private ringer: ((id: number, slot: number) => boolean) | null = null;
  /** Wake-ups that went through the master (kicks) and waits completed after a doorbell ring (took). */
  readonly stats = { kicks: 0, took: 0 };
  /** Rows whose life lock a thread watches; their release waits for it. */
  private readonly watched = new Set<number>();
  /** Tickets a container took after a ring before the master had queued them, by id. */
  private readonly tookEarly = new Map<number, Set<number>>();
  private readonly freeLater = new Set<number>();

  private readonly doorbells: boolean;

  constructor(opts: SyncRegionOptions = {}) {
    this.region = SyncRegion.create(opts);
    this.doorbells = opts.doorbells !== false;
    this.bySlot = new Array(this.region.nslots);
    for (let s = this.region.nslots - 1; s >= 0; s--) this.freeSlots.push(s);
    for (let r = this.region.rows - 1; r >= 1; r--) this.freeRows.push(r);
    const peer: SyncPeer = {
      region: this.region,
      id: MASTER_ID,
      call: (op, args) => Promise.resolve().then(() => this.request(op, args, MASTER_ID, 'master')),
      kick: (slot) => queueMicrotask(() => this.kick(slot)),
      ring: (id, slot) => this.ringer !== null && this.ringer(id, slot),
    };
    this.client = new SyncClient(peer);
  }

  get fd(): number {
    return this.region.fd;
  }

  /**
   * The directory of the workers' doorbells (created on first use: mode
   * 0700, in the system's temporary directory), or null if it cannot be made.
   */
  bellDir(): string | null {
    if (!this.doorbells) return null;
    if (this.bells === null) {
      try {
        this.bells = mkdtempSync(join(tmpdir(), 'iomux-sync-'));
        this.ringer = bellRinger(this.bells);
        process.once('exit', this.onProcessExit);
      } catch {
        return null;
      }
    }
    return this.bells;
  }

  /** Removes the doorbells' directory (the supervisor's stop, or this process's exit). */
  close(): void {
    if (this.bells !== null) {
      try { rmSync(this.bells, { recursive: true, force: true }); } catch { /* gone */ }
      this.bells = null;
      this.ringer = null;
      process.removeListener('exit', this.onProcessExit);
    }
  }

  private readonly onProcessExit = (): void => this.close();

  /** A ledger row (and id = row + 1) for a new container; null when all are taken. */
  allocId(): number | null {
    const row = this.freeRows.pop();
    if (row === undefined) return null;
    const r = this.region;
    for (let s = 0; s < r.nslots; s++) Atomics.store(r.i32, r.ledger(row, s), 0);
    binding.syncRegion.lifeInit(r.ab, row);
    return row + 1;
  }

  /**
   * Container id holds its life lock: a thread waits for its main thread's
   * death and then calls died() (on the loop), typically well before the
   * process's exit is seen. False if no watch could be started.
   */
  watchLife(id: number, died: () => void): boolean {
    const row = id - 1;
    if (this.watched.has(row)) return true;
    const token = ++lifeSeq;
    lifeWatches.set(token, (result) => {
      this.watched.delete(row);
      if (this.freeLater.delete(row)) this.freeRows.push(row);
      if (result === 1) died();
    });
    if (binding.syncRegion.lifeWatch(this.region.ab, row, token, onLife) !== 0) {
      lifeWatches.delete(token);
      return false;
    }
    this.watched.add(row);
    return true;
  }

  /** The request ops (Supervisor routes every 'sync.*' request here). */
  request(op: string, args: Record<string, unknown>, id: number, service: string): unknown {
    switch (op) {
      case 'sync.open': return this.open(String(args.kind), checkName(args.name));
      case 'sync.create': return this.create(this.entry(args), args, service);
      case 'sync.destroy': this.destroy(this.entry(args)); return undefined;
      case 'sync.wait': return this.enqueue(this.entry(args, Kind.Semaphore), id, undefined, ticket(args.t));
      case 'sync.lock': return this.enqueue(this.entry(args, Kind.Mutex), id, undefined, ticket(args.t));
      case 'sync.watch': return this.enqueue(this.entry(args, Kind.Var), id, Number(args.version), ticket(args.t));
      case 'sync.rpc': return this.rpc(this.entry(args), String(args.what), id);
      default: throw new Error(`unknown request op ${op}`);
    }
  }

  private open(kindName: string, name: string): SlotInfo {
    const kind = KIND_NAMES[kindName];
    if (!kind) throw syncError('ERR_INVALID_ARG_VALUE', `unknown primitive kind ${kindName}`, TypeError);
    const key = `${kindName}:${name}`;
    let e = this.byKey.get(key);
    if (!e) {
      const slot = this.freeSlots.pop();
      if (slot === undefined) throw syncError('ERR_IOMUX_SYNC_FULL', `the sync region has no free slot (sync.slots is ${this.region.nslots})`);
      const a = this.region.i32;
      const w = this.region.word(slot);
      for (let i = 0; i < SLOT_WORDS; i++) if (i !== W_GEN) Atomics.store(a, w + i, 0);
      // Netplex: a semaphore used before create() exists with 0, protected
      if (kind === Kind.Semaphore) Atomics.store(a, w + W_FLAGS, F_PROTECTED);
      Atomics.store(a, w + W_KIND, kind);
      e = { key, slot, kind, gen: Atomics.load(a, w + W_GEN), ownerService: null, queue: [] };
      this.byKey.set(key, e);
      this.bySlot[slot] = e;
    }
    return { slot: e.slot, gen: e.gen };
  }

  private entry(args: Record<string, unknown>, kind?: Kind): Entry {
    const slot = Number(args.slot);
    const e = Number.isInteger(slot) ? this.bySlot[slot] : undefined;
    if (!e || e.gen !== args.gen) throw syncError('ERR_IOMUX_SYNC_DESTROYED', 'the primitive was destroyed');
    if (kind !== undefined && e.kind !== kind) throw syncError('ERR_INVALID_ARG_VALUE', 'wrong kind of primitive', TypeError);
    return e;
  }

  private create(e: Entry, args: Record<string, unknown>, service: string): boolean {
    const a = this.region.i32;
    const w = this.region.word(e.slot);
    const flags = Atomics.load(a, w + W_FLAGS);
    if (flags & F_CREATED) return false;
    if (e.kind === Kind.Semaphore) {
      Atomics.store(a, w + W_FLAGS, F_CREATED | (args.protected ? F_PROTECTED : 0));
      Atomics.store(a, w + W_VALUE, Number(args.initial) | 0);
      this.kick(e.slot);
    } else if (e.kind === Kind.Var) {
      Atomics.store(a, w + W_FLAGS, F_CREATED);
      if (args.owner === true && service !== 'master') e.ownerService = service;
      const bytes = args.value;
      if (!(bytes instanceof Uint8Array) || bytes.length === 0 || bytes.length > this.region.valueCap) {
        throw syncError('ERR_INVALID_ARG_VALUE', `a shared variable's value must be 1 to ${this.region.valueCap} serialized bytes`, TypeError);
      }
      const v = new SharedVar(this.client.peer, e.key, e.slot, e.gen);
      v.store(bytes);
    } else {
      Atomics.store(a, w + W_FLAGS, F_CREATED);
    }
    return true;
  }

  private destroy(e: Entry): void {
    const a = this.region.i32;
    const w = this.region.word(e.slot);
    Atomics.store(a, w + W_KIND, 0);
    Atomics.add(a, w + W_GEN, 1);
    Atomics.store(a, w + W_WAITERS, 0);
    Atomics.store(a, w + W_HEAD, 0);
    this.byKey.delete(e.key);
    this.bySlot[e.slot] = undefined;
    this.freeSlots.push(e.slot);
    for (const q of e.queue) q.resolve(e.kind === Kind.Semaphore ? -1 : Promise.reject(syncError('ERR_IOMUX_SYNC_DESTROYED', `${e.key} was destroyed`)));
    e.queue = [];
  }

  private enqueue(e: Entry, id: number, version?: number, t?: number): Promise<unknown> {
    const early = t === undefined ? undefined : this.tookEarly.get(id);
    if (early?.delete(t!)) {
      if (early.size === 0) this.tookEarly.delete(id);
      return Promise.resolve(null);
    }
    return new Promise((resolve) => {
      e.queue.push({ id, resolve, version, t });
      this.serve(e);
    });
  }

  /** A releaser saw waiters on slot. */
  kick(slot: number): void {
    this.stats.kicks++;
    const e = this.bySlot[slot];
    if (e) this.serve(e);
  }

  /**
   * Container id completed its wait with ticket t on slot itself, after a
   * ring: drop the ticket (its request is answered null) and serve the rest.
   */
  took(id: number, slot: number, t: number): void {
    this.stats.took++;
    const e = Number.isInteger(slot) ? this.bySlot[slot] : undefined;
    if (!e) return;
    const i = e.queue.findIndex((x) => x.id === id && x.t === t);
    if (i >= 0) e.queue.splice(i, 1)[0]!.resolve(null);
    else {
      // before its request (one that is still on its way to the queue):
      // the request is answered null when it comes
      let early = this.tookEarly.get(id);
      if (!early) this.tookEarly.set(id, (early = new Set()));
      early.add(t);
    }
    this.serve(e);
  }

  /** Stores the queue's head and length in the slot (the releasers read them). */
  private publish(e: Entry): void {
    const a = this.region.i32;
    const w = this.region.word(e.slot);
    Atomics.store(a, w + W_HEAD, e.queue.length > 0 ? e.queue[0]!.id : 0);
    Atomics.store(a, w + W_WAITERS, e.queue.length);
  }

  /**
   * Hands what is free to the waiters, FIFO; then publishes the queue and
   * checks again (a release that read the old head may have rung a process
   * that no longer waits: this pass serves what it released).
   */
  private serve(e: Entry): void {
    const r = this.region;
    const a = r.i32;
    const w = r.word(e.slot);
    for (;;) {
      const q = e.queue;
      let seen = 0;
      if (e.kind === Kind.Semaphore) {
        while (q.length > 0) {
          const v = Atomics.load(a, w + W_VALUE);
          if (v <= 0) break;
          if (Atomics.compareExchange(a, w + W_VALUE, v, v - 1) !== v) continue;
          const waiter = q.shift()!;
          if (Atomics.load(a, w + W_FLAGS) & F_PROTECTED) Atomics.add(a, r.ledger(waiter.id - 1, e.slot), -1);
          waiter.resolve(v - 1);
        }
      } else if (e.kind === Kind.Mutex) {
        if (q.length > 0 && Atomics.compareExchange(a, w + W_VALUE, 0, q[0]!.id) === 0) {
          q.shift()!.resolve({ ownerDied: Atomics.exchange(a, w + W_DIED, 0) === 1 });
        }
      } else if (e.kind === Kind.Var) {
        const v = Atomics.load(a, w + W_VALUE);
        seen = v;
        e.queue = q.filter((x) => {
          if (v > (x.version ?? 0)) {
            x.resolve(v);
            return false;
          }
          return true;
        });
      }
      this.publish(e);
      if (e.queue.length === 0) return;
      const v = Atomics.load(a, w + W_VALUE);
      if (e.kind === Kind.Var ? v === seen : e.kind === Kind.Semaphore ? v <= 0 : v !== 0) return;
    }
  }

  /** The Netplex way, for comparison: the operation done by the master, one round trip each. */
  private rpc(e: Entry, what: string, id: number): unknown {
    const a = this.region.i32;
    const w = this.region.word(e.slot);
    switch (what) {
      case 'inc': { const v = Atomics.add(a, w + W_VALUE, 1) + 1; this.serve(e); return v; }
      case 'dec': {
        const v = Atomics.load(a, w + W_VALUE);
        if (v <= 0 || Atomics.compareExchange(a, w + W_VALUE, v, v - 1) !== v) return -1;
        return v - 1;
      }
      case 'lock': return Atomics.compareExchange(a, w + W_VALUE, 0, id) === 0;
      case 'unlock': { const ok = Atomics.compareExchange(a, w + W_VALUE, id, 0) === id; this.serve(e); return ok; }
      case 'get': return new SharedVar(this.client.peer, e.key, e.slot, e.gen).get();
      default: throw new Error(`unknown rpc ${what}`);
    }
  }

  /**
   * A container ended: drop its waits, revert its protected semaphore
   * contributions (clamped at 0), pass its mutexes on (ownerDied), clear its
   * writer locks, free its row; remove the owner:true variables of a service
   * that has no worker left (serviceLeft).
   */
  containerExited(id: number, service: string, serviceLeft: number): void {
    const r = this.region;
    const a = r.i32;
    const row = id - 1;
    for (const e of this.bySlot) {
      if (!e) continue;
      const w = r.word(e.slot);
      if (e.queue.some((x) => x.id === id)) e.queue = e.queue.filter((x) => x.id !== id);
      const li = r.ledger(row, e.slot);
      if (e.kind === Kind.Semaphore) {
        const c = Atomics.exchange(a, li, 0);
        if (c !== 0) {
          for (;;) {
            const v = Atomics.load(a, w + W_VALUE);
            const nv = Math.max(0, v - c);
            if (Atomics.compareExchange(a, w + W_VALUE, v, nv) === v) break;
          }
        }
      } else if (e.kind === Kind.Mutex) {
        if (Atomics.load(a, w + W_VALUE) === id) {
          const next = e.queue.shift();
          if (next) {
            Atomics.store(a, w + W_VALUE, next.id);
            next.resolve({ ownerDied: true });
          } else {
            Atomics.store(a, w + W_DIED, 1);
            Atomics.store(a, w + W_VALUE, 0);
          }
        }
      } else if (e.kind === Kind.Var) {
        Atomics.compareExchange(a, w + W_WLOCK, id, 0);
      }
      this.serve(e);
    }
    if (serviceLeft === 0) {
      for (const e of [...this.byKey.values()]) if (e.ownerService === service) this.destroy(e);
    }
    if (this.bells !== null) {
      try { unlinkSync(join(this.bells, String(id))); } catch { /* never bound */ }
    }
    this.tookEarly.delete(id);
    // a row is handed out again once the thread watching its life lock is done
    if (this.watched.has(row)) this.freeLater.add(row);
    else this.freeRows.push(row);
  }
}
