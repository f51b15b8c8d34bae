// Shared helpers for the tests of iomux's HTTP server (test/http*.test.ts):
// a server on an ephemeral port torn down with the test, a raw node:net client,
// a parser for the raw response stream, node's http client and curl.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import * as nodeHttp from 'node:http';
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Test } from 'tap';
import { iomux } from './helpers';

export const { http } = iomux;
export type Req = iomux.http.IncomingRequest;
export type Res = iomux.http.ServerResponse;
export type Handler = (req: Req, res: Res) => unknown;

export const sha = (b: Buffer | string): string => createHash('sha256').update(b).digest('hex');

export interface Served {
  server: iomux.http.HttpServer;
  port: number;
  /** Every socket the server accepted, in order. */
  sockets: iomux.Socket[];
  /** performance.now() at each accept, in the same order. */
  acceptedAt: number[];
}

/** An iomux HTTP server on 127.0.0.1, closed (connections and all) when the test ends. */
export async function serve(t: Test, handler: Handler, options: iomux.http.HttpServerOptions = {}): Promise<Served> {
  const server = http.createServer(options, handler as iomux.http.RequestListener);
  const sockets: iomux.Socket[] = [];
  const acceptedAt: number[] = [];
  server.on('connection', (s: iomux.Socket) => {
    acceptedAt.push(performance.now());
    sockets.push(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const a = server.address();
  if (a === null || typeof a === 'string') throw new Error('not a TCP server');
  t.teardown(async () => {
    server.closeAllConnections();
    await server.close();
  });
  return { server, port: a.port, sockets, acceptedAt };
}

export interface RawClient {
  sock: net.Socket;
  data(): Buffer;
  text(): string;
  /** performance.now() of the first byte received, or -1. */
  firstByteAt(): number;
  /** Resolves with performance.now() at the server's FIN (or the close, if that comes first). */
  ended: Promise<number>;
  /** Resolves with performance.now() at 'close'. */
  closed: Promise<number>;
  /** ended, but rejects after ms (default 5000). */
  waitEnd(ms?: number): Promise<number>;
  errors: string[];
  /** Resolves once pred(received text) is true; rejects after ms or at a close with pred still false. */
  until(pred: (text: string) => boolean, ms?: number): Promise<void>;
  /** Resolves once the received bytes parse as n complete final responses. */
  responses(n: number, noBody?: (i: number) => boolean, ms?: number): Promise<RawResponse[]>;
}

/** Connects to port: 'connected' or the error's code. */
export function tryConnect(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    s.on('connect', () => {
      s.destroy();
      resolve('connected');
    });
  });
}

/** A raw node:net client that records everything it receives. */
export function rawClient(port: number): RawClient {
  const sock = net.connect(port, '127.0.0.1');
  sock.setNoDelay(true);
  const chunks: Buffer[] = [];
  let first = -1;
  let isClosed = false;
  const waiters = new Set<() => void>();
  const wake = () => { for (const w of [...waiters]) w(); };
  sock.on('data', (c: Buffer) => {
    if (first < 0) first = performance.now();
    chunks.push(c);
    wake();
  });
  const errors: string[] = [];
  sock.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? e.message));
  const ended = new Promise<number>((resolve) => {
    sock.on('end', () => resolve(performance.now()));
    sock.on('close', () => resolve(performance.now()));
  });
  const closed = new Promise<number>((resolve) => sock.on('close', () => {
    isClosed = true;
    resolve(performance.now());
    wake();
  }));
  const data = () => Buffer.concat(chunks);
  const text = () => data().toString('latin1');
  const until = (pred: (text: string) => boolean, ms = 5000) => new Promise<void>((resolve, reject) => {
    const check = () => {
      const s = text();
      if (pred(s)) done(null);
      else if (isClosed) done(new Error(`closed before the expected bytes; got ${JSON.stringify(s.slice(0, 300))}`));
    };
    const timer = setTimeout(() => done(new Error(`timed out waiting; got ${JSON.stringify(text().slice(0, 300))}`)), ms);
    const done = (err: Error | null) => {
      clearTimeout(timer);
      waiters.delete(check);
      if (err) reject(err);
      else resolve();
    };
    waiters.add(check);
    check();
  });
  const responses = async (n: number, noBody?: (i: number) => boolean, ms?: number) => {
    let got: RawResponse[] = [];
    await until(() => {
      got = tryParse(data(), noBody);
      return got.filter((r) => r.status >= 200).length >= n;
    }, ms);
    return got;
  };
  const waitEnd = (ms = 5000) => within(ended, ms, () => `the server to end the connection; got ${JSON.stringify(text().slice(0, 300))}`);
  return { sock, data, text, firstByteAt: () => first, ended, closed, waitEnd, errors, until, responses };
}

/** p, or a rejection after ms. */
export function within<T>(p: Promise<T>, ms: number, what: string | (() => string)): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${typeof what === 'string' ? what : what()}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export interface RawResponse {
  statusLine: string;
  status: number;
  /** Lower-cased names; the last value of a repeated field. */
  headers: Record<string, string>;
  /** The head's field lines as sent. */
  fieldLines: string[];
  body: Buffer;
  trailers: Record<string, string>;
}

