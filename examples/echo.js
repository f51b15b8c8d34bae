#!/usr/bin/env node
// An echo server: every byte a client sends comes back.
//   node examples/echo.js [port]         then: nc 127.0.0.1 7000
'use strict';
const iomux = require('iomux');

const port = Number(process.argv[2] ?? 7000);
const server = iomux.createServer((socket) => {
  // remoteAddress was kept from accept4(): reading it costs no syscall.
  console.log(`client ${socket.remoteAddress}:${socket.remotePort}`);
  socket.on('data', (chunk) => socket.write(chunk));
  socket.on('end', () => socket.end());
  socket.on('error', (err) => console.error(`client error: ${err.code} ${err.message}`));
});
server.listen(port, '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`echo listening on ${address}:${port} (backend ${iomux.loop.backend})`);
});
process.on('SIGINT', () => server.close(() => process.exit(0)));
