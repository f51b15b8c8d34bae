// socket.ts -- a connected socket with node:net's face. It is a light
// EventEmitter (no stream machinery per connection); toDuplex() gives a real
// stream.Duplex when one is needed (pipeline, tls.connect({ socket })).
import { isIP } from 'node:net';
import { endianness } from 'node:os';
import { Duplex } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { AF_INET, AF_INET6, AF_UNIX, binding, OP_NAMES } from './binding';
import { FlowingEmitter } from './flow';
import { lookupAll, normalizeConnectArgs, validateTimeout, type ConnectOptions, type ResolvedAddress } from './address';
import {
  errnoException, invalidArgType, streamDestroyed, writeAfterEnd,
} from './errors';
import { loop, type StreamHandle } from './loop';

export interface SocketOptions {
  /** Keep the writable side open after the peer's FIN (default false). */
  allowHalfOpen?: boolean;
  /** Bytes queued before write() returns false (default 16 KiB). */
  writableHighWaterMark?: number;
}

export interface AddressInfo {
  address: string;
  family: string;
  port: number;
}

/** Whoever wants to hear that an accepted socket closed. */
export interface SocketOwner {
  _onSocketClosed(): void;
}

const LITTLE_ENDIAN = endianness() === 'LE';
const EMPTY = Buffer.alloc(0);
const EMSGSIZE = 90;
// Longest string handed to the core to encode: its scratch buffer is 64 KiB,
// and UTF-8 takes at most 3 bytes per UTF-16 unit.
const STRING_WRITE_MAX = 21_000;
const FAMILY_NAMES: Record<number, string> = { [AF_INET]: 'IPv4', [AF_INET6]: 'IPv6', [AF_UNIX]: 'unix' };

function ipv4Text(w: number): string {
  if (!LITTLE_ENDIAN) w = ((w & 0xff) << 24) | ((w & 0xff00) << 8) | ((w >>> 8) & 0xff00) | (w >>> 24);
  return `${w & 0xff}.${(w >>> 8) & 0xff}.${(w >>> 16) & 0xff}.${w >>> 24}`;
}

/** '0:0:0:0:0:0:0:1' → '::1', as the kernel (and node) would print it. */
function canonicalIPv6(text: string): string {
  if (text.includes('%')) return text; // zone ids: kept as given
  try {
    return new URL(`http://[${text}]/`).hostname.slice(1, -1);
  } catch {
    return text;
  }
}

function emitClose(s: Socket, err: Error | undefined): void {
  // A peer's reset is reported to 'error' listeners only: bytes (or their
  // absence) from a peer never crash the process. socket.errored keeps it.
  if (err !== undefined && (s.listenerCount('error') > 0 || !s._peerError)) s.emit('error', err);
  s.emit('close', err !== undefined);
}

function emitWriteError(s: Socket, err: Error, cb: ((err?: Error | null) => void) | undefined): void {
  if (cb) cb(err);
  s.emit('error', err);
}

function emitFinish(s: Socket): void {
  s._finish();
}

// Booleans of a socket, packed in one word: an idle connection's size matters
// (15,000 of them should cost little), and these accessors cost nothing per
// instance.
const F_CONNECTING = 1 << 0;
const F_DESTROYED = 1 << 1;
const F_WRITABLE_ENDED = 1 << 2;
const F_WRITABLE_FINISHED = 1 << 3;
const F_READABLE_ENDED = 1 << 4;
const F_ALLOW_HALF_OPEN = 1 << 5;
const F_READ_STOPPED = 1 << 6;
const F_EOF = 1 << 7;
const F_NEED_DRAIN = 1 << 8;
const F_FINISH_ON_DRAIN = 1 << 9;
const F_REFED = 1 << 10;
const F_COUNTED = 1 << 11;
const F_PEER_ERROR = 1 << 12;
const F_FLOW_SET = 1 << 13; // flowing is true or false (not null)
const F_FLOWING = 1 << 14;
const F_NO_DELAY_OFF = 1 << 15;
const F_FORWARDING = 1 << 16; // owned by the core's forwarder (forward.ts)

/** @internal The forwarding a socket was handed to (forward.ts). */
export interface ForwardLink {
  /** DATA the core had read before the forwarder took over: to the other side. */
  _relay(from: Socket, chunk: Buffer): void;
}