/**
 * The first complete response at the start of a client's receive buffer,
 * for clients that read responses one at a time: its head and the bytes after
 * it; rest is null when the head has no Content-Length; null while the
 * response is incomplete.
 */
export function nextResponse(buf: Buffer): { head: string; rest: Buffer | null } | null {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const head = buf.toString('latin1', 0, end);
  const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? NaN);
  if (!Number.isInteger(len)) return { head, rest: null };
  if (buf.length < end + 4 + len) return null;
  return { head, rest: buf.subarray(end + 4 + len) };
}

/**
 * Parses a stream of HTTP/1.1 responses (1xx interim responses included, as
 * entries of their own). noBody(i) says the i-th final response answers a
 * HEAD. Throws on a malformed or incomplete stream; a response without a
 * length takes the rest of the stream.
 */
export function parseResponses(buf: Buffer, noBody: (i: number) => boolean = () => false): RawResponse[] {
  const out: RawResponse[] = [];
  let pos = 0;
  let final = 0;
  while (pos < buf.length) {
    const end = buf.indexOf('\r\n\r\n', pos, 'latin1');
    if (end < 0) throw new Error(`incomplete head: ${JSON.stringify(buf.toString('latin1', pos, pos + 200))}`);
    const [statusLine, ...fieldLines] = buf.toString('latin1', pos, end).split('\r\n') as [string, ...string[]];
    const m = /^HTTP\/1\.[01] (\d{3}) /.exec(statusLine);
    if (m === null) throw new Error(`bad status line: ${JSON.stringify(statusLine)}`);
    const status = Number(m[1]);
    const headers: Record<string, string> = {};
    for (const l of fieldLines) {
      const i = l.indexOf(':');
      if (i <= 0) throw new Error(`bad field line: ${JSON.stringify(l)}`);
      headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
    }
    pos = end + 4;
    let body: Buffer = Buffer.alloc(0);
    const trailers: Record<string, string> = {};
    if (status >= 200) {
      const index = final++;
      if (noBody(index) || status === 204 || status === 304) {
        // no body
      } else if (headers['transfer-encoding'] !== undefined) {
        if (!/chunked$/.test(headers['transfer-encoding'])) throw new Error('unknown transfer coding');
        const parts: Buffer[] = [];
        for (;;) {
          const eol = buf.indexOf('\r\n', pos, 'latin1');
          if (eol < 0) throw new Error('incomplete chunk size line');
          const size = parseInt(buf.toString('latin1', pos, eol).split(';')[0]!, 16);
          if (!Number.isFinite(size)) throw new Error('bad chunk size');
          pos = eol + 2;
          if (size === 0) break;
          if (pos + size + 2 > buf.length) throw new Error('incomplete chunk');
          parts.push(buf.subarray(pos, pos + size));
          if (buf.toString('latin1', pos + size, pos + size + 2) !== '\r\n') throw new Error('chunk not followed by CRLF');
          pos += size + 2;
        }
        for (;;) {
          const eol = buf.indexOf('\r\n', pos, 'latin1');
          if (eol < 0) throw new Error('incomplete trailers');
          const line = buf.toString('latin1', pos, eol);
          pos = eol + 2;
          if (line === '') break;
          const i = line.indexOf(':');
          trailers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
        }
        body = Buffer.concat(parts);
      } else if (headers['content-length'] !== undefined) {
        const n = Number(headers['content-length']);
        if (pos + n > buf.length) throw new Error('incomplete body');
        body = buf.subarray(pos, pos + n);
        pos += n;
      } else {
        body = buf.subarray(pos);
        pos = buf.length;
      }
    }
    out.push({ statusLine, status, headers, fieldLines, body, trailers });
  }
  return out;
}

/** parseResponses on a stream that may still be arriving: [] until what arrived parses whole. */
function tryParse(buf: Buffer, noBody: ((i: number) => boolean) | undefined): RawResponse[] {
  try {
    return parseResponses(buf, noBody);
  } catch {
    return [];
  }
}

export interface Reply {
  status: number;
  headers: nodeHttp.IncomingHttpHeaders;
  rawHeaders: string[];
  trailers: NodeJS.Dict<string>;
  body: Buffer;
  socket: net.Socket;
}

/** One request with node's http client; resolves with the whole response. */
export function request(port: number, opts: nodeHttp.RequestOptions & { body?: Buffer | string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const { body, ...rest } = opts;
    const req = nodeHttp.request({ host: '127.0.0.1', port, ...rest }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({
        status: res.statusCode!, headers: res.headers, rawHeaders: res.rawHeaders, trailers: res.trailers,
        body: Buffer.concat(chunks), socket: res.socket as net.Socket,
      }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export interface CurlResult { code: number | null; stdout: Buffer; stderr: string }

/** Runs curl (asynchronously: the server under test shares this thread). */
export function curl(args: string[], timeoutMs = 20000): Promise<CurlResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/curl', ['-sS', '--noproxy', '*', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => out.push(c));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr });
    });
  });
}
