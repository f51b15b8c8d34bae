// The pipeline's messages between the front end, the stage proxies and the workers.
//
//   into a stage (PUSH -> the stage's PULL):   ['J', id, kind, data]
//   proxy -> worker (ROUTER -> DEALER):        [identity, 'J', id, kind, data] | [identity, 'C', id]
//   worker -> proxy (DEALER -> ROUTER):        ['R', free slots] | ['D', id] (only for a job that sent
//                                              nothing: a result's arrival at the next intake or the
//                                              loopback gives the slot back)
//   worker -> front end (PUSH -> loopback PULL): ['Y', id, stage index, flags, status, headers JSON, body]
//
// Job data is a Buffer as it is ('b'), a plain value that JSON carries exactly
// ('j': objects, arrays, strings, finite numbers, booleans, null; cheaper than
// v8.serialize by several µs), any other structured value through v8.serialize
// ('v'), or the front end's HTTP request ('h': a 4-byte big-endian length, JSON
// [method, url, headers], then the body's bytes), which the worker sees as
// { method, url, path, query, headers, body }.
import * as v8 from 'node:v8';

export const JOB = Buffer.from('J');
export const CANCEL = Buffer.from('C');
export const READY = Buffer.from('R');
export const DONE = Buffer.from('D');
export const REPLY = Buffer.from('Y');
const KIND_BUFFER = Buffer.from('b');
const KIND_V8 = Buffer.from('v');
const KIND_HTTP = Buffer.from('h');
const KIND_JSON = Buffer.from('j');

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

export function encodeHttpJob(method: string, url: string, headers: unknown, body: Buffer): [Buffer, Buffer] {
  const head = JSON.stringify([method, url, headers]);
  const n = Buffer.byteLength(head);
  const out = Buffer.allocUnsafe(4 + n + body.length);
  out.writeUInt32BE(n, 0);
  out.write(head, 4, 'utf8');
  body.copy(out, 4 + n);
  return [KIND_HTTP, out];
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
  const head = JSON.parse(data.toString('utf8', 4, 4 + n)) as [string, string, HttpJob['headers']];
  const url = head[1];
  const q = url.indexOf('?');
  return {
    method: head[0], url, path: q < 0 ? url : url.slice(0, q),
    query: q < 0 ? {} : parseQuery(url.slice(q + 1)),
    headers: head[2], body: data.subarray(4 + n),
  };
}

export function encodeData(data: unknown): [Buffer, Buffer] {
  if (Buffer.isBuffer(data)) return [KIND_BUFFER, data];
  if (data instanceof Uint8Array) return [KIND_BUFFER, Buffer.from(data.buffer, data.byteOffset, data.byteLength)];
  if (jsonExact(data, { n: 64 })) return [KIND_JSON, Buffer.from(JSON.stringify(data))];
  return [KIND_V8, v8.serialize(data)];
}

export function decodeData(kind: Buffer, data: Buffer): unknown {
  if (kind.length === 1 && kind[0] === 0x62) return data;
  if (kind.length === 1 && kind[0] === 0x76) return v8.deserialize(data);
  if (kind.length === 1 && kind[0] === 0x68) return decodeHttpJob(data);
  if (kind.length === 1 && kind[0] === 0x6a) return JSON.parse(data.toString('utf8')) as unknown;
  throw new Error(`pipeline: unknown job data kind ${JSON.stringify(kind.toString('latin1'))}`);
}

/** A reply body as bytes: Buffers as they are, strings in UTF-8, anything else as JSON. */
export function bodyBytes(body: unknown): Buffer {
  if (body === undefined || body === null) return Buffer.alloc(0);
  if (Buffer.isBuffer(body)) return body;
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (typeof body === 'string') return Buffer.from(body);
  return Buffer.from(JSON.stringify(body));
}

export const FLAG_NONE = Buffer.from('-');
export const FLAG_ERROR = Buffer.from('e');
