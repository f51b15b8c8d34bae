// http.ts -- HTTP mode: client requests are parsed (strictly, with the
// server's RequestParser), forwarded to an upstream over a pooled keep-alive
// connection, and the upstream's response is parsed (ResponseParser) and
// re-framed for the client. Bodies stream both ways with backpressure.
//
// One exchange (a request and its response) per client connection is under
// way at a time; pipelined requests wait, parsed, in a short queue (reading
// from the client pauses while one waits). Hop-by-hop headers are removed in
// both directions: Connection and the fields it names, Keep-Alive,
// Proxy-Connection, TE, Trailer, Upgrade; Transfer-Encoding and
// Content-Length are re-made from the framing the proxy itself uses.
//
// Upgrade (WebSocket and the like): an HTTP/1.1 request with Upgrade and
// Connection: upgrade goes out with both, and is the last request read from
// its client. If the upstream answers 101 Switching Protocols, the 101 goes
// to the client and from then on the two connections are joined by the core
// (relay(), as in TCP mode), with idleTimeout; any other answer is relayed as
// usual and closes the client connection.
//
// Failures and what the client gets:
//   - no upstream reachable (each connect failure fails over to the next): 502;
//   - a pooled connection the upstream had closed, found out before any
//     response byte: the request goes again on a fresh connection (when its
//     body, if any, was small enough to keep);
//   - an idempotent request whose upstream failed before any response byte:
//     the next upstream;
//   - the upstream silent for responseTimeout before the response head: 504;
//   - a malformed response before its head went out: 502;
//   - any failure after the response head went out: the client connection is
//     closed at once, so that a truncated response is never taken as whole.
import { isIP } from 'node:net';
import { STATUS_CODES } from 'node:http';
import type { Socket } from '../socket';
import { BODY_CHUNKED, BODY_LENGTH, HttpError, RequestParser, type ParserHandler, type RequestHead } from '../http/parser';
import {
  clientFromHeader, clientOf, connectUpstream, describeClient, proxyHeaderFor, readProxyHeader,
  type ClientInfo, type ProxyCore, type Session,
} from './core';
import { relay } from './relay';
import { ResponseParser, type ResponseHandler, type ResponseHead } from './response';
import type { IdleConnection, Upstream } from './upstream';

// Hop-by-hop fields (RFC 9110 §7.6.1), and the framing fields the proxy re-makes.
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'transfer-encoding', 'content-length',
]);
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
// A request body is kept, for a retry on another connection, up to this size.
const REPLAY_MAX = 64 * 1024;
// Body bytes buffered while the upstream connection is being made, before
// reading from the client pauses.
const PENDING_MAX = 64 * 1024;
// After an error response the client gets this long to read it before the close.
const LINGER_MS = 2000;

const PAUSE_PIPELINE = 1;
const PAUSE_UPSTREAM = 2;

function noop(): void {}

/** The names Connection lists, lower-cased. */
function connectionOptions(value: string | string[] | undefined): Set<string> {
  const out = new Set<string>();
  if (value === undefined) return out;
  for (const v of Array.isArray(value) ? value : [value]) {
    for (const part of v.split(',')) {
      const t = part.trim().toLowerCase();
      if (t !== '') out.add(t);
    }
  }
  return out;
}

function unmapped(a: string): string {
  return a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a;
}

function reasonOf(status: number): string {
  return STATUS_CODES[status] ?? 'Error';
}

/** A response the proxy makes itself (errors). */
function ownResponse(status: number, message: string, keepAlive: boolean): string {
  const body = `${status} ${reasonOf(status)}: ${message}\n`;
  return `HTTP/1.1 ${status} ${reasonOf(status)}\r\nContent-Type: text/plain\r\n` +
    `Content-Length: ${Buffer.byteLength(body, 'latin1')}\r\nConnection: ${keepAlive ? 'keep-alive' : 'close'}\r\n\r\n${body}`;
}

/** A connection to an upstream, busy with one exchange or idle in a pool. */
class UpConn implements ResponseHandler {
  readonly parser = new ResponseParser(this);
  ex: Exchange | null = null;
  /** It served a request before: it may have been closed by the upstream meanwhile. */
  reused = false;
  /** Set by a 101: joins the connections once the parser has kept what followed the head. */
  switched: (() => void) | null = null;
  /** Where it goes when idle: its upstream's shared pool, or its client's (PROXY header sent). */
  readonly pool: IdleConnection[];

