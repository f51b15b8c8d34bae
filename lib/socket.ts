// socket.ts -- a connected socket with node:net's face: a stream.Duplex, as
// net.Socket is (instanceof, read(), 'readable', pipe(), async iteration,
// readable/writable, bufferSize ...).
//
// The stream state is made on first use. node's two state objects cost some
// 900 bytes per socket, as much as the rest of an idle iomux connection; most
// connections only ever flow into a 'data' listener and write, so a socket
// starts "light": its prototype is Duplex's, but the reading and writing it
// does on its own (on('data'), pause/resume, write, end, destroy) keep their
// state in one word of flags. The first touch of anything else of Duplex's
// (read(), setEncoding(), pipe(), a 'readable' listener, stream.finished() ...)
// reads _readableState or _writableState: the getters below then make both
// states from the light one, and from then on the socket is an ordinary
// Duplex whose _read/_final/_destroy drive the native socket. Writes always
// take iomux's own path (straight to the core, queued there, one 'drain'),
// in both modes; a 'data' listener on a flowing stream is called directly
// when nothing is buffered, as node's addChunk() would.
import { EventEmitter } from 'node:events';
import { endianness } from 'node:os';
import { inspect } from 'node:util';
import { Duplex, Readable, Writable } from 'node:stream';
import { AF_INET, AF_INET6, AF_UNIX, binding, OP_NAMES } from './binding';
import { leanListeners } from './flow';
import {
  normalizeConnectArgs, resolveForConnect, validateTimeout, type ConnectOptions, type NormalizedConnect,
  type ResolvedAddress,
} from './address';
import {
  closedBeforeConnection, errnoException, invalidArgType, outOfRange, peerEnded, socketClosed, streamDestroyed,
  writeAfterEnd,
} from './errors';
import { loop, type StreamHandle } from './loop';

export interface SocketOptions {
  /** Keep the writable side open after the peer's FIN (default false). */
  allowHalfOpen?: boolean;
  /** Bytes queued before write() returns false (default 16 KiB). */
  writableHighWaterMark?: number;
  /** Bytes read ahead while nobody consumes (default 16 KiB). */
  readableHighWaterMark?: number;
  /** Both high-water marks at once. */
  highWaterMark?: number;
  /** An AbortSignal that destroys the socket (AbortError) when aborted. */
  signal?: AbortSignal;
  /** Accepted for node's sake: an iomux socket is always both. */
  readable?: boolean;
  writable?: boolean;
  /** Reads go into this buffer and to callback, as node's onread option (no 'data' events). */
  onread?: OnRead;
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay?: number;
}

