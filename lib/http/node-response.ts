// node-response.ts -- the common way a node:http response ends, made cheaper
// on serveNode()'s sockets.
//
// Most responses of node:http applications and frameworks end with one
// res.end(body) (Express's res.send() and res.json(), Fastify's reply.send(),
// a plain handler's res.end(text)) before anything was written. Node then
// corks the socket, builds the head, writes head and body into the socket's
// stream, writes an empty chunk for its callback, uncorks, runs the stream's
// writev and an after-write tick, and only then emits 'finish'. On a
// NodeSocket the same bytes can go straight to the iomux socket: the head is
// still node's own (res._implicitHeader(), so writeHead, the headers the
// application set, Date, Connection, Keep-Alive and Content-Length are
// exactly node's), 'prefinish' and 'finish' come in node's order, and
// node's server code that runs on 'finish' (the next pipelined response,
// keep-alive, the request's dump) is untouched.
//
// The response is still node's http.ServerResponse (or the application's
// subclass, or Express's response object, whose prototype chain leads to
// it): the method is defined on http.ServerResponse.prototype, and anything
// off the common path (another socket, a head already sent, chunked
// encoding, a HEAD request or a 204/304, strictContentLength, a corked
// response, bytes already queued, a Uint8Array that is not a Buffer, an
// unusual encoding) is node's own end(). A later replacement of
// OutgoingMessage.prototype.end (an instrumentation agent's) turns the fast
// path off, so that it sees every response.
import { OutgoingMessage, ServerResponse, STATUS_CODES } from 'node:http';

/** The parts of node's OutgoingMessage and ServerResponse that end() reads and writes (node's own field names). */
interface NodeResponse {
  socket: unknown;
  finished: boolean;
  destroyed: boolean;
  _header: string | null;
  _headerSent: boolean;
  _hasBody: boolean;
  _contentLength: number | null;
  chunkedEncoding: boolean;
  strictContentLength: boolean;
  outputData: unknown[];
  readonly writableCorked: number;
  statusCode: number;
  statusMessage: string | undefined;
  _expect_continue: boolean;
  _sent100: boolean;
  writeHead: unknown;
  _implicitHeader(): void;
  _storeHeader(firstLine: string, headers: [string, unknown][] | null): void;
  _finish(): void;
  once(event: string, listener: (...args: unknown[]) => void): unknown;
  emit(event: string): boolean;
}

/** What the fast end needs of the socket (NodeSocket). */
export interface ResponseSocket {
  _hadError?: boolean;
  _httpMessage?: unknown;
  _mayEndResponse(): boolean;
  _endResponse<T>(data: string, encoding: BufferEncoding, body: Buffer | null, done: (arg: T) => void, arg: T): void;
}

type End = (this: NodeResponse, chunk?: unknown, encoding?: unknown, callback?: unknown) => NodeResponse;

/** As node's onFinish(): 'finish', unless the socket failed meanwhile. */
function onFinish(res: NodeResponse): void {
  const socket = res.socket as ResponseSocket | null;
  if (socket !== null && socket !== undefined && socket._hadError === true) return;
  res.emit('finish');
}

let installed = false;

// Header names whose presence changes what node's _storeHeader() adds or
// decides (Connection, Keep-Alive, Content-Length, Transfer-Encoding, Date,
// Expect, Trailer), or that it writes in a form of its own
// (Content-Disposition in latin1, Set-Cookie): from the first of them on,
// node's _storeHeader() goes through the headers itself.
const SPECIAL_HEADERS = new Set(['connection', 'keep-alive', 'content-length', 'transfer-encoding', 'te', 'date',
  'expect', 'trailer', 'content-disposition', 'upgrade', 'proxy-connection', 'set-cookie']);
// Node's checkInvalidHeaderChar().
const INVALID_HEADER_CHAR = /[^\t\x20-\x7e\x80-\xff]/;

/** The symbol under which node's OutgoingMessage keeps the headers set with setHeader(): { lowercased name: [name, value] }. */
function outHeadersSymbol(): symbol | null {
  const probe = new OutgoingMessage();
  probe.setHeader('X-Iomux-Probe', 'v');
  for (const sym of Object.getOwnPropertySymbols(probe)) {
    const v = (probe as unknown as Record<symbol, unknown>)[sym];
    if (v !== null && typeof v === 'object') {
      const entry = (v as Record<string, unknown>)['x-iomux-probe'];
      if (Array.isArray(entry) && entry[0] === 'X-Iomux-Probe' && entry[1] === 'v') return sym;
    }
  }
  return null;
}

/**
 * The head of a response sent with its status code and the headers set with
 * setHeader(), as node's writeHead() and _storeHeader() make it, for a status
 * with a body: the status line and the plain headers up to the first special
 * one (SPECIAL_HEADERS, or a value that is not a string or a number) are
 * joined here; node's own _storeHeader() is given them as its first line and
 * the headers from the special one on (each as [name, value], in order), so
 * that it looks at those itself and adds Date, Connection, Keep-Alive and
 * Content-Length exactly as it would. Returns false, having changed nothing,
 * when the status or its message is not simple, or with a Content-Disposition.
 */