  constructor(private readonly core: HttpCore, readonly upstream: Upstream, readonly socket: Socket, pool: IdleConnection[]) {
    this.pool = pool;
    socket.on('data', (c: Buffer) => this.onData(c));
    socket.on('end', () => this.onPeerEnd());
    socket.on('error', noop);
    socket.on('close', () => this.onClose());
    socket.on('timeout', () => this.onTimeout());
    socket.on('drain', () => this.ex?.upstreamDrained());
  }

  private onData(c: Buffer): void {
    this.upstream.counters.bytesIn += c.length;
    const ex = this.ex;
    if (ex === null) {
      // An idle connection has nothing to say: it cannot be trusted again.
      this.socket.destroy();
      return;
    }
    ex.gotBytes = true;
    try {
      this.parser.execute(c);
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      ex.upstreamProtocolError(this, err);
    }
    const switched = this.switched;
    if (switched !== null) {
      this.switched = null;
      switched();
    }
  }

  private onPeerEnd(): void {
    const ex = this.ex;
    if (ex !== null) {
      try {
        this.parser.finish(); // ends a close-delimited body
      } catch (err) {
        if (!(err instanceof HttpError)) throw err;
      }
    }
    // Half-closed by the upstream: never reusable.
    this.socket.destroy();
  }

  private onClose(): void {
    const i = this.pool.indexOf(this);
    if (i >= 0) this.pool.splice(i, 1);
    const ex = this.ex;
    if (ex !== null) ex.upstreamFailed(this, (this.socket.errored as (Error & { code?: string }) | null)?.code ?? 'connection closed');
  }

  private onTimeout(): void {
    if (this.ex === null) this.socket.destroy(); // idle in the pool long enough
    else this.ex.upstreamTimeout(this);
  }

  onHead(h: ResponseHead): void {
    this.ex?.responseHead(this, h);
  }

  onBody(chunk: Buffer): void {
    this.ex?.responseBody(chunk);
  }

  onEnd(trailers: string[] | null): void {
    this.ex?.responseEnd(this, trailers);
  }

  /** Back to the pool when it can carry another request, else closed. */
  release(reusable: boolean): void {
    this.ex = null;
    const core = this.core;
    if (!reusable || core.draining || this.socket.destroyed || !this.parser.idle ||
      this.pool.length >= core.options.poolMaxIdle) {
      this.socket.destroy();
      return;
    }
    this.reused = true;
    this.socket.setTimeout(core.options.poolIdleTimeout);
    this.socket.resume(); // an idle connection still notices the upstream's close
    this.pool.push(this);
  }
}

/** What the HTTP sessions need of the proxy beyond ProxyCore. */
type HttpCore = ProxyCore;

/** The protocols an HTTP/1.1 request asks to switch to (Upgrade with Connection: upgrade), or null. */
function upgradeOf(head: RequestHead): string | null {
  const value = head.headers.upgrade;
  if (value === undefined || head.versionMinor !== 1 || head.method === 'CONNECT') return null;
  if (!connectionOptions(head.headers.connection).has('upgrade')) return null;
  return Array.isArray(value) ? value.join(', ') : value;
}

/** One request and its response. */
class Exchange {
  readonly head: RequestHead;
  /** What the request's Upgrade asks for, or null. */
  readonly upgrade: string | null;
  private readonly session: HttpSession;
  private readonly core: HttpCore;
  private conn: UpConn | null = null;
  /** The upstream whose load this exchange counts in. */
  private loadOn: Upstream | null = null;
  private readonly tried = new Set<Upstream>();
  private staleRetried = false;
  /** Body pieces not yet sent, and those sent (kept for a retry; null once over REPLAY_MAX). */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private replay: Buffer[] | null = [];
  private replayBytes = 0;
  private requestEnded = false;
  private trailers: string[] | null = null;
  private endSent = false;
  /** The upstream sent something for the current attempt. */
  gotBytes = false;
  private clientHeadSent = false;
  private chunkedToClient = false;
  clientKeepAlive = false;
  private done = false;
  private started = false;