function forwardingError(op: string): Error {
  const err = new Error(`Cannot ${op}: the socket is being forwarded by iomux.forward()`) as Error & { code: string };
  err.code = 'ERR_IOMUX_FORWARDING';
  return err;
}

/** What most connections never need, made on first use. */
class SocketExtra {
  errored: Error | null = null;
  localInfo: AddressInfo | undefined = undefined;
  decoder: StringDecoder | null = null;
  preConnect: [Uint8Array, ((err?: Error | null) => void) | undefined][] | null = null;
  preConnectBytes = 0;
  corked = 0;
  timeoutMs = 0;
  keepAlive: [boolean, number] | null = null;
  duplex: Duplex | null = null;
  /** Further addresses of the hostname being connected to, tried in turn. */
  fallbacks: ResolvedAddress[] | null = null;
  forward: ForwardLink | null = null;
}

export class Socket extends FlowingEmitter implements StreamHandle {
  /** @internal native id, -1 when there is none (before connect, after close) */
  _id = -1;
  /** @internal */ _owner: SocketOwner | null = null;
  /** @internal F_* bits */ _flags = F_REFED;
  writableHighWaterMark: number;
  bytesRead = 0;
  bytesWritten = 0;

  private peerFamily = 0;
  private peerPort = 0;
  // The peer's address bytes as the accept record carried them (int32 words).
  private pw0 = 0;
  private pw1 = 0;
  private pw2 = 0;
  private pw3 = 0;
  private peerText: string | undefined = undefined;
  private pendingChunks: Buffer[] | null = null;
  private writeCbs: ((err?: Error | null) => void)[] | null = null;
  private queuedEstimate = 0;
  private ext: SocketExtra | null = null;

  private flag(bit: number): boolean {
    return (this._flags & bit) !== 0;
  }
  private setFlag(bit: number, on: boolean): void {
    this._flags = on ? this._flags | bit : this._flags & ~bit;
  }
  private x(): SocketExtra {
    return (this.ext ??= new SocketExtra());
  }

  get connecting(): boolean { return this.flag(F_CONNECTING); }
  private set connecting(v: boolean) { this.setFlag(F_CONNECTING, v); }
  get destroyed(): boolean { return this.flag(F_DESTROYED); }
  private set destroyed(v: boolean) { this.setFlag(F_DESTROYED, v); }
  /** True once end() was called. */
  get writableEnded(): boolean { return this.flag(F_WRITABLE_ENDED); }
  private set writableEnded(v: boolean) { this.setFlag(F_WRITABLE_ENDED, v); }
  /** True once every byte and the FIN went to the kernel. */
  get writableFinished(): boolean { return this.flag(F_WRITABLE_FINISHED); }
  private set writableFinished(v: boolean) { this.setFlag(F_WRITABLE_FINISHED, v); }
  /** True once 'end' was emitted. */
  get readableEnded(): boolean { return this.flag(F_READABLE_ENDED); }
  private set readableEnded(v: boolean) { this.setFlag(F_READABLE_ENDED, v); }
  get allowHalfOpen(): boolean { return this.flag(F_ALLOW_HALF_OPEN); }
  private set allowHalfOpen(v: boolean) { this.setFlag(F_ALLOW_HALF_OPEN, v); }
  /** The error the socket was destroyed with, if any. */
  get errored(): Error | null { return this.ext?.errored ?? null; }
  private set errored(v: Error | null) { this.x().errored = v; }
  /** @internal the error came from the peer (reset, refused write) */
  get _peerError(): boolean { return this.flag(F_PEER_ERROR); }
  set _peerError(v: boolean) { this.setFlag(F_PEER_ERROR, v); }

