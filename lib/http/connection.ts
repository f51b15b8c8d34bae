// connection.ts -- one HTTP/1.1 connection: it feeds the socket's bytes to
// the parser, makes a request and a response for each head, keeps pipelined
// responses in request order, and enforces the timeouts.
//
// Timeouts cost no syscall and, while requests keep coming, no call into the
// core either. A connection has at most one deadline, by phase:
//   waiting for a first request, or a head under way: headersTimeout from its first byte
//   a body under way: requestTimeout from the request's first byte
//   between requests: keepAliveTimeout from the last response
//   after an error response: the linger (LINGER_MS)
//   a handler at work: none
// Each phase has its own duration, so the connections of one server waiting
// in the same phase fall due in the order they entered it: the server keeps
// one list per phase, ordered by deadline (a connection joins at the end, in
// O(1)), and one loop timer for the earliest of their first deadlines (see
// ConnectionShared). Moving a deadline later relinks the connection and
// leaves the timer alone; when the timer fires early it re-arms for what is
// left. Deadlines are whole milliseconds rounded up (small integers: no boxed
// number per connection), so a timeout never fires early.
//
// Memory of an idle keep-alive connection: no timer object or closure of its
// own, no parser (a connection takes one from its server's free list when
// bytes arrive and gives it back once the request is parsed, as node:http
// does with its parser FreeList), no request or response once it has gone
// out, and its booleans share one integer.
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
  /** Its connections' parsers and timeouts. */
  readonly _connShared: ConnectionShared;
  _dispatch(req: IncomingRequest, res: ServerResponse): void;
  _clientError(err: HttpError, socket: Socket): void;
  _connectionClosed(conn: Connection): void;
}

// After an error response the connection half-closes and reads (and drops)
// whatever the client still sends for this long, so that the client sees the
// response rather than a reset caused by unread data.
const LINGER_MS = 2000;

// Why reading is paused; reading resumes when none is left. These are bits
// of Connection.flags (F_PAUSED masks them).
const PAUSE_BODY = 1; // an unconsumed request body is over its buffer limit
const PAUSE_PIPELINE = 2; // too many responses waiting
const F_PAUSED = PAUSE_BODY | PAUSE_PIPELINE;
// The other bits of Connection.flags.
const F_NO_MORE = 4; // take no more requests; close once the responses are out
const F_CLOSING = 8;
const F_CLOSED = 16;
const F_PARSING = 32; // inside parser.execute()
const F_DEAD = 64; // the connection parses nothing more (its parser closed, failed or finished)
// Bits 8-10: which deadline list the connection is on (T_NONE: none).
const T_SHIFT = 8;
const T_MASK = 7 << T_SHIFT;
const T_NONE = 0;
const T_HEADERS = 1;
const T_REQUEST = 2;
const T_KEEPALIVE = 3;
const T_LINGER = 4;
const T_LISTS = 5;

// Parsers a server keeps for its connections' next requests. Only the
// connections with a request under way hold one; past this many at once,
// parsers given back are left to the GC.
const MAX_FREE_PARSERS = 64;

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

/**
 * What the connections of one server share: the free list of parsers, the
 * deadline lists (one per phase, each ordered by deadline) and the one loop
 * timer for them all.
 */
export class ConnectionShared {
  private readonly owner: ConnectionOwner;
  private readonly parsers: RequestParser[] = [];
  /** First and last connection of each deadline list (index T_*; T_NONE unused). */
  private readonly heads: (Connection | null)[] = [null, null, null, null, null];
  private readonly tails: (Connection | null)[] = [null, null, null, null, null];
  private timer: Timer | null = null;
  /** When the timer fires (Infinity: not armed). */
  private armedAt = Infinity;

  constructor(owner: ConnectionOwner) {
    this.owner = owner;
  }

  /** @internal A parser, new again, for conn. */
  _takeParser(conn: Connection): RequestParser {
    const p = this.parsers.pop();
    if (p === undefined) return new RequestParser(conn, this.owner._limits);
    p.reuse(conn);
    return p;
  }

  /** @internal A parser no connection uses any more. */
  _giveParser(p: RequestParser): void {
    p.close(); // drops what it still holds
    if (this.parsers.length < MAX_FREE_PARSERS) this.parsers.push(p);
  }

  /** @internal Puts conn on list `kind`, due at `at` (whole ms); conn is on no list. */
  _link(conn: Connection, kind: number, at: number, now: number): void {
    conn._deadline = at;
    // Its place: after the last connection due no later. Nearly always the
    // list's last one: a connection joins a list when its phase begins, so
    // each list's deadlines come in order; only a body's deadline counts from
    // its head's first byte. The search runs from both ends at once, so a
    // deadline older than most is placed quickly too.
    let after: Connection | null = this.tails[kind]!;
    let before: Connection | null = this.heads[kind]!;
    while (after !== null && after._deadline > at) {
      if (before!._deadline > at) {
        after = before!._tPrev;
        break;
      }
      after = after._tPrev;
      before = before!._tNext;
    }
    conn._tPrev = after;
    const next = after === null ? this.heads[kind]! : after._tNext;
    conn._tNext = next;
    if (after === null) this.heads[kind] = conn;
    else after._tNext = conn;
    if (next === null) this.tails[kind] = conn;
    else next._tPrev = conn;
    if (at < this.armedAt) this.arm(at, now);
  }

