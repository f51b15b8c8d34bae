// protocol.ts -- the PROXY protocol, versions 1 and 2: the header a proxy
// sends ahead of a connection's own bytes to tell the server behind it who the
// client is and whom the client was talking to.
//
// Version 1 is one line of text ("PROXY TCP4 1.2.3.4 5.6.7.8 1234 443\r\n", at
// most 107 bytes); version 2 is binary: a 12-byte signature, a version and
// command byte, an address family and transport byte, a 16-bit length, then an
// address block and optional TLVs (type, 16-bit length, value).
//
// parseProxyHeader() is incremental but stateless: it is given everything
// received so far and either asks for more, returns the header and how many
// bytes it took, or throws a ProxyProtocolError. A header that cannot become
// valid is rejected as soon as its bytes show it (an HTTP request is refused at
// its first byte), and never later than its end; the error does not depend on
// how the bytes were split. Both versions are bounded (107 bytes, 16 + 65535
// bytes), and the TLV section is further capped by maxTlvBytes so that a peer
// cannot make a receiver buffer 64 KiB before it has proved anything.
//
// The encoders validate their input and throw argument errors (TypeError or
// RangeError with a node-style code) rather than emit a header a strict
// receiver would refuse.
import { isIP } from 'node:net';
import { badPort, invalidArgType, invalidArgValue, outOfRange } from '../errors';

/**
 * The address family, named as in version 1: tcp4 is IPv4 and tcp6 IPv6
 * whatever the transport (see `protocol`), unix a pair of socket paths, unknown
 * no addresses at all.
 */
export type ProxyFamily = 'tcp4' | 'tcp6' | 'unix' | 'unknown';

/** The transport: 'stream' (TCP, SOCK_STREAM) or 'dgram' (UDP, SOCK_DGRAM). */
export type ProxyTransport = 'stream' | 'dgram';

/** A version 2 type-length-value extension. */
export interface ProxyTlv {
  type: number;
  value: Buffer;
}

/** A parsed header. */
export interface ProxyHeader {
  version: 1 | 2;
  /**
   * 'proxy': the addresses are the client's. 'local': the proxy opened the
   * connection itself (a health check); use the connection's own endpoints.
   */
  command: 'proxy' | 'local';
  /** 'unknown' for version 1 UNKNOWN, version 2 AF_UNSPEC, and every LOCAL header. */
  family: ProxyFamily;
  /** undefined when the family is 'unknown'. */
  protocol: ProxyTransport | undefined;
  /** IP address in canonical form (IPv6 per RFC 5952), or a unix socket path; undefined for 'unknown'. */
  sourceAddress: string | undefined;
  /** undefined for 'unix' and 'unknown'. */
  sourcePort: number | undefined;
  destinationAddress: string | undefined;
  destinationPort: number | undefined;
  /** Version 2 TLVs in order of appearance (the values are copies); always empty for version 1. */
  tlvs: ProxyTlv[];
}

/**
 * What to encode. A parsed ProxyHeader is accepted as is. For 'tcp4' and
 * 'tcp6' the four address fields are required, for 'unix' the two paths, for
 * 'unknown' none; with `command: 'local'` only `tlvs` is used.
 */
export interface ProxyInfo {
  /** Default 'proxy'. Version 1 has no LOCAL: send family 'unknown' instead. */
  command?: 'proxy' | 'local';
  family?: ProxyFamily;
  /** Version 2 only; default 'stream' (version 1 can only say TCP). */
  protocol?: ProxyTransport;
  sourceAddress?: string;
  sourcePort?: number;
  destinationAddress?: string;
  destinationPort?: number;
  /** Version 2 only. */
  tlvs?: readonly ProxyTlv[];
}

export interface ProxyParseOptions {
  /** Accept version 1 headers. Default true. */
  allowV1?: boolean;
  /** Accept version 2 headers. Default true. */
  allowV2?: boolean;
  /**
   * Most bytes of version 2 TLVs accepted, beyond the address block; a header
   * announcing more is refused before its body is awaited. Default 4096,
   * at most 65535.
   */
  maxTlvBytes?: number;
}

