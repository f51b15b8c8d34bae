// node.ts -- node's own http.Server (and so any application written for
// node:http, frameworks included) served from iomux sockets:
//
//   iomux.http.serveNode(http.createServer(app)).listen(3000);
//
// Each accepted iomux socket is wrapped in a NodeSocket, a net.Socket without
// a libuv handle whose bytes come from and go to the iomux socket, and handed
// to the node server as a 'connection'. Node's HTTP parser,
// keep-alive, pipelining, timeouts and backpressure then run unchanged.
//
// Node's http.Server is a net.Server: whether it is listening, its address(),
// close() and its 'close' event all derive from two fields of net.Server,
// _handle (the listener) and _connections (the count of live connections).
// While an iomux server feeds it, the node server gets a stand-in listener in
// _handle and the count of the connections it was given, so that node's own
// code does the right thing: listening is true, address() is the iomux
// listener's, close() stops the iomux listeners, closes idle keep-alive
// connections and emits 'close' once every connection is gone. Emitting
// 'listening' on the node server starts node's connection tracking, which is
// what headersTimeout, requestTimeout, closeIdleConnections() and
// closeAllConnections() work from.
import { Server as NetServer, Socket as NetSocket } from 'node:net';
import { Server as HttpServerClass, type IncomingMessage, type Server as HttpServer, type ServerResponse as NodeServerResponse } from 'node:http';
import { invalidArgType, outOfRange } from '../errors';
import { loop } from '../loop';
import { Server, type ServerOptions } from '../server';
import type { AddressInfo, Socket } from '../socket';
import { adoptAppPrototypes } from './node-app';
import { installResponseEnd } from './node-response';
import { drainOptions, type DrainOptions } from './server';

// Node's own limit for socket timeouts; larger values are clamped, as node does.
const TIMEOUT_MAX = 2 ** 31 - 1;
// Node 20's default stream high-water mark, for a node server that names none.
const DEFAULT_HWM = 16 * 1024;

const HEAD_END = Buffer.from('\r\n\r\n');
const UPGRADE = Buffer.from('pgrade'); // [Uu]pgrade, in an Upgrade or Connection header
const CONNECT = Buffer.from('CONNECT ');

/** A head that may start an upgrade or a CONNECT tunnel: its following bytes stay with it. */
function mayUpgrade(chunk: Buffer, headEnd: number): boolean {
  const u = chunk.indexOf(UPGRADE);
  return (u >= 0 && u < headEnd) || chunk.indexOf(CONNECT) === 0;
}

function isGetOrHead(c: Buffer): boolean {
  return (c[0] === 0x47 && c[1] === 0x45 && c[2] === 0x54 && c[3] === 0x20) || // 'GET '
    (c[0] === 0x48 && c[1] === 0x45 && c[2] === 0x41 && c[3] === 0x44 && c[4] === 0x20); // 'HEAD '
}

function emitClose(s: NodeSocket, hadError: boolean): void {
  s.emit('close', hadError);
}

function flushHeld(s: NodeSocket): void {
  s._flushHeld();
}

// After the ticks queued so far and those they queue (the tick queue drains
// before promise jobs run), and after the promise jobs queued before it: what
// node's own sockets get between two callbacks from the native side.
function queueFlush(s: NodeSocket): void {
  queueMicrotask(() => flushHeld(s));
}

/** The parts of a Readable's state that deliver() reads (node's own field names). */
interface ReadableStateView {
  flowing: boolean | null;
  length: number;
  ended: boolean;
  dataEmitted: boolean;
}

/** The part of node's HTTP parser that deliver() looks at (node sets socket.parser). */
interface NodeParserView {
  incoming?: { complete: boolean } | null;
}

/** The part of node's net.Server that a socket reports its end to (socket._server). */
interface ServerView {
  _connections: number;
  _emitCloseIfDrained(): void;
}

/** serveNode()'s options: the iomux server's, and takeOverListen. */
export interface ServeNodeOptions extends ServerOptions {
  /**
   * The node server's own listen() listens through iomux (with the iomux
   * server serveNode returns): code that calls server.listen() itself, a
   * framework's listen() included, moves over unchanged. Default false.
   */
  takeOverListen?: boolean;
}

/** The iomux server serveNode() returns: a TCP Server with drain(). */
export interface ServeNodeServer extends Server {
  /** The graceful close a retiring worker uses (docs/http-node.md). */
  drain(options?: DrainOptions): Promise<void>;
}

/** What the node server sees of a local address when the listener is bound to a specific one. */
interface LocalInfo {
  address: string | undefined;
  family: string | undefined;
  port: number | undefined;
}

