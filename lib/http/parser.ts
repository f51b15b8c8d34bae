// parser.ts -- an incremental, strict HTTP/1.1 request parser (RFC 9112).
//
// execute() takes the bytes of a connection as they arrive, in any split,
// and calls the handler for each request head, body piece and request end;
// pipelined requests in one chunk come out one after another. Anything the
// RFC calls malformed, and every framing ambiguity that could let two parties
// disagree on where a request ends (request smuggling), throws an HttpError
// carrying the status to answer with; after one the parser is dead, and the
// connection is to be closed.
//
// The head is parsed only once its terminating empty line has arrived: the
// search for it is Buffer.indexOf (native), then the head is one latin1 string
// checked line by line with sticky regular expressions. Bodies are handed out
// as subarrays of the incoming chunks, never copied. Chunked bodies are
// decoded by chunked.ts.
//
// The result never depends on how the bytes were split: a head that arrives in
// pieces is appended to one growing buffer (linear, even a byte at a time) and
// checked as it grows with the same rules, in the same order, as a head that
// arrives whole: first the request line's length (431), then bare LFs (400),
// then the head's size (431), and only on a complete head everything else.

import { ChunkedDecoder } from './chunked';

/** Limits of what one request may be. Defaults in DEFAULT_LIMITS. */
export interface ParserLimits {
  /** Bytes of the request line, CRLF excluded; longer: 431. */
  maxRequestLineSize: number;
  /** Bytes of the whole head (request line and header fields), and of the trailer section; larger: 431. */
  maxHeaderSize: number;
  /** Header fields in the head, or in the trailers; more: 431. */
  maxHeaders: number;
  /** Bytes of a body (Content-Length or the sum of chunks); larger: 413. */
  maxBodySize: number;
}

export const DEFAULT_LIMITS: Readonly<ParserLimits> = Object.freeze({
  maxRequestLineSize: 8 * 1024,
  maxHeaderSize: 16 * 1024,
  maxHeaders: 100,
  maxBodySize: 16 * 1024 * 1024,
});

/** A protocol violation: the status to answer with, and a code naming the violation. */
export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  constructor(status: number, code: string, message: string) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
  }
}

export const BODY_NONE = 0;
export const BODY_LENGTH = 1;
export const BODY_CHUNKED = 2;

/** A parsed request head. */
export interface RequestHead {
  method: string;
  url: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  versionMinor: number;
  /** Names as sent and values, alternating. */
  rawHeaders: string[];
  /** Lower-cased names; duplicates joined with ', ' ('; ' for cookie), set-cookie as an array. */
  headers: Record<string, string | string[]>;
  /** The connection may carry another request after this one. */
  keepAlive: boolean;
  bodyKind: number;
  /** Body bytes for BODY_LENGTH, else 0. */
  contentLength: number;
  /** The Expect header, lower-cased, if any. */
  expect: string | undefined;
}

/**
 * Joins header fields into an object keyed by lower-cased name: repeated
 * fields joined with ', ' ('; ' for cookie), set-cookie always an array. The
 * object has no prototype, so a field named __proto__ is just a field.
 */
export function joinHeaders(raw: readonly string[]): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = Object.create(null);
  for (let i = 0; i < raw.length; i += 2) {
    const name = lowerName(raw[i]!);
    const value = raw[i + 1]!;
    const prev = headers[name];
    if (prev === undefined) {
      headers[name] = name === 'set-cookie' ? [value] : value;
    } else if (Array.isArray(prev)) {
      prev.push(value);
    } else {
      headers[name] = prev + (name === 'cookie' ? '; ' : ', ') + value;
    }
  }
  return headers;
}

/** A head as the parser makes it: the headers object is built on first use. */
class ParsedHead implements RequestHead {
  private joined: Record<string, string | string[]> | undefined = undefined;
  constructor(
    readonly method: string,
    readonly url: string,
    readonly versionMinor: number,
    readonly rawHeaders: string[],
    readonly keepAlive: boolean,
    readonly bodyKind: number,
    readonly contentLength: number,
    readonly expect: string | undefined,
  ) {}

