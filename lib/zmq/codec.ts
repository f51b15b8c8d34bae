// codec.ts -- ZMTP 3.1 (and 3.0) with the NULL mechanism, as bytes: the
// greeting, commands and frames (RFC 23 and RFC 37 of the ZeroMQ RFC site).
// Pure: no sockets, no timers.
//
// Decoder.push() takes the bytes of a connection as they arrive, in any
// split, and calls its handler for the peer's greeting, each command and each
// complete multipart message. Every malformed input ends in one ZmtpError
// whose code names the violation; push() returns it instead of throwing, and
// after one the decoder is dead (the connection is to be closed).
//
// Message frames are copied out of the chunks they arrived in (one allocation
// per frame, from Node's pool for small ones), so a frame kept by the
// application never pins a 64 KiB read slab. A frame larger than the chunk
// it starts in is gathered piece by piece as its bytes come: memory follows
// what the peer really sent, never the length it announced.

/** Flags of a frame's first byte. */
export const FLAG_MORE = 0x01;
export const FLAG_LONG = 0x02;
export const FLAG_COMMAND = 0x04;

export const GREETING_SIZE = 64;
const SIGNATURE_SIZE = 10;
/** Frames above this are gathered as a list of pieces, not allocated in one go. */
const PREALLOC_MAX = 1 << 20;
// A message frame at least this large that lies whole in one received chunk
// is handed out as a view of the chunk, not copied. Below it a copy is a
// slice of Node's shared buffer pool (Buffer.allocUnsafe pools under 4 KiB)
// and cheap; from 4 KiB on each copy is an ArrayBuffer of its own (malloc,
// memcpy, GC sweeping), which cost a 4 KiB PULL stream about a third of its
// receiving CPU. A kept view keeps its chunk alive: at most the loop's read
// slab (96 KiB), i.e. 24 times the frame's size.
const VIEW_MIN = 4096;
/** The most bytes a single Buffer can hold here. */
const BUFFER_MAX = Math.min(2 ** 32, Number.MAX_SAFE_INTEGER);

export type SocketTypeName =
  | 'PAIR' | 'PUB' | 'SUB' | 'REQ' | 'REP' | 'DEALER' | 'ROUTER' | 'PULL' | 'PUSH' | 'XPUB' | 'XSUB';

/** Which socket types may talk to which (RFC 37, "The Socket Type Property"). */
export const COMPATIBLE: Readonly<Record<SocketTypeName, readonly SocketTypeName[]>> = Object.freeze({
  PAIR: ['PAIR'],
  PUB: ['SUB', 'XSUB'],
  SUB: ['PUB', 'XPUB'],
  REQ: ['REP', 'ROUTER'],
  REP: ['REQ', 'DEALER'],
  DEALER: ['REP', 'DEALER', 'ROUTER'],
  ROUTER: ['REQ', 'DEALER', 'ROUTER'],
  PULL: ['PUSH'],
  PUSH: ['PULL'],
  XPUB: ['SUB', 'XSUB'],
  XSUB: ['PUB', 'XPUB'],
});

/** A violation of ZMTP by the peer; `code` names it. */
export class ZmtpError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'ZmtpError';
    this.code = code;
  }
}

/** The codes a ZmtpError may carry. */
export const ERRORS = Object.freeze({
  SIGNATURE: 'ERR_ZMTP_SIGNATURE',
  VERSION: 'ERR_ZMTP_VERSION',
  MECHANISM: 'ERR_ZMTP_MECHANISM',
  AS_SERVER: 'ERR_ZMTP_AS_SERVER',
  FLAGS: 'ERR_ZMTP_FLAGS',
  TOO_LARGE: 'ERR_ZMTP_MESSAGE_TOO_LARGE',
  COMMAND: 'ERR_ZMTP_MALFORMED_COMMAND',
  UNEXPECTED: 'ERR_ZMTP_UNEXPECTED_COMMAND',
  HANDSHAKE: 'ERR_ZMTP_HANDSHAKE',
  PROPERTY: 'ERR_ZMTP_PROPERTY',
  SOCKET_TYPE: 'ERR_ZMTP_SOCKET_TYPE',
  PEER_ERROR: 'ERR_ZMTP_PEER_ERROR',
});

export interface Greeting {
  major: number;
  minor: number;
  mechanism: string;
  asServer: boolean;
}