  constructor(session: HttpSession, core: HttpCore, head: RequestHead) {
    this.session = session;
    this.core = core;
    this.head = head;
    this.upgrade = upgradeOf(head);
  }

  /** Bytes of the response went to the client: an error status can no longer be sent. */
  get responseStarted(): boolean {
    return this.clientHeadSent;
  }

  // ---- the request -----------------------------------------------------------------

  start(): void {
    if (this.started) return;
    this.started = true;
    if (this.head.method === 'CONNECT') {
      this.fail(501, 'CONNECT is not supported by this proxy');
      return;
    }
    void this.attempt(null);
  }

  /** Picks an upstream (or takes `same` again) and sends the request on one of its connections. */
  private async attempt(same: Upstream | null): Promise<void> {
    const core = this.core;
    for (;;) {
      const up = same ?? core.balancer.pick(this.tried);
      same = null;
      if (up === null) {
        core._counters.noUpstream++;
        core._log({
          level: 'error', event: 'no-upstream', client: describeClient(this.session.client),
          message: `${this.head.method} ${this.head.url.slice(0, 200)}: no upstream could be reached; 502`,
        });
        this.fail(502, 'no upstream could be reached');
        return;
      }
      this.tried.add(up);
      up.load++;
      this.loadOn = up;
      let conn = this.session.takeIdle(up);
      if (conn === null) {
        const header = up.sendProxy === false ? null : proxyHeaderFor(up.sendProxy, this.session.client);
        try {
          const socket = await connectUpstream(core, up, header);
          conn = new UpConn(core, up, socket, this.session.poolFor(up));
        } catch (err) {
          up.load--;
          this.loadOn = null;
          core._log({
            level: 'warn', event: 'connect-failed', upstream: up.name, client: describeClient(this.session.client),
            message: `${(err as Error).message}; trying the next upstream`,
          });
          if (this.done) return;
          continue;
        }
        if (this.done) {
          // The client went away while this connection was made: keep it for another.
          up.load--;
          this.loadOn = null;
          conn.release(true);
          return;
        }
      }
      this.bind(conn);
      return;
    }
  }

  private bind(conn: UpConn): void {
    const up = conn.upstream;
    this.conn = conn;
    this.gotBytes = false;
    conn.ex = this;
    up.counters.requests++;
    up.counters.requestsActive++;
    conn.parser.expect(this.head.method);
    const s = conn.socket;
    s.setTimeout(this.core.options.responseTimeout);
    s.resume();
    // A retry sends what was sent before again.
    if (this.replay !== null && this.replay.length > 0) {
      this.pending = this.replay.concat(this.pending);
      this.pendingBytes += this.replayBytes;
      this.replay = [];
      this.replayBytes = 0;
    }
    s.cork();
    const head = this.requestHeadText();
    s.write(head, 'latin1');
    up.counters.bytesOut += head.length;
    const pending = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    let ok = true;
    for (const piece of pending) ok = this.sendBody(piece);
    if (this.requestEnded) ok = this.sendEnd();
    s.uncork();
    if (ok) this.session.unpause(PAUSE_UPSTREAM);
    else this.session.pause(PAUSE_UPSTREAM);
  }

  private unbind(reusable: boolean): void {
    const conn = this.conn;
    if (conn === null) return;
    this.conn = null;
    conn.upstream.counters.requestsActive--;
    conn.release(reusable);
  }

  private dropLoad(): void {
    if (this.loadOn !== null) {
      this.loadOn.load--;
      this.loadOn = null;
    }
  }