export interface ProxyEncodeOptions {
  /**
   * Add a CRC32C TLV when `tlvs` has none. A CRC32C TLV already in `tlvs` is
   * filled in with the right checksum whatever this says, so re-encoding a
   * parsed header that carried one reproduces it.
   */
  crc?: boolean;
}

export type ProxyParseResult =
  | { done: false }
  | { done: true; header: ProxyHeader; consumed: number };

/** The peer sent something that is not a valid header (or one over the configured limits). */
export class ProxyProtocolError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'ProxyProtocolError';
    this.code = code;
  }
}

/** TLV types defined by the specification. */
export const PP2_TYPE = Object.freeze({
  ALPN: 0x01,
  AUTHORITY: 0x02,
  CRC32C: 0x03,
  NOOP: 0x04,
  UNIQUE_ID: 0x05,
  SSL: 0x20,
  SSL_VERSION: 0x21,
  SSL_CN: 0x22,
  SSL_CIPHER: 0x23,
  SSL_SIG_ALG: 0x24,
  SSL_KEY_ALG: 0x25,
  NETNS: 0x30,
});

/** The longest version 1 header, CRLF included. */
export const V1_MAX_LENGTH = 107;
/** The fixed part of a version 2 header: signature, version/command, family, length. */
export const V2_HEADER_LENGTH = 16;
export const DEFAULT_MAX_TLV_BYTES = 4096;

const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const CR = 13;
const LF = 10;
const NEED_MORE: ProxyParseResult = Object.freeze({ done: false });

const INVALID = 'ERR_PROXY_PROTOCOL_INVALID';
const TOO_LARGE = 'ERR_PROXY_PROTOCOL_TOO_LARGE';

// Version 2 address blocks: two IPv4 addresses and two ports, two IPv6
// addresses and two ports, two 108-byte socket paths (sun_path's size).
const INET_BLOCK = 12;
const INET6_BLOCK = 36;
const UNIX_PATH = 108;
const UNIX_BLOCK = 2 * UNIX_PATH;
// The spec caps PP2_TYPE_UNIQUE_ID at 128 bytes.
const MAX_UNIQUE_ID = 128;

function invalid(message: string): ProxyProtocolError {
  return new ProxyProtocolError(INVALID, `Invalid PROXY protocol header: ${message}`);
}

/** A peer-supplied string for an error message: quoted, escaped, truncated. */
function show(s: string): string {
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 37)}...` : s);
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(2, '0')}`;
}

// ---- CRC32C (Castagnoli) -----------------------------------------------------

// Reflected polynomial 0x1EDC6F41, one table entry per byte value.
const CRC32C_TABLE = new Uint32Array(256);
for (let n = 0; n < 256; n++) {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
  CRC32C_TABLE[n] = c >>> 0;
}

/**
 * CRC32C of data, as an unsigned 32-bit number. Pass the result for one piece
 * as `previous` to continue over the next: crc32c(b, crc32c(a)) equals the CRC
 * of a followed by b.
 */
export function crc32c(data: Uint8Array, previous = 0): number {
  let crc = ~previous;
  for (let i = 0; i < data.length; i++) crc = CRC32C_TABLE[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8);
  return ~crc >>> 0;
}

const ZERO4 = new Uint8Array(4);

/** The CRC of header[0..end) with the 4 bytes at `at` read as zeros, which is how the checksum is defined. */
function headerCrc(header: Buffer, at: number, end: number): number {
  let crc = crc32c(header.subarray(0, at));
  crc = crc32c(ZERO4, crc);
  return crc32c(header.subarray(at + 4, end), crc);
}

// ---- addresses ----------------------------------------------------------------

// A dotted quad with no leading zeros: "010.0.0.1" means octal to some
// parsers and decimal to others, so it is refused rather than guessed.
const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const IPV4 = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);
const HEX_GROUP = /^[0-9A-Fa-f]{1,4}$/;
const PORT = /^(?:0|[1-9][0-9]{0,4})$/;

function parseIPv4(s: string): number[] | null {
  if (!IPV4.test(s)) return null;
  return s.split('.').map(Number);
}