/** What a READY command carried. */
export interface ReadyProperties {
  socketType: SocketTypeName;
  /** Empty when the peer sent none (or an empty one). */
  identity: Buffer;
  /** Every property by name (as sent), raw values. */
  properties: Map<string, Buffer>;
}

export interface DecoderHandler {
  onGreeting(greeting: Greeting): void;
  onReady(ready: ReadyProperties): void;
  /** A complete multipart message (one or more frames). */
  onMessage(frames: Buffer[]): void;
  /** PING: ttl in deciseconds, and the context to echo in the PONG. */
  onPing(ttlDeciseconds: number, context: Buffer): void;
  onPong(context: Buffer): void;
  /** SUBSCRIBE (true) or CANCEL (false) commands of ZMTP 3.1. */
  onSubscription(subscribe: boolean, topic: Buffer): void;
}

export interface DecoderOptions {
  /** Largest message (sum of its frames) accepted; -1 for no limit (libzmq's ZMQ_MAXMSGSIZE). */
  maxMessageSize?: number;
}

const S_SIGNATURE = 0;
const S_GREETING = 1;
const S_FLAGS = 2;
const S_SIZE = 3;
const S_BODY = 4;
const S_DEAD = 5;

const MECHANISM_NULL = Buffer.from('NULL');
// Module constants, not global lookups, on the per-frame path.
const allocUnsafe = Buffer.allocUnsafe;
const viewOf = (ab: ArrayBufferLike, offset: number, length: number): Buffer => Buffer.from(ab, offset, length);

/**
 * The incremental ZMTP decoder of one connection. It expects the peer's
 * greeting, then a READY command, then traffic.
 */
export class Decoder {
  /** The peer's ZMTP minor version once its greeting came (0 or 1), else -1. */
  peerMinor = -1;
  /** True once READY came. */
  ready = false;
  /** The first error; the decoder is dead after it. */
  error: ZmtpError | null = null;

  private readonly handler: DecoderHandler;
  private readonly maxMessageSize: number;
  private state = S_SIGNATURE;
  /** Bytes of the greeting or of a frame's size field, gathered across chunks. */
  private head = Buffer.alloc(GREETING_SIZE);
  private headLen = 0;
  private flags = 0;
  private bodySize = 0;
  /** The frame body being filled, when it is preallocated. */
  private body: Buffer | null = null;
  /** Or the pieces of a large frame body. */
  private pieces: Buffer[] | null = null;
  private bodyLen = 0;
  private frames: Buffer[] = [];
  private messageSize = 0;

  constructor(handler: DecoderHandler, options: DecoderOptions = {}) {
    this.handler = handler;
    const max = options.maxMessageSize ?? -1;
    this.maxMessageSize = max < 0 ? BUFFER_MAX : Math.min(max, BUFFER_MAX);
  }

  /**
   * Feeds bytes; returns the error that killed the decoder (now or before),
   * else null. Frames of 4 KiB or more may be views of `chunk`: do not write
   * into a chunk once it was pushed.
   */
  push(chunk: Uint8Array): ZmtpError | null {
    if (this.error !== null) return this.error;
    try {
      this.run(chunk);
    } catch (err) {
      // A handler may throw a ZmtpError to reject what it was given (a bad
      // socket type in READY); anything else is the handler's own bug and
      // is not ours to swallow.
      if (!(err instanceof ZmtpError)) throw err;
      this.fail(err);
    }
    return this.error;
  }

  private fail(err: ZmtpError): void {
    if (this.error === null) this.error = err;
    this.state = S_DEAD;
    this.frames = [];
    this.body = null;
    this.pieces = null;
  }

