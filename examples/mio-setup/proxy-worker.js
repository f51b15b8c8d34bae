// The proxy of the mio setup (cluster.js): waits until the HTTP workers
// published HTTP_WORKERS upstreams in the shared config, then balances them
// round-robin on the listener the supervisor handed down.
'use strict';
const iomux = require('iomux');

module.exports = {
  async postStart(c) {
    const want = Number(process.env.HTTP_WORKERS || 4);
    const upstreams = await c.config.var('upstreams');
    let list = upstreams.get() || [];
    while (list.length < want) list = (await upstreams.waitFor(upstreams.version)).value || [];
    const proxy = iomux.proxy.createProxy({ mode: 'http', upstreams: list, balance: 'round-robin' });
    proxy.on('log', (e) => { if (e.level === 'error') console.error(`proxy ${e.event}: ${e.message}`); });
    await new Promise((resolve) => c.listen(proxy, 0, resolve));
    console.error(`mio setup: proxy on ${c.inherited[0].address} in front of ${list.join(', ')}`);
  },
};