export interface OnRead {
  buffer: Uint8Array | (() => Uint8Array);
  callback: (bytes: number, buffer: Uint8Array) => boolean | void;
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
const DEFAULT_HWM = 16 * 1024;
// Longest string handed to the core to encode: its scratch buffer is 64 KiB,
// and UTF-8 takes at most 3 bytes per UTF-16 unit.
const STRING_WRITE_MAX = 21_000;
/** The most pieces one native writev call takes as arguments. */
const WRITEV_ARGS = 1024;
const FAMILY_NAMES: Record<number, string> = { [AF_INET]: 'IPv4', [AF_INET6]: 'IPv6', [AF_UNIX]: 'unix' };

/* eslint-disable @typescript-eslint/no-explicit-any */
type StreamState = Record<string, any>;
type StateCtor = new (options: object, stream: Duplex, isDuplex: boolean) => StreamState;
const ReadableState = (Readable as unknown as { ReadableState: StateCtor }).ReadableState;
const WritableState = (Writable as unknown as { WritableState: StateCtor }).WritableState;
const DuplexProto = Duplex.prototype as any;

function inherited(name: string): PropertyDescriptor {
  for (let p: object | null = Duplex.prototype; p !== null; p = Object.getPrototypeOf(p)) {
    const d = Object.getOwnPropertyDescriptor(p, name);
    if (d !== undefined) return d;
  }
  throw new Error(`stream.Duplex has no ${name}`);
}

function ipv4Text(w: number): string {
  if (!LITTLE_ENDIAN) w = ((w & 0xff) << 24) | ((w & 0xff00) << 8) | ((w >>> 8) & 0xff00) | (w >>> 24);
  return `${w & 0xff}.${(w >>> 8) & 0xff}.${(w >>> 16) & 0xff}.${w >>> 24}`;
}

/** The peer of an accept record, as text (for a connection that gets no Socket). */
export function peerAddressInfo(familyPort: number, w0: number, w1: number, w2: number, w3: number): AddressInfo {
  const fam = familyPort >>> 16;
  const address = fam === AF_INET ? ipv4Text(w0) : fam === AF_INET6 ? binding.ntop6(w0, w1, w2, w3) : '';
  return { address, family: FAMILY_NAMES[fam] ?? 'unix', port: familyPort & 0xffff };
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

/**
 * The rule that keeps a peer from crashing the process: an error the peer
 * caused (a reset, a refused write, a write after its FIN) goes to 'error'
 * listeners only. So does a write after end() (node throws it as an
 * uncaught 'error'; iomux gives it to the write's callback and to listeners).
 */
function reportsError(s: Socket, err: Error | null | undefined): boolean {
  return err != null && (s.listenerCount('error') > 0 || !s._softError);
}

function emitErrorAndClose(s: Socket, err: Error | undefined): void {
  if (err !== undefined && reportsError(s, err)) s.emit('error', err);
  s.emit('close', err !== undefined);
}

function emitCloseOnly(s: Socket, hadError: boolean): void {
  s.emit('close', hadError);
}

function emitError(s: Socket, err: Error): void {
  if (!s.destroyed) s.destroy(err);
}

/** Every socket's first 'end' listener, as node's: without allowHalfOpen, the FIN is answered with one (after the other 'end' listeners ran). */
function onReadableStreamEnd(this: Socket): void {
  if (!this.allowHalfOpen) process.nextTick(endAfterFin, this);
}

function endAfterFin(s: Socket): void {
  if (!s._ended && !s._destroyed && !s.allowHalfOpen) s.end();
}

function emitIfListened(s: Socket, err: Error): void {
  if (s.listenerCount('error') > 0) s.emit('error', err);
}

function emitFinish(s: Socket): void {
  s._finish();
}

function notSupported(name: string, value: unknown): TypeError & { code: string } {
  return Object.assign(new TypeError(`The property '${name}' is not supported. Received ${inspect(value)}`),
    { code: 'ERR_INVALID_ARG_VALUE' });
}

function abortError(signal: AbortSignal): Error {
  const err = new Error('The operation was aborted', { cause: signal.reason }) as Error & { code: string };
  err.name = 'AbortError';
  err.code = 'ABORT_ERR';
  return err;
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
const F_COUNTED = 1 << 11; // counted in the loop's live handles
const F_SOFT_ERROR = 1 << 12; // the error is reported to listeners only
const F_FLOW_SET = 1 << 13; // flowing is true or false (not null)
const F_FLOWING = 1 << 14;
const F_NO_DELAY_OFF = 1 << 15;
const F_FORWARDING = 1 << 16; // owned by the core's forwarder (forward.ts)
const F_STREAM = 1 << 17; // the Duplex state exists: stream mode
const F_WRITE_PENDING = 1 << 18; // the core holds queued bytes (or a FIN) for us
const F_CLOSE_EMITTED = 1 << 19;
const F_CONNECTED_ONCE = 1 << 20;
const F_RESET = 1 << 21; // close with an RST (resetAndDestroy)
const F_END_LISTENER = 1 << 22; // onReadableStreamEnd is still registered

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

type WriteCb = (err?: Error | null) => void;

/** What most connections never need, made on first use. */
class SocketExtra {
  errored: Error | null = null;
  localInfo: AddressInfo | undefined = undefined;
  preConnect: [Uint8Array, WriteCb | undefined][] | null = null;
  preConnectBytes = 0;
  pendingBytes = 0;
  corked = 0;
  timeoutMs = 0;
  keepAlive: [boolean, number] | null = null;
  /** SO_SNDBUF and SO_RCVBUF asked for before the connection was made (0: not asked). */
  bufferSizes: [number, number] | null = null;
  /** Further addresses of the hostname being connected to, tried in turn. */
  fallbacks: ResolvedAddress[] | null = null;
  forward: ForwardLink | null = null;
  finalCb: ((err?: Error | null) => void) | null = null;
  readableHwm = DEFAULT_HWM;
  onread: OnRead | null = null;
  onreadRest: Buffer | null = null;
  server: unknown = null;
  attemptTimer: NodeJS.Timeout | null = null;
  attempts: string[] | null = null;
  attemptErrors: Error[] | null = null;
  connectOptions: NormalizedConnect | null = null;
}

// A constructor whose instances have Duplex.prototype in their chain (so
// `instanceof Duplex` and every Duplex method work) without Duplex's
// constructor: the stream state is made on first use (see above).
const LightDuplex = function LightDuplex(this: EventEmitter) {
  EventEmitter.call(this);
} as unknown as typeof Duplex;
(LightDuplex as unknown as { prototype: object }).prototype = Duplex.prototype;
Object.setPrototypeOf(LightDuplex, Duplex);

class SocketImpl extends LightDuplex implements StreamHandle {
  /** @internal native id, -1 when there is none (before connect, after close) */
  _id = -1;
  /** @internal */ _owner: SocketOwner | null = null;
  /** @internal F_* bits */ _flags = F_REFED;
  bytesRead = 0;
  /** @internal bytes handed to the core */
  _bytesDispatched = 0;

  private writableHwm: number;
  private peerFamily = 0;
  private peerPort = 0;
  // The peer's address bytes as the accept record carried them (int32 words).
  private pw0 = 0;
  private pw1 = 0;
  private pw2 = 0;
  private pw3 = 0;
  private peerText: string | undefined = undefined;
  private pendingChunks: Buffer[] | null = null;
  private writeCbs: WriteCb[] | null = null;
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
  private get rs(): StreamState {
    return (this as unknown as { _readableState: StreamState })._readableState;
  }
  private get ws(): StreamState {
    return (this as unknown as { _writableState: StreamState })._writableState;
  }

  get connecting(): boolean { return this.flag(F_CONNECTING); }
  /** node's legacy name of connecting */
  get _connecting(): boolean { return this.flag(F_CONNECTING); }
  /** @internal the error is reported to 'error' listeners only (see reportsError) */
  get _softError(): boolean { return this.flag(F_SOFT_ERROR); }
  set _softError(v: boolean) { this.setFlag(F_SOFT_ERROR, v); }
  /** With several addresses to try (autoSelectFamily): each attempted "address:port", as node's. */
  get autoSelectFamilyAttemptedAddresses(): string[] | undefined {
    return this.ext?.attempts ?? undefined;
  }
  /** @internal older name of _softError */
  get _peerError(): boolean { return this.flag(F_SOFT_ERROR); }
  set _peerError(v: boolean) { this.setFlag(F_SOFT_ERROR, v); }

  /** @internal */ get _destroyed(): boolean {
    return this.flag(F_STREAM) ? this.rs.destroyed === true : this.flag(F_DESTROYED);
  }
  /** @internal end() was called */ get _ended(): boolean {
    return this.flag(F_STREAM) ? this.ws.ending === true : this.flag(F_WRITABLE_ENDED);
  }

  private get readStopped(): boolean { return this.flag(F_READ_STOPPED); }
  private get refed(): boolean { return this.flag(F_REFED); }
  private get noDelay(): boolean { return !this.flag(F_NO_DELAY_OFF); }
  private set noDelay(v: boolean) { this.setFlag(F_NO_DELAY_OFF, !v); }
  /** Light mode: null until a 'data' listener, pause() or resume() decides, as in node's streams. */
  private get flowing(): boolean | null {
    return this.flag(F_FLOW_SET) ? this.flag(F_FLOWING) : null;
  }
  private set flowing(v: boolean | null) {
    this.setFlag(F_FLOW_SET, v !== null);
    this.setFlag(F_FLOWING, v === true);
  }

  private get preConnect(): [Uint8Array, WriteCb | undefined][] | null {
    return this.ext === null ? null : this.ext.preConnect;
  }
  private get preConnectBytes(): number { return this.ext === null ? 0 : this.ext.preConnectBytes; }
  private get corked(): number { return this.ext === null ? 0 : this.ext.corked; }
  private get timeoutMs(): number { return this.ext === null ? 0 : this.ext.timeoutMs; }
  private get fallbacks(): ResolvedAddress[] | null { return this.ext === null ? null : this.ext.fallbacks; }

  constructor(options?: SocketOptions) {
    super();
    leanListeners(this);
    if (options !== undefined && (options === null || typeof options !== 'object')) {
      throw invalidArgType('options', 'of type object', options);
    }
    let hwm = DEFAULT_HWM;
    if (options !== undefined) {
      if ((options as { fd?: unknown }).fd !== undefined) {
        throw Object.assign(new TypeError('iomux sockets cannot adopt a file descriptor (options.fd)'),
          { code: 'ERR_IOMUX_UNSUPPORTED' });
      }
      if ((options as { handle?: unknown }).handle !== undefined) {
        throw Object.assign(new TypeError('iomux sockets cannot wrap a handle (options.handle)'),
          { code: 'ERR_IOMUX_UNSUPPORTED' });
      }
      for (const k of ['objectMode', 'readableObjectMode', 'writableObjectMode'] as const) {
        const v = (options as Record<string, unknown>)[k];
        if (v) throw notSupported(`options.${k}`, v);
      }
      if (options.readable === false || options.writable === false) {
        throw Object.assign(new TypeError('iomux sockets are always readable and writable (options.readable/writable false)'),
          { code: 'ERR_IOMUX_UNSUPPORTED' });
      }
      if (options.allowHalfOpen === true) this._flags |= F_ALLOW_HALF_OPEN;
      const whwm = options.writableHighWaterMark ?? options.highWaterMark;
      if (whwm !== undefined) {
        if (!(Number.isInteger(whwm) && whwm >= 0)) throw invalidArgType('options.writableHighWaterMark', 'a non-negative integer', whwm);
        hwm = whwm;
      }
      const rhwm = options.readableHighWaterMark ?? options.highWaterMark;
      if (rhwm !== undefined) {
        if (!(Number.isInteger(rhwm) && rhwm >= 0)) throw invalidArgType('options.readableHighWaterMark', 'a non-negative integer', rhwm);
        this.x().readableHwm = rhwm;
      }
      if (options.onread !== undefined && options.onread !== null) this.setOnread(options.onread);
      if (options.signal !== undefined) this.addSignal(options.signal);
      if (options.noDelay === false) this.noDelay = false;
      if (options.keepAlive) this.x().keepAlive = [true, options.keepAliveInitialDelay ?? 0];
    }
    this.writableHwm = hwm;
    // node's sockets carry one 'end' listener of their own (it answers the
    // FIN without allowHalfOpen). Ours gives its place to the first listener
    // added by the user (see on()): two listeners would cost an array per
    // socket; emitEnd() then does its work.
    EventEmitter.prototype.on.call(this, 'end', onReadableStreamEnd);
    this._flags |= F_END_LISTENER;
  }

  private setOnread(onread: OnRead): void {
    if (typeof onread !== 'object') throw invalidArgType('options.onread', 'of type object', onread);
    const { buffer, callback } = onread;
    if (typeof callback !== 'function') throw invalidArgType('options.onread.callback', 'of type function', callback);
    if (typeof buffer !== 'function' && !(buffer instanceof Uint8Array)) {
      throw invalidArgType('options.onread.buffer', 'an instance of Uint8Array or of type function', buffer);
    }
    this.x().onread = { buffer, callback };
  }

  private addSignal(signal: AbortSignal): void {
    if (signal === null || typeof signal !== 'object' || !('aborted' in signal)) {
      throw invalidArgType('options.signal', 'an instance of AbortSignal', signal);
    }
    if (signal.aborted) {
      process.nextTick(() => this.destroy(abortError(signal)));
      return;
    }
    const onAbort = (): void => { this.destroy(abortError(signal)); };
    signal.addEventListener('abort', onAbort, { once: true });
    this.once('close', () => signal.removeEventListener('abort', onAbort));
  }

  /** @internal An accepted connection. */
  static _accepted(id: number, familyPort: number, w0: number, w1: number, w2: number, w3: number,
    options: SocketOptions, owner: SocketOwner): SocketImpl {
    const s = new SocketImpl(options);
    s.peerFamily = familyPort >>> 16;
    s.peerPort = familyPort & 0xffff;
    s.pw0 = w0;
    s.pw1 = w1;
    s.pw2 = w2;
    s.pw3 = w3;
    if (s.peerFamily === AF_UNIX) s.peerText = '';
    s._owner = owner;
    s._flags |= F_CONNECTED_ONCE;
    s.attach(id);
    return s;
  }

  /** The server that accepted this socket (null for a client socket), as node's socket.server. */
  get server(): unknown {
    return this.ext?.server ?? (this._owner as unknown) ?? null;
  }
  set server(v: unknown) {
    this.x().server = v;
  }

  private attach(id: number): void {
    this._id = id;
    loop._streams[id] = this;
    this.updateHold();
  }

  /**
   * Whether the socket keeps the process alive, as a libuv handle does: while
   * it connects, reads, or has bytes (or a FIN) queued in the core. A paused
   * socket, or one whose reading stopped at the high-water mark or at the
   * peer's FIN, does not.
   */
  private updateHold(): void {
    const f = this._flags;
    const want = this._id >= 0 && (f & F_DESTROYED) === 0 &&
      ((f & (F_CONNECTING | F_WRITE_PENDING)) !== 0 || (f & F_READ_STOPPED) === 0);
    if (want === ((f & F_COUNTED) !== 0)) return;
    this._flags = want ? f | F_COUNTED : f & ~F_COUNTED;
    if ((f & F_REFED) !== 0) {
      if (want) loop._ref();
      else loop._unref();
    }
  }

  // ---- the stream state, made on first use -------------------------------------

  /** @internal Makes the Duplex state from the light one (see the top of this file). */
  _materialize(): void {
    if (this.flag(F_STREAM)) return;
    const self = this as unknown as Duplex & { _readableState: StreamState; _writableState: StreamState };
    const common = { emitClose: false, autoDestroy: true, decodeStrings: false };
    const rs = new ReadableState({ ...common, highWaterMark: this.ext?.readableHwm ?? DEFAULT_HWM }, self, true);
    const ws = new WritableState({ ...common, highWaterMark: this.writableHwm }, self, true);
    Object.defineProperty(this, '_readableState', { value: rs, writable: true, configurable: true, enumerable: false });
    Object.defineProperty(this, '_writableState', { value: ws, writable: true, configurable: true, enumerable: false });
    const f = this._flags;
    this._flags |= F_STREAM;
    rs.sync = false;
    if (f & F_FLOW_SET) rs.flowing = (f & F_FLOWING) !== 0;
    const pending = this.pendingChunks;
    this.pendingChunks = null;
    if (this.ext !== null) this.ext.pendingBytes = 0;
    if (pending !== null) {
      for (const c of pending) {
        rs.buffer.push(c);
        rs.length += c.length;
      }
    }
    if (f & F_READABLE_ENDED) {
      rs.ended = true;
      rs.endEmitted = true;
    } else if (f & F_EOF) {
      rs.ended = true;
    }
    if (f & F_WRITABLE_ENDED) {
      ws.ending = true;
      ws.ended = true;
      ws.finalCalled = true;
      if (f & F_WRITABLE_FINISHED) {
        ws.prefinished = true;
        ws.finished = true;
      } else {
        // The light end() is under way: its finish completes the stream's.
        ws.pendingcb++;
        this.x().finalCb = () => {
          ws.pendingcb--;
          ws.prefinished = true;
          ws.finished = true;
          this.emit('prefinish');
          this.emit('finish');
          if (rs.endEmitted) this.destroy();
        };
      }
    }
    if (f & F_DESTROYED) {
      rs.destroyed = ws.destroyed = true;
      const err = this.ext?.errored;
      if (err) {
        rs.errored = ws.errored = err;
        rs.errorEmitted = ws.errorEmitted = true;
      }
      if (f & F_CLOSE_EMITTED) {
        rs.closed = ws.closed = true;
        rs.closeEmitted = ws.closeEmitted = true;
      }
    }
  }

  // ---- addresses ---------------------------------------------------------

  /** The peer's address, kept from accept or connect time: never a syscall, still there after close. */
  get remoteAddress(): string | undefined {
    if (this.peerText === undefined) {
      if (this.peerFamily === AF_INET) this.peerText = ipv4Text(this.pw0);
      else if (this.peerFamily === AF_INET6) this.peerText = binding.ntop6(this.pw0, this.pw1, this.pw2, this.pw3);
    }
    return this.connecting || !this.flag(F_CONNECTED_ONCE) ? undefined : this.peerText;
  }

  get remotePort(): number | undefined {
    if (this.connecting || !this.flag(F_CONNECTED_ONCE)) return undefined;
    return this.peerFamily === AF_INET || this.peerFamily === AF_INET6 ? this.peerPort : undefined;
  }

  get remoteFamily(): string | undefined {
    if (this.connecting || !this.flag(F_CONNECTED_ONCE)) return undefined;
    return FAMILY_NAMES[this.peerFamily];
  }

  /** The local address (one getsockname, then cached). */
  address(): AddressInfo | Record<string, never> {
    if (this.ext?.localInfo === undefined && this._id >= 0 && !this.connecting) {
      const r = binding.localAddress(this._id);
      if (typeof r !== 'number') {
        this.x().localInfo = { address: r[0], family: FAMILY_NAMES[r[2]] ?? 'unix', port: r[1] };
      }
    }
    return this.ext?.localInfo ?? {};
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
    if (this._destroyed || this._id < 0) return 'closed';
    const readable = !this.flag(F_EOF), writable = !this._ended;
    if (readable && writable) return 'open';
    return readable ? 'readOnly' : writable ? 'writeOnly' : 'closed';
  }

  /** Bytes written and not yet handed to the kernel (node's socket.bufferSize). */
  get bufferSize(): number | undefined {
    return this._id >= 0 || this.connecting ? this._writableLength() : undefined;
  }

  /** @internal */
  _writableLength(): number {
    const q = this._id >= 0 ? binding.queued(this._id) : 0;
    return (q < 0 ? 0 : q) + this.preConnectBytes;
  }

  /** Bytes written so far, including those still queued. */
  get bytesWritten(): number | undefined {
    if (this.ext === undefined) return undefined; // read on the prototype itself
    return this._bytesDispatched + this.preConnectBytes;
  }

  get pending(): boolean {
    return this._id < 0 || this.connecting;
  }

  get timeout(): number | undefined {
    return this.timeoutMs || undefined;
  }
  set timeout(ms: number | undefined) {
    // node keeps whatever is assigned; the timer only changes through setTimeout()
    this.x().timeoutMs = typeof ms === 'number' && ms > 0 ? ms : 0;
  }

  // ---- connecting -------------------------------------------------------------

  connect(options: ConnectOptions, cb?: () => void): this;
  connect(port: number | string, host?: string, cb?: () => void): this;
  connect(port: number | string, cb?: () => void): this;
  connect(path: string, cb?: () => void): this;
  connect(...args: unknown[]): this {
    const [opts, cb] = normalizeConnectArgs(args);
    if (this.flag(F_FORWARDING)) throw forwardingError('connect');
    if ((this._id >= 0 && !this._destroyed) || this.connecting) {
      throw Object.assign(new Error('Socket is already connected or connecting'), { code: 'ERR_SOCKET_CONNECTING' });
    }
    if (this._destroyed) this.reset();
    if (cb) this.once('connect', cb);
    if (opts.timeout !== undefined) this.setTimeout(opts.timeout);
    if (opts.noDelay === false) this.noDelay = false;
    if (opts.keepAlive) this.x().keepAlive = [true, opts.keepAliveInitialDelay ?? 0];
    if (opts.onread) this.setOnread(opts.onread);
    this.x().connectOptions = opts;
    this.setFlag(F_CONNECTING, true);
    this.setFlag(F_CONNECTED_ONCE, false);
    if (opts.path !== undefined) {
      this.peerFamily = AF_UNIX;
      this.peerText = opts.path;
      this.open(binding.connectUnix(opts.path), opts.path, undefined);
      return this;
    }
    const port = opts.port!;
    this.peerPort = port;
    resolveForConnect(this as unknown as Socket, opts, (err, addresses) => {
      if (this._destroyed || !this.connecting) return;
      if (err) {
        this.setFlag(F_CONNECTING, false);
        return void this.destroy(err);
      }
      const [first, ...rest] = addresses;
      this.x().fallbacks = rest.length ? rest : null;
      if (rest.length) this.ext!.attempts = [];
      this.startIp(first!.address, first!.family, port);
    });
    return this;
  }

  /** A destroyed socket connects again (as node's): fresh state, same listeners. */
  private reset(): void {
    this.detach();
    this.pendingChunks = null;
    this.writeCbs = null;
    this.queuedEstimate = 0;
    this.bytesRead = 0;
    this._bytesDispatched = 0;
    const keep = this._flags & (F_ALLOW_HALF_OPEN | F_REFED | F_NO_DELAY_OFF | F_STREAM);
    this._flags = keep;
    const e = this.ext;
    if (e !== null) {
      e.errored = null;
      e.localInfo = undefined;
      e.preConnect = null;
      e.preConnectBytes = 0;
      e.pendingBytes = 0;
      e.fallbacks = null;
      e.finalCb = null;
      e.attempts = null;
      e.attemptErrors = null;
    }
    if (keep & F_STREAM) (this as unknown as { _undestroy(): void })._undestroy();
  }

  /** After a failed attempt, the next resolved address, if any. */
  private tryNextAddress(): boolean {
    const fb = this.fallbacks;
    const next = fb?.shift();
    if (next === undefined) return false;
    if (fb!.length === 0) this.x().fallbacks = null;
    this.detach();
    this.startIp(next.address, next.family, this.peerPort);
    return true;
  }

  /** Closes the native socket, if any, and stops counting as a live handle. */
  private detach(): void {
    const id = this._id;
    this.clearAttemptTimer();
    if (id >= 0) {
      this._id = -1;
      loop._streams[id] = undefined;
      if ((this._flags & F_RESET) !== 0) binding.reset(id);
      else binding.close(id);
    }
    this.updateHold();
  }

  private clearAttemptTimer(): void {
    const t = this.ext?.attemptTimer;
    if (t) {
      clearTimeout(t);
      this.ext!.attemptTimer = null;
    }
  }

  private startIp(host: string, family: number, port: number): void {
    this.peerFamily = family === 6 ? AF_INET6 : AF_INET;
    this.peerText = family === 6 ? canonicalIPv6(host) : host;
    const opts = this.ext?.connectOptions;
    this.ext?.attempts?.push(`${host}:${port}`);
    if (opts?.localAddress !== undefined || opts?.localPort !== undefined) {
      const id = binding.connectFrom(host, port, family, opts.localAddress ?? '', opts.localPort ?? 0);
      this.open(id, host, port);
    } else {
      this.open(binding.connect(host, port, family), host, port);
    }
    // Happy eyeballs: with other addresses left, an attempt that takes longer
    // than autoSelectFamilyAttemptTimeout gives way to the next one.
    if (this._id >= 0 && this.fallbacks !== null && opts?.autoSelectFamily) {
      const t = setTimeout(() => {
        this.ext!.attemptTimer = null;
        if (this.connecting && !this.tryNextAddress()) return;
      }, opts.autoSelectFamilyAttemptTimeout ?? 250);
      t.unref();
      this.x().attemptTimer = t;
    }
  }

  private open(id: number, address: string, port: number | undefined): void {
    if (id < 0 && this.fallbacks !== null) {
      this.tryNextAddress();
      return;
    }
    if (id < 0) {
      const err = errnoException(-id, 'connect', address, port);
      process.nextTick(() => {
        this.setFlag(F_CONNECTING, false);
        this.destroy(err);
      });
      return;
    }
    this.attach(id);
    if (this.timeoutMs) binding.setTimeout(id, this.timeoutMs);
    if (this.corked) binding.cork(id, true);
    // With other addresses to try, this attempt may be abandoned: writes wait
    // in JavaScript until it succeeds.
    if (this.fallbacks === null) this.flushPreConnect();
  }

  private flushPreConnect(): void {
    const pre = this.preConnect;
    if (pre !== null) {
      const e = this.ext!;
      e.preConnect = null;
      e.preConnectBytes = 0;
      for (const [chunk, cb] of pre) {
        this._bytesDispatched += chunk.length;
        this.writeNative(chunk, chunk.length, false, cb);
      }
    }
  }

  /** @internal */
  _onConnect(errno: number): void {
    if (errno !== 0 && this.ext?.attempts != null) {
      (this.ext.attemptErrors ??= []).push(errnoException(errno, 'connect', this.peerText, this.peerPort || undefined));
    }
    if (errno !== 0 && this.fallbacks !== null && this.tryNextAddress()) return;
    this.clearAttemptTimer();
    if (errno !== 0) {
      this.setFlag(F_CONNECTING, false);
      const e = errnoException(errno, 'connect', this.peerText, this.peerPort || undefined);
      const errors = this.ext?.attemptErrors;
      if (this.ext?.attempts != null && errors) {
        // As node's happy eyeballs: every attempt's error, in one AggregateError.
        const agg = new AggregateError(errors, e.message) as AggregateError & { code: string };
        agg.code = e.code;
        this.destroy(agg);
      } else {
        this.destroy(e);
      }
      return;
    }
    if (this.ext !== null) this.ext.connectOptions = null;
    this._flags = (this._flags & ~F_CONNECTING) | F_CONNECTED_ONCE;
    if (this.fallbacks !== null) {
      this.ext!.fallbacks = null;
      this.flushPreConnect();
    }
    if (!this.noDelay && this.peerFamily !== AF_UNIX) binding.setNoDelay(this._id, false);
    const ka = this.ext?.keepAlive;
    if (ka && this.peerFamily !== AF_UNIX) binding.setKeepAlive(this._id, ka[0], Math.floor(ka[1] / 1000));
    const bs = this.ext?.bufferSizes;
    if (bs) {
      this.ext!.bufferSizes = null;
      if (bs[0] > 0) this.applyBufferSize(true, bs[0]);
      if (bs[1] > 0 && !this.destroyed) this.applyBufferSize(false, bs[1]);
      if (this.destroyed) return;
    }
    // A paused socket does not start reading (and so does not keep the process alive).
    if (this.isPaused() && !this.readStopped && !(this.flag(F_STREAM) && this.rs.reading)) this.stopReading();
    this.updateHold();
    if (this._ended) this.shutdownNative();
    this.emit('connect');
    this.emit('ready');
  }

  // ---- reading -----------------------------------------------------------------

  /** @internal */
  _onData(chunk: Buffer): void {
    this.bytesRead += chunk.length;
    const f = this._flags;
    if ((f & (F_FORWARDING | F_STREAM)) === 0 && (f & (F_FLOW_SET | F_FLOWING)) === (F_FLOW_SET | F_FLOWING) &&
      this.ext?.onread == null) {
      this.emitData(chunk);
      return;
    }
    if ((f & F_FORWARDING) !== 0) return this.ext!.forward!._relay(this as unknown as Socket, chunk);
    if (this.ext?.onread != null) return this.onreadData(chunk);
    if ((f & F_STREAM) !== 0) return this.streamData(chunk);
    // Nobody consumes yet: keep the bytes, and read on up to the high-water mark.
    (this.pendingChunks ??= []).push(chunk);
    const e = this.x();
    e.pendingBytes += chunk.length;
    if (e.pendingBytes >= e.readableHwm) this.stopReading();
  }

  private onreadData(chunk: Buffer): void {
    const o = this.ext!.onread!;
    let off = 0;
    while (off < chunk.length && !this._destroyed) {
      if (this.isPaused()) {
        // Paused by the callback: the rest waits for resume().
        this.ext!.onreadRest = Buffer.from(chunk.subarray(off));
        this.stopReading();
        return;
      }
      const buf = typeof o.buffer === 'function' ? o.buffer() : o.buffer;
      const n = Math.min(buf.length, chunk.length - off);
      if (n === 0) break;
      buf.set(chunk.subarray(off, off + n), 0);
      off += n;
      if (o.callback.call(this, n, buf) === false) this.pause();
    }
  }

  private streamData(chunk: Buffer): void {
    const rs = this.rs;
    if (rs.flowing === true && rs.length === 0 && rs.decoder === null && rs.awaitDrainWriters === null &&
      !rs.ended && !rs.destroyed) {
      // What push() would do: nothing is buffered, so the chunk goes to the
      // 'data' listeners at once.
      if (rs.reading) rs.reading = false;
      rs.dataEmitted = true;
      this.emitData(chunk);
      return;
    }
    if (!this.push(chunk)) this.stopReading();
  }

  private emitData(chunk: Buffer): void {
    // One listener (the usual case): call it as emit() would, without
    // emit()'s megamorphic keyed lookup of the event name.
    const h = (this as unknown as { _events: Record<string, unknown> })._events.data;
    if (typeof h === 'function') h.call(this, chunk);
    else this.emit('data', chunk);
  }

  /** @internal */
  _onEof(): void {
    if (this.flag(F_FORWARDING)) return; // the forwarder relays the FIN
    this._flags |= F_EOF | F_READ_STOPPED;
    this.updateHold();
    const onread = this.ext?.onread;
    if (onread != null) {
      // As node's: the read that found the FIN was given a buffer too.
      if (typeof onread.buffer === 'function') onread.buffer();
      if (!this.flag(F_STREAM)) {
        if (this.ext!.onreadRest === null) this.emitEnd(); // else resume() ends it
        return;
      }
    }
    if (this.flag(F_STREAM)) {
      this.push(null);
      this.read(0);
      return;
    }
    if (this.pendingChunks === null) this.emitEnd();
  }

  private emitEnd(): void {
    if (this.flag(F_READABLE_ENDED)) return;
    this._flags |= F_READABLE_ENDED;
    if ((this._flags & F_END_LISTENER) === 0) onReadableStreamEnd.call(this as unknown as Socket);
    this.emit('end');
    if (this._destroyed) return;
    if (this.flag(F_WRITABLE_FINISHED)) this.destroy();
  }

  private stopReading(): void {
    if (this.readStopped) return;
    this._flags |= F_READ_STOPPED;
    if (this._id >= 0) binding.setReading(this._id, false);
    this.updateHold();
  }

  private startReading(): void {
    if (!this.readStopped || this.flag(F_EOF) || this._destroyed) return;
    this._flags &= ~F_READ_STOPPED;
    if (this._id >= 0 && !this.connecting) binding.setReading(this._id, true);
    this.updateHold();
  }

  /** @internal stream mode: the Readable wants more. */
  override _read(): void {
    if (this.readStopped) this.startReading();
  }

  override pause(): this {
    if (this.flag(F_FORWARDING)) return this; // the forwarder reads on its own terms
    if (this.flag(F_STREAM)) {
      if (this.ext?.onread != null) this.stopReading();
      return DuplexProto.pause.call(this);
    }
    if (this.flowing !== false) {
      this.flowing = false;
      this.emit('pause');
    }
    this.stopReading();
    return this;
  }

  override resume(): this {
    if (this.flag(F_FORWARDING)) return this;
    if (this.flag(F_STREAM)) {
      if (this.ext?.onread != null) this.startReading();
      return DuplexProto.resume.call(this);
    }
    const was = this.flowing;
    this.flowing = true;
    if (was !== true) this.emit('resume');
    if (this.ext?.onread != null) {
      const rest = this.ext.onreadRest;
      if (rest !== null) {
        this.ext.onreadRest = null;
        this.onreadData(rest);
        if (this.ext.onreadRest !== null || this.flowing !== true) return this;
      }
      if (this.flag(F_EOF)) {
        this.emitEnd();
        return this;
      }
    }
    const pending = this.pendingChunks;
    if (pending !== null) {
      this.pendingChunks = null;
      this.ext!.pendingBytes = 0;
      for (let i = 0; i < pending.length; i++) {
        this.emitData(pending[i]!);
        if (this.flag(F_STREAM)) {
          // A handler made the stream state: the rest goes to its buffer.
          for (let j = i + 1; j < pending.length; j++) this.unshiftRest(pending[j]!);
          return this;
        }
        if (this.flowing !== true || this._destroyed) {
          // Paused (or destroyed) by a handler: keep the rest for later.
          const rest = pending.slice(i + 1);
          if (rest.length) {
            this.pendingChunks = rest;
            for (const c of rest) this.ext!.pendingBytes += c.length;
          }
          if (this.pendingChunks === null && this.flag(F_EOF)) this.emitEnd();
          return this;
        }
      }
      if (this.flag(F_EOF)) this.emitEnd();
    }
    if (!this._destroyed) this.startReading();
    return this;
  }

  private unshiftRest(c: Buffer): void {
    const rs = this.rs;
    rs.buffer.push(c);
    rs.length += c.length;
  }

  override isPaused(): boolean {
    if (this.flag(F_STREAM)) return DuplexProto.isPaused.call(this);
    return this.flowing === false;
  }

  override on(event: string | symbol, listener: (...args: any[]) => void): this {
    if (this.flag(F_STREAM)) return DuplexProto.on.call(this, event, listener);
    if (event === 'readable') {
      this._materialize();
      return DuplexProto.on.call(this, event, listener);
    }
    if (event === 'end' && (this._flags & F_END_LISTENER) !== 0) {
      // Takes the place of ours, in place: removing it would send the
      // listener table into dictionary mode (see flow.ts).
      const events = (this as unknown as { _events: Record<string, unknown> })._events;
      if (events.end === onReadableStreamEnd && typeof listener === 'function') {
        this._flags &= ~F_END_LISTENER;
        if (this.listenerCount('newListener') > 0) this.emit('newListener', event, listener);
        events.end = listener;
        return this;
      }
    }
    EventEmitter.prototype.on.call(this, event, listener);
    if (event === 'data' && this.flowing !== false) this.resume();
    return this;
  }

  override addListener(event: string | symbol, listener: (...args: any[]) => void): this {
    return this.on(event, listener);
  }

  override removeListener(event: string | symbol, listener: (...args: any[]) => void): this {
    if (this.flag(F_STREAM)) return DuplexProto.removeListener.call(this, event, listener);
    EventEmitter.prototype.removeListener.call(this, event, listener);
    return this;
  }

  override off(event: string | symbol, listener: (...args: any[]) => void): this {
    return this.removeListener(event, listener);
  }

  override removeAllListeners(event?: string | symbol): this {
    if (this.flag(F_STREAM)) return DuplexProto.removeAllListeners.call(this, event);
    EventEmitter.prototype.removeAllListeners.call(this, event);
    return this;
  }

  override setEncoding(encoding?: BufferEncoding): this {
    this._materialize();
    return DuplexProto.setEncoding.call(this, encoding);
  }

  // ---- writing -----------------------------------------------------------------

  /**
   * Writes data. Returns false once writableHighWaterMark bytes are queued;
   * 'drain' follows when the queue empties. Nothing is ever dropped. Never
   * throws because of the socket's state: after end(), after the peer's FIN
   * or once destroyed, the error goes to cb (and to 'error' listeners).
   */
  override write(data: string | Uint8Array, cb?: WriteCb): boolean;
  override write(data: string | Uint8Array, encoding?: BufferEncoding, cb?: WriteCb): boolean;
  override write(data: any, encoding?: BufferEncoding | WriteCb, cb?: WriteCb): boolean {
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
        if (!Buffer.isEncoding(enc)) {
          throw Object.assign(new TypeError(`Unknown encoding: ${String(enc)}`), { code: 'ERR_UNKNOWN_ENCODING' });
        }
        chunk = Buffer.from(data, enc);
        size = chunk.length;
      }
    } else if (data instanceof Uint8Array) {
      chunk = data;
      size = data.length;
    } else {
      throw invalidArgType('chunk', 'of type string or an instance of Buffer or Uint8Array', data);
    }
    if (cb !== undefined && typeof cb !== 'function') throw invalidArgType('cb', 'of type function', cb);
    if (this.writesDirect()) {
      this._bytesDispatched += size;
      return this.writeNative(chunk, size, latin1, cb);
    }
    if ((this._flags & F_FORWARDING) !== 0) throw forwardingError('write');
    return this.writeSlow(chunk, size, latin1, cb);
  }

  /**
   * Writes several chunks in order, as write() would one after the other,
   * but in one call: the kernel takes them straight from the caller's
   * buffers (one sendmsg() per 256 of them), and the core copies only what
   * it refuses. As with write(), the chunks may be reused once it returns.
   * Returns false when the queue reached the high-water mark ('drain'
   * follows).
   */
  writev(chunks: readonly Uint8Array[]): boolean {
    if (!Array.isArray(chunks)) throw invalidArgType('chunks', 'an Array of Buffer or Uint8Array', chunks);
    let size = 0;
    for (let i = 0; i < chunks.length; i++) {
      const c = chunks[i];
      if (!(c instanceof Uint8Array)) throw invalidArgType(`chunks[${i}]`, 'an instance of Buffer or Uint8Array', c);
      size += c.length;
    }
    if (this.writesDirect()) {
      this._bytesDispatched += size;
      const notify = this.queuedEstimate + size >= this.writableHwm;
      let q = 0;
      // The pieces go as arguments (see the binding), in windows that keep
      // the call's frame small whatever the array's length.
      for (let i = 0; i < chunks.length && q >= 0; i += WRITEV_ARGS) {
        q = i === 0 && chunks.length <= WRITEV_ARGS
          ? binding.writev(this._id, notify, ...chunks)
          : binding.writev(this._id, notify, ...chunks.slice(i, i + WRITEV_ARGS));
      }
      return this.afterNativeWrite(q, notify, undefined);
    }
    let ok = true;
    for (let i = 0; i < chunks.length; i++) ok = this.write(chunks[i]!) && ok;
    return ok;
  }

  private writeSlow(chunk: Uint8Array | string, size: number, latin1: boolean, cb: WriteCb | undefined): boolean {
    if (this._ended) {
      // After the peer's FIN (and the automatic end() it brought), node's
      // writeAfterFIN: EPIPE. After the user's own end(): write after end.
      if (this.flag(F_EOF) && !this.allowHalfOpen) {
        const err = peerEnded();
        if (cb) process.nextTick(cb, err);
        if (!this._destroyed) {
          this._softError = true;
          this.destroy(err);
        }
      } else {
        // A local mistake that costs nothing already written: reported, the
        // socket stays as it was (node destroys it, and throws without a listener).
        const err = writeAfterEnd();
        if (cb) process.nextTick(cb, err);
        process.nextTick(emitIfListened, this, err);
      }
      return false;
    }
    if (this._destroyed) {
      if (cb) process.nextTick(cb, streamDestroyed('write'));
      return false;
    }
    if (this._id < 0 || this.connecting || this.fallbacks !== null) {
      // Not connected yet: the bytes wait here (they reach the core as soon
      // as there is a socket, to be sent once it connects).
      if (typeof chunk === 'string') chunk = Buffer.from(chunk, latin1 ? 'latin1' : 'utf8');
      if (this._id >= 0 && this.fallbacks === null) {
        this._bytesDispatched += size;
        return this.writeNative(chunk, size, false, cb);
      }
      const e = this.x();
      (e.preConnect ??= []).push([chunk, cb]);
      e.preConnectBytes += size;
      if (e.preConnectBytes >= this.writableHwm) this._flags |= F_NEED_DRAIN;
      return !this.flag(F_NEED_DRAIN);
    }
    this._bytesDispatched += size;
    return this.writeNative(chunk, size, latin1, cb);
  }

  private writeNative(chunk: Uint8Array | string, size: number, latin1: boolean, cb: WriteCb | undefined): boolean {
    const notify = cb !== undefined || this.queuedEstimate + size >= this.writableHwm;
    let q = typeof chunk === 'string'
      ? binding.writeString(this._id, chunk, latin1, notify)
      : binding.write(this._id, chunk, notify);
    if (q === -EMSGSIZE) q = binding.write(this._id, Buffer.from(chunk as string, latin1 ? 'latin1' : 'utf8'), notify);
    return this.afterNativeWrite(q, notify, cb);
  }

  /** Whether a write goes straight to the core (connected, flowing, no stream mode or forwarding). */
  private writesDirect(): boolean {
    const f = this._flags;
    return (f & (F_FORWARDING | F_STREAM | F_WRITABLE_ENDED | F_DESTROYED | F_CONNECTING)) === 0 && this._id >= 0 &&
      (f & F_FLOW_SET) !== 0 && this.ext?.fallbacks == null;
  }

  /** What a write to the core returned (the bytes now queued, or -errno): the queue estimate, 'drain' and cb. */
  private afterNativeWrite(q: number, notify: boolean, cb: WriteCb | undefined): boolean {
    if (q < 0) {
      const err = errnoException(-q, 'write');
      if (cb) process.nextTick(cb, err);
      this._softError = true;
      this.destroy(err);
      return false;
    }
    this.queuedEstimate = q;
    if (q > 0 && (this._flags & F_WRITE_PENDING) === 0 && notify) {
      this._flags |= F_WRITE_PENDING;
      this.updateHold();
    }
    if (cb !== undefined) {
      if (q === 0) process.nextTick(cb, null);
      else (this.writeCbs ??= []).push(cb);
    }
    if (q >= this.writableHwm) {
      this._flags |= F_NEED_DRAIN;
      return false;
    }
    return true;
  }

  /** @internal stream mode: Writable's own write path (only reached through Duplex internals). */
  override _write(chunk: any, encoding: BufferEncoding, cb: WriteCb): void {
    this.write(chunk, encoding, cb);
  }

  /** @internal The native queue emptied. */
  _onDrain(): void {
    if (this.flag(F_FORWARDING)) return;
    // The core emits DRAIN when the queue empties, and the records of one
    // iteration are delivered together: a DRAIN may come after DATA records
    // whose handlers queued more bytes (an echo's write, then end() on the
    // EOF). Such a DRAIN is stale: wait for the one that follows the queue
    // now, or end() would finish and close with the queue unsent.
    if (this._id >= 0 && binding.queued(this._id) > 0) {
      binding.write(this._id, EMPTY, true);
      return;
    }
    this.queuedEstimate = 0;
    const cbs = this.writeCbs;
    if (cbs !== null) {
      this.writeCbs = null;
      for (const cb of cbs) cb(null);
    }
    if (this.flag(F_WRITE_PENDING)) {
      this._flags &= ~F_WRITE_PENDING;
      if (!this.flag(F_FINISH_ON_DRAIN)) this.updateHold();
    }
    if (this.flag(F_NEED_DRAIN)) {
      this._flags &= ~F_NEED_DRAIN;
      this.emit('drain');
    }
    if (this.flag(F_FINISH_ON_DRAIN)) {
      this._flags &= ~F_FINISH_ON_DRAIN;
      this.updateHold();
      this._finish();
    }
  }

  /** Sends FIN once everything written so far is flushed. */
  override end(cb?: () => void): this;
  override end(data: string | Uint8Array, cb?: () => void): this;
  override end(data: string | Uint8Array, encoding?: BufferEncoding, cb?: () => void): this;
  override end(data?: any, encoding?: any, cb?: any): this {
    if (typeof data === 'function') {
      cb = data;
      data = undefined;
    } else if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    if (this.flag(F_FORWARDING)) throw forwardingError('end');
    if (this.flag(F_STREAM)) return DuplexProto.end.call(this, data, encoding, cb);
    if (data !== undefined && data !== null) this.write(data, encoding as BufferEncoding | undefined);
    if (cb !== undefined && typeof cb !== 'function') throw invalidArgType('cb', 'of type function', cb);
    if (this.flag(F_DESTROYED)) {
      if (cb) process.nextTick(cb, this.ext?.errored ?? streamDestroyed('end'));
      return this;
    }
    if (cb) {
      if (this.flag(F_WRITABLE_FINISHED)) process.nextTick(cb);
      else this.once('finish', cb);
    }
    if (this.flag(F_WRITABLE_ENDED)) return this;
    this._flags |= F_WRITABLE_ENDED;
    if (this._id >= 0 && !this.connecting && this.fallbacks === null) this.shutdownNative();
    return this;
  }

  /** @internal stream mode: Writable's end reached its final step. */
  override _final(cb: (err?: Error | null) => void): void {
    this.x().finalCb = cb;
    this._flags |= F_WRITABLE_ENDED;
    if (this._id >= 0 && !this.connecting && this.fallbacks === null) this.shutdownNative();
    // otherwise _onConnect shuts down once connected
  }

  private shutdownNative(): void {
    const id = this._id;
    if (binding.queued(id) > 0) {
      binding.write(id, EMPTY, true); // ask for a DRAIN when the queue empties
      this._flags |= F_FINISH_ON_DRAIN | F_WRITE_PENDING;
      this.updateHold();
    } else {
      process.nextTick(emitFinish, this);
    }
    const rc = binding.shutdown(id);
    if (rc < 0) {
      this._softError = true;
      this.destroy(errnoException(-rc, 'shutdown'));
    }
  }

  /** @internal */
  _finish(): void {
    const finalCb = this.ext?.finalCb;
    if (finalCb) {
      this.ext!.finalCb = null;
      finalCb();
      return;
    }
    if (this.flag(F_STREAM) || this.flag(F_WRITABLE_FINISHED) || this._destroyed) return;
    this._flags |= F_WRITABLE_FINISHED;
    this.emit('finish');
    if (this.flag(F_READABLE_ENDED) && !this._destroyed) this.destroy();
  }

  override cork(): void {
    const e = this.x();
    if (e.corked++ === 0 && this._id >= 0) binding.cork(this._id, true);
  }

  override uncork(): void {
    const e = this.ext;
    if (e !== null && e.corked > 0 && --e.corked === 0 && this._id >= 0) binding.cork(this._id, false);
  }

  // ---- closing -----------------------------------------------------------------

  /** Closes the socket now; queued bytes are discarded. A second call does nothing. */
  override destroy(err?: Error | null, cb?: (err: Error | null) => void): this {
    if (this.flag(F_STREAM)) return DuplexProto.destroy.call(this, err, cb);
    if (this.flag(F_DESTROYED)) {
      if (typeof cb === 'function') cb(this.ext?.errored ?? null);
      return this;
    }
    const e = err ?? undefined;
    if (e !== undefined) this.x().errored = e;
    this.teardown(e);
    if (typeof cb === 'function') cb(e ?? null);
    process.nextTick(emitErrorAndClose, this, e);
    return this;
  }

  /** @internal stream mode: Duplex.destroy() calls this. */
  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    if (err !== null && !reportsError(this, err)) {
      // Reported to listeners only: the stream must not throw it.
      this.rs.errorEmitted = true;
      this.ws.errorEmitted = true;
    }
    this.teardown(err ?? undefined);
    cb(err);
    process.nextTick(emitCloseOnly, this, err !== null);
  }