/**
 * A net.Socket (without a libuv handle) over an accepted iomux socket: what
 * req.socket is, so that code checking `instanceof net.Socket` and using its
 * members works. Bytes come from and go to the iomux socket; remote and local
 * addresses come from iomux (kept at accept, no syscall); setTimeout,
 * setNoDelay, setKeepAlive, ref, unref, destroySoon, resetAndDestroy,
 * bytesRead, bytesWritten and bufferSize act on it.
 */
export class NodeSocket extends NetSocket {
  /** The iomux socket underneath. */
  readonly iomuxSocket: Socket;
  /** The idle timeout in ms set with setTimeout(), as net.Socket's. */
  override timeout: number | undefined = undefined;
  override readonly pending = false;
  private readonly local: LocalInfo | null;
  // The last values asked for: node's http and applications call these per
  // request; only a change costs a setsockopt, as with net.Socket.
  private noDelay: boolean;
  private keepAliveOn: boolean;
  private keepAliveDelay: number;
  /** A write the iomux socket's queue could not take yet: released by 'drain' or by destroy. */
  private blockedWrite: ((err?: Error | null) => void) | null = null;
  /** A response ended by endResponse() whose bytes wait for 'drain': its 'finish' comes then. */
  private blockedEnd: ((arg: unknown) => void) | null = null;
  private blockedEndArg: unknown = null;
  /** Bytes (and null for the FIN) read but handed to the stream later: see deliver(). */
  private held: (Buffer | null)[] | null = null;
  private flushScheduled = false;
  /** The peer's FIN arrived: the socket reads no more. */
  private readDone = false;
  /** As asked with ref() and unref(). */
  private userRef = true;
  /** The idle timeout the iomux socket is armed with (0: none). */
  private armedMs = 0;
  /** loop._now() at the last write to the iomux socket. */
  private lastWrite = -Infinity;
  /** Node's HTTP parser while node's http server reads this socket (node sets it). */
  parser: NodeParserView | null | undefined = undefined;
  declare _readableState: ReadableStateView;
  /** The node server that accepted it, as net.Socket's: told when it closes. */
  _server: ServerView | null = null;
  server: ServerView | null = null;

  /** @internal */
  constructor(sock: Socket, local: LocalInfo | null, highWaterMark: number, noDelay: boolean, keepAlive: [boolean, number]) {
    // No handle: the bytes come from and go to iomux. allowHalfOpen: node's
    // http server decides when to end its side (as it does on node's own
    // sockets), not the peer's FIN. Strings are not made into Buffers
    // (net.Socket's streams have decodeStrings: false): node's http writes
    // heads (often head and body together) as strings, which iomux encodes.
    super({ allowHalfOpen: true, readableHighWaterMark: highWaterMark, writableHighWaterMark: highWaterMark } as ConstructorParameters<typeof NetSocket>[0]);
    this.iomuxSocket = sock;
    this.local = local;
    this.noDelay = noDelay;
    this.keepAliveOn = keepAlive[0];
    this.keepAliveDelay = keepAlive[1];
    sock.on('data', (chunk: Buffer) => {
      if (this.held !== null) this.held.push(chunk);
      else this.deliver(chunk);
    });
    sock.on('end', () => {
      // The kernel stops reading for this socket: as a net.Socket's handle,
      // it holds the process only while bytes are still to be written.
      this.readDone = true;
      this.updateRef();
      // Node processes the bytes it was just given in ticks to come (a
      // request's 'end', the handler's response); its 'end' handling on a
      // socket must come after them, as with node's own sockets, where the
      // FIN is a later read callback.
      (this.held ??= []).push(null);
      if (!this.flushScheduled) this.scheduleFlush();
    });
    sock.on('drain', () => this.releaseWrite());
    sock.on('timeout', () => {
      if (this.timeout) return void this.emit('timeout');
      // Turned off by setTimeout(0) since it was armed: disarm it now.
      sock.setTimeout(0);
      this.armedMs = 0;
    });
    sock.on('error', (err: Error) => {
      if (this.destroyed) return;
      // As with iomux sockets, a peer's reset reaches 'error' listeners only:
      // it can never crash the process. Node's http server listens while it
      // owns the socket, and reports it as 'clientError'.
      this.destroy(this.listenerCount('error') > 0 || !sock._peerError ? err : undefined);
    });
    sock.on('close', () => {
      if (!this.destroyed) this.destroy();
    });
  }

