// connection.ts -- one ZMTP connection over an iomux socket: the handshake,
// heartbeats, and the framing of outgoing messages into few large writes.
//
// It uses only the node:net-like face of the socket ('data', write() and its
// return value with 'drain', end, destroy, pause/resume, 'close', 'error').
//
// Outgoing messages are encoded into a 64 KiB slab: small frames are copied
// in, larger ones (REF_MIN and up) are written by reference after their
// header, and a flush hands the list of pieces to the socket as one writev()
// (the kernel copies the frames straight from the caller's buffers; copying
// a 4 KiB frame into the slab first was about a fifth of the sender's CPU).
// A slab that fills up within one send burst is followed by a 256 KiB one
// (BULK_SLAB_SIZE), so a bulk flow hands the kernel about 4x larger writes
// (about 0.02 instead of 0.065 writes per 4 KiB message, with FLUSH_BYTES at
// 1 MiB), while an idle or chatty connection keeps a 64 KiB slab. The slab is
// allocated on the first frame to encode (a PULL or SUB connection never has
// one) and dropped one to two seconds after its last frame (see slabHolders).
// The slab's filled part goes to the socket once per microtask (so a burst of
// send() calls costs one write), or at once when FLUSH_BYTES have gathered.
// write() returning false marks the connection blocked until 'drain'.
import { loop, type Timer } from '../loop';
import type { Socket as IoSocket } from '../socket';
import {
  Decoder, ERRORS, ZmtpError, COMPATIBLE, encodeGreeting, encodeReady, encodePing, encodePong,
  encodeSubscription, frameHeaderSize, writeFrameHeader,
  type DecoderHandler, type Greeting, type ReadyProperties, type SocketTypeName,
} from './codec';

const SLAB_SIZE = 64 * 1024;
const BULK_SLAB_SIZE = 256 * 1024;
/**
 * Frames this large go by reference (as the decoder hands out frames of 4 KiB
 * and more as views): at 2 KiB the copy and the extra writev piece cost the
 * same, at 4 KiB going by reference cut the sender's CPU by about a third.
 */
const REF_MIN = 4 * 1024;
const FLUSH_BYTES = 1024 * 1024;
/** The slab of a connection that has not encoded a frame yet: no room, so the first frame allocates one. */
const NO_SLAB = Buffer.alloc(0);

export interface ConnectionOptions {
  socketType: SocketTypeName;
  identity?: Uint8Array;
  maxMessageSize: number;
  heartbeatInterval: number;
  heartbeatTimeout: number;
  heartbeatTimeToLive: number;
  /** Milliseconds the handshake may take (libzmq's ZMQ_HANDSHAKE_IVL); 0: no limit. */
  handshakeTimeout: number;
}

/** What a connection reports to its socket. */
export interface ConnectionOwner {
  _onReady(c: Connection): void;
  _onMessage(c: Connection, frames: Buffer[]): void;
  _onSubscription(c: Connection, subscribe: boolean, topic: Buffer): void;
  _onWritable(c: Connection): void;
  _onClosed(c: Connection, err: ZmtpError | Error | undefined): void;
}

/**
 * Connections holding an output slab. Once a second, a slab that took no
 * frame since the previous sweep (and has nothing waiting) is dropped, so a
 * quiet peer costs no 64 KiB; the next frame allocates a new one. One timer
 * for all connections, armed while any holds a slab: nothing per message but
 * a flag.
 */
const slabHolders = new Set<Connection>();
let sweepTimer: Timer | null = null;
const SWEEP_MS = 1000;

function sweepSlabs(): void {
  for (const c of slabHolders) c._sweep();
  if (slabHolders.size === 0) stopSweep();
}

function stopSweep(): void {
  if (sweepTimer !== null) {
    loop.clearInterval(sweepTimer);
    sweepTimer = null;
  }
}

let dirty: Connection[] = [];
let flushQueued = false;

function flushDirty(): void {
  flushQueued = false;
  const list = dirty;
  dirty = [];
  for (let i = 0; i < list.length; i++) list[i]!._flush();
}