  /** The request head as the upstream gets it. */
  private requestHeadText(): string {
    const h = this.head;
    const o = this.core.options;
    const drop = connectionOptions(h.headers.connection);
    const raw = h.rawHeaders;
    let out = `${h.method} ${h.url} HTTP/1.1\r\n`;
    let xff: string | undefined;
    let hasProto = false;
    let hadLength = false;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      const lower = name.toLowerCase();
      if (lower === 'content-length') hadLength = true;
      if (HOP_BY_HOP.has(lower) || drop.has(lower)) continue;
      const value = raw[i + 1]!;
      if (o.xForwardedFor) {
        if (lower === 'x-forwarded-for') {
          xff = xff === undefined ? value : `${xff}, ${value}`;
          continue;
        }
        if (lower === 'x-forwarded-proto') hasProto = true;
      }
      out += `${name}: ${value}\r\n`;
    }
    const addr = unmapped(this.session.client.address);
    if (o.xForwardedFor) {
      out += `X-Forwarded-For: ${xff === undefined || xff === '' ? '' : `${xff}, `}${addr}\r\n`;
      if (!hasProto) out += 'X-Forwarded-Proto: http\r\n';
    }
    if (o.forwarded) out += `Forwarded: for=${isIP(addr) === 6 ? `"[${addr}]"` : addr};proto=http\r\n`;
    if (this.upgrade !== null) out += `Upgrade: ${this.upgrade}\r\nConnection: upgrade\r\n`;
    if (h.bodyKind === BODY_LENGTH) out += `Content-Length: ${h.contentLength}\r\n`;
    else if (h.bodyKind === BODY_CHUNKED) out += 'Transfer-Encoding: chunked\r\n';
    else if (hadLength) out += 'Content-Length: 0\r\n';
    return `${out}\r\n`;
  }

  /** A piece of the request body from the client. */
  body(chunk: Buffer): void {
    if (this.done) return; // answered early (an error, or the upstream did not wait): dropped
    if (this.conn === null) {
      this.pending.push(chunk);
      this.pendingBytes += chunk.length;
      if (this.pendingBytes >= PENDING_MAX) this.session.pause(PAUSE_UPSTREAM);
      return;
    }
    if (!this.sendBody(chunk)) this.session.pause(PAUSE_UPSTREAM);
  }

  endRequest(trailers: string[] | null): void {
    this.requestEnded = true;
    this.trailers = trailers;
    if (this.done || this.conn === null) return;
    if (!this.sendEnd()) this.session.pause(PAUSE_UPSTREAM);
  }

  private sendBody(piece: Buffer): boolean {
    const conn = this.conn!;
    const s = conn.socket;
    if (this.replay !== null) {
      if (this.replayBytes + piece.length <= REPLAY_MAX) {
        this.replay.push(piece);
        this.replayBytes += piece.length;
      } else {
        this.replay = null;
      }
    }
    let n = piece.length;
    let ok: boolean;
    if (this.head.bodyKind === BODY_CHUNKED) {
      const size = `${piece.length.toString(16)}\r\n`;
      s.write(size, 'latin1');
      s.write(piece);
      ok = s.write('\r\n', 'latin1');
      n += size.length + 2;
    } else {
      ok = s.write(piece);
    }
    conn.upstream.counters.bytesOut += n;
    return ok;
  }

  private sendEnd(): boolean {
    if (this.endSent) return true;
    this.endSent = true;
    if (this.head.bodyKind !== BODY_CHUNKED) return true;
    let text = '0\r\n';
    const t = this.trailers;
    if (t !== null) for (let i = 0; i < t.length; i += 2) text += `${t[i]}: ${t[i + 1]}\r\n`;
    text += '\r\n';
    this.conn!.upstream.counters.bytesOut += text.length;
    return this.conn!.socket.write(text, 'latin1');
  }

  upstreamDrained(): void {
    this.session.unpause(PAUSE_UPSTREAM);
  }

  // ---- the response ------------------------------------------------------------------

  responseHead(conn: UpConn, h: ResponseHead): void {
    const client = this.session.socket;
    if (h.status < 200) {
      if (h.status === 101) {
        if (this.upgrade === null || !this.requestEnded) {
          this.upstreamProtocolError(conn, new HttpError(502, 'HTTP_UPGRADE', 'the upstream switched protocols unasked'));
        } else {
          this.switchProtocols(conn, h);
        }
        return;
      }
      // 100 Continue, 103 Early Hints: only an HTTP/1.1 client may get them.
      if (this.head.versionMinor === 1) client.write(this.responseHeadText(h, ''), 'latin1');
      return;
    }
    conn.upstream._passiveSuccess();
    let framing = '';
    this.clientKeepAlive = this.session.mayKeepAlive(this) && this.requestEnded;
    if (h.bodyKind === 'length') {
      framing = `Content-Length: ${h.contentLength}\r\n`;
    } else if (h.bodyKind === 'none') {
      const cl = h.headers['content-length'];
      // A HEAD or 304 response's length describes the resource: kept as sent.
      if (cl !== undefined) framing = `Content-Length: ${cl.split(',')[0]!.trim()}\r\n`;
    } else if (this.head.versionMinor === 1) {
      framing = 'Transfer-Encoding: chunked\r\n';
      this.chunkedToClient = true;
    } else {
      this.clientKeepAlive = false; // an HTTP/1.0 client: the close ends the body
    }
    if (!this.clientKeepAlive) framing += 'Connection: close\r\n';
    else if (this.head.versionMinor === 0) framing += 'Connection: keep-alive\r\n';
    this.clientHeadSent = true;
    client.write(this.responseHeadText(h, framing), 'latin1');
  }

  /** 101 Switching Protocols: the client gets it, and the session joins the two connections. */
  private switchProtocols(conn: UpConn, h: ResponseHead): void {
    const up = conn.upstream;
    up._passiveSuccess();
    up.counters.upgraded++;
    up.counters.requestsActive--;
    this.conn = null;
    conn.ex = null;
    this.done = true;
    this.clientHeadSent = true;
    const protocol = h.headers.upgrade ?? this.upgrade!;
    this.session.socket.write(this.responseHeadText(h, `Upgrade: ${protocol}\r\nConnection: upgrade\r\n`), 'latin1');
    conn.switched = () => this.session.tunnel(this, conn);
  }

  /** The joined connections are closed: the upstream's load ends. */
  tunnelEnded(): void {
    this.dropLoad();
  }

  private responseHeadText(h: ResponseHead, framing: string): string {
    const drop = connectionOptions(h.headers.connection);
    const raw = h.rawHeaders;
    let out = `HTTP/1.1 ${h.status} ${h.reason}\r\n`;
    for (let i = 0; i < raw.length; i += 2) {
      const lower = raw[i]!.toLowerCase();
      if (HOP_BY_HOP.has(lower) || drop.has(lower)) continue;
      out += `${raw[i]}: ${raw[i + 1]}\r\n`;
    }
    return `${out}${framing}\r\n`;
  }

  responseBody(chunk: Buffer): void {
    const client = this.session.socket;
    let ok: boolean;
    if (this.chunkedToClient) {
      client.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
      client.write(chunk);
      ok = client.write('\r\n', 'latin1');
    } else {
      ok = client.write(chunk);
    }
    if (!ok) this.conn?.socket.pause();
  }

  clientDrained(): void {
    this.conn?.socket.resume();
  }

  responseEnd(conn: UpConn, trailers: string[] | null): void {
    if (this.chunkedToClient) {
      let text = '0\r\n';
      if (trailers !== null) for (let i = 0; i < trailers.length; i += 2) text += `${trailers[i]}: ${trailers[i + 1]}\r\n`;
      this.session.socket.write(`${text}\r\n`, 'latin1');
    }
    // The connection can carry another request only if this one went out whole.
    const reusable = conn.parser.idle && this.endSent;
    this.finish(reusable);
  }

  private finish(reusable: boolean): void {
    if (this.done) return;
    this.done = true;
    this.unbind(reusable);
    this.dropLoad();
    this.session.exchangeDone(this);
  }

  // ---- failures ------------------------------------------------------------------------

  /** The upstream connection closed or failed before the response was complete. */
  upstreamFailed(conn: UpConn, why: string): void {
    if (this.conn !== conn || this.done) return;
    const up = conn.upstream;
    const log = this.core._log.bind(this.core);
    const client = describeClient(this.session.client);
    const clean = this.replay !== null; // all that was sent can be sent again
    if (!this.gotBytes && !this.clientHeadSent && clean) {
      const stale = conn.reused && !this.staleRetried;
      if (stale || IDEMPOTENT.has(this.head.method)) {
        this.conn = null;
        up.counters.requestsActive--;
        conn.ex = null;
        this.dropLoad();
        if (stale) {
          // A kept-alive connection the upstream had closed: not its fault.
          this.staleRetried = true;
          void this.attempt(up);
          return;
        }
        up.counters.resets++;
        up._passiveFailure(this.core.options.passiveFailures, this.core.options.passiveCooldown, why);
        log({ level: 'warn', event: 'upstream-reset', upstream: up.name, client, message: `${why} before a response; trying the next upstream` });
        void this.attempt(null);
        return;
      }
    }
    up.counters.resets++;
    up._passiveFailure(this.core.options.passiveFailures, this.core.options.passiveCooldown, why);
    if (!this.clientHeadSent) {
      log({ level: 'warn', event: 'upstream-reset', upstream: up.name, client, message: `${why} before a complete response head; 502` });
      this.unbind(false);
      this.fail(502, `the upstream connection failed (${why})`);
    } else {
      log({ level: 'warn', event: 'upstream-reset', upstream: up.name, client, message: `${why} in the middle of a response; client connection closed` });
      this.abortClient();
    }
  }

  upstreamTimeout(conn: UpConn): void {
    if (this.conn !== conn || this.done) return;
    const up = conn.upstream;
    up.counters.timeouts++;
    const ms = this.core.options.responseTimeout;
    const client = describeClient(this.session.client);
    this.unbind(false);
    if (!this.clientHeadSent) {
      this.core._log({ level: 'warn', event: 'upstream-timeout', upstream: up.name, client, message: `no response within ${ms} ms; 504` });
      this.fail(504, `the upstream did not answer within ${ms} ms`);
    } else {
      this.core._log({ level: 'warn', event: 'upstream-timeout', upstream: up.name, client, message: `response stalled for ${ms} ms; client connection closed` });
      this.abortClient();
    }
  }

  upstreamProtocolError(conn: UpConn, err: HttpError): void {
    if (this.conn !== conn || this.done) return;
    const up = conn.upstream;
    up.counters.protocol++;
    const client = describeClient(this.session.client);
    this.unbind(false);
    if (!this.clientHeadSent) {
      this.core._log({ level: 'warn', event: 'bad-response', upstream: up.name, client, message: `${err.message}; 502` });
      this.fail(502, 'the upstream sent an invalid response');
    } else {
      this.core._log({ level: 'warn', event: 'bad-response', upstream: up.name, client, message: `${err.message}; client connection closed` });
      this.abortClient();
    }
  }

  /** Answers the client with an error of the proxy's own. */
  fail(status: number, message: string): void {
    if (this.done) return;
    this.clientKeepAlive = this.requestEnded && this.session.mayKeepAlive(this);
    this.clientHeadSent = true;
    this.session.socket.write(ownResponse(status, message, this.clientKeepAlive), 'latin1');
    this.finish(false);
  }

  private abortClient(): void {
    this.done = true;
    this.unbind(false);
    this.dropLoad();
    this.session.socket.destroy();
  }

  /** The client went away. */
  abort(): void {
    if (this.done) return;
    this.done = true;
    this.unbind(false);
    this.dropLoad();
  }
}

