// The pipeline's messages between the front end, the stage proxies and the workers.
//
//   into a stage (PUSH -> the stage's PULL):   [job] | [job head, data]
//   proxy -> worker (ROUTER -> DEALER):        [identity, job] | [identity, job head, data] | [identity, 'C', id]
//   worker -> proxy (DEALER -> ROUTER):        ['R', free slots] | ['D', id] (only for a job that sent
//                                              nothing: a result's arrival at the next intake or the
//                                              loopback gives the slot back)
//   worker -> front end (PUSH -> loopback PULL): [reply] | [reply head, body]
//
// A job is one frame: 'J', the data's kind ('b', 'j', 'v' or 'h'), the id's
// length in one byte, the request's id, then the data: 'Jj' + 0x0b +
// 'k1.xyz.3.0' + '{"n":97}'. A reply is one frame: 'Y', a flag ('-', or 'e'
// for a stage's error), the status in 3 digits, the stage's index in decimal,
// ':', the id's length in one byte, the id, the headers' length (4 bytes,
// big-endian), the headers (JSON), then the body. Every frame costs each hop
// an encode and a decode (and the receiver a Buffer), so a message is one
// frame; only data or a body of INLINE_MAX bytes and more goes in a second
// frame of its own (the head then ends after the id, or after the headers),
// which lib/zmq writes by reference instead of copying.
//
// Job data is a Buffer as it is ('b'), a plain value that JSON carries exactly
// ('j': objects, arrays, strings, finite numbers, booleans, null; cheaper than
// v8.serialize by several µs), any other structured value through v8.serialize
// ('v'), or the front end's HTTP request ('h': a 4-byte big-endian length, the
// head as method, URL, then each header's name and value as received, joined
// with LF (none of them can hold one), then the body's bytes), which the worker
// sees as { method, url, path, query, headers, body }.
import * as v8 from 'node:v8';

export const CANCEL = Buffer.from('C');
export const READY = Buffer.from('R');
export const DONE = Buffer.from('D');
const J = 0x4a;
const Y = 0x59;
const COLON = 0x3a;
export const KIND_BUFFER = 0x62; // 'b'
export const KIND_JSON = 0x6a; // 'j'
export const KIND_V8 = 0x76; // 'v'
export const KIND_HTTP = 0x68; // 'h'
/** Job data and reply bodies this large go in a frame of their own (lib/zmq writes those by reference). */
export const INLINE_MAX = 4096;
/** The longest id a message can carry (its length is one byte). */
export const ID_MAX = 255;

/** Is `f` a job's first frame ('J', a kind, ...)? */
export function isJobType(f: Buffer): boolean {
  return f.length >= 3 && f[0] === J;
}

/** Where a job frame's id ends (its data, if inline, starts there); -1 when the frame is not a job. */
export function jobIdEnd(f: Buffer): number {
  if (f.length < 3 || f[0] !== J) return -1;
  const end = 3 + f[2]!;
  return end <= f.length ? end : -1;
}

/** A job frame's id, as a string ('' when it is not a job). */
export function jobId(f: Buffer): string {
  const end = jobIdEnd(f);
  return end < 0 ? '' : f.toString('latin1', 3, end);
}

function checkIdLength(n: number): void {
  if (n > ID_MAX) throw new RangeError(`pipeline: an id of ${n} bytes (at most ${ID_MAX})`);
}

/**
 * Copies below this many bytes are made in JavaScript: for the few bytes of
 * an id, a small JSON text or a short body, a loop costs less than a native
 * call (and, for a string, than Buffer.write()'s argument checks).
 */
const SHORT_COPY = 64;

/** Writes the ASCII string `s` (s.length bytes) at `at`. */
function writeAscii(out: Buffer, s: string, at: number): void {
  const n = s.length;
  if (n < SHORT_COPY) {
    for (let i = 0; i < n; i++) out[at + i] = s.charCodeAt(i);
  } else {
    out.write(s, at, 'latin1');
  }
}