  get headers(): Record<string, string | string[]> {
    return (this.joined ??= joinHeaders(this.rawHeaders));
  }
}

export interface ParserHandler {
  /** A head is complete. Called before any of its body. */
  onHead(head: RequestHead): void;
  /** A piece of the body: a view of the chunk given to execute(), valid as long as that chunk. */
  onBody(chunk: Buffer): void;
  /** The request is complete. rawTrailers alternates names and values (chunked bodies only). */
  onEnd(rawTrailers: string[] | null): void;
}

// RFC 9110 token characters; the value characters are VCHAR, SP, HTAB and
// obs-text. A field line is name ":" OWS value OWS CRLF. Whitespace between
// the name and the colon, obs-fold (a line starting with SP or HTAB), bare CR,
// bare LF and NUL all fail these.
const TOKEN = "[!#$%&'*+\\-.^_`|~0-9A-Za-z]+";
const TARGET = /^[\x21-\x7e]+$/;
const VERSION = /^HTTP\/\d\.\d$/;
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
// Methods taken without the token test.
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'CONNECT', 'TRACE']);
const TOKEN_ONLY = new RegExp(`^${TOKEN}$`);
const DIGITS = /^\d+$/;
const LEADING_ZEROS = /^0+/;

const CRLF2 = Buffer.from('\r\n\r\n', 'latin1');
// Buffer's own latin1 decoder, without toString()'s argument handling.
type LatinBuffer = Buffer & { latin1Slice(start: number, end: number): string };
// Bytes of a chunk decoded at a time to look for a head's end (see head()).
const TEXT_WINDOW = 2048;
const CR = 13;
const LF = 10;
// 2^53 - 1 has 16 digits: a Content-Length of at most 15 digits (leading
// zeros aside) is a safe integer; a longer one counts as Infinity (413).
const MAX_LENGTH_DIGITS = 15;
// The first allocation of the buffer a head that arrives in pieces grows in.
const HEAD_BUF_MIN = 1024;

const S_HEAD = 0;
const S_BODY_LENGTH = 1;
const S_CHUNKED = 2;
const S_DEAD = 3;
const S_DETACHED = 4; // after detach(): what follows is not HTTP

function bad(code: string, message: string): HttpError {
  return new HttpError(400, code, message);
}

function tooLarge(message: string): HttpError {
  return new HttpError(431, 'HTTP_HEADERS_TOO_LARGE', message);
}

/** Strips SP and HTAB (only those: obs-text such as 0xA0 is part of a value) from both ends. */
function trimOws(v: string): string {
  let s = 0;
  let e = v.length;
  while (s < e && (v.charCodeAt(s) === 32 || v.charCodeAt(s) === 9)) s++;
  while (e > s && (v.charCodeAt(e - 1) === 32 || v.charCodeAt(e - 1) === 9)) e--;
  return s === 0 && e === v.length ? v : v.slice(s, e);
}

/** Lower-cased names of the common request headers, without a toLowerCase() call. */
const LOWER = new Map<string, string>();
for (const n of ['Host', 'User-Agent', 'Accept', 'Accept-Encoding', 'Accept-Language', 'Connection',
  'Content-Length', 'Content-Type', 'Transfer-Encoding', 'Cookie', 'Expect', 'Upgrade', 'Referer',
  'Authorization', 'Cache-Control', 'Origin', 'If-None-Match', 'If-Modified-Since', 'Pragma']) {
  LOWER.set(n, n.toLowerCase());
  LOWER.set(n.toLowerCase(), n.toLowerCase());
}

function lowerName(name: string): string {
  return LOWER.get(name) ?? name.toLowerCase();
}

/**
 * Whether s is `lower` (lower-case letters and '-') in any case. c | 0x20
 * maps only A-Z onto a-z, and only CR onto '-', and a field value holds no CR.
 */
function sameLetters(s: string, lower: string): boolean {
  if (s.length !== lower.length) return false;
  for (let i = 0; i < s.length; i++) if ((s.charCodeAt(i) | 0x20) !== lower.charCodeAt(i)) return false;
  return true;
}