  /**
   * Hands a chunk to the stream. Node's http parser runs as the chunk is
   * pushed. With node's own sockets, the parser gives back control after a
   * request's head, and the handler's process.nextTick and promise jobs run
   * before the body is parsed: a handler that attaches 'data' and pauses
   * then still counts as reading, and node does not dump the body at the
   * response's end. The same happens here: when a head that announces a body
   * is followed by more bytes in the chunk, they go to the stream once the
   * ticks and promise jobs queued by then have run. GET and HEAD requests
   * and heads without a body go on at once. An upgrade or CONNECT head keeps its
   * following bytes (node hands them to the 'upgrade' or 'connect' listener).
   */
  private deliver(chunk: Buffer): void {
    const state = this._readableState;
    for (;;) {
      const parser = this.parser;
      // Node parses synchronously only while the stream flows with nothing buffered.
      if (parser === null || parser === undefined || state.flowing !== true || state.length !== 0) break;
      const before = parser.incoming;
      if (before !== null && before !== undefined && !before.complete) break; // inside a body
      // GET and HEAD carry no body in practice: pipelined ones go to node
      // in one piece, as before (node parses a piece to its end even when
      // a request pauses the socket).
      if (isGetOrHead(chunk)) break;
      const end = chunk.indexOf(HEAD_END);
      if (end < 0 || end + 4 >= chunk.length || mayUpgrade(chunk, end)) break;
      this.push(chunk.subarray(0, end + 4));
      chunk = chunk.subarray(end + 4);
      if (this.destroyed) return;
      const now = this.parser === parser ? parser.incoming : null;
      if (now !== null && now !== undefined && now !== before && !now.complete) {
        (this.held ??= []).push(chunk);
        if (!this.flushScheduled) this.scheduleFlush();
        return;
      }
    }
    if (state.flowing === true && state.length === 0 && !state.ended && !this.destroyed) {
      // What push() does for a flowing stream with nothing buffered, without
      // its per-chunk tick to read more (this stream has no more to read:
      // the iomux socket pushes as bytes come).
      state.dataEmitted = true;
      // One listener (node's http server's, the usual case): called as
      // emit() would, without emit()'s generic path.
      const h = (this as unknown as { _events: Record<string, unknown> })._events.data;
      if (typeof h === 'function') (h as (c: Buffer) => void).call(this, chunk);
      else this.emit('data', chunk);
      return;
    }
    // The stream's buffer is full: stop reading from the kernel (TCP
    // backpressure) until _read() asks for more.
    if (!this.push(chunk)) this.iomuxSocket.pause();
  }

  private scheduleFlush(): void {
    this.flushScheduled = true;
    process.nextTick(queueFlush, this);
  }

  /** @internal The bytes (and the FIN) held back by deliver(), in order. */
  _flushHeld(): void {
    this.flushScheduled = false;
    const held = this.held;
    if (held === null) return;
    this.held = null;
    if (this.destroyed) return;
    for (let i = 0; i < held.length; i++) {
      const item = held[i]!;
      if (item === null) {
        this.push(null);
        // As net.Socket: 'end' comes now if nothing is left unread, whether
        // or not anyone reads (an upgraded socket nobody reads still ends).
        this.read(0);
      } else {
        this.deliver(item);
      }
      const again = this.held as (Buffer | null)[] | null;
      if (again !== null) {
        // deliver() held back part of a chunk: the rest waits behind it.
        for (let j = i + 1; j < held.length; j++) again.push(held[j]!);
        return;
      }
    }
  }

  private readonly onSentAfterEof = (): void => this.updateRef();

  /** Whether the iomux socket holds the process: as asked with ref()/unref(), and while reading or writing. */
  private updateRef(): void {
    const sock = this.iomuxSocket;
    if (this.userRef && (!this.readDone || sock.writableLength > 0 || this.blockedWrite !== null || this.blockedEnd !== null)) sock.ref();
    else sock.unref();
  }

  override _read(): void {
    this.iomuxSocket.resume();
  }

  // Writes go to the iomux socket while its queue is below the high-water
  // mark (so consecutive writes reach the kernel together); past it, the next
  // write waits for 'drain'.
  override _write(chunk: Buffer | string, encoding: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (chunk.length === 0) return cb(); // nothing to send (node's http ends some responses so)
    const sock = this.iomuxSocket;
    this.lastWrite = loop._now();
    // After the FIN, the socket holds the process until this write is out.
    const sent = this.readDone ? this.onSentAfterEof : undefined;
    const ok = typeof chunk === 'string' ? sock.write(chunk, encoding, sent) : sock.write(chunk, sent);
    if (this.readDone) this.updateRef();
    if (ok) return cb();
    this.blockedWrite = cb;
  }

