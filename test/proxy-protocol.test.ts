// The PROXY protocol codec (versions 1 and 2): exact bytes for known headers,
// round trips of every family and command, TLVs and CRC32C (against published
// vectors and a bitwise reference), IPv6 text in canonical form, incremental
// parsing (every prefix asks for more, trailing bytes are left alone), a table
// of malformed headers each refused with its own message at every split, the
// parse options, encoder argument checks, and a seeded fuzz loop in which only
// ProxyProtocolError may ever be thrown.
import t, { type Test } from 'tap';
import {
  crc32c, encodeV1, encodeV2, parseProxyHeader, PP2_TYPE, ProxyProtocolError,
  type ProxyHeader, type ProxyInfo, type ProxyParseOptions, type ProxyParseResult,
} from '../dist/proxy/protocol';

const SIG = '0d0a0d0a000d0a515549540a';
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1');

/** The parse of a complete header (fails the test if it is not complete). */
function parseDone(t: Test, buf: Buffer, opts?: ProxyParseOptions): { header: ProxyHeader; consumed: number } {
  const r = parseProxyHeader(buf, opts);
  if (!r.done) {
    t.fail('expected a complete header');
    throw new Error('incomplete');
  }
  return r;
}

/** The error parseProxyHeader throws for buf, or null. */
function parseError(buf: Buffer, opts?: ProxyParseOptions): unknown {
  try {
    parseProxyHeader(buf, opts);
    return null;
  } catch (err) {
    return err;
  }
}

/** What a header should parse to. */
function header(partial: Partial<ProxyHeader>): ProxyHeader {
  return {
    version: 2,
    command: 'proxy',
    family: 'unknown',
    protocol: undefined,
    sourceAddress: undefined,
    sourcePort: undefined,
    destinationAddress: undefined,
    destinationPort: undefined,
    tlvs: [],
    ...partial,
  };
}