/** Splits a comma-separated header value into lower-cased, trimmed elements, empties dropped. */
function listElements(value: string): string[] {
  const out: string[] = [];
  for (const part of value.split(',')) {
    const t = trimOws(part).toLowerCase();
    if (t !== '') out.push(t);
  }
  return out;
}

/** True if text has an LF not preceded by a CR. */
function hasBareLf(text: string): boolean {
  for (let i = text.indexOf('\n'); i >= 0; i = text.indexOf('\n', i + 1)) {
    if (i === 0 || text.charCodeAt(i - 1) !== CR) return true;
  }
  return false;
}

function bareLfInHead(): HttpError {
  return bad('HTTP_BARE_LF', 'a bare LF in the request head');
}

/**
 * Parses the field lines of text[from..] (each ending in CRLF) into raw.
 * `head` is true for a request head: there a bare LF anywhere outranks a
 * field count over the limit, as it would had the head arrived in pieces.
 */
function parseFieldLines(text: string, from: number, raw: string[], maxFields: number, head: boolean): void {
  let pos = from;
  const end = text.length;
  while (pos < end) {
    // name ":" value CRLF: the line ends at the first LF, which must follow
    // a CR; the name ends at the first colon, which must come before it; the
    // value holds no CR or LF (the test of its bytes says so). Single-character
    // searches: V8 runs them faster than a search for "\r\n".
    const lf = text.indexOf('\n', pos);
    const colon = text.indexOf(':', pos);
    if (lf < 1 || text.charCodeAt(lf - 1) !== CR || colon < 0 || colon >= lf) throw fieldLineError(text, pos);
    const name = text.slice(pos, colon);
    if (!TOKEN_ONLY.test(name)) throw fieldLineError(text, pos);
    const value = text.slice(colon + 1, lf - 1);
    if (!FIELD_VALUE.test(value)) throw fieldLineError(text, pos);
    if (raw.length >= maxFields * 2) {
      throw head && hasBareLf(text) ? bareLfInHead() : tooLarge(`more than ${maxFields} header fields`);
    }
    raw.push(name, trimOws(value));
    pos = lf + 1;
  }
}

/** Names what is wrong with the field line at text[pos..], for the error message. */
function fieldLineError(text: string, pos: number): HttpError {
  const c = text.charCodeAt(pos);
  if (c === 32 || c === 9) return bad('HTTP_OBS_FOLD', 'obsolete line folding (a field line starting with whitespace)');
  let eol = text.indexOf('\r\n', pos);
  if (eol < 0) eol = text.length;
  const line = text.slice(pos, eol);
  const colon = line.indexOf(':');
  if (colon < 0) {
    if (line.includes('\n')) return bad('HTTP_BARE_LF', 'a bare LF in a header field line');
    return bad('HTTP_INVALID_HEADER', 'a header field line without a colon');
  }
  if (colon === 0) return bad('HTTP_INVALID_HEADER', 'a header field with an empty name');
  const name = line.slice(0, colon);
  const nc = name.charCodeAt(name.length - 1);
  if (nc === 32 || nc === 9) return bad('HTTP_INVALID_HEADER', 'whitespace between a header field name and the colon');
  if (!TOKEN_ONLY.test(name)) return bad('HTTP_INVALID_HEADER', 'an invalid character in a header field name');
  if (line.includes('\r')) return bad('HTTP_BARE_CR', 'a bare CR in a header field value');
  if (line.includes('\n')) return bad('HTTP_BARE_LF', 'a bare LF in a header field value');
  return bad('HTTP_INVALID_HEADER', 'an invalid character in a header field value');
}

/**
 * A Content-Length value (one element of the list) as a number: Infinity
 * when it has more digits than a safe integer (any body limit is smaller).
 */
function lengthValue(v: string, whole: string): number {
  if (!DIGITS.test(v)) throw bad('HTTP_INVALID_CONTENT_LENGTH', `invalid Content-Length: ${JSON.stringify(whole.slice(0, 64))}`);
  if (v.length > MAX_LENGTH_DIGITS) {
    v = v.replace(LEADING_ZEROS, '');
    if (v.length > MAX_LENGTH_DIGITS) return Infinity;
  }
  return Number(v);
}