  private get readStopped(): boolean { return this.flag(F_READ_STOPPED); }
  private set readStopped(v: boolean) { this.setFlag(F_READ_STOPPED, v); }
  private get eofSeen(): boolean { return this.flag(F_EOF); }
  private set eofSeen(v: boolean) { this.setFlag(F_EOF, v); }
  private get needDrain(): boolean { return this.flag(F_NEED_DRAIN); }
  private set needDrain(v: boolean) { this.setFlag(F_NEED_DRAIN, v); }
  private get finishOnDrain(): boolean { return this.flag(F_FINISH_ON_DRAIN); }
  private set finishOnDrain(v: boolean) { this.setFlag(F_FINISH_ON_DRAIN, v); }
  private get refed(): boolean { return this.flag(F_REFED); }
  private set refed(v: boolean) { this.setFlag(F_REFED, v); }
  private get counted(): boolean { return this.flag(F_COUNTED); }
  private set counted(v: boolean) { this.setFlag(F_COUNTED, v); }
  private get noDelay(): boolean { return !this.flag(F_NO_DELAY_OFF); }
  private set noDelay(v: boolean) { this.setFlag(F_NO_DELAY_OFF, !v); }
  /** null until a 'data' listener, pause() or resume() decides, as in node's streams. */
  private get flowing(): boolean | null {
    return this.flag(F_FLOW_SET) ? this.flag(F_FLOWING) : null;
  }
  private set flowing(v: boolean | null) {
    this.setFlag(F_FLOW_SET, v !== null);
    this.setFlag(F_FLOWING, v === true);
  }

  private get localInfo(): AddressInfo | undefined { return this.ext?.localInfo; }
  private set localInfo(v: AddressInfo | undefined) { this.x().localInfo = v; }
  private get decoder(): StringDecoder | null { return this.ext === null ? null : this.ext.decoder; }
  private set decoder(v: StringDecoder | null) { this.x().decoder = v; }
  private get preConnect(): [Uint8Array, ((err?: Error | null) => void) | undefined][] | null {
    return this.ext === null ? null : this.ext.preConnect;
  }
  private set preConnect(v: [Uint8Array, ((err?: Error | null) => void) | undefined][] | null) { this.x().preConnect = v; }
  private get preConnectBytes(): number { return this.ext === null ? 0 : this.ext.preConnectBytes; }
  private set preConnectBytes(v: number) { this.x().preConnectBytes = v; }
  private get corked(): number { return this.ext === null ? 0 : this.ext.corked; }
  private set corked(v: number) { this.x().corked = v; }
  private get timeoutMs(): number { return this.ext === null ? 0 : this.ext.timeoutMs; }
  private set timeoutMs(v: number) { this.x().timeoutMs = v; }
  private get keepAlive(): [boolean, number] | null { return this.ext === null ? null : this.ext.keepAlive; }
  private set keepAlive(v: [boolean, number] | null) { this.x().keepAlive = v; }
  private get duplex(): Duplex | null { return this.ext === null ? null : this.ext.duplex; }
  private set duplex(v: Duplex | null) { this.x().duplex = v; }
  private get fallbacks(): ResolvedAddress[] | null { return this.ext === null ? null : this.ext.fallbacks; }
  private set fallbacks(v: ResolvedAddress[] | null) { this.x().fallbacks = v; }

  constructor(options?: SocketOptions) {
    super();
    if (options !== undefined && (options === null || typeof options !== 'object')) {
      throw invalidArgType('options', 'of type object', options);
    }
    this.allowHalfOpen = options?.allowHalfOpen === true;
    const hwm = options?.writableHighWaterMark ?? 16384;
    if (!(Number.isInteger(hwm) && hwm >= 0)) throw invalidArgType('options.writableHighWaterMark', 'a non-negative integer', hwm);
    this.writableHighWaterMark = hwm;
  }

  /** @internal An accepted connection. */
  static _accepted(id: number, familyPort: number, w0: number, w1: number, w2: number, w3: number,
    options: SocketOptions, owner: SocketOwner): Socket {
    const s = new Socket(options);
    s.peerFamily = familyPort >>> 16;
    s.peerPort = familyPort & 0xffff;
    s.pw0 = w0;
    s.pw1 = w1;
    s.pw2 = w2;
    s.pw3 = w3;
    if (s.peerFamily === AF_UNIX) s.peerText = '';
    s._owner = owner;
    s.attach(id);
    return s;
  }

  private attach(id: number): void {
    this._id = id;
    loop._streams[id] = this;
    this.counted = true;
    if (this.refed) loop._ref();
  }

  // ---- addresses ---------------------------------------------------------

  /** The peer's address, kept from accept or connect time: never a syscall, still there after close. */
  get remoteAddress(): string | undefined {
    if (this.peerText === undefined) {
      if (this.peerFamily === AF_INET) this.peerText = ipv4Text(this.pw0);
      else if (this.peerFamily === AF_INET6) this.peerText = binding.ntop6(this.pw0, this.pw1, this.pw2, this.pw3);
    }
    return this.peerText;
  }

