// server.ts -- the HTTP/1.1 server: an iomux TCP server whose connections
// each get a Connection, with node:http's face (createServer, listen,
// 'request', close) and its timeouts on the loop's own timers.
import { EventEmitter } from 'node:events';
import type { ListenOptions } from '../address';
import { invalidArgType, invalidArgValue } from '../errors';
import { Server as TcpServer } from '../server';
import type { AddressInfo, Socket } from '../socket';
import { Connection, ConnectionShared, type ConnectionOwner } from './connection';
import { DEFAULT_LIMITS, type HttpError, type ParserLimits } from './parser';
import type { IncomingRequest } from './request';
import type { ServerResponse } from './response';

export interface HttpServerOptions extends Partial<ParserLimits> {
  /** ms to receive a request's head, from its first byte (default 60000); 408 after. */
  headersTimeout?: number;
  /** ms to receive a whole request, from its first byte (default 300000); 408 after. 0: none. */
  requestTimeout?: number;
  /** ms an idle keep-alive connection is kept (default 5000). */
  keepAliveTimeout?: number;
  /** Requests served on one connection before it is closed (default 0: no limit). */
  maxRequestsPerSocket?: number;
  /** Pipelined requests waiting for their response before reading pauses (default 64). */
  maxPipelinedRequests?: number;
  /** Bytes a response buffers before write() returns false (default 16 KiB). */
  highWaterMark?: number;
  /** TCP_NODELAY on connections (default true). */
  noDelay?: boolean;
}

/** How HttpServer.drain() winds the connections down. */
export interface DrainOptions {
  /**
   * ms a connection with no request under way is kept for its next request
   * (default 500); it is closed then.
   */
  idleGrace?: number;
  /** ms after which the connections still open are closed at once (default: none). */
  timeout?: number;
}

/** @internal drain()'s options, checked, with their defaults. */
export function drainOptions(options: DrainOptions | undefined): { idleGrace: number; timeout: number | undefined } {
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw invalidArgType('options', 'of type object', options);
  }
  const idleGrace = options?.idleGrace ?? 500;
  if (typeof idleGrace !== 'number' || !(idleGrace > 0) || !Number.isFinite(idleGrace)) {
    throw invalidArgValue('options.idleGrace', idleGrace, 'must be a number > 0');
  }
  const timeout = options?.timeout;
  if (timeout !== undefined && (typeof timeout !== 'number' || !(timeout >= 0) || !Number.isFinite(timeout))) {
    throw invalidArgValue('options.timeout', timeout, 'must be a number >= 0');
  }
  return { idleGrace, timeout };
}

export type RequestListener = (req: IncomingRequest, res: ServerResponse) => void;

function timeoutOption(options: HttpServerOptions, name: keyof HttpServerOptions, dflt: number, zeroMeansNone: boolean): number {
  const v = options[name];
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v) || (v === 0 && !zeroMeansNone)) {
    throw invalidArgValue(`options.${name}`, v, zeroMeansNone ? 'must be a number >= 0' : 'must be a number > 0');
  }
  return v === 0 ? 2 ** 31 - 1 : v;
}

function countOption(options: HttpServerOptions, name: keyof HttpServerOptions, dflt: number, min: number): number {
  const v = options[name];
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !(v >= min) || (!Number.isInteger(v) && v !== Infinity)) {
    throw invalidArgValue(`options.${name}`, v, `must be an integer >= ${min}`);
  }
  return v;
}

export class HttpServer extends EventEmitter implements ConnectionOwner {
  /** @internal */ readonly _limits: ParserLimits;
  /** @internal */ readonly _headersTimeout: number;
  /** @internal */ readonly _requestTimeout: number;
  /** @internal */ readonly _keepAliveTimeout: number;
  /** @internal */ readonly _maxRequestsPerSocket: number;
  /** @internal */ readonly _maxPipelined: number;
  /** @internal */ readonly _highWaterMark: number;
  /** @internal */ _draining = false;
  /** @internal */ _idleGrace = 0;
  /** @internal */ readonly _connShared: ConnectionShared = new ConnectionShared(this);
  private readonly tcp: TcpServer;
  private readonly connections = new Set<Connection>();
  private closed: Promise<void> | null = null;

  constructor(options?: HttpServerOptions | RequestListener, onRequest?: RequestListener) {
    super();
    if (typeof options === 'function') {
      onRequest = options;
      options = undefined;
    }
    if (options !== undefined && (options === null || typeof options !== 'object')) {
      throw invalidArgType('options', 'of type object', options);
    }
    const o: HttpServerOptions = options ?? {};
    this._limits = {
      maxRequestLineSize: countOption(o, 'maxRequestLineSize', DEFAULT_LIMITS.maxRequestLineSize, 16),
      maxHeaderSize: countOption(o, 'maxHeaderSize', DEFAULT_LIMITS.maxHeaderSize, 16),
      maxHeaders: countOption(o, 'maxHeaders', DEFAULT_LIMITS.maxHeaders, 1),
      maxBodySize: countOption(o, 'maxBodySize', DEFAULT_LIMITS.maxBodySize, 0),
    };
    this._requestTimeout = timeoutOption(o, 'requestTimeout', 300_000, true);
    // The head is part of the request: a requestTimeout shorter than
    // headersTimeout bounds the head too.
    this._headersTimeout = Math.min(timeoutOption(o, 'headersTimeout', 60_000, false), this._requestTimeout);
    this._keepAliveTimeout = timeoutOption(o, 'keepAliveTimeout', 5_000, false);
    this._maxRequestsPerSocket = countOption(o, 'maxRequestsPerSocket', 0, 0);
    this._maxPipelined = countOption(o, 'maxPipelinedRequests', 64, 1);
    this._highWaterMark = countOption(o, 'highWaterMark', 16 * 1024, 1);
    // The connection decides when to end its side, so half-open is kept.
    this.tcp = new TcpServer({ allowHalfOpen: true, noDelay: o.noDelay !== false, writableHighWaterMark: this._highWaterMark });
    this.tcp.on('connection', (socket: Socket) => this.onConnection(socket));
    this.tcp.on('listening', () => this.emit('listening'));
    this.tcp.on('error', (err: Error) => this.emit('error', err));
    if (onRequest !== undefined) {
      if (typeof onRequest !== 'function') throw invalidArgType('requestListener', 'of type function', onRequest);
      this.on('request', onRequest);
    }
  }

