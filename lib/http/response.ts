// response.ts -- a response with node:http's face: statusCode, setHeader,
// writeHead, write (false past the high-water mark, then 'drain'), end.
//
// The head is built as one string at the first write or at end(). A response
// ended in one call (res.end(body)) gets a Content-Length and goes out as one
// write; one written in pieces is chunked (HTTP/1.1) or delimited by the close
// (HTTP/1.0). Responses to pipelined requests are sent in request order: the
// connection passes each one's bytes straight through only when it is first
// in line, and holds the others' until their turn.
import { EventEmitter } from 'node:events';
import { STATUS_CODES } from 'node:http';
import type { Socket } from '../socket';
import { invalidArgType, invalidArgValue } from '../errors';
import { leanListeners } from '../flow';
import type { IncomingRequest } from './request';

/** What a response needs of its connection. */
export interface ResponseOwner {
  readonly socket: Socket;
  /** Sends (or holds, when not first in line) bytes of res. Returns false past the high-water mark. */
  _send(res: ServerResponse, data: string | Uint8Array, encoding: BufferEncoding): boolean;
  /** res has written its last byte. */
  _responseDone(res: ServerResponse): void;
  /** The connection will close after res, whatever the request asked for. */
  _mustClose(res: ServerResponse): boolean;
}

export type OutgoingHeaderValue = number | string | readonly string[];
export type OutgoingHeaders = Record<string, OutgoingHeaderValue | undefined>;

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const INVALID_VALUE = /[^\t\x20-\x7e\x80-\xff]/;

function coded(err: Error, code: string): Error {
  (err as Error & { code: string }).code = code;
  return err;
}

// Header names already found valid: an application sends the same few on
// every response, and a Set lookup is cheaper than the token test.
const validNames = new Set<string>();
const VALID_NAMES_MAX = 512;

function checkName(name: unknown): string {
  if (typeof name === 'string' && validNames.has(name)) return name;
  if (typeof name !== 'string' || !TOKEN.test(name)) {
    throw coded(new TypeError(`Header name must be a valid HTTP token ["${String(name)}"]`), 'ERR_INVALID_HTTP_TOKEN');
  }
  if (validNames.size < VALID_NAMES_MAX) validNames.add(name);
  return name;
}

function checkValue(name: string, value: unknown): void {
  if (value === undefined) throw coded(new TypeError(`Invalid value "undefined" for header "${name}"`), 'ERR_HTTP_INVALID_HEADER_VALUE');
  if (typeof value === 'number') return;
  if (typeof value === 'string') {
    if (INVALID_VALUE.test(value)) throw invalidChar(name);
    return;
  }
  const values = Array.isArray(value) ? value : [value];
  for (const v of values) {
    if (INVALID_VALUE.test(String(v))) throw invalidChar(name);
  }
}

function invalidChar(name: string): Error {
  return coded(new TypeError(`Invalid character in header content ["${name}"]`), 'ERR_INVALID_CHAR');
}

function headersSentError(what: string): Error {
  return coded(new Error(`Cannot ${what} headers after they are sent to the client`), 'ERR_HTTP_HEADERS_SENT');
}

// ---- the Date header, made at most once a second --------------------------------------

let dateText = '';
let dateUntil = 0;

/** The current Date header value (RFC 9110 IMF-fixdate), cached for the rest of the second. */
export function httpDate(): string {
  const now = Date.now();
  if (now >= dateUntil) {
    dateText = new Date(now).toUTCString();
    dateUntil = now - (now % 1000) + 1000;
  }
  return dateText;
}

// Status lines of the common codes, made once.
const STATUS_LINES: string[] = [];
function statusLine(minor: number, code: number, message: string | undefined): string {
  if (message === undefined && minor === 1) {
    const cached = STATUS_LINES[code];
    if (cached !== undefined) return cached;
    const line = `HTTP/1.1 ${code} ${STATUS_CODES[code] ?? 'unknown'}\r\n`;
    if (code >= 100 && code < 600) STATUS_LINES[code] = line;
    return line;
  }
  return `HTTP/1.${minor} ${code} ${message ?? STATUS_CODES[code] ?? 'unknown'}\r\n`;
}