  get remotePort(): number | undefined {
    return this.peerFamily === AF_INET || this.peerFamily === AF_INET6 ? this.peerPort : undefined;
  }

  get remoteFamily(): string | undefined {
    return FAMILY_NAMES[this.peerFamily];
  }

  /** The local address (one getsockname, then cached). */
  address(): AddressInfo | Record<string, never> {
    if (this.localInfo === undefined && this._id >= 0 && !this.connecting) {
      const r = binding.localAddress(this._id);
      if (typeof r !== 'number') {
        this.localInfo = { address: r[0], family: FAMILY_NAMES[r[2]] ?? 'unix', port: r[1] };
      }
    }
    return this.localInfo ?? {};
  }

  get localAddress(): string | undefined {
    const a = this.address();
    return 'address' in a ? a.address : undefined;
  }

  get localPort(): number | undefined {
    const a = this.address();
    return 'port' in a && a.family !== 'unix' ? a.port : undefined;
  }

  get localFamily(): string | undefined {
    const a = this.address();
    return 'family' in a ? a.family : undefined;
  }

  /** 'opening' while connecting, then 'open', 'readOnly', 'writeOnly' or 'closed'. */
  get readyState(): string {
    if (this.connecting) return 'opening';
    if (this.destroyed || this._id < 0) return 'closed';
    const readable = !this.eofSeen, writable = !this.writableEnded;
    if (readable && writable) return 'open';
    return readable ? 'readOnly' : writable ? 'writeOnly' : 'closed';
  }

  /** Bytes accepted by write() and not yet handed to the kernel. */
  get writableLength(): number {
    const q = this._id >= 0 ? binding.queued(this._id) : 0;
    return (q < 0 ? 0 : q) + this.preConnectBytes;
  }

  get writableNeedDrain(): boolean {
    return this.needDrain;
  }

  get pending(): boolean {
    return this._id < 0 || this.connecting;
  }

  // ---- connecting -------------------------------------------------------------

  connect(options: ConnectOptions, cb?: () => void): this;
  connect(port: number | string, host?: string, cb?: () => void): this;
  connect(port: number | string, cb?: () => void): this;
  connect(path: string, cb?: () => void): this;
  connect(...args: unknown[]): this {
    const [opts, cb] = normalizeConnectArgs(args);
    if (this._id >= 0 || this.connecting) throw new Error('Socket is already connected or connecting');
    if (this.destroyed) throw streamDestroyed('connect');
    if (cb) this.once('connect', cb);
    if (opts.timeout !== undefined) this.setTimeout(opts.timeout);
    if (opts.noDelay === false) this.noDelay = false;
    if (opts.keepAlive) this.keepAlive = [true, opts.keepAliveInitialDelay ?? 0];
    this.connecting = true;
    if (opts.path !== undefined) {
      this.peerFamily = AF_UNIX;
      this.peerText = opts.path;
      this.open(binding.connectUnix(opts.path), opts.path, undefined);
      return this;
    }
    const host = opts.host ?? 'localhost';
    const port = opts.port!;
    this.peerPort = port;
    const fam = isIP(host);
    if (fam !== 0) {
      this.startIp(host, fam, port);
    } else {
      lookupAll(host, opts.family ?? 0, (err, addresses) => {
        if (this.destroyed) return;
        if (err) return void this.destroy(err);
        const [first, ...rest] = addresses;
        this.fallbacks = rest.length ? rest : null;
        this.startIp(first!.address, first!.family, port);
      });
    }
    return this;
  }

  /** After a failed attempt, the next resolved address, if any. */
  private tryNextAddress(): boolean {
    const next = this.fallbacks?.shift();
    if (next === undefined) return false;
    if (this.fallbacks!.length === 0) this.fallbacks = null;
    this.detach();
    this.startIp(next.address, next.family, this.peerPort);
    return true;
  }

  /** Closes the native socket, if any, and stops counting as a live handle. */
  private detach(): void {
    const id = this._id;
    if (id >= 0) {
      this._id = -1;
      loop._streams[id] = undefined;
      binding.close(id);
    }
    if (this.counted) {
      this.counted = false;
      if (this.refed) loop._unref();
    }
  }