export class HttpSession implements Session, ParserHandler {
  readonly socket: Socket;
  client: ClientInfo;
  private readonly core: HttpCore;
  private readonly parser: RequestParser;
  private readonly queue: Exchange[] = [];
  private parsing: Exchange | null = null;
  private noMore = false;
  private closing = false;
  private closed = false;
  private paused = 0;
  private pendingError: HttpError | null = null;
  /** Idle connections opened for this client alone (their PROXY header names it). */
  private own: Map<Upstream, IdleConnection[]> | null = null;

  constructor(core: HttpCore, socket: Socket) {
    this.core = core;
    this.socket = socket;
    this.client = clientOf(socket);
    this.parser = new RequestParser(this, core.options.limits);
    socket.on('error', noop);
    socket.on('close', () => this.onClose());
    if (core.options.acceptProxy === false) {
      this.begin(null);
      return;
    }
    readProxyHeader(socket, core.options.acceptProxy, core.options.proxyHeaderTimeout).then((r) => {
      this.client = clientFromHeader(socket, r.header);
      this.begin(r.rest);
    }, (err: Error) => {
      core._counters.proxyHeaderErrors++;
      core._log({ level: 'warn', event: 'proxy-header', client: describeClient(this.client), message: `closing the connection: ${err.message}` });
      socket.destroy();
    });
  }

