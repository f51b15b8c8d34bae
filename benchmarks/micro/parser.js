'use strict';
// Where the HTTP parser belongs: iomux's request parser (TypeScript,
// lib/http/parser.ts) against a C parser called from JavaScript, which is
// what a parser in the core would be. The C parser here is llhttp, as node
// ships it (the HTTPParser binding behind node:http), so its cost includes the
// crossing into C and back, and the strings it hands to JavaScript.
//
//   node benchmarks/micro/parser.js [requests]      (default 1,000,000)
//
// Each parser reads the same chunks and the handler reads method, url and the
// raw header list (node's parser always builds that list; iomux builds its
// headers object only when asked). Two request shapes (wrk's three headers,
// and a browser-like request with eleven), one request per chunk and 16
// pipelined per chunk. Prints ns per request, best of 5 runs, and the ratio.
const path = require('path');
const { HTTPParser } = require('_http_common');

const { RequestParser } = require(path.join(process.env.IOMUX_BENCH_DIST || path.resolve(__dirname, '..', '..', 'dist'), 'http', 'parser'));

const total = Math.floor(Number(process.argv[2] || 1e6));
if (!(total > 0)) {
  process.stderr.write('usage: node benchmarks/micro/parser.js [requests]\n');
  process.exit(2);
}

const SHAPES = {
  wrk: 'GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n',
  browser: 'GET /assets/app.js?v=3 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive\r\n' +
    'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n' +
    'Accept: */*\r\nSec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: script\r\n' +
    'Referer: https://example.com/\r\nAccept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n' +
    'Cookie: session=0123456789abcdef; theme=dark\r\n\r\n',
};

let sink = 0;

function iomuxParser() {
  let done = 0;
  const parser = new RequestParser({
    onHead(head) {
      sink += head.method.length + head.url.length + head.rawHeaders.length;
    },
    onBody() {},
    onEnd() {
      done++;
    },
  });
  return { execute: (buf) => parser.execute(buf), done: () => done };
}

function llhttpParser() {
  let done = 0;
  const parser = new HTTPParser();
  parser.initialize(HTTPParser.REQUEST, {});
  parser[HTTPParser.kOnHeadersComplete] = (major, minor, headers, method, url) => {
    sink += method + url.length + headers.length;
  };
  parser[HTTPParser.kOnMessageComplete] = () => {
    done++;
  };
  return {
    execute: (buf) => {
      const r = parser.execute(buf);
      if (r instanceof Error) throw r;
    },
    done: () => done,
  };
}

// ns per request over `n` requests sent as chunks of `perChunk`.
function run(make, text, perChunk, n) {
  const chunk = Buffer.from(text.repeat(perChunk), 'latin1');
  const chunks = Math.ceil(n / perChunk);
  const p = make();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < chunks; i++) p.execute(chunk);
  const ns = Number(process.hrtime.bigint() - t0);
  if (p.done() !== chunks * perChunk) throw new Error(`parsed ${p.done()} of ${chunks * perChunk}`);
  return ns / (chunks * perChunk);
}

const rows = [];
for (const [shape, text] of Object.entries(SHAPES)) {
  for (const perChunk of [1, 16]) {
    const best = { iomux: Infinity, llhttp: Infinity };
    for (let round = 0; round < 5; round++) {
      // Alternating, each after a warm-up of a tenth.
      for (const [name, make] of [['iomux', iomuxParser], ['llhttp', llhttpParser]]) {
        run(make, text, perChunk, Math.max(1000, total / 10));
        best[name] = Math.min(best[name], run(make, text, perChunk, total));
      }
    }
    rows.push({ shape, perChunk, iomuxNs: best.iomux, llhttpNs: best.llhttp, ratio: best.iomux / best.llhttp });
  }
}

console.log('| request | per chunk | iomux (TypeScript) ns/req | llhttp (C, via node\'s binding) ns/req | iomux / llhttp |');
console.log('| --- | ---: | ---: | ---: | ---: |');
for (const r of rows) {
  console.log(`| ${r.shape} (${Buffer.byteLength(SHAPES[r.shape])} B) | ${r.perChunk} | ${r.iomuxNs.toFixed(0)} | ${r.llhttpNs.toFixed(0)} | ${r.ratio.toFixed(2)}× |`);
}
if (sink === 0) console.log('');