  private startIp(host: string, family: number, port: number): void {
    this.peerFamily = family === 6 ? AF_INET6 : AF_INET;
    this.peerText = family === 6 ? canonicalIPv6(host) : host;
    this.open(binding.connect(host, port, family), host, port);
  }

  private open(id: number, address: string, port: number | undefined): void {
    if (id < 0 && this.fallbacks !== null) {
      const next = this.fallbacks.shift()!;
      if (this.fallbacks.length === 0) this.fallbacks = null;
      this.startIp(next.address, next.family, port!);
      return;
    }
    if (id < 0) {
      this.connecting = false;
      const err = errnoException(-id, 'connect', address, port);
      process.nextTick(() => this.destroy(err));
      return;
    }
    this.attach(id);
    if (this.timeoutMs) binding.setTimeout(id, this.timeoutMs);
    if (this.corked) binding.cork(id, true);
    if (this.readStopped) binding.setReading(id, false);
    // With other addresses to try, this attempt may be abandoned: writes wait
    // in JavaScript until it succeeds.
    if (this.fallbacks === null) this.flushPreConnect();
  }

  private flushPreConnect(): void {
    const pre = this.preConnect;
    if (pre !== null) {
      this.preConnect = null;
      this.preConnectBytes = 0;
      for (const [chunk, cb] of pre) this.writeNative(chunk, chunk.length, false, cb);
    }
    if (this.writableEnded) this.shutdownNative();
  }

  /** @internal */
  _onConnect(errno: number): void {
    if (errno !== 0 && this.fallbacks !== null && this.tryNextAddress()) return;
    if (errno !== 0) {
      this.destroy(errnoException(errno, 'connect', this.peerText, this.remotePort));
      return;
    }
    this.connecting = false;
    if (this.fallbacks !== null) {
      this.fallbacks = null;
      this.flushPreConnect();
    }
    if (!this.noDelay && this.peerFamily !== AF_UNIX) binding.setNoDelay(this._id, false);
    if (this.keepAlive) binding.setKeepAlive(this._id, true, Math.floor(this.keepAlive[1] / 1000));
    this.emit('connect');
    this.emit('ready');
  }

  // ---- reading -----------------------------------------------------------------

  /** @internal */
  _onData(chunk: Buffer): void {
    this.bytesRead += chunk.length;
    if ((this._flags & F_FORWARDING) !== 0) return this.ext!.forward!._relay(this, chunk);
    if (this.flowing === true) {
      this.emitData(chunk);
      return;
    }
    // Nobody consumes yet: keep the bytes and stop reading until someone does.
    (this.pendingChunks ??= []).push(chunk);
    this.stopReading();
  }

  private emitData(chunk: Buffer): void {
    if (this.decoder === null) {
      // One listener (the usual case): call it as emit() would, without
      // emit()'s megamorphic keyed lookup of the event name.
      const h = (this as unknown as { _events: Record<string, unknown> })._events.data;
      if (typeof h === 'function') h.call(this, chunk);
      else this.emit('data', chunk);
    } else {
      const text = this.decoder.write(chunk);
      if (text.length) this.emit('data', text);
    }
  }

  /** @internal */
  _onEof(): void {
    if (this.flag(F_FORWARDING)) return; // the forwarder relays the FIN
    this.eofSeen = true;
    if (this.pendingChunks === null) this.emitEnd();
  }

  private emitEnd(): void {
    if (this.readableEnded) return;
    this.readableEnded = true;
    if (this.decoder !== null) {
      const rest = this.decoder.end();
      if (rest.length) this.emit('data', rest);
    }
    this.emit('end');
    if (this.destroyed) return;
    if (!this.allowHalfOpen) this.end();
    if (this.writableFinished) this.destroy();
  }

  private stopReading(): void {
    if (this.readStopped) return;
    this.readStopped = true;
    if (this._id >= 0) binding.setReading(this._id, false);
  }

  pause(): this {
    if (this.flag(F_FORWARDING)) return this; // the forwarder reads on its own terms
    this.flowing = false;
    this.stopReading();
    return this;
  }

