// cache.ts -- SharedCache: one hashtable in shared memory for every process
// and worker thread that maps it (deps/iomux/src/shm.c does the work).
//
// Regions: SharedCache.create(name, options) makes a named region
// (shm_open of "/iomux-<uid>-<name>", mode 0600, exclusive: on Linux the
// file /dev/shm/iomux-<uid>-<name>); SharedCache.open(name) attaches to it
// from any process of the same user. SharedCache.create(options) without a
// name makes an anonymous one (memfd_create on Linux), reachable only
// through its fd: hand cache.fd down to children (an extra stdio fd) and
// attach there with SharedCache.fromFd(fd); worker threads attach with
// fromFd(cache.fd) too. A named region lives until unlink(); an anonymous
// one until the last process that maps it or holds its fd ends.
//
// Keys are strings (their UTF-8 bytes) or Uint8Arrays, 1 to 4096 bytes;
// 'a' and Buffer.from('a') are the same key. Values: Buffers and other
// Uint8Arrays come back as Buffers, strings as strings, incr() counters as
// numbers, anything else through v8.serialize (structured clone). Every read
// copies the value out of shared memory: nothing returned ever points into
// it.
import * as v8 from 'node:v8';
import { binding, type SharedCacheHandle } from '../binding';
import { errnoException, invalidArgType, invalidArgValue, outOfRange, type CodedError } from '../errors';

const KEY_MAX = 4096;
const META_OFF = KEY_MAX;
const VALUE_OFF = KEY_MAX + 64;
const IO_VALUE_CAP = 64 * 1024;

// value type tags, as stored (include/iomux_shm.h)
const T_BYTES = 0;
const T_STRING = 1;
const T_STRUCTURED = 2;
const T_INT64 = 3;

// write modes
const M_SET = 0;
const M_ADD = 1;
const M_REPLACE = 2;
const M_CAS = 3;

const ENOENT = 2;
const EEXIST = 17;
const ENOSPC = 28;
const E2BIG = 7;
const EDOM = 33;
const ESTALE = 116;

const MAX_TTL = 2 ** 40; // ms: about 35 years

export interface SharedCacheOptions {
  /** Bytes of the whole region (header, table and heap); default 64 MiB. */
  size?: number;
  /** Capacity in entries; default size / 256. */
  maxEntries?: number;
  /** TTL in ms for writes that give none; 0 (the default): never expire. */
  defaultTtl?: number;
  /** When full, evict entries (CLOCK, approximately least recently used);
   * false: refuse the write with ERR_SHARED_CACHE_FULL. Default true. */
  evict?: boolean;
}

export interface WriteOptions {
  /** ms until the entry expires; 0: never; default: the cache's defaultTtl. */
  ttl?: number;
}

export interface IncrOptions extends WriteOptions {
  /** The value an absent counter starts from (default 0). */
  initial?: number;
}

export interface SetResult {
  /** Live entries were evicted to make room (ngx.shared.DICT's forcible). */
  evicted: boolean;
  /** The entry's new version (for compareAndSet). */
  version: number;
}

export interface StaleValue<T = unknown> {
  value: T;
  /** The entry has expired (getStale only). */
  stale: boolean;
  /** ms left (<= 0 when stale); Infinity when it never expires. */
  ttl: number;
}

export interface VersionedValue<T = unknown> {
  value: T;
  version: number;
}

export interface SharedCacheStats {
  size: number;
  heapSize: number;
  entries: number;
  maxEntries: number;
  bytesUsed: number;
  bytesFree: number;
  hits: number;
  misses: number;
  staleHits: number;
  sets: number;
  deletes: number;
  evictions: number;
  expirations: number;
  /** Writes that found the lock held. */
  contention: number;
  /** Lock-free reads that raced a writer and retried. */
  readRetries: number;
  /** Reads that took the lock (a writer held their stripe too long). */
  lockedReads: number;
  /** Repairs after a process died holding the lock. */
  repairs: number;
}

export type CacheKey = string | Uint8Array;

function coded(err: Error, code: string, extra?: Record<string, unknown>): Error & CodedError {
  Object.assign(err, { code }, extra);
  return err as Error & CodedError;
}

