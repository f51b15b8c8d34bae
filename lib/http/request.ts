// request.ts -- an incoming request: the parsed head, and its body as events
// ('data', 'end'), as a promise (body(), text(), json()), or as a real
// stream.Readable (toReadable(), pipe(), async iteration) made on first use.
//
// Like a stream, the body flows once a 'data' listener is added or resume()
// is called, and 'end' waits until then; until somebody consumes it the body
// is buffered, and past highWaterMark bytes the connection stops reading.
import { Readable } from 'node:stream';
import { FlowingEmitter } from '../flow';
import type { Socket } from '../socket';
import { BODY_NONE, type HttpError, type RequestHead } from './parser';

/** What a request needs of its connection. */
export interface RequestOwner {
  readonly socket: Socket;
  /** The request's buffered body grew past its limit / drained: stop / restart reading. */
  _pauseReading(): void;
  _resumeReading(): void;
}

const BUFFER_LIMIT = 64 * 1024;

function tooMuchBody(limit: number): Error {
  const err = new Error(`request body over the ${limit}-byte limit given to body()`) as Error & { code: string };
  err.code = 'ERR_HTTP_BODY_TOO_LARGE';
  return err;
}

function aborted(): Error {
  const err = new Error('aborted') as Error & { code: string };
  err.code = 'ECONNRESET';
  return err;
}

export class IncomingRequest extends FlowingEmitter {
  readonly method: string;
  readonly url: string;
  /** '1.1' or '1.0'. */
  readonly httpVersion: string;
  readonly httpVersionMajor = 1;
  readonly httpVersionMinor: number;
  private readonly head: RequestHead;
  /** Names as received and values, alternating. */
  readonly rawHeaders: string[];
  /** Filled in when a chunked body's trailer section arrives. */
  trailers: Record<string, string> = Object.create(null);
  rawTrailers: string[] = [];
  /** The whole request, body included, has been received. */
  complete = false;
  /** The connection closed before the request was complete. */
  aborted = false;
  /** @internal */ readonly _keepAlive: boolean;
  /** @internal */ readonly _expect: string | undefined;
  private readonly owner: RequestOwner;
  /** undefined: not yet decided; true once a consumer asked for the body; false while paused. */
  private flowing: boolean | undefined = undefined;
  private chunks: Buffer[] | null = null;
  private buffered = 0;
  private endPending = false;
  private readingPaused = false;
  private dumped = false;
  private readable: Readable | null = null;
  private error: Error | null = null;

  /** @internal */
  constructor(owner: RequestOwner, head: RequestHead) {
    super();
    this.owner = owner;
    this.method = head.method;
    this.url = head.url;
    this.httpVersionMinor = head.versionMinor;
    this.httpVersion = head.versionMinor === 1 ? '1.1' : '1.0';
    this.head = head;
    this.rawHeaders = head.rawHeaders;
    this._keepAlive = head.keepAlive;
    this._expect = head.expect;
    if (head.bodyKind === BODY_NONE) this.complete = true;
  }

  /**
   * Lower-cased names; repeated fields joined with ', ' ('; ' for cookie);
   * set-cookie as an array. No prototype. Made on first use.
   */
  get headers(): Record<string, string | string[]> {
    return this.head.headers;
  }

  /** The connection this request came on. */
  get socket(): Socket {
    return this.owner.socket;
  }

  /** The peer's address, kept from accept(): no syscall. */
  get remoteAddress(): string | undefined {
    return this.owner.socket.remoteAddress;
  }

  get remotePort(): number | undefined {
    return this.owner.socket.remotePort;
  }

  // ---- from the connection -----------------------------------------------------------

  /** @internal A piece of the body. */
  _push(chunk: Buffer): void {
    if (this.dumped) return;
    if (this.flowing === true) {
      this.emit('data', chunk);
      return;
    }
    (this.chunks ??= []).push(chunk);
    this.buffered += chunk.length;
    if (this.buffered >= BUFFER_LIMIT && !this.readingPaused) {
      this.readingPaused = true;
      this.owner._pauseReading();
    }
  }

