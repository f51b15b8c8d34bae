// socket.ts -- ZeroMQ socket types over ZMTP connections, with libzmq's
// semantics and an API close to zeromq.js v6.
//
// A Pipe is what libzmq calls a pipe: the per-peer queues. A pipe made by
// connect() exists from the call on and survives reconnects (messages sent
// while the peer is away wait in it, up to the send high-water mark); a pipe
// of an accepted connection lives as long as the connection (and until the
// messages it had received are read).
import { EventEmitter } from 'node:events';
import { chmodSync } from 'node:fs';
import { loop, type Timer } from '../loop';
import { connect as ioConnect, type Socket as IoSocket } from '../socket';
import { createServer, type Server as IoServer } from '../server';
import { ZmtpError, type SocketTypeName } from './codec';
import { Connection, type ConnectionOptions, type ConnectionOwner } from './connection';
import { formatTcp, parseEndpoint, type Endpoint } from './endpoint';

export type MessageLike = Buffer | Uint8Array | ArrayBuffer | string;
export type Message = MessageLike | readonly MessageLike[];

export interface SocketOptions {
  /** Messages queued per peer before send waits (PUSH, DEALER, REQ, ROUTER with routerMandatory) or drops (PUB, ROUTER). 0: no limit. Default 1000. */
  sendHighWaterMark?: number;
  /** Messages received and not yet read, per peer, before reading from it pauses. 0: no limit. Default 1000. */
  receiveHighWaterMark?: number;
  /** Milliseconds close() waits for queued messages to be sent; -1: until they are. Default 0 (as zeromq.js). */
  linger?: number;
  /** Milliseconds before reconnecting a connect() endpoint; -1: never. Default 100. */
  reconnectInterval?: number;
  /** Upper bound of the doubling reconnect delay; 0: no doubling. Default 0. */
  reconnectIntervalMax?: number;
  /** Milliseconds between PINGs; 0: none. Default 0. */
  heartbeatInterval?: number;
  /** Milliseconds without any traffic after a PING before the connection is dropped. Default heartbeatInterval. */
  heartbeatTimeout?: number;
  /** Milliseconds the peer should wait for traffic before dropping us (sent in PING). Default 0. */
  heartbeatTimeToLive?: number;
  /** Alias of heartbeatTimeToLive. */
  heartbeatTtl?: number;
  /** Identity sent in READY (ROUTER peers route by it). */
  routingId?: string | Uint8Array;
  /** Largest message accepted from a peer, in bytes; -1: no limit. Default -1. */
  maxMessageSize?: number;
  /** Milliseconds the ZMTP handshake may take; 0: no limit. Default 30000. */
  handshakeInterval?: number;
  /** The kernel's send buffer of each connection (SO_SNDBUF, libzmq's ZMQ_SNDBUF), in bytes; -1: the OS default (autotuned). Default -1. */
  sendBufferSize?: number;
  /** The kernel's receive buffer of each connection (SO_RCVBUF, libzmq's ZMQ_RCVBUF), in bytes; -1: the OS default (autotuned). Default -1. */
  receiveBufferSize?: number;
}

export interface RouterOptions extends SocketOptions {
  /** send() to an unknown identity throws EHOSTUNREACH, and waits at the high-water mark instead of dropping. */
  routerMandatory?: boolean;
}

/** Errors of the socket API: code as in zeromq.js (EFSM, ENOTSUP, EHOSTUNREACH, EAGAIN...). */
export interface ZmqError extends Error {
  code: string;
  endpoint?: string;
}

function zmqError(code: string, message: string): ZmqError {
  const err = new Error(message) as ZmqError;
  err.code = code;
  return err;
}

function toBuffer(m: MessageLike): Buffer {
  if (Buffer.isBuffer(m)) return m;
  if (typeof m === 'string') return Buffer.from(m, 'utf8');
  if (m instanceof Uint8Array) return Buffer.from(m.buffer, m.byteOffset, m.byteLength);
  if (m instanceof ArrayBuffer) return Buffer.from(m);
  throw zmqError('ERR_INVALID_ARG_TYPE', `A message frame must be a Buffer, Uint8Array, ArrayBuffer or string; got ${m === null ? 'null' : typeof m}`);
}

function toFrames(msg: Message): Buffer[] {
  if (Array.isArray(msg)) {
    const n = msg.length;
    if (n === 0) throw zmqError('ERR_INVALID_ARG_VALUE', 'A message needs at least one frame');
    const out = new Array<Buffer>(n);
    for (let i = 0; i < n; i++) out[i] = toBuffer(msg[i] as MessageLike);
    return out;
  }
  return [toBuffer(msg as MessageLike)];
}

function hwm(v: number): number {
  return v <= 0 ? Infinity : v;
}

/** A FIFO with O(1) shift. */
class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(v: T): void {
    this.items.push(v);
  }
  peek(): T | undefined {
    return this.items[this.head];
  }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const v = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return v;
  }
  clear(): void {
    this.items = [];
    this.head = 0;
  }
}