  private teardown(err: Error | undefined): void {
    this._flags = (this._flags | F_DESTROYED | F_CLOSE_EMITTED) & ~F_CONNECTING;
    if (this.ext?.finalCb) {
      const fcb = this.ext.finalCb;
      this.ext.finalCb = null;
      if (this.flag(F_STREAM)) process.nextTick(fcb, err ?? streamDestroyed('end'));
    }
    this.detach();
    const cbs = this.writeCbs;
    if (cbs !== null) {
      this.writeCbs = null;
      const e = err ?? streamDestroyed('write');
      for (const cb of cbs) process.nextTick(cb, e);
    }
    const pre = this.preConnect;
    if (pre !== null) {
      this.ext!.preConnect = null;
      this.ext!.preConnectBytes = 0;
      for (const [, cb] of pre) if (cb) process.nextTick(cb, closedBeforeConnection());
    }
    if (this._owner !== null) {
      const o = this._owner;
      this._owner = null;
      if (this.ext === null || this.ext.server === null) this.x().server = o;
      o._onSocketClosed();
    }
  }

  /** Ends the writable side, then destroys once everything was flushed (as node's). */
  destroySoon(): void {
    if (!this._ended) this.end();
    if (this.writableFinished) this.destroy();
    else this.once('finish', () => this.destroy());
  }

