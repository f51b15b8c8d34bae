'use strict';
// The worker of the `cluster` benchmark's supervised candidate: the hello
// world of http-hello.js on iomux's HTTP server, on the inherited listener.
// With SPREAD_DIR it writes its accepted-connection and request counts to
// SPREAD_DIR/<pid>.json every 100 ms. Also answers the broadcast test's
// 'bench' messages with an 'ack' to the master.
const path = require('path');
const { http } = require(process.env.IOMUX_BENCH_DIST || path.resolve(__dirname, '..', '..', 'dist'));
const { countSpread } = require('./cluster-spread');

module.exports = {
  postStart(container) {
    if (!container.inherited.length) return undefined;
    const close = process.env.BENCH_CLOSE === '1';
    const counts = countSpread();
    const server = http.createServer((req, res) => {
      counts.requests++;
      res.setHeader('Content-Type', 'text/plain');
      if (close) res.setHeader('Connection', 'close');
      res.end('Hello World!');
    });
    server.on('connection', () => { counts.accepted++; });
    return new Promise((resolve) => container.listen(server, 0, resolve));
  },
  receiveMessage(container, name, args) {
    if (name === 'bench') container.send('master', 'ack', args[0]);
  },
};
