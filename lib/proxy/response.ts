// response.ts -- an incremental, strict HTTP/1.1 response parser (RFC 9112),
// for the responses a proxy reads from its upstreams.
//
// A proxy that frames a response differently from the client would let an
// upstream smuggle a second response into a keep-alive connection, so the
// framing rules are applied strictly (RFC 9112 §6.3) and anything ambiguous is
// an error (the proxy answers 502 and drops the upstream connection):
//   - a response to HEAD, and every 1xx, 204 and 304, has no body;
//   - Transfer-Encoding with chunked last is chunked; Transfer-Encoding with
//     Content-Length, or a Content-Length list that disagrees, is refused;
//   - Transfer-Encoding without chunked last, or no framing at all, is
//     delimited by the connection's close.
// 1xx responses (100 Continue, 103 Early Hints) come out as heads of their
// own, followed by the final response. Bytes after a complete response, when
// no further response was asked for, are an error: the connection cannot be
// trusted with another request.
import { HttpError } from '../http/parser';
import { ChunkedDecoder } from '../http/chunked';

export interface ResponseLimits {
  /** Bytes of the head (status line and fields), and of the trailer section (default 64 KiB). */
  maxHeaderSize: number;
  /** Header fields in the head or in the trailers (default 200). */
  maxHeaders: number;
}

export const DEFAULT_RESPONSE_LIMITS: Readonly<ResponseLimits> = Object.freeze({
  maxHeaderSize: 64 * 1024,
  maxHeaders: 200,
});

export type ResponseBodyKind = 'none' | 'length' | 'chunked' | 'close';

export interface ResponseHead {
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  versionMinor: number;
  status: number;
  reason: string;
  /** Names as sent and values, alternating. */
  rawHeaders: string[];
  /** Lower-cased names; repeated fields joined with ', ' (set-cookie with '\n', never to be joined). */
  headers: Record<string, string>;
  bodyKind: ResponseBodyKind;
  /** Body bytes for 'length', else 0. */
  contentLength: number;
  /** The upstream connection may carry another request after this response. */
  keepAlive: boolean;
}

export interface ResponseHandler {
  /** A head, informational (1xx) or final. */
  onHead(head: ResponseHead): void;
  /** A piece of the body: a view of the chunk given to execute(). */
  onBody(chunk: Buffer): void;
  /** The final response is complete; rawTrailers for chunked bodies that had any. */
  onEnd(rawTrailers: string[] | null): void;
}