export class Connection implements DecoderHandler {
  readonly socket: IoSocket;
  readonly endpoint: string;
  /** @internal whatever the owning socket keeps per peer */
  pipe: unknown = null;
  peerType: SocketTypeName | null = null;
  peerIdentity: Buffer = Buffer.alloc(0);
  /** The negotiated ZMTP minor version (0 or 1) once the greeting came. */
  minor = -1;
  ready = false;
  closed = false;
  /** write() returned false: no more encoding until 'drain'. */
  blocked = false;
  /** The TCP or unix connection is established (a hang-up after it, before READY, is a handshake failure). */
  private connected = false;
  /** We ended or destroyed it ourselves. */
  private localClose = false;
  /** Chunks received: heartbeat timeouts compare it, no timer is re-armed per chunk. */
  private rx = 0;

  private readonly owner: ConnectionOwner;
  private readonly opts: ConnectionOptions;
  private readonly decoder: Decoder;
  /**
   * The output slab, allocated on the first frame to encode (a PULL or SUB
   * connection never has one: 10,000 of them held 1.26 GB of external memory
   * when each got its 64 KiB at once). NO_SLAB until then.
   */
  private slab: Buffer = NO_SLAB;
  /** The slab's ArrayBuffer and offset in it: read once, not per header piece (`.buffer` is a call into the runtime). */
  private slabBuffer: ArrayBufferLike = NO_SLAB.buffer;
  private slabOffset = 0;
  private start = 0;
  private pos = 0;
  /** Encoded output not yet written: pieces before the slab's [start, pos). */
  private chunks: Uint8Array[] | null = null;
  private pending = 0;
  private isDirty = false;
  /** A frame was encoded since the last slab sweep. */
  private encoded = false;
  private hbTimer: Timer | null = null;
  private hbRxAtPing = -1;
  private ttlTimer: Timer | null = null;
  private ttlRx = -1;
  private handshakeTimer: Timer | null = null;

  constructor(socket: IoSocket, endpoint: string, owner: ConnectionOwner, opts: ConnectionOptions) {
    this.socket = socket;
    this.endpoint = endpoint;
    this.owner = owner;
    this.opts = opts;
    this.decoder = new Decoder(this, { maxMessageSize: opts.maxMessageSize });
    this.connected = !socket.connecting;
    if (!this.connected) socket.once('connect', () => { this.connected = true; });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('drain', () => this.onDrain());
    socket.on('error', () => { /* reported through 'close' below with the error kept */ });
    socket.on('close', () => this.onSocketClose());
    // NULL: our greeting and READY go together, without waiting for the peer's.
    this.raw(encodeGreeting());
    this.raw(encodeReady(opts.socketType, opts.identity));
    this._flush();
    if (opts.handshakeTimeout > 0) {
      this.handshakeTimer = loop.setTimeout(() => {
        this.handshakeTimer = null;
        if (!this.ready) this.fail(new ZmtpError('ERR_ZMTP_HANDSHAKE_TIMEOUT', `ZMTP handshake not done within ${opts.handshakeTimeout} ms`));
      }, opts.handshakeTimeout);
      this.handshakeTimer.unref();
    }
  }