  /** @internal Takes conn off list `kind`. */
  _unlink(conn: Connection, kind: number): void {
    const prev = conn._tPrev;
    const next = conn._tNext;
    if (prev === null) this.heads[kind] = next;
    else prev._tNext = next;
    if (next === null) this.tails[kind] = prev;
    else next._tPrev = prev;
    conn._tPrev = conn._tNext = null;
  }

  private arm(at: number, now: number): void {
    this.armedAt = at;
    const ms = Math.max(1, Math.ceil(at - now));
    if (this.timer === null) {
      this.timer = loop.setTimeout(() => this.sweep(), ms);
      this.timer.unref();
    } else {
      this.timer._rearm(ms);
    }
  }

  /** The timer fired: every connection due times out; the timer re-arms for the next one. */
  private sweep(): void {
    this.armedAt = Infinity;
    const now = loop._now();
    try {
      for (let kind = 1; kind < T_LISTS; kind++) {
        for (let c = this.heads[kind]!; c !== null && c._deadline <= now; c = this.heads[kind]!) {
          this._unlink(c, kind);
          c._timedOut();
        }
      }
    } finally {
      let next = Infinity;
      for (let kind = 1; kind < T_LISTS; kind++) {
        const c = this.heads[kind]!;
        if (c !== null && c._deadline < next) next = c._deadline;
      }
      if (next < this.armedAt) this.arm(next, loop._now());
    }
  }
}

export class Connection implements ParserHandler, RequestOwner, ResponseOwner {
  readonly socket: Socket;
  private readonly server: ConnectionOwner;
  private readonly shared: ConnectionShared;
  /** The parser, while a request is being parsed (null between requests, and once dead). */
  private parser: RequestParser | null = null;
  /** The request whose head or body is being parsed, and its response. */
  private req: IncomingRequest | null = null;
  private res: ServerResponse | null = null;
  /** Responses not yet finished, in request order; the first one writes straight to the socket. */
  private first: ServerResponse | null = null;
  private last: ServerResponse | null = null;
  private waiting = 0;
  private requests = 0;
  /** F_*, PAUSE_* and the deadline list (T_*), in one small integer. */
  private flags = 0;
  /** An error response to send once the responses ahead of it are out. */
  private errorText: string | null = null;
  /** Response text made while a chunk is parsed, written once after it (see _send). */
  private outText = '';
  private outEncoding: BufferEncoding = 'utf8';
  /** When the request being parsed began (its first byte), in whole ms rounded up. */
  private requestStart = 0;
  /** @internal The deadline (whole ms) and the neighbours on its list (see ConnectionShared). */
  _deadline = 0;
  /** @internal */ _tPrev: Connection | null = null;
  /** @internal */ _tNext: Connection | null = null;

  constructor(server: ConnectionOwner, socket: Socket) {
    this.server = server;
    this.shared = server._connShared;
    this.socket = socket;
    (socket as ConnectionSocket)[kConnection] = this;
    socket.on('data', Connection.onSocketData);
    socket.on('end', Connection.onSocketEnd);
    socket.on('drain', Connection.onSocketDrain);
    socket.on('error', ignoreError);
    socket.on('close', Connection.onSocketClose);
    const now = loop._now();
    this.requestStart = Math.ceil(now);
    this.setDeadline(T_HEADERS, this.requestStart + server._headersTimeout, now);
  }

  // ---- flags -----------------------------------------------------------------------------