  /** Closes the connection with a TCP RST (SO_LINGER 0) instead of a FIN. */
  resetAndDestroy(): this {
    if (this._destroyed) {
      const err = socketClosed();
      process.nextTick(emitError, this, err);
      return this;
    }
    if (this._id >= 0 && !this.connecting) {
      this._flags |= F_RESET;
      this.destroy();
    } else if (this.connecting) {
      this.once('connect', () => this.resetAndDestroy());
    } else {
      this.destroy(Object.assign(new Error('Socket is closed'), { code: 'ERR_SOCKET_CLOSED' }));
    }
    return this;
  }

  /** @internal */
  _onError(errno: number, op: number): void {
    if (this.flag(F_FORWARDING)) return; // the forwarding's end reports it
    if (op === 3 /* connect */) return this._onConnect(errno);
    this._softError = true;
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
    let pending = this.pendingChunks ?? [];
    this.pendingChunks = null;
    if (this.flag(F_STREAM)) {
      const rs = this.rs;
      while (rs.length > 0) {
        const c = this.read() as Buffer | null;
        if (c === null) break;
        pending = pending.concat(typeof c === 'string' ? Buffer.from(c) : c);
      }
    }
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
    if (this._destroyed) return; // destroy() ended it
    if (this._id >= 0) {
      loop._streams[this._id] = undefined;
      this._id = -1; // closed by the core: nothing to close here
    }
    if (err !== undefined) this._softError = true;
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
    this.x().timeoutMs = Math.ceil(ms);
    if (this._id >= 0) binding.setTimeout(this._id, this.timeoutMs);
    return this;
  }

