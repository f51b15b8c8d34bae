'use strict';
// An HTTP front end of N worker processes that share one response cache in
// shared memory, in front of a slow back end, run by the supervisor.
//
//   node examples/shared-cache/front.js --backend http://127.0.0.1:8081 [--workers 3] [--port 8080] [--ttl 5000]
//
// The master (iomux.cluster) binds the port once, makes the cache (the
// service's caches option: an anonymous region it holds until it stops) and
// runs this same file as the worker module in each of N processes. Every
// worker serves the inherited listener with iomux's HTTP server:
//
//   GET /<path>   the back end's response for /<path>, from the cache when
//                 it is there; headers x-cache (hit or miss) and x-worker (pid)
//
// On a miss, one worker fetches: the first to add() the key's fill lock;
// the others wait for its result in the cache. So the back end sees one
// fetch per path per TTL, whichever workers the requests land on. The master
// holds the region: workers are restarted (a crash, a rolling restart on
// SIGHUP) without losing the cache.
//
// The master prints one JSON line { port, workers: [pid...] } when all
// workers listen, and stops them gracefully on SIGTERM or SIGINT.
const http = require('node:http');
const path = require('node:path');
const { cluster, http: iomuxHttp } = require(path.join(__dirname, '..', '..', 'dist'));

function args() {
  const o = { workers: 3, port: 0, ttl: 5000, backend: null };
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '--workers') o.workers = Number(a[++i]);
    else if (a[i] === '--port') o.port = Number(a[++i]);
    else if (a[i] === '--ttl') o.ttl = Number(a[++i]);
    else if (a[i] === '--backend') o.backend = a[++i];
    else throw new Error(`unknown argument ${a[i]}`);
  }
  if (!o.backend) throw new Error('--backend URL is required');
  return o;
}

// ---- master -----------------------------------------------------------------

async function master(o) {
  const sup = cluster.createSupervisor({
    admin: false,
    services: [{
      name: 'front', worker: __filename, count: o.workers,
      listen: [{ port: o.port, host: '127.0.0.1' }],
      env: { FRONT_BACKEND: o.backend, FRONT_TTL: String(o.ttl) },
      caches: [{ name: 'responses', size: 64 << 20, defaultTtl: o.ttl }],
    }],
  });
  await sup.start();
  const port = Number(sup.addresses('front')[0].split(':').pop());
  const [svc] = await sup.list();
  process.stdout.write(JSON.stringify({ port, workers: svc.containers.map((c) => c.pid) }) + '\n');
}

// ---- worker -----------------------------------------------------------------

function fetchBackend(url) {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, type: res.headers['content-type'] || 'application/octet-stream', body: Buffer.concat(chunks) }));
      res.on('error', reject);
    }).on('error', reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The cached response for path, fetching it once across all workers.
async function cached(cache, o, p) {
  const key = `resp:${p}`;
  for (;;) {
    const hit = cache.get(key);
    if (hit !== undefined) return { ...hit, cache: 'hit' };
    // the fill lock: one worker fetches, the others wait for its result
    if (cache.add(`fill:${p}`, process.pid, { ttl: 10000 })) {
      try {
        // the lock may have been taken just after another worker's fill
        // released it: look again before fetching
        const late = cache.get(key);
        if (late !== undefined) return { ...late, cache: 'hit' };
        const r = await fetchBackend(o.backend + p);
        cache.set(key, { status: r.status, type: r.type, body: r.body }, { ttl: o.ttl });
        return { ...r, cache: 'miss' };
      } finally {
        cache.delete(`fill:${p}`);
      }
    }
    await sleep(2);
  }
}

// The worker module: the supervisor calls postStart in each worker process.
module.exports = {
  postStart(container) {
    const o = { backend: process.env.FRONT_BACKEND, ttl: Number(process.env.FRONT_TTL) };
    const cache = container.cache('responses');
    const server = iomuxHttp.createServer((req, res) => {
      cached(cache, o, req.url).then((r) => {
        res.writeHead(r.status, { 'content-type': r.type, 'x-cache': r.cache, 'x-worker': String(process.pid) });
        res.end(Buffer.from(r.body));
      }, (err) => {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`back end: ${err.message}\n`);
      });
    });
    return new Promise((resolve) => container.listen(server, 0, resolve));
  },
};

if (require.main === module) {
  master(args()).catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
