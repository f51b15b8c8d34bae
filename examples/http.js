#!/usr/bin/env node
// An HTTP/1.1 server on iomux.http: a greeting, a JSON route and a 404.
//   node examples/http.js [port]          then: curl -i http://127.0.0.1:8000/hello
'use strict';
const iomux = require('iomux');

const server = iomux.http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/hello') {
    res.setHeader('content-type', 'text/plain; charset=utf-8');
    res.end('hello from iomux\n');
  } else if (req.method === 'GET' && req.url === '/info') {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ backend: iomux.loop.backend, node: process.version }) + '\n');
  } else {
    res.statusCode = 404;
    res.end('not found\n');
  }
});
server.listen(Number(process.argv[2] ?? 8000), '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`http listening on http://${address}:${port}/`);
});
process.on('SIGINT', () => server.close(() => process.exit(0)));
