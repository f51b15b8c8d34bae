'use strict';
// An Express or Fastify application for benchmarks/run.js (rows "express"
// and "fastify"): one JSON route with a route parameter,
//
//   GET /users/:id  ->  {"id":"<id>","name":"user <id>"}
//
//   node benchmarks/servers/http-framework.js <http|iomux-node> <port> <express|fastify>
//
// http: the application on node:http, as it ships. iomux-node: the same
// application, unchanged, on iomux sockets: serveNode(server, { takeOverListen:
// true }), so the framework's server listens through iomux (with
// deferAccept, as the other iomux rows). The stats line (see common.js)
// counts the requests answered.

const http = require('http');
const { loadIomux, usage, parsePort, serve } = require('./common');

const IMPLS = ['http', 'iomux-node'];
const FRAMEWORKS = ['express', 'fastify'];
const impl = process.argv[2];
const port = parsePort(process.argv[3]);
const framework = process.argv[4];
if (!IMPLS.includes(impl) || port === null || !FRAMEWORKS.includes(framework)) {
  usage(__filename, IMPLS, `<${FRAMEWORKS.join('|')}>`);
}

const app = { requests: 0 };
const user = (id) => ({ id, name: `user ${id}` });

async function main() {
  let server;
  if (framework === 'express') {
    const express = require('express');
    const e = express();
    e.disable('x-powered-by');
    e.disable('etag');
    e.get('/users/:id', (req, res) => {
      app.requests++;
      res.json(user(req.params.id));
    });
    server = http.createServer(e);
  } else {
    const fastify = require('fastify')({
      logger: false,
      serverFactory: (handler) => http.createServer(handler),
    });
    fastify.get('/users/:id', async (req) => {
      app.requests++;
      return user(req.params.id);
    });
    await fastify.ready();
    server = fastify.server;
  }
  let iomux = null;
  if (impl === 'iomux-node') {
    iomux = loadIomux();
    iomux.http.serveNode(server, { takeOverListen: true });
  }
  serve({ name: `http-framework ${framework}`, impl, iomux, server, port, app, deferAccept: iomux !== null });
}

main().catch((err) => {
  process.stderr.write(`http-framework: ${err && err.stack}\n`);
  process.exit(1);
});