  private get noMore(): boolean { return (this.flags & F_NO_MORE) !== 0; }
  private set noMore(v: boolean) { this.flags = v ? this.flags | F_NO_MORE : this.flags & ~F_NO_MORE; }
  private get closing(): boolean { return (this.flags & F_CLOSING) !== 0; }
  private set closing(v: boolean) { this.flags = v ? this.flags | F_CLOSING : this.flags & ~F_CLOSING; }
  private get closed(): boolean { return (this.flags & F_CLOSED) !== 0; }
  private set closed(v: boolean) { this.flags = v ? this.flags | F_CLOSED : this.flags & ~F_CLOSED; }
  private get parsing(): boolean { return (this.flags & F_PARSING) !== 0; }
  private get dead(): boolean { return (this.flags & F_DEAD) !== 0; }
  private get paused(): number { return this.flags & F_PAUSED; }
  private set paused(v: number) { this.flags = (this.flags & ~F_PAUSED) | v; }

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
    return this.first === null && this.parserIdle();
  }

  // ---- the parser ------------------------------------------------------------------------

  /** Between requests, nothing of the next one received (and not dead). */
  private parserIdle(): boolean {
    const p = this.parser;
    return p === null ? (this.flags & F_DEAD) === 0 : p.idle;
  }

  /** Gives the parser back to the server's free list. */
  private releaseParser(): void {
    const p = this.parser;
    if (p === null) return;
    this.parser = null;
    this.shared._giveParser(p);
  }

  /** Parses nothing more. (During execute() the parser is given back once it returns.) */
  private closeParser(): void {
    this.flags |= F_DEAD;
    const p = this.parser;
    if (p === null) return;
    p.close();
    if ((this.flags & F_PARSING) === 0) this.releaseParser();
  }

  // ---- input ----------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    if ((this.flags & F_DEAD) !== 0) return; // closing: what the client still sends is dropped
    const now = loop._now();
    let parser = this.parser;
    if (parser === null) {
      this.parser = parser = this.shared._takeParser(this);
      this.requestStart = Math.ceil(now);
    } else if (parser.idle) {
      this.requestStart = Math.ceil(now);
    }
    this.flags |= F_PARSING;
    try {
      parser.execute(chunk);
    } catch (err) {
      this.flags = (this.flags & ~F_PARSING) | F_DEAD; // the parser died
      this.flushOut();
      if (!(err instanceof HttpError)) {
        this.releaseParser();
        throw err;
      }
      this.protocolError(err);
      return;
    }
    this.flags &= ~F_PARSING;
    const inHead = parser.inHead;
    const idle = parser.idle; // (a dead parser is neither idle nor in a head)
    if (idle || (this.flags & F_DEAD) !== 0) this.releaseParser();
    if (this.outText !== '') this.flushOut();
    if ((this.flags & F_CLOSING) !== 0) return;
    if (inHead) this.setDeadline(T_HEADERS, this.requestStart + this.server._headersTimeout, now);
    else if (!idle) this.setDeadline(T_REQUEST, this.requestStart + this.server._requestTimeout, now);
    else if (this.first !== null) this.clearDeadline();
  }

  private onPeerEnd(): void {
    // The client will send nothing more. A request cut short is answered
    // with 400; the responses already due still go out.
    this.flags |= F_DEAD;
    const parser = this.parser;
    if (parser !== null) {
      try {
        parser.finish();
      } catch (err) {
        this.releaseParser();
        this.protocolError(err as HttpError);
        return;
      }
      this.releaseParser();
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
    this.requestStart = Math.ceil(loop._now());
    if (!req._keepAlive || this.noMore || this.server._draining) {
      this.noMore = true;
      this.closeParser();
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
        this.closeParser();
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
    } else if (this.parserIdle() && !this.closing) {
      const now = loop._now();
      const grace = this.server._idleGrace;
      const keepAlive = this.server._keepAliveTimeout;
      this.setDeadline(T_KEEPALIVE, Math.ceil(now + (grace > 0 ? Math.min(grace, keepAlive) : keepAlive)), now);
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

  /** The deadline is `at` (ms, rounded up to a whole one here), on list `kind`. */
  private setDeadline(kind: number, at: number, now: number): void {
    at = Math.ceil(at);
    const flags = this.flags;
    const was = (flags & T_MASK) >> T_SHIFT;
    if (was === kind && at === this._deadline) return; // (a head arriving in pieces)
    const shared = this.shared;
    if (was !== T_NONE) shared._unlink(this, was);
    this.flags = (flags & ~T_MASK) | (kind << T_SHIFT);
    shared._link(this, kind, at, now);
  }

  /** No deadline (a handler at work). */
  private clearDeadline(): void {
    const was = (this.flags & T_MASK) >> T_SHIFT;
    if (was === T_NONE) return;
    this.shared._unlink(this, was);
    this.flags &= ~T_MASK;
  }

  /** @internal The deadline passed (the server's sweep has taken the connection off its list). */
  _timedOut(): void {
    this.flags &= ~T_MASK;
    if (this.closed) return;
    if (this.closing) {
      this.socket.destroy(); // the linger after an error response is over
      return;
    }
    const parser = this.parser;
    if (parser !== null && !this.dead && !parser.idle) {
      // A head or a body under way.
      this.closeParser();
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
    this.closeParser();
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
    this.setDeadline(T_LINGER, now + LINGER_MS, now);
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
      this.closeParser();
      this.paused = 0;
      this.socket.resume();
      this.socket.end();
      const now = loop._now();
      this.setDeadline(T_LINGER, now + LINGER_MS, now);
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
    const at = Math.ceil(now + this.server._idleGrace);
    if ((this.flags & T_MASK) === 0 || at < this._deadline) this.setDeadline(T_KEEPALIVE, at, now);
  }

  /** Closes now if nothing is under way; else after the current responses. Returns true if closed now. */
  closeIfIdle(): boolean {
    if (this.idle) {
      this.close();
      return true;
    }
    this.noMore = true;
    if (this.parserIdle()) this.closeParser();
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
    this.closeParser();
    this.clearDeadline();
    this.req?._abort();
    for (let r = this.first; r !== null; r = r._next) r._destroy();
    this.first = this.last = null;
    this.server._connectionClosed(this);
  }
}