  // ---- input ---------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    this.rx++;
    const err = this.decoder.push(chunk);
    if (err !== null) this.fail(err);
  }

  onGreeting(g: Greeting): void {
    this.minor = g.major > 3 || g.minor >= 1 ? 1 : 0;
  }

  onReady(r: ReadyProperties): void {
    if (!COMPATIBLE[this.opts.socketType].includes(r.socketType)) {
      throw new ZmtpError(ERRORS.SOCKET_TYPE, `ZMTP: a ${r.socketType} peer cannot talk to a ${this.opts.socketType} socket`);
    }
    this.peerType = r.socketType;
    this.peerIdentity = r.identity;
    this.ready = true;
    if (this.handshakeTimer !== null) {
      loop.clearTimeout(this.handshakeTimer);
      this.handshakeTimer = null;
    }
    this.startHeartbeats();
    this.owner._onReady(this);
  }

  onMessage(frames: Buffer[]): void {
    if (!this.closed) this.owner._onMessage(this, frames);
  }

  onPing(ttl: number, context: Buffer): void {
    this.raw(encodePong(context));
    this.markDirty();
    if (ttl > 0 && this.ttlTimer === null) {
      // The peer wants us to drop it when it is silent for ttl (deciseconds).
      const ms = ttl * 100;
      this.ttlRx = this.rx;
      this.ttlTimer = loop.setInterval(() => {
        if (this.rx === this.ttlRx) this.fail(new ZmtpError('ERR_ZMTP_HEARTBEAT_TTL', `ZMTP: nothing from the peer within its heartbeat TTL of ${ms} ms`));
        this.ttlRx = this.rx;
      }, ms);
      this.ttlTimer.unref();
    }
  }

  onPong(_context: Buffer): void {
    // Any bytes count as life (rx); nothing more to do.
  }

  onSubscription(subscribe: boolean, topic: Buffer): void {
    if (!this.closed) this.owner._onSubscription(this, subscribe, topic);
  }

  private startHeartbeats(): void {
    const ivl = this.opts.heartbeatInterval;
    if (ivl <= 0 || this.minor < 1) return; // PING is ZMTP 3.1
    const timeout = this.opts.heartbeatTimeout > 0 ? this.opts.heartbeatTimeout : ivl;
    const ttl = this.opts.heartbeatTimeToLive / 100;
    let sinceCheck = 0;
    this.hbTimer = loop.setInterval(() => {
      if (this.closed) return;
      if (this.hbRxAtPing >= 0) {
        sinceCheck += ivl;
        if (sinceCheck >= timeout) {
          if (this.rx === this.hbRxAtPing) {
            this.fail(new ZmtpError('ERR_ZMTP_HEARTBEAT_TIMEOUT', `ZMTP: no answer to PING within ${timeout} ms`));
            return;
          }
          this.hbRxAtPing = -1;
        }
      }
      if (this.hbRxAtPing < 0) {
        this.hbRxAtPing = this.rx;
        sinceCheck = 0;
      }
      this.raw(encodePing(ttl));
      this.markDirty();
    }, Math.min(ivl, timeout));
    this.hbTimer.unref();
  }

  // ---- output --------------------------------------------------------------------------

  /** Encodes one message, frames[first..] (in order, never interleaved with another). */
  send(frames: readonly Uint8Array[], first = 0): void {
    const n = frames.length;
    this.encoded = true;
    for (let i = first; i < n; i++) {
      const f = frames[i]!;
      const size = f.length;
      const hs = frameHeaderSize(size);
      const copy = size < REF_MIN;
      if (this.slab.length - this.pos < hs + (copy ? size : 0)) this.newSlab(this.slab === NO_SLAB ? SLAB_SIZE : BULK_SLAB_SIZE);
      this.pos = writeFrameHeader(this.slab, this.pos, size, i < n - 1);
      if (copy) {
        this.slab.set(f, this.pos);
        this.pos += size;
      } else {
        this.cut();
        (this.chunks ??= []).push(f);
        this.pending += size;
      }
      this.pending += hs + (copy ? size : 0);
    }
    if (this.pending >= FLUSH_BYTES) this._flush();
    else this.markDirty();
  }

  sendSubscription(subscribe: boolean, topic: Uint8Array): void {
    this.raw(encodeSubscription(subscribe, topic, this.minor));
    this.markDirty();
  }

  private raw(bytes: Buffer): void {
    this.cut();
    (this.chunks ??= []).push(bytes);
    this.pending += bytes.length;
  }

  /** Moves the slab's filled part to the chunk list. */
  private cut(): void {
    if (this.pos > this.start) {
      // A plain Uint8Array: cheaper to make than a Buffer view (subarray),
      // and one is made per frame sent by reference.
      (this.chunks ??= []).push(new Uint8Array(this.slabBuffer, this.slabOffset + this.start, this.pos - this.start));
      this.start = this.pos;
    }
  }

  private newSlab(size = SLAB_SIZE): void {
    this.cut();
    this.slab = Buffer.allocUnsafe(size);
    this.slabBuffer = this.slab.buffer;
    this.slabOffset = this.slab.byteOffset;
    this.start = this.pos = 0;
    if (!slabHolders.has(this) && !this.closed) {
      slabHolders.add(this);
      if (sweepTimer === null) {
        sweepTimer = loop.setInterval(sweepSlabs, SWEEP_MS);
        sweepTimer.unref();
      }
    }
  }

  private dropSlab(): void {
    this.slab = NO_SLAB;
    this.slabBuffer = NO_SLAB.buffer;
    this.slabOffset = 0;
    this.start = this.pos = 0;
  }

  /** @internal Once a second: drops the slab if no frame was encoded into it since the last call. */
  _sweep(): void {
    if (this.encoded) {
      this.encoded = false;
      return;
    }
    if (this.pending !== 0) return;
    this.dropSlab();
    slabHolders.delete(this);
  }

  private markDirty(): void {
    if (this.isDirty || this.closed) return;
    this.isDirty = true;
    dirty.push(this);
    if (!flushQueued) {
      flushQueued = true;
      queueMicrotask(flushDirty);
    }
  }

  /** Bytes encoded and not yet handed to the socket. */
  get unflushed(): number {
    return this.pending;
  }

  /** @internal Hands everything encoded to the socket. */
  _flush(): void {
    this.isDirty = false;
    if (this.closed || this.pending === 0) return;
    const s = this.socket;
    let ok: boolean;
    if (this.chunks !== null) {
      this.cut();
      const chunks = this.chunks;
      this.chunks = null;
      ok = chunks.length === 1 ? s.write(chunks[0]!) : s.writev(chunks);
    } else {
      ok = s.write(this.slab.subarray(this.start, this.pos));
      this.start = this.pos;
    }
    // A written view may be kept by the socket (before it connects): never
    // write below it again. A slab with less than 4 KiB left is dropped; the
    // next frame allocates a 64 KiB one.
    if (this.slab.length - this.pos < 4096 && this.slab !== NO_SLAB) this.dropSlab();
    this.pending = 0;
    if (!ok) this.blocked = true;
  }

  private onDrain(): void {
    if (!this.blocked || this.closed) return;
    this.blocked = false;
    this.owner._onWritable(this);
  }

  // ---- closing -------------------------------------------------------------------------

  /** Sends what is encoded, then FIN. */
  end(): void {
    if (this.closed) return;
    this.localClose = true;
    this._flush();
    this.socket.end();
  }

  /** Drops the connection at once. */
  destroy(): void {
    this.localClose = true;
    this.socket.destroy();
  }

  private fail(err: Error): void {
    if (this.closed) return;
    this.failure = err;
    this.socket.destroy();
  }

  private failure: Error | undefined = undefined;

  private onSocketClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.chunks = null;
    this.pending = 0;
    this.dropSlab();
    if (slabHolders.delete(this) && slabHolders.size === 0) stopSweep();
    if (this.hbTimer !== null) loop.clearInterval(this.hbTimer);
    if (this.ttlTimer !== null) loop.clearInterval(this.ttlTimer);
    if (this.handshakeTimer !== null) loop.clearTimeout(this.handshakeTimer);
    this.hbTimer = this.ttlTimer = this.handshakeTimer = null;
    if (this.failure === undefined && !this.ready && this.connected && !this.localClose) {
      // libzmq closes without a word when it refuses our mechanism, version or socket type.
      this.failure = new ZmtpError(ERRORS.HANDSHAKE, 'ZMTP handshake: the peer closed the connection before READY (another mechanism or an incompatible socket type?)');
    }
    const err = this.failure ?? this.socket.errored ?? undefined;
    this.owner._onClosed(this, err);
  }
}