/**
 * The earliest index the head's CRLF CRLF can start at, buf[base, to) not
 * containing it: where its last bytes begin it, or else `to`.
 */
function terminatorFrom(buf: Buffer, base: number, to: number): number {
  for (let k = Math.min(3, to - base); k > 0; k--) {
    let j = 0;
    while (j < k && buf[to - k + j] === CRLF2[j]) j++;
    if (j === k) return to - k;
  }
  return to;
}

function isComplete(limits: Partial<ParserLimits>): limits is ParserLimits {
  return limits.maxRequestLineSize !== undefined && limits.maxHeaderSize !== undefined &&
    limits.maxHeaders !== undefined && limits.maxBodySize !== undefined;
}

/** First index of byte in buf[from, to), or -1. */
function indexIn(buf: Buffer, byte: number, from: number, to: number): number {
  if (from >= to) return -1;
  const i = buf.indexOf(byte, from);
  return i < to ? i : -1;
}

export class RequestParser {
  private state = S_HEAD;
  /** A head that arrived in pieces: its bytes so far are hbuf[0, hlen). */
  /** A latin1 string of data[textBase..] of the chunk being parsed (see head()). */
  private text = '';
  private textBase = 0;
  private textOf: Buffer | null = null;
  private hbuf: Buffer | null = null;
  private hlen = 0;
  /** Of the partial head: bytes already checked for bare LFs; whether its request line's LF was seen. */
  private hScanned = 0;
  private hLineSeen = false;
  /** Body bytes still to come (BODY_LENGTH). */
  private remaining = 0;
  /** Made for the first chunked body (few connections ever see one). */
  private chunked: ChunkedDecoder | null = null;
  /** What followed a detached request (see detach()). */
  private rest: Buffer | null = null;
  private readonly limits: ParserLimits;
  private handler: ParserHandler;
  /** Requests completed so far on this connection. */
  requests = 0;

  constructor(handler: ParserHandler, limits?: Partial<ParserLimits>) {
    this.handler = handler;
    // Complete limits (a server's) are shared, not copied for each parser.
    this.limits = limits === undefined ? DEFAULT_LIMITS : isComplete(limits) ? limits : { ...DEFAULT_LIMITS, ...limits };
  }

  /**
   * Makes the parser new again, for another connection (a server keeps
   * parsers for its connections between requests: see connection.ts). Not
   * while execute() runs.
   */
  reuse(handler: ParserHandler): void {
    this.drop();
    this.state = S_HEAD;
    this.handler = handler;
    this.requests = 0;
    this.rest = null;
    this.dropText();
  }

  /** Between requests, with nothing of the next one received yet. */
  get idle(): boolean {
    return this.state === S_HEAD && this.hlen === 0;
  }

  /** Inside a head: some of it has arrived, not all. */
  get inHead(): boolean {
    return this.state === S_HEAD && this.hlen > 0;
  }

  /** No more input will be parsed (after an error, or close()). */
  close(): void {
    this.state = S_DEAD;
    this.drop();
  }

  /** Parses nothing more: closed, or failed (not detached: that keeps the bytes). */
  get dead(): boolean {
    return this.state === S_DEAD;
  }

  /**
   * Called from onEnd(): this request is the last one the parser reads (an
   * Upgrade). The bytes after it in the chunk being parsed are kept for
   * takeRest(); later input is not parsed.
   */
  detach(): void {
    this.state = S_DETACHED;
    this.drop();
  }

  /** The bytes that followed the detached request in its chunk (a copy), or null. */
  takeRest(): Buffer | null {
    const rest = this.rest;
    this.rest = null;
    return rest;
  }

  /**
   * The peer half-closed. Throws an HttpError when a request was cut short;
   * a connection closed between requests is no error.
   */
  finish(): void {
    const state = this.state;
    const partial = this.hlen > 0;
    this.state = S_DEAD;
    this.drop();
    if (state >= S_DEAD || (state === S_HEAD && !partial)) return;
    throw bad('HTTP_INCOMPLETE', 'the connection ended in the middle of a request');
  }

