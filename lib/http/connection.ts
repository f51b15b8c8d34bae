// connection.ts -- one HTTP/1.1 connection: it feeds the socket's bytes to
// the parser, makes a request and a response for each head, keeps pipelined
// responses in request order, and enforces the timeouts.
//
// Timeouts cost no syscall and, while requests keep coming, no call into the
// core either: each connection has one loop timer and a deadline; moving the
// deadline later only stores it, and the timer, when it fires early, re-arms
// itself for what is left. The deadline is, by phase:
//   waiting for a first request, or a head under way: headersTimeout from its first byte
//   a body under way: requestTimeout from the request's first byte
//   between requests: keepAliveTimeout from the last response
//   a handler at work: none
import { loop, type Timer } from '../loop';
import type { Socket } from '../socket';
import { HttpError, RequestParser, type ParserHandler, type ParserLimits, type RequestHead } from './parser';
import { IncomingRequest, type RequestOwner } from './request';
import { ServerResponse, httpDate, type ResponseOwner } from './response';

/** What a connection needs of its server. */
export interface ConnectionOwner {
  readonly _limits: ParserLimits;
  readonly _headersTimeout: number;
  readonly _requestTimeout: number;
  readonly _keepAliveTimeout: number;
  readonly _maxRequestsPerSocket: number;
  readonly _maxPipelined: number;
  readonly _highWaterMark: number;
  /** The server is closing: finish what is under way, take nothing new. */
  readonly _draining: boolean;
  /**
   * While the server drains (HttpServer.drain): ms a connection with nothing
   * under way waits for its next request; 0 otherwise.
   */
  readonly _idleGrace: number;
  _dispatch(req: IncomingRequest, res: ServerResponse): void;
  _clientError(err: HttpError, socket: Socket): void;
  _connectionClosed(conn: Connection): void;
}

// After an error response the connection half-closes and reads (and drops)
// whatever the client still sends for this long, so that the client sees the
// response rather than a reset caused by unread data.
const LINGER_MS = 2000;

// Why reading is paused; reading resumes when none is left.
const PAUSE_BODY = 1; // an unconsumed request body is over its buffer limit
const PAUSE_PIPELINE = 2; // too many responses waiting

function rethrow(err: unknown): never {
  throw err;
}

function errorResponse(err: HttpError): string {
  const status = err.status;
  const reason = status === 400 ? 'Bad Request' : status === 408 ? 'Request Timeout' : status === 413 ? 'Content Too Large'
    : status === 431 ? 'Request Header Fields Too Large' : status === 501 ? 'Not Implemented'
      : status === 505 ? 'HTTP Version Not Supported' : 'Error';
  const body = `${status} ${reason}: ${err.message}\n`;
  return `HTTP/1.1 ${status} ${reason}\r\nDate: ${httpDate()}\r\nContent-Type: text/plain\r\n` +
    `Content-Length: ${Buffer.byteLength(body, 'latin1')}\r\nConnection: close\r\n\r\n${body}`;
}

// The socket's listeners are shared by every connection: each finds its
// connection through this property of the socket, instead of being a closure
// of its own (five closures and their context are about 300 bytes a
// connection, a fifth of an idle keep-alive connection's heap).
const kConnection = Symbol('iomux.http.connection');
type ConnectionSocket = Socket & { [kConnection]: Connection };

function ignoreError(): void {
  // 'close' follows; the peer's errors are not ours to throw.
}

function requestTimedOut(): HttpError {
  return new HttpError(408, 'HTTP_REQUEST_TIMEOUT', 'the request did not arrive in time');
}

export class Connection implements ParserHandler, RequestOwner, ResponseOwner {
  readonly socket: Socket;
  private readonly server: ConnectionOwner;
  private readonly parser: RequestParser;
  /** The request whose head or body is being parsed, and its response. */
  private req: IncomingRequest | null = null;
  private res: ServerResponse | null = null;
  /** Responses not yet finished, in request order; the first one writes straight to the socket. */
  private first: ServerResponse | null = null;
  private last: ServerResponse | null = null;
  private waiting = 0;
  private requests = 0;
  /** Take no more requests; close once the responses are out. */
  private noMore = false;
  /** An error response to send once the responses ahead of it are out. */
  private errorText: string | null = null;
  private closing = false;
  private closed = false;
  private paused = 0;
  /** Response text made while a chunk is parsed, written once after it (see _send). */
  private outText = '';
  private outEncoding: BufferEncoding = 'utf8';
  private parsing = false;
  /** When the request being parsed began (its first byte), and the time of the current data event. */
  private requestStart = 0;
  private now = 0;
  private deadline: number;
  private armedAt = Infinity;
  private timer: Timer | null = null;