/** Writes `s` at `at` if it is ASCII; returns where it ends, or -1 (at the first other character). */
function putAscii(out: Buffer, s: string, at: number): number {
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c > 0x7f) return -1;
    out[at + i] = c;
  }
  return at + n;
}

/** Copies src[from, to) to out at `at`. */
function copyBytes(out: Buffer, at: number, src: Uint8Array, from: number, to: number): void {
  if (to - from < SHORT_COPY) {
    for (let i = from; i < to; i++) out[at++] = src[i]!;
  } else {
    out.set(src.subarray(from, to), at);
  }
}

/** Writes `v` at `at` as 4 bytes, big-endian (a length in a frame). */
function putU32(out: Buffer, at: number, v: number): void {
  out[at] = v >>> 24;
  out[at + 1] = (v >>> 16) & 0xff;
  out[at + 2] = (v >>> 8) & 0xff;
  out[at + 3] = v & 0xff;
}

/**
 * 'J', the kind, the id's length and the id (a latin1 string, or bytes
 * idFrom to idTo of a Buffer), at the start of `out`; returns where the data goes.
 */
function writeJobHead(out: Buffer, kind: number, id: Buffer | string, idFrom: number, idTo: number): number {
  out[0] = J;
  out[1] = kind;
  out[2] = idTo - idFrom;
  if (typeof id === 'string') writeAscii(out, id, 3);
  else copyBytes(out, 3, id, idFrom, idTo);
  return 3 + idTo - idFrom;
}

/** A job's frames: its head with the data (one frame), or the head and data of INLINE_MAX bytes or more. */
function jobOf(kind: number, id: Buffer | string, idFrom: number, idTo: number, data: Uint8Array): Buffer[] {
  const n = data.length;
  const idn = idTo - idFrom;
  if (n >= INLINE_MAX) {
    const h = Buffer.allocUnsafe(3 + idn);
    writeJobHead(h, kind, id, idFrom, idTo);
    return [h, Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, n)];
  }
  const out = Buffer.allocUnsafe(3 + idn + n);
  const at = writeJobHead(out, kind, id, idFrom, idTo);
  if (n > 0) copyBytes(out, at, data, 0, n);
  return [out];
}

/**
 * The frames of a job passing `data` on, for the request `id` (a latin1
 * string, or bytes idFrom to idTo of a Buffer, as in the frame of the job
 * that made it): a Buffer as it is, a plain value as JSON, anything else
 * through v8.serialize.
 */
export function jobFrames(id: Buffer | string, data: unknown, idFrom = 0, idTo = id.length): Buffer[] {
  checkIdLength(idTo - idFrom);
  if (data instanceof Uint8Array) return jobOf(KIND_BUFFER, id, idFrom, idTo, data);
  jsonBudget = 64;
  if (jsonExact(data)) {
    const s = JSON.stringify(data);
    if (s.length < SHORT_COPY) {
      // The JSON text written straight into the frame, no Buffer of its own,
      // and, when ASCII, without measuring it first.
      const out = Buffer.allocUnsafe(3 + idTo - idFrom + s.length);
      if (putAscii(out, s, writeJobHead(out, KIND_JSON, id, idFrom, idTo)) >= 0) return [out];
    }
    const n = Buffer.byteLength(s);
    if (n >= INLINE_MAX) return jobOf(KIND_JSON, id, idFrom, idTo, Buffer.from(s));
    const out = Buffer.allocUnsafe(3 + idTo - idFrom + n);
    const at = writeJobHead(out, KIND_JSON, id, idFrom, idTo);
    if (n === s.length) writeAscii(out, s, at);
    else out.write(s, at, 'utf8');
    return [out];
  }
  return jobOf(KIND_V8, id, idFrom, idTo, v8.serialize(data));
}

let jsonBudget = 0;