  private run(chunk: Uint8Array): void {
    const len = chunk.length;
    // Read once per chunk, not per frame: `.buffer` is a call into the runtime.
    const bytes = chunk.buffer;
    const base = chunk.byteOffset;
    let pos = 0;
    while (pos < len || this.state === S_BODY && this.bodyLen === this.bodySize) {
      switch (this.state) {
        case S_SIGNATURE: {
          const n = Math.min(SIGNATURE_SIZE - this.headLen, len - pos);
          this.head.set(chunk.subarray(pos, pos + n), this.headLen);
          this.headLen += n;
          pos += n;
          // Fail as early as the bytes allow: the first byte must be 0xFF.
          if (this.head[0] !== 0xff) throw new ZmtpError(ERRORS.SIGNATURE, 'ZMTP greeting: the signature does not start with 0xFF');
          if (this.headLen < SIGNATURE_SIZE) break;
          if (this.head[9] !== 0x7f) throw new ZmtpError(ERRORS.SIGNATURE, 'ZMTP greeting: the signature does not end with 0x7F (not a ZMTP 2.0+ peer)');
          this.state = S_GREETING;
          break;
        }
        case S_GREETING: {
          const n = Math.min(GREETING_SIZE - this.headLen, len - pos);
          this.head.set(chunk.subarray(pos, pos + n), this.headLen);
          this.headLen += n;
          pos += n;
          if (this.headLen > 10 && this.head[10]! < 3) {
            throw new ZmtpError(ERRORS.VERSION, `ZMTP greeting: version ${this.head[10]} is not supported (3.0 or later is)`);
          }
          if (this.headLen < GREETING_SIZE) break;
          this.greeting();
          break;
        }
        case S_FLAGS: {
          const flags = chunk[pos++]!;
          if ((flags & 0xf8) !== 0) throw new ZmtpError(ERRORS.FLAGS, `ZMTP frame: reserved flag bits set (0x${flags.toString(16)})`);
          if ((flags & (FLAG_COMMAND | FLAG_MORE)) === (FLAG_COMMAND | FLAG_MORE)) {
            throw new ZmtpError(ERRORS.FLAGS, 'ZMTP frame: a command frame with the MORE flag');
          }
          if ((flags & FLAG_COMMAND) !== 0 && this.frames.length > 0) {
            throw new ZmtpError(ERRORS.FLAGS, 'ZMTP frame: a command inside a multipart message');
          }
          if ((flags & FLAG_COMMAND) === 0 && !this.ready) {
            throw new ZmtpError(ERRORS.HANDSHAKE, 'ZMTP handshake: a message frame before READY');
          }
          this.flags = flags;
          this.headLen = 0;
          this.state = S_SIZE;
          // Fast path: a long message frame whose size and body are all in this chunk.
          if ((flags & (FLAG_LONG | FLAG_COMMAND)) === FLAG_LONG && pos + 8 <= len) {
            const hi = (chunk[pos]! << 24 | chunk[pos + 1]! << 16 | chunk[pos + 2]! << 8 | chunk[pos + 3]!) >>> 0;
            const lo = (chunk[pos + 4]! << 24 | chunk[pos + 5]! << 16 | chunk[pos + 6]! << 8 | chunk[pos + 7]!) >>> 0;
            if (hi === 0 && lo >= VIEW_MIN && pos + 8 + lo <= len) {
              pos += 8;
              this.bodySize = lo;
              this.checkSize(lo);
              const body = viewOf(bytes, base + pos, lo);
              pos += lo;
              this.state = S_FLAGS;
              if (this.frames.length === 0 && (flags & FLAG_MORE) === 0) this.handler.onMessage([body]);
              else this.frame(body);
              break;
            }
          }
          // Fast path: a short frame whose size byte and body are all in this chunk.
          if ((flags & FLAG_LONG) === 0 && pos < len) {
            const size = chunk[pos]!;
            if (pos + 1 + size <= len) {
              pos++;
              this.bodySize = size;
              this.checkSize(size);
              const body = allocUnsafe(size);
              if (size <= 48) {
                // A short copy in JavaScript costs less than a native call and a view.
                for (let k = 0; k < size; k++) body[k] = chunk[pos + k]!;
              } else {
                body.set(size === len ? chunk : new Uint8Array(bytes, base + pos, size));
              }
              pos += size;
              this.state = S_FLAGS;
              if (this.frames.length === 0 && (flags & (FLAG_MORE | FLAG_COMMAND)) === 0) {
                this.handler.onMessage([body]); // a one-frame message
              } else {
                this.frame(body);
              }
            }
          }
          break;
        }
        case S_SIZE: {
          const need = (this.flags & FLAG_LONG) !== 0 ? 8 : 1;
          const n = Math.min(need - this.headLen, len - pos);
          this.head.set(chunk.subarray(pos, pos + n), this.headLen);
          this.headLen += n;
          pos += n;
          if (this.headLen < need) break;
          let size: number;
          if (need === 1) {
            size = this.head[0]!;
          } else {
            const hi = this.head.readUInt32BE(0);
            const lo = this.head.readUInt32BE(4);
            // 2^53 and beyond cannot be a number exactly; all of it is too large anyway.
            if (hi > 0x1fffff) throw new ZmtpError(ERRORS.TOO_LARGE, `ZMTP frame: a length of ${this.head.readBigUInt64BE(0)} bytes`);
            size = hi * 2 ** 32 + lo;
          }
          this.checkSize(size);
          if ((this.flags & FLAG_COMMAND) !== 0 && size > 0xffff + 0x10000 && !this.ready) {
            // A handshake command is small; a huge one before READY is an attack.
            throw new ZmtpError(ERRORS.TOO_LARGE, `ZMTP handshake: a command of ${size} bytes`);
          }
          this.bodySize = size;
          this.bodyLen = 0;
          if (size <= PREALLOC_MAX) this.body = Buffer.allocUnsafe(size);
          else this.pieces = [];
          this.state = S_BODY;
          break;
        }
        case S_BODY: {
          const n = Math.min(this.bodySize - this.bodyLen, len - pos);
          if (n > 0) {
            if (this.body !== null) this.body.set(chunk.subarray(pos, pos + n), this.bodyLen);
            else this.pieces!.push(Buffer.from(chunk.subarray(pos, pos + n)));
            this.bodyLen += n;
            pos += n;
          }
          if (this.bodyLen < this.bodySize) break;
          const body = this.body ?? Buffer.concat(this.pieces!, this.bodySize);
          this.body = null;
          this.pieces = null;
          this.state = S_FLAGS;
          this.frame(body);
          break;
        }
        default:
          return;
      }
    }
  }