  constructor(server: ConnectionOwner, socket: Socket) {
    this.server = server;
    this.socket = socket;
    this.parser = new RequestParser(this, server._limits);
    (socket as ConnectionSocket)[kConnection] = this;
    socket.on('data', Connection.onSocketData);
    socket.on('end', Connection.onSocketEnd);
    socket.on('drain', Connection.onSocketDrain);
    socket.on('error', ignoreError);
    socket.on('close', Connection.onSocketClose);
    const now = loop._now();
    this.requestStart = now;
    this.deadline = Infinity;
    this.setDeadline(now + server._headersTimeout, now);
  }

  // The socket's listeners (see kConnection); `this` is the socket.
  private static onSocketData(this: Socket, chunk: Buffer): void {
    (this as ConnectionSocket)[kConnection].onData(chunk);
  }

  private static onSocketEnd(this: Socket): void {
    (this as ConnectionSocket)[kConnection].onPeerEnd();
  }

  private static onSocketDrain(this: Socket): void {
    (this as ConnectionSocket)[kConnection].first?._drained();
  }

  private static onSocketClose(this: Socket): void {
    (this as ConnectionSocket)[kConnection].onClose();
  }

  /** No request under way and no response waiting. */
  get idle(): boolean {
    return this.first === null && this.parser.idle;
  }