const WRITE_ENDED = 1;
const HEADERS_SENT = 2;
const CHUNKED = 4;
const NO_BODY = 8; // HEAD, 1xx, 204, 304: framing headers but no body bytes
const FINISHED = 16;
const CLOSE_DELIMITED = 32;
const DESTROYED = 64;
const HAS_LENGTH = 128;
const HAS_TE = 256;
const HAS_DATE = 512;
const HEAD_WRITTEN = 1024; // writeHead() was called: no more setHeader()

function emitFinish(res: ServerResponse): void {
  res.emit('finish');
  res.emit('close');
}

export class ServerResponse extends EventEmitter {
  statusCode = 200;
  statusMessage: string | undefined = undefined;
  /** Add a Date header (cached once per second) unless one is set. */
  sendDate = true;
  /** The request this responds to. */
  readonly req: IncomingRequest;
  /** @internal next response on the same connection */
  _next: ServerResponse | null = null;
  /** @internal bytes held while an earlier response is still going out */
  _held: (string | Uint8Array)[] | null = null;
  /** @internal */ _heldEncodings: BufferEncoding[] | null = null;
  /** @internal */ _heldBytes = 0;
  /** @internal the connection stays open after this response */
  _keepAlive: boolean;
  /** @internal wants 'drain' */
  _needDrain = false;
  private state = 0;
  private headers: Record<string, [string, OutgoingHeaderValue]> | null = null;
  /** Trailer field lines for a chunked body ('' when none). */
  private trailerText = '';
  /** writeContinue() sent "100 Continue". */
  private sent100 = false;
  /** Header lines rendered by writeHead(). */
  private lines = '';
  private readonly owner: ResponseOwner;

  /** @internal */
  constructor(owner: ResponseOwner, req: IncomingRequest) {
    super();
    leanListeners(this);
    this.owner = owner;
    this.req = req;
    this._keepAlive = req._keepAlive;
    if (req.method === 'HEAD') this.state = NO_BODY;
  }

  get socket(): Socket {
    return this.owner.socket;
  }

  get headersSent(): boolean {
    return (this.state & HEADERS_SENT) !== 0;
  }

  /** end() was called. */
  get writableEnded(): boolean {
    return (this.state & WRITE_ENDED) !== 0;
  }

  /** The last byte was handed to the socket. */
  get writableFinished(): boolean {
    // A response held behind an earlier one has not reached the socket yet.
    return (this.state & (FINISHED | DESTROYED)) === FINISHED && this._held === null;
  }

  get finished(): boolean {
    return this.writableEnded;
  }

  /** The connection closed before the response was finished. */
  get destroyed(): boolean {
    return (this.state & DESTROYED) !== 0;
  }

  // ---- headers ----------------------------------------------------------------------------

  setHeader(name: string, value: OutgoingHeaderValue): this {
    if ((this.state & (HEAD_WRITTEN | HEADERS_SENT)) !== 0) throw headersSentError('set');
    checkName(name);
    checkValue(name, value);
    (this.headers ??= Object.create(null) as Record<string, [string, OutgoingHeaderValue]>)[name.toLowerCase()] = [name, value];
    return this;
  }

  /** Adds a value to a header (set-cookie and the like). */
  appendHeader(name: string, value: OutgoingHeaderValue): this {
    const prev = this.getHeader(name);
    if (prev === undefined) return this.setHeader(name, value);
    const list = ([] as string[]).concat(Array.isArray(prev) ? prev : [String(prev)], Array.isArray(value) ? value : [String(value)]);
    return this.setHeader(name, list);
  }

  getHeader(name: string): OutgoingHeaderValue | undefined {
    if (typeof name !== 'string') throw invalidArgType('name', 'of type string', name);
    return this.headers?.[name.toLowerCase()]?.[1];
  }

  getHeaderNames(): string[] {
    return this.headers === null ? [] : Object.keys(this.headers);
  }