  /** Parses data; throws an HttpError (and the parser dies) on a violation. */
  execute(data: Buffer): void {
    try {
      this.run(data);
    } catch (err) {
      this.state = S_DEAD;
      this.drop();
      throw err;
    } finally {
      this.dropText();
    }
  }

  /** Forgets any partial head or line. */
  private drop(): void {
    this.hbuf = null;
    this.hlen = 0;
    this.hScanned = 0;
    this.hLineSeen = false;
    this.chunked?.reset();
  }

  private run(data: Buffer): void {
    let pos = 0;
    const len = data.length;
    while (pos < len) {
      switch (this.state) {
        case S_HEAD:
          pos = this.hlen === 0 ? this.head(data, pos) : this.headContinued(data, pos);
          break;
        case S_BODY_LENGTH: {
          const n = Math.min(this.remaining, len - pos);
          this.remaining -= n;
          const piece = pos === 0 && n === len ? data : data.subarray(pos, pos + n);
          pos += n;
          this.handler.onBody(piece);
          // The handler may have closed the parser: then nothing more is parsed.
          if (this.remaining === 0 && this.state === S_BODY_LENGTH) this.end(null);
          break;
        }
        case S_CHUNKED:
          pos = this.chunked!.decode(data, pos);
          break;
        case S_DETACHED:
          // Copied: the chunk may be a slab region that is written again.
          this.rest = this.rest === null ? Buffer.from(data.subarray(pos)) : Buffer.concat([this.rest, data.subarray(pos)]);
          return;
        default:
          return; // dead: the rest is ignored
      }
    }
  }

  // ---- the head ---------------------------------------------------------------

  /** A head starting in data at pos (nothing of it carried over). */
  private head(data: Buffer, pos: number): number {
    const len = data.length;
    // RFC 9112 §2.2: empty lines before a request line are ignored.
    while (data[pos] === CR && pos + 1 < len && data[pos + 1] === LF) pos += 2;
    if (pos === len) return len;
    const limit = this.limits.maxHeaderSize;
    // The search runs on a latin1 string of the chunk (one byte, one char),
    // made once per chunk however many pipelined heads it holds: V8 searches
    // and slices strings without leaving JavaScript.
    // A short window first: heads are small, and a body that follows its
    // head in the chunk is not worth decoding.
    let text = this.text;
    let base = this.textBase;
    if (this.textOf !== data || pos < base || pos >= base + text.length) {
      base = pos;
      text = (data as LatinBuffer).latin1Slice(pos, Math.min(len, pos + TEXT_WINDOW));
      this.text = text;
      this.textBase = base;
      this.textOf = data;
    }
    let found = text.indexOf('\r\n\r\n', pos - base);
    if (found < 0 && base + text.length < Math.min(len, pos + limit + 4)) {
      base = pos;
      text = (data as LatinBuffer).latin1Slice(pos, Math.min(len, pos + limit + 4));
      this.text = text;
      this.textBase = base;
      found = text.indexOf('\r\n\r\n');
    }
    const end = found < 0 ? -1 : found + base;
    if (end >= 0 && end - pos <= limit) {
      this.parseHead(text.slice(pos - base, found + 2));
      return end + 4;
    }
    this.textOf = null;
    // No complete head within the limit: check what there is, as a head
    // arriving in pieces is (this throws if the limit is passed).
    this.hScanned = 0;
    this.hLineSeen = false;
    // (An over-long head is checked up to its terminator's first byte.)
    this.checkPartialHead(data, pos, end >= 0 ? end + 1 : len);
    // Keep a copy, not a view: the chunk may be a reused slab region.
    const n = len - pos;
    const buf = Buffer.allocUnsafe(Math.min(limit + 4, Math.max(HEAD_BUF_MIN, 2 * n)));
    data.copy(buf, 0, pos, len);
    this.hbuf = buf;
    this.hlen = n;
    return len;
  }