/** 16-bit groups of one side of an IPv6 address; the last group may be a dotted quad when `v4Tail`. */
function ipv6Groups(text: string, v4Tail: boolean): number[] | null {
  if (text === '') return [];
  const parts = text.split(':');
  const words: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (v4Tail && i === parts.length - 1 && p.includes('.')) {
      const q = parseIPv4(p);
      if (q === null) return null;
      words.push((q[0]! << 8) | q[1]!, (q[2]! << 8) | q[3]!);
    } else {
      if (!HEX_GROUP.test(p)) return null;
      words.push(parseInt(p, 16));
    }
  }
  return words;
}

/**
 * The 16 bytes of an IPv6 address in text form, or null. Zone indices ("%eth0")
 * are refused: they mean nothing to the receiving host.
 */
function parseIPv6(s: string): Buffer | null {
  if (isIP(s) !== 6 || s.includes('%')) return null;
  const gap = s.indexOf('::');
  let words: number[];
  if (gap < 0) {
    const all = ipv6Groups(s, true);
    if (all === null || all.length !== 8) return null;
    words = all;
  } else {
    if (s.indexOf('::', gap + 1) >= 0) return null;
    const head = ipv6Groups(s.slice(0, gap), false);
    const tail = ipv6Groups(s.slice(gap + 2), true);
    if (head === null || tail === null || head.length + tail.length > 7) return null;
    words = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  }
  const out = Buffer.alloc(16);
  for (let i = 0; i < 8; i++) out.writeUInt16BE(words[i]!, i * 2);
  return out;
}

function formatIPv4(b: Buffer, at: number): string {
  return `${b[at]}.${b[at + 1]}.${b[at + 2]}.${b[at + 3]}`;
}

/**
 * RFC 5952 text of the IPv6 address at b[at..at+16): lower-case hex without
 * leading zeros, the longest run (the first of equals) of two or more zero
 * groups as "::", and IPv4-mapped addresses as ::ffff:a.b.c.d the way node
 * reports them for dual-stack sockets.
 */
function formatIPv6(b: Buffer, at: number): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push(b.readUInt16BE(at + i * 2));
  if (w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 0 && w[4] === 0 && w[5] === 0xffff) {
    return `::ffff:${formatIPv4(b, at + 12)}`;
  }
  let bestStart = -1;
  let bestLen = 1; // a single zero group is never shortened
  for (let i = 0; i < 8;) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hexOf = (ws: number[]): string => ws.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hexOf(w);
  return `${hexOf(w.slice(0, bestStart))}::${hexOf(w.slice(bestStart + bestLen))}`;
}

/** The canonical text of a v1 address field, or null if it is not one of `family`. */
function canonicalAddress(family: 'tcp4' | 'tcp6', s: string): string | null {
  if (family === 'tcp4') return parseIPv4(s) === null ? null : s;
  const b = parseIPv6(s);
  return b === null ? null : formatIPv6(b, 0);
}

// ---- parsing ----------------------------------------------------------------------

/**
 * Parses the PROXY protocol header at the start of buf, which holds everything
 * the connection has received so far. Returns { done: false } while the bytes
 * are a valid beginning of a header (call again when more have arrived), or the
 * header and the number of bytes it took (what follows is the connection's own
 * data). Throws ProxyProtocolError for anything else; the connection is then
 * to be closed.
 */