  // Corked writes (node's http corks the head and the first body chunk)
  // leave as one write/writev. Empty chunks (node's http ends a response
  // with one, for its callback) are left out; a single chunk left needs no
  // cork, and neither do writes made while the loop dispatches a batch: the
  // core coalesces those by itself.
  override _writev(chunks: { chunk: Buffer | string; encoding: BufferEncoding }[], cb: (err?: Error | null) => void): void {
    const sock = this.iomuxSocket;
    this.lastWrite = loop._now();
    let first = -1;
    let last = -1;
    let n = 0;
    for (let i = 0; i < chunks.length; i++) {
      if (chunks[i]!.chunk.length === 0) continue;
      if (first < 0) first = i;
      last = i;
      n++;
    }
    let ok = true;
    if (n > 0) {
      const cork = n > 1 && !loop._inBatch;
      if (cork) sock.cork();
      for (let i = first; i <= last; i++) {
        const c = chunks[i]!;
        if (c.chunk.length === 0) continue;
        const sent = i === last && this.readDone ? this.onSentAfterEof : undefined;
        ok = typeof c.chunk === 'string' ? sock.write(c.chunk, c.encoding, sent) : sock.write(c.chunk, sent);
      }
      if (cork) sock.uncork();
    }
    if (this.readDone) this.updateRef();
    if (ok) return cb();
    this.blockedWrite = cb;
  }

  /**
   * @internal Whether a response may end with endResponse(): nothing of the
   * stream's own is queued or waiting, so bytes written straight to the
   * iomux socket keep their order.
   */
  _mayEndResponse(): boolean {
    return this.blockedWrite === null && this.blockedEnd === null && !this.destroyed &&
      this.writable && this.writableLength === 0;
  }

  /**
   * @internal A whole response (head, and the body when it is a Buffer) written
   * straight to the iomux socket, without the stream's cork, buffering,
   * writev and after-write tick: done() runs in a tick once the iomux
   * socket took it (at once, unless its queue is past the high-water mark:
   * then at 'drain'), as the stream's write callback would.
   */
  _endResponse<T>(data: string, encoding: BufferEncoding, body: Buffer | null, done: (arg: T) => void, arg: T): void {
    const sock = this.iomuxSocket;
    this.lastWrite = loop._now();
    const sent = this.readDone ? this.onSentAfterEof : undefined;
    let ok: boolean;
    if (body === null) {
      ok = sock.write(data, encoding, sent);
    } else {
      const cork = !loop._inBatch;
      if (cork) sock.cork();
      sock.write(data, encoding);
      ok = sock.write(body, sent);
      if (cork) sock.uncork();
    }
    if (ok) {
      process.nextTick(done, arg);
    } else {
      this.blockedEnd = done as (arg: unknown) => void;
      this.blockedEndArg = arg;
    }
    if (this.readDone) this.updateRef();
  }

  override _final(cb: (err?: Error | null) => void): void {
    const sock = this.iomuxSocket;
    if (sock.writableFinished) return cb();
    // 'finish' of the iomux socket: every byte and the FIN reached the kernel.
    sock.once('finish', () => cb());
    sock.end();
  }

  override _destroy(err: Error | null, cb: (err: Error | null) => void): void {
    this.iomuxSocket.destroy();
    this.held = null;
    // As net.Socket: the server counts its connections down here, not in a
    // 'close' listener an application could remove.
    const server = this._server;
    if (server !== null) {
      this._server = null;
      server._connections--;
      server._emitCloseIfDrained();
    }
    // A write left waiting for a drain that will never come completes
    // without error, as net.Socket's do when the handle closes under them.
    this.releaseWrite();
    cb(err);
    // net.Socket emits 'close' itself (its streams have emitClose: false),
    // after 'error'.
    process.nextTick(emitClose, this, err !== null);
  }

  /**
   * As net.Socket's: closes the connection with a TCP RST where the iomux
   * socket offers one, else closes it now.
   */
  override resetAndDestroy(): this {
    const sock = this.iomuxSocket as Socket & { resetAndDestroy?: () => unknown };
    if (typeof sock.resetAndDestroy === 'function' && !this.destroyed) sock.resetAndDestroy();
    this.destroy();
    return this;
  }

  private releaseWrite(): void {
    const done = this.blockedEnd;
    if (done !== null) {
      const arg = this.blockedEndArg;
      this.blockedEnd = null;
      this.blockedEndArg = null;
      if (this.readDone) this.updateRef();
      done(arg);
    }
    const cb = this.blockedWrite;
    if (cb !== null) {
      this.blockedWrite = null;
      if (this.readDone) this.updateRef();
      cb();
    }
  }

  // ---- addresses: kept by iomux at accept time, or the listener's ----------------
  // (remoteAddress, remotePort, remoteFamily, localAddress, localPort,
  // localFamily, bytesRead, bytesWritten and bufferSize are accessors on the
  // prototype, defined after the class: net.Socket declares them as fields.)
  declare readonly remoteAddress: string | undefined;
  declare readonly remotePort: number | undefined;
  declare readonly remoteFamily: string | undefined;
  declare readonly localAddress: string | undefined;
  declare readonly localPort: number | undefined;
  declare readonly localFamily: string | undefined;
  declare readonly bytesRead: number;
  declare readonly bytesWritten: number;
  declare readonly bufferSize: number;