  /** @internal */
  _onTimeout(): void {
    if (this.flag(F_FORWARDING)) return; // the forwarding has its own
    this.emit('timeout');
  }

  /** TCP_NODELAY; on by default. */
  setNoDelay(noDelay = true): this {
    this.noDelay = noDelay;
    if (this._id >= 0 && !this.connecting && this.peerFamily !== AF_UNIX) binding.setNoDelay(this._id, noDelay);
    return this;
  }

  setKeepAlive(enable = false, initialDelay = 0): this {
    this.x().keepAlive = [enable, initialDelay];
    if (this._id >= 0 && !this.connecting && this.peerFamily !== AF_UNIX) {
      binding.setKeepAlive(this._id, enable, Math.floor(initialDelay / 1000));
    }
    return this;
  }

  /**
   * The kernel's send buffer for this socket (SO_SNDBUF), in bytes, as
   * dgram.Socket#setSendBufferSize. A fixed size turns off the kernel's
   * autotuning of the buffer; Linux doubles the value for its bookkeeping
   * (getSendBufferSize() reports what it keeps) and clamps it to
   * net.core.wmem_max. Asked before the connection is made, it is applied as
   * the connection completes; a failure then destroys the socket with the
   * error. Throws ERR_OUT_OF_RANGE for anything but an integer from 1 to
   * 2147483647 and ERR_SOCKET_CLOSED once the socket is closed.
   */
  setSendBufferSize(size: number): this {
    return this.setBufferSize(true, size);
  }