/** A bit-at-a-time CRC32C, to check the table-driven one against. */
function crc32cBitwise(data: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of data) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/** mulberry32: a small seeded PRNG, so that every run sees the same inputs. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- CRC32C ------------------------------------------------------------------------

t.test('crc32c known vectors', async (t) => {
  t.equal(crc32c(latin1('123456789')), 0xe3069283, 'the check value of CRC-32C');
  t.equal(crc32c(Buffer.alloc(0)), 0, 'empty input');
  // RFC 3720 (iSCSI), appendix B.4.
  t.equal(crc32c(Buffer.alloc(32, 0x00)), 0x8a9136aa, '32 bytes of zeros');
  t.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43, '32 bytes of 0xff');
  t.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e, '32 incrementing bytes');
  t.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i))), 0x113fdb5c, '32 decrementing bytes');
  const rand = prng(1);
  for (let n = 0; n < 200; n++) {
    const b = Buffer.from(Array.from({ length: Math.floor(rand() * 300) }, () => Math.floor(rand() * 256)));
    const cut = Math.floor(rand() * (b.length + 1));
    const whole = crc32c(b);
    if (whole !== crc32cBitwise(b) || crc32c(b.subarray(cut), crc32c(b.subarray(0, cut))) !== whole) {
      t.fail(`crc32c of ${b.toString('hex')} (cut at ${cut})`);
    }
  }
  t.pass('table-driven, bitwise and chained CRCs agree on 200 random inputs');
});

// ---- exact bytes ---------------------------------------------------------------------

const TCP4: ProxyInfo = {
  family: 'tcp4', sourceAddress: '192.168.0.1', sourcePort: 56324, destinationAddress: '192.168.0.11', destinationPort: 443,
};
const TCP6: ProxyInfo = {
  family: 'tcp6', sourceAddress: '2001:db8::1', sourcePort: 1, destinationAddress: 'ffff:f::ffff', destinationPort: 65535,
};

t.test('version 1 bytes', async (t) => {
  t.equal(encodeV1(TCP4).toString('latin1'), 'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n');
  t.equal(encodeV1(TCP6).toString('latin1'), 'PROXY TCP6 2001:db8::1 ffff:f::ffff 1 65535\r\n');
  t.equal(encodeV1({ ...TCP6, sourceAddress: '2001:0DB8:0:0:0:0:0:1' }).toString('latin1'),
    'PROXY TCP6 2001:db8::1 ffff:f::ffff 1 65535\r\n', 'IPv6 is sent in canonical form');
  t.equal(encodeV1({ family: 'unknown' }).toString('latin1'), 'PROXY UNKNOWN\r\n');
  t.equal(encodeV1({ ...TCP4, sourcePort: 0, destinationPort: 0 }).toString('latin1'),
    'PROXY TCP4 192.168.0.1 192.168.0.11 0 0\r\n');
});

t.test('version 2 bytes', async (t) => {
  t.same(encodeV2(TCP4), hex(`${SIG} 21 11 000c c0a80001 c0a8000b dc04 01bb`), 'PROXY TCP4');
  t.same(encodeV2({ ...TCP4, protocol: 'dgram' }), hex(`${SIG} 21 12 000c c0a80001 c0a8000b dc04 01bb`), 'PROXY UDP4');
  t.same(encodeV2(TCP6), hex(`${SIG} 21 21 0024
    20010db8000000000000000000000001 ffff000f00000000000000000000ffff 0001 ffff`), 'PROXY TCP6');
  t.same(encodeV2({ command: 'local' }), hex(`${SIG} 20 00 0000`), 'LOCAL');
  t.same(encodeV2({ family: 'unknown' }), hex(`${SIG} 21 00 0000`), 'PROXY UNSPEC');
  const unix = encodeV2({ family: 'unix', sourceAddress: '/a', destinationAddress: '/bc' });
  t.same(unix.subarray(0, 16), hex(`${SIG} 21 31 00d8`), 'PROXY UNIX_STREAM, 216-byte block');
  t.same(unix.subarray(16), Buffer.concat([latin1('/a'), Buffer.alloc(106), latin1('/bc'), Buffer.alloc(105)]),
    'paths NUL-padded to 108 bytes');
  t.same(encodeV2({ ...TCP4, tlvs: [{ type: PP2_TYPE.ALPN, value: latin1('h2') }, { type: 0xe0, value: Buffer.alloc(0) }] }),
    hex(`${SIG} 21 11 0014 c0a80001 c0a8000b dc04 01bb 01 0002 6832 e0 0000`), 'TLVs follow the address block');
});

t.test('version 2 CRC32C', async (t) => {
  const b = encodeV2(TCP4, { crc: true });
  t.equal(b.length, 35);
  t.same(b.subarray(0, 31), hex(`${SIG} 21 11 0013 c0a80001 c0a8000b dc04 01bb 03 0004`), 'CRC32C TLV appended');
  const zeroed = Buffer.from(b);
  zeroed.fill(0, 31);
  t.equal(b.readUInt32BE(31), crc32cBitwise(zeroed), 'big-endian CRC of the header with the value zeroed');
  const { header: h } = parseDone(t, b);
  t.same(h.tlvs, [{ type: PP2_TYPE.CRC32C, value: b.subarray(31) }], 'the CRC TLV is reported');
  t.same(encodeV2(h), b, 're-encoding the parsed header reproduces it');

  // A CRC TLV in the list is recomputed, wherever it is.
  const moved = encodeV2({
    ...TCP4, sourcePort: 1,
    tlvs: [{ type: PP2_TYPE.CRC32C, value: hex('deadbeef') }, { type: PP2_TYPE.AUTHORITY, value: latin1('example.com') }],
  });
  t.equal(parseDone(t, moved).header.tlvs[1]!.value.toString(), 'example.com', 'a CRC placed first is filled in and verifies');
  t.equal(encodeV2({ ...TCP4, tlvs: h.tlvs }, { crc: true }).length, b.length, 'crc: true adds no second CRC TLV');

  // A flipped bit in the address block or the checksum is caught. (Flipping
  // the CRC TLV's own type or length turns it into another TLV or an overrun:
  // a checksum can only vouch for a header that says it carries one.)
  const covered = [...Array(12).keys()].map((i) => 16 + i).concat([31, 32, 33, 34]);
  let caught = 0;
  for (const i of covered) {
    for (let bit = 0; bit < 8; bit++) {
      const bad = Buffer.from(b);
      bad[i]! ^= 1 << bit;
      const err = parseError(bad);
      if (err instanceof ProxyProtocolError && /CRC32C mismatch/.test(err.message)) caught++;
      else t.fail(`flipped bit ${bit} of byte ${i} not caught as a CRC error: ${String(err)}`);
    }
  }
  t.equal(caught, covered.length * 8, `all ${caught} single-bit corruptions are CRC errors`);
});

// ---- round trips ---------------------------------------------------------------------

const V1_CASES: Array<[string, ProxyInfo, ProxyHeader]> = [
  ['tcp4', TCP4, header({ version: 1, family: 'tcp4', protocol: 'stream', ...addr(TCP4) })],
  ['tcp6', TCP6, header({ version: 1, family: 'tcp6', protocol: 'stream', ...addr(TCP6) })],
  ['tcp6 mapped', { ...TCP6, sourceAddress: '::ffff:10.1.2.3' },
    header({ version: 1, family: 'tcp6', protocol: 'stream', ...addr(TCP6), sourceAddress: '::ffff:10.1.2.3' })],
  ['unknown', { family: 'unknown' }, header({ version: 1 })],
];

const V2_CASES: Array<[string, ProxyInfo, ProxyHeader]> = [
  ['tcp4', TCP4, header({ family: 'tcp4', protocol: 'stream', ...addr(TCP4) })],
  ['udp4', { ...TCP4, protocol: 'dgram' }, header({ family: 'tcp4', protocol: 'dgram', ...addr(TCP4) })],
  ['tcp6', TCP6, header({ family: 'tcp6', protocol: 'stream', ...addr(TCP6) })],
  ['udp6', { ...TCP6, protocol: 'dgram' }, header({ family: 'tcp6', protocol: 'dgram', ...addr(TCP6) })],
  ['unix stream', { family: 'unix', sourceAddress: '/run/client.sock', destinationAddress: '/run/app.sock' },
    header({ family: 'unix', protocol: 'stream', sourceAddress: '/run/client.sock', destinationAddress: '/run/app.sock' })],
  ['unix dgram, 108-byte and empty paths', { family: 'unix', protocol: 'dgram', sourceAddress: 'x'.repeat(108), destinationAddress: '' },
    header({ family: 'unix', protocol: 'dgram', sourceAddress: 'x'.repeat(108), destinationAddress: '' })],
  ['unix utf-8 path', { family: 'unix', sourceAddress: '/tmp/é', destinationAddress: '/tmp/ü' },
    header({ family: 'unix', protocol: 'stream', sourceAddress: '/tmp/é', destinationAddress: '/tmp/ü' })],
  ['unknown', { family: 'unknown' }, header({})],
  ['local', { command: 'local' }, header({ command: 'local' })],
  ['local ignores addresses', { command: 'local', ...TCP4 }, header({ command: 'local' })],
  ['tcp4 with TLVs', {
    ...TCP4,
    tlvs: [
      { type: PP2_TYPE.ALPN, value: latin1('http/1.1') },
      { type: PP2_TYPE.AUTHORITY, value: latin1('example.com') },
      { type: PP2_TYPE.NOOP, value: Buffer.alloc(3) },
      { type: PP2_TYPE.UNIQUE_ID, value: Buffer.alloc(128, 7) },
      { type: PP2_TYPE.SSL, value: hex('01 00000000 21 0007 544c5376312e33') },
      { type: 0xee, value: Buffer.alloc(1000, 0xab) },
    ],
  }, header({
    family: 'tcp4', protocol: 'stream', ...addr(TCP4),
    tlvs: [
      { type: PP2_TYPE.ALPN, value: latin1('http/1.1') },
      { type: PP2_TYPE.AUTHORITY, value: latin1('example.com') },
      { type: PP2_TYPE.NOOP, value: Buffer.alloc(3) },
      { type: PP2_TYPE.UNIQUE_ID, value: Buffer.alloc(128, 7) },
      { type: PP2_TYPE.SSL, value: hex('01 00000000 21 0007 544c5376312e33') },
      { type: 0xee, value: Buffer.alloc(1000, 0xab) },
    ],
  })],
  ['local with TLVs', { command: 'local', tlvs: [{ type: 0xe1, value: latin1('health') }] },
    header({ command: 'local', tlvs: [{ type: 0xe1, value: latin1('health') }] })],
];

function addr(i: ProxyInfo): Partial<ProxyHeader> {
  return {
    sourceAddress: i.sourceAddress, sourcePort: i.sourcePort,
    destinationAddress: i.destinationAddress, destinationPort: i.destinationPort,
  };
}

/** Every valid header the tests know, with its expected parse. */
function validHeaders(): Array<[string, Buffer, ProxyHeader]> {
  const out: Array<[string, Buffer, ProxyHeader]> = [];
  for (const [name, info, want] of V1_CASES) out.push([`v1 ${name}`, encodeV1(info), want]);
  for (const [name, info, want] of V2_CASES) {
    out.push([`v2 ${name}`, encodeV2(info), want]);
    const withCrc = encodeV2(info, { crc: true });
    const crc = withCrc.subarray(withCrc.length - 4);
    out.push([`v2 ${name} +crc`, withCrc, { ...want, tlvs: [...want.tlvs, { type: PP2_TYPE.CRC32C, value: crc }] }]);
  }
  return out;
}