export function parseProxyHeader(buf: Buffer, opts: ProxyParseOptions = {}): ProxyParseResult {
  if (!Buffer.isBuffer(buf)) throw invalidArgType('buf', 'an instance of Buffer', buf);
  if (opts === null || typeof opts !== 'object') throw invalidArgType('opts', 'of type object', opts);
  const allowV1 = opts.allowV1 ?? true;
  const allowV2 = opts.allowV2 ?? true;
  const maxTlvBytes = opts.maxTlvBytes ?? DEFAULT_MAX_TLV_BYTES;
  if (typeof allowV1 !== 'boolean') throw invalidArgType('opts.allowV1', 'of type boolean', allowV1);
  if (typeof allowV2 !== 'boolean') throw invalidArgType('opts.allowV2', 'of type boolean', allowV2);
  if (!allowV1 && !allowV2) throw invalidArgValue('opts', opts, 'must allow at least one version');
  if (!Number.isInteger(maxTlvBytes) || maxTlvBytes < 0 || maxTlvBytes > 0xffff) {
    throw outOfRange('opts.maxTlvBytes', 'an integer >= 0 and <= 65535', maxTlvBytes);
  }

  if (buf.length === 0) return NEED_MORE;
  // A disabled version is treated as an unknown signature, so that whether a
  // header is refused never depends on how much of it has arrived.
  if (allowV1 && startsLike(buf, V1_PREFIX)) return parseV1(buf);
  if (allowV2 && startsLike(buf, V2_SIGNATURE)) return parseV2(buf, maxTlvBytes);
  const which = allowV1 && allowV2 ? 'version 1 or 2' : allowV1 ? 'version 1' : 'version 2';
  throw invalid(`bad signature (expected a ${which} header)`);
}

/** True if buf and sig agree on their common length. */
function startsLike(buf: Buffer, sig: Buffer): boolean {
  const n = Math.min(buf.length, sig.length);
  return buf.compare(sig, 0, n, 0, n) === 0;
}

// Version 1 ------------------------------------------------------------------------

const V1_PROTOCOLS = ['TCP4', 'TCP6', 'UNKNOWN'] as const;
const V1_UNKNOWN_PROTOCOL = 'unknown protocol in version 1 header (expected TCP4, TCP6 or UNKNOWN)';
// Every byte of a TCP4 or TCP6 line after the protocol: digits, hex, dots,
// colons, and the spaces between fields.
const V1_NOT_ADDRESS_BYTE = /[^0-9A-Fa-f.: ]/;

/**
 * Refuses the text after "PROXY " (up to the first CR, LF or the length limit)
 * if no valid line starts with it. Only errors that a longer text would raise
 * in the same words belong here, which keeps the outcome split-independent.
 */
function checkV1Start(text: string): void {
  for (const proto of V1_PROTOCOLS) {
    if (proto.startsWith(text)) return;
    if (!text.startsWith(proto)) continue;
    const rest = text.slice(proto.length);
    if (rest.charCodeAt(0) !== 32) throw invalid(`no space after the protocol ${proto} in version 1 header`);
    if (proto === 'UNKNOWN') return; // the spec says to ignore whatever follows
    const bad = rest.search(V1_NOT_ADDRESS_BYTE);
    if (bad >= 0) throw invalid(`unexpected byte ${hex(rest.charCodeAt(bad))} in version 1 ${proto} header`);
    return;
  }
  throw invalid(V1_UNKNOWN_PROTOCOL);
}

function parseV1(buf: Buffer): ProxyParseResult {
  const limit = Math.min(buf.length, V1_MAX_LENGTH);
  let end = V1_PREFIX.length;
  while (end < limit && buf[end] !== CR && buf[end] !== LF) end++;
  if (buf.length <= V1_PREFIX.length) return NEED_MORE;
  const text = buf.toString('latin1', V1_PREFIX.length, end);
  checkV1Start(text);
  if (end === limit) {
    if (buf.length >= V1_MAX_LENGTH) throw invalid(`version 1 header without CRLF in its first ${V1_MAX_LENGTH} bytes`);
    return NEED_MORE;
  }
  if (buf[end] === LF) throw invalid('bare LF in version 1 header');
  // The line, CRLF included, must fit in V1_MAX_LENGTH bytes.
  if (end + 2 > V1_MAX_LENGTH) throw invalid(`version 1 header without CRLF in its first ${V1_MAX_LENGTH} bytes`);
  if (end + 1 === buf.length) return NEED_MORE;
  if (buf[end + 1] !== LF) throw invalid('CR not followed by LF in version 1 header');
  return { done: true, header: parseV1Line(text), consumed: end + 2 };
}