  /** @internal */
  _local(): LocalInfo | null {
    return this.local;
  }

  override address(): AddressInfo | Record<string, never> {
    const l = this.local;
    if (l !== null && l.address !== undefined && l.family !== undefined && l.port !== undefined) {
      return { address: l.address, family: l.family, port: l.port };
    }
    return this.iomuxSocket.address();
  }

  // ---- net.Socket's options ---------------------------------------------------------

  /**
   * 'timeout' after ms without reads or writes; 0 disables. As net.Socket's,
   * cb is a once-listener for 'timeout'. iomux re-arms it on activity with no
   * syscall.
   */
  override setTimeout(ms: number, cb?: () => void): this {
    if (this.destroyed) return this;
    if (typeof ms !== 'number') throw invalidArgType('msecs', 'of type number', ms);
    if (!(ms >= 0)) throw outOfRange('msecs', '>= 0', ms);
    if (cb !== undefined && typeof cb !== 'function') throw invalidArgType('callback', 'of type function', cb);
    this.timeout = ms;
    // Node's http server turns the keep-alive timeout off at each request
    // and on again at its response: turning it off costs nothing here (a
    // timer that fires while it is off is dropped and disarmed then).
    // Node's http server re-arms it after every response, with the same
    // value: the response's write (under a millisecond ago) has already
    // restarted the iomux socket's idle clock, so that costs nothing either.
    if (ms !== 0) {
      const t = Math.min(ms, TIMEOUT_MAX);
      if (t !== this.armedMs || !(loop._now() - this.lastWrite < 1)) {
        this.iomuxSocket.setTimeout(t);
        this.armedMs = t;
      }
    }
    if (cb !== undefined) {
      if (ms === 0) this.removeListener('timeout', cb);
      else this.once('timeout', cb);
    }
    return this;
  }

  /** Node's streams call this on consumed sockets to refresh the timeout; iomux does that natively on every read and write. */
  _unrefTimer(): void {}

  override setNoDelay(noDelay?: boolean): this {
    const on = noDelay === undefined ? true : Boolean(noDelay);
    if (on !== this.noDelay && !this.destroyed) {
      this.noDelay = on;
      this.iomuxSocket.setNoDelay(on);
    }
    return this;
  }

  override setKeepAlive(enable?: boolean, initialDelayMs?: number): this {
    const on = Boolean(enable);
    const delay = Math.max(0, Math.trunc(Number(initialDelayMs) / 1000) || 0);
    if ((on !== this.keepAliveOn || (on && delay !== this.keepAliveDelay)) && !this.destroyed) {
      this.keepAliveOn = on;
      this.keepAliveDelay = delay;
      this.iomuxSocket.setKeepAlive(on, delay * 1000);
    }
    return this;
  }

  override ref(): this {
    this.userRef = true;
    this.updateRef();
    return this;
  }

  override unref(): this {
    this.userRef = false;
    this.iomuxSocket.unref();
    return this;
  }

  /** Ends the writable side, then destroys once everything was flushed (as net.Socket's). */
  override destroySoon(): void {
    if (this.writable) this.end();
    if (this.writableFinished) this.destroy();
    else this.once('finish', () => this.destroy());
  }
}

// An accepted connection's local address is its listener's unless the
// listener is bound to a wildcard; only then does iomux ask the kernel (once).
Object.defineProperties(NodeSocket.prototype, {
  remoteAddress: { configurable: true, get(this: NodeSocket) { return this.iomuxSocket.remoteAddress; } },
  remotePort: { configurable: true, get(this: NodeSocket) { return this.iomuxSocket.remotePort; } },
  remoteFamily: { configurable: true, get(this: NodeSocket) { return this.iomuxSocket.remoteFamily; } },
  localAddress: {
    configurable: true,
    get(this: NodeSocket) { const l = this._local(); return l !== null ? l.address : this.iomuxSocket.localAddress; },
  },
  localPort: {
    configurable: true,
    get(this: NodeSocket) { const l = this._local(); return l !== null ? l.port : this.iomuxSocket.localPort; },
  },
  localFamily: {
    configurable: true,
    get(this: NodeSocket) { const l = this._local(); return l !== null ? l.family : this.iomuxSocket.localFamily; },
  },
  bytesRead: { configurable: true, get(this: NodeSocket) { return this.iomuxSocket.bytesRead; } },
  /**
   * As net.Socket's: the bytes written so far, those the iomux socket took
   * and those still queued in this stream (corked, or behind a full queue).
   */
  bytesWritten: {
    configurable: true,
    get(this: NodeSocket) {
      let n = this.iomuxSocket.bytesWritten ?? 0;
      const queued = (this as unknown as { writableBuffer: { chunk: Buffer | string; encoding: BufferEncoding }[] }).writableBuffer;
      for (let i = 0; i < queued.length; i++) {
        const c = queued[i]!.chunk;
        n += typeof c === 'string' ? Buffer.byteLength(c, queued[i]!.encoding) : c.length;
      }
      return n;
    },
  },
  /** As net.Socket's (deprecated there): what write() queued and the iomux socket did not take yet. */
  bufferSize: { configurable: true, get(this: NodeSocket) { return this.writableLength; } },
});

