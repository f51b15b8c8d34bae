// chunked.ts -- the chunked transfer coding (RFC 9112 §7.1), decoded
// incrementally and strictly: the request parser and the proxy's response
// parser both frame chunked bodies with it, so a proxy can never read a body's
// end somewhere else than the server behind it does.
//
//   chunked-body = *chunk last-chunk trailer-section CRLF
//   chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//
// Extensions are allowed and ignored, as the RFC says, but must not hide a CR,
// LF or other control byte; whitespace after the size is only allowed before a
// ';' (BWS belongs to chunk-ext). Every line ends in CRLF: a bare LF or CR is
// an error. Chunk data comes out as views of the input, never copied.
import type { HttpError } from './parser';

export interface ChunkedLimits {
  /** Bytes of data, all chunks together (beyond: a 413 error). */
  maxBodySize: number;
  /** Bytes of the trailer section (beyond: a 431 error). */
  maxHeaderSize: number;
}

export interface ChunkedOwner {
  /** A piece of chunk data: a view of the buffer given to decode(). */
  onBody(piece: Buffer): void;
  /** One trailer field line, without its CRLF: validate it and add name and value to raw. */
  trailerLine(line: string, raw: string[]): void;
  /** The body and its trailer section are complete; rawTrailers alternates names and values. */
  onChunkedEnd(rawTrailers: string[] | null): void;
  /** The error to throw: status 400 (malformed), 413 (body too large) or 431 (trailers too large). */
  chunkedError(status: number, code: string, message: string): HttpError;
}

const CHUNK_LINE = /^([0-9A-Fa-f]+)(?:[\t ]*;[\t\x20-\x7e\x80-\xff]*)?$/;
const LEADING_ZEROS = /^0+/;
const MAX_CHUNK_LINE = 4096;
const MAX_CHUNK_SIZE_DIGITS = 13; // 16^13 = 2^52: any longer size (leading zeros aside) overflows
const CR = 13;
const LF = 10;

const C_SIZE = 0;
const C_DATA = 1;
const C_DATA_END = 2;
const C_TRAILERS = 3;
const C_DONE = 4;

export class ChunkedDecoder {
  private state = C_DONE;
  /** Bytes of the current chunk still to come. */
  private remaining = 0;
  private bodyBytes = 0;
  private trailerBytes = 0;
  private rawTrailers: string[] | null = null;
  /** A line carried over from earlier input (latin1, without its LF). */
  private lineCarry = '';
  /** Where the line readLine() returned ends (the index after its LF). */
  private lineNext = 0;
  /** The CR after a chunk's data came at the end of the last input. */
  private crSeen = false;
  private readonly owner: ChunkedOwner;
  private readonly limits: ChunkedLimits;

  constructor(owner: ChunkedOwner, limits: ChunkedLimits) {
    this.owner = owner;
    this.limits = limits;
  }

  /** A chunked body begins. */
  start(): void {
    this.state = C_SIZE;
    this.remaining = 0;
    this.bodyBytes = 0;
    this.trailerBytes = 0;
    this.rawTrailers = null;
    this.lineCarry = '';
    this.crSeen = false;
  }

  /** Forgets any body under way. */
  reset(): void {
    this.state = C_DONE;
    this.lineCarry = '';
    this.rawTrailers = null;
  }

  /**
   * Decodes data from pos and returns where it stopped: after one piece of
   * chunk data went to onBody() (the owner may have closed meanwhile, so it
   * looks before calling again), after a trailer line or the body's end
   * (onChunkedEnd()), or at the end of data. Throws the owner's error on a violation.
   */
  decode(data: Buffer, pos: number): number {
    const len = data.length;
    while (pos < len) {
      switch (this.state) {
        case C_SIZE:
          pos = this.chunkSize(data, pos);
          break;
        case C_DATA: {
          const n = Math.min(this.remaining, len - pos);
          this.remaining -= n;
          if (this.remaining === 0) this.state = C_DATA_END;
          this.owner.onBody(data.subarray(pos, pos + n));
          return pos + n;
        }
        case C_DATA_END:
          pos = this.chunkDataEnd(data, pos);
          break;
        case C_TRAILERS:
          return this.trailer(data, pos);
        default:
          return pos;
      }
    }
    return pos;
  }