/** The header of a complete version 1 line (the text between "PROXY " and CRLF). */
function parseV1Line(text: string): ProxyHeader {
  if (text === 'UNKNOWN' || text.startsWith('UNKNOWN ')) return unknownHeader(1, 'proxy', []);
  const fields = text.split(' ');
  const proto = fields[0];
  // checkV1Start let through any beginning of a protocol name ("TCP", "UNK").
  if (proto !== 'TCP4' && proto !== 'TCP6') throw invalid(V1_UNKNOWN_PROTOCOL);
  if (fields.length !== 5) {
    throw invalid(`version 1 ${proto} header has ${fields.length - 1} fields separated by spaces, not 4`);
  }
  const family = proto === 'TCP4' ? 'tcp4' : 'tcp6';
  const [, src, dst, sport, dport] = fields as [string, string, string, string, string];
  const kind = family === 'tcp4' ? 'IPv4' : 'IPv6';
  const sourceAddress = canonicalAddress(family, src);
  if (sourceAddress === null) throw invalid(`source address ${show(src)} is not a valid ${kind} address`);
  const destinationAddress = canonicalAddress(family, dst);
  if (destinationAddress === null) throw invalid(`destination address ${show(dst)} is not a valid ${kind} address`);
  return {
    version: 1,
    command: 'proxy',
    family,
    protocol: 'stream',
    sourceAddress,
    sourcePort: parseV1Port('source', sport),
    destinationAddress,
    destinationPort: parseV1Port('destination', dport),
    tlvs: [],
  };
}

function parseV1Port(which: string, s: string): number {
  const n = PORT.test(s) ? Number(s) : -1;
  if (n < 0 || n > 0xffff) throw invalid(`${which} port ${show(s)} is not a decimal number from 0 to 65535`);
  return n;
}

function unknownHeader(version: 1 | 2, command: 'proxy' | 'local', tlvs: ProxyTlv[]): ProxyHeader {
  return {
    version,
    command,
    family: 'unknown',
    protocol: undefined,
    sourceAddress: undefined,
    sourcePort: undefined,
    destinationAddress: undefined,
    destinationPort: undefined,
    tlvs,
  };
}

// Version 2 ------------------------------------------------------------------------

/** The meaning of a version 2 family byte and the size of its address block. */
interface FamilyByte {
  family: ProxyFamily;
  protocol: ProxyTransport | undefined;
  block: number;
}

/** Decodes byte 13; only the seven combinations the spec defines are accepted. */
function familyByte(b: number): FamilyByte {
  const fam = b >> 4;
  const proto = b & 0x0f;
  if (fam > 3) throw invalid(`unknown address family ${fam} in family byte ${hex(b)}`);
  if (proto > 2) throw invalid(`unknown transport protocol ${proto} in family byte ${hex(b)}`);
  if ((fam === 0) !== (proto === 0)) {
    throw invalid(`family byte ${hex(b)} mixes an unspecified and a specified half`);
  }
  const protocol = proto === 1 ? 'stream' : proto === 2 ? 'dgram' : undefined;
  switch (fam) {
    case 1: return { family: 'tcp4', protocol, block: INET_BLOCK };
    case 2: return { family: 'tcp6', protocol, block: INET6_BLOCK };
    case 3: return { family: 'unix', protocol, block: UNIX_BLOCK };
    default: return { family: 'unknown', protocol: undefined, block: 0 };
  }
}