t.test('round trips', async (t) => {
  for (const [name, buf, want] of validHeaders()) {
    const { header: got, consumed } = parseDone(t, buf);
    t.strictSame(got, want, `${name}: parsed`);
    t.equal(consumed, buf.length, `${name}: consumed`);
    const again = want.version === 1 ? encodeV1(got) : encodeV2(got);
    t.same(again, buf, `${name}: re-encoded byte for byte`);
  }
});

t.test('version 1 line from the spec, and UNKNOWN with trailing fields', async (t) => {
  const line = 'PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n';
  t.strictSame(parseDone(t, latin1(line)).header, header({
    version: 1, family: 'tcp4', protocol: 'stream',
    sourceAddress: '255.255.255.255', sourcePort: 65535, destinationAddress: '255.255.255.255', destinationPort: 65535,
  }));
  // The receiver must ignore what follows UNKNOWN; the longest such line is 107 bytes.
  const longest = `PROXY UNKNOWN ${'ffff:'.repeat(7)}ffff ${'ffff:'.repeat(7)}ffff 65535 65535\r\n`;
  t.equal(longest.length, 107);
  const r = parseDone(t, latin1(longest + 'GET / HTTP/1.1\r\n'));
  t.strictSame(r.header, header({ version: 1 }));
  t.equal(r.consumed, 107);
  t.strictSame(parseDone(t, latin1('PROXY UNKNOWN \x01\xff anything\r\n')).header, header({ version: 1 }));
});