// ---- the node server's side ------------------------------------------------------------

/** The fields of net.Server that its listening state, address(), close() and 'close' derive from. */
interface NetServerFields {
  _handle: unknown;
  _connections: number;
  _pipeName?: string;
  _unref?: boolean;
  _emitCloseIfDrained(): void;
  // net.Server's options as http.createServer() stored them.
  noDelay?: boolean;
  keepAlive?: boolean;
  keepAliveInitialDelay?: number; // seconds
  highWaterMark?: number;
}

type NodeServer = NetServer & NetServerFields;

/** The stand-in for a node server's listener while iomux servers listen for it. */
interface ListenerStandIn {
  close(): void;
  ref(): void;
  unref(): void;
  getsockname?(out: Partial<AddressInfo>): number;
}

/** The iomux servers feeding one node server. */
class Bridge {
  readonly servers = new Set<NodeHttpBridge>();
  handle: ListenerStandIn | null = null;
  /** The stand-in is in place and the node server's 'listening' is still to come. */
  announce = false;
  constructor(readonly node: NodeServer) {}

  /** The node server is listening as long as one of them is. */
  attach(first: NodeHttpBridge): void {
    const servers = this.servers;
    const handle: ListenerStandIn = {
      // node's close(): every iomux listener stops (their own 'close' follows
      // once their connections are gone).
      close: () => {
        this.handle = null;
        this.announce = false;
        const all = [...servers];
        servers.clear();
        for (const s of all) Server.prototype.close.call(s);
      },
      ref: () => {
        for (const s of servers) s.ref();
      },
      unref: () => {
        for (const s of servers) s.unref();
      },
    };
    const addr = first.address();
    if (typeof addr === 'string') {
      // Without getsockname, net's address() answers with the path, as for a unix server.
      this.node._pipeName = addr;
    } else {
      handle.getsockname = (out) => {
        for (const s of servers) {
          const a = s.address();
          if (a !== null && typeof a === 'object') {
            out.address = a.address;
            out.family = a.family;
            out.port = a.port;
            break;
          }
        }
        return 0;
      };
    }
    this.handle = handle;
    this.announce = true;
    this.node._handle = handle;
  }
}

const bridges = new WeakMap<NetServer, Bridge>();

function isWildcard(address: string): boolean {
  return address === '::' || address === '0.0.0.0';
}

/** An iomux server whose connections go to a node server. */
class NodeHttpBridge extends Server {
  private readonly bridge: Bridge;
  private readonly highWaterMark: number;
  private readonly noDelayDefault: boolean;
  private readonly keepAliveDefault: [boolean, number];
  private local: LocalInfo | null = null;
  private warnedAccept = false;
  private draining: Promise<void> | null = null;

  constructor(bridge: Bridge, options: ServerOptions, highWaterMark: number) {
    super(options);
    this.bridge = bridge;
    this.highWaterMark = highWaterMark;
    this.noDelayDefault = options.noDelay !== false;
    this.keepAliveDefault = options.keepAlive ? [true, Math.trunc((options.keepAliveInitialDelay ?? 0) / 1000)] : [false, 0];
    this.on('listening', () => this.onListening());
    this.on('connection', (sock: Socket) => this.onConnection(sock));
    this.on('error', (err: Error) => this.onError(err));
  }

  // The node server listens as soon as this one does (synchronously for an IP
  // or a path, as node's listen()), so that its listening, address() and
  // close() are right from the next line on. The callback runs with `this`
  // the node server, as a callback given to node's listen() does.
  override listen(...args: any[]): this {
    this.draining = null;
    const last = args.length - 1;
    if (last >= 0 && typeof args[last] === 'function') {
      const cb = args[last] as () => void;
      const node = this.bridge.node;
      args[last] = function listening() {
        cb.call(node);
      };
    }
    (super.listen as (...a: unknown[]) => this)(...args);
    if (this.listening) this.join();
    return this;
  }

