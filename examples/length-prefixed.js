#!/usr/bin/env node
// A length-prefixed protocol: each message is a 4-byte big-endian length, then
// that many bytes. The server answers every message with it in upper case.
// Partial frames are kept across 'data' events; writes respect backpressure;
// a frame over 1 MiB is a protocol violation that closes the connection.
//   node examples/length-prefixed.js [port]          the server
//   node examples/length-prefixed.js client PORT     sends three messages, prints the answers
'use strict';
const iomux = require('iomux');

const MAX_FRAME = 1024 * 1024;

/** Calls onMessage(payload) for each complete frame that arrives on socket. */
function readFrames(socket, onMessage) {
  let buf = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    while (buf.length >= 4) {
      const len = buf.readUInt32BE(0);
      if (len > MAX_FRAME) {
        socket.destroy(new Error(`frame of ${len} bytes is over the ${MAX_FRAME}-byte limit`));
        return;
      }
      if (buf.length < 4 + len) break;
      onMessage(buf.subarray(4, 4 + len));
      buf = buf.subarray(4 + len);
    }
  });
}

/** Sends one frame; false means: wait for 'drain' before sending more. */
function sendFrame(socket, payload) {
  const header = Buffer.allocUnsafe(4);
  header.writeUInt32BE(payload.length);
  socket.cork();
  socket.write(header);
  const ok = socket.write(payload);
  socket.uncork();
  return ok;
}

if (process.argv[2] === 'client') {
  const port = Number(process.argv[3]);
  const messages = ['hello', 'length-prefixed', 'world'];
  const socket = iomux.connect(port, '127.0.0.1', () => {
    for (const m of messages) sendFrame(socket, Buffer.from(m));
  });
  let answers = 0;
  readFrames(socket, (msg) => {
    console.log(`answer: ${msg.toString()}`);
    if (++answers === messages.length) socket.end();
  });
  socket.on('error', (err) => { console.error(err.message); process.exitCode = 1; });
} else {
  const server = iomux.createServer((socket) => {
    readFrames(socket, (msg) => sendFrame(socket, Buffer.from(msg.toString().toUpperCase())));
    socket.on('end', () => socket.end());
    socket.on('error', (err) => console.error(`client ${socket.remoteAddress}: ${err.message}`));
  });
  server.listen(Number(process.argv[2] ?? 7001), '127.0.0.1', () => {
    const { address, port } = server.address();
    console.log(`length-prefixed listening on ${address}:${port}`);
  });
  process.on('SIGINT', () => server.close(() => process.exit(0)));
}