/** Is `v` a value JSON.parse(JSON.stringify(v)) gives back as it is? Looks at up to jsonBudget values. */
function jsonExact(v: unknown): boolean {
  if (--jsonBudget < 0) return false;
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(v) && !Object.is(v, -0);
    case 'object': {
      if (v === null) return true;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) if (!(i in v) || !jsonExact(v[i])) return false;
        return true;
      }
      const proto = Object.getPrototypeOf(v) as unknown;
      if (proto !== Object.prototype && proto !== null) return false;
      // (Symbol keys: JSON drops them, as v8.serialize would.)
      for (const k in v) {
        if (k === '__proto__' || !jsonExact((v as Record<string, unknown>)[k])) return false;
      }
      return true;
    }
    default:
      return false;
  }
}

/** The job the front end sends the first stage for an HTTP request. */
export interface HttpJob {
  method: string;
  url: string;
  path: string;
  query: Record<string, string>;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

/**
 * The first stage's job frame for an HTTP request `id` (latin1): `rawHeaders`
 * alternates names (as received) and values, as lib/http's parser gives them.
 * One frame, whatever the body's size: it is copied in once.
 */
export function httpJobFrame(id: string, method: string, url: string, rawHeaders: readonly string[], body: Buffer): Buffer {
  checkIdLength(id.length);
  // Mostly ASCII: the head's pieces are then copied in one by one, without
  // joining them into a string first; else (rare) as UTF-8.
  let len = method.length + 1 + url.length;
  for (let i = 0; i < rawHeaders.length; i++) len += 1 + rawHeaders[i]!.length;
  if (len < 4 * SHORT_COPY) {
    const at = 3 + id.length;
    const out = Buffer.allocUnsafe(at + 4 + len + body.length);
    let p = putAscii(out, method, at + 4);
    if (p >= 0) {
      out[p++] = 0x0a;
      p = putAscii(out, url, p);
      for (let i = 0; i < rawHeaders.length && p >= 0; i++) {
        out[p++] = 0x0a;
        p = putAscii(out, rawHeaders[i]!, p);
      }
      if (p >= 0) {
        writeJobHead(out, KIND_HTTP, id, 0, id.length);
        putU32(out, at, len);
        if (body.length > 0) body.copy(out, p);
        return out;
      }
    }
  }
  const head = rawHeaders.length === 0 ? `${method}\n${url}` : `${method}\n${url}\n${rawHeaders.join('\n')}`;
  const n = Buffer.byteLength(head);
  const at = 3 + id.length;
  const out = Buffer.allocUnsafe(at + 4 + n + body.length);
  writeJobHead(out, KIND_HTTP, id, 0, id.length);
  putU32(out, at, n);
  if (n === head.length) writeAscii(out, head, at + 4);
  else out.write(head, at + 4, 'utf8');
  if (body.length > 0) body.copy(out, at + 4 + n);
  return out;
}

/**
 * Header fields as an object keyed by lower-cased name, as lib/http's
 * req.headers has them: repeated fields joined with ', ' ('; ' for cookie),
 * set-cookie always an array.
 */
function joinFields(head: string, from: number): HttpJob['headers'] {
  const headers: Record<string, string | string[]> = {};
  // At least one field from `from` on: its name and value, each followed
  // by LF but the last value.
  const n = head.length;
  for (let i = from; i <= n;) {
    const nameEnd = head.indexOf('\n', i);
    if (nameEnd < 0) throw new Error('pipeline: a malformed HTTP job head');
    let valueEnd = head.indexOf('\n', nameEnd + 1);
    if (valueEnd < 0) valueEnd = n;
    const name = head.slice(i, nameEnd).toLowerCase();
    const value = head.slice(nameEnd + 1, valueEnd);
    i = valueEnd + 1;
    const prev = Object.prototype.hasOwnProperty.call(headers, name) ? headers[name] : undefined;
    let v: string | string[];
    if (prev === undefined) v = name === 'set-cookie' ? [value] : value;
    else if (Array.isArray(prev)) {
      prev.push(value);
      continue;
    } else v = prev + (name === 'cookie' ? '; ' : ', ') + value;
    if (name === '__proto__') Object.defineProperty(headers, name, { value: v, enumerable: true, writable: true, configurable: true });
    else headers[name] = v;
  }
  return headers;
}

/**
 * A query string as an object, as Object.fromEntries(new URLSearchParams(qs))
 * gives it (a repeated name keeps its last value). Names and values without
 * '%' or '+' are split by hand (URLSearchParams costs about 1 µs even for one
 * pair); anything else goes through URLSearchParams.
 */
export function parseQuery(qs: string): Record<string, string> {
  if (qs.indexOf('%') >= 0 || qs.indexOf('+') >= 0) return Object.fromEntries(new URLSearchParams(qs));
  const out: Record<string, string> = {};
  let i = 0;
  const n = qs.length;
  while (i <= n) {
    let amp = qs.indexOf('&', i);
    if (amp < 0) amp = n;
    if (amp > i) {
      const eq = qs.indexOf('=', i);
      const name = eq >= 0 && eq < amp ? qs.slice(i, eq) : qs.slice(i, amp);
      const value = eq >= 0 && eq < amp ? qs.slice(eq + 1, amp) : '';
      if (name === '__proto__') Object.defineProperty(out, name, { value, enumerable: true, writable: true, configurable: true });
      else out[name] = value;
    }
    i = amp + 1;
  }
  return out;
}

/** The body of every HTTP job without one (zero bytes: nothing to share). */
const NO_BODY = Buffer.alloc(0);

function decodeHttpJob(data: Buffer, from: number): HttpJob {
  const len = data.length;
  const n = len - from >= 4 ? data.readUInt32BE(from) : -1;
  if (n < 0 || from + 4 + n > len) throw new Error('pipeline: a truncated HTTP job');
  // Scanned with indexOf, not split(): a split of a new string costs
  // several times more.
  const head = data.toString('utf8', from + 4, from + 4 + n);
  const a = head.indexOf('\n');
  if (a < 0) throw new Error('pipeline: a malformed HTTP job head');
  let b = head.indexOf('\n', a + 1);
  if (b < 0) b = head.length;
  const url = head.slice(a + 1, b);
  const q = url.indexOf('?');
  return {
    method: head.slice(0, a), url, path: q < 0 ? url : url.slice(0, q),
    query: q < 0 ? {} : parseQuery(url.slice(q + 1)),
    headers: b < head.length ? joinFields(head, b + 1) : {},
    body: from + 4 + n === len ? NO_BODY : data.subarray(from + 4 + n),
  };
}

/**
 * A job's data: `f` is the job's first frame, `data` its second frame if it
 * has one (else the data follows the id in `f`).
 */
export function decodeJob(f: Buffer, data?: Buffer): unknown {
  const end = jobIdEnd(f);
  if (end < 0) throw new Error('pipeline: a malformed job frame');
  const d = data ?? f;
  const from = data === undefined ? end : 0;
  switch (f[1]) {
    case KIND_JSON: return JSON.parse(d.toString('utf8', from)) as unknown;
    case KIND_HTTP: return decodeHttpJob(d, from);
    case KIND_BUFFER: return from === 0 ? d : d.subarray(from);
    case KIND_V8: return v8.deserialize(from === 0 ? d : d.subarray(from));
  }
  throw new Error(`pipeline: unknown job data kind ${JSON.stringify(String.fromCharCode(f[1]!))}`);
}

export const FLAG_NONE = 0x2d; // '-'
export const FLAG_ERROR = 0x65; // 'e'

/** A reply head's start: 'Y', the flag, the status (100-599) in 3 digits, the stage's index and ':'. */
export function replyMeta(flag: number, status: number, stageIndex: number): Buffer {
  return Buffer.from(`Y${String.fromCharCode(flag)}${status}${stageIndex}:`, 'latin1');
}

const EMPTY = Buffer.alloc(0);

/**
 * A reply's frames: its start (replyMeta()), the id, the headers' JSON and
 * the body (Buffers as they are, strings in UTF-8, anything else as JSON),
 * in one frame, or with a body of INLINE_MAX bytes and more in a second one.
 */
export function replyFrames(meta: Buffer, id: Buffer, headers: Buffer, body: unknown, idFrom = 0, idTo = id.length): Buffer[] {
  checkIdLength(idTo - idFrom);
  let str: string | null = null;
  let bytes: Uint8Array = EMPTY;
  let n = 0;
  if (body === undefined || body === null) {
    // empty
  } else if (body instanceof Uint8Array) {
    bytes = body;
    n = body.length;
  } else {
    str = typeof body === 'string' ? body : JSON.stringify(body);
    n = Buffer.byteLength(str);
  }
  const m = meta.length;
  const idn = idTo - idFrom;
  const hn = headers.length;
  const second = n >= INLINE_MAX;
  const at = m + 1 + idn + 4 + hn;
  const out = Buffer.allocUnsafe(second ? at : at + n);
  for (let i = 0; i < m; i++) out[i] = meta[i]!;
  out[m] = idn;
  copyBytes(out, m + 1, id, idFrom, idTo);
  let p = m + 1 + idn;
  putU32(out, p, hn);
  p += 4;
  copyBytes(out, p, headers, 0, hn);
  if (second) {
    if (str !== null) return [out, Buffer.from(str)];
    return [out, Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, n)];
  }
  if (str !== null) {
    if (n === str.length) writeAscii(out, str, at);
    else out.write(str, at, 'utf8');
  } else {
    copyBytes(out, at, bytes, 0, n);
  }
  return [out];
}