  resume(): this {
    if (this.flag(F_FORWARDING)) return this;
    this.flowing = true;
    const pending = this.pendingChunks;
    if (pending !== null) {
      this.pendingChunks = null;
      for (let i = 0; i < pending.length; i++) {
        this.emitData(pending[i]!);
        if (this.flowing !== true || this.destroyed) {
          // Paused (or destroyed) by a handler: keep the rest for later.
          const rest = pending.slice(i + 1);
          if (rest.length) this.pendingChunks = rest;
          if (this.pendingChunks === null && this.eofSeen) this.emitEnd();
          return this;
        }
      }
      if (this.eofSeen) this.emitEnd();
    }
    if (this.readStopped && !this.destroyed) {
      this.readStopped = false;
      if (this._id >= 0) binding.setReading(this._id, true);
    }
    return this;
  }

  isPaused(): boolean {
    return this.flowing === false;
  }

  setEncoding(encoding: BufferEncoding = 'utf8'): this {
    this.decoder = new StringDecoder(encoding);
    return this;
  }

  // ---- writing -----------------------------------------------------------------

  /**
   * Writes data. Returns false once writableHighWaterMark bytes are queued;
   * 'drain' follows when the queue empties. Nothing is ever dropped.
   */
  write(data: string | Uint8Array, cb?: (err?: Error | null) => void): boolean;
  write(data: string | Uint8Array, encoding?: BufferEncoding, cb?: (err?: Error | null) => void): boolean;
  write(data: string | Uint8Array, encoding?: BufferEncoding | ((err?: Error | null) => void),
    cb?: (err?: Error | null) => void): boolean {
    if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    let chunk: Uint8Array | string;
    let size: number;
    let latin1 = false;
    if (typeof data === 'string') {
      // Text the core can encode itself (UTF-8 or Latin-1, short enough for
      // its scratch buffer) goes to it as a string: no Buffer is made.
      const enc = encoding ?? 'utf8';
      latin1 = enc === 'latin1' || enc === 'binary' || enc === 'ascii';
      if (data.length <= STRING_WRITE_MAX && (latin1 || enc === 'utf8' || enc === 'utf-8')) {
        chunk = data;
        size = latin1 ? data.length : Buffer.byteLength(data, 'utf8');
      } else {
        chunk = Buffer.from(data, enc);
        size = chunk.length;
      }
    } else if (data instanceof Uint8Array) {
      chunk = data;
      size = data.length;
    }
    else throw invalidArgType('chunk', 'of type string or an instance of Buffer or Uint8Array', data);
    if (cb !== undefined && typeof cb !== 'function') throw invalidArgType('cb', 'of type function', cb);
    if (this.flag(F_FORWARDING)) throw forwardingError('write');
    if (this.writableEnded) {
      process.nextTick(emitWriteError, this, writeAfterEnd(), cb);
      return false;
    }
    if (this.destroyed) {
      if (cb) process.nextTick(cb, streamDestroyed('write'));
      return false;
    }
    if (this._id < 0 || this.fallbacks !== null) { // a lookup or a first attempt is under way
      if (typeof chunk === 'string') chunk = Buffer.from(chunk, latin1 ? 'latin1' : 'utf8');
      (this.preConnect ??= []).push([chunk, cb]);
      this.preConnectBytes += size!;
      this.bytesWritten += size!;
      if (this.preConnectBytes >= this.writableHighWaterMark) this.needDrain = true;
      return !this.needDrain;
    }
    this.bytesWritten += size!;
    return this.writeNative(chunk, size!, latin1, cb);
  }

  private writeNative(chunk: Uint8Array | string, size: number, latin1: boolean,
    cb: ((err?: Error | null) => void) | undefined): boolean {
    const notify = cb !== undefined || this.queuedEstimate + size >= this.writableHighWaterMark;
    let q = typeof chunk === 'string'
      ? binding.writeString(this._id, chunk, latin1, notify)
      : binding.write(this._id, chunk, notify);
    if (q === -EMSGSIZE) q = binding.write(this._id, Buffer.from(chunk as string, latin1 ? 'latin1' : 'utf8'), notify);
    if (q < 0) {
      const err = errnoException(-q, 'write');
      if (cb) process.nextTick(cb, err);
      this._peerError = true;
      this.destroy(err);
      return false;
    }
    this.queuedEstimate = q;
    if (cb !== undefined) {
      if (q === 0) process.nextTick(cb, null);
      else (this.writeCbs ??= []).push(cb);
    }
    if (q >= this.writableHighWaterMark) {
      this.needDrain = true;
      return false;
    }
    return true;
  }