function parseV2(buf: Buffer, maxTlvBytes: number): ProxyParseResult {
  // Each fixed byte is checked as soon as it is there.
  if (buf.length <= 12) return NEED_MORE;
  const verCmd = buf[12]!;
  if (verCmd >> 4 !== 2) throw invalid(`unsupported version ${verCmd >> 4} in version/command byte ${hex(verCmd)}`);
  const cmd = verCmd & 0x0f;
  if (cmd > 1) throw invalid(`unknown command ${cmd} in version/command byte ${hex(verCmd)} (expected LOCAL or PROXY)`);
  if (buf.length <= 13) return NEED_MORE;
  const fam = familyByte(buf[13]!);
  if (buf.length < V2_HEADER_LENGTH) return NEED_MORE;
  const len = buf.readUInt16BE(14);
  if (len < fam.block) {
    throw invalid(`length ${len} is shorter than the ${fam.block}-byte ${fam.family} address block`);
  }
  if (len - fam.block > maxTlvBytes) {
    throw new ProxyProtocolError(TOO_LARGE,
      `PROXY protocol header too large: ${len - fam.block} bytes of TLVs, more than the ${maxTlvBytes} allowed`);
  }
  const total = V2_HEADER_LENGTH + len;
  if (buf.length < total) return NEED_MORE;

  const tlvs = parseTlvs(buf, V2_HEADER_LENGTH + fam.block, total);
  // LOCAL: the spec says to discard the address block, family included.
  if (cmd === 0) return { done: true, header: unknownHeader(2, 'local', tlvs), consumed: total };
  if (fam.family === 'unknown') return { done: true, header: unknownHeader(2, 'proxy', tlvs), consumed: total };
  const a = V2_HEADER_LENGTH;
  const header: ProxyHeader = {
    version: 2,
    command: 'proxy',
    family: fam.family,
    protocol: fam.protocol,
    sourceAddress: undefined,
    sourcePort: undefined,
    destinationAddress: undefined,
    destinationPort: undefined,
    tlvs,
  };
  if (fam.family === 'tcp4') {
    header.sourceAddress = formatIPv4(buf, a);
    header.destinationAddress = formatIPv4(buf, a + 4);
    header.sourcePort = buf.readUInt16BE(a + 8);
    header.destinationPort = buf.readUInt16BE(a + 10);
  } else if (fam.family === 'tcp6') {
    header.sourceAddress = formatIPv6(buf, a);
    header.destinationAddress = formatIPv6(buf, a + 16);
    header.sourcePort = buf.readUInt16BE(a + 32);
    header.destinationPort = buf.readUInt16BE(a + 34);
  } else {
    header.sourceAddress = unixPath(buf, a);
    header.destinationAddress = unixPath(buf, a + UNIX_PATH);
  }
  return { done: true, header, consumed: total };
}

/** A socket path field: up to its first NUL, or all 108 bytes if it has none. */
function unixPath(buf: Buffer, at: number): string {
  let end = at;
  while (end < at + UNIX_PATH && buf[end] !== 0) end++;
  return buf.toString('utf8', at, end);
}

/** The TLVs in buf[from..end), which they must fill exactly; verifies a CRC32C TLV. */
function parseTlvs(buf: Buffer, from: number, end: number): ProxyTlv[] {
  const tlvs: ProxyTlv[] = [];
  let crcAt = -1;
  let pos = from;
  while (pos < end) {
    if (end - pos < 3) throw invalid(`${end - pos} stray bytes after the last TLV (a TLV needs at least 3)`);
    const type = buf[pos]!;
    const length = buf.readUInt16BE(pos + 1);
    const start = pos + 3;
    if (length > end - start) {
      throw invalid(`TLV ${hex(type)} claims ${length} bytes but only ${end - start} remain in the header`);
    }
    if (type === PP2_TYPE.CRC32C) {
      if (length !== 4) throw invalid(`CRC32C TLV of ${length} bytes (must be 4)`);
      if (crcAt >= 0) throw invalid('more than one CRC32C TLV');
      crcAt = start;
    } else if (type === PP2_TYPE.UNIQUE_ID && length > MAX_UNIQUE_ID) {
      throw invalid(`UNIQUE_ID TLV of ${length} bytes (at most ${MAX_UNIQUE_ID})`);
    }
    // A copy: buf is often a read buffer about to be reused.
    tlvs.push({ type, value: Buffer.from(buf.subarray(start, start + length)) });
    pos = start + length;
  }
  if (crcAt >= 0) {
    const want = buf.readUInt32BE(crcAt);
    const got = headerCrc(buf, crcAt, end);
    if (want !== got) throw invalid(`CRC32C mismatch (header says ${hex(want)}, computed ${hex(got)})`);
  }
  return tlvs;
}

// ---- encoding -------------------------------------------------------------------