  private checkSize(size: number): void {
    if ((this.flags & FLAG_COMMAND) !== 0) {
      if (size > this.maxMessageSize && size > 0xffff) {
        throw new ZmtpError(ERRORS.TOO_LARGE, `ZMTP command of ${size} bytes is over the limit`);
      }
      return;
    }
    if (this.messageSize + size > this.maxMessageSize) {
      throw new ZmtpError(ERRORS.TOO_LARGE, `ZMTP message of at least ${this.messageSize + size} bytes is over maxMessageSize (${this.maxMessageSize})`);
    }
  }

  private greeting(): void {
    const h = this.head;
    const major = h[10]!;
    const minor = major > 3 ? 1 : h[11]!;
    const mechEnd = h.indexOf(0, 12);
    const mechanism = h.toString('latin1', 12, mechEnd < 0 || mechEnd > 32 ? 32 : mechEnd);
    if (!h.subarray(12, 32).equals(Buffer.concat([MECHANISM_NULL, Buffer.alloc(16)]))) {
      throw new ZmtpError(ERRORS.MECHANISM, `ZMTP greeting: the peer asks for the ${JSON.stringify(mechanism)} mechanism; only NULL is supported`);
    }
    const asServer = h[32]!;
    if (asServer > 1) throw new ZmtpError(ERRORS.AS_SERVER, `ZMTP greeting: as-server is ${asServer} (0 or 1)`);
    this.peerMinor = minor >= 1 ? 1 : 0;
    this.headLen = 0;
    this.state = S_FLAGS;
    this.handler.onGreeting({ major, minor, mechanism, asServer: asServer === 1 });
  }

  private frame(body: Buffer): void {
    if ((this.flags & FLAG_COMMAND) !== 0) {
      this.command(body);
      return;
    }
    this.frames.push(body);
    this.messageSize += body.length;
    if ((this.flags & FLAG_MORE) === 0) {
      const frames = this.frames;
      this.frames = [];
      this.messageSize = 0;
      this.handler.onMessage(frames);
    }
  }