  /** The kernel's receive buffer (SO_RCVBUF), as setSendBufferSize(); clamped to net.core.rmem_max. */
  setRecvBufferSize(size: number): this {
    return this.setBufferSize(false, size);
  }

  /** The send buffer's size as the kernel reports it (SO_SNDBUF), in bytes. */
  getSendBufferSize(): number {
    return this.getBufferSize(true);
  }

  /** The receive buffer's size as the kernel reports it (SO_RCVBUF), in bytes. */
  getRecvBufferSize(): number {
    return this.getBufferSize(false);
  }

  private setBufferSize(send: boolean, size: number): this {
    if (typeof size !== 'number' || !Number.isInteger(size) || size < 1 || size > 0x7fffffff) {
      throw outOfRange('size', 'an integer from 1 to 2147483647', size);
    }
    if (this.destroyed) throw socketClosed();
    if (this._id < 0 || this.connecting) {
      const bs = (this.x().bufferSizes ??= [0, 0]);
      bs[send ? 0 : 1] = size;
      return this;
    }
    const rc = binding.setBufferSize(this._id, send, size);
    if (rc < 0) throw errnoException(-rc, 'setsockopt');
    return this;
  }

  private applyBufferSize(send: boolean, size: number): void {
    const rc = binding.setBufferSize(this._id, send, size);
    if (rc < 0) this.destroy(errnoException(-rc, 'setsockopt'));
  }

