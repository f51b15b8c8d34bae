// SharedCache under two processes at once, and under writers SIGKILLed in
// the middle of their writes.
//
//   IOMUX_SHM_STRESS_MS   length of the 2-process stress (default 5000)
//   IOMUX_SHM_JS_KILLS    writers killed in the kill test (default 20; the
//                         core's C test kills 500, deps/iomux/test/test_shm.c)
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import t from 'tap';
import { SharedCache } from '../dist';
import { fixturesDir, sleep } from './helpers';

const STRESS_MS = Number(process.env.IOMUX_SHM_STRESS_MS || 5000);
const KILLS = Number(process.env.IOMUX_SHM_JS_KILLS || 20);
const SCRIPT = join(fixturesDir, 'shm-stress.js');

interface Counts { gets: number; hits: number; torn: number; late: number; sets: number; deletes: number; incrs: number; errors: number; slowSets: number; suspects: number }

function side(cache: SharedCache, ms: number, seed: number): Promise<{ code: number | null; counts: Counts | null; stderr: string }> {
  const child = spawn(process.execPath, [SCRIPT, String(ms), String(seed)], { stdio: ['ignore', 'pipe', 'pipe', cache.fd] });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { err += d; });
  return new Promise((resolve) => child.on('exit', (code) => {
    let counts: Counts | null = null;
    try { counts = JSON.parse(out.trim().split('\n').pop() || 'null'); } catch { /* reported below */ }
    resolve({ code, counts, stderr: err });
  }));
}

t.test(`2 processes mix get, set, delete and incr for ${STRESS_MS} ms: nothing torn, nothing past its TTL`, async (t) => {
  // room for every key: no eviction, so the counter's total is exact
  const cache = SharedCache.create({ size: 32 << 20, maxEntries: 65536 });
  t.teardown(() => cache.close());
  const started = Date.now();
  const results = await Promise.all([side(cache, STRESS_MS, 11), side(cache, STRESS_MS, 977)]);
  const total: Counts = { gets: 0, hits: 0, torn: 0, late: 0, sets: 0, deletes: 0, incrs: 0, errors: 0, slowSets: 0, suspects: 0 };
  for (const r of results) {
    t.equal(r.code, 0, r.stderr);
    t.ok(r.counts, 'the side reported its counts');
    if (!r.counts) continue;
    for (const k of Object.keys(total) as (keyof Counts)[]) total[k] += r.counts[k];
  }
  const s = cache.stats();
  t.comment(`${Date.now() - started} ms: ${JSON.stringify(total)}; stats: retries ${s.readRetries}, locked reads ${s.lockedReads}, ` +
    `contention ${s.contention}, expirations ${s.expirations}, evictions ${s.evictions}`);
  t.equal(total.torn, 0, 'no torn value');
  t.equal(total.late, 0, 'no value served past its TTL');
  t.equal(total.errors, 0, 'no operation failed');
  t.ok(total.hits > 1000 && total.sets > 1000, 'both reads and writes ran');
  t.equal(cache.get('counter'), total.incrs, 'every incr of both processes counted once');
  t.equal(s.evictions, 0);
  t.equal(cache.verify(), true);
});

t.test(`${KILLS} writers SIGKILLed mid-write: no deadlock, verify() passes`, async (t) => {
  const cache = SharedCache.create({ size: 1 << 20, maxEntries: 4096 });
  t.teardown(() => cache.close());
  let seed = 5;
  const before = cache.stats().repairs;
  for (let i = 0; i < KILLS; i++) {
    const child = spawn(process.execPath, [SCRIPT, '0', String(1000 + i), 'writer'], { stdio: ['ignore', 'ignore', 'inherit', cache.fd] });
    const exited = new Promise((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    // let it start (node takes tens of ms) and write for a while
    const ready = Date.now() + 2000;
    const sets0 = cache.stats().sets;
    while (cache.stats().sets < sets0 + 50 && Date.now() < ready) await sleep(2);
    seed = (seed * 1103515245 + 12345) >>> 0;
    await sleep(seed % 20);
    child.kill('SIGKILL');
    t.equal(await exited, 'SIGKILL');
    // these would hang forever on a lock the dead writer held
    t.equal(cache.verify(), true, `verify after kill ${i}`);
    cache.set('alive', i);
    t.equal(cache.get('alive'), i);
  }
  const repairs = cache.stats().repairs - before;
  t.comment(`${KILLS} writers killed, ${repairs} of them while holding the lock (rolled back)`);
  t.equal(cache.verify(), true);
});
