'use strict';
// An HTTP front end of N worker processes that share one response cache in
// shared memory, in front of a slow back end.
//
//   node examples/shared-cache/front.js --backend http://127.0.0.1:8081 [--workers 3] [--port 8080] [--ttl 5000]
//
// The master creates an anonymous SharedCache (memfd on Linux) and starts
// the workers with child_process, handing each the region as its fd 3. Every
// worker serves on the same port (SO_REUSEPORT) with iomux's HTTP server:
//
//   GET /<path>   the back end's response for /<path>, from the cache when
//                 it is there; headers x-cache (hit or miss) and x-worker (pid)
//
// On a miss, one worker fetches: the first to add() the key's fill lock;
// the others wait for its result in the cache. So the back end sees one
// fetch per path per TTL, whichever workers the requests land on. The master
// holds the region: workers can be restarted without losing the cache.
//
// The master prints one JSON line { port, workers: [pid...] } when all
// workers listen, and stops them on SIGTERM or SIGINT.
const { spawn } = require('node:child_process');
const http = require('node:http');
const path = require('node:path');
const { SharedCache, http: iomuxHttp } = require(path.join(__dirname, '..', '..', 'dist'));

function args() {
  const o = { workers: 3, port: 0, ttl: 5000, backend: null, role: 'master' };
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '--workers') o.workers = Number(a[++i]);
    else if (a[i] === '--port') o.port = Number(a[++i]);
    else if (a[i] === '--ttl') o.ttl = Number(a[++i]);
    else if (a[i] === '--backend') o.backend = a[++i];
    else if (a[i] === '--worker') o.role = 'worker';
    else throw new Error(`unknown argument ${a[i]}`);
  }
  if (!o.backend) throw new Error('--backend URL is required');
  return o;
}

// ---- master -----------------------------------------------------------------

function master(o) {
  const cache = SharedCache.create({ size: 64 << 20, defaultTtl: o.ttl });
  const workers = [];
  let port = o.port;
  const start = (i) => new Promise((resolve, reject) => {
    const w = spawn(process.execPath, [__filename, '--worker', '--backend', o.backend, '--ttl', String(o.ttl), '--port', String(port)],
      { stdio: ['ignore', 'pipe', 'inherit', cache.fd] });
    workers[i] = w;
    let buf = '';
    w.stdout.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(buf.slice(0, nl)).port);
    });
    w.on('exit', (code) => reject(new Error(`worker ${i} exited with ${code} before it listened`)));
  });
  (async () => {
    port = await start(0); // the first picks the port when none was given
    for (let i = 1; i < o.workers; i++) await start(i);
    process.stdout.write(JSON.stringify({ port, workers: workers.map((w) => w.pid) }) + '\n');
  })().catch((err) => {
    console.error(err);
    stop(1);
  });
  function stop(code) {
    for (const w of workers) if (w && w.exitCode === null) w.kill('SIGTERM');
    cache.close();
    process.exit(code);
  }
  process.on('SIGTERM', () => stop(0));
  process.on('SIGINT', () => stop(0));
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

function worker(o) {
  const cache = SharedCache.fromFd(3);
  const server = iomuxHttp.createServer((req, res) => {
    cached(cache, o, req.url).then((r) => {
      res.writeHead(r.status, { 'content-type': r.type, 'x-cache': r.cache, 'x-worker': String(process.pid) });
      res.end(Buffer.from(r.body));
    }, (err) => {
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`back end: ${err.message}\n`);
    });
  });
  server.listen({ port: o.port, host: '127.0.0.1', reusePort: true }, () => {
    process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
  });
  process.on('SIGTERM', () => {
    server.close();
    cache.close();
    process.exit(0);
  });
}

const o = args();
if (o.role === 'worker') worker(o);
else master(o);