  private getBufferSize(send: boolean): number {
    if (this.destroyed || this._id < 0) throw socketClosed();
    const rc = binding.getBufferSize(this._id, send);
    if (rc < 0) throw errnoException(-rc, 'getsockopt');
    return rc;
  }

  ref(): this {
    if (!this.refed) {
      this._flags |= F_REFED;
      if (this.flag(F_COUNTED)) loop._ref();
    }
    return this;
  }

  unref(): this {
    if (this.refed) {
      this._flags &= ~F_REFED;
      if (this.flag(F_COUNTED)) loop._unref();
    }
    return this;
  }

  // ---- streams -----------------------------------------------------------------

  /** The socket itself: it is a stream.Duplex (kept for code written for older iomux). */
  toDuplex(): this {
    return this;
  }
}

// ---- Duplex's accessors, answered from the light state until the stream state exists ----

interface Light { _flags: number; ext: SocketExtra | null; writableHwm: number; _materialize(): void }

function streamOr<T>(name: string, light: (s: Light) => T, set?: (s: Light, v: any) => void): PropertyDescriptor {
  const d = inherited(name);
  const desc: PropertyDescriptor = {
    configurable: true,
    enumerable: false,
    get(this: Light) {
      return (this._flags & F_STREAM) !== 0 ? d.get!.call(this) : light(this);
    },
  };
  desc.set = function (this: Light, v: any) {
    if ((this._flags & F_STREAM) === 0 && set !== undefined) return set(this, v);
    this._materialize();
    if (d.set) d.set.call(this, v);
  };
  return desc;
}