  /**
   * An error of this server (the listen failed: EADDRINUSE, EACCES, a failed
   * lookup; accepting ran out of descriptors) is the node server's, as if its
   * own listen() had met it: emitted on the node server, which crashes the
   * process when nobody listens there, as node does. Accept errors, which
   * iomux recovers from, only go there when someone listens; otherwise a
   * warning, once.
   */
  private onError(err: Error): void {
    const node = this.bridge.node;
    if ((err as { syscall?: string }).syscall !== 'accept' || node.listenerCount('error') > 0) {
      node.emit('error', err);
    } else if (!this.warnedAccept) {
      this.warnedAccept = true;
      process.emitWarning(`iomux server: ${err.message}; accepting resumes when descriptors free up`, 'IomuxWarning');
    }
  }

  private onListening(): void {
    if (!this.listening) return; // closed before 'listening' was delivered
    this.join(); // after a hostname lookup, this is the first news of it
    const b = this.bridge;
    if (b.announce && b.node._handle === b.handle) {
      b.announce = false;
      // Starts node's connection tracking (headersTimeout, requestTimeout,
      // closeIdleConnections), and tells the application, as node's listen() would.
      b.node.emit('listening');
    }
  }

  private join(): void {
    const b = this.bridge;
    if (b.servers.has(this)) return;
    const a = this.address();
    // Accepted sockets share the listener's port, and its address unless it is a wildcard.
    if (a !== null && typeof a === 'object') {
      this.local = isWildcard(a.address) ? { address: undefined, family: undefined, port: a.port } : a;
    } else {
      this.local = null;
    }
    b.servers.add(this);
    const node = b.node;
    // A node server listening on its own (node's listen()) keeps its own state;
    // the connections still go to it.
    if (node._handle !== null && node._handle !== undefined) return;
    b.attach(this);
    // node.unref() before listening applies once listening, as in net.
    if (node._unref) this.unref();
  }

  private onConnection(sock: Socket): void {
    const node = this.bridge.node;
    const local = this.local;
    const d = new NodeSocket(sock, local !== null && local.address !== undefined ? local : null,
      this.highWaterMark, this.noDelayDefault, this.keepAliveDefault);
    // maxConnections of the node server, as net applies it.
    const max = node.maxConnections;
    if (max && node._connections >= max) {
      node.emit('drop', {
        localAddress: d.localAddress, localPort: d.localPort, localFamily: d.localFamily,
        remoteAddress: d.remoteAddress, remotePort: d.remotePort, remoteFamily: d.remoteFamily,
      });
      d.destroy();
      return;
    }
    node._connections++;
    d._server = node;
    d.server = node;
    adoptAppPrototypes(node as unknown as HttpServer);
    node.emit('connection', d);
  }

  /**
   * The graceful close a retiring worker uses, as HttpServer.drain(): stops
   * accepting. When this is the last iomux server of the node server, the
   * node server's responses from then on say Connection: close (their
   * connection closes after them), requests under way finish, and after
   * options.idleGrace ms (500) the node server is closed, which closes the
   * connections with no request under way; after options.timeout ms, every
   * connection left is closed (closeAllConnections()). Resolves once this
   * server's connections are gone.
   */
  drain(options?: DrainOptions): Promise<void> {
    const { idleGrace, timeout } = drainOptions(options);
    if (this.draining !== null) return this.draining;
    const b = this.bridge;
    const node = b.node as unknown as HttpServer & NodeServer;
    const wasListening = this.listening;
    b.servers.delete(this);
    this.draining = new Promise<void>((resolve) => {
      super.close(() => resolve());
    });
    if (wasListening && b.servers.size === 0 && b.handle !== null && node._handle === b.handle) {
      const closeAfter = (_req: IncomingMessage, res: NodeServerResponse): void => {
        res.shouldKeepAlive = false;
      };
      node.prependListener('request', closeAfter);
      const grace = setTimeout(() => node.close(), idleGrace);
      grace.unref();
      const hard = timeout === undefined ? null : setTimeout(() => node.closeAllConnections(), timeout);
      hard?.unref();
      void this.draining.then(() => {
        clearTimeout(grace);
        if (hard !== null) clearTimeout(hard);
        node.removeListener('request', closeAfter);
        if (node._handle === b.handle && b.handle !== null) node.close();
      });
    }
    return this.draining;
  }

  /**
   * Stops accepting. Closing the last iomux server of a node server closes the
   * node server, as its own close() would: idle keep-alive connections are
   * closed, and its 'close' follows once every connection is gone.
   */
  override close(cb?: (err?: Error) => void): this {
    const b = this.bridge;
    const wasListening = this.listening;
    b.servers.delete(this);
    super.close(cb);
    if (wasListening && b.servers.size === 0 && b.handle !== null && b.node._handle === b.handle) b.node.close();
    return this;
  }
}