  /** @internal The body is complete. */
  _end(rawTrailers: string[] | null): void {
    if (rawTrailers !== null) {
      this.rawTrailers = rawTrailers;
      for (let i = 0; i < rawTrailers.length; i += 2) this.trailers[rawTrailers[i]!.toLowerCase()] = rawTrailers[i + 1]!;
    }
    if (this.complete && this.flowing === undefined && rawTrailers === null && this.chunks === null) {
      // No body at all (GET): 'end' waits for a consumer, as a stream's would.
      this.endPending = true;
      return;
    }
    this.complete = true;
    if (this.dumped) return;
    if (this.flowing === true && this.chunks === null) this.emit('end');
    else this.endPending = true;
  }

  /** @internal The connection closed (or failed) before the body was complete. */
  _abort(err?: HttpError | Error): void {
    if (this.complete) return;
    this.aborted = true;
    this.error = err ?? aborted();
    this.emit('aborted');
    if (this.listenerCount('error') > 0) this.emit('error', this.error);
    this.emit('close');
  }

  /** @internal The response ended before the body was read: the rest is discarded. */
  _dump(): void {
    if (this.complete && this.chunks === null) return;
    this.dumped = true;
    this.chunks = null;
    this.buffered = 0;
    this.endPending = false;
    if (this.readingPaused) {
      this.readingPaused = false;
      this.owner._resumeReading();
    }
  }

  // ---- flow ---------------------------------------------------------------------------

  pause(): this {
    this.flowing = false;
    return this;
  }

  resume(): this {
    this.flowing = true;
    const chunks = this.chunks;
    if (chunks !== null) {
      this.chunks = null;
      this.buffered = 0;
      for (let i = 0; i < chunks.length; i++) {
        this.emit('data', chunks[i]!);
        if (this.flowing !== true) {
          // Paused again by a listener: keep the rest.
          const rest = chunks.slice(i + 1);
          if (rest.length > 0) {
            this.chunks = rest;
            for (const c of rest) this.buffered += c.length;
            return this;
          }
          break;
        }
      }
    }
    if (this.readingPaused && this.flowing === true) {
      this.readingPaused = false;
      this.owner._resumeReading();
    }
    if (this.endPending && this.chunks === null && this.flowing === true) {
      this.endPending = false;
      this.emit('end');
    }
    return this;
  }

  isPaused(): boolean {
    return this.flowing === false;
  }

  // ---- the body at once -------------------------------------------------------------------

  /**
   * The whole body. Rejects if the connection closes first, or when the body
   * passes `limit` bytes (default: the server's maxBodySize).
   */
  body(limit = Infinity): Promise<Buffer> {
    if (this.error !== null) return Promise.reject(this.error);
    if (this.complete && this.chunks === null && this.flowing !== true) {
      this.flowing = true;
      this.endPending = false;
      return Promise.resolve(Buffer.alloc(0));
    }
    return new Promise((resolve, reject) => {
      const parts: Buffer[] = [];
      let size = 0;
      const onData = (c: Buffer) => {
        size += c.length;
        if (size > limit) {
          cleanup();
          this._dump();
          reject(tooMuchBody(limit));
          return;
        }
        parts.push(c);
      };
      const onEnd = () => {
        cleanup();
        resolve(parts.length === 1 ? parts[0]! : Buffer.concat(parts, size));
      };
      const onAborted = () => {
        cleanup();
        reject(this.error ?? aborted());
      };
      const cleanup = () => {
        this.removeListener('data', onData);
        this.removeListener('end', onEnd);
        this.removeListener('aborted', onAborted);
      };
      this.on('end', onEnd);
      this.on('aborted', onAborted);
      this.on('data', onData);
    });
  }

  /** The body decoded as UTF-8. */
  async text(limit?: number): Promise<string> {
    return (await this.body(limit)).toString('utf8');
  }

  /** The body parsed as JSON. */
  async json<T = unknown>(limit?: number): Promise<T> {
    return JSON.parse(await this.text(limit)) as T;
  }

  // ---- as a stream.Readable ----------------------------------------------------------------

  /** A stream.Readable of the body, made once, on first use. */
  toReadable(): Readable {
    if (this.readable !== null) return this.readable;
    const r = new Readable({
      read: () => {
        this.resume();
      },
    });
    this.readable = r;
    this.on('end', () => r.push(null));
    this.on('aborted', () => r.destroy(this.error ?? aborted()));
    this.on('data', (c: Buffer) => {
      if (!r.push(c)) this.pause();
    });
    return r;
  }

  pipe<T extends NodeJS.WritableStream>(destination: T, options?: { end?: boolean }): T {
    return this.toReadable().pipe(destination, options);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Buffer> {
    return this.toReadable()[Symbol.asyncIterator]();
  }
}