  /** @internal The native queue emptied. */
  _onDrain(): void {
    if (this.flag(F_FORWARDING)) return;
    this.queuedEstimate = 0;
    const cbs = this.writeCbs;
    if (cbs !== null) {
      this.writeCbs = null;
      for (const cb of cbs) cb(null);
    }
    if (this.needDrain) {
      this.needDrain = false;
      this.emit('drain');
    }
    if (this.finishOnDrain) {
      this.finishOnDrain = false;
      this._finish();
    }
  }

  /** Sends FIN once everything written so far is flushed. */
  end(cb?: () => void): this;
  end(data: string | Uint8Array, cb?: () => void): this;
  end(data: string | Uint8Array, encoding?: BufferEncoding, cb?: () => void): this;
  end(data?: string | Uint8Array | (() => void), encoding?: BufferEncoding | (() => void), cb?: () => void): this {
    if (typeof data === 'function') {
      cb = data;
      data = undefined;
    } else if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    if (this.flag(F_FORWARDING)) throw forwardingError('end');
    if (data !== undefined && data !== null) this.write(data, encoding as BufferEncoding | undefined);
    if (cb) this.once('finish', cb);
    if (this.writableEnded) return this;
    this.writableEnded = true;
    if (!this.destroyed && this._id >= 0) this.shutdownNative();
    return this;
  }

  private shutdownNative(): void {
    const id = this._id;
    if (binding.queued(id) > 0) {
      binding.write(id, EMPTY, true); // ask for a DRAIN when the queue empties
      this.finishOnDrain = true;
    } else if (!this.connecting) {
      process.nextTick(emitFinish, this);
    } else {
      this.finishOnDrain = true;
      binding.write(id, EMPTY, true);
    }
    const rc = binding.shutdown(id);
    if (rc < 0) this.destroy(errnoException(-rc, 'shutdown'));
  }

  /** @internal */
  _finish(): void {
    if (this.writableFinished || this.destroyed) return;
    this.writableFinished = true;
    this.emit('finish');
    if (this.readableEnded && !this.destroyed) this.destroy();
  }

  cork(): void {
    if (this.corked++ === 0 && this._id >= 0) binding.cork(this._id, true);
  }

  uncork(): void {
    if (this.corked > 0 && --this.corked === 0 && this._id >= 0) binding.cork(this._id, false);
  }

  // ---- closing -----------------------------------------------------------------

  /** Closes the socket now; queued bytes are discarded. A second call does nothing. */
  destroy(err?: Error): this {
    if (this.destroyed) return this;
    this.destroyed = true;
    this.connecting = false;
    if (err !== undefined) this.errored = err;
    this.detach();
    const cbs = this.writeCbs;
    if (cbs !== null) {
      this.writeCbs = null;
      const e = err ?? streamDestroyed('write');
      for (const cb of cbs) process.nextTick(cb, e);
    }
    if (this._owner !== null) this._owner._onSocketClosed();
    process.nextTick(emitClose, this, err);
    return this;
  }

  /** Ends the writable side, then destroys once everything was flushed (as node's). */
  destroySoon(): void {
    if (!this.writableEnded) this.end();
    if (this.writableFinished) this.destroy();
    else this.once('finish', () => this.destroy());
  }

  /** @internal */
  _onError(errno: number, op: number): void {
    if (this.flag(F_FORWARDING)) return; // the forwarding's end reports it
    this._peerError = true;
    this.destroy(errnoException(errno, OP_NAMES[op] ?? 'io'));
  }

  // ---- forwarding (forward.ts) ------------------------------------------------

  /** True while the core forwards this socket's bytes (iomux.forward()). */
  get forwarding(): boolean {
    return this.flag(F_FORWARDING);
  }

  /**
   * @internal Hands the socket to the core's forwarder: returns the chunks
   * read but not consumed yet (they belong to the other side now). Writes
   * already made are the core's to deliver: their callbacks run now.
   */
  _handOver(link: ForwardLink): Buffer[] {
    this.setFlag(F_FORWARDING, true);
    this.x().forward = link;
    const pending = this.pendingChunks ?? [];
    this.pendingChunks = null;
    const cbs = this.writeCbs;
    if (cbs !== null) {
      this.writeCbs = null;
      for (const cb of cbs) process.nextTick(cb, null);
    }
    return pending;
  }