/**
 * Serves a node http.Server from iomux sockets: returns an iomux Server (not
 * yet listening) whose connections go to nodeServer, as if node had accepted
 * them. options are the iomux server's; noDelay, keepAlive,
 * keepAliveInitialDelay and the high-water mark default to those the node
 * server was created with.
 *
 *   iomux.http.serveNode(http.createServer(app)).listen(3000);
 */
export function serveNode(nodeServer: HttpServer, options?: ServeNodeOptions): ServeNodeServer {
  if (!(nodeServer instanceof NetServer)) throw invalidArgType('nodeServer', 'an instance of http.Server', nodeServer);
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw invalidArgType('options', 'of type object', options);
  }
  const node = nodeServer as unknown as NodeServer;
  // Responses on NodeSockets end without the socket stream's machinery (node-response.ts).
  installResponseEnd(NodeSocket);
  let bridge = bridges.get(nodeServer);
  if (bridge === undefined) {
    bridge = new Bridge(node);
    bridges.set(nodeServer, bridge);
  }
  const hwm = options?.writableHighWaterMark ?? node.highWaterMark ?? DEFAULT_HWM;
  const keepAlive = options?.keepAlive ?? node.keepAlive === true;
  const opts: ServerOptions = {
    ...options,
    // The node server decides when to end its side, and starts reading itself.
    allowHalfOpen: true,
    pauseOnConnect: false,
    noDelay: options?.noDelay ?? node.noDelay !== false,
    keepAlive,
    keepAliveInitialDelay: options?.keepAliveInitialDelay ?? (node.keepAliveInitialDelay ?? 0) * 1000,
    writableHighWaterMark: hwm,
  };
  delete (opts as ServeNodeOptions).takeOverListen;
  const server = new NodeHttpBridge(bridge, opts, hwm);
  if (options?.takeOverListen !== undefined && typeof options.takeOverListen !== 'boolean') {
    throw invalidArgType('options.takeOverListen', 'of type boolean', options.takeOverListen);
  }
  if (options?.takeOverListen === true) takeOver(node, server);
  return server;
}

/** A listen() that node must do itself: on a handle or a file descriptor it was given. */
function handleLike(first: unknown): boolean {
  if (first === null || typeof first !== 'object') return false;
  const o = first as { _handle?: unknown; handle?: unknown; fd?: unknown };
  return o._handle !== undefined || o.handle !== undefined || o.fd !== undefined;
}

/** The node server's own listen() now listens with server (serveNode's takeOverListen). */
function takeOver(node: NodeServer, server: NodeHttpBridge): void {
  Object.defineProperty(node, 'listen', {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function listen(this: NodeServer, ...args: unknown[]): NodeServer {
      if (this !== node || handleLike(args[0])) return NetServer.prototype.listen.apply(this, args as never) as unknown as NodeServer;
      (server.listen as (...a: unknown[]) => Server)(...args);
      return node;
    },
  });
}

let takeOverAll: (() => void) | null = null;

/**
 * Process-wide takeOverListen: from now on, every node http.Server's own
 * listen() (the one inside Express's app.listen(), Fastify's and Koa's
 * listen, or an application's) is served by iomux, as
 * serveNode(server, { takeOverListen: true, ...options }) would.
 * https servers, and listen() on a handle or an fd, stay with node.
 * Returns a function that gives listen() back to node for servers that
 * have not listened yet.
 */
export function takeOverListen(options?: ServerOptions): () => void {
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw invalidArgType('options', 'of type object', options);
  }
  if (takeOverAll !== null) throw new Error('takeOverListen() is already in effect; call the function it returned first');
  const proto = HttpServerClass.prototype as unknown as { listen?: unknown };
  const had = Object.getOwnPropertyDescriptor(proto, 'listen');
  Object.defineProperty(proto, 'listen', {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function listen(this: NodeServer, ...args: unknown[]): NodeServer {
      if (handleLike(args[0]) || Object.hasOwn(this, 'listen')) return NetServer.prototype.listen.apply(this, args as never) as unknown as NodeServer;
      serveNode(this as unknown as HttpServer, { ...options, takeOverListen: true });
      return (this.listen as (...a: unknown[]) => NodeServer)(...args);
    },
  });
  const restore = () => {
    if (takeOverAll !== restore) return;
    takeOverAll = null;
    if (had !== undefined) Object.defineProperty(proto, 'listen', had);
    else delete proto.listen;
  };
  takeOverAll = restore;
  return restore;
}