function checkInfo(info: unknown): asserts info is ProxyInfo {
  if (info === null || typeof info !== 'object') throw invalidArgType('info', 'of type object', info);
}

function checkCommand(info: ProxyInfo): 'proxy' | 'local' {
  const c = info.command ?? 'proxy';
  if (c !== 'proxy' && c !== 'local') throw invalidArgValue('info.command', c, "must be 'proxy' or 'local'");
  return c;
}

function checkFamily(info: ProxyInfo): ProxyFamily {
  const f = info.family;
  if (f !== 'tcp4' && f !== 'tcp6' && f !== 'unix' && f !== 'unknown') {
    throw invalidArgValue('info.family', f, "must be 'tcp4', 'tcp6', 'unix' or 'unknown'");
  }
  return f;
}

function checkPort(name: string, port: unknown): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 0xffff) throw badPort(name, port);
  return port;
}

function checkIp(name: string, family: 'tcp4' | 'tcp6', value: unknown): string {
  if (typeof value !== 'string') throw invalidArgType(name, 'of type string', value);
  const s = canonicalAddress(family, value);
  if (s === null) {
    throw invalidArgValue(name, value, `must be an ${family === 'tcp4' ? 'IPv4' : 'IPv6'} address`);
  }
  return s;
}

/** Encodes a version 1 header. */
export function encodeV1(info: ProxyInfo): Buffer {
  checkInfo(info);
  if (checkCommand(info) === 'local') {
    throw invalidArgValue('info.command', info.command, "cannot be 'local' in version 1 (send family 'unknown')");
  }
  if (info.tlvs !== undefined && info.tlvs.length > 0) {
    throw invalidArgValue('info.tlvs', info.tlvs, 'are not supported by version 1');
  }
  const family = checkFamily(info);
  if (family === 'unknown') return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  if (family === 'unix') throw invalidArgValue('info.family', family, 'is not supported by version 1');
  if (info.protocol !== undefined && info.protocol !== 'stream') {
    throw invalidArgValue('info.protocol', info.protocol, "must be 'stream' in version 1");
  }
  const src = checkIp('info.sourceAddress', family, info.sourceAddress);
  const dst = checkIp('info.destinationAddress', family, info.destinationAddress);
  const sport = checkPort('info.sourcePort', info.sourcePort);
  const dport = checkPort('info.destinationPort', info.destinationPort);
  return Buffer.from(`PROXY ${family === 'tcp4' ? 'TCP4' : 'TCP6'} ${src} ${dst} ${sport} ${dport}\r\n`, 'latin1');
}

function checkTlvs(tlvs: unknown): readonly ProxyTlv[] {
  if (tlvs === undefined) return [];
  if (!Array.isArray(tlvs)) throw invalidArgType('info.tlvs', 'an array', tlvs);
  tlvs.forEach((tlv: unknown, i) => {
    const name = `info.tlvs[${i}]`;
    if (tlv === null || typeof tlv !== 'object') throw invalidArgType(name, 'of type object', tlv);
    const { type, value } = tlv as Partial<ProxyTlv>;
    if (typeof type !== 'number' || !Number.isInteger(type) || type < 0 || type > 0xff) {
      throw outOfRange(`${name}.type`, 'an integer >= 0 and <= 255', type);
    }
    if (!Buffer.isBuffer(value)) throw invalidArgType(`${name}.value`, 'an instance of Buffer', value);
    if (type === PP2_TYPE.CRC32C && value.length !== 4) throw invalidArgValue(`${name}.value`, value, 'must be 4 bytes for a CRC32C TLV');
  });
  return tlvs as readonly ProxyTlv[];
}

function unixPathBytes(name: string, value: unknown): Buffer {
  if (typeof value !== 'string') throw invalidArgType(name, 'of type string', value);
  // A NUL would end the path early on the other side (and abstract socket
  // names, which start with one, cannot be told from an empty path).
  if (value.includes('\0')) throw invalidArgValue(name, value, 'must not contain NUL');
  const b = Buffer.from(value, 'utf8');
  if (b.length > UNIX_PATH) throw invalidArgValue(name, value, `must be at most ${UNIX_PATH} bytes`);
  return b;
}