  getHeaders(): Record<string, OutgoingHeaderValue> {
    const out: Record<string, OutgoingHeaderValue> = Object.create(null);
    if (this.headers !== null) for (const k of Object.keys(this.headers)) out[k] = this.headers[k]![1];
    return out;
  }

  hasHeader(name: string): boolean {
    return this.getHeader(name) !== undefined;
  }

  removeHeader(name: string): void {
    if ((this.state & (HEAD_WRITTEN | HEADERS_SENT)) !== 0) throw headersSentError('remove');
    if (this.headers !== null) delete this.headers[name.toLowerCase()];
  }

  /**
   * Sets the status and, optionally, the reason phrase and more headers
   * (an object, or [name, value, ...]), which join those of setHeader().
   * As in node, no header can be set after it; they go out with the first write.
   */
  writeHead(statusCode: number, statusMessage?: string | OutgoingHeaders | readonly string[], headers?: OutgoingHeaders | readonly string[]): this {
    if ((this.state & (HEAD_WRITTEN | HEADERS_SENT)) !== 0) throw headersSentError('write');
    if (typeof statusMessage === 'string') {
      if (/[\r\n]/.test(statusMessage)) throw invalidArgValue('statusMessage', statusMessage, 'must not contain CR or LF');
      this.statusMessage = statusMessage;
    } else if (statusMessage !== undefined) {
      headers = statusMessage;
    }
    const code = statusCode | 0;
    if (code !== statusCode || code < 100 || code > 999) {
      throw coded(new RangeError(`Invalid status code: ${String(statusCode)}`), 'ERR_HTTP_INVALID_STATUS_CODE');
    }
    this.statusCode = code;
    if (headers !== undefined && headers !== null) {
      // Rendered now, without a stop in the headers map: the common
      // writeHead(status, {...}) then end(body) costs one string.
      if (Array.isArray(headers)) {
        if (headers.length % 2 !== 0) throw invalidArgValue('headers', headers, 'must have an even number of entries');
        for (let i = 0; i < headers.length; i += 2) this.addLine(checkName(headers[i]), headers[i + 1] as string);
      } else if (typeof headers === 'object') {
        const obj = headers as OutgoingHeaders;
        for (const k in obj) {
          const v = obj[k];
          if (v !== undefined) this.addLine(checkName(k), v);
        }
      } else {
        throw invalidArgType('headers', 'an object or an array', headers);
      }
    }
    this.state |= HEAD_WRITTEN;
    return this;
  }

