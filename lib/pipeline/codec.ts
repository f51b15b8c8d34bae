// The pipeline's messages between the front end, the stage proxies and the workers.
//
//   into a stage (PUSH -> the stage's PULL):   [job head, data]
//   proxy -> worker (ROUTER -> DEALER):        [identity, job head, data] | [identity, 'C', id]
//   worker -> proxy (DEALER -> ROUTER):        ['R', free slots] | ['D', id] (only for a job that sent
//                                              nothing: a result's arrival at the next intake or the
//                                              loopback gives the slot back)
//   worker -> front end (PUSH -> loopback PULL): [reply head, headers JSON, body]
//
// A job head is 'J', the data's kind ('b', 'j', 'v' or 'h') and the request's
// id, in one frame: 'Jj' + id. A reply head is 'Y', a flag ('-', or 'e' for a
// stage's error), the status in 3 digits, the stage's index in decimal, ':'
// and the id: 'Y-2001:' + id. Each message is one frame fewer than with the
// id in a frame of its own, which every hop pays for.
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
const KIND_BUFFER = Buffer.from('Jb');
const KIND_V8 = Buffer.from('Jv');
const KIND_HTTP = Buffer.from('Jh');
const KIND_JSON = Buffer.from('Jj');
const J = 0x4a;
const Y = 0x59;
const COLON = 0x3a;

/** Is `f` a job head ('J', a kind, then the id)? */
export function isJobType(f: Buffer): boolean {
  return f.length >= 2 && f[0] === J;
}

/** A job head: a job type frame ('Jj', as encodeData() gives it) and the id's bytes. */
export function jobHead(type: Buffer, id: Buffer): Buffer {
  const out = Buffer.allocUnsafe(2 + id.length);
  out[0] = type[0]!;
  out[1] = type[1]!;
  for (let i = 0; i < id.length; i++) out[2 + i] = id[i]!;
  return out;
}

/** A job head's id, as a string. */
export function jobId(head: Buffer): string {
  return head.toString('latin1', 2);
}

/** Is `v` a value JSON.parse(JSON.stringify(v)) gives back as it is? Looks at up to `budget` values. */
function jsonExact(v: unknown, budget: { n: number }): boolean {
  if (--budget.n < 0) return false;
  switch (typeof v) {
    case 'string':
    case 'boolean':
      return true;
    case 'number':
      return Number.isFinite(v) && !Object.is(v, -0);
    case 'object': {
      if (v === null) return true;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) if (!(i in v) || !jsonExact(v[i], budget)) return false;
        return true;
      }
      const proto = Object.getPrototypeOf(v) as unknown;
      if (proto !== Object.prototype && proto !== null) return false;
      if (Object.getOwnPropertySymbols(v).length > 0) return false;
      for (const k in v) {
        if (k === '__proto__' || !jsonExact((v as Record<string, unknown>)[k], budget)) return false;
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
 * The first stage's job for an HTTP request: `rawHeaders` alternates names (as
 * received) and values, as lib/http's parser gives them.
 */
export function encodeHttpJob(method: string, url: string, rawHeaders: readonly string[], body: Buffer): [Buffer, Buffer] {
  const head = rawHeaders.length === 0 ? `${method}\n${url}` : `${method}\n${url}\n${rawHeaders.join('\n')}`;
  const n = Buffer.byteLength(head);
  const out = Buffer.allocUnsafe(4 + n + body.length);
  out.writeUInt32BE(n, 0);
  out.write(head, 4, 'utf8');
  if (body.length > 0) body.copy(out, 4 + n);
  return [KIND_HTTP, out];
}

/**
 * Header fields as an object keyed by lower-cased name, as lib/http's
 * req.headers has them: repeated fields joined with ', ' ('; ' for cookie),
 * set-cookie always an array.
 */
function joinFields(parts: string[], from: number): HttpJob['headers'] {
  const headers: Record<string, string | string[]> = {};
  for (let i = from; i < parts.length; i += 2) {
    const name = parts[i]!.toLowerCase();
    const value = parts[i + 1]!;
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

function decodeHttpJob(data: Buffer): HttpJob {
  const n = data.length >= 4 ? data.readUInt32BE(0) : -1;
  if (n < 0 || 4 + n > data.length) throw new Error('pipeline: a truncated HTTP job');
  const parts = data.toString('utf8', 4, 4 + n).split('\n');
  if (parts.length < 2 || parts.length % 2 !== 0) throw new Error('pipeline: a malformed HTTP job head');
  const url = parts[1]!;
  const q = url.indexOf('?');
  return {
    method: parts[0]!, url, path: q < 0 ? url : url.slice(0, q),
    query: q < 0 ? {} : parseQuery(url.slice(q + 1)),
    headers: joinFields(parts, 2), body: data.subarray(4 + n),
  };
}

export function encodeData(data: unknown): [Buffer, Buffer] {
  if (Buffer.isBuffer(data)) return [KIND_BUFFER, data];
  if (data instanceof Uint8Array) return [KIND_BUFFER, Buffer.from(data.buffer, data.byteOffset, data.byteLength)];
  if (jsonExact(data, { n: 64 })) return [KIND_JSON, Buffer.from(JSON.stringify(data))];
  return [KIND_V8, v8.serialize(data)];
}

/** A job's data, from its job type frame (as encodeData() and encodeHttpJob() make it) and its bytes. */
export function decodeData(type: Buffer, data: Buffer): unknown {
  if (isJobType(type)) {
    switch (type[1]) {
      case 0x6a: return JSON.parse(data.toString('utf8')) as unknown;
      case 0x68: return decodeHttpJob(data);
      case 0x62: return data;
      case 0x76: return v8.deserialize(data);
    }
  }
  throw new Error(`pipeline: unknown job data kind ${JSON.stringify(type.toString('latin1'))}`);
}

/** A reply body as bytes: Buffers as they are, strings in UTF-8, anything else as JSON. */
export function bodyBytes(body: unknown): Buffer {
  if (body === undefined || body === null) return Buffer.alloc(0);
  if (Buffer.isBuffer(body)) return body;
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (typeof body === 'string') return Buffer.from(body);
  return Buffer.from(JSON.stringify(body));
}

export const FLAG_NONE = 0x2d; // '-'
export const FLAG_ERROR = 0x65; // 'e'

/** A reply head's start: 'Y', the flag, the status (100-599) in 3 digits, the stage's index and ':'. */
export function replyMeta(flag: number, status: number, stageIndex: number): Buffer {
  return Buffer.from(`Y${String.fromCharCode(flag)}${status}${stageIndex}:`, 'latin1');
}

/** A reply head: its start (replyMeta()) and the id's bytes. */
export function replyHead(meta: Buffer, id: Buffer): Buffer {
  const m = meta.length;
  const out = Buffer.allocUnsafe(m + id.length);
  for (let i = 0; i < m; i++) out[i] = meta[i]!;
  for (let i = 0; i < id.length; i++) out[m + i] = id[i]!;
  return out;
}

/**
 * A reply head's status, or -1 when the frame is not a reply head: 'Y', a
 * flag byte, 3 digits, 1 to 7 digits of the stage's index, ':', the id.
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

/** Where the id starts in a reply head replyStatus() accepted. */
export function replyIdStart(m: Buffer): number {
  let i = 5;
  while (m[i] !== COLON) i++;
  return i + 1;
}

/** The id of a reply head replyStatus() accepted. */
export function replyId(m: Buffer): string {
  return m.toString('latin1', m.indexOf(COLON, 5) + 1);
}