  /** @internal The core ended the forwarding and closed the socket. */
  _forwardEnded(err: Error | undefined): void {
    this.setFlag(F_FORWARDING, false);
    this.x().forward = null;
    if (this.destroyed) return; // destroy() ended it
    if (this._id >= 0) {
      loop._streams[this._id] = undefined;
      this._id = -1; // closed by the core: nothing to close here
    }
    if (err !== undefined) this._peerError = true;
    this.destroy(err);
  }

  // ---- options -----------------------------------------------------------------

  /** Emits 'timeout' after ms without reads or writes; 0 disables. Refreshing costs no syscall. */
  setTimeout(ms: number, cb?: () => void): this {
    validateTimeout(ms, 'msecs');
    if (cb !== undefined) {
      if (typeof cb !== 'function') throw invalidArgType('callback', 'of type function', cb);
      if (ms === 0) this.removeListener('timeout', cb);
      else this.once('timeout', cb);
    }
    this.timeoutMs = Math.ceil(ms);
    if (this._id >= 0) binding.setTimeout(this._id, this.timeoutMs);
    return this;
  }

  /** @internal */
  _onTimeout(): void {
    if (this.flag(F_FORWARDING)) return; // the forwarding has its own
    this.emit('timeout');
  }

  get timeout(): number | undefined {
    return this.timeoutMs || undefined;
  }

  /** TCP_NODELAY; on by default. */
  setNoDelay(noDelay = true): this {
    this.noDelay = noDelay;
    if (this._id >= 0 && !this.connecting && this.peerFamily !== AF_UNIX) binding.setNoDelay(this._id, noDelay);
    return this;
  }

  setKeepAlive(enable = false, initialDelay = 0): this {
    this.keepAlive = [enable, initialDelay];
    if (this._id >= 0 && !this.connecting && this.peerFamily !== AF_UNIX) {
      binding.setKeepAlive(this._id, enable, Math.floor(initialDelay / 1000));
    }
    return this;
  }

  ref(): this {
    if (!this.refed) {
      this.refed = true;
      if (this.counted) loop._ref();
    }
    return this;
  }

  unref(): this {
    if (this.refed) {
      this.refed = false;
      if (this.counted) loop._unref();
    }
    return this;
  }

  // ---- streams -----------------------------------------------------------------

  /**
   * A stream.Duplex over this socket, for pipeline(), async iteration and
   * tls.connect({ socket }). Made once, on first use.
   */
  toDuplex(): Duplex {
    if (this.duplex !== null) return this.duplex;
    const sock = this;
    const d = new Duplex({
      allowHalfOpen: true,
      read() {
        sock.resume();
      },
      write(chunk: Buffer, _enc, cb) {
        sock.write(chunk, (err) => cb(err ?? null));
      },
      final(cb) {
        if (sock.writableFinished) return cb();
        sock.once('finish', () => cb());
        sock.end();
      },
      destroy(err, cb) {
        sock.destroy(err ?? undefined);
        cb(err);
      },
    });
    this.duplex = d;
    this.on('data', (chunk: Buffer) => {
      if (!d.push(chunk)) sock.pause();
    });
    this.on('end', () => d.push(null));
    this.on('error', (err: Error) => d.destroy(err));
    this.on('close', () => {
      if (!this.readableEnded && !d.destroyed) d.destroy();
    });
    this.on('timeout', () => d.emit('timeout'));
    return d;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Buffer> {
    return this.toDuplex()[Symbol.asyncIterator]();
  }

  pipe<T extends NodeJS.WritableStream>(destination: T, options?: { end?: boolean }): T {
    return this.toDuplex().pipe(destination, options);
  }
}

/** Opens a connection: connect(port[, host][, cb]), connect(path[, cb]) or connect(options[, cb]). */
export function connect(options: ConnectOptions & SocketOptions, cb?: () => void): Socket;
export function connect(port: number | string, host?: string, cb?: () => void): Socket;
export function connect(port: number | string, cb?: () => void): Socket;
export function connect(...args: unknown[]): Socket {
  const first = args[0];
  const opts = first !== null && typeof first === 'object' ? (first as SocketOptions) : undefined;
  const s = new Socket(opts);
  return (s.connect as (...a: unknown[]) => Socket)(...args);
}

export const createConnection = connect;