t.test('IPv6 addresses come out in canonical form', async (t) => {
  const cases: Array<[string, string]> = [
    ['2001:DB8:0:0:0:0:0:1', '2001:db8::1'],
    ['2001:0db8:0000:0000:0000:0000:0002:0001', '2001:db8::2:1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['2001:db8:0:1:0:0:0:1', '2001:db8:0:1::1'],
    ['1:0:1:1:1:1:1:1', '1:0:1:1:1:1:1:1'],
    ['::', '::'],
    ['::1', '::1'],
    ['1::', '1::'],
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
    ['::2:3:4:5:6:7:8', '0:2:3:4:5:6:7:8'],
    ['0:0:0:0:0:FFFF:102:304', '::ffff:1.2.3.4'],
    ['::ffff:1.2.3.4', '::ffff:1.2.3.4'],
    ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:102:304'],
    ['fe80::AbCd', 'fe80::abcd'],
  ];
  for (const [input, want] of cases) {
    const line = latin1(`PROXY TCP6 ${input} ::1 1 2\r\n`);
    t.equal(parseDone(t, line).header.sourceAddress, want, `v1 ${input}`);
    const v2 = encodeV2({ family: 'tcp6', sourceAddress: input, sourcePort: 1, destinationAddress: '::1', destinationPort: 2 });
    t.equal(parseDone(t, v2).header.sourceAddress, want, `v2 ${input}`);
  }
  // The WHATWG URL serializer also follows RFC 5952 (except for IPv4-mapped
  // addresses, which it writes in hex): compare on random addresses heavy in
  // zero groups.
  const rand = prng(7);
  let agree = 0;
  for (let n = 0; n < 2000; n++) {
    const b = Buffer.alloc(36);
    for (let g = 0; g < 8; g++) if (rand() < 0.4) b.writeUInt16BE(Math.floor(rand() * 0x10000) >> Math.floor(rand() * 16), g * 2);
    if (b.readUInt16BE(10) === 0xffff) continue;
    const v2 = Buffer.concat([hex(`${SIG} 21 21 0024`), b]);
    const got = parseDone(t, v2).header.sourceAddress!;
    const url = new URL(`http://[${got}]/`).hostname;
    if (url !== `[${got}]`) t.fail(`${b.subarray(0, 16).toString('hex')}: ${got}, URL says ${url}`);
    else agree++;
    if (!encodeV2(parseDone(t, v2).header).equals(v2)) t.fail(`${got} does not round-trip`);
  }
  t.ok(agree > 1500, `${agree} random addresses formatted as URL formats them`);
});

// ---- incremental parsing -----------------------------------------------------------

t.test('every prefix of a valid header asks for more; what follows is not consumed', async (t) => {
  let prefixes = 0;
  for (const [name, buf, want] of validHeaders()) {
    let early = '';
    for (let n = 0; n < buf.length; n++) {
      let r: ProxyParseResult;
      try {
        r = parseProxyHeader(buf.subarray(0, n));
      } catch (err) {
        early = `${n}: ${String(err)}`;
        break;
      }
      if (r.done) {
        early = `${n}: done`;
        break;
      }
      prefixes++;
    }
    t.equal(early, '', `${name}: done:false for all ${buf.length} prefixes`);
    const tail = latin1('\r\n\r\nPROXY GET / HTTP/1.1\r\n');
    const r = parseDone(t, Buffer.concat([buf, tail]));
    t.equal(r.consumed, buf.length, `${name}: trailing bytes not consumed`);
    t.strictSame(r.header, want, `${name}: same header with trailing bytes`);
  }
  t.ok(prefixes > 3000, `${prefixes} prefixes`);
});

t.test('TLV values are copies of the input', async (t) => {
  const buf = encodeV2({ ...TCP4, tlvs: [{ type: PP2_TYPE.AUTHORITY, value: latin1('example.com') }] });
  const { header: h } = parseDone(t, buf);
  buf.fill(0);
  t.equal(h.tlvs[0]!.value.toString(), 'example.com', 'reusing the read buffer leaves the header intact');
});

// ---- malformed headers ---------------------------------------------------------------

/** A version 2 header given by hex, its length field computed. */
function v2(verCmd: string, fam: string, body: string): Buffer {
  const b = hex(body);
  return Buffer.concat([hex(`${SIG} ${verCmd} ${fam}`), Buffer.from([b.length >> 8, b.length & 0xff]), b]);
}
const INET_BODY = 'c0a80001 c0a8000b dc04 01bb';

interface Bad {
  name: string;
  buf: Buffer;
  message: RegExp;
  code?: string;
  opts?: ProxyParseOptions;
}

const withCrc = encodeV2(TCP4, { crc: true });
const corruptCrc = Buffer.from(withCrc);
corruptCrc[16]! ^= 0x80;

const MALFORMED: Bad[] = [
  // Signatures.
  { name: 'HTTP request', buf: latin1('GET / HTTP/1.1\r\nHost: a\r\n\r\n'), message: /bad signature \(expected a version 1 or 2 header\)/ },
  { name: 'TLS ClientHello', buf: hex('160301020001'), message: /bad signature/ },
  { name: 'lower-case proxy', buf: latin1('proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n'), message: /bad signature/ },
  { name: 'v2 signature off by one byte', buf: hex('0d0a0d0a000d0a515549540b 21 11 000c'), message: /bad signature/ },
  { name: 'v1 when only v2 is allowed', buf: encodeV1(TCP4), opts: { allowV1: false }, message: /bad signature \(expected a version 2 header\)/ },
  { name: 'v2 when only v1 is allowed', buf: encodeV2(TCP4), opts: { allowV2: false }, message: /bad signature \(expected a version 1 header\)/ },
  // Version 1 framing.
  { name: 'v1 no CRLF in 107 bytes', buf: latin1(`PROXY UNKNOWN ${'x'.repeat(100)}`), message: /without CRLF in its first 107 bytes/ },
  { name: 'v1 line of 108 bytes', buf: latin1(`PROXY UNKNOWN ${'x'.repeat(92)}\r\n`), message: /without CRLF in its first 107 bytes/ },
  { name: 'v1 TCP6 too long with uncompressed addresses', message: /without CRLF in its first 107 bytes/,
    buf: latin1(`PROXY TCP6 ${'0000:'.repeat(5)}ffff:255.255.255.255 ${'0000:'.repeat(5)}ffff:255.255.255.255 65535 65535\r\n`) },
  { name: 'v1 bare LF', buf: latin1('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n'), message: /bare LF/ },
  { name: 'v1 CR without LF', buf: latin1('PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n'), message: /CR not followed by LF/ },
  // Version 1 protocol and fields.
  { name: 'v1 TCP5', buf: latin1('PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n'), message: /unknown protocol in version 1 header/ },
  { name: 'v1 UDP4', buf: latin1('PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n'), message: /unknown protocol in version 1 header/ },
  { name: 'v1 empty protocol', buf: latin1('PROXY \r\n'), message: /unknown protocol in version 1 header/ },
  { name: 'v1 truncated protocol', buf: latin1('PROXY TCP\r\n'), message: /unknown protocol in version 1 header/ },
  { name: 'v1 two spaces after PROXY', buf: latin1('PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n'), message: /unknown protocol/ },
  { name: 'v1 UNKNOWNX', buf: latin1('PROXY UNKNOWNX\r\n'), message: /no space after the protocol UNKNOWN/ },
  { name: 'v1 TCP4 without fields', buf: latin1('PROXY TCP4\r\n'), message: /TCP4 header has 0 fields separated by spaces, not 4/ },
  { name: 'v1 TCP4 tab separator', buf: latin1('PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n'), message: /no space after the protocol TCP4/ },
  { name: 'v1 three fields', buf: latin1('PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n'), message: /has 3 fields separated by spaces, not 4/ },
  { name: 'v1 double space', buf: latin1('PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n'), message: /has 5 fields/ },
  { name: 'v1 trailing space', buf: latin1('PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n'), message: /has 5 fields/ },
  { name: 'v1 IPv4 leading zero', buf: latin1('PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n'), message: /source address "1\.2\.3\.04" is not a valid IPv4 address/ },
  { name: 'v1 IPv4 octet 256', buf: latin1('PROXY TCP4 1.2.3.4 256.6.7.8 1 2\r\n'), message: /destination address "256\.6\.7\.8" is not a valid IPv4/ },
  { name: 'v1 IPv4 three octets', buf: latin1('PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n'), message: /source address "1\.2\.3" is not a valid IPv4/ },
  { name: 'v1 IPv4 hex', buf: latin1('PROXY TCP4 0x1.2.3.4 5.6.7.8 1 2\r\n'), message: /unexpected byte 0x78 in version 1 TCP4 header/ },
  { name: 'v1 IPv6 in TCP4', buf: latin1('PROXY TCP4 ::1 5.6.7.8 1 2\r\n'), message: /source address "::1" is not a valid IPv4/ },
  { name: 'v1 IPv4 in TCP6', buf: latin1('PROXY TCP6 ::1 5.6.7.8 1 2\r\n'), message: /destination address "5\.6\.7\.8" is not a valid IPv6/ },
  { name: 'v1 IPv6 two gaps', buf: latin1('PROXY TCP6 1::2::3 ::1 1 2\r\n'), message: /source address "1::2::3" is not a valid IPv6/ },
  { name: 'v1 IPv6 nine groups', buf: latin1('PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n'), message: /not a valid IPv6/ },
  { name: 'v1 IPv6 zone index', buf: latin1('PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n'), message: /unexpected byte 0x25 in version 1 TCP6 header/ },
  { name: 'v1 port 65536', buf: latin1('PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n'), message: /source port "65536" is not a decimal number from 0 to 65535/ },
  { name: 'v1 port leading zero', buf: latin1('PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n'), message: /destination port "080"/ },
  { name: 'v1 port 00', buf: latin1('PROXY TCP4 1.2.3.4 5.6.7.8 00 1\r\n'), message: /source port "00"/ },
  { name: 'v1 port in hex', buf: latin1('PROXY TCP4 1.2.3.4 5.6.7.8 ff 1\r\n'), message: /source port "ff"/ },
  { name: 'v1 negative port', buf: latin1('PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n'), message: /unexpected byte 0x2d/ },
  { name: 'v1 NUL in address', buf: latin1('PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2\r\n'), message: /unexpected byte 0x00/ },
  // Version 2 fixed header.
  { name: 'v2 version 1', buf: v2('11', '11', INET_BODY), message: /unsupported version 1 in version\/command byte 0x11/ },
  { name: 'v2 version 3', buf: v2('31', '11', INET_BODY), message: /unsupported version 3/ },
  { name: 'v2 command 2', buf: v2('22', '11', INET_BODY), message: /unknown command 2 in version\/command byte 0x22/ },
  { name: 'v2 command 15', buf: v2('2f', '11', INET_BODY), message: /unknown command 15/ },
  { name: 'v2 family 4', buf: v2('21', '41', INET_BODY), message: /unknown address family 4 in family byte 0x41/ },
  { name: 'v2 transport 3', buf: v2('21', '13', INET_BODY), message: /unknown transport protocol 3 in family byte 0x13/ },
  { name: 'v2 INET with UNSPEC transport', buf: v2('21', '10', INET_BODY), message: /family byte 0x10 mixes an unspecified and a specified half/ },
  { name: 'v2 UNSPEC with STREAM', buf: v2('21', '01', ''), message: /family byte 0x01 mixes/ },
  { name: 'v2 LOCAL with a bad family byte', buf: v2('20', 'ff', ''), message: /unknown address family 15/ },
  { name: 'v2 length short of the INET block', buf: v2('21', '11', 'c0a80001 c0a8000b dc04 01'), message: /length 11 is shorter than the 12-byte tcp4 address block/ },
  { name: 'v2 length short of the INET6 block', buf: v2('21', '21', '00'.repeat(35)), message: /length 35 is shorter than the 36-byte tcp6/ },
  { name: 'v2 length short of the UNIX block', buf: v2('21', '31', '00'.repeat(215)), message: /length 215 is shorter than the 216-byte unix/ },
  { name: 'v2 TLVs over maxTlvBytes', buf: hex(`${SIG} 21 11 100d`), code: 'ERR_PROXY_PROTOCOL_TOO_LARGE', message: /4097 bytes of TLVs, more than the 4096 allowed/ },
  { name: 'v2 length 65535', buf: hex(`${SIG} 21 00 ffff`), code: 'ERR_PROXY_PROTOCOL_TOO_LARGE', message: /65535 bytes of TLVs/ },
  { name: 'v2 any TLV with maxTlvBytes 0', buf: encodeV2(TCP4, { crc: true }), opts: { maxTlvBytes: 0 }, code: 'ERR_PROXY_PROTOCOL_TOO_LARGE', message: /7 bytes of TLVs, more than the 0 allowed/ },
  // Version 2 TLVs.
  { name: 'v2 TLV overrun', buf: v2('21', '11', `${INET_BODY} 01 000a 6832`), message: /TLV 0x01 claims 10 bytes but only 2 remain/ },
  { name: 'v2 TLV header cut short', buf: v2('21', '11', `${INET_BODY} 01 00`), message: /2 stray bytes after the last TLV/ },
  { name: 'v2 stray byte after TLVs', buf: v2('21', '11', `${INET_BODY} 04 0000 00`), message: /1 stray bytes after the last TLV/ },
  { name: 'v2 LOCAL TLV overrun', buf: v2('20', '00', '05 ffff'), message: /TLV 0x05 claims 65535 bytes but only 0 remain/ },
  { name: 'v2 CRC32C of 3 bytes', buf: v2('21', '11', `${INET_BODY} 03 0003 000000`), message: /CRC32C TLV of 3 bytes \(must be 4\)/ },
  { name: 'v2 two CRC32C TLVs', buf: v2('21', '11', `${INET_BODY} 03 0004 00000000 03 0004 00000000`), message: /more than one CRC32C TLV/ },
  { name: 'v2 CRC32C mismatch', buf: corruptCrc, message: /CRC32C mismatch \(header says 0x[0-9a-f]+, computed 0x[0-9a-f]+\)/ },
  { name: 'v2 CRC32C all zero', buf: v2('21', '11', `${INET_BODY} 03 0004 00000000`), message: /CRC32C mismatch/ },
  { name: 'v2 UNIQUE_ID of 129 bytes', buf: v2('21', '11', `${INET_BODY} 05 0081 ${'00'.repeat(129)}`), message: /UNIQUE_ID TLV of 129 bytes \(at most 128\)/ },
];

t.test('malformed headers are refused with a message naming the violation, at every split', async (t) => {
  t.ok(MALFORMED.length >= 20, `${MALFORMED.length} malformed headers`);
  for (const bad of MALFORMED) {
    const err = parseError(bad.buf, bad.opts);
    if (!(err instanceof ProxyProtocolError)) {
      t.fail(`${bad.name}: expected a ProxyProtocolError, got ${err === null ? 'a result' : String(err)}`);
      continue;
    }
    t.equal(err.code, bad.code ?? 'ERR_PROXY_PROTOCOL_INVALID', `${bad.name}: code`);
    t.match(err.message, bad.message, `${bad.name}: ${err.message}`);
    t.equal(err.name, 'ProxyProtocolError');
    // Each prefix either asks for more or fails the same way: the verdict
    // does not depend on how the bytes arrived.
    let differs = '';
    for (let n = 0; n < bad.buf.length && differs === ''; n++) {
      const e = parseError(bad.buf.subarray(0, n), bad.opts);
      if (e !== null && (!(e instanceof ProxyProtocolError) || e.message !== err.message)) differs = `${n}: ${String(e)}`;
    }
    t.equal(differs, '', `${bad.name}: every prefix agrees`);
  }
});

t.test('early refusal', async (t) => {
  t.throws(() => parseProxyHeader(latin1('G')), { code: 'ERR_PROXY_PROTOCOL_INVALID', message: /bad signature/ }, 'at the first byte');
  t.throws(() => parseProxyHeader(latin1('PROXY TCP4 1.2.3.4 x')), { message: /unexpected byte 0x78/ }, 'before the CRLF');
  t.throws(() => parseProxyHeader(hex(`${SIG} 21 ff`)), { message: /unknown address family/ }, 'at the family byte');
  t.throws(() => parseProxyHeader(hex(`${SIG} 21 11 0000`)), { message: /shorter than/ }, 'at the length, before any body');
  t.strictSame(parseProxyHeader(hex(`${SIG} 21 11 0fff`)), { done: false }, 'a permitted length awaits its body');
});

// ---- options ---------------------------------------------------------------------------

t.test('options', async (t) => {
  t.equal(parseDone(t, encodeV1(TCP4), { allowV2: false }).header.version, 1, 'v1 only accepts v1');
  t.equal(parseDone(t, encodeV2(TCP4), { allowV1: false }).header.version, 2, 'v2 only accepts v2');
  const big = encodeV2({ ...TCP4, tlvs: [{ type: 0xe0, value: Buffer.alloc(65000) }] });
  t.throws(() => parseProxyHeader(big), { code: 'ERR_PROXY_PROTOCOL_TOO_LARGE' }, 'default cap is 4096 bytes of TLVs');
  t.equal(parseDone(t, big, { maxTlvBytes: 65535 }).consumed, big.length, 'a larger cap lets it through');
  const exact = encodeV2({ ...TCP4, tlvs: [{ type: 0xe0, value: Buffer.alloc(4093) }] });
  t.equal(parseDone(t, exact).consumed, exact.length, 'exactly 4096 bytes of TLVs pass');
  t.throws(() => parseProxyHeader(exact, { maxTlvBytes: 4095 }), { code: 'ERR_PROXY_PROTOCOL_TOO_LARGE' });
  t.throws(() => parseProxyHeader(latin1('P'), { allowV1: false, allowV2: false }), { code: 'ERR_INVALID_ARG_VALUE' });
  t.throws(() => parseProxyHeader(latin1('P'), { maxTlvBytes: -1 }), { code: 'ERR_OUT_OF_RANGE' });
  t.throws(() => parseProxyHeader(latin1('P'), { maxTlvBytes: 65536 }), { code: 'ERR_OUT_OF_RANGE' });
  t.throws(() => parseProxyHeader(latin1('P'), { maxTlvBytes: 1.5 }), { code: 'ERR_OUT_OF_RANGE' });
  t.throws(() => parseProxyHeader('PROXY' as unknown as Buffer), { code: 'ERR_INVALID_ARG_TYPE' });
  t.strictSame(parseProxyHeader(Buffer.alloc(0)), { done: false }, 'nothing yet');
});

// ---- encoder argument checks ------------------------------------------------------

t.test('encoders refuse what they cannot express', async (t) => {
  const cases: Array<[string, () => unknown, string]> = [
    ['v1 local', () => encodeV1({ command: 'local' }), 'ERR_INVALID_ARG_VALUE'],
    ['v1 unix', () => encodeV1({ family: 'unix', sourceAddress: '/a', destinationAddress: '/b' }), 'ERR_INVALID_ARG_VALUE'],
    ['v1 dgram', () => encodeV1({ ...TCP4, protocol: 'dgram' }), 'ERR_INVALID_ARG_VALUE'],
    ['v1 TLVs', () => encodeV1({ ...TCP4, tlvs: [{ type: 1, value: Buffer.alloc(1) }] }), 'ERR_INVALID_ARG_VALUE'],
    ['bad family', () => encodeV2({ ...TCP4, family: 'tcp5' as 'tcp4' }), 'ERR_INVALID_ARG_VALUE'],
    ['missing family', () => encodeV2({}), 'ERR_INVALID_ARG_VALUE'],
    ['bad command', () => encodeV2({ ...TCP4, command: 'health' as 'local' }), 'ERR_INVALID_ARG_VALUE'],
    ['IPv6 in tcp4', () => encodeV2({ ...TCP4, sourceAddress: '::1' }), 'ERR_INVALID_ARG_VALUE'],
    ['IPv4 leading zero', () => encodeV1({ ...TCP4, destinationAddress: '10.0.0.01' }), 'ERR_INVALID_ARG_VALUE'],
    ['IPv6 zone', () => encodeV2({ ...TCP6, sourceAddress: 'fe80::1%eth0' }), 'ERR_INVALID_ARG_VALUE'],
    ['missing address', () => encodeV2({ ...TCP4, sourceAddress: undefined }), 'ERR_INVALID_ARG_TYPE'],
    ['port 65536', () => encodeV2({ ...TCP4, sourcePort: 65536 }), 'ERR_SOCKET_BAD_PORT'],
    ['port 1.5', () => encodeV1({ ...TCP4, destinationPort: 1.5 }), 'ERR_SOCKET_BAD_PORT'],
    ['missing port', () => encodeV1({ ...TCP4, destinationPort: undefined }), 'ERR_SOCKET_BAD_PORT'],
    ['unix path of 109 bytes', () => encodeV2({ family: 'unix', sourceAddress: 'x'.repeat(109), destinationAddress: '' }), 'ERR_INVALID_ARG_VALUE'],
    ['unix path with NUL', () => encodeV2({ family: 'unix', sourceAddress: '\0abstract', destinationAddress: '' }), 'ERR_INVALID_ARG_VALUE'],
    ['unknown with a protocol', () => encodeV2({ family: 'unknown', protocol: 'stream' }), 'ERR_INVALID_ARG_VALUE'],
    ['bad protocol', () => encodeV2({ ...TCP4, protocol: 'raw' as 'stream' }), 'ERR_INVALID_ARG_VALUE'],
    ['TLV type 256', () => encodeV2({ ...TCP4, tlvs: [{ type: 256, value: Buffer.alloc(0) }] }), 'ERR_OUT_OF_RANGE'],
    ['TLV value not a Buffer', () => encodeV2({ ...TCP4, tlvs: [{ type: 1, value: 'h2' as unknown as Buffer }] }), 'ERR_INVALID_ARG_TYPE'],
    ['CRC TLV of 2 bytes', () => encodeV2({ ...TCP4, tlvs: [{ type: 3, value: Buffer.alloc(2) }] }), 'ERR_INVALID_ARG_VALUE'],
    ['two CRC TLVs', () => encodeV2({ ...TCP4, tlvs: [{ type: 3, value: Buffer.alloc(4) }, { type: 3, value: Buffer.alloc(4) }] }), 'ERR_INVALID_ARG_VALUE'],
    ['over 65535 bytes', () => encodeV2({ ...TCP4, tlvs: [{ type: 0xe0, value: Buffer.alloc(65521) }] }), 'ERR_OUT_OF_RANGE'],
    ['info not an object', () => encodeV2(null as unknown as ProxyInfo), 'ERR_INVALID_ARG_TYPE'],
  ];
  for (const [name, fn, code] of cases) t.throws(fn, { code }, name);
  const max = encodeV2({ ...TCP4, tlvs: [{ type: 0xe0, value: Buffer.alloc(65520) }] });
  t.equal(max.length, 16 + 65535, 'the largest header is encodable');
  t.equal(parseDone(t, max, { maxTlvBytes: 65535 }).consumed, max.length, 'and parsable');
});

// ---- fuzz ---------------------------------------------------------------------------

t.test('fuzz: only ProxyProtocolError, bounded consumption, split-independent verdicts', async (t) => {
  const rand = prng(0x1badcafe);
  const int = (n: number): number => Math.floor(rand() * n);
  const corpus = validHeaders().map(([, b]) => b);
  corpus.push(latin1('PROXY TCP6 ::ffff:1.2.3.4 ffff::1 0 65535\r\n'), latin1('PROXY UNKNOWN x y z\r\n'));
  const INTERESTING = [0x00, 0xff, 0x0d, 0x0a, 0x20, 0x30, 0x31, 0x39, 0x3a, 0x2e, 0x21, 0x20, 0x11, 0x31, 0x03, 0x7f, 0x80];

  function mutate(src: Buffer): Buffer {
    const b = [...src];
    for (let k = 1 + int(4); k > 0; k--) {
      const at = int(b.length + 1);
      switch (int(9)) {
        case 0: if (at < b.length) b[at]! ^= 1 << int(8); break;
        case 1: if (at < b.length) b[at] = int(256); break;
        case 2: if (at < b.length) b[at] = INTERESTING[int(INTERESTING.length)]!; break;
        case 3: b.length = at; break;
        case 4: b.splice(at, 0, int(256)); break;
        case 5: b.splice(at, 1 + int(4)); break;
        case 6: if (b.length >= 16) { b[14] = int(256); b[15] = int(4) === 0 ? int(256) : int(2); } break;
        case 7: for (let n = int(40); n > 0; n--) b.push(int(256)); break;
        default: b.splice(at, 0, ...b.slice(int(b.length + 1), int(b.length + 1))); break;
      }
    }
    return Buffer.from(b);
  }

  type Verdict = { kind: 'more' } | { kind: 'done'; header: ProxyHeader; consumed: number } | { kind: 'error'; err: unknown };
  function verdict(buf: Buffer, opts: ProxyParseOptions): Verdict {
    try {
      const r = parseProxyHeader(buf, opts);
      return r.done ? { kind: 'done', header: r.header, consumed: r.consumed } : { kind: 'more' };
    } catch (err) {
      return { kind: 'error', err };
    }
  }

  const failures: string[] = [];
  const fail = (buf: Buffer, why: string): void => {
    if (failures.length < 10) failures.push(`${why}: ${buf.toString('hex')}`);
  };
  const counts = { more: 0, done: 0, error: 0 };
  const N = 50_000;
  const start = Date.now();
  for (let i = 0; i < N; i++) {
    const buf = int(20) === 0
      ? Buffer.from(Array.from({ length: int(64) }, () => int(256)))
      : mutate(corpus[int(corpus.length)]!);
    const allow = int(4);
    const opts: ProxyParseOptions = {
      allowV1: allow !== 1, allowV2: allow !== 2, maxTlvBytes: [0, 16, 300, 4096, 65535][int(5)]!,
    };
    const v = verdict(buf, opts);
    counts[v.kind]++;
    const cut = int(buf.length + 1);
    const p = verdict(buf.subarray(0, cut), opts);
    if (v.kind === 'error') {
      if (!(v.err instanceof ProxyProtocolError)) { fail(buf, `threw ${String(v.err)}`); continue; }
      if (p.kind === 'done') fail(buf, `prefix ${cut} parsed though the whole fails`);
      else if (p.kind === 'error' && (!(p.err instanceof ProxyProtocolError) || p.err.message !== v.err.message)) {
        fail(buf, `prefix ${cut} failed differently: ${String(p.err)} vs ${v.err.message}`);
      }
    } else if (v.kind === 'more') {
      if (p.kind !== 'more') fail(buf, `prefix ${cut} gave ${p.kind} where the whole wants more`);
    } else {
      const h = v.header;
      if (v.consumed <= 0 || v.consumed > buf.length || v.consumed > (h.version === 1 ? 107 : 16 + 65535)) {
        fail(buf, `consumed ${v.consumed}`);
      }
      if (cut < v.consumed ? p.kind !== 'more' : p.kind !== 'done' || p.consumed !== v.consumed) {
        fail(buf, `prefix ${cut} gave ${p.kind}`);
      }
      // What was accepted can be sent on: re-encoding it parses to the same
      // header (unix paths aside, whose bytes need not be UTF-8).
      if (h.family !== 'unix') {
        try {
          const again = h.version === 1 ? encodeV1(h) : encodeV2(h);
          const r = verdict(again, { maxTlvBytes: 65535 });
          if (r.kind !== 'done' || JSON.stringify(r.header) !== JSON.stringify(h)) fail(buf, 're-encoding changed the header');
        } catch (err) {
          fail(buf, `re-encoding threw ${String(err)}`);
        }
      }
    }
  }
  const ms = Date.now() - start;
  t.strictSame(failures, [], `${N} inputs: ${counts.done} parsed, ${counts.more} incomplete, ${counts.error} refused, in ${ms} ms`);
  t.ok(counts.done > 1000 && counts.error > 10000 && counts.more > 1000, 'the fuzz reaches all three outcomes');
  t.ok(ms < 20000, 'fast');
});