  private begin(rest: Buffer | null): void {
    const socket = this.socket;
    if (socket.destroyed) return;
    socket.on('data', (c: Buffer) => this.onData(c));
    socket.on('end', () => this.onPeerEnd());
    socket.on('drain', () => this.queue[0]?.clientDrained());
    socket.on('timeout', () => this.onTimeout());
    socket.setTimeout(this.core.options.headersTimeout);
    if (this.core.draining) this.drain();
    if (rest !== null && rest.length > 0) this.onData(rest);
    // The FIN may have come with the PROXY header, before 'end' was listened to.
    if (socket.readableEnded) this.onPeerEnd();
    else if (!this.closing) socket.resume();
  }

  get idle(): boolean {
    return this.queue.length === 0 && this.parser.idle;
  }

  drain(): void {
    this.noMore = true;
    if (this.parser.idle) this.parser.close();
    if (this.queue.length === 0 && !this.parser.inHead) this.closeAfterWrite();
  }

  destroy(): void {
    this.socket.destroy();
  }

  // ---- pools ------------------------------------------------------------------------

  /** The pool an upstream's connections made for this client go back to. */
  poolFor(up: Upstream): IdleConnection[] {
    if (up.sendProxy === false) return up.idle;
    this.own ??= new Map();
    let list = this.own.get(up);
    if (list === undefined) this.own.set(up, (list = []));
    return list;
  }