/**
 * Encodes a version 2 header. `{ crc: true }` adds a CRC32C TLV (after the
 * others) so that the receiver can check the header arrived intact.
 */
export function encodeV2(info: ProxyInfo, opts: ProxyEncodeOptions = {}): Buffer {
  checkInfo(info);
  if (opts === null || typeof opts !== 'object') throw invalidArgType('opts', 'of type object', opts);
  const command = checkCommand(info);
  const tlvs = [...checkTlvs(info.tlvs)];
  const crcCount = tlvs.filter((t) => t.type === PP2_TYPE.CRC32C).length;
  if (crcCount > 1) throw invalidArgValue('info.tlvs', info.tlvs, 'must not hold more than one CRC32C TLV');
  if (crcCount === 0 && opts.crc === true) tlvs.push({ type: PP2_TYPE.CRC32C, value: Buffer.alloc(4) });

  // The family byte and the address block.
  let famByte = 0x00;
  let block = Buffer.alloc(0);
  if (command === 'proxy') {
    const family = checkFamily(info);
    const protocol = info.protocol ?? (family === 'unknown' ? undefined : 'stream');
    if (family === 'unknown') {
      if (protocol !== undefined) {
        throw invalidArgValue('info.protocol', protocol, "must be undefined for family 'unknown'");
      }
    } else if (protocol !== 'stream' && protocol !== 'dgram') {
      throw invalidArgValue('info.protocol', protocol, "must be 'stream' or 'dgram'");
    }
    const proto = protocol === 'stream' ? 1 : protocol === 'dgram' ? 2 : 0;
    if (family === 'tcp4' || family === 'tcp6') {
      const src = checkIp('info.sourceAddress', family, info.sourceAddress);
      const dst = checkIp('info.destinationAddress', family, info.destinationAddress);
      const sport = checkPort('info.sourcePort', info.sourcePort);
      const dport = checkPort('info.destinationPort', info.destinationPort);
      const ab = family === 'tcp4' ? 4 : 16;
      block = Buffer.alloc(2 * ab + 4);
      if (family === 'tcp4') {
        Buffer.from(parseIPv4(src)!).copy(block, 0);
        Buffer.from(parseIPv4(dst)!).copy(block, 4);
      } else {
        parseIPv6(src)!.copy(block, 0);
        parseIPv6(dst)!.copy(block, 16);
      }
      block.writeUInt16BE(sport, 2 * ab);
      block.writeUInt16BE(dport, 2 * ab + 2);
      famByte = (family === 'tcp4' ? 0x10 : 0x20) | proto;
    } else if (family === 'unix') {
      block = Buffer.alloc(UNIX_BLOCK);
      unixPathBytes('info.sourceAddress', info.sourceAddress).copy(block, 0);
      unixPathBytes('info.destinationAddress', info.destinationAddress).copy(block, UNIX_PATH);
      famByte = 0x30 | proto;
    }
  }

  let len = block.length;
  for (const t of tlvs) len += 3 + t.value.length;
  if (len > 0xffff) throw outOfRange('the header length (address block and TLVs)', '<= 65535 bytes', len);

  const out = Buffer.allocUnsafe(V2_HEADER_LENGTH + len);
  V2_SIGNATURE.copy(out, 0);
  out[12] = command === 'proxy' ? 0x21 : 0x20;
  out[13] = famByte;
  out.writeUInt16BE(len, 14);
  block.copy(out, V2_HEADER_LENGTH);
  let pos = V2_HEADER_LENGTH + block.length;
  let crcAt = -1;
  for (const t of tlvs) {
    out[pos] = t.type;
    out.writeUInt16BE(t.value.length, pos + 1);
    if (t.type === PP2_TYPE.CRC32C) crcAt = pos + 3;
    t.value.copy(out, pos + 3);
    pos += 3 + t.value.length;
  }
  if (crcAt >= 0) out.writeUInt32BE(headerCrc(out, crcAt, out.length), crcAt);
  return out;
}