function validateTtl(name: string, ttl: unknown): number {
  if (typeof ttl !== 'number') throw invalidArgType(name, 'of type number', ttl);
  if (!Number.isInteger(ttl) || ttl < 0 || ttl > MAX_TTL) throw outOfRange(name, `an integer >= 0 and <= ${MAX_TTL} (ms)`, ttl);
  return ttl;
}

function validateName(name: unknown): string {
  if (typeof name !== 'string') throw invalidArgType('name', 'of type string', name);
  if (!/^[A-Za-z0-9._-]{1,200}$/.test(name)) {
    throw invalidArgValue('name', name, 'must be 1 to 200 characters of A-Z, a-z, 0-9, ".", "_" and "-"');
  }
  return name;
}

function ttlOption(opts: WriteOptions | undefined): number {
  if (opts === undefined) return -1;
  if (opts === null || typeof opts !== 'object') throw invalidArgType('options', 'of type object', opts);
  return opts.ttl === undefined ? -1 : validateTtl('options.ttl', opts.ttl);
}

type BufferInternals = Buffer & {
  utf8Write?(s: string, offset: number, length?: number): number;
  utf8Slice?(start: number, end: number): string;
};

export class SharedCache {
  #h: SharedCacheHandle | null;
  #fast: { get(klen: number): number; put(klen: number, value: Uint8Array, ttl: number): number };
  #io: Buffer & BufferInternals;
  #meta: Float64Array;
  #heap: number;
  readonly name: string | null;
  readonly size: number;
  readonly maxEntries: number;
  readonly defaultTtl: number;
  readonly evict: boolean;

  private constructor(h: SharedCacheHandle, name: string | null) {
    this.#h = h;
    this.#fast = h.fast();
    const ab = new ArrayBuffer(VALUE_OFF + IO_VALUE_CAP);
    h.setIo(ab);
    this.#io = Buffer.from(ab) as Buffer & BufferInternals;
    this.#meta = new Float64Array(ab, META_OFF, 8);
    const cfg = h.config()!;
    this.size = cfg[0];
    this.maxEntries = cfg[1];
    this.defaultTtl = cfg[2];
    this.evict = cfg[3];
    this.name = name;
    this.#heap = h.stats().heapSize;
  }

  /** Creates a region: named (SharedCache.open(name) attaches from other
   * processes; fails with EEXIST when it exists) or, given only options,
   * anonymous (reachable through cache.fd). */
  static create(name?: string | null | SharedCacheOptions, options?: SharedCacheOptions): SharedCache {
    if (name !== null && typeof name === 'object') {
      options = name;
      name = null;
    }
    const n = name === undefined || name === null ? null : validateName(name);
    const o = options ?? {};
    if (typeof o !== 'object' || o === null) throw invalidArgType('options', 'of type object', o);
    const size = o.size ?? 64 * 1024 * 1024;
    if (typeof size !== 'number') throw invalidArgType('options.size', 'of type number', size);
    if (!Number.isInteger(size) || size < 256 * 1024 || size > 0xffff0000) {
      throw outOfRange('options.size', `an integer >= ${256 * 1024} and <= ${0xffff0000}`, size);
    }
    const maxEntries = o.maxEntries ?? Math.max(16, Math.floor(size / 256));
    if (typeof maxEntries !== 'number') throw invalidArgType('options.maxEntries', 'of type number', maxEntries);
    if (!Number.isInteger(maxEntries) || maxEntries < 1 || maxEntries > 2 ** 30 || maxEntries * 4 > size / 2) {
      throw outOfRange('options.maxEntries', `an integer >= 1 and <= ${Math.min(2 ** 30, Math.floor(size / 8))}`, maxEntries);
    }
    const defaultTtl = o.defaultTtl === undefined ? 0 : validateTtl('options.defaultTtl', o.defaultTtl);
    const evict = o.evict ?? true;
    if (typeof evict !== 'boolean') throw invalidArgType('options.evict', 'of type boolean', evict);
    const fd = binding.SharedCacheHandle.fdNew(n, true);
    if (fd < 0) throw errnoException(-fd, n ? 'shm_open' : 'memfd_create', n ?? undefined);
    try {
      return new SharedCache(new binding.SharedCacheHandle(fd, true, size, maxEntries, defaultTtl, evict), n);
    } catch (err) {
      if (n) binding.SharedCacheHandle.unlink(n);
      throw SharedCache.#wrapAttach(err);
    } finally {
      binding.SharedCacheHandle.closeFd(fd);
    }
  }