  takeIdle(up: Upstream): UpConn | null {
    const list = this.poolFor(up);
    for (;;) {
      // Only UpConns are ever put in these pools.
      const c = list.pop() as UpConn | undefined;
      if (c === undefined) return null;
      if (!c.socket.destroyed) return c;
    }
  }

  // ---- requests ------------------------------------------------------------------------

  private onData(chunk: Buffer): void {
    const parser = this.parser;
    if (parser.dead) return; // closing: what the client still sends is dropped
    try {
      parser.execute(chunk);
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      this.clientError(err);
    }
  }

  onHead(head: RequestHead): void {
    this.core._counters.requests++;
    const ex = new Exchange(this, this.core, head);
    this.queue.push(ex);
    this.parsing = ex;
    this.socket.setTimeout(0); // the upstream's timeouts govern while a request is under way
    if (this.queue.length === 1) ex.start();
    else this.pause(PAUSE_PIPELINE);
  }

  onBody(chunk: Buffer): void {
    this.parsing?.body(chunk);
  }

  onEnd(rawTrailers: string[] | null): void {
    const ex = this.parsing!;
    this.parsing = null;
    if (ex.upgrade !== null) {
      // What follows may be the new protocol's: kept, unparsed, for the tunnel.
      this.noMore = true;
      this.parser.detach();
    } else if (!ex.head.keepAlive || this.noMore || this.core.draining) {
      this.noMore = true;
      this.parser.close();
    }
    ex.endRequest(rawTrailers);
  }

  /** Whether the connection stays open after ex's response. */
  mayKeepAlive(ex: Exchange): boolean {
    if (!ex.head.keepAlive || this.core.draining || this.closing) return false;
    // With no more requests to take, the last response closes the connection.
    return !(this.noMore && this.queue[this.queue.length - 1] === ex && this.pendingError === null);
  }

  private onPeerEnd(): void {
    try {
      this.parser.finish();
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      this.clientError(err);
      return;
    }
    this.noMore = true;
    if (this.queue.length === 0) this.closeAfterWrite();
  }

  private onTimeout(): void {
    if (this.closing || this.queue.length > 0) {
      this.socket.destroy();
      return;
    }
    if (this.parser.inHead) {
      this.clientError(new HttpError(408, 'HTTP_REQUEST_TIMEOUT', 'the request head did not arrive in time'));
      return;
    }
    this.socket.destroy(); // idle keep-alive connection
  }