  // ---- input ----------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    const parser = this.parser;
    if (parser.dead) return; // closing: what the client still sends is dropped
    const now = loop._now();
    this.now = now;
    if (parser.idle) this.requestStart = now;
    this.parsing = true;
    try {
      parser.execute(chunk);
    } catch (err) {
      this.parsing = false;
      this.flushOut();
      if (!(err instanceof HttpError)) throw err;
      this.protocolError(err);
      return;
    }
    this.parsing = false;
    if (this.outText !== '') this.flushOut();
    if (this.closing) return;
    if (parser.inHead) this.setDeadline(this.requestStart + this.server._headersTimeout, now);
    else if (!parser.idle) this.setDeadline(this.requestStart + this.server._requestTimeout, now);
    else if (this.first !== null) this.deadline = Infinity;
  }

  private onPeerEnd(): void {
    // The client will send nothing more. A request cut short is answered
    // with 400; the responses already due still go out.
    try {
      this.parser.finish();
    } catch (err) {
      this.protocolError(err as HttpError);
      return;
    }
    this.noMore = true;
    if (this.first === null) this.close();
  }

  /** @internal */
  onHead(head: RequestHead): void {
    const server = this.server;
    const req = new IncomingRequest(this, head);
    const res = new ServerResponse(this, req);
    this.req = req;
    this.res = res;
    if (this.last === null) this.first = res;
    else this.last._next = res;
    this.last = res;
    this.requests++;
    if (server._maxRequestsPerSocket > 0 && this.requests >= server._maxRequestsPerSocket) this.noMore = true;
    if (++this.waiting >= server._maxPipelined) this.pause(PAUSE_PIPELINE);
    // RFC 9110 §10.1.1: an HTTP/1.0 request's expectations are ignored.
    if (head.expect !== undefined && head.versionMinor === 1) {
      if (head.expect !== '100-continue') {
        // RFC 9110 §10.1.1: an expectation that cannot be met.
        this.noMore = true;
        res.writeHead(417).end();
        return;
      }
    }
    try {
      server._dispatch(req, res);
    } catch (err) {
      // The handler's exception is the application's: it goes to
      // 'uncaughtException' after this batch, and the parse goes on.
      process.nextTick(rethrow, err);
    }
  }

  /** @internal */
  onBody(chunk: Buffer): void {
    this.req!._push(chunk);
  }

  /** @internal */
  onEnd(rawTrailers: string[] | null): void {
    const req = this.req!;
    this.req = null;
    this.res = null;
    this.requestStart = this.now;
    if (!req._keepAlive || this.noMore || this.server._draining) {
      this.noMore = true;
      this.parser.close();
    }
    req._end(rawTrailers);
    // Its response may have gone out already (a handler that answered
    // before the request was complete): nothing is left to wait for.
    if (this.noMore && this.first === null) this.endAndClose();
  }

  // ---- output ----------------------------------------------------------------------------

  /** @internal */
  _send(res: ServerResponse, data: string | Uint8Array, encoding: BufferEncoding): boolean {
    if (typeof data === 'string' ? data.length === 0 : data.byteLength === 0) return !res._needDrain;
    if (res === this.first) {
      if (this.parsing && typeof data === 'string' && (this.outText === '' || encoding === this.outEncoding)) {
        // Answers to the requests of one chunk (pipelined ones, or one
        // request's head and body) go out as one write after the chunk.
        this.outEncoding = encoding;
        this.outText += data;
        if (this.outText.length < this.server._highWaterMark || this.flushOut()) return !res._needDrain;
        res._needDrain = true;
        return false;
      }
      this.flushOut();
      if (this.socket.write(data, encoding)) return true;
      res._needDrain = true;
      return false;
    }
    // An earlier response is still going out: hold the bytes.
    const bytes = typeof data === 'string' ? Buffer.from(data, encoding) : data;
    (res._held ??= []).push(bytes);
    res._heldBytes += bytes.byteLength;
    if (res._heldBytes < this.server._highWaterMark) return true;
    res._needDrain = true;
    return false;
  }

  /** Writes the text gathered while a chunk was parsed. False past the high-water mark. */
  private flushOut(): boolean {
    const text = this.outText;
    if (text === '') return true;
    this.outText = '';
    if (this.socket.write(text, this.outEncoding)) return true;
    if (this.first !== null) this.first._needDrain = true;
    return false;
  }

  /** @internal */
  _mustClose(res: ServerResponse): boolean {
    // Only the last response can close: those before it still have to go out.
    // The last one closes even while its own request's body is still
    // arriving: no request follows it.
    return (this.noMore || this.server._draining) && res === this.last;
  }

  /** @internal A response finished: send what was held behind it, and see what comes next. */
  _responseDone(res: ServerResponse): void {
    if (res !== this.first) return; // its turn comes when those ahead of it are done
    this.advance();
  }

  private advance(): void {
    let r = this.first;
    while (r !== null && (r.writableFinished || r.destroyed)) {
      this.waiting--;
      if (!r.req.complete) r.req._dump();
      const keepAlive = r._keepAlive && !r.destroyed;
      r = r._next;
      this.first = r;
      if (!keepAlive) {
        this.noMore = true;
        this.parser.close();
        if (this.errorText === null) {
          this.endAndClose();
          return;
        }
        break;
      }
      if (r !== null) this.releaseHeld(r);
    }
    if (r === null) this.last = null;
    if (this.paused & PAUSE_PIPELINE && this.waiting < this.server._maxPipelined) this.unpause(PAUSE_PIPELINE);
    if (r !== null) return;
    if (this.errorText !== null) {
      this.sendError();
    } else if (this.noMore && this.req === null) {
      this.endAndClose();
    } else if (this.parser.idle && !this.closing) {
      const now = loop._now();
      const grace = this.server._idleGrace;
      this.setDeadline(now + (grace > 0 ? Math.min(grace, this.server._keepAliveTimeout) : this.server._keepAliveTimeout), now);
    }
  }

  /** r is now first in line: its held bytes go out. */
  private releaseHeld(r: ServerResponse): void {
    const held = r._held;
    if (held === null) return;
    r._held = null;
    r._heldBytes = 0;
    this.flushOut();
    let ok = true;
    const sock = this.socket;
    sock.cork();
    for (const b of held) ok = sock.write(b);
    sock.uncork();
    if (!ok) r._needDrain = true;
    else r._drained();
    r._released();
  }

  // ---- flow control ------------------------------------------------------------------------

  private pause(why: number): void {
    if (this.paused === 0) this.socket.pause();
    this.paused |= why;
  }

  private unpause(why: number): void {
    if (this.paused === 0) return;
    this.paused &= ~why;
    if (this.paused === 0 && !this.closing) this.socket.resume();
  }

  /** @internal */
  _pauseReading(): void {
    this.pause(PAUSE_BODY);
  }

  /** @internal */
  _resumeReading(): void {
    this.unpause(PAUSE_BODY);
  }

  // ---- timeouts ----------------------------------------------------------------------------

  private setDeadline(at: number, now: number): void {
    this.deadline = at;
    if (at >= this.armedAt) return; // the timer fires first and re-arms for the rest
    this.armedAt = at;
    const ms = Math.max(1, Math.ceil(at - now));
    if (this.timer === null) {
      this.timer = loop.setTimeout(() => this.onTimer(), ms);
      this.timer.unref();
    } else {
      this.timer._rearm(ms);
    }
  }

  private onTimer(): void {
    this.armedAt = Infinity;
    if (this.closed) return;
    const now = loop._now();
    if (now < this.deadline) {
      if (this.deadline !== Infinity) this.setDeadline(this.deadline, now);
      return;
    }
    this.deadline = Infinity;
    if (this.closing) {
      this.socket.destroy(); // the linger after an error response is over
      return;
    }
    const parser = this.parser;
    if (parser.inHead || (!parser.idle && !parser.dead)) {
      parser.close();
      this.protocolError(requestTimedOut());
    } else if (this.first === null) {
      // Idle too long (or never sent a request); a draining server closes gently.
      if (this.server._idleGrace > 0) this.endAndClose();
      else this.socket.destroy();
    }
  }

  // ---- errors and closing -------------------------------------------------------------

  /** The client broke the protocol: answer with the error's status after the responses ahead, then close. */
  private protocolError(err: HttpError): void {
    this.server._clientError(err, this.socket);
    this.noMore = true;
    this.parser.close();
    const req = this.req;
    const res = this.res;
    this.req = null;
    this.res = null;
    if (req !== null && res !== null) {
      req._abort(err);
      if (res.headersSent) {
        // Its response is already under way: a status can no longer be sent.
        this.socket.destroy();
        return;
      }
      res._destroy();
    }
    this.errorText = errorResponse(err);
    if (this.first === null || this.first === res) this.advance();
  }

  private sendError(): void {
    const text = this.errorText!;
    this.errorText = null;
    this.closing = true;
    this.flushOut();
    this.socket.end(text, 'latin1');
    const now = loop._now();
    this.setDeadline(now + LINGER_MS, now);
  }

  /** Ends the connection once the responses are out (FIN), closing it then. */
  private endAndClose(): void {
    if (this.closing) return;
    this.closing = true;
    this.flushOut();
    if (this.server._idleGrace > 0) {
      // Draining: half-close and read (dropping it) whatever the client sent
      // meanwhile until its FIN, for up to LINGER_MS. Closing with bytes
      // unread would send a reset, which can discard the last response
      // before the client reads it.
      this.parser.close();
      this.paused = 0;
      this.socket.resume();
      this.socket.end();
      const now = loop._now();
      this.setDeadline(now + LINGER_MS, now);
      return;
    }
    this.socket.destroySoon();
  }

  /**
   * The server drains: the responses from now on say Connection: close (see
   * _mustClose); a connection with nothing under way gets _idleGrace ms for
   * its next request.
   */
  drain(): void {
    if (this.closing || !this.idle) return;
    const now = loop._now();
    const at = now + this.server._idleGrace;
    if (at < this.deadline) this.setDeadline(at, now);
  }

  /** Closes now if nothing is under way; else after the current responses. Returns true if closed now. */
  closeIfIdle(): boolean {
    if (this.idle) {
      this.close();
      return true;
    }
    this.noMore = true;
    if (this.parser.idle) this.parser.close();
    return false;
  }

  /** Closes the connection now. */
  close(): void {
    this.endAndClose();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.parser.close();
    if (this.timer !== null) loop.clearTimeout(this.timer);
    this.req?._abort();
    for (let r = this.first; r !== null; r = r._next) r._destroy();
    this.first = this.last = null;
    this.server._connectionClosed(this);
  }
}