Object.defineProperties(SocketImpl.prototype, {
  _readableState: {
    configurable: true,
    get(this: SocketImpl) {
      this._materialize();
      return (this as unknown as { _readableState: StreamState })._readableState;
    },
  },
  _writableState: {
    configurable: true,
    get(this: SocketImpl) {
      this._materialize();
      return (this as unknown as { _writableState: StreamState })._writableState;
    },
  },
  destroyed: streamOr('destroyed', (s) => (s._flags & F_DESTROYED) !== 0),
  readable: streamOr('readable', (s) => (s._flags & (F_DESTROYED | F_READABLE_ENDED)) === 0),
  writable: streamOr('writable', (s) => (s._flags & (F_DESTROYED | F_WRITABLE_ENDED)) === 0),
  readableEnded: streamOr('readableEnded', (s) => (s._flags & F_READABLE_ENDED) !== 0),
  writableEnded: streamOr('writableEnded', (s) => (s._flags & F_WRITABLE_ENDED) !== 0),
  writableFinished: streamOr('writableFinished', (s) => (s._flags & F_WRITABLE_FINISHED) !== 0),
  writableHighWaterMark: { configurable: true, get(this: Light) { return this.writableHwm; } },
  readableHighWaterMark: streamOr('readableHighWaterMark', (s) => s.ext?.readableHwm ?? DEFAULT_HWM),
  readableFlowing: streamOr('readableFlowing', (s) => ((s._flags & F_FLOW_SET) !== 0 ? (s._flags & F_FLOWING) !== 0 : null)),
  readableLength: streamOr('readableLength', (s) => s.ext?.pendingBytes ?? 0),
  readableObjectMode: { configurable: true, get() { return false; } },
  writableObjectMode: { configurable: true, get() { return false; } },
  readableEncoding: streamOr('readableEncoding', () => null),
  errored: streamOr('errored', (s) => s.ext?.errored ?? null),
  closed: streamOr('closed', (s) => (s._flags & F_CLOSE_EMITTED) !== 0),
  writableLength: { configurable: true, get(this: SocketImpl) { return this._writableLength(); } },
  writableNeedDrain: {
    configurable: true,
    get(this: Light) {
      return (this._flags & F_NEED_DRAIN) !== 0;
    },
  },
  writableCorked: { configurable: true, get(this: Light) { return this.ext?.corked ?? 0; } },
  allowHalfOpen: {
    configurable: true,
    get(this: Light) { return (this._flags & F_ALLOW_HALF_OPEN) !== 0; },
    set(this: Light, v: boolean) { this._flags = v ? this._flags | F_ALLOW_HALF_OPEN : this._flags & ~F_ALLOW_HALF_OPEN; },
  },
});

/**
 * node:net's Socket: callable with or without `new`, a stream.Duplex.
 */
export type Socket = SocketImpl;
type SocketClass = typeof SocketImpl & ((options?: SocketOptions) => SocketImpl);
export const Socket: SocketClass = new Proxy(SocketImpl, {
  apply(target, _this, args: [SocketOptions?]) {
    return new target(...args);
  },
}) as SocketClass;

/** @internal the class itself (the export is a Proxy that also answers calls without `new`) */
export const SocketClassImpl = SocketImpl;

/** Opens a connection: connect(port[, host][, cb]), connect(path[, cb]) or connect(options[, cb]). */
export function connect(options: ConnectOptions & SocketOptions, cb?: () => void): Socket;
export function connect(port: number | string, host?: string, cb?: () => void): Socket;
export function connect(port: number | string, cb?: () => void): Socket;
export function connect(...args: unknown[]): Socket {
  if (args.length === 0 || (args.length === 1 && typeof args[0] === 'function')) {
    throw Object.assign(new TypeError('The "options" or "port" or "path" argument must be specified'),
      { code: 'ERR_MISSING_ARGS' });
  }
  const first = args[0];
  const opts = first !== null && typeof first === 'object' ? (first as SocketOptions) : undefined;
  const s = new SocketImpl(opts);
  return (s.connect as (...a: unknown[]) => Socket)(...args);
}

export const createConnection = connect;
Object.defineProperty(SocketImpl, 'name', { value: 'Socket' });