  /** The client broke the protocol: one log line, its error status, and the close. */
  private clientError(err: HttpError): void {
    const core = this.core;
    core._counters.badRequests++;
    core._log({
      level: 'warn', event: 'bad-request', client: describeClient(this.client),
      message: `${err.status} ${err.code}: ${err.message}; closing the connection`,
    });
    this.noMore = true;
    this.parser.close();
    const cut = this.parsing;
    this.parsing = null;
    if (cut !== null) {
      // Its body was cut short by the error: it cannot be completed.
      if (cut === this.queue[0]) {
        this.queue.shift();
        const started = cut.responseStarted;
        cut.abort();
        if (started) this.socket.destroy();
        else this.sendError(err);
        return;
      }
      this.queue.splice(this.queue.indexOf(cut), 1);
      cut.abort();
    }
    if (this.queue.length === 0) this.sendError(err);
    else this.pendingError = err;
  }

  private sendError(err: HttpError): void {
    if (this.closing) return;
    this.closing = true;
    const s = this.socket;
    s.end(ownResponse(err.status, err.message, false), 'latin1');
    s.setTimeout(LINGER_MS); // then destroyed, whatever the client still does
  }

  /** ex's response is out. */
  exchangeDone(ex: Exchange): void {
    const i = this.queue.indexOf(ex);
    if (i >= 0) this.queue.splice(i, 1);
    if (this.closed) return;
    if (!ex.clientKeepAlive) {
      this.noMore = true;
      this.parser.close();
      for (const q of this.queue.splice(0)) q.abort();
      this.closeAfterWrite();
      return;
    }
    if (this.queue.length <= 1) this.unpause(PAUSE_PIPELINE);
    const next = this.queue[0];
    if (next !== undefined) {
      next.start();
      return;
    }
    if (this.pendingError !== null) {
      this.sendError(this.pendingError);
    } else if (this.noMore || this.core.draining) {
      this.closeAfterWrite();
    } else {
      this.socket.setTimeout(this.parser.inHead ? this.core.options.headersTimeout : this.core.options.keepAliveTimeout);
    }
  }

  /**
   * ex's upstream connection switched protocols: from now on the core moves
   * the bytes between it and the client (relay()), with what each side sent
   * after its head going first. Both connections close when it ends.
   */
  tunnel(ex: Exchange, conn: UpConn): void {
    const core = this.core;
    const client = this.socket;
    const upSocket = conn.socket;
    const up = conn.upstream;
    this.queue.splice(0);
    this.closing = true;
    // No more HTTP on either connection. Paused first, so that nothing read
    // meanwhile is emitted to no one: the core takes what is pending.
    client.pause();
    upSocket.pause();
    for (const event of ['data', 'end', 'drain', 'timeout']) {
      client.removeAllListeners(event);
      upSocket.removeAllListeners(event);
    }
    client.setTimeout(0);
    upSocket.setTimeout(0);
    const fromClient = this.parser.takeRest();
    const fromUpstream = conn.parser.takeRest();
    conn.parser.close();
    if (fromClient !== null) {
      upSocket.write(fromClient);
      up.counters.bytesOut += fromClient.length;
    }
    if (fromUpstream !== null) {
      client.write(fromUpstream);
      up.counters.bytesIn += fromUpstream.length;
    }
    void relay(client, upSocket, { idleMs: core.options.idleTimeout }).then((r) => {
      ex.tunnelEnded();
      up.counters.bytesOut += r.bytesAtoB;
      up.counters.bytesIn += r.bytesBtoA;
      if (r.reason === 'resetB') up.counters.resets++;
      else if (r.reason === 'timeout') up.counters.timeouts++;
      if (r.reason !== 'done') {
        core._log({
          level: 'info', event: 'tunnel-end', upstream: up.name, client: describeClient(this.client),
          message: `upgraded connection ended: ${r.reason}`,
        });
      }
    });
  }

  private closeAfterWrite(): void {
    if (this.closing) return;
    this.closing = true;
    this.parser.close();
    this.socket.end();
    this.socket.setTimeout(LINGER_MS);
  }

  pause(why: number): void {
    if (this.paused === 0) this.socket.pause();
    this.paused |= why;
  }

  unpause(why: number): void {
    if ((this.paused & why) === 0) return;
    this.paused &= ~why;
    if (this.paused === 0 && !this.socket.destroyed) this.socket.resume();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.parser.close();
    for (const ex of this.queue.splice(0)) ex.abort();
    if (this.own !== null) {
      for (const list of this.own.values()) for (const c of list.splice(0)) c.socket.destroy();
    }
    this.core._sessionClosed(this);
  }
}