const TOKEN = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]+";
const FIELD_LINE = new RegExp(`^(${TOKEN}):[\\t ]*([\\t\\x20-\\x7e\\x80-\\xff]*?)[\\t ]*$`);
// The reason phrase is optional, and so (in practice) is the space before an
// empty one: "HTTP/1.1 200" carries no ambiguity about framing.
const STATUS_LINE = /^HTTP\/1\.([01]) ([1-9][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?$/;
const TOKEN_ONLY = new RegExp(`^${TOKEN}$`);
const DIGITS = /^[0-9]{1,15}$/;
const CRLF2 = Buffer.from('\r\n\r\n', 'latin1');
const CR = 13;
const LF = 10;

const S_IDLE = 0; // no response expected
const S_HEAD = 1;
const S_LENGTH = 2;
const S_CHUNKED = 3;
const S_CLOSE = 4; // body until the connection closes
const S_DEAD = 5;
const S_SWITCHED = 6; // after a 101: what follows is the new protocol's

function bad(code: string, message: string): HttpError {
  return new HttpError(502, code, `invalid response from upstream: ${message}`);
}

export class ResponseParser {
  private state = S_IDLE;
  private noBody = false;
  /** Head bytes so far (a head split over chunks). */
  private headParts: Buffer[] = [];
  private headLen = 0;
  private remaining = 0;
  /** Made for the first chunked response. */
  private chunked: ChunkedDecoder | null = null;
  /** What followed a 101 response's head. */
  private rest: Buffer | null = null;
  private readonly limits: ResponseLimits;
  private readonly handler: ResponseHandler;

  constructor(handler: ResponseHandler, limits?: Partial<ResponseLimits>) {
    this.handler = handler;
    this.limits = { ...DEFAULT_RESPONSE_LIMITS, ...limits };
  }

  /** Expects the response to a request with this method (only HEAD matters). */
  expect(method: string): void {
    if (this.state !== S_IDLE) throw new Error('ResponseParser.expect() while a response is under way');
    this.state = S_HEAD;
    this.noBody = method === 'HEAD';
  }

  /** Nothing of a response has arrived since expect(). */
  get waitingForHead(): boolean {
    return this.state === S_HEAD && this.headLen === 0;
  }

  /** After a 101 response: the bytes that followed its head (a copy), or null. */
  takeRest(): Buffer | null {
    const rest = this.rest;
    this.rest = null;
    return rest;
  }

  /** No response is under way or expected. */
  get idle(): boolean {
    return this.state === S_IDLE;
  }

  close(): void {
    this.state = S_DEAD;
    this.headParts = [];
    this.chunked?.reset();
  }

  /** Parses data; throws an HttpError (status 502) and dies on a violation. */
  execute(data: Buffer): void {
    try {
      this.run(data);
    } catch (err) {
      this.close();
      throw err;
    }
  }

  /** The upstream closed its side: ends a close-delimited body; throws if a response was cut short. */
  finish(): void {
    const state = this.state;
    this.state = S_DEAD;
    if (state === S_CLOSE) {
      this.handler.onEnd(null);
      return;
    }
    if (state === S_IDLE || state >= S_DEAD) return;
    throw bad('HTTP_INCOMPLETE_RESPONSE', 'the connection closed in the middle of a response');
  }

  private run(data: Buffer): void {
    let pos = 0;
    const len = data.length;
    while (pos < len) {
      switch (this.state) {
        case S_IDLE:
          throw bad('HTTP_UNEXPECTED_DATA', 'bytes after the end of a response');
        case S_HEAD:
          pos = this.head(data, pos);
          break;
        case S_LENGTH: {
          const n = Math.min(this.remaining, len - pos);
          this.remaining -= n;
          const piece = pos === 0 && n === len ? data : data.subarray(pos, pos + n);
          pos += n;
          if (this.remaining === 0) this.state = S_IDLE;
          this.handler.onBody(piece);
          if (this.remaining === 0 && this.state === S_IDLE) this.handler.onEnd(null);
          break;
        }
        case S_CLOSE:
          this.handler.onBody(pos === 0 ? data : data.subarray(pos));
          pos = len;
          break;
        case S_CHUNKED:
          pos = this.chunked!.decode(data, pos);
          break;
        case S_SWITCHED:
          // Copied: the chunk may be a slab region that is written again.
          this.rest = this.rest === null ? Buffer.from(data.subarray(pos)) : Buffer.concat([this.rest, data.subarray(pos)]);
          return;
        default:
          return; // dead
      }
    }
  }

  private newChunkedDecoder(): ChunkedDecoder {
    const limits = this.limits;
    return new ChunkedDecoder({
      onBody: (piece) => this.handler.onBody(piece),
      trailerLine: (line, raw) => {
        const m = FIELD_LINE.exec(line);
        if (m === null) throw bad('HTTP_INVALID_TRAILER', 'an invalid trailer field line');
        if (raw.length >= limits.maxHeaders * 2) throw bad('HTTP_TRAILERS_TOO_LARGE', 'too many trailer fields');
        raw.push(m[1]!, m[2]!);
      },
      onChunkedEnd: (rawTrailers) => {
        if (this.state !== S_CHUNKED) return; // closed in the last onBody()
        this.state = S_IDLE;
        this.handler.onEnd(rawTrailers);
      },
      chunkedError: (_status, code, message) => bad(code, message),
    }, { maxBodySize: Infinity, maxHeaderSize: limits.maxHeaderSize });
  }

  private head(data: Buffer, pos: number): number {
    // The head ends with CRLF CRLF, possibly split over chunks: search the
    // carried bytes' tail together with the new ones.
    const carried = this.headLen;
    let buf: Buffer;
    let from: number;
    if (carried === 0) {
      buf = pos === 0 ? data : data.subarray(pos);
      from = 0;
    } else {
      buf = Buffer.concat([...this.headParts, data.subarray(pos)]);
      from = Math.max(0, carried - 3);
    }
    const end = buf.indexOf(CRLF2, from);
    const limit = this.limits.maxHeaderSize;
    if (end < 0 || end > limit) {
      const scan = Math.min(buf.length, limit + 4);
      // A bare LF would otherwise leave the parser waiting for a CRLF CRLF
      // that never comes.
      for (let i = buf.indexOf(LF, from); i >= 0 && i < scan; i = buf.indexOf(LF, i + 1)) {
        if (i === 0 || buf[i - 1] !== CR) throw bad('HTTP_BARE_LF', 'a bare LF in the response head');
      }
      if (buf.length > limit + 3 || end > limit) throw bad('HTTP_HEADERS_TOO_LARGE', `a response head over ${limit} bytes`);
      // Copied: the chunk may be a slab region that is written again.
      this.headParts = [Buffer.from(buf)];
      this.headLen = buf.length;
      return data.length;
    }
    this.headParts = [];
    this.headLen = 0;
    const consumed = end + 4 - carried; // bytes of data (from pos) the head took
    this.parseHead(buf.toString('latin1', 0, end));
    return pos + consumed;
  }

  private parseHead(text: string): void {
    const lines = text.split('\r\n');
    const statusLine = lines[0]!;
    const m = STATUS_LINE.exec(statusLine);
    if (m === null) {
      if (statusLine.includes('\n') || statusLine.includes('\r')) throw bad('HTTP_BARE_LF', 'a bare CR or LF in the status line');
      throw bad('HTTP_INVALID_STATUS_LINE', `invalid status line ${JSON.stringify(statusLine.slice(0, 64))}`);
    }
    const minor = m[1]!.charCodeAt(0) - 48;
    const status = Number(m[2]);
    const raw: string[] = [];
    const headers: Record<string, string> = Object.create(null);
    let contentLength = -1;
    let te: string | undefined;
    let connection = '';
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      const f = FIELD_LINE.exec(line);
      if (f === null) {
        if (line.includes('\n') || line.includes('\r')) throw bad('HTTP_BARE_LF', 'a bare CR or LF in a header field');
        if (line.charCodeAt(0) === 32 || line.charCodeAt(0) === 9) throw bad('HTTP_OBS_FOLD', 'obsolete line folding');
        throw bad('HTTP_INVALID_HEADER', `invalid header field line ${JSON.stringify(line.slice(0, 64))}`);
      }
      if (raw.length >= this.limits.maxHeaders * 2) throw bad('HTTP_HEADERS_TOO_LARGE', `more than ${this.limits.maxHeaders} header fields`);
      const name = f[1]!;
      const value = f[2]!;
      raw.push(name, value);
      const lower = name.toLowerCase();
      const prev = headers[lower];
      headers[lower] = prev === undefined ? value : `${prev}${lower === 'set-cookie' ? '\n' : ', '}${value}`;
      if (lower === 'content-length') {
        for (const part of value.split(',')) {
          const v = part.trim();
          if (!DIGITS.test(v)) throw bad('HTTP_INVALID_CONTENT_LENGTH', `invalid Content-Length ${JSON.stringify(value.slice(0, 32))}`);
          const n = Number(v);
          if (contentLength >= 0 && n !== contentLength) throw bad('HTTP_CONFLICTING_CONTENT_LENGTH', 'Content-Length values that differ');
          contentLength = n;
        }
      } else if (lower === 'transfer-encoding') {
        te = te === undefined ? value : `${te}, ${value}`;
      } else if (lower === 'connection') {
        connection += `,${value.toLowerCase()}`;
      }
    }
    const tokens = connection.split(',').map((s) => s.trim());
    let keepAlive = minor === 1 ? !tokens.includes('close') : tokens.includes('keep-alive') && !tokens.includes('close');

    let bodyKind: ResponseBodyKind;
    const informational = status < 200;
    if (informational || status === 204 || status === 304 || this.noBody) {
      bodyKind = 'none';
    } else if (te !== undefined) {
      if (contentLength >= 0) throw bad('HTTP_TE_WITH_CONTENT_LENGTH', 'Transfer-Encoding together with Content-Length');
      const codings = te.split(',').map((s) => s.trim().toLowerCase()).filter((s) => s !== '');
      for (const c of codings) if (!TOKEN_ONLY.test(c)) throw bad('HTTP_INVALID_TRANSFER_ENCODING', 'an invalid Transfer-Encoding');
      const chunkedAt = codings.indexOf('chunked');
      if (chunkedAt >= 0 && chunkedAt !== codings.length - 1) {
        throw bad('HTTP_INVALID_TRANSFER_ENCODING', 'chunked is not the final transfer coding');
      }
      bodyKind = chunkedAt >= 0 ? 'chunked' : 'close';
    } else if (contentLength >= 0) {
      bodyKind = contentLength === 0 ? 'none' : 'length';
    } else {
      bodyKind = 'close';
    }
    if (bodyKind === 'close') keepAlive = false;
    const head: ResponseHead = {
      versionMinor: minor,
      status,
      reason: m[3] ?? '',
      rawHeaders: raw,
      headers,
      bodyKind,
      contentLength: bodyKind === 'length' ? contentLength : 0,
      keepAlive,
    };
    // An informational response is followed by another head. After a 101
    // (Switching Protocols) the bytes are no longer HTTP: they are kept for
    // takeRest(), and the response never ends.
    if (status === 101) {
      this.state = S_SWITCHED;
      this.handler.onHead(head);
      return;
    }
    if (informational) {
      this.state = S_HEAD;
      this.handler.onHead(head);
      return;
    }
    if (bodyKind === 'length') {
      this.remaining = contentLength;
      this.state = S_LENGTH;
    } else if (bodyKind === 'chunked') {
      (this.chunked ??= this.newChunkedDecoder()).start();
      this.state = S_CHUNKED;
    } else if (bodyKind === 'close') {
      this.state = S_CLOSE;
    } else {
      this.state = S_IDLE;
    }
    this.handler.onHead(head);
    if (bodyKind === 'none' && this.state === S_IDLE) this.handler.onEnd(null);
  }
}
