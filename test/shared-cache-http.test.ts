// The shared cache's first use: an HTTP front end of 3 worker processes under
// the supervisor, sharing the cache through its caches option
// (examples/shared-cache/front.js) caches a slow back end's responses with a
// TTL. The back end sees one fetch per path per TTL across all workers, and
// after the TTL a request misses and fetches again.
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import { join } from 'node:path';
import t from 'tap';
import { sleep } from './helpers';

const FRONT = join(__dirname, '..', 'examples', 'shared-cache', 'front.js');
const TTL = 3000;

function get(port: number, path: string): Promise<{ status: number; body: string; cache: string; worker: string }> {
  return new Promise((resolve, reject) => {
    // a new connection each time, so that any worker may accept it
    http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode!, body, cache: String(res.headers['x-cache']), worker: String(res.headers['x-worker']) }));
    }).on('error', reject);
  });
}

t.test('one back-end fetch per path per TTL across 3 worker processes', async (t) => {
  const fetches = new Map<string, number>();
  const backend = http.createServer((req, res) => {
    fetches.set(req.url!, (fetches.get(req.url!) ?? 0) + 1);
    setTimeout(() => res.end(`body of ${req.url} #${fetches.get(req.url!)}`), 150); // slow
  });
  await new Promise<void>((r) => backend.listen(0, '127.0.0.1', r));
  t.teardown(() => backend.close());
  const bport = (backend.address() as { port: number }).port;
  const front = spawn(process.execPath, [FRONT, '--backend', `http://127.0.0.1:${bport}`, '--workers', '3', '--ttl', String(TTL)],
    { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => { front.kill('SIGTERM'); });
  const info = await new Promise<{ port: number; workers: number[] }>((resolve, reject) => {
    let buf = '';
    front.stdout!.on('data', (d) => {
      buf += d;
      if (buf.includes('\n')) resolve(JSON.parse(buf.split('\n')[0]));
    });
    front.on('exit', (code) => reject(new Error(`front end exited ${code}`)));
  });
  t.equal(info.workers.length, 3);

  const paths = ['/a', '/b', '/c'];
  // 60 concurrent requests, 20 per path, before any response is cached
  const first = await Promise.all(Array.from({ length: 60 }, (_, i) => get(info.port, paths[i % 3])));
  for (const r of first) t.equal(r.status, 200);
  for (const p of paths) {
    t.equal(fetches.get(p), 1, `${p}: one back-end fetch for 20 requests`);
    const bodies = new Set(first.filter((_, i) => paths[i % 3] === p).map((r) => r.body));
    t.same([...bodies], [`body of ${p} #1`], `${p}: every worker served the same response`);
  }
  t.equal(first.filter((r) => r.cache === 'miss').length, 3, 'one miss per path, the rest hits');
  // The workers share one inherited listener, so which of them accepts is up
  // to the kernel and the load: on a busy machine one worker may take the
  // whole first wave. Smaller waves follow, well inside the TTL, until a
  // second worker has served; each of its answers is the cached body.
  const workers = new Set(first.map((r) => r.worker));
  const waveStart = Date.now();
  while (workers.size < 2 && Date.now() - waveStart < TTL / 3) {
    const wave = await Promise.all(Array.from({ length: 6 }, (_, i) => get(info.port, paths[i % 3])));
    for (const [i, r] of wave.entries()) {
      t.equal(r.body, `body of ${paths[i % 3]} #1`, 'a later wave is served from the cache');
      workers.add(r.worker);
    }
  }
  t.ok(workers.size >= 2, `served by ${workers.size} worker processes`);

  // within the TTL: hits, no fetch
  const again = await Promise.all(paths.map((p) => get(info.port, p)));
  t.same(again.map((r) => r.cache), ['hit', 'hit', 'hit']);
  t.same(paths.map((p) => fetches.get(p)), [1, 1, 1]);

  // after the TTL: a miss, one more fetch per path
  await sleep(TTL + 50);
  const later = await Promise.all([...paths, ...paths].map((p) => get(info.port, p)));
  t.equal(later.filter((r) => r.cache === 'miss').length, 3, 'after the TTL each path misses once');
  t.same(paths.map((p) => fetches.get(p)), [2, 2, 2], 'and is fetched once more');
  for (const p of paths) t.ok(later.some((r) => r.body === `body of ${p} #2`));
});
