#!/usr/bin/env node
// A user's first minute with an installed iomux: require it, echo a message
// over TCP, answer one HTTP request. Run from a directory where `iomux` is
// installed (scripts/check-install.sh copies it there). Prints one line and
// exits 0 when all of it worked; IOMUX_BACKEND picks the backend.
'use strict';

const http = require('node:http');
const iomux = require('iomux');

function fail(what) {
  console.error(`smoke failed: ${what}`);
  process.exit(1);
}

const timer = setTimeout(() => fail('timed out after 10 s'), 10000);

function echo() {
  return new Promise((resolve, reject) => {
    const server = iomux.createServer((socket) => {
      socket.on('data', (chunk) => socket.write(chunk));
      socket.on('end', () => socket.end());
    });
    server.listen(0, '127.0.0.1', () => {
      const client = iomux.connect(server.address().port, '127.0.0.1', () => {
        client.write('hello, iomux\n');
        client.end();
      });
      let got = '';
      client.setEncoding('utf8');
      client.on('data', (text) => { got += text; });
      client.on('error', reject);
      client.on('close', () => {
        server.close();
        got === 'hello, iomux\n' ? resolve() : reject(new Error(`echo returned ${JSON.stringify(got)}`));
      });
    });
  });
}

function httpGet() {
  return new Promise((resolve, reject) => {
    const server = iomux.http.createServer((req, res) => {
      res.setHeader('content-type', 'text/plain');
      res.end(`${req.method} ${req.url}`);
    });
    server.listen(0, '127.0.0.1', () => {
      http.get({ host: '127.0.0.1', port: server.address().port, path: '/first-hour', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { body += d; });
        res.on('end', () => {
          server.close();
          res.statusCode === 200 && body === 'GET /first-hour'
            ? resolve()
            : reject(new Error(`HTTP returned ${res.statusCode} ${JSON.stringify(body)}`));
        });
      }).on('error', reject);
    });
  });
}

echo().then(httpGet).then(() => {
  clearTimeout(timer);
  console.log(`echo and HTTP ok on node ${process.version}, backend ${iomux.loop.backend}`);
}, (err) => fail(err.stack || err.message));