/** @internal Per-peer state. */
export class Pipe {
  conn: Connection | null = null;
  readonly endpoint: string;
  readonly outbound: boolean;
  /** Messages waiting for the connection to take them (not yet encoded). */
  readonly queue = new Fifo<Buffer[]>();
  /** Messages received and not yet read. */
  readonly inbox = new Fifo<Buffer[]>();
  identity: Buffer = Buffer.alloc(0);
  /** Attached: in the socket's list of pipes. */
  attached = false;
  dead = false;
  paused = false;
  /** PUB: the peer's subscriptions (latin1 key -> count). */
  subs: Map<string, number> | null = null;
  subsAll = 0;

  constructor(endpoint: string, outbound: boolean) {
    this.endpoint = endpoint;
    this.outbound = outbound;
  }

  /** A connection that is up and takes bytes now. */
  get live(): boolean {
    const c = this.conn;
    return c !== null && c.ready && !c.blocked && !c.closed;
  }
}

interface Waiter {
  frames: Buffer[];
  resolve: () => void;
  reject: (err: Error) => void;
}

interface Receiver {
  resolve: (frames: Buffer[]) => void;
  reject: (err: Error) => void;
}

interface Dialer {
  ep: Endpoint;
  pipe: Pipe;
  timer: Timer | null;
  ivl: number;
  conn: Connection | null;
}

let routingCounter = (Math.random() * 0x7fffffff) >>> 0;

/** The base of every socket type. */
export abstract class Socket extends EventEmitter implements ConnectionOwner {
  readonly type: SocketTypeName;
  sendHighWaterMark: number;
  receiveHighWaterMark: number;
  linger: number;
  reconnectInterval: number;
  reconnectIntervalMax: number;
  heartbeatInterval: number;
  heartbeatTimeout: number;
  heartbeatTimeToLive: number;
  routingId: Buffer | undefined;
  maxMessageSize: number;
  handshakeInterval: number;
  sendBufferSize: number;
  receiveBufferSize: number;
  /** The endpoint of the last bind, with the port chosen if '*' or 0 was asked. */
  lastEndpoint: string | null = null;
  /** True once close() was called. */
  closed = false;

  /** @internal attached pipes: round-robin out, fair-queued in */
  protected pipes: Pipe[] = [];
  private rrOut = 0;
  private rrIn = 0;
  private inboxCount = 0;
  private readonly waiters = new Fifo<Waiter>();
  private readonly receivers = new Fifo<Receiver>();
  private readonly servers = new Map<string, IoServer>();
  private readonly dialers = new Map<string, Dialer>();
  private readonly conns = new Set<Connection>();
  private messageListeners = 0;
  private pumpQueued = false;
  private closePromise: Promise<void> | null = null;
  private closeResolve: (() => void) | null = null;
  private lingerTimer: Timer | null = null;

