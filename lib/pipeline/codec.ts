// The pipeline's messages between the front end, the stage proxies and the workers.
//
//   into a stage (PUSH -> the stage's PULL):   ['J', id, kind, data]
//   proxy -> worker (ROUTER -> DEALER):        [identity, 'J', id, kind, data] | [identity, 'C', id]
//   worker -> proxy (DEALER -> ROUTER):        ['R', free slots] | ['D', id]
//   worker -> front end (PUSH -> loopback PULL): ['Y', id, stage index, flags, status, headers JSON, body]
//
// Job data is a Buffer as it is ('b'), or any structured value through v8.serialize ('v').
import * as v8 from 'node:v8';

export const JOB = Buffer.from('J');
export const CANCEL = Buffer.from('C');
export const READY = Buffer.from('R');
export const DONE = Buffer.from('D');
export const REPLY = Buffer.from('Y');
const KIND_BUFFER = Buffer.from('b');
const KIND_V8 = Buffer.from('v');

export function encodeData(data: unknown): [Buffer, Buffer] {
  if (Buffer.isBuffer(data)) return [KIND_BUFFER, data];
  if (data instanceof Uint8Array) return [KIND_BUFFER, Buffer.from(data.buffer, data.byteOffset, data.byteLength)];
  return [KIND_V8, v8.serialize(data)];
}

export function decodeData(kind: Buffer, data: Buffer): unknown {
  if (kind.length === 1 && kind[0] === 0x62) return data;
  if (kind.length === 1 && kind[0] === 0x76) return v8.deserialize(data);
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