  /** Forgets the chunk's text once execute() returns (the chunk may be reused). */
  private dropText(): void {
    this.textOf = null;
    this.text = '';
  }

  /** More of a head that began in an earlier chunk. */
  private headContinued(data: Buffer, pos: number): number {
    const carried = this.hlen;
    let buf = this.hbuf!;
    if (carried === 1 && buf[0] === CR && data[pos] === LF) {
      // An empty line before the request line, split after its CR.
      this.drop();
      return pos + 1;
    }
    // A head is at most maxHeaderSize bytes and its terminator: take no more.
    const cap = this.limits.maxHeaderSize + 4;
    const take = Math.min(data.length - pos, cap - carried);
    const need = carried + take;
    if (need > buf.length) {
      const grown = Buffer.allocUnsafe(Math.min(cap, Math.max(need, 2 * buf.length)));
      buf.copy(grown, 0, 0, carried);
      this.hbuf = buf = grown;
    }
    data.copy(buf, carried, pos, pos + take);
    this.hlen = need;
    // Searches stay within what has arrived (past it, the buffer is stale).
    const view = buf.subarray(0, need);
    // The terminator may straddle the carried bytes and this chunk.
    const end = view.indexOf(CRLF2, Math.max(0, carried - 3));
    if (end >= 0) {
      const text = buf.toString('latin1', 0, end + 2);
      this.drop();
      this.parseHead(text);
      return pos + end + 4 - carried; // where the head ends, in data's coordinates
    }
    this.checkPartialHead(view, 0, need); // throws once the head can no longer end within its limit
    return pos + take;
  }

  /**
   * Checks the head growing in buf[base, to) (bytes up to base + hScanned
   * were checked before; no terminator in it) for what can be known before
   * it is complete: a request line over its limit, a bare LF within the
   * first maxHeaderSize + 1 bytes, a head that can no longer end within its
   * limit -- in the order the same checks have on a complete head.
   */
  private checkPartialHead(buf: Buffer, base: number, to: number): void {
    const from = base + this.hScanned;
    if (!this.hLineSeen) {
      const lf = indexIn(buf, LF, from, to);
      // The request line's length, its CR excluded; without its LF yet, a
      // lower bound (a CR at the end may be the CR of its CRLF).
      const lineLen = lf < 0
        ? to - base - (buf[to - 1] === CR ? 1 : 0)
        : lf - base - (lf > base && buf[lf - 1] === CR ? 1 : 0);
      const lineLimit = this.limits.maxRequestLineSize;
      if (lineLen > lineLimit) throw tooLarge(`request line over ${lineLimit} bytes`);
      if (lf >= 0) this.hLineSeen = true;
    }
    // A client that ends lines with a bare LF would otherwise wait for a
    // terminator it never sends. Only the bytes a head within the limit can
    // have are looked at, so that a head over the limit is a 431 however it
    // was split.
    const limit = this.limits.maxHeaderSize;
    const window = Math.min(to, base + limit + 1);
    for (let i = indexIn(buf, LF, from, window); i >= 0; i = indexIn(buf, LF, i + 1, window)) {
      if (i === base || buf[i - 1] !== CR) throw bareLfInHead();
    }
    this.hScanned = to - base;
    if (terminatorFrom(buf, base, to) - base > limit) throw tooLarge(`request head over ${limit} bytes`);
  }

