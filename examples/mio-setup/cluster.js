// The mio.c seed's setup under one supervisor: 4 HTTP workers that take
// their ports from the shared config's counter (mio's DistributedObjects
// `port`), and the iomux proxy as another service in front of them,
// load-balancing the upstreams the workers published in the same config
// (nginx's upstream block).
//
//   npx iomux-cluster examples/mio-setup/cluster.js
//   curl http://127.0.0.1:8080/        (again: another worker answers)
//
// Environment: PROXY_PORT (8080), HTTP_BASE_PORT (8100; a worker whose port
// is taken takes the next number), HTTP_WORKERS (4).
'use strict';
const path = require('node:path');

const workers = Number(process.env.HTTP_WORKERS || 4);

module.exports = {
  services: [
    {
      name: 'http',
      worker: path.join(__dirname, 'http-worker.js'),
      count: workers,
      listen: [],
      env: { HTTP_BASE_PORT: process.env.HTTP_BASE_PORT || '8100' },
    },
    {
      name: 'proxy',
      worker: path.join(__dirname, 'proxy-worker.js'),
      count: 1,
      listen: [{ host: '127.0.0.1', port: Number(process.env.PROXY_PORT ?? 8080) }],
      env: { HTTP_WORKERS: String(workers) },
    },
  ],
};
