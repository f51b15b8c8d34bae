// An HTTP worker of the mio setup (cluster.js): its port is the config
// counter's next number above HTTP_BASE_PORT; it publishes its address in
// the shared config under the 'upstreams' key (a list kept under a mutex).
'use strict';
const iomux = require('iomux');

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
}

module.exports = {
  async postStart(c) {
    const base = Number(process.env.HTTP_BASE_PORT || 8100);
    const ports = c.config.counter('port');
    const server = iomux.http.createServer((req, res) => {
      res.setHeader('content-type', 'text/plain');
      res.end(`worker ${c.id} (pid ${process.pid}) on port ${server.address().port}\n`);
    });
    for (;;) {
      const port = base + await ports.next();
      if (port > 65535) throw new Error('no free port above HTTP_BASE_PORT');
      try {
        await listen(server, port);
        break;
      } catch (e) {
        if (e.code !== 'EADDRINUSE') throw e;
      }
    }
    const addr = `127.0.0.1:${server.address().port}`;
    const lock = await c.mutex('config.upstreams');
    const { ownerDied } = await lock.lock();
    try {
      const list = (await c.config.get('upstreams')) || [];
      // a worker that died while holding the lock may have left a stale entry: fine, the proxy health-checks
      void ownerDied;
      await c.config.put('upstreams', [...list, addr]);
    } finally {
      lock.unlock();
    }
  },
};