  /** Listens as the TCP server does: (port[, host][, backlog][, cb]), (path[, cb]) or (options[, cb]). */
  listen(port?: number | string, host?: string, backlog?: number, cb?: () => void): this;
  listen(port?: number | string, host?: string, cb?: () => void): this;
  listen(port?: number | string, cb?: () => void): this;
  listen(path: string, cb?: () => void): this;
  listen(options: ListenOptions, cb?: () => void): this;
  listen(cb?: () => void): this;
  listen(...args: unknown[]): this {
    this._draining = false;
    this._idleGrace = 0;
    this.closed = null;
    (this.tcp.listen as (...a: unknown[]) => TcpServer)(...args);
    return this;
  }

  get listening(): boolean {
    return this.tcp.listening;
  }

  address(): AddressInfo | string | null {
    return this.tcp.address();
  }

  /** Open connections. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /**
   * Stops accepting, closes idle connections, lets the requests under way
   * finish (their responses say Connection: close) and closes each
   * connection after its last response. Resolves once every socket is gone;
   * cb, if given, is called then too. During a drain(), closes the idle
   * connections at once.
   */
  close(cb?: (err?: Error) => void): Promise<void> {
    if (cb !== undefined && typeof cb !== 'function') throw invalidArgType('callback', 'of type function', cb);
    if (this.closed === null || this._idleGrace > 0) {
      const closed = this.beginClose();
      this._idleGrace = 0;
      for (const c of this.connections) c.closeIfIdle();
      if (cb !== undefined) closed.then(() => cb(), cb);
      return closed;
    }
    if (cb !== undefined) this.closed.then(() => cb(), cb);
    return this.closed;
  }

  /**
   * A graceful close for a server that is being replaced (a retiring
   * worker): stops accepting; each connection's next response says
   * Connection: close and the connection is closed after it; one with no
   * request under way gets options.idleGrace ms to send it; requests under
   * way finish. A closed connection is half-closed first and read until the
   * client closes its side (up to 2 s), so that bytes the client sent
   * meanwhile are not answered with a reset. After options.timeout ms, the
   * connections left are closed at once. Resolves, and 'close' is emitted,
   * once every socket is gone.
   */
  drain(options?: DrainOptions): Promise<void> {
    const { idleGrace, timeout } = drainOptions(options);
    if (this.closed !== null) return this.closed; // closing or draining already
    const closed = this.beginClose();
    this._idleGrace = idleGrace;
    for (const c of this.connections) c.drain();
    if (timeout !== undefined) {
      const timer = setTimeout(() => this.closeAllConnections(), timeout);
      timer.unref();
      void closed.then(() => clearTimeout(timer));
    }
    return closed;
  }

  /** Stops accepting; the promise resolves once every connection is gone. */
  private beginClose(): Promise<void> {
    if (this.closed === null) {
      this._draining = true;
      this.closed = new Promise<void>((resolve) => {
        if (!this.tcp.listening && this.connections.size === 0) {
          process.nextTick(resolve);
          return;
        }
        if (this.tcp.listening) this.tcp.close(() => resolve());
        else this.once('_allClosed', resolve);
      }).then(() => {
        this.emit('close');
      });
    }
    return this.closed;
  }

  /** Closes the connections that have no request under way. */
  closeIdleConnections(): void {
    for (const c of this.connections) if (c.idle) c.close();
  }

  /** Closes every connection now, requests under way included. */
  closeAllConnections(): void {
    for (const c of this.connections) c.destroy();
  }

  ref(): this {
    this.tcp.ref();
    return this;
  }

  unref(): this {
    this.tcp.unref();
    return this;
  }

  private onConnection(socket: Socket): void {
    const conn = new Connection(this, socket);
    this.connections.add(conn);
    if (this._draining) {
      if (this._idleGrace > 0) conn.drain();
      else conn.closeIfIdle();
    }
    this.emit('connection', socket);
  }

  /** @internal */
  _dispatch(req: IncomingRequest, res: ServerResponse): void {
    if (req._expect === '100-continue' && req.httpVersionMinor === 1 && !req.complete) {
      // RFC 9110 §10.1.1: the client waits for 100 before it sends the body.
      if (this.listenerCount('checkContinue') > 0) {
        this.emit('checkContinue', req, res);
        return;
      }
      res.writeContinue();
    }
    this.emit('request', req, res);
  }

  /** @internal */
  _clientError(err: HttpError, socket: Socket): void {
    if (this.listenerCount('clientError') > 0) this.emit('clientError', err, socket);
  }

  /** @internal */
  _connectionClosed(conn: Connection): void {
    this.connections.delete(conn);
    if (this.connections.size === 0) this.emit('_allClosed');
  }
}

/** Creates an HTTP/1.1 server; onRequest is added as a 'request' listener. */
export function createServer(options?: HttpServerOptions | RequestListener, onRequest?: RequestListener): HttpServer {
  return new HttpServer(options, onRequest);
}