  /** Attaches to a named region that SharedCache.create(name) made. */
  static open(name: string): SharedCache {
    const n = validateName(name);
    const fd = binding.SharedCacheHandle.fdNew(n, false);
    if (fd < 0) throw errnoException(-fd, 'shm_open', n);
    try {
      return new SharedCache(new binding.SharedCacheHandle(fd, false, 0, 0, 0, false), n);
    } catch (err) {
      throw SharedCache.#wrapAttach(err);
    } finally {
      binding.SharedCacheHandle.closeFd(fd);
    }
  }

  /** Attaches to the region behind fd (a child's inherited cache.fd, or the
   * parent thread's cache.fd in a worker). The fd stays the caller's. */
  static fromFd(fd: number): SharedCache {
    if (typeof fd !== 'number') throw invalidArgType('fd', 'of type number', fd);
    if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) throw outOfRange('fd', 'an integer >= 0', fd);
    try {
      return new SharedCache(new binding.SharedCacheHandle(fd, false, 0, 0, 0, false), null);
    } catch (err) {
      throw SharedCache.#wrapAttach(err);
    }
  }

  /** Removes a region's name; processes that map it keep it. Returns false
   * when there was no such name. */
  static unlink(name: string): boolean {
    const rc = binding.SharedCacheHandle.unlink(validateName(name));
    if (rc === -ENOENT) return false;
    if (rc < 0) throw errnoException(-rc, 'shm_unlink', name);
    return true;
  }

  static #wrapAttach(err: unknown): unknown {
    const e = err as Error & { code?: string; errno?: number };
    if (e && e.code === 'ERR_IOMUX_SHM') {
      const errno = e.errno ?? 0;
      e.code = errno === -71 || errno === -93 ? 'ERR_SHARED_CACHE_INVALID' : 'ERR_SHARED_CACHE';
    }
    return err;
  }

  /** The region's fd (this mapping's own; -1 after close()). */
  get fd(): number {
    return this.#h ? this.#h.fd() : -1;
  }

  get closed(): boolean {
    return this.#h === null;
  }

  #handle(): SharedCacheHandle {
    if (!this.#h) throw coded(new Error('SharedCache is closed'), 'ERR_SHARED_CACHE_CLOSED');
    return this.#h;
  }

  // The key's bytes into the io buffer; returns their count.
  #key(key: CacheKey): number {
    const io = this.#io;
    if (typeof key === 'string') {
      const n = key.length;
      if (n !== 0 && n <= 64) { // short keys: ASCII by hand, cheaper than a call into utf8Write
        let i = 0;
        for (; i < n; i++) {
          const c = key.charCodeAt(i);
          if (c >= 0x80) break;
          io[i] = c;
        }
        if (i === n) return n;
      }
      if (n === 0) throw invalidArgValue('key', key, 'must not be empty');
      if (key.length > KEY_MAX / 3 && Buffer.byteLength(key) > KEY_MAX) {
        throw invalidArgValue('key', key, `is too long: at most ${KEY_MAX} bytes`);
      }
      return io.utf8Write ? io.utf8Write(key, 0, KEY_MAX) : io.write(key, 0, KEY_MAX, 'utf8');
    }
    if (key instanceof Uint8Array) {
      if (key.length === 0) throw invalidArgValue('key', key, 'must not be empty');
      if (key.length > KEY_MAX) throw invalidArgValue('key', key, `is too long: at most ${KEY_MAX} bytes`);
      io.set(key, 0);
      return key.length;
    }
    throw invalidArgType('key', 'of type string or an instance of Buffer or Uint8Array', key);
  }

  // Reads into the io buffer (or a larger buffer); returns the value's bytes
  // and the start in them, or null on a miss. meta holds type, version, ttl.
  #read(h: SharedCacheHandle, klen: number, stale: boolean): [Buffer, number] | null {
    let rc = stale ? h.get(klen, stale) : this.#fast.get(klen);
    if (rc < 0) return null;
    if (rc === 0) return [this.#io, VALUE_OFF];
    for (;;) { // bigger than the io buffer: into its own
      const out = Buffer.allocUnsafe(this.#meta[0]);
      rc = h.get(klen, stale, out);
      if (rc < 0) return null;
      if (rc === 0) return [out.length === this.#meta[0] ? out : out.subarray(0, this.#meta[0]), 0];
    }
  }

  #decode(buf: BufferInternals, start: number): unknown {
    const meta = this.#meta;
    const len = meta[0];
    switch (meta[1]) {
      case T_STRING:
        return buf.utf8Slice ? buf.utf8Slice(start, start + len) : buf.toString('utf8', start, start + len);
      case T_INT64:
        return Number(buf.readBigInt64LE(start));
      case T_STRUCTURED:
        // v8.deserialize() hands out the Buffers and typed arrays inside a
        // value as views of the bytes it is given: never of the io buffer,
        // which the next read overwrites.
        return v8.deserialize(buf === this.#io ? Buffer.from(buf.subarray(start, start + len)) : buf.subarray(start, start + len));
      default: {
        if (start === 0 && buf !== this.#io) return buf;
        const out = Buffer.allocUnsafe(len);
        out.set(buf.subarray(start, start + len)); // a memcpy, no call into node's C++
        return out;
      }
    }
  }

  /** The value, or undefined when absent or expired. A copy. */
  get(key: CacheKey): unknown {
    const h = this.#handle();
    const klen = this.#key(key);
    const rc = this.#fast.get(klen); // the common case without a tuple
    if (rc === 0) return this.#decode(this.#io, VALUE_OFF);
    if (rc < 0) return undefined;
    const r = this.#read(h, klen, false);
    return r === null ? undefined : this.#decode(r[0], r[1]);
  }

  /** Like get, and also an expired entry that has not been reclaimed yet,
   * flagged stale. */
  getStale(key: CacheKey): StaleValue | undefined {
    const h = this.#handle();
    const r = this.#read(h, this.#key(key), true);
    if (r === null) return undefined;
    const value = this.#decode(r[0], r[1]);
    const ttl = this.#meta[3];
    return { value, stale: this.#meta[4] === 1, ttl: ttl === -1 && this.#meta[4] !== 1 ? Infinity : ttl };
  }

  /** The value and its version, for compareAndSet. */
  getWithVersion(key: CacheKey): VersionedValue | undefined {
    const h = this.#handle();
    const r = this.#read(h, this.#key(key), false);
    if (r === null) return undefined;
    return { value: this.#decode(r[0], r[1]), version: this.#meta[2] };
  }

  has(key: CacheKey): boolean {
    const h = this.#handle();
    const klen = this.#key(key);
    return h.ttl(klen) === 0;
  }

  #write(mode: number, key: CacheKey, value: unknown, ttl: number, version: number): number {
    const h = this.#handle();
    let bytes: Uint8Array | null = null;
    let vlen = 0;
    let type: number;
    if (value instanceof Uint8Array) {
      bytes = value;
      vlen = value.length;
      type = T_BYTES;
    } else if (typeof value === 'string') {
      type = T_STRING;
      if (value.length * 3 > IO_VALUE_CAP) {
        bytes = Buffer.from(value, 'utf8');
        vlen = bytes.length;
      }
    } else if (value === undefined) {
      throw invalidArgType('value', 'a Buffer, a string or a structured-clonable value', value);
    } else {
      type = T_STRUCTURED;
      try {
        bytes = v8.serialize(value);
      } catch (err) {
        throw invalidArgValue('value', value, `cannot be serialized (${(err as Error).message})`);
      }
      vlen = bytes.length;
    }
    if (vlen > this.#heap) throw outOfRange('value', `at most ${this.#heap} bytes (the cache's heap)`, `${vlen} bytes`);
    const klen = this.#key(key); // last: serializing may not touch the io buffer after this
    if (type === T_STRING && bytes === null) {
      const io = this.#io;
      vlen = io.utf8Write ? io.utf8Write(value as string, VALUE_OFF) : io.write(value as string, VALUE_OFF, 'utf8');
    }
    const rc = h.put(mode, klen, bytes, vlen, type, ttl, version);
    if (rc === -ENOSPC) {
      throw coded(new Error(`SharedCache is full: no room for ${vlen} bytes${this.evict ? ' after evicting' : ' (evict: false)'}`),
        'ERR_SHARED_CACHE_FULL');
    }
    if (rc === -E2BIG) throw outOfRange('value', `at most ${this.#heap} bytes with its key (the cache's heap)`, `${vlen} bytes`);
    return rc;
  }

  /** Stores value; returns whether live entries had to be evicted. Throws
   * ERR_SHARED_CACHE_FULL when there is no room (evict: false, or a value
   * that no eviction makes room for). */
  set(key: CacheKey, value: unknown, options?: WriteOptions): SetResult {
    const ttl = ttlOption(options);
    let rc: number;
    if (value instanceof Uint8Array && value.length <= this.#heap) { // the common case, one call
      this.#handle(); // throws when closed
      rc = this.#fast.put(this.#key(key), value, ttl);
      if (rc === -ENOSPC || rc === -E2BIG) rc = this.#write(M_SET, key, value, ttl, 0); // for its error
    } else {
      rc = this.#write(M_SET, key, value, ttl, 0);
    }
    if (rc < 0) throw errnoException(-rc, 'set');
    return { evicted: this.#meta[5] === 1, version: this.#meta[2] };
  }

  /** Stores only when the key is absent (or expired); false otherwise. */
  add(key: CacheKey, value: unknown, options?: WriteOptions): boolean {
    const rc = this.#write(M_ADD, key, value, ttlOption(options), 0);
    if (rc === -EEXIST) return false;
    if (rc < 0) throw errnoException(-rc, 'add');
    return true;
  }

  /** Stores only when the key is present; false otherwise. */
  replace(key: CacheKey, value: unknown, options?: WriteOptions): boolean {
    const rc = this.#write(M_REPLACE, key, value, ttlOption(options), 0);
    if (rc === -ENOENT) return false;
    if (rc < 0) throw errnoException(-rc, 'replace');
    return true;
  }

  /** Stores only when the entry still has `version` (from getWithVersion
   * or set); false when it changed or is gone. */
  compareAndSet(key: CacheKey, value: unknown, version: number, options?: WriteOptions): boolean {
    if (typeof version !== 'number') throw invalidArgType('version', 'of type number', version);
    if (!Number.isSafeInteger(version) || version < 1) throw outOfRange('version', 'a positive safe integer', version);
    const rc = this.#write(M_CAS, key, value, ttlOption(options), version);
    if (rc === -ENOENT || rc === -ESTALE) return false;
    if (rc < 0) throw errnoException(-rc, 'compareAndSet');
    return true;
  }

  /** Removes the key; false when it was absent. */
  delete(key: CacheKey): boolean {
    const h = this.#handle();
    return h.del(this.#key(key)) === 0;
  }

  /** Adds `by` to a counter atomically and returns the new value; an absent
   * counter starts at `initial` (default 0) with `ttl`. A value that is not
   * a counter, or leaving the safe-integer range, throws. */
  incr(key: CacheKey, by = 1, options?: IncrOptions): number {
    const h = this.#handle();
    if (typeof by !== 'number') throw invalidArgType('by', 'of type number', by);
    if (!Number.isSafeInteger(by)) throw outOfRange('by', 'a safe integer', by);
    const ttl = ttlOption(options);
    const initial = options?.initial ?? 0;
    if (typeof initial !== 'number') throw invalidArgType('options.initial', 'of type number', initial);
    if (!Number.isSafeInteger(initial)) throw outOfRange('options.initial', 'a safe integer', initial);
    const rc = h.incr(this.#key(key), by, initial, ttl);
    if (rc === -EDOM) {
      throw coded(new TypeError('SharedCache: incr on a value that is not a counter, or past 64 bits'), 'ERR_SHARED_CACHE_NOT_A_COUNTER');
    }
    if (rc === -ENOSPC) throw coded(new Error('SharedCache is full: no room for a counter'), 'ERR_SHARED_CACHE_FULL');
    if (rc < 0) throw errnoException(-rc, 'incr');
    const v = this.#meta[6];
    if (!Number.isSafeInteger(v)) throw coded(new RangeError(`SharedCache: counter left the safe-integer range (${v})`), 'ERR_OUT_OF_RANGE');
    return v;
  }

  /** ms until the key expires; Infinity when it never does; undefined when
   * absent. */
  ttl(key: CacheKey): number | undefined {
    const h = this.#handle();
    if (h.ttl(this.#key(key)) !== 0) return undefined;
    const ms = this.#meta[3];
    return ms === -1 ? Infinity : ms;
  }

  /** Sets a live key's TTL (0: never expires); false when it is absent. */
  expire(key: CacheKey, ttl: number): boolean {
    const h = this.#handle();
    const t = validateTtl('ttl', ttl);
    return h.expire(this.#key(key), t) === 0;
  }

  /** The live keys, as strings (their UTF-8 decoding) or, with
   * { buffers: true }, as Buffers. Walks the table a few buckets per lock. */
  keys(options?: { buffers?: boolean }): Array<string | Buffer> {
    const out: Array<string | Buffer> = [];
    for (const k of this.#keys(options?.buffers === true)) out.push(k);
    return out;
  }

  *#keys(buffers: boolean): Generator<string | Buffer> {
    const h = this.#handle();
    const io = this.#io;
    // the cursor is a bucket index; a call at the end leaves it where it is
    for (let cursor = 0; ;) {
      const n = h.keys(cursor);
      const next = this.#meta[0];
      const chunk = Buffer.from(io.subarray(VALUE_OFF, VALUE_OFF + n)); // copy: io is reused
      for (let p = 0; p < n;) {
        const kl = chunk.readUInt16LE(p);
        const k = chunk.subarray(p + 2, p + 2 + kl);
        yield buffers ? k : k.toString('utf8');
        p += 2 + kl;
      }
      if (next === cursor) return;
      cursor = next;
    }
  }

  /** [key, value] of every live entry (values read as the walk goes). */
  *entries(): Generator<[string, unknown]> {
    for (const k of this.#keys(false)) {
      const v = this.get(k as string);
      if (v !== undefined) yield [k as string, v];
    }
  }

  [Symbol.iterator](): Generator<[string, unknown]> {
    return this.entries();
  }

  /** Removes every entry. */
  clear(): void {
    this.#handle().clear();
  }

  /** Reclaims expired entries now (up to max, default all) in one pass over
   * the heap; returns how many. Writes reclaim a few on their own. */
  flushExpired(max = 0): number {
    if (typeof max !== 'number' || !Number.isInteger(max) || max < 0) throw outOfRange('max', 'an integer >= 0', max);
    return this.#handle().flushExpired(Math.min(max, 0xffffffff));
  }

  stats(): SharedCacheStats {
    return this.#handle().stats() as unknown as SharedCacheStats;
  }

  /** Walks the whole structure under the lock and checks every invariant;
   * throws ERR_SHARED_CACHE_CORRUPT naming the first one broken. */
  verify(): true {
    const msg = this.#handle().verify();
    if (msg !== null) throw coded(new Error(`SharedCache corrupt: ${msg}`), 'ERR_SHARED_CACHE_CORRUPT');
    return true;
  }

  /** Removes this region's name (see SharedCache.unlink). */
  unlink(): boolean {
    if (!this.name) return false;
    return SharedCache.unlink(this.name);
  }

  /** Unmaps the region and closes this mapping's fd. */
  close(): void {
    if (this.#h) {
      this.#h.close();
      this.#h = null;
    }
  }
}