/**
 * A reply head's status, or -1 when the frame does not start as a reply: 'Y',
 * a flag byte, 3 digits, 1 to 7 digits of the stage's index, ':'.
 */
export function replyStatus(m: Buffer): number {
  const n = m.length;
  if (n < 7 || m[0] !== Y) return -1;
  let status = 0;
  for (let i = 2; i < n; i++) {
    const c = m[i]!;
    if (c === COLON) return i >= 6 && i <= 12 ? status : -1;
    const d = c - 48;
    if (d < 0 || d > 9) return -1;
    if (i < 5) status = status * 10 + d;
  }
  return -1;
}

/** The stage index of a reply head replyStatus() accepted. */
export function replyStage(m: Buffer): number {
  let stage = 0;
  for (let i = 5; m[i] !== COLON; i++) stage = stage * 10 + m[i]! - 48;
  return stage;
}

/** Where the id's length byte is in a reply head replyStatus() accepted (after the colon). */
export function replyIdStart(m: Buffer): number {
  let i = 5;
  while (m[i] !== COLON) i++;
  return i + 1;
}

/**
 * The parts of a reply frame replyStatus() accepted, from the id's length
 * byte at `at` (replyIdStart()): the id's end, which is where the headers'
 * length starts, and the headers' end, which is where an inline body starts;
 * -1 when the frame is cut short.
 */
export function replyHeadersEnd(m: Buffer, at: number): number {
  const n = m.length;
  if (at >= n) return -1;
  const idEnd = at + 1 + m[at]!;
  if (idEnd + 4 > n) return -1;
  const hn = ((m[idEnd]! << 24) | (m[idEnd + 1]! << 16) | (m[idEnd + 2]! << 8) | m[idEnd + 3]!) >>> 0;
  const end = idEnd + 4 + hn;
  return end <= n ? end : -1;
}

/** The id of a reply frame replyStatus() accepted ('' when it is cut short). */
export function replyId(m: Buffer): string {
  const at = replyIdStart(m);
  if (at >= m.length || at + 1 + m[at]! > m.length) return '';
  return m.toString('latin1', at + 1, at + 1 + m[at]!);
}