function storeSimpleHead(res: NodeResponse, kOutHeaders: symbol): boolean {
  const code = res.statusCode;
  if (typeof code !== 'number' || (code | 0) !== code || code < 200 || code > 599 || code === 204 || code === 304) return false;
  if (res._expect_continue && !res._sent100) return false;
  const message = res.statusMessage || STATUS_CODES[code] || 'unknown';
  if (typeof message !== 'string' || INVALID_HEADER_CHAR.test(message)) return false;
  let head = 'HTTP/1.1 ' + code + ' ' + message + '\r\n';
  let rest: [string, unknown][] | null = null;
  const headers = (res as unknown as Record<symbol, Record<string, [string, unknown]> | null | undefined>)[kOutHeaders];
  if (headers !== null && headers !== undefined) {
    for (const key in headers) {
      // Node writes it in latin1 only when it does not validate the value
      // (its own headers), as it would validate the ones given here: its head.
      if (key === 'content-disposition') return false;
      const entry = headers[key]!;
      if (rest === null) {
        const value = entry[1];
        if (!SPECIAL_HEADERS.has(key) && (typeof value === 'string' || typeof value === 'number')) {
          head += entry[0] + ': ' + value + '\r\n';
          continue;
        }
        rest = [];
      }
      rest.push(entry);
    }
  }
  res.statusMessage = message;
  res._storeHeader(head, rest);
  return true;
}

/**
 * Defines the fast end() on http.ServerResponse.prototype for responses whose
 * socket is a SocketClass (NodeSocket). Once per process; later calls do nothing.
 */
export function installResponseEnd(SocketClass: abstract new (...args: never[]) => ResponseSocket): void {
  if (installed) return;
  const proto = ServerResponse.prototype as unknown as { end: End };
  // Someone defined end() on ServerResponse.prototype itself: leave it alone.
  if (Object.hasOwn(proto, 'end')) return;
  installed = true;
  const outgoing = OutgoingMessage.prototype as unknown as { end: End };
  const nodeEnd = outgoing.end;
  const response = ServerResponse.prototype as unknown as NodeResponse;
  const nodeWriteHead = response.writeHead;
  const nodeImplicitHeader = response._implicitHeader;
  const nodeStoreHeader = response._storeHeader;
  const kOutHeaders = outHeadersSymbol();
  Object.defineProperty(proto, 'end', {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function end(this: NodeResponse, chunk?: unknown, encoding?: unknown, callback?: unknown): NodeResponse {
      const socket = this.socket;
      if (!(socket instanceof SocketClass) || outgoing.end !== nodeEnd) return outgoing.end.call(this, chunk, encoding, callback);
      if (typeof encoding === 'function') {
        callback = encoding;
        encoding = undefined;
      }
      let enc: BufferEncoding;
      if (encoding === undefined || encoding === null || encoding === 'utf8' || encoding === 'utf-8') enc = 'utf8';
      else if (encoding === 'latin1') enc = 'latin1';
      else return nodeEnd.call(this, chunk, encoding, callback);
      const isString = typeof chunk === 'string';
      if ((isString ? (chunk as string).length === 0 : !Buffer.isBuffer(chunk) || chunk.length === 0) ||
        this.finished || this.destroyed || this._header !== null || !this._hasBody || this.strictContentLength === true ||
        this.outputData.length !== 0 || this.writableCorked !== 0 || socket._httpMessage !== this || !socket._mayEndResponse()) {
        return nodeEnd.call(this, chunk, encoding, callback);
      }
      const body = chunk as string | Buffer;
      // As node's write_(): the head is built knowing the body's length.
      this._contentLength = isString ? Buffer.byteLength(body as string, enc) : (body as Buffer).length;
      // The head: node's writeHead(statusCode) as _implicitHeader() calls
      // it, made short when the head is simple (storeSimpleHead), unless the
      // application replaced one of those methods (it then gets its call).
      if (kOutHeaders === null || this.writeHead !== nodeWriteHead || this._implicitHeader !== nodeImplicitHeader ||
        this._storeHeader !== nodeStoreHeader || !storeSimpleHead(this, kOutHeaders)) {
        this._implicitHeader();
      }
      // The head said otherwise (chunked, no body), or writeHead (an
      // application's override) wrote something itself: node's end() goes on.
      if (this._header === null || this._headerSent || this.chunkedEncoding || !this._hasBody ||
        this.outputData.length !== 0 || socket._httpMessage !== this || !socket._mayEndResponse()) {
        return nodeEnd.call(this, chunk, encoding, callback);
      }
      const head = this._header;
      this._headerSent = true;
      if (typeof callback === 'function') this.once('finish', callback as (...args: unknown[]) => void);
      // As node's _send(): a string body goes with the head as one string.
      if (isString) socket._endResponse(head + (body as string), enc, null, onFinish, this);
      else socket._endResponse(head, 'latin1', body as Buffer, onFinish, this);
      this.finished = true;
      this._finish();
      return this;
    },
  });
}
