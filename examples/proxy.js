#!/usr/bin/env node
// A load-balancing HTTP reverse proxy in front of two upstream HTTP servers,
// all in this one process (in real use the upstreams are elsewhere, and
// `npx iomux-proxy` does the same from the command line).
//   node examples/proxy.js [port]          then: curl http://127.0.0.1:8080/ (twice)
'use strict';
const iomux = require('iomux');

function upstream(name) {
  return new Promise((resolve) => {
    const server = iomux.http.createServer((req, res) => {
      res.setHeader('content-type', 'text/plain');
      res.end(`${name} answered ${req.method} ${req.url} for ${req.headers['x-forwarded-for']}\n`);
    });
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

async function main() {
  const upstreams = await Promise.all([upstream('upstream-a'), upstream('upstream-b')]);
  const proxy = iomux.proxy.createProxy({
    mode: 'http',
    upstreams: upstreams.map((s) => `127.0.0.1:${s.address().port}`),
    balance: 'round-robin',
  });
  proxy.on('log', (e) => console.error(`proxy ${e.level} ${e.event}: ${e.message}`));
  proxy.listen(Number(process.argv[2] ?? 8080), '127.0.0.1', () => {
    const { address, port } = proxy.address();
    console.log(`proxy listening on http://${address}:${port}/ in front of ${proxy.upstreams.length} upstreams`);
  });
  process.on('SIGINT', async () => {
    await proxy.close({ deadline: 1000 });
    for (const s of upstreams) s.close();
    process.exit(0);
  });
}

main();