  /** Sends "100 Continue" (for a request that said Expect: 100-continue). */
  writeContinue(): void {
    if (this.headersSent || this.destroyed) return;
    this.sent100 = true;
    this.owner._send(this, 'HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
  }

  /**
   * Trailer fields, sent after the last chunk of a chunked body (an object,
   * or [name, value] pairs). Ignored when the body is not chunked.
   */
  addTrailers(headers: OutgoingHeaders | readonly (readonly [string, string])[]): void {
    if (headers === null || typeof headers !== 'object') throw invalidArgType('headers', 'an object or an array', headers);
    let text = '';
    const add = (name: string, value: OutgoingHeaderValue) => {
      checkName(name);
      checkValue(name, value);
      if (Array.isArray(value)) for (const v of value) text += `${name}: ${v}\r\n`;
      else text += `${name}: ${value}\r\n`;
    };
    if (Array.isArray(headers)) {
      for (const [name, value] of headers as readonly (readonly [string, string])[]) add(name, value);
    } else {
      const obj = headers as OutgoingHeaders;
      for (const k of Object.keys(obj)) {
        const v = obj[k];
        if (v !== undefined) add(k, v);
      }
    }
    this.trailerText += text;
  }

  /** Appends a header line, noting the headers that decide the framing. */
  private addLine(name: string, value: OutgoingHeaderValue): void {
    checkValue(name, value);
    const n = name.length;
    if (n === 14 || n === 17 || n === 4 || n === 10) {
      switch (name.toLowerCase()) {
        case 'content-length':
          this.state |= HAS_LENGTH;
          break;
        case 'transfer-encoding':
          this.state |= HAS_TE;
          if (/(?:^|,)\s*chunked\s*$/i.test(String(value))) this.state |= CHUNKED;
          break;
        case 'date':
          this.state |= HAS_DATE;
          break;
        case 'connection':
          if (/(?:^|,)\s*close\s*(?:,|$)/i.test(String(value))) this._keepAlive = false;
          return; // written by buildHead, once the outcome is known
      }
    }
    if (Array.isArray(value)) for (const v of value) this.lines += `${name}: ${v}\r\n`;
    else this.lines += `${name}: ${value}\r\n`;
  }

  /** The head as text; sets the framing. bodyLength is the whole body's size when known. */
  private buildHead(bodyLength: number): string {
    const code = this.statusCode;
    const req = this.req;
    if (code < 200 || code === 204 || code === 304) this.state |= NO_BODY;
    const headers = this.headers;
    if (headers !== null) {
      const before = this.lines;
      this.lines = '';
      for (const key in headers) {
        const [name, value] = headers[key]!;
        this.addLine(name, value);
      }
      this.lines += before;
    }
    let head = statusLine(req.httpVersionMinor, code, this.statusMessage) + this.lines;
    const state = this.state;
    let keepAlive = this._keepAlive && !this.owner._mustClose(this);
    // RFC 9110 §10.1.1: a final status to a request that awaits "100
    // Continue" leaves it open whether the client sends the body: the
    // connection cannot carry another request.
    if (req._expect !== undefined && !this.sent100 && !req.complete) keepAlive = false;
    if (this.sendDate && (state & HAS_DATE) === 0) head += `Date: ${httpDate()}\r\n`;
    // 1xx, 204 and 304 carry no framing headers; HEAD carries those a GET would have.
    const statusNoBody = code < 200 || code === 204 || code === 304;
    if (!statusNoBody && (state & (HAS_LENGTH | HAS_TE)) === 0) {
      if (bodyLength >= 0) {
        head += `Content-Length: ${bodyLength}\r\n`;
      } else if (req.httpVersionMinor === 1) {
        head += 'Transfer-Encoding: chunked\r\n';
        this.state |= CHUNKED;
      } else {
        // HTTP/1.0 without a length: the close ends the body.
        this.state |= CLOSE_DELIMITED;
        keepAlive = false;
      }
    }
    this._keepAlive = keepAlive;
    if (!keepAlive) head += 'Connection: close\r\n';
    else if (req.httpVersionMinor === 0) head += 'Connection: keep-alive\r\n';
    this.state |= HEADERS_SENT;
    return head + '\r\n';
  }

  /** Forces the head out now, without a body byte. */
  flushHeaders(): void {
    if (this.headersSent || this.destroyed) return;
    this.owner._send(this, this.buildHead(-1), 'latin1');
  }

  // ---- the body ------------------------------------------------------------------------

  write(chunk: string | Uint8Array, encoding?: BufferEncoding | ((err?: Error | null) => void), cb?: (err?: Error | null) => void): boolean {
    if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    if (this.writableEnded) {
      const err = coded(new Error('write after end'), 'ERR_STREAM_WRITE_AFTER_END');
      if (cb) process.nextTick(cb, err);
      process.nextTick(() => this.emit('error', err));
      return false;
    }
    if (typeof chunk !== 'string' && !(chunk instanceof Uint8Array)) {
      throw invalidArgType('chunk', 'of type string or an instance of Buffer or Uint8Array', chunk);
    }
    const ok = this.writeBody(chunk, encoding ?? 'utf8', false);
    if (cb) process.nextTick(cb, this.destroyed ? new Error('response destroyed') : null);
    return ok;
  }

  end(chunk?: string | Uint8Array | (() => void), encoding?: BufferEncoding | (() => void), cb?: () => void): this {
    if (typeof chunk === 'function') {
      cb = chunk;
      chunk = undefined;
    } else if (typeof encoding === 'function') {
      cb = encoding;
      encoding = undefined;
    }
    if (this.writableEnded) {
      if (cb) process.nextTick(cb);
      return this;
    }
    if (chunk !== undefined && chunk !== null && typeof chunk !== 'string' && !(chunk instanceof Uint8Array)) {
      throw invalidArgType('chunk', 'of type string or an instance of Buffer or Uint8Array', chunk);
    }
    if (cb) this.once('finish', cb);
    this.state |= WRITE_ENDED;
    if (this.destroyed) return this;
    this.writeBody(chunk ?? '', (encoding as BufferEncoding | undefined) ?? 'utf8', true);
    this.state |= FINISHED;
    // 'finish' and 'close' follow on the next tick, as node's do; with no
    // listener at all (a plain res.end()) there is nothing to schedule. A
    // response held behind an earlier one finishes when it is released
    // (by _responseDone below, in order, when this one was first in line).
    if (this._held === null && (this as unknown as { _eventsCount: number })._eventsCount > 0) process.nextTick(emitFinish, this);
    this.owner._responseDone(this);
    return this;
  }

  private writeBody(chunk: string | Uint8Array, encoding: BufferEncoding, last: boolean): boolean {
    if (this.destroyed) return false;
    const owner = this.owner;
    let head = '';
    if (!this.headersSent) {
      // A response ended in one call knows its length.
      const len = last ? (typeof chunk === 'string' ? Buffer.byteLength(chunk, encoding) : chunk.byteLength) : -1;
      head = this.buildHead(len);
    }
    const state = this.state;
    if ((state & NO_BODY) !== 0) return owner._send(this, head, 'latin1');
    if ((state & CHUNKED) === 0) {
      // Head and a text body in one string: one write, one syscall. The
      // head is ASCII, the same bytes in each of these encodings.
      if (typeof chunk === 'string' && (encoding === 'utf8' || encoding === 'latin1' || encoding === 'ascii')) {
        return owner._send(this, head + chunk, encoding);
      }
      if (head !== '') owner._send(this, head, 'latin1');
      return owner._send(this, chunk, encoding);
    }
    // Chunked: size line, data, CRLF; the last-chunk after the final one.
    const tail = last ? `\r\n0\r\n${this.trailerText}\r\n` : '\r\n';
    const empty = typeof chunk === 'string' ? chunk.length === 0 : chunk.byteLength === 0;
    if (empty) return owner._send(this, last ? `${head}0\r\n${this.trailerText}\r\n` : head, 'latin1');
    const size = typeof chunk === 'string' ? Buffer.byteLength(chunk, encoding) : chunk.byteLength;
    if (typeof chunk === 'string' && (encoding === 'utf8' || encoding === 'latin1')) {
      return owner._send(this, `${head}${size.toString(16)}\r\n${chunk}${tail}`, encoding);
    }
    const sock = owner.socket;
    sock.cork();
    owner._send(this, `${head}${size.toString(16)}\r\n`, 'latin1');
    const ok = owner._send(this, chunk, encoding);
    const tailOk = owner._send(this, tail, 'latin1');
    sock.uncork();
    return ok && tailOk;
  }

  /** @internal The connection closed before this response finished. */
  _destroy(): void {
    const state = this.state;
    // Finished means sent, unless its bytes were still held: those are lost.
    if ((state & DESTROYED) !== 0 || ((state & FINISHED) !== 0 && this._held === null)) return;
    this.state |= DESTROYED;
    this._held = null;
    this._heldBytes = 0;
    process.nextTick(() => this.emit('close'));
  }

  /** @internal Its held bytes went to the socket: an ended response finishes now. */
  _released(): void {
    if ((this.state & (FINISHED | DESTROYED)) === FINISHED && (this as unknown as { _eventsCount: number })._eventsCount > 0) {
      process.nextTick(emitFinish, this);
    }
  }

  /** @internal The bytes of this response may now go out ('drain' if someone waits). */
  _drained(): void {
    if (this._needDrain) {
      this._needDrain = false;
      this.emit('drain');
    }
  }
}