  /**
   * One CRLF-terminated line of at most max bytes from data[pos..], with any
   * carried-over start: the line without its CRLF (lineNext is then where it
   * ended), or null when its LF has not come yet (the bytes are carried over).
   */
  private readLine(data: Buffer, pos: number, max: number, status: number, what: string): string | null {
    const lf = data.indexOf(LF, pos);
    const have = this.lineCarry.length;
    const n = (lf < 0 ? data.length : lf) - pos;
    // max + 1: the line's CR counts towards neither limit.
    if (have + n > max + 1) {
      const code = status === 431 ? 'HTTP_HEADERS_TOO_LARGE' : 'HTTP_LINE_TOO_LONG';
      throw this.owner.chunkedError(status, code, `${what} over ${max} bytes`);
    }
    if (lf < 0) {
      this.lineCarry += data.toString('latin1', pos);
      return null;
    }
    let text = data.toString('latin1', pos, lf);
    if (have > 0) {
      text = this.lineCarry + text;
      this.lineCarry = '';
    }
    this.lineNext = lf + 1;
    if (text.charCodeAt(text.length - 1) !== CR) throw this.owner.chunkedError(400, 'HTTP_BARE_LF', `${what} ending in a bare LF`);
    return text.slice(0, -1);
  }

  private chunkSize(data: Buffer, pos: number): number {
    const text = this.readLine(data, pos, MAX_CHUNK_LINE, 400, 'a chunk-size line');
    if (text === null) return data.length;
    const m = CHUNK_LINE.exec(text);
    if (m === null) {
      if (text.includes('\r')) throw this.owner.chunkedError(400, 'HTTP_BARE_CR', 'a bare CR in a chunk-size line');
      throw this.owner.chunkedError(400, 'HTTP_INVALID_CHUNK_SIZE', `invalid chunk-size line: ${JSON.stringify(text.slice(0, 40))}`);
    }
    let hex = m[1]!;
    if (hex.length > MAX_CHUNK_SIZE_DIGITS) {
      hex = hex.replace(LEADING_ZEROS, '');
      if (hex.length > MAX_CHUNK_SIZE_DIGITS) throw this.owner.chunkedError(400, 'HTTP_INVALID_CHUNK_SIZE', 'a chunk size that overflows');
    }
    const size = hex === '' ? 0 : parseInt(hex, 16);
    if (size === 0) {
      this.state = C_TRAILERS;
      return this.lineNext;
    }
    if (size > this.limits.maxBodySize - this.bodyBytes) {
      throw this.owner.chunkedError(413, 'HTTP_BODY_TOO_LARGE', `chunked body over the ${this.limits.maxBodySize}-byte limit`);
    }
    this.bodyBytes += size;
    this.remaining = size;
    this.state = C_DATA;
    return this.lineNext;
  }

  private chunkDataEnd(data: Buffer, pos: number): number {
    // Exactly CRLF after a chunk's data; the CR may have come in the last input.
    if (!this.crSeen) {
      if (data[pos] !== CR) throw this.owner.chunkedError(400, 'HTTP_INVALID_CHUNK', 'chunk data not followed by CRLF');
      pos++;
      if (pos === data.length) {
        this.crSeen = true;
        return pos;
      }
    }
    this.crSeen = false;
    if (data[pos] !== LF) throw this.owner.chunkedError(400, 'HTTP_INVALID_CHUNK', 'chunk data not followed by CRLF');
    this.state = C_SIZE;
    return pos + 1;
  }

  private trailer(data: Buffer, pos: number): number {
    const limit = this.limits.maxHeaderSize;
    const text = this.readLine(data, pos, limit - this.trailerBytes, 431, 'the trailer section');
    if (text === null) return data.length;
    const next = this.lineNext;
    this.trailerBytes += text.length + 2;
    if (this.trailerBytes > limit) {
      throw this.owner.chunkedError(431, 'HTTP_HEADERS_TOO_LARGE', `trailer section over ${limit} bytes`);
    }
    if (text === '') {
      const raw = this.rawTrailers;
      this.state = C_DONE;
      this.rawTrailers = null;
      this.owner.onChunkedEnd(raw);
      return next;
    }
    this.owner.trailerLine(text, (this.rawTrailers ??= []));
    return next;
  }
}