  /** A complete head: the request line and field lines, each with its CRLF. */
  private parseHead(text: string): void {
    const lf = text.indexOf('\n');
    const cr = lf > 0 && text.charCodeAt(lf - 1) === CR;
    const lineLimit = this.limits.maxRequestLineSize;
    if (lf - (cr ? 1 : 0) > lineLimit) throw tooLarge(`request line over ${lineLimit} bytes`);
    if (!cr) throw bad('HTTP_BARE_LF', 'a bare LF in the request line');
    // method SP request-target SP HTTP-version, cut at its two spaces and
    // each part tested whole (test() makes no match array).
    const sp1 = text.indexOf(' ');
    const sp2 = sp1 < 0 || sp1 > lf ? -1 : text.indexOf(' ', sp1 + 1);
    if (sp2 < 0 || sp2 > lf) throw requestLineError(text.slice(0, lf - 1));
    const method = text.slice(0, sp1);
    const url = text.slice(sp1 + 1, sp2);
    const version = text.slice(sp2 + 1, lf - 1);
    if (!(METHODS.has(method) || TOKEN_ONLY.test(method)) || !TARGET.test(url) || !VERSION.test(version)) {
      throw requestLineError(text.slice(0, lf - 1));
    }
    const major = version.charCodeAt(5) - 48;
    const minor = version.charCodeAt(7) - 48;
    if (major !== 1 || minor > 1) {
      // A bare LF further on is what a head arriving in pieces fails on first.
      if (hasBareLf(text)) throw bareLfInHead();
      throw new HttpError(505, 'HTTP_VERSION_NOT_SUPPORTED', `HTTP/${major}.${minor} is not supported`);
    }
    const raw: string[] = [];
    parseFieldLines(text, lf + 1, raw, this.limits.maxHeaders, true);
    this.headParsed(method, url, minor, raw);
  }

  private headParsed(method: string, url: string, minor: number, raw: string[]): void {
    let contentLength = -1;
    let te: string | undefined;
    let connection: string | undefined;
    let expect: string | undefined;
    let hosts = 0;
    for (let i = 0; i < raw.length; i += 2) {
      // Only five names matter to the framing; their lengths and first
      // letters pick them out before any lower-casing.
      const rawName = raw[i]!;
      const n = rawName.length;
      const first = rawName.charCodeAt(0) | 0x20;
      if (!((n === 4 && first === 104 /* h */) || (n === 6 && first === 101 /* e */) ||
        ((n === 10 || n === 14) && first === 99 /* c */) || (n === 17 && first === 116 /* t */))) continue;
      const value = raw[i + 1]!;
      switch (lowerName(rawName)) {
        case 'content-length': {
          // A list of identical values is one length (RFC 9110 §8.6); any
          // disagreement is a smuggling attempt.
          if (value.indexOf(',') < 0) {
            const n = lengthValue(value, value);
            if (contentLength >= 0 && n !== contentLength) {
              throw bad('HTTP_CONFLICTING_CONTENT_LENGTH', 'Content-Length headers that differ');
            }
            contentLength = n;
            break;
          }
          for (const part of value.split(',')) {
            const n = lengthValue(trimOws(part), value);
            if (contentLength >= 0 && n !== contentLength) {
              throw bad('HTTP_CONFLICTING_CONTENT_LENGTH', 'Content-Length headers that differ');
            }
            contentLength = n;
          }
          break;
        }
        case 'transfer-encoding':
          te = te === undefined ? value : `${te}, ${value}`;
          break;
        case 'connection':
          connection = connection === undefined ? value : `${connection}, ${value}`;
          break;
        case 'host':
          hosts++;
          break;
        case 'expect':
          expect = value.toLowerCase();
          break;
      }
    }
    // RFC 9112 §3.2: exactly one Host in HTTP/1.1, at most one in 1.0.
    if (hosts > 1) throw bad('HTTP_DUPLICATE_HOST', 'more than one Host header');
    if (hosts === 0 && minor === 1) throw bad('HTTP_MISSING_HOST', 'an HTTP/1.1 request without a Host header');

    let bodyKind = BODY_NONE;
    if (te !== undefined) {
      // RFC 9112 §6.1: Transfer-Encoding with Content-Length, or in an
      // HTTP/1.0 request, is faulty framing; chunked must come last, once.
      if (contentLength >= 0) throw bad('HTTP_TE_WITH_CONTENT_LENGTH', 'Transfer-Encoding together with Content-Length');
      if (minor === 0) throw bad('HTTP_TE_IN_HTTP10', 'Transfer-Encoding in an HTTP/1.0 request');
      const codings = listElements(te);
      const last = codings.length - 1;
      if (last < 0) throw bad('HTTP_INVALID_TRANSFER_ENCODING', 'an empty Transfer-Encoding');
      for (let i = 0; i < codings.length; i++) {
        const c = codings[i]!;
        if (c === 'chunked') {
          if (i !== last) throw bad('HTTP_INVALID_TRANSFER_ENCODING', 'chunked is not the final transfer coding');
        } else if (!TOKEN_ONLY.test(c)) {
          throw bad('HTTP_INVALID_TRANSFER_ENCODING', `invalid Transfer-Encoding: ${JSON.stringify(te.slice(0, 64))}`);
        } else {
          // A coding this parser cannot undo: the body's end cannot be found.
          throw new HttpError(501, 'HTTP_UNSUPPORTED_TRANSFER_ENCODING', `unsupported transfer coding: ${c.slice(0, 64)}`);
        }
      }
      bodyKind = BODY_CHUNKED;
    } else if (contentLength > 0) {
      // Infinity: more digits than a safe integer has, over even an infinite limit.
      if (contentLength > this.limits.maxBodySize || contentLength === Infinity) {
        throw new HttpError(413, 'HTTP_BODY_TOO_LARGE', `Content-Length over the ${this.limits.maxBodySize}-byte limit`);
      }
      bodyKind = BODY_LENGTH;
    }

    let keepAlive = minor === 1;
    if (connection !== undefined && connection.indexOf(',') < 0) {
      // One option, the usual case: compared without making a list.
      const opt = trimOws(connection);
      if (sameLetters(opt, 'close')) keepAlive = false;
      else if (sameLetters(opt, 'keep-alive')) keepAlive = true;
    } else if (connection !== undefined) {
      for (const opt of listElements(connection)) {
        if (opt === 'close') {
          keepAlive = false;
          break;
        }
        if (opt === 'keep-alive') keepAlive = true;
      }
    }

    const head = new ParsedHead(method, url, minor, raw, keepAlive, bodyKind,
      bodyKind === BODY_LENGTH ? contentLength : 0, expect);
    this.handler.onHead(head);
    if (this.state === S_DEAD) return; // closed by the handler
    if (bodyKind === BODY_LENGTH) {
      this.remaining = contentLength;
      this.state = S_BODY_LENGTH;
    } else if (bodyKind === BODY_CHUNKED) {
      (this.chunked ??= this.newChunkedDecoder()).start();
      this.state = S_CHUNKED;
    } else {
      this.end(null);
    }
  }