  private command(body: Buffer): void {
    if (body.length < 1 || body[0]! === 0 || body[0]! + 1 > body.length) {
      throw new ZmtpError(ERRORS.COMMAND, 'ZMTP command: the name is empty or longer than the command');
    }
    const name = body.toString('latin1', 1, 1 + body[0]!);
    const data = body.subarray(1 + body[0]!);
    if (!this.ready) {
      if (name === 'READY') {
        const ready = parseReady(data);
        this.ready = true;
        this.handler.onReady(ready);
        return;
      }
      if (name === 'ERROR') throw peerError(data);
      throw new ZmtpError(ERRORS.UNEXPECTED, `ZMTP handshake: ${JSON.stringify(name)} before READY`);
    }
    switch (name) {
      case 'PING': {
        if (data.length < 2 || data.length > 2 + 16) throw new ZmtpError(ERRORS.COMMAND, 'ZMTP PING: the TTL is missing or the context is over 16 bytes');
        this.handler.onPing(data.readUInt16BE(0), data.subarray(2));
        return;
      }
      case 'PONG':
        if (data.length > 16) throw new ZmtpError(ERRORS.COMMAND, 'ZMTP PONG: the context is over 16 bytes');
        this.handler.onPong(data);
        return;
      case 'SUBSCRIBE':
      case 'CANCEL':
        this.handler.onSubscription(name === 'SUBSCRIBE', Buffer.from(data));
        return;
      case 'ERROR':
        throw peerError(data);
      case 'READY':
        throw new ZmtpError(ERRORS.UNEXPECTED, 'ZMTP: a second READY');
      default:
        // Unknown commands are ignored, as libzmq does: later versions may add some.
        return;
    }
  }
}

function peerError(data: Buffer): ZmtpError {
  if (data.length < 1 || data[0]! + 1 > data.length) return new ZmtpError(ERRORS.COMMAND, 'ZMTP ERROR: a malformed reason');
  const reason = data.toString('latin1', 1, 1 + data[0]!).replace(/[^\x20-\x7e]/g, '?');
  return new ZmtpError(ERRORS.PEER_ERROR, `ZMTP: the peer sent ERROR ${JSON.stringify(reason)}`);
}

const SOCKET_TYPES = new Set(Object.keys(COMPATIBLE));

/** Parses the metadata of a READY command. Throws a ZmtpError. */
export function parseReady(data: Buffer): ReadyProperties {
  const properties = new Map<string, Buffer>();
  let pos = 0;
  while (pos < data.length) {
    const nameLen = data[pos]!;
    if (nameLen === 0 || pos + 1 + nameLen + 4 > data.length) throw new ZmtpError(ERRORS.PROPERTY, 'ZMTP READY: a truncated property');
    const name = data.toString('latin1', pos + 1, pos + 1 + nameLen);
    pos += 1 + nameLen;
    const valueLen = data.readUInt32BE(pos);
    pos += 4;
    if (pos + valueLen > data.length) throw new ZmtpError(ERRORS.PROPERTY, `ZMTP READY: the value of ${JSON.stringify(name)} runs past the command`);
    properties.set(name, Buffer.from(data.subarray(pos, pos + valueLen)));
    pos += valueLen;
  }
  let socketType: Buffer | undefined;
  let identity: Buffer | undefined;
  for (const [k, v] of properties) {
    const lower = k.toLowerCase();
    if (lower === 'socket-type') socketType = v;
    else if (lower === 'identity') identity = v;
  }
  if (socketType === undefined) throw new ZmtpError(ERRORS.PROPERTY, 'ZMTP READY: no Socket-Type property');
  const type = socketType.toString('latin1');
  if (!SOCKET_TYPES.has(type)) throw new ZmtpError(ERRORS.SOCKET_TYPE, `ZMTP READY: unknown socket type ${JSON.stringify(type.slice(0, 32))}`);
  if (identity !== undefined && identity.length > 255) throw new ZmtpError(ERRORS.PROPERTY, 'ZMTP READY: an Identity over 255 bytes');
  return { socketType: type as SocketTypeName, identity: identity ?? Buffer.alloc(0), properties };
}

// ---- encoding ------------------------------------------------------------------------

/** Our greeting: ZMTP 3.1, NULL, as-server 0 (NULL ignores it). */
export function encodeGreeting(): Buffer {
  const g = Buffer.alloc(GREETING_SIZE);
  g[0] = 0xff;
  g[9] = 0x7f;
  g[10] = 3;
  g[11] = 1;
  MECHANISM_NULL.copy(g, 12);
  return g;
}