  protected constructor(type: SocketTypeName, options: SocketOptions = {}) {
    super();
    if (options === null || typeof options !== 'object') throw zmqError('ERR_INVALID_ARG_TYPE', 'The "options" argument must be an object');
    this.type = type;
    const num = (name: keyof SocketOptions, dflt: number, min: number): number => {
      const v = options[name];
      if (v === undefined) return dflt;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
        const err = new RangeError(`The option "${name}" must be an integer >= ${min}. Received ${String(v)}`) as RangeError & { code: string };
        err.code = 'ERR_OUT_OF_RANGE';
        throw err;
      }
      return v;
    };
    this.sendHighWaterMark = num('sendHighWaterMark', 1000, 0);
    this.receiveHighWaterMark = num('receiveHighWaterMark', 1000, 0);
    this.linger = num('linger', 0, -1);
    this.reconnectInterval = num('reconnectInterval', 100, -1);
    this.reconnectIntervalMax = num('reconnectIntervalMax', 0, 0);
    this.heartbeatInterval = num('heartbeatInterval', 0, 0);
    this.heartbeatTimeout = num('heartbeatTimeout', 0, 0);
    this.heartbeatTimeToLive = num('heartbeatTimeToLive', num('heartbeatTtl', 0, 0), 0);
    if (this.heartbeatTimeToLive > 6_553_500) throw new RangeError('heartbeatTimeToLive is at most 6553500 ms (ZMTP carries it in deciseconds)');
    this.maxMessageSize = num('maxMessageSize', -1, -1);
    this.handshakeInterval = num('handshakeInterval', 30_000, 0);
    this.sendBufferSize = num('sendBufferSize', -1, -1);
    this.receiveBufferSize = num('receiveBufferSize', -1, -1);
    if (options.routingId !== undefined) {
      const id = toBuffer(options.routingId);
      if (id.length === 0 || id.length > 255 || id[0] === 0) throw new RangeError('routingId is 1 to 255 bytes and must not start with a zero byte');
      this.routingId = id;
    }
    this.on('newListener', (name) => {
      if (name === 'message') {
        this.messageListeners++;
        this.schedulePump();
      }
    });
    this.on('removeListener', (name) => {
      if (name === 'message') this.messageListeners--;
    });
  }

  // ---- endpoints -----------------------------------------------------------------------

  private connOptions(): ConnectionOptions {
    return {
      socketType: this.type,
      identity: this.routingId,
      maxMessageSize: this.maxMessageSize,
      heartbeatInterval: this.heartbeatInterval,
      heartbeatTimeout: this.heartbeatTimeout,
      heartbeatTimeToLive: this.heartbeatTimeToLive,
      handshakeTimeout: this.handshakeInterval,
    };
  }

  private assertOpen(): void {
    if (this.closed) throw zmqError('EBADF', 'Socket is closed');
  }

  /** Listens on an endpoint: tcp://host:port (port '*' or 0: any) or ipc:///path. */
  async bind(address: string): Promise<void> {
    this.assertOpen();
    const ep = parseEndpoint(address, true);
    if (this.servers.has(ep.text)) throw zmqError('EADDRINUSE', `Already bound to ${ep.text}`);
    const server = createServer((s: IoSocket) => this.accepted(s, this.lastEndpointOf(server, ep)));
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      server.once('error', onError);
      server.once('listening', () => {
        server.off('error', onError);
        resolve();
      });
      if (ep.transport === 'ipc') server.listen({ path: ep.path });
      else server.listen({ port: ep.port, host: ep.host });
    });
    server.on('error', (err: Error) => this.reportError(err, ep.text));
    // Owner-only: the ipc socket file is 0600 (put it in a 0700 directory too).
    if (ep.transport === 'ipc') chmodSync(ep.path, 0o600);
    if (this.closed) {
      server.close();
      throw zmqError('EBADF', 'Socket is closed');
    }
    const last = this.lastEndpointOf(server, ep);
    this.servers.set(ep.text, server);
    if (last !== ep.text) this.servers.set(last, server);
    this.lastEndpoint = last;
  }

  private lastEndpointOf(server: IoServer, ep: Endpoint): string {
    if (ep.transport === 'ipc') return ep.text;
    const a = server.address();
    return a !== null && typeof a === 'object' ? formatTcp(a.address, a.port) : ep.text;
  }

  /** Stops listening on an endpoint given to bind (or its lastEndpoint form). */
  async unbind(address: string): Promise<void> {
    this.assertOpen();
    const server = this.servers.get(address);
    if (server === undefined) throw zmqError('ENOENT', `Not bound to ${address}`);
    for (const [k, v] of this.servers) if (v === server) this.servers.delete(k);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Connects to an endpoint; reconnects whenever the connection is lost. */
  connect(address: string): void {
    this.assertOpen();
    const ep = parseEndpoint(address, false);
    if (this.dialers.has(ep.text)) throw zmqError('EADDRINUSE', `Already connected to ${ep.text}`);
    const pipe = new Pipe(ep.text, true);
    const d: Dialer = { ep, pipe, timer: null, ivl: this.reconnectInterval, conn: null };
    this.dialers.set(ep.text, d);
    if (this._attachEarly()) this.attach(pipe);
    this.dial(d);
  }

  /** Stops connecting to an endpoint, and drops its connection. */
  disconnect(address: string): void {
    this.assertOpen();
    const d = this.dialers.get(address);
    if (d === undefined) throw zmqError('ENOENT', `Not connected to ${address}`);
    this.dialers.delete(address);
    if (d.timer !== null) loop.clearTimeout(d.timer);
    d.timer = null;
    d.pipe.queue.clear();
    if (d.conn !== null) d.conn.destroy();
    this.killPipe(d.pipe);
  }

  private dial(d: Dialer): void {
    d.timer = null;
    if (this.closed || this.dialers.get(d.ep.text) !== d) return;
    const s = d.ep.transport === 'ipc'
      ? ioConnect({ path: d.ep.path })
      : ioConnect({ host: d.ep.host, port: d.ep.port });
    this.tuneBuffers(s); // applied once connected; a failure is a lost connection
    const conn = new Connection(s, d.ep.text, this, this.connOptions());
    conn.pipe = d.pipe;
    d.conn = conn;
    d.pipe.conn = conn;
    d.pipe.paused = false; // a new socket reads until the inbox reaches its mark again
    this.conns.add(conn);
  }

  private accepted(s: IoSocket, endpoint: string): void {
    if (this.closed) {
      s.destroy();
      return;
    }
    try {
      this.tuneBuffers(s);
    } catch (err) {
      s.destroy();
      this.reportError(err as Error, endpoint);
      return;
    }
    const pipe = new Pipe(endpoint, false);
    const conn = new Connection(s, endpoint, this, this.connOptions());
    conn.pipe = pipe;
    pipe.conn = conn;
    this.conns.add(conn);
    this.emit('accept', endpoint);
  }

  /** sendBufferSize and receiveBufferSize, as libzmq: 0 asks the kernel for its smallest buffer. */
  private tuneBuffers(s: IoSocket): void {
    if (this.sendBufferSize >= 0) s.setSendBufferSize(Math.max(1, this.sendBufferSize));
    if (this.receiveBufferSize >= 0) s.setRecvBufferSize(Math.max(1, this.receiveBufferSize));
  }

  // ---- connection events ---------------------------------------------------------------

  /** @internal */
  _onReady(c: Connection): void {
    const pipe = c.pipe as Pipe;
    if (this.closed) return;
    if (c.peerIdentity.length > 0 && c.peerIdentity[0] !== 0) {
      pipe.identity = c.peerIdentity;
    } else {
      const id = Buffer.allocUnsafe(5);
      id[0] = 0;
      id.writeUInt32BE((routingCounter = (routingCounter + 1) >>> 0), 1);
      pipe.identity = id;
    }
    if (!this._accept(pipe)) {
      c.destroy();
      return;
    }
    if (pipe.outbound) {
      const d = this.dialers.get(pipe.endpoint);
      if (d !== undefined) d.ivl = this.reconnectInterval;
    }
    if (!pipe.attached) this.attach(pipe);
    this._pipeReady(pipe);
    this.emit(pipe.outbound ? 'connect' : 'handshake', pipe.endpoint);
    this.flushPipe(pipe);
  }

  /** @internal */
  _onMessage(c: Connection, frames: Buffer[]): void {
    const pipe = c.pipe as Pipe;
    if (this._onPeerMessage(pipe, frames)) return;
    this.incoming(pipe, frames);
  }

  /** @internal A message for the application, from a pipe. */
  protected incoming(pipe: Pipe, frames: Buffer[]): void {
    const c = pipe.conn;
    if (this.inboxCount === 0 && (this.messageListeners > 0 || this.receivers.length > 0) && this._canReceive()) {
      this.deliver(pipe, frames);
      return;
    }
    pipe.inbox.push(frames);
    this.inboxCount++;
    if (!pipe.paused && c !== null && pipe.inbox.length >= hwm(this.receiveHighWaterMark)) {
      pipe.paused = true;
      c.socket.pause();
    }
  }

  /** @internal */
  _onSubscription(c: Connection, subscribe: boolean, topic: Buffer): void {
    this._subscription(c.pipe as Pipe, subscribe, topic);
  }

  /** @internal */
  _onWritable(c: Connection): void {
    this.flushPipe(c.pipe as Pipe);
  }

  /** @internal */
  _onClosed(c: Connection, err: Error | undefined): void {
    this.conns.delete(c);
    const pipe = c.pipe as Pipe;
    if (pipe.conn === c) pipe.conn = null;
    if (err instanceof ZmtpError) this.reportError(err, c.endpoint);
    if (c.ready) this.emit('disconnect', c.endpoint);
    if (this.closed) {
      this.maybeClosed();
      return;
    }
    if (pipe.outbound) {
      const d = this.dialers.get(pipe.endpoint);
      if (c.ready) this._pipeDown(pipe);
      if (d !== undefined && d.conn === c) {
        d.conn = null;
        if (this.reconnectInterval >= 0) {
          const ivl = d.ivl;
          if (this.reconnectIntervalMax > this.reconnectInterval) d.ivl = Math.min(d.ivl * 2, this.reconnectIntervalMax);
          d.timer = loop.setTimeout(() => this.dial(d), ivl);
        }
      }
    } else {
      this.killPipe(pipe);
    }
  }

  private reportError(err: Error, endpoint: string): void {
    (err as ZmqError).endpoint = endpoint;
    // A peer's bytes never crash the process: 'error' goes to listeners only.
    if (this.listenerCount('error') > 0) this.emit('error', err);
  }

  private attach(pipe: Pipe): void {
    pipe.attached = true;
    this.pipes.push(pipe);
  }

  private killPipe(pipe: Pipe): void {
    if (pipe.dead) return;
    pipe.dead = true;
    pipe.queue.clear();
    if (pipe.attached) this._pipeDown(pipe);
    if (pipe.inbox.length === 0) this.detach(pipe);
  }

  private detach(pipe: Pipe): void {
    if (!pipe.attached) return;
    pipe.attached = false;
    const i = this.pipes.indexOf(pipe);
    if (i >= 0) this.pipes.splice(i, 1);
  }

  // ---- sending -------------------------------------------------------------------------

  /** @internal Whether a pipe can take one more message now. */
  protected canTake(p: Pipe): boolean {
    if (p.dead) return false;
    if (p.live && p.queue.length === 0) return true;
    if (!p.outbound && (p.conn === null || !p.conn.ready)) return false;
    return p.queue.length < hwm(this.sendHighWaterMark);
  }

  /** @internal Hands a message to a pipe that can take it. */
  protected write(p: Pipe, frames: Buffer[]): void {
    if (p.live && p.queue.length === 0) p.conn!.send(frames);
    else p.queue.push(frames);
  }

  /** @internal Sends to the next pipe that can take a message; null when none can. */
  protected roundRobin(frames: Buffer[]): Pipe | null {
    const pipes = this.pipes;
    const n = pipes.length;
    for (let k = 0; k < n; k++) {
      const i = (this.rrOut + k) % n;
      const p = pipes[i]!;
      if (this.canTake(p)) {
        this.rrOut = (i + 1) % n;
        this.write(p, frames);
        return p;
      }
    }
    return null;
  }

  private flushPipe(pipe: Pipe): void {
    const q = pipe.queue;
    while (q.length > 0 && pipe.live) pipe.conn!.send(q.shift()!);
    this.pumpSends();
  }

  private pumpSends(): void {
    const w = this.waiters;
    while (w.length > 0 && !this.closed) {
      const first = w.peek()!;
      let done: boolean;
      try {
        done = this._send(first.frames);
      } catch (err) {
        w.shift();
        first.reject(err as Error);
        continue;
      }
      if (!done) return;
      w.shift();
      first.resolve();
    }
  }

  /**
   * Sends a message (a Buffer or string, or an array of them for a multipart
   * message). Returns undefined when the message was queued at once, and a
   * promise only when it has to wait for a peer under its high-water mark.
   */
  send(msg: Message): Promise<void> | undefined {
    this.assertOpen();
    const frames = toFrames(msg);
    this._checkSend(frames);
    if (this.waiters.length === 0 && this._send(frames)) return undefined;
    return new Promise<void>((resolve, reject) => this.waiters.push({ frames, resolve, reject }));
  }

  /** Messages whose send() is waiting for room. */
  get pendingSends(): number {
    return this.waiters.length;
  }

  // ---- receiving -----------------------------------------------------------------------

  /** The next message, as an array of frames. */
  receive(): Promise<Buffer[]> {
    if (this.closed) return Promise.reject(zmqError('EBADF', 'Socket is closed'));
    if (!this._canRecvType()) return Promise.reject(zmqError('ENOTSUP', `A ${this.type} socket cannot receive`));
    return new Promise<Buffer[]>((resolve, reject) => {
      this.receivers.push({ resolve, reject });
      this.pumpReceive();
    });
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer[], void, undefined> {
    while (!this.closed) {
      let msg: Buffer[];
      try {
        msg = await this.receive();
      } catch (err) {
        if (this.closed) return;
        throw err;
      }
      yield msg;
    }
  }

  private schedulePump(): void {
    if (this.pumpQueued) return;
    this.pumpQueued = true;
    queueMicrotask(() => {
      this.pumpQueued = false;
      this.pumpReceive();
    });
  }

  /** @internal Delivers queued messages while someone wants them. */
  protected pumpReceive(): void {
    while (this.inboxCount > 0 && (this.receivers.length > 0 || this.messageListeners > 0) && this._canReceive() && !this.closed) {
      const pipes = this.pipes;
      const n = pipes.length;
      let found: Pipe | null = null;
      for (let k = 0; k < n; k++) {
        const i = (this.rrIn + k) % n;
        if (pipes[i]!.inbox.length > 0) {
          found = pipes[i]!;
          this.rrIn = (i + 1) % n;
          break;
        }
      }
      if (found === null) {
        this.inboxCount = 0;
        return;
      }
      const frames = found.inbox.shift()!;
      this.inboxCount--;
      if (found.dead && found.inbox.length === 0) this.detach(found);
      if (found.paused && found.inbox.length < Math.max(1, hwm(this.receiveHighWaterMark) / 2)) {
        found.paused = false;
        if (found.conn !== null) found.conn.socket.resume();
      }
      this.deliver(found, frames);
    }
  }

  private deliver(pipe: Pipe, frames: Buffer[]): void {
    const msg = this._receive(pipe, frames);
    if (msg === null) return;
    const r = this.receivers.shift();
    if (r !== undefined) r.resolve(msg);
    // Spread arguments cost an array copy and an apply: the common sizes go direct.
    else if (msg.length === 1) this.emit('message', msg[0]);
    else if (msg.length === 2) this.emit('message', msg[0], msg[1]);
    else if (msg.length === 3) this.emit('message', msg[0], msg[1], msg[2]);
    else if (msg.length === 4) this.emit('message', msg[0], msg[1], msg[2], msg[3]);
    else if (msg.length === 5) this.emit('message', msg[0], msg[1], msg[2], msg[3], msg[4]);
    else this.emit('message', ...msg);
  }

  // ---- closing -------------------------------------------------------------------------

  /**
   * Closes the socket: stops listening and connecting, fails pending sends and
   * receives, and gives queued messages `linger` ms to reach their peers.
   * The promise resolves once every connection is closed.
   */
  close(): Promise<void> {
    if (this.closePromise !== null) return this.closePromise;
    this.closed = true;
    this.closePromise = new Promise<void>((resolve) => { this.closeResolve = resolve; });
    const closedErr = () => zmqError('EBADF', 'Socket is closed');
    for (let w = this.waiters.shift(); w !== undefined; w = this.waiters.shift()) w.reject(closedErr());
    for (let r = this.receivers.shift(); r !== undefined; r = this.receivers.shift()) r.reject(closedErr());
    const servers = new Set(this.servers.values());
    this.servers.clear();
    for (const s of servers) s.close();
    for (const d of this.dialers.values()) if (d.timer !== null) loop.clearTimeout(d.timer);
    this.dialers.clear();
    for (const c of [...this.conns]) {
      const pipe = c.pipe as Pipe;
      if (!c.ready) {
        c.destroy();
        continue;
      }
      if (this.linger !== 0) {
        // What waits in the pipe goes to the socket's own queue, then FIN.
        for (let m = pipe.queue.shift(); m !== undefined; m = pipe.queue.shift()) c.send(m);
      }
      pipe.queue.clear();
      c.end();
    }
    if (this.linger >= 0 && this.conns.size > 0) {
      this.lingerTimer = loop.setTimeout(() => {
        this.lingerTimer = null;
        for (const c of [...this.conns]) c.destroy();
      }, this.linger);
    }
    for (const p of this.pipes) {
      p.inbox.clear();
      p.queue.clear();
    }
    this.pipes = [];
    this.inboxCount = 0;
    this.maybeClosed();
    return this.closePromise;
  }

  private maybeClosed(): void {
    if (this.conns.size > 0 || this.closeResolve === null) return;
    if (this.lingerTimer !== null) loop.clearTimeout(this.lingerTimer);
    this.lingerTimer = null;
    const resolve = this.closeResolve;
    this.closeResolve = null;
    resolve();
    this.emit('close');
  }

  // ---- what each type defines ----------------------------------------------------------

  /** @internal Pipes of connect() are in the round-robin before the handshake (libzmq without ZMQ_IMMEDIATE). */
  protected _attachEarly(): boolean {
    return true;
  }
  /** @internal May this peer join (ROUTER: unique identity)? */
  protected _accept(_pipe: Pipe): boolean {
    return true;
  }
  /** @internal The peer's handshake is done. */
  protected _pipeReady(_pipe: Pipe): void {}
  /** @internal The peer's connection is gone. */
  protected _pipeDown(_pipe: Pipe): void {}
  /** @internal Throws when send() may not be called now. */
  protected _checkSend(_frames: Buffer[]): void {
    throw zmqError('ENOTSUP', `A ${this.type} socket cannot send`);
  }
  /** @internal Tries to send now; false: wait for room. */
  protected _send(_frames: Buffer[]): boolean {
    return false;
  }
  protected _canRecvType(): boolean {
    return true;
  }
  /** @internal Whether a message may be handed to the application now. */
  protected _canReceive(): boolean {
    return true;
  }
  /** @internal The message as the application sees it, or null to drop it. */
  protected _receive(_pipe: Pipe, frames: Buffer[]): Buffer[] | null {
    return frames;
  }
  /** @internal A message that is not for the application (PUB's subscriptions); true: consumed. */
  protected _onPeerMessage(_pipe: Pipe, _frames: Buffer[]): boolean {
    return false;
  }
  /** @internal SUBSCRIBE or CANCEL from a peer. */
  protected _subscription(_pipe: Pipe, _subscribe: boolean, _topic: Buffer): void {}
}

// ---- the types -------------------------------------------------------------------------

/** PUSH: round-robin to PULL peers; waits at the high-water mark. */
export class Push extends Socket {
  constructor(options?: SocketOptions) {
    super('PUSH', options);
  }
  protected override _checkSend(): void {}
  protected override _send(frames: Buffer[]): boolean {
    return this.roundRobin(frames) !== null;
  }
  protected override _canRecvType(): boolean {
    return false;
  }
  protected override _receive(): Buffer[] | null {
    return null;
  }
}

/** PULL: fair-queued from PUSH peers. */
export class Pull extends Socket {
  constructor(options?: SocketOptions) {
    super('PULL', options);
  }
}

/** DEALER: round-robin out, fair-queued in, no envelopes. */
export class Dealer extends Socket {
  constructor(options?: SocketOptions) {
    super('DEALER', options);
  }
  protected override _checkSend(): void {}
  protected override _send(frames: Buffer[]): boolean {
    return this.roundRobin(frames) !== null;
  }
}

/** ROUTER: messages in carry the peer's identity first; messages out are routed by it. */
export class Router extends Socket {
  routerMandatory: boolean;
  private readonly routes = new Map<string, Pipe>();
  /**
   * The identity Buffers this socket handed out (each pipe's, first frame of
   * every message received) to their pipes: a reply that sends the received
   * identity back is routed without turning it into a string key.
   */
  private readonly routeByBuffer = new WeakMap<Buffer, Pipe>();

  constructor(options?: RouterOptions) {
    super('ROUTER', options);
    this.routerMandatory = options?.routerMandatory === true;
  }
  protected override _attachEarly(): boolean {
    return false;
  }
  protected override _accept(pipe: Pipe): boolean {
    // libzmq keeps the first peer with an identity and refuses a second one.
    return !this.routes.has(pipe.identity.toString('latin1'));
  }
  protected override _pipeReady(pipe: Pipe): void {
    this.routes.set(pipe.identity.toString('latin1'), pipe);
    this.routeByBuffer.set(pipe.identity, pipe);
  }
  protected override _pipeDown(pipe: Pipe): void {
    const key = pipe.identity.toString('latin1');
    if (this.routes.get(key) === pipe) {
      this.routes.delete(key);
      // Which peer left: a load balancer fails over the work that peer held.
      this.emit('peerdisconnect', pipe.identity);
    }
  }
  protected override _checkSend(frames: Buffer[]): void {
    if (frames.length < 2 && this.routerMandatory) throw zmqError('EINVAL', 'A ROUTER message starts with the identity frame, then at least one frame');
  }
  protected override _send(frames: Buffer[]): boolean {
    const id = frames[0]!;
    let pipe = this.routeByBuffer.get(id);
    // A pipe that went down (or took another identity on a reconnect) may
    // have left this one to a new pipe: ask the map.
    if (pipe === undefined || pipe.dead || pipe.identity !== id) pipe = this.routes.get(id.toString('latin1'));
    if (pipe === undefined || pipe.dead) {
      if (this.routerMandatory) throw zmqError('EHOSTUNREACH', 'Host unreachable: no peer with that identity');
      return true; // dropped, as libzmq does
    }
    if (frames.length < 2) return true;
    if (!this.canTake(pipe)) return !this.routerMandatory; // dropped at the mark, unless mandatory
    if (pipe.live && pipe.queue.length === 0) pipe.conn!.send(frames, 1);
    else this.write(pipe, frames.slice(1));
    return true;
  }
  protected override _receive(pipe: Pipe, frames: Buffer[]): Buffer[] | null {
    // A new two-element array costs less than unshift's move of the elements.
    if (frames.length === 1) return [pipe.identity, frames[0]!];
    frames.unshift(pipe.identity);
    return frames;
  }
}

/** REQ: send, then receive the reply, strictly alternating; an empty delimiter frame goes first. */
export class Request extends Socket {
  private awaiting: Pipe | null = null;
  private static readonly EMPTY = Buffer.alloc(0);

  constructor(options?: SocketOptions) {
    super('REQ', options);
  }
  protected override _checkSend(): void {
    if (this.awaiting !== null || this.pendingSends > 0) {
      throw zmqError('EFSM', 'Operation cannot be accomplished in current state: a REQ socket must receive the reply first');
    }
  }
  protected override _send(frames: Buffer[]): boolean {
    frames.unshift(Request.EMPTY);
    const p = this.roundRobin(frames);
    if (p === null) {
      frames.shift();
      return false;
    }
    this.awaiting = p;
    return true;
  }
  protected override _canReceive(): boolean {
    return this.awaiting !== null;
  }
  protected override _receive(pipe: Pipe, frames: Buffer[]): Buffer[] | null {
    // Only the reply of the peer asked, with its empty delimiter, counts.
    if (pipe !== this.awaiting || frames.length < 2 || frames[0]!.length !== 0) return null;
    this.awaiting = null;
    frames.shift();
    return frames;
  }
  protected override _pipeDown(pipe: Pipe): void {
    void pipe; // as libzmq without ZMQ_REQ_RELAXED: the request stays outstanding
  }
}

/** REP: receive a request, then send its reply, strictly alternating. */
export class Reply extends Socket {
  private replyTo: Pipe | null = null;
  private envelope: Buffer[] | null = null;

  constructor(options?: SocketOptions) {
    super('REP', options);
  }
  protected override _attachEarly(): boolean {
    return false;
  }
  protected override _checkSend(): void {
    if (this.envelope === null) throw zmqError('EFSM', 'Operation cannot be accomplished in current state: a REP socket must receive a request first');
  }
  protected override _send(frames: Buffer[]): boolean {
    const pipe = this.replyTo!;
    const env = this.envelope!;
    this.replyTo = null;
    this.envelope = null;
    if (!pipe.dead && this.canTake(pipe)) this.write(pipe, env.concat(frames));
    this.pumpReceive();
    return true;
  }
  protected override _canReceive(): boolean {
    return this.envelope === null;
  }
  protected override _receive(pipe: Pipe, frames: Buffer[]): Buffer[] | null {
    let i = 0;
    while (i < frames.length && frames[i]!.length !== 0) i++;
    if (i >= frames.length - 1) return null; // no delimiter, or nothing after it: dropped, as libzmq does
    this.envelope = frames.slice(0, i + 1);
    this.replyTo = pipe;
    return frames.slice(i + 1);
  }
}

function topicKey(t: Buffer): string {
  return t.toString('latin1');
}

/** PUB: each message to every SUB peer whose subscriptions match its first frame; drops at the high-water mark. */
export class Publisher extends Socket {
  constructor(options?: SocketOptions) {
    super('PUB', options);
  }
  protected override _attachEarly(): boolean {
    return false;
  }
  protected override _checkSend(): void {}
  protected override _canRecvType(): boolean {
    return false;
  }
  protected override _send(frames: Buffer[]): boolean {
    const first = frames[0]!;
    const pipes = this.pipes;
    for (let i = 0; i < pipes.length; i++) {
      const p = pipes[i]!;
      if (p.subs === null || !matches(p, first)) continue;
      if (this.canTake(p)) this.write(p, frames);
    }
    return true;
  }
  protected override _onPeerMessage(pipe: Pipe, frames: Buffer[]): boolean {
    // ZMTP 3.0 peers subscribe with a message: 1 or 0, then the topic.
    const f = frames[0]!;
    if (frames.length === 1 && f.length > 0 && (f[0] === 1 || f[0] === 0)) this._subscription(pipe, f[0] === 1, f.subarray(1));
    return true;
  }
  protected override _subscription(pipe: Pipe, subscribe: boolean, topic: Buffer): void {
    const subs = (pipe.subs ??= new Map());
    const key = topicKey(topic);
    const n = subs.get(key) ?? 0;
    if (subscribe) {
      subs.set(key, n + 1);
      if (topic.length === 0) pipe.subsAll++;
      if (n === 0) this.subscriptionChanged(pipe, true, topic);
    } else if (n > 0) {
      if (n === 1) subs.delete(key);
      else subs.set(key, n - 1);
      if (topic.length === 0) pipe.subsAll--;
      if (n === 1) this.subscriptionChanged(pipe, false, topic);
    }
  }
  /** @internal XPUB hands subscriptions to the application. */
  protected subscriptionChanged(_pipe: Pipe, _subscribe: boolean, _topic: Buffer): void {}
}

/**
 * XPUB: a PUB that also receives its subscribers' subscriptions, as messages
 * of one frame: 1 (subscribe) or 0 (cancel), then the prefix. As libzmq
 * without ZMQ_XPUB_VERBOSE, a prefix is reported when its first peer
 * subscribes and when its last one cancels.
 */
export class XPublisher extends Publisher {
  private readonly counts = new Map<string, number>();
  constructor(options?: SocketOptions) {
    super(options);
    (this as { type: SocketTypeName }).type = 'XPUB';
  }
  protected override _canRecvType(): boolean {
    return true;
  }
  protected override _onPeerMessage(pipe: Pipe, frames: Buffer[]): boolean {
    const f = frames[0]!;
    if (frames.length === 1 && f.length > 0 && (f[0] === 1 || f[0] === 0)) {
      this._subscription(pipe, f[0] === 1, f.subarray(1));
      return true;
    }
    return false; // other messages from XSUB peers go to the application, as in libzmq
  }
  protected override subscriptionChanged(pipe: Pipe, subscribe: boolean, topic: Buffer): void {
    const key = topicKey(topic);
    const n = this.counts.get(key) ?? 0;
    if (subscribe) this.counts.set(key, n + 1);
    else if (n <= 1) this.counts.delete(key);
    else this.counts.set(key, n - 1);
    if ((subscribe && n === 0) || (!subscribe && n === 1)) {
      const msg = Buffer.allocUnsafe(1 + topic.length);
      msg[0] = subscribe ? 1 : 0;
      topic.copy(msg, 1);
      this.incoming(pipe, [msg]);
    }
  }
  protected override _pipeDown(pipe: Pipe): void {
    // A peer that leaves takes its subscriptions with it.
    if (pipe.subs !== null) {
      for (const [key, n] of [...pipe.subs]) {
        for (let i = 0; i < n; i++) this._subscription(pipe, false, Buffer.from(key, 'latin1'));
      }
    }
  }
}

function matches(p: Pipe, first: Buffer): boolean {
  return p.subsAll > 0 || anyPrefixOf(p.subs!.keys(), first);
}

/** Whether one of the keys (prefixes held as latin1 strings, one char a byte) starts first. */
function anyPrefixOf(keys: Iterable<string>, first: Buffer): boolean {
  for (const key of keys) {
    const n = key.length;
    if (n > first.length) continue;
    let ok = true;
    for (let i = 0; i < n; i++) {
      if (key.charCodeAt(i) !== first[i]) {
        ok = false;
        break;
      }
    }
    if (ok) return true;
  }
  return false;
}

/** SUB: receives what PUB peers publish under its subscriptions (prefixes of the first frame). */
export class Subscriber extends Socket {
  private readonly topics = new Map<string, Buffer>();

  constructor(options?: SocketOptions) {
    super('SUB', options);
  }
  protected override _attachEarly(): boolean {
    return false;
  }
  /** Subscribes to each prefix given; with none, to everything. */
  subscribe(...prefixes: (string | Uint8Array)[]): void {
    this.assertOpenPublic();
    if (prefixes.length === 0) prefixes = [''];
    for (const p of prefixes) {
      const t = toBuffer(p);
      const key = topicKey(t);
      if (this.topics.has(key)) continue;
      this.topics.set(key, t);
      for (const pipe of this.pipes) if (pipe.conn?.ready) pipe.conn.sendSubscription(true, t);
    }
  }
  /** Cancels subscriptions; with none given, all of them. */
  unsubscribe(...prefixes: (string | Uint8Array)[]): void {
    this.assertOpenPublic();
    const list = prefixes.length === 0 ? [...this.topics.values()] : prefixes.map(toBuffer);
    for (const t of list) {
      const key = topicKey(t);
      if (!this.topics.delete(key)) continue;
      for (const pipe of this.pipes) if (pipe.conn?.ready) pipe.conn.sendSubscription(false, t);
    }
  }
  private assertOpenPublic(): void {
    if (this.closed) throw zmqError('EBADF', 'Socket is closed');
  }
  protected override _pipeReady(pipe: Pipe): void {
    for (const t of this.topics.values()) pipe.conn!.sendSubscription(true, t);
  }
  protected override _receive(_pipe: Pipe, frames: Buffer[]): Buffer[] | null {
    if (this.topics.has('') || anyPrefixOf(this.topics.keys(), frames[0]!)) return frames;
    return null;
  }
}

/**
 * XSUB: a SUB whose subscriptions are messages the application sends (one
 * frame: 1 or 0, then the prefix); it receives everything its publishers
 * send (they filter), and passes other messages it sends up to them.
 */
export class XSubscriber extends Socket {
  private readonly topics = new Map<string, Buffer>();
  constructor(options?: SocketOptions) {
    super('XSUB', options);
  }
  protected override _attachEarly(): boolean {
    return false;
  }
  protected override _checkSend(): void {}
  protected override _send(frames: Buffer[]): boolean {
    const f = frames[0]!;
    if (frames.length === 1 && f.length > 0 && (f[0] === 1 || f[0] === 0)) {
      const topic = Buffer.from(f.subarray(1));
      const key = topicKey(topic);
      if (f[0] === 1) this.topics.set(key, topic);
      else this.topics.delete(key);
      for (const pipe of this.pipes) if (pipe.conn?.ready) pipe.conn.sendSubscription(f[0] === 1, topic);
      return true;
    }
    for (const pipe of this.pipes) if (this.canTake(pipe)) this.write(pipe, frames);
    return true;
  }
  protected override _pipeReady(pipe: Pipe): void {
    for (const t of this.topics.values()) pipe.conn!.sendSubscription(true, t);
  }
}

export { Request as Req, Reply as Rep, Publisher as Pub, Subscriber as Sub, XPublisher as XPub, XSubscriber as XSub };