  private end(trailers: string[] | null): void {
    this.state = S_HEAD;
    this.requests++;
    this.handler.onEnd(trailers);
  }

  // ---- chunked bodies ------------------------------------------------------------

  private newChunkedDecoder(): ChunkedDecoder {
    return new ChunkedDecoder({
      onBody: (piece) => this.handler.onBody(piece),
      trailerLine: (line, raw) => parseFieldLines(`${line}\r\n`, 0, raw, this.limits.maxHeaders, false),
      onChunkedEnd: (rawTrailers) => {
        // The handler may have closed the parser in the last onBody().
        if (this.state === S_CHUNKED) this.end(rawTrailers);
      },
      chunkedError: (status, code, message) => new HttpError(status, code, message),
    }, this.limits);
  }
}

/** Names what is wrong with a request line, for the error message. */
function requestLineError(line: string): HttpError {
  const parts = line.split(' ');
  if (parts.length !== 3) {
    if (line.includes('\r')) return bad('HTTP_BARE_CR', 'a bare CR in the request line');
    return bad('HTTP_INVALID_REQUEST_LINE', 'a request line that is not "method target version"');
  }
  const [method, target, version] = parts as [string, string, string];
  if (!TOKEN_ONLY.test(method)) return bad('HTTP_INVALID_METHOD', `invalid method: ${JSON.stringify(method.slice(0, 32))}`);
  if (!/^HTTP\/\d\.\d$/.test(version)) return bad('HTTP_INVALID_VERSION', `invalid HTTP version: ${JSON.stringify(version.slice(0, 32))}`);
  if (target === '') return bad('HTTP_INVALID_URL', 'an empty request target');
  return bad('HTTP_INVALID_URL', 'an invalid character in the request target');
}