/** A command frame: name and data. */
export function encodeCommand(name: string, data: Uint8Array = Buffer.alloc(0)): Buffer {
  const nameLen = Buffer.byteLength(name, 'latin1');
  if (nameLen === 0 || nameLen > 255) throw new RangeError('a ZMTP command name is 1 to 255 bytes');
  const size = 1 + nameLen + data.length;
  const long = size > 255;
  const out = Buffer.allocUnsafe((long ? 9 : 2) + size);
  let pos: number;
  if (long) {
    out[0] = FLAG_COMMAND | FLAG_LONG;
    out.writeUInt32BE(Math.floor(size / 2 ** 32), 1);
    out.writeUInt32BE(size >>> 0, 5);
    pos = 9;
  } else {
    out[0] = FLAG_COMMAND;
    out[1] = size;
    pos = 2;
  }
  out[pos++] = nameLen;
  pos += out.write(name, pos, 'latin1');
  out.set(data, pos);
  return out;
}

/** READY with Socket-Type, and Identity when one is given. */
export function encodeReady(socketType: SocketTypeName, identity?: Uint8Array): Buffer {
  const parts: Buffer[] = [];
  const prop = (name: string, value: Uint8Array) => {
    const head = Buffer.allocUnsafe(1 + name.length + 4);
    head[0] = name.length;
    head.write(name, 1, 'latin1');
    head.writeUInt32BE(value.length, 1 + name.length);
    parts.push(head, Buffer.from(value));
  };
  prop('Socket-Type', Buffer.from(socketType, 'latin1'));
  if (identity !== undefined && identity.length > 0) prop('Identity', identity);
  return encodeCommand('READY', Buffer.concat(parts));
}

/** ERROR with a reason (cut to 255 bytes). */
export function encodeError(reason: string): Buffer {
  const r = Buffer.from(reason, 'latin1').subarray(0, 255);
  return encodeCommand('ERROR', Buffer.concat([Buffer.from([r.length]), r]));
}

export function encodePing(ttlDeciseconds: number, context: Uint8Array = Buffer.alloc(0)): Buffer {
  const data = Buffer.allocUnsafe(2 + context.length);
  data.writeUInt16BE(Math.max(0, Math.min(0xffff, Math.round(ttlDeciseconds))), 0);
  data.set(context, 2);
  return encodeCommand('PING', data);
}

export function encodePong(context: Uint8Array): Buffer {
  return encodeCommand('PONG', context);
}

/** A subscription as the peer's version wants it: a command for 3.1, a message for 3.0. */
export function encodeSubscription(subscribe: boolean, topic: Uint8Array, peerMinor: number): Buffer {
  if (peerMinor >= 1) return encodeCommand(subscribe ? 'SUBSCRIBE' : 'CANCEL', topic);
  const body = Buffer.allocUnsafe(1 + topic.length);
  body[0] = subscribe ? 1 : 0;
  body.set(topic, 1);
  return encodeMessage([body]);
}

/** Bytes of the frame header for a body of `size` bytes. */
export function frameHeaderSize(size: number): number {
  return size > 255 ? 9 : 2;
}

/** Writes one frame header at out[pos]; returns the position after it. */
export function writeFrameHeader(out: Buffer, pos: number, size: number, more: boolean): number {
  if (size > 255) {
    // Byte stores: cheaper than writeUInt32BE's checks, once per frame sent.
    const hi = Math.floor(size / 2 ** 32);
    out[pos] = (more ? FLAG_MORE : 0) | FLAG_LONG;
    out[pos + 1] = hi >>> 24;
    out[pos + 2] = hi >>> 16;
    out[pos + 3] = hi >>> 8;
    out[pos + 4] = hi;
    out[pos + 5] = size >>> 24;
    out[pos + 6] = size >>> 16;
    out[pos + 7] = size >>> 8;
    out[pos + 8] = size;
    return pos + 9;
  }
  out[pos] = more ? FLAG_MORE : 0;
  out[pos + 1] = size;
  return pos + 2;
}

/** A whole multipart message in one Buffer (simple, for tests and small messages). */
export function encodeMessage(frames: readonly Uint8Array[]): Buffer {
  let total = 0;
  for (const f of frames) total += frameHeaderSize(f.length) + f.length;
  const out = Buffer.allocUnsafe(total);
  let pos = 0;
  for (let i = 0; i < frames.length; i++) {
    const f = frames[i]!;
    pos = writeFrameHeader(out, pos, f.length, i < frames.length - 1);
    out.set(f, pos);
    pos += f.length;
  }
  return out;
}
